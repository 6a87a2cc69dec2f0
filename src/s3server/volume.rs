//! Volumes: append-only files of object bodies, each in a checksummed record.
//!
//! Record: a 32-byte header (magic `S4VR`, version, flags, body length, body CRC32C,
//! header CRC32C) then the body. A body is referenced by metadata only after its volume
//! was fsynced, so committed metadata never points at bytes a crash can take back; bytes no
//! metadata references (a failed condition, a torn tail) are garbage for compaction.

use std::sync::Arc;

use crate::env::{Disk, DiskFile};

const RECORD_MAGIC: u32 = 0x5256_3453; // "S4VR" little-endian
const RECORD_VERSION: u16 = 1;
pub const RECORD_HEADER_BYTES: u64 = 32;
pub const VOLUME_DIR: &str = "volumes";
/// A new volume starts once the active one is past this size.
pub const VOLUME_BYTES_MAX: u64 = 1 << 30;

/// Where a body lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub volume: u32,
    /// Offset of the body (after its record header).
    pub offset: u64,
    pub len: u64,
    pub crc: u32,
}

pub fn volume_name(id: u32) -> String {
    format!("{VOLUME_DIR}/{id:08}.vol")
}

fn header(len: u64, crc: u32) -> [u8; RECORD_HEADER_BYTES as usize] {
    let mut header = [0u8; RECORD_HEADER_BYTES as usize];
    header[..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    header[4..6].copy_from_slice(&RECORD_VERSION.to_le_bytes());
    header[8..16].copy_from_slice(&len.to_le_bytes());
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&header[..20]);
    header[20..24].copy_from_slice(&header_crc.to_le_bytes());
    header
}

/// The volume being appended to. Appends are serialized by the caller's lock; syncs may
/// run while further appends land (they are covered by a later sync).
pub struct ActiveVolume {
    pub id: u32,
    disk: Arc<dyn Disk>,
    file: Arc<dyn DiskFile>,
    end: u64,
    bytes_max: u64,
}

impl ActiveVolume {
    /// Opens the newest volume (appending after whatever it holds) or creates the first.
    pub fn open(disk: Arc<dyn Disk>, bytes_max: u64) -> std::io::Result<Self> {
        if !disk.exists(VOLUME_DIR)? {
            disk.create_dir_all(VOLUME_DIR)?;
            disk.sync_dir("")?;
        }
        let newest = disk.list(VOLUME_DIR)?.iter().filter_map(|name| name.strip_suffix(".vol")?.parse::<u32>().ok()).max();
        let id = newest.unwrap_or(1);
        let file: Arc<dyn DiskFile> = Arc::from(disk.open(&volume_name(id), true)?);
        if newest.is_none() {
            disk.sync_dir(VOLUME_DIR)?;
        }
        let end = file.len()?;
        Ok(Self { id, disk, file, end, bytes_max })
    }

    pub fn file(&self) -> Arc<dyn DiskFile> {
        self.file.clone()
    }

    /// Writes one record (not yet durable); returns where its body is.
    pub fn append(&mut self, body: &[u8]) -> std::io::Result<Location> {
        if self.end >= self.bytes_max {
            self.rotate()?;
        }
        let crc = crc32c::crc32c(body);
        let mut record = Vec::with_capacity(RECORD_HEADER_BYTES as usize + body.len());
        record.extend_from_slice(&header(body.len() as u64, crc));
        record.extend_from_slice(body);
        self.file.write_at(self.end, &record)?;
        let location = Location { volume: self.id, offset: self.end + RECORD_HEADER_BYTES, len: body.len() as u64, crc };
        self.end += record.len() as u64;
        Ok(location)
    }
}

impl ActiveVolume {
    /// Starts the next volume. The old one is synced first: commits waiting for it sync only
    /// the active volume, so nothing they reference may be left unsynced behind.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        let id = self.id + 1;
        let file: Arc<dyn DiskFile> = Arc::from(self.disk.open(&volume_name(id), true)?);
        self.disk.sync_dir(VOLUME_DIR)?;
        (self.id, self.file, self.end) = (id, file, 0);
        Ok(())
    }
}

/// Reads a body back and checks it against its checksum: damage is an error, never data.
pub fn read(file: &dyn DiskFile, location: Location, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    let mut body = vec![0u8; location.len as usize];
    file.read_at(location.offset, &mut body)?;
    if crc32c::crc32c(&body) != location.crc {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "s4: object body checksum mismatch"));
    }
    Ok(body[start as usize..end as usize].to_vec())
}
