//! Which term wrote each record of a member's log, and whether a leader's append fits it
//! (docs/clustering.md "Replication").
//!
//! Terms change rarely, so a log's terms are kept as runs: (first index, term) for each
//! term, in order. Below the log's floor (records already in the store, e.g. restored from
//! a checkpoint) only the floor record's own position is known; those records are
//! committed, and committed records are the same on every member.
//!
//! Invariants (each checked where named):
//! - **log-matching** ([`LogTerms::check_append`]): a member accepts records after `prev`
//!   only if its log holds `prev` itself (same index, same term); otherwise it refuses and
//!   names where its log stops matching;
//! - **terms-only-up** ([`LogTerms::append`]): a log's terms never go back;
//! - **never-truncate-committed** ([`LogTerms::truncate_after`]): a divergent tail is cut
//!   only above the commit index (what is committed is never taken back).

use crate::error::{Error, Result};

/// One record's place: its index and the term that wrote it (index 0: the empty log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub index: u64,
    pub term: u64,
}

/// How an append's `prev` fits a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// The log holds `prev`: take the records after it (cutting any tail that differs).
    Matches,
    /// The log does not hold `prev`: resend from `from` (the leader backs up to it).
    Refused { from: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTerms {
    floor: Position,
    /// (first index, term), first indexes ascending, terms ascending, all above the floor.
    runs: Vec<(u64, u64)>,
    last: u64,
}

impl LogTerms {
    /// A log whose records through `floor` are in the store.
    pub fn new(floor: Position) -> Self {
        Self { floor, runs: Vec::new(), last: floor.index }
    }

    pub fn floor(&self) -> Position {
        self.floor
    }

    /// The last record's position.
    pub fn last(&self) -> Position {
        Position { index: self.last, term: self.term_at(self.last).expect("the last record's term is known") }
    }

    /// The term of record `index`: `None` below the floor (not known here) and past the end.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.floor.index {
            return Some(self.floor.term);
        }
        if index < self.floor.index || index > self.last {
            return None;
        }
        // Records after the floor and before the first run are of the floor's term.
        Some(self.runs.iter().rev().find(|(first, _)| *first <= index).map_or(self.floor.term, |(_, term)| *term))
    }

    /// The first index of the run of one term that holds `index` (the floor's successor
    /// for records of the floor's term): where a leader probes next after a follower refused
    /// an append whose `prev` was `index` — one whole term further back at a time.
    pub fn run_start(&self, index: u64) -> u64 {
        self.runs.iter().rev().find(|(first, _)| *first <= index).map_or(self.floor.index + 1, |(first, _)| *first).min(index.max(1))
    }

    /// Whether records after `prev` may follow this log.
    pub fn check_append(&self, prev: Position) -> Fit {
        // log-matching
        if prev.index < self.floor.index {
            // Below the floor every record is committed, hence the same as the leader's: the
            // records up to the floor are skipped, the rest taken.
            return Fit::Matches;
        }
        match self.term_at(prev.index) {
            Some(term) if term == prev.term => Fit::Matches,
            None => Fit::Refused { from: self.last + 1 },
            // Another term wrote `prev` here: that term's run, all of it, is suspect.
            Some(term) => {
                let run_start = self.runs.iter().find(|(_, run)| *run == term).map_or(self.floor.index + 1, |(first, _)| *first);
                Fit::Refused { from: run_start.max(self.floor.index + 1) }
            }
        }
    }

    /// Records `first ..= first + count - 1` written by `term` now follow the log.
    pub fn append(&mut self, first: u64, count: u64, term: u64) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        if first != self.last + 1 {
            return Err(Error::Corrupt(format!("log: records from {first} appended to a log that ends at {}", self.last)));
        }
        // terms-only-up
        let last_term = self.last().term;
        if term < last_term {
            return Err(Error::Corrupt(format!("invariant terms-only-up: term {term} appended after term {last_term}")));
        }
        if term > last_term {
            self.runs.push((first, term));
        }
        self.last = first + count - 1;
        Ok(())
    }

    /// Cuts every record after `index` (a deposed leader's tail), never one at or below
    /// `commit`.
    pub fn truncate_after(&mut self, index: u64, commit: u64) -> Result<()> {
        // never-truncate-committed
        if index < commit {
            return Err(Error::Corrupt(format!("invariant never-truncate-committed: cutting after {index} below commit {commit}")));
        }
        if index >= self.last {
            return Ok(());
        }
        if index < self.floor.index {
            return Err(Error::Corrupt(format!("log: cutting after {index}, below the floor {}", self.floor.index)));
        }
        self.runs.retain(|(first, _)| *first <= index);
        self.last = index;
        Ok(())
    }

    /// The runs, for persisting them: (first index, term) above the floor.
    pub fn runs(&self) -> &[(u64, u64)] {
        &self.runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(index: u64, term: u64) -> Position {
        Position { index, term }
    }

    /// A log with records 1..=3 of term 1, 4..=6 of term 2, 7..=8 of term 4.
    fn log() -> LogTerms {
        let mut log = LogTerms::new(Position::default());
        log.append(1, 3, 1).unwrap();
        log.append(4, 2, 2).unwrap();
        log.append(6, 1, 2).unwrap();
        log.append(7, 2, 4).unwrap();
        log
    }

    #[test]
    fn terms_are_known_from_the_floor_to_the_end() {
        let log = log();
        let terms: Vec<_> = (0..=9).map(|index| log.term_at(index)).collect();
        assert_eq!(terms, [Some(0), Some(1), Some(1), Some(1), Some(2), Some(2), Some(2), Some(4), Some(4), None]);
        assert_eq!(log.last(), at(8, 4));
        assert_eq!(log.runs(), [(1, 1), (4, 2), (7, 4)]);
        assert_eq!([8, 7, 6, 4, 3, 1].map(|index| log.run_start(index)), [7, 7, 4, 4, 1, 1]);
        let mut restored = LogTerms::new(at(100, 7));
        assert_eq!((restored.term_at(99), restored.term_at(100), restored.last()), (None, Some(7), at(100, 7)));
        // Records of the floor's own term follow it without a run of their own.
        restored.append(101, 2, 7).unwrap();
        assert_eq!((restored.term_at(102), restored.last(), restored.runs()), (Some(7), at(102, 7), &[][..]));
    }

    #[test]
    fn an_append_fits_only_where_the_log_holds_its_prev() {
        let log = log();
        assert_eq!(log.check_append(at(8, 4)), Fit::Matches, "at the end");
        assert_eq!(log.check_append(at(5, 2)), Fit::Matches, "inside: the tail after it is cut on append");
        assert_eq!(log.check_append(at(0, 0)), Fit::Matches, "from the start");
        assert_eq!(log.check_append(at(12, 5)), Fit::Refused { from: 9 }, "past the end: send what is missing");
        assert_eq!(log.check_append(at(8, 5)), Fit::Refused { from: 7 }, "term 4's run is another leader's: resend it all");
        assert_eq!(log.check_append(at(5, 3)), Fit::Refused { from: 4 });
        let restored = LogTerms::new(at(100, 7));
        assert_eq!(restored.check_append(at(50, 3)), Fit::Matches, "below the floor all is committed");
        assert_eq!(restored.check_append(at(100, 6)), Fit::Refused { from: 101 }, "the floor itself never moves back");
    }

    #[test]
    fn terms_only_go_up_and_appends_are_dense() {
        let mut log = log();
        assert!(log.append(9, 1, 3).unwrap_err().to_string().contains("invariant terms-only-up"));
        assert!(log.append(11, 1, 4).unwrap_err().to_string().contains("appended to a log that ends at 8"));
        log.append(9, 1, 4).unwrap();
        assert_eq!(log.last(), at(9, 4));
    }

    #[test]
    fn a_divergent_tail_is_cut_above_the_commit_index_only() {
        let mut log = log();
        assert!(log.truncate_after(4, 5).unwrap_err().to_string().contains("invariant never-truncate-committed"));
        log.truncate_after(5, 5).unwrap();
        assert_eq!((log.last(), log.term_at(6), log.runs()), (at(5, 2), None, &[(1, 1), (4, 2)][..]));
        log.append(6, 3, 5).unwrap();
        assert_eq!(log.last(), at(8, 5));
        log.truncate_after(20, 0).unwrap();
        assert_eq!(log.last(), at(8, 5), "cutting past the end cuts nothing");
        let mut restored = LogTerms::new(at(100, 7));
        assert!(restored.truncate_after(99, 0).is_err());
    }
}
