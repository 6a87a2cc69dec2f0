//! The KV service: Range, Put, DeleteRange, Txn, Compact.

use t4_proto::etcdserverpb::kv_server::Kv;
use t4_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use super::errors::status;
use super::{credentials, Service};

#[tonic::async_trait]
impl Kv for Service {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let _timer = self.metrics.time("range");
        self.core.range(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let _timer = self.metrics.time("put");
        self.core.put(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn delete_range(&self, request: Request<DeleteRangeRequest>) -> Result<Response<DeleteRangeResponse>, Status> {
        let _timer = self.metrics.time("delete_range");
        self.core.delete_range(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let _timer = self.metrics.time("txn");
        self.core.txn(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        let _timer = self.metrics.time("compact");
        self.core.compact(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }
}
