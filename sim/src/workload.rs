//! The workload: clients that put, read, compare-and-swap, delete, scan and append on a few
//! contended keys (through the embedded API or over SimNet), lease clients, watchers and a
//! compactor; each records what it asked and what it was told.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use madsim::time::{sleep, timeout, Instant};
use t4::mvcc::RevisionEvents;
use t4::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use t4::proto::etcdserverpb::request_op::Request;
use t4::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, TxnResponse,
};
use t4::watch::WatchOptions;
use t4::Node;

use crate::checker::{CompactionSeen, Log, WatchRecord};
use crate::history::{Op, OpKind, Outcome};
use crate::net::{self, CallError, Method};
use crate::scenario::DRIFT_PPM_MAX;
use crate::trace::TraceHash;
use crate::world::Process;

/// Keys the workload contends on (few, so histories collide).
pub(crate) const KEYS: usize = 6;
pub(crate) const CLIENTS: usize = 4;
/// Virtual time the workload runs per seed.
pub(crate) const WORKLOAD_DURATION: Duration = Duration::from_secs(3);
/// The lease scenario runs longer: leases live for seconds.
pub(crate) const LEASE_WORKLOAD_DURATION: Duration = Duration::from_secs(6);
/// An op with no answer after this is recorded as unknown.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// ... in a cluster, where a client gives up on a member sooner and tries another (as etcd's
/// clients do with several endpoints).
pub(crate) const CLUSTER_OP_TIMEOUT: Duration = Duration::from_secs(1);
/// Clients that grant leases, attach two keys and keep them alive (lease scenario).
pub(crate) const LEASE_CLIENTS: usize = 4;
/// Clients that watch the workload's keys (scenarios with watchers).
pub(crate) const WATCHERS: usize = 2;
/// TTLs those leases get, in seconds.
pub(crate) const LEASE_TTL_SECS: std::ops::RangeInclusive<i64> = 2..=4;

pub(crate) struct ClientContext {
    pub(crate) client: usize,
    /// The processes it may send to (one at random per op when there are several).
    pub(crate) processes: Vec<Process>,
    pub(crate) history: Arc<Mutex<Vec<Op>>>,
    pub(crate) trace: Arc<Mutex<TraceHash>>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) started: Instant,
    /// The processes are one cluster: ops go mostly to whoever leads, and every read is
    /// held to linearizability.
    pub(crate) replicated: bool,
}

impl ClientContext {
    /// The process to send the next op to. In a cluster, even-numbered clients are given
    /// one member's endpoint alone (as an etcd client configured with one endpoint) and
    /// keep to it whatever it answers: a deposed leader that still believes it leads, or a
    /// stopped one that runs again, has clients asking it all along. The others stay with
    /// the member they used last, as an etcd client keeps its connection, until that member
    /// refused or failed an op (or one time in eight); then, three times in four, they go
    /// to the one that leads now (a client that followed the "not leader" answers), else
    /// to any.
    fn pick(&self, last: Option<usize>) -> usize {
        if self.processes.len() == 1 {
            return 0;
        }
        if self.replicated && self.client.is_multiple_of(2) {
            return (self.client / 2) % self.processes.len();
        }
        if let Some(last) = last.filter(|_| self.replicated && thread_rng().gen_range(0..8) > 0) {
            return last;
        }
        let any = thread_rng().gen_range(0..self.processes.len());
        if !self.replicated || thread_rng().gen_range(0..4) == 0 {
            return any;
        }
        // The newest term's leader (a deposed one may not know yet).
        let leading = self
            .processes
            .iter()
            .enumerate()
            .filter_map(|(index, process)| match process.current()?.0.cluster_role()? {
                t4::node::ClusterRole::Leader { term } => Some((term, index)),
                _ => None,
            })
            .max();
        leading.map_or(any, |(_, index)| index)
    }

    /// `over_net`: through SimNet to the node's EtcdCore, else through the embedded API.
    pub(crate) async fn run(self, over_net: bool) {
        let mut remote = if over_net { Some(net::Client::new(NET_TIMEOUT).await.expect("bind a client endpoint")) } else { None };
        let mut sequence = 0u64;
        let mut last_seen = [0i64; KEYS];
        let mut stay_with = None;
        while !self.stop.load(Ordering::SeqCst) {
            sleep(Duration::from_micros(thread_rng().gen_range(0..2000))).await;
            let which = self.pick(stay_with);
            let Some((node, generation)) = self.processes[which].current() else {
                stay_with = None;
                continue;
            };
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
            stay_with = match op.outcome {
                Outcome::Refused(_) | Outcome::Unknown(_) => None,
                _ => Some(which),
            };
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
            self.trace
                .lock()
                .unwrap()
                .fold(&format!("{} {}@{which} from {} {:?} {:?}", op.complete_ns, op.client, op.invoke_ns, op.kind, op.outcome));
            self.history.lock().unwrap().push(op);
        }
    }

    async fn perform(&self, process: &Process, mut transport: Transport<'_>, generation: u64, kind: OpKind) -> Op {
        let invoke_ns = self.started.elapsed().as_nanos();
        let deadline = if self.replicated { CLUSTER_OP_TIMEOUT } else { OP_TIMEOUT };
        // A stopped process takes the call when it runs again (over SimNet its tasks wait
        // by themselves; the embedded API would otherwise run in the client's task).
        let mut resumed = process.paused.subscribe();
        let call = async {
            let _ = resumed.wait_for(|paused| !*paused).await;
            execute(&mut transport, &kind).await
        };
        let outcome = match timeout(deadline, call).await {
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
        // With several processes on one prefix, one that does not know yet that it was
        // fenced still serves what it has (docs/durability.md): its answers that changed
        // nothing may be stale. A cluster's reads are linearizable, and checked so.
        Op { client: self.client, kind, invoke_ns, complete_ns, outcome, serializable: self.processes.len() > 1 && !self.replicated }
    }
}

/// How long a client waits for an answer over SimNet.
const NET_TIMEOUT: Duration = Duration::from_secs(1);

/// How a client reaches a node: the embedded API, or SimNet to its EtcdCore. Either way a
/// failure comes back as the outcome the client must record.
pub(crate) enum Transport<'a> {
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
pub(crate) struct LeaseClient {
    /// What every client shares (its id, the node slot, the history, the trace).
    pub(crate) context: ClientContext,
    pub(crate) violations: Arc<Mutex<Vec<String>>>,
    pub(crate) pairs: Arc<Mutex<Vec<(String, String)>>>,
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

    pub(crate) async fn run(self) {
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
            let Ok(renewed) = node.lease_keep_alive(id).await else { continue };
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
pub(crate) struct Watcher {
    pub(crate) context: ClientContext,
    pub(crate) records: Arc<Mutex<Vec<WatchRecord>>>,
}

impl Watcher {
    pub(crate) async fn run(self) {
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
pub(crate) struct Compactor {
    pub(crate) context: ClientContext,
    pub(crate) log_prefix: Arc<Mutex<Vec<RevisionEvents>>>,
    pub(crate) compactions: Arc<Mutex<BTreeSet<i64>>>,
}

impl Compactor {
    pub(crate) async fn run(self) {
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
