//! Maintenance and Cluster services.

use t4_proto::etcdserverpb::cluster_server::Cluster;
use t4_proto::etcdserverpb::maintenance_server::Maintenance;
use t4_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse,
    HashRequest, HashResponse, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};

use super::errors::{status, unimplemented};
use super::{credentials, Service};

#[tonic::async_trait]
impl Maintenance for Service {
    type SnapshotStream = futures::stream::Empty<Result<SnapshotResponse, Status>>;

    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let credentials = credentials(&request);
        self.core.alarm(&credentials, request.into_inner()).map(Response::new).map_err(status)
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.core.status().await.map(Response::new).map_err(status)
    }

    async fn defragment(&self, request: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        self.core.defragment(&credentials(&request)).await.map(Response::new).map_err(status)
    }

    async fn hash(&self, _request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(unimplemented("Hash (use HashKV)"))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        self.core.hash_kv(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn snapshot(&self, _request: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unimplemented("Snapshot"))
    }

    async fn move_leader(&self, _request: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(unimplemented("MoveLeader (single node)"))
    }

    async fn downgrade(&self, _request: Request<DowngradeRequest>) -> Result<Response<DowngradeResponse>, Status> {
        Err(unimplemented("Downgrade"))
    }
}

/// What MemberAdd answers.
pub const MEMBER_ADD_ANSWER: &str = "t4: members are not added ahead of time: start the new node with `t4 run --node-id ID --peer-listen ADDR` on the cluster's --s3-bucket and --s3-prefix; it joins as a learner and votes once it caught up";

#[tonic::async_trait]
impl Cluster for Service {
    /// A t4 member registers itself when it starts with the cluster flags (as a learner,
    /// promoted once caught up), so there is nothing to add ahead of it.
    async fn member_add(&self, _request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        Err(Status::failed_precondition(MEMBER_ADD_ANSWER))
    }

    async fn member_remove(&self, request: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        let credentials = credentials(&request);
        self.core.member_remove(&credentials, request.into_inner().id).await.map(Response::new).map_err(status)
    }

    async fn member_update(&self, _request: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(unimplemented("MemberUpdate (clustering)"))
    }

    async fn member_list(&self, _request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(self.core.member_list()))
    }

    async fn member_promote(&self, _request: Request<MemberPromoteRequest>) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(unimplemented("MemberPromote (clustering)"))
    }
}
