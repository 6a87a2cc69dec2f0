//! Scenarios: one seeded world per run, its nemesis, and the final verification.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, Runtime};
use madsim::time::{sleep, timeout, Instant};
use t4::durable::ObjectDurability;
use t4::env::{CrashMode, Env, ObjectStore, SimClock, SimDisk, SimDiskFaults, SimS3, SimS3Faults};
use t4::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use t4::proto::etcdserverpb::request_op::Request;
use t4::proto::etcdserverpb::{Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use t4::watch::WatchOptions;
use t4::{Config, ErrorKind, Node};

use crate::checker::{self, Log, State};
use crate::history::{Op, OpKind, Outcome};
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
    /// The bucket throttles (503) and loses requests and answers (ambiguous outcomes, the
    /// conditional creates of the log among them) while the node is killed, losing its
    /// unsynced writes, or wiped.
    S3Brownout,
}

impl Scenario {
    pub const ALL: [Scenario; 9] = [
        Scenario::Smoke,
        Scenario::CrashLoseUnsynced,
        Scenario::CrashTorn,
        Scenario::CrashMidCommit,
        Scenario::FsyncEio,
        Scenario::Swarm,
        Scenario::LeaseKeepaliveUnderCrash,
        Scenario::DiskWipe,
        Scenario::S3Brownout,
    ];

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
            Scenario::S3Brownout => "s3_brownout",
        }
    }

    /// Whether the node keeps its log in the simulated bucket.
    fn uses_bucket(self) -> bool {
        matches!(self, Scenario::DiskWipe | Scenario::S3Brownout)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scenario| scenario.name() == name)
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
    // Each seed on a fresh thread: std's HashMap seeds are per thread and madsim can seed
    // them only on a thread that has made none yet, so a second seed on the same thread
    // would see hash orders (in dependencies: t4 bans HashMap) that depend on the runs
    // before it. Found by the determinism test once disk_wipe ran after other scenarios.
    std::thread::spawn(move || {
        let mut runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.set_time_limit(Duration::from_secs(120));
        // The world is made inside the runtime: its clocks read this run's virtual time.
        runtime.block_on(async move { World::new(scenario, seed).run().await })
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The shared state of one run.
struct World {
    scenario: Scenario,
    seed: u64,
    disk: SimDisk,
    /// The node clients talk to (None while it is down).
    node: Arc<Mutex<Option<Node>>>,
    /// Bumped whenever the node process dies: answers from an older generation are lost.
    generation: Arc<AtomicU64>,
    open_failures: Arc<Mutex<Vec<String>>>,
    history: Arc<Mutex<Vec<Op>>>,
    trace: Arc<Mutex<TraceHash>>,
    stop: Arc<AtomicBool>,
    started: Instant,
    /// The node's clock drift (parts per million), fixed per seed.
    drift_ppm: Arc<AtomicI64>,
    /// What the lease clients saw go wrong, and the key pairs they attached to one lease.
    lease_violations: Arc<Mutex<Vec<String>>>,
    lease_pairs: Arc<Mutex<Vec<(String, String)>>>,
    /// The bucket, in the scenarios that use one (it outlives the node's crashes).
    bucket: Option<Arc<SimS3>>,
}

/// The bucket's faults while `s3_brownout` runs.
const BROWNOUT: SimS3Faults = SimS3Faults { slow_down_percent: 4, lost_request_percent: 2, lost_answer_percent: 2 };

impl World {
    fn new(scenario: Scenario, seed: u64) -> Self {
        Self {
            scenario,
            seed,
            disk: SimDisk::new(),
            node: Arc::new(Mutex::new(None)),
            generation: Arc::new(AtomicU64::new(0)),
            open_failures: Arc::new(Mutex::new(Vec::new())),
            history: Arc::new(Mutex::new(Vec::new())),
            trace: Arc::new(Mutex::new(TraceHash::default())),
            stop: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            drift_ppm: Arc::new(AtomicI64::new(0)),
            lease_violations: Arc::new(Mutex::new(Vec::new())),
            lease_pairs: Arc::new(Mutex::new(Vec::new())),
            bucket: scenario.uses_bucket().then(|| Arc::new(SimS3::new(seed ^ 0x5133_5133, Arc::new(SimClock::new(0, 0))))),
        }
    }

    fn fold(&self, event: &str) {
        let at = self.started.elapsed().as_nanos();
        self.trace.lock().unwrap().fold(&format!("{at} {event}"));
    }

    async fn run(self) -> SeedReport {
        let handle = Handle::current();
        let leases = self.scenario == Scenario::LeaseKeepaliveUnderCrash;
        if leases {
            let drift = thread_rng().gen_range(-DRIFT_PPM_MAX..=DRIFT_PPM_MAX);
            self.drift_ppm.store(drift, Ordering::SeqCst);
            self.fold(&format!("clock drift {drift} ppm"));
        }
        if let (Scenario::S3Brownout, Some(bucket)) = (self.scenario, &self.bucket) {
            bucket.set_faults(BROWNOUT);
        }
        let server = self.start_server(&handle);
        let mut clients: Vec<_> = (0..CLIENTS).map(|client| self.start_client(&handle, client)).collect();
        if leases {
            clients.extend((0..LEASE_CLIENTS).map(|client| self.start_lease_client(&handle, CLIENTS + 1 + client)));
        }
        let faults = self.nemesis(&handle, server.id()).await;
        self.stop.store(true, Ordering::SeqCst);
        for client in clients {
            let _ = client.await;
        }
        self.fold("--- heal");
        self.disk.set_faults(SimDiskFaults::default());
        if let Some(bucket) = &self.bucket {
            bucket.set_faults(SimS3Faults::default());
            self.fold(&format!("bucket faults injected {}", bucket.faults_injected()));
        }
        self.restart(&handle, server.id(), None);
        self.verify(faults).await
    }

    fn start_server(&self, handle: &Handle) -> madsim::runtime::NodeHandle {
        let (disk, slot, failures) = (self.disk.clone(), self.node.clone(), self.open_failures.clone());
        let drift = self.drift_ppm.load(Ordering::SeqCst);
        let bucket = self.bucket.clone();
        handle
            .create_node()
            .name("t4")
            .init(move || {
                let (disk, slot, failures) = (disk.clone(), slot.clone(), failures.clone());
                let bucket = bucket.clone();
                async move {
                    let env = Env { clock: Arc::new(SimClock::new(drift, 0)), disk: Arc::new(disk) };
                    let mut config = sim_config();
                    if let Some(bucket) = bucket {
                        let store: Arc<dyn ObjectStore> = bucket;
                        config.object_store = Some(ObjectDurability {
                            lock_check_interval: Duration::from_millis(100),
                            // Checkpoints and GC run within a seed.
                            checkpoint_entries: 500,
                            ..ObjectDurability::new(store, "sim")
                        });
                    }
                    match Node::open_with_env(config, env).await {
                        Ok(node) => *slot.lock().unwrap() = Some(node),
                        Err(error) => failures.lock().unwrap().push(format!("node failed to open after a legal fault: {error}")),
                    }
                    std::future::pending::<()>().await;
                }
            })
            .build()
    }

    fn restart(&self, handle: &Handle, server: madsim::task::NodeId, crash: Option<CrashMode>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        *self.node.lock().unwrap() = None;
        // SIGKILL: what the process wrote stays, nothing it would do after is done (the
        // simulator's kill drops its tasks, which would run destructors that write).
        self.disk.kill_process();
        handle.kill(server);
        if let Some(mode) = crash {
            self.disk.crash(mode);
        }
        self.fold(&format!("restart crash={crash:?}"));
        handle.restart(server);
    }

    /// Injects faults until the workload time is up; returns how many.
    async fn nemesis(&self, handle: &Handle, server: madsim::task::NodeId) -> usize {
        let mut faults = 0;
        let duration = if self.scenario == Scenario::LeaseKeepaliveUnderCrash { LEASE_WORKLOAD_DURATION } else { WORKLOAD_DURATION };
        let end = Instant::now() + duration;
        while Instant::now() < end {
            // Leases need a few quiet seconds to be granted, kept alive and left to expire.
            // A brownout slows the node: it needs longer between kills to get anything done.
            let pause = match self.scenario {
                Scenario::LeaseKeepaliveUnderCrash => 400..2000,
                Scenario::S3Brownout => 150..600,
                _ => 30..300,
            };
            sleep(Duration::from_millis(thread_rng().gen_range(pause))).await;
            let fault = match self.scenario {
                Scenario::Smoke => continue,
                Scenario::Swarm => [Scenario::CrashLoseUnsynced, Scenario::CrashTorn, Scenario::CrashMidCommit, Scenario::FsyncEio]
                    [thread_rng().gen_range(0..4)],
                Scenario::LeaseKeepaliveUnderCrash => [Scenario::CrashLoseUnsynced, Scenario::CrashTorn][thread_rng().gen_range(0..2)],
                Scenario::S3Brownout => [Scenario::CrashLoseUnsynced, Scenario::DiskWipe][thread_rng().gen_range(0..2)],
                other => other,
            };
            faults += 1;
            self.inject(handle, server, fault).await;
        }
        faults
    }

    async fn inject(&self, handle: &Handle, server: madsim::task::NodeId, fault: Scenario) {
        let torn = CrashMode::Torn { seed: thread_rng().gen() };
        match fault {
            Scenario::CrashLoseUnsynced => self.restart(handle, server, Some(CrashMode::LoseUnsynced)),
            Scenario::CrashTorn => self.restart(handle, server, Some(torn)),
            Scenario::DiskWipe => self.restart(handle, server, Some(CrashMode::Wipe)),
            Scenario::CrashMidCommit => {
                let after = thread_rng().gen_range(0..4);
                self.fold(&format!("crash on sync #{after}"));
                self.disk.set_faults(SimDiskFaults { crash_on_sync: Some((after, torn)), ..Default::default() });
                self.await_failure().await;
                self.disk.set_faults(SimDiskFaults::default());
                // The disk already lost power; the process dies with it.
                self.restart(handle, server, None);
            }
            Scenario::FsyncEio => {
                self.fold("fsync eio");
                self.disk.set_faults(SimDiskFaults { sync_failures: 1, ..Default::default() });
                self.await_failure().await;
                self.disk.set_faults(SimDiskFaults::default());
                self.restart(handle, server, None);
            }
            Scenario::Smoke | Scenario::Swarm | Scenario::LeaseKeepaliveUnderCrash | Scenario::S3Brownout => {
                unreachable!("expanded by the nemesis")
            }
        }
    }

    /// Waits (bounded) for the node to report a storage failure after an injected fault.
    async fn await_failure(&self) {
        for _ in 0..200 {
            let node = self.node.lock().unwrap().clone();
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
            node: self.node.clone(),
            generation: self.generation.clone(),
            history: self.history.clone(),
            trace: self.trace.clone(),
            stop: self.stop.clone(),
            started: self.started,
        }
    }

    fn start_client(&self, handle: &Handle, client: usize) -> madsim::task::JoinHandle<()> {
        let context = self.client_context(client);
        handle.create_node().name(format!("client-{client}")).build().spawn(context.run())
    }

    fn start_lease_client(&self, handle: &Handle, client: usize) -> madsim::task::JoinHandle<()> {
        let context = LeaseClient {
            context: self.client_context(client),
            violations: self.lease_violations.clone(),
            pairs: self.lease_pairs.clone(),
        };
        handle.create_node().name(format!("lease-client-{client}")).build().spawn(context.run())
    }

    /// Final checks: the node recovers, a write completes, and the history is judged
    /// against the committed log.
    async fn verify(&self, faults: usize) -> SeedReport {
        let awaited = self.await_node().await;
        // Read after waiting: the last open's failure, if any, is among them then.
        let mut violations: Vec<String> = self.open_failures.lock().unwrap().clone();
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
            }),
            other => violations.push(format!("liveness: a write after healing did not complete: {other:?}")),
        }
        let history = self.history.lock().unwrap().clone();
        let (log, final_revision, final_state) = match read_back(&node).await {
            Ok(read) => read,
            Err(error) => {
                violations.push(format!("could not read the committed log back: {error}"));
                return self.report(faults, 0, violations);
            }
        };
        violations.extend(checker::check(&history, &log, final_revision, &final_state));
        violations.extend(self.lease_violations.lock().unwrap().iter().cloned());
        let pairs = self.lease_pairs.lock().unwrap().clone();
        violations.extend(checker::check_lease_pairs(&log, &pairs));
        self.fold(&format!("final revision {final_revision}"));
        self.report(faults, final_revision, violations)
    }

    async fn await_node(&self) -> Option<Node> {
        for _ in 0..1000 {
            if let Some(node) = self.node.lock().unwrap().clone() {
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

/// The committed log (a watch from revision 1), the final revision and the final state.
async fn read_back(node: &Node) -> t4::Result<(Log, i64, State)> {
    let final_revision = node.current_revision();
    let mut events: Vec<t4::mvcc::RevisionEvents> = Vec::new();
    if final_revision > 1 {
        let mut watch = node.watch(WatchOptions { key: vec![0], range_end: vec![0], start_revision: 1, ..Default::default() })?;
        while events.last().map_or(1, |last| last.revision) < final_revision {
            match watch.next().await {
                Some(Ok(revision)) => events.push(revision),
                Some(Err(error)) => return Err(error),
                None => return Err(t4::Error::Closed),
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
    node: Arc<Mutex<Option<Node>>>,
    generation: Arc<AtomicU64>,
    history: Arc<Mutex<Vec<Op>>>,
    trace: Arc<Mutex<TraceHash>>,
    stop: Arc<AtomicBool>,
    started: Instant,
}

impl ClientContext {
    async fn run(self) {
        let mut sequence = 0u64;
        let mut last_seen = [0i64; KEYS];
        while !self.stop.load(Ordering::SeqCst) {
            sleep(Duration::from_micros(thread_rng().gen_range(0..2000))).await;
            let Some(node) = self.node.lock().unwrap().clone() else { continue };
            sequence += 1;
            let key_index = thread_rng().gen_range(0..KEYS);
            let key = format!("k{key_index}");
            let value = format!("c{}.{sequence}", self.client);
            let kind = match thread_rng().gen_range(0..10) {
                0..=3 => OpKind::Put { key, value },
                4..=6 => OpKind::Get { key },
                7..=8 => OpKind::Cas { key, expected: last_seen[key_index], value },
                _ => OpKind::Delete { key },
            };
            let op = self.perform(&node, kind).await;
            if let Outcome::Read { found, .. } = &op.outcome {
                last_seen[key_index] = found.as_ref().map_or(0, |(_, mod_revision)| *mod_revision);
            }
            self.trace.lock().unwrap().fold(&format!("{} {} {:?} {:?}", op.complete_ns, op.client, op.kind, op.outcome));
            self.history.lock().unwrap().push(op);
        }
    }

    async fn perform(&self, node: &Node, kind: OpKind) -> Op {
        let generation = self.generation.load(Ordering::SeqCst);
        let invoke_ns = self.started.elapsed().as_nanos();
        let outcome = match timeout(OP_TIMEOUT, execute(node, &kind)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Unknown("timed out".into()),
        };
        let complete_ns = self.started.elapsed().as_nanos();
        // A reply from a process that died meanwhile never reaches the client.
        let outcome = if self.generation.load(Ordering::SeqCst) != generation {
            match outcome {
                Outcome::Refused(reason) => Outcome::Refused(reason),
                _ => Outcome::Unknown("node restarted during the op".into()),
            }
        } else {
            outcome
        };
        Op { client: self.client, kind, invoke_ns, complete_ns, outcome }
    }
}

fn classify(error: t4::Error) -> Outcome {
    match error.kind() {
        ErrorKind::StorageFailure | ErrorKind::Closed | ErrorKind::Corrupt => Outcome::Unknown(error.to_string()),
        _ => Outcome::Refused(error.to_string()),
    }
}

async fn execute(node: &Node, kind: &OpKind) -> Outcome {
    let revision_of = |header: &Option<t4::proto::etcdserverpb::ResponseHeader>| header.as_ref().map_or(0, |header| header.revision);
    match kind {
        OpKind::Put { key, value } => {
            match node.put_request(PutRequest { key: key.clone().into(), value: value.clone().into(), ..Default::default() }).await {
                Ok(response) => Outcome::Wrote { revision: revision_of(&response.header), succeeded: true, deleted: 0 },
                Err(error) => classify(error),
            }
        }
        OpKind::Get { key } => match node.range(RangeRequest { key: key.clone().into(), ..Default::default() }).await {
            Ok(response) => Outcome::Read {
                revision: revision_of(&response.header),
                found: response.kvs.first().map(|kv| (String::from_utf8_lossy(&kv.value).into_owned(), kv.mod_revision)),
            },
            Err(error) => classify(error),
        },
        OpKind::Cas { key, expected, value } => {
            let compare = Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: key.clone().into(),
                target_union: Some(TargetUnion::ModRevision(*expected)),
                range_end: Vec::new(),
            };
            let put = PutRequest { key: key.clone().into(), value: value.clone().into(), ..Default::default() };
            let request = TxnRequest {
                compare: vec![compare],
                success: vec![RequestOp { request: Some(Request::RequestPut(put)) }],
                failure: vec![],
            };
            match node.txn(request).await {
                Ok(response) => Outcome::Wrote { revision: revision_of(&response.header), succeeded: response.succeeded, deleted: 0 },
                Err(error) => classify(error),
            }
        }
        OpKind::Delete { key } => match node.delete_range(DeleteRangeRequest { key: key.clone().into(), ..Default::default() }).await {
            Ok(response) => Outcome::Wrote { revision: revision_of(&response.header), succeeded: true, deleted: response.deleted },
            Err(error) => classify(error),
        },
    }
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
    fn current(&self) -> Option<(Node, u64)> {
        let generation = self.context.generation.load(Ordering::SeqCst);
        self.context.node.lock().unwrap().clone().map(|node| (node, generation))
    }

    /// An answer counts only if the process that gave it is still the one running.
    fn same_process(&self, generation: u64) -> bool {
        self.context.generation.load(Ordering::SeqCst) == generation
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
        // Left alone now: it must outlive almost all of its TTL.
        sleep(Duration::from_secs(ttl as u64).mul_f64(thread_rng().gen_range(0.3..0.97))).await;
        self.key_is_there(&keys[0], id, ttl, alive_from).await;
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
