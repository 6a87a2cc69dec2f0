//! WalWriter: appends batches to the current segment, one write and one fdatasync each.
//!
//! Fault model: a failed write or sync leaves the segment's tail unknown (Linux may have
//! dropped the dirty pages). The writer does not retry: it reports the error and the node
//! stops acknowledging writes (a fail-stop, as PostgreSQL learned to do after fsyncgate).
//! Recovery later truncates whatever partial batch is left at the tail.

use std::sync::Arc;

use crate::env::{Disk, DiskFile};
use crate::error::{Error, Result};

pub const SEGMENT_MAGIC: &[u8; 8] = b"T4WALSEG";
pub const SEGMENT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 32;
pub const WAL_DIR: &str = "wal";

/// `wal/<first index, 20 digits>.wal`: names sort in log order.
pub fn segment_name(first_index: u64) -> String {
    format!("{WAL_DIR}/{first_index:020}.wal")
}

pub fn encode_segment_header(first_index: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32c::crc32c(&header[..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The first index a segment header names, after checking magic, version and checksum.
pub fn decode_segment_header(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err("segment shorter than its header".into());
    }
    let crc = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..24]) != crc {
        return Err("segment header checksum mismatch".into());
    }
    if &bytes[..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != SEGMENT_VERSION {
        return Err(format!("unknown segment version {version}"));
    }
    Ok(u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")))
}

pub struct WalWriter {
    disk: Arc<dyn Disk>,
    /// First indexes of the segments on disk, ascending; the last is being appended to.
    segments: Vec<u64>,
    file: Box<dyn DiskFile>,
    offset: u64,
    next_index: u64,
    segment_bytes_max: u64,
}

impl std::fmt::Debug for WalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalWriter").field("segments", &self.segments).field("next_index", &self.next_index).finish()
    }
}

fn io_error(context: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |error| Error::storage(context, error)
}

impl WalWriter {
    /// Continues after recovery: `segments` as recovery left them (torn tail already cut),
    /// the valid length of the last one, and the next index to write. Segments are
    /// preallocated to `segment_bytes_max` so appends change no file metadata.
    pub fn open(disk: Arc<dyn Disk>, segments: Vec<u64>, last_len: u64, next_index: u64, segment_bytes_max: u64) -> Result<Self> {
        if !disk.exists(WAL_DIR).map_err(io_error("stat wal dir"))? {
            disk.create_dir_all(WAL_DIR).map_err(io_error("create wal dir"))?;
            disk.sync_dir("").map_err(io_error("sync data dir"))?;
        }
        match segments.last() {
            Some(&first) => {
                let file = disk.open(&segment_name(first), false).map_err(io_error("open wal segment"))?;
                file.allocate(segment_bytes_max).map_err(io_error("preallocate wal segment"))?;
                Ok(Self { disk, segments, file, offset: last_len, next_index, segment_bytes_max })
            }
            None => {
                let file = create_segment(disk.as_ref(), next_index, segment_bytes_max)?;
                let segments = vec![next_index];
                let offset = SEGMENT_HEADER_BYTES as u64;
                Ok(Self { disk, segments, file, offset, next_index, segment_bytes_max })
            }
        }
    }

    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Appends one encoded batch holding `count` records from `first_index`, durably.
    pub fn append(&mut self, batch: &[u8], first_index: u64, count: u64) -> Result<()> {
        assert_eq!(first_index, self.next_index, "wal appends must be dense");
        assert!(count > 0 && !batch.is_empty());
        #[cfg(feature = "planted-bugs")]
        let planted = crate::planted::planted(crate::planted::Bug::AckBeforeFsync);
        #[cfg(feature = "planted-bugs")]
        if planted {
            // Planted: the previous batch, already acknowledged, is synced only now (before a
            // segment switch too); this one is answered unsynced.
            self.file.sync_data().map_err(io_error("wal fdatasync"))?;
        }
        if self.offset >= self.segment_bytes_max {
            self.file = create_segment(self.disk.as_ref(), first_index, self.segment_bytes_max)?;
            self.segments.push(first_index);
            self.offset = SEGMENT_HEADER_BYTES as u64;
        }
        self.file.write_at(self.offset, batch).map_err(io_error("wal write"))?;
        #[cfg(feature = "planted-bugs")]
        if planted {
            self.offset += batch.len() as u64;
            self.next_index = first_index + count;
            return Ok(());
        }
        self.file.sync_data().map_err(io_error("wal fdatasync"))?;
        self.offset += batch.len() as u64;
        self.next_index = first_index + count;
        Ok(())
    }

    /// Cuts every record after `index` (a follower's divergent tail: docs/clustering.md
    /// "never-truncate-committed"; the caller checks that nothing at or below the commit
    /// index goes). Segments starting above `index` are removed, newest first, and a new
    /// segment starting at `index + 1` is created: it supersedes whatever an older segment
    /// holds from there on (recovery keeps an older segment's records only below the next
    /// segment's first index). A crash part way leaves every record at or below `index`, then
    /// nothing or a prefix of the old tail (never committed, so losing part of it is what the
    /// cut was for); records at or below `index` are never touched.
    pub fn truncate_after(&mut self, index: u64) -> Result<()> {
        assert!(index < self.next_index, "wal: cutting after {index}, past the end {}", self.next_index);
        if index + 1 == self.next_index {
            return Ok(());
        }
        let mut removed = false;
        while let Some(&last) = self.segments.last() {
            if last <= index {
                break;
            }
            self.disk.remove(&segment_name(last)).map_err(io_error("remove wal segment"))?;
            self.segments.pop();
            removed = true;
        }
        if removed {
            self.disk.sync_dir(WAL_DIR).map_err(io_error("sync wal dir"))?;
        }
        self.file = create_segment(self.disk.as_ref(), index + 1, self.segment_bytes_max)?;
        self.segments.push(index + 1);
        self.offset = SEGMENT_HEADER_BYTES as u64;
        self.next_index = index + 1;
        Ok(())
    }

    /// Starts the log over after `index`, which the store now holds (a member that installed
    /// a snapshot at `index`): every segment goes, and a new one starts at `index + 1`. A
    /// crash part way leaves some of the old segments, or none; the caller's marker tells
    /// the next open to finish the job (`cluster::snapshot`).
    pub fn restart_after(&mut self, index: u64) -> Result<()> {
        for first in std::mem::take(&mut self.segments).into_iter().rev() {
            self.disk.remove(&segment_name(first)).map_err(io_error("remove wal segment"))?;
        }
        self.disk.sync_dir(WAL_DIR).map_err(io_error("sync wal dir"))?;
        self.file = create_segment(self.disk.as_ref(), index + 1, self.segment_bytes_max)?;
        self.segments.push(index + 1);
        self.offset = SEGMENT_HEADER_BYTES as u64;
        self.next_index = index + 1;
        Ok(())
    }

    /// Removes segments whose records all have indexes at or below `index` (the store holds
    /// them durably). The segment being appended to is never removed.
    pub fn remove_through(&mut self, index: u64) -> Result<usize> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1] <= index + 1 {
            self.disk.remove(&segment_name(self.segments[0])).map_err(io_error("remove wal segment"))?;
            self.segments.remove(0);
            removed += 1;
        }
        if removed > 0 {
            self.disk.sync_dir(WAL_DIR).map_err(io_error("sync wal dir"))?;
        }
        Ok(removed)
    }
}

fn create_segment(disk: &dyn Disk, first_index: u64, segment_bytes_max: u64) -> Result<Box<dyn DiskFile>> {
    let name = segment_name(first_index);
    let file = disk.open(&name, true).map_err(io_error("create wal segment"))?;
    file.set_len(0).map_err(io_error("truncate new wal segment"))?;
    file.allocate(segment_bytes_max).map_err(io_error("preallocate wal segment"))?;
    file.write_at(0, &encode_segment_header(first_index)).map_err(io_error("write wal segment header"))?;
    file.sync_data().map_err(io_error("sync wal segment header"))?;
    disk.sync_dir(WAL_DIR).map_err(io_error("sync wal dir"))?;
    Ok(file)
}
