//! t4's error type for requests and for the node itself.
//!
//! Request errors carry etcd's exact message in `Display` (the gRPC layer maps each
//! [`ErrorKind`] to etcd's status code in one table). Errors that stop the node
//! (`StorageFailure`, `Corrupt`) are a separate kind from request errors: after one, the
//! node refuses every request until it is reopened and has recovered from its log.

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or breaks a limit: fix it, do not retry.
    InvalidArgument,
    /// The requested revision was compacted away.
    Compacted,
    /// The requested revision does not exist yet.
    FutureRevision,
    /// A txn names too many operations.
    TooManyOps,
    /// A txn writes one key twice.
    DuplicateKey,
    /// The key or lease the request depends on does not exist.
    NotFound,
    /// What the request would create exists already (a lease id).
    AlreadyExists,
    /// The node is closed (or closing).
    Closed,
    /// This node follows another: send writes (and linearizable reads) to the leader.
    NotLeader,
    /// No node leads at the moment (an election is under way): retry shortly.
    NoLeader,
    /// The leader lost its leadership while the write was on its way: it may or may not
    /// have taken effect (a later leader decides). Retry, reading first if that matters.
    LeaderChanged,
    /// The node's storage failed; it stopped acknowledging writes and must be reopened.
    StorageFailure,
    /// A newer term took the bucket: this node stopped acknowledging writes and serving, and
    /// must be reopened (it then recovers under a term of its own).
    Fenced,
    /// Stored data failed validation; the node will not serve it.
    Corrupt,
    /// No valid credentials: authenticate (again).
    Unauthenticated,
    /// The caller's user may not do this.
    PermissionDenied,
    /// The request does not fit the auth state (auth off, no root user, role not granted).
    FailedPrecondition,
    /// Too many attempts: wait before retrying.
    RateLimited,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted { compact_revision: i64 },
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// The store passed `--quota-backend-bytes` (etcd's NOSPACE alarm is raised).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A Range (or a txn's range) whose answer would pass `--max-response-bytes`.
    #[error("t4: the range's answer is over --max-response-bytes ({bytes_max} bytes); page through it with a limit")]
    ResponseTooLarge { bytes_max: u64 },
    /// t4's own bound on live leases (etcd has none): revoke some, or let them expire.
    #[error("t4: too many leases (at most {max})")]
    TooManyLeases { max: u64 },
    #[error("t4: invalid argument: {0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("t4: node is closed: {0}")]
    Closed(ClosedReason),
    /// This node follows another; `leader` names the leader's client address when known
    /// (clustering, docs/design.md §6).
    #[error("etcdserver: not leader")]
    NotLeader { leader: Option<String> },
    /// No node holds leadership now (an election is under way).
    #[error("etcdserver: no leader")]
    NoLeader,
    /// This node stopped leading between taking a write and acknowledging it: the write may
    /// be committed by the next leader or lost (etcd's `ErrLeaderChanged`).
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// No member has the id a membership change named.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// A membership change that would leave fewer running voters than a majority of the
    /// new membership (or no voter at all): refused, as etcd's strict reconfiguration check does.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    MemberNotEnoughStarted,
    #[error("t4: storage failure, node stopped acknowledging writes: {0}")]
    StorageFailure(String),
    /// A newer term sealed this node's log or holds the bucket's lock (docs/design.md §5).
    #[error("t4: fenced: {0}")]
    Fenced(String),
    #[error("t4: data corrupt: {0}")]
    Corrupt(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::EmptyKey
            | Error::RequestTooLarge
            | Error::ValueProvided
            | Error::LeaseProvided
            | Error::LeaseTtlTooLarge
            | Error::InvalidSortOption
            | Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::LeaseExists => ErrorKind::AlreadyExists,
            Error::TooManyLeases { .. } | Error::ResponseTooLarge { .. } | Error::NoSpace => ErrorKind::RateLimited,
            Error::TooManyOps => ErrorKind::TooManyOps,
            Error::DuplicateKey => ErrorKind::DuplicateKey,
            Error::Compacted { .. } => ErrorKind::Compacted,
            Error::FutureRevision => ErrorKind::FutureRevision,
            Error::KeyNotFound | Error::LeaseNotFound | Error::MemberNotFound => ErrorKind::NotFound,
            Error::MemberNotEnoughStarted => ErrorKind::FailedPrecondition,
            Error::Closed(_) => ErrorKind::Closed,
            Error::NotLeader { .. } => ErrorKind::NotLeader,
            Error::NoLeader => ErrorKind::NoLeader,
            Error::LeaderChanged => ErrorKind::LeaderChanged,
            Error::StorageFailure(_) => ErrorKind::StorageFailure,
            Error::Fenced(_) => ErrorKind::Fenced,
            Error::Corrupt(_) => ErrorKind::Corrupt,
            Error::Auth(error) => error.kind(),
        }
    }

    pub(crate) fn storage(context: &str, error: impl std::fmt::Display) -> Self {
        Error::StorageFailure(format!("{context}: {error}"))
    }
}

/// Why a node answers [`Error::Closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClosedReason {
    /// `close` was called (on this handle or a clone of it).
    Closed,
    /// The task that would have answered had ended: the write pipeline stopped.
    Stopped,
}

impl std::fmt::Display for ClosedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClosedReason::Closed => "close was called",
            ClosedReason::Stopped => "its write pipeline has stopped",
        })
    }
}

/// Authentication and RBAC errors, in etcd's words (etcd's `rpctypes`; clients match the
/// message text, so it is exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("etcdserver: authentication is not enabled")]
    NotEnabled,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    Failed,
    #[error("etcdserver: invalid auth token")]
    InvalidToken,
    #[error("etcdserver: invalid auth management")]
    InvalidManagement,
    #[error("etcdserver: revision of auth store is old")]
    OldRevision,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name already exists")]
    UserExists,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: role name already exists")]
    RoleExists,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
}

impl AuthError {
    pub fn kind(self) -> ErrorKind {
        match self {
            AuthError::Failed
            | AuthError::InvalidManagement
            | AuthError::OldRevision
            | AuthError::PermissionNotGiven
            | AuthError::UserEmpty
            | AuthError::RoleEmpty => ErrorKind::InvalidArgument,
            AuthError::InvalidToken => ErrorKind::Unauthenticated,
            AuthError::PermissionDenied => ErrorKind::PermissionDenied,
            AuthError::NotEnabled
            | AuthError::RootUserNotExist
            | AuthError::RootRoleNotExist
            | AuthError::UserExists
            | AuthError::UserNotFound
            | AuthError::RoleExists
            | AuthError::RoleNotFound
            | AuthError::RoleNotGranted
            | AuthError::PermissionNotGranted => ErrorKind::FailedPrecondition,
            AuthError::TooManyRequests => ErrorKind::RateLimited,
        }
    }
}

macro_rules! from_redb {
    ($($source:ty),*) => {$(
        impl From<$source> for Error {
            fn from(error: $source) -> Self {
                // Damage redb finds (bad checksums, roots it cannot repair, a magic number
                // that does not match: redb raises InvalidData only for its own format
                // checks, disks never do) is corruption, not a failing disk (robustness #25).
                match redb::Error::from(error) {
                    redb::Error::Corrupted(what) => Error::Corrupt(format!("store: {what}")),
                    redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => Error::Corrupt(format!("store: {io}")),
                    other => Error::storage("store", other),
                }
            }
        }
    )*};
}

from_redb!(redb::Error, redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);
