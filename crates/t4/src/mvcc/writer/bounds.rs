//! Bounds on what one write request may touch, checked in step 2 (before it changes
//! anything), so a request that would be too large fails whole with etcd's
//! `etcdserver: request is too large` instead of producing a WAL record past its bound.
//!
//! A request's own bytes are bounded at the door (`--max-request-bytes`). Two things can
//! touch far more than the request carries, and both are bounded here:
//! - deletes: a DeleteRange (alone or inside a txn) touches every live entry in its range,
//!   and a put with `ignore_value` copies the value it keeps. Their entries, summed by
//!   [`entry_cost`], may be at most [`REQUEST_TOUCH_BYTES_MAX`].
//! - leases: a revoke, or an expiry, which no one can refuse, deletes every key on the
//!   lease at one revision. So the entries attached to one lease are bounded when they are
//!   attached: a put that would take a lease past [`LEASE_ENTRY_BYTES_MAX`] is refused.
//!
//! With both, one record's encoded effects stay below [`RECORD_BYTES_MAX`] (a txn may add
//! its own request bytes to either bound), and the writer closes a batch once its records
//! pass [`BATCH_RECORD_BYTES_MAX`], so a WAL batch stays under its payload bound.

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};
use t4_proto::etcdserverpb::{DeleteRangeRequest, PutRequest};

use crate::error::{Error, Result};
use crate::mvcc::codec::{stored_len_of, StoredKv};
use crate::mvcc::range::KeySpan;
use crate::mvcc::view::{entry_cost, KV_LATEST, LEASES, LEASE_BYTES};

use super::Writer;

/// Most bytes of live entries (by [`entry_cost`]) one write request may delete or copy.
pub const REQUEST_TOUCH_BYTES_MAX: u64 = 64 << 20;
/// Most bytes of live entries (by [`entry_cost`]) attached to one lease.
pub const LEASE_ENTRY_BYTES_MAX: u64 = 64 << 20;
/// Default bound on the keys and values one Range answer (or a txn's range, or a compare)
/// collects (`--max-response-bytes`): past it the range is refused with
/// [`Error::ResponseTooLarge`] before more is read. Clients page with `limit`.
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// Most live leases (each costs memory in the lessor and a row in the store); a grant past it
/// is refused with [`Error::TooManyLeases`].
pub const LEASES_MAX: u64 = 1_000_000;
/// Largest encoded record the bounds above allow: either bound plus the request's own bytes
/// (a txn's puts are checked against the state before it), with room to spare.
pub const RECORD_BYTES_MAX: u64 = 96 << 20;
/// The writer applies no further request to a batch once its records reach this many bytes;
/// with one more record of at most [`RECORD_BYTES_MAX`], a batch stays under
/// `wal::BATCH_PAYLOAD_BYTES_MAX`.
pub const BATCH_RECORD_BYTES_MAX: u64 = 64 << 20;

const _: () = assert!(BATCH_RECORD_BYTES_MAX + RECORD_BYTES_MAX < crate::wal::BATCH_PAYLOAD_BYTES_MAX as u64);
const _: () = assert!(REQUEST_TOUCH_BYTES_MAX + (8 << 20) <= RECORD_BYTES_MAX);
const _: () = assert!(LEASE_ENTRY_BYTES_MAX + (8 << 20) <= RECORD_BYTES_MAX);

impl Writer<'_> {
    /// Adds what deleting `delete`'s range would touch to `touched`; refuses past the bound.
    pub(super) fn check_delete(&self, delete: &DeleteRangeRequest, touched: &mut u64) -> Result<()> {
        let span = KeySpan::new(&delete.key, &delete.range_end);
        let room = REQUEST_TOUCH_BYTES_MAX.saturating_sub(*touched);
        *touched += self.view.live_bytes(&span, room)?;
        if *touched > REQUEST_TOUCH_BYTES_MAX {
            return Err(Error::RequestTooLarge);
        }
        Ok(())
    }

    /// A put with `ignore_value` copies the value it keeps: that counts as touched.
    pub(super) fn check_copied_value(&self, put: &PutRequest, touched: &mut u64) -> Result<()> {
        if let Some(previous) = self.live(&put.key)?.filter(|_| put.ignore_value) {
            *touched += entry_cost(previous.key.len(), previous.stored_len());
        }
        if *touched > REQUEST_TOUCH_BYTES_MAX {
            return Err(Error::RequestTooLarge);
        }
        Ok(())
    }

    /// Refuses a put that would take its lease past [`LEASE_ENTRY_BYTES_MAX`].
    pub(super) fn check_lease_room(&self, put: &PutRequest) -> Result<()> {
        let previous = self.live(&put.key)?;
        let lease = match (&previous, put.ignore_lease) {
            (Some(previous), true) => previous.lease,
            _ => put.lease,
        };
        if lease == 0 {
            return Ok(());
        }
        let value_len = match (&previous, put.ignore_value) {
            (Some(previous), true) => previous.value.len(),
            _ => put.value.len(),
        };
        let added = entry_cost(put.key.len(), stored_len_of(put.key.len(), value_len));
        let replaced = previous.filter(|previous| previous.lease == lease).map_or(0, |previous| cost_of(&previous));
        if self.lease_bytes(lease)?.saturating_sub(replaced) + added > LEASE_ENTRY_BYTES_MAX {
            return Err(Error::RequestTooLarge);
        }
        Ok(())
    }

    fn lease_bytes(&self, lease: i64) -> Result<u64> {
        Ok(self.lease_bytes.get(lease)?.map_or(0, |bytes| bytes.value()))
    }

    /// Follows an entry attached to (`attached`) or taken off `lease`.
    pub(super) fn track_lease_entry(&mut self, lease: i64, entry: &StoredKv, attached: bool) -> Result<()> {
        if lease == 0 {
            return Ok(());
        }
        let bytes = self.lease_bytes(lease)?;
        let cost = cost_of(entry);
        let next = if attached { bytes + cost } else { bytes.saturating_sub(cost) };
        self.lease_bytes.insert(lease, next)?;
        Ok(())
    }
}

fn cost_of(entry: &StoredKv) -> u64 {
    entry_cost(entry.key.len(), entry.stored_len())
}

/// Fills `lease_bytes` from the live entries, for a store restored from a checkpoint or
/// written before the table existed (when it is empty while leases exist).
pub fn rebuild_lease_bytes(txn: &WriteTransaction, always: bool) -> Result<()> {
    let leases = txn.open_table(LEASES)?;
    let mut table = txn.open_table(LEASE_BYTES)?;
    if !always && (table.len()? > 0 || leases.len()? == 0) {
        return Ok(());
    }
    let mut sums = std::collections::BTreeMap::new();
    for item in leases.iter()? {
        sums.insert(item?.0.value(), 0u64);
    }
    let latest = txn.open_table(KV_LATEST)?;
    for item in latest.iter()? {
        let (key, bytes) = item?;
        let entry = StoredKv::decode_expected(bytes.value(), Some(key.value()), None)?;
        if !entry.tombstone && entry.lease != 0 {
            *sums.entry(entry.lease).or_default() += cost_of(&entry);
        }
    }
    table.retain(|_, _| false)?;
    for (lease, bytes) in sums {
        table.insert(lease, bytes)?;
    }
    Ok(())
}
