//! The bucket's `lock` object: who holds which term, and for how long (docs/design.md §5,
//! docs/formats.md "Lock", docs/clustering.md).
//!
//! Bytes (version 2): magic `T4LOCK02`, format version (u32), term (u64), wall time in ms
//! (u64, for humans), lease in ms (u64; 0: a single node that holds no lease), renewal count
//! (u64), then three strings each as a u32 length and UTF-8 bytes — the node id, its peer
//! URL, its client URL — then CRC32C of everything before it. Version 1 (`T4LOCK01`: term,
//! wall time and node name only) is still read, as a lock with no lease and no URLs.

use crate::durability::bucket::object_error;
use crate::durability::format::{open_record, put_string, seal_with_crc, FieldReader, FORMAT_VERSION};
use crate::durability::layout;
use crate::env::{Condition, ObjectError, ObjectStore};
use crate::error::{Error, Result};

/// The magic of the lock records written today.
pub(crate) const LOCK_MAGIC: &[u8; 8] = b"T4LOCK02";
/// The magic of the first lock format (still read).
pub(crate) const LOCK_MAGIC_V1: &[u8; 8] = b"T4LOCK01";
/// Longest node id or URL a lock record carries.
pub const LOCK_STRING_BYTES_MAX: usize = 4096;

/// The leadership record: who holds which term, and the lease it renews.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockRecord {
    pub term: u64,
    /// The holder's node id (`--node-id`; a single node writes its name).
    pub node: String,
    /// When the lock was last written, by the writer's wall clock (for humans only: no
    /// node ever compares it with its own clock).
    pub wall_ms: u64,
    /// The lease the holder renews, in ms (0: no lease, a single node's lock). A candidate
    /// waits at least this long, plus its drift bound, before it takes the lock over.
    pub lease_ms: u64,
    /// How many times the holder renewed this term (every renewal changes the bytes, and so
    /// the ETag, even within one millisecond).
    pub renewal: u64,
    /// Where peers reach the holder (empty: no peer port).
    pub peer_url: String,
    /// Where clients reach the holder (what followers name in "not leader" answers).
    pub client_url: String,
}

impl LockRecord {
    pub fn encode(&self) -> Vec<u8> {
        let strings = [&self.node, &self.peer_url, &self.client_url];
        let mut out = Vec::with_capacity(64 + strings.iter().map(|s| 4 + s.len()).sum::<usize>());
        out.extend_from_slice(LOCK_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for number in [self.term, self.wall_ms, self.lease_ms, self.renewal] {
            out.extend_from_slice(&number.to_le_bytes());
        }
        for string in strings {
            put_string(&mut out, string);
        }
        seal_with_crc(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let corrupt = |what: &str| Error::Corrupt(format!("bucket object lock: {what}"));
        let (which, mut reader) = open_record(bytes, &[LOCK_MAGIC, LOCK_MAGIC_V1], 36).map_err(|what| match what.as_str() {
            "bad magic" => corrupt("not a t4 lock record (bad magic)"),
            other => corrupt(other),
        })?;
        let v1 = which == 1;
        let term = reader.u64().map_err(corrupt)?;
        let wall_ms = reader.u64().map_err(corrupt)?;
        let mut record = LockRecord { term, wall_ms, ..Default::default() };
        let string = |reader: &mut FieldReader| reader.string(LOCK_STRING_BYTES_MAX).map_err(corrupt);
        if v1 {
            record.node = string(&mut reader)?;
        } else {
            record.lease_ms = reader.u64().map_err(corrupt)?;
            record.renewal = reader.u64().map_err(corrupt)?;
            record.node = string(&mut reader)?;
            record.peer_url = string(&mut reader)?;
            record.client_url = string(&mut reader)?;
        }
        if !reader.done() {
            return Err(corrupt("bytes after the last field"));
        }
        Ok(record)
    }
}

/// The lock record and its ETag, if a term was ever taken.
pub async fn read_lock(store: &dyn ObjectStore) -> Result<Option<(LockRecord, String)>> {
    match store.get(layout::LOCK).await {
        Ok((bytes, etag)) => Ok(Some((LockRecord::decode(&bytes)?, etag))),
        Err(ObjectError::NotFound(_)) => Ok(None),
        Err(error) => Err(object_error("read lock", error)),
    }
}

/// Writes `record` on `lock` under `condition`: the lock's new ETag, or `None` when the
/// condition failed (someone moved the lock since it was read); any other answer of the
/// store is the error.
pub async fn write_lock(store: &dyn ObjectStore, record: &LockRecord, condition: Condition) -> Result<Option<String>> {
    match store.put(layout::LOCK, bytes::Bytes::from(record.encode()), condition).await {
        Ok(written) => Ok(Some(written.etag)),
        Err(ObjectError::PreconditionFailed(_) | ObjectError::NotFound(_)) => Ok(None),
        Err(error) => Err(object_error("write lock", error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> LockRecord {
        LockRecord {
            term: 42,
            node: "node-a".into(),
            wall_ms: 1_700_000_000_000,
            lease_ms: 5_000,
            renewal: 7,
            peer_url: "https://10.0.0.1:3380".into(),
            client_url: "http://10.0.0.1:3379".into(),
        }
    }

    #[test]
    fn lock_records_round_trip_and_damage_is_caught() {
        let bytes = full().encode();
        assert_eq!(LockRecord::decode(&bytes).unwrap(), full());
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(LockRecord::decode(&damaged).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn a_version_one_lock_reads_as_one_without_a_lease() {
        // Laid out as the first format wrote it: magic, version, term, wall ms, name, CRC.
        let mut bytes = LOCK_MAGIC_V1.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&9u64.to_le_bytes());
        bytes.extend_from_slice(&123u64.to_le_bytes());
        bytes.extend_from_slice(&6u32.to_le_bytes());
        bytes.extend_from_slice(b"solo:1");
        bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
        let lock = LockRecord::decode(&bytes).unwrap();
        assert_eq!(lock, LockRecord { term: 9, node: "solo:1".into(), wall_ms: 123, ..Default::default() });
        // Written back, it takes today's format and reads the same.
        assert_eq!(&lock.encode()[..8], LOCK_MAGIC);
        assert_eq!(LockRecord::decode(&lock.encode()).unwrap(), lock);
    }

    #[test]
    fn lengths_that_lie_are_refused_before_anything_is_read_past_them() {
        let mut record = full();
        record.client_url = "x".repeat(LOCK_STRING_BYTES_MAX + 1);
        let error = LockRecord::decode(&record.encode()).unwrap_err();
        assert!(error.to_string().contains("longer than the record allows"), "{error}");
        // A valid checksum over a body cut short.
        let bytes = full().encode();
        let mut short = bytes[..bytes.len() - 10].to_vec();
        short.extend_from_slice(&crc32c::crc32c(&short).to_le_bytes());
        assert!(LockRecord::decode(&short).is_err());
    }
}
