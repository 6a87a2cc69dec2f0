//! Scenarios as data: each is a row of options ([`Spec`]) naming the world it builds (one
//! or two processes, a bucket and its faults, a network), the workload and the faults its
//! nemesis draws from; [`run_seed`] runs one seed of one in a fresh world
//! ([`crate::world`]).

use std::time::Duration;

use madsim::runtime::Runtime;
use t4::env::SimS3Faults;

use crate::cluster::ClusterSpec;
use crate::fault::Fault;
use crate::world::World;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// No faults.
    Smoke,
    /// Kill the node and lose every unsynced write.
    CrashLoseUnsynced,
    /// Kill the node and tear unsynced writes (whole, none, or a prefix, in any order).
    CrashTorn,
    /// Power fails inside an fsync (after the write, before it is durable).
    CrashMidCommit,
    /// An fsync fails with EIO: the node must stop acknowledging, then recover on restart.
    FsyncEio,
    /// A random mix of all of the above per fault.
    Swarm,
    /// Leases granted, keys attached and kept alive while the node is killed (losing or
    /// tearing unsynced writes) and its clock drifts within the bound: no key may go before
    /// its TTL counted from the last keepalive sent, and a lease's keys go in one revision.
    LeaseKeepaliveUnderCrash,
    /// The node keeps its log in a bucket (SimS3, sync upload) and loses its whole disk at
    /// every fault: each restart rebuilds it from the bucket alone.
    DiskWipe,
    /// The lease workload on a node that keeps its log in the bucket and, at a fault, is
    /// killed losing its unsynced writes or its whole disk: leases and their keys come back
    /// from the bucket's checkpoints and log, TTLs extended, never shortened.
    LeaseKeepaliveUnderDiskWipe,
    /// The bucket throttles (503) and loses requests and answers (ambiguous outcomes, the
    /// conditional creates of the log among them) while the node is killed, losing its
    /// unsynced writes, or wiped.
    S3Brownout,
    /// Two processes on one bucket prefix, clients writing to both: each restart of one
    /// takes a new term and fences the other, which must stop acknowledging. No write either
    /// acknowledged may be lost; the log stays one dense history.
    TwoProcesses,
    /// The bucket loses conditional writes' requests and, more often, their answers, while
    /// the node is killed: every ambiguous create, seal and lock CAS must be settled by
    /// reading back, never by a blind retry.
    AmbiguousConditionalPut,
    /// Writes are held up in the network and land up to a second after their sender gave
    /// up, or after it was killed and restarted under a newer term (zombie writes).
    ZombieWriteLandsLate,
    /// The disk fills up (ENOSPC) at a random point: the node must stop acknowledging with a
    /// clear error, lose nothing it acknowledged, and start again once space is freed.
    DiskFull,
    /// Bits flip in the node's files, or a block is written at another block's place (a
    /// misdirected write), while it is down (out of contract): it must refuse to open with a
    /// corruption error, or open and serve only what the log holds; never a damaged value.
    /// A refusal is answered as an operator would: the disk is wiped and the node rebuilt
    /// from the bucket.
    DiskOutOfContract,
    /// Watchers follow the keys while the node is killed (losing or tearing unsynced
    /// writes): each resumes from one past the last revision it received, and what it gets
    /// must be exactly the log's revisions in its range, in order, none twice, none missed.
    WatchUnderCrash,
    /// The lease workload with the node's clock at the edge of the drift bound (±500 ppm)
    /// and its wall clock stepped by up to an hour either way (or strobed: stepped back and
    /// forth ten times), while it is killed: leases run on the monotonic clock, so none may
    /// expire early.
    ClockDriftInBound,
    /// A self-test of the harness, not in [`Scenario::ALL`]: the node's clock runs 50% fast,
    /// far outside the bound, so leases do expire early and the lease checker must fire.
    ClockDriftOutOfBound,
    /// Clients reach the node over SimNet (prost-encoded requests to EtcdCore), and the
    /// nemesis cuts links between a client and the node, one way or both, for 0.1-0.8 s, or
    /// kills the node: requests and answers are lost, never misapplied.
    PartitionClientNode,
    /// The node's network to the bucket is cut for 0.1-1.5 s at a time (every request times
    /// out, nothing commits), or the node is killed: it must stop acknowledging while cut,
    /// lose nothing, and resume on its own once the bucket is back.
    PartitionNodeS3,
    /// Three cluster members race for one bucket's lock while the nemesis kills, pauses past
    /// the lease, cuts off from the bucket or leaves unheard one member at a time, the
    /// bucket loses requests and answers, and each member's clock drifts within the bound:
    /// never two leaders at one instant, terms only up, one leader again after healing.
    Leadership3,
    /// The same with five members.
    Leadership5,
    /// Three t4 nodes as one cluster on a bucket, the workload sent mostly to whoever leads:
    /// the nemesis kills members (losing or tearing unsynced writes), pauses one past its
    /// lease, cuts peer links one way or both and the clients' links,
    /// half the time aimed at the leader. Every acknowledged write survives, every read is
    /// linearizable (followers refuse, the leader serves within its lease), and after
    /// healing one leader writes again and every member holds the same store.
    Replicated3,
    /// The same with five members.
    Replicated5,
    /// A self-test of the harness, not in [`Scenario::ALL`]: the members' clocks drift ±40%,
    /// four times the bound, so a takeover can come while the old holder still leads by its
    /// slow clock, and the one-leader checker must fire.
    LeadershipDriftOutOfBound,
}

impl Scenario {
    pub const ALL: [Scenario; 23] = [
        Scenario::Smoke,
        Scenario::CrashLoseUnsynced,
        Scenario::CrashTorn,
        Scenario::CrashMidCommit,
        Scenario::FsyncEio,
        Scenario::Swarm,
        Scenario::LeaseKeepaliveUnderCrash,
        Scenario::DiskWipe,
        Scenario::S3Brownout,
        Scenario::TwoProcesses,
        Scenario::AmbiguousConditionalPut,
        Scenario::ZombieWriteLandsLate,
        Scenario::DiskFull,
        Scenario::DiskOutOfContract,
        Scenario::WatchUnderCrash,
        Scenario::ClockDriftInBound,
        Scenario::PartitionClientNode,
        Scenario::PartitionNodeS3,
        Scenario::LeaseKeepaliveUnderDiskWipe,
        Scenario::Leadership3,
        Scenario::Leadership5,
        Scenario::Replicated3,
        Scenario::Replicated5,
    ];

    /// Scenarios whose checkers must fire: self-tests of the harness, run by its tests.
    pub const MUST_FAIL: [Scenario; 2] = [Scenario::ClockDriftOutOfBound, Scenario::LeadershipDriftOutOfBound];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Smoke => "smoke",
            Scenario::CrashLoseUnsynced => "crash_lose_unsynced",
            Scenario::CrashTorn => "crash_torn",
            Scenario::CrashMidCommit => "crash_mid_commit",
            Scenario::FsyncEio => "fsync_eio",
            Scenario::Swarm => "swarm",
            Scenario::LeaseKeepaliveUnderCrash => "lease_keepalive_under_crash",
            Scenario::DiskWipe => "disk_wipe",
            Scenario::LeaseKeepaliveUnderDiskWipe => "lease_keepalive_under_disk_wipe",
            Scenario::S3Brownout => "s3_brownout",
            Scenario::TwoProcesses => "two_processes_on_one_prefix",
            Scenario::AmbiguousConditionalPut => "ambiguous_conditional_put",
            Scenario::ZombieWriteLandsLate => "zombie_write_lands_late",
            Scenario::DiskFull => "disk_full",
            Scenario::DiskOutOfContract => "disk_out_of_contract",
            Scenario::WatchUnderCrash => "watch_under_crash",
            Scenario::ClockDriftInBound => "clock_drift_in_bound",
            Scenario::ClockDriftOutOfBound => "clock_drift_out_of_bound",
            Scenario::PartitionClientNode => "partition_client_node",
            Scenario::PartitionNodeS3 => "partition_node_s3",
            Scenario::Leadership3 => "leadership_3",
            Scenario::Leadership5 => "leadership_5",
            Scenario::LeadershipDriftOutOfBound => "leadership_drift_out_of_bound",
            Scenario::Replicated3 => "replicated_3",
            Scenario::Replicated5 => "replicated_5",
        }
    }

    /// The scenario's row of options: the world, the workload and the faults it runs.
    pub fn spec(self) -> Spec {
        use Fault::*;
        /// Every local disk fault with a bucket too: with sync upload a batch's object may
        /// land before its local fsync ends (or fails), so the disk can lack what the bucket
        /// holds, torn or not.
        const DISK_FAULTS_WITH_BUCKET: &[(Fault, u32)] =
            &[(CrashLoseUnsynced, 1), (CrashTorn, 1), (CrashMidCommit, 1), (FsyncEio, 1), (DiskWipe, 1)];
        const KILLS: &[(Fault, u32)] = &[(CrashLoseUnsynced, 1), (CrashTorn, 1)];
        const BUCKET: Option<SimS3Faults> = Some(SimS3Faults::NONE);
        let base = Spec::BASE;
        match self {
            Scenario::Smoke => base,
            Scenario::CrashLoseUnsynced => Spec { faults: &[(CrashLoseUnsynced, 1)], ..base },
            Scenario::CrashTorn => Spec { faults: &[(CrashTorn, 1)], ..base },
            Scenario::CrashMidCommit => Spec { faults: &[(CrashMidCommit, 1)], ..base },
            Scenario::FsyncEio => Spec { faults: &[(FsyncEio, 1)], ..base },
            Scenario::Swarm => {
                Spec { watchers: true, faults: &[(CrashLoseUnsynced, 1), (CrashTorn, 1), (CrashMidCommit, 1), (FsyncEio, 1)], ..base }
            }
            Scenario::LeaseKeepaliveUnderCrash => Spec { leases: Some(Drift::InBound), pause_ms: LEASE_PAUSE_MS, faults: KILLS, ..base },
            Scenario::DiskWipe => Spec { bucket: BUCKET, watchers: true, faults: &[(DiskWipe, 1)], ..base },
            Scenario::LeaseKeepaliveUnderDiskWipe => Spec {
                bucket: BUCKET,
                leases: Some(Drift::InBound),
                pause_ms: LEASE_PAUSE_MS,
                faults: &[(CrashLoseUnsynced, 1), (DiskWipe, 1)],
                ..base
            },
            Scenario::S3Brownout => Spec { bucket: Some(BROWNOUT), pause_ms: SLOW_PAUSE_MS, faults: DISK_FAULTS_WITH_BUCKET, ..base },
            Scenario::TwoProcesses => {
                Spec { processes: 2, bucket: BUCKET, watchers: true, pause_ms: SLOW_PAUSE_MS, faults: &[(Restart, 1)], ..base }
            }
            Scenario::AmbiguousConditionalPut => {
                Spec { bucket: Some(AMBIGUOUS), pause_ms: SLOW_PAUSE_MS, faults: DISK_FAULTS_WITH_BUCKET, ..base }
            }
            Scenario::ZombieWriteLandsLate => {
                Spec { bucket: Some(ZOMBIES), pause_ms: SLOW_PAUSE_MS, faults: DISK_FAULTS_WITH_BUCKET, ..base }
            }
            Scenario::DiskFull => Spec { faults: &[(DiskFull, 1)], ..base },
            Scenario::DiskOutOfContract => Spec { bucket: BUCKET, pause_ms: SLOW_PAUSE_MS, faults: &[(DiskOutOfContract, 1)], ..base },
            Scenario::WatchUnderCrash => Spec { watchers: true, faults: KILLS, ..base },
            Scenario::ClockDriftInBound => {
                Spec { leases: Some(Drift::Edge), pause_ms: LEASE_PAUSE_MS, faults: &[(CrashLoseUnsynced, 1), (WallClockStep, 1)], ..base }
            }
            Scenario::ClockDriftOutOfBound => Spec {
                leases: Some(Drift::OutOfBound),
                pause_ms: LEASE_PAUSE_MS,
                faults: &[(CrashLoseUnsynced, 1), (WallClockStep, 1)],
                ..base
            },
            Scenario::PartitionClientNode => {
                Spec { over_net: true, pause_ms: SLOW_PAUSE_MS, faults: &[(CrashLoseUnsynced, 1), (PartitionClientNode, 3)], ..base }
            }
            Scenario::PartitionNodeS3 => {
                Spec { bucket: BUCKET, pause_ms: SLOW_PAUSE_MS, faults: &[(CrashLoseUnsynced, 1), (PartitionNodeS3, 3)], ..base }
            }
            Scenario::Leadership3 => {
                Spec { cluster: Some(cluster(3, Drift::InBound)), pause_ms: CLUSTER_PAUSE_MS, faults: MEMBER_FAULTS, ..base }
            }
            Scenario::Leadership5 => {
                Spec { cluster: Some(cluster(5, Drift::Edge)), pause_ms: CLUSTER_PAUSE_MS, faults: MEMBER_FAULTS, ..base }
            }
            Scenario::LeadershipDriftOutOfBound => {
                Spec { cluster: Some(cluster(3, Drift::OutOfBound)), pause_ms: CLUSTER_PAUSE_MS, faults: MEMBER_FAULTS, ..base }
            }
            Scenario::Replicated3 => {
                Spec { processes: 3, replicated: true, bucket: BUCKET, pause_ms: CLUSTER_PAUSE_MS, faults: REPLICATED_FAULTS, ..base }
            }
            Scenario::Replicated5 => {
                Spec { processes: 5, replicated: true, bucket: BUCKET, pause_ms: CLUSTER_PAUSE_MS, faults: REPLICATED_FAULTS, ..base }
            }
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().chain(Self::MUST_FAIL).find(|scenario| scenario.name() == name)
    }
}

/// One scenario as data: the world it builds, the workload it runs and the faults its
/// nemesis draws from.
#[derive(Debug, Clone)]
pub struct Spec {
    /// t4 processes (two share one bucket prefix and fence each other).
    pub processes: usize,
    /// The simulated bucket and the faults it injects, when the node keeps its log there.
    pub bucket: Option<SimS3Faults>,
    /// Clients reach the node over SimNet (else through the embedded API).
    pub over_net: bool,
    /// Lease clients run, and the node's clock drifts as said.
    pub leases: Option<Drift>,
    /// Watchers follow the workload's keys (and a compactor runs).
    pub watchers: bool,
    /// Virtual milliseconds between two faults.
    pub pause_ms: std::ops::Range<u64>,
    /// The faults the nemesis draws from, with their weights (none: no faults).
    pub faults: &'static [(Fault, u32)],
    /// A cluster world of members' elections instead of t4 processes ([`crate::cluster`]).
    pub cluster: Option<ClusterSpec>,
    /// The processes are members of one cluster on the bucket (docs/clustering.md).
    pub replicated: bool,
}

impl Spec {
    /// One process on its local disk, clients through the embedded API, no faults.
    pub const BASE: Spec = Spec {
        processes: 1,
        bucket: None,
        over_net: false,
        leases: None,
        watchers: false,
        pause_ms: 30..300,
        faults: &[],
        cluster: None,
        replicated: false,
    };
}

/// How the node's clock drifts in the lease scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// Anywhere within the bound, fixed per seed.
    InBound,
    /// At the bound's edge, one way or the other.
    Edge,
    /// Far outside it ([`DRIFT_PPM_OUT_OF_BOUND`]): the lease checker must fire.
    OutOfBound,
}

/// The faults of the leadership scenarios, one member at a time.
const MEMBER_FAULTS: &[(Fault, u32)] =
    &[(Fault::MemberKill, 1), (Fault::MemberPause, 1), (Fault::MemberCutFromBucket, 1), (Fault::MemberUnheard, 1)];
/// The faults of the replicated scenarios, one member at a time. A wiped member rejoins as
/// a learner and is sent the leader's store (catch-up by snapshot); the nemesis never wipes
/// the only voter.
const REPLICATED_FAULTS: &[(Fault, u32)] = &[
    (Fault::CrashLoseUnsynced, 2),
    (Fault::CrashTorn, 2),
    (Fault::DiskWipe, 1),
    (Fault::MemberPause, 3),
    (Fault::PartitionPeers, 3),
    (Fault::MemberCutFromBucket, 2),
    (Fault::PartitionClientNode, 1),
];
/// Between two member faults: long enough for a takeover (L + D = 0.66 s) to finish.
const CLUSTER_PAUSE_MS: std::ops::Range<u64> = 100..1500;

/// A cluster of `members` whose clocks drift as said, on a bucket that loses some requests
/// and answers (lock writes become ambiguous and are settled by reading back).
const fn cluster(members: usize, drift: Drift) -> ClusterSpec {
    ClusterSpec {
        members,
        drift,
        bucket: SimS3Faults { slow_down_percent: 2, lost_request_percent: 3, lost_answer_percent: 5, late_commit_percent: 2 },
    }
}

/// Leases need a few quiet seconds to be granted, kept alive and left to expire.
const LEASE_PAUSE_MS: std::ops::Range<u64> = 400..2000;
/// A bucket with faults (or a second process, or a network) slows the node: it needs
/// longer between faults to get anything done.
const SLOW_PAUSE_MS: std::ops::Range<u64> = 150..600;

/// The node's clock runs at most this fast or slow (parts per million): the drift bound
/// within which no lease may expire early.
pub(crate) const DRIFT_PPM_MAX: i64 = 500;
/// The drift of `clock_drift_out_of_bound`: 50% fast.
pub(crate) const DRIFT_PPM_OUT_OF_BOUND: i64 = 500_000;

/// The bucket's faults while `s3_brownout` runs.
const BROWNOUT: SimS3Faults = SimS3Faults { slow_down_percent: 4, lost_request_percent: 2, lost_answer_percent: 2, late_commit_percent: 0 };
/// ... while `ambiguous_conditional_put` runs.
const AMBIGUOUS: SimS3Faults =
    SimS3Faults { slow_down_percent: 0, lost_request_percent: 5, lost_answer_percent: 10, late_commit_percent: 0 };
/// ... while `zombie_write_lands_late` runs.
const ZOMBIES: SimS3Faults = SimS3Faults { slow_down_percent: 0, lost_request_percent: 0, lost_answer_percent: 0, late_commit_percent: 5 };

/// What one seed did and what the checkers found.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub scenario: Scenario,
    pub seed: u64,
    pub trace_hash: u64,
    pub ops: usize,
    pub acknowledged_writes: usize,
    pub faults: usize,
    pub final_revision: i64,
    pub violations: Vec<String>,
    /// Keys whose per-key WGL search ran out of its step budget: neither proven nor refuted
    /// (the revision-replay checks still ran on them).
    pub wgl_inconclusive: usize,
}

impl SeedReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The command that replays this seed.
    pub fn reproduce_command(&self) -> String {
        format!(
            "RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim cargo run -p t4-sim --bin simrun -- --scenario {} --reproduce {}",
            self.scenario.name(),
            self.seed
        )
    }
}

/// Runs one seed of `scenario` in a fresh simulated world.
pub fn run_seed(scenario: Scenario, seed: u64) -> SeedReport {
    run_seed_with(scenario, seed, || {})
}

/// Runs one seed of `scenario` twice, each on a fresh thread, and panics at the first draw
/// of the simulator's randomness where the second run departs from the first (madsim's
/// determinism check; with `RUST_BACKTRACE=1` the panic shows the code that drew). A state
/// kept across runs in one process (a `OnceLock`, a global counter) shows up here.
pub fn check_seed(scenario: Scenario, seed: u64) -> SeedReport {
    static CHECKED: std::sync::Mutex<Option<(Scenario, u64)>> = std::sync::Mutex::new(None);
    *CHECKED.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((scenario, seed));
    fn world() -> std::pin::Pin<Box<dyn std::future::Future<Output = SeedReport>>> {
        let (scenario, seed) = CHECKED.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).expect("check_seed set the seed");
        Box::pin(async move {
            let spec = scenario.spec();
            match spec.cluster {
                Some(cluster) => crate::cluster::run(scenario, seed, cluster, spec.faults, spec.pause_ms).await,
                None => World::new(scenario, seed).run().await,
            }
        })
    }
    Runtime::check_determinism(seed, madsim::Config::default(), world)
}

/// Like [`run_seed`], calling `prepare` first on the thread the world will run on (the
/// simulator's tests plant a bug there, so it is that world's alone: `t4::planted`).
pub fn run_seed_with(scenario: Scenario, seed: u64, prepare: impl FnOnce() + Send + 'static) -> SeedReport {
    // Each seed on a fresh thread: std's HashMap seeds are per thread and madsim can seed
    // them only on a thread that has made none yet, so a second seed on the same thread
    // would see hash orders (in dependencies: t4 bans HashMap) that depend on the runs
    // before it. Found by the determinism test once disk_wipe ran after other scenarios.
    std::thread::spawn(move || {
        prepare();
        let mut runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.set_time_limit(Duration::from_secs(120));
        // The world is made inside the runtime: its clocks read this run's virtual time.
        runtime.block_on(async move {
            let spec = scenario.spec();
            match spec.cluster {
                Some(cluster) => crate::cluster::run(scenario, seed, cluster, spec.faults, spec.pause_ms).await,
                None => World::new(scenario, seed).run().await,
            }
        })
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
