//! Writer: executes write requests inside one redb write transaction, etcd's way.
//!
//! A request runs in three steps, as in etcd's applier: (1) a txn evaluates every compare,
//! nested ones included, against the state before it, fixing the path it will take;
//! (2) the ops on that path are checked against that state (revisions, ignore_value,
//! leases), so a request either fails whole, with no trace, or (3) runs whole. Reads inside
//! a txn see the txn's own earlier writes. A txn that changes anything takes exactly the next
//! revision; every change it makes is one WAL [`Change`], in op order.

use redb::{ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use t4_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use t4_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use t4_proto::etcdserverpb::request_op::Request;
use t4_proto::etcdserverpb::response_op::Response;
use t4_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RequestOp, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse,
};
use t4_proto::mvccpb::{Event, KeyValue};

use crate::error::{Error, Result};
use crate::wal::{Change, ChangeKind, Record, RecordBody};

use super::codec::StoredKv;
use super::intervals::check_duplicate_keys;
use super::range::KeySpan;
use super::store::{keys_of_lease, write_position, META_LOG_TERM};
use super::store::{range_in, read_auth_state, Applied, AuthApplied, RevisionEvents, WriteRequest, WriteResponse};
use super::view::{event_of, Fetch, View, AUTH, AUTH_STATE_KEY, KV_INDEX, KV_LATEST, KV_REV, LEASES, LEASE_BYTES, LEASE_KEYS, META};
use crate::auth::state::AuthChange;

mod bounds;
pub use bounds::{
    rebuild_lease_bytes, BATCH_RECORD_BYTES_MAX, LEASES_MAX, LEASE_ENTRY_BYTES_MAX, RECORD_BYTES_MAX, REQUEST_TOUCH_BYTES_MAX,
    RESPONSE_BYTES_MAX,
};

/// etcd's shortest lease: shorter requests are granted this many seconds (etcd derives it
/// from its election timeout; 2 s with etcd's defaults).
pub const LEASE_TTL_MIN: i64 = 2;
/// etcd's longest lease, in seconds; longer requests are refused.
pub const LEASE_TTL_MAX: i64 = 9_000_000_000;

/// Where the store stands: last revision, last applied WAL index, compaction point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub revision: i64,
    pub index: u64,
    pub compact_revision: i64,
}

type WriteView<'t> =
    View<Table<'t, &'static [u8], &'static [u8]>, Table<'t, (&'static [u8], u64), u32>, Table<'t, (u64, u32), &'static [u8]>>;

pub struct Writer<'t> {
    view: WriteView<'t>,
    meta: Table<'t, &'static str, u64>,
    leases: Table<'t, i64, i64>,
    lease_keys: Table<'t, (i64, &'static [u8]), ()>,
    lease_bytes: Table<'t, i64, u64>,
    auth: Table<'t, &'static str, &'static [u8]>,
    position: Position,
    /// Most live leases a grant may leave ([`LEASES_MAX`] unless the store says otherwise).
    pub leases_max: u64,
    /// Most bytes of keys and values a range inside a txn (or a compare) may collect.
    pub response_bytes_max: usize,
}

/// The changes of the request being executed.
struct Exec {
    /// Revision before the request.
    base: i64,
    changes: Vec<Change>,
    events: Option<Vec<Event>>,
    /// Most bytes a range op of this request may collect. Checked in step 2 against the
    /// state before the request with `response_bytes_max`; here it has the request's own
    /// bytes on top (what its earlier puts can add), so step 3 never fails half-way.
    range_bytes_max: usize,
}

impl Exec {
    /// The revision every write of this request takes.
    fn write_revision(&self) -> i64 {
        self.base + 1
    }

    /// The revision a read inside the request sees (its own writes included).
    fn read_revision(&self) -> i64 {
        self.base + i64::from(!self.changes.is_empty())
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader { revision: self.read_revision(), ..Default::default() })
    }
}

impl<'t> Writer<'t> {
    pub fn new(txn: &'t WriteTransaction, position: Position) -> Result<Self> {
        let view = View { latest: txn.open_table(KV_LATEST)?, index: txn.open_table(KV_INDEX)?, revs: txn.open_table(KV_REV)? };
        Ok(Self {
            view,
            meta: txn.open_table(META)?,
            leases: txn.open_table(LEASES)?,
            lease_keys: txn.open_table(LEASE_KEYS)?,
            lease_bytes: txn.open_table(LEASE_BYTES)?,
            auth: txn.open_table(AUTH)?,
            position,
            leases_max: LEASES_MAX,
            response_bytes_max: RESPONSE_BYTES_MAX,
        })
    }

    /// Restoring a checkpoint that kept entries compacted away since it was first written:
    /// drops them as compaction at `position.compact_revision` would have, then records the
    /// position. Compacting at C2 leaves what compacting at C1 < C2 then at C2 leaves.
    pub fn compact_restored(mut self) -> Result<Position> {
        let target = self.position.compact_revision;
        if target > 0 {
            self.position.compact_revision = -1;
            self.compact_through(target)?;
        }
        self.finish()
    }

    /// Records where the store now stands; returns it.
    pub fn finish(mut self) -> Result<Position> {
        write_position(&mut self.meta, self.position)?;
        Ok(self.position)
    }

    /// Runs one validated request. Request errors come back inside `Applied`; storage
    /// errors come back as `Err` and poison the batch.
    pub fn apply(&mut self, request: &WriteRequest, want_events: bool) -> Result<Applied> {
        let mut exec = Exec {
            base: self.position.revision,
            changes: Vec::new(),
            events: want_events.then(Vec::new),
            range_bytes_max: self.response_bytes_max.saturating_add(request.encoded_len()),
        };
        let outcome = match request {
            WriteRequest::Put(put) => self.check_put(put).and_then(|()| self.put(&mut exec, put).map(WriteResponse::Put)),
            WriteRequest::DeleteRange(delete) => {
                self.check_delete(delete, &mut 0).and_then(|()| self.delete_range(&mut exec, delete)).map(WriteResponse::DeleteRange)
            }
            WriteRequest::Txn(txn) => self.txn_checked(&mut exec, txn).map(WriteResponse::Txn),
            WriteRequest::Compact(compact) => return self.compact(compact),
            WriteRequest::LeaseGrant(grant) => return self.lease_grant(grant),
            WriteRequest::LeaseRevoke(revoke) => return self.lease_revoke(&mut exec, revoke),
            WriteRequest::Auth(change) => return self.auth_change(change),
        };
        let response = match outcome {
            Err(error) if is_fatal(&error) => return Err(error),
            Err(error) => {
                assert!(exec.changes.is_empty(), "a failed request must leave no change");
                return Ok(Applied { response: Err(error), record: None, events: None });
            }
            Ok(response) => response,
        };
        let revision = exec.write_revision();
        let Exec { changes, events, .. } = exec;
        if changes.is_empty() {
            return Ok(Applied { response: Ok(response), record: None, events: None });
        }
        self.position.revision = revision;
        self.position.index += 1;
        let record = Record { index: self.position.index, body: RecordBody::Txn { revision, changes } };
        let events = events.map(|events| RevisionEvents { revision, events });
        Ok(Applied { response: Ok(response), record: Some(record), events })
    }

    /// Re-applies a record from the WAL (or, on a follower, from the leader's log); it must
    /// be the next one. With `want_events`, returns the watch events of the revision it
    /// spent, the same ones applying the request gave where it was first applied.
    pub fn replay(&mut self, record: &Record, want_events: bool) -> Result<Option<RevisionEvents>> {
        if record.index != self.position.index + 1 {
            return Err(Error::Corrupt(format!("wal record {} after store index {}", record.index, self.position.index)));
        }
        let mut events = None;
        match &record.body {
            RecordBody::Txn { revision, changes } => {
                if *revision != self.position.revision + 1 {
                    return Err(Error::Corrupt(format!(
                        "wal record {} has revision {revision} after store revision {}",
                        record.index, self.position.revision
                    )));
                }
                events = self.replay_changes(changes, *revision, want_events)?;
            }
            RecordBody::Compact { revision } => {
                if *revision > self.position.revision {
                    return Err(Error::Corrupt(format!("wal compacts to {revision}, past revision {}", self.position.revision)));
                }
                if *revision > self.position.compact_revision {
                    self.compact_through(*revision)?;
                }
            }
            RecordBody::LeaseGrant { id, ttl } => {
                self.leases.insert(*id, *ttl)?;
                self.lease_bytes.insert(*id, 0)?;
            }
            RecordBody::LeaseRevoke { id, revision, changes } => {
                if !changes.is_empty() {
                    if *revision != self.position.revision + 1 {
                        return Err(Error::Corrupt(format!(
                            "wal record {} revokes at revision {revision} after store revision {}",
                            record.index, self.position.revision
                        )));
                    }
                    events = self.replay_changes(changes, *revision, want_events)?;
                }
                self.leases.remove(*id)?;
                self.lease_bytes.remove(*id)?;
            }
            RecordBody::Auth { change } => {
                let mut state = read_auth_state(&self.auth)?;
                state.apply(change).map_err(|error| {
                    Error::Corrupt(format!("wal record {} changes auth in a way the auth state refuses: {error}", record.index))
                })?;
                self.auth.insert(AUTH_STATE_KEY, state.encode().as_slice())?;
            }
            // The store keeps the term of its last record (a member's log floor: see
            // `Store::applied_term`); terms only go up along a log.
            RecordBody::Term { term } => {
                let current = self.meta.get(META_LOG_TERM)?.map_or(0, |value| value.value());
                if *term < current {
                    return Err(Error::Corrupt(format!(
                        "invariant terms-only-up: wal record {} starts term {term} after term {current}",
                        record.index
                    )));
                }
                self.meta.insert(META_LOG_TERM, *term)?;
            }
        }
        self.position.index = record.index;
        Ok(events)
    }

    /// Replays the changes of one revision (the next one), with their watch events if wanted.
    fn replay_changes(&mut self, changes: &[Change], revision: i64, want_events: bool) -> Result<Option<RevisionEvents>> {
        let mut exec = Exec { base: self.position.revision, changes: Vec::new(), events: want_events.then(Vec::new), range_bytes_max: 0 };
        for change in changes {
            self.replay_change(&mut exec, change)?;
        }
        self.position.revision = revision;
        Ok(exec.events.map(|events| RevisionEvents { revision, events }))
    }

    fn replay_change(&mut self, exec: &mut Exec, change: &Change) -> Result<()> {
        match &change.kind {
            ChangeKind::Put { value, lease } => {
                self.write_put(exec, &change.key, value.clone(), *lease)?;
            }
            ChangeKind::Delete => {
                let previous = self.view.latest(&change.key)?.filter(|entry| !entry.tombstone).ok_or_else(|| {
                    Error::Corrupt(format!("wal deletes {:?}, which does not exist", String::from_utf8_lossy(&change.key)))
                })?;
                self.write_delete(exec, previous)?;
            }
        }
        Ok(())
    }

    // ---- checks (step 2) ----

    fn check_put(&self, put: &PutRequest) -> Result<()> {
        if (put.ignore_value || put.ignore_lease) && self.live(&put.key)?.is_none() {
            return Err(Error::KeyNotFound);
        }
        if put.lease != 0 && self.leases.get(put.lease)?.is_none() {
            return Err(Error::LeaseNotFound);
        }
        self.check_lease_room(put)
    }

    fn check_range(&self, range: &RangeRequest) -> Result<()> {
        if range.revision > self.position.revision {
            return Err(Error::FutureRevision);
        }
        if range.revision > 0 && range.revision < self.position.compact_revision {
            return Err(Error::Compacted { compact_revision: self.position.compact_revision });
        }
        Ok(())
    }

    /// Checks the puts and deletes (`puts`) or the ranges of the ops on the taken path,
    /// nested ones included. etcd checks every put first, then every range, so that is the
    /// order in which a txn with both kinds of problem reports them. `touched` sums what the
    /// deletes and copied values touch (see `bounds`).
    fn check_ops(&self, ops: &[RequestOp], path: &mut std::slice::Iter<'_, bool>, puts: bool, touched: &mut u64) -> Result<()> {
        for op in ops {
            match &op.request {
                Some(Request::RequestRange(range)) if !puts => {
                    self.check_range(range)?;
                    // What it would collect now, within the bound (read once more in step 3).
                    range_in(&self.view, range, self.position.revision, self.position.compact_revision, self.response_bytes_max)?;
                }
                Some(Request::RequestPut(put)) if puts => {
                    self.check_put(put)?;
                    self.check_copied_value(put, touched)?;
                }
                Some(Request::RequestDeleteRange(delete)) if puts => self.check_delete(delete, touched)?,
                Some(Request::RequestRange(_) | Request::RequestPut(_) | Request::RequestDeleteRange(_)) | None => {}
                Some(Request::RequestTxn(txn)) => {
                    let succeeded = *path.next().expect("a path entry for every nested txn");
                    self.check_ops(if succeeded { &txn.success } else { &txn.failure }, path, puts, touched)?;
                }
            }
        }
        Ok(())
    }

    // ---- compares (step 1) ----

    /// Pre-order list of which branch every txn on the taken path takes.
    fn path_of(&self, txn: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let mut succeeded = true;
        for compare in &txn.compare {
            if !self.compare(compare)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        for op in if succeeded { &txn.success } else { &txn.failure } {
            if let Some(Request::RequestTxn(nested)) = &op.request {
                self.path_of(nested, path)?;
            }
        }
        Ok(())
    }

    fn compare(&self, compare: &Compare) -> Result<bool> {
        let span = KeySpan::new(&compare.key, &compare.range_end);
        let values = compare.target == CompareTarget::Value as i32;
        let fetch = Fetch { keys_only: !values, ..Fetch::all(self.response_bytes_max) };
        let scan = self.view.scan(&span, i64::MAX, fetch)?;
        if scan.kvs.is_empty() {
            if compare.target == CompareTarget::Value as i32 {
                // A missing key has no value to compare: always false.
                return Ok(false);
            }
            return Ok(compare_kv(compare, &KeyValue::default()));
        }
        Ok(scan.kvs.iter().all(|kv| compare_kv(compare, kv)))
    }

    // ---- execution (step 3) ----

    fn txn_checked(&mut self, exec: &mut Exec, txn: &TxnRequest) -> Result<TxnResponse> {
        let mut path = Vec::new();
        self.path_of(txn, &mut path)?;
        for puts in [true, false] {
            let mut checking = path.iter();
            let succeeded = *checking.next().expect("the top-level txn has a path entry");
            self.check_ops(if succeeded { &txn.success } else { &txn.failure }, &mut checking, puts, &mut 0)?;
        }
        let mut taken = path.into_iter();
        self.txn(exec, txn, &mut taken)
    }

    fn txn(&mut self, exec: &mut Exec, txn: &TxnRequest, path: &mut std::vec::IntoIter<bool>) -> Result<TxnResponse> {
        let succeeded = path.next().expect("a path entry for every txn");
        let ops = if succeeded { &txn.success } else { &txn.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(range)) => {
                    let (read, compact) = (exec.read_revision(), self.position.compact_revision);
                    Response::ResponseRange(range_in(&self.view, range, read, compact, exec.range_bytes_max)?)
                }
                Some(Request::RequestPut(put)) => Response::ResponsePut(self.put(exec, put)?),
                Some(Request::RequestDeleteRange(delete)) => Response::ResponseDeleteRange(self.delete_range(exec, delete)?),
                Some(Request::RequestTxn(nested)) => {
                    // etcd leaves a nested txn's header empty (its ops' headers carry revisions).
                    let nested = TxnResponse { header: Some(ResponseHeader::default()), ..self.txn(exec, nested, path)? };
                    Response::ResponseTxn(nested)
                }
                None => continue,
            };
            responses.push(ResponseOp { response: Some(response) });
        }
        Ok(TxnResponse { header: exec.header(), succeeded, responses })
    }

    fn put(&mut self, exec: &mut Exec, put: &PutRequest) -> Result<PutResponse> {
        let previous = self.live(&put.key)?;
        let value = match (&previous, put.ignore_value) {
            (Some(previous), true) => previous.value.clone(),
            _ => put.value.clone(),
        };
        let lease = match (&previous, put.ignore_lease) {
            (Some(previous), true) => previous.lease,
            _ => put.lease,
        };
        let previous = self.write_put(exec, &put.key, value, lease)?;
        let prev_kv = if put.prev_kv { previous.map(|previous| previous.to_key_value(false)) } else { None };
        Ok(PutResponse { header: exec.header(), prev_kv })
    }

    /// Deletes the range's live keys. Its keys are read first (values are read one key at a
    /// time, and kept only for `prev_kv`); `bounds` checked what it touches beforehand.
    fn delete_range(&mut self, exec: &mut Exec, delete: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let span = KeySpan::new(&delete.key, &delete.range_end);
        let keys = Fetch { keys_only: true, ..Fetch::all(REQUEST_TOUCH_BYTES_MAX as usize) };
        let victims = self.view.scan(&span, i64::MAX, keys)?.kvs;
        let mut prev_kvs = Vec::new();
        for kv in &victims {
            let previous = self.live(&kv.key)?.expect("scanned just now");
            if delete.prev_kv {
                prev_kvs.push(previous.to_key_value(false));
            }
            self.write_delete(exec, previous)?;
        }
        Ok(DeleteRangeResponse { header: exec.header(), deleted: victims.len() as i64, prev_kvs })
    }

    fn compact(&mut self, request: &CompactionRequest) -> Result<Applied> {
        let header = Some(ResponseHeader { revision: self.position.revision, ..Default::default() });
        let refuse = |error| Ok(Applied { response: Err(error), record: None, events: None });
        if request.revision <= self.position.compact_revision {
            return refuse(Error::Compacted { compact_revision: self.position.compact_revision });
        }
        if request.revision > self.position.revision {
            return refuse(Error::FutureRevision);
        }
        self.compact_through(request.revision)?;
        self.position.index += 1;
        let record = Record { index: self.position.index, body: RecordBody::Compact { revision: request.revision } };
        Ok(Applied { response: Ok(WriteResponse::Compact(CompactionResponse { header })), record: Some(record), events: None })
    }

    /// Grants a lease: no revision is spent (the record only carries the lease).
    fn lease_grant(&mut self, request: &LeaseGrantRequest) -> Result<Applied> {
        let refuse = |error| Ok(Applied { response: Err(error), record: None, events: None });
        if request.ttl > LEASE_TTL_MAX {
            return refuse(Error::LeaseTtlTooLarge);
        }
        if self.leases.len()? >= self.leases_max {
            return refuse(Error::TooManyLeases { max: self.leases_max });
        }
        let id = match request.id {
            0 => self.new_lease_id()?,
            id if self.leases.get(id)?.is_some() => return refuse(Error::LeaseExists),
            id => id,
        };
        let ttl = request.ttl.max(LEASE_TTL_MIN);
        self.leases.insert(id, ttl)?;
        self.lease_bytes.insert(id, 0)?;
        self.position.index += 1;
        let record = Record { index: self.position.index, body: RecordBody::LeaseGrant { id, ttl } };
        let header = Some(ResponseHeader { revision: self.position.revision, ..Default::default() });
        let response = LeaseGrantResponse { header, id, ttl, error: String::new() };
        Ok(Applied { response: Ok(WriteResponse::LeaseGrant(response)), record: Some(record), events: None })
    }

    /// Applies a change to users, roles or whether auth is on (checked against the auth
    /// state as of this point in the log). Spends no revision; a change that changes
    /// nothing writes no record.
    fn auth_change(&mut self, change: &AuthChange) -> Result<Applied> {
        let mut state = read_auth_state(&self.auth)?;
        let header = Some(ResponseHeader { revision: self.position.revision, ..Default::default() });
        let changed = match state.apply(change) {
            Ok(changed) => changed,
            Err(error) => return Ok(Applied { response: Err(Error::Auth(error)), record: None, events: None }),
        };
        let response = Ok(WriteResponse::Auth(AuthApplied { header, auth_revision: state.revision }));
        if !changed {
            return Ok(Applied { response, record: None, events: None });
        }
        self.auth.insert(AUTH_STATE_KEY, state.encode().as_slice())?;
        self.position.index += 1;
        let record = Record { index: self.position.index, body: RecordBody::Auth { change: change.clone() } };
        Ok(Applied { response, record: Some(record), events: None })
    }

    /// A positive id no lease has, derived from the log position (so a replay or a
    /// simulation gives the same ids).
    fn new_lease_id(&self) -> Result<i64> {
        let mut seed = self.position.index ^ (self.position.revision as u64).rotate_left(32);
        loop {
            // splitmix64
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let id = ((z ^ (z >> 31)) >> 1) as i64;
            if id != 0 && self.leases.get(id)?.is_none() {
                return Ok(id);
            }
        }
    }

    /// Revokes a lease: every key attached to it is deleted at one revision (one batch of
    /// watch events); with no keys, no revision is spent.
    fn lease_revoke(&mut self, exec: &mut Exec, request: &LeaseRevokeRequest) -> Result<Applied> {
        if self.leases.get(request.id)?.is_none() {
            return Ok(Applied { response: Err(Error::LeaseNotFound), record: None, events: None });
        }
        for key in keys_of_lease(&self.lease_keys, request.id)? {
            let previous = self.live(&key)?.filter(|entry| entry.lease == request.id).ok_or_else(|| {
                Error::Corrupt(format!("lease {} lists {:?}, which is not live on it", request.id, String::from_utf8_lossy(&key)))
            })?;
            self.write_delete(exec, previous)?;
        }
        self.leases.remove(request.id)?;
        self.lease_bytes.remove(request.id)?;
        let changes = std::mem::take(&mut exec.changes);
        let revision = if changes.is_empty() { 0 } else { exec.write_revision() };
        if revision != 0 {
            self.position.revision = revision;
        }
        self.position.index += 1;
        let header = Some(ResponseHeader { revision: self.position.revision, ..Default::default() });
        let events = exec.events.take().filter(|_| revision != 0).map(|events| RevisionEvents { revision, events });
        let record = Record { index: self.position.index, body: RecordBody::LeaseRevoke { id: request.id, revision, changes } };
        Ok(Applied { response: Ok(WriteResponse::LeaseRevoke(LeaseRevokeResponse { header })), record: Some(record), events })
    }

    fn live(&self, key: &[u8]) -> Result<Option<StoredKv>> {
        Ok(self.view.latest(key)?.filter(|entry| !entry.tombstone))
    }

    /// Writes a put at the request's revision; returns the live entry it replaced.
    fn write_put(&mut self, exec: &mut Exec, key: &[u8], value: Vec<u8>, lease: i64) -> Result<Option<StoredKv>> {
        let previous = self.live(key)?;
        if let Some(old) = previous.as_ref().filter(|previous| previous.lease != 0) {
            self.lease_keys.remove((old.lease, key))?;
            self.track_lease_entry(old.lease, old, false)?;
        }
        if lease != 0 {
            self.lease_keys.insert((lease, key), ())?;
        }
        let revision = exec.write_revision();
        let entry = StoredKv {
            key: key.to_vec(),
            create_revision: previous.as_ref().map_or(revision, |previous| previous.create_revision),
            mod_revision: revision,
            version: previous.as_ref().map_or(1, |previous| previous.version + 1),
            lease,
            sub: exec.changes.len() as u32,
            tombstone: false,
            value,
        };
        self.write_entry(&entry)?;
        self.track_lease_entry(lease, &entry, true)?;
        if let Some(events) = exec.events.as_mut() {
            events.push(event_of(&entry, self.event_previous(&entry, previous.as_ref())?.as_ref()));
        }
        exec.changes.push(Change { key: entry.key, kind: ChangeKind::Put { value: entry.value, lease } });
        Ok(previous)
    }

    /// The previous value a watch event reports ([`View::previous_of`]). The live value the
    /// change replaced is that value unless an earlier op of the same txn wrote it: only
    /// then is the store read.
    fn event_previous(&self, entry: &StoredKv, replaced: Option<&StoredKv>) -> Result<Option<StoredKv>> {
        match replaced {
            Some(replaced) if replaced.mod_revision < entry.mod_revision => Ok(Some(replaced.clone())),
            _ => self.view.previous_of(entry),
        }
    }

    fn write_delete(&mut self, exec: &mut Exec, previous: StoredKv) -> Result<()> {
        if previous.lease != 0 {
            self.lease_keys.remove((previous.lease, previous.key.as_slice()))?;
            self.track_lease_entry(previous.lease, &previous, false)?;
        }
        let entry = StoredKv {
            key: previous.key.clone(),
            create_revision: 0,
            mod_revision: exec.write_revision(),
            version: 0,
            lease: 0,
            sub: exec.changes.len() as u32,
            tombstone: true,
            value: Vec::new(),
        };
        self.write_entry(&entry)?;
        if let Some(events) = exec.events.as_mut() {
            events.push(event_of(&entry, self.event_previous(&entry, Some(&previous))?.as_ref()));
        }
        exec.changes.push(Change { key: entry.key, kind: ChangeKind::Delete });
        Ok(())
    }

    fn write_entry(&mut self, entry: &StoredKv) -> Result<()> {
        let encoded = entry.encode();
        let revision = entry.mod_revision as u64;
        self.view.revs.insert((revision, entry.sub), encoded.as_slice())?;
        self.view.index.insert((entry.key.as_slice(), revision), entry.sub)?;
        self.view.latest.insert(entry.key.as_slice(), encoded.as_slice())?;
        Ok(())
    }

    /// Drops history no read at or above `revision` can see: for each key every entry
    /// older than its newest one at or below `revision`, and that one too when it is a
    /// tombstone. As in etcd, a delete *at* `revision` is gone too: a watch from the compact
    /// revision does not replay it (checked against etcd by the differential test).
    fn compact_through(&mut self, revision: i64) -> Result<()> {
        assert!(revision > self.position.compact_revision && revision <= self.position.revision);
        let mut keys = Vec::new();
        for item in self.view.latest.iter()? {
            let (key, _) = item?;
            keys.push(key.value().to_vec());
        }
        for key in keys {
            self.compact_key(&key, revision)?;
        }
        self.position.compact_revision = revision;
        Ok(())
    }

    fn compact_key(&mut self, key: &[u8], revision: i64) -> Result<()> {
        let mut entries: Vec<(u64, u32)> = Vec::new();
        for item in self.view.index.range::<(&[u8], u64)>((key, 0)..=(key, revision as u64))? {
            let (guard, sub) = item?;
            entries.push((guard.value().1, sub.value()));
        }
        let Some(&(newest_revision, newest_sub)) = entries.last() else { return Ok(()) };
        let newest = self
            .view
            .revs
            .get((newest_revision, newest_sub))?
            .map(|bytes| StoredKv::decode_expected(bytes.value(), Some(key), Some((newest_revision, newest_sub))))
            .transpose()?;
        let drop_newest = newest.as_ref().is_some_and(|entry| entry.tombstone);
        let drop_count = if drop_newest { entries.len() } else { entries.len() - 1 };
        for &(entry_revision, sub) in &entries[..drop_count] {
            self.view.index.remove((key, entry_revision))?;
            self.view.revs.remove((entry_revision, sub))?;
        }
        if drop_newest {
            let latest_is_that_tombstone = self.view.latest(key)?.is_some_and(|entry| entry.mod_revision as u64 == newest_revision);
            if latest_is_that_tombstone {
                self.view.latest.remove(key)?;
            }
        }
        Ok(())
    }
}

fn is_fatal(error: &Error) -> bool {
    matches!(error.kind(), crate::ErrorKind::StorageFailure | crate::ErrorKind::Fenced | crate::ErrorKind::Corrupt)
}

/// etcd's comparison of one key-value against a compare; a target union of the wrong kind
/// compares against zero (or the empty value).
fn compare_kv(compare: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let target = CompareTarget::try_from(compare.target).unwrap_or(CompareTarget::Version);
    let union = compare.target_union.as_ref();
    let ordering: Ordering = match target {
        CompareTarget::Value => {
            let value = match union {
                Some(TargetUnion::Value(value)) => value.as_slice(),
                _ => &[],
            };
            kv.value.as_slice().cmp(value)
        }
        CompareTarget::Version => kv.version.cmp(&int_target(union, |u| matches!(u, TargetUnion::Version(_)))),
        CompareTarget::Create => kv.create_revision.cmp(&int_target(union, |u| matches!(u, TargetUnion::CreateRevision(_)))),
        CompareTarget::Mod => kv.mod_revision.cmp(&int_target(union, |u| matches!(u, TargetUnion::ModRevision(_)))),
        CompareTarget::Lease => kv.lease.cmp(&int_target(union, |u| matches!(u, TargetUnion::Lease(_)))),
    };
    match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        Err(_) => true,
    }
}

fn int_target(union: Option<&TargetUnion>, is_kind: impl Fn(&TargetUnion) -> bool) -> i64 {
    match union {
        Some(union) if is_kind(union) => match union {
            TargetUnion::Version(value)
            | TargetUnion::CreateRevision(value)
            | TargetUnion::ModRevision(value)
            | TargetUnion::Lease(value) => *value,
            TargetUnion::Value(_) => 0,
        },
        _ => 0,
    }
}

// ---- stateless validation, before a request reaches the writer ----

/// Limits a request is validated against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_bytes_max: usize,
    pub txn_ops_max: usize,
}

/// etcd's request checks that need no state: sizes, empty keys, op counts, duplicates.
pub fn validate_write(request: &WriteRequest, limits: Limits) -> Result<()> {
    if request.encoded_len() > limits.request_bytes_max {
        return Err(Error::RequestTooLarge);
    }
    match request {
        WriteRequest::Put(put) => check_put_request(put),
        WriteRequest::DeleteRange(delete) => non_empty(&delete.key),
        WriteRequest::Txn(txn) => {
            check_txn_request(txn, limits.txn_ops_max)?;
            check_duplicate_keys(&txn.success)?;
            check_duplicate_keys(&txn.failure)
        }
        WriteRequest::Compact(_) | WriteRequest::LeaseGrant(_) | WriteRequest::LeaseRevoke(_) | WriteRequest::Auth(_) => Ok(()),
    }
}

/// The stateless checks of a Range (also used by the read path).
pub fn validate_range(range: &RangeRequest) -> Result<()> {
    non_empty(&range.key)?;
    if SortOrder::try_from(range.sort_order).is_err() || SortTarget::try_from(range.sort_target).is_err() {
        return Err(Error::InvalidSortOption);
    }
    Ok(())
}

fn non_empty(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

fn check_put_request(put: &PutRequest) -> Result<()> {
    non_empty(&put.key)?;
    if put.ignore_value && !put.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if put.ignore_lease && put.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

fn check_txn_request(txn: &TxnRequest, ops_max: usize) -> Result<()> {
    let ops = txn.compare.len().max(txn.success.len()).max(txn.failure.len());
    if ops > ops_max {
        return Err(Error::TooManyOps);
    }
    for compare in &txn.compare {
        non_empty(&compare.key)?;
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(Request::RequestRange(range)) => validate_range(range)?,
            Some(Request::RequestPut(put)) => check_put_request(put)?,
            Some(Request::RequestDeleteRange(delete)) => non_empty(&delete.key)?,
            Some(Request::RequestTxn(nested)) => check_txn_request(nested, ops_max - ops)?,
            None => {}
        }
    }
    Ok(())
}
