//! t4-proto: the etcd v3 API (etcdserverpb, mvccpb, authpb) and t4's peer protocol as
//! prost messages. With the `grpc` feature it also carries tonic client and server stubs.
//!
//! The .proto files under `proto/` are written for t4; their package, service, message
//! and field names and numbers follow etcd's documented API so that etcd clients work
//! unchanged.

#![allow(clippy::all, missing_docs)]

pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

pub mod peer {
    include!(concat!(env!("OUT_DIR"), "/t4.peer.rs"));
}
