//! The recorded history: what each client asked, when, and what it was told.

/// What a client did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// Put a value unique in the whole run.
    Put {
        key: String,
        value: String,
    },
    Get {
        key: String,
    },
    /// Txn: if the key's mod_revision equals `expected` then put `value`.
    Cas {
        key: String,
        expected: i64,
        value: String,
    },
    Delete {
        key: String,
    },
    /// Read every key in `[from, to)`.
    Scan {
        from: String,
        to: String,
    },
    /// Txn: if every key's mod_revision equals its expected one, put every value (each
    /// unique in the run), all at one revision.
    Append {
        writes: Vec<(String, i64, String)>,
    },
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A write that took effect at `revision` (for a Cas: `succeeded` tells which branch).
    Wrote { revision: i64, succeeded: bool, deleted: i64 },
    /// A read at header revision `revision` that saw `value` with `mod_revision`.
    Read { revision: i64, found: Option<(String, i64)> },
    /// A scan at header revision `revision` that saw `(key, value, mod_revision)`s.
    Scanned { revision: i64, kvs: Vec<(String, String, i64)> },
    /// Refused before any effect (validation); never applied.
    Refused(String),
    /// No answer, or an error after which the effect is unknown (crash, storage failure).
    Unknown(String),
}

#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub kind: OpKind,
    pub invoke_ns: u128,
    pub complete_ns: u128,
    pub outcome: Outcome,
    /// Answered by a process that may not know yet that a newer term fenced it: a read, or a
    /// write that changed nothing (a failed compare, a delete of nothing), may be stale. It
    /// is exempt from real-time order, not from matching the log at its revision.
    pub serializable: bool,
}

/// Whether an op answered by `error` may still have taken effect: the node failed or
/// closed while it was in flight (else the error refused it before any effect).
pub fn outcome_unknown_after(error: &t4::Error) -> bool {
    matches!(
        error.kind(),
        t4::ErrorKind::StorageFailure
            | t4::ErrorKind::Fenced
            | t4::ErrorKind::Closed
            | t4::ErrorKind::Corrupt
            | t4::ErrorKind::LeaderChanged
    )
}

impl OpKind {
    /// The values this op writes if it takes effect.
    pub fn values(&self) -> Vec<&str> {
        match self {
            OpKind::Put { value, .. } | OpKind::Cas { value, .. } => vec![value.as_str()],
            OpKind::Append { writes } => writes.iter().map(|(_, _, value)| value.as_str()).collect(),
            OpKind::Get { .. } | OpKind::Scan { .. } | OpKind::Delete { .. } => Vec::new(),
        }
    }
}

impl Op {
    /// The revision this op observed or wrote, when it is known.
    pub fn revision(&self) -> Option<i64> {
        match &self.outcome {
            Outcome::Wrote { revision, .. } | Outcome::Read { revision, .. } | Outcome::Scanned { revision, .. } => Some(*revision),
            _ => None,
        }
    }

    /// Whether the op, when acknowledged, changed the store.
    pub fn changed(&self) -> bool {
        match (&self.kind, &self.outcome) {
            (OpKind::Put { .. }, Outcome::Wrote { .. }) => true,
            (OpKind::Cas { .. } | OpKind::Append { .. }, Outcome::Wrote { succeeded, .. }) => *succeeded,
            (OpKind::Delete { .. }, Outcome::Wrote { deleted, .. }) => *deleted > 0,
            _ => false,
        }
    }
}
