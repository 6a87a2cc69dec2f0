//! Clustering (docs/clustering.md): several nodes on one bucket and prefix, one leader at a
//! time by the bucket's `lock` (leased mode of [`crate::election`]), the log replicated to
//! a majority of the voters recorded in `members`.
//!
//! The membership record and its changes ([`members`]), the commit arithmetic ([`quorum`]),
//! log matching ([`log_terms`]), a member's side of appends and promises ([`replica`]), the
//! leader's view of each follower ([`progress`]), what a new leader does before it serves
//! ([`ascension`]) and the leader's memory of forwarded writes ([`ledger`]) are pure state
//! machines; [`wire`] turns the peer protocol's messages into their types, refusing
//! malformed ones. [`member_log`] (with [`promise`]) carries them out on a member's disk,
//! [`service`] answers peers with it, and [`replicator`] is the leader's side, sending a
//! follower the leader's store ([`snapshot`]) when it needs records the leader no longer
//! holds. [`forward`] carries a follower's writes to the leader. The node's roles are in
//! `crate::node` (`node/cluster.rs`, `node/forwarding.rs`).

pub mod ascension;
pub mod forward;
pub mod ledger;
pub mod log_terms;
pub mod member_log;
pub mod members;
pub mod progress;
pub mod promise;
pub mod quorum;
pub mod replica;
pub mod replicator;
pub mod service;
pub mod snapshot;
pub mod wire;

pub use log_terms::{Fit, LogTerms, Position};
pub use members::{Member, Members, Role};
pub use quorum::WaitMode;

/// Test helpers shared by the cluster modules' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::members::{Member, Members, Role};

    /// A cluster whose voters are `voters` (the first formed it) and whose learners are
    /// `learners`, each joined the legal way (learner first, then promoted).
    pub fn members(voters: &[&str], learners: &[&str]) -> Members {
        let mut all = Members::bootstrap(1, Member::new(voters[0], Role::Voter, "", ""));
        for name in &voters[1..] {
            all = all.with_member(Member::new(*name, Role::Learner, "", "")).unwrap().promoted(name).unwrap();
        }
        for name in learners {
            all = all.with_member(Member::new(*name, Role::Learner, "", "")).unwrap();
        }
        all
    }
}
