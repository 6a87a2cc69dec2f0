//! The checkpointer task: checkpoints of the store in the bucket when due, then GC.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::env::signal;

use crate::error::{ClosedReason, Error, Result};

use super::Shared;

/// How often the checkpointer looks whether a checkpoint is due.
const CHECKPOINT_POLL: Duration = Duration::from_secs(1);
/// After a failed checkpoint, the wait before the next attempt.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(30);

/// The checkpoint task's handle on the bucket.
#[derive(Clone)]
pub(super) struct Checkpoints {
    pub bucket: Arc<dyn crate::env::ObjectStore>,
    pub term: u64,
    pub retain: usize,
    pub synced: signal::Receiver<u64>,
    /// One checkpoint at a time (the task's and any asked for through the API).
    pub running: Arc<tokio::sync::Mutex<()>>,
}

/// Takes a checkpoint of everything applied so far, then collects garbage. The snapshot is
/// read while writes go on; its manifest is written only once every record it holds is in
/// the bucket, so a checkpoint never holds anything but history.
pub(super) async fn take_checkpoint(
    shared: &Arc<Shared>,
    checkpoints: &Checkpoints,
) -> Result<crate::durability::checkpoint::CheckpointReport> {
    let _one = checkpoints.running.lock().await;
    let store = shared.store.clone();
    let snapshot = Arc::new(crate::env::blocking(move || store.snapshot()).await?);
    let target = snapshot.position.index;
    let mut synced = checkpoints.synced.clone();
    loop {
        if let Some(failure) = shared.failed() {
            return Err(failure);
        }
        tokio::select! {
            biased; // see writer_loop
            reached = synced.wait_for(|synced| *synced >= target) => match reached {
                Ok(_) => break,
                Err(_) => return Err(shared.failed().unwrap_or(Error::Closed(ClosedReason::Stopped))),
            },
            _ = shared.env.clock.sleep(CHECKPOINT_POLL) => {}
        }
    }
    let clock = shared.env.clock.clone();
    let chunks =
        crate::durability::bucket::list_all(checkpoints.bucket.as_ref(), crate::durability::layout::CHUNK_DIR).await?.into_iter().collect();
    let previous = crate::durability::checkpoint::complete(checkpoints.bucket.as_ref(), &chunks)
        .await?
        .into_iter()
        .find(|manifest| manifest.position.revision <= snapshot.position.revision);
    let outcome = crate::durability::checkpoint::write(&checkpoints.bucket, snapshot, checkpoints.term, &clock, &chunks, previous).await;
    let stats = &shared.stats;
    let report = match outcome {
        Ok(report) => report,
        Err(error) => {
            stats.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
    };
    stats.checkpoints.fetch_add(1, Ordering::Relaxed);
    stats.checkpoint_bytes.fetch_add(report.bytes, Ordering::Relaxed);
    stats.checkpoint_bytes_uploaded.fetch_add(report.bytes_uploaded, Ordering::Relaxed);
    stats.checkpoint_micros.fetch_add(report.elapsed.as_micros() as u64, Ordering::Relaxed);
    stats.checkpoint_revision.store(report.revision as u64, Ordering::Relaxed);
    tracing::info!(
        revision = report.revision,
        index = report.index,
        entries = report.entries,
        chunks = report.chunks,
        bytes = report.bytes,
        chunks_uploaded = report.chunks_uploaded,
        chunks_reused = report.chunks_reused,
        bytes_uploaded = report.bytes_uploaded,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "checkpoint: written"
    );
    match crate::durability::gc::collect(&checkpoints.bucket, checkpoints.retain, Some(checkpoints.term)).await {
        Ok(gc) => {
            let deleted = gc.wal_objects_deleted + gc.chunks_deleted + gc.manifests_deleted;
            stats.gc_objects_deleted.fetch_add(deleted, Ordering::Relaxed);
            if deleted > 0 {
                tracing::info!(
                    wal_objects = gc.wal_objects_deleted,
                    chunks = gc.chunks_deleted,
                    manifests = gc.manifests_deleted,
                    below_index = gc.below_index,
                    "gc: deleted what no retained checkpoint needs"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "gc: failed; will try after the next checkpoint"),
    }
    Ok(report)
}

/// Takes a checkpoint whenever one is due, by time or by records written since the last.
pub(super) async fn checkpointer(shared: std::sync::Weak<Shared>, checkpoints: Checkpoints, interval: Duration, entries: u64) {
    let Some(clock) = shared.upgrade().map(|shared| shared.env.clock.clone()) else { return };
    let mut last_index = shared.upgrade().map_or(0, |shared| shared.store.applied_index());
    let mut last_at = clock.monotonic();
    let mut failed_at: Option<Duration> = None;
    loop {
        clock.sleep(CHECKPOINT_POLL).await;
        let Some(node) = shared.upgrade() else { return };
        if node.failed().is_some() || node.jobs.lock().expect("jobs lock").is_none() {
            return;
        }
        if failed_at.is_some_and(|at| clock.monotonic().saturating_sub(at) < CHECKPOINT_RETRY) {
            continue;
        }
        let applied = node.store.applied_index();
        let by_count = entries > 0 && applied.saturating_sub(last_index) >= entries;
        let by_time = !interval.is_zero() && clock.monotonic().saturating_sub(last_at) >= interval;
        let newest = node.stats.checkpoint_revision.load(Ordering::Relaxed);
        if applied <= last_index || !(by_count || by_time) {
            continue;
        }
        match take_checkpoint(&node, &checkpoints).await {
            Ok(report) => {
                last_index = report.index;
                failed_at = None;
            }
            Err(error) => {
                tracing::warn!(%error, newest, "checkpoint: failed; will try again in 30 s");
                failed_at = Some(clock.monotonic());
            }
        }
        last_at = clock.monotonic();
    }
}
