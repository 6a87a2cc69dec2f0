//! A follower installs its leader's snapshot (docs/clustering.md "Catch-up by snapshot";
//! the staging, the marker and their rules are in `cluster/snapshot.rs`): its store replaced
//! in one durable transaction, its log started over after the snapshot, its leases, auth
//! and visible revision taken from the new store.

use std::sync::Arc;

use t4_proto::peer::SnapshotResponse;

use super::Shared;
use crate::cluster::snapshot::{clean_up, write_marker};
use crate::cluster::Position;
use crate::durability::checkpoint::Manifest;
use crate::error::{Error, Result};

/// What the install found.
enum Installed {
    /// A newer term was promised here: the sender was deposed.
    Refused {
        promised: u64,
    },
    /// The log already held the snapshot's last record (nothing to install).
    Held {
        last: Position,
    },
    Done {
        at: Position,
    },
}

/// Installs the snapshot `snapshot_id` of the leader of `term`, whose chunks are staged,
/// described by `manifest`.
pub(super) async fn install(shared: &Arc<Shared>, term: u64, snapshot_id: u64, manifest: &[u8]) -> Result<SnapshotResponse> {
    let state = shared.cluster.as_ref().expect("member");
    let manifest = Manifest::decode("snapshot manifest", manifest)?;
    let (log, store, applying) = (state.log.clone(), shared.store.clone(), state.applying.clone());
    let installed = crate::env::blocking(move || {
        // Nothing is applied to the store meanwhile (`apply_commits`).
        let _applying = applying.lock().expect("applying lock");
        let mut log = log.lock().expect("member log lock");
        let promised = log.promised();
        if term < promised {
            return Ok(Installed::Refused { promised });
        }
        let at = Position { index: manifest.position.index, term: manifest.term };
        if log.last().index >= at.index && log.terms().term_at(at.index) == Some(at.term) {
            return Ok(Installed::Held { last: log.last() });
        }
        if at.index <= store.applied_index() {
            return Err(Error::InvalidArgument(format!(
                "a snapshot at index {} is not past this member's store ({})",
                at.index,
                store.applied_index()
            )));
        }
        if log.staged(snapshot_id).is_none() {
            return Err(Error::InvalidArgument(format!("snapshot {snapshot_id:016x}: no chunks staged here")));
        }
        if term > promised {
            log.promise(term)?;
        }
        let disk = log.disk().clone();
        {
            let staged = log.staged(snapshot_id).expect("checked above");
            staged.sync()?;
            // install-durable-first: the marker, then the store in one durable transaction.
            write_marker(disk.as_ref(), at.index)?;
            let mut entries = staged.entries();
            let compact = manifest.entries != manifest.live_entries;
            store.restore(manifest.position, &mut entries, compact, &manifest.leases, &manifest.auth, Some(at.term))?;
        }
        log.install(at, term)?;
        clean_up(disk.as_ref())?;
        Ok(Installed::Done { at })
    })
    .await?;
    match installed {
        Installed::Refused { promised } => Ok(SnapshotResponse { term: promised, accepted: false, durable: None }),
        Installed::Held { last } => Ok(SnapshotResponse { term, accepted: true, durable: Some(last.into()) }),
        Installed::Done { at } => {
            let store = shared.store.clone();
            let (leases, auth) = crate::env::blocking(move || Ok::<_, Error>((store.leases()?, store.auth_state()?))).await?;
            shared.lessor.reload(&leases, shared.env.clock.monotonic());
            *shared.auth.write().expect("auth lock") = Arc::new(auth);
            // Watchers read what they missed from the store: the ring holds none of it.
            shared.commit_visible(shared.store.applied_revision(), None);
            state.applied.send_replace(shared.store.applied_index());
            state.snapshots_installed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                index = at.index,
                term = at.term,
                revision = shared.store.applied_revision(),
                "cluster: installed the leader's snapshot"
            );
            Ok(SnapshotResponse { term, accepted: true, durable: Some(at.into()) })
        }
    }
}
