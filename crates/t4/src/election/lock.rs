//! The bucket's `lock` object: who holds which term (docs/design.md §5, `formats.md`).
//!
//! Bytes: magic `T4LOCK01`, version (u32), term (u64), wall time in ms (u64), node name
//! length (u32) and bytes, then CRC32C of everything before it.

use crate::durability::bucket::object_error;
use crate::durability::format::FORMAT_VERSION;
use crate::durability::layout;
use crate::env::{ObjectError, ObjectStore};
use crate::error::{Error, Result};

pub(crate) const LOCK_MAGIC: &[u8; 8] = b"T4LOCK01";

/// The leadership record: who holds which term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRecord {
    pub term: u64,
    /// A name for humans (`t4 status`).
    pub node: String,
    /// When the term was taken, by the taker's wall clock (for humans only).
    pub wall_ms: u64,
}

impl LockRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + self.node.len());
        out.extend_from_slice(LOCK_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.term.to_le_bytes());
        out.extend_from_slice(&self.wall_ms.to_le_bytes());
        out.extend_from_slice(&(self.node.len() as u32).to_le_bytes());
        out.extend_from_slice(self.node.as_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let corrupt = |what: &str| Error::Corrupt(format!("bucket object lock: {what}"));
        if bytes.len() < 36 {
            return Err(corrupt("too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err(corrupt("checksum mismatch"));
        }
        if &body[..8] != LOCK_MAGIC {
            return Err(corrupt("not a t4 lock record (bad magic)"));
        }
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(corrupt(&format!("unknown format version {version}")));
        }
        let term = u64::from_le_bytes(body[12..20].try_into().expect("8 bytes"));
        let wall_ms = u64::from_le_bytes(body[20..28].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(body[28..32].try_into().expect("4 bytes")) as usize;
        if body.len() != 32 + len {
            return Err(corrupt("node name length does not match"));
        }
        let node = String::from_utf8(body[32..].to_vec()).map_err(|_| corrupt("node name is not UTF-8"))?;
        Ok(Self { term, node, wall_ms })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_records_round_trip_and_damage_is_caught() {
        let lock = LockRecord { term: 42, node: "node-a:1234".into(), wall_ms: 1_700_000_000_000 };
        let bytes = lock.encode();
        assert_eq!(LockRecord::decode(&bytes).unwrap(), lock);
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(LockRecord::decode(&damaged).is_err(), "bit {bit}");
        }
    }
}
