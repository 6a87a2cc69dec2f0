//! Opening a node: the store and the local WAL as found, then what recovery replays (from
//! the local WAL alone, or from the bucket), and a WAL writer positioned after it.

use std::sync::Arc;

use crate::durability::{BucketRecovery, TermLog};
use crate::env::{Disk, StorageFence};
use crate::error::{Error, Result};
use crate::mvcc::Store;
use crate::wal::{self, WalWriter};

pub(super) struct Opened {
    pub store: Arc<Store>,
    pub wal: WalWriter,
    pub fence: StorageFence,
    /// The term's log in the bucket, when the node keeps one.
    pub log: Option<TermLog>,
    /// The election that took the term, when the node keeps a bucket log.
    pub election: Option<crate::election::Election>,
}

/// The store and the local WAL as found at open, before anything is replayed.
pub(super) struct Local {
    pub store: Arc<Store>,
    pub recovered: wal::Recovered,
    pub fence: StorageFence,
}

/// Opens the store (which locks the data dir) and reads the local WAL (cutting a torn tail).
/// Blocking.
pub(super) fn open_local(disk: &Arc<dyn Disk>) -> Result<Local> {
    let fence = StorageFence::default();
    let store = Arc::new(Store::open(disk.as_ref(), fence.clone())?);
    // A cluster member's snapshot install, interrupted after its store was replaced: the
    // old log goes, and the log starts over after the store (`cluster/snapshot.rs`).
    if crate::cluster::snapshot::finish_at_open(disk, store.applied_index())? {
        crate::cluster::snapshot::drop_wal(disk.as_ref())?;
    }
    let recovered = wal::recover(disk, store.applied_index())?;
    if recovered.torn_bytes > 0 {
        tracing::warn!(bytes = recovered.torn_bytes, "wal: cut a torn tail left by a crash");
    }
    Ok(Local { store, recovered, fence })
}

/// Local-only durability: replays the local WAL above what the store holds durably and
/// returns a writer positioned after the last valid record. Blocking.
pub(super) fn finish_local(disk: Arc<dyn Disk>, local: Local, segment_bytes_max: u64) -> Result<Opened> {
    let Local { store, recovered, fence } = local;
    let applied = store.applied_index();
    if recovered.end_index > 0 && recovered.end_index <= applied {
        return Err(Error::Corrupt(format!(
            "wal ends at index {} but the store holds through {applied}: the log lost durable records",
            recovered.end_index - 1
        )));
    }
    store.replay(&recovered.records)?;
    if !recovered.records.is_empty() {
        store.sync_durable()?;
        tracing::info!(records = recovered.records.len(), revision = store.applied_revision(), "wal: replayed");
    }
    let next_index = store.applied_index() + 1;
    let wal = WalWriter::open(disk, recovered.segments, recovered.last_len, next_index, segment_bytes_max)?;
    Ok(Opened { store, wal, fence, log: None, election: None })
}

/// Durability in a bucket: replays what [`crate::durability::recover`] decided, makes the
/// store durable, and restarts the local WAL after it (the bucket holds everything the old
/// segments did). Blocking.
pub(super) fn finish_from_bucket(disk: Arc<dyn Disk>, local: Local, recovery: BucketRecovery, segment_bytes_max: u64) -> Result<Opened> {
    let Local { store, recovered, fence } = local;
    store.replay(&recovery.records)?;
    store.sync_durable()?;
    if !recovery.records.is_empty() {
        tracing::info!(records = recovery.records.len(), revision = store.applied_revision(), "bucket: replayed");
    }
    for first in &recovered.segments {
        disk.remove(&wal::segment_name(*first)).map_err(|error| Error::storage("remove wal segment", error))?;
    }
    if !recovered.segments.is_empty() {
        disk.sync_dir(wal::WAL_DIR).map_err(|error| Error::storage("sync wal dir", error))?;
    }
    crate::durability::write_term_file(disk.as_ref(), recovery.log.term)?;
    let next_index = store.applied_index() + 1;
    let wal = WalWriter::open(disk, Vec::new(), 0, next_index, segment_bytes_max)?;
    Ok(Opened { store, wal, fence, log: Some(recovery.log), election: Some(recovery.election) })
}
