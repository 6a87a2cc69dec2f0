//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and by the stable test
//! that replays their corpora (`crates/t4-cli/tests/it/fuzz_corpus.rs`). Each must never panic on any
//! input; each checks what it can about inputs that do decode.

use std::path::Path;

use prost::Message;

use crate::mvcc::{validate_range, validate_write, Limits, StoredKv, WriteRequest};
use crate::wal::{decode_batch, encode_batch};
use t4_env::fuzzing::{runtime, Scratch};

mod model;
mod requests;

/// Random operations on a fresh node compared with a model of etcd's semantics, with
/// recovery checked after reopening (see `model`).
pub fn store_model(data: &[u8]) {
    model::run(data);
}

/// Arbitrary protobuf requests through `EtcdCore` on a fresh node (see `requests`).
pub fn etcd_core(data: &[u8]) {
    requests::run(data);
}

/// A node's configuration for the targets: small WAL segments, so that opening (which
/// reads the preallocated segment) is quick and segments roll over within an input.
fn node_config(dir: &Path) -> crate::Config {
    let mut config = crate::Config::new(dir);
    config.wal_segment_bytes_max = 64 << 10;
    config
}

/// The fuzzer's bytes read as choices: past the end, every choice is 0.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn byte(&mut self) -> u8 {
        let (&byte, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        byte
    }

    fn take(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

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
/// a lock or manifest that decodes re-encodes to one that decodes the same. From 128 on the
/// first byte asks for the object to be sealed first (magic, checksums and hashes made right
/// around the fuzzer's bytes), so the decoders' checks past the checksums are reached.
pub fn bucket_objects(data: &[u8]) {
    use crate::durability::checkpoint::{decode_chunk, ChunkRef, Manifest};
    use crate::durability::format::{decode_floor, decode_wal_header, decode_wal_object};
    use crate::election::LockRecord;
    let Some((&selector, body)) = data.split_first() else { return };
    if selector >= 128 {
        return sealed_bucket_object(selector, body);
    }
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

fn sealed_bucket_object(selector: u8, body: &[u8]) {
    use crate::durability::checkpoint::{decode_chunk, encode_chunk, Chunk, Manifest, MANIFEST_MAGIC};
    use crate::durability::format::{decode_wal_object, encode_batch_object, WalObject};
    use crate::election::lock::{LockRecord, LOCK_MAGIC};
    let with_crc = |magic: &[u8]| {
        let mut object = [magic, body].concat();
        object.extend_from_slice(&crc32c::crc32c(&object).to_le_bytes());
        object
    };
    match selector % 4 {
        0 => {
            if let Ok(lock) = LockRecord::decode(&with_crc(LOCK_MAGIC)) {
                assert_eq!(LockRecord::decode(&lock.encode()).expect("an encoded lock decodes"), lock);
            }
        }
        1 => {
            let mut input = Input::new(body);
            let (first_index, count) = (input.byte() as u64, input.byte() as u64);
            let object = encode_batch_object(1, 1, first_index, count, input.take(usize::MAX));
            if let Ok(WalObject::Batch { records, .. }) = decode_wal_object("fuzz", 1, 1, &object) {
                assert_eq!(records.len() as u64, count, "a WAL object holds the records its header counts");
            }
        }
        2 => {
            if let Ok(manifest) = Manifest::decode("fuzz", &with_crc(MANIFEST_MAGIC)) {
                assert_eq!(Manifest::decode("fuzz", &manifest.encode()).expect("an encoded manifest decodes"), manifest);
            }
        }
        _ => {
            let mut input = Input::new(body);
            let entries = input.byte() as u32;
            let payload = input.take(usize::MAX);
            let Chunk { object, reference } = encode_chunk(payload, entries);
            if let Ok(decoded) = decode_chunk(&reference, &object) {
                assert_eq!(decoded.len() as u32, entries, "a chunk holds the entries its header counts");
            }
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
