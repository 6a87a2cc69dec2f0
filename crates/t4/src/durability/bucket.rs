//! The log in the bucket: terms, WAL objects, seals (docs/design.md §5).
//!
//! - A node takes a new term by CAS on `lock` before it writes anything (`crate::election`);
//!   seals and floors, the bucket's other fences, are written by `election::seal` and
//!   `election::floor`.
//! - Its log is `wal/<term>/1, 2, ...`, each created only if absent, in order: object k+1 is
//!   sent only after object k is durable, so a term's log is the dense run from 1 and its
//!   first missing seq ends it.
//! - Before serving, a node seals every older term that is not sealed yet: it creates a seal
//!   at that term's first missing seq (seq 1 for a term that wrote nothing yet). A writer
//!   still alive in that term then fails to create that object (412) and stops: nothing it
//!   could still acknowledge lies past the seal, and nothing past a seal is ever replayed.
//! - Record indexes run on across terms: a term's first record follows the last record
//!   before the previous term's seal. A gap is a hole, and a hole fails closed.
//! - GC removes objects whose records are all below a checkpoint, from the low end of each
//!   term, never a seal and never a term's highest object. It first raises the term's floor
//!   (`wal/<term>/floor`, by CAS, only upwards) to the first seq it keeps; readers take a
//!   term's log as the dense run from its floor (or 1), so a collection cut short leaves
//!   garbage below the floor, never a hole.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;

use super::format::{decode_wal_header, decode_wal_object, encode_batch_object, WalObject, WAL_OBJECT_HEADER_BYTES};
use crate::durability::layout;
use crate::env::{Condition, ObjectError, ObjectStore};
use crate::error::{Error, Result};
use crate::wal::{encode_batch, Record};

/// Listing page size.
const LIST_PAGE: usize = 1000;
/// Records in one object when a local tail is uploaded at recovery.
const TAIL_RECORDS_PER_OBJECT: usize = 1024;
/// Most record bytes in one such object (a record larger alone goes up alone).
const TAIL_BYTES_PER_OBJECT: usize = 16 << 20;

pub(crate) fn object_error(context: &str, error: ObjectError) -> Error {
    match error {
        ObjectError::Corrupt(what) => Error::Corrupt(format!("{context}: {what}")),
        other => Error::StorageFailure(format!("{context}: {other}")),
    }
}

/// Every key under `prefix`.
pub async fn list_all(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    loop {
        let page = store.list(prefix, keys.last().map(String::as_str), LIST_PAGE).await.map_err(|error| object_error("list", error))?;
        let full = page.len() == LIST_PAGE;
        keys.extend(page.into_iter().map(|info| info.key));
        if !full {
            return Ok(keys);
        }
    }
}

/// One term's WAL objects as listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TermObjects {
    /// Where the term's log starts: the floor GC raised, or 1.
    pub floor: u64,
    /// Seqs at or above the floor: the term's log and anything past its end.
    pub seqs: BTreeSet<u64>,
    /// Seqs below the floor: garbage a collection cut short left behind.
    pub below_floor: Vec<u64>,
}

/// Every term's WAL objects, by term, from one listing (and one read per floor).
pub async fn wal_objects(store: &dyn ObjectStore) -> Result<BTreeMap<u64, TermObjects>> {
    let mut terms: BTreeMap<u64, TermObjects> = BTreeMap::new();
    let mut floored = Vec::new();
    for key in list_all(store, layout::WAL_DIR).await? {
        if let Some((term, seq)) = layout::parse_wal_object(&key) {
            terms.entry(term).or_default().seqs.insert(seq);
        } else if let Some(term) = layout::parse_wal_floor(&key) {
            floored.push(term);
        }
    }
    for objects in terms.values_mut() {
        objects.floor = 1;
    }
    for term in floored {
        if let (Some((floor, _)), Some(objects)) = (crate::election::floor::read_floor(store, term).await?, terms.get_mut(&term)) {
            objects.floor = floor;
            objects.below_floor = objects.seqs.range(..floor).copied().collect();
            objects.seqs.retain(|seq| *seq >= floor);
        }
    }
    Ok(terms)
}

/// How one term's log ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermEnd {
    pub term: u64,
    /// The first seq that holds no batch: where the seal is, or the first missing one.
    pub next_seq: u64,
    pub sealed: bool,
}

/// What the bucket's log holds.
#[derive(Debug, Default)]
pub struct BucketLog {
    /// Records with an index above the `after_index` asked for, in order.
    pub records: Vec<Record>,
    /// One past the last record in the bucket (0: no record at all).
    pub end_index: u64,
    pub terms: Vec<TermEnd>,
}

/// Objects read at once when replaying the log.
const READS_IN_FLIGHT: usize = 16;

/// Reads the whole log, keeping records above `after_index`, and seals every unsealed term
/// below `seal_below` at its first missing seq.
pub async fn read_log(store: &dyn ObjectStore, after_index: u64, seal_below: Option<u64>) -> Result<BucketLog> {
    use futures::stream::StreamExt;
    let mut objects = wal_objects(store).await?;
    if let Some(limit) = seal_below {
        // A term that wrote nothing yet is in no listing, but its writer may still be about
        // to: every term below ours is sealed, the empty ones at seq 1 (once: the seal then
        // lists the term). Terms run densely from 1, each taken by a CAS on `lock`.
        for term in 1..limit {
            objects.entry(term).or_insert_with(|| TermObjects { floor: 1, ..Default::default() });
        }
    }
    let mut log = BucketLog::default();
    let mut next_index: Option<u64> = None;
    for (term, TermObjects { floor: base, seqs, .. }) in objects {
        // Where the term ends is settled first (sealing it if asked: seal first, read after,
        // or a writer still running could stay ahead of the reader forever) ...
        let (end, sealed) = term_end(store, term, base, &seqs, seal_below).await?;
        // ... then its objects are read, several at a time, and checked in order (from the
        // floor GC left, if any: the index check below still catches anything missing).
        let mut reads = futures::stream::iter(base..end)
            .map(|seq| async move {
                let name = layout::wal_object(term, seq);
                let (bytes, _) = store.get(&name).await.map_err(|error| object_error(&format!("read {name}"), error))?;
                decode_wal_object(&name, term, seq, &bytes).map(|object| (name, object))
            })
            .buffered(READS_IN_FLIGHT);
        while let Some(read) = reads.next().await {
            let (name, object) = read?;
            let WalObject::Batch { records, .. } = object else {
                return Err(Error::Corrupt(format!("{name}: a seal inside term {term}'s log, before its end at seq {end}")));
            };
            let first = records[0].index;
            match next_index {
                None if first > after_index + 1 => {
                    return Err(Error::Corrupt(format!(
                        "hole: the bucket's log starts at index {first} ({name}) but the store holds only through {after_index}"
                    )));
                }
                Some(expected) if first != expected => {
                    return Err(Error::Corrupt(format!(
                        "hole: {name} starts at index {first}, the log before it ends at {}",
                        expected - 1
                    )));
                }
                _ => {}
            }
            next_index = Some(first + records.len() as u64);
            log.records.extend(records.into_iter().filter(|record| record.index > after_index));
        }
        log.terms.push(TermEnd { term, next_seq: end, sealed });
    }
    log.end_index = next_index.unwrap_or(0);
    Ok(log)
}

/// The seq where `term`'s log ends (its seal, or its first missing seq) and whether it is
/// sealed; seals it there first when `term` is below `seal_below`.
async fn term_end(store: &dyn ObjectStore, term: u64, base: u64, seqs: &BTreeSet<u64>, seal_below: Option<u64>) -> Result<(u64, bool)> {
    let first_missing = (base..).find(|seq| !seqs.contains(seq)).expect("a finite set misses some seq");
    if let Some(stray) = seqs.range(first_missing + UPLOADS_IN_FLIGHT_MAX..).next() {
        // Object k + UPLOADS_IN_FLIGHT_MAX is only ever sent after k landed.
        return Err(Error::Corrupt(format!(
            "hole: {} is missing but {} exists",
            layout::wal_object(term, first_missing),
            layout::wal_object(term, *stray)
        )));
    }
    // A seal already there is among the last objects of the run (at most one object in
    // flight can land after it).
    for seq in first_missing.saturating_sub(UPLOADS_IN_FLIGHT_MAX).max(base)..first_missing {
        let name = layout::wal_object(term, seq);
        let header = store
            .get_range(&name, 0, WAL_OBJECT_HEADER_BYTES as u64)
            .await
            .map_err(|error| object_error(&format!("read {name}"), error))?;
        if decode_wal_header(&name, &header)?.0 {
            return Ok((seq, true));
        }
    }
    match seal_below.filter(|limit| term < *limit) {
        Some(limit) => {
            let at = crate::election::seal::seal(store, term, first_missing).await?;
            tracing::info!(term, seq = at, new_term = limit, "bucket: sealed an older term's log");
            Ok((at, true))
        }
        None => Ok((first_missing, false)),
    }
}

/// Uploads `records` (dense) as the continuation of `log`'s term from its next seq, moving
/// it on. Stops at the first object that already exists and is not ours (the term was
/// sealed by a newer one): what was not uploaded by then is not part of the log. An object
/// that is ours (an earlier attempt landed after its answer was lost) counts as uploaded
/// (robustness #24). Returns how many records made it.
pub async fn upload_tail(log: &mut TermLog, records: &[Record]) -> Result<usize> {
    let mut uploaded = 0;
    for chunk in crate::wal::batch_runs(records, TAIL_RECORDS_PER_OBJECT, TAIL_BYTES_PER_OBJECT) {
        let name = layout::wal_object(log.term, log.next_seq);
        match log.create(log.next_seq, chunk[0].index, chunk.len() as u64, &encode_batch(chunk)?).await {
            Ok(true) => uploaded += chunk.len(),
            Ok(false) => break,
            Err(error) => return Err(object_error(&format!("upload {name}"), error)),
        }
        log.next_seq += 1;
    }
    Ok(uploaded)
}

/// WAL objects of one term a writer may have in flight at once. Acknowledgements still
/// follow log order (a batch is answered only once its object and every earlier one are in
/// the bucket), so a crash can leave object k+1 without k; readers accept objects up to this
/// far past a term's first missing seq as its unacknowledged tail, and nothing further.
pub const UPLOADS_IN_FLIGHT_MAX: u64 = 2;

/// A term's log: object `seq` of `term` is created only if absent.
#[derive(Debug, Clone)]
pub struct TermLog {
    pub store: Arc<dyn ObjectStore>,
    pub term: u64,
    /// The seq the next object takes.
    pub next_seq: u64,
}

impl TermLog {
    /// Creates object `seq`. `Ok(false)`: another object is already there, so a newer term
    /// sealed this one and this node must stop. If the object there is exactly this one (an
    /// earlier attempt whose answer was lost landed after all), that is success.
    pub async fn create(&self, seq: u64, first_index: u64, count: u64, batches: &[u8]) -> std::result::Result<bool, ObjectError> {
        let body = Bytes::from(encode_batch_object(self.term, seq, first_index, count, batches));
        let name = layout::wal_object(self.term, seq);
        let condition = if skip_term_check() { Condition::Always } else { Condition::IfNoneMatch };
        match self.store.put(&name, body.clone(), condition).await {
            Ok(_) => Ok(true),
            Err(ObjectError::PreconditionFailed(_)) => Ok(self.store.get(&name).await?.0 == body),
            Err(error) => Err(error),
        }
    }
}

/// Planted (simulator tests only): WAL objects are created unconditionally.
fn skip_term_check() -> bool {
    #[cfg(feature = "planted-bugs")]
    return crate::planted::planted(crate::planted::Bug::SkipTermCheck);
    #[cfg(not(feature = "planted-bugs"))]
    false
}
