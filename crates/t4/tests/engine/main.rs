//! Integration tests of the engine through its public API, built as one binary: the node
//! (`node_api`), recovery after crashes and disk faults (`node_recovery`), watches
//! (`node_watch`), the fuzz corpora (`fuzz_corpus`).

mod cluster;
mod fuzz_corpus;
mod node_api;
mod node_recovery;
mod node_watch;
mod source_rules;
mod support;
