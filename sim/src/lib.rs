//! t4-sim: the deterministic simulator.
//!
//! A seeded madsim world runs one t4 process (or two on one bucket prefix), each on a
//! crashable [`SimDisk`](t4::env::SimDisk) and, in the bucket scenarios, a shared
//! [`SimS3`](t4::env::SimS3); clients that issue etcd operations against it (through the
//! embedded API, or as prost-encoded requests over [`net`]), watchers and lease clients; and
//! a nemesis per scenario (kills, power loss, fsync and disk-full errors, flipped bits, a
//! bucket that throttles, loses or delays requests, cut links, clock drift and steps).
//! Every operation is recorded with its invoke and complete times; after the run the
//! checkers replay the committed log, search each key's history for a linearization, and
//! check every watcher (see `docs/simulation.md`).
//!
//! The leadership scenarios run a cluster world instead ([`cluster`]): 3 or 5 members'
//! elections on one bucket, under kills, pauses, cuts and clock drift. The replicated
//! scenarios run the usual world with its processes as one cluster (t4 nodes talking over
//! [`peer`], madsim's network).
//!
//! Only built with `RUSTFLAGS="--cfg madsim"` (use `CARGO_TARGET_DIR=target/sim`).

#![cfg(madsim)]
#![allow(clippy::disallowed_methods, reason = "the simulator owns time: under madsim every clock read is virtual")]

pub mod cluster;
pub mod fault;
pub mod net;
pub mod peer;
pub mod scenario;
pub mod trace;
pub mod workload;
pub mod world;

// The history and its checkers live in t4-check, shared with the harness.
pub use fault::Fault;
pub use scenario::{check_seed, run_seed, run_seed_with, Scenario, SeedReport, Spec};
pub use t4_check::{checker, history, wgl};
