//! The one table of errors an etcd client can see: every [`Error`] to a gRPC code and
//! etcd's exact message (etcd's `api/v3rpc/rpctypes`). Pinned by an insta snapshot.

use tonic::{Code, Status};

use t4::error::{Error, ErrorKind};

/// (gRPC code, message) for an error, as etcd sends it.
pub fn code_and_message(error: &Error) -> (Code, String) {
    let code = match error {
        Error::EmptyKey
        | Error::RequestTooLarge
        | Error::TooManyOps
        | Error::DuplicateKey
        | Error::KeyNotFound
        | Error::ValueProvided
        | Error::LeaseProvided
        | Error::InvalidSortOption
        | Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::Compacted { .. } | Error::FutureRevision | Error::LeaseTtlTooLarge => Code::OutOfRange,
        Error::LeaseNotFound | Error::MemberNotFound => Code::NotFound,
        Error::LeaseExists | Error::MemberNotEnoughStarted => Code::FailedPrecondition,
        Error::TooManyLeases { .. } | Error::ResponseTooLarge { .. } | Error::NoSpace => Code::ResourceExhausted,
        Error::Closed(_)
        | Error::NotLeader { .. }
        | Error::NoLeader
        | Error::LeaderChanged
        | Error::StorageFailure(_)
        | Error::Fenced(_) => Code::Unavailable,
        Error::Corrupt(_) => Code::DataLoss,
        Error::Auth(error) => match error.kind() {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::Unauthenticated => Code::Unauthenticated,
            ErrorKind::PermissionDenied => Code::PermissionDenied,
            ErrorKind::RateLimited => Code::ResourceExhausted,
            _ => Code::FailedPrecondition,
        },
    };
    let message = match error {
        // etcd's own words for a stopping server.
        Error::Closed(_) => "etcdserver: server stopped".to_string(),
        other => other.to_string(),
    };
    (code, message)
}

pub fn status(error: Error) -> Status {
    let (code, message) = code_and_message(&error);
    Status::new(code, message)
}

/// The answer for an RPC t4 does not serve (yet).
pub fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("t4: {what} is not implemented"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use t4::error::AuthError;

    #[test]
    fn the_error_table() {
        let errors = [
            Error::EmptyKey,
            Error::RequestTooLarge,
            Error::TooManyOps,
            Error::DuplicateKey,
            Error::Compacted { compact_revision: 5 },
            Error::FutureRevision,
            Error::KeyNotFound,
            Error::ValueProvided,
            Error::LeaseProvided,
            Error::LeaseNotFound,
            Error::LeaseExists,
            Error::LeaseTtlTooLarge,
            Error::TooManyLeases { max: 1_000_000 },
            Error::NoSpace,
            Error::ResponseTooLarge { bytes_max: 268_435_456 },
            Error::InvalidSortOption,
            Error::InvalidArgument("example".into()),
            Error::Closed(t4::error::ClosedReason::Closed),
            Error::NotLeader { leader: Some("127.0.0.1:2379".into()) },
            Error::NoLeader,
            Error::MemberNotFound,
            Error::MemberNotEnoughStarted,
            Error::StorageFailure("wal fdatasync: EIO".into()),
            Error::Fenced("term 2 was taken by node-b after this node's term 1; this node stops serving".into()),
            Error::Corrupt("wal 00000000000000000001.wal: checksum".into()),
            Error::Auth(AuthError::NotEnabled),
            Error::Auth(AuthError::Failed),
            Error::Auth(AuthError::InvalidToken),
            Error::Auth(AuthError::InvalidManagement),
            Error::Auth(AuthError::OldRevision),
            Error::Auth(AuthError::PermissionDenied),
            Error::Auth(AuthError::PermissionNotGiven),
            Error::Auth(AuthError::RootUserNotExist),
            Error::Auth(AuthError::RootRoleNotExist),
            Error::Auth(AuthError::UserEmpty),
            Error::Auth(AuthError::UserExists),
            Error::Auth(AuthError::UserNotFound),
            Error::Auth(AuthError::RoleEmpty),
            Error::Auth(AuthError::RoleExists),
            Error::Auth(AuthError::RoleNotFound),
            Error::Auth(AuthError::RoleNotGranted),
            Error::Auth(AuthError::PermissionNotGranted),
            Error::Auth(AuthError::TooManyRequests),
        ];
        let table: Vec<String> = errors
            .iter()
            .map(|error| {
                let (code, message) = code_and_message(error);
                let debug = format!("{error:?}");
                // Auth(Failed) -> Auth::Failed; others by their variant name.
                let variant = match error {
                    Error::Auth(inner) => format!("Auth::{inner:?}"),
                    _ => debug.split(['(', ' ', '{']).next().unwrap_or_default().to_string(),
                };
                format!("{variant:<26} {:<18} {message}", format!("{code:?}"))
            })
            .collect();
        insta::assert_snapshot!(table.join("\n"));
    }
}
