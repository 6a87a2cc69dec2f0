//! A member's side of replication, as a pure state machine (docs/clustering.md
//! "Replication"): what to do with a leader's append or a new leader's promise request.
//! The I/O (cutting the local log, writing and fsyncing records, persisting the promised
//! term) is the caller's; it reports back with [`Replica::appended`].
//!
//! Invariants (checked where named): **log-matching** and **never-truncate-committed**
//! ([`super::log_terms`]); **promise** — once a member promised term T it refuses appends and
//! promises of older terms; **commit-matched** — a member's commit index never passes the
//! last record the leader's append matched (a stale tail beyond it may differ from the
//! leader's log), and never goes back.

use super::log_terms::{Fit, LogTerms, Position};
use crate::error::Result;

/// One batch of an append, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub term: u64,
    pub first: u64,
    pub count: u64,
}

impl BatchMeta {
    pub fn last(&self) -> u64 {
        self.first + self.count - 1
    }
}

/// A leader's append, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    pub term: u64,
    pub prev: Position,
    /// Dense from `prev.index + 1`.
    pub batches: Vec<BatchMeta>,
    pub commit: u64,
}

/// What to do with an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendPlan {
    /// Refuse: answer at once. `term` is this member's (above the append's: the sender was
    /// deposed); resend from `from` (0 when refused for its term).
    Refuse { term: u64, from: u64 },
    /// Take it: persist `promise` (a newer term) first, cut the local log after
    /// `truncate_after`, append the records of each `(batch, skip)`: batch `batch` of the
    /// append without its first `skip` records (already held); then report with
    /// [`Replica::appended`].
    Take { promise: Option<u64>, truncate_after: Option<u64>, append: Vec<(usize, u64)>, matched: u64 },
}

impl Fit {
    /// The fit, or `Matches` when checking is skipped (the planted bug).
    fn into_checked(self, skip: bool) -> Fit {
        if skip {
            Fit::Matches
        } else {
            self
        }
    }
}

/// A member's log as replication sees it.
#[derive(Debug, Clone)]
pub struct Replica {
    log: LogTerms,
    /// The newest term this member follows (promised or appended by).
    promised: u64,
    commit: u64,
}

impl Replica {
    pub fn new(log: LogTerms, promised: u64, commit: u64) -> Self {
        Self { log, promised, commit }
    }

    pub fn log(&self) -> &LogTerms {
        &self.log
    }

    pub fn promised(&self) -> u64 {
        self.promised
    }

    /// The highest index this member may apply and serve.
    pub fn commit(&self) -> u64 {
        self.commit
    }

    /// A new leader of `term` asks for a promise: `Ok(last)` once the caller persisted the
    /// term (answer with this position), or the newer term this member already follows.
    pub fn promise(&mut self, term: u64) -> std::result::Result<Position, u64> {
        // promise
        if term < self.promised {
            return Err(self.promised);
        }
        self.promised = term;
        Ok(self.log.last())
    }

    /// The leader's own records `first ..= first + count - 1`, of its term (the promised
    /// one), now follow its log durably.
    pub fn appended_own(&mut self, first: u64, count: u64, term: u64) -> Result<()> {
        if term != self.promised {
            return Err(crate::error::Error::Corrupt(format!(
                "log: a leader of term {term} appending while following term {}",
                self.promised
            )));
        }
        self.log.append(first, count, term)
    }

    /// The leader counted `index` committed (`quorum::commit_index`): never past its own
    /// log, never back.
    pub fn committed(&mut self, index: u64) {
        self.commit = self.commit.max(index.min(self.log.last().index));
    }

    /// Plans an append (nothing changes until [`Replica::appended`]).
    pub fn plan(&self, append: &Append) -> AppendPlan {
        // promise
        if append.term < self.promised {
            return AppendPlan::Refuse { term: self.promised, from: 0 };
        }
        // log-matching (planted, simulator tests only: not checked)
        if let Fit::Refused { from } = self.log.check_append(append.prev).into_checked(planted_bug!(AppendWithoutMatching)) {
            return AppendPlan::Refuse { term: self.promised.max(append.term), from };
        }
        let promise = (append.term > self.promised).then_some(append.term);
        let mut truncate_after = None;
        let mut take = Vec::new();
        let mut matched = append.prev.index;
        let floor = self.log.floor().index;
        for (at, batch) in append.batches.iter().enumerate() {
            if batch.count == 0 {
                continue;
            }
            matched = batch.last();
            if truncate_after.is_some() {
                take.push((at, 0));
                continue;
            }
            // Records at or below the floor, or already held with the same term, are kept;
            // the first that differs cuts the tail from it.
            let mut skip = 0;
            while skip < batch.count {
                let index = batch.first + skip;
                if index > self.log.last().index {
                    break;
                }
                if index > floor && self.log.term_at(index) != Some(batch.term) {
                    truncate_after = Some(index - 1);
                    break;
                }
                skip += 1;
            }
            if skip < batch.count {
                take.push((at, skip));
            }
        }
        AppendPlan::Take { promise, truncate_after, append: take, matched }
    }

    /// The caller carried out `plan` for `append` (everything in it is durable): the log,
    /// the promised term and the commit index move on. Returns the last position known to
    /// match the leader's log and be durable here (what the answer names: a stale tail
    /// beyond the append is not counted).
    pub fn appended(&mut self, append: &Append, plan: &AppendPlan) -> Result<Position> {
        let AppendPlan::Take { promise, truncate_after, append: taken, matched } = plan else {
            return Ok(self.log.last());
        };
        if let Some(term) = promise {
            self.promised = self.promised.max(*term);
        }
        if let Some(after) = truncate_after {
            self.log.truncate_after(*after, self.commit)?;
        }
        for (at, skip) in taken {
            let batch = append.batches[*at];
            self.log.append(batch.first + skip, batch.count - skip, batch.term)?;
        }
        // commit-matched
        self.commit = self.commit.max(append.commit.min(*matched));
        // What the leader may count: the records it sent, not a stale tail beyond them.
        let term = self.log.term_at(*matched).unwrap_or(0);
        Ok(Position { index: *matched, term })
    }
}

#[cfg(test)]
#[path = "replica_test.rs"]
mod replica_test;
