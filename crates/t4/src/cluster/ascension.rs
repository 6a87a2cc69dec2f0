//! What a member does between taking the lock and serving as leader (docs/clustering.md
//! "adopt-best-log"), as a pure state machine: ask every voter for a promise of the new term,
//! and once a majority of the recorded voters promised, adopt the best log among their
//! answers — the highest (last term, last index) — fetching what this member lacks from the
//! voter that holds it. Every record acknowledged under an older term was on a majority of
//! the voters, so at least one answer holds it, and the best answer's log holds every such
//! record (each older leader adopted its predecessors' the same way).
//!
//! Invariants: **majority-of-voters** (only recorded voters' promises count, each once, the
//! new leader's own included); **adopt-best-log** (nothing is served before a majority
//! answered, and the log adopted is the best answer's).

use std::collections::BTreeMap;

use super::log_terms::Position;
use super::members::Members;

/// What the new leader must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Wait for more answers.
    Wait,
    /// A voter follows a newer term: this member was deposed before it could serve.
    Deposed { newer_term: u64 },
    /// Fetch `voter`'s records after `after` (this member's commit index: what is committed
    /// is the same everywhere) through `through`, and take them as a follower takes an
    /// append; then write the term's first record.
    Fetch { voter: String, after: u64, through: Position },
    /// This member's own log is the best: write the term's first record after it.
    Ready { last: Position },
}

#[derive(Debug, Clone)]
pub struct Ascension {
    term: u64,
    me: String,
    members: Members,
    /// This member's commit index (where a fetch starts).
    commit: u64,
    answers: BTreeMap<String, Position>,
    decided: Option<Step>,
}

impl Ascension {
    /// A member `me` that took `term` holding `last` (promised to itself), with its commit
    /// index, under the membership `members` read after taking the lock.
    pub fn new(term: u64, me: impl Into<String>, members: Members, last: Position, commit: u64) -> Self {
        let me = me.into();
        let mut ascension = Self { term, me: me.clone(), members, commit, answers: BTreeMap::new(), decided: None };
        ascension.answered(&me, Ok(last));
        ascension
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    /// The voters to ask (every one but this member).
    pub fn to_ask(&self) -> Vec<String> {
        self.members.voters().map(|voter| voter.name.clone()).filter(|name| *name != self.me).collect()
    }

    /// `voter` answered: its last position once it promised, or the newer term it follows.
    pub fn answered(&mut self, voter: &str, answer: Result<Position, u64>) -> Step {
        if let Some(decided) = &self.decided {
            return decided.clone();
        }
        match answer {
            Err(newer_term) if newer_term > self.term => {
                let step = Step::Deposed { newer_term };
                self.decided = Some(step.clone());
                return step;
            }
            Err(_) => return Step::Wait,
            // majority-of-voters: a learner's or a stranger's answer counts for nothing.
            Ok(last) if self.members.is_voter(voter) => {
                self.answers.entry(voter.to_string()).or_insert(last);
            }
            Ok(_) => return Step::Wait,
        }
        if self.answers.len() < self.members.quorum() {
            return Step::Wait;
        }
        // adopt-best-log: the highest (last term, last index); on a tie this member's own.
        let (best_voter, best) = self
            .answers
            .iter()
            .max_by_key(|(voter, last)| (last.term, last.index, **voter == self.me))
            .map(|(voter, last)| (voter.clone(), *last))
            .expect("a majority answered");
        let mine = self.answers[&self.me];
        let step = if best_voter == self.me || best == mine {
            Step::Ready { last: mine }
        } else {
            Step::Fetch { voter: best_voter, after: self.commit, through: best }
        };
        self.decided = Some(step.clone());
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::members;

    fn at(index: u64, term: u64) -> Position {
        Position { index, term }
    }

    #[test]
    fn a_majority_of_voters_must_answer_and_learners_do_not_count() {
        let mut ascension = Ascension::new(5, "a", members(&["a", "b", "c", "d", "e"], &["l"]), at(10, 4), 8);
        assert_eq!(ascension.to_ask(), ["b", "c", "d", "e"]);
        assert_eq!(ascension.answered("l", Ok(at(50, 4))), Step::Wait, "a learner's answer");
        assert_eq!(ascension.answered("b", Ok(at(9, 4))), Step::Wait);
        assert_eq!(ascension.answered("b", Ok(at(9, 4))), Step::Wait, "the same voter twice counts once");
        assert_eq!(ascension.answered("c", Ok(at(10, 4))), Step::Ready { last: at(10, 4) }, "a, b, c: three of five");
        assert_eq!(ascension.answered("d", Ok(at(12, 4))), Step::Ready { last: at(10, 4) }, "decided: later answers change nothing");
    }

    #[test]
    fn the_best_log_is_the_highest_last_term_then_the_longest() {
        // b's log is longer, c's ends in a newer term: c's wins (a longer log of an older
        // term may hold a deposed leader's tail that was never acknowledged).
        let mut ascension = Ascension::new(7, "a", members(&["a", "b", "c", "d", "e"], &[]), at(6, 3), 4);
        ascension.answered("b", Ok(at(12, 3)));
        assert_eq!(ascension.answered("c", Ok(at(8, 5))), Step::Fetch { voter: "c".into(), after: 4, through: at(8, 5) });
        let mut longer = Ascension::new(7, "a", members(&["a", "b", "c"], &[]), at(6, 5), 4);
        assert_eq!(longer.answered("b", Ok(at(9, 5))), Step::Fetch { voter: "b".into(), after: 4, through: at(9, 5) });
    }

    #[test]
    fn a_voter_following_a_newer_term_deposes_the_new_leader() {
        let mut ascension = Ascension::new(4, "a", members(&["a", "b", "c"], &[]), at(3, 2), 3);
        assert_eq!(ascension.answered("b", Err(3)), Step::Wait, "an older term than ours: a stale answer");
        assert_eq!(ascension.answered("b", Err(6)), Step::Deposed { newer_term: 6 });
        assert_eq!(ascension.answered("c", Ok(at(3, 2))), Step::Deposed { newer_term: 6 });
    }

    #[test]
    fn a_single_voter_is_its_own_majority() {
        let ascension = Ascension::new(2, "a", members(&["a"], &["b"]), at(5, 1), 5);
        assert!(ascension.to_ask().is_empty());
        let mut again = ascension.clone();
        assert_eq!(again.answered("b", Ok(at(9, 1))), Step::Ready { last: at(5, 1) });
    }

    /// Every majority of five voters, for a history where index 5 (term 3) was acknowledged
    /// on a majority {a, b, c} while d and e hold a deposed term-2 leader's longer tail:
    /// whichever majority answers, the adopted log holds index 5 of term 3.
    #[test]
    fn whichever_majority_answers_the_adopted_log_holds_every_acknowledged_record() {
        let logs = [("a", at(5, 3)), ("b", at(6, 3)), ("c", at(5, 3)), ("d", at(9, 2)), ("e", at(7, 2))];
        let names: Vec<&str> = logs.iter().map(|(name, _)| *name).collect();
        for mask in 0u32..32 {
            let chosen: Vec<usize> = (0..5).filter(|bit| mask & (1 << bit) != 0).collect();
            if chosen.len() < 3 {
                continue;
            }
            let (me, my_last) = logs[chosen[0]];
            let mut ascension = Ascension::new(4, me, members(&names, &[]), my_last, 0);
            let mut step = Step::Wait;
            for &index in &chosen[1..] {
                step = ascension.answered(logs[index].0, Ok(logs[index].1));
            }
            let adopted = match step {
                Step::Ready { last } => last,
                Step::Fetch { through, .. } => through,
                other => panic!("{chosen:?}: {other:?}"),
            };
            assert_eq!(adopted.term, 3, "majority {chosen:?} adopted {adopted:?}, losing the acknowledged index 5");
            assert!(adopted.index >= 5);
        }
    }
}
