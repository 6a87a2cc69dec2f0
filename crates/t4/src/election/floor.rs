//! Floors: where a term's log starts once GC removed its low end (`wal/<term>/floor`,
//! docs/design.md §5). Readers take a term's log as the dense run from its floor (or 1), so a
//! collection cut short leaves garbage below the floor, never a hole.
//!
//! Invariant **floor-only-up**: a floor is written conditioned on the floor read just
//! before (its ETag, or absence) and only to a higher seq, so two collectors cannot move it
//! down or lose each other's raise.

use bytes::Bytes;

use crate::durability::bucket::object_error;
use crate::durability::format::{decode_floor, encode_floor};
use crate::durability::layout;
use crate::env::{Condition, ObjectError, ObjectStore};
use crate::error::Result;

/// A term's floor and its ETag, if GC set one.
pub async fn read_floor(store: &dyn ObjectStore, term: u64) -> Result<Option<(u64, String)>> {
    let name = layout::wal_floor(term);
    match store.get(&name).await {
        Ok((bytes, etag)) => Ok(Some((decode_floor(&name, term, &bytes)?, etag))),
        Err(ObjectError::NotFound(_)) => Ok(None),
        Err(error) => Err(object_error(&format!("read {name}"), error)),
    }
}

/// Moves `term`'s floor up to `seq` (never down), by compare-and-swap. Returns the floor
/// now in place (higher than `seq` if another collector got further).
pub async fn raise_floor(store: &dyn ObjectStore, term: u64, seq: u64) -> Result<u64> {
    let name = layout::wal_floor(term);
    loop {
        let condition = match read_floor(store, term).await? {
            // floor-only-up
            Some((floor, _)) if floor >= seq => return Ok(floor),
            Some((_, etag)) => Condition::IfMatch(etag),
            None => Condition::IfNoneMatch,
        };
        match store.put(&name, Bytes::from(encode_floor(term, seq)), condition).await {
            Ok(_) => return Ok(seq),
            Err(ObjectError::PreconditionFailed(_) | ObjectError::NotFound(_)) => continue,
            Err(error) => return Err(object_error(&format!("write {name}"), error)),
        }
    }
}
