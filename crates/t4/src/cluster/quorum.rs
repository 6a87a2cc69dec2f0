//! When a write is committed in a cluster: the arithmetic of acknowledgements
//! (docs/clustering.md "Replication").
//!
//! Invariants (checked in [`commit_index`]):
//! - **majority-of-voters**: counted over the voters recorded in `members`, never over the
//!   followers that happen to be connected; a voter not heard from counts as holding nothing;
//! - **commit-own-term**: a leader commits by counting only once an entry of its own term
//!   is counted (its term's first record), so an older term's entry it adopted is committed
//!   by that, never by counting copies of it alone (the case that lets a later leader
//!   overwrite a counted entry of an older term);
//! - **commit-only-up**: the commit index never goes back.

use std::collections::BTreeMap;

use super::members::Members;

/// `--follower-wait-mode`: how many voters must hold a batch before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitMode {
    /// A majority of the recorded voters (the leader counts itself). Loses nothing a
    /// majority survives.
    #[default]
    Quorum,
    /// Every recorded voter: any one voter down stops writes.
    All,
    /// The leader alone: a write acknowledged and not yet on any follower or in the bucket
    /// is lost if the leader's disk is lost, or if another member takes over first.
    None,
}

impl std::str::FromStr for WaitMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "quorum" => Ok(Self::Quorum),
            "all" => Ok(Self::All),
            "none" => Ok(Self::None),
            other => Err(format!("unknown follower wait mode {other:?} (quorum, all or none)")),
        }
    }
}

/// The commit index after an acknowledgement: the highest index that `mode` says enough
/// voters hold durably (`durable`: each member's last fsynced index, by node id; the
/// leader's own included), but never below `previous`, and never an index below
/// `term_start` (the leader's first record of its own term) by counting alone.
pub fn commit_index(
    members: &Members,
    durable: &BTreeMap<String, u64>,
    leader: &str,
    mode: WaitMode,
    term_start: u64,
    previous: u64,
) -> u64 {
    let held = |name: &str| durable.get(name).copied().unwrap_or(0);
    // majority-of-voters
    let counted = match mode {
        WaitMode::Quorum => {
            let mut voters: Vec<u64> = members.voters().map(|voter| held(&voter.name)).collect();
            voters.sort_unstable_by(|a, b| b.cmp(a));
            voters.get(members.quorum() - 1).copied().unwrap_or(0)
        }
        WaitMode::All => members.voters().map(|voter| held(&voter.name)).min().unwrap_or(0),
        WaitMode::None => held(leader),
    };
    // commit-own-term, then commit-only-up
    if counted < term_start {
        return previous;
    }
    counted.max(previous)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::members;

    fn durable(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(name, index)| (name.to_string(), *index)).collect()
    }

    #[test]
    fn a_majority_of_the_recorded_voters_commits_and_connected_learners_do_not_count() {
        let three = members(&["a", "b", "c"], &["l1", "l2"]);
        let commit = |pairs: &[(&str, u64)]| commit_index(&three, &durable(pairs), "a", WaitMode::Quorum, 1, 0);
        assert_eq!(commit(&[("a", 10)]), 0, "the leader alone is not a majority of three");
        assert_eq!(commit(&[("a", 10), ("l1", 10), ("l2", 10)]), 0, "learners never count");
        assert_eq!(commit(&[("a", 10), ("b", 7)]), 7);
        assert_eq!(commit(&[("a", 10), ("b", 7), ("c", 9)]), 9);
        let five = members(&["a", "b", "c", "d", "e"], &[]);
        assert_eq!(commit_index(&five, &durable(&[("a", 9), ("b", 9), ("c", 3)]), "a", WaitMode::Quorum, 1, 0), 3);
    }

    #[test]
    fn all_waits_for_every_voter_and_none_for_the_leader_alone() {
        let three = members(&["a", "b", "c"], &["l"]);
        let held = durable(&[("a", 10), ("b", 8), ("c", 6), ("l", 1)]);
        assert_eq!(commit_index(&three, &held, "a", WaitMode::All, 1, 0), 6);
        assert_eq!(commit_index(&three, &durable(&[("a", 10), ("b", 8)]), "a", WaitMode::All, 1, 0), 0, "c down: nothing");
        assert_eq!(commit_index(&three, &durable(&[("a", 10)]), "a", WaitMode::None, 1, 0), 10);
    }

    #[test]
    fn an_older_terms_entry_is_committed_only_through_one_of_the_leaders_own_term() {
        // The leader adopted an older term's records 1..=5 and wrote its own first record at 6.
        let three = members(&["a", "b", "c"], &[]);
        assert_eq!(commit_index(&three, &durable(&[("a", 6), ("b", 5)]), "a", WaitMode::Quorum, 6, 0), 0);
        assert_eq!(commit_index(&three, &durable(&[("a", 6), ("b", 6)]), "a", WaitMode::Quorum, 6, 0), 6);
    }

    #[test]
    fn the_commit_index_never_goes_back() {
        let three = members(&["a", "b", "c"], &[]);
        // b restarted from an older disk image and reports less than before.
        assert_eq!(commit_index(&three, &durable(&[("a", 9), ("b", 4)]), "a", WaitMode::Quorum, 1, 8), 8);
        assert_eq!("quorum".parse(), Ok(WaitMode::Quorum));
        assert!("most".parse::<WaitMode>().unwrap_err().contains("quorum, all or none"));
    }
}
