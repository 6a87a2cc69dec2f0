//! Engine: s4's object storage with atomic conditional writes, durable before it answers.
//!
//! A put appends the body to the active volume (no fsync yet) and hands a commit to the
//! committer task. The committer takes every commit waiting, fsyncs the volume once (so every
//! body they reference is durable), then evaluates each one's condition and applies it in one
//! redb transaction committed durably, in arrival order, and only then answers. So N
//! concurrent create-only puts of one key give exactly one success and N-1
//! `PreconditionFailed`, a success is never lost by a crash, and metadata never points at a
//! body a crash can take back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use md5::{Digest, Md5};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::volume::{self, ActiveVolume, Location};
use crate::env::{Clock, Disk, DiskFile, RedbBackend, StorageFence};

const BUCKETS: TableDefinition<&str, u64> = TableDefinition::new("buckets");
const OBJECTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("objects");
pub const META_FILE: &str = "meta.redb";
/// Commits applied in one metadata transaction at most.
const COMMIT_BATCH_MAX: usize = 256;
/// Commits waiting for the committer at most (callers beyond wait).
const COMMIT_QUEUE_MAX: usize = 4096;
const OBJECT_FORMAT: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("The specified bucket does not exist")]
    NoSuchBucket,
    #[error("Your previous request to create the named bucket succeeded and you already own it")]
    BucketAlreadyOwnedByYou,
    #[error("The bucket you tried to delete is not empty")]
    BucketNotEmpty,
    #[error("The specified key does not exist")]
    NoSuchKey,
    #[error("At least one of the pre-conditions you specified did not hold")]
    PreconditionFailed,
    #[error("s4 storage failure: {0}")]
    Storage(String),
    #[error("s4 data corrupt: {0}")]
    Corrupt(String),
}

fn storage(error: impl std::fmt::Display) -> EngineError {
    EngineError::Storage(error.to_string())
}

/// A precondition of a write, checked atomically with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    None,
    /// `If-None-Match: *`: only if the key does not exist.
    IfNoneMatch,
    /// `If-Match: <etag>`: only if the current object has this ETag (404 if absent).
    IfMatch(String),
}

/// What s4 keeps about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Quoted, as S3 sends it: `"<md5 hex>"`.
    pub etag: String,
    pub size: u64,
    pub last_modified_ms: u64,
    pub content_type: Option<String>,
    /// `x-amz-meta-*` pairs, sorted by name.
    pub metadata: BTreeMap<String, String>,
    location: Location,
}

enum Mutation {
    CreateBucket(String),
    DeleteBucket(String),
    Put { bucket: String, key: String, object: ObjectInfo, condition: WriteCondition },
    Delete { bucket: String, key: String, if_match: Option<String> },
}

struct Commit {
    mutation: Mutation,
    reply: oneshot::Sender<Result<Option<ObjectInfo>, EngineError>>,
}

struct Inner {
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    db: Database,
    active: Mutex<ActiveVolume>,
    readers: Mutex<BTreeMap<u32, Arc<dyn DiskFile>>>,
}

/// The storage engine; clones share it.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    commits: mpsc::Sender<Commit>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens (or creates) the engine on `disk` and starts its committer task.
    pub async fn open(disk: Arc<dyn Disk>, clock: Arc<dyn Clock>) -> Result<Self, EngineError> {
        Self::open_with(disk, clock, volume::VOLUME_BYTES_MAX).await
    }

    /// [`Engine::open`] with volumes rotated past `volume_bytes_max`.
    pub async fn open_with(disk: Arc<dyn Disk>, clock: Arc<dyn Clock>, volume_bytes_max: u64) -> Result<Self, EngineError> {
        let opened = disk.clone();
        let (db, active) = crate::env::blocking(move || -> Result<_, EngineError> {
            let existed = opened.exists(META_FILE).map_err(storage)?;
            let file = opened.open(META_FILE, true).map_err(storage)?;
            if !existed {
                opened.sync_dir("").map_err(storage)?;
            }
            let db = redb::Builder::new().create_with_backend(RedbBackend::new(file, StorageFence::default())).map_err(storage)?;
            let txn = db.begin_write().map_err(storage)?;
            txn.open_table(BUCKETS).map_err(storage)?;
            txn.open_table(OBJECTS).map_err(storage)?;
            txn.commit().map_err(storage)?;
            Ok((db, ActiveVolume::open(opened.clone(), volume_bytes_max).map_err(storage)?))
        })
        .await?;
        let inner = Arc::new(Inner { disk, clock, db, active: Mutex::new(active), readers: Mutex::new(BTreeMap::new()) });
        let (commits, queue) = mpsc::channel(COMMIT_QUEUE_MAX);
        tokio::spawn(committer(inner.clone(), queue));
        Ok(Self { inner, commits })
    }

    async fn commit(&self, mutation: Mutation) -> Result<Option<ObjectInfo>, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commits.send(Commit { mutation, reply }).await.map_err(|_| storage("engine stopped"))?;
        answer.await.map_err(|_| storage("engine stopped"))?
    }

    pub async fn create_bucket(&self, name: &str) -> Result<(), EngineError> {
        self.commit(Mutation::CreateBucket(name.to_string())).await.map(|_| ())
    }

    pub async fn delete_bucket(&self, name: &str) -> Result<(), EngineError> {
        self.commit(Mutation::DeleteBucket(name.to_string())).await.map(|_| ())
    }

    /// Buckets and their creation times (ms since the epoch), by name.
    pub fn list_buckets(&self) -> Result<Vec<(String, u64)>, EngineError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        let table = txn.open_table(BUCKETS).map_err(storage)?;
        let mut buckets = Vec::new();
        for item in table.iter().map_err(storage)? {
            let (name, created) = item.map_err(storage)?;
            buckets.push((name.value().to_string(), created.value()));
        }
        Ok(buckets)
    }

    /// Stores `body` at `bucket/key` if `condition` holds when it commits; answers only
    /// once the object is durable.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: Option<String>,
        metadata: BTreeMap<String, String>,
        condition: WriteCondition,
    ) -> Result<ObjectInfo, EngineError> {
        let etag = format!("\"{}\"", hex(&Md5::digest(&body)));
        let inner = self.inner.clone();
        let location = crate::env::blocking(move || inner.active.lock().expect("volume lock").append(&body)).await.map_err(storage)?;
        let object =
            ObjectInfo { etag, size: location.len, last_modified_ms: self.inner.clock.wall_ms(), content_type, metadata, location };
        let mutation = Mutation::Put { bucket: bucket.to_string(), key: key.to_string(), object, condition };
        self.commit(mutation).await.map(|stored| stored.expect("a put answers with its object"))
    }

    /// Deletes `bucket/key` (only if its ETag matches when `if_match` is given). Deleting a
    /// missing key succeeds, as in S3.
    pub async fn delete_object(&self, bucket: &str, key: &str, if_match: Option<String>) -> Result<(), EngineError> {
        self.commit(Mutation::Delete { bucket: bucket.to_string(), key: key.to_string(), if_match }).await.map(|_| ())
    }

    pub fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectInfo, EngineError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        if txn.open_table(BUCKETS).map_err(storage)?.get(bucket).map_err(storage)?.is_none() {
            return Err(EngineError::NoSuchBucket);
        }
        let objects = txn.open_table(OBJECTS).map_err(storage)?;
        let stored = objects.get((bucket, key)).map_err(storage)?.ok_or(EngineError::NoSuchKey)?;
        decode_object(stored.value())
    }

    /// The object and bytes `[start, end)` of its body (checked against its checksum).
    pub async fn get_object(&self, bucket: &str, key: &str, range: Option<(u64, u64)>) -> Result<(ObjectInfo, Bytes), EngineError> {
        let info = self.head_object(bucket, key)?;
        let body = self.read_object(&info, range).await?;
        Ok((info, body))
    }

    /// Bytes `[start, end)` of the body `info` describes (from [`Engine::head_object`]).
    /// Bodies never change in place, so this is the body of exactly that version even if
    /// the key was overwritten since.
    pub async fn read_object(&self, info: &ObjectInfo, range: Option<(u64, u64)>) -> Result<Bytes, EngineError> {
        let (start, end) = range.unwrap_or((0, info.size));
        let file = self.reader(info.location.volume)?;
        let location = info.location;
        let body = crate::env::blocking(move || volume::read(file.as_ref(), location, start, end)).await.map_err(|error| {
            if error.kind() == std::io::ErrorKind::InvalidData {
                EngineError::Corrupt(error.to_string())
            } else {
                storage(error)
            }
        })?;
        Ok(Bytes::from(body))
    }

    /// Keys of `bucket` starting with `prefix`, strictly after `start_after`, at most `limit`.
    pub fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ObjectInfo)>, EngineError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        if txn.open_table(BUCKETS).map_err(storage)?.get(bucket).map_err(storage)?.is_none() {
            return Err(EngineError::NoSuchBucket);
        }
        let objects = txn.open_table(OBJECTS).map_err(storage)?;
        let from = start_after.map_or(prefix, |after| after.max(prefix));
        let mut listed = Vec::new();
        for item in objects.range::<(&str, &str)>((bucket, from)..).map_err(storage)? {
            let (position, stored) = item.map_err(storage)?;
            let (item_bucket, key) = position.value();
            if item_bucket != bucket || !key.starts_with(prefix) || listed.len() >= limit {
                break;
            }
            if start_after.is_some_and(|after| key <= after) {
                continue;
            }
            listed.push((key.to_string(), decode_object(stored.value())?));
        }
        Ok(listed)
    }

    fn reader(&self, id: u32) -> Result<Arc<dyn DiskFile>, EngineError> {
        let mut readers = self.inner.readers.lock().expect("readers lock");
        if let Some(file) = readers.get(&id) {
            return Ok(file.clone());
        }
        let file: Arc<dyn DiskFile> = Arc::from(self.inner.disk.open(&volume::volume_name(id), false).map_err(storage)?);
        readers.insert(id, file.clone());
        Ok(file)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Takes every waiting commit, makes their bodies durable with one fsync, applies them in
/// one durable metadata transaction, then answers.
async fn committer(inner: Arc<Inner>, mut queue: mpsc::Receiver<Commit>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < COMMIT_BATCH_MAX {
            match queue.try_recv() {
                Ok(commit) => batch.push(commit),
                Err(_) => break,
            }
        }
        let (mutations, replies): (Vec<Mutation>, Vec<_>) = batch.into_iter().map(|commit| (commit.mutation, commit.reply)).unzip();
        let worker = inner.clone();
        let outcomes = crate::env::blocking(move || apply(&worker, mutations)).await;
        match outcomes {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::error!(%error, "s4: commit failed; nothing of this batch was acknowledged");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

fn apply(inner: &Inner, mutations: Vec<Mutation>) -> Result<Vec<Result<Option<ObjectInfo>, EngineError>>, EngineError> {
    // Every body these commits reference was appended before they were queued: one fsync
    // makes them all durable before any metadata can point at them.
    let volume = inner.active.lock().expect("volume lock").file();
    volume.sync_data().map_err(storage)?;
    let mut txn = inner.db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate).map_err(storage)?;
    let mut outcomes = Vec::with_capacity(mutations.len());
    {
        let mut buckets = txn.open_table(BUCKETS).map_err(storage)?;
        let mut objects = txn.open_table(OBJECTS).map_err(storage)?;
        for mutation in mutations {
            outcomes.push(apply_one(inner, &mut buckets, &mut objects, mutation)?);
        }
    }
    txn.commit().map_err(storage)?;
    Ok(outcomes)
}

type Buckets<'t> = redb::Table<'t, &'static str, u64>;
type Objects<'t> = redb::Table<'t, (&'static str, &'static str), &'static [u8]>;

/// One mutation inside the commit transaction. The outer `Result` is a storage failure (the
/// whole batch fails); the inner one is this request's answer.
fn apply_one(
    inner: &Inner,
    buckets: &mut Buckets<'_>,
    objects: &mut Objects<'_>,
    mutation: Mutation,
) -> Result<Result<Option<ObjectInfo>, EngineError>, EngineError> {
    match mutation {
        Mutation::CreateBucket(name) => {
            if buckets.get(name.as_str()).map_err(storage)?.is_some() {
                return Ok(Err(EngineError::BucketAlreadyOwnedByYou));
            }
            buckets.insert(name.as_str(), inner.clock.wall_ms()).map_err(storage)?;
            Ok(Ok(None))
        }
        Mutation::DeleteBucket(name) => {
            if buckets.get(name.as_str()).map_err(storage)?.is_none() {
                return Ok(Err(EngineError::NoSuchBucket));
            }
            let has_objects = objects
                .range::<(&str, &str)>((name.as_str(), "")..)
                .map_err(storage)?
                .next()
                .transpose()
                .map_err(storage)?
                .is_some_and(|(position, _)| position.value().0 == name);
            if has_objects {
                return Ok(Err(EngineError::BucketNotEmpty));
            }
            buckets.remove(name.as_str()).map_err(storage)?;
            Ok(Ok(None))
        }
        Mutation::Put { bucket, key, object, condition } => {
            if buckets.get(bucket.as_str()).map_err(storage)?.is_none() {
                return Ok(Err(EngineError::NoSuchBucket));
            }
            let current =
                objects.get((bucket.as_str(), key.as_str())).map_err(storage)?.map(|stored| decode_object(stored.value())).transpose()?;
            if let Err(refused) = check(&condition, current.as_ref()) {
                return Ok(Err(refused));
            }
            objects.insert((bucket.as_str(), key.as_str()), encode_object(&object).as_slice()).map_err(storage)?;
            Ok(Ok(Some(object)))
        }
        Mutation::Delete { bucket, key, if_match } => {
            if buckets.get(bucket.as_str()).map_err(storage)?.is_none() {
                return Ok(Err(EngineError::NoSuchBucket));
            }
            let current =
                objects.get((bucket.as_str(), key.as_str())).map_err(storage)?.map(|stored| decode_object(stored.value())).transpose()?;
            if let Some(etag) = if_match {
                if let Err(refused) = check(&WriteCondition::IfMatch(etag), current.as_ref()) {
                    return Ok(Err(refused));
                }
            }
            objects.remove((bucket.as_str(), key.as_str())).map_err(storage)?;
            Ok(Ok(None))
        }
    }
}

/// S3's rules: `If-None-Match: *` fails on an existing key; `If-Match` fails (404) on a
/// missing key and (412) on another ETag.
fn check(condition: &WriteCondition, current: Option<&ObjectInfo>) -> Result<(), EngineError> {
    match (condition, current) {
        (WriteCondition::None, _) => Ok(()),
        (WriteCondition::IfNoneMatch, Some(_)) => Err(EngineError::PreconditionFailed),
        (WriteCondition::IfNoneMatch, None) => Ok(()),
        (WriteCondition::IfMatch(_), None) => Err(EngineError::NoSuchKey),
        (WriteCondition::IfMatch(etag), Some(current)) if etag.trim_matches('"') != current.etag.trim_matches('"') && etag != "*" => {
            Err(EngineError::PreconditionFailed)
        }
        (WriteCondition::IfMatch(_), Some(_)) => Ok(()),
    }
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn encode_object(object: &ObjectInfo) -> Vec<u8> {
    let mut out = vec![OBJECT_FORMAT, 0, 0, 0, 0];
    out.extend_from_slice(&object.location.volume.to_le_bytes());
    out.extend_from_slice(&object.location.offset.to_le_bytes());
    out.extend_from_slice(&object.location.len.to_le_bytes());
    out.extend_from_slice(&object.location.crc.to_le_bytes());
    out.extend_from_slice(&object.last_modified_ms.to_le_bytes());
    put_string(&mut out, &object.etag);
    put_string(&mut out, object.content_type.as_deref().unwrap_or(""));
    out.extend_from_slice(&(object.metadata.len() as u32).to_le_bytes());
    for (name, value) in &object.metadata {
        put_string(&mut out, name);
        put_string(&mut out, value);
    }
    let crc = crc32c::crc32c(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode_object(bytes: &[u8]) -> Result<ObjectInfo, EngineError> {
    let corrupt = |what: &str| EngineError::Corrupt(format!("object metadata: {what}"));
    if bytes.len() < 5 || bytes[0] != OBJECT_FORMAT {
        return Err(corrupt("unknown format"));
    }
    if u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes")) != crc32c::crc32c(&bytes[5..]) {
        return Err(corrupt("checksum mismatch"));
    }
    let mut reader = Reader { bytes, at: 5 };
    let location = Location { volume: reader.u32()?, offset: reader.u64()?, len: reader.u64()?, crc: reader.u32()? };
    let last_modified_ms = reader.u64()?;
    let etag = reader.string()?;
    let content_type = Some(reader.string()?).filter(|text| !text.is_empty());
    let count = reader.u32()?;
    let mut metadata = BTreeMap::new();
    for _ in 0..count {
        metadata.insert(reader.string()?, reader.string()?);
    }
    Ok(ObjectInfo { etag, size: location.len, last_modified_ms, content_type, metadata, location })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, len: usize) -> Result<&[u8], EngineError> {
        let end = self.at.checked_add(len).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| EngineError::Corrupt("object metadata: truncated".into()))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, EngineError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, EngineError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn string(&mut self) -> Result<String, EngineError> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| EngineError::Corrupt("object metadata: not utf-8".into()))
    }
}

#[cfg(test)]
#[path = "engine_test.rs"]
mod engine_test;
