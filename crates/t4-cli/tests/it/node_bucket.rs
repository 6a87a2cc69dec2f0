//! Durability on object storage through the embedded API: the log in a bucket, recovery
//! from total disk loss, stale disks, fencing of a second process, outages, holes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use t4::auth::state::AuthChange;
use t4::durability::BucketDurability;
use t4::env::{Condition, CrashMode, Env, ObjectError, ObjectInfo, ObjectStore, PutOutcome, RealClock, SimDisk};
use t4::object::MemObjectStore;
use t4::proto::etcdserverpb::{LeaseGrantRequest, PutRequest};
use t4::watch::WatchOptions;
use t4::{Config, ErrorKind, Node};

fn durability(store: Arc<dyn ObjectStore>, name: &str) -> BucketDurability {
    BucketDurability { lock_check_interval: Duration::from_millis(100), ..BucketDurability::new(store, name) }
}

async fn open(disk: &SimDisk, store: Arc<dyn ObjectStore>, name: &str) -> t4::Result<Node> {
    let env = Env { clock: Arc::new(RealClock::new()), disk: Arc::new(disk.clone()) };
    let mut config = Config::new("/unused");
    config.bucket = Some(durability(store, name));
    Node::open_with_env(config, env).await
}

/// The outcome of one write as its client saw it.
#[derive(Debug, Clone, Copy)]
enum Seen {
    /// A put acknowledged at this mod revision.
    Put(i64),
    /// An acknowledged delete.
    Deleted,
    /// A delete answered by an error: it may or may not have taken effect.
    DeleteUnknown,
}

/// What one writer saw, in order: (key, outcome).
type Acked = Vec<(String, Seen)>;

/// Writers put distinct keys (and delete every tenth) until the first error; each returns
/// what it saw.
fn writers(node: &Node, count: usize, per_writer: usize, acked: Arc<AtomicUsize>) -> Vec<tokio::task::JoinHandle<Acked>> {
    (0..count)
        .map(|writer| {
            let (node, acked) = (node.clone(), acked.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                for index in 0..per_writer {
                    let key = format!("w{writer}/{index:05}");
                    match node.put(key.clone(), format!("value {writer} {index}")).await {
                        Ok(revision) => done.push((key.clone(), Seen::Put(revision))),
                        Err(_) => break,
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                    if index % 10 == 9 {
                        match node.delete(key.clone()).await {
                            Ok(_) => done.push((key, Seen::Deleted)),
                            Err(_) => {
                                done.push((key, Seen::DeleteUnknown));
                                break;
                            }
                        }
                    }
                }
                done
            })
        })
        .collect()
}

/// Every acknowledged put is there (unless a later delete may have landed), every
/// acknowledged delete stays done.
async fn check_acknowledged(node: &Node, acked: &[(String, Seen)]) {
    let mut puts = std::collections::BTreeMap::new();
    let mut last = std::collections::BTreeMap::new();
    for (key, seen) in acked {
        if let Seen::Put(revision) = seen {
            puts.insert(key.clone(), *revision);
        }
        last.insert(key.clone(), *seen);
    }
    for (key, seen) in last {
        let kv = node.get(key.clone()).await.unwrap();
        match seen {
            Seen::Put(revision) => {
                let kv = kv.unwrap_or_else(|| panic!("acknowledged {key} lost"));
                assert_eq!(kv.mod_revision, revision, "{key}");
                let (writer, index) = key[1..].split_once('/').unwrap();
                assert_eq!(kv.value, format!("value {writer} {}", index.parse::<usize>().unwrap()).into_bytes());
            }
            Seen::Deleted => assert!(kv.is_none(), "acknowledged delete of {key} undone"),
            Seen::DeleteUnknown => {
                if let Some(kv) = kv {
                    assert_eq!(kv.mod_revision, puts[&key], "{key}: either the acknowledged put or nothing");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_is_gone_rebuilds_everything_from_the_bucket() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(MemObjectStore::new());
    let disk = SimDisk::new();
    let node = open(&disk, bucket.clone(), "a").await.unwrap();
    assert_eq!(node.term(), Some(1));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let tasks = writers(&node, 8, 400, acked_count.clone());
    while acked_count.load(Ordering::SeqCst) < 1500 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Power loss that takes the whole disk, while the writers run.
    disk.crash(CrashMode::Wipe);
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    assert!(acked.len() >= 1500 && acked.len() < 8 * 440, "the wipe must land mid-load: {}", acked.len());
    assert!(node.stats().wal_uploads > 0);
    drop(node);

    let fresh = SimDisk::new();
    let node = open(&fresh, bucket.clone(), "a-again").await.unwrap();
    assert_eq!(node.term(), Some(2), "a new term for every opening");
    check_acknowledged(&node, &acked).await;
    let highest = acked
        .iter()
        .filter_map(|(_, seen)| match seen {
            Seen::Put(revision) => Some(*revision),
            _ => None,
        })
        .max()
        .unwrap();
    assert!(node.current_revision() >= highest);

    // Watches from an early revision replay the history in order, with nothing missing.
    let mut watch =
        node.watch(WatchOptions { key: b"w0/".to_vec(), range_end: b"w0/\xff".to_vec(), start_revision: 2, ..Default::default() }).unwrap();
    let mut seen = Vec::new();
    let mut last_revision = 0;
    while let Ok(Some(batch)) = tokio::time::timeout(Duration::from_millis(200), watch.next()).await {
        let batch = batch.unwrap();
        assert!(batch.revision > last_revision, "revisions replay in order");
        last_revision = batch.revision;
        seen.extend(batch.events.into_iter().map(|event| (event.kv.unwrap().key, event.r#type)));
    }
    let expected: Vec<_> = acked.iter().filter(|(key, seen)| key.starts_with("w0/") && !matches!(seen, Seen::DeleteUnknown)).collect();
    assert!(seen.len() >= expected.len(), "every acknowledged w0 change is replayed ({} < {})", seen.len(), expected.len());
    let next = node.put("after", "restore").await.unwrap();
    assert_eq!(next, node.current_revision());
    node.close().await.unwrap();
}

/// Found by the simulator (robustness #21): a term that had written nothing was in no
/// listing, so nobody sealed it, and its writer went on acknowledging beside the newer term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_fenced_before_its_first_write_acknowledges_nothing() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(MemObjectStore::new());
    let open_slow_to_notice = |disk: &SimDisk, name: &str| {
        let env = Env { clock: Arc::new(RealClock::new()), disk: Arc::new(disk.clone()) };
        let mut config = Config::new("/unused");
        // Only the seal can stop it: it reads the lock far too rarely to notice on its own.
        config.bucket = Some(BucketDurability { lock_check_interval: Duration::from_secs(3600), ..durability(bucket.clone(), name) });
        Node::open_with_env(config, env)
    };
    let (disk_a, disk_b) = (SimDisk::new(), SimDisk::new());
    let a = open_slow_to_notice(&disk_a, "a").await.unwrap();
    let b = open_slow_to_notice(&disk_b, "b").await.unwrap();
    assert_eq!((a.term(), b.term()), (Some(1), Some(2)));
    b.put("k", "from b").await.unwrap();
    let fenced = a.put("k", "from a").await.unwrap_err();
    assert!(matches!(fenced, t4::Error::Fenced(_)), "{fenced}");
    assert_eq!(b.get("k").await.unwrap().unwrap().value, b"from b");
    b.close().await.unwrap();
    drop(a);
    let c = open(&SimDisk::new(), bucket.clone(), "c").await.unwrap();
    assert_eq!(c.get("k").await.unwrap().unwrap().value, b"from b", "one history, b's");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_fences_the_first_and_a_stale_disk_catches_up() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(MemObjectStore::new());
    let (disk_a, disk_b) = (SimDisk::new(), SimDisk::new());
    let a = open(&disk_a, bucket.clone(), "a").await.unwrap();
    for index in 0..50 {
        a.put(format!("a/{index}"), "from a").await.unwrap();
    }
    let b = open(&disk_b, bucket.clone(), "b").await.unwrap();
    assert_eq!((a.term(), b.term()), (Some(1), Some(2)));
    assert_eq!(b.current_revision(), a.current_revision(), "b starts from everything a acknowledged");
    // An idle a learns from the lock that it was fenced, before any write of its own.
    for _ in 0..100 {
        if a.health().is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.health().unwrap_err().kind(), ErrorKind::Fenced, "an idle fenced node stops by itself");
    let fenced = a.put("a/late", "never acknowledged").await.unwrap_err();
    assert!(matches!(fenced, t4::Error::Fenced(_)), "{fenced}");
    assert!(a.put("a/later", "x").await.is_err(), "a fenced node stays stopped");
    assert!(a.get("a/0").await.is_err(), "and serves no (possibly stale) reads");
    for index in 0..20 {
        b.put(format!("b/{index}"), "from b").await.unwrap();
    }
    assert!(b.get("a/late").await.unwrap().is_none());
    let b_revision = b.current_revision();
    b.close().await.unwrap();
    drop(a);

    // a's disk is stale (it stopped at its fence): reopening catches up from the bucket.
    disk_a.crash(CrashMode::LoseUnsynced);
    let a = open(&disk_a, bucket.clone(), "a").await.unwrap();
    assert_eq!(a.term(), Some(3));
    assert_eq!(a.current_revision(), b_revision);
    assert_eq!(a.get("b/19").await.unwrap().unwrap().value, b"from b");
    assert!(a.get("a/late").await.unwrap().is_none(), "the write past the seal is not history");
    a.put("a/again", "x").await.unwrap();
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_keep_one_log_across_terms() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(MemObjectStore::new());
    let disk = SimDisk::new();
    let mut revisions = Vec::new();
    for round in 0..4 {
        let node = open(&disk, bucket.clone(), "n").await.unwrap();
        assert_eq!(node.term(), Some(round + 1));
        for index in 0..10 {
            revisions.push((format!("r{round}/{index}"), node.put(format!("r{round}/{index}"), "v").await.unwrap()));
        }
        if round % 2 == 0 {
            node.close().await.unwrap();
        } else {
            drop(node);
            disk.crash(CrashMode::Torn { seed: round });
        }
    }
    // A brand-new disk sees the same history as the one that lived through it.
    let node = open(&SimDisk::new(), bucket.clone(), "fresh").await.unwrap();
    for (key, revision) in &revisions {
        assert_eq!(node.get(key.clone()).await.unwrap().unwrap().mod_revision, *revision, "{key}");
    }
    let terms: Vec<String> = bucket.list("wal/", None, 1000).await.unwrap().into_iter().map(|info| info.key).collect();
    assert!(terms.iter().any(|key| key.starts_with("wal/00000000000000000004/")));
    // Each older term sealed exactly once, however many times the log was read since.
    let status = t4::durability::status::status(bucket.as_ref()).await.unwrap();
    assert_eq!(status.lock.unwrap().term, 5);
    assert_eq!(
        status.terms.iter().map(|term| (term.term, term.sealed_at.is_some(), term.stray)).collect::<Vec<_>>(),
        [(1, true, 0), (2, true, 0), (3, true, 0), (4, true, 0)]
    );
    node.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_or_a_damaged_object_in_the_bucket_fails_closed() {
    let bucket = Arc::new(MemObjectStore::new());
    let disk = SimDisk::new();
    let node = open(&disk, bucket.clone(), "n").await.unwrap();
    for index in 0..5 {
        node.put(format!("k{index}"), "v").await.unwrap();
    }
    node.close().await.unwrap();
    let second = t4::durability::layout::wal_object(1, 2);
    let (saved, _) = bucket.get(&second).await.unwrap();
    bucket.delete(&second, None).await.unwrap();
    let error = open(&SimDisk::new(), bucket.clone(), "n").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Corrupt, "{error}");
    assert!(error.to_string().contains("hole"), "{error}");

    let mut damaged = saved.to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    bucket.put(&second, Bytes::from(damaged), Condition::IfNoneMatch).await.unwrap();
    let error = open(&SimDisk::new(), bucket.clone(), "n").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Corrupt, "{error}");
    assert!(error.to_string().contains("checksum"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_overtook_a_lost_one_is_an_unacknowledged_tail_not_history() {
    // Two uploads may be in flight: object k+1 can land while k never does (the writer
    // crashed). Nothing in k or k+1 was acknowledged; the log ends before k.
    let bucket = Arc::new(MemObjectStore::new());
    let node = open(&SimDisk::new(), bucket.clone(), "n").await.unwrap();
    for index in 0..5 {
        node.put(format!("k{index}"), "v").await.unwrap();
    }
    node.close().await.unwrap();
    bucket.delete(&t4::durability::layout::wal_object(1, 4), None).await.unwrap();
    let node = open(&SimDisk::new(), bucket.clone(), "n").await.unwrap();
    assert_eq!(node.current_revision(), 4, "k0..k2 at revisions 2..4");
    assert!(node.get("k2").await.unwrap().is_some());
    assert!(node.get("k3").await.unwrap().is_none() && node.get("k4").await.unwrap().is_none());
    assert_eq!(node.put("next", "v").await.unwrap(), 5, "the next revision follows the log's end");
    node.close().await.unwrap();
    let again = open(&SimDisk::new(), bucket.clone(), "n").await.unwrap();
    assert_eq!(again.get("next").await.unwrap().unwrap().mod_revision, 5);
    assert!(again.get("k4").await.unwrap().is_none(), "an object past a seal is never replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_from_elsewhere_is_refused_not_mixed_in() {
    let disk = SimDisk::new();
    let env = Env { clock: Arc::new(RealClock::new()), disk: Arc::new(disk.clone()) };
    let local = Node::open_with_env(Config::new("/unused"), env).await.unwrap();
    local.put("only", "local").await.unwrap();
    local.close().await.unwrap();
    let error = open(&disk, Arc::new(MemObjectStore::new()), "n").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Corrupt);
    assert!(error.to_string().contains("does not belong to this bucket"), "{error}");
}

/// A bucket that can be taken down: every call fails as a refused connection would.
#[derive(Debug, Default)]
struct Flaky {
    inner: MemObjectStore,
    down: AtomicBool,
    /// Refuse deleting every WAL object with an odd seq (a collection cut short, its
    /// deletes having landed out of order).
    refuse_odd_wal_deletes: AtomicBool,
    /// Milliseconds each WAL object's PUT takes (a bucket far away).
    wal_put_millis: AtomicU64,
    /// WAL object PUTs under way, and the most seen at once.
    wal_puts_in_flight: AtomicU64,
    wal_puts_in_flight_max: AtomicU64,
}

impl Flaky {
    fn check(&self) -> Result<(), ObjectError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ObjectError::Other("connection refused".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for Flaky {
    async fn get(&self, key: &str) -> Result<(Bytes, String), ObjectError> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, ObjectError> {
        self.check()?;
        self.inner.get_range(key, start, end).await
    }
    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        self.check()?;
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<ObjectInfo>, ObjectError> {
        self.check()?;
        self.inner.list(prefix, start_after, limit).await
    }
    async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<PutOutcome, ObjectError> {
        self.check()?;
        if t4::durability::layout::parse_wal_object(key).is_none() {
            return self.inner.put(key, body, condition).await;
        }
        let now = self.wal_puts_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.wal_puts_in_flight_max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(self.wal_put_millis.load(Ordering::SeqCst))).await;
        let outcome = self.inner.put(key, body, condition).await;
        self.wal_puts_in_flight.fetch_sub(1, Ordering::SeqCst);
        outcome
    }
    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), ObjectError> {
        self.check()?;
        let odd = t4::durability::layout::parse_wal_object(key).is_some_and(|(_, seq)| seq % 2 == 1);
        if odd && self.refuse_odd_wal_deletes.load(Ordering::SeqCst) {
            return Err(ObjectError::Refused("deletes cut off".into()));
        }
        self.inner.delete(key, if_match).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_cut_short_leaves_garbage_below_the_floor_never_a_hole() {
    let bucket = Arc::new(Flaky::default());
    bucket.refuse_odd_wal_deletes.store(true, Ordering::SeqCst);
    let node = open(&SimDisk::new(), bucket.clone(), "a").await.unwrap();
    for index in 0..60 {
        node.put(format!("k{index}"), format!("v{index}")).await.unwrap();
    }
    // GC deletes many objects at once; half of them fail, leaving gaps below the floor.
    node.checkpoint().await.unwrap();
    for index in 60..70 {
        node.put(format!("k{index}"), format!("v{index}")).await.unwrap();
    }
    let revision = node.current_revision();
    let hash = node.hash_kv(revision).await.unwrap();
    node.close().await.unwrap();
    let status = t4::durability::status::status(bucket.as_ref()).await.unwrap();
    let leftover = bucket.inner.list("wal/", None, 1000).await.unwrap().len();
    assert!(leftover > 20, "the collection was cut short: {leftover} objects left");
    assert!(status.terms[0].first_seq > 50, "the floor was raised first: {:?}", status.terms[0]);

    // Another node reads the log from the floor: no hole, same history.
    let other: Arc<dyn ObjectStore> = bucket.clone();
    let fresh = open(&SimDisk::new(), other, "b").await.unwrap();
    assert_eq!(fresh.hash_kv(revision).await.unwrap(), hash);
    fresh.close().await.unwrap();
    // A later collection removes the garbage below the floor.
    bucket.refuse_odd_wal_deletes.store(false, Ordering::SeqCst);
    let store: Arc<dyn ObjectStore> = bucket.clone();
    let report = t4::durability::gc::collect(&store, 2, None).await.unwrap();
    assert!(report.wal_objects_deleted >= (leftover - 20) as u64, "{report:?}");
}

/// With sync upload the bucket's round trip sets the group-commit size: writes arriving
/// while two objects are on their way wait and go up together, about one batch (one fsync,
/// one redb commit) per object, instead of the writer running ahead in batches of a few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_bucket_paces_the_writer_into_one_batch_per_object() {
    let bucket = Arc::new(Flaky::default());
    bucket.wal_put_millis.store(15, Ordering::SeqCst);
    let node = open(&SimDisk::new(), bucket.clone(), "n").await.unwrap();
    let acked = Arc::new(AtomicUsize::new(0));
    let mut seen = Vec::new();
    for writer in writers(&node, 32, 20, acked.clone()) {
        seen.extend(writer.await.unwrap());
    }
    assert_eq!(acked.load(Ordering::SeqCst), 32 * 20, "every put was acknowledged");
    let stats = node.stats();
    let (batches, objects) = (stats.batches, stats.wal_uploads);
    let in_flight = bucket.wal_puts_in_flight_max.load(Ordering::SeqCst);
    assert_eq!(in_flight, 2, "two objects in flight at most, and two in flight while writes keep coming");
    // About one batch per object (the uploader may put two that queued together into one):
    // 55-57 objects from 63-70 batches of ~10 records here; without the pacing it was 439
    // batches of 1.6 records for 54 objects.
    assert!(batches <= 2 * objects, "about one batch per object: {batches} batches, {objects} objects");
    assert!(stats.records >= 5 * batches, "{} records in {batches} batches", stats.records);
    check_acknowledged(&node, &seen).await;
    node.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_out_a_bucket_outage_and_then_resume() {
    let bucket = Arc::new(Flaky::default());
    let disk = SimDisk::new();
    let node = open(&disk, bucket.clone(), "n").await.unwrap();
    node.put("before", "outage").await.unwrap();
    bucket.down.store(true, Ordering::SeqCst);
    let pending = {
        let node = node.clone();
        tokio::spawn(async move { node.put("during", "outage").await })
    };
    for _ in 0..100 {
        if node.stats().wal_upload_failures > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(node.stats().wal_upload_failures > 1, "the node saw its upload fail, more than once");
    assert!(!pending.is_finished(), "no write is acknowledged while the bucket is down");
    assert!(node.get("during").await.unwrap().is_none(), "nor is it visible");
    bucket.down.store(false, Ordering::SeqCst);
    let revision = tokio::time::timeout(Duration::from_secs(15), pending).await.expect("resumes").unwrap().unwrap();
    assert_eq!(node.get("during").await.unwrap().unwrap().mod_revision, revision);
    node.put("after", "outage").await.unwrap();
    node.close().await.unwrap();
    let restored = open(&SimDisk::new(), bucket.clone(), "n").await.unwrap();
    assert_eq!(restored.get("during").await.unwrap().unwrap().mod_revision, revision);
    assert!(restored.get("after").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_bound_recovery_and_gc_keeps_only_what_they_need() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(MemObjectStore::new());
    let disk = SimDisk::new();
    let node = open(&disk, bucket.clone(), "a").await.unwrap();
    let mut reports = Vec::new();
    for round in 0..3 {
        for index in 0..300 {
            node.put(format!("k{:03}", index % 200), format!("round {round} write {index}")).await.unwrap();
        }
        for index in (0..200).step_by(7) {
            node.delete(format!("k{index:03}")).await.unwrap();
        }
        if round == 1 {
            node.compact(node.current_revision()).await.unwrap();
        }
        if round == 2 {
            // A lease whose grant only the checkpoint will hold once GC has run.
            node.lease_grant(LeaseGrantRequest { id: 42, ttl: 600 }).await.unwrap();
            node.put_request(PutRequest { key: b"leased/a".to_vec(), value: b"v".to_vec(), lease: 42, ..Default::default() })
                .await
                .unwrap();
            // A user only the checkpoint will hold.
            node.auth_change(AuthChange::UserAdd { name: "alice".into(), password: Some("hash".into()) }).await.unwrap();
        }
        reports.push(node.checkpoint().await.unwrap());
    }
    assert!(reports.iter().all(|report| !report.existed && report.chunks >= 1 && report.entries > 0), "{reports:?}");
    // The compaction left the first checkpoint's chunks mostly stale: the second is written
    // afresh; the third keeps the second's chunks and adds the history after it.
    assert_eq!(reports.iter().map(|report| report.chunks_reused > 0).collect::<Vec<_>>(), [false, false, true], "{reports:?}");
    assert_eq!(reports[2].revision, node.current_revision());
    // The log after the newest checkpoint lives only in WAL objects.
    for index in 0..50 {
        node.put(format!("tail/{index}"), "after the checkpoint").await.unwrap();
    }
    node.lease_grant(LeaseGrantRequest { id: 43, ttl: 60 }).await.unwrap();
    node.put_request(PutRequest { key: b"leased/b".to_vec(), value: b"v".to_vec(), lease: 43, ..Default::default() }).await.unwrap();
    node.auth_change(AuthChange::RoleAdd { name: "app".into() }).await.unwrap();
    node.auth_change(AuthChange::UserGrantRole { name: "alice".into(), role: "app".into() }).await.unwrap();
    let auth = node.auth_state();
    let revision = node.current_revision();
    let (hash, _) = node.hash_kv(revision).await.unwrap();
    let compact = node.compact_revision();
    let uploads = node.stats().wal_uploads;
    assert!(node.stats().gc_objects_deleted > 0);
    // Every request to the bucket is counted, per operation, and rendered for /metrics.
    let totals = node.object_store_totals().unwrap();
    let (puts, deletes, batch_deletes) = (totals[4], totals[5], totals[6]);
    assert!(puts.requests >= uploads, "{totals:?}");
    // GC deletes in batches (DeleteObjects on S3), never one request per object; the one
    // single delete is the open's conditional-write probe.
    assert!(deletes.requests == 1 && batch_deletes.requests >= 1, "{totals:?}");
    assert!(batch_deletes.requests * 10 <= node.stats().gc_objects_deleted, "{totals:?}");
    assert!(totals.iter().all(|operation| operation.errors == 0), "{totals:?}");
    let gauges = t4_server::metrics::NodeGauges { stats: node.stats(), object_store: Some(totals), ..Default::default() };
    let text = t4_server::metrics::Metrics::new(Arc::new(RealClock::new())).render(&gauges);
    assert!(text.contains(&format!("t4_object_store_requests_total{{op=\"put\"}} {}", puts.requests)), "{text}");
    assert!(text.contains(&format!("t4_checkpoints_total {}", node.stats().checkpoints)), "{text}");
    node.close().await.unwrap();

    let status = t4::durability::status::status(bucket.as_ref()).await.unwrap();
    assert_eq!(status.checkpoints.len(), 2, "retain 2: the oldest checkpoint was collected");
    assert!(status.checkpoints.iter().all(|(_, complete)| *complete));
    assert_eq!(status.checkpoints[1].0.position.revision, reports[2].revision);
    let referenced: std::collections::BTreeSet<String> =
        status.checkpoints.iter().flat_map(|(manifest, _)| manifest.chunks.iter().map(|chunk| chunk.name())).collect();
    assert_eq!(status.chunks, referenced.len(), "every chunk left is listed by a kept checkpoint");
    let term = &status.terms[0];
    assert!(term.first_seq > 1 && term.objects < uploads, "the log below the newest checkpoint was collected: {term:?}");
    assert!(term.indexes.unwrap().0 <= reports[2].index + 1, "and nothing above it: {term:?}");

    // A fresh disk starts from the newest checkpoint, replays the log after it, and holds
    // the same history: every revision above the compaction hashes the same.
    let fresh = open(&SimDisk::new(), bucket.clone(), "b").await.unwrap();
    assert_eq!(fresh.current_revision(), revision);
    assert_eq!(fresh.compact_revision(), compact);
    assert_eq!(fresh.hash_kv(revision).await.unwrap(), (hash, revision));
    assert_eq!(fresh.get("tail/49").await.unwrap().unwrap().value, b"after the checkpoint");
    // Leases come back from the checkpoint (42) and from the log after it (43).
    let from_checkpoint = fresh.lease_time_to_live(42, true).await.unwrap().unwrap();
    assert_eq!((from_checkpoint.granted, from_checkpoint.keys), (600, vec![b"leased/a".to_vec()]));
    let from_log = fresh.lease_time_to_live(43, true).await.unwrap().unwrap();
    assert_eq!((from_log.granted, from_log.keys), (60, vec![b"leased/b".to_vec()]));
    // So do users and roles: alice from the checkpoint, her role from the log.
    assert_eq!(*fresh.auth_state(), *auth);
    assert_eq!(fresh.auth_state().users["alice"].roles.iter().collect::<Vec<_>>(), ["app"]);
    assert_eq!(fresh.get("k001").await.unwrap().unwrap().value, b"round 2 write 201");
    assert!(fresh.get("k007").await.unwrap().is_none());
    let old = fresh
        .range(t4_proto::etcdserverpb::RangeRequest { key: b"k001".to_vec(), revision: compact + 1, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(old.kvs.len(), 1, "history above the compaction is there");
    let error = fresh
        .range(t4_proto::etcdserverpb::RangeRequest { key: b"k001".to_vec(), revision: compact - 1, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Compacted);
    fresh.put("after", "restore").await.unwrap();
    fresh.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_after_changing_one_percent_of_the_keys_uploads_little() {
    // 100,000 keys in CI; `T4_DEDUP_KEYS=1000000` for the measurement in docs/durability.md.
    let keys_total: usize = std::env::var("T4_DEDUP_KEYS").ok().and_then(|keys| keys.parse().ok()).unwrap_or(100_000);
    let bucket: Arc<dyn ObjectStore> = Arc::new(MemObjectStore::new());
    let node = open(&SimDisk::new(), bucket.clone(), "a").await.unwrap();
    let put_many = |keys: Vec<usize>, round: usize| {
        let node = node.clone();
        async move {
            for group in keys.chunks(128) {
                let success = group
                    .iter()
                    .map(|key| t4_proto::etcdserverpb::RequestOp {
                        request: Some(t4_proto::etcdserverpb::request_op::Request::RequestPut(t4_proto::etcdserverpb::PutRequest {
                            key: format!("/registry/pods/ns-{:03}/pod-{key:07}", key % 100).into_bytes(),
                            value: format!("{{\"round\":{round},\"spec\":\"{}\"}}", "x".repeat(60)).into_bytes(),
                            ..Default::default()
                        })),
                    })
                    .collect();
                node.txn(t4_proto::etcdserverpb::TxnRequest { success, ..Default::default() }).await.unwrap();
            }
        }
    };
    put_many((0..keys_total).collect(), 0).await;
    let first = node.checkpoint().await.unwrap();
    // 1% of the keys, spread over the whole keyspace; then another 1% and a compaction
    // (which removes old entries from all over the history).
    for (round, compact) in [(1, false), (2, true)] {
        put_many((round..keys_total).step_by(100).collect(), round).await;
        if compact {
            node.compact(node.current_revision()).await.unwrap();
        }
        let next = node.checkpoint().await.unwrap();
        let ratio = next.bytes_uploaded as f64 / first.bytes_uploaded as f64;
        println!(
            "dedup ({keys_total} keys): first checkpoint {} bytes in {} chunks; after 1% changed{}: {} bytes uploaded ({} new chunks, {} kept) = {:.2}%",
            first.bytes_uploaded,
            first.chunks,
            if compact { " and a compaction" } else { "" },
            next.bytes_uploaded,
            next.chunks_uploaded,
            next.chunks_reused,
            ratio * 100.0
        );
        assert!(ratio < 0.05, "round {round}: the checkpoint uploaded {:.2}% of the first", ratio * 100.0);
    }
    // A node restored from the last checkpoint (stale entries applied away) holds the same
    // history.
    let revision = node.current_revision();
    let hash = node.hash_kv(revision).await.unwrap();
    let compact = node.compact_revision();
    node.close().await.unwrap();
    let fresh = open(&SimDisk::new(), bucket.clone(), "b").await.unwrap();
    assert_eq!(fresh.hash_kv(revision).await.unwrap(), hash);
    assert_eq!(fresh.compact_revision(), compact);
    fresh.close().await.unwrap();
}

/// A store that drops one kind of write condition, as some S3 servers do.
#[derive(Debug)]
struct Ignoring {
    inner: MemObjectStore,
    ignore_if_none_match: bool,
}

#[async_trait]
impl ObjectStore for Ignoring {
    async fn get(&self, key: &str) -> Result<(Bytes, String), ObjectError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, ObjectError> {
        self.inner.get_range(key, start, end).await
    }
    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<ObjectInfo>, ObjectError> {
        self.inner.list(prefix, start_after, limit).await
    }
    async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<PutOutcome, ObjectError> {
        let condition = match condition {
            Condition::IfNoneMatch if self.ignore_if_none_match => Condition::Always,
            Condition::IfMatch(_) if !self.ignore_if_none_match => Condition::Always,
            other => other,
        };
        self.inner.put(key, body, condition).await
    }
    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), ObjectError> {
        self.inner.delete(key, if_match).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_ignores_conditional_writes_is_refused_at_open() {
    for (ignore_if_none_match, named) in [(true, "If-None-Match: *"), (false, "If-Match")] {
        let store: Arc<dyn ObjectStore> = Arc::new(Ignoring { inner: MemObjectStore::new(), ignore_if_none_match });
        let Err(refused) = open(&SimDisk::new(), store.clone(), "probe").await else { panic!("a store without fencing is refused") };
        assert_eq!(refused.kind(), ErrorKind::InvalidArgument);
        assert!(refused.to_string().contains(&format!("does not enforce {named}")), "{refused}");
        assert!(store.list("", None, 10).await.unwrap().is_empty(), "the probe wrote nothing else and cleaned up");
    }
    tracing::info!("--- a store that enforces both opens, and leaves no probe behind");
    let store: Arc<dyn ObjectStore> = Arc::new(MemObjectStore::new());
    let node = open(&SimDisk::new(), store.clone(), "probe").await.unwrap();
    node.close().await.unwrap();
    let probes = store.list(t4::durability::layout::PROBE_DIR, None, 10).await.unwrap();
    assert!(probes.is_empty(), "{probes:?}");
}
