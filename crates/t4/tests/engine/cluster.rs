//! Three members in one process, on one in-memory bucket, calling each other through an
//! in-process network whose links the tests cut: one leads, the others follow and apply
//! what it commits; writes, linearizable reads and keepalives on a follower go through the
//! leader (forwarded, read index), a retried forward is applied once; when the
//! leader goes, another takes over with every acknowledged write, and the old one comes
//! back as a follower.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use t4::cluster::WaitMode;
use t4::config::ClusterConfig;
use t4::durability::BucketDurability;
use t4::election::LeaseTiming;
use t4::env::{Env, MemObjectStore, ObjectStore, PeerError, PeerHandler, PeerNet, RealClock, SimDisk};
use t4::node::ClusterRole;
use t4::{Config, Error, Node};
use t4_proto::etcdserverpb::RangeRequest;

const TIMING: LeaseTiming = LeaseTiming { lease: Duration::from_millis(600), drift: Duration::from_millis(60) };

/// Calls reach the node serving a URL unless its links are cut.
#[derive(Default)]
struct Network {
    nodes: Mutex<BTreeMap<String, Arc<dyn PeerHandler>>>,
    cut: Mutex<BTreeMap<String, Arc<AtomicBool>>>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Network")
    }
}

/// One node's end of the network: its calls fail while either end is cut.
#[derive(Debug)]
struct Link {
    network: Arc<Network>,
    me: String,
}

#[async_trait::async_trait]
impl PeerNet for Link {
    async fn call(&self, peer: &str, method: &str, request: Bytes) -> Result<Bytes, PeerError> {
        let cut = |name: &str| self.network.cut.lock().unwrap().get(name).is_some_and(|cut| cut.load(Ordering::SeqCst));
        let handler = self.network.nodes.lock().unwrap().get(peer).cloned();
        match handler {
            Some(handler) if !cut(&self.me) && !cut(peer) => handler.handle(method, request).await.map_err(PeerError::Refused),
            _ => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Err(PeerError::Unreachable(peer.into()))
            }
        }
    }
}

struct Cluster {
    network: Arc<Network>,
    bucket: Arc<dyn ObjectStore>,
    disks: BTreeMap<String, SimDisk>,
    nodes: BTreeMap<String, Node>,
    timing: LeaseTiming,
}

impl Cluster {
    fn new(names: &[&str]) -> Self {
        let disks = names.iter().map(|name| (name.to_string(), SimDisk::new())).collect();
        Self { network: Arc::default(), bucket: Arc::new(MemObjectStore::new()), disks, nodes: BTreeMap::new(), timing: TIMING }
    }

    async fn start(&mut self, name: &str) {
        self.try_start(name).await.expect("open member");
    }

    async fn try_start(&mut self, name: &str) -> Result<(), Error> {
        let peers: Arc<dyn PeerNet> = Arc::new(Link { network: self.network.clone(), me: name.to_string() });
        let cluster = ClusterConfig {
            node_id: name.to_string(),
            peer_url: name.to_string(),
            client_url: format!("http://{name}:2379"),
            peers,
            wait_mode: WaitMode::Quorum,
            timing: self.timing,
            reads: Default::default(),
        };
        let config =
            Config { bucket: Some(BucketDurability::new(self.bucket.clone(), name)), cluster: Some(cluster), ..Config::new("/unused") };
        let env = Env { clock: Arc::new(RealClock::new()), disk: Arc::new(self.disks[name].clone()) };
        let node = Node::open_with_env(config, env).await?;
        self.network.nodes.lock().unwrap().insert(name.to_string(), node.peer_handler().expect("a member"));
        self.network.cut.lock().unwrap().entry(name.to_string()).or_default().store(false, Ordering::SeqCst);
        self.nodes.insert(name.to_string(), node);
        Ok(())
    }

    async fn stop(&mut self, name: &str) {
        self.network.nodes.lock().unwrap().remove(name);
        let node = self.nodes.remove(name).expect("running");
        node.close().await.expect("close");
    }

    fn cut(&self, name: &str, cut: bool) {
        self.network.cut.lock().unwrap().entry(name.to_string()).or_default().store(cut, Ordering::SeqCst);
    }

    /// Waits until exactly one running node leads; returns its name.
    async fn leader(&self) -> String {
        for _ in 0..400 {
            let leaders: Vec<&String> = self
                .nodes
                .iter()
                .filter(|(_, node)| matches!(node.cluster_role(), Some(ClusterRole::Leader { .. })))
                .map(|(name, _)| name)
                .collect();
            if let [leader] = leaders[..] {
                return leader.clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no single leader: {:?}", self.nodes.iter().map(|(name, node)| (name, node.cluster_role())).collect::<Vec<_>>());
    }

    /// Puts through the leader, retrying while leadership moves.
    async fn put(&self, key: &str, value: &str) -> i64 {
        for _ in 0..200 {
            let leader = self.leader().await;
            match self.nodes[&leader].put(key, value).await {
                Ok(revision) => return revision,
                Err(Error::LeaderChanged | Error::NoLeader | Error::NotLeader { .. }) => {
                    tokio::time::sleep(Duration::from_millis(25)).await
                }
                Err(error) => panic!("put {key}: {error}"),
            }
        }
        panic!("put {key}: never acknowledged");
    }

    /// Puts until the members record counts `voters` voters (learners are promoted once
    /// they caught up, which takes commits), then checks it does.
    async fn until_voters(&self, voters: usize, key: &str, value: &str) {
        for _ in 0..400 {
            if self.voters().await == voters {
                return;
            }
            self.put(key, value).await;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(self.voters().await, voters);
    }

    async fn voters(&self) -> usize {
        let (members, _) = t4::cluster::members::read_members(self.bucket.as_ref()).await.unwrap().expect("members");
        members.voter_count()
    }
}

/// A serializable read of `key` on `node`.
async fn local_get(node: &Node, key: &str) -> Option<(Vec<u8>, i64)> {
    let request = RangeRequest { key: key.as_bytes().to_vec(), serializable: true, ..Default::default() };
    let kv = node.range(request).await.unwrap().kvs.into_iter().next()?;
    Some((kv.value, kv.mod_revision))
}

async fn eventually_on(node: &Node, key: &str, expected: Option<(&str, i64)>) {
    let expected = expected.map(|(value, revision)| (value.as_bytes().to_vec(), revision));
    for _ in 0..400 {
        if local_get(node, key).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} on a member: {:?}, expected {expected:?}", local_get(node, key).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_serve_followers_through_the_leader_and_survive_the_leader() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    cluster.start("a").await;
    assert_eq!(cluster.leader().await, "a", "the first member forms the cluster and leads it");
    cluster.start("b").await;
    cluster.start("c").await;
    // learner-first: the leader promotes each once it holds everything committed.
    for _ in 0..400 {
        if cluster.voters().await == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(cluster.voters().await, 3);

    let revision = cluster.put("k", "v1").await;
    for name in ["a", "b", "c"] {
        eventually_on(&cluster.nodes[name], "k", Some(("v1", revision))).await;
    }
    // A write to a follower is forwarded: the leader applies it, and a linearizable read on
    // the other follower, sent once it was acknowledged, sees it (read index).
    let follower = &cluster.nodes["b"];
    let forwarded = follower.put("k", "via-b").await.expect("forwarded to the leader");
    assert!(forwarded > revision);
    let linearizable = RangeRequest { key: b"k".to_vec(), ..Default::default() };
    for name in ["c", "b", "a"] {
        let read = cluster.nodes[name].range(linearizable.clone()).await.expect("a linearizable read on any member");
        let kv = &read.kvs[0];
        assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"via-b"[..], forwarded), "on {name}");
    }
    // Leases through a follower: granted by the leader, kept alive through the follower.
    let lease = cluster.nodes["c"].lease_grant(t4_proto::etcdserverpb::LeaseGrantRequest { ttl: 30, id: 0 }).await.expect("grant").id;
    assert_eq!(cluster.nodes["c"].lease_keep_alive(lease).await.expect("keepalive"), 30);
    assert_eq!(cluster.nodes["b"].lease_keep_alive(lease + 1).await.expect("keepalive"), 0, "no such lease");

    // forward-once: the same forward delivered twice to the leader is applied once, and
    // both deliveries get the first answer.
    let (method, bytes) = t4::cluster::forward::encode_request(&t4::mvcc::WriteRequest::Put(t4_proto::etcdserverpb::PutRequest {
        key: b"once".to_vec(),
        value: b"1".to_vec(),
        ..Default::default()
    }));
    let cluster_id = cluster.nodes["a"].cluster_view().expect("member").members.cluster_id;
    let forward = t4_proto::peer::ForwardRequest {
        method: method.into(),
        request: bytes,
        request_id: "test/1/1".into(),
        cluster_id: t4::cluster::service::cluster_id_text(cluster_id),
        ..Default::default()
    };
    let leader = cluster.nodes["a"].peer_handler().expect("member");
    let deliver = || async {
        let answer = leader.handle(t4::env::peer_methods::FORWARD, prost::Message::encode_to_vec(&forward).into()).await.expect("answered");
        <t4_proto::peer::ForwardResponse as prost::Message>::decode(answer).expect("decodes")
    };
    let (first, again) = (deliver().await, deliver().await);
    assert_eq!(first.error_code, 0, "{}", first.error_message);
    assert_eq!(first, again, "a retried forward gets the first answer");
    let once = cluster.nodes["a"].get("once").await.unwrap().expect("applied");
    assert_eq!(once.version, 1, "applied once");
    // The same id with another request (a follower that repeated an earlier open's ids) is
    // a new request: applied, and answered with its own outcome.
    let (method, bytes) = t4::cluster::forward::encode_request(&t4::mvcc::WriteRequest::Put(t4_proto::etcdserverpb::PutRequest {
        key: b"once".to_vec(),
        value: b"2".to_vec(),
        ..Default::default()
    }));
    let reused = t4_proto::peer::ForwardRequest { method: method.into(), request: bytes, ..forward.clone() };
    let answer = leader.handle(t4::env::peer_methods::FORWARD, prost::Message::encode_to_vec(&reused).into()).await.expect("answered");
    let answer = <t4_proto::peer::ForwardResponse as prost::Message>::decode(answer).expect("decodes");
    assert_eq!(answer.error_code, 0, "{}", answer.error_message);
    assert_ne!(answer, first, "another request under a known id is not told the first one's answer");
    let twice = cluster.nodes["a"].get("once").await.unwrap().expect("applied");
    assert_eq!((twice.version, twice.value.as_slice()), (2, &b"2"[..]));

    // One follower cut off: the other and the leader still commit.
    cluster.cut("c", true);
    let second = cluster.put("k", "v2").await;
    eventually_on(&cluster.nodes["b"], "k", Some(("v2", second))).await;
    cluster.cut("c", false);
    eventually_on(&cluster.nodes["c"], "k", Some(("v2", second))).await;

    // The leader goes: another takes over with every acknowledged write.
    cluster.stop("a").await;
    let next = cluster.leader().await;
    assert_ne!(next, "a");
    eventually_on(&cluster.nodes[&next], "k", Some(("v2", second))).await;
    let third = cluster.put("k", "v3").await;
    assert!(third > second);
    // The old leader comes back as a follower and catches up.
    cluster.start("a").await;
    eventually_on(&cluster.nodes["a"], "k", Some(("v3", third))).await;
    assert_eq!(cluster.leader().await, next, "a returning member does not take over a live leader");
    for name in ["a", "b", "c"] {
        cluster.stop(name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_followers_acknowledges_nothing_and_loses_nothing_acknowledged() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    for name in ["a", "b", "c"] {
        cluster.start(name).await;
    }
    for _ in 0..400 {
        if cluster.voters().await == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let acknowledged = cluster.put("k", "before").await;
    let old = cluster.leader().await;
    cluster.cut(&old, true);
    // The isolated leader cannot reach a majority: its write is never acknowledged.
    let stale = tokio::time::timeout(Duration::from_secs(5), cluster.nodes[&old].put("k", "isolated")).await.expect("answered in time");
    assert!(matches!(stale, Err(Error::LeaderChanged)), "{stale:?}");
    // The others elect a leader once the old lease ran out, with the acknowledged write.
    let mut next = old.clone();
    for _ in 0..400 {
        let leaders: Vec<String> = cluster
            .nodes
            .iter()
            .filter(|(name, node)| **name != old && matches!(node.cluster_role(), Some(ClusterRole::Leader { .. })))
            .map(|(name, _)| name.clone())
            .collect();
        if let [leader] = &leaders[..] {
            next = leader.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_ne!(next, old, "no new leader");
    eventually_on(&cluster.nodes[&next], "k", Some(("before", acknowledged))).await;
    let after = loop {
        match cluster.nodes[&next].put("k", "after").await {
            Ok(revision) => break revision,
            Err(Error::LeaderChanged) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(error) => panic!("{error}"),
        }
    };
    // Healed, the old leader drops its unacknowledged write and takes the new log.
    cluster.cut(&old, false);
    eventually_on(&cluster.nodes[&old], "k", Some(("after", after))).await;
    for name in ["a", "b", "c"] {
        cluster.stop(name).await;
    }
}

/// Every running member's store hash at `revision` (serializable: each its own).
async fn hashes_at(cluster: &Cluster, revision: i64) -> BTreeMap<String, Option<u32>> {
    let mut hashes = BTreeMap::new();
    for (name, node) in &cluster.nodes {
        hashes.insert(name.clone(), node.hash_kv(revision).await.ok().map(|(hash, _)| hash));
    }
    hashes
}

async fn eventually_equal_at(cluster: &Cluster, revision: i64) {
    for _ in 0..400 {
        let hashes = hashes_at(cluster, revision).await;
        let first = hashes.values().next().cloned().flatten();
        if first.is_some() && hashes.values().all(|hash| *hash == first) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("members' stores differ at {revision}: {:?}", hashes_at(cluster, revision).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_what_the_leader_holds_catches_up_from_its_snapshot() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    for name in ["a", "b", "c"] {
        cluster.start(name).await;
    }
    cluster.until_voters(3, "warm", "up").await;
    let early = cluster.put("early", "1").await;
    eventually_on(&cluster.nodes["c"], "early", Some(("1", early))).await;

    // c goes; history moves on without it: puts, a lease with a key, a compaction.
    cluster.stop("c").await;
    let leader = cluster.leader().await;
    let lease = cluster.nodes[&leader].lease_grant(t4_proto::etcdserverpb::LeaseGrantRequest { id: 0, ttl: 60 }).await.unwrap().id;
    let leased = t4_proto::etcdserverpb::PutRequest { key: b"leased".to_vec(), value: b"x".to_vec(), lease, ..Default::default() };
    cluster.nodes[&leader].put_request(leased).await.unwrap();
    let mut last = 0;
    for index in 0..300 {
        last = cluster.put(&format!("k{}", index % 50), &format!("v{index}")).await;
    }
    cluster.nodes[&cluster.leader().await].compact(last - 100).await.unwrap();
    // The others make their stores durable and restart: their logs now start past where c
    // stopped, so no leader holds the records c needs.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for name in ["a", "b"] {
        cluster.stop(name).await;
    }
    for name in ["a", "b"] {
        cluster.start(name).await;
    }
    let after = cluster.put("after", "restart").await;

    // c comes back: it gets the leader's store, then the log past it.
    cluster.start("c").await;
    eventually_on(&cluster.nodes["c"], "after", Some(("restart", after))).await;
    let later = cluster.put("later", "appended").await;
    eventually_on(&cluster.nodes["c"], "later", Some(("appended", later))).await;
    eventually_equal_at(&cluster, later).await;
    let kv = cluster.nodes["c"].get("leased").await.unwrap().expect("the leased key");
    assert_eq!(kv.lease, lease, "the snapshot carried the lease");
    let compacted = cluster.nodes["c"].range(RangeRequest { key: b"k0".to_vec(), revision: last - 200, ..Default::default() }).await;
    assert!(matches!(compacted, Err(Error::Compacted { .. })), "the snapshot carried the compaction: {compacted:?}");
    // The metrics count it: installed here, sent by a leader.
    assert!(cluster.nodes["c"].cluster_gauges().unwrap().snapshots_installed >= 1);
    assert!(cluster.nodes.values().map(|node| node.cluster_gauges().unwrap().snapshots_sent).sum::<u64>() >= 1);

    // It reopens on what it installed, and catches up again by appends.
    cluster.stop("c").await;
    cluster.start("c").await;
    let again = cluster.put("again", "after c reopened").await;
    eventually_on(&cluster.nodes["c"], "again", Some(("after c reopened", again))).await;

    // A member whose disk is lost rejoins as a learner, is sent the store, and votes again.
    cluster.stop("c").await;
    cluster.disks.insert("c".into(), SimDisk::new());
    cluster.start("c").await;
    let rejoined = cluster.put("rejoined", "from nothing").await;
    eventually_on(&cluster.nodes["c"], "rejoined", Some(("from nothing", rejoined))).await;
    eventually_equal_at(&cluster, rejoined).await;
    cluster.until_voters(3, "promote", "c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_one_cluster_never_joins_another() {
    let mut cluster = Cluster::new(&["a"]);
    cluster.start("a").await;
    cluster.put("k", "v").await;
    cluster.stop("a").await;
    // Another bucket (or the same one after its records were lost): refused, naming both.
    cluster.bucket = Arc::new(MemObjectStore::new());
    let refused = cluster.try_start("a").await;
    let Err(Error::InvalidArgument(why)) = refused else { panic!("opened on another cluster's bucket: {refused:?}") };
    assert!(why.contains("belongs to cluster") && why.contains("no members record"), "{why}");
    // Emptied, the data dir joins the new bucket's cluster as a new member.
    cluster.disks.insert("a".into(), SimDisk::new());
    cluster.start("a").await;
    assert_eq!(cluster.put("fresh", "start").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods, reason = "measures how long a real read waits")]
async fn a_follower_learns_each_commit_at_once_not_at_the_next_heartbeat() {
    // A long lease: heartbeats 1 s apart, so a follower that waited for one would show.
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    cluster.timing = LeaseTiming { lease: Duration::from_secs(10), drift: Duration::from_millis(500) };
    for name in ["a", "b", "c"] {
        cluster.start(name).await;
    }
    cluster.until_voters(3, "warm", "up").await;
    let leader = cluster.leader().await;
    let follower = ["a", "b", "c"].into_iter().find(|name| *name != leader).unwrap();
    cluster.nodes[follower].range(RangeRequest { key: b"warm".to_vec(), ..Default::default() }).await.unwrap();
    let mut slowest = Duration::ZERO;
    for index in 0..20 {
        let revision = cluster.put("fresh", &format!("v{index}")).await;
        // A linearizable read on a follower waits until it applied the leader's commit index.
        let began = std::time::Instant::now();
        let read = cluster.nodes[follower].range(RangeRequest { key: b"fresh".to_vec(), ..Default::default() }).await.unwrap();
        slowest = slowest.max(began.elapsed());
        assert_eq!(read.kvs[0].mod_revision, revision, "read-your-write through a follower");
    }
    assert!(slowest < Duration::from_millis(400), "a follower's read waited {slowest:?} for a commit index");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_removed_through_any_member_one_at_a_time_and_never_below_a_running_majority() {
    use t4::cluster::members::member_id;
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    for name in ["a", "b", "c"] {
        cluster.start(name).await;
    }
    cluster.until_voters(3, "warm", "up").await;
    let leader = cluster.leader().await;
    let follower = ["a", "b", "c"].into_iter().find(|name| *name != leader).unwrap();
    let third = ["a", "b", "c"].into_iter().find(|name| *name != leader && *name != follower).unwrap();
    assert_eq!(cluster.nodes[follower].member_remove(42).await.unwrap_err(), Error::MemberNotFound);

    // enough-started: with `third` down, removing `follower` would leave the leader alone of
    // a majority of two.
    cluster.stop(third).await;
    tokio::time::sleep(TIMING.lease + Duration::from_millis(200)).await;
    let refused = cluster.nodes[&leader].member_remove(member_id(follower)).await;
    assert_eq!(refused.unwrap_err(), Error::MemberNotEnoughStarted);
    assert_eq!(cluster.voters().await, 3, "nothing changed");
    cluster.start(third).await;
    let back = cluster.put("back", "1").await;
    eventually_on(&cluster.nodes[third], "back", Some(("1", back))).await;

    // Through a follower: the leader writes the record; the removed member stops serving.
    let members = cluster.nodes[follower].member_remove(member_id(third)).await.expect("removed");
    assert_eq!(members.members.iter().map(|member| member.name.as_str()).collect::<Vec<_>>().len(), 2);
    assert!(members.get(third).is_none());
    assert_eq!(cluster.voters().await, 2);
    let mut stopped = false;
    for _ in 0..400 {
        let read = cluster.nodes[third].range(RangeRequest { key: b"back".to_vec(), serializable: true, ..Default::default() }).await;
        if let Err(Error::Fenced(why)) = read {
            assert!(why.contains("removed from the cluster"), "{why}");
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stopped, "the removed member went on serving");
    // Two voters commit on both; the cluster goes on.
    let after = cluster.put("after", "removal").await;
    eventually_on(&cluster.nodes[follower], "after", Some(("removal", after))).await;

    // Down to the leader alone, and no further.
    let leader = cluster.leader().await;
    let other = [follower, leader.as_str()].into_iter().find(|name| **name != *leader).unwrap().to_string();
    cluster.nodes[&leader].member_remove(member_id(&other)).await.expect("removed");
    assert_eq!(cluster.voters().await, 1);
    cluster.stop(&other).await;
    assert_eq!(cluster.nodes[&leader].member_remove(member_id(&leader)).await.unwrap_err(), Error::MemberNotEnoughStarted);
    let alone = cluster.put("alone", "1").await;
    assert!(alone > after);

    // Started again, a removed member joins anew as a learner and is promoted.
    cluster.stop(third).await;
    cluster.start(third).await;
    cluster.until_voters(2, "promote", "again").await;
    eventually_equal_at(&cluster, cluster.put("last", "1").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_removes_itself_stops_leading_and_another_takes_over() {
    use t4::cluster::members::member_id;
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    for name in ["a", "b", "c"] {
        cluster.start(name).await;
    }
    cluster.until_voters(3, "warm", "up").await;
    let old = cluster.leader().await;
    let before = cluster.put("before", "1").await;
    cluster.nodes[&old].member_remove(member_id(&old)).await.expect("removed");
    // The old leader stops serving; the two left elect one of them and keep every write.
    let mut fenced = false;
    for _ in 0..400 {
        let read = cluster.nodes[&old].range(RangeRequest { key: b"before".to_vec(), serializable: true, ..Default::default() }).await;
        if matches!(read, Err(Error::Fenced(_))) {
            fenced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fenced, "the removed leader went on serving");
    cluster.stop(&old).await;
    let new = cluster.leader().await;
    assert_ne!(new, old);
    let after = cluster.put("after", "2").await;
    assert!(after > before);
    for name in cluster.nodes.keys() {
        eventually_on(&cluster.nodes[name], "before", Some(("1", before))).await;
    }
}
