//! Key spans of a request (`key`, `range_end`) and etcd's txn duplicate-key rule.

use std::collections::BTreeSet;

use t4_proto::etcdserverpb::request_op::Request;
use t4_proto::etcdserverpb::RequestOp;

use crate::error::{Error, Result};

/// A delete's interval as etcd's duplicate check sees it: the literal `[key, range_end)`
/// (a point when `range_end` is empty). Unlike a read, `range_end == "\0"` is not "to the
/// end" here, so such a delete, like an inverted one, overlaps nothing.
struct DeleteInterval {
    key: Vec<u8>,
    range_end: Vec<u8>,
}

impl DeleteInterval {
    fn contains(&self, key: &[u8]) -> bool {
        if self.range_end.is_empty() {
            return self.key == key;
        }
        self.key.as_slice() <= key && key < self.range_end.as_slice()
    }
}

/// Puts and delete intervals of one txn branch, after checking it.
#[derive(Default)]
struct Writes {
    puts: BTreeSet<Vec<u8>>,
    deletes: Vec<DeleteInterval>,
}

impl Writes {
    fn deleted(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|interval| interval.contains(key))
    }
}

/// etcd's rule: within one branch (nested txns included) no key is put twice and no put
/// falls in a deleted span. The two branches of a nested txn are exclusive, so a key put
/// in both is fine.
pub fn check_duplicate_keys(ops: &[RequestOp]) -> Result<()> {
    writes_of(ops).map(|_| ())
}

fn writes_of(ops: &[RequestOp]) -> Result<Writes> {
    let mut writes = Writes::default();
    for op in ops {
        if let Some(Request::RequestDeleteRange(delete)) = &op.request {
            writes.deletes.push(DeleteInterval { key: delete.key.clone(), range_end: delete.range_end.clone() });
        }
    }
    for op in ops {
        if let Some(Request::RequestTxn(txn)) = &op.request {
            let then_writes = writes_of(&txn.success)?;
            let else_writes = writes_of(&txn.failure)?;
            for key in &then_writes.puts {
                if writes.puts.contains(key) || writes.deleted(key) {
                    return Err(Error::DuplicateKey);
                }
            }
            for key in &else_writes.puts {
                let clashes = writes.puts.contains(key) && !then_writes.puts.contains(key);
                if clashes || writes.deleted(key) {
                    return Err(Error::DuplicateKey);
                }
            }
            writes.puts.extend(then_writes.puts);
            writes.puts.extend(else_writes.puts);
            writes.deletes.extend(then_writes.deletes);
            writes.deletes.extend(else_writes.deletes);
        }
    }
    for op in ops {
        if let Some(Request::RequestPut(put)) = &op.request {
            if writes.puts.contains(&put.key) || writes.deleted(&put.key) {
                return Err(Error::DuplicateKey);
            }
            writes.puts.insert(put.key.clone());
        }
    }
    Ok(writes)
}
