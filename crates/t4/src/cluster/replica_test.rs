//! A member's side of replication: exact plans for the cases, then a property: whatever a
//! follower's log holds (a prefix of the leader's, then a deposed leader's tail), the
//! leader's appends — some answers lost, old ones delivered again — make it the leader's
//! log, and it never counts as committed a record the leader's log does not hold.

use proptest::prelude::*;

use super::*;
use crate::cluster::progress::Progress;

fn at(index: u64, term: u64) -> Position {
    Position { index, term }
}

fn batch(term: u64, first: u64, count: u64) -> BatchMeta {
    BatchMeta { term, first, count }
}

/// A log of `terms[i]` at index i + 1, above the empty floor.
fn log_of(terms: &[u64]) -> LogTerms {
    let mut log = LogTerms::new(Position::default());
    for (i, term) in terms.iter().enumerate() {
        log.append(i as u64 + 1, 1, *term).unwrap();
    }
    log
}

#[test]
fn an_append_after_the_end_is_taken_and_commits_only_what_it_matched() {
    let mut replica = Replica::new(log_of(&[1, 1, 2]), 2, 1);
    let append = Append { term: 3, prev: at(3, 2), batches: vec![batch(3, 4, 2)], commit: 9 };
    let plan = replica.plan(&append);
    assert_eq!(plan, AppendPlan::Take { promise: Some(3), truncate_after: None, append: vec![(0, 0)], matched: 5 });
    assert_eq!(replica.appended(&append, &plan).unwrap(), at(5, 3));
    assert_eq!((replica.promised(), replica.commit()), (3, 5), "the leader's commit 9 is past what this append matched");
}

#[test]
fn a_deposed_leaders_tail_is_cut_where_the_new_log_differs() {
    // Held: 1..=3 of term 1, then 4..=6 of term 2 (a deposed leader's, never committed).
    let mut replica = Replica::new(log_of(&[1, 1, 1, 2, 2, 2]), 2, 3);
    let append = Append { term: 4, prev: at(2, 1), batches: vec![batch(1, 3, 1), batch(4, 4, 2)], commit: 4 };
    let plan = replica.plan(&append);
    assert_eq!(plan, AppendPlan::Take { promise: Some(4), truncate_after: Some(3), append: vec![(1, 0)], matched: 5 });
    assert_eq!(replica.appended(&append, &plan).unwrap(), at(5, 4));
    assert_eq!((replica.log().last(), replica.log().term_at(6), replica.commit()), (at(5, 4), None, 4));
}

#[test]
fn records_already_held_are_skipped_and_a_stale_tail_beyond_is_not_counted() {
    let mut replica = Replica::new(log_of(&[1, 1, 1, 3, 3]), 3, 0);
    // The leader (term 5) sends 2..=3, which this member holds; 4..=5 of term 3 are stale.
    let append = Append { term: 5, prev: at(1, 1), batches: vec![batch(1, 2, 2)], commit: 3 };
    let plan = replica.plan(&append);
    assert_eq!(plan, AppendPlan::Take { promise: Some(5), truncate_after: None, append: vec![], matched: 3 });
    assert_eq!(replica.appended(&append, &plan).unwrap(), at(3, 1), "answers 3, not its last record 5");
    assert_eq!(replica.commit(), 3);
}

#[test]
fn appends_of_an_older_term_and_appends_that_do_not_match_are_refused() {
    let replica = Replica::new(log_of(&[1, 2, 2]), 4, 1);
    let old = Append { term: 3, prev: at(3, 2), batches: vec![batch(3, 4, 1)], commit: 3 };
    assert_eq!(replica.plan(&old), AppendPlan::Refuse { term: 4, from: 0 });
    let gap = Append { term: 4, prev: at(7, 4), batches: vec![batch(4, 8, 1)], commit: 3 };
    assert_eq!(replica.plan(&gap), AppendPlan::Refuse { term: 4, from: 4 });
    let other = Append { term: 5, prev: at(3, 3), batches: vec![batch(5, 4, 1)], commit: 3 };
    assert_eq!(replica.plan(&other), AppendPlan::Refuse { term: 5, from: 2 }, "term 2's run is suspect from 2");
}

#[test]
fn a_promise_is_given_to_the_newest_term_only() {
    let mut replica = Replica::new(log_of(&[1, 2]), 2, 1);
    assert_eq!(replica.promise(3), Ok(at(2, 2)));
    assert_eq!(replica.promise(3), Ok(at(2, 2)), "asked again (a lost answer)");
    assert_eq!(replica.promise(2), Err(3));
    let late = Append { term: 2, prev: at(2, 2), batches: vec![batch(2, 3, 1)], commit: 2 };
    assert_eq!(replica.plan(&late), AppendPlan::Refuse { term: 3, from: 0 }, "the old leader cannot add to a majority any more");
}

#[test]
fn a_leader_sending_a_record_that_conflicts_below_the_commit_index_is_an_error() {
    let mut replica = Replica::new(log_of(&[1, 1, 2]), 2, 3);
    let wrong = Append { term: 3, prev: at(1, 1), batches: vec![batch(3, 2, 2)], commit: 3 };
    let plan = replica.plan(&wrong);
    let error = replica.appended(&wrong, &plan).unwrap_err();
    assert!(error.to_string().contains("invariant never-truncate-committed"), "{error}");
}

/// The leader's side of the property: its log as terms per index (1-based).
fn append_from(leader: &[u64], term: u64, next: u64, most: u64, commit: u64) -> Append {
    let last = leader.len() as u64;
    let prev = next - 1;
    let prev_term = if prev == 0 { 0 } else { leader[prev as usize - 1] };
    let mut batches: Vec<BatchMeta> = Vec::new();
    for index in next..=(next + most - 1).min(last) {
        let record_term = leader[index as usize - 1];
        match batches.last_mut() {
            Some(open) if open.term == record_term => open.count += 1,
            _ => batches.push(batch(record_term, index, 1)),
        }
    }
    Append { term, prev: at(prev, prev_term), batches, commit }
}

proptest! {
    #[test]
    fn any_follower_log_converges_to_the_leaders_and_commits_only_matching_records(
        runs in prop::collection::vec((1u64..4, 1usize..6), 1..8),
        keep in 0usize..40,
        tail in prop::collection::vec(1usize..4, 0..4),
        most in 1u64..6,
        losses in prop::collection::vec(0u8..10, 60),
    ) {
        // The leader's log: runs of even terms, ending with its own term's first record.
        let mut leader = Vec::new();
        let mut term = 0;
        for (step, len) in &runs {
            term += 2 * step;
            leader.extend(std::iter::repeat_n(term, *len));
        }
        let own = term + 2;
        leader.push(own);
        // The follower: a prefix of it, then a deposed leader's tail of odd terms, none of
        // which the leader's log holds.
        let keep = keep.min(leader.len() - 1);
        let mut follower: Vec<u64> = leader[..keep].to_vec();
        let mut odd = follower.last().copied().unwrap_or(0) | 1;
        for len in &tail {
            if odd >= own {
                break;
            }
            follower.extend(std::iter::repeat_n(odd, *len));
            odd += 2;
        }
        let committed = keep as u64 / 2;
        let mut replica = Replica::new(log_of(&follower), follower.last().copied().unwrap_or(0), committed);
        let mut progress = Progress::new(leader.len() as u64, 1 << 20);
        let leader_commit = leader.len() as u64;
        let mut sent: Vec<Append> = Vec::new();
        for (round, loss) in losses.iter().enumerate() {
            // Now and then an old append arrives again, late.
            let append = if *loss == 9 && !sent.is_empty() {
                sent[round % sent.len()].clone()
            } else {
                if progress.matched() == leader.len() as u64 {
                    break;
                }
                // From the leader's last record on this is a heartbeat (no records): it
                // probes where the follower's log matches.
                let append = append_from(&leader, own, progress.next(), most, leader_commit);
                let last = append.batches.last().map_or(append.prev.index, |batch| batch.last());
                progress.sent(last, 1);
                sent.push(append.clone());
                append
            };
            let plan = replica.plan(&append);
            let answer = match &plan {
                AppendPlan::Refuse { from, .. } => Err(*from),
                AppendPlan::Take { .. } => Ok(replica.appended(&append, &plan).expect("a correct leader breaks no invariant")),
            };
            // commit-matched: everything at or below the commit index is the leader's.
            for index in 1..=replica.commit() {
                prop_assert_eq!(replica.log().term_at(index), Some(leader[index as usize - 1]), "committed {} differs", index);
            }
            if *loss < 2 {
                progress.lost();
                continue;
            }
            match answer {
                Err(from) => progress.refused(from),
                Ok(durable) => {
                    prop_assert_eq!(Some(durable.term), (durable.index > 0).then(|| leader[durable.index as usize - 1]).or(Some(0)));
                    progress.taken(durable.index);
                }
            }
        }
        // 60 rounds, answers lost 1 time in 5: every log of this size gets through.
        prop_assert_eq!(progress.matched(), leader.len() as u64, "not converged in 60 rounds");
        prop_assert_eq!(replica.log().last().index, leader.len() as u64);
        prop_assert_eq!(replica.commit(), leader_commit);
        for index in 1..=progress.matched() {
            prop_assert_eq!(replica.log().term_at(index), Some(leader[index as usize - 1]));
        }
    }
}
