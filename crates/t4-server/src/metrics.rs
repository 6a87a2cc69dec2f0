//! Metrics: request counts and latency histograms, rendered as Prometheus text, and the
//! small HTTP endpoint that serves them with `/healthz` and `/readyz`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use t4::env::Clock;
pub use t4_net::Histogram;

/// The RPC methods that are counted.
pub const METHODS: [&str; 5] = ["range", "put", "delete_range", "txn", "compact"];

/// Server-side request metrics.
pub struct Metrics {
    clock: Arc<dyn Clock>,
    methods: BTreeMap<&'static str, Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Records a request's latency when dropped.
pub struct Timer<'a> {
    histogram: Option<&'a Histogram>,
    clock: &'a dyn Clock,
    started: Duration,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        if let Some(histogram) = self.histogram {
            histogram.observe(self.clock.monotonic().saturating_sub(self.started));
        }
    }
}

impl Metrics {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock, methods: METHODS.iter().map(|method| (*method, Histogram::default())).collect() }
    }

    pub fn time(&self, method: &'static str) -> Timer<'_> {
        Timer { histogram: self.methods.get(method), clock: self.clock.as_ref(), started: self.clock.monotonic() }
    }

    /// Prometheus text for the request metrics and the node's gauges.
    pub fn render(&self, node: &NodeGauges) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        out.push_str("# HELP t4_request_duration_seconds Latency of etcd requests by method.\n");
        out.push_str("# TYPE t4_request_duration_seconds histogram\n");
        for (method, histogram) in &self.methods {
            histogram.render("t4_request_duration_seconds", &format!("method=\"{method}\""), &mut out);
        }
        let gauges = [
            ("t4_revision", "gauge", "Current (visible) revision.", node.revision as f64),
            ("t4_compact_revision", "gauge", "Revision history is compacted below.", node.compact_revision as f64),
            ("t4_db_size_bytes", "gauge", "Bytes the store file occupies.", node.db_size_bytes as f64),
            ("t4_watchers", "gauge", "Open watchers.", node.watchers as f64),
            ("t4_leases", "gauge", "Leases that exist.", node.leases as f64),
            ("t4_leases_expired_total", "counter", "Leases revoked because their time ran out.", node.stats.leases_expired as f64),
            ("t4_wal_batches_total", "counter", "Group-commit batches applied.", node.stats.batches as f64),
            ("t4_wal_records_total", "counter", "WAL records written.", node.stats.records as f64),
            ("t4_wal_fsyncs_total", "counter", "WAL fdatasync calls.", node.stats.wal_syncs as f64),
            (
                "t4_wal_fsync_seconds_total",
                "counter",
                "Time spent writing and syncing WAL batches.",
                node.stats.wal_sync_micros as f64 / 1e6,
            ),
            ("t4_store_syncs_total", "counter", "Durable store commits.", node.stats.store_syncs as f64),
            ("t4_bucket_term", "gauge", "Term this node writes its bucket log under (0: local disk only).", node.term as f64),
            ("t4_wal_uploads_total", "counter", "WAL objects created in the bucket.", node.stats.wal_uploads as f64),
            ("t4_wal_upload_bytes_total", "counter", "Bytes of WAL objects created in the bucket.", node.stats.wal_upload_bytes as f64),
            (
                "t4_wal_upload_seconds_total",
                "counter",
                "Time spent creating WAL objects, retries of a failing bucket included.",
                node.stats.wal_upload_micros as f64 / 1e6,
            ),
            (
                "t4_wal_upload_failures_total",
                "counter",
                "WAL uploads that failed after the object store's own retries (writes wait meanwhile).",
                node.stats.wal_upload_failures as f64,
            ),
            ("t4_checkpoints_total", "counter", "Checkpoints written to the bucket.", node.stats.checkpoints as f64),
            (
                "t4_checkpoint_failures_total",
                "counter",
                "Checkpoints that failed (tried again later).",
                node.stats.checkpoint_failures as f64,
            ),
            ("t4_checkpoint_bytes_total", "counter", "Payload bytes of the checkpoints written.", node.stats.checkpoint_bytes as f64),
            (
                "t4_checkpoint_uploaded_bytes_total",
                "counter",
                "Bytes checkpoints actually uploaded (new chunks and manifests; chunks already in the bucket are not sent).",
                node.stats.checkpoint_bytes_uploaded as f64,
            ),
            ("t4_checkpoint_seconds_total", "counter", "Time spent writing checkpoints.", node.stats.checkpoint_micros as f64 / 1e6),
            (
                "t4_checkpoint_revision",
                "gauge",
                "Revision of the newest checkpoint this node wrote.",
                node.stats.checkpoint_revision as f64,
            ),
            ("t4_gc_deleted_objects_total", "counter", "Objects GC deleted from the bucket.", node.stats.gc_objects_deleted as f64),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        if let Some(totals) = &node.object_store {
            let families: [MetricFamily; 3] = [
                ("t4_object_store_requests_total", "counter", "Requests to the bucket (each retry counts), by operation.", |t| {
                    t.requests as f64
                }),
                (
                    "t4_object_store_errors_total",
                    "counter",
                    "Requests to the bucket that failed (404 on a read and 412 are answers, not errors).",
                    |t| t.errors as f64,
                ),
                ("t4_object_store_seconds_total", "counter", "Time spent in requests to the bucket, by operation.", |t| {
                    t.micros as f64 / 1e6
                }),
            ];
            for (name, kind, help, value) in families {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (operation, totals) in t4::object::metered::OPERATIONS.iter().zip(totals) {
                    let _ = writeln!(out, "{name}{{op=\"{operation}\"}} {}", value(totals));
                }
            }
        }
        if let Some(cluster) = &node.cluster {
            let gauges = [
                ("t4_cluster_role", "gauge", "This member's role: 0 follower, 1 taking up leadership, 2 leader.", cluster.role as f64),
                ("t4_cluster_term", "gauge", "The term this member last knew of.", cluster.term as f64),
                (
                    "t4_cluster_leader",
                    "gauge",
                    "1 while this member leads in its lease and may acknowledge (as /healthz/leader).",
                    f64::from(u8::from(cluster.leads_now)),
                ),
                ("t4_cluster_commit_index", "gauge", "The highest log index known committed here.", cluster.commit_index as f64),
                ("t4_cluster_last_index", "gauge", "The last record in this member's log.", cluster.last_index as f64),
                ("t4_cluster_applied_index", "gauge", "The last log record this member's store applied.", cluster.applied_index as f64),
                ("t4_cluster_voters", "gauge", "Voters in the members record this member last read.", cluster.voters as f64),
                ("t4_cluster_learners", "gauge", "Learners in the members record this member last read.", cluster.learners as f64),
                ("t4_cluster_forwards_total", "counter", "Writes this member forwarded to a leader.", cluster.forwards as f64),
                (
                    "t4_cluster_snapshots_sent_total",
                    "counter",
                    "Stores this member sent as a leader to followers behind what its log holds.",
                    cluster.snapshots_sent as f64,
                ),
                (
                    "t4_cluster_snapshots_installed_total",
                    "counter",
                    "Leaders' stores this member installed as a follower.",
                    cluster.snapshots_installed as f64,
                ),
            ];
            for (name, kind, help, value) in gauges {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
            }
            if !cluster.matched.is_empty() {
                let name = "t4_cluster_member_matched_index";
                let _ = writeln!(
                    out,
                    "# HELP {name} While this member leads: the last index each member was heard to hold.\n# TYPE {name} gauge"
                );
                for (member, index) in &cluster.matched {
                    let _ = writeln!(out, "{name}{{member=\"{member}\"}} {index}");
                }
            }
        }
        let _ = writeln!(out, "# HELP t4_healthy 1 while the node serves.\n# TYPE t4_healthy gauge\nt4_healthy {}", u8::from(node.healthy));
        out
    }
}

/// A metric labelled by object-store operation: name, type, help, and its value.
type MetricFamily = (&'static str, &'static str, &'static str, fn(&t4::object::metered::OperationTotals) -> f64);

/// A snapshot of the node for rendering.
#[derive(Debug, Clone, Default)]
pub struct NodeGauges {
    pub revision: i64,
    pub compact_revision: i64,
    pub db_size_bytes: u64,
    pub watchers: usize,
    pub leases: usize,
    pub healthy: bool,
    /// The bucket term (0: local disk only).
    pub term: u64,
    pub stats: t4::node::NodeStats,
    /// Requests to the bucket, per operation (None: local disk only).
    pub object_store: Option<[t4::object::metered::OperationTotals; t4::object::metered::OPERATIONS.len()]>,
    /// A cluster member's numbers (None: a single node).
    pub cluster: Option<t4::node::ClusterGauges>,
}

pub mod http {
    //! A minimal HTTP/1.1 endpoint: `GET /metrics`, `/healthz`, `/healthz/leader`, `/readyz`. One request per
    //! connection, bounded request size, and nothing else: it is for scrapers and probes.

    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::{Metrics, NodeGauges};
    use t4::node::Node;

    const REQUEST_BYTES_MAX: usize = 8192;

    /// Connections served at once; further ones wait to be accepted.
    const CONNECTIONS_MAX: usize = 64;
    /// A client gets this long to send its request and take the answer.
    const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

    /// Readiness: false until recovery has finished (the node exists) and while it is failed.
    pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, node: Arc<tokio::sync::OnceCell<Node>>) {
        let places = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
        loop {
            let (mut socket, _, place) = t4_net::listen::accept_placed(&listener, &places, "metrics").await;
            let (metrics, node) = (metrics.clone(), node.clone());
            tokio::spawn(async move {
                let _place = place;
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer_one(&mut socket, &metrics, &node)).await;
            });
        }
    }

    async fn answer_one(socket: &mut tokio::net::TcpStream, metrics: &Metrics, node: &tokio::sync::OnceCell<Node>) {
        let mut buffer = vec![0u8; REQUEST_BYTES_MAX];
        let mut read = 0;
        while read < buffer.len() {
            match socket.read(&mut buffer[read..]).await {
                Ok(0) | Err(_) => return,
                Ok(count) => read += count,
            }
            if buffer[..read].windows(4).any(|window| window == b"\r\n\r\n") {
                break;
            }
        }
        let request = String::from_utf8_lossy(&buffer[..read]);
        let path = request.split_whitespace().nth(1).unwrap_or("/");
        let (code, body) = answer(path, metrics, node.get()).await;
        let reply = format!(
            "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = socket.write_all(reply.as_bytes()).await;
        let _ = socket.shutdown().await;
    }

    async fn answer(path: &str, metrics: &Metrics, node: Option<&Node>) -> (&'static str, String) {
        match (path, node) {
            ("/healthz", Some(node)) if node.health().is_err() => ("503 Service Unavailable", "storage failed\n".into()),
            ("/healthz", _) => ("200 OK", "ok\n".into()),
            ("/readyz", Some(node)) if node.health().is_ok() => ("200 OK", "ready\n".into()),
            ("/readyz", _) => ("503 Service Unavailable", "not ready\n".into()),
            // 200 only where a write is acknowledged and a linearizable read served by this
            // node itself: a single node that serves, a cluster leader in its lease.
            ("/healthz/leader", Some(node)) if node.leads_now() => ("200 OK", "leader\n".into()),
            ("/healthz/leader", Some(node)) => match node.cluster_role() {
                Some(t4::node::ClusterRole::Follower { leader: Some(leader) }) if !leader.client_url.is_empty() => {
                    ("503 Service Unavailable", format!("not the leader; the leader is {}\n", leader.client_url))
                }
                _ => ("503 Service Unavailable", "not the leader\n".into()),
            },
            ("/healthz/leader", None) => ("503 Service Unavailable", "not ready\n".into()),
            ("/metrics", node) => ("200 OK", metrics.render(&gauges(node).await)),
            _ => ("404 Not Found", "not found\n".into()),
        }
    }

    async fn gauges(node: Option<&Node>) -> NodeGauges {
        let Some(node) = node else { return NodeGauges::default() };
        NodeGauges {
            revision: node.current_revision(),
            compact_revision: node.compact_revision(),
            db_size_bytes: node.store_size_bytes().await.unwrap_or(0),
            watchers: node.watcher_count(),
            leases: node.lease_count(),
            healthy: node.health().is_ok(),
            term: node.term().unwrap_or(0),
            stats: node.stats(),
            object_store: node.object_store_totals(),
            cluster: node.cluster_gauges(),
        }
    }
}
