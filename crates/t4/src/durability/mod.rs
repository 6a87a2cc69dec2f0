//! Durability on object storage (docs/design.md §5): the node's log in a bucket, terms and seals,
//! and recovery from the bucket.
//!
//! With an object store configured, a write is acknowledged only once its WAL batch is in
//! the bucket (object `wal/<term>/<seq>`, created only if absent) and fsynced locally; the
//! two run at once. Opening a node takes a new term, seals older terms, and rebuilds the
//! store from the bucket's log: a node whose disk is gone gets everything back, a node with
//! a stale disk catches up, and a second process on the same bucket fences the first (its
//! next upload meets the seal and it stops acknowledging).
//!
//! Checkpoints ([`checkpoint`]) bound what recovery replays, and let GC ([`gc`]) remove the
//! log below them. With `wal_sync_upload == false` a write is acknowledged after the local
//! fsync and reaches the bucket in the background, at most `segment_max_age` behind.

pub mod bucket;
pub mod checkpoint;
pub mod format;
pub mod gc;
pub mod inspect;
pub mod layout;
pub mod probe;
pub mod status;

use std::sync::Arc;

use crate::env::{Clock, Disk, ObjectStore};
use crate::error::{Error, Result};
use crate::mvcc::Store;
use crate::wal::Record;

use bucket::{list_all, read_log, upload_tail};
pub use bucket::{BucketLog, TermEnd, TermLog};

/// The term this data directory last wrote under (`bucket-term`): 8-byte magic, the term,
/// and a CRC32C.
pub const TERM_FILE: &str = "bucket-term";
const TERM_MAGIC: &[u8; 8] = b"T4TERM01";

/// Where and how a node keeps its log in a bucket.
#[derive(Debug, Clone)]
pub struct BucketDurability {
    /// The bucket (with any prefix applied by the store).
    pub store: Arc<dyn ObjectStore>,
    /// A name for this node in the lock record (for humans).
    pub node_name: String,
    /// Acknowledge a write only once its batch is in the bucket. `false`: once it is
    /// fsynced locally; the upload follows in the background, and writes wait whenever the
    /// oldest batch not yet in the bucket is older than `segment_max_age`.
    pub wal_sync_upload: bool,
    /// With `wal_sync_upload == false`, the most acknowledged history the bucket may lack
    /// (`--segment-max-age-sec`).
    pub segment_max_age: std::time::Duration,
    /// How often an idle node reads `lock` to learn that a newer term fenced it (a busy one
    /// learns at its next upload).
    pub lock_check_interval: std::time::Duration,
    /// A checkpoint is taken when this long has passed since the last one and anything was
    /// written since (`--checkpoint-interval-min`; zero: never by time).
    pub checkpoint_interval: std::time::Duration,
    /// ... or when this many log records were written since the last one
    /// (`--checkpoint-entries`; 0: never by count).
    pub checkpoint_entries: u64,
    /// Complete checkpoints GC keeps (`--checkpoint-retain`, at least 1).
    pub checkpoint_retain: usize,
}

impl BucketDurability {
    pub fn new(store: Arc<dyn ObjectStore>, node_name: impl Into<String>) -> Self {
        Self {
            store,
            node_name: node_name.into(),
            wal_sync_upload: true,
            segment_max_age: std::time::Duration::from_secs(10),
            lock_check_interval: std::time::Duration::from_secs(5),
            checkpoint_interval: std::time::Duration::from_secs(15 * 60),
            checkpoint_entries: 0,
            checkpoint_retain: 2,
        }
    }
}

pub fn read_term_file(disk: &dyn Disk) -> Result<Option<u64>> {
    if !disk.exists(TERM_FILE).map_err(|error| Error::storage("stat term file", error))? {
        return Ok(None);
    }
    let file = disk.open(TERM_FILE, false).map_err(|error| Error::storage("open term file", error))?;
    let mut bytes = [0u8; 20];
    if file.len().map_err(|error| Error::storage("stat term file", error))? != 20 {
        tracing::warn!("bucket-term file has the wrong length; treating this data dir as never having held a term");
        return Ok(None);
    }
    file.read_at(0, &mut bytes).map_err(|error| Error::storage("read term file", error))?;
    if &bytes[..8] != TERM_MAGIC || crc32c::crc32c(&bytes[..16]).to_le_bytes() != bytes[16..20] {
        tracing::warn!("bucket-term file is damaged; treating this data dir as never having held a term");
        return Ok(None);
    }
    Ok(Some(u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"))))
}

pub fn write_term_file(disk: &dyn Disk, term: u64) -> Result<()> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(TERM_MAGIC);
    bytes.extend_from_slice(&term.to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    let existed = disk.exists(TERM_FILE).map_err(|error| Error::storage("stat term file", error))?;
    let file = disk.open(TERM_FILE, true).map_err(|error| Error::storage("open term file", error))?;
    file.write_at(0, &bytes)
        .and_then(|()| file.set_len(20))
        .and_then(|()| file.sync_data())
        .map_err(|error| Error::storage("write term file", error))?;
    if !existed {
        disk.sync_dir("").map_err(|error| Error::storage("sync data dir", error))?;
    }
    Ok(())
}

/// What opening from the bucket decided.
#[derive(Debug)]
pub struct BucketRecovery {
    /// Records to apply above what the store holds, in order (the bucket's, then this
    /// node's own tail that it just uploaded).
    pub records: Vec<Record>,
    /// The term this node now writes under, positioned after anything it uploaded.
    pub log: TermLog,
    /// The election that took the term (it leads): the lock watch runs it on.
    pub election: crate::election::Election,
}

/// Takes a new term, seals older ones, and works out what the store must replay.
///
/// `store_index` is what the local store holds durably; `local` are the records of the
/// local WAL above it. If this data dir held the term just before ours (nobody else wrote
/// since), its local records beyond the bucket are uploaded as the start of the new term —
/// they were never acknowledged, but they are a valid continuation and keeping them loses
/// nothing. Otherwise they are dropped: the bucket wins.
pub async fn recover(
    durability: &BucketDurability,
    disk: &Arc<dyn Disk>,
    clock: &Arc<dyn Clock>,
    store: &Arc<Store>,
    local: Vec<Record>,
) -> Result<BucketRecovery> {
    let bucket = durability.store.as_ref();
    let disk_for_read = disk.clone();
    let local_term = crate::env::blocking(move || read_term_file(disk_for_read.as_ref())).await?;
    probe::conditional_writes(bucket, &durability.node_name, clock.wall_ms()).await?;
    let previous = crate::election::read_lock(bucket).await?.map(|(lock, _)| lock.term);
    let (term, election) = crate::election::driver::take_term(bucket, &durability.node_name, clock, durability.lock_check_interval).await?;
    // The newest complete checkpoint: the log below it may be gone, and a store behind it
    // starts from it (a node without a disk, or one that was down for long).
    let chunks = list_all(bucket, crate::durability::layout::CHUNK_DIR).await?.into_iter().collect();
    let newest = checkpoint::complete(bucket, &chunks).await?.into_iter().next();
    let mut store_index = store.applied_index();
    let floor = newest.as_ref().map_or(0, |manifest| manifest.position.index);
    if let Some(manifest) = newest.filter(|manifest| manifest.position.index > store_index) {
        checkpoint::restore(&durability.store, &manifest, store).await?;
        tracing::info!(
            revision = manifest.position.revision,
            index = manifest.position.index,
            entries = manifest.entries,
            "bucket: restored the store from a checkpoint"
        );
        store_index = manifest.position.index;
    }
    let mut log = read_log(bucket, store_index, Some(term)).await?;
    let bucket_last = log.end_index.saturating_sub(1).max(floor);
    tracing::info!(term, previous_term = ?previous, bucket_last_index = bucket_last, store_index, "bucket: took a term and read the log");
    if store_index > bucket_last && !(store_index == 0 && log.end_index == 0) {
        // Only possible if the store ran ahead of the bucket: a data dir from another
        // bucket, or one that held records a newer term never saw.
        return Err(Error::Corrupt(format!(
            "the local store holds index {store_index} but the bucket's log ends at {bucket_last}: this data dir does not belong to this bucket (move it away to restore from the bucket)"
        )));
    }
    let mut term_log = TermLog { store: durability.store.clone(), term, next_seq: 1 };
    let ours_was_last = local_term.is_some() && local_term == previous && previous == Some(term - 1);
    let next = log.records.last().map_or(store_index.max(bucket_last) + 1, |record| record.index + 1);
    let tail: Vec<Record> = local.into_iter().filter(|record| record.index >= next).collect();
    if !tail.is_empty() {
        if ours_was_last && tail[0].index == next {
            let uploaded = upload_tail(&mut term_log, &tail).await?;
            tracing::info!(records = uploaded, term, "bucket: uploaded this node's unacknowledged local tail");
            log.records.extend(tail.into_iter().take(uploaded));
        } else {
            tracing::warn!(records = tail.len(), "bucket: dropping local WAL records the bucket does not hold (never acknowledged)");
        }
    }
    Ok(BucketRecovery { records: log.records, log: term_log, election })
}
