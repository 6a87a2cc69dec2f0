//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and by the stable test
//! that replays their corpora (`tests/it/fuzz_corpus.rs`). Each must never panic on any
//! input; each checks what it can about inputs that do decode.

use prost::Message;

use crate::mvcc::{validate_range, validate_write, Limits, StoredKv, WriteRequest};
use crate::wal::{decode_batch, encode_batch};

/// WAL batches: garbage is rejected; whatever decodes re-encodes to the same bytes.
pub fn wal_batch(data: &[u8]) {
    if let Ok((records, len)) = decode_batch(data) {
        assert_eq!(
            encode_batch(&records).expect("a decoded batch is within bounds"),
            &data[..len],
            "a decoded batch must re-encode byte for byte"
        );
    }
}

/// Store entries: garbage is rejected; whatever decodes re-encodes to the same bytes.
pub fn store_entry(data: &[u8]) {
    if let Ok(entry) = StoredKv::decode(data) {
        assert_eq!(entry.encode(), data, "a decoded entry must re-encode byte for byte");
    }
}

/// Request validation on arbitrary protobuf: decoding and validating never panic.
pub fn request_validation(data: &[u8]) {
    let limits = Limits { request_bytes_max: 1536 * 1024, txn_ops_max: 128 };
    let Some((&selector, body)) = data.split_first() else { return };
    let request = match selector % 4 {
        0 => t4_proto::etcdserverpb::TxnRequest::decode(body).map(WriteRequest::Txn),
        1 => t4_proto::etcdserverpb::PutRequest::decode(body).map(WriteRequest::Put),
        2 => t4_proto::etcdserverpb::DeleteRangeRequest::decode(body).map(WriteRequest::DeleteRange),
        _ => {
            if let Ok(range) = t4_proto::etcdserverpb::RangeRequest::decode(body) {
                let _ = validate_range(&range);
            }
            return;
        }
    };
    if let Ok(request) = request {
        let _ = validate_write(&request, limits);
    }
}

/// Objects t4 reads from its bucket (lock, WAL object headers and bodies, floors, checkpoint
/// manifests and chunks), chosen by the first byte: garbage is an error, never a panic, and
/// a lock or manifest that decodes re-encodes to one that decodes the same.
pub fn bucket_objects(data: &[u8]) {
    use crate::durable::checkpoint::{decode_chunk, ChunkRef, Manifest};
    use crate::durable::format::{decode_floor, decode_wal_header, decode_wal_object, LockRecord};
    let Some((&selector, body)) = data.split_first() else { return };
    match selector % 6 {
        0 => {
            if let Ok(lock) = LockRecord::decode(body) {
                assert_eq!(LockRecord::decode(&lock.encode()).expect("an encoded lock decodes"), lock);
            }
        }
        1 => {
            let _ = decode_wal_header("fuzz", body);
        }
        2 => {
            let _ = decode_wal_object("fuzz", 1, 1, body);
        }
        3 => {
            let _ = decode_floor("fuzz", 1, body);
        }
        4 => {
            if let Ok(manifest) = Manifest::decode("fuzz", body) {
                let again = Manifest::decode("fuzz", &manifest.encode()).expect("an encoded manifest decodes");
                assert_eq!(again, manifest);
            }
        }
        _ => {
            // A chunk is named by its SHA-256: take the name from the bytes, so the decoder's
            // checks past the hash are reached.
            use sha2::Digest;
            let sha256: [u8; 32] = sha2::Sha256::digest(body).into();
            let reference =
                ChunkRef { sha256, bytes: body.len().saturating_sub(12) as u64, entries: body.first().copied().unwrap_or(0) as u32 };
            let _ = decode_chunk(&reference, body);
        }
    }
}

/// The auth state and auth changes as the store and the log keep them: garbage is an error,
/// never a panic; what decodes re-encodes to the same value.
pub fn auth_records(data: &[u8]) {
    use crate::auth::state::{AuthChange, AuthState};
    if let Ok(state) = AuthState::decode(data) {
        assert_eq!(AuthState::decode(&state.encode()).expect("an encoded state decodes"), state);
    }
    if let Ok(change) = AuthChange::decode(data) {
        assert_eq!(AuthChange::decode(&change.encode()).expect("an encoded change decodes"), change);
    }
}

/// s4's metadata records (buckets, objects, bodies, uploads, parts).
pub fn s4_metadata(data: &[u8]) {
    crate::s3server::fuzz_metadata_records(data);
}
