//! What crosses the peer port when a follower forwards a client write to the leader
//! (docs/clustering.md "Forwarding"): the write, its answer, and the error the leader gave,
//! so the follower's client sees what the leader's own client would have seen.
//!
//! An error that says the write may have been logged without being acknowledged (the
//! leader stepped down, failed or closed meanwhile) reaches the client as etcd's "leader
//! changed": its outcome is unknown, and a retry is the client's decision.

use prost::Message;
use t4_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, ResponseHeader, TxnRequest, TxnResponse,
};

use crate::auth::state::AuthChange;
use crate::error::{AuthError, Error};
use crate::mvcc::{AuthApplied, WriteRequest, WriteResponse};

/// A request's method name and bytes.
pub fn encode_request(request: &WriteRequest) -> (&'static str, Vec<u8>) {
    match request {
        WriteRequest::Put(request) => ("Put", request.encode_to_vec()),
        WriteRequest::DeleteRange(request) => ("DeleteRange", request.encode_to_vec()),
        WriteRequest::Txn(request) => ("Txn", request.encode_to_vec()),
        WriteRequest::Compact(request) => ("Compact", request.encode_to_vec()),
        WriteRequest::LeaseGrant(request) => ("LeaseGrant", request.encode_to_vec()),
        WriteRequest::LeaseRevoke(request) => ("LeaseRevoke", request.encode_to_vec()),
        WriteRequest::Auth(change) => ("Auth", change.encode()),
    }
}

pub fn decode_request(method: &str, bytes: &[u8]) -> Result<WriteRequest, String> {
    let bad = |error: prost::DecodeError| format!("forwarded {method}: {error}");
    Ok(match method {
        "Put" => WriteRequest::Put(PutRequest::decode(bytes).map_err(bad)?),
        "DeleteRange" => WriteRequest::DeleteRange(DeleteRangeRequest::decode(bytes).map_err(bad)?),
        "Txn" => WriteRequest::Txn(TxnRequest::decode(bytes).map_err(bad)?),
        "Compact" => WriteRequest::Compact(CompactionRequest::decode(bytes).map_err(bad)?),
        "LeaseGrant" => WriteRequest::LeaseGrant(LeaseGrantRequest::decode(bytes).map_err(bad)?),
        "LeaseRevoke" => WriteRequest::LeaseRevoke(LeaseRevokeRequest::decode(bytes).map_err(bad)?),
        "Auth" => WriteRequest::Auth(AuthChange::decode(bytes).map_err(|error| format!("forwarded Auth: {error}"))?),
        other => return Err(format!("forwarded write {other:?}: no such method")),
    })
}

pub fn encode_response(response: &WriteResponse) -> Vec<u8> {
    match response {
        WriteResponse::Put(response) => response.encode_to_vec(),
        WriteResponse::DeleteRange(response) => response.encode_to_vec(),
        WriteResponse::Txn(response) => response.encode_to_vec(),
        WriteResponse::Compact(response) => response.encode_to_vec(),
        WriteResponse::LeaseGrant(response) => response.encode_to_vec(),
        WriteResponse::LeaseRevoke(response) => response.encode_to_vec(),
        WriteResponse::Auth(applied) => {
            // The auth revision, then the header.
            let mut bytes = applied.auth_revision.to_be_bytes().to_vec();
            if let Some(header) = &applied.header {
                bytes.extend(header.encode_to_vec());
            }
            bytes
        }
    }
}

/// The answer to a forwarded `method`.
pub fn decode_response(method: &str, bytes: &[u8]) -> Result<WriteResponse, String> {
    let bad = |error: prost::DecodeError| format!("answer to a forwarded {method}: {error}");
    Ok(match method {
        "Put" => WriteResponse::Put(PutResponse::decode(bytes).map_err(bad)?),
        "DeleteRange" => WriteResponse::DeleteRange(DeleteRangeResponse::decode(bytes).map_err(bad)?),
        "Txn" => WriteResponse::Txn(TxnResponse::decode(bytes).map_err(bad)?),
        "Compact" => WriteResponse::Compact(CompactionResponse::decode(bytes).map_err(bad)?),
        "LeaseGrant" => WriteResponse::LeaseGrant(LeaseGrantResponse::decode(bytes).map_err(bad)?),
        "LeaseRevoke" => WriteResponse::LeaseRevoke(LeaseRevokeResponse::decode(bytes).map_err(bad)?),
        "Auth" => {
            let (revision, header) = bytes.split_at_checked(8).ok_or_else(|| "answer to a forwarded Auth: short".to_string())?;
            let auth_revision = u64::from_be_bytes(revision.try_into().expect("8 bytes"));
            let header = (!header.is_empty()).then(|| ResponseHeader::decode(header)).transpose().map_err(bad)?;
            WriteResponse::Auth(AuthApplied { header, auth_revision })
        }
        other => return Err(format!("answer to a forwarded {other:?}: no such method")),
    })
}

/// Error codes on the wire (0 is success).
mod code {
    /// One of [`super::TEXT_ERRORS`], told by its text.
    pub const BY_TEXT: i32 = 1;
    pub const COMPACTED: i32 = 2;
    pub const RESPONSE_TOO_LARGE: i32 = 3;
    pub const TOO_MANY_LEASES: i32 = 4;
    pub const INVALID_ARGUMENT: i32 = 5;
    pub const NOT_LEADER: i32 = 6;
    /// The write may or may not have been logged.
    pub const OUTCOME_UNKNOWN: i32 = 7;
}

/// The errors without a payload a forwarded write may end with, each told by its text.
const TEXT_ERRORS: &[Error] = &[
    Error::EmptyKey,
    Error::RequestTooLarge,
    Error::TooManyOps,
    Error::DuplicateKey,
    Error::FutureRevision,
    Error::InvalidSortOption,
    Error::KeyNotFound,
    Error::ValueProvided,
    Error::LeaseProvided,
    Error::LeaseNotFound,
    Error::LeaseExists,
    Error::LeaseTtlTooLarge,
    Error::NoSpace,
    Error::NoLeader,
    Error::LeaderChanged,
    Error::MemberNotFound,
    Error::MemberNotEnoughStarted,
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

pub fn encode_error(error: &Error) -> (i32, String) {
    match error {
        Error::Compacted { compact_revision } => (code::COMPACTED, compact_revision.to_string()),
        Error::ResponseTooLarge { bytes_max } => (code::RESPONSE_TOO_LARGE, bytes_max.to_string()),
        Error::TooManyLeases { max } => (code::TOO_MANY_LEASES, max.to_string()),
        Error::InvalidArgument(text) => (code::INVALID_ARGUMENT, text.clone()),
        Error::NotLeader { leader } => (code::NOT_LEADER, leader.clone().unwrap_or_default()),
        // The leader failed, closed or was fenced: whether the write was logged is unknown.
        Error::Closed(_) | Error::StorageFailure(_) | Error::Fenced(_) | Error::Corrupt(_) => (code::OUTCOME_UNKNOWN, error.to_string()),
        other if TEXT_ERRORS.contains(other) => (code::BY_TEXT, other.to_string()),
        other => (code::OUTCOME_UNKNOWN, other.to_string()),
    }
}

/// The error the follower's client gets. Anything unrecognised counts as an unknown
/// outcome: it is never taken for a refusal (which would say the write did not happen).
pub fn decode_error(code: i32, text: &str) -> Error {
    let number = || text.parse::<u64>().ok();
    match code {
        code::BY_TEXT => TEXT_ERRORS.iter().find(|error| error.to_string() == text).cloned().unwrap_or(Error::LeaderChanged),
        code::COMPACTED => text.parse().map_or(Error::LeaderChanged, |compact_revision| Error::Compacted { compact_revision }),
        code::RESPONSE_TOO_LARGE => number().map_or(Error::LeaderChanged, |bytes_max| Error::ResponseTooLarge { bytes_max }),
        code::TOO_MANY_LEASES => number().map_or(Error::LeaderChanged, |max| Error::TooManyLeases { max }),
        code::INVALID_ARGUMENT => Error::InvalidArgument(text.to_string()),
        code::NOT_LEADER => Error::NotLeader { leader: Some(text.to_string()).filter(|leader| !leader.is_empty()) },
        _ => Error::LeaderChanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_a_forward_can_end_with_comes_back_as_itself_or_as_an_unknown_outcome() {
        let mut errors: Vec<Error> = TEXT_ERRORS.to_vec();
        errors.extend([
            Error::Compacted { compact_revision: 17 },
            Error::ResponseTooLarge { bytes_max: 4096 },
            Error::TooManyLeases { max: 10 },
            Error::InvalidArgument("bad".into()),
            Error::NotLeader { leader: Some("http://n1:2379".into()) },
            Error::NotLeader { leader: None },
        ]);
        for error in errors {
            let (code, text) = encode_error(&error);
            assert_eq!(decode_error(code, &text), error);
        }
        for unknown in [Error::StorageFailure("disk".into()), Error::Fenced("term 3".into()), Error::Corrupt("x".into())] {
            let (code, text) = encode_error(&unknown);
            assert_eq!(decode_error(code, &text), Error::LeaderChanged, "{unknown}");
        }
        assert_eq!(decode_error(1, "etcdserver: something new"), Error::LeaderChanged);
        assert_eq!(decode_error(99, ""), Error::LeaderChanged);
    }

    #[test]
    fn requests_and_answers_cross_unchanged() {
        let requests = [
            WriteRequest::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), lease: 7, prev_kv: true, ..Default::default() }),
            WriteRequest::DeleteRange(DeleteRangeRequest { key: b"a".to_vec(), range_end: b"b".to_vec(), prev_kv: true }),
            WriteRequest::Compact(CompactionRequest { revision: 5, physical: true }),
            WriteRequest::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 3 }),
            WriteRequest::LeaseRevoke(LeaseRevokeRequest { id: 3 }),
            WriteRequest::Auth(AuthChange::UserAdd { name: "u".into(), password: Some("hash".into()) }),
            WriteRequest::Txn(TxnRequest::default()),
        ];
        for request in requests {
            let (method, bytes) = encode_request(&request);
            assert_eq!(decode_request(method, &bytes).unwrap(), request);
        }
        let header = Some(ResponseHeader { revision: 9, ..Default::default() });
        let answers = [
            ("Put", WriteResponse::Put(PutResponse { header, prev_kv: None })),
            ("Auth", WriteResponse::Auth(AuthApplied { header, auth_revision: 4 })),
            ("Auth", WriteResponse::Auth(AuthApplied { header: None, auth_revision: 0 })),
            ("LeaseGrant", WriteResponse::LeaseGrant(LeaseGrantResponse { header, id: 3, ttl: 10, error: String::new() })),
        ];
        for (method, answer) in answers {
            assert_eq!(decode_response(method, &encode_response(&answer)).unwrap(), answer);
        }
        assert!(decode_request("Range", b"").is_err());
        assert!(decode_response("Auth", b"abc").is_err());
    }
}
