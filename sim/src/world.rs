//! The simulated world of one run: its processes (a t4 node each, on a crashable disk),
//! the bucket they share, the clients, the nemesis that drives the faults of the scenario's
//! row, and the final verification.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use madsim::runtime::Handle;
use madsim::task::NodeId;
use madsim::time::{sleep, timeout, Instant};
use t4::api::{EtcdCore, MemberInfo};
use t4::durability::BucketDurability;
use t4::env::{CrashMode, Env, ObjectStore, SimClock, SimDisk, SimDiskFaults, SimS3, SimS3Faults};
use t4::mvcc::RevisionEvents;
use t4::proto::etcdserverpb::RangeRequest;
use t4::watch::WatchOptions;
use t4::{Config, ErrorKind, Node};

use crate::checker::{self, Log, State, WatchRecord};
use crate::fault::Fault;
use crate::history::{Op, OpKind, Outcome};
use crate::net;
use crate::scenario::{Drift, Scenario, SeedReport, Spec, DRIFT_PPM_MAX, DRIFT_PPM_OUT_OF_BOUND};
use crate::trace::TraceHash;
use crate::workload::*;

/// One t4 process of the world: its own disk and madsim node, reached through its slot.
#[derive(Clone)]
pub(crate) struct Process {
    pub(crate) name: String,
    pub(crate) disk: SimDisk,
    /// The running node (None while it is down).
    pub(crate) slot: Arc<Mutex<Option<Node>>>,
    /// Bumped whenever the process dies: answers from an older generation are lost.
    pub(crate) generation: Arc<AtomicU64>,
    /// The running incarnation's clock (the nemesis steps its wall time).
    pub(crate) clock: Arc<Mutex<Option<Arc<SimClock>>>>,
    /// Its address on SimNet.
    pub(crate) ip: std::net::IpAddr,
    /// Stopped (SIGSTOP) by the nemesis: a client's call waits until it runs again, as a
    /// request to a stopped process waits in its socket.
    pub(crate) paused: Arc<t4::env::signal::Sender<bool>>,
    /// Cut from the bucket (a cluster member's own link to S3; its calls time out).
    pub(crate) bucket_cut: Arc<std::sync::atomic::AtomicBool>,
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
            paused: Arc::new(t4::env::signal::Sender::new(false)),
            bucket_cut: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// The running node and the generation it belongs to.
    pub(crate) fn current(&self) -> Option<(Node, u64)> {
        let generation = self.generation.load(Ordering::SeqCst);
        self.slot.lock().unwrap().clone().map(|node| (node, generation))
    }

    pub(crate) fn address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.ip, net::CLIENT_PORT)
    }
}

/// The shared state of one run.
pub(crate) struct World {
    pub(crate) scenario: Scenario,
    /// The scenario's row of options.
    pub(crate) spec: Spec,
    pub(crate) seed: u64,
    /// The t4 processes: one, or two on one bucket prefix (`two_processes_on_one_prefix`).
    pub(crate) processes: Vec<Process>,
    pub(crate) open_failures: Arc<Mutex<Vec<String>>>,
    /// Opens refused because the disk was found damaged (`disk_out_of_contract`: expected).
    pub(crate) detected: Arc<Mutex<Vec<String>>>,
    pub(crate) history: Arc<Mutex<Vec<Op>>>,
    pub(crate) trace: Arc<Mutex<TraceHash>>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) started: Instant,
    /// The node's clock drift (parts per million), fixed per seed.
    pub(crate) drift_ppm: Arc<AtomicI64>,
    /// What the lease clients saw go wrong, and the key pairs they attached to one lease.
    pub(crate) lease_violations: Arc<Mutex<Vec<String>>>,
    pub(crate) lease_pairs: Arc<Mutex<Vec<(String, String)>>>,
    /// What each watcher received.
    pub(crate) watches: Arc<Mutex<Vec<WatchRecord>>>,
    /// The committed log as read before each compaction (compaction removes the history the
    /// final read-back needs), and every revision a compaction was asked for at.
    pub(crate) log_prefix: Arc<Mutex<Vec<RevisionEvents>>>,
    pub(crate) compactions: Arc<Mutex<BTreeSet<i64>>>,
    /// The madsim nodes of the workload's clients (for the partition nemesis).
    pub(crate) client_nodes: Mutex<Vec<NodeId>>,
    /// Keys whose WGL search ran out of steps (reported with the seed).
    pub(crate) wgl_inconclusive: std::sync::atomic::AtomicUsize,
    /// The bucket, in the scenarios that use one (it outlives the node's crashes).
    pub(crate) bucket: Option<Arc<SimS3>>,
    /// The processes' madsim nodes, in order.
    pub(crate) servers: Mutex<Vec<NodeId>>,
}

/// A cluster member's lease and drift bound in the replicated worlds; each member's clock
/// drifts within ±2% (the bound allows 10%).
const MEMBER_TIMING: t4::election::LeaseTiming =
    t4::election::LeaseTiming { lease: Duration::from_millis(1000), drift: Duration::from_millis(100) };
const MEMBER_DRIFT_PPM: i64 = 20_000;

impl World {
    pub(crate) fn new(scenario: Scenario, seed: u64) -> Self {
        let spec = scenario.spec();
        let processes = if spec.replicated {
            (0..spec.processes).map(|index| Process::new(format!("m{index}"), index as u8)).collect()
        } else {
            ["t4", "t4-second"].into_iter().take(spec.processes).zip(0..).map(|(name, index)| Process::new(name, index)).collect()
        };
        Self {
            scenario,
            spec,
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
            servers: Mutex::new(Vec::new()),
            bucket: scenario.spec().bucket.is_some().then(|| {
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

    pub(crate) fn fold(&self, event: &str) {
        let at = self.started.elapsed().as_nanos();
        self.trace.lock().unwrap().fold(&format!("{at} {event}"));
    }

    pub(crate) async fn run(self) -> SeedReport {
        let handle = Handle::current();
        let leases = self.spec.leases.is_some();
        if let Some(drift) = self.spec.leases {
            let drift = match drift {
                Drift::Edge => [-DRIFT_PPM_MAX, DRIFT_PPM_MAX][thread_rng().gen_range(0..2)],
                Drift::OutOfBound => DRIFT_PPM_OUT_OF_BOUND,
                Drift::InBound => thread_rng().gen_range(-DRIFT_PPM_MAX..=DRIFT_PPM_MAX),
            };
            self.drift_ppm.store(drift, Ordering::SeqCst);
            self.fold(&format!("clock drift {drift} ppm"));
        }
        if let Some(bucket) = &self.bucket {
            bucket.set_faults(self.spec.bucket.unwrap_or_default());
        }
        let mut servers = Vec::new();
        for process in &self.processes {
            servers.push(self.start_server(&handle, process).id());
            *self.servers.lock().unwrap() = servers.clone();
            if self.processes.len() > 1 {
                // One at a time: the second takes its term (or joins the cluster) after the
                // first is up.
                self.await_node(process).await;
            }
        }
        let mut clients: Vec<_> = (0..CLIENTS).map(|client| self.start_client(&handle, client)).collect();
        if leases {
            clients.extend((0..LEASE_CLIENTS).map(|client| self.start_lease_client(&handle, CLIENTS + 1 + client)));
        }
        if self.spec.watchers {
            let first = CLIENTS + 1 + LEASE_CLIENTS;
            clients.extend((first..first + WATCHERS).map(|client| self.start_watcher(&handle, client)));
            clients.push(self.start_compactor(&handle, first + WATCHERS));
        }
        if self.spec.replicated {
            self.await_voters().await;
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
        if self.spec.replicated {
            let report = self.verify_replicated(&handle, faults).await;
            for (process, server) in self.processes.iter().zip(&servers) {
                self.kill(&handle, process, *server);
            }
            return report;
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
        let detected = self.spec.faults.iter().any(|(fault, _)| *fault == Fault::DiskOutOfContract).then(|| self.detected.clone());
        let drift = self.drift_ppm.load(Ordering::SeqCst);
        let bucket = self.bucket.clone();
        let name = process.name.clone();
        let uses_net = self.spec.over_net;
        let replicated = self.spec.replicated;
        let ip = process.ip;
        let bucket_cut = process.bucket_cut.clone();
        let drift = if replicated { thread_rng().gen_range(-MEMBER_DRIFT_PPM..=MEMBER_DRIFT_PPM) } else { drift };
        if replicated {
            self.fold(&format!("{name} drift {drift} ppm"));
        }
        handle
            .create_node()
            .name(&name)
            .ip(process.ip)
            .init(move || {
                let (disk, slot, failures) = (disk.clone(), slot.clone(), failures.clone());
                let (bucket, name, detected, clock_slot) = (bucket.clone(), name.clone(), detected.clone(), clock_slot.clone());
                let bucket_cut = bucket_cut.clone();
                async move {
                    // The machine's wall clock goes on across a restart of the process (only its
                    // monotonic clock starts again).
                    let wall_ms = madsim::time::TimeHandle::current().elapsed().as_millis() as i64;
                    let clock = Arc::new(SimClock::new(drift, wall_ms));
                    *clock_slot.lock().unwrap() = Some(clock.clone());
                    let env_disk = disk.clone();
                    let env = Env { clock, disk: Arc::new(disk) };
                    let mut config = sim_config();
                    if let Some(bucket) = bucket.clone() {
                        let mut store: Arc<dyn ObjectStore> = bucket;
                        if replicated {
                            store = Arc::new(t4::env::CutStore::new(store, bucket_cut.clone(), Duration::from_millis(300)));
                        }
                        config.bucket = Some(BucketDurability {
                            lock_check_interval: Duration::from_millis(100),
                            // Checkpoints and GC run within a seed.
                            checkpoint_entries: 500,
                            ..BucketDurability::new(store, name.clone())
                        });
                    }
                    if replicated {
                        let peers = crate::peer::SimPeers::new(Duration::from_millis(500)).await.expect("bind a peer endpoint");
                        config.cluster = Some(t4::config::ClusterConfig {
                            node_id: name.clone(),
                            peer_url: crate::peer::peer_url(ip),
                            client_url: format!("http://{name}:2379"),
                            peers: Arc::new(peers),
                            wait_mode: t4::cluster::WaitMode::Quorum,
                            timing: MEMBER_TIMING,
                            reads: Default::default(),
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
                            if let Some(handler) = node.peer_handler() {
                                tokio::spawn(crate::peer::serve_peers(handler));
                            }
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
    pub(crate) fn kill(&self, handle: &Handle, process: &Process, server: NodeId) {
        process.generation.fetch_add(1, Ordering::SeqCst);
        *process.slot.lock().unwrap() = None;
        process.disk.kill_process();
        handle.kill(server);
    }

    pub(crate) fn restart(&self, handle: &Handle, process: &Process, server: NodeId, crash: Option<CrashMode>) {
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
        let duration = if self.spec.leases.is_some() { LEASE_WORKLOAD_DURATION } else { WORKLOAD_DURATION };
        let end = Instant::now() + duration;
        while Instant::now() < end {
            sleep(Duration::from_millis(thread_rng().gen_range(self.spec.pause_ms.clone()))).await;
            let Some(fault) = Fault::pick(self.spec.faults) else { continue };
            let mut which = if self.processes.len() > 1 { thread_rng().gen_range(0..self.processes.len()) } else { 0 };
            // Half the faults of a cluster go to whoever leads now (Jepsen's "the leader"):
            // kills, pauses, partitions and bucket cuts alike.
            if self.spec.replicated && thread_rng().gen_range(0..2) == 0 {
                if let Some(leader) = self.leader_index() {
                    which = leader;
                }
            }
            faults += 1;
            self.inject(handle, which, servers[which], fault).await;
        }
        faults
    }

    /// Waits (bounded) for the process to report a storage failure after an injected fault.
    pub(crate) async fn await_failure(&self, process: &Process) {
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
            replicated: self.spec.replicated,
        }
    }

    fn start_client(&self, handle: &Handle, client: usize) -> madsim::task::JoinHandle<()> {
        let context = self.client_context(client);
        let node = handle.create_node().name(format!("client-{client}")).ip(std::net::IpAddr::from([10, 0, 1, client as u8 + 1])).build();
        self.client_nodes.lock().unwrap().push(node.id());
        let net = self.spec.over_net;
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
            match t4::durability::status::status(bucket.as_ref()).await {
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

    /// The voters the bucket's members record names (0 when it cannot be read).
    pub(crate) async fn voters(&self) -> usize {
        let Some(bucket) = &self.bucket else { return 0 };
        match t4::cluster::members::read_members(bucket.as_ref()).await {
            Ok(Some((members, _))) => members.voter_count(),
            _ => 0,
        }
    }

    /// Waits (bounded) until every process of the cluster is a voter: the faults start on a
    /// cluster whose majority can lose a member.
    async fn await_voters(&self) {
        for _ in 0..200 {
            if self.voters().await == self.processes.len() {
                self.fold("every member votes");
                return;
            }
            sleep(Duration::from_millis(50)).await;
        }
        self.fold("not every member votes");
    }

    /// The process whose node leads now, if one does.
    pub(crate) fn leader_index(&self) -> Option<usize> {
        self.processes.iter().position(|process| {
            process.current().is_some_and(|(node, _)| matches!(node.cluster_role(), Some(t4::node::ClusterRole::Leader { .. })))
        })
    }

    /// After healing a cluster: every member up, one leader that takes a write, the history
    /// judged against the leader's log, and every member's store the same at the final
    /// revision (the followers applied exactly what the leader committed).
    async fn verify_replicated(&self, _handle: &Handle, faults: usize) -> SeedReport {
        let mut nodes = Vec::new();
        for process in &self.processes {
            match self.await_node(process).await {
                Some(node) => nodes.push(node),
                None => {
                    let mut violations = self.open_failures.lock().unwrap().clone();
                    violations.push(format!("liveness: {} did not come up within 10s after healing", process.name));
                    return self.report(faults, 0, violations);
                }
            }
        }
        let mut violations: Vec<String> = self.open_failures.lock().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut attempt = 0;
        let (leader, written) = loop {
            if let Some(leader) = self.leader_index() {
                // Each attempt its own value, recorded whatever it was told: one that timed
                // out or lost its leader may still take effect.
                attempt += 1;
                let value = format!("after-healing-{attempt}");
                let invoke_ns = self.started.elapsed().as_nanos();
                let answer = timeout(Duration::from_secs(2), nodes[leader].put("liveness", value.clone())).await;
                let outcome = match &answer {
                    Ok(Ok(revision)) => Outcome::Wrote { revision: *revision, succeeded: true, deleted: 0 },
                    Ok(Err(error)) if !crate::history::outcome_unknown_after(error) => Outcome::Refused(error.to_string()),
                    Ok(Err(error)) => Outcome::Unknown(error.to_string()),
                    Err(_) => Outcome::Unknown("timed out".into()),
                };
                self.history.lock().unwrap().push(Op {
                    client: CLIENTS,
                    kind: OpKind::Put { key: "liveness".into(), value },
                    invoke_ns,
                    complete_ns: self.started.elapsed().as_nanos(),
                    outcome,
                    serializable: false,
                });
                if let Ok(Ok(revision)) = answer {
                    break (leader, revision);
                }
            }
            if Instant::now() > deadline {
                let roles: Vec<_> = nodes.iter().map(|node| node.cluster_role()).collect();
                violations.push(format!("liveness: no leader took a write within 20s after healing; roles {roles:?}"));
                return self.report(faults, 0, violations);
            }
            sleep(Duration::from_millis(50)).await;
        };
        self.fold(&format!("leader after healing: {}", self.processes[leader].name));
        let history = self.history.lock().unwrap().clone();
        let (log, final_revision, final_state) = match read_back(&nodes[leader], Vec::new()).await {
            Ok(read) => read,
            Err(error) => {
                violations.push(format!("could not read the committed log back from the leader: {error}"));
                return self.report(faults, 0, violations);
            }
        };
        violations.extend(checker::check(&history, &log, final_revision, &final_state));
        let wgl = crate::wgl::check(&history);
        violations.extend(wgl.violations);
        self.wgl_inconclusive.store(wgl.inconclusive.len(), Ordering::SeqCst);
        // Every member converges on the leader's store.
        let expected = nodes[leader].hash_kv(written).await;
        for (process, node) in self.processes.iter().zip(&nodes) {
            let mut reached = false;
            for _ in 0..1000 {
                if node.current_revision() >= written {
                    reached = true;
                    break;
                }
                sleep(Duration::from_millis(10)).await;
            }
            if !reached {
                violations.push(format!(
                    "{} never applied revision {written} after healing: at revision {}, commit index {:?}, role {:?}, health {:?}, last refusal {:?}",
                    process.name,
                    node.current_revision(),
                    node.commit_index(),
                    node.cluster_role(),
                    node.health(),
                    node.last_peer_refusal()
                ));
                violations.push(format!("the leader's view of its followers: {:?}", nodes[leader].replication()));
                continue;
            }
            let hash = node.hash_kv(written).await;
            if hash.as_ref().ok() != expected.as_ref().ok() {
                violations.push(format!("{}: hash at revision {written} is {hash:?}, the leader's {expected:?}", process.name));
            }
        }
        self.fold(&format!("final revision {final_revision}"));
        self.report(faults, final_revision, violations)
    }

    pub(crate) async fn await_node(&self, process: &Process) -> Option<Node> {
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
