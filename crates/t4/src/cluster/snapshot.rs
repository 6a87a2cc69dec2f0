//! Catch-up by snapshot (docs/clustering.md "Catch-up by snapshot"): a follower that needs
//! records its leader no longer holds gets the leader's store instead, as of a committed
//! position, and starts its log over after it.
//!
//! - **snapshot-committed**: the leader sends only a store snapshot whose position its
//!   commit index has reached, so a follower installs history, never a record a later
//!   leader may drop.
//! - **install-durable-first**: the follower stages the chunks on its disk, writes a marker
//!   naming the position, restores its store in one durable transaction, then starts its
//!   WAL over after the position and removes the marker. A crash at any point leaves either
//!   the old store and log (marker gone, or naming a position the store does not hold) or
//!   the new store with a marker, and the next open finishes starting the log over
//!   ([`finish_at_open`]). Nothing the follower held and acknowledged is dropped before the
//!   store holds its committed part: what it drops above the snapshot did not match the
//!   leader's log (a deposed leader's records, never committed).
//!
//! The staging file holds the entries as they came: each after its length (u32 LE).

use std::sync::Arc;

use crate::env::{Disk, DiskFile};
use crate::error::{Error, Result};

/// The entries of the transfer being received.
pub const STAGING_FILE: &str = "snapshot.staging";
/// Written before the store is replaced: the index being installed (u64 LE) and its CRC32C.
pub const MARKER_FILE: &str = "snapshot.installing";
/// Bytes of entries one snapshot chunk carries (at least one entry always goes).
pub const CHUNK_BYTES_MAX: usize = 1 << 20;

fn storage(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |error| Error::storage(what, error)
}

/// Length-prefixes `entries` into one chunk's payload.
pub fn encode_entries(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(entries.iter().map(|entry| entry.len() + 4).sum());
    for entry in entries {
        payload.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        payload.extend_from_slice(entry);
    }
    payload
}

/// The transfer a follower is receiving: which one, the next chunk it expects, and where
/// the staging file ends.
#[derive(Debug)]
pub struct Staging {
    pub snapshot_id: u64,
    pub next_seq: u64,
    file: Box<dyn DiskFile>,
    len: u64,
}

impl Staging {
    /// Takes chunk `seq` of transfer `snapshot_id` (its payload checked against `crc`).
    /// Chunk 0 starts the staging file over; a chunk out of order is refused, and the
    /// leader starts over. Blocking.
    pub fn take(staging: &mut Option<Staging>, disk: &dyn Disk, snapshot_id: u64, seq: u64, payload: &[u8], crc: u32) -> Result<()> {
        if crc32c::crc32c(payload) != crc {
            return Err(Error::InvalidArgument("a snapshot chunk whose entries fail their checksum".into()));
        }
        check_entries(payload)?;
        if seq == 0 {
            let file = disk.open(STAGING_FILE, true).map_err(storage("create snapshot staging file"))?;
            file.set_len(0).map_err(storage("truncate snapshot staging file"))?;
            *staging = Some(Staging { snapshot_id, next_seq: 0, file, len: 0 });
        }
        let Some(current) = staging.as_mut().filter(|current| current.snapshot_id == snapshot_id && current.next_seq == seq) else {
            return Err(Error::InvalidArgument(format!("snapshot {snapshot_id:016x} chunk {seq} out of order: start over")));
        };
        current.file.write_at(current.len, payload).map_err(storage("write snapshot staging file"))?;
        current.len += payload.len() as u64;
        current.next_seq += 1;
        Ok(())
    }

    /// Makes the staged entries durable (before the marker names them).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(storage("sync snapshot staging file"))
    }

    /// The staged entries, in order, read one at a time.
    pub fn entries(&self) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
        let mut offset = 0u64;
        std::iter::from_fn(move || {
            if offset >= self.len {
                return None;
            }
            let mut length = [0u8; 4];
            if let Err(error) = self.file.read_at(offset, &mut length) {
                offset = self.len;
                return Some(Err(Error::storage("read snapshot staging file", error)));
            }
            let mut entry = vec![0u8; u32::from_le_bytes(length) as usize];
            let read = self.file.read_at(offset + 4, &mut entry);
            offset += 4 + entry.len() as u64;
            Some(read.map(|()| entry).map_err(|error| Error::storage("read snapshot staging file", error)))
        })
    }
}

/// Every entry of a payload is whole (lengths that add up exactly).
fn check_entries(payload: &[u8]) -> Result<()> {
    let mut at = 0usize;
    while at < payload.len() {
        let Some(length) = payload.get(at..at + 4) else {
            return Err(Error::InvalidArgument("a snapshot chunk cut inside an entry's length".into()));
        };
        at += 4 + u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
    }
    if at != payload.len() {
        return Err(Error::InvalidArgument("a snapshot chunk cut inside an entry".into()));
    }
    Ok(())
}

/// Writes the marker naming `index` (durably, before the store is replaced).
pub fn write_marker(disk: &dyn Disk, index: u64) -> Result<()> {
    let mut bytes = index.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    let file = disk.open(MARKER_FILE, true).map_err(storage("create snapshot marker"))?;
    file.set_len(0).map_err(storage("truncate snapshot marker"))?;
    file.write_at(0, &bytes).map_err(storage("write snapshot marker"))?;
    file.sync_data().map_err(storage("sync snapshot marker"))?;
    disk.sync_dir("").map_err(storage("sync data dir"))
}

/// The index the marker names, if there is one (a marker cut short by a crash names none:
/// it was written before anything else changed).
pub fn read_marker(disk: &dyn Disk) -> Result<Option<u64>> {
    if !disk.exists(MARKER_FILE).map_err(storage("stat snapshot marker"))? {
        return Ok(None);
    }
    let file = disk.open(MARKER_FILE, false).map_err(storage("open snapshot marker"))?;
    if file.len().map_err(storage("stat snapshot marker"))? != 12 {
        return Ok(None);
    }
    let mut bytes = [0u8; 12];
    file.read_at(0, &mut bytes).map_err(storage("read snapshot marker"))?;
    let crc = u32::from_le_bytes(bytes[8..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..8]) != crc {
        return Ok(None);
    }
    Ok(Some(u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))))
}

/// Removes the marker and the staging file (the install finished, or never began).
pub fn clean_up(disk: &dyn Disk) -> Result<()> {
    for file in [MARKER_FILE, STAGING_FILE] {
        if disk.exists(file).map_err(storage("stat snapshot file"))? {
            disk.remove(file).map_err(storage("remove snapshot file"))?;
        }
    }
    disk.sync_dir("").map_err(storage("sync data dir"))
}

/// At open: whether an install at the store's `applied` index was interrupted after the
/// store was replaced (the marker names it), in which case the WAL's old segments are to be
/// dropped and the log started over after it. Removes the snapshot files either way.
pub fn finish_at_open(disk: &Arc<dyn Disk>, applied: u64) -> Result<bool> {
    let marker = read_marker(disk.as_ref())?;
    let installed = marker == Some(applied) && applied > 0;
    if marker.is_some() && !installed {
        tracing::warn!(?marker, applied, "cluster: a snapshot install did not reach the store; the old log stands");
    }
    if installed {
        tracing::info!(index = applied, "cluster: finishing a snapshot install interrupted after the store was replaced");
    }
    clean_up(disk.as_ref())?;
    Ok(installed)
}

/// Removes every WAL segment (the store holds everything they held that counts).
pub fn drop_wal(disk: &dyn Disk) -> Result<()> {
    if !disk.exists(crate::wal::WAL_DIR).map_err(storage("stat wal dir"))? {
        return Ok(());
    }
    for name in disk.list(crate::wal::WAL_DIR).map_err(storage("list wal"))? {
        if let Some(first) = name.strip_suffix(".wal").and_then(|stem| stem.parse::<u64>().ok()) {
            disk.remove(&crate::wal::segment_name(first)).map_err(storage("remove wal segment"))?;
        }
    }
    disk.sync_dir(crate::wal::WAL_DIR).map_err(storage("sync wal dir"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::SimDisk;

    #[test]
    fn chunks_stage_in_order_and_read_back_entry_by_entry() {
        let disk = SimDisk::new();
        let mut staging = None;
        let first = encode_entries(&[b"one".to_vec(), b"two".to_vec()]);
        let second = encode_entries(&[vec![7u8; 3000]]);
        Staging::take(&mut staging, &disk, 9, 0, &first, crc32c::crc32c(&first)).unwrap();
        // Out of order, another transfer, a bad checksum, a cut entry: refused.
        assert!(Staging::take(&mut staging, &disk, 9, 2, &second, crc32c::crc32c(&second)).is_err());
        assert!(Staging::take(&mut staging, &disk, 8, 1, &second, crc32c::crc32c(&second)).is_err());
        assert!(Staging::take(&mut staging, &disk, 9, 1, &second, 0).is_err());
        let cut = &second[..second.len() - 1];
        assert!(Staging::take(&mut staging, &disk, 9, 1, cut, crc32c::crc32c(cut)).is_err());
        Staging::take(&mut staging, &disk, 9, 1, &second, crc32c::crc32c(&second)).unwrap();
        let staged = staging.as_ref().unwrap();
        let entries: Vec<Vec<u8>> = staged.entries().collect::<Result<_>>().unwrap();
        assert_eq!(entries, vec![b"one".to_vec(), b"two".to_vec(), vec![7u8; 3000]]);
        // Chunk 0 again starts over.
        Staging::take(&mut staging, &disk, 10, 0, &second, crc32c::crc32c(&second)).unwrap();
        assert_eq!(staging.as_ref().unwrap().entries().count(), 1);
    }

    #[test]
    fn the_marker_finishes_an_install_only_when_the_store_holds_its_position() {
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
        assert_eq!(read_marker(disk.as_ref()).unwrap(), None);
        write_marker(disk.as_ref(), 42).unwrap();
        assert_eq!(read_marker(disk.as_ref()).unwrap(), Some(42));
        // The store never got there: the old log stands, the marker goes.
        assert!(!finish_at_open(&disk, 17).unwrap());
        assert_eq!(read_marker(disk.as_ref()).unwrap(), None);
        write_marker(disk.as_ref(), 42).unwrap();
        assert!(finish_at_open(&disk, 42).unwrap());
        assert!(!disk.exists(MARKER_FILE).unwrap());
        // A torn marker names nothing.
        let file = disk.open(MARKER_FILE, true).unwrap();
        file.write_at(0, &[1, 2, 3]).unwrap();
        assert_eq!(read_marker(disk.as_ref()).unwrap(), None);
    }
}
