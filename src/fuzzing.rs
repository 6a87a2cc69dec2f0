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
