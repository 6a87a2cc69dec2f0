//! A member's replicated log on its own disk: the local WAL, which term wrote each record
//! ([`LogTerms`], rebuilt at open from the WAL's term records), the promised term (the
//! `promise` file) and the records above the store's applied index, kept in memory (the
//! tail) to apply once committed and, on a leader, to send on. The [`Replica`] state machine
//! decides; this module does the I/O it asks for, in the order that keeps each rule:
//!
//! - **fsync-before-ack**: an append is answered only after its records are in the WAL and
//!   fsynced (`WalWriter::append` syncs), and a newer term only after the promise file is.
//! - **never-truncate-committed**: a cut at or below the commit index is refused *before*
//!   the WAL is touched.
//! - **promise**: the promised term is persisted before any answer that depends on it.
//!
//! Blocking I/O: the node runs it on its own task, one call at a time.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use t4_proto::peer::{AppendRequest, AppendResponse, LogBatch, PromiseResponse};

use super::log_terms::{LogTerms, Position};
use super::promise::Promise;
use super::replica::{AppendPlan, Replica};
use super::snapshot::Staging;
use super::wire::{append_response, promise_response, ReceivedAppend};
use crate::env::Disk;
use crate::error::{Error, Result};
use crate::wal::{encode_batch, Record, RecordBody, WalWriter};

/// Records a batch of the tail holds at most when rebuilt at open.
const REOPENED_BATCH_RECORDS: usize = 256;

/// Records of one term, dense, with their encoded WAL batch.
#[derive(Debug, Clone)]
pub struct TailBatch {
    pub term: u64,
    pub records: Arc<[Record]>,
    pub bytes: Bytes,
}

impl TailBatch {
    fn new(term: u64, records: Arc<[Record]>) -> Result<Self> {
        let bytes = encode_batch(&records)?.into();
        Ok(Self { term, records, bytes })
    }

    pub fn first(&self) -> u64 {
        self.records[0].index
    }

    pub fn last(&self) -> u64 {
        self.records[self.records.len() - 1].index
    }

    /// This batch from record `index` on (re-encoded when that is not its first).
    fn starting_at(&self, index: u64) -> Result<Self> {
        if index <= self.first() {
            return Ok(self.clone());
        }
        Self::new(self.term, self.records[(index - self.first()) as usize..].into())
    }

    fn to_wire(&self) -> LogBatch {
        LogBatch { term: self.term, first_index: self.first(), count: self.records.len() as u64, wal_bytes: self.bytes.to_vec() }
    }
}

pub struct MemberLog {
    disk: Arc<dyn Disk>,
    wal: WalWriter,
    replica: Replica,
    promise: Promise,
    /// Records above the store's applied index (until released), oldest first.
    tail: VecDeque<TailBatch>,
    tail_bytes: usize,
    /// A leader's snapshot being received (`cluster/snapshot.rs`).
    staging: Option<Staging>,
}

impl std::fmt::Debug for MemberLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberLog")
            .field("last", &self.last())
            .field("commit", &self.commit())
            .field("promised", &self.promised())
            .finish_non_exhaustive()
    }
}

impl MemberLog {
    /// The log as found at open: `floor` is the store's applied position, `records` the WAL's
    /// records above it (as recovery read them), `wal` the writer after them. A record's term
    /// is that of the last term record at or before it (the floor's below the first).
    /// Blocking.
    pub fn open(disk: Arc<dyn Disk>, floor: Position, records: Vec<Record>, wal: WalWriter) -> Result<Self> {
        let promise = Promise::read(disk.as_ref())?;
        let mut log = LogTerms::new(floor);
        let mut tail = VecDeque::new();
        let mut term = floor.term;
        let mut run: Vec<Record> = Vec::new();
        let mut close_run = |run: &mut Vec<Record>, term: u64, log: &mut LogTerms| -> Result<()> {
            if let Some(first) = run.first().map(|record| record.index) {
                log.append(first, run.len() as u64, term)?;
                tail.push_back(TailBatch::new(term, std::mem::take(run).into())?);
            }
            Ok(())
        };
        for record in records {
            if let RecordBody::Term { term: next } = record.body {
                close_run(&mut run, term, &mut log)?;
                term = next;
            }
            run.push(record);
            if run.len() >= REOPENED_BATCH_RECORDS {
                close_run(&mut run, term, &mut log)?;
            }
        }
        close_run(&mut run, term, &mut log)?;
        let promised = promise.term.max(log.last().term);
        let replica = Replica::new(log, promised, floor.index);
        let tail_bytes = tail.iter().map(|batch| batch.bytes.len()).sum();
        Ok(Self { disk, wal, replica, promise, tail, tail_bytes, staging: None })
    }

    pub fn last(&self) -> Position {
        self.replica.log().last()
    }

    /// The highest index known committed here (what may be applied and served).
    pub fn commit(&self) -> u64 {
        self.replica.commit()
    }

    pub fn promised(&self) -> u64 {
        self.replica.promised()
    }

    pub fn terms(&self) -> &LogTerms {
        self.replica.log()
    }

    /// Bytes of records held in memory.
    pub fn tail_bytes(&self) -> usize {
        self.tail_bytes
    }

    /// A leader's append, checked by `wire::receive_append`: taken (cutting a divergent
    /// tail, appending and fsyncing what is new) or refused; the answer to send. Blocking.
    pub fn append(&mut self, received: &ReceivedAppend) -> Result<AppendResponse> {
        let plan = self.replica.plan(&received.append);
        let AppendPlan::Take { promise, truncate_after, append, .. } = &plan else {
            let AppendPlan::Refuse { term, from } = plan else { unreachable!() };
            return Ok(append_response(term, Err(from)));
        };
        if let Some(term) = promise {
            self.promise.write(self.disk.as_ref(), *term)?;
        }
        if let Some(after) = truncate_after {
            self.cut_after(*after)?;
        }
        for (at, skip) in append {
            let meta = received.append.batches[*at];
            let (records, bytes) = &received.records[*at];
            let batch = if *skip == 0 {
                TailBatch { term: meta.term, records: records.as_slice().into(), bytes: Bytes::copy_from_slice(bytes) }
            } else {
                TailBatch::new(meta.term, records[*skip as usize..].into())?
            };
            // Dense, or the plan was wrong: refused before the WAL is touched (fail-stop).
            if batch.first() != self.wal.next_index() {
                return Err(Error::Corrupt(format!(
                    "log: an append's records from {} after a log that ends at {}",
                    batch.first(),
                    self.wal.next_index() - 1
                )));
            }
            self.wal.append(&batch.bytes, batch.first(), batch.records.len() as u64)?;
            self.push(batch);
        }
        let durable = self.replica.appended(&received.append, &plan)?;
        Ok(append_response(self.replica.promised(), Ok(durable)))
    }

    /// A new leader of `term` asks for a promise: persisted before the answer. Blocking.
    pub fn promise(&mut self, term: u64) -> Result<PromiseResponse> {
        let commit = self.replica.commit();
        match self.replica.promise(term) {
            Ok(last) => {
                self.promise.write(self.disk.as_ref(), term)?;
                Ok(promise_response(Ok((term, last)), commit))
            }
            Err(newer) => Ok(promise_response(Err(newer), commit)),
        }
    }

    /// The leader's own records, of its term, in the WAL and fsynced. Blocking.
    pub fn append_own(&mut self, term: u64, records: Arc<[Record]>) -> Result<()> {
        let batch = TailBatch::new(term, records)?;
        self.append_own_batch(batch)
    }

    /// As [`MemberLog::append_own`], with the batch already encoded.
    pub fn append_own_batch(&mut self, batch: TailBatch) -> Result<()> {
        let (first, count) = (batch.first(), batch.records.len() as u64);
        if first != self.last().index + 1 {
            return Err(Error::Corrupt(format!("log: own records from {first} after {}", self.last().index)));
        }
        self.wal.append(&batch.bytes, first, count)?;
        self.replica.appended_own(first, count, batch.term)?;
        self.push(batch);
        Ok(())
    }

    /// The leader counted `index` committed.
    pub fn committed(&mut self, index: u64) {
        self.replica.committed(index);
    }

    /// The append that brings a follower whose next record is `next` forward, holding at
    /// least one batch when there is one and at most about `bytes_max` (None: the records
    /// before `next` are no longer held here; the follower must catch up from the bucket).
    pub fn append_request(&self, term: u64, leader_id: &str, next: u64, bytes_max: usize) -> Result<Option<AppendRequest>> {
        let terms = self.replica.log();
        let Some(prev_term) = terms.term_at(next - 1) else { return Ok(None) };
        let held_from = self.tail.front().map_or(self.last().index + 1, TailBatch::first);
        if next < held_from {
            return Ok(None);
        }
        let mut batches = Vec::new();
        let mut bytes = 0;
        for batch in self.tail.iter().filter(|batch| batch.last() >= next) {
            if !batches.is_empty() && bytes + batch.bytes.len() > bytes_max {
                break;
            }
            let batch = batch.starting_at(next)?;
            bytes += batch.bytes.len();
            batches.push(batch.to_wire());
        }
        Ok(Some(AppendRequest {
            term,
            leader_id: leader_id.to_string(),
            prev: Some(Position { index: next - 1, term: prev_term }.into()),
            batches,
            commit_index: self.commit(),
            ..Default::default()
        }))
    }

    /// The committed records above `applied`, in order, to apply to the store.
    pub fn committed_after(&self, applied: u64) -> Vec<Record> {
        let commit = self.commit();
        let mut records = Vec::new();
        for batch in self.tail.iter().filter(|batch| batch.last() > applied && batch.first() <= commit) {
            records.extend(batch.records.iter().filter(|record| record.index > applied && record.index <= commit).cloned());
        }
        records
    }

    /// Every record above `after` (to the log's end), in order.
    pub fn records_after(&self, after: u64) -> Vec<Record> {
        let mut records = Vec::new();
        for batch in self.tail.iter().filter(|batch| batch.last() > after) {
            records.extend(batch.records.iter().filter(|record| record.index > after).cloned());
        }
        records
    }

    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
    }

    /// Stages chunk `seq` of a leader's snapshot `snapshot_id` (`cluster/snapshot.rs`).
    /// Blocking.
    pub fn stage_snapshot(&mut self, snapshot_id: u64, seq: u64, payload: &[u8], crc: u32) -> Result<()> {
        Staging::take(&mut self.staging, self.disk.as_ref(), snapshot_id, seq, payload, crc)
    }

    /// The snapshot staged so far, if chunks of `snapshot_id` came.
    pub fn staged(&self, snapshot_id: u64) -> Option<&Staging> {
        self.staging.as_ref().filter(|staging| staging.snapshot_id == snapshot_id)
    }

    /// After the store was restored to a snapshot at `floor`: the log starts over after it
    /// (the WAL's segments go, the tail is emptied), committed through it, promised at least
    /// `term`. Blocking.
    pub fn install(&mut self, floor: Position, term: u64) -> Result<()> {
        self.wal.restart_after(floor.index)?;
        self.tail.clear();
        self.tail_bytes = 0;
        self.staging = None;
        let promised = self.replica.promised().max(term);
        self.replica = Replica::new(LogTerms::new(floor), promised, floor.index);
        Ok(())
    }

    /// Removes the WAL's segments whose records are all at or below `index` (the store
    /// holds them durably); the tail keeps what it holds. Blocking.
    pub fn remove_through(&mut self, index: u64) -> Result<usize> {
        self.wal.remove_through(index)
    }

    /// Forgets the tail's batches that end at or below `index` (applied, and sent to every
    /// follower or given up on).
    pub fn release_through(&mut self, index: u64) {
        while self.tail.front().is_some_and(|batch| batch.last() <= index) {
            let batch = self.tail.pop_front().expect("just seen");
            self.tail_bytes -= batch.bytes.len();
        }
    }

    fn push(&mut self, batch: TailBatch) {
        self.tail_bytes += batch.bytes.len();
        self.tail.push_back(batch);
    }

    /// Cuts the log after `index`: the WAL, then the tail (the log terms follow in
    /// `Replica::appended`).
    fn cut_after(&mut self, index: u64) -> Result<()> {
        // never-truncate-committed, before anything is cut.
        let commit = self.replica.commit();
        if index < commit {
            return Err(Error::Corrupt(format!("invariant never-truncate-committed: cutting after {index} below commit {commit}")));
        }
        self.wal.truncate_after(index)?;
        while let Some(batch) = self.tail.back() {
            if batch.first() > index {
                let batch = self.tail.pop_back().expect("just seen");
                self.tail_bytes -= batch.bytes.len();
            } else {
                if batch.last() > index {
                    let batch = self.tail.pop_back().expect("just seen");
                    self.tail_bytes -= batch.bytes.len();
                    let kept = TailBatch::new(batch.term, batch.records[..=(index - batch.first()) as usize].into())?;
                    self.push(kept);
                }
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "member_log_test.rs"]
mod member_log_test;
