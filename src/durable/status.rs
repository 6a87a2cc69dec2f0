//! `t4 status`: what a bucket holds, read-only — the lock, and each term's log.

use std::fmt;

use super::bucket::{read_lock, wal_objects};
use super::format::{decode_wal_header, LockRecord, WAL_HEADER_LEN};
use crate::env::ObjectStore;
use crate::error::Result;
use crate::object::layout;

/// One term's log as the bucket holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermStatus {
    pub term: u64,
    /// Batch objects in the dense run from seq 1.
    pub objects: u64,
    /// Indexes of the first and last record in that run (None: no record).
    pub indexes: Option<(u64, u64)>,
    /// Where the seal is, if the term was sealed.
    pub sealed_at: Option<u64>,
    /// Objects beyond the dense run (after a seal, or past a hole).
    pub stray: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub lock: Option<LockRecord>,
    pub terms: Vec<TermStatus>,
    pub checkpoints: usize,
}

/// Reads the lock and the headers of each term's WAL objects (not their bodies).
pub async fn status(store: &dyn ObjectStore) -> Result<Status> {
    let lock = read_lock(store).await?.map(|(lock, _)| lock);
    let mut terms = Vec::new();
    for (term, seqs) in wal_objects(store).await? {
        let mut status = TermStatus { term, objects: 0, indexes: None, sealed_at: None, stray: 0 };
        let mut seq = 1;
        while seqs.contains(&seq) {
            let name = layout::wal_object(term, seq);
            let header = store.get_range(&name, 0, WAL_HEADER_LEN).await.map_err(|error| super::bucket::object_error(&name, error))?;
            let (seal, _, _, first, count) = decode_wal_header(&name, &header)?;
            if seal {
                status.sealed_at = Some(seq);
                break;
            }
            status.objects += 1;
            if count > 0 {
                let low = status.indexes.map_or(first, |(low, _)| low);
                status.indexes = Some((low, first + count - 1));
            }
            seq += 1;
        }
        status.stray = seqs.range(seq + 1..).count() as u64;
        terms.push(status);
    }
    let checkpoints = super::bucket::list_all(store, layout::CHECKPOINT_DIR).await?.len();
    Ok(Status { lock, terms, checkpoints })
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.lock {
            Some(lock) => writeln!(f, "lock: term {} held by {:?} (taken at {} ms since the epoch)", lock.term, lock.node, lock.wall_ms)?,
            None => writeln!(f, "lock: none (no t4 node has used this bucket and prefix)")?,
        }
        if self.terms.is_empty() {
            writeln!(f, "wal: empty")?;
        }
        for term in &self.terms {
            let indexes = term.indexes.map_or("no records".to_string(), |(low, high)| format!("records {low}..={high}"));
            let end = match term.sealed_at {
                Some(seq) => format!("sealed at seq {seq}"),
                None => "not sealed (current, or its writer never got replaced)".to_string(),
            };
            write!(f, "wal term {}: {} objects, {indexes}, {end}", term.term, term.objects)?;
            if term.stray > 0 {
                write!(f, ", {} objects beyond its end (never replayed; past a hole they stop recovery)", term.stray)?;
            }
            writeln!(f)?;
        }
        let last = self.terms.iter().filter_map(|term| term.indexes).map(|(_, high)| high).max();
        if let Some(last) = last {
            writeln!(f, "log: records 1..={last}")?;
        }
        writeln!(f, "checkpoints: {} (checkpoints are not built yet)", self.checkpoints)
    }
}
