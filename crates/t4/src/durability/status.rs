//! `t4 status`: what a bucket holds, read-only — the lock, and each term's log.

use std::fmt;

use super::bucket::{wal_objects, TermObjects};
use super::format::{decode_wal_header, WAL_OBJECT_HEADER_BYTES};
use crate::durability::layout;
use crate::election::{read_lock, LockRecord};
use crate::env::ObjectStore;
use crate::error::Result;

/// One term's log as the bucket holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermStatus {
    pub term: u64,
    /// Where the term's log starts: the floor GC raised below a checkpoint, or 1.
    pub first_seq: u64,
    /// Batch objects in the dense run from `first_seq`.
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
    /// Every checkpoint manifest, oldest first, and whether all its chunks are there.
    pub checkpoints: Vec<(super::checkpoint::Manifest, bool)>,
    pub chunks: usize,
}

/// Reads the lock and the headers of each term's WAL objects (not their bodies).
pub async fn status(store: &dyn ObjectStore) -> Result<Status> {
    let lock = read_lock(store).await?.map(|(lock, _)| lock);
    let mut terms = Vec::new();
    for (term, TermObjects { floor: first_seq, seqs, .. }) in wal_objects(store).await? {
        let mut status = TermStatus { term, first_seq, objects: 0, indexes: None, sealed_at: None, stray: 0 };
        let mut seq = first_seq;
        while seqs.contains(&seq) {
            let name = layout::wal_object(term, seq);
            let header = store
                .get_range(&name, 0, WAL_OBJECT_HEADER_BYTES as u64)
                .await
                .map_err(|error| super::bucket::object_error(&name, error))?;
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
    let chunks: std::collections::BTreeSet<String> = super::bucket::list_all(store, layout::CHUNK_DIR).await?.into_iter().collect();
    let mut checkpoints = super::checkpoint::manifests(store, &chunks).await?;
    checkpoints.reverse();
    Ok(Status { lock, terms, checkpoints, chunks: chunks.len() })
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.lock {
            Some(lock) => writeln!(
                f,
                "lock: term {} held by {:?} (taken at {} ms since the epoch{})",
                lock.term,
                lock.node,
                lock.wall_ms,
                lease_note(lock)
            )?,
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
            let from = if term.first_seq > 1 { format!(" from seq {} (older ones collected)", term.first_seq) } else { String::new() };
            write!(f, "wal term {}: {} objects{from}, {indexes}, {end}", term.term, term.objects)?;
            if term.stray > 0 {
                write!(f, ", {} objects beyond its end (never replayed; past a hole they stop recovery)", term.stray)?;
            }
            writeln!(f)?;
        }
        let first = self.terms.iter().filter_map(|term| term.indexes).map(|(low, _)| low).min();
        let last = self.terms.iter().filter_map(|term| term.indexes).map(|(_, high)| high).max();
        if let (Some(first), Some(last)) = (first, last) {
            writeln!(f, "log: records {first}..={last}")?;
        }
        if self.checkpoints.is_empty() {
            writeln!(f, "checkpoints: none")?;
        }
        for (manifest, complete) in &self.checkpoints {
            let position = manifest.position;
            write!(
                f,
                "checkpoint at revision {} (log index {}, compacted at {}): {} entries, {} bytes in {} chunks, written in term {}",
                position.revision,
                position.index,
                position.compact_revision,
                manifest.entries,
                manifest.bytes,
                manifest.chunks.len(),
                manifest.term
            )?;
            if !complete {
                write!(f, ", INCOMPLETE (a chunk is missing: recovery passes it over)")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "chunks: {}", self.chunks)
    }
}

/// What a lock record says beyond its term, for `t4 status`: a cluster member's lease and
/// where it is reached.
fn lease_note(lock: &LockRecord) -> String {
    if lock.lease_ms == 0 {
        return String::new();
    }
    let mut note = format!("; lease {} ms, renewed {} times", lock.lease_ms, lock.renewal);
    if !lock.client_url.is_empty() {
        note.push_str(&format!(", clients at {}", lock.client_url));
    }
    if !lock.peer_url.is_empty() {
        note.push_str(&format!(", peers at {}", lock.peer_url));
    }
    note
}
