//! Differential test: the same seeded sequence of Range, Put, DeleteRange, Txn, Compact and
//! Lease requests (grant, revoke, keepalive, TimeToLive, Leases; puts and compares on
//! leases) to a fresh real etcd 3.4 and a fresh t4; every response compared field by field
//! (member and cluster ids, raft_term, server-chosen lease ids and seconds left aside), then
//! the full watch history. `T4_DEBUG_SEED=N` prints every request of seed N with both answers.

use futures::StreamExt;
use t4::proto::authpb;
use t4::proto::etcdserverpb::auth_client::AuthClient;
use t4::proto::etcdserverpb::compare::{CompareTarget, TargetUnion};
use t4::proto::etcdserverpb::kv_client::KvClient;
use t4::proto::etcdserverpb::lease_client::LeaseClient;
use t4::proto::etcdserverpb::request_op::Request;
use t4::proto::etcdserverpb::response_op::Response;
use t4::proto::etcdserverpb::watch_client::WatchClient;
use t4::proto::etcdserverpb::watch_request::RequestUnion;
use t4::proto::etcdserverpb::*;
use tonic::transport::Channel;

use crate::etcd_process::EtcdProcess;
use crate::server::TestServer;

/// Seeds run by default (`T4_DIFFERENTIAL_SEEDS=N` runs N); each sends `OPS_PER_SEED` requests.
const SEEDS_DEFAULT: u64 = 8;
const OPS_PER_SEED: usize = 250;

struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone)]
enum Op {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    LeaseTimeToLive(LeaseTimeToLiveRequest),
    LeaseLeases,
    LeaseKeepAlive(LeaseKeepAliveRequest),
}

/// Lease ids the requests choose themselves; grants with id 0 get one the server picks.
const LEASE_IDS: [i64; 4] = [1001, 1002, 1003, 1004];

fn lease_id(random: &mut Random) -> i64 {
    LEASE_IDS[random.below(LEASE_IDS.len() as u64) as usize]
}

fn lease_op(random: &mut Random) -> Op {
    match random.below(100) {
        0..=34 => {
            let id = if random.chance(15) { 0 } else { lease_id(random) };
            // Long TTLs: nothing expires during a run (expiry is timed, not compared here).
            let ttl = match random.below(20) {
                0 => 9_000_000_001,
                1..=10 => 3600,
                _ => 7200,
            };
            Op::LeaseGrant(LeaseGrantRequest { ttl, id })
        }
        35..=59 => Op::LeaseRevoke(LeaseRevokeRequest { id: lease_id(random) }),
        60..=79 => Op::LeaseTimeToLive(LeaseTimeToLiveRequest { id: lease_id(random), keys: random.chance(50) }),
        80..=89 => Op::LeaseLeases,
        _ => Op::LeaseKeepAlive(LeaseKeepAliveRequest { id: lease_id(random) }),
    }
}

fn key(random: &mut Random) -> Vec<u8> {
    format!("/k/{}", random.below(8)).into_bytes()
}

/// `(key, range_end)`: a single key, a prefix, a range, from-key, everything, or inverted.
fn span(random: &mut Random) -> (Vec<u8>, Vec<u8>) {
    match random.below(6) {
        0 | 1 => (key(random), Vec::new()),
        2 => (b"/k/".to_vec(), b"/k0".to_vec()),
        3 => {
            let (a, b) = (key(random), key(random));
            if a <= b {
                (a, b)
            } else {
                (b, a)
            }
        }
        4 => (key(random), vec![0]),
        _ => (b"/k/7".to_vec(), b"/k/2".to_vec()),
    }
}

fn range(random: &mut Random, revision: i64) -> RangeRequest {
    let (key, range_end) = span(random);
    RangeRequest {
        key,
        range_end,
        limit: if random.chance(30) { random.below(4) as i64 } else { 0 },
        revision: if random.chance(30) { random.below(revision as u64 + 3) as i64 } else { 0 },
        sort_order: random.below(3) as i32,
        sort_target: random.below(5) as i32,
        keys_only: random.chance(15),
        count_only: random.chance(10),
        min_mod_revision: if random.chance(10) { random.below(revision as u64) as i64 } else { 0 },
        max_create_revision: if random.chance(10) { random.below(revision as u64) as i64 } else { 0 },
        ..Default::default()
    }
}

fn put(random: &mut Random, step: usize) -> PutRequest {
    PutRequest {
        key: key(random),
        value: format!("v{step}-{}", random.below(3)).into_bytes(),
        prev_kv: random.chance(50),
        lease: if random.chance(25) { lease_id(random) } else { 0 },
        ..Default::default()
    }
}

fn delete(random: &mut Random) -> DeleteRangeRequest {
    let (key, range_end) = span(random);
    DeleteRangeRequest { key, range_end, prev_kv: random.chance(50) }
}

fn compare(random: &mut Random, revision: i64) -> Compare {
    let target = random.below(5) as i32;
    let number = random.below(revision as u64 + 2) as i64;
    let union = match CompareTarget::try_from(target).unwrap() {
        CompareTarget::Version => TargetUnion::Version(random.below(4) as i64),
        CompareTarget::Create => TargetUnion::CreateRevision(number),
        CompareTarget::Mod => TargetUnion::ModRevision(number),
        CompareTarget::Value => TargetUnion::Value(format!("v{}-{}", random.below(10), random.below(3)).into_bytes()),
        CompareTarget::Lease => TargetUnion::Lease(if random.chance(30) { 0 } else { lease_id(random) }),
    };
    let (key, range_end) = if random.chance(20) { span(random) } else { (key(random), Vec::new()) };
    Compare { result: random.below(4) as i32, target, key, target_union: Some(union), range_end }
}

fn txn_ops(random: &mut Random, step: usize, revision: i64, depth: u32) -> Vec<RequestOp> {
    let mut ops: Vec<RequestOp> = Vec::new();
    for _ in 0..random.below(4) {
        let request = match random.below(if depth > 0 { 4 } else { 3 }) {
            0 => Request::RequestRange(range(random, revision)),
            1 => Request::RequestPut(put(random, step)),
            2 => Request::RequestDeleteRange(delete(random)),
            _ => Request::RequestTxn(txn(random, step, revision, depth - 1)),
        };
        ops.push(RequestOp { request: Some(request) });
    }
    ops
}

fn txn(random: &mut Random, step: usize, revision: i64, depth: u32) -> TxnRequest {
    let compare = (0..random.below(3)).map(|_| compare(random, revision)).collect();
    TxnRequest { compare, success: txn_ops(random, step, revision, depth), failure: txn_ops(random, step, revision, depth) }
}

fn op(random: &mut Random, step: usize, revision: i64) -> Op {
    match random.below(100) {
        0..=26 => Op::Put(put(random, step)),
        27..=50 => Op::Range(range(random, revision)),
        51..=59 => Op::Delete(delete(random)),
        60..=85 => Op::Txn(txn(random, step, revision, 1)),
        86..=94 => lease_op(random),
        // physical: etcd answers only once history is gone, so its watch history is settled.
        _ => Op::Compact(CompactionRequest { revision: random.below(revision as u64 + 2) as i64, physical: true }),
    }
}

/// Blanks what legitimately differs between two servers: identity and raft term.
fn normalize(header: &mut Option<ResponseHeader>) {
    if let Some(header) = header {
        header.cluster_id = 0;
        header.member_id = 0;
        header.raft_term = 0;
    }
}

fn normalize_txn(response: &mut TxnResponse) {
    normalize(&mut response.header);
    for op in &mut response.responses {
        match &mut op.response {
            Some(Response::ResponseRange(inner)) => normalize(&mut inner.header),
            Some(Response::ResponsePut(inner)) => normalize(&mut inner.header),
            Some(Response::ResponseDeleteRange(inner)) => normalize(&mut inner.header),
            Some(Response::ResponseTxn(inner)) => normalize_txn(inner),
            None => {}
        }
    }
}

type Answer = Result<String, (tonic::Code, String)>;

/// The response with identity blanked, as text, or the error's code and message.
fn answer<T: std::fmt::Debug>(outcome: Result<tonic::Response<T>, tonic::Status>, blank: impl FnOnce(&mut T)) -> Answer {
    match outcome {
        Ok(response) => {
            let mut response = response.into_inner();
            blank(&mut response);
            Ok(format!("{response:?}"))
        }
        Err(status) => Err((status.code(), status.message().to_string())),
    }
}

type Token = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;

struct Clients {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    /// Sent as `token` metadata with every request (a user's, from Authenticate).
    token: Option<Token>,
}

impl Clients {
    async fn connect(url: String) -> Self {
        Self { kv: KvClient::connect(url.clone()).await.unwrap(), lease: LeaseClient::connect(url).await.unwrap(), token: None }
    }
}

/// `message` as a request carrying `token`, if any.
fn with_token<T>(token: &Option<Token>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("token", token.clone());
    }
    request
}

/// A server-chosen lease id is blanked (the two servers pick differently).
fn normalize_lease_id(id: &mut i64) {
    if !LEASE_IDS.contains(id) {
        *id = 0;
    }
}

async fn send(clients: &mut Clients, op: &Op) -> Answer {
    let token = clients.token.clone();
    let client = &mut clients.kv;
    let lease = &mut clients.lease;
    match op.clone() {
        Op::LeaseGrant(request) => answer(lease.lease_grant(request).await, |response| {
            normalize(&mut response.header);
            normalize_lease_id(&mut response.id);
        }),
        Op::LeaseRevoke(request) => answer(lease.lease_revoke(request).await, |response| normalize(&mut response.header)),
        Op::LeaseTimeToLive(request) => answer(lease.lease_time_to_live(request).await, |response| {
            normalize(&mut response.header);
            // Seconds left depend on when each server was asked; etcd lists keys in no
            // particular order (t4 in key order).
            if response.ttl > 0 {
                response.ttl = 1;
            }
            response.keys.sort();
        }),
        Op::LeaseLeases => answer(lease.lease_leases(LeaseLeasesRequest {}).await, |response| {
            normalize(&mut response.header);
            response.leases.iter_mut().for_each(|lease| normalize_lease_id(&mut lease.id));
            response.leases.sort_by_key(|lease| lease.id);
        }),
        Op::LeaseKeepAlive(request) => {
            let outcome = lease.lease_keep_alive(futures::stream::iter([request])).await;
            match outcome {
                Ok(responses) => {
                    let first = responses.into_inner().next().await.expect("one answer per keepalive");
                    answer(first.map(tonic::Response::new), |response| normalize(&mut response.header))
                }
                Err(status) => Err((status.code(), status.message().to_string())),
            }
        }
        Op::Range(request) => answer(client.range(with_token(&token, request)).await, |response| normalize(&mut response.header)),
        Op::Put(request) => answer(client.put(with_token(&token, request)).await, |response| normalize(&mut response.header)),
        Op::Delete(request) => answer(client.delete_range(with_token(&token, request)).await, |response| normalize(&mut response.header)),
        Op::Txn(request) => answer(client.txn(with_token(&token, request)).await, normalize_txn),
        Op::Compact(request) => answer(client.compact(request).await, |response| normalize(&mut response.header)),
    }
}

async fn history(url: String, from: i64, through: i64) -> Vec<String> {
    let mut client = WatchClient::connect(url.clone()).await.unwrap();
    let create = WatchCreateRequest { key: vec![0], range_end: vec![0], start_revision: from, prev_kv: true, ..Default::default() };
    let requests = futures::stream::iter([WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }])
        .chain(futures::stream::pending());
    let mut responses = client.watch(requests).await.unwrap().into_inner();
    let mut events = Vec::new();
    let mut last = from - 1;
    while last < through {
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), responses.next())
            .await
            .unwrap_or_else(|_| panic!("{url}: no event after revision {last} of {through}; {} events so far", events.len()))
            .unwrap()
            .unwrap();
        assert!(!response.canceled, "history watch cancelled: {response:?}");
        for event in response.events {
            last = event.kv.as_ref().unwrap().mod_revision;
            events.push(format!("{event:?}"));
        }
    }
    events
}

async fn current_revision(clients: &mut Clients) -> i64 {
    let status = clients.kv.range(RangeRequest { key: vec![0], count_only: true, ..Default::default() }).await.unwrap();
    status.into_inner().header.unwrap().revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_requests_same_answers_as_etcd() {
    let mut differences = Vec::new();
    let seeds = std::env::var("T4_DIFFERENTIAL_SEEDS").ok().and_then(|count| count.parse().ok()).unwrap_or(SEEDS_DEFAULT);
    for seed in 1..=seeds {
        differences.extend(run_seed(seed).await);
    }
    assert!(differences.is_empty(), "{} differences from etcd:\n{}", differences.len(), differences.join("\n"));
}

async fn run_seed(seed: u64) -> Vec<String> {
    let etcd = EtcdProcess::start().await;
    let t4 = TestServer::start().await;
    let mut etcd_client = Clients::connect(etcd.url()).await;
    let mut t4_client = Clients::connect(t4.url()).await;
    let mut random = Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut differences = Vec::new();
    let mut revision = 1;
    let mut compacted = 1;
    for step in 0..OPS_PER_SEED {
        let op = op(&mut random, step, revision);
        let expected = send(&mut etcd_client, &op).await;
        let actual = send(&mut t4_client, &op).await;
        if std::env::var("T4_DEBUG_SEED").ok() == Some(seed.to_string()) {
            let t4_revision = current_revision(&mut t4_client).await;
            eprintln!("DEBUG rev {revision} t4 {t4_revision} step {step}: {op:?} => {expected:?} / {actual:?}");
        }
        if expected != actual {
            differences.push(format!("seed {seed} step {step}: {op:?}\n  etcd: {expected:?}\n  t4:   {actual:?}"));
        }
        if let (Op::Compact(compact), Ok(_)) = (&op, &expected) {
            compacted = compact.revision.max(1);
        }
        revision = current_revision(&mut etcd_client).await;
    }
    tracing::info!("--- the watch history from the compaction point matches too");
    let t4_revision = current_revision(&mut t4_client).await;
    let (expected, actual) = (history(etcd.url(), compacted, revision).await, history(t4.url(), compacted, t4_revision).await);
    if expected != actual {
        let first = expected.iter().zip(&actual).position(|(a, b)| a != b).unwrap_or(expected.len().min(actual.len()));
        differences.push(format!(
            "seed {seed}: watch history differs at event {first}: etcd {:?} / t4 {:?}",
            expected.get(first),
            actual.get(first)
        ));
    }
    differences
}

/// A grant over the keys the requests use: a key, a prefix, a range or from a key (never an
/// empty or inverted range).
fn grant(random: &mut Random) -> authpb::Permission {
    loop {
        let (key, range_end) = span(random);
        if range_end.is_empty() || range_end == [0] || range_end > key {
            return authpb::Permission { perm_type: random.below(3) as i32, key, range_end };
        }
    }
}

/// What a user with limited grants sends: Range, Put, DeleteRange, and Txn without nested
/// txns and without prev_kv on its puts (etcd 3.4 checks neither: t4 is stricter there,
/// tested in `crates/t4-cli/tests/it/auth.rs`). Ranges are never empty or inverted: etcd 3.4 allows or
/// refuses those depending on the shape of its interval tree of grants (t4 asks for access
/// to the start key; such a range names no key).
fn permission_op(random: &mut Random, step: usize, revision: i64) -> Op {
    let mut op = match random.below(100) {
        0..=29 => Op::Put(put(random, step)),
        30..=59 => Op::Range(range(random, revision)),
        60..=74 => Op::Delete(delete(random)),
        _ => Op::Txn(txn(random, step, revision, 0)),
    };
    match &mut op {
        Op::Range(range) => proper(&range.key, &mut range.range_end),
        Op::Delete(delete) => proper(&delete.key, &mut delete.range_end),
        Op::Txn(txn) => {
            txn.compare.iter_mut().for_each(|compare| proper(&compare.key, &mut compare.range_end));
            for op in txn.success.iter_mut().chain(txn.failure.iter_mut()) {
                match &mut op.request {
                    Some(Request::RequestPut(put)) => put.prev_kv = false,
                    Some(Request::RequestRange(range)) => proper(&range.key, &mut range.range_end),
                    Some(Request::RequestDeleteRange(delete)) => proper(&delete.key, &mut delete.range_end),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    op
}

/// An empty or inverted range becomes its start key alone.
fn proper(key: &[u8], range_end: &mut Vec<u8>) {
    if !range_end.is_empty() && range_end.as_slice() != [0] && range_end.as_slice() <= key {
        range_end.clear();
    }
}

/// Sets up root and user `u` holding `grants`, enables auth; returns u's and root's tokens.
async fn limited_user(url: String, grants: &[authpb::Permission]) -> (Token, Token) {
    let mut auth = AuthClient::connect(url).await.unwrap();
    let user = |name: &str| AuthUserAddRequest { name: name.into(), password: format!("{name}pw"), ..Default::default() };
    auth.user_add(user("root")).await.unwrap();
    auth.user_grant_role(AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() }).await.unwrap();
    auth.role_add(AuthRoleAddRequest { name: "r".into() }).await.unwrap();
    for grant in grants {
        auth.role_grant_permission(AuthRoleGrantPermissionRequest { name: "r".into(), perm: Some(grant.clone()) }).await.unwrap();
    }
    auth.user_add(user("u")).await.unwrap();
    auth.user_grant_role(AuthUserGrantRoleRequest { user: "u".into(), role: "r".into() }).await.unwrap();
    auth.auth_enable(AuthEnableRequest {}).await.unwrap();
    let token = |name: &str| {
        let request = AuthenticateRequest { name: name.into(), password: format!("{name}pw") };
        let mut auth = auth.clone();
        async move { auth.authenticate(request).await.unwrap().into_inner().token.parse::<Token>().unwrap() }
    };
    (token("u").await, token("root").await)
}

/// The same requests from a user with random grants: every permission answer (allowed, or
/// etcd's error) the same as etcd's, and the same history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_permission_answers_as_etcd() {
    let mut differences = Vec::new();
    let seeds = std::env::var("T4_DIFFERENTIAL_SEEDS").ok().and_then(|count| count.parse().ok()).unwrap_or(SEEDS_DEFAULT);
    for seed in 1..=seeds {
        differences.extend(run_permission_seed(seed).await);
    }
    assert!(differences.is_empty(), "{} differences from etcd:\n{}", differences.len(), differences.join("\n"));
}

async fn run_permission_seed(seed: u64) -> Vec<String> {
    let etcd = EtcdProcess::start().await;
    let t4 = TestServer::start().await;
    let mut random = Random(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
    let grants: Vec<authpb::Permission> = (0..1 + random.below(4)).map(|_| grant(&mut random)).collect();
    let (etcd_user, etcd_root) = limited_user(etcd.url(), &grants).await;
    let (t4_user, t4_root) = limited_user(t4.url(), &grants).await;
    let mut etcd_client = Clients { token: Some(etcd_user), ..Clients::connect(etcd.url()).await };
    let mut t4_client = Clients { token: Some(t4_user), ..Clients::connect(t4.url()).await };
    let mut differences = Vec::new();
    let (mut allowed, mut denied) = (0, 0);
    for step in 0..OPS_PER_SEED {
        // Revisions in requests up to 22: some ask for a future one (the user's reads cannot
        // tell the current revision without grants over everything).
        let op = permission_op(&mut random, step, 20);
        let expected = send(&mut etcd_client, &op).await;
        let actual = send(&mut t4_client, &op).await;
        if std::env::var("T4_DEBUG_SEED").ok() == Some(seed.to_string()) {
            eprintln!("DEBUG grants {grants:?} step {step}: {op:?} => {expected:?} / {actual:?}");
        }
        match &expected {
            Err((tonic::Code::PermissionDenied, _)) => denied += 1,
            _ => allowed += 1,
        }
        if expected != actual {
            differences.push(format!("seed {seed} step {step}: grants {grants:?}\n  {op:?}\n  etcd: {expected:?}\n  t4:   {actual:?}"));
            // The stores part ways here: what follows would differ for that reason alone.
            return differences;
        }
    }
    tracing::info!(seed, allowed, denied, "--- permission answers compared; then the history, with auth off");
    for (url, root) in [(etcd.url(), etcd_root), (t4.url(), t4_root)] {
        AuthClient::connect(url).await.unwrap().auth_disable(with_token(&Some(root), AuthDisableRequest {})).await.unwrap();
    }
    let mut etcd_client = Clients::connect(etcd.url()).await;
    let mut t4_client = Clients::connect(t4.url()).await;
    let (etcd_revision, t4_revision) = (current_revision(&mut etcd_client).await, current_revision(&mut t4_client).await);
    if etcd_revision != t4_revision {
        differences.push(format!("seed {seed}: revision {etcd_revision} in etcd, {t4_revision} in t4"));
    } else if etcd_revision > 1 && history(etcd.url(), 1, etcd_revision).await != history(t4.url(), 1, t4_revision).await {
        differences.push(format!("seed {seed}: the watch histories differ"));
    }
    differences
}
