//! Scenarios: one seeded world per run, its nemesis, and the final verification.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, Runtime};
use madsim::task::NodeId;
use madsim::time::{sleep, timeout, Instant};
use t4::core::{EtcdCore, MemberInfo};
use t4::durable::ObjectDurability;
use t4::env::{CrashMode, Env, ObjectStore, SimClock, SimDisk, SimDiskFaults, SimS3, SimS3Faults};
use t4::mvcc::RevisionEvents;
use t4::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use t4::proto::etcdserverpb::request_op::Request;
use t4::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, TxnResponse,
};
use t4::watch::WatchOptions;
use t4::{Config, ErrorKind, Node};

use crate::checker::{self, CompactionSeen, Log, State, WatchRecord};
use crate::history::{Op, OpKind, Outcome};
use crate::net::{self, CallError, Method};
use crate::trace::TraceHash;

/// Keys the workload contends on (few, so histories collide).
const KEYS: usize = 6;
const CLIENTS: usize = 4;
/// Virtual time the workload runs per seed.
const WORKLOAD_DURATION: Duration = Duration::from_secs(3);
/// The lease scenario runs longer: leases live for seconds.
const LEASE_WORKLOAD_DURATION: Duration = Duration::from_secs(6);
/// An op with no answer after this is recorded as unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients that grant leases, attach two keys and keep them alive (lease scenario).
const LEASE_CLIENTS: usize = 4;
/// Clients that watch the workload's keys (scenarios with watchers).
const WATCHERS: usize = 2;
/// TTLs those leases get, in seconds.
const LEASE_TTL_SECS: std::ops::RangeInclusive<i64> = 2..=4;
/// The node's clock runs at most this fast or slow (parts per million): the drift bound
/// within which no lease may expire early.
const DRIFT_PPM_MAX: i64 = 500;

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
}

impl Scenario {
    pub const ALL: [Scenario; 19] = [
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
    ];

    /// Scenarios whose checkers must fire: self-tests of the harness, run by its tests.
    pub const MUST_FAIL: [Scenario; 1] = [Scenario::ClockDriftOutOfBound];

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
        }
    }

    /// Whether the node keeps its log in the simulated bucket.
    fn uses_bucket(self) -> bool {
        matches!(
            self,
            Scenario::DiskWipe
                | Scenario::LeaseKeepaliveUnderDiskWipe
                | Scenario::S3Brownout
                | Scenario::TwoProcesses
                | Scenario::AmbiguousConditionalPut
                | Scenario::ZombieWriteLandsLate
                | Scenario::DiskOutOfContract
                | Scenario::PartitionNodeS3
        )
    }

    /// Whether clients reach the node over SimNet (else through the embedded API).
    fn uses_net(self) -> bool {
        matches!(self, Scenario::PartitionClientNode)
    }

    /// Whether lease clients run (and the workload lasts long enough for leases).
    fn has_leases(self) -> bool {
        matches!(
            self,
            Scenario::LeaseKeepaliveUnderCrash
                | Scenario::LeaseKeepaliveUnderDiskWipe
                | Scenario::ClockDriftInBound
                | Scenario::ClockDriftOutOfBound
        )
    }

    /// Whether watchers follow the workload's keys.
    fn has_watchers(self) -> bool {
        matches!(self, Scenario::WatchUnderCrash | Scenario::Swarm | Scenario::TwoProcesses | Scenario::DiskWipe)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().chain(Self::MUST_FAIL).find(|scenario| scenario.name() == name)
    }
}

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
        runtime.block_on(async move { World::new(scenario, seed).run().await })
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// One t4 process of the world: its own disk and madsim node, reached through its slot.
#[derive(Clone)]
struct Process {
    name: String,
    disk: SimDisk,
    /// The running node (None while it is down).
    slot: Arc<Mutex<Option<Node>>>,
    /// Bumped whenever the process dies: answers from an older generation are lost.
    generation: Arc<AtomicU64>,
    /// The running incarnation's clock (the nemesis steps its wall time).
    clock: Arc<Mutex<Option<Arc<SimClock>>>>,
    /// Its address on SimNet.
    ip: std::net::IpAddr,
}

impl Process {
    fn new(name: impl Into<String>, index: u8) -> Self {
        Self {
            ip: std::net::IpAddr::from([10, 0, 0, index + 1]),
            name: name.into(),
            disk: SimDisk::new(),
            slot: Arc::new(Mutex::new(None)),
            generation: Arc::new(AtomicU64::new(0)),
            clock: Arc::new(Mutex::new(None)),
        }
    }

    /// The running node and the generation it belongs to.
    fn current(&self) -> Option<(Node, u64)> {
        let generation = self.generation.load(Ordering::SeqCst);
        self.slot.lock().unwrap().clone().map(|node| (node, generation))
    }

    fn address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.ip, net::CLIENT_PORT)
    }
}

/// The shared state of one run.
struct World {
    scenario: Scenario,
    seed: u64,
    /// The t4 processes: one, or two on one bucket prefix (`two_processes_on_one_prefix`).
    processes: Vec<Process>,
    open_failures: Arc<Mutex<Vec<String>>>,
    /// Opens refused because the disk was found damaged (`disk_out_of_contract`: expected).
    detected: Arc<Mutex<Vec<String>>>,
    history: Arc<Mutex<Vec<Op>>>,
    trace: Arc<Mutex<TraceHash>>,
    stop: Arc<AtomicBool>,
    started: Instant,
    /// The node's clock drift (parts per million), fixed per seed.
    drift_ppm: Arc<AtomicI64>,
    /// What the lease clients saw go wrong, and the key pairs they attached to one lease.
    lease_violations: Arc<Mutex<Vec<String>>>,
    lease_pairs: Arc<Mutex<Vec<(String, String)>>>,
    /// What each watcher received.
    watches: Arc<Mutex<Vec<WatchRecord>>>,
    /// The committed log as read before each compaction (compaction removes the history the
    /// final read-back needs), and every revision a compaction was asked for at.
    log_prefix: Arc<Mutex<Vec<RevisionEvents>>>,
    compactions: Arc<Mutex<BTreeSet<i64>>>,
    /// The madsim nodes of the workload's clients (for the partition nemesis).
    client_nodes: Mutex<Vec<NodeId>>,
    /// Keys whose WGL search ran out of steps (reported with the seed).
    wgl_inconclusive: std::sync::atomic::AtomicUsize,
    /// The bucket, in the scenarios that use one (it outlives the node's crashes).
    bucket: Option<Arc<SimS3>>,
}

/// The bucket's faults while `s3_brownout` runs.
const BROWNOUT: SimS3Faults = SimS3Faults { slow_down_percent: 4, lost_request_percent: 2, lost_answer_percent: 2, late_commit_percent: 0 };
/// ... while `ambiguous_conditional_put` runs.
const AMBIGUOUS: SimS3Faults =
    SimS3Faults { slow_down_percent: 0, lost_request_percent: 5, lost_answer_percent: 10, late_commit_percent: 0 };
/// ... while `zombie_write_lands_late` runs.
const ZOMBIES: SimS3Faults = SimS3Faults { slow_down_percent: 0, lost_request_percent: 0, lost_answer_percent: 0, late_commit_percent: 5 };

impl World {
    fn new(scenario: Scenario, seed: u64) -> Self {
        let processes = match scenario {
            Scenario::TwoProcesses => vec![Process::new("t4", 0), Process::new("t4-second", 1)],
            _ => vec![Process::new("t4", 0)],
        };
        Self {
            scenario,
            seed,
            processes,
            open_failures: Arc::new(Mutex::new(Vec::new())),
            detected: Arc::new(Mutex::new(Vec::new())),
            history: Arc::new(Mutex::new(Vec::new())),
            trace: Arc::new(Mutex::new(TraceHash::default())),
            stop: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            drift_ppm: Arc::new(AtomicI64::new(0)),
            lease_violations: Arc::new(Mutex::new(Vec::new())),
            lease_pairs: Arc::new(Mutex::new(Vec::new())),
            watches: Arc::new(Mutex::new(Vec::new())),
            log_prefix: Arc::new(Mutex::new(Vec::new())),
            compactions: Arc::new(Mutex::new(BTreeSet::new())),
            client_nodes: Mutex::new(Vec::new()),
            wgl_inconclusive: std::sync::atomic::AtomicUsize::new(0),
            bucket: scenario.uses_bucket().then(|| {
                let bucket = SimS3::new(seed ^ 0x5133_5133, Arc::new(SimClock::new(0, 0)));
                // Requests travel on a node of their own: a killed sender's still commit.
                let network = Handle::current().create_node().name("s3-network").build();
                bucket.set_courier(Arc::new(move |journey| {
                    network.spawn(journey);
                }));
                Arc::new(bucket)
            }),
        }
    }

    fn fold(&self, event: &str) {
        let at = self.started.elapsed().as_nanos();
        self.trace.lock().unwrap().fold(&format!("{at} {event}"));
    }

    async fn run(self) -> SeedReport {
        let handle = Handle::current();
        let leases = self.scenario.has_leases();
        if leases {
            let drift = match self.scenario {
                Scenario::ClockDriftInBound => [-DRIFT_PPM_MAX, DRIFT_PPM_MAX][thread_rng().gen_range(0..2)],
                Scenario::ClockDriftOutOfBound => 500_000,
                _ => thread_rng().gen_range(-DRIFT_PPM_MAX..=DRIFT_PPM_MAX),
            };
            self.drift_ppm.store(drift, Ordering::SeqCst);
            self.fold(&format!("clock drift {drift} ppm"));
        }
        if let Some(bucket) = &self.bucket {
            bucket.set_faults(match self.scenario {
                Scenario::S3Brownout => BROWNOUT,
                Scenario::AmbiguousConditionalPut => AMBIGUOUS,
                Scenario::ZombieWriteLandsLate => ZOMBIES,
                _ => SimS3Faults::default(),
            });
        }
        let mut servers = Vec::new();
        for process in &self.processes {
            servers.push(self.start_server(&handle, process).id());
            if self.processes.len() > 1 {
                // One at a time: the second takes its term after the first is up.
                self.await_node(process).await;
            }
        }
        let mut clients: Vec<_> = (0..CLIENTS).map(|client| self.start_client(&handle, client)).collect();
        if leases {
            clients.extend((0..LEASE_CLIENTS).map(|client| self.start_lease_client(&handle, CLIENTS + 1 + client)));
        }
        if self.scenario.has_watchers() {
            let first = CLIENTS + 1 + LEASE_CLIENTS;
            clients.extend((first..first + WATCHERS).map(|client| self.start_watcher(&handle, client)));
            clients.push(self.start_compactor(&handle, first + WATCHERS));
        }
        let faults = self.nemesis(&handle, &servers).await;
        self.stop.store(true, Ordering::SeqCst);
        for client in clients {
            let _ = client.await;
        }
        self.fold("--- heal");
        for process in &self.processes {
            process.disk.set_faults(SimDiskFaults::default());
        }
        if let Some(bucket) = &self.bucket {
            bucket.set_faults(SimS3Faults::default());
            self.fold(&format!("bucket faults injected {}", bucket.faults_injected()));
        }
        // Every process but the first stays down; the first comes back, and with a bucket it
        // comes back with no disk: what it then holds is what the bucket kept.
        for (process, server) in self.processes.iter().zip(&servers).skip(1) {
            self.kill(&handle, process, *server);
        }
        let last = self.bucket.as_ref().map(|_| CrashMode::Wipe);
        self.restart(&handle, &self.processes[0], servers[0], last);
        let report = self.verify(faults).await;
        // Stop the node's tasks now: madsim does not drop a runtime's remaining tasks with
        // it, so whatever they hold (the node, its disk's files) would stay in memory for
        // the rest of the process.
        self.kill(&handle, &self.processes[0], servers[0]);
        report
    }

    fn start_server(&self, handle: &Handle, process: &Process) -> madsim::runtime::NodeHandle {
        let (disk, slot, failures) = (process.disk.clone(), process.slot.clone(), self.open_failures.clone());
        let clock_slot = process.clock.clone();
        let detected = (self.scenario == Scenario::DiskOutOfContract).then(|| self.detected.clone());
        let drift = self.drift_ppm.load(Ordering::SeqCst);
        let bucket = self.bucket.clone();
        let name = process.name.clone();
        let uses_net = self.scenario.uses_net();
        handle
            .create_node()
            .name(&name)
            .ip(process.ip)
            .init(move || {
                let (disk, slot, failures) = (disk.clone(), slot.clone(), failures.clone());
                let (bucket, name, detected, clock_slot) = (bucket.clone(), name.clone(), detected.clone(), clock_slot.clone());
                async move {
                    let clock = Arc::new(SimClock::new(drift, 0));
                    *clock_slot.lock().unwrap() = Some(clock.clone());
                    let env_disk = disk.clone();
                    let env = Env { clock, disk: Arc::new(disk) };
                    let mut config = sim_config();
                    if let Some(bucket) = bucket.clone() {
                        let store: Arc<dyn ObjectStore> = bucket;
                        config.object_store = Some(ObjectDurability {
                            lock_check_interval: Duration::from_millis(100),
                            // Checkpoints and GC run within a seed.
                            checkpoint_entries: 500,
                            ..ObjectDurability::new(store, name.clone())
                        });
                    }
                    // The supervisor (systemd, say) starts the process again when it
                    // exits because the bucket or the disk failed it (an injected fault
                    // fired) while it opened; any other failure to open is a finding.
                    let opened = loop {
                        let faults = || (bucket.as_ref().map(|bucket| bucket.faults_injected()), env_disk.faults_fired());
                        let faults_before = faults();
                        let opened = Node::open_with_env(config.clone(), env.clone()).await;
                        let fault_failed_it = faults() != faults_before;
                        match opened {
                            Err(error) if matches!(error.kind(), ErrorKind::StorageFailure | ErrorKind::Fenced) && fault_failed_it => {
                                tracing::info!(%error, "open failed while the bucket or the disk misbehaved; starting again");
                                sleep(Duration::from_millis(200)).await;
                            }
                            opened => break opened,
                        }
                    };
                    match opened {
                        Ok(node) => {
                            if uses_net {
                                let member = MemberInfo { name: name.clone(), client_urls: Vec::new(), peer_urls: Vec::new() };
                                let core = Arc::new(EtcdCore::new(node.clone(), member, Duration::from_secs(300)));
                                tokio::spawn(net::serve(core));
                            }
                            *slot.lock().unwrap() = Some(node);
                        }
                        Err(error) => match (&detected, error.kind()) {
                            (Some(detected), ErrorKind::Corrupt) => detected.lock().unwrap().push(error.to_string()),
                            _ => failures.lock().unwrap().push(format!("{name} failed to open after a legal fault: {error}")),
                        },
                    }
                    std::future::pending::<()>().await;
                }
            })
            .build()
    }

    /// SIGKILL: what the process wrote stays, nothing it would do after is done (the
    /// simulator's kill drops its tasks, which would run destructors that write).
    fn kill(&self, handle: &Handle, process: &Process, server: NodeId) {
        process.generation.fetch_add(1, Ordering::SeqCst);
        *process.slot.lock().unwrap() = None;
        process.disk.kill_process();
        handle.kill(server);
    }

    fn restart(&self, handle: &Handle, process: &Process, server: NodeId, crash: Option<CrashMode>) {
        self.kill(handle, process, server);
        if let Some(mode) = crash {
            process.disk.crash(mode);
        }
        self.fold(&format!("restart {} crash={crash:?}", process.name));
        handle.restart(server);
    }

    /// Injects faults until the workload time is up; returns how many.
    async fn nemesis(&self, handle: &Handle, servers: &[NodeId]) -> usize {
        let mut faults = 0;
        let duration = if self.scenario.has_leases() { LEASE_WORKLOAD_DURATION } else { WORKLOAD_DURATION };
        let end = Instant::now() + duration;
        while Instant::now() < end {
            // Leases need a few quiet seconds to be granted, kept alive and left to expire.
            // A brownout slows the node: it needs longer between kills to get anything done.
            let pause = match self.scenario {
                Scenario::LeaseKeepaliveUnderCrash
                | Scenario::LeaseKeepaliveUnderDiskWipe
                | Scenario::ClockDriftInBound
                | Scenario::ClockDriftOutOfBound => 400..2000,
                Scenario::S3Brownout
                | Scenario::TwoProcesses
                | Scenario::AmbiguousConditionalPut
                | Scenario::ZombieWriteLandsLate
                | Scenario::DiskOutOfContract
                | Scenario::PartitionClientNode
                | Scenario::PartitionNodeS3 => 150..600,
                _ => 30..300,
            };
            sleep(Duration::from_millis(thread_rng().gen_range(pause))).await;
            let fault = match self.scenario {
                Scenario::Smoke => continue,
                Scenario::Swarm => [Scenario::CrashLoseUnsynced, Scenario::CrashTorn, Scenario::CrashMidCommit, Scenario::FsyncEio]
                    [thread_rng().gen_range(0..4)],
                Scenario::WatchUnderCrash => [Scenario::CrashLoseUnsynced, Scenario::CrashTorn][thread_rng().gen_range(0..2)],
                Scenario::PartitionClientNode | Scenario::PartitionNodeS3 if thread_rng().gen_range(0..4) == 0 => {
                    Scenario::CrashLoseUnsynced
                }
                Scenario::LeaseKeepaliveUnderCrash => [Scenario::CrashLoseUnsynced, Scenario::CrashTorn][thread_rng().gen_range(0..2)],
                Scenario::ClockDriftInBound | Scenario::ClockDriftOutOfBound => {
                    [Scenario::CrashLoseUnsynced, Scenario::ClockDriftInBound][thread_rng().gen_range(0..2)]
                }
                Scenario::LeaseKeepaliveUnderDiskWipe => [Scenario::CrashLoseUnsynced, Scenario::DiskWipe][thread_rng().gen_range(0..2)],
                // Every local disk fault with a bucket too: with sync upload a batch's object
                // may land before its local fsync ends (or fails), so the disk can lack what
                // the bucket holds, torn or not.
                Scenario::S3Brownout | Scenario::AmbiguousConditionalPut | Scenario::ZombieWriteLandsLate => {
                    [Scenario::CrashLoseUnsynced, Scenario::CrashTorn, Scenario::CrashMidCommit, Scenario::FsyncEio, Scenario::DiskWipe]
                        [thread_rng().gen_range(0..5)]
                }
                other => other,
            };
            let which = if self.processes.len() > 1 { thread_rng().gen_range(0..self.processes.len()) } else { 0 };
            faults += 1;
            self.inject(handle, which, servers[which], fault).await;
        }
        faults
    }

    async fn inject(&self, handle: &Handle, which: usize, server: NodeId, fault: Scenario) {
        let process = &self.processes[which];
        let torn = CrashMode::Torn { seed: thread_rng().gen() };
        match fault {
            Scenario::CrashLoseUnsynced => self.restart(handle, process, server, Some(CrashMode::LoseUnsynced)),
            Scenario::CrashTorn => self.restart(handle, process, server, Some(torn)),
            Scenario::DiskWipe => self.restart(handle, process, server, Some(CrashMode::Wipe)),
            Scenario::CrashMidCommit => {
                let after = thread_rng().gen_range(0..4);
                self.fold(&format!("crash on sync #{after}"));
                process.disk.set_faults(SimDiskFaults { crash_on_sync: Some((after, torn)), ..Default::default() });
                self.await_failure(process).await;
                process.disk.set_faults(SimDiskFaults::default());
                // The disk already lost power; the process dies with it.
                self.restart(handle, process, server, None);
            }
            Scenario::FsyncEio => {
                self.fold("fsync eio");
                process.disk.set_faults(SimDiskFaults { sync_failures: 1, ..Default::default() });
                self.await_failure(process).await;
                process.disk.set_faults(SimDiskFaults::default());
                self.restart(handle, process, server, None);
            }
            Scenario::TwoProcesses => {
                // Restarting one process takes a new term: it fences the other, which must
                // stop acknowledging (until the nemesis restarts it in turn).
                let crash = [None, Some(CrashMode::LoseUnsynced)][thread_rng().gen_range(0..2)];
                self.restart(handle, process, server, crash);
            }
            Scenario::DiskFull => {
                let headroom = thread_rng().gen_range(0..64 * 1024);
                self.fold(&format!("disk full in {headroom} bytes"));
                process.disk.set_faults(SimDiskFaults { capacity_bytes: Some(process.disk.used() + headroom), ..Default::default() });
                self.await_failure(process).await;
                // Space is freed; the operator restarts the node.
                process.disk.set_faults(SimDiskFaults::default());
                self.restart(handle, process, server, None);
            }
            Scenario::DiskOutOfContract => {
                self.kill(handle, process, server);
                let files: Vec<(String, u64)> = process
                    .disk
                    .paths()
                    .into_iter()
                    .filter_map(|path| process.disk.file_len(&path).map(|len| (path, len)))
                    .filter(|(_, len)| *len > 0)
                    .collect();
                for _ in 0..thread_rng().gen_range(1..=3) {
                    if files.is_empty() {
                        break;
                    }
                    let (path, len) = &files[thread_rng().gen_range(0..files.len())];
                    // Only durable bytes can change; a file longer than its durable image
                    // refuses.
                    if thread_rng().gen_range(0..2) == 0 {
                        let (offset, bit) = (thread_rng().gen_range(0..*len), thread_rng().gen_range(0..8u8));
                        if process.disk.flip_bit(path, offset, bit).is_ok() {
                            self.fold(&format!("flipped bit {bit} of byte {offset} of {path}"));
                        }
                    } else {
                        // A sector (or a page, in a larger file) lands at another one's place.
                        let block: u64 = if *len >= 64 * 1024 { 4096 } else { 512 };
                        let blocks = len / block;
                        if blocks < 2 {
                            continue;
                        }
                        let (from, to) = (thread_rng().gen_range(0..blocks), thread_rng().gen_range(0..blocks));
                        if from != to && process.disk.misdirect(path, from * block, to * block, block).is_ok() {
                            self.fold(&format!("block {from} of {path} also written at block {to} ({block} bytes)"));
                        }
                    }
                }
                let refused = self.detected.lock().unwrap().len();
                self.restart(handle, process, server, None);
                for _ in 0..100 {
                    if process.slot.lock().unwrap().is_some() {
                        return;
                    }
                    if self.detected.lock().unwrap().len() > refused {
                        // Refused to open: damage detected. The operator wipes the disk.
                        self.fold("damage detected; the disk is wiped");
                        self.restart(handle, process, server, Some(CrashMode::Wipe));
                        return;
                    }
                    sleep(Duration::from_millis(10)).await;
                }
            }
            Scenario::PartitionClientNode => {
                let clients = self.client_nodes.lock().unwrap().clone();
                let client = clients[thread_rng().gen_range(0..clients.len())];
                let way = thread_rng().gen_range(0..3);
                let net = madsim::net::NetSim::current();
                let (to_node, to_client) = (way != 1, way != 2);
                self.fold(&format!("cut client {client} -> node {to_node}, node -> client {to_client}"));
                if to_node {
                    net.clog_link(client, server);
                }
                if to_client {
                    net.clog_link(server, client);
                }
                sleep(Duration::from_millis(thread_rng().gen_range(100..800))).await;
                net.unclog_link(client, server);
                net.unclog_link(server, client);
            }
            Scenario::PartitionNodeS3 => {
                let bucket = self.bucket.as_ref().expect("partition_node_s3 uses a bucket");
                let cut = Duration::from_millis(thread_rng().gen_range(100..1500));
                self.fold(&format!("bucket unreachable for {cut:?}"));
                bucket.set_unreachable(true);
                sleep(cut).await;
                bucket.set_unreachable(false);
            }
            Scenario::ClockDriftInBound => {
                // An NTP step or an operator: the wall clock moves, monotonic time does not.
                // Or it strobes: a confused time source steps it back and forth.
                let clock = process.clock.lock().unwrap().clone();
                let Some(clock) = clock else { return };
                let step_ms = thread_rng().gen_range(-3_600_000..=3_600_000);
                if thread_rng().gen_range(0..3) > 0 {
                    self.fold(&format!("wall clock step {step_ms} ms"));
                    clock.jump_wall(step_ms);
                    return;
                }
                self.fold(&format!("wall clock strobes by {step_ms} ms"));
                for _ in 0..10 {
                    clock.jump_wall(step_ms);
                    sleep(Duration::from_millis(thread_rng().gen_range(1..20))).await;
                    clock.jump_wall(-step_ms);
                    sleep(Duration::from_millis(thread_rng().gen_range(1..20))).await;
                }
            }
            Scenario::Smoke
            | Scenario::Swarm
            | Scenario::LeaseKeepaliveUnderCrash
            | Scenario::LeaseKeepaliveUnderDiskWipe
            | Scenario::S3Brownout
            | Scenario::AmbiguousConditionalPut
            | Scenario::ZombieWriteLandsLate
            | Scenario::WatchUnderCrash
            | Scenario::ClockDriftOutOfBound => unreachable!("expanded by the nemesis"),
        }
    }

    /// Waits (bounded) for the process to report a storage failure after an injected fault.
    async fn await_failure(&self, process: &Process) {
        for _ in 0..200 {
            let node = process.slot.lock().unwrap().clone();
            if node.is_some_and(|node| node.health().is_err()) {
                self.fold("node reported failure");
                return;
            }
            sleep(Duration::from_millis(5)).await;
        }
    }

    fn client_context(&self, client: usize) -> ClientContext {
        ClientContext {
            client,
            processes: self.processes.clone(),
            history: self.history.clone(),
            trace: self.trace.clone(),
            stop: self.stop.clone(),
            started: self.started,
        }
    }

    fn start_client(&self, handle: &Handle, client: usize) -> madsim::task::JoinHandle<()> {
        let context = self.client_context(client);
        let node = handle.create_node().name(format!("client-{client}")).ip(std::net::IpAddr::from([10, 0, 1, client as u8 + 1])).build();
        self.client_nodes.lock().unwrap().push(node.id());
        let net = self.scenario.uses_net();
        node.spawn(context.run(net))
    }

    fn start_lease_client(&self, handle: &Handle, client: usize) -> madsim::task::JoinHandle<()> {
        let context = LeaseClient {
            context: self.client_context(client),
            violations: self.lease_violations.clone(),
            pairs: self.lease_pairs.clone(),
        };
        handle.create_node().name(format!("lease-client-{client}")).build().spawn(context.run())
    }

    fn start_watcher(&self, handle: &Handle, client: usize) -> madsim::task::JoinHandle<()> {
        let watcher = Watcher { context: self.client_context(client), records: self.watches.clone() };
        handle.create_node().name(format!("watcher-{client}")).build().spawn(watcher.run())
    }

    fn start_compactor(&self, handle: &Handle, client: usize) -> madsim::task::JoinHandle<()> {
        let compactor =
            Compactor { context: self.client_context(client), log_prefix: self.log_prefix.clone(), compactions: self.compactions.clone() };
        handle.create_node().name("compactor").build().spawn(compactor.run())
    }

    /// Final checks: the node recovers, a write completes, and the history is judged
    /// against the committed log.
    async fn verify(&self, faults: usize) -> SeedReport {
        let awaited = self.await_node(&self.processes[0]).await;
        // Read after waiting: the last open's failure, if any, is among them then.
        let mut violations: Vec<String> = self.open_failures.lock().unwrap().clone();
        // The bucket is judged on its own, whether or not a node could open it.
        if let Some(bucket) = &self.bucket {
            match t4::durable::status::status(bucket.as_ref()).await {
                Ok(status) => violations.extend(checker::check_terms(&status)),
                Err(error) => violations.push(format!("could not read the bucket's terms: {error}")),
            }
        }
        let node = match awaited {
            Some(node) => node,
            None => {
                violations.push("liveness: no node came up within 10s after healing".into());
                return self.report(faults, 0, violations);
            }
        };
        let invoke_ns = self.started.elapsed().as_nanos();
        match timeout(Duration::from_secs(5), node.put("liveness", "after-healing")).await {
            Ok(Ok(revision)) => self.history.lock().unwrap().push(Op {
                client: CLIENTS,
                kind: OpKind::Put { key: "liveness".into(), value: "after-healing".into() },
                invoke_ns,
                complete_ns: self.started.elapsed().as_nanos(),
                outcome: Outcome::Wrote { revision, succeeded: true, deleted: 0 },
                serializable: false,
            }),
            other => violations.push(format!("liveness: a write after healing did not complete: {other:?}")),
        }
        let history = self.history.lock().unwrap().clone();
        let prefix = self.log_prefix.lock().unwrap().clone();
        let (log, final_revision, final_state) = match read_back(&node, prefix).await {
            Ok(read) => read,
            Err(error) => {
                violations.push(format!("could not read the committed log back: {error}"));
                return self.report(faults, 0, violations);
            }
        };
        violations.extend(checker::check(&history, &log, final_revision, &final_state));
        let wgl = crate::wgl::check(&history);
        violations.extend(wgl.violations);
        self.wgl_inconclusive.store(wgl.inconclusive.len(), Ordering::SeqCst);
        if !wgl.inconclusive.is_empty() {
            self.fold(&format!("wgl inconclusive on {:?}", wgl.inconclusive));
        }
        violations.extend(self.lease_violations.lock().unwrap().iter().cloned());
        let pairs = self.lease_pairs.lock().unwrap().clone();
        violations.extend(checker::check_lease_pairs(&log, &pairs));
        violations.extend(checker::check_watches(&log, &self.watches.lock().unwrap(), &self.compactions.lock().unwrap()));
        self.fold(&format!("final revision {final_revision}"));
        self.report(faults, final_revision, violations)
    }

    async fn await_node(&self, process: &Process) -> Option<Node> {
        for _ in 0..1000 {
            if let Some(node) = process.slot.lock().unwrap().clone() {
                return Some(node);
            }
            sleep(Duration::from_millis(10)).await;
        }
        None
    }

    fn report(&self, faults: usize, final_revision: i64, violations: Vec<String>) -> SeedReport {
        let history = self.history.lock().unwrap();
        SeedReport {
            scenario: self.scenario,
            seed: self.seed,
            trace_hash: self.trace.lock().unwrap().value(),
            ops: history.len(),
            acknowledged_writes: history.iter().filter(|op| op.changed()).count(),
            faults,
            final_revision,
            violations,
            wgl_inconclusive: self.wgl_inconclusive.load(Ordering::SeqCst),
        }
    }
}
fn sim_config() -> Config {
    let mut config = Config::new("/sim");
    // Small bounds so rotation, store syncs and segment removal happen within a seed.
    config.wal_segment_bytes_max = 16 * 1024;
    config.store_sync_records = 200;
    config.batch_requests_max = 64;
    config
}

/// The committed log (`prefix`, read before compactions, then a watch from just past it), the
/// final revision and the final state.
async fn read_back(node: &Node, prefix: Vec<RevisionEvents>) -> t4::Result<(Log, i64, State)> {
    let final_revision = node.current_revision();
    let mut events = prefix;
    let from = events.last().map_or(1, |last| last.revision + 1);
    if final_revision >= from {
        let mut watch = node.watch(WatchOptions { key: vec![0], range_end: vec![0], start_revision: from, ..Default::default() })?;
        while events.last().map_or(1, |last| last.revision) < final_revision {
            match watch.next().await {
                Some(Ok(revision)) => events.push(revision),
                Some(Err(error)) => return Err(error),
                None => return Err(t4::Error::Closed(t4::error::ClosedReason::Closed)),
            }
        }
    }
    let everything = node.range(RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }).await?;
    let state = everything
        .kvs
        .into_iter()
        .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), (String::from_utf8_lossy(&kv.value).into_owned(), kv.mod_revision)))
        .collect();
    Ok((Log::from_events(&events), final_revision, state))
}

struct ClientContext {
    client: usize,
    /// The processes it may send to (one at random per op when there are several).
    processes: Vec<Process>,
    history: Arc<Mutex<Vec<Op>>>,
    trace: Arc<Mutex<TraceHash>>,
    stop: Arc<AtomicBool>,
    started: Instant,
}

impl ClientContext {
    /// `over_net`: through SimNet to the node's EtcdCore, else through the embedded API.
    async fn run(self, over_net: bool) {
        let mut remote = if over_net { Some(net::Client::new(NET_TIMEOUT).await.expect("bind a client endpoint")) } else { None };
        let mut sequence = 0u64;
        let mut last_seen = [0i64; KEYS];
        while !self.stop.load(Ordering::SeqCst) {
            sleep(Duration::from_micros(thread_rng().gen_range(0..2000))).await;
            let which = if self.processes.len() > 1 { thread_rng().gen_range(0..self.processes.len()) } else { 0 };
            let Some((node, generation)) = self.processes[which].current() else { continue };
            sequence += 1;
            let key_index = thread_rng().gen_range(0..KEYS);
            let key = format!("k{key_index}");
            let value = format!("c{}.{sequence}", self.client);
            let kind = match thread_rng().gen_range(0..12) {
                0..=3 => OpKind::Put { key, value },
                4..=5 => OpKind::Get { key },
                6 => OpKind::Scan { from: "k".into(), to: "l".into() },
                7..=8 => OpKind::Cas { key, expected: last_seen[key_index], value },
                9 => OpKind::Delete { key },
                _ => {
                    // Two keys, each compared on the mod revision last seen, both written.
                    let other = (key_index + thread_rng().gen_range(1..KEYS)) % KEYS;
                    let writes = [key_index, other].map(|index| (format!("k{index}"), last_seen[index], format!("{value}.k{index}")));
                    OpKind::Append { writes: writes.to_vec() }
                }
            };
            let transport = match remote.as_mut() {
                Some(remote) => Transport::Remote(remote, self.processes[which].address()),
                None => Transport::Local(&node),
            };
            let op = self.perform(&self.processes[which], transport, generation, kind).await;
            match &op.outcome {
                Outcome::Read { found, .. } => last_seen[key_index] = found.as_ref().map_or(0, |(_, mod_revision)| *mod_revision),
                Outcome::Scanned { kvs, .. } => {
                    for (index, seen) in last_seen.iter_mut().enumerate() {
                        let key = format!("k{index}");
                        *seen = kvs.iter().find(|(found, _, _)| *found == key).map_or(0, |(_, _, mod_revision)| *mod_revision);
                    }
                }
                _ => {}
            }
            self.trace.lock().unwrap().fold(&format!("{} {} {:?} {:?}", op.complete_ns, op.client, op.kind, op.outcome));
            self.history.lock().unwrap().push(op);
        }
    }

    async fn perform(&self, process: &Process, mut transport: Transport<'_>, generation: u64, kind: OpKind) -> Op {
        let invoke_ns = self.started.elapsed().as_nanos();
        let outcome = match timeout(OP_TIMEOUT, execute(&mut transport, &kind)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Unknown("timed out".into()),
        };
        let complete_ns = self.started.elapsed().as_nanos();
        // A reply from a process that died meanwhile never reaches the client.
        let outcome = if process.generation.load(Ordering::SeqCst) != generation {
            match outcome {
                Outcome::Refused(reason) => Outcome::Refused(reason),
                _ => Outcome::Unknown("node restarted during the op".into()),
            }
        } else {
            outcome
        };
        // With several processes, one that does not know yet that it was fenced still serves
        // what it has (docs/durability.md): its answers that changed nothing may be stale.
        Op { client: self.client, kind, invoke_ns, complete_ns, outcome, serializable: self.processes.len() > 1 }
    }
}

/// How long a client waits for an answer over SimNet.
const NET_TIMEOUT: Duration = Duration::from_secs(1);

/// How a client reaches a node: the embedded API, or SimNet to its EtcdCore. Either way a
/// failure comes back as the outcome the client must record.
enum Transport<'a> {
    Local(&'a Node),
    Remote(&'a mut net::Client, std::net::SocketAddr),
}

impl Transport<'_> {
    async fn range(&mut self, request: RangeRequest) -> Result<RangeResponse, Outcome> {
        match self {
            Transport::Local(node) => node.range(request).await.map_err(classify),
            Transport::Remote(client, server) => client.call(*server, Method::Range, &request).await.map_err(unanswered),
        }
    }

    async fn put(&mut self, request: PutRequest) -> Result<PutResponse, Outcome> {
        match self {
            Transport::Local(node) => node.put_request(request).await.map_err(classify),
            Transport::Remote(client, server) => client.call(*server, Method::Put, &request).await.map_err(unanswered),
        }
    }

    async fn delete_range(&mut self, request: DeleteRangeRequest) -> Result<DeleteRangeResponse, Outcome> {
        match self {
            Transport::Local(node) => node.delete_range(request).await.map_err(classify),
            Transport::Remote(client, server) => client.call(*server, Method::DeleteRange, &request).await.map_err(unanswered),
        }
    }

    async fn txn(&mut self, request: TxnRequest) -> Result<TxnResponse, Outcome> {
        match self {
            Transport::Local(node) => node.txn(request).await.map_err(classify),
            Transport::Remote(client, server) => client.call(*server, Method::Txn, &request).await.map_err(unanswered),
        }
    }
}

fn classify(error: t4::Error) -> Outcome {
    if crate::history::outcome_unknown_after(&error) {
        Outcome::Unknown(error.to_string())
    } else {
        Outcome::Refused(error.to_string())
    }
}

fn unanswered(error: CallError) -> Outcome {
    match error {
        CallError::Unknown(why) => Outcome::Unknown(why),
        CallError::Refused(why) => Outcome::Refused(why),
    }
}

/// Txn: if every key's mod_revision is as expected, put every value.
fn txn_request(writes: &[(String, i64, String)]) -> TxnRequest {
    let compare = writes
        .iter()
        .map(|(key, expected, _)| Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Mod as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(TargetUnion::ModRevision(*expected)),
            range_end: Vec::new(),
        })
        .collect();
    let success = writes
        .iter()
        .map(|(key, _, value)| {
            let put = PutRequest { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec(), ..Default::default() };
            RequestOp { request: Some(Request::RequestPut(put)) }
        })
        .collect();
    TxnRequest { compare, success, failure: vec![] }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn execute(transport: &mut Transport<'_>, kind: &OpKind) -> Outcome {
    let revision_of = |header: &Option<t4::proto::etcdserverpb::ResponseHeader>| header.as_ref().map_or(0, |header| header.revision);
    let outcome = match kind {
        OpKind::Put { key, value } => transport
            .put(PutRequest { key: key.clone().into(), value: value.clone().into(), ..Default::default() })
            .await
            .map(|response| Outcome::Wrote { revision: revision_of(&response.header), succeeded: true, deleted: 0 }),
        OpKind::Get { key } => {
            transport.range(RangeRequest { key: key.clone().into(), ..Default::default() }).await.map(|response| Outcome::Read {
                revision: revision_of(&response.header),
                found: response.kvs.first().map(|kv| (lossy(&kv.value), kv.mod_revision)),
            })
        }
        OpKind::Scan { from, to } => transport
            .range(RangeRequest { key: from.clone().into(), range_end: to.clone().into(), ..Default::default() })
            .await
            .map(|response| Outcome::Scanned {
                revision: revision_of(&response.header),
                kvs: response.kvs.iter().map(|kv| (lossy(&kv.key), lossy(&kv.value), kv.mod_revision)).collect(),
            }),
        OpKind::Cas { key, expected, value } => transport
            .txn(txn_request(&[(key.clone(), *expected, value.clone())]))
            .await
            .map(|response| Outcome::Wrote { revision: revision_of(&response.header), succeeded: response.succeeded, deleted: 0 }),
        OpKind::Append { writes } => transport.txn(txn_request(writes)).await.map(|response| Outcome::Wrote {
            revision: revision_of(&response.header),
            succeeded: response.succeeded,
            deleted: 0,
        }),
        OpKind::Delete { key } => transport
            .delete_range(DeleteRangeRequest { key: key.clone().into(), ..Default::default() })
            .await
            .map(|response| Outcome::Wrote { revision: revision_of(&response.header), succeeded: true, deleted: response.deleted }),
    };
    outcome.unwrap_or_else(|failed| failed)
}

/// A client that grants a lease, attaches two keys to it and keeps it alive for a while,
/// checking all along that the lease and its keys are there while they must be.
struct LeaseClient {
    /// What every client shares (its id, the node slot, the history, the trace).
    context: ClientContext,
    violations: Arc<Mutex<Vec<String>>>,
    pairs: Arc<Mutex<Vec<(String, String)>>>,
}

impl LeaseClient {
    /// Lease scenarios run one process.
    fn current(&self) -> Option<(Node, u64)> {
        self.context.processes[0].current()
    }

    /// An answer counts only if the process that gave it is still the one running.
    fn same_process(&self, generation: u64) -> bool {
        self.context.processes[0].generation.load(Ordering::SeqCst) == generation
    }

    async fn run(self) {
        let mut sequence = 0u64;
        while !self.context.stop.load(Ordering::SeqCst) {
            sleep(Duration::from_millis(thread_rng().gen_range(1..50))).await;
            sequence += 1;
            self.one_lease(sequence).await;
        }
    }

    async fn one_lease(&self, sequence: u64) {
        let Some((node, generation)) = self.current() else { return };
        let ttl = thread_rng().gen_range(LEASE_TTL_SECS);
        // The TTL counts from the grant's send at the latest (it is granted after that).
        let mut alive_from = Instant::now();
        let granted = timeout(OP_TIMEOUT, node.lease_grant(LeaseGrantRequest { id: 0, ttl })).await;
        let id = match granted {
            Ok(Ok(response)) if self.same_process(generation) => response.id,
            _ => return,
        };
        self.context.trace.lock().unwrap().fold(&format!("{} lease {id} granted ttl {ttl}", self.context.client));
        let keys = [format!("lease/{}/{sequence}/a", self.context.client), format!("lease/{}/{sequence}/b", self.context.client)];
        for key in &keys {
            let value = format!("l{}.{sequence}.{key}", self.context.client);
            let request = PutRequest { key: key.clone().into(), value: value.clone().into(), lease: id, ..Default::default() };
            let invoke_ns = self.context.started.elapsed().as_nanos();
            let outcome = match timeout(OP_TIMEOUT, node.put_request(request)).await {
                Ok(Ok(response)) if self.same_process(generation) => {
                    Outcome::Wrote { revision: response.header.as_ref().map_or(0, |header| header.revision), succeeded: true, deleted: 0 }
                }
                Ok(Err(error)) if self.same_process(generation) => classify(error),
                Ok(_) => Outcome::Unknown("node restarted during the op".into()),
                Err(_) => Outcome::Unknown("timed out".into()),
            };
            let acknowledged = matches!(outcome, Outcome::Wrote { .. });
            let op = Op {
                client: self.context.client,
                kind: OpKind::Put { key: key.clone(), value },
                invoke_ns,
                complete_ns: self.context.started.elapsed().as_nanos(),
                outcome,
                serializable: false,
            };
            self.context.history.lock().unwrap().push(op);
            if !acknowledged {
                // The lease may have expired while the node was down (a refusal), or the
                // outcome is unknown: this lease is done with.
                return;
            }
        }
        self.pairs.lock().unwrap().push((keys[0].clone(), keys[1].clone()));
        let period = Duration::from_millis(ttl as u64 * 1000 / 4);
        for _ in 0..thread_rng().gen_range(0..=4) {
            sleep(period.mul_f64(thread_rng().gen_range(0.5..1.0))).await;
            let Some((node, generation)) = self.current() else { continue };
            let sent = Instant::now();
            let Ok(renewed) = node.lease_keep_alive(id) else { continue };
            if !self.same_process(generation) {
                continue;
            }
            if renewed == 0 {
                self.check_not_early(id, ttl, alive_from, "a keepalive answered that the lease is gone");
                return;
            }
            alive_from = sent;
            if !self.key_is_there(&keys[0], id, ttl, alive_from).await {
                return;
            }
        }
        // Left alone now: it must outlive almost all of its TTL. Read it three times, the
        // last as late as just short of the TTL (less than the drift bound allows).
        let ttl_time = Duration::from_secs(ttl as u64);
        let mut at: Vec<f64> = (0..3).map(|_| thread_rng().gen_range(0.3..0.995)).collect();
        at.sort_by(f64::total_cmp);
        for fraction in at {
            let due = alive_from + ttl_time.mul_f64(fraction);
            sleep(due.saturating_duration_since(Instant::now())).await;
            if !self.key_is_there(&keys[0], id, ttl, alive_from).await {
                return;
            }
        }
    }

    /// Reads `key`; if it is gone, checks that the lease was due to expire. False once gone.
    async fn key_is_there(&self, key: &str, id: i64, ttl: i64, alive_from: Instant) -> bool {
        let Some((node, generation)) = self.current() else { return true };
        let read = timeout(OP_TIMEOUT, node.range(RangeRequest { key: key.into(), ..Default::default() })).await;
        match read {
            Ok(Ok(response)) if self.same_process(generation) && response.kvs.is_empty() => {
                self.check_not_early(id, ttl, alive_from, "its key was gone");
                false
            }
            _ => true,
        }
    }

    /// The lease was seen gone now: a violation unless its TTL (less the drift bound) had
    /// run out since `alive_from`, when it was last known renewed.
    fn check_not_early(&self, id: i64, ttl: i64, alive_from: Instant, what: &str) {
        let lived = alive_from.elapsed();
        let bound = Duration::from_secs(ttl as u64).mul_f64(1.0 - 2.0 * DRIFT_PPM_MAX as f64 / 1e6);
        self.context.trace.lock().unwrap().fold(&format!("{} lease {id} gone after {lived:?}", self.context.client));
        if lived < bound {
            self.violations
                .lock()
                .unwrap()
                .push(format!("lease safety: lease {id} (TTL {ttl} s) expired early: {what} {lived:?} after its last keepalive was sent"));
        }
    }
}

/// A client that watches the workload's keys for the whole run, resuming from one past the
/// last revision it received whenever its stream ends (the node died, or was fenced).
struct Watcher {
    context: ClientContext,
    records: Arc<Mutex<Vec<WatchRecord>>>,
}

impl Watcher {
    async fn run(self) {
        let mut record =
            WatchRecord { watcher: self.context.client, key: "k".into(), range_end: "l".into(), start: 1, ..Default::default() };
        let mut next = record.start;
        while !self.context.stop.load(Ordering::SeqCst) {
            sleep(Duration::from_millis(thread_rng().gen_range(1..20))).await;
            let processes = &self.context.processes;
            let which = if processes.len() > 1 { thread_rng().gen_range(0..processes.len()) } else { 0 };
            let Some((node, generation)) = processes[which].current() else { continue };
            let options = WatchOptions { key: b"k".to_vec(), range_end: b"l".to_vec(), start_revision: next, ..Default::default() };
            let Ok(mut stream) = node.watch(options) else { continue };
            record.resumed.push((record.received.len(), next));
            self.context.trace.lock().unwrap().fold(&format!("{} watch from {next} on {}", self.context.client, processes[which].name));
            while !self.context.stop.load(Ordering::SeqCst) {
                match timeout(Duration::from_millis(50), stream.next()).await {
                    // Whatever a node published was durable (fsynced, or in the bucket): it
                    // counts even if the node died right after.
                    Ok(Some(Ok(revision))) => {
                        let changes = Log::from_events(std::slice::from_ref(&revision)).revisions.remove(0).1;
                        self.context.trace.lock().unwrap().fold(&format!("{} watched {}", self.context.client, revision.revision));
                        record.received.push((revision.revision, changes));
                        next = revision.revision + 1;
                    }
                    // As a client that relists would: on past the compaction point (whose
                    // own revision may have lost its deletes).
                    Ok(Some(Err(t4::Error::Compacted { compact_revision }))) => {
                        self.context.trace.lock().unwrap().fold(&format!("{} compacted at {compact_revision}", self.context.client));
                        let after = record.received.len();
                        record.compactions.push(CompactionSeen { after, requested: next, compact_revision });
                        next = compact_revision + 1;
                        break;
                    }
                    Ok(Some(Err(_)) | None) => break,
                    // Quiet: is the process still there and well? Else watch elsewhere.
                    Err(_) if processes[which].generation.load(Ordering::SeqCst) != generation || node.health().is_err() => break,
                    Err(_) => {}
                }
            }
        }
        self.records.lock().unwrap().push(record);
    }
}

/// Compacts the history now and then, as an operator or a Kubernetes apiserver does, first
/// reading the log up to the compaction point so the final checks still have all of it.
struct Compactor {
    context: ClientContext,
    log_prefix: Arc<Mutex<Vec<RevisionEvents>>>,
    compactions: Arc<Mutex<BTreeSet<i64>>>,
}

impl Compactor {
    async fn run(self) {
        while !self.context.stop.load(Ordering::SeqCst) {
            sleep(Duration::from_millis(thread_rng().gen_range(200..800))).await;
            let processes = &self.context.processes;
            let which = if processes.len() > 1 { thread_rng().gen_range(0..processes.len()) } else { 0 };
            let Some((node, _)) = processes[which].current() else { continue };
            let visible = node.current_revision();
            let from = self.log_prefix.lock().unwrap().last().map_or(1, |last| last.revision + 1);
            if visible < from {
                continue;
            }
            // Everything visible is committed; a read cut short keeps what it got.
            let options = WatchOptions { key: vec![0], range_end: vec![0], start_revision: from, ..Default::default() };
            let Ok(mut watch) = node.watch(options) else { continue };
            while self.log_prefix.lock().unwrap().last().map_or(0, |last| last.revision) < visible {
                match timeout(Duration::from_millis(200), watch.next()).await {
                    Ok(Some(Ok(revision))) => self.log_prefix.lock().unwrap().push(revision),
                    _ => break,
                }
            }
            let read = self.log_prefix.lock().unwrap().last().map_or(0, |last| last.revision);
            let target = read - thread_rng().gen_range(0..20);
            // Revision 1 is the empty store: there is nothing below it to compact.
            if target < 2 || self.compactions.lock().unwrap().last().is_some_and(|last| target <= *last) {
                continue;
            }
            // Asked for is what counts: the compaction may land though its answer is lost.
            self.compactions.lock().unwrap().insert(target);
            let outcome = timeout(OP_TIMEOUT, node.compact(target)).await;
            self.context.trace.lock().unwrap().fold(&format!("compact at {target}: {}", matches!(outcome, Ok(Ok(_)))));
        }
    }
}
