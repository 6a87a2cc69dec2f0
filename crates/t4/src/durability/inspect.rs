//! Offline, read-only views of a data directory or a bucket (`t4 inspect`), and restoring a
//! checkpoint into a new data directory (`t4 restore checkpoint`).
//!
//! Inspection never writes where it reads: a data directory is copied into memory (a
//! [`SimDisk`]) and opened there, its local WAL replayed onto the copy; a bucket is read
//! without taking a term or sealing anything — the newest complete checkpoint is restored
//! into memory and the log after it replayed.

use std::path::Path;
use std::sync::Arc;

use t4_proto::etcdserverpb::RangeRequest;
use t4_proto::mvccpb::KeyValue;

use super::bucket::read_log;
use super::checkpoint::{self, Manifest};
use crate::env::{Disk, ObjectStore, OsDisk, SimDisk, StorageFence};
use crate::error::{Error, Result};
use crate::mvcc::{KeySpan, Position, Store, STORE_FILE};

/// A store rebuilt in memory, and where it came from.
pub struct Inspected {
    pub store: Arc<Store>,
    /// What was read, for `meta`.
    pub source: String,
}

/// Copies the data directory at `dir` (the store file and the local WAL) into memory and
/// replays the WAL onto the copy, as opening a node there would; `dir` is only read.
pub fn open_data_dir(dir: &Path) -> Result<Inspected> {
    if !dir.join(STORE_FILE).exists() {
        return Err(Error::InvalidArgument(format!("{} holds no t4 store ({STORE_FILE} is missing)", dir.display())));
    }
    let disk = SimDisk::new();
    let copy = |relative: &str| -> Result<()> {
        let bytes = std::fs::read(dir.join(relative)).map_err(|error| Error::storage("read data dir", error))?;
        let file = disk.open(relative, true).map_err(|error| Error::storage("copy", error))?;
        file.write_at(0, &bytes).and_then(|()| file.sync_data()).map_err(|error| Error::storage("copy", error))
    };
    copy(STORE_FILE)?;
    let wal_dir = dir.join(crate::wal::WAL_DIR);
    let mut segments = 0;
    if wal_dir.is_dir() {
        disk.create_dir_all(crate::wal::WAL_DIR).map_err(|error| Error::storage("copy", error))?;
        for entry in std::fs::read_dir(&wal_dir).map_err(|error| Error::storage("read wal dir", error))? {
            let name = entry.map_err(|error| Error::storage("read wal dir", error))?.file_name();
            let name = name.to_string_lossy();
            copy(&format!("{}/{name}", crate::wal::WAL_DIR))?;
            segments += 1;
        }
    }
    let disk: Arc<dyn Disk> = Arc::new(disk);
    let store = Arc::new(Store::open(disk.as_ref(), StorageFence::default())?);
    let recovered = crate::wal::recover(&disk, store.applied_index())?;
    store.replay(&recovered.records)?;
    let source = format!(
        "data dir {} (store file plus {} record(s) replayed from {segments} local WAL segment(s))",
        dir.display(),
        recovered.records.len()
    );
    Ok(Inspected { store, source })
}

/// The newest complete checkpoint, or the one at `revision`.
pub async fn find_checkpoint(store: &dyn ObjectStore, revision: Option<u64>) -> Result<Option<Manifest>> {
    let chunks = super::bucket::list_all(store, crate::durability::layout::CHUNK_DIR).await?.into_iter().collect();
    let complete = checkpoint::complete(store, &chunks).await?;
    match revision {
        None => Ok(complete.into_iter().next()),
        Some(revision) => match complete.into_iter().find(|manifest| manifest.position.revision as u64 == revision) {
            Some(manifest) => Ok(Some(manifest)),
            None => Err(Error::InvalidArgument(format!("no complete checkpoint at revision {revision} (t4 status lists them)"))),
        },
    }
}

/// Rebuilds the bucket's state in memory without writing to the bucket: the newest complete
/// checkpoint, then the log after it (unsealed terms are read to their first missing object,
/// as they stand).
pub async fn open_bucket(bucket: &Arc<dyn ObjectStore>) -> Result<Inspected> {
    let disk = SimDisk::new();
    let store = Arc::new(Store::open(&disk, StorageFence::default())?);
    let manifest = find_checkpoint(bucket.as_ref(), None).await?;
    if let Some(manifest) = &manifest {
        checkpoint::restore(bucket, manifest, &store).await?;
    }
    let log = read_log(bucket.as_ref(), store.applied_index(), None).await?;
    let replay = store.clone();
    let records = log.records.len();
    crate::env::blocking(move || replay.replay(&log.records)).await?;
    let source = match manifest {
        Some(manifest) => format!(
            "bucket: checkpoint at revision {} (log index {}), then {records} record(s) of the log",
            manifest.position.revision, manifest.position.index
        ),
        None => format!("bucket: no checkpoint; {records} record(s) of the log"),
    };
    Ok(Inspected { store, source })
}

/// Restores the newest complete checkpoint (or the one at `revision`) into a new data
/// directory. Returns its manifest.
pub async fn restore_checkpoint(bucket: &Arc<dyn ObjectStore>, data_dir: &Path, revision: Option<u64>) -> Result<Manifest> {
    let occupied = std::fs::read_dir(data_dir).map(|mut entries| entries.next().is_some()).unwrap_or(false);
    if occupied {
        return Err(Error::InvalidArgument(format!("{} is not empty: restore into a new directory", data_dir.display())));
    }
    let manifest = find_checkpoint(bucket.as_ref(), revision)
        .await?
        .ok_or_else(|| Error::InvalidArgument("the bucket holds no complete checkpoint (t4 status shows what it holds)".to_string()))?;
    let disk = OsDisk::new(data_dir.to_path_buf());
    let store = Arc::new(Store::open(&disk, StorageFence::default())?);
    checkpoint::restore(bucket, &manifest, &store).await?;
    let closing = store.clone();
    crate::env::blocking(move || closing.close()).await;
    Ok(manifest)
}

impl Inspected {
    pub fn position(&self) -> Position {
        Position {
            revision: self.store.applied_revision(),
            index: self.store.applied_index(),
            compact_revision: self.store.compact_revision(),
        }
    }

    /// Everything replayed is visible: nothing here waits for a WAL fsync.
    fn visible(&self) -> i64 {
        self.store.applied_revision()
    }

    pub fn get(&self, key: &[u8], revision: Option<i64>) -> Result<Option<KeyValue>> {
        let request = RangeRequest { key: key.to_vec(), revision: revision.unwrap_or(0), ..Default::default() };
        Ok(self.store.range(&request, self.visible())?.kvs.into_iter().next())
    }

    /// Keys starting with `prefix` (every key when empty), at most `limit`.
    pub fn list(&self, prefix: &[u8], revision: Option<i64>, limit: i64) -> Result<(Vec<KeyValue>, i64)> {
        let range_end = if prefix.is_empty() { vec![0] } else { prefix_end(prefix) };
        let key = if prefix.is_empty() { vec![0] } else { prefix.to_vec() };
        let request = RangeRequest { key, range_end, revision: revision.unwrap_or(0), limit, ..Default::default() };
        let response = self.store.range(&request, self.visible())?;
        Ok((response.kvs, response.count))
    }

    /// Every change of `key` the store still holds (above its compaction), oldest first:
    /// the key-value after the change (version 0: deleted).
    pub fn history(&self, key: &[u8]) -> Result<Vec<KeyValue>> {
        let span = KeySpan::new(key, &[]);
        let from = (self.store.compact_revision() + 1).max(1);
        let events = self.store.events(&span, from, self.store.applied_revision(), false)?;
        Ok(events.into_iter().flat_map(|revision| revision.events).filter_map(|event| event.kv).collect())
    }
}

/// etcd's range end for "every key starting with `prefix`".
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
