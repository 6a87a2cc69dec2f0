//! t4-jepsen: the Jepsen-style harness on real processes (kill -9, SIGSTOP, TCP proxy
//! partitions, S3 faults) that reuses the simulator's checkers.
//!
//! Not built yet: it arrives with clustering (docs/design.md §7). This crate exists so the
//! workspace has its final shape; it contains no code that pretends to test anything.
