//! The etcd v3 gRPC server: a thin tonic adapter over [`EtcdCore`](t4::api::EtcdCore).
//!
//! Each service method decodes nothing itself (tonic and prost do), calls the core, and
//! maps errors through [`errors`], the one table of etcd's codes and messages.

mod auth;
pub mod errors;
mod kv;
mod lease;
mod maintenance;
mod watch;

use std::sync::Arc;

use t4_proto::etcdserverpb::auth_server::AuthServer;
use t4_proto::etcdserverpb::cluster_server::ClusterServer;
use t4_proto::etcdserverpb::kv_server::KvServer;
use t4_proto::etcdserverpb::lease_server::LeaseServer;
use t4_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use t4_proto::etcdserverpb::watch_server::WatchServer;

use crate::metrics::Metrics;
use crate::TlsConnectInfo;
use t4::api::EtcdCore;
use t4::auth::gate::Credentials;

pub use watch::WatchConfig;

/// What the request carries of its sender: the token from Authenticate (in `token`
/// metadata, as clientv3 sends it, or in `authorization`, as the gRPC gateway and other
/// clients do; etcd reads both), and the CN of a client certificate verified under mutual
/// TLS.
fn credentials<T>(request: &tonic::Request<T>) -> Credentials {
    let metadata = request.metadata();
    let token =
        ["token", "authorization"].iter().find_map(|name| metadata.get(*name)).and_then(|value| value.to_str().ok()).map(str::to_string);
    let common_name = request.extensions().get::<TlsConnectInfo>().and_then(|info| info.common_name.clone());
    Credentials { token, common_name }
}

/// gRPC bytes allowed on top of the largest request (etcd's margin).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Every etcd service, sharing one core.
#[derive(Clone)]
pub struct Service {
    core: EtcdCore,
    metrics: Arc<Metrics>,
    watch: WatchConfig,
}

impl Service {
    pub fn new(core: EtcdCore, metrics: Arc<Metrics>, watch: WatchConfig) -> Self {
        Self { core, metrics, watch }
    }

    /// Adds every etcd service (and gRPC health) to a tonic router.
    pub fn add_to(self, builder: &mut tonic::transport::Server, request_bytes_max: usize) -> tonic::transport::server::Router {
        let limit = request_bytes_max + GRPC_OVERHEAD_BYTES;
        let (health_reporter, health) = tonic_health::server::health_reporter();
        // "" is the whole server: it serves from the moment the router exists, until the
        // node stops serving (a storage failure, a fence, a writer that died).
        let stopped = self.core.node().stopped_serving();
        tokio::spawn(async move {
            stopped.await;
            tracing::error!("t4: the node stopped serving; gRPC health now reports NOT_SERVING");
            health_reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        });
        builder
            .add_service(health)
            .add_service(KvServer::new(self.clone()).max_decoding_message_size(limit))
            .add_service(WatchServer::new(self.clone()).max_decoding_message_size(limit))
            .add_service(LeaseServer::new(self.clone()).max_decoding_message_size(limit))
            .add_service(ClusterServer::new(self.clone()).max_decoding_message_size(limit))
            .add_service(MaintenanceServer::new(self.clone()).max_decoding_message_size(limit))
            .add_service(AuthServer::new(self).max_decoding_message_size(limit))
    }
}
