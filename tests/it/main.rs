//! Integration tests of the root package, built as one binary.

mod auth;
mod bucket_process;
mod crash_binary;
mod credentials_chain;
mod differential;
mod etcd_process;
mod etcdctl;
mod fuzz_corpus;
mod grpc_api;
mod hardening;
mod hostile_h2;
mod leases;
mod node_api;
mod node_bucket;
mod node_recovery;
mod node_watch;
mod peer_tls;
mod pki;
mod s4_clients;
mod s4_sdk;
mod server;
mod support;
