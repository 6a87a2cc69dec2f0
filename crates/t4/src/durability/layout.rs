//! The names of t4's objects under its prefix (docs/design.md §5). Every object name t4 writes or
//! reads is made here, so the layout is one page to read (`docs/formats.md`):
//!
//! ```text
//! lock                          leadership record {term, node, lease, URLs}; CAS only
//! members                       the cluster's voters and learners; CAS only
//! wal/<term>/<seq>              create-only log objects of one term; seq dense from 1
//! wal/<term>/floor              where the term's log starts once GC removed its low end
//! checkpoint/<rev>/manifest     one checkpoint: revision, term, chunk list
//! chunks/<sha256>               content-addressed checkpoint chunks
//! branches/<id>                 pins a checkpoint against GC
//! probe/<node>-<ms>-<nonce>     written and deleted at open: the conditional-write check
//! ```
//!
//! Numbers are zero-padded to 20 digits so that names sort as numbers do: a listing of
//! `wal/<term>/` is in seq order, a listing of `checkpoint/` in revision order.

/// The leadership record.
pub const LOCK: &str = "lock";
/// The cluster's membership (docs/clustering.md "Membership").
pub const MEMBERS: &str = "members";
pub const WAL_DIR: &str = "wal/";
pub const CHECKPOINT_DIR: &str = "checkpoint/";
pub const CHUNK_DIR: &str = "chunks/";
pub const BRANCH_DIR: &str = "branches/";

pub const PROBE_DIR: &str = "probe/";

/// `probe/<node>-<wall ms>-<nonce>`: the key a node's conditional-write probe uses at open
/// (one per open: no earlier incarnation's late write can meet it).
pub fn probe_object(node: &str, wall_ms: u64, nonce: u64) -> String {
    let node: String = node.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.@".contains(c) { c } else { '_' }).collect();
    format!("{PROBE_DIR}{node}-{}-{nonce:016x}", number(wall_ms))
}

fn number(value: u64) -> String {
    format!("{value:020}")
}

/// `wal/<term>/` — every log object of one term.
pub fn wal_term_prefix(term: u64) -> String {
    format!("{WAL_DIR}{}/", number(term))
}

/// `wal/<term>/<seq>`.
pub fn wal_object(term: u64, seq: u64) -> String {
    format!("{}{}", wal_term_prefix(term), number(seq))
}

/// `wal/<term>/floor`.
pub fn wal_floor(term: u64) -> String {
    format!("{}floor", wal_term_prefix(term))
}

/// The term of a `wal/<term>/floor` name.
pub fn parse_wal_floor(name: &str) -> Option<u64> {
    parse_number(name.strip_prefix(WAL_DIR)?.strip_suffix("/floor")?)
}

/// The (term, seq) of a `wal/<term>/<seq>` name.
pub fn parse_wal_object(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix(WAL_DIR)?;
    let (term, seq) = rest.split_once('/')?;
    Some((parse_number(term)?, parse_number(seq)?))
}

/// `checkpoint/<rev>/manifest`.
pub fn checkpoint_manifest(revision: u64) -> String {
    format!("{CHECKPOINT_DIR}{}/manifest", number(revision))
}

/// The revision of a `checkpoint/<rev>/manifest` name.
pub fn parse_checkpoint_manifest(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(CHECKPOINT_DIR)?;
    parse_number(rest.strip_suffix("/manifest")?)
}

/// `chunks/<sha256 hex>`.
pub fn chunk(sha256: &[u8; 32]) -> String {
    let hex: String = sha256.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{CHUNK_DIR}{hex}")
}

/// `branches/<id>`.
pub fn branch(id: &str) -> String {
    format!("{BRANCH_DIR}{id}")
}

fn parse_number(text: &str) -> Option<u64> {
    (text.len() == 20 && text.bytes().all(|byte| byte.is_ascii_digit())).then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_as_numbers() {
        assert_eq!(wal_object(3, 12), "wal/00000000000000000003/00000000000000000012");
        assert_eq!(parse_wal_object(&wal_object(3, 12)), Some((3, 12)));
        assert_eq!(parse_wal_object(&wal_object(u64::MAX, 1)), Some((u64::MAX, 1)));
        assert_eq!(parse_wal_object("wal/3/12"), None, "unpadded names are not t4's");
        assert_eq!(parse_wal_floor(&wal_floor(3)), Some(3));
        assert_eq!(parse_wal_object(&wal_floor(3)), None);
        assert_eq!(parse_checkpoint_manifest(&checkpoint_manifest(42)), Some(42));
        assert_eq!(parse_checkpoint_manifest("checkpoint/00000000000000000042/other"), None);
        let mut names: Vec<String> = [10, 9, 100, 1].iter().map(|seq| wal_object(1, *seq)).collect();
        names.sort();
        assert_eq!(names.iter().map(|name| parse_wal_object(name).unwrap().1).collect::<Vec<_>>(), [1, 9, 10, 100]);
        assert_eq!(chunk(&[0xab; 32]).len(), "chunks/".len() + 64);
    }
}
