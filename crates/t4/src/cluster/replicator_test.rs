//! The leader's replication against members answering through `MemberService`, over an
//! in-process network whose links the tests cut.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::env::signal;
use bytes::Bytes;

use super::*;
use crate::cluster::member_log::MemberLog;
use crate::cluster::members::{Member, Members, Role};
use crate::cluster::service::MemberService;
use crate::cluster::Position;
use crate::env::{Clock, Disk, PeerError, PeerHandler, PeerNet, RealClock, SimDisk};
use crate::wal::{self, Change, ChangeKind, Record, RecordBody, WalWriter};

/// A member as the network reaches it: its service and whether its link is cut.
type Reached = (Arc<MemberService>, Arc<AtomicBool>);

/// Calls reach the member named by the URL unless its link is cut.
#[derive(Default)]
struct LocalPeers {
    members: Mutex<BTreeMap<String, Reached>>,
}

impl std::fmt::Debug for LocalPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalPeers")
    }
}

#[async_trait::async_trait]
impl PeerNet for LocalPeers {
    async fn call(&self, peer: &str, method: &str, request: Bytes) -> Result<Bytes, PeerError> {
        let target = self.members.lock().unwrap().get(peer).cloned();
        let Some((service, cut)) = target else { return Err(PeerError::Unreachable(peer.into())) };
        if cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            return Err(PeerError::Timeout);
        }
        service.handle(method, request).await.map_err(PeerError::Refused)
    }
}

fn put(index: u64) -> Record {
    let change = Change { key: format!("k{index}").into_bytes(), kind: ChangeKind::Put { value: b"v".to_vec(), lease: 0 } };
    Record { index, body: RecordBody::Txn { revision: index as i64 + 1, changes: vec![change] } }
}

fn term_record(index: u64, term: u64) -> Record {
    Record { index, body: RecordBody::Term { term } }
}

fn open_log() -> Arc<Mutex<MemberLog>> {
    let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
    let recovered = wal::recover(&disk, 0).unwrap();
    let writer = WalWriter::open(disk.clone(), recovered.segments, recovered.last_len, 1, 64 << 10).unwrap();
    Arc::new(Mutex::new(MemberLog::open(disk, Position::default(), recovered.records, writer).unwrap()))
}

/// Voters `l` (the leader), `f1`, `f2`, each reached at its own name.
fn voters() -> Members {
    let member = |name: &str| Member::new(name, Role::Learner, name, "");
    let mut all = Members::bootstrap(9, Member::new("l", Role::Voter, "l", ""));
    for name in ["f1", "f2"] {
        all = all.with_member(member(name)).unwrap().promoted(name).unwrap();
    }
    all
}

struct World {
    peers: Arc<LocalPeers>,
    followers: BTreeMap<&'static str, (Arc<Mutex<MemberLog>>, Arc<AtomicBool>)>,
    leader: Arc<Mutex<MemberLog>>,
    clock: Arc<dyn Clock>,
}

impl World {
    fn new() -> Self {
        let peers = Arc::new(LocalPeers::default());
        let clock: Arc<dyn Clock> = Arc::new(RealClock::new());
        let mut followers = BTreeMap::new();
        for name in ["f1", "f2"] {
            let log = open_log();
            let cut = Arc::new(AtomicBool::new(false));
            let service = MemberService::new(9, log.clone(), clock.clone(), signal::Sender::new(None), signal::Sender::new(0));
            peers.members.lock().unwrap().insert(name.to_string(), (Arc::new(service), cut.clone()));
            followers.insert(name, (log, cut));
        }
        Self { peers, followers, leader: open_log(), clock }
    }

    /// The leader takes `term` and writes its term record and `puts` more records.
    fn lead(&self, term: u64, mode: WaitMode, puts: u64) -> Replicator {
        let term_start = {
            let mut log = self.leader.lock().unwrap();
            assert!(log.promise(term).unwrap().promised);
            let start = log.last().index + 1;
            let mut records = vec![term_record(start, term)];
            records.extend((start + 1..=start + puts).map(put));
            log.append_own(term, records.into()).unwrap();
            start
        };
        let leadership = Leadership { term, me: "l".into(), members: voters(), mode, term_start, heartbeat: Duration::from_millis(20) };
        let (_, lock) = signal::channel(LockSeen { etag: "\"e1\"".into(), lease_ms: 5000 });
        let replicator = Replicator::start(
            leadership,
            self.leader.clone(),
            self.peers.clone(),
            self.clock.clone(),
            lock,
            None,
            Default::default(),
            None,
        );
        let last = self.leader.lock().unwrap().last().index;
        replicator.own_durable(last);
        replicator
    }

    fn write(&self, replicator: &Replicator, term: u64) -> u64 {
        let index = {
            let mut log = self.leader.lock().unwrap();
            let index = log.last().index + 1;
            log.append_own(term, vec![put(index)].into()).unwrap();
            index
        };
        replicator.own_durable(index);
        index
    }

    fn cut(&self, name: &str, cut: bool) {
        self.followers[name].1.store(cut, Ordering::SeqCst);
    }

    fn follower(&self, name: &str) -> (Position, u64) {
        let log = self.followers[name].0.lock().unwrap();
        (log.last(), log.commit())
    }
}

async fn committed(replicator: &Replicator, index: u64) -> bool {
    let mut commit = replicator.commit();
    let reached = tokio::time::timeout(Duration::from_secs(5), commit.wait_for(|commit| *commit >= index)).await.is_ok();
    reached
}

async fn stays_below(replicator: &Replicator, index: u64) -> bool {
    tokio::time::sleep(Duration::from_millis(200)).await;
    *replicator.commit().borrow() < index
}

async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_majority_commits_and_every_follower_gets_the_log_and_the_commit_index() {
    let world = World::new();
    let replicator = world.lead(1, WaitMode::Quorum, 2);
    assert!(committed(&replicator, 3).await);
    for name in ["f1", "f2"] {
        assert!(eventually(|| world.follower(name) == (Position { index: 3, term: 1 }, 3)).await, "{name}: {:?}", world.follower(name));
    }
    // One follower cut: the other and the leader are a majority.
    world.cut("f1", true);
    let index = world.write(&replicator, 1);
    assert!(committed(&replicator, index).await);
    // Both cut: no majority, no commit, and the leader is not healthy once the lease passes.
    world.cut("f2", true);
    let index = world.write(&replicator, 1);
    assert!(stays_below(&replicator, index).await, "committed {index} without a majority");
    let now = world.clock.monotonic();
    assert!(!replicator.healthy(now, Duration::from_millis(100)));
    assert!(replicator.healthy(now, Duration::from_secs(60)));
    // A healed follower catches up on everything it missed, and the commit moves.
    world.cut("f1", false);
    assert!(committed(&replicator, index).await);
    assert!(eventually(|| world.follower("f1") == (Position { index, term: 1 }, index)).await, "{:?}", world.follower("f1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_waits_for_every_voter_and_none_for_the_leader_alone() {
    let world = World::new();
    world.cut("f2", true);
    let all = world.lead(1, WaitMode::All, 0);
    assert!(stays_below(&all, 1).await, "mode all committed with a voter cut");
    world.cut("f2", false);
    assert!(committed(&all, 1).await);
    drop(all);

    let world = World::new();
    world.cut("f1", true);
    world.cut("f2", true);
    let none = world.lead(1, WaitMode::None, 1);
    assert!(committed(&none, 2).await, "mode none commits on the leader's own fsync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_of_a_newer_term_deposes_the_leader() {
    let world = World::new();
    assert!(world.followers["f2"].0.lock().unwrap().promise(5).unwrap().promised);
    world.cut("f1", true);
    let replicator = world.lead(2, WaitMode::Quorum, 1);
    let mut deposed = replicator.deposed();
    let seen = tokio::time::timeout(Duration::from_secs(5), deposed.wait_for(Option::is_some)).await.expect("deposed").map(|seen| *seen);
    assert_eq!(seen.unwrap(), Some(5));
    assert!(stays_below(&replicator, 1).await, "nothing commits without f2 (f1 is cut)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_deposed_leaders_tail_is_brought_to_the_new_leaders_log() {
    let world = World::new();
    // Term 1 wrote 1..3 everywhere, then 4..6 only on f1 (never committed).
    {
        let replicator = world.lead(1, WaitMode::Quorum, 2);
        assert!(committed(&replicator, 3).await);
        assert!(eventually(|| world.follower("f1").1 == 3 && world.follower("f2").1 == 3).await);
        world.cut("f1", true);
        world.cut("f2", true);
        world.leader.lock().unwrap().append_own(1, vec![put(4), put(5), put(6)].into()).unwrap();
    }
    let stale = world.followers["f1"].0.clone();
    {
        // f1 takes the stale tail from the deposed leader's log directly (never committed:
        // no majority took it).
        let request = world.leader.lock().unwrap().append_request(1, "l", 4, 1 << 20).unwrap().unwrap();
        let request = t4_proto::peer::AppendRequest { cluster_id: crate::cluster::service::cluster_id_text(9), ..request };
        let received = crate::cluster::wire::receive_append(request).unwrap();
        assert!(stale.lock().unwrap().append(&received).unwrap().accepted);
    }
    assert_eq!(world.follower("f1").0, Position { index: 6, term: 1 });
    // A new leader (term 2) whose log ends at 3 (the committed part), with f2 back.
    let world2 = World { leader: open_log(), ..world };
    {
        let mut log = world2.leader.lock().unwrap();
        assert!(log.promise(1).unwrap().promised);
        log.append_own(1, vec![term_record(1, 1), put(2), put(3)].into()).unwrap();
    }
    world2.cut("f1", false);
    world2.cut("f2", false);
    let replicator = world2.lead(2, WaitMode::Quorum, 1);
    assert!(committed(&replicator, 5).await);
    assert!(
        eventually(|| world2.follower("f1") == (Position { index: 5, term: 2 }, 5)).await,
        "f1 cut its stale tail and took term 2's records: {:?}",
        world2.follower("f1")
    );
    let records = stale.lock().unwrap().committed_after(3);
    assert_eq!(records, vec![term_record(4, 2), put(5)]);
}
