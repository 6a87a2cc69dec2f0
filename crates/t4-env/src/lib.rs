//! The seams between t4 and the world: clock, disk, object store and peer network.
//!
//! Everything nondeterministic lives behind these traits. Production wires the real
//! implementations ([`RealClock`], [`OsDisk`], an S3 or in-memory object store); the
//! simulator wires its own (a drifting [`SimClock`](crate::SimClock), the crashable
//! [`SimDisk`], a faulty S3). Code outside this crate must not read wall or monotonic time,
//! draw randomness, spawn threads or observe `HashMap` order directly: `clippy.toml` bans
//! those calls (docs/design.md §2).

mod clock;
mod cut;
mod disk;
#[doc(hidden)]
pub mod fuzzing;
mod mem;
mod object_store;
mod os_disk;
mod peer_net;
mod redb_backend;
pub mod signal;
mod sim_disk;
mod sim_s3;

use std::sync::Arc;

pub use clock::{Clock, RealClock, SimClock};
pub use cut::CutStore;
pub use disk::{Disk, DiskFile};
pub use mem::MemObjectStore;
pub use object_store::{Condition, ObjectError, ObjectInfo, ObjectStore, PutOutcome, DELETE_MANY_MAX};
pub use os_disk::OsDisk;
pub use peer_net::{methods as peer_methods, PeerError, PeerHandler, PeerNet};
pub use redb_backend::{RedbBackend, StorageFence};
pub use sim_disk::{CrashMode, SimDisk, SimDiskFaults};
pub use sim_s3::{SimS3, SimS3Faults};

/// The set of seams one node runs on.
#[derive(Clone)]
pub struct Env {
    pub clock: Arc<dyn Clock>,
    pub disk: Arc<dyn Disk>,
}

impl Env {
    /// Real time and the operating system's files under `data_dir`.
    pub fn real(data_dir: impl Into<std::path::PathBuf>) -> Self {
        Self { clock: Arc::new(RealClock::new()), disk: Arc::new(OsDisk::new(data_dir.into())) }
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("disk", &self.disk).finish_non_exhaustive()
    }
}

/// Runs a short disk step (one WAL append and its fdatasync) on the calling task. Measured
/// faster than a hop to the blocking pool, whose two thread switches per batch cost more
/// than the worker time the step holds (docs/benchmarks.md). In the simulator it takes
/// virtual time like [`blocking`], and now and then much longer (a device busy with other
/// work), so that what runs alongside a WAL sync (the upload of the same batch, above all)
/// also finishes first.
pub async fn inline_io<F, R>(work: F) -> R
where
    F: FnOnce() -> R,
{
    #[cfg(madsim)]
    {
        use madsim::rand::{thread_rng, Rng};
        let micros = if thread_rng().gen_ratio(1, SIM_DISK_SLOW_ONE_IN) {
            thread_rng().gen_range(SIM_DISK_SLOW_MICROS.0..=SIM_DISK_SLOW_MICROS.1)
        } else {
            SIM_DISK_LATENCY_MICROS
        };
        tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
    }
    work()
}

/// A number that tells one open of a node from another (names of objects that must not
/// meet an earlier incarnation's late writes). From the operating system; in the simulator,
/// from its seeded generator, so a seed replays exactly.
pub fn nonce() -> u64 {
    #[cfg(madsim)]
    {
        use madsim::rand::Rng;
        madsim::rand::thread_rng().gen()
    }
    #[cfg(not(madsim))]
    {
        let bytes = os_random(8).expect("the OS random source works");
        u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    }
}

/// `bytes` random bytes from the operating system, for secrets only (generated
/// credentials). Never used on a path the simulator runs.
pub fn os_random(bytes: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut random = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    Ok(random)
}

/// Raises this process's soft limit on open files to its hard limit, as servers that hold
/// many connections do (Go programs such as etcd do it at start). Failing changes nothing.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Virtual time one blocking disk step takes in the simulator.
#[cfg(madsim)]
const SIM_DISK_LATENCY_MICROS: u64 = 50;
/// One WAL sync in this many is slow, taking this long (microseconds) in the simulator.
#[cfg(madsim)]
const SIM_DISK_SLOW_ONE_IN: u32 = 25;
#[cfg(madsim)]
const SIM_DISK_SLOW_MICROS: (u64, u64) = (1_000, 10_000);

/// Runs blocking file I/O off the async workers. Under the simulator the disk is memory and
/// this runs inline on the simulated task, keeping the schedule deterministic.
pub async fn blocking<F, R>(work: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    #[cfg(not(madsim))]
    {
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => result,
            Err(join_error) if join_error.is_panic() => std::panic::resume_unwind(join_error.into_panic()),
            // Cancelled: the runtime is shutting down and drops this task too.
            Err(_) => std::future::pending().await,
        }
    }
    #[cfg(madsim)]
    {
        // Disk work takes (virtual) time, so other tasks run meanwhile and a crash can
        // land before it starts.
        tokio::time::sleep(std::time::Duration::from_micros(SIM_DISK_LATENCY_MICROS)).await;
        work()
    }
}
