//! The revisioned store: etcd's MVCC semantics on redb (docs/design.md §3, §4).
//!
//! Tables (see `docs/formats.md`):
//! - `kv_rev`: (revision, sub) -> the key's entry at that revision. The history, in log
//!   order; watch catch-up reads it by revision.
//! - `kv_index`: (key, revision) -> sub. Answers "latest entry of key at or below R".
//! - `kv_latest`: key -> the newest entry (tombstones included until compacted). Reads at
//!   the current revision touch only this table.
//! - `meta`: applied WAL index, current and compact revision, format version.
//! - `leases`, `lease_keys`: lease id -> TTL, and (lease, key) for every key on a lease.
//! - `lease_bytes`: lease id -> bytes of the entries on it (the bound a revoke relies on).
//! - `auth`: the auth state (users, roles, whether auth is on), one encoded value.
//!
//! Invariants: revision 1 is the empty store; a txn that changes anything takes exactly the
//! next revision, and every entry it writes carries it (sub numbers give op order within the
//! txn); compaction and read-only txns spend none. The store is changed only by the single
//! writer, always together with the WAL index of the record that changed it, so replay after
//! a crash is exact.

mod codec;
mod intervals;
mod range;
mod store;
mod view;
mod writer;

#[cfg(test)]
mod bounds_test;
#[cfg(test)]
mod store_test;

pub use codec::StoredKv;
pub use range::KeySpan;
pub use store::{Applied, AuthApplied, RevisionEvents, Snapshot, Store, WriteRequest, WriteResponse, STORE_FILE};
pub use writer::{
    validate_range, validate_write, Limits, Position, LEASE_ENTRY_BYTES_MAX, LEASE_TTL_MAX, LEASE_TTL_MIN, REQUEST_TOUCH_BYTES_MAX,
    RESPONSE_BYTES_MAX,
};
