//! Node configuration: what an embedder sets, with the defaults a server uses.

use std::path::PathBuf;
use std::time::Duration;

/// The default space quota: 8 GiB, etcd's suggested largest rather than its 2 GiB default.
/// t4's store file holds the same data in more bytes than etcd's bolt file (the newest
/// value of each key is kept twice, and redb grows its file in large steps), so etcd's
/// default would cut t4 off at about half the data; 190 keys of 1.5 MB took it past 2 GiB.
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 8 << 30;

/// Limits and tuning for one node. Every bound here is enforced, not advisory.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory for the WAL and the store. Required.
    pub data_dir: PathBuf,
    /// Largest request accepted (etcd's default: 1.5 MiB).
    pub request_bytes_max: usize,
    /// Most operations in one txn, counting every branch (etcd's default: 128).
    pub txn_ops_max: usize,
    /// etcd's `--quota-backend-bytes` ([`QUOTA_BACKEND_BYTES_DEFAULT`]): once the store file would pass it, the NOSPACE alarm
    /// is raised and writes that take space are refused until it is disarmed. `None`: no
    /// quota (etcd: a negative value).
    pub quota_backend_bytes: Option<u64>,
    /// Most bytes of keys and values one Range answer (or a txn's range) may collect; past
    /// it the range is refused before more is read (`--max-response-bytes`).
    pub response_bytes_max: usize,
    /// Writes waiting for the writer; callers beyond it wait (backpressure).
    pub write_queue_max: usize,
    /// Most requests applied and synced together in one group commit.
    pub batch_requests_max: usize,
    /// Most WAL bytes in one group commit (a single larger request still goes alone).
    pub batch_bytes_max: usize,
    /// A WAL segment is closed and a new one started past this size.
    pub wal_segment_bytes_max: u64,
    /// The store is made durable (and older WAL segments dropped) at least this often.
    pub store_sync_interval: Duration,
    /// ...or after this many WAL records, whichever comes first.
    pub store_sync_records: u64,
    /// Revisions of events kept in memory for watchers; older ones are read from the store.
    pub watch_events_buffered_max: usize,
    /// ...and at most this many bytes of them.
    pub watch_bytes_buffered_max: usize,
    /// Keep the log in a bucket too (docs/design.md §5); `None`: local disk only.
    pub bucket: Option<crate::durability::BucketDurability>,
    /// Run as a member of a cluster on the bucket (docs/clustering.md); needs `bucket`.
    pub cluster: Option<ClusterConfig>,
}

/// A cluster member's settings (`t4 run --node-id … --peer-listen …`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `--node-id`: unique in the cluster, kept across restarts (the member id derives
    /// from it).
    pub node_id: String,
    /// The URL peers reach this node's peer port at (`--advertise-peer`).
    pub peer_url: String,
    /// The URL clients reach this node at (what followers name in "not leader" answers and
    /// `member list` shows).
    pub client_url: String,
    /// How this node calls its peers (tonic in production, the simulator's network there).
    pub peers: std::sync::Arc<dyn crate::env::PeerNet>,
    /// `--follower-wait-mode`.
    pub wait_mode: crate::cluster::WaitMode,
    /// `--leader-lease-ms` and `--max-clock-drift-ms`.
    pub timing: crate::election::LeaseTiming,
    /// `--read-consistency`: what a read that does not say `serializable` gets.
    pub reads: ReadConsistency,
}

/// What a cluster member does with a read that does not ask for `serializable`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// etcd's default: the read sees every write acknowledged before it was sent (the
    /// leader serves it within its lease; a follower refuses it with the leader's URL until
    /// read index is built).
    #[default]
    Linearizable,
    /// Every read is served from this member's own applied state, which may lag the leader
    /// (as if each asked for `serializable`): a follower never refuses a read.
    Serializable,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            request_bytes_max: 1536 * 1024,
            txn_ops_max: 128,
            response_bytes_max: crate::mvcc::RESPONSE_BYTES_MAX,
            quota_backend_bytes: Some(QUOTA_BACKEND_BYTES_DEFAULT),
            write_queue_max: 4096,
            batch_requests_max: 1024,
            batch_bytes_max: 4 * 1024 * 1024,
            wal_segment_bytes_max: 64 * 1024 * 1024,
            store_sync_interval: Duration::from_secs(2),
            store_sync_records: 50_000,
            watch_events_buffered_max: 65_536,
            watch_bytes_buffered_max: crate::watch::RING_BYTES_MAX,
            bucket: None,
            cluster: None,
        }
    }
}
