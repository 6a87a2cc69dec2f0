//! SimDisk: an in-memory disk that can crash the way real disks do.
//!
//! Every file keeps a durable image and the writes made since its last successful
//! `sync_data`. Creating or removing a file becomes durable only with `sync_dir` on its
//! directory. [`SimDisk::crash`] models power loss:
//! - [`CrashMode::LoseUnsynced`]: pending writes vanish;
//! - [`CrashMode::Torn`]: each pending write lands whole, not at all, or as a prefix, in
//!   any order (seeded);
//! - [`CrashMode::Wipe`]: the whole disk is gone (a replaced node).
//!
//! Out-of-contract faults ([`SimDisk::flip_bit`]) corrupt durable bytes; t4 must detect
//! them, never serve them. Faults in [`SimDiskFaults`] give EIO on sync (dropping the
//! pending writes, as Linux does) and ENOSPC past a capacity. Handles opened before a crash
//! fail with an error, like file descriptors of a dead process.
//!
//! Deterministic: no clock, no randomness except the seed a caller passes to `crash`.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::disk::{Disk, DiskFile};

/// How a crash treats writes that were not yet synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    LoseUnsynced,
    Torn { seed: u64 },
    Wipe,
}

/// Injected faults, changeable at any time.
#[derive(Debug, Clone, Default)]
pub struct SimDiskFaults {
    /// The next N `sync_data` calls fail with EIO and drop that file's pending writes.
    pub sync_failures: u32,
    /// Total bytes the disk can hold (None = unlimited); writes beyond fail with ENOSPC.
    pub capacity_bytes: Option<u64>,
    /// Power fails during the sync after this many more syncs (0 = the next one): the
    /// disk crashes in the given mode and that sync reports an error. Models a crash
    /// between a write and its fsync ("mid-commit").
    pub crash_on_sync: Option<(u32, CrashMode)>,
}

#[derive(Debug, Clone)]
enum PendingOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen { len: u64 },
}

#[derive(Debug, Clone, Default)]
struct SimFile {
    durable: Vec<u8>,
    pending: Vec<PendingOp>,
    /// The current contents (durable + pending, applied in order).
    current: Vec<u8>,
    /// Whether the directory entry survives a crash.
    entry_durable: bool,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<String, SimFile>,
    /// Removed files whose removal is not yet durable (restored by a crash).
    removed: BTreeMap<String, SimFile>,
    dirs: BTreeMap<String, ()>,
    incarnation: u64,
    faults: SimDiskFaults,
    syncs: u64,
    writes: u64,
}

/// A crashable in-memory disk; clones share the same state.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

fn enoent(path: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("sim disk: no such file: {path}"))
}

fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |index| &path[..index])
}

fn apply(image: &mut Vec<u8>, op: &PendingOp) {
    match op {
        PendingOp::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*offset as usize..end].copy_from_slice(data);
        }
        PendingOp::SetLen { len } => image.resize(*len as usize, 0),
    }
}

/// splitmix64: the torn-crash schedule is a pure function of the seed.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("sim disk lock")
    }

    pub fn set_faults(&self, faults: SimDiskFaults) {
        self.lock().faults = faults;
    }

    pub fn faults(&self) -> SimDiskFaults {
        self.lock().faults.clone()
    }

    /// (writes, syncs) performed so far, for traces and tests.
    pub fn counters(&self) -> (u64, u64) {
        let state = self.lock();
        (state.writes, state.syncs)
    }

    /// Power loss. Every handle opened before it fails from now on.
    pub fn crash(&self, mode: CrashMode) {
        crash_state(&mut self.lock(), mode);
    }

    /// Flips one bit of a file's durable bytes (out of contract: must be detected).
    pub fn flip_bit(&self, path: &str, byte_offset: u64, bit: u8) -> io::Result<()> {
        let mut state = self.lock();
        let file = state.files.get_mut(path).ok_or_else(|| enoent(path))?;
        let index = byte_offset as usize;
        if index >= file.durable.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "flip past end of file"));
        }
        file.durable[index] ^= 1 << (bit % 8);
        if index < file.current.len() {
            file.current[index] ^= 1 << (bit % 8);
        }
        Ok(())
    }

    /// Paths of every file, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.lock().files.keys().cloned().collect()
    }

    /// Length of a file's current contents.
    pub fn file_len(&self, path: &str) -> Option<u64> {
        self.lock().files.get(path).map(|file| file.current.len() as u64)
    }

    fn used_bytes(state: &State) -> u64 {
        state.files.values().map(|file| file.current.len() as u64).sum()
    }
}

/// Power loss applied to the disk's state (see [`SimDisk::crash`]).
fn crash_state(state: &mut State, mode: CrashMode) {
    state.incarnation += 1;
    if mode == CrashMode::Wipe {
        state.files.clear();
        state.removed.clear();
        state.dirs.clear();
        return;
    }
    let removed = std::mem::take(&mut state.removed);
    for (path, file) in removed {
        if file.entry_durable {
            state.files.insert(path, file);
        }
    }
    state.files.retain(|_, file| file.entry_durable);
    let mut random = match mode {
        CrashMode::Torn { seed } => Some(seed),
        _ => None,
    };
    for file in state.files.values_mut() {
        let pending = std::mem::take(&mut file.pending);
        if let Some(random) = random.as_mut() {
            tear(&mut file.durable, pending, random);
        }
        file.current = file.durable.clone();
    }
}

/// Applies each pending op whole, not at all, or (for writes) as a prefix, in a seeded order.
fn tear(durable: &mut Vec<u8>, mut pending: Vec<PendingOp>, random: &mut u64) {
    while !pending.is_empty() {
        let index = (next_random(random) % pending.len() as u64) as usize;
        let op = pending.swap_remove(index);
        match next_random(random) % 3 {
            0 => {}
            1 => apply(durable, &op),
            _ => {
                if let PendingOp::Write { offset, data } = op {
                    let keep = (next_random(random) % (data.len() as u64 + 1)) as usize;
                    apply(durable, &PendingOp::Write { offset, data: data[..keep].to_vec() });
                }
            }
        }
    }
}

impl Disk for SimDisk {
    fn open(&self, path: &str, create: bool) -> io::Result<Box<dyn DiskFile>> {
        let mut state = self.lock();
        if !state.files.contains_key(path) {
            if !create {
                return Err(enoent(path));
            }
            let dir = parent(path);
            if !dir.is_empty() && !state.dirs.contains_key(dir) {
                return Err(enoent(dir));
            }
            state.removed.remove(path);
            state.files.insert(path.to_string(), SimFile::default());
        }
        let incarnation = state.incarnation;
        Ok(Box::new(SimFileHandle { disk: self.clone(), path: path.to_string(), incarnation }))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let state = self.lock();
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let names = state
            .files
            .keys()
            .filter_map(|path| path.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_string)
            .collect();
        Ok(names)
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        let mut state = self.lock();
        if let Some(file) = state.files.remove(path) {
            state.removed.insert(path.to_string(), file);
        }
        Ok(())
    }

    fn create_dir_all(&self, dir: &str) -> io::Result<()> {
        let mut state = self.lock();
        let mut path = String::new();
        for part in dir.split('/').filter(|part| !part.is_empty()) {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            state.dirs.insert(path.clone(), ());
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        let mut state = self.lock();
        for (path, file) in state.files.iter_mut() {
            if parent(path) == dir {
                file.entry_durable = true;
            }
        }
        state.removed.retain(|path, _| parent(path) != dir);
        Ok(())
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        let state = self.lock();
        Ok(state.files.contains_key(path) || state.dirs.contains_key(path))
    }

    fn lock_exclusive(&self) -> io::Result<Box<dyn Send + Sync + std::fmt::Debug>> {
        // One simulated node owns a SimDisk; a crash ends its process and its lock with it.
        Ok(Box::new(()))
    }
}

#[derive(Debug)]
struct SimFileHandle {
    disk: SimDisk,
    path: String,
    incarnation: u64,
}

impl SimFileHandle {
    fn with_file<R>(&self, work: impl FnOnce(&mut State, &str) -> io::Result<R>) -> io::Result<R> {
        let mut state = self.disk.lock();
        if state.incarnation != self.incarnation {
            return Err(io::Error::other("sim disk: handle from before a crash"));
        }
        if !state.files.contains_key(&self.path) {
            return Err(enoent(&self.path));
        }
        work(&mut state, &self.path)
    }
}

impl DiskFile for SimFileHandle {
    fn len(&self) -> io::Result<u64> {
        self.with_file(|state, path| Ok(state.files[path].current.len() as u64))
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.with_file(|state, path| {
            let current = &state.files[path].current;
            let end = offset as usize + out.len();
            if end > current.len() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "sim disk: read past end"));
            }
            out.copy_from_slice(&current[offset as usize..end]);
            Ok(())
        })
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with_file(|state, path| {
            let file_len = state.files[path].current.len() as u64;
            let growth = (offset + data.len() as u64).saturating_sub(file_len);
            if let Some(capacity) = state.faults.capacity_bytes {
                if SimDisk::used_bytes(state) + growth > capacity {
                    return Err(io::Error::new(io::ErrorKind::StorageFull, "sim disk: no space left"));
                }
            }
            state.writes += 1;
            let file = state.files.get_mut(path).expect("checked above");
            let op = PendingOp::Write { offset, data: data.to_vec() };
            apply(&mut file.current, &op);
            file.pending.push(op);
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with_file(|state, path| {
            let file = state.files.get_mut(path).expect("checked above");
            let op = PendingOp::SetLen { len };
            apply(&mut file.current, &op);
            file.pending.push(op);
            Ok(())
        })
    }

    /// Preallocation is not modelled: appends grow the file, the conservative case for
    /// recovery (no zero tail to tell apart from a torn one).
    fn allocate(&self, _len: u64) -> io::Result<()> {
        self.with_file(|_, _| Ok(()))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with_file(|state, path| {
            state.syncs += 1;
            match state.faults.crash_on_sync {
                Some((0, mode)) => {
                    state.faults.crash_on_sync = None;
                    crash_state(state, mode);
                    return Err(io::Error::other("sim disk: power failed during fsync"));
                }
                Some((countdown, mode)) => state.faults.crash_on_sync = Some((countdown - 1, mode)),
                None => {}
            }
            let fail = state.faults.sync_failures > 0;
            if fail {
                state.faults.sync_failures -= 1;
            }
            let file = state.files.get_mut(path).expect("checked above");
            if fail {
                // Linux drops the dirty pages of a failed fsync: the bytes are gone.
                file.pending.clear();
                file.current = file.durable.clone();
                return Err(io::Error::other("sim disk: EIO on fsync"));
            }
            for op in std::mem::take(&mut file.pending) {
                apply(&mut file.durable, &op);
            }
            debug_assert_eq!(file.durable, file.current);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_bytes(disk: &SimDisk, path: &str) -> Vec<u8> {
        let file = disk.open(path, false).unwrap();
        let mut out = vec![0; file.len().unwrap() as usize];
        file.read_at(0, &mut out).unwrap();
        out
    }

    #[test]
    fn crash_keeps_only_synced_bytes() {
        let disk = SimDisk::new();
        disk.create_dir_all("wal").unwrap();
        let file = disk.open("wal/a", true).unwrap();
        file.write_at(0, b"hello").unwrap();
        file.sync_data().unwrap();
        disk.sync_dir("wal").unwrap();
        file.write_at(5, b" world").unwrap();
        disk.crash(CrashMode::LoseUnsynced);
        assert!(file.len().is_err(), "a handle from before the crash must fail");
        assert_eq!(file_bytes(&disk, "wal/a"), b"hello");
    }

    #[test]
    fn unsynced_directory_entry_vanishes() {
        let disk = SimDisk::new();
        let file = disk.open("a", true).unwrap();
        file.write_at(0, b"x").unwrap();
        file.sync_data().unwrap();
        disk.crash(CrashMode::LoseUnsynced);
        assert!(!disk.exists("a").unwrap());
    }

    #[test]
    fn failed_sync_drops_pending_writes() {
        let disk = SimDisk::new();
        let file = disk.open("a", true).unwrap();
        file.write_at(0, b"abc").unwrap();
        disk.set_faults(SimDiskFaults { sync_failures: 1, ..Default::default() });
        assert!(file.sync_data().is_err());
        assert_eq!(file.len().unwrap(), 0);
    }

    #[test]
    fn torn_crash_is_deterministic_per_seed() {
        let run = |seed| {
            let disk = SimDisk::new();
            let file = disk.open("a", true).unwrap();
            file.sync_data().unwrap();
            disk.sync_dir("").unwrap();
            for index in 0..8u8 {
                file.write_at(index as u64 * 4, &[index; 4]).unwrap();
            }
            disk.crash(CrashMode::Torn { seed });
            file_bytes(&disk, "a")
        };
        assert_eq!(run(7), run(7));
        let outcomes: std::collections::BTreeSet<Vec<u8>> = (0..20).map(run).collect();
        assert!(outcomes.len() > 1, "different seeds must tear differently");
    }

    #[test]
    fn capacity_gives_enospc() {
        let disk = SimDisk::new();
        disk.set_faults(SimDiskFaults { capacity_bytes: Some(4), ..Default::default() });
        let file = disk.open("a", true).unwrap();
        file.write_at(0, b"1234").unwrap();
        let error = file.write_at(4, b"5").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
    }
}
