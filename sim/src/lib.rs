//! t4-sim: the deterministic simulator.
//!
//! A seeded madsim world runs one t4 node on a crashable [`SimDisk`](t4::env::SimDisk),
//! clients that issue etcd operations against it, and a nemesis that kills the node, cuts
//! power to its disk (losing or tearing unsynced writes, even mid-fsync) and fails fsyncs.
//! Every operation is recorded with its invoke and complete times; after the run the
//! checkers replay the committed log and judge the history (see `docs/simulation.md`).
//!
//! Only built with `RUSTFLAGS="--cfg madsim"` (use `CARGO_TARGET_DIR=target/sim`).

#![cfg(madsim)]
#![allow(clippy::disallowed_methods, reason = "the simulator owns time: under madsim every clock read is virtual")]

pub mod checker;
pub mod history;
pub mod scenario;
pub mod trace;

pub use scenario::{run_seed, Scenario, SeedReport};
