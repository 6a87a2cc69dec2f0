//! Checks, before a node takes a term, that the object store enforces the two conditional
//! writes t4's fencing rests on (docs/durability.md): a create-only PUT (`If-None-Match: *`)
//! of a key that exists fails with 412, and so does a PUT `If-Match` an ETag the object does
//! not have. A store that ignores either would let two terms write the same log object or
//! let a stale node overwrite the lock, so t4 refuses to run on it and says why.
//!
//! The probe writes `probe/<node>-<wall ms>-<nonce>` (its own key, so neither nodes probing
//! at once nor an earlier incarnation's late writes meet it), twice with different bodies,
//! then tries a CAS on a wrong ETag, and deletes the key. A 412 on the first create (an
//! ambiguous attempt of ours that landed, retried) is itself a create-only PUT enforced.

use bytes::Bytes;

use crate::durability::layout;
use crate::env::{Condition, ObjectError, ObjectStore};
use crate::error::{Error, Result};

use super::bucket::object_error;

/// Runs the probe; `Err(InvalidArgument)` names what the store failed to enforce.
pub async fn conditional_writes(store: &dyn ObjectStore, node: &str, wall_ms: u64) -> Result<()> {
    let key = layout::probe_object(node, wall_ms, crate::env::nonce());
    let put = |body: &'static str, condition| store.put(&key, Bytes::from_static(body.as_bytes()), condition);
    match put("first", Condition::IfNoneMatch).await {
        Ok(_) | Err(ObjectError::PreconditionFailed(_)) => {}
        Err(error) => return Err(object_error(&format!("probe {key}"), error)),
    }
    let refused = |what: &str| {
        Error::InvalidArgument(format!(
            "the object store does not enforce {what} (a conditional PUT of {key} that must fail with 412 succeeded); \
             t4 fences writers with conditional writes and will not run on a store that ignores them"
        ))
    };
    let outcome = match put("second", Condition::IfNoneMatch).await {
        Ok(_) => Err(refused("If-None-Match: *")),
        Err(ObjectError::PreconditionFailed(_)) => match put("third", Condition::IfMatch("\"t4-probe-no-such-etag\"".into())).await {
            Ok(_) => Err(refused("If-Match")),
            Err(ObjectError::PreconditionFailed(_)) => Ok(()),
            Err(error) => Err(object_error(&format!("probe If-Match on {key}"), error)),
        },
        Err(error) => Err(object_error(&format!("probe If-None-Match on {key}"), error)),
    };
    if let Err(error) = store.delete(&key, None).await {
        tracing::warn!(%error, %key, "bucket: could not delete the conditional-write probe; it is harmless");
    }
    outcome
}
