//! The request target: arbitrary protobuf requests, as a client could send them, through
//! `EtcdCore` (decoding, validation, permission checks and execution) on a fresh node.
//! Whatever a request asks, the node answers it or refuses it; it never panics, never stops
//! serving, and revisions in answers never go back.

use std::time::Duration;

use prost::Message;
use t4_proto::etcdserverpb::*;

use super::{runtime, Input, Scratch};
use crate::api::{EtcdCore, MemberInfo};
use crate::auth::gate::Credentials;
use crate::Node;

pub fn run(data: &[u8]) {
    runtime().block_on(drive(data));
}

/// The revision in an answer's header, if it has one.
trait Revision {
    fn revision(&self) -> Option<i64>;
}

macro_rules! revision_of {
    ($($response:ty),*) => {
        $(impl Revision for $response {
            fn revision(&self) -> Option<i64> {
                self.header.as_ref().map(|header| header.revision)
            }
        })*
    };
}

revision_of!(
    RangeResponse,
    PutResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse,
    LeaseGrantResponse,
    LeaseRevokeResponse,
    LeaseKeepAliveResponse,
    LeaseTimeToLiveResponse,
    LeaseLeasesResponse,
    StatusResponse,
    HashKvResponse,
    AlarmResponse,
    DefragmentResponse,
    AuthEnableResponse,
    AuthDisableResponse,
    AuthUserAddResponse,
    AuthUserGetResponse,
    AuthUserListResponse,
    AuthUserDeleteResponse,
    AuthUserGrantRoleResponse,
    AuthUserRevokeRoleResponse,
    AuthRoleAddResponse,
    AuthRoleGetResponse,
    AuthRoleListResponse,
    AuthRoleDeleteResponse,
    AuthRoleGrantPermissionResponse,
    AuthRoleRevokePermissionResponse
);

/// Revisions seen in answers, which must never go back.
struct Seen {
    newest: i64,
}

impl Seen {
    fn answer<T: Revision>(&mut self, what: &str, result: crate::Result<T>) {
        if let Some(revision) = result.ok().and_then(|response| response.revision()) {
            assert!(revision >= self.newest, "{what}: an answer at revision {revision} after one at {}", self.newest);
            self.newest = revision;
        }
    }
}

async fn drive(data: &[u8]) {
    let scratch = Scratch::new("etcd-core");
    let node = Node::open(super::node_config(scratch.path())).await.expect("the node opens");
    let member = MemberInfo { name: "fuzz".into(), client_urls: vec!["http://127.0.0.1:3379".into()], peer_urls: Vec::new() };
    let core = EtcdCore::new(node.clone(), member, Duration::from_secs(300));
    let credentials = Credentials::default();
    let mut seen = Seen { newest: 0 };
    let mut input = Input::new(data);
    let mut steps = 0;
    while !input.is_empty() && steps < 32 {
        steps += 1;
        let selector = input.byte();
        let len = u16::from_le_bytes([input.byte(), input.byte()]) as usize;
        let body = input.take(len);
        macro_rules! call {
            ($request:ty, |$decoded:ident| $call:expr) => {
                if let Ok($decoded) = <$request>::decode(body) {
                    seen.answer(stringify!($request), $call);
                }
            };
        }
        let c = &credentials;
        match selector % 28 {
            0 => call!(RangeRequest, |request| core.range(c, request).await),
            1 => call!(PutRequest, |request| core.put(c, request).await),
            2 => call!(DeleteRangeRequest, |request| core.delete_range(c, request).await),
            3 => call!(TxnRequest, |request| core.txn(c, request).await),
            4 => call!(CompactionRequest, |request| core.compact(c, request).await),
            5 => call!(LeaseGrantRequest, |request| core.lease_grant(c, request).await),
            6 => call!(LeaseRevokeRequest, |request| core.lease_revoke(c, request).await),
            7 => call!(LeaseKeepAliveRequest, |request| core.lease_keep_alive(c, request).await),
            8 => call!(LeaseTimeToLiveRequest, |request| core.lease_time_to_live(c, request).await),
            9 => seen.answer("leases", core.lease_leases(c)),
            10 => seen.answer("status", core.status().await),
            11 => call!(HashKvRequest, |request| core.hash_kv(c, request).await),
            12 => call!(AlarmRequest, |request| core.alarm(c, request)),
            13 => seen.answer("defragment", core.defragment(c).await),
            14 => seen.answer("auth enable", core.auth_enable(c).await),
            15 => seen.answer("auth disable", core.auth_disable(c).await),
            // No password hashing: a PBKDF2 per input would starve the fuzzer.
            16 => call!(AuthUserAddRequest, |request| core
                .user_add(c, AuthUserAddRequest { password: String::new(), options: Some(Default::default()), ..request })
                .await),
            17 => call!(AuthUserGetRequest, |request| core.user_get(c, request)),
            18 => seen.answer("user list", core.user_list(c)),
            19 => call!(AuthUserDeleteRequest, |request| core.user_delete(c, request).await),
            20 => call!(AuthUserGrantRoleRequest, |request| core.user_grant_role(c, request).await),
            21 => call!(AuthUserRevokeRoleRequest, |request| core.user_revoke_role(c, request).await),
            22 => call!(AuthRoleAddRequest, |request| core.role_add(c, request).await),
            23 => call!(AuthRoleGetRequest, |request| core.role_get(c, request)),
            24 => call!(AuthRoleGrantPermissionRequest, |request| core.role_grant_permission(c, request).await),
            25 => call!(AuthRoleRevokePermissionRequest, |request| core.role_revoke_permission(c, request).await),
            26 => call!(AuthRoleDeleteRequest, |request| core.role_delete(c, request).await),
            _ => seen.answer("role list", core.role_list(c)),
        }
    }
    // Still serving: a write and a read of it (past auth, which the requests may have enabled).
    node.health().expect("the node still serves after the requests");
    let revision = node.put("fuzz/sentinel", "still serving").await.expect("a write after the requests");
    assert!(revision > seen.newest, "the sentinel's revision {revision} after answers at {}", seen.newest);
    let read = node.get("fuzz/sentinel").await.expect("a read after the requests").expect("the sentinel");
    assert_eq!(read.value, b"still serving");
    node.close().await.expect("the node closes");
}
