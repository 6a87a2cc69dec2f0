//! Store: the redb database, its read path and the writer's apply path.
//!
//! Only the node's single writer calls [`Store::apply_batch`] and [`Store::replay`]; any
//! number of readers call [`Store::range`] and [`Store::events`] with the revision they may
//! see. The writer commits to redb without fsync (the WAL is the durability) and makes the
//! store durable on a schedule with [`Store::sync_durable`], only once the WAL holds every
//! record the store has applied.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use t4_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use t4_proto::mvccpb::Event;

use crate::env::{Disk, RedbBackend, StorageFence};
use crate::error::{ClosedReason, Error, Result};
use crate::wal::{Record, RecordBody};

use super::codec::StoredKv;
use super::range::{self, KeySpan};
use super::view::{View, AUTH, AUTH_STATE_KEY, KV_INDEX, KV_LATEST, KV_REV, LEASES, LEASE_BYTES, LEASE_KEYS, META};
use super::writer::{Position, Writer};
use crate::auth::state::{AuthChange, AuthState};

/// The store's file under the data directory.
pub const STORE_FILE: &str = "store.redb";
/// Version of the table layout; a reader for the previous one ships with any change.
const STORE_FORMAT: u64 = 1;
const META_FORMAT: &str = "format";
const META_APPLIED_INDEX: &str = "applied_index";
const META_REVISION: &str = "revision";
/// Stored as the bits of an i64; -1 until the first compaction (etcd compacts at 0 too).
const META_COMPACT_REVISION: &str = "compact_revision";
/// CRC32C over the three values above: a flipped bit in them is caught, not trusted.
const META_CHECKSUM: &str = "position_crc";
/// The term of the store's last record: the last term record (WAL kind 6) applied; 0 before
/// any (a single node writes none). Not part of the position's checksum, which older stores
/// lack it from.
pub(super) const META_LOG_TERM: &str = "log_term";
/// The revision a restore (a cluster member installing its leader's snapshot) brought the
/// store to. Everything up to it was committed before it was sent, so a read may always see
/// it: a read that began on the restored store while the node still published an older
/// visible revision reads at this one (its history below the snapshot's compaction is gone).
const META_RESTORED_REVISION: &str = "restored_revision";

fn position_checksum(position: Position) -> u64 {
    let mut bytes = Vec::with_capacity(24);
    bytes.extend_from_slice(&position.index.to_le_bytes());
    bytes.extend_from_slice(&position.revision.to_le_bytes());
    bytes.extend_from_slice(&position.compact_revision.to_le_bytes());
    u64::from(crc32c::crc32c(&bytes))
}

/// Records where the store stands, with its checksum, in the same transaction as the data.
pub(super) fn write_position(meta: &mut redb::Table<'_, &'static str, u64>, position: Position) -> Result<()> {
    meta.insert(META_APPLIED_INDEX, position.index)?;
    meta.insert(META_REVISION, position.revision as u64)?;
    meta.insert(META_COMPACT_REVISION, position.compact_revision as u64)?;
    meta.insert(META_CHECKSUM, position_checksum(position))?;
    Ok(())
}

fn read_position(meta: &impl ReadableTable<&'static str, u64>) -> Result<Position> {
    let read = |name: &str| -> Result<u64> {
        meta.get(name)?.map(|value| value.value()).ok_or_else(|| Error::Corrupt(format!("store meta lacks {name}")))
    };
    let position = Position {
        index: read(META_APPLIED_INDEX)?,
        revision: read(META_REVISION)? as i64,
        compact_revision: read(META_COMPACT_REVISION)? as i64,
    };
    if read(META_CHECKSUM)? != position_checksum(position) {
        return Err(Error::Corrupt("store meta checksum mismatch".into()));
    }
    Ok(position)
}

/// A request that goes through the writer.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteRequest {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    Auth(AuthChange),
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Auth(AuthApplied),
}

/// An auth change's outcome: the store's revision (unchanged) and the auth revision after it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthApplied {
    pub header: Option<ResponseHeader>,
    pub auth_revision: u64,
}

/// The events of one revision, in op order.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionEvents {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// One request's outcome inside a batch.
#[derive(Debug)]
pub struct Applied {
    pub response: Result<WriteResponse>,
    /// The WAL record it produced (None when it changed nothing).
    pub record: Option<Record>,
    /// Its watch events (only when the batch was asked for them).
    pub events: Option<RevisionEvents>,
}

#[derive(Debug)]
pub struct Store {
    /// `None` once closed. Declared before `dir_lock`: dropping a store closes the database
    /// (redb writes its clean-shutdown header then) before the lock lets another opener in.
    db: RwLock<Option<Database>>,
    /// Revision and index the writer has applied (possibly not yet durable in the WAL).
    applied_revision: AtomicI64,
    applied_index: AtomicU64,
    /// The term of the record at `applied_index` (META_LOG_TERM).
    applied_term: AtomicU64,
    compact_revision: AtomicI64,
    /// Live snapshots: closing waits for them (a read transaction alive when redb closes
    /// would defer its clean-shutdown write past the release of the lock).
    snapshots: Arc<(Mutex<usize>, Condvar)>,
    /// The data dir's lock, held from before the file is opened until it is closed.
    dir_lock: Mutex<Option<DirLock>>,
    /// The store file's length (redb's own view, updated as it grows or shrinks).
    size: Arc<AtomicU64>,
    /// The fence of the backend in use (a reset replaces both).
    fence: Mutex<StorageFence>,
    /// Most live leases a grant may leave (`writer::LEASES_MAX`).
    leases_max: AtomicU64,
    /// Most bytes of keys and values one range answer collects.
    response_bytes_max: AtomicU64,
}

type DirLock = Box<dyn Send + Sync + std::fmt::Debug>;

/// How long closing waits for open snapshots (a checkpoint's export step) to end.
const SNAPSHOT_CLOSE_WAIT: Duration = Duration::from_secs(10);

impl Store {
    /// Locks the data dir, then opens (or creates) the store file on `disk`. redb repairs
    /// itself to its last durable commit after a crash; the caller then replays the WAL from
    /// [`Store::applied_index`]. The lock is held until [`Store::close`] or the drop.
    pub fn open(disk: &dyn Disk, fence: StorageFence) -> Result<Self> {
        let dir_lock = disk.lock_exclusive().map_err(|error| Error::storage("lock data dir", error))?;
        guarded("open", || Self::open_unguarded(disk, fence, dir_lock))
    }

    fn open_unguarded(disk: &dyn Disk, fence: StorageFence, dir_lock: DirLock) -> Result<Self> {
        let existed = disk.exists(STORE_FILE).map_err(|error| Error::storage("stat store", error))?;
        let file = disk.open(STORE_FILE, true).map_err(|error| Error::storage("open store", error))?;
        if !existed {
            // Without this a crash can drop the file's directory entry, and with it every
            // durable commit, while the WAL below it was already trimmed.
            disk.sync_dir("").map_err(|error| Error::storage("sync data dir", error))?;
        } else {
            start_over_if_never_initialised(file.as_ref())?;
        }
        let backend = RedbBackend::new(file, fence.clone());
        let size = backend.size_gauge();
        let db = redb::Builder::new().create_with_backend(backend)?;
        let txn = db.begin_write()?;
        let (format, position, term) = {
            txn.open_table(KV_REV)?;
            txn.open_table(KV_INDEX)?;
            txn.open_table(KV_LATEST)?;
            txn.open_table(LEASES)?;
            txn.open_table(LEASE_KEYS)?;
            txn.open_table(AUTH)?;
            super::writer::rebuild_lease_bytes(&txn, false)?;
            let mut meta = txn.open_table(META)?;
            let format = meta.get(META_FORMAT)?.map(|value| value.value());
            if format.is_none() {
                meta.insert(META_FORMAT, STORE_FORMAT)?;
                write_position(&mut meta, Position { revision: 1, index: 0, compact_revision: -1 })?;
            }
            let term = meta.get(META_LOG_TERM)?.map_or(0, |value| value.value());
            (format.unwrap_or(STORE_FORMAT), read_position(&meta)?, term)
        };
        if format != STORE_FORMAT {
            return Err(Error::Corrupt(format!("store format {format} is not {STORE_FORMAT}")));
        }
        txn.commit()?;
        Ok(Self {
            db: RwLock::new(Some(db)),
            applied_revision: AtomicI64::new(position.revision),
            applied_index: AtomicU64::new(position.index),
            applied_term: AtomicU64::new(term),
            compact_revision: AtomicI64::new(position.compact_revision),
            snapshots: Arc::default(),
            dir_lock: Mutex::new(Some(dir_lock)),
            size,
            fence: Mutex::new(fence),
            leases_max: AtomicU64::new(super::writer::LEASES_MAX),
            response_bytes_max: AtomicU64::new(super::writer::RESPONSE_BYTES_MAX as u64),
        })
    }

    /// Closes the database (waiting for operations in flight), then releases the data dir's
    /// lock: once this returns, the store's file is another opener's. Every later operation
    /// fails with `Closed`. Blocking.
    pub fn close(&self) {
        let (count, released) = &*self.snapshots;
        let live = count.lock().expect("snapshot count");
        let (live, waited) = released.wait_timeout_while(live, SNAPSHOT_CLOSE_WAIT, |live| *live > 0).expect("snapshot count");
        if waited.timed_out() {
            tracing::warn!(snapshots = *live, "store: closing with snapshots still open");
        }
        drop(live);
        let db = self.db.write().expect("store lock").take();
        drop(db);
        self.dir_lock.lock().expect("dir lock").take();
    }

    fn db(&self) -> Result<RwLockReadGuard<'_, Option<Database>>> {
        let db = self.db.read().expect("store lock");
        if db.is_none() {
            return Err(Error::Closed(ClosedReason::Closed));
        }
        Ok(db)
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::SeqCst)
    }

    /// The term of the last record applied (0 before any term record: a single node's log).
    /// With `applied_index` it is a member's log floor (docs/clustering.md "Replication").
    pub fn applied_term(&self) -> u64 {
        self.applied_term.load(Ordering::SeqCst)
    }

    pub fn applied_revision(&self) -> i64 {
        self.applied_revision.load(Ordering::SeqCst)
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_revision.load(Ordering::SeqCst)
    }

    /// etcd's Range at the newest revision a reader may see, `visible`.
    pub fn range(&self, request: &RangeRequest, visible: i64) -> Result<RangeResponse> {
        guarded("read", || self.range_unguarded(request, visible))
    }

    fn range_unguarded(&self, request: &RangeRequest, visible: i64) -> Result<RangeResponse> {
        let db = self.db()?;
        let txn = db.as_ref().expect("open").begin_read()?;
        let view = View { latest: txn.open_table(KV_LATEST)?, index: txn.open_table(KV_INDEX)?, revs: txn.open_table(KV_REV)? };
        let compact = read_compact_revision(&txn)?;
        let restored = txn.open_table(META)?.get(META_RESTORED_REVISION)?.map_or(0, |value| value.value() as i64);
        range_in(&view, request, visible.max(restored), compact, self.response_bytes_max.load(Ordering::Relaxed) as usize)
    }

    /// CRC32C over every entry of `kv_rev` at or below `revision`, in log order.
    pub fn hash_through(&self, revision: i64) -> Result<u32> {
        guarded("hash", || self.hash_unguarded(revision))
    }

    fn hash_unguarded(&self, revision: i64) -> Result<u32> {
        let db = self.db()?;
        let txn = db.as_ref().expect("open").begin_read()?;
        let compact = read_compact_revision(&txn)?;
        if revision < compact {
            return Err(Error::Compacted { compact_revision: compact });
        }
        let revs = txn.open_table(KV_REV)?;
        let mut hash = 0u32;
        for item in revs.range::<(u64, u32)>((0, 0)..=(revision as u64, u32::MAX))? {
            let (_, bytes) = item?;
            hash = crc32c::crc32c_append(hash, bytes.value());
        }
        Ok(hash)
    }

    /// Every lease with its granted TTL, by id.
    pub fn leases(&self) -> Result<Vec<(i64, i64)>> {
        guarded("lease read", || {
            let db = self.db()?;
            let txn = db.as_ref().expect("open").begin_read()?;
            read_leases(&txn.open_table(LEASES)?)
        })
    }

    /// The keys attached to lease `id`, in key order (None if there is no such lease).
    pub fn lease_keys(&self, id: i64) -> Result<Option<Vec<Vec<u8>>>> {
        guarded("lease read", || {
            let db = self.db()?;
            let txn = db.as_ref().expect("open").begin_read()?;
            if txn.open_table(LEASES)?.get(id)?.is_none() {
                return Ok(None);
            }
            Ok(Some(keys_of_lease(&txn.open_table(LEASE_KEYS)?, id)?))
        })
    }

    /// The auth state (users, roles, whether auth is on).
    pub fn auth_state(&self) -> Result<AuthState> {
        guarded("auth read", || {
            let db = self.db()?;
            let txn = db.as_ref().expect("open").begin_read()?;
            read_auth_state(&txn.open_table(AUTH)?)
        })
    }

    /// Events of revisions `from..=to` in `span` (watch catch-up). `to` must be visible.
    pub fn events(&self, span: &KeySpan, from: i64, to: i64, prev_kv: bool) -> Result<Vec<RevisionEvents>> {
        guarded("watch read", || self.events_unguarded(span, from, to, prev_kv))
    }

    fn events_unguarded(&self, span: &KeySpan, from: i64, to: i64, prev_kv: bool) -> Result<Vec<RevisionEvents>> {
        let db = self.db()?;
        let txn = db.as_ref().expect("open").begin_read()?;
        let compact = read_compact_revision(&txn)?;
        if from < compact {
            return Err(Error::Compacted { compact_revision: compact });
        }
        let view = View { latest: txn.open_table(KV_LATEST)?, index: txn.open_table(KV_INDEX)?, revs: txn.open_table(KV_REV)? };
        view.events(span, from, to, prev_kv)
    }

    /// Applies a batch of validated requests in one redb transaction, committed without
    /// fsync. Records get indexes from `applied_index + 1`. Events are built only when
    /// `want_events` (someone is watching). A request-level error leaves no trace; a storage
    /// error fails the whole batch and nothing of it is committed.
    ///
    /// Requests are applied in order until their records reach
    /// [`super::writer::BATCH_RECORD_BYTES_MAX`]: the result may answer only a prefix of
    /// `requests` (at least one), and the caller sends the rest in its next batch.
    pub fn apply_batch<'r>(&self, requests: impl IntoIterator<Item = &'r WriteRequest>, want_events: bool) -> Result<Vec<Applied>> {
        guarded("write", || self.apply_unguarded(requests, want_events))
    }

    fn apply_unguarded<'r>(&self, requests: impl IntoIterator<Item = &'r WriteRequest>, want_events: bool) -> Result<Vec<Applied>> {
        let db = self.db()?;
        let txn = Self::begin(db.as_ref().expect("open"))?;
        let mut applied = Vec::new();
        let mut record_bytes = 0u64;
        let position = {
            let mut writer = self.writer(&txn)?;
            for request in requests {
                if record_bytes >= super::writer::BATCH_RECORD_BYTES_MAX {
                    break;
                }
                let outcome = writer.apply(request, want_events)?;
                let bytes = outcome.record.as_ref().map_or(0, Record::encoded_len) as u64;
                // Paired with `wal::encode_batch`, which refuses a batch past its bound.
                assert!(bytes <= super::writer::RECORD_BYTES_MAX, "a record of {bytes} bytes passed the write bounds");
                record_bytes += bytes;
                applied.push(outcome);
            }
            writer.finish()?
        };
        txn.commit()?;
        self.publish_applied(position);
        Ok(applied)
    }

    /// Re-applies records read back from the WAL after a crash (indexes must follow
    /// `applied_index` densely; the revision of each txn must be the next one).
    pub fn replay(&self, records: &[Record]) -> Result<()> {
        guarded("replay", || self.replay_unguarded(records, false)).map(drop)
    }

    /// Applies records another node logged, as [`Store::replay`] does, and returns the watch
    /// events of the revisions they spent: the same events, in the same order, that applying
    /// their requests gave on the node that logged them (`apply_batch` with `want_events`).
    pub fn apply_records(&self, records: &[Record]) -> Result<Vec<RevisionEvents>> {
        guarded("apply records", || self.replay_unguarded(records, true))
    }

    fn replay_unguarded(&self, records: &[Record], want_events: bool) -> Result<Vec<RevisionEvents>> {
        let db = self.db()?;
        self.replay_into(db.as_ref().expect("open"), records, want_events)
    }

    fn replay_into(&self, db: &Database, records: &[Record], want_events: bool) -> Result<Vec<RevisionEvents>> {
        let mut events = Vec::new();
        for chunk in records.chunks(1024) {
            let txn = Self::begin(db)?;
            let position = {
                let mut writer = self.writer(&txn)?;
                for record in chunk {
                    events.extend(writer.replay(record, want_events)?);
                }
                writer.finish()?
            };
            txn.commit()?;
            self.publish_applied(position);
            let mut terms = chunk.iter().filter_map(|record| match record.body {
                RecordBody::Term { term } => Some(term),
                _ => None,
            });
            if let Some(term) = terms.next_back() {
                self.applied_term.store(term, Ordering::SeqCst);
            }
        }
        Ok(events)
    }

    /// Raises the fence of the backend in use: redb writes nothing more to the file, which
    /// keeps its last durable commit (fail-stop).
    pub fn raise_fence(&self) {
        self.fence.lock().expect("fence lock").raise();
    }

    /// Drops every commit since the last durable one (a deposed leader's records that no
    /// majority may hold), then applies the records `committed_after` gives for the durable
    /// index it went back to (the committed ones above it): the old backend's fence is raised so redb writes nothing on its way out, and
    /// the file is reopened behind a fresh fence. Readers wait until the records are applied,
    /// so none sees the store between. Revisions may go back here, and only here. Blocking.
    pub fn reset_to_durable(&self, disk: &dyn Disk, committed_after: impl FnOnce(u64) -> Vec<Record>) -> Result<()> {
        guarded("reset", || {
            let mut db = self.db.write().expect("store lock");
            if db.is_none() {
                return Err(Error::Closed(ClosedReason::Closed));
            }
            self.raise_fence();
            drop(db.take());
            let fence = StorageFence::default();
            let file = disk.open(STORE_FILE, false).map_err(|error| Error::storage("open store", error))?;
            let reopened = redb::Builder::new().create_with_backend(RedbBackend::with_gauge(file, fence.clone(), self.size.clone()))?;
            let (position, term) = {
                let txn = reopened.begin_read()?;
                let meta = txn.open_table(META)?;
                let term = meta.get(META_LOG_TERM)?.map_or(0, |value| value.value());
                (read_position(&meta)?, term)
            };
            *self.fence.lock().expect("fence lock") = fence;
            self.applied_revision.store(position.revision, Ordering::SeqCst);
            self.applied_index.store(position.index, Ordering::SeqCst);
            self.compact_revision.store(position.compact_revision, Ordering::SeqCst);
            self.applied_term.store(term, Ordering::SeqCst);
            let records = committed_after(position.index);
            let replayed = self.replay_into(&reopened, &records, false);
            *db = Some(reopened);
            replayed.map(drop)
        })
    }

    fn begin(db: &Database) -> Result<WriteTransaction> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::None).map_err(|error| Error::storage("set durability", error))?;
        Ok(txn)
    }

    fn writer<'t>(&self, txn: &'t WriteTransaction) -> Result<Writer<'t>> {
        let position =
            Position { revision: self.applied_revision(), index: self.applied_index(), compact_revision: self.compact_revision() };
        let mut writer = Writer::new(txn, position)?;
        writer.leases_max = self.leases_max.load(Ordering::Relaxed);
        writer.response_bytes_max = self.response_bytes_max.load(Ordering::Relaxed) as usize;
        Ok(writer)
    }

    /// Lowers (or raises) the bound on live leases grants are checked against (tests).
    pub fn set_leases_max(&self, max: u64) {
        self.leases_max.store(max, Ordering::Relaxed);
    }

    /// The bound on what one range answer collects (`--max-response-bytes`).
    pub fn set_response_bytes_max(&self, max: usize) {
        self.response_bytes_max.store(max as u64, Ordering::Relaxed);
    }

    fn publish_applied(&self, position: Position) {
        assert!(position.revision >= self.applied_revision(), "revisions never go back");
        assert!(position.index >= self.applied_index(), "log indexes never go back");
        assert!(position.compact_revision >= self.compact_revision(), "compaction never goes back");
        self.applied_revision.store(position.revision, Ordering::SeqCst);
        self.applied_index.store(position.index, Ordering::SeqCst);
        self.compact_revision.store(position.compact_revision, Ordering::SeqCst);
    }

    /// A consistent view of everything applied so far (see [`Snapshot`]).
    pub fn snapshot(&self) -> Result<Snapshot> {
        guarded("snapshot", || {
            let db = self.db()?;
            let txn = db.as_ref().expect("open").begin_read()?;
            let position = read_position(&txn.open_table(META)?)?;
            *self.snapshots.0.lock().expect("snapshot count") += 1;
            Ok(Snapshot { txn: Some(txn), position, live: self.snapshots.clone() })
        })
    }

    /// Replaces everything the store holds with `entries` (history entries in log order, as
    /// a [`Snapshot`] gave them) at `position`, in one durable transaction: a crash leaves
    /// the old content or the new, never a mix. The indexes are rebuilt from the entries.
    /// With `compact`, the entries may include some that compaction at
    /// `position.compact_revision` removes, and it is applied. `leases` (id, TTL) replace the
    /// store's leases; which keys each holds is rebuilt from the live entries. `auth`
    /// replaces the auth state. `log_term` (a cluster member's snapshot) is the term of the
    /// record at `position.index`, kept as the store's log term.
    pub fn restore(
        &self,
        position: Position,
        entries: &mut dyn Iterator<Item = Result<Vec<u8>>>,
        compact: bool,
        leases: &[(i64, i64)],
        auth: &AuthState,
        log_term: Option<u64>,
    ) -> Result<()> {
        guarded("restore", || {
            let db = self.db()?;
            let mut txn = db.as_ref().expect("open").begin_write()?;
            txn.set_durability(Durability::Immediate).map_err(|error| Error::storage("set durability", error))?;
            txn.delete_table(KV_REV)?;
            txn.delete_table(KV_INDEX)?;
            txn.delete_table(KV_LATEST)?;
            txn.delete_table(LEASES)?;
            txn.delete_table(LEASE_KEYS)?;
            txn.delete_table(LEASE_BYTES)?;
            txn.delete_table(AUTH)?;
            {
                let mut revs = txn.open_table(KV_REV)?;
                let mut index = txn.open_table(KV_INDEX)?;
                let mut latest = txn.open_table(KV_LATEST)?;
                let mut previous: Option<(u64, u32)> = None;
                for bytes in entries {
                    let bytes = bytes?;
                    let entry = StoredKv::decode(&bytes)?;
                    let at = (entry.mod_revision as u64, entry.sub);
                    if previous.is_some_and(|previous| previous >= at) || entry.mod_revision > position.revision {
                        return Err(Error::Corrupt(format!("restore: entry at revision {}.{} out of order", at.0, at.1)));
                    }
                    previous = Some(at);
                    revs.insert(at, bytes.as_slice())?;
                    index.insert((entry.key.as_slice(), at.0), entry.sub)?;
                    latest.insert(entry.key.as_slice(), bytes.as_slice())?;
                }
            }
            let writer = Writer::new(&txn, position)?;
            if compact {
                writer.compact_restored()?;
            } else {
                writer.finish()?;
            }
            {
                let mut table = txn.open_table(LEASES)?;
                for &(id, ttl) in leases {
                    table.insert(id, ttl)?;
                }
                let latest = txn.open_table(KV_LATEST)?;
                let mut lease_keys = txn.open_table(LEASE_KEYS)?;
                for item in latest.iter()? {
                    let (key, bytes) = item?;
                    let entry = StoredKv::decode_expected(bytes.value(), Some(key.value()), None)?;
                    if !entry.tombstone && entry.lease != 0 {
                        lease_keys.insert((entry.lease, key.value()), ())?;
                    }
                }
                if *auth != AuthState::default() {
                    txn.open_table(AUTH)?.insert(AUTH_STATE_KEY, auth.encode().as_slice())?;
                }
            }
            super::writer::rebuild_lease_bytes(&txn, true)?;
            {
                let mut meta = txn.open_table(META)?;
                if let Some(term) = log_term {
                    meta.insert(META_LOG_TERM, term)?;
                }
                meta.insert(META_RESTORED_REVISION, position.revision as u64)?;
            }
            txn.commit()?;
            self.applied_revision.store(position.revision, Ordering::SeqCst);
            self.applied_index.store(position.index, Ordering::SeqCst);
            self.compact_revision.store(position.compact_revision, Ordering::SeqCst);
            if let Some(term) = log_term {
                self.applied_term.store(term, Ordering::SeqCst);
            }
            Ok(())
        })
    }

    /// Bytes the store file takes (etcd's `dbSize`), without touching the disk.
    pub fn size_bytes(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Rewrites the store file without its free pages (etcd's defragment): the file shrinks
    /// to what the live data needs. Makes every commit durable first, then holds off every
    /// read and write while it runs. Fails (changing nothing) while a snapshot is open.
    pub fn defragment(&self) -> Result<()> {
        guarded("defragment", || {
            let mut db = self.db.write().expect("store lock");
            let db = db.as_mut().ok_or(Error::Closed(ClosedReason::Closed))?;
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate).map_err(|error| Error::storage("set durability", error))?;
            txn.commit()?;
            match db.compact() {
                Ok(_) => Ok(()),
                Err(redb::CompactionError::Storage(error)) => Err(Error::from(redb::Error::from(error))),
                Err(busy) => Err(Error::InvalidArgument(format!("defragment: {busy}; try again"))),
            }
        })
    }

    /// Makes every commit so far durable (one fsync of the store file).
    pub fn sync_durable(&self) -> Result<()> {
        guarded("sync", || self.sync_unguarded())
    }

    fn sync_unguarded(&self) -> Result<()> {
        let db = self.db()?;
        let mut txn = db.as_ref().expect("open").begin_write()?;
        txn.set_durability(Durability::Immediate).map_err(|error| Error::storage("set durability", error))?;
        txn.commit()?;
        Ok(())
    }
}

fn read_leases(table: &impl ReadableTable<i64, i64>) -> Result<Vec<(i64, i64)>> {
    let mut leases = Vec::new();
    for item in table.iter()? {
        let (id, ttl) = item?;
        leases.push((id.value(), ttl.value()));
    }
    Ok(leases)
}

/// The stored auth state; the default (auth off, nobody) before the first change.
pub(super) fn read_auth_state(table: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<AuthState> {
    match table.get(AUTH_STATE_KEY)? {
        None => Ok(AuthState::default()),
        Some(bytes) => AuthState::decode(bytes.value()).map_err(|error| Error::Corrupt(format!("store auth state: {error}"))),
    }
}

/// The keys `LEASE_KEYS` files under lease `id`, in key order.
pub(super) fn keys_of_lease(table: &impl ReadableTable<(i64, &'static [u8]), ()>, id: i64) -> Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    for item in table.range::<(i64, &[u8])>((id, &[][..])..)? {
        let (entry, _) = item?;
        let (lease, key) = entry.value();
        if lease != id {
            break;
        }
        keys.push(key.to_vec());
    }
    Ok(keys)
}

/// Where a history entry is filed: (revision, sub).
pub type EntryAt = (u64, u32);

/// A consistent read of the whole store at one position: what a checkpoint exports. It
/// holds a redb read transaction, so the pages it sees stay put until it is dropped.
pub struct Snapshot {
    /// Always Some until dropped (taken first in `drop`, before the count goes down).
    txn: Option<redb::ReadTransaction>,
    pub position: Position,
    live: Arc<(Mutex<usize>, Condvar)>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        drop(self.txn.take());
        let (count, released) = &*self.live;
        *count.lock().expect("snapshot count") -= 1;
        released.notify_all();
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("position", &self.position).finish_non_exhaustive()
    }
}

impl Snapshot {
    /// How many history entries the snapshot holds.
    pub fn entry_count(&self) -> Result<u64> {
        guarded("snapshot read", || Ok(self.txn.as_ref().expect("a live snapshot").open_table(KV_REV)?.len()?))
    }

    /// Every lease with its granted TTL, by id, at the snapshot's position.
    pub fn leases(&self) -> Result<Vec<(i64, i64)>> {
        guarded("snapshot read", || read_leases(&self.txn.as_ref().expect("a live snapshot").open_table(LEASES)?))
    }

    /// The auth state at the snapshot's position.
    pub fn auth_state(&self) -> Result<AuthState> {
        guarded("snapshot read", || read_auth_state(&self.txn.as_ref().expect("a live snapshot").open_table(AUTH)?))
    }

    /// History entries (as stored: each checksummed) strictly after `after`, in log order, until
    /// about `bytes_max` bytes; and the (revision, sub) of the last one.
    pub fn entries_after(&self, after: Option<EntryAt>, bytes_max: usize) -> Result<(Vec<Vec<u8>>, Option<EntryAt>)> {
        guarded("snapshot read", || {
            let revs = self.txn.as_ref().expect("a live snapshot").open_table(KV_REV)?;
            let mut range = match after {
                Some(after) => revs.range::<(u64, u32)>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))?,
                None => revs.range::<(u64, u32)>(..)?,
            };
            let (mut entries, mut bytes, mut last) = (Vec::new(), 0, after);
            while bytes < bytes_max {
                let Some(item) = range.next() else { break };
                let (key, value) = item?;
                let (revision, sub) = key.value();
                StoredKv::decode_expected(value.value(), None, Some((revision, sub)))?;
                bytes += value.value().len();
                entries.push(value.value().to_vec());
                last = Some((revision, sub));
            }
            Ok((entries, last))
        })
    }
}

/// redb writes its magic number last when it creates a file: a file whose first bytes are
/// all zero was never initialised (power failed while it was being created), so it held no
/// commit and nothing was trimmed from the WAL on its account. It is emptied, and redb
/// creates it afresh. Anything else that is not a redb file is left for redb to refuse.
fn start_over_if_never_initialised(file: &dyn crate::env::DiskFile) -> Result<()> {
    const MAGIC_BYTES: u64 = 9;
    let len = file.len().map_err(|error| Error::storage("stat store", error))?;
    if len == 0 {
        return Ok(());
    }
    let mut head = vec![0u8; len.min(MAGIC_BYTES) as usize];
    file.read_at(0, &mut head).map_err(|error| Error::storage("read store", error))?;
    if head.iter().any(|byte| *byte != 0) {
        return Ok(());
    }
    tracing::warn!(bytes = len, "store: the store file was never initialised (a crash while it was created); creating it afresh");
    file.set_len(0).and_then(|()| file.sync_data()).map_err(|error| Error::storage("reset store", error))
}

/// Runs a store operation, turning a panic inside redb (it panics on some damaged pages
/// rather than returning an error) into `Corrupt`: damage must be reported, never crash the
/// process or be served.
fn guarded<T>(what: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message =
                panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied()).unwrap_or("panic");
            Err(Error::Corrupt(format!("store {what} failed on damaged data: {message}")))
        }
    }
}

fn read_compact_revision(txn: &redb::ReadTransaction) -> Result<i64> {
    Ok(read_position(&txn.open_table(META)?)?.compact_revision)
}

/// Range at `visible` over any view (a read transaction, or the writer inside a txn).
pub(super) fn range_in<L, I, R>(
    view: &View<L, I, R>,
    request: &RangeRequest,
    visible: i64,
    compact: i64,
    bytes_max: usize,
) -> Result<RangeResponse>
where
    L: super::view::LatestTable,
    I: super::view::IndexTable,
    R: super::view::RevTable,
{
    let revision = if request.revision <= 0 { visible } else { request.revision };
    if revision > visible {
        return Err(Error::FutureRevision);
    }
    if revision < compact {
        return Err(Error::Compacted { compact_revision: compact });
    }
    let span = KeySpan::new(&request.key, &request.range_end);
    // Sorting by value needs the values; keys_only drops them after the sort, as etcd does.
    let by_value = request.sort_target == t4_proto::etcdserverpb::range_request::SortTarget::Value as i32;
    let fetch = super::view::Fetch {
        max: range::fetch_limit(request),
        count_only: request.count_only,
        keys_only: request.keys_only && !by_value,
        bytes_max,
    };
    let scan = view.scan(&span, revision, fetch)?;
    let (mut kvs, more) = range::finish(request, scan.kvs);
    if request.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value.clear());
    }
    Ok(RangeResponse { header: Some(ResponseHeader { revision: visible, ..Default::default() }), kvs, more, count: scan.count })
}

impl WriteRequest {
    /// Bytes of the request as sent on the wire (what the size limit and batch bound count).
    pub fn encoded_len(&self) -> usize {
        use prost::Message;
        match self {
            WriteRequest::Put(put) => put.encoded_len(),
            WriteRequest::DeleteRange(delete) => delete.encoded_len(),
            WriteRequest::Txn(txn) => txn.encoded_len(),
            WriteRequest::Compact(compact) => compact.encoded_len(),
            WriteRequest::LeaseGrant(grant) => grant.encoded_len(),
            WriteRequest::LeaseRevoke(revoke) => revoke.encoded_len(),
            WriteRequest::Auth(change) => change.encode().len(),
        }
    }
}

impl WriteResponse {
    pub fn header_revision(&self) -> i64 {
        let header = match self {
            WriteResponse::Put(response) => &response.header,
            WriteResponse::DeleteRange(response) => &response.header,
            WriteResponse::Txn(response) => &response.header,
            WriteResponse::Compact(response) => &response.header,
            WriteResponse::LeaseGrant(response) => &response.header,
            WriteResponse::LeaseRevoke(response) => &response.header,
            WriteResponse::Auth(response) => &response.header,
        };
        header.as_ref().map_or(0, |header| header.revision)
    }
}
