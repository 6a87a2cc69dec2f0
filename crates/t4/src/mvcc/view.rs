//! View: reads over the store's tables, shared by read transactions and the writer.

use redb::{ReadableTable, TableDefinition};
use t4_proto::mvccpb::event::EventType;
use t4_proto::mvccpb::Event;

use crate::error::Result;

use super::codec::{peek_revision, StoredKv};
use super::range::{KeySpan, RangeScan};
use super::store::RevisionEvents;

pub const KV_REV: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("kv_rev");
pub const KV_INDEX: TableDefinition<(&[u8], u64), u32> = TableDefinition::new("kv_index");
pub const KV_LATEST: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_latest");
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Lease id -> granted TTL in seconds. Expiry times live in memory (the node's lessor).
pub const LEASES: TableDefinition<i64, i64> = TableDefinition::new("leases");
/// (lease id, key) for every live key attached to a lease: revoke finds its keys here.
pub const LEASE_KEYS: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("lease_keys");
/// Lease id -> bytes of the live entries attached to it ([`entry_cost`] summed): bounds what
/// one revoke deletes (`LEASE_ENTRY_BYTES_MAX`). Rebuilt from `kv_latest` when missing.
pub const LEASE_BYTES: TableDefinition<i64, u64> = TableDefinition::new("lease_bytes");
/// The auth state ([`crate::auth::state::AuthState`], encoded) under [`AUTH_STATE_KEY`];
/// absent until the first auth change.
pub const AUTH: TableDefinition<&str, &[u8]> = TableDefinition::new("auth");
pub const AUTH_STATE_KEY: &str = "state";

pub trait LatestTable: ReadableTable<&'static [u8], &'static [u8]> {}
impl<T: ReadableTable<&'static [u8], &'static [u8]>> LatestTable for T {}
pub trait IndexTable: ReadableTable<(&'static [u8], u64), u32> {}
impl<T: ReadableTable<(&'static [u8], u64), u32>> IndexTable for T {}
pub trait RevTable: ReadableTable<(u64, u32), &'static [u8]> {}
impl<T: ReadableTable<(u64, u32), &'static [u8]>> RevTable for T {}

/// Called with (key, stored entry); answers whether to go on.
type Visitor<'v> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'v;

pub struct View<L, I, R> {
    pub latest: L,
    pub index: I,
    pub revs: R,
}

impl<L: LatestTable, I: IndexTable, R: RevTable> View<L, I, R> {
    /// The newest entry of `key` (possibly a tombstone).
    pub fn latest(&self, key: &[u8]) -> Result<Option<StoredKv>> {
        match self.latest.get(key)? {
            Some(bytes) => Ok(Some(StoredKv::decode_expected(bytes.value(), Some(key), None)?)),
            None => Ok(None),
        }
    }

    /// The live entry of `key` at `revision`, or None if absent (or deleted) then.
    pub fn live_at(&self, key: &[u8], revision: i64) -> Result<Option<StoredKv>> {
        let Some(bytes) = self.latest.get(key)? else { return Ok(None) };
        let (mod_revision, _) = peek_revision(bytes.value(), key)?;
        let entry = if mod_revision <= revision {
            Some(StoredKv::decode_expected(bytes.value(), Some(key), None)?)
        } else {
            self.history_at(key, revision)?
        };
        Ok(entry.filter(|entry| !entry.tombstone))
    }

    /// The entry of `key` with the highest revision at or below `revision`.
    pub fn history_at(&self, key: &[u8], revision: i64) -> Result<Option<StoredKv>> {
        if revision < 1 {
            return Ok(None);
        }
        let mut range = self.index.range::<(&[u8], u64)>((key, 0)..=(key, revision as u64))?;
        let Some(found) = range.next_back() else { return Ok(None) };
        let (guard_key, sub) = found?;
        let (_, entry_revision) = guard_key.value();
        self.entry(key, entry_revision, sub.value())
    }

    fn entry(&self, key: &[u8], revision: u64, sub: u32) -> Result<Option<StoredKv>> {
        match self.revs.get((revision, sub))? {
            Some(bytes) => Ok(Some(StoredKv::decode_expected(bytes.value(), Some(key), Some((revision, sub)))?)),
            None => Err(crate::Error::Corrupt(format!("index names revision {revision}.{sub}, which is missing"))),
        }
    }

    /// Live entries in `span` at `revision`, ascending by key. Counts every live key;
    /// collects at most `fetch_max` entries (none when `count_only`), of at most `bytes_max`
    /// bytes of keys and values together (past it: `ResponseTooLarge`, before more is read).
    pub fn scan(&self, span: &KeySpan, revision: i64, fetch: Fetch) -> Result<RangeScan> {
        let Fetch { max: fetch_max, count_only, keys_only, bytes_max } = fetch;
        let mut scan = RangeScan { kvs: Vec::new(), count: 0 };
        let mut bytes_held = 0usize;
        let mut keep = |kvs: &mut Vec<t4_proto::mvccpb::KeyValue>, kv: t4_proto::mvccpb::KeyValue| -> Result<()> {
            bytes_held += kv.key.len() + kv.value.len();
            if bytes_held > bytes_max {
                return Err(crate::Error::ResponseTooLarge { bytes_max: bytes_max as u64 });
            }
            kvs.push(kv);
            Ok(())
        };
        let mut visit = |key: &[u8], bytes: &[u8]| -> Result<bool> {
            let (mod_revision, tombstone) = peek_revision(bytes, key)?;
            let want = !count_only && fetch_max.is_none_or(|max| scan.kvs.len() < max);
            if mod_revision <= revision {
                if !tombstone {
                    scan.count += 1;
                    if want {
                        keep(&mut scan.kvs, StoredKv::decode_expected(bytes, Some(key), None)?.to_key_value(keys_only))?;
                    }
                }
            } else if let Some(entry) = self.history_at(key, revision)?.filter(|entry| !entry.tombstone) {
                scan.count += 1;
                if want {
                    keep(&mut scan.kvs, entry.to_key_value(keys_only))?;
                }
            }
            Ok(true)
        };
        self.visit_latest(span, &mut visit)?;
        Ok(scan)
    }

    /// Calls `visit` with (key, newest stored entry) for each key of `span` in key order,
    /// tombstones included, until it answers false.
    fn visit_latest(&self, span: &KeySpan, visit: &mut Visitor<'_>) -> Result<()> {
        match span {
            _ if span.is_empty() => {}
            KeySpan::Single(key) => {
                if let Some(bytes) = self.latest.get(key.as_slice())? {
                    visit(key, bytes.value())?;
                }
            }
            KeySpan::Range { start, end } => {
                let range = match end {
                    Some(end) => self.latest.range::<&[u8]>(start.as_slice()..end.as_slice())?,
                    None => self.latest.range::<&[u8]>(start.as_slice()..)?,
                };
                for item in range {
                    let (key, bytes) = item?;
                    if !visit(key.value(), bytes.value())? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Bytes of the live entries in `span` now (each its [`entry_cost`]), counted until the
    /// sum passes `limit`: what deleting the span would touch, without holding any of it.
    pub fn live_bytes(&self, span: &KeySpan, limit: u64) -> Result<u64> {
        let mut total = 0u64;
        let mut visit = |key: &[u8], bytes: &[u8]| -> Result<bool> {
            if !peek_revision(bytes, key)?.1 {
                total += entry_cost(key.len(), bytes.len());
            }
            Ok(total <= limit)
        };
        self.visit_latest(span, &mut visit)?;
        Ok(total)
    }

    /// Events of revisions `from..=to` touching `span`, in log order, grouped by revision.
    /// Revisions without a matching event are left out.
    pub fn events(&self, span: &KeySpan, from: i64, to: i64, prev_kv: bool) -> Result<Vec<RevisionEvents>> {
        let mut out: Vec<RevisionEvents> = Vec::new();
        if from > to {
            return Ok(out);
        }
        for item in self.revs.range::<(u64, u32)>((from as u64, 0)..=(to as u64, u32::MAX))? {
            let (position, bytes) = item?;
            let entry = StoredKv::decode_expected(bytes.value(), None, Some(position.value()))?;
            if !span.contains(&entry.key) {
                continue;
            }
            let previous = if prev_kv { self.previous_of(&entry)? } else { None };
            let event = event_of(&entry, previous.as_ref());
            match out.last_mut() {
                Some(last) if last.revision == entry.mod_revision => last.events.push(event),
                _ => out.push(RevisionEvents { revision: entry.mod_revision, events: vec![event] }),
            }
        }
        Ok(out)
    }
}

impl<L: LatestTable, I: IndexTable, R: RevTable> View<L, I, R> {
    /// The previous value a watch event reports for `entry`, as etcd's watch server finds
    /// it: none for a put that creates its key, else the key's value at the revision before
    /// (so a change earlier in the same txn is not the previous value).
    pub fn previous_of(&self, entry: &StoredKv) -> Result<Option<StoredKv>> {
        if !entry.tombstone && entry.create_revision == entry.mod_revision {
            return Ok(None);
        }
        self.live_at(&entry.key, entry.mod_revision - 1)
    }
}

/// What a scan collects: at most `max` entries (all: `None`), none when `count_only`,
/// without values when `keys_only`, at most `bytes_max` bytes of keys and values.
#[derive(Debug, Clone, Copy)]
pub struct Fetch {
    pub max: Option<usize>,
    pub count_only: bool,
    pub keys_only: bool,
    pub bytes_max: usize,
}

impl Fetch {
    /// Every entry, with values, within `bytes_max`.
    pub fn all(bytes_max: usize) -> Self {
        Self { max: None, count_only: false, keys_only: false, bytes_max }
    }
}

/// What one live entry weighs against the write bounds: its key, its stored bytes (value and
/// metadata included) and a fixed share for the WAL and event framing around it.
pub fn entry_cost(key_bytes: usize, stored_bytes: usize) -> u64 {
    (key_bytes + stored_bytes + 32) as u64
}

/// The watch event for a change, as etcd shapes it.
pub fn event_of(entry: &StoredKv, previous: Option<&StoredKv>) -> Event {
    let (kind, kv) =
        if entry.tombstone { (EventType::Delete, entry.to_delete_event_kv()) } else { (EventType::Put, entry.to_key_value(false)) };
    Event { r#type: kind as i32, kv: Some(kv), prev_kv: previous.map(|previous| previous.to_key_value(false)) }
}
