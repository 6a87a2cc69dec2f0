//! Integration tests of the root package, built as one binary.

mod node_api;
mod node_recovery;
mod node_watch;
mod support;
