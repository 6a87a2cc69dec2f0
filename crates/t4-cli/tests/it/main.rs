//! Integration tests of the `t4` binary and the etcd server, built as one binary: the etcd
//! API against etcd-client, etcdctl and a real etcd side by side, processes on a bucket
//! (s4), crashes, TLS, hostile clients.

mod auth;
mod bucket_process;
mod cluster_process;
mod crash_binary;
mod credentials_chain;
mod differential;
mod etcd_process;
mod etcdctl;
mod grpc_api;
mod hardening;
mod hostile_h2;
mod leases;
mod node_bucket;
mod peer_tls;
mod server;
