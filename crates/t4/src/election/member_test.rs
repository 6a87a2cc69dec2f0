//! Members racing for one lock on the real clock: at no instant may two of them lead, a
//! holder that stops (crashed, cut off from the bucket, or unheard) is replaced after about
//! L + D, and its own lease runs out before that.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use super::*;
use crate::durability::layout;
use crate::election::engine::{Identity, LeaseTiming};
use crate::env::{Condition, CutStore, RealClock};
use crate::object::MemObjectStore;

const TIMING: LeaseTiming = LeaseTiming { lease: Duration::from_millis(300), drift: Duration::from_millis(60) };

struct Running {
    name: String,
    cut: Arc<AtomicBool>,
    standing: signal::Receiver<Standing>,
    running: Arc<AtomicBool>,
    healthy: Arc<AtomicBool>,
}

fn start(bucket: &Arc<MemObjectStore>, clock: &Arc<dyn Clock>, name: &str) -> Running {
    let cut = Arc::new(AtomicBool::new(false));
    let store = Arc::new(CutStore::new(bucket.clone(), cut.clone(), Duration::ZERO));
    let identity = Identity { node: name.into(), peer_url: format!("http://{name}:3380"), client_url: format!("http://{name}:3379") };
    let (standing_tx, standing) = signal::channel(Standing::default());
    let (_beats, heartbeats) = signal::channel(None);
    let (running, healthy) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(true)));
    let member = MemberElection {
        election: Election::leased(identity, TIMING),
        store: store.clone(),
        clock: clock.clone(),
        heartbeats,
        standing: standing_tx,
    };
    let (keep, fine) = (running.clone(), healthy.clone());
    tokio::spawn(run_member(member, move || fine.load(Ordering::SeqCst), move || keep.load(Ordering::SeqCst)));
    Running { name: name.into(), cut, standing, running, healthy }
}

/// Samples every member's standing every millisecond for `span`; fails at the first
/// instant two lead. Returns, per sample, who led.
async fn sample(members: &[Running], clock: &Arc<dyn Clock>, span: Duration) -> Vec<Option<String>> {
    let mut led = Vec::new();
    let end = clock.monotonic() + span;
    while clock.monotonic() < end {
        let now = clock.monotonic();
        let leaders: Vec<_> =
            members.iter().filter(|member| member.standing.borrow().leads_at(now).is_some()).map(|m| m.name.clone()).collect();
        assert!(leaders.len() <= 1, "two members lead at {now:?}: {leaders:?}");
        led.push(leaders.into_iter().next());
        clock.sleep(Duration::from_millis(1)).await;
    }
    led
}

fn leader(members: &[Running], clock: &Arc<dyn Clock>) -> Option<usize> {
    let now = clock.monotonic();
    members.iter().position(|member| member.standing.borrow().leads_at(now).is_some())
}

/// How long from `since` until a member other than `old` leads.
async fn failover(members: &[Running], clock: &Arc<dyn Clock>, old: usize) -> Duration {
    let since = clock.monotonic();
    loop {
        sample(members, clock, Duration::from_millis(5)).await;
        if leader(members, clock).is_some_and(|new| new != old) {
            return clock.monotonic() - since;
        }
        assert!(clock.monotonic() - since < Duration::from_secs(5), "nobody took over");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_stopped_holder_is_replaced_after_its_lease() {
    let bucket = Arc::new(MemObjectStore::new());
    let clock: Arc<dyn Clock> = Arc::new(RealClock::new());
    let members: Vec<_> = ["a", "b", "c"].iter().map(|name| start(&bucket, &clock, name)).collect();
    let led = sample(&members, &clock, Duration::from_millis(1_500)).await;
    let first = leader(&members, &clock).expect("someone leads a fresh bucket");
    // From the first sample with a leader on, the same one without a gap: renewals keep
    // its lease.
    let since: Vec<_> = led.iter().skip_while(|who| who.is_none()).collect();
    assert!(since.len() > led.len() / 2, "a leader only after {} of {} samples", led.len() - since.len(), led.len());
    assert!(since.iter().all(|who| who.as_deref() == Some(members[first].name.as_str())), "{since:?}");
    for member in &members {
        let holder = member.standing.borrow().holder.clone().expect("every member learnt the holder");
        assert_eq!(holder.node, members[first].name);
    }

    // The holder crashes: it renews no more. Its lease runs out by itself, and someone else
    // takes over no sooner than L + D after the last renewal (sample() checks the overlap).
    members[first].running.store(false, Ordering::SeqCst);
    let took = failover(&members, &clock, first).await;
    assert!(took >= TIMING.lease - TIMING.renew_every(), "a takeover {took:?} after the crash is sooner than the lease allows");
    assert!(took < TIMING.lease * 4, "failover took {took:?}");
    let second = leader(&members, &clock).unwrap();
    sample(&members, &clock, Duration::from_millis(500)).await;
    assert_eq!(leader(&members, &clock), Some(second), "the new holder keeps it");

    // Cut the new holder off from the bucket: its lease runs out though it still thinks it
    // holds the term; the third member takes over.
    members[second].cut.store(true, Ordering::SeqCst);
    let took = failover(&members, &clock, second).await;
    assert!(took < TIMING.lease * 4, "failover took {took:?}");
    assert!(members[second].standing.borrow().term.is_some(), "it cannot learn it was deposed while cut off");
    // Healed, it reads the lock, learns of the newer term and follows.
    members[second].cut.store(false, Ordering::SeqCst);
    sample(&members, &clock, Duration::from_millis(600)).await;
    let standing = members[second].standing.borrow().clone();
    assert_eq!(standing.term, None);
    assert_ne!(standing.holder.unwrap().node, members[second].name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_no_majority_hears_lets_its_lease_go_and_a_member_that_may_not_lead_never_takes_it() {
    let bucket = Arc::new(MemObjectStore::new());
    let clock: Arc<dyn Clock> = Arc::new(RealClock::new());
    let members: Vec<_> = ["a", "b", "c"].iter().map(|name| start(&bucket, &clock, name)).collect();
    sample(&members, &clock, Duration::from_millis(800)).await;
    let first = leader(&members, &clock).expect("a leader");
    // The third member may not lead (a learner, say).
    let learner = (first + 1) % 3;
    members[learner].healthy.store(false, Ordering::SeqCst);
    members[first].healthy.store(false, Ordering::SeqCst);
    failover(&members, &clock, first).await;
    let second = leader(&members, &clock).unwrap();
    assert_ne!(second, learner, "a member that may not lead took over");
    sample(&members, &clock, Duration::from_millis(600)).await;
    assert_eq!(members[first].standing.borrow().term, None, "the old holder learnt it was deposed");
}

#[tokio::test]
async fn a_broken_lock_stops_the_election_with_the_reason() {
    let bucket = Arc::new(MemObjectStore::new());
    let clock: Arc<dyn Clock> = Arc::new(RealClock::new());
    let member = start(&bucket, &clock, "a");
    sample(std::slice::from_ref(&member), &clock, Duration::from_millis(200)).await;
    assert!(member.standing.borrow().leads_at(clock.monotonic()).is_some());
    // Someone rewrites the lock to an older term behind the holder's back.
    let older = LockRecord { term: 0, node: "z".into(), ..Default::default() };
    bucket.put(layout::LOCK, Bytes::from(older.encode()), Condition::Always).await.unwrap();
    let stopped = Mutex::new(None);
    for _ in 0..200 {
        clock.sleep(Duration::from_millis(5)).await;
        if let Some(reason) = member.standing.borrow().stopped.clone() {
            *stopped.lock().unwrap() = Some(reason);
            break;
        }
    }
    let reason = stopped.lock().unwrap().clone().expect("the election stopped");
    assert!(reason.contains("broke its conditional writes"), "{reason}");
    assert_eq!(member.standing.borrow().leads_at(clock.monotonic()), None);
}
