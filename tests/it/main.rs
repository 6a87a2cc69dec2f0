//! Integration tests of the root package, built as one binary.

mod fuzz_corpus;
mod node_api;
mod node_recovery;
mod node_watch;
mod differential;
mod etcd_process;
mod grpc_api;
mod server;
mod support;
