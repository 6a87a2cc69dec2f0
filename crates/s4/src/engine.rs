//! Engine: s4's object storage with atomic conditional writes, durable before it answers.
//!
//! A write appends its body to the active volume (no fsync yet) and hands a commit to the
//! committer task. The committer takes every commit waiting, fsyncs the volumes their bodies
//! are in (once per batch), then evaluates each one's condition and applies it in one redb
//! transaction committed durably, in arrival order, and only then answers. So N concurrent
//! create-only puts of one key give exactly one success and N-1 `PreconditionFailed`, a
//! success is never lost by a crash, and metadata never points at a body a crash can take
//! back.
//!
//! Bodies are reference-counted (copies, multipart objects and identical bodies share them);
//! a body nothing references is dead space, which [`Engine::compact`] reclaims by moving the
//! live bodies of a mostly-dead volume and deleting it. Versioning, delete markers,
//! multipart uploads and lifecycle expiry all live in the same metadata transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use md5::{Digest, Md5};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};

use super::meta::{self, BodyRecord, BucketRecord, Segment};
pub use super::meta::{LifecycleRule, ObjectInfo, PartRecord, UploadRecord, Versioning, NULL_VERSION};
use super::volume::{self, ActiveVolume, Location};
use t4_env::{Clock, Disk, DiskFile, RedbBackend, StorageFence};

pub const META_FILE: &str = "meta.redb";
/// Commits applied in one metadata transaction at most.
const COMMIT_BATCH_MAX: usize = 256;
/// Commits waiting for the committer at most (callers beyond wait).
const COMMIT_QUEUE_MAX: usize = 4096;
/// A GET reads (and holds in memory) at most this much of a body at a time.
const READ_PIECE_BYTES: u64 = 1 << 20;
/// Bodies up to this size are appended (and read) on the calling task, not in the
/// blocking pool, when the volume is free.
#[cfg(not(madsim))]
const INLINE_APPEND_MAX: usize = 64 << 10;
/// S3's limits on multipart uploads.
pub const PART_NUMBER_MAX: u32 = 10_000;
const DAY_MS: u64 = 24 * 3600 * 1000;

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
    #[error("The specified version does not exist")]
    NoSuchVersion,
    #[error("The specified multipart upload does not exist")]
    NoSuchUpload,
    #[error("At least one of the pre-conditions you specified did not hold")]
    PreconditionFailed,
    #[error("One or more of the specified parts could not be found or its entity tag did not match")]
    InvalidPart,
    #[error("The list of parts was not in ascending order")]
    InvalidPartOrder,
    #[error("Your proposed upload is smaller than the minimum allowed object size")]
    EntityTooSmall,
    #[error("The specified method is not allowed against this resource")]
    MethodNotAllowed,
    #[error("{0}")]
    InvalidArgument(String),
    /// Not a refusal: s4 itself failed to store or read what it should have.
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// A failure of s4's own storage or data, kept apart from the refusals of a request
/// ([`EngineError`]'s other variants): a commit that meets one fails its whole batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The disk or the metadata store failed: writes stop until s4 restarts (reads go on).
    #[error("s4 storage failure: {0}")]
    Storage(String),
    /// Stored data failed validation: the request fails, nothing else stops.
    #[error("s4 data corrupt: {0}")]
    Corrupt(String),
}

fn storage(error: impl std::fmt::Display) -> Failure {
    Failure::Storage(error.to_string())
}

/// A precondition of a write, checked atomically with it against the current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    None,
    /// `If-None-Match: *`: only if the key does not exist.
    IfNoneMatch,
    /// `If-Match: <etag>`: only if the current object has this ETag (404 if absent).
    IfMatch(String),
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteOutcome {
    /// The version removed, or the delete marker created.
    pub version_id: Option<String>,
    pub delete_marker: bool,
}

/// Engine settings (S3's defaults unless a test needs smaller numbers).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// A new volume starts once the active one is past this size.
    pub volume_bytes_max: u64,
    /// Every part of a multipart upload but the last must be at least this big.
    pub part_bytes_min: u64,
    /// Multipart uploads untouched for this long are aborted (their parts freed).
    pub upload_expiry: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { volume_bytes_max: volume::VOLUME_BYTES_MAX, part_bytes_min: 5 << 20, upload_expiry: Duration::from_secs(7 * 24 * 3600) }
    }
}

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub volumes_removed: u64,
    pub bodies_moved: u64,
    pub bytes_moved: u64,
    pub bytes_freed: u64,
}

/// What one lifecycle pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleReport {
    pub current_expired: u64,
    pub noncurrent_removed: u64,
    pub markers_removed: u64,
    pub uploads_aborted: u64,
}

/// Sizes for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Commits applied, and the durable metadata transactions (group commits) they took.
    pub commits: u64,
    pub batches: u64,
    pub volumes: u64,
    pub volume_bytes: u64,
    pub live_bytes: u64,
    pub bodies: u64,
}

/// A body appended to a volume, not yet referenced by metadata. It pins its volume until
/// it is dropped (after its commit, or when it is given up).
#[derive(Debug, Clone)]
struct NewBody {
    location: Location,
    dedup_key: Vec<u8>,
    md5: [u8; 16],
    _pin: Arc<VolumePin>,
}

/// A volume compaction must leave alone: a body is being written into it, or is written
/// and not yet committed (so not in `body_at`, and compaction would not move it).
#[derive(Debug)]
struct VolumePin {
    pins: Arc<Mutex<BTreeMap<u32, usize>>>,
    id: u32,
}

impl VolumePin {
    /// Taken under the active volume's lock, before the volume can be sealed.
    fn new(pins: &Arc<Mutex<BTreeMap<u32, usize>>>, id: u32) -> Arc<Self> {
        *pins.lock().expect("pins lock").entry(id).or_default() += 1;
        Arc::new(Self { pins: pins.clone(), id })
    }
}

impl Drop for VolumePin {
    fn drop(&mut self) {
        let mut pins = self.pins.lock().expect("pins lock");
        if let std::collections::btree_map::Entry::Occupied(mut count) = pins.entry(self.id) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }
}

/// A body stored in a volume and ready to be committed as an object or a part
/// ([`Engine::store_body`], [`BodyUpload::finish`]).
#[derive(Debug)]
pub struct StoredBody(NewBody);

impl StoredBody {
    /// The MD5 of the body (its ETag, and what Content-MD5 is checked against).
    pub fn md5(&self) -> [u8; 16] {
        self.0.md5
    }
}

/// A body written into its volume as it arrives, in room set aside for its declared length
/// ([`Engine::start_body`]): memory holds only the piece in hand, and no lock is held
/// between pieces, so a slow client delays no one else.
pub struct BodyUpload {
    inner: Arc<Inner>,
    writer: Option<volume::RecordWriter>,
    md5: Md5,
    sha256: Sha256,
    pin: Arc<VolumePin>,
}

impl BodyUpload {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.writer.as_ref().map_or(0, volume::RecordWriter::written)
    }

    /// Writes the next bytes of the body (to the page cache; durable at its commit).
    pub async fn write(&mut self, bytes: Bytes) -> Result<(), EngineError> {
        self.inner.stopped()?;
        self.md5.update(&bytes);
        self.sha256.update(&bytes);
        let mut writer = self.writer.take().ok_or_else(|| storage("a body write after a failed one"))?;
        let (writer, written) = t4_env::blocking(move || {
            let written = writer.write(&bytes);
            (writer, written)
        })
        .await;
        self.writer = Some(writer);
        written.map_err(|error| self.failed(error))
    }

    /// The whole body is written: its block table and header follow.
    pub async fn finish(mut self) -> Result<StoredBody, EngineError> {
        self.inner.stopped()?;
        let writer = self.writer.take().ok_or_else(|| storage("a body finished after a failed write"))?;
        let location = t4_env::blocking(move || writer.finish()).await.map_err(|error| self.failed(error))?;
        let md5: [u8; 16] = self.md5.finalize().into();
        let dedup_key = meta::dedup_key(&self.sha256.finalize(), location.len);
        Ok(StoredBody(NewBody { location, dedup_key, md5, _pin: self.pin }))
    }

    fn failed(&self, error: std::io::Error) -> EngineError {
        let error = match error.kind() {
            std::io::ErrorKind::InvalidInput => EngineError::InvalidArgument(error.to_string()),
            _ => storage(error).into(),
        };
        self.inner.fail(&error);
        error
    }
}

/// Where a new version's bytes come from.
enum Data {
    Body(NewBody),
    /// Shares the segments of an existing version (CopyObject).
    Copy(Vec<Segment>),
    /// The parts of a multipart upload, in order, with the ETags the client listed.
    Parts {
        upload_id: String,
        parts: Vec<(u32, String)>,
    },
}

struct NewVersion {
    bucket: String,
    key: String,
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
    /// Known up front except for multipart objects.
    etag: String,
    data: Data,
}

enum Mutation {
    CreateBucket(String),
    DeleteBucket(String),
    SetVersioning(String, Versioning),
    SetLifecycle(String, Vec<LifecycleRule>),
    Put(NewVersion, WriteCondition),
    /// `only_seq`: lifecycle's guard (act only if the current version is still this one).
    Delete {
        bucket: String,
        key: String,
        version_id: Option<String>,
        if_match: Option<String>,
        only_seq: Option<u64>,
    },
    CreateUpload(UploadRecord),
    PutPart {
        upload_id: String,
        bucket: String,
        key: String,
        part_number: u32,
        body: NewBody,
    },
    AbortUpload {
        upload_id: String,
        bucket: Option<(String, String)>,
    },
    Relocate(Vec<(u64, Location, Location)>),
}

impl Mutation {
    /// Volumes holding bodies this mutation will reference: synced before it commits.
    fn volumes(&self) -> Vec<u32> {
        match self {
            Mutation::Put(NewVersion { data: Data::Body(body), .. }, _) | Mutation::PutPart { body, .. } => vec![body.location.volume],
            Mutation::Relocate(moves) => moves.iter().map(|(_, _, to)| to.volume).collect(),
            _ => Vec::new(),
        }
    }
}

enum Outcome {
    Done,
    Object(ObjectInfo),
    Deleted(DeleteOutcome),
    Upload(String),
    Part(PartRecord),
}

struct Commit {
    mutation: Mutation,
    reply: oneshot::Sender<Result<Outcome, EngineError>>,
}

struct Inner {
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    options: EngineOptions,
    db: Database,
    active: Mutex<ActiveVolume>,
    readers: Mutex<BTreeMap<u32, Arc<dyn DiskFile>>>,
    /// Readers resolve a body's location and take its volume's handle under the read side;
    /// compaction deletes a volume under the write side. So a read either sees the old
    /// location with a handle that outlives the unlink, or the new location.
    gate: RwLock<()>,
    /// One compaction or lifecycle pass at a time.
    maintenance: tokio::sync::Mutex<()>,
    /// The first storage failure of a write (a failed fsync, write or metadata commit). From
    /// then on the engine accepts no write (fail-stop: after a failed fsync the page cache no
    /// longer says what the disk holds) and reports itself unhealthy; reads go on.
    failure: Mutex<Option<String>>,
    /// Volumes with bodies not yet committed, and how many ([`VolumePin`]).
    pins: Arc<Mutex<BTreeMap<u32, usize>>>,
    /// Commits applied, and metadata transactions (each with its fsyncs) they took.
    commits: std::sync::atomic::AtomicU64,
    batches: std::sync::atomic::AtomicU64,
}

impl Inner {
    fn reader(&self, id: u32) -> Result<Arc<dyn DiskFile>, Failure> {
        let mut readers = self.readers.lock().expect("readers lock");
        if let Some(file) = readers.get(&id) {
            return Ok(file.clone());
        }
        let file: Arc<dyn DiskFile> = Arc::from(self.disk.open(&volume::volume_name(id), false).map_err(storage)?);
        readers.insert(id, file.clone());
        Ok(file)
    }
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

/// A stored body ready to be read: its volume handle and location, resolved under the gate.
#[derive(Debug, Clone)]
struct Piece {
    file: Arc<dyn DiskFile>,
    location: Location,
    start: u64,
    end: u64,
}

/// The bytes of one object (or a range of it), read one segment at a time.
#[derive(Debug)]
pub struct BodyReader {
    pieces: std::collections::VecDeque<Piece>,
}

impl BodyReader {
    /// The next stretch of the body, checked against its checksum; `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, EngineError>> {
        let piece = self.pieces.pop_front()?;
        // A small read (usually from the page cache) costs less than a blocking-pool hop.
        #[cfg(not(madsim))]
        if piece.end - piece.start <= INLINE_APPEND_MAX as u64 {
            let read = volume::read(piece.file.as_ref(), piece.location, piece.start, piece.end);
            return Some(read.map(Bytes::from).map_err(|error| read_error(error).into()));
        }
        let read = t4_env::blocking(move || volume::read(piece.file.as_ref(), piece.location, piece.start, piece.end)).await;
        Some(read.map(Bytes::from).map_err(|error| read_error(error).into()))
    }

    /// The whole (ranged) body in memory.
    pub async fn collect(mut self) -> Result<Bytes, EngineError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(out))
    }
}

fn read_error(error: std::io::Error) -> Failure {
    if error.kind() == std::io::ErrorKind::InvalidData {
        Failure::Corrupt(error.to_string())
    } else {
        storage(error)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn version_id_of(seq: u64) -> String {
    format!("{seq:016x}")
}

fn seq_of(version_id: &str) -> Option<u64> {
    (version_id.len() == 16).then(|| u64::from_str_radix(version_id, 16).ok()).flatten()
}

/// Checks a bucket name against S3's rules (3–63 of `a-z0-9.-`, starting and ending with a
/// letter or digit).
pub fn valid_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'.' || *byte == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

impl Engine {
    /// Opens (or creates) the engine on `disk` and starts its committer task.
    pub async fn open(disk: Arc<dyn Disk>, clock: Arc<dyn Clock>) -> Result<Self, EngineError> {
        Self::open_with(disk, clock, EngineOptions::default()).await
    }

    pub async fn open_with(disk: Arc<dyn Disk>, clock: Arc<dyn Clock>, options: EngineOptions) -> Result<Self, EngineError> {
        let opened = disk.clone();
        let volume_bytes_max = options.volume_bytes_max;
        let (db, active) = t4_env::blocking(move || -> Result<_, EngineError> {
            let existed = opened.exists(META_FILE).map_err(storage)?;
            let file = opened.open(META_FILE, true).map_err(storage)?;
            if !existed {
                opened.sync_dir("").map_err(storage)?;
            }
            let db = redb::Builder::new().create_with_backend(RedbBackend::new(file, StorageFence::default())).map_err(storage)?;
            let txn = db.begin_write().map_err(storage)?;
            txn.open_table(meta::BUCKETS).map_err(storage)?;
            txn.open_table(meta::OBJECTS).map_err(storage)?;
            txn.open_table(meta::VERSIONS).map_err(storage)?;
            txn.open_table(meta::BODIES).map_err(storage)?;
            txn.open_table(meta::BODY_AT).map_err(storage)?;
            txn.open_table(meta::DEDUP).map_err(storage)?;
            txn.open_table(meta::LIVE).map_err(storage)?;
            txn.open_table(meta::UPLOADS).map_err(storage)?;
            txn.open_table(meta::PARTS).map_err(storage)?;
            txn.open_table(meta::COUNTERS).map_err(storage)?;
            txn.commit().map_err(storage)?;
            Ok((db, ActiveVolume::open(opened.clone(), volume_bytes_max).map_err(storage)?))
        })
        .await?;
        let inner = Arc::new(Inner {
            disk,
            clock,
            options,
            db,
            active: Mutex::new(active),
            readers: Mutex::new(BTreeMap::new()),
            gate: RwLock::new(()),
            maintenance: tokio::sync::Mutex::new(()),
            failure: Mutex::new(None),
            pins: Arc::default(),
            commits: Default::default(),
            batches: Default::default(),
        });
        let (commits, queue) = mpsc::channel(COMMIT_QUEUE_MAX);
        tokio::spawn(committer(inner.clone(), queue));
        Ok(Self { inner, commits })
    }

    /// Ok while the engine accepts writes; the storage failure that stopped them otherwise.
    pub fn health(&self) -> Result<(), EngineError> {
        self.inner.stopped()
    }

    async fn commit(&self, mutation: Mutation) -> Result<Outcome, EngineError> {
        self.inner.stopped()?;
        let (reply, answer) = oneshot::channel();
        self.commits.send(Commit { mutation, reply }).await.map_err(|_| storage("engine stopped"))?;
        answer.await.map_err(|_| storage("engine stopped"))?
    }

    async fn commit_object(&self, mutation: Mutation) -> Result<ObjectInfo, EngineError> {
        match self.commit(mutation).await? {
            Outcome::Object(info) => Ok(info),
            _ => Err(storage("unexpected commit outcome").into()),
        }
    }

    /// Appends `body` to the active volume (not yet durable nor referenced).
    ///
    /// A small body whose volume is free is hashed and written (to the page cache) right
    /// here: a hop to the blocking pool would cost more than the write. Anything larger, or
    /// a volume busy with another append, goes to the blocking pool so that no runtime
    /// thread waits on a long write.
    async fn append(&self, body: Bytes) -> Result<NewBody, EngineError> {
        self.inner.stopped()?;
        let appended = self.append_unchecked(body).await;
        if let Err(error) = &appended {
            self.inner.fail(error);
        }
        appended
    }

    async fn append_unchecked(&self, body: Bytes) -> Result<NewBody, EngineError> {
        let digests =
            |body: &Bytes| -> ([u8; 16], Vec<u8>) { (Md5::digest(body).into(), meta::dedup_key(&Sha256::digest(body), body.len() as u64)) };
        let pins = self.inner.pins.clone();
        // The pin is taken with the volume lock held, before the volume can be sealed.
        let append = move |active: &mut ActiveVolume, body: &[u8]| {
            active.append(body).map(|location| (location, VolumePin::new(&pins, location.volume)))
        };
        #[cfg(not(madsim))]
        if body.len() <= INLINE_APPEND_MAX {
            let (md5, dedup_key) = digests(&body);
            let inline = self.inner.active.try_lock().ok().map(|mut active| append(&mut active, &body));
            let (location, pin) = match inline {
                Some(appended) => appended.map_err(storage)?,
                None => {
                    let inner = self.inner.clone();
                    t4_env::blocking(move || append(&mut inner.active.lock().expect("volume lock"), &body)).await.map_err(storage)?
                }
            };
            return Ok(NewBody { location, dedup_key, md5, _pin: pin });
        }
        let inner = self.inner.clone();
        t4_env::blocking(move || {
            let (md5, dedup_key) = digests(&body);
            let (location, pin) = append(&mut inner.active.lock().expect("volume lock"), &body).map_err(storage)?;
            Ok(NewBody { location, dedup_key, md5, _pin: pin })
        })
        .await
    }

    /// Stores a body held in memory, for [`Engine::put_stored_object`] or
    /// [`Engine::upload_stored_part`].
    pub async fn store_body(&self, body: Bytes) -> Result<StoredBody, EngineError> {
        self.append(body).await.map(StoredBody)
    }

    /// Sets aside room for a body of `len` bytes, to be written as it arrives.
    pub fn start_body(&self, len: u64) -> Result<BodyUpload, EngineError> {
        self.inner.stopped()?;
        let (file, room, pin) = {
            let mut active = self.inner.active.lock().expect("volume lock");
            let (file, room) = active.reserve(len, 0).map_err(storage)?;
            (file, room, VolumePin::new(&self.inner.pins, room.volume))
        };
        Ok(BodyUpload {
            inner: self.inner.clone(),
            writer: Some(volume::RecordWriter::new(file, room)),
            md5: Md5::new(),
            sha256: Sha256::new(),
            pin,
        })
    }

    pub async fn create_bucket(&self, name: &str) -> Result<(), EngineError> {
        self.commit(Mutation::CreateBucket(name.to_string())).await.map(|_| ())
    }

    pub async fn delete_bucket(&self, name: &str) -> Result<(), EngineError> {
        self.commit(Mutation::DeleteBucket(name.to_string())).await.map(|_| ())
    }

    pub async fn set_versioning(&self, bucket: &str, state: Versioning) -> Result<(), EngineError> {
        self.commit(Mutation::SetVersioning(bucket.to_string(), state)).await.map(|_| ())
    }

    /// Replaces the bucket's lifecycle rules (none: no lifecycle).
    pub async fn set_lifecycle(&self, bucket: &str, rules: Vec<LifecycleRule>) -> Result<(), EngineError> {
        self.commit(Mutation::SetLifecycle(bucket.to_string(), rules)).await.map(|_| ())
    }

    /// Buckets and their creation times (ms since the epoch), by name.
    pub fn list_buckets(&self) -> Result<Vec<(String, u64)>, EngineError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        let table = txn.open_table(meta::BUCKETS).map_err(storage)?;
        let mut buckets = Vec::new();
        for item in table.iter().map_err(storage)? {
            let (name, record) = item.map_err(storage)?;
            buckets.push((name.value().to_string(), BucketRecord::decode(record.value())?.created_ms));
        }
        Ok(buckets)
    }

    /// A bucket's versioning state and lifecycle rules.
    pub fn bucket(&self, name: &str) -> Result<(Versioning, Vec<LifecycleRule>), EngineError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        let table = txn.open_table(meta::BUCKETS).map_err(storage)?;
        let record = table.get(name).map_err(storage)?.ok_or(EngineError::NoSuchBucket)?;
        let record = BucketRecord::decode(record.value())?;
        Ok((record.versioning, record.lifecycle))
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
        let body = self.store_body(body).await?;
        self.put_stored_object(bucket, key, body, content_type, metadata, condition).await
    }

    /// Like [`Engine::put_object`], for a body already stored.
    pub async fn put_stored_object(
        &self,
        bucket: &str,
        key: &str,
        body: StoredBody,
        content_type: Option<String>,
        metadata: BTreeMap<String, String>,
        condition: WriteCondition,
    ) -> Result<ObjectInfo, EngineError> {
        let StoredBody(body) = body;
        let version = NewVersion {
            bucket: bucket.to_string(),
            key: key.to_string(),
            content_type,
            metadata,
            etag: format!("\"{}\"", hex(&body.md5)),
            data: Data::Body(body),
        };
        self.commit_object(Mutation::Put(version, condition)).await
    }

    /// Makes `bucket/key` a copy of `source` (sharing its bytes), with the source's content
    /// type and metadata unless `replace` gives new ones. Fails with `NoSuchKey` if the
    /// source version is gone by the time the copy commits.
    pub async fn copy_object(
        &self,
        source: &ObjectInfo,
        bucket: &str,
        key: &str,
        replace: Option<(Option<String>, BTreeMap<String, String>)>,
        condition: WriteCondition,
    ) -> Result<ObjectInfo, EngineError> {
        let (content_type, metadata) = replace.unwrap_or_else(|| (source.content_type.clone(), source.metadata.clone()));
        let version = NewVersion {
            bucket: bucket.to_string(),
            key: key.to_string(),
            content_type,
            metadata,
            etag: source.etag.clone(),
            data: Data::Copy(source.segments.clone()),
        };
        let mut copied = self.commit_object(Mutation::Put(version, condition)).await?;
        copied.parts_count = source.parts_count;
        Ok(copied)
    }

    /// Deletes `bucket/key` as S3 does: without a version id, removes the object (or, with
    /// versioning, adds a delete marker); with one, removes that version for good. Deleting
    /// a missing key succeeds.
    pub async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        if_match: Option<String>,
    ) -> Result<DeleteOutcome, EngineError> {
        if let Some(id) = version_id {
            if id != NULL_VERSION && seq_of(id).is_none() {
                return Err(EngineError::InvalidArgument("Invalid version id specified".into()));
            }
        }
        let mutation = Mutation::Delete {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version_id: version_id.map(str::to_string),
            if_match,
            only_seq: None,
        };
        match self.commit(mutation).await? {
            Outcome::Deleted(outcome) => Ok(outcome),
            _ => Ok(DeleteOutcome::default()),
        }
    }

    /// The current version of `bucket/key` (or the version asked for). The current version
    /// being a delete marker reads as `NoSuchKey`; asking for a marker by id is
    /// `MethodNotAllowed`, as in S3.
    pub fn head_object(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<ObjectInfo, EngineError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        if txn.open_table(meta::BUCKETS).map_err(storage)?.get(bucket).map_err(storage)?.is_none() {
            return Err(EngineError::NoSuchBucket);
        }
        let info = match version_id {
            None => {
                let objects = txn.open_table(meta::OBJECTS).map_err(storage)?;
                let stored = objects.get((bucket, key)).map_err(storage)?.ok_or(EngineError::NoSuchKey)?;
                let info = ObjectInfo::decode(stored.value())?;
                if info.delete_marker {
                    return Err(EngineError::NoSuchKey);
                }
                info
            }
            Some(id) => {
                let versions = txn.open_table(meta::VERSIONS).map_err(storage)?;
                let info = find_version(&versions, bucket, key, id)?.ok_or(EngineError::NoSuchVersion)?;
                if info.delete_marker {
                    return Err(EngineError::MethodNotAllowed);
                }
                info
            }
        };
        Ok(info)
    }

    /// The current version and its whole body.
    pub async fn get_object(&self, bucket: &str, key: &str, range: Option<(u64, u64)>) -> Result<(ObjectInfo, Bytes), EngineError> {
        let info = self.head_object(bucket, key, None)?;
        let body = self.read_object(&info, range).await?;
        Ok((info, body))
    }

    /// Bytes `[start, end)` of the body `info` describes, in memory.
    pub async fn read_object(&self, info: &ObjectInfo, range: Option<(u64, u64)>) -> Result<Bytes, EngineError> {
        self.open_body(info, range)?.collect().await
    }

    /// A reader of bytes `[start, end)` of the body `info` describes. Bodies never change in
    /// place, so this is the body of exactly that version even if the key was overwritten
    /// since; if that version was deleted since (and its bytes freed), `NoSuchKey`.
    pub fn open_body(&self, info: &ObjectInfo, range: Option<(u64, u64)>) -> Result<BodyReader, EngineError> {
        let (start, end) = range.unwrap_or((0, info.size));
        let _gate = self.inner.gate.read().expect("gate");
        let txn = self.inner.db.begin_read().map_err(storage)?;
        let bodies = txn.open_table(meta::BODIES).map_err(storage)?;
        let mut pieces = std::collections::VecDeque::new();
        let mut at = 0u64;
        for segment in &info.segments {
            let (from, to) = (start.max(at), end.min(at + segment.len));
            if from < to || (segment.len == 0 && info.size == 0) {
                let record = bodies.get(segment.body).map_err(storage)?.ok_or(EngineError::NoSuchKey)?;
                let location = BodyRecord::decode(record.value())?.location;
                let file = self.inner.reader(location.volume)?;
                // Pieces of at most READ_PIECE_BYTES, cut at piece-aligned offsets.
                let (mut piece_start, piece_end) = (from - at, to - at);
                loop {
                    let next = ((piece_start / READ_PIECE_BYTES + 1) * READ_PIECE_BYTES).min(piece_end);
                    pieces.push_back(Piece { file: file.clone(), location, start: piece_start, end: next });
                    piece_start = next;
                    if piece_start >= piece_end {
                        break;
                    }
                }
            }
            at += segment.len;
        }
        Ok(BodyReader { pieces })
    }

    /// Current (non-marker) objects of `bucket` whose keys start with `prefix`, strictly
    /// after `start_after`, at most `limit`.
    pub fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ObjectInfo)>, EngineError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        if txn.open_table(meta::BUCKETS).map_err(storage)?.get(bucket).map_err(storage)?.is_none() {
            return Err(EngineError::NoSuchBucket);
        }
        let objects = txn.open_table(meta::OBJECTS).map_err(storage)?;
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
            let info = ObjectInfo::decode(stored.value())?;
            if !info.delete_marker {
                listed.push((key.to_string(), info));
            }
        }
        Ok(listed)
    }

    /// Every version (and delete marker) of keys starting with `prefix`, keys in order and
    /// each key's versions newest first, after (`key_marker`, `version_marker`), at most
    /// `limit`. The flag says whether the version is the current one.
    pub fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: Option<&str>,
        version_marker: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ObjectInfo, bool)>, EngineError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        if txn.open_table(meta::BUCKETS).map_err(storage)?.get(bucket).map_err(storage)?.is_none() {
            return Err(EngineError::NoSuchBucket);
        }
        let versions = txn.open_table(meta::VERSIONS).map_err(storage)?;
        let from = key_marker.map_or(prefix, |marker| marker.max(prefix));
        // Within the marker's key, continue after the marker's version (S3: without a
        // version marker, the key marker's versions are all skipped).
        let resume_after = match (key_marker, version_marker) {
            (Some(key), Some(version)) => find_version(&versions, bucket, key, version)?.map(|info| !info.seq),
            _ => None,
        };
        let mut listed: Vec<(String, ObjectInfo, bool)> = Vec::new();
        for item in versions.range::<(&str, &str, u64)>((bucket, from, 0)..).map_err(storage)? {
            let (position, stored) = item.map_err(storage)?;
            let (item_bucket, key, inverted) = position.value();
            if item_bucket != bucket || !key.starts_with(prefix) || listed.len() >= limit {
                break;
            }
            if key_marker == Some(key) && resume_after.is_none_or(|after| inverted <= after) {
                continue;
            }
            let latest = listed.last().is_none_or(|(last, _, _)| last != key) && !self.has_newer(&versions, bucket, key, inverted)?;
            listed.push((key.to_string(), ObjectInfo::decode(stored.value())?, latest));
        }
        Ok(listed)
    }

    fn has_newer(
        &self,
        versions: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
        bucket: &str,
        key: &str,
        inverted: u64,
    ) -> Result<bool, EngineError> {
        Ok(inverted > 0
            && versions.range::<(&str, &str, u64)>((bucket, key, 0)..(bucket, key, inverted)).map_err(storage)?.next().is_some())
    }

    /// Starts a multipart upload; returns its id.
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        content_type: Option<String>,
        metadata: BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        let upload = UploadRecord {
            bucket: bucket.to_string(),
            key: key.to_string(),
            initiated_ms: self.inner.clock.wall_ms(),
            content_type,
            metadata,
        };
        match self.commit(Mutation::CreateUpload(upload)).await? {
            Outcome::Upload(id) => Ok(id),
            _ => Err(storage("unexpected commit outcome").into()),
        }
    }

    /// Stores part `part_number` of an upload (replacing an earlier one with that number).
    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> Result<PartRecord, EngineError> {
        check_part_number(part_number)?;
        self.upload(bucket, key, upload_id)?;
        let body = self.store_body(body).await?;
        self.upload_stored_part(bucket, key, upload_id, part_number, body).await
    }

    /// Like [`Engine::upload_part`], for a body already stored.
    pub async fn upload_stored_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: StoredBody,
    ) -> Result<PartRecord, EngineError> {
        check_part_number(part_number)?;
        self.upload(bucket, key, upload_id)?;
        let StoredBody(body) = body;
        let mutation =
            Mutation::PutPart { upload_id: upload_id.to_string(), bucket: bucket.to_string(), key: key.to_string(), part_number, body };
        match self.commit(mutation).await? {
            Outcome::Part(part) => Ok(part),
            _ => Err(storage("unexpected commit outcome").into()),
        }
    }

    /// The upload, checked to belong to `bucket/key`.
    pub fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<UploadRecord, EngineError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        let uploads = txn.open_table(meta::UPLOADS).map_err(storage)?;
        let record = uploads.get(upload_id).map_err(storage)?.ok_or(EngineError::NoSuchUpload)?;
        let upload = UploadRecord::decode(record.value())?;
        if upload.bucket != bucket || upload.key != key {
            return Err(EngineError::NoSuchUpload);
        }
        Ok(upload)
    }

    /// Parts of an upload numbered above `after`, at most `limit`.
    pub fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        after: u32,
        limit: usize,
    ) -> Result<Vec<(u32, PartRecord)>, EngineError> {
        self.upload(bucket, key, upload_id)?;
        let txn = self.inner.db.begin_read().map_err(storage)?;
        let parts = txn.open_table(meta::PARTS).map_err(storage)?;
        let mut listed = Vec::new();
        for item in parts.range::<(&str, u32)>((upload_id, after.saturating_add(1))..=(upload_id, u32::MAX)).map_err(storage)? {
            let (position, stored) = item.map_err(storage)?;
            if listed.len() >= limit {
                break;
            }
            listed.push((position.value().1, PartRecord::decode(stored.value())?));
        }
        Ok(listed)
    }

    /// Uploads in progress in `bucket` for keys starting with `prefix`, by key then id.
    pub fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, UploadRecord)>, EngineError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        if txn.open_table(meta::BUCKETS).map_err(storage)?.get(bucket).map_err(storage)?.is_none() {
            return Err(EngineError::NoSuchBucket);
        }
        let uploads = txn.open_table(meta::UPLOADS).map_err(storage)?;
        let mut listed = Vec::new();
        for item in uploads.iter().map_err(storage)? {
            let (id, stored) = item.map_err(storage)?;
            let upload = UploadRecord::decode(stored.value())?;
            if upload.bucket == bucket && upload.key.starts_with(prefix) {
                listed.push((id.value().to_string(), upload));
            }
        }
        listed.sort_by(|(a_id, a), (b_id, b)| (&a.key, a.initiated_ms, a_id).cmp(&(&b.key, b.initiated_ms, b_id)));
        Ok(listed)
    }

    /// Completes an upload from the listed parts (ascending, each but the last at least
    /// the minimum part size), if `condition` holds on the current version at commit.
    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: Vec<(u32, String)>,
        condition: WriteCondition,
    ) -> Result<ObjectInfo, EngineError> {
        let upload = self.upload(bucket, key, upload_id)?;
        let version = NewVersion {
            bucket: bucket.to_string(),
            key: key.to_string(),
            content_type: upload.content_type,
            metadata: upload.metadata,
            etag: String::new(),
            data: Data::Parts { upload_id: upload_id.to_string(), parts },
        };
        self.commit_object(Mutation::Put(version, condition)).await
    }

    /// Abandons an upload and frees its parts.
    pub async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), EngineError> {
        let mutation = Mutation::AbortUpload { upload_id: upload_id.to_string(), bucket: Some((bucket.to_string(), key.to_string())) };
        self.commit(mutation).await.map(|_| ())
    }

    pub fn stats(&self) -> Result<EngineStats, EngineError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        let live = txn.open_table(meta::LIVE).map_err(storage)?;
        let mut stats = EngineStats {
            commits: self.inner.commits.load(std::sync::atomic::Ordering::Relaxed),
            batches: self.inner.batches.load(std::sync::atomic::Ordering::Relaxed),
            bodies: txn.open_table(meta::BODIES).map_err(storage)?.len().map_err(storage)?,
            ..Default::default()
        };
        for item in live.iter().map_err(storage)? {
            stats.live_bytes += item.map_err(storage)?.1.value();
        }
        for name in self.inner.disk.list(volume::VOLUME_DIR).map_err(storage)? {
            if let Some(id) = name.strip_suffix(".vol").and_then(|id| id.parse::<u32>().ok()) {
                stats.volumes += 1;
                stats.volume_bytes += self.inner.reader(id)?.len().map_err(storage)?;
            }
        }
        Ok(stats)
    }

    /// Reclaims dead space: every sealed volume at least `dead_fraction` dead has its live
    /// bodies moved to the active volume and is then deleted. Reads and writes go on.
    pub async fn compact(&self, dead_fraction: f64) -> Result<CompactionReport, EngineError> {
        let _pass = self.inner.maintenance.lock().await;
        let mut report = CompactionReport::default();
        let active_id = self.inner.active.lock().expect("volume lock").id;
        let names = self.inner.disk.list(volume::VOLUME_DIR).map_err(storage)?;
        let sealed: Vec<u32> =
            names.iter().filter_map(|name| name.strip_suffix(".vol")?.parse::<u32>().ok()).filter(|id| *id < active_id).collect();
        for id in sealed {
            if self.inner.pins.lock().expect("pins lock").contains_key(&id) {
                continue; // bodies in it are not committed yet; a later pass takes it
            }
            let size = self.inner.reader(id)?.len().map_err(storage)?;
            let (live, bodies) = {
                let txn = self.inner.db.begin_read().map_err(storage)?;
                let live = txn.open_table(meta::LIVE).map_err(storage)?.get(id).map_err(storage)?.map_or(0, |live| live.value());
                let body_at = txn.open_table(meta::BODY_AT).map_err(storage)?;
                let bodies_table = txn.open_table(meta::BODIES).map_err(storage)?;
                let mut bodies = Vec::new();
                for item in body_at.range::<(u32, u64)>((id, 0)..=(id, u64::MAX)).map_err(storage)? {
                    let body = item.map_err(storage)?.1.value();
                    let record = bodies_table
                        .get(body)
                        .map_err(storage)?
                        .ok_or_else(|| Failure::Corrupt(format!("body {body} indexed but missing")))?;
                    bodies.push((body, BodyRecord::decode(record.value())?.location));
                }
                (live, bodies)
            };
            if size > 0 && (size.saturating_sub(live) as f64) < dead_fraction * size as f64 {
                continue;
            }
            let mut moves = Vec::new();
            for (body, from) in bodies {
                let source = self.inner.reader(id)?;
                // Room in the active volume first; the copy runs without holding it.
                let (target, to) = self.inner.active.lock().expect("volume lock").reserve(from.len, from.crc).map_err(storage)?;
                t4_env::blocking(move || volume::copy(source.as_ref(), from, target.as_ref(), to)).await.map_err(read_error)?;
                report.bodies_moved += 1;
                report.bytes_moved += from.len;
                moves.push((body, from, to));
            }
            if !moves.is_empty() {
                self.commit(Mutation::Relocate(moves)).await?;
            }
            let still_live = {
                let txn = self.inner.db.begin_read().map_err(storage)?;
                let body_at = txn.open_table(meta::BODY_AT).map_err(storage)?;
                body_at.range::<(u32, u64)>((id, 0)..=(id, u64::MAX)).map_err(storage)?.next().is_some()
            };
            if still_live {
                continue;
            }
            {
                let _gate = self.inner.gate.write().expect("gate");
                self.inner.readers.lock().expect("readers lock").remove(&id);
            }
            let disk = self.inner.disk.clone();
            t4_env::blocking(move || -> std::io::Result<()> {
                disk.remove(&volume::volume_name(id))?;
                disk.sync_dir(volume::VOLUME_DIR)
            })
            .await
            .map_err(storage)?;
            report.volumes_removed += 1;
            report.bytes_freed += size;
        }
        Ok(report)
    }

    /// Applies every bucket's lifecycle rules as of `now_ms`, and aborts uploads older than
    /// the engine's upload expiry.
    pub async fn apply_lifecycle(&self, now_ms: u64) -> Result<LifecycleReport, EngineError> {
        let _pass = self.inner.maintenance.lock().await;
        let mut report = LifecycleReport::default();
        let mut actions = Vec::new();
        let mut aborts = Vec::new();
        {
            let txn = self.inner.db.begin_read().map_err(storage)?;
            let buckets = txn.open_table(meta::BUCKETS).map_err(storage)?;
            let versions = txn.open_table(meta::VERSIONS).map_err(storage)?;
            let uploads = txn.open_table(meta::UPLOADS).map_err(storage)?;
            let mut rules_of = BTreeMap::new();
            for item in buckets.iter().map_err(storage)? {
                let (name, record) = item.map_err(storage)?;
                let record = BucketRecord::decode(record.value())?;
                let rules: Vec<LifecycleRule> = record.lifecycle.into_iter().filter(|rule| rule.enabled).collect();
                if !rules.is_empty() {
                    rules_of.insert(name.value().to_string(), rules);
                }
            }
            for (bucket, rules) in &rules_of {
                for rule in rules {
                    lifecycle_actions(&versions, bucket, rule, now_ms, &mut actions)?;
                }
            }
            let expiry_ms = self.inner.options.upload_expiry.as_millis() as u64;
            for item in uploads.iter().map_err(storage)? {
                let (id, stored) = item.map_err(storage)?;
                let upload = UploadRecord::decode(stored.value())?;
                let by_rule = rules_of.get(&upload.bucket).into_iter().flatten().any(|rule| {
                    upload.key.starts_with(&rule.prefix)
                        && rule.abort_incomplete_days.is_some_and(|days| now_ms >= upload.initiated_ms + u64::from(days) * DAY_MS)
                });
                if by_rule || now_ms >= upload.initiated_ms + expiry_ms {
                    aborts.push(id.value().to_string());
                }
            }
        }
        actions.sort_by(|a, b| (&a.1, &a.2, &a.3).cmp(&(&b.1, &b.2, &b.3)));
        actions.dedup_by(|a, b| (&a.1, &a.2, &a.3) == (&b.1, &b.2, &b.3));
        for (kind, bucket, key, version) in actions {
            let (version_id, only_seq) = match &version {
                Version::Current(seq) => (None, Some(*seq)),
                Version::Exact(id) => (Some(id.clone()), None),
            };
            let deleted = self.commit(Mutation::Delete { bucket, key, version_id, if_match: None, only_seq }).await?;
            if matches!(deleted, Outcome::Deleted(_)) {
                match kind {
                    Action::ExpireCurrent => report.current_expired += 1,
                    Action::RemoveNoncurrent => report.noncurrent_removed += 1,
                    Action::RemoveMarker => report.markers_removed += 1,
                }
            }
        }
        for upload_id in aborts {
            if self.commit(Mutation::AbortUpload { upload_id, bucket: None }).await.is_ok() {
                report.uploads_aborted += 1;
            }
        }
        Ok(report)
    }

    /// Runs lifecycle and compaction every `interval` until the engine is dropped.
    pub fn spawn_maintenance(&self, interval: Duration, dead_fraction: f64) {
        let (inner, commits) = (Arc::downgrade(&self.inner), self.commits.downgrade());
        let clock = self.inner.clock.clone();
        tokio::spawn(async move {
            loop {
                clock.sleep(interval).await;
                let (Some(inner), Some(commits)) = (inner.upgrade(), commits.upgrade()) else { return };
                let engine = Engine { inner, commits };
                match engine.apply_lifecycle(engine.inner.clock.wall_ms()).await {
                    Ok(report) if report != LifecycleReport::default() => tracing::info!(?report, "s4: lifecycle applied"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "s4: lifecycle pass failed"),
                }
                match engine.compact(dead_fraction).await {
                    Ok(report) if report != CompactionReport::default() => tracing::info!(?report, "s4: volumes compacted"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "s4: compaction failed"),
                }
            }
        });
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    ExpireCurrent,
    RemoveNoncurrent,
    RemoveMarker,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    Current(u64),
    Exact(String),
}

type VersionsTable = redb::ReadOnlyTable<(&'static str, &'static str, u64), &'static [u8]>;

/// What `rule` would do to the versions under its prefix as of `now_ms`.
fn lifecycle_actions(
    versions: &VersionsTable,
    bucket: &str,
    rule: &LifecycleRule,
    now_ms: u64,
    actions: &mut Vec<(Action, String, String, Version)>,
) -> Result<(), EngineError> {
    let mut current_key: Option<String> = None;
    let mut newer_modified = 0u64;
    let mut key_versions = 0usize;
    let mut pending_marker: Option<(String, ObjectInfo)> = None;
    for item in versions.range::<(&str, &str, u64)>((bucket, rule.prefix.as_str(), 0)..).map_err(storage)? {
        let (position, stored) = item.map_err(storage)?;
        let (item_bucket, key, _) = position.value();
        if item_bucket != bucket || !key.starts_with(&rule.prefix) {
            break;
        }
        let info = ObjectInfo::decode(stored.value())?;
        let first = current_key.as_deref() != Some(key);
        if first {
            if let Some((marker_key, marker)) = pending_marker.take() {
                if key_versions == 1 {
                    actions.push((Action::RemoveMarker, bucket.to_string(), marker_key, Version::Exact(marker.version_id)));
                }
            }
            current_key = Some(key.to_string());
            key_versions = 0;
        }
        key_versions += 1;
        if first {
            if info.delete_marker {
                if rule.expired_object_delete_marker || rule.expiration_days.is_some() {
                    pending_marker = Some((key.to_string(), info.clone()));
                }
            } else if rule.expiration_days.is_some_and(|days| now_ms >= info.last_modified_ms + u64::from(days) * DAY_MS) {
                actions.push((Action::ExpireCurrent, bucket.to_string(), key.to_string(), Version::Current(info.seq)));
            }
        } else if rule.noncurrent_days.is_some_and(|days| now_ms >= newer_modified + u64::from(days) * DAY_MS) {
            actions.push((Action::RemoveNoncurrent, bucket.to_string(), key.to_string(), Version::Exact(info.version_id.clone())));
        }
        newer_modified = info.last_modified_ms;
    }
    if let Some((marker_key, marker)) = pending_marker {
        if key_versions == 1 {
            actions.push((Action::RemoveMarker, bucket.to_string(), marker_key, Version::Exact(marker.version_id)));
        }
    }
    Ok(())
}

fn find_version(
    versions: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    bucket: &str,
    key: &str,
    version_id: &str,
) -> Result<Option<ObjectInfo>, Failure> {
    if let Some(seq) = seq_of(version_id) {
        let Some(stored) = versions.get((bucket, key, !seq)).map_err(storage)? else { return Ok(None) };
        let info = ObjectInfo::decode(stored.value())?;
        return Ok((info.version_id == version_id).then_some(info));
    }
    if version_id != NULL_VERSION {
        return Ok(None);
    }
    for item in versions.range::<(&str, &str, u64)>((bucket, key, 0)..=(bucket, key, u64::MAX)).map_err(storage)? {
        let info = ObjectInfo::decode(item.map_err(storage)?.1.value())?;
        if info.version_id == NULL_VERSION {
            return Ok(Some(info));
        }
    }
    Ok(None)
}

impl Inner {
    /// Stops writes after a storage failure (the first one is kept and reported).
    fn fail(&self, error: &EngineError) {
        if !matches!(error, EngineError::Failed(Failure::Storage(_))) {
            return;
        }
        let mut failure = self.failure.lock().expect("failure lock");
        if failure.is_none() {
            tracing::error!(%error, "s4: storage failed; refusing every write until restarted (reads go on)");
            *failure = Some(error.to_string());
        }
    }

    fn stopped(&self) -> Result<(), EngineError> {
        match self.failure.lock().expect("failure lock").as_ref() {
            Some(first) => Err(Failure::Storage(format!("writes stopped after an earlier failure ({first}); restart s4")).into()),
            None => Ok(()),
        }
    }
}

/// Takes every waiting commit, makes their bodies durable with one fsync per volume,
/// applies them in one durable metadata transaction, then answers.
fn check_part_number(part_number: u32) -> Result<(), EngineError> {
    if !(1..=PART_NUMBER_MAX).contains(&part_number) {
        return Err(EngineError::InvalidArgument("Part number must be an integer between 1 and 10000, inclusive".into()));
    }
    Ok(())
}

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
        let outcomes = t4_env::blocking(move || apply(&worker, mutations)).await;
        match outcomes {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::error!(%error, "s4: commit failed; nothing of this batch was acknowledged");
                let error = EngineError::from(error);
                inner.fail(&error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

fn apply(inner: &Inner, mutations: Vec<Mutation>) -> Result<Vec<Result<Outcome, EngineError>>, Failure> {
    // Every body these commits reference was appended before they were queued: one fsync
    // per volume makes them all durable before any metadata can point at them.
    let volumes: BTreeSet<u32> = mutations.iter().flat_map(Mutation::volumes).collect();
    for id in volumes {
        let file = {
            let active = inner.active.lock().expect("volume lock");
            if active.id == id {
                Some(active.file())
            } else {
                None
            }
        };
        match file {
            Some(file) => file.sync_data().map_err(storage)?,
            None => inner.reader(id)?.sync_data().map_err(storage)?,
        }
    }
    let mut txn = inner.db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate).map_err(storage)?;
    let mut outcomes = Vec::with_capacity(mutations.len());
    {
        let mut tables = Tables::open(&txn, inner)?;
        for mutation in mutations {
            outcomes.push(tables.apply(mutation)?);
        }
    }
    txn.commit().map_err(storage)?;
    inner.commits.fetch_add(outcomes.len() as u64, std::sync::atomic::Ordering::Relaxed);
    inner.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(outcomes)
}

/// Every table, open in the commit transaction.
struct Tables<'t> {
    inner: &'t Inner,
    buckets: redb::Table<'t, &'static str, &'static [u8]>,
    objects: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    versions: redb::Table<'t, (&'static str, &'static str, u64), &'static [u8]>,
    bodies: redb::Table<'t, u64, &'static [u8]>,
    body_at: redb::Table<'t, (u32, u64), u64>,
    dedup: redb::Table<'t, &'static [u8], u64>,
    live: redb::Table<'t, u32, u64>,
    uploads: redb::Table<'t, &'static str, &'static [u8]>,
    parts: redb::Table<'t, (&'static str, u32), &'static [u8]>,
    counters: redb::Table<'t, &'static str, u64>,
}

/// The answer to one request (inner: done, or refused) or a failure failing the batch (outer).
type Applied = Result<Result<Outcome, EngineError>, Failure>;

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction, inner: &'t Inner) -> Result<Self, Failure> {
        Ok(Self {
            inner,
            buckets: txn.open_table(meta::BUCKETS).map_err(storage)?,
            objects: txn.open_table(meta::OBJECTS).map_err(storage)?,
            versions: txn.open_table(meta::VERSIONS).map_err(storage)?,
            bodies: txn.open_table(meta::BODIES).map_err(storage)?,
            body_at: txn.open_table(meta::BODY_AT).map_err(storage)?,
            dedup: txn.open_table(meta::DEDUP).map_err(storage)?,
            live: txn.open_table(meta::LIVE).map_err(storage)?,
            uploads: txn.open_table(meta::UPLOADS).map_err(storage)?,
            parts: txn.open_table(meta::PARTS).map_err(storage)?,
            counters: txn.open_table(meta::COUNTERS).map_err(storage)?,
        })
    }

    fn next(&mut self, counter: &str) -> Result<u64, Failure> {
        let value = self.counters.get(counter).map_err(storage)?.map_or(1, |value| value.value());
        self.counters.insert(counter, value + 1).map_err(storage)?;
        Ok(value)
    }

    fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, Failure> {
        self.buckets.get(name).map_err(storage)?.map(|record| BucketRecord::decode(record.value())).transpose()
    }

    fn current(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, Failure> {
        self.objects.get((bucket, key)).map_err(storage)?.map(|stored| ObjectInfo::decode(stored.value())).transpose()
    }

    fn add_live(&mut self, volume: u32, delta: i64) -> Result<(), Failure> {
        let live = self.live.get(volume).map_err(storage)?.map_or(0, |live| live.value());
        let live = live.saturating_add_signed(delta);
        if live == 0 {
            self.live.remove(volume).map_err(storage)?;
        } else {
            self.live.insert(volume, live).map_err(storage)?;
        }
        Ok(())
    }

    fn record_bytes(location: &Location) -> i64 {
        volume::record_len(location.len) as i64
    }

    /// References a newly appended body, or (same SHA-256 and size) the identical body
    /// already stored, leaving the new bytes as garbage.
    fn register(&mut self, body: &NewBody) -> Result<u64, Failure> {
        let existing = self.dedup.get(body.dedup_key.as_slice()).map_err(storage)?.map(|id| id.value());
        if let Some(existing) = existing {
            if self.retain(&[Segment { body: existing, len: body.location.len }])? {
                return Ok(existing);
            }
        }
        let id = self.next("body")?;
        let record = BodyRecord { location: body.location, refs: 1, dedup_key: body.dedup_key.clone() };
        self.bodies.insert(id, record.encode().as_slice()).map_err(storage)?;
        self.body_at.insert((body.location.volume, body.location.offset), id).map_err(storage)?;
        self.dedup.insert(body.dedup_key.as_slice(), id).map_err(storage)?;
        self.add_live(body.location.volume, Self::record_bytes(&body.location))?;
        Ok(id)
    }

    /// One more reference to each body; false (and nothing changed) if any is gone.
    fn retain(&mut self, segments: &[Segment]) -> Result<bool, Failure> {
        let mut records = Vec::new();
        for segment in segments {
            let Some(stored) = self.bodies.get(segment.body).map_err(storage)? else { return Ok(false) };
            records.push((segment.body, BodyRecord::decode(stored.value())?));
        }
        for (id, mut record) in records {
            record.refs += 1;
            self.bodies.insert(id, record.encode().as_slice()).map_err(storage)?;
        }
        Ok(true)
    }

    /// Drops one reference to each body; a body nobody references becomes dead space.
    fn release(&mut self, segments: &[Segment]) -> Result<(), Failure> {
        for segment in segments {
            let Some(stored) = self.bodies.get(segment.body).map_err(storage)?.map(|stored| stored.value().to_vec()) else {
                return Err(Failure::Corrupt(format!("body {} released but missing", segment.body)));
            };
            let mut record = BodyRecord::decode(&stored)?;
            record.refs -= 1;
            if record.refs > 0 {
                self.bodies.insert(segment.body, record.encode().as_slice()).map_err(storage)?;
                continue;
            }
            self.bodies.remove(segment.body).map_err(storage)?;
            self.body_at.remove((record.location.volume, record.location.offset)).map_err(storage)?;
            if self.dedup.get(record.dedup_key.as_slice()).map_err(storage)?.is_some_and(|id| id.value() == segment.body) {
                self.dedup.remove(record.dedup_key.as_slice()).map_err(storage)?;
            }
            self.add_live(record.location.volume, -Self::record_bytes(&record.location))?;
        }
        Ok(())
    }

    /// Makes `info` the newest version of its key. Outside versioning, it replaces the
    /// key's `null` version (whose bytes are released).
    fn insert_version(&mut self, bucket: &str, key: &str, info: &ObjectInfo, versioning: Versioning) -> Result<(), Failure> {
        if versioning != Versioning::Enabled {
            if let Some(null) = find_version(&self.versions, bucket, key, NULL_VERSION)? {
                self.versions.remove((bucket, key, !null.seq)).map_err(storage)?;
                self.release(&null.segments)?;
            }
        }
        let encoded = info.encode();
        self.versions.insert((bucket, key, !info.seq), encoded.as_slice()).map_err(storage)?;
        self.objects.insert((bucket, key), encoded.as_slice()).map_err(storage)?;
        Ok(())
    }

    /// Removes one version for good; if it was the current one, the next newest becomes
    /// current.
    fn remove_version(&mut self, bucket: &str, key: &str, info: &ObjectInfo) -> Result<(), Failure> {
        self.versions.remove((bucket, key, !info.seq)).map_err(storage)?;
        self.release(&info.segments)?;
        if self.current(bucket, key)?.is_some_and(|current| current.seq == info.seq) {
            let next = self
                .versions
                .range::<(&str, &str, u64)>((bucket, key, 0)..=(bucket, key, u64::MAX))
                .map_err(storage)?
                .next()
                .transpose()
                .map_err(storage)?
                .map(|(_, stored)| stored.value().to_vec());
            match next {
                Some(stored) => self.objects.insert((bucket, key), stored.as_slice()).map_err(storage)?,
                None => self.objects.remove((bucket, key)).map_err(storage)?,
            };
        }
        Ok(())
    }

    fn apply(&mut self, mutation: Mutation) -> Applied {
        let now = self.inner.clock.wall_ms();
        match mutation {
            Mutation::CreateBucket(name) => {
                if self.bucket(&name)?.is_some() {
                    return Ok(Err(EngineError::BucketAlreadyOwnedByYou));
                }
                let record = BucketRecord { created_ms: now, versioning: Versioning::Unversioned, lifecycle: Vec::new() };
                self.buckets.insert(name.as_str(), record.encode().as_slice()).map_err(storage)?;
                Ok(Ok(Outcome::Done))
            }
            Mutation::DeleteBucket(name) => {
                if self.bucket(&name)?.is_none() {
                    return Ok(Err(EngineError::NoSuchBucket));
                }
                let has_versions = self
                    .versions
                    .range::<(&str, &str, u64)>((name.as_str(), "", 0)..)
                    .map_err(storage)?
                    .next()
                    .transpose()
                    .map_err(storage)?
                    .is_some_and(|(position, _)| position.value().0 == name);
                if has_versions {
                    return Ok(Err(EngineError::BucketNotEmpty));
                }
                let mut uploads = Vec::new();
                for item in self.uploads.iter().map_err(storage)? {
                    let (id, stored) = item.map_err(storage)?;
                    if UploadRecord::decode(stored.value())?.bucket == name {
                        uploads.push(id.value().to_string());
                    }
                }
                for upload_id in uploads {
                    self.abort(&upload_id)?;
                }
                self.buckets.remove(name.as_str()).map_err(storage)?;
                Ok(Ok(Outcome::Done))
            }
            Mutation::SetVersioning(name, state) => {
                let Some(mut record) = self.bucket(&name)? else { return Ok(Err(EngineError::NoSuchBucket)) };
                if state == Versioning::Unversioned && record.versioning != Versioning::Unversioned {
                    return Ok(Err(EngineError::InvalidArgument("Versioning can only be suspended once enabled".into())));
                }
                record.versioning = state;
                self.buckets.insert(name.as_str(), record.encode().as_slice()).map_err(storage)?;
                Ok(Ok(Outcome::Done))
            }
            Mutation::SetLifecycle(name, rules) => {
                let Some(mut record) = self.bucket(&name)? else { return Ok(Err(EngineError::NoSuchBucket)) };
                record.lifecycle = rules;
                self.buckets.insert(name.as_str(), record.encode().as_slice()).map_err(storage)?;
                Ok(Ok(Outcome::Done))
            }
            Mutation::Put(version, condition) => self.put(version, condition, now),
            Mutation::Delete { bucket, key, version_id, if_match, only_seq } => {
                self.delete(bucket, key, version_id, if_match, only_seq, now)
            }
            Mutation::CreateUpload(upload) => {
                if self.bucket(&upload.bucket)?.is_none() {
                    return Ok(Err(EngineError::NoSuchBucket));
                }
                let id = format!("{:016x}{:08x}", self.next("seq")?, crc32c::crc32c(upload.key.as_bytes()));
                self.uploads.insert(id.as_str(), upload.encode().as_slice()).map_err(storage)?;
                Ok(Ok(Outcome::Upload(id)))
            }
            Mutation::PutPart { upload_id, bucket, key, part_number, body } => {
                let upload = self
                    .uploads
                    .get(upload_id.as_str())
                    .map_err(storage)?
                    .map(|stored| UploadRecord::decode(stored.value()))
                    .transpose()?;
                if upload.is_none_or(|upload| upload.bucket != bucket || upload.key != key) {
                    return Ok(Err(EngineError::NoSuchUpload));
                }
                let id = self.register(&body)?;
                let part = PartRecord { body: id, len: body.location.len, etag: format!("\"{}\"", hex(&body.md5)), last_modified_ms: now };
                let replaced = self
                    .parts
                    .insert((upload_id.as_str(), part_number), part.encode().as_slice())
                    .map_err(storage)?
                    .map(|old| old.value().to_vec());
                if let Some(old) = replaced {
                    let old = PartRecord::decode(&old)?;
                    self.release(&[Segment { body: old.body, len: old.len }])?;
                }
                Ok(Ok(Outcome::Part(part)))
            }
            Mutation::AbortUpload { upload_id, bucket } => {
                let upload = self
                    .uploads
                    .get(upload_id.as_str())
                    .map_err(storage)?
                    .map(|stored| UploadRecord::decode(stored.value()))
                    .transpose()?;
                match (upload, bucket) {
                    (None, _) => return Ok(Err(EngineError::NoSuchUpload)),
                    (Some(upload), Some((bucket, key))) if upload.bucket != bucket || upload.key != key => {
                        return Ok(Err(EngineError::NoSuchUpload))
                    }
                    _ => {}
                }
                self.abort(&upload_id)?;
                Ok(Ok(Outcome::Done))
            }
            Mutation::Relocate(moves) => {
                for (id, from, to) in moves {
                    let Some(stored) = self.bodies.get(id).map_err(storage)?.map(|stored| stored.value().to_vec()) else { continue };
                    let mut record = BodyRecord::decode(&stored)?;
                    if record.location != from {
                        continue;
                    }
                    record.location = to;
                    self.bodies.insert(id, record.encode().as_slice()).map_err(storage)?;
                    self.body_at.remove((from.volume, from.offset)).map_err(storage)?;
                    self.body_at.insert((to.volume, to.offset), id).map_err(storage)?;
                    self.add_live(from.volume, -Self::record_bytes(&from))?;
                    self.add_live(to.volume, Self::record_bytes(&to))?;
                }
                Ok(Ok(Outcome::Done))
            }
        }
    }

    fn abort(&mut self, upload_id: &str) -> Result<(), Failure> {
        let mut parts = Vec::new();
        for item in self.parts.range::<(&str, u32)>((upload_id, 0)..=(upload_id, u32::MAX)).map_err(storage)? {
            let (position, stored) = item.map_err(storage)?;
            parts.push((position.value().1, PartRecord::decode(stored.value())?));
        }
        for (number, part) in parts {
            self.parts.remove((upload_id, number)).map_err(storage)?;
            self.release(&[Segment { body: part.body, len: part.len }])?;
        }
        self.uploads.remove(upload_id).map_err(storage)?;
        Ok(())
    }

    fn put(&mut self, version: NewVersion, condition: WriteCondition, now: u64) -> Applied {
        let NewVersion { bucket, key, content_type, metadata, etag, data } = version;
        let Some(record) = self.bucket(&bucket)? else { return Ok(Err(EngineError::NoSuchBucket)) };
        let current = self.current(&bucket, &key)?.filter(|current| !current.delete_marker);
        if let Err(refused) = check(&condition, current.as_ref()) {
            return Ok(Err(refused));
        }
        let (segments, etag, parts_count) = match data {
            Data::Body(body) => {
                let id = self.register(&body)?;
                (vec![Segment { body: id, len: body.location.len }], etag, 0)
            }
            Data::Copy(segments) => {
                if !self.retain(&segments)? {
                    return Ok(Err(EngineError::NoSuchKey));
                }
                (segments, etag, 0)
            }
            Data::Parts { upload_id, parts } => match self.take_parts(&bucket, &key, &upload_id, &parts)? {
                Ok(taken) => taken,
                Err(refused) => return Ok(Err(refused)),
            },
        };
        let seq = self.next("seq")?;
        let version_id = if record.versioning == Versioning::Enabled { version_id_of(seq) } else { NULL_VERSION.to_string() };
        let size = segments.iter().map(|segment| segment.len).sum();
        let info = ObjectInfo {
            version_id,
            delete_marker: false,
            etag,
            size,
            last_modified_ms: now,
            content_type,
            metadata,
            parts_count,
            seq,
            segments,
        };
        self.insert_version(&bucket, &key, &info, record.versioning)?;
        Ok(Ok(Outcome::Object(info)))
    }

    /// Checks the listed parts of a completing upload and takes them over: the object
    /// gets their bodies, unlisted parts are freed, the upload is gone.
    #[allow(clippy::type_complexity)]
    fn take_parts(
        &mut self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        listed: &[(u32, String)],
    ) -> Result<Result<(Vec<Segment>, String, u32), EngineError>, Failure> {
        let upload = self.uploads.get(upload_id).map_err(storage)?.map(|stored| UploadRecord::decode(stored.value())).transpose()?;
        if upload.is_none_or(|upload| upload.bucket != bucket || upload.key != key) {
            return Ok(Err(EngineError::NoSuchUpload));
        }
        if listed.is_empty() {
            return Ok(Err(EngineError::InvalidArgument("You must specify at least one part".into())));
        }
        if listed.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
            return Ok(Err(EngineError::InvalidPartOrder));
        }
        let mut segments = Vec::new();
        let mut md5s = Md5::new();
        for (index, (number, etag)) in listed.iter().enumerate() {
            let Some(stored) = self.parts.get((upload_id, *number)).map_err(storage)? else { return Ok(Err(EngineError::InvalidPart)) };
            let part = PartRecord::decode(stored.value())?;
            if etag.trim_matches('"') != part.etag.trim_matches('"') {
                return Ok(Err(EngineError::InvalidPart));
            }
            if index + 1 < listed.len() && part.len < self.inner.options.part_bytes_min {
                return Ok(Err(EngineError::EntityTooSmall));
            }
            let mut digest = [0u8; 16];
            for (at, byte) in digest.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&part.etag.trim_matches('"')[2 * at..2 * at + 2], 16)
                    .map_err(|_| Failure::Corrupt("part etag".into()))?;
            }
            md5s.update(digest);
            segments.push(Segment { body: part.body, len: part.len });
        }
        // The listed parts' references pass to the object; the rest are freed with the upload.
        let keep: BTreeSet<u32> = listed.iter().map(|(number, _)| *number).collect();
        for number in &keep {
            self.parts.remove((upload_id, *number)).map_err(storage)?;
        }
        self.abort(upload_id)?;
        let etag = format!("\"{}-{}\"", hex(&md5s.finalize()), listed.len());
        Ok(Ok((segments, etag, listed.len() as u32)))
    }

    fn delete(
        &mut self,
        bucket: String,
        key: String,
        version_id: Option<String>,
        if_match: Option<String>,
        only_seq: Option<u64>,
        now: u64,
    ) -> Applied {
        let Some(record) = self.bucket(&bucket)? else { return Ok(Err(EngineError::NoSuchBucket)) };
        if let Some(version_id) = version_id {
            let Some(info) = find_version(&self.versions, &bucket, &key, &version_id)? else {
                return Ok(Ok(Outcome::Deleted(DeleteOutcome { version_id: Some(version_id), delete_marker: false })));
            };
            if let Some(etag) = if_match {
                if info.delete_marker {
                    return Ok(Err(EngineError::NoSuchKey));
                }
                if let Err(refused) = check(&WriteCondition::IfMatch(etag), Some(&info)) {
                    return Ok(Err(refused));
                }
            }
            self.remove_version(&bucket, &key, &info)?;
            return Ok(Ok(Outcome::Deleted(DeleteOutcome { version_id: Some(info.version_id), delete_marker: info.delete_marker })));
        }
        let current = self.current(&bucket, &key)?;
        if let Some(seq) = only_seq {
            if current.as_ref().is_none_or(|current| current.seq != seq || current.delete_marker) {
                return Ok(Ok(Outcome::Done));
            }
        }
        let live = current.as_ref().filter(|current| !current.delete_marker);
        if let Some(etag) = if_match {
            if let Err(refused) = check(&WriteCondition::IfMatch(etag), live) {
                return Ok(Err(refused));
            }
        }
        if record.versioning == Versioning::Unversioned {
            if let Some(current) = current {
                self.remove_version(&bucket, &key, &current)?;
            }
            return Ok(Ok(Outcome::Deleted(DeleteOutcome::default())));
        }
        let seq = self.next("seq")?;
        let version_id = if record.versioning == Versioning::Enabled { version_id_of(seq) } else { NULL_VERSION.to_string() };
        let marker = ObjectInfo {
            version_id: version_id.clone(),
            delete_marker: true,
            etag: String::new(),
            size: 0,
            last_modified_ms: now,
            content_type: None,
            metadata: BTreeMap::new(),
            parts_count: 0,
            seq,
            segments: Vec::new(),
        };
        self.insert_version(&bucket, &key, &marker, record.versioning)?;
        Ok(Ok(Outcome::Deleted(DeleteOutcome { version_id: Some(version_id), delete_marker: true })))
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

#[cfg(test)]
#[path = "engine_test.rs"]
mod engine_test;
