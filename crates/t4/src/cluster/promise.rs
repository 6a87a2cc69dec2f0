//! The promised term on a member's disk (docs/clustering.md "adopt-best-log"): once a member
//! answered a new leader's promise request, or took an append of a newer term, it refuses
//! older terms, across restarts too. Forgetting a promise would let a deposed leader commit
//! on this member behind the back of the new leader, which counted it as holding nothing
//! newer.
//!
//! The file `promise` holds two 24-byte slots, `T4PROM01 | term u64 | crc32c u32 | 0u32`;
//! a write goes to the slot that does not hold the current term and is fsynced before the
//! promise is answered. A crash tears at most the slot being written, and only before the
//! answer: the other slot still holds the previous promise. The higher valid slot wins.

use crate::env::Disk;
use crate::error::{Error, Result};

pub const PROMISE_FILE: &str = "promise";
const MAGIC: &[u8; 8] = b"T4PROM01";
const SLOT_BYTES: usize = 24;

/// The promise as found (or last written): its term and which slot holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promise {
    pub term: u64,
    slot: usize,
}

impl Promise {
    /// Reads the file; a data dir without one has promised nothing (term 0). Blocking.
    pub fn read(disk: &dyn Disk) -> Result<Self> {
        let none = Promise { term: 0, slot: 1 };
        if !disk.exists(PROMISE_FILE).map_err(|error| Error::storage("stat promise file", error))? {
            return Ok(none);
        }
        let file = disk.open(PROMISE_FILE, false).map_err(|error| Error::storage("open promise file", error))?;
        let len = file.len().map_err(|error| Error::storage("stat promise file", error))?;
        let mut bytes = vec![0u8; (len as usize).min(2 * SLOT_BYTES)];
        file.read_at(0, &mut bytes).map_err(|error| Error::storage("read promise file", error))?;
        let slots = bytes.chunks_exact(SLOT_BYTES).enumerate().filter_map(|(slot, bytes)| Some(Promise { term: decode(bytes)?, slot }));
        let best = slots.max_by_key(|promise| promise.term);
        if best.is_none() && bytes.iter().any(|byte| *byte != 0) {
            // Both slots damaged: not a torn write (that leaves the other slot), so a disk
            // fault. Starting with no promise could break an earlier one.
            return Err(Error::Corrupt("promise file: no valid slot".into()));
        }
        Ok(best.unwrap_or(none))
    }

    /// Records `term` durably (it must not be lower than the current one). Blocking.
    pub fn write(&mut self, disk: &dyn Disk, term: u64) -> Result<()> {
        assert!(term >= self.term, "promise: {term} after {}", self.term);
        if term == self.term {
            return Ok(());
        }
        let existed = disk.exists(PROMISE_FILE).map_err(|error| Error::storage("stat promise file", error))?;
        let file = disk.open(PROMISE_FILE, true).map_err(|error| Error::storage("open promise file", error))?;
        let slot = 1 - self.slot;
        file.write_at((slot * SLOT_BYTES) as u64, &encode(term))
            .and_then(|()| file.sync_data())
            .map_err(|error| Error::storage("write promise file", error))?;
        if !existed {
            disk.sync_dir("").map_err(|error| Error::storage("sync data dir", error))?;
        }
        *self = Promise { term, slot };
        Ok(())
    }
}

fn encode(term: u64) -> [u8; SLOT_BYTES] {
    let mut bytes = [0u8; SLOT_BYTES];
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..16].copy_from_slice(&term.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<u64> {
    let valid = &bytes[..8] == MAGIC && crc32c::crc32c(&bytes[..16]).to_le_bytes() == bytes[16..20];
    valid.then(|| u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::SimDisk;

    #[test]
    fn a_promise_survives_reopening_and_a_torn_newer_slot_keeps_the_older() {
        let disk = SimDisk::new();
        let mut promise = Promise::read(&disk).unwrap();
        assert_eq!(promise.term, 0);
        promise.write(&disk, 3).unwrap();
        promise.write(&disk, 5).unwrap();
        assert_eq!(Promise::read(&disk).unwrap().term, 5);
        promise.write(&disk, 8).unwrap();
        // Tear the slot holding 8: the one holding 5 remains.
        let file = disk.open(PROMISE_FILE, false).unwrap();
        let torn = Promise::read(&disk).unwrap().slot;
        file.write_at((torn * SLOT_BYTES + 10) as u64, &[0xff]).unwrap();
        assert_eq!(Promise::read(&disk).unwrap().term, 5);
        // Both damaged: refused, never read as "no promise".
        file.write_at(((1 - torn) * SLOT_BYTES + 10) as u64, &[0xff]).unwrap();
        assert!(matches!(Promise::read(&disk), Err(Error::Corrupt(_))));
    }
}
