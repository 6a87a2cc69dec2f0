//! The bytes of t4's objects in the bucket (docs/formats.md, "Objects in the bucket").
//!
//! Every object starts with a magic, a format version and a checksum of itself: bytes from
//! the bucket are never trusted.
//!
//! WAL object (`wal/<term>/<seq>`): a 56-byte header — magic `T4WALOBJ`, version (u32),
//! kind (u32: 1 batch, 2 seal), term, seq, first index, record count (u64 each), CRC32C of
//! the body, CRC32C of the header's first 52 bytes — then the body: one or more WAL batches
//! (the local log's own encoding) holding records `first index ..` densely. A seal has no
//! body and count 0: it ends its term's log at its seq.
//!
//! The lock's bytes are in `crate::election::lock`, the members record's in
//! `crate::cluster::members`; both are read with [`crc_body`] and [`FieldReader`].

use crate::error::{Error, Result};
use crate::wal::{decode_batch, Record};

pub const FORMAT_VERSION: u32 = 1;

/// The body of a record that ends in the CRC32C of everything before it, once its length (at
/// least `min_len` in all) and its checksum are right.
pub(crate) fn crc_body(bytes: &[u8], min_len: usize) -> std::result::Result<&[u8], &'static str> {
    if bytes.len() < min_len.max(4) {
        return Err("too short");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err("checksum mismatch");
    }
    Ok(body)
}

/// Opens a checksummed record that starts with one of `magics` and the format version:
/// which magic it has, and a reader positioned after the version.
pub(crate) fn open_record<'a>(
    bytes: &'a [u8],
    magics: &[&[u8; 8]],
    min_len: usize,
) -> std::result::Result<(usize, FieldReader<'a>), String> {
    let body = crc_body(bytes, min_len)?;
    let which = magics.iter().position(|magic| body[..8] == magic[..]).ok_or("bad magic")?;
    let mut reader = FieldReader::new(body, 8);
    let version = reader.u32()?;
    if version != FORMAT_VERSION {
        return Err(format!("unknown format version {version}"));
    }
    Ok((which, reader))
}

/// Appends `string` as a record field: a u32 length, then its bytes.
pub(crate) fn put_string(out: &mut Vec<u8>, string: &str) {
    out.extend_from_slice(&(string.len() as u32).to_le_bytes());
    out.extend_from_slice(string.as_bytes());
}

/// Ends a record with the CRC32C of everything in it.
pub(crate) fn seal_with_crc(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a record's fields in order; every length is checked against what is there before
/// anything is read past it.
pub(crate) struct FieldReader<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> FieldReader<'a> {
    /// Reads `body` from byte `at`.
    pub fn new(body: &'a [u8], at: usize) -> Self {
        Self { body, at }
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], &'static str> {
        let bytes = self.body.get(self.at..self.at.checked_add(n).ok_or("truncated")?).ok_or("truncated")?;
        self.at += n;
        Ok(bytes)
    }

    pub fn u8(&mut self) -> std::result::Result<u8, &'static str> {
        self.take(1).map(|bytes| bytes[0])
    }

    pub fn u32(&mut self) -> std::result::Result<u32, &'static str> {
        self.take(4).map(|bytes| u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }

    pub fn u64(&mut self) -> std::result::Result<u64, &'static str> {
        self.take(8).map(|bytes| u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    /// A u32 length, at most `max`, then that many bytes of UTF-8.
    pub fn string(&mut self, max: usize) -> std::result::Result<String, &'static str> {
        let len = self.u32()? as usize;
        if len > max {
            return Err("a string longer than the record allows");
        }
        let bytes = self.take(len).map_err(|_| "a string length that does not match")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a string that is not UTF-8")
    }

    /// Whether every byte was read.
    pub fn done(&self) -> bool {
        self.at == self.body.len()
    }
}
const WAL_MAGIC: &[u8; 8] = b"T4WALOBJ";
/// A WAL object's header (a seal is only this): what a reader fetches to tell a seal.
pub const WAL_OBJECT_HEADER_BYTES: usize = 56;
const KIND_BATCH: u32 = 1;
const KIND_SEAL: u32 = 2;
const FLOOR_MAGIC: &[u8; 8] = b"T4FLOOR1";
const FLOOR_BYTES: usize = 8 + 4 + 8 + 8 + 4;

/// `wal/<term>/floor`: the term's log starts at `seq`; objects below it are garbage being
/// collected. Magic `T4FLOOR1`, version (u32), term, seq (u64 each), CRC32C.
pub fn encode_floor(term: u64, seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(FLOOR_BYTES);
    out.extend_from_slice(FLOOR_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&term.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The seq a floor object names, after checking it belongs to `term`.
pub fn decode_floor(name: &str, term: u64, bytes: &[u8]) -> Result<u64> {
    let corrupt = |what: &str| Error::Corrupt(format!("bucket object {name}: {what}"));
    if bytes.len() != FLOOR_BYTES || &bytes[..8] != FLOOR_MAGIC {
        return Err(corrupt("not a t4 log floor"));
    }
    if crc32c::crc32c(&bytes[..FLOOR_BYTES - 4]).to_le_bytes() != bytes[FLOOR_BYTES - 4..] {
        return Err(corrupt("checksum mismatch"));
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) != FORMAT_VERSION || u64_at(12) != term {
        return Err(corrupt("version or term does not match its name"));
    }
    Ok(u64_at(20))
}

/// A decoded WAL object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalObject {
    Batch { term: u64, seq: u64, records: Vec<Record> },
    Seal { term: u64, seq: u64 },
}

fn header(kind: u32, term: u64, seq: u64, first_index: u64, count: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(WAL_OBJECT_HEADER_BYTES + body.len());
    out.extend_from_slice(WAL_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    for field in [term, seq, first_index, count] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// A WAL object carrying `batches` (encoded WAL batches) with `count` records from
/// `first_index`.
pub fn encode_batch_object(term: u64, seq: u64, first_index: u64, count: u64, batches: &[u8]) -> Vec<u8> {
    header(KIND_BATCH, term, seq, first_index, count, batches)
}

pub fn encode_seal(term: u64, seq: u64) -> Vec<u8> {
    header(KIND_SEAL, term, seq, 0, 0, &[])
}

/// The header fields of a WAL object, from its first bytes (at least 56): kind is `Seal`
/// or `Batch` with an empty record list; also the first index and the record count.
pub fn decode_wal_header(name: &str, bytes: &[u8]) -> Result<(bool, u64, u64, u64, u64)> {
    let corrupt = |what: &str| Error::Corrupt(format!("bucket object {name}: {what}"));
    if bytes.len() < WAL_OBJECT_HEADER_BYTES {
        return Err(corrupt("shorter than its header"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if crc32c::crc32c(&bytes[..52]) != u32_at(52) || &bytes[..8] != WAL_MAGIC || u32_at(8) != FORMAT_VERSION {
        return Err(corrupt("not a t4 WAL object of a known version (header check failed)"));
    }
    Ok((u32_at(12) == KIND_SEAL, u64_at(16), u64_at(24), u64_at(32), u64_at(40)))
}

/// Decodes the object stored at `name`, checking that it is the object `(term, seq)` the
/// name says and that its records are dense from the header's first index.
pub fn decode_wal_object(name: &str, term: u64, seq: u64, bytes: &[u8]) -> Result<WalObject> {
    let corrupt = |what: &str| Error::Corrupt(format!("bucket object {name}: {what}"));
    if bytes.len() < WAL_OBJECT_HEADER_BYTES {
        return Err(corrupt("shorter than its header"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if crc32c::crc32c(&bytes[..52]) != u32_at(52) {
        return Err(corrupt("header checksum mismatch"));
    }
    if &bytes[..8] != WAL_MAGIC {
        return Err(corrupt("not a t4 WAL object (bad magic)"));
    }
    if u32_at(8) != FORMAT_VERSION {
        return Err(corrupt(&format!("unknown format version {}", u32_at(8))));
    }
    let body = &bytes[WAL_OBJECT_HEADER_BYTES..];
    if crc32c::crc32c(body) != u32_at(48) {
        return Err(corrupt("body checksum mismatch"));
    }
    let (kind, object_term, object_seq, first_index, count) = (u32_at(12), u64_at(16), u64_at(24), u64_at(32), u64_at(40));
    if (object_term, object_seq) != (term, seq) {
        return Err(corrupt(&format!("holds term {object_term} seq {object_seq}, not what its name says")));
    }
    match kind {
        KIND_SEAL if body.is_empty() && count == 0 => Ok(WalObject::Seal { term, seq }),
        KIND_BATCH => {
            let mut records = Vec::new();
            let mut at = 0;
            while at < body.len() {
                let (batch, used) = decode_batch(&body[at..]).map_err(|defect| corrupt(&format!("batch: {defect:?}")))?;
                records.extend(batch);
                at += used;
            }
            let dense = records.iter().enumerate().all(|(position, record)| record.index == first_index + position as u64);
            if records.len() as u64 != count || !dense {
                return Err(corrupt("records do not match the header's first index and count"));
            }
            Ok(WalObject::Batch { term, seq, records })
        }
        _ => Err(corrupt(&format!("unknown object kind {kind}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{encode_batch, Change, ChangeKind, RecordBody};

    fn record(index: u64) -> Record {
        let change = Change { key: format!("k{index}").into_bytes(), kind: ChangeKind::Put { value: vec![1, 2, 3], lease: 0 } };
        Record { index, body: RecordBody::Txn { revision: index as i64 + 1, changes: vec![change] } }
    }

    #[test]
    fn objects_round_trip_and_every_flipped_bit_is_caught() {
        let mut batches = encode_batch(&[record(7), record(8)]).unwrap();
        batches.extend(encode_batch(&[record(9)]).unwrap());
        let object = encode_batch_object(3, 5, 7, 3, &batches);
        let decoded = decode_wal_object("wal/3/5", 3, 5, &object).unwrap();
        assert_eq!(decoded, WalObject::Batch { term: 3, seq: 5, records: vec![record(7), record(8), record(9)] });
        for bit in 0..object.len() * 8 {
            let mut damaged = object.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_wal_object("wal/3/5", 3, 5, &damaged).is_err(), "bit {bit}");
        }
        assert!(decode_wal_object("wal/3/6", 3, 6, &object).is_err(), "an object under another name is refused");
        let wrong_count = encode_batch_object(3, 5, 7, 4, &batches);
        assert!(decode_wal_object("wal/3/5", 3, 5, &wrong_count).is_err());
        let seal = encode_seal(2, 9);
        assert_eq!(decode_wal_object("s", 2, 9, &seal).unwrap(), WalObject::Seal { term: 2, seq: 9 });
    }
}
