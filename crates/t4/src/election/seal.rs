//! Seals: how a new term ends an older term's log in the bucket (docs/design.md §5). A seal
//! is an object created only if absent at the older term's first missing seq; the older
//! term's writer then fails to create that object (412) and stops, so nothing it could still
//! acknowledge lies past the seal, and nothing past a seal is ever replayed.
//!
//! Invariant **seal-create-only**: a seal is written with `If-None-Match: *` and nothing
//! else, so it can never replace an object of the log it ends.

use bytes::Bytes;

use crate::durability::bucket::object_error;
use crate::durability::format::{decode_wal_header, encode_seal, WAL_OBJECT_HEADER_BYTES};
use crate::durability::layout;
use crate::env::{Condition, ObjectError, ObjectStore};
use crate::error::Result;

/// Creates a seal at `term`'s first missing seq, starting the search at `seq` (missing when
/// listed). A 412 means someone created that object first: another node sealing the same
/// term (its seal ends the term there, so we are done), or the term's writer, and then the
/// next seq is tried at once; the writer needs a local fsync and an upload per object, the
/// sealer one PUT, so the sealer overtakes it. Returns where the term's seal is.
pub async fn seal(store: &dyn ObjectStore, term: u64, mut seq: u64) -> Result<u64> {
    loop {
        let name = layout::wal_object(term, seq);
        // seal-create-only
        match store.put(&name, Bytes::from(encode_seal(term, seq)), Condition::IfNoneMatch).await {
            Ok(_) => return Ok(seq),
            Err(ObjectError::PreconditionFailed(_)) => {
                // Two nodes opening at once both seal the terms below them (robustness #23).
                let header = store
                    .get_range(&name, 0, WAL_OBJECT_HEADER_BYTES as u64)
                    .await
                    .map_err(|error| object_error(&format!("read {name}"), error))?;
                if decode_wal_header(&name, &header)?.0 {
                    return Ok(seq);
                }
                seq += 1;
            }
            Err(error) => return Err(object_error(&format!("seal {name}"), error)),
        }
    }
}
