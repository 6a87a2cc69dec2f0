//! Whether a user's permissions cover a request's whole key range, as etcd's RBAC decides:
//! a range request `[key, range_end)` is allowed only if the union of the user's permitted
//! intervals of that kind (read or write) covers every key it could name, not just its
//! first key (T4, the Go original, checked the first key only).

use crate::mvcc::KeySpan;

/// What a permission allows (etcd's `authpb.Permission.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    fn allows(self, wanted: Access) -> bool {
        self == Access::ReadWrite || self == wanted
    }
}

/// One permission of a role: `access` over `key` / `range_end` (etcd's encoding: empty
/// `range_end` is the key alone, `"\0"` everything from `key` on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub access: Access,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

/// `[start, end)`, `end == None` meaning no upper bound.
fn interval(span: &KeySpan) -> (Vec<u8>, Option<Vec<u8>>) {
    match span {
        KeySpan::Single(key) => {
            let mut next = key.clone();
            next.push(0);
            (key.clone(), Some(next))
        }
        KeySpan::Range { start, end } => (start.clone(), end.clone()),
    }
}

/// Whether `permissions` allow `wanted` access to every key `key`/`range_end` can name.
/// A span that names nothing (an end at or below its start) needs access to its start key.
pub fn covers(permissions: &[Permission], wanted: Access, key: &[u8], range_end: &[u8]) -> bool {
    let span = KeySpan::new(key, range_end);
    let span = if span.is_empty() { KeySpan::Single(key.to_vec()) } else { span };
    let (start, end) = interval(&span);
    let mut granted: Vec<(Vec<u8>, Option<Vec<u8>>)> = permissions
        .iter()
        .filter(|permission| permission.access.allows(wanted))
        .map(|permission| interval(&KeySpan::new(&permission.key, &permission.range_end)))
        .collect();
    granted.sort();
    // Sweep: `reached` is how far from `start` the granted intervals cover without a gap.
    let mut reached = start;
    for (from, to) in granted {
        if from > reached {
            break;
        }
        match to {
            None => return true,
            Some(to) if to > reached => reached = to,
            Some(_) => {}
        }
        if end.as_ref().is_some_and(|end| &reached >= end) {
            return true;
        }
    }
    end.as_ref().is_some_and(|end| &reached >= end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permission(access: Access, key: &str, range_end: &str) -> Permission {
        Permission { access, key: key.into(), range_end: range_end.into() }
    }

    fn covers(permissions: &[Permission], wanted: Access, key: &str, range_end: &str) -> bool {
        super::covers(permissions, wanted, key.as_bytes(), range_end.as_bytes())
    }

    #[test]
    fn a_range_is_allowed_only_when_every_key_it_names_is() {
        let perms = [
            permission(Access::Read, "/a/", "/a0"),
            permission(Access::ReadWrite, "/b/", "/b/m"),
            permission(Access::Read, "/b/m", "/c"),
            permission(Access::Write, "/w", ""),
        ];
        assert!(covers(&perms, Access::Read, "/a/x", ""));
        assert!(covers(&perms, Access::Read, "/a/", "/a0"));
        assert!(!covers(&perms, Access::Write, "/a/x", ""), "read is not write");
        assert!(covers(&perms, Access::Read, "/b/", "/c"), "two adjacent grants cover the union");
        assert!(!covers(&perms, Access::Write, "/b/", "/c"), "the second grant is read-only");
        assert!(covers(&perms, Access::Write, "/b/a", "/b/c"));
        assert!(!covers(&perms, Access::Read, "/a/", "/b/z"), "a gap between /a0 and /b/");
        assert!(!covers(&perms, Access::Read, "/a/x", "\0"), "to the end is more than granted");
        assert!(!covers(&perms, Access::Read, "/a", ""), "the first key matters too");
        assert!(covers(&perms, Access::Write, "/w", ""));
        assert!(!covers(&perms, Access::Write, "/w", "/x"), "a single-key grant does not cover a range");
        assert!(!covers(&[], Access::Read, "k", ""));
        let everything = [permission(Access::ReadWrite, "\0", "\0")];
        assert!(covers(&everything, Access::Write, "anything", "\0"));
        assert!(covers(&everything, Access::Read, "\0", "\0"));
        // An inverted range names nothing; it needs its start key.
        assert!(covers(&perms, Access::Read, "/a/z", "/a/b"));
        assert!(!covers(&perms, Access::Read, "/z", "/a"));
    }
}
