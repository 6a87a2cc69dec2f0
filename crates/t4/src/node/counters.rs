//! What the node counts for metrics and benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct Counters {
    pub(super) batches: AtomicU64,
    pub(super) records: AtomicU64,
    pub(super) wal_syncs: AtomicU64,
    pub(super) wal_sync_micros: AtomicU64,
    pub(super) store_syncs: AtomicU64,
    pub(super) wal_uploads: AtomicU64,
    pub(super) wal_upload_bytes: AtomicU64,
    pub(super) wal_upload_micros: AtomicU64,
    pub(super) wal_upload_failures: AtomicU64,
    pub(super) checkpoints: AtomicU64,
    pub(super) checkpoint_failures: AtomicU64,
    pub(super) checkpoint_bytes: AtomicU64,
    pub(super) checkpoint_bytes_uploaded: AtomicU64,
    pub(super) checkpoint_micros: AtomicU64,
    pub(super) checkpoint_revision: AtomicU64,
    pub(super) gc_objects_deleted: AtomicU64,
    pub(super) leases_expired: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeStats {
    pub batches: u64,
    pub records: u64,
    pub wal_syncs: u64,
    pub wal_sync_micros: u64,
    pub store_syncs: u64,
    /// WAL objects created in the bucket, their bytes, the time spent (retries included)
    /// and the attempts that failed.
    pub wal_uploads: u64,
    pub wal_upload_bytes: u64,
    pub wal_upload_micros: u64,
    pub wal_upload_failures: u64,
    /// Checkpoints written, those that failed, their payload bytes, the bytes actually
    /// uploaded (new chunks and manifests), the time spent, and the newest one's revision.
    pub checkpoints: u64,
    pub checkpoint_failures: u64,
    pub checkpoint_bytes: u64,
    pub checkpoint_bytes_uploaded: u64,
    pub checkpoint_micros: u64,
    pub checkpoint_revision: u64,
    /// Objects GC deleted from the bucket (WAL objects, chunks, manifests).
    pub gc_objects_deleted: u64,
    /// Leases revoked because their time ran out.
    pub leases_expired: u64,
}

impl Counters {
    pub fn snapshot(&self) -> NodeStats {
        NodeStats {
            batches: self.batches.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            wal_syncs: self.wal_syncs.load(Ordering::Relaxed),
            wal_sync_micros: self.wal_sync_micros.load(Ordering::Relaxed),
            store_syncs: self.store_syncs.load(Ordering::Relaxed),
            wal_uploads: self.wal_uploads.load(Ordering::Relaxed),
            wal_upload_bytes: self.wal_upload_bytes.load(Ordering::Relaxed),
            wal_upload_micros: self.wal_upload_micros.load(Ordering::Relaxed),
            wal_upload_failures: self.wal_upload_failures.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            checkpoint_failures: self.checkpoint_failures.load(Ordering::Relaxed),
            checkpoint_bytes: self.checkpoint_bytes.load(Ordering::Relaxed),
            checkpoint_bytes_uploaded: self.checkpoint_bytes_uploaded.load(Ordering::Relaxed),
            checkpoint_micros: self.checkpoint_micros.load(Ordering::Relaxed),
            checkpoint_revision: self.checkpoint_revision.load(Ordering::Relaxed),
            gc_objects_deleted: self.gc_objects_deleted.load(Ordering::Relaxed),
            leases_expired: self.leases_expired.load(Ordering::Relaxed),
        }
    }
}
