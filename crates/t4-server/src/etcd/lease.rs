//! The Lease service: Grant, Revoke, KeepAlive (a bidirectional stream), TimeToLive, Leases.

use futures::StreamExt;
use t4_proto::etcdserverpb::lease_server::Lease;
use t4_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::errors::status;
use super::{credentials, Service};

/// Keepalive answers queued for one stream before it stops reading requests.
const KEEPALIVE_RESPONSES_QUEUED_MAX: usize = 64;

#[tonic::async_trait]
impl Lease for Service {
    type LeaseKeepAliveStream = ReceiverStream<Result<LeaseKeepAliveResponse, Status>>;

    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let _timer = self.metrics.time("lease_grant");
        self.core.lease_grant(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn lease_revoke(&self, request: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        let _timer = self.metrics.time("lease_revoke");
        self.core.lease_revoke(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn lease_time_to_live(&self, request: Request<LeaseTimeToLiveRequest>) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let _timer = self.metrics.time("lease_time_to_live");
        self.core.lease_time_to_live(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn lease_leases(&self, request: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        let _timer = self.metrics.time("lease_leases");
        self.core.lease_leases(&credentials(&request)).map(Response::new).map_err(status)
    }

    /// Answers each keepalive in order, on the stream it came on; a lease that does not
    /// exist gets TTL 0. The stream ends when the client closes it or the node stops.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        // Checked on every keepalive against the auth state of the moment.
        let credentials = credentials(&request);
        let mut requests = request.into_inner();
        let (responses, outbound) = mpsc::channel(KEEPALIVE_RESPONSES_QUEUED_MAX);
        let (core, metrics) = (self.core.clone(), self.metrics.clone());
        tokio::spawn(async move {
            while let Some(next) = requests.next().await {
                let answer = match next {
                    Ok(keep_alive) => {
                        let _timer = metrics.time("lease_keep_alive");
                        core.lease_keep_alive(&credentials, keep_alive).await.map_err(status)
                    }
                    Err(_) => return,
                };
                let stop = answer.is_err();
                if responses.send(answer).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(outbound)))
    }
}
