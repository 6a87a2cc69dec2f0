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
//! Files are inodes behind names, as on POSIX: a handle keeps reading and writing its file
//! after the name is removed (or replaced), until the handle is dropped.
//!
//! Out-of-contract faults ([`SimDisk::flip_bit`], [`SimDisk::misdirect`]) corrupt durable
//! bytes; t4 must detect them, never serve them. Faults in [`SimDiskFaults`] give EIO on
//! sync (dropping the pending writes, as Linux does) and ENOSPC past a capacity. Handles
//! opened before a crash fail with an error, like file descriptors of a dead process.
//!
//! The data dir lock is exclusive, like `flock`, and dies with its process in a crash.
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
    /// Live handles of this incarnation.
    handles: usize,
}

type Ino = u64;

#[derive(Debug, Default)]
struct State {
    names: BTreeMap<String, Ino>,
    inodes: BTreeMap<Ino, SimFile>,
    next_ino: Ino,
    /// Removed names whose removal is not yet durable (restored by a crash).
    removed: BTreeMap<String, Ino>,
    dirs: BTreeMap<String, ()>,
    incarnation: u64,
    /// Whether a process of this incarnation holds the data dir's lock.
    locked: bool,
    faults: SimDiskFaults,
    /// Injected faults that fired (an EIO, ENOSPC, or power failing in a sync).
    faults_fired: u64,
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

    /// How many injected faults have fired so far: a harness playing the supervisor tells
    /// by it whether a process failed to open because of one.
    pub fn faults_fired(&self) -> u64 {
        self.lock().faults_fired
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

    /// The process using the disk is killed (SIGKILL), the machine stays up: every write it
    /// made stays (the page cache survives), its lock is released, and its handles fail from
    /// now on. Call it *before* the simulator kills the process's tasks: dropping them runs
    /// destructors (redb's clean-shutdown write among them) that a real SIGKILL never runs,
    /// and they must not reach the disk.
    pub fn kill_process(&self) {
        let mut state = self.lock();
        state.incarnation += 1;
        state.locked = false;
        for file in state.inodes.values_mut() {
            file.handles = 0;
        }
    }

    /// Flips one bit of a file's durable bytes (out of contract: must be detected).
    pub fn flip_bit(&self, path: &str, byte_offset: u64, bit: u8) -> io::Result<()> {
        let mut state = self.lock();
        let ino = *state.names.get(path).ok_or_else(|| enoent(path))?;
        let file = state.inodes.get_mut(&ino).expect("named inode");
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

    /// A misdirected write (out of contract: must be detected): the durable bytes at
    /// `from..from + len` of a file also land at `to`, over what was there. Both ranges must
    /// lie within the durable bytes.
    pub fn misdirect(&self, path: &str, from: u64, to: u64, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        let ino = *state.names.get(path).ok_or_else(|| enoent(path))?;
        let file = state.inodes.get_mut(&ino).expect("named inode");
        let (from, to, len) = (from as usize, to as usize, len as usize);
        if from.max(to) + len > file.durable.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "misdirect past end of file"));
        }
        let block = file.durable[from..from + len].to_vec();
        file.durable[to..to + len].copy_from_slice(&block);
        if to + len <= file.current.len() {
            file.current[to..to + len].copy_from_slice(&block);
        }
        Ok(())
    }

    /// Bytes the disk holds now (what `capacity_bytes` is compared with).
    pub fn used(&self) -> u64 {
        SimDisk::used_bytes(&self.lock())
    }

    /// Paths of every file, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.lock().names.keys().cloned().collect()
    }

    /// Length of a file's current contents.
    pub fn file_len(&self, path: &str) -> Option<u64> {
        let state = self.lock();
        state.names.get(path).map(|ino| state.inodes[ino].current.len() as u64)
    }

    /// Open but unlinked files still take space, as on POSIX.
    fn used_bytes(state: &State) -> u64 {
        state.inodes.values().map(|file| file.current.len() as u64).sum()
    }
}

impl State {
    /// Frees an inode nothing refers to any more: no name, no pending removal, no handle.
    fn collect(&mut self, ino: Ino) {
        let referenced = self.inodes.get(&ino).is_some_and(|file| file.handles > 0)
            || self.names.values().any(|named| *named == ino)
            || self.removed.values().any(|named| *named == ino);
        if !referenced {
            self.inodes.remove(&ino);
        }
    }
}

/// Power loss applied to the disk's state (see [`SimDisk::crash`]).
fn crash_state(state: &mut State, mode: CrashMode) {
    state.incarnation += 1;
    state.locked = false;
    if mode == CrashMode::Wipe {
        state.names.clear();
        state.inodes.clear();
        state.removed.clear();
        state.dirs.clear();
        return;
    }
    let removed = std::mem::take(&mut state.removed);
    for (path, ino) in removed {
        if state.inodes[&ino].entry_durable {
            state.names.insert(path, ino);
        }
    }
    let inodes = &state.inodes;
    state.names.retain(|_, ino| inodes[ino].entry_durable);
    let named: std::collections::BTreeSet<Ino> = state.names.values().copied().collect();
    state.inodes.retain(|ino, _| named.contains(ino));
    let mut random = match mode {
        CrashMode::Torn { seed } => Some(seed),
        _ => None,
    };
    for file in state.inodes.values_mut() {
        file.handles = 0;
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
        let ino = match state.names.get(path) {
            Some(ino) => *ino,
            None => {
                if !create {
                    return Err(enoent(path));
                }
                let dir = parent(path);
                if !dir.is_empty() && !state.dirs.contains_key(dir) {
                    return Err(enoent(dir));
                }
                if let Some(old) = state.removed.remove(path) {
                    state.collect(old);
                }
                let ino = state.next_ino;
                state.next_ino += 1;
                state.inodes.insert(ino, SimFile::default());
                state.names.insert(path.to_string(), ino);
                ino
            }
        };
        state.inodes.get_mut(&ino).expect("named inode").handles += 1;
        let incarnation = state.incarnation;
        Ok(Box::new(SimFileHandle { disk: self.clone(), ino, incarnation }))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let state = self.lock();
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let names = state
            .names
            .keys()
            .filter_map(|path| path.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_string)
            .collect();
        Ok(names)
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        let mut state = self.lock();
        if let Some(ino) = state.names.remove(path) {
            if let Some(old) = state.removed.insert(path.to_string(), ino) {
                state.collect(old);
            }
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
        let State { names, inodes, .. } = &mut *state;
        for (path, ino) in names.iter() {
            if parent(path) == dir {
                inodes.get_mut(ino).expect("named inode").entry_durable = true;
            }
        }
        let (gone, kept): (BTreeMap<String, Ino>, BTreeMap<String, Ino>) =
            std::mem::take(&mut state.removed).into_iter().partition(|(path, _)| parent(path) == dir);
        state.removed = kept;
        for ino in gone.into_values() {
            state.collect(ino);
        }
        Ok(())
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        let state = self.lock();
        Ok(state.names.contains_key(path) || state.dirs.contains_key(path))
    }

    /// Like `flock`: one holder at a time, released when the guard drops or the holder's
    /// process dies in a crash.
    fn lock_exclusive(&self) -> io::Result<Box<dyn Send + Sync + std::fmt::Debug>> {
        let mut state = self.lock();
        if state.locked {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "sim disk: data directory is in use by another process"));
        }
        state.locked = true;
        Ok(Box::new(SimDirLock { disk: self.clone(), incarnation: state.incarnation }))
    }
}

#[derive(Debug)]
struct SimDirLock {
    disk: SimDisk,
    incarnation: u64,
}

impl Drop for SimDirLock {
    fn drop(&mut self) {
        let Ok(mut state) = self.disk.state.lock() else { return };
        if state.incarnation == self.incarnation {
            state.locked = false;
        }
    }
}

#[derive(Debug)]
struct SimFileHandle {
    disk: SimDisk,
    ino: Ino,
    incarnation: u64,
}

impl SimFileHandle {
    fn with_file<R>(&self, work: impl FnOnce(&mut State, Ino) -> io::Result<R>) -> io::Result<R> {
        let mut state = self.disk.lock();
        if state.incarnation != self.incarnation {
            return Err(io::Error::other("sim disk: handle from before a crash"));
        }
        work(&mut state, self.ino)
    }
}

impl Drop for SimFileHandle {
    fn drop(&mut self) {
        let Ok(mut state) = self.disk.state.lock() else { return };
        if state.incarnation != self.incarnation {
            return;
        }
        if let Some(file) = state.inodes.get_mut(&self.ino) {
            file.handles -= 1;
        }
        state.collect(self.ino);
    }
}

impl DiskFile for SimFileHandle {
    fn len(&self) -> io::Result<u64> {
        self.with_file(|state, ino| Ok(state.inodes[&ino].current.len() as u64))
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.with_file(|state, ino| {
            let current = &state.inodes[&ino].current;
            let end = offset as usize + out.len();
            if end > current.len() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "sim disk: read past end"));
            }
            out.copy_from_slice(&current[offset as usize..end]);
            Ok(())
        })
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with_file(|state, ino| {
            let file_len = state.inodes[&ino].current.len() as u64;
            let growth = (offset + data.len() as u64).saturating_sub(file_len);
            if let Some(capacity) = state.faults.capacity_bytes {
                if SimDisk::used_bytes(state) + growth > capacity {
                    state.faults_fired += 1;
                    return Err(io::Error::new(io::ErrorKind::StorageFull, "sim disk: no space left"));
                }
            }
            state.writes += 1;
            let file = state.inodes.get_mut(&ino).expect("open inode");
            let op = PendingOp::Write { offset, data: data.to_vec() };
            apply(&mut file.current, &op);
            file.pending.push(op);
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with_file(|state, ino| {
            let file = state.inodes.get_mut(&ino).expect("open inode");
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
        self.with_file(|state, ino| {
            state.syncs += 1;
            match state.faults.crash_on_sync {
                Some((0, mode)) => {
                    state.faults.crash_on_sync = None;
                    state.faults_fired += 1;
                    crash_state(state, mode);
                    return Err(io::Error::other("sim disk: power failed during fsync"));
                }
                Some((countdown, mode)) => state.faults.crash_on_sync = Some((countdown - 1, mode)),
                None => {}
            }
            let fail = state.faults.sync_failures > 0;
            if fail {
                state.faults.sync_failures -= 1;
                state.faults_fired += 1;
            }
            let file = state.inodes.get_mut(&ino).expect("open inode");
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
    fn a_misdirected_write_copies_durable_bytes_over_others() {
        let disk = SimDisk::new();
        let file = disk.open("a", true).unwrap();
        file.write_at(0, b"aaaabbbbcccc").unwrap();
        file.sync_data().unwrap();
        disk.misdirect("a", 0, 8, 4).unwrap();
        assert_eq!(file_bytes(&disk, "a"), b"aaaabbbbaaaa");
        assert!(disk.misdirect("a", 0, 10, 4).is_err(), "past the durable bytes");
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
    fn a_handle_outlives_the_removal_of_its_name() {
        let disk = SimDisk::new();
        let old = disk.open("a", true).unwrap();
        old.write_at(0, b"old").unwrap();
        disk.remove("a").unwrap();
        assert!(disk.open("a", false).is_err());
        let new = disk.open("a", true).unwrap();
        new.write_at(0, b"new!").unwrap();
        let mut out = [0u8; 3];
        old.read_at(0, &mut out).unwrap();
        assert_eq!(&out, b"old", "the old handle reads its own file, not the new one");
        assert_eq!(file_bytes(&disk, "a"), b"new!");
        drop(old);
        assert_eq!(disk.lock().inodes.len(), 1, "the unlinked file is freed with its last handle");
    }

    #[test]
    fn an_unsynced_removal_is_undone_by_a_crash() {
        let disk = SimDisk::new();
        let file = disk.open("a", true).unwrap();
        file.write_at(0, b"kept").unwrap();
        file.sync_data().unwrap();
        disk.sync_dir("").unwrap();
        drop(file);
        disk.remove("a").unwrap();
        disk.crash(CrashMode::LoseUnsynced);
        assert_eq!(file_bytes(&disk, "a"), b"kept");
        disk.remove("a").unwrap();
        disk.sync_dir("").unwrap();
        disk.crash(CrashMode::LoseUnsynced);
        assert!(!disk.exists("a").unwrap());
        assert!(disk.lock().inodes.is_empty());
    }

    #[test]
    fn the_dir_lock_has_one_holder_until_dropped_or_crashed() {
        let disk = SimDisk::new();
        let held = disk.lock_exclusive().unwrap();
        assert_eq!(disk.lock_exclusive().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        drop(held);
        let held = disk.lock_exclusive().unwrap();
        disk.crash(CrashMode::LoseUnsynced);
        let after_crash = disk.lock_exclusive().unwrap();
        drop(held);
        assert!(disk.lock_exclusive().is_err(), "a dead process's guard releases nothing");
        drop(after_crash);
        disk.lock_exclusive().unwrap();
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
