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
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A write that took effect at `revision` (for a Cas: `succeeded` tells which branch).
    Wrote { revision: i64, succeeded: bool, deleted: i64 },
    /// A read at header revision `revision` that saw `value` with `mod_revision`.
    Read { revision: i64, found: Option<(String, i64)> },
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
}

impl Op {
    /// The revision this op observed or wrote, when it is known.
    pub fn revision(&self) -> Option<i64> {
        match &self.outcome {
            Outcome::Wrote { revision, .. } | Outcome::Read { revision, .. } => Some(*revision),
            _ => None,
        }
    }

    /// Whether the op, when acknowledged, changed the store.
    pub fn changed(&self) -> bool {
        match (&self.kind, &self.outcome) {
            (OpKind::Put { .. }, Outcome::Wrote { .. }) => true,
            (OpKind::Cas { .. }, Outcome::Wrote { succeeded, .. }) => *succeeded,
            (OpKind::Delete { .. }, Outcome::Wrote { deleted, .. }) => *deleted > 0,
            _ => false,
        }
    }
}
