//! s4's metadata records and their encoding in redb.
//!
//! Every record starts with a kind byte and a CRC32C of the rest, so a damaged page reads
//! as an error, never as another object. Tables:
//!
//! | table      | key                          | value                                        |
//! |------------|------------------------------|----------------------------------------------|
//! | `buckets`  | name                         | [`BucketRecord`] (versioning, lifecycle)     |
//! | `objects`  | (bucket, key)                | the newest [`ObjectInfo`] (maybe a marker)   |
//! | `versions` | (bucket, key, !seq)          | every version, newest first                  |
//! | `bodies`   | body id                      | [`BodyRecord`]: location and reference count |
//! | `body_at`  | (volume, offset)             | body id (what compaction moves)              |
//! | `dedup`    | SHA-256 and size             | body id (whole-body dedup)                   |
//! | `live`     | volume                       | bytes of referenced records in it            |
//! | `uploads`  | upload id                    | [`UploadRecord`]                             |
//! | `parts`    | (upload id, part number)     | [`PartRecord`]                               |
//! | `counters` | name                         | next sequence number / body id               |

use std::collections::BTreeMap;

use redb::TableDefinition;

use super::engine::Failure;
use super::volume::Location;

pub const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
pub const OBJECTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("objects");
pub const VERSIONS: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("versions");
pub const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
pub const BODY_AT: TableDefinition<(u32, u64), u64> = TableDefinition::new("body_at");
pub const DEDUP: TableDefinition<&[u8], u64> = TableDefinition::new("dedup");
pub const LIVE: TableDefinition<u32, u64> = TableDefinition::new("live");
pub const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
pub const PARTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("parts");
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

const KIND_BUCKET: u8 = 0x11;
const KIND_OBJECT: u8 = 0x12;
const KIND_BODY: u8 = 0x13;
const KIND_UPLOAD: u8 = 0x14;
const KIND_PART: u8 = 0x15;

/// The version id S3 gives objects written while versioning is off or suspended.
pub const NULL_VERSION: &str = "null";

/// A bucket's versioning state. Once enabled it can be suspended, never turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    Unversioned,
    Enabled,
    Suspended,
}

/// One lifecycle rule (the subset s4 applies: expiry of current and noncurrent versions,
/// of lone delete markers, and of incomplete multipart uploads, by key prefix).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LifecycleRule {
    pub id: String,
    pub enabled: bool,
    pub prefix: String,
    pub expiration_days: Option<u32>,
    pub expired_object_delete_marker: bool,
    pub noncurrent_days: Option<u32>,
    pub abort_incomplete_days: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRecord {
    pub created_ms: u64,
    pub versioning: Versioning,
    pub lifecycle: Vec<LifecycleRule>,
}

/// A stretch of an object's body: one stored body (shared by copies and dedup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub body: u64,
    pub len: u64,
}

/// One version of an object, or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// `null` unless written while versioning was enabled.
    pub version_id: String,
    pub delete_marker: bool,
    /// Quoted, as S3 sends it: `"<md5 hex>"`, or `"<md5 of part md5s>-<parts>"`.
    pub etag: String,
    pub size: u64,
    pub last_modified_ms: u64,
    pub content_type: Option<String>,
    /// `x-amz-meta-*` pairs, sorted by name.
    pub metadata: BTreeMap<String, String>,
    /// Parts of a multipart object (0 for a single put).
    pub parts_count: u32,
    pub(crate) seq: u64,
    pub(crate) segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyRecord {
    pub location: Location,
    pub refs: u64,
    pub dedup_key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub bucket: String,
    pub key: String,
    pub initiated_ms: u64,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRecord {
    pub body: u64,
    pub len: u64,
    /// Quoted MD5 of the part.
    pub etag: String,
    pub last_modified_ms: u64,
}

/// The key of `dedup`: SHA-256 of the body and its length.
pub fn dedup_key(sha256: &[u8], len: u64) -> Vec<u8> {
    let mut key = sha256.to_vec();
    key.extend_from_slice(&len.to_le_bytes());
    key
}

struct Encoder {
    out: Vec<u8>,
}

impl Encoder {
    fn new(kind: u8) -> Self {
        Self { out: vec![kind, 0, 0, 0, 0] }
    }
    fn u8(&mut self, value: u8) {
        self.out.push(value);
    }
    fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }
    fn bytes(&mut self, value: &[u8]) {
        self.u32(value.len() as u32);
        self.out.extend_from_slice(value);
    }
    fn string(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }
    fn option_u32(&mut self, value: Option<u32>) {
        self.u64(value.map_or(u64::MAX, u64::from));
    }
    fn map(&mut self, map: &BTreeMap<String, String>) {
        self.u32(map.len() as u32);
        for (name, value) in map {
            self.string(name);
            self.string(value);
        }
    }
    fn location(&mut self, location: &Location) {
        self.u32(location.volume);
        self.u64(location.offset);
        self.u64(location.len);
        self.u32(location.crc);
    }
    fn finish(mut self) -> Vec<u8> {
        let crc = crc32c::crc32c(&self.out[5..]);
        self.out[1..5].copy_from_slice(&crc.to_le_bytes());
        self.out
    }
}

struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn corrupt(what: &str) -> Failure {
    Failure::Corrupt(format!("metadata record: {what}"))
}

impl<'a> Decoder<'a> {
    fn open(bytes: &'a [u8], kind: u8) -> Result<Self, Failure> {
        if bytes.len() < 5 || bytes[0] != kind {
            return Err(corrupt("unknown kind"));
        }
        if u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes")) != crc32c::crc32c(&bytes[5..]) {
            return Err(corrupt("checksum mismatch"));
        }
        Ok(Self { bytes, at: 5 })
    }
    fn take(&mut self, len: usize) -> Result<&'a [u8], Failure> {
        let end = self.at.checked_add(len).filter(|end| *end <= self.bytes.len()).ok_or_else(|| corrupt("truncated"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, Failure> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Failure> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, Failure> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Result<&'a [u8], Failure> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn string(&mut self) -> Result<String, Failure> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt("not utf-8"))
    }
    fn option_u32(&mut self) -> Result<Option<u32>, Failure> {
        let value = self.u64()?;
        Ok((value != u64::MAX).then_some(value as u32))
    }
    fn map(&mut self) -> Result<BTreeMap<String, String>, Failure> {
        let count = self.u32()?;
        let mut map = BTreeMap::new();
        for _ in 0..count {
            map.insert(self.string()?, self.string()?);
        }
        Ok(map)
    }
    fn location(&mut self) -> Result<Location, Failure> {
        Ok(Location { volume: self.u32()?, offset: self.u64()?, len: self.u64()?, crc: self.u32()? })
    }
}

impl BucketRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Encoder::new(KIND_BUCKET);
        out.u64(self.created_ms);
        out.u8(match self.versioning {
            Versioning::Unversioned => 0,
            Versioning::Enabled => 1,
            Versioning::Suspended => 2,
        });
        out.u32(self.lifecycle.len() as u32);
        for rule in &self.lifecycle {
            out.string(&rule.id);
            out.u8(u8::from(rule.enabled));
            out.string(&rule.prefix);
            out.option_u32(rule.expiration_days);
            out.u8(u8::from(rule.expired_object_delete_marker));
            out.option_u32(rule.noncurrent_days);
            out.option_u32(rule.abort_incomplete_days);
        }
        out.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Failure> {
        let mut input = Decoder::open(bytes, KIND_BUCKET)?;
        let created_ms = input.u64()?;
        let versioning = match input.u8()? {
            0 => Versioning::Unversioned,
            1 => Versioning::Enabled,
            2 => Versioning::Suspended,
            _ => return Err(corrupt("versioning state")),
        };
        let count = input.u32()?;
        let mut lifecycle = Vec::new();
        for _ in 0..count {
            lifecycle.push(LifecycleRule {
                id: input.string()?,
                enabled: input.u8()? != 0,
                prefix: input.string()?,
                expiration_days: input.option_u32()?,
                expired_object_delete_marker: input.u8()? != 0,
                noncurrent_days: input.option_u32()?,
                abort_incomplete_days: input.option_u32()?,
            });
        }
        Ok(Self { created_ms, versioning, lifecycle })
    }
}

impl ObjectInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Encoder::new(KIND_OBJECT);
        out.u64(self.seq);
        out.string(&self.version_id);
        out.u8(u8::from(self.delete_marker));
        out.string(&self.etag);
        out.u64(self.size);
        out.u64(self.last_modified_ms);
        out.string(self.content_type.as_deref().unwrap_or(""));
        out.map(&self.metadata);
        out.u32(self.parts_count);
        out.u32(self.segments.len() as u32);
        for segment in &self.segments {
            out.u64(segment.body);
            out.u64(segment.len);
        }
        out.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Failure> {
        let mut input = Decoder::open(bytes, KIND_OBJECT)?;
        let seq = input.u64()?;
        let version_id = input.string()?;
        let delete_marker = input.u8()? != 0;
        let etag = input.string()?;
        let size = input.u64()?;
        let last_modified_ms = input.u64()?;
        let content_type = Some(input.string()?).filter(|text| !text.is_empty());
        let metadata = input.map()?;
        let parts_count = input.u32()?;
        let count = input.u32()?;
        let mut segments = Vec::new();
        for _ in 0..count {
            segments.push(Segment { body: input.u64()?, len: input.u64()? });
        }
        if segments.iter().map(|segment| segment.len).sum::<u64>() != size {
            return Err(corrupt("segments do not add up to the size"));
        }
        Ok(Self { version_id, delete_marker, etag, size, last_modified_ms, content_type, metadata, parts_count, seq, segments })
    }
}

impl BodyRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Encoder::new(KIND_BODY);
        out.location(&self.location);
        out.u64(self.refs);
        out.bytes(&self.dedup_key);
        out.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Failure> {
        let mut input = Decoder::open(bytes, KIND_BODY)?;
        Ok(Self { location: input.location()?, refs: input.u64()?, dedup_key: input.bytes()?.to_vec() })
    }
}

impl UploadRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Encoder::new(KIND_UPLOAD);
        out.string(&self.bucket);
        out.string(&self.key);
        out.u64(self.initiated_ms);
        out.string(self.content_type.as_deref().unwrap_or(""));
        out.map(&self.metadata);
        out.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Failure> {
        let mut input = Decoder::open(bytes, KIND_UPLOAD)?;
        Ok(Self {
            bucket: input.string()?,
            key: input.string()?,
            initiated_ms: input.u64()?,
            content_type: Some(input.string()?).filter(|text| !text.is_empty()),
            metadata: input.map()?,
        })
    }
}

impl PartRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Encoder::new(KIND_PART);
        out.u64(self.body);
        out.u64(self.len);
        out.string(&self.etag);
        out.u64(self.last_modified_ms);
        out.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Failure> {
        let mut input = Decoder::open(bytes, KIND_PART)?;
        Ok(Self { body: input.u64()?, len: input.u64()?, etag: input.string()?, last_modified_ms: input.u64()? })
    }
}

/// Fuzzing (`crate::fuzzing::s4_metadata`): every record kind decodes garbage to an error,
/// never a panic, and what decodes re-encodes to a record that decodes the same.
#[doc(hidden)]
pub fn fuzz_records(data: &[u8]) {
    fn check<T: PartialEq + std::fmt::Debug>(
        decoded: Result<T, Failure>,
        encode: impl Fn(&T) -> Vec<u8>,
        decode: impl Fn(&[u8]) -> Result<T, Failure>,
    ) {
        if let Ok(record) = decoded {
            let again = decode(&encode(&record)).expect("an encoded record decodes");
            assert_eq!(again, record, "a record survives encode and decode");
        }
    }
    check(BucketRecord::decode(data), BucketRecord::encode, BucketRecord::decode);
    check(ObjectInfo::decode(data), ObjectInfo::encode, ObjectInfo::decode);
    check(BodyRecord::decode(data), BodyRecord::encode, BodyRecord::decode);
    check(UploadRecord::decode(data), UploadRecord::encode, UploadRecord::decode);
    check(PartRecord::decode(data), PartRecord::encode, PartRecord::decode);
}
