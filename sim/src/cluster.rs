//! The cluster world of the leadership scenarios: 3 or 5 members on one simulated bucket,
//! each running its election (`t4::election::member`) on its own madsim node and its own
//! drifting clock, while the nemesis kills and restarts members, pauses them past their
//! lease, cuts them off from the bucket, or makes a holder unheard by a majority.
//!
//! Checkers (docs/simulation.md "Leadership"):
//! - **one leader per instant**: every millisecond of virtual (real) time, at most one
//!   member's standing leads at its own clock's reading (what each checks before it
//!   acknowledges a write or serves a read);
//! - **terms only go up**: a term seen leading is never followed by an older one;
//! - **no broken invariant**: no member's election stopped (that happens only when a
//!   lock write's invariant or the store's conditions broke);
//! - **liveness after heal**: with every member up, heard and reaching the bucket, one member
//!   leads without a break through the last lease of the run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use madsim::runtime::Handle;
use madsim::task::NodeId;
use madsim::time::{sleep, Instant};
use t4::election::member::{run_member, HeartbeatSeen, MemberElection, Standing};
use t4::election::{Election, Identity, LeaseTiming};
use t4::env::signal;
use t4::env::{Clock, CutStore, ObjectStore, SimClock, SimS3, SimS3Faults};
use t4::object::{RetryPolicy, RetryingStore};

use crate::fault::Fault;
use crate::scenario::{Drift, Scenario, SeedReport};
use crate::trace::TraceHash;

/// The members' lease timing: L = 600 ms, D = 60 ms (a 10% bound on how far two clocks'
/// rates may differ).
pub const TIMING: LeaseTiming = LeaseTiming { lease: Duration::from_millis(600), drift: Duration::from_millis(60) };
/// Virtual time the nemesis runs for.
const RUN: Duration = Duration::from_secs(20);
/// Each member's clock rate within the bound: at most ±4.9% (two differ by under 10%).
const DRIFT_PPM_IN_BOUND: i64 = 49_000;
/// ... and far outside it: ±40%.
const DRIFT_PPM_OUT_OF_BOUND: i64 = 400_000;

/// What one scenario's cluster is.
#[derive(Debug, Clone, Copy)]
pub struct ClusterSpec {
    pub members: usize,
    pub drift: Drift,
    /// The bucket's own faults (lost requests and answers make lock writes ambiguous).
    pub bucket: SimS3Faults,
}

/// A running incarnation's clock and standing, as the checker reads them (None while down).
type Running = Arc<Mutex<Option<(Arc<SimClock>, signal::Receiver<Standing>)>>>;
/// Where a running incarnation receives heartbeats: its clock (to stamp arrivals) and inbox.
type Inbox = Arc<Mutex<Option<(Arc<SimClock>, signal::Sender<Option<HeartbeatSeen>>)>>>;

/// One member: its madsim node, what the checker reads of its running incarnation, and
/// the switches the nemesis flips.
struct Member {
    name: String,
    node: Option<NodeId>,
    running: Running,
    inbox: Inbox,
    /// Cut off from the bucket.
    cut: Arc<AtomicBool>,
    /// Heard by a majority (a holder that is not stops renewing).
    heard: Arc<AtomicBool>,
}

/// Runs one seed of a leadership scenario.
pub(crate) async fn run(
    scenario: Scenario,
    seed: u64,
    spec: ClusterSpec,
    faults: &'static [(Fault, u32)],
    pause_ms: std::ops::Range<u64>,
) -> SeedReport {
    let handle = Handle::current();
    let trace = Arc::new(Mutex::new(TraceHash::default()));
    let started = Instant::now();
    let fold = |event: &str| trace.lock().unwrap().fold(&format!("{} {event}", started.elapsed().as_nanos()));
    let bucket = Arc::new(SimS3::new(seed ^ 0x5133_5133, Arc::new(SimClock::new(0, 0))));
    let network = handle.create_node().name("s3-network").build();
    bucket.set_courier(Arc::new(move |journey| {
        network.spawn(journey);
    }));
    bucket.set_faults(spec.bucket);
    let mut members: Vec<Member> = Vec::new();
    let mut drifts = Vec::new();
    for index in 0..spec.members {
        let bound = match spec.drift {
            Drift::InBound => thread_rng().gen_range(-DRIFT_PPM_IN_BOUND..=DRIFT_PPM_IN_BOUND),
            Drift::Edge => [-DRIFT_PPM_IN_BOUND, DRIFT_PPM_IN_BOUND][thread_rng().gen_range(0..2)],
            // Slow and fast members in turn (the first, which takes the first term, slow):
            // a fast one's takeover comes while a slow holder's lease still runs by its clock.
            Drift::OutOfBound if index % 2 == 0 => -DRIFT_PPM_OUT_OF_BOUND,
            Drift::OutOfBound => DRIFT_PPM_OUT_OF_BOUND,
        };
        drifts.push(bound);
        let member = Member {
            name: format!("m{index}"),
            node: None,
            running: Arc::new(Mutex::new(None)),
            inbox: Arc::new(Mutex::new(None)),
            cut: Arc::new(AtomicBool::new(false)),
            heard: Arc::new(AtomicBool::new(true)),
        };
        fold(&format!("{} drift {bound} ppm", member.name));
        members.push(member);
    }
    // Heartbeats travel on a node of their own: one in flight still lands if its sender dies.
    let peers = handle.create_node().name("peer-network").build();
    let inboxes: Vec<(String, Inbox)> = members.iter().map(|member| (member.name.clone(), member.inbox.clone())).collect();
    for (index, member) in members.iter_mut().enumerate() {
        let drift = drifts[index];
        member.node = Some(start_member(&handle, member, index, drift, bucket.clone(), peers.clone(), inboxes.clone()));
    }
    let violations = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let checker = spawn_checker(&handle, trace.clone(), &members, violations.clone(), stop.clone());

    // The nemesis.
    let mut injected = 0;
    let end = Instant::now() + RUN;
    while Instant::now() < end {
        sleep(Duration::from_millis(thread_rng().gen_range(pause_ms.clone()))).await;
        let Some(fault) = Fault::pick(faults) else { continue };
        // Half the faults go to whoever leads now (Jepsen's "the leader" target), the others
        // to any member.
        let leader = current_leaders(&members).first().and_then(|(name, _)| members.iter().position(|member| member.name == *name));
        let which = match leader {
            Some(leader) if thread_rng().gen_range(0..2) == 0 => leader,
            _ => thread_rng().gen_range(0..members.len()),
        };
        let span = Duration::from_millis(thread_rng().gen_range(200..2_500));
        injected += 1;
        let member = &members[which];
        let node = member.node.expect("started");
        fold(&format!("{fault:?} {} for {span:?}", member.name));
        match fault {
            Fault::MemberKill => {
                *member.running.lock().unwrap() = None;
                *member.inbox.lock().unwrap() = None;
                handle.kill(node);
                sleep(span).await;
                handle.restart(node);
            }
            Fault::MemberPause => {
                handle.pause(node);
                sleep(span).await;
                handle.resume(node);
            }
            Fault::MemberCutFromBucket => {
                member.cut.store(true, Ordering::SeqCst);
                sleep(span).await;
                member.cut.store(false, Ordering::SeqCst);
            }
            Fault::MemberUnheard => {
                member.heard.store(false, Ordering::SeqCst);
                sleep(span).await;
                member.heard.store(true, Ordering::SeqCst);
            }
            other => unreachable!("{other:?} is not a cluster fault"),
        }
    }
    // Heal, then give the cluster time to settle on one leader.
    fold("--- heal");
    bucket.set_faults(SimS3Faults::default());
    let settle = (TIMING.lease + TIMING.drift) * 6;
    sleep(settle).await;
    let last_lease = Instant::now();
    let mut leaders = std::collections::BTreeSet::new();
    let mut gaps = 0;
    while last_lease.elapsed() < TIMING.lease {
        match current_leaders(&members).as_slice() {
            [(name, _)] => {
                leaders.insert(name.clone());
            }
            _ => gaps += 1,
        }
        sleep(Duration::from_millis(1)).await;
    }
    if gaps > 0 || leaders.len() != 1 {
        violations.lock().unwrap().push(format!(
            "liveness: {settle:?} after healing, the last lease had {gaps} ms without exactly one leader (leaders: {leaders:?})"
        ));
    }
    stop.store(true, Ordering::SeqCst);
    let (terms, highest) = checker.await.unwrap_or_default();
    for member in &members {
        if let Some((_, standing)) = member.running.lock().unwrap().as_ref() {
            if let Some(reason) = standing.borrow().stopped.clone() {
                violations.lock().unwrap().push(format!("invariant: {}'s election stopped: {reason}", member.name));
            }
        }
    }
    for member in &members {
        handle.kill(member.node.expect("started"));
    }
    let violations = violations.lock().unwrap().clone();
    fold(&format!("terms {terms} highest {highest} violations {}", violations.len()));
    let trace_hash = trace.lock().unwrap().value();
    SeedReport {
        scenario,
        seed,
        trace_hash,
        ops: terms,
        acknowledged_writes: 0,
        faults: injected,
        final_revision: highest as i64,
        violations,
        wgl_inconclusive: 0,
    }
}

/// Each member's name and term if it leads now, by its own clock.
fn current_leaders(members: &[Member]) -> Vec<(String, u64)> {
    members
        .iter()
        .filter_map(|member| {
            let running = member.running.lock().unwrap();
            let (clock, standing) = running.as_ref()?;
            let term = standing.borrow().leads_at(clock.monotonic());
            term.map(|term| (member.name.clone(), term))
        })
        .collect()
}

/// Samples every member every virtual millisecond until `stop`: two leaders at once, or a
/// term older than one already seen leading, is a violation. Returns how many terms led
/// and the highest.
fn spawn_checker(
    handle: &Handle,
    trace: Arc<Mutex<TraceHash>>,
    members: &[Member],
    violations: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> madsim::task::JoinHandle<(usize, u64)> {
    let members: Vec<Member> = members
        .iter()
        .map(|member| Member {
            name: member.name.clone(),
            node: None,
            running: member.running.clone(),
            inbox: member.inbox.clone(),
            cut: member.cut.clone(),
            heard: member.heard.clone(),
        })
        .collect();
    let node = handle.create_node().name("checker").build();
    node.spawn(async move {
        let started = Instant::now();
        let (mut highest, mut terms) = (0u64, 0usize);
        let mut before = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let leaders = current_leaders(&members);
            let at = started.elapsed();
            if leaders != before {
                trace.lock().unwrap().fold(&format!("{} leaders {leaders:?}", at.as_nanos()));
                before = leaders.clone();
            }
            if leaders.len() > 1 {
                let mut found = violations.lock().unwrap();
                if found.len() < 5 {
                    found.push(format!("one leader per instant: at {at:?} several lead: {leaders:?}"));
                }
            }
            for (name, term) in &leaders {
                if *term < highest {
                    let mut found = violations.lock().unwrap();
                    if found.len() < 5 {
                        found.push(format!("terms only go up: {name} leads term {term} at {at:?} after term {highest} led"));
                    }
                } else if *term > highest {
                    highest = *term;
                    terms += 1;
                }
            }
            sleep(Duration::from_millis(1)).await;
        }
        (terms, highest)
    })
}

/// How often a holder sends heartbeats (its clock), and how they travel: 1-20 ms, one in
/// ten lost.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(50);
const HEARTBEAT_LOST_PERCENT: u32 = 10;

fn start_member(
    handle: &Handle,
    member: &Member,
    index: usize,
    drift_ppm: i64,
    bucket: Arc<SimS3>,
    peers: madsim::runtime::NodeHandle,
    inboxes: Vec<(String, Inbox)>,
) -> NodeId {
    let (name, running, cut, heard) = (member.name.clone(), member.running.clone(), member.cut.clone(), member.heard.clone());
    let inbox = member.inbox.clone();
    handle
        .create_node()
        .name(&name)
        .ip(std::net::IpAddr::from([10, 0, 1, index as u8 + 1]))
        .init(move || {
            let (name, running, cut, heard, bucket) = (name.clone(), running.clone(), cut.clone(), heard.clone(), bucket.clone());
            let (inbox, peers, inboxes) = (inbox.clone(), peers.clone(), inboxes.clone());
            async move {
                // Members come up one after another, in order (as an operator starts them).
                sleep(Duration::from_millis(50) * index as u32).await;
                // The machine's wall clock goes on across a restart of the process (only its
                // monotonic clock starts again).
                let wall_ms = madsim::time::TimeHandle::current().elapsed().as_millis() as i64;
                let clock = Arc::new(SimClock::new(drift_ppm, wall_ms));
                let (standing_tx, standing) = signal::channel(Standing::default());
                *running.lock().unwrap() = Some((clock.clone(), standing));
                let dyn_clock: Arc<dyn Clock> = clock.clone();
                let reachable: Arc<dyn ObjectStore> = Arc::new(CutStore::new(bucket, cut, Duration::from_millis(300)));
                // As in production: ambiguous answers settled by reading back.
                let policy = RetryPolicy { attempts: 3, first_backoff: Duration::from_millis(20), max_backoff: Duration::from_millis(100) };
                let store: Arc<dyn ObjectStore> = Arc::new(RetryingStore::new(reachable, dyn_clock.clone(), policy));
                let identity =
                    Identity { node: name.clone(), peer_url: format!("http://{name}:3380"), client_url: format!("http://{name}:3379") };
                let (beats, heartbeats) = signal::channel(None);
                *inbox.lock().unwrap() = Some((clock.clone(), beats));
                let standing_rx = standing_tx.subscribe();
                let member = MemberElection {
                    election: Election::leased(identity, TIMING),
                    store,
                    clock: dyn_clock.clone(),
                    heartbeats,
                    standing: standing_tx,
                };
                let heard_too = heard.clone();
                tokio::spawn(run_member(member, move || heard_too.load(Ordering::SeqCst), || true));
                // While it holds a term, it tells the others its lock's ETag (as its appends
                // will): unless no majority hears it.
                loop {
                    dyn_clock.sleep(HEARTBEAT_EVERY).await;
                    let standing = standing_rx.borrow().clone();
                    let (Some(term), Some(etag)) = (standing.term, standing.lock_etag) else { continue };
                    if !heard.load(Ordering::SeqCst) {
                        continue;
                    }
                    for (_, peer_inbox) in inboxes.iter().filter(|(peer, _)| *peer != name) {
                        if thread_rng().gen_range(0..100) < HEARTBEAT_LOST_PERCENT {
                            continue;
                        }
                        let latency = Duration::from_millis(thread_rng().gen_range(1..=20));
                        let (peer_inbox, etag, leader) = (peer_inbox.clone(), etag.clone(), name.clone());
                        peers.spawn(async move {
                            sleep(latency).await;
                            let target = peer_inbox.lock().unwrap().clone();
                            if let Some((clock, beats)) = target {
                                let beat = HeartbeatSeen {
                                    received: clock.monotonic(),
                                    term,
                                    lock_etag: etag,
                                    lease_ms: TIMING.lease.as_millis() as u64,
                                    leader,
                                };
                                beats.send_replace(Some(beat));
                            }
                        });
                    }
                }
            }
        })
        .build()
        .id()
}
