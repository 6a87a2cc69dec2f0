use std::sync::Arc;

use super::*;
use crate::cluster::wire::receive_append;
use crate::env::{Disk, SimDisk};
use crate::wal::{self, Change, ChangeKind};

const SEGMENT_BYTES: u64 = 64 << 10;

fn put(index: u64, value: &str) -> Record {
    let change = Change { key: format!("k{index}").into_bytes(), kind: ChangeKind::Put { value: value.as_bytes().to_vec(), lease: 0 } };
    Record { index, body: RecordBody::Txn { revision: index as i64 + 1, changes: vec![change] } }
}

fn term(index: u64, term: u64) -> Record {
    Record { index, body: RecordBody::Term { term } }
}

/// Opens the member log on `disk` as a node would: the WAL recovered above the floor.
fn open(disk: &Arc<dyn Disk>) -> MemberLog {
    let floor = Position::default();
    let recovered = wal::recover(disk, floor.index).unwrap();
    let next = recovered.records.last().map_or(floor.index + 1, |record| record.index + 1);
    let writer = WalWriter::open(disk.clone(), recovered.segments, recovered.last_len, next, SEGMENT_BYTES).unwrap();
    MemberLog::open(disk.clone(), floor, recovered.records, writer).unwrap()
}

fn fresh() -> (Arc<dyn Disk>, MemberLog) {
    let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
    let log = open(&disk);
    (disk, log)
}

/// A leader of `leader_term` whose own log is `records` (its term record first).
fn leader(leader_term: u64, records: Vec<Record>) -> MemberLog {
    let (_, mut log) = fresh();
    assert!(log.promise(leader_term).unwrap().promised);
    log.append_own(leader_term, records.into()).unwrap();
    log
}

/// Sends `from`'s append for a member whose next record is `next` to `to`.
fn send(from: &MemberLog, term: u64, next: u64, to: &mut MemberLog) -> AppendResponse {
    let request = from.append_request(term, "leader", next, 1 << 20).unwrap().expect("held");
    to.append(&receive_append(request).unwrap()).unwrap()
}

#[test]
fn a_follower_takes_the_leaders_log_and_applies_only_what_the_leader_committed() {
    let mut leader = leader(1, vec![term(1, 1), put(2, "a"), put(3, "b")]);
    leader.append_own(1, vec![put(4, "c")].into()).unwrap();
    let (_, mut follower) = fresh();
    let answer = send(&leader, 1, 1, &mut follower);
    assert!(answer.accepted);
    assert_eq!(answer.durable.map(Position::from), Some(Position { index: 4, term: 1 }));
    assert!(follower.committed_after(0).is_empty(), "nothing is committed before the leader says so");
    leader.committed(4);
    let answer = send(&leader, 1, 5, &mut follower);
    assert!(answer.accepted);
    assert_eq!(follower.commit(), 4);
    assert_eq!(follower.committed_after(0), leader.committed_after(0));
    assert_eq!(follower.committed_after(2).iter().map(|record| record.index).collect::<Vec<_>>(), vec![3, 4]);
}

#[test]
fn a_divergent_uncommitted_tail_is_cut_and_replaced_and_the_cut_survives_reopening() {
    // Term 1 committed 1..3 on this member, then sent 4..6 that no majority took.
    let mut old = leader(1, vec![term(1, 1), put(2, "a"), put(3, "b")]);
    old.committed(3);
    let (disk, mut follower) = fresh();
    assert!(send(&old, 1, 1, &mut follower).accepted);
    old.append_own(1, vec![put(4, "stale"), put(5, "stale"), put(6, "stale")].into()).unwrap();
    assert!(send(&old, 1, 4, &mut follower).accepted);
    assert_eq!((follower.last(), follower.commit()), (Position { index: 6, term: 1 }, 3));

    // Term 2 kept 1..3 and wrote its own 4..5.
    let mut new = leader(1, vec![term(1, 1), put(2, "a"), put(3, "b")]);
    assert!(new.promise(2).unwrap().promised);
    new.append_own(2, vec![term(4, 2), put(5, "new")].into()).unwrap();
    // The leader starts at its own end; the follower's answer backs it up to the run of term 1.
    let refused = send(&new, 2, 6, &mut follower);
    assert!(!refused.accepted);
    let answer = send(&new, 2, refused.mismatch_index, &mut follower);
    assert!(answer.accepted, "{answer:?}");
    assert_eq!(follower.last(), Position { index: 5, term: 2 });
    assert_eq!(follower.terms().runs(), &[(1, 1), (4, 2)]);

    drop(follower);
    let reopened = open(&disk);
    assert_eq!(reopened.last(), Position { index: 5, term: 2 });
    assert_eq!(reopened.terms().runs(), &[(1, 1), (4, 2)]);
    assert_eq!(reopened.promised(), 2);
    let records = reopened.tail.iter().flat_map(|batch| batch.records.iter().cloned()).collect::<Vec<_>>();
    assert_eq!(records, vec![term(1, 1), put(2, "a"), put(3, "b"), term(4, 2), put(5, "new")]);
}

#[test]
fn a_cut_at_or_below_the_commit_index_is_refused_before_the_wal_is_touched() {
    let mut old = leader(1, vec![term(1, 1), put(2, "a"), put(3, "b"), put(4, "c")]);
    old.committed(3);
    let (disk, mut follower) = fresh();
    assert!(send(&old, 1, 1, &mut follower).accepted);
    assert_eq!(follower.commit(), 3);
    // A forged append of term 2 claiming another record at 3 (committed here).
    let batch = TailBatch::new(2, vec![put(3, "forged")].into()).unwrap();
    let request =
        AppendRequest { term: 2, prev: Some(Position { index: 2, term: 1 }.into()), batches: vec![batch.to_wire()], ..Default::default() };
    let refused = follower.append(&receive_append(request).unwrap()).unwrap_err();
    assert!(refused.to_string().contains("invariant never-truncate-committed"), "{refused}");
    drop(follower);
    let reopened = open(&disk);
    assert_eq!(reopened.last(), Position { index: 4, term: 1 }, "the WAL kept every record");
}

#[test]
fn a_promise_outlives_a_restart() {
    let (disk, mut follower) = fresh();
    let answer = follower.promise(7).unwrap();
    assert!(answer.promised);
    drop(follower);
    let mut follower = open(&disk);
    assert_eq!(follower.promised(), 7);
    let older = leader(6, vec![term(1, 6)]);
    let refused = send(&older, 6, 1, &mut follower);
    assert_eq!((refused.accepted, refused.term), (false, 7));
    let answer = follower.promise(6).unwrap();
    assert_eq!((answer.promised, answer.term), (false, 7));
    assert_eq!(follower.last(), Position::default(), "nothing of the older term was taken");
}

#[test]
fn records_released_from_memory_are_not_sent_and_a_later_start_is() {
    let mut leader = leader(1, vec![term(1, 1), put(2, "a")]);
    leader.append_own(1, vec![put(3, "b")].into()).unwrap();
    leader.committed(3);
    leader.release_through(2);
    assert!(leader.append_request(1, "leader", 2, 1 << 20).unwrap().is_none(), "record 2 is gone: catch up from the bucket");
    let request = leader.append_request(1, "leader", 3, 1 << 20).unwrap().expect("record 3 is held");
    assert_eq!(request.prev.map(Position::from), Some(Position { index: 2, term: 1 }));
    assert_eq!(request.batches.len(), 1);
    // From the middle of a batch: re-encoded from there.
    let (_, mut whole) = fresh();
    let leader = {
        let mut log = self::leader(1, vec![term(1, 1), put(2, "a"), put(3, "b")]);
        log.committed(3);
        log
    };
    assert!(send(&leader, 1, 1, &mut whole).accepted);
    let request = leader.append_request(1, "leader", 2, 1 << 20).unwrap().unwrap();
    let received = receive_append(request).unwrap();
    assert_eq!(received.records[0].0, vec![put(2, "a"), put(3, "b")]);
}
