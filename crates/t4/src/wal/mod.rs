//! The write-ahead log: the node's source of durability (docs/design.md §3).
//!
//! Every change to the store is first a record here. Records carry a dense index; a
//! group-commit batch of records is written with one `write` and made durable with one
//! `fdatasync`. Segments (`wal/<first index>.wal`) are append-only and dropped once the
//! store holds their records durably. Format and recovery rules: `docs/formats.md`.

mod record;
mod recovery;
mod writer;

pub use record::{
    batch_runs, decode_batch, encode_batch, Change, ChangeKind, Record, RecordBody, BATCH_HEADER_BYTES, BATCH_PAYLOAD_BYTES_MAX,
};
pub use recovery::{recover, Recovered};
pub use writer::{segment_name, WalWriter, SEGMENT_HEADER_BYTES, WAL_DIR};
