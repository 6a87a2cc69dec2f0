//! Volumes: append-only files of object bodies, each in a checksummed record.
//!
//! Record (format version 2): a 32-byte header (magic `S4VR`, version, flags, body length,
//! CRC32C of the block table, header CRC32C), the body, then the block table: one CRC32C per
//! 64 KiB block of the body. A ranged read checks only the blocks it touches, so reading a
//! few bytes of a large object reads a few blocks, and a body streams in bounded pieces. The
//! table's own CRC is in the metadata's [`Location`] and is checked by every whole read.
//!
//! A body is referenced by metadata only after its volume was fsynced, so committed metadata
//! never points at bytes a crash can take back; bytes no metadata references (a failed
//! condition, a torn tail) are garbage for compaction.

use std::sync::Arc;

use t4_env::{Disk, DiskFile};

const RECORD_MAGIC: u32 = 0x5256_3453; // "S4VR" little-endian
const RECORD_VERSION: u16 = 2;
pub const RECORD_HEADER_BYTES: u64 = 32;
pub const VOLUME_DIR: &str = "volumes";
/// A new volume starts once the active one is past this size.
pub const VOLUME_BYTES_MAX: u64 = 1 << 30;
/// Bytes covered by one CRC of the block table.
pub const BLOCK_BYTES: u64 = 64 << 10;
/// Compaction copies records in pieces of this size (a multiple of [`BLOCK_BYTES`]).
const COPY_PIECE_BYTES: u64 = 4 << 20;

/// Where a body lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub volume: u32,
    /// Offset of the body (after its record header).
    pub offset: u64,
    pub len: u64,
    /// CRC32C of the record's block table.
    pub crc: u32,
}

fn block_count(len: u64) -> u64 {
    len.div_ceil(BLOCK_BYTES)
}

/// Bytes a record with a body of `len` bytes takes in its volume.
pub fn record_len(len: u64) -> u64 {
    RECORD_HEADER_BYTES + len + 4 * block_count(len)
}

fn block_table(body: &[u8]) -> Vec<u8> {
    body.chunks(BLOCK_BYTES as usize).flat_map(|block| crc32c::crc32c(block).to_le_bytes()).collect()
}

fn damaged(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("s4: object body checksum mismatch ({what})"))
}

/// Checks `bytes`, which start at a block boundary, against `table` (their blocks' CRCs).
fn check_blocks(bytes: &[u8], table: &[u8]) -> std::io::Result<()> {
    for (block, expected) in bytes.chunks(BLOCK_BYTES as usize).zip(table.chunks_exact(4)) {
        if crc32c::crc32c(block).to_le_bytes() != expected {
            return Err(damaged("block"));
        }
    }
    Ok(())
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
        let table = block_table(body);
        let (file, location) = self.reserve(body.len() as u64, crc32c::crc32c(&table))?;
        let mut record = Vec::with_capacity(record_len(body.len() as u64) as usize);
        record.extend_from_slice(&header(location.len, location.crc));
        record.extend_from_slice(body);
        record.extend_from_slice(&table);
        file.write_at(location.offset - RECORD_HEADER_BYTES, &record)?;
        Ok(location)
    }

    /// Sets aside room for a record with a body of `len` bytes and a block table whose CRC
    /// is `crc`, to be written by the caller (see [`copy`]) without holding the volume.
    pub fn reserve(&mut self, len: u64, crc: u32) -> std::io::Result<(Arc<dyn DiskFile>, Location)> {
        if self.end >= self.bytes_max {
            self.rotate()?;
        }
        let location = Location { volume: self.id, offset: self.end + RECORD_HEADER_BYTES, len, crc };
        self.end += record_len(len);
        Ok((self.file.clone(), location))
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

/// A record written as its body arrives, into room [`ActiveVolume::reserve`] set aside (no
/// volume lock held): the body piece by piece, then its block table, then the header last,
/// so a record left unfinished (a client gone mid-body, a crash) never reads as whole.
pub struct RecordWriter {
    file: Arc<dyn DiskFile>,
    location: Location,
    written: u64,
    table: Vec<u8>,
    /// The CRC of the block being filled, and how much of it is.
    block_crc: u32,
    block_fill: u64,
}

impl RecordWriter {
    pub fn new(file: Arc<dyn DiskFile>, location: Location) -> Self {
        let table = Vec::with_capacity(4 * block_count(location.len) as usize);
        Self { file, location, written: 0, table, block_crc: 0, block_fill: 0 }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes the body's next bytes (not yet durable).
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.written + bytes.len() as u64 > self.location.len {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "more body than the room set aside"));
        }
        self.file.write_at(self.location.offset + self.written, bytes)?;
        self.written += bytes.len() as u64;
        let mut rest = bytes;
        while !rest.is_empty() {
            let take = rest.len().min((BLOCK_BYTES - self.block_fill) as usize);
            self.block_crc = crc32c::crc32c_append(self.block_crc, &rest[..take]);
            self.block_fill += take as u64;
            rest = &rest[take..];
            if self.block_fill == BLOCK_BYTES {
                self.table.extend_from_slice(&self.block_crc.to_le_bytes());
                (self.block_crc, self.block_fill) = (0, 0);
            }
        }
        Ok(())
    }

    /// Writes the block table and the header once the whole body is written; returns where
    /// the body is.
    pub fn finish(mut self) -> std::io::Result<Location> {
        if self.written != self.location.len {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the body is shorter than the room set aside"));
        }
        if self.block_fill > 0 {
            self.table.extend_from_slice(&self.block_crc.to_le_bytes());
        }
        self.location.crc = crc32c::crc32c(&self.table);
        self.file.write_at(self.location.offset + self.location.len, &self.table)?;
        self.file.write_at(self.location.offset - RECORD_HEADER_BYTES, &header(self.location.len, self.location.crc))?;
        Ok(self.location)
    }
}

/// Reads bytes `[start, end)` of a body, checking every block they touch (and the block
/// table, when the read covers the whole body): damage is an error, never data.
pub fn read(file: &dyn DiskFile, location: Location, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    if start >= end {
        return Ok(Vec::new());
    }
    let (first, last) = (start / BLOCK_BYTES, (end - 1) / BLOCK_BYTES);
    let from = first * BLOCK_BYTES;
    let to = ((last + 1) * BLOCK_BYTES).min(location.len);
    let mut bytes = vec![0u8; (to - from) as usize];
    file.read_at(location.offset + from, &mut bytes)?;
    let mut table = vec![0u8; 4 * (last - first + 1) as usize];
    file.read_at(location.offset + location.len + 4 * first, &mut table)?;
    check_blocks(&bytes, &table)?;
    if first == 0 && last + 1 == block_count(location.len) && crc32c::crc32c(&table) != location.crc {
        return Err(damaged("block table"));
    }
    bytes.truncate((end - from) as usize);
    bytes.drain(..(start - from) as usize);
    Ok(bytes)
}

/// Copies the record of the body at `from` (in `source`) into the room [`ActiveVolume::reserve`]
/// set aside at `to` (in `target`), piece by piece, checking every block on the way.
pub fn copy(source: &dyn DiskFile, from: Location, target: &dyn DiskFile, to: Location) -> std::io::Result<()> {
    let mut table = vec![0u8; 4 * block_count(from.len) as usize];
    source.read_at(from.offset + from.len, &mut table)?;
    if crc32c::crc32c(&table) != from.crc {
        return Err(damaged("block table"));
    }
    target.write_at(to.offset - RECORD_HEADER_BYTES, &header(from.len, from.crc))?;
    let mut at = 0;
    while at < from.len {
        let piece = COPY_PIECE_BYTES.min(from.len - at);
        let mut bytes = vec![0u8; piece as usize];
        source.read_at(from.offset + at, &mut bytes)?;
        let entries = (4 * at / BLOCK_BYTES) as usize;
        check_blocks(&bytes, &table[entries..])?;
        target.write_at(to.offset + at, &bytes)?;
        at += piece;
    }
    target.write_at(to.offset + to.len, &table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use t4_env::SimDisk;

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|index| (index * 31 % 251) as u8).collect()
    }

    fn volume(disk: &SimDisk) -> ActiveVolume {
        ActiveVolume::open(Arc::new(disk.clone()), VOLUME_BYTES_MAX).unwrap()
    }

    #[test]
    fn ranges_read_back_exactly_across_block_boundaries() {
        let disk = SimDisk::new();
        let mut active = volume(&disk);
        let block = BLOCK_BYTES as usize;
        for len in [0, 1, block - 1, block, block + 1, 3 * block + 17] {
            let data = body(len);
            let location = active.append(&data).unwrap();
            let file = active.file();
            assert_eq!(read(file.as_ref(), location, 0, len as u64).unwrap(), data);
            for (start, end) in [(0, 1), (block - 1, block + 1), (block, 2 * block), (len / 2, len), (len.saturating_sub(1), len)] {
                let (start, end) = (start.min(len), end.min(len));
                assert_eq!(read(file.as_ref(), location, start as u64, end as u64).unwrap(), data[start..end], "{len}: {start}..{end}");
            }
        }
    }

    #[test]
    fn damage_is_caught_in_the_blocks_a_read_touches_and_spares_the_others() {
        let disk = SimDisk::new();
        let mut active = volume(&disk);
        let block = BLOCK_BYTES;
        let data = body(3 * block as usize);
        let location = active.append(&data).unwrap();
        let file = active.file();
        file.sync_data().unwrap();
        disk.flip_bit(&volume_name(active.id), location.offset + block + 5, 2).unwrap();
        let error = read(file.as_ref(), location, block, block + 10).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert!(read(file.as_ref(), location, 0, location.len).is_err(), "a whole read sees the damage");
        // The blocks around it still read, each checked on its own.
        assert_eq!(read(file.as_ref(), location, 0, block).unwrap(), data[..block as usize]);
        assert_eq!(read(file.as_ref(), location, 2 * block, 3 * block).unwrap(), data[2 * block as usize..]);
    }

    #[test]
    fn a_damaged_block_table_is_caught() {
        let disk = SimDisk::new();
        let mut active = volume(&disk);
        let data = body(2 * BLOCK_BYTES as usize);
        let location = active.append(&data).unwrap();
        let file = active.file();
        file.sync_data().unwrap();
        // The second block's CRC entry.
        disk.flip_bit(&volume_name(active.id), location.offset + location.len + 5, 0).unwrap();
        assert!(read(file.as_ref(), location, BLOCK_BYTES, BLOCK_BYTES + 1).is_err());
        assert!(read(file.as_ref(), location, 0, location.len).is_err());
        let (target, to) = active.reserve(location.len, location.crc).unwrap();
        assert!(copy(file.as_ref(), location, target.as_ref(), to).is_err(), "compaction does not copy damage");
    }

    #[test]
    fn a_record_written_piece_by_piece_reads_back_like_an_appended_one() {
        let disk = SimDisk::new();
        let mut active = volume(&disk);
        let bytes = body(3 * BLOCK_BYTES as usize + 123);
        let whole = active.append(&bytes).unwrap();
        let (file, room) = active.reserve(bytes.len() as u64, 0).unwrap();
        let mut writer = RecordWriter::new(file.clone(), room);
        for piece in bytes.chunks(10_007) {
            writer.write(piece).unwrap();
        }
        assert!(writer.write(b"x").is_err(), "no more than the room");
        let streamed = writer.finish().unwrap();
        assert_eq!(streamed.crc, whole.crc, "the same block table");
        assert_eq!(read(file.as_ref(), streamed, 0, streamed.len).unwrap(), bytes);
        assert_eq!(read(file.as_ref(), streamed, 70_000, 70_100).unwrap(), bytes[70_000..70_100]);
        let (file, room) = active.reserve(10, 0).unwrap();
        let mut short = RecordWriter::new(file, room);
        short.write(b"12345").unwrap();
        assert!(short.finish().is_err(), "a short body is not a record");
    }

    #[test]
    fn a_copied_record_reads_back_and_keeps_its_table() {
        let disk = SimDisk::new();
        let mut active = volume(&disk);
        let data = body((COPY_PIECE_BYTES + 3 * BLOCK_BYTES + 9) as usize);
        let from = active.append(&data).unwrap();
        let (target, to) = active.reserve(from.len, from.crc).unwrap();
        let after = active.append(b"after the reserved room").unwrap();
        copy(active.file().as_ref(), from, target.as_ref(), to).unwrap();
        assert_eq!(read(target.as_ref(), to, 0, to.len).unwrap(), data);
        assert_eq!(
            read(target.as_ref(), to, COPY_PIECE_BYTES - 3, COPY_PIECE_BYTES + 3).unwrap(),
            data[COPY_PIECE_BYTES as usize - 3..][..6]
        );
        assert_eq!(read(active.file().as_ref(), after, 0, after.len).unwrap(), b"after the reserved room");
        assert_eq!(active.end, to.offset - RECORD_HEADER_BYTES + record_len(from.len) + record_len(after.len));
    }
}
