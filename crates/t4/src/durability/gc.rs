//! Garbage collection in the bucket: what no retained checkpoint and no recovery needs.
//!
//! - The newest `retain` complete checkpoints are kept, and any manifest newer than the
//!   newest complete one (a checkpoint still being written); older manifests go.
//! - Chunks no kept manifest lists go.
//! - WAL objects whose records all lie at or below the newest complete checkpoint go, from
//!   the low end of each term: never a seal (it fences that term's writer for good) and
//!   never a term's highest object (it marks where the term's log ends). The term's floor
//!   (`wal/<term>/floor`) is raised first, so a collection cut short leaves only garbage
//!   below the floor, which the next one removes.
//!
//! Everything removed is below a checkpoint that is complete in the bucket, so removing it
//! is safe whoever does it; a node collects only while it holds the term, and `t4 gc` takes
//! a term first, so two collectors do not race over the same objects.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::stream::{StreamExt, TryStreamExt};

use super::bucket::{list_all, object_error, wal_objects, TermObjects};
use super::checkpoint::{self, Manifest};
use super::format::{decode_wal_header, WAL_OBJECT_HEADER_BYTES};
use crate::durability::layout;
use crate::election::read_lock;
use crate::env::{ObjectStore, DELETE_MANY_MAX};
use crate::error::{Error, Result};

/// Delete requests at once (each of up to [`DELETE_MANY_MAX`] keys).
const DELETE_REQUESTS_IN_FLIGHT: usize = 4;

/// What one collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The checkpoint everything removed lies below (None: no complete checkpoint, nothing
    /// was removed).
    pub below_revision: Option<i64>,
    pub below_index: u64,
    pub checkpoints_kept: usize,
    pub manifests_deleted: u64,
    pub chunks_deleted: u64,
    pub wal_objects_deleted: u64,
}

/// Collects garbage, keeping `retain` (at least 1) complete checkpoints. With `term`, stops
/// before deleting anything if the bucket's lock has moved past it.
pub async fn collect(store: &Arc<dyn ObjectStore>, retain: usize, term: Option<u64>) -> Result<GcReport> {
    let mut report = GcReport::default();
    let chunks: BTreeSet<String> = list_all(store.as_ref(), layout::CHUNK_DIR).await?.into_iter().collect();
    let manifests: Vec<(Manifest, bool)> = checkpoint::manifests(store.as_ref(), &chunks).await?;
    let Some(newest) = manifests.iter().position(|(_, complete)| *complete) else { return Ok(report) };
    let below = manifests[newest].0.position;
    if let Some(term) = term {
        let holder = read_lock(store.as_ref()).await?.map(|(lock, _)| lock.term);
        if holder != Some(term) {
            tracing::info!(term, holder, "gc: the bucket's lock is not this node's term; not collecting");
            return Ok(report);
        }
    }
    report.below_revision = Some(below.revision);
    report.below_index = below.index;
    // Newest first: anything newer than the newest complete one, then `retain` complete ones.
    let mut kept = Vec::new();
    let mut doomed = Vec::new();
    for (position, (manifest, complete)) in manifests.into_iter().enumerate() {
        let keep = position < newest || (complete && kept.iter().filter(|(_, complete)| *complete).count() < retain.max(1));
        if keep {
            kept.push((manifest, complete));
        } else {
            doomed.push(layout::checkpoint_manifest(manifest.position.revision as u64));
        }
    }
    report.checkpoints_kept = kept.iter().filter(|(_, complete)| *complete).count();
    report.manifests_deleted = delete_all(store, doomed).await?;
    let referenced: BTreeSet<String> = kept.iter().flat_map(|(manifest, _)| manifest.chunks.iter().map(|chunk| chunk.name())).collect();
    report.chunks_deleted = delete_all(store, chunks.difference(&referenced).cloned().collect()).await?;
    // Each term: raise its floor to the first object to keep, then delete everything below.
    let mut wal = Vec::new();
    for (term, TermObjects { floor, seqs, below_floor }) in wal_objects(store.as_ref()).await? {
        let mut garbage = below_floor;
        let (Some(&lowest), Some(&highest)) = (seqs.first(), seqs.last()) else { continue };
        // The candidates: the dense run from the lowest seq, short of the highest object.
        // Within it, "all records at or below the checkpoint" holds for a prefix (indexes
        // grow with seq; a seal only ends a term): a binary search finds where it stops.
        let end = (lowest..highest).find(|seq| !seqs.contains(seq)).unwrap_or(highest);
        let (mut low, mut high) = (lowest, end);
        while low < high {
            let middle = low + (high - low) / 2;
            let name = layout::wal_object(term, middle);
            let header = store
                .get_range(&name, 0, WAL_OBJECT_HEADER_BYTES as u64)
                .await
                .map_err(|error| object_error(&format!("read {name}"), error))?;
            let (seal, _, _, first, count) = decode_wal_header(&name, &header)?;
            if !seal && count > 0 && first + count - 1 <= below.index {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        let floor = if low > lowest { crate::election::floor::raise_floor(store.as_ref(), term, low).await? } else { floor };
        garbage.extend(seqs.range(..floor));
        wal.extend(garbage.into_iter().map(|seq| layout::wal_object(term, seq)));
    }
    report.wal_objects_deleted = delete_all(store, wal).await?;
    Ok(report)
}

/// Deletes `names`, up to [`DELETE_MANY_MAX`] a request (one DeleteObjects on S3).
async fn delete_all(store: &Arc<dyn ObjectStore>, names: Vec<String>) -> Result<u64> {
    let count = names.len() as u64;
    let chunks: Vec<Vec<String>> = names.chunks(DELETE_MANY_MAX).map(<[String]>::to_vec).collect();
    futures::stream::iter(chunks.into_iter().map(|names| {
        let store = store.clone();
        async move {
            match store.delete_many(&names).await {
                Ok(()) => Ok(()),
                Err(error) => Err::<(), Error>(object_error(&format!("delete {} objects from {}", names.len(), names[0]), error)),
            }
        }
    }))
    .buffer_unordered(DELETE_REQUESTS_IN_FLIGHT)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(count)
}
