//! Range semantics: which keys a request names, and etcd's filter/sort/limit rules.

use std::cmp::Ordering;

use t4_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use t4_proto::etcdserverpb::RangeRequest;
use t4_proto::mvccpb::KeyValue;

/// The keys a `(key, range_end)` pair names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpan {
    /// `range_end` empty: exactly `key`.
    Single(Vec<u8>),
    /// `[start, end)`; `end == None` means every key from `start` (`range_end == "\0"`).
    /// An end at or below the start names nothing.
    Range { start: Vec<u8>, end: Option<Vec<u8>> },
}

impl KeySpan {
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => KeySpan::Single(key.to_vec()),
            [0] => KeySpan::Range { start: key.to_vec(), end: None },
            end => KeySpan::Range { start: key.to_vec(), end: Some(end.to_vec()) },
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeySpan::Single(single) => single.as_slice() == key,
            KeySpan::Range { start, end } => key >= start.as_slice() && end.as_ref().is_none_or(|end| key < end.as_slice()),
        }
    }

    /// True when the span can name no key at all.
    pub fn is_empty(&self) -> bool {
        matches!(self, KeySpan::Range { start, end: Some(end) } if end <= start)
    }

    pub fn start(&self) -> &[u8] {
        match self {
            KeySpan::Single(key) => key,
            KeySpan::Range { start, .. } => start,
        }
    }
}

/// What the store returns before etcd's post-processing.
pub struct RangeScan {
    pub kvs: Vec<KeyValue>,
    /// Every key in the span at the revision (filters do not change it).
    pub count: i64,
}

/// How many entries the store must fetch: all when sorting or filtering, else limit + 1
/// (the extra one tells whether there are `more`). `None` = no limit.
pub fn fetch_limit(request: &RangeRequest) -> Option<usize> {
    let filtered = request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    if request.sort_order != SortOrder::None as i32 || filtered || request.limit <= 0 {
        return None;
    }
    Some(request.limit as usize + 1)
}

/// Applies revision filters, sorting and the limit exactly as etcd does after its scan.
/// Returns the kvs to send and the `more` flag.
pub fn finish(request: &RangeRequest, mut kvs: Vec<KeyValue>) -> (Vec<KeyValue>, bool) {
    if request.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= request.max_mod_revision);
    }
    if request.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= request.min_mod_revision);
    }
    if request.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= request.max_create_revision);
    }
    if request.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= request.min_create_revision);
    }
    let target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None);
    // The scan is ascending by key; any other target sorts ascending by default.
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    // Stable both ways: equal elements keep the scan's ascending key order, which is what
    // etcd's sort gives for the result sizes where its algorithm is an insertion sort.
    match order {
        SortOrder::Ascend => kvs.sort_by(|a, b| compare_by(target, a, b)),
        SortOrder::Descend => kvs.sort_by(|a, b| compare_by(target, b, a)),
        SortOrder::None => {}
    }
    let mut more = false;
    if request.limit > 0 && kvs.len() > request.limit as usize {
        kvs.truncate(request.limit as usize);
        more = true;
    }
    (kvs, more)
}

fn compare_by(target: SortTarget, a: &KeyValue, b: &KeyValue) -> Ordering {
    match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_etcd_range_end_rules() {
        assert!(KeySpan::new(b"a", b"").contains(b"a"));
        assert!(!KeySpan::new(b"a", b"").contains(b"ab"));
        assert!(KeySpan::new(b"a", b"\0").contains(b"zzz"));
        assert!(!KeySpan::new(b"b", b"\0").contains(b"a"));
        assert!(KeySpan::new(b"a", b"c").contains(b"b"));
        assert!(!KeySpan::new(b"a", b"c").contains(b"c"));
        assert!(KeySpan::new(b"c", b"a").is_empty());
    }
}
