//! WAL records and their batch encoding (docs/formats.md, "WAL batch").
//!
//! A batch is a 32-byte header (magic, version, first index, record count, payload length,
//! payload CRC32C, header CRC32C) followed by its records. Everything is little-endian.
//! Decoding validates every length against the bytes present and both checksums before
//! interpreting a single field: input from disk is never trusted.

use crate::auth::state::AuthChange;
use crate::error::{Error, Result};

pub const BATCH_MAGIC: u32 = 0x4257_3454; // "T4WB" little-endian
pub const BATCH_VERSION: u16 = 1;
pub const BATCH_HEADER_BYTES: usize = 32;
/// A batch larger than this is corrupt by definition (the writer never produces one).
pub const BATCH_PAYLOAD_BYTES_MAX: usize = 256 * 1024 * 1024;

const KIND_TXN: u8 = 1;
const KIND_COMPACT: u8 = 2;
const KIND_LEASE_GRANT: u8 = 3;
const KIND_LEASE_REVOKE: u8 = 4;
const KIND_AUTH: u8 = 5;
const KIND_TERM: u8 = 6;
const CHANGE_PUT: u8 = 1;
const CHANGE_DELETE: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Dense, starting at 1; never reused.
    pub index: u64,
    pub body: RecordBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordBody {
    /// A txn that changed the store, as its effects in op order, at `revision`.
    Txn { revision: i64, changes: Vec<Change> },
    /// Compaction of history below `revision` (spends no revision).
    Compact { revision: i64 },
    /// A lease granted with `ttl` seconds (spends no revision).
    LeaseGrant { id: i64, ttl: i64 },
    /// A lease revoked (or expired): its keys deleted at `revision` in `changes` (all
    /// deletes), or, with no keys, nothing deleted and no revision spent (`revision` 0).
    LeaseRevoke { id: i64, revision: i64, changes: Vec<Change> },
    /// A change to users, roles or whether auth is on (spends no revision).
    Auth { change: AuthChange },
    /// A cluster leader's first record of its term: the records after it, up to the next
    /// term record, are that term's (docs/clustering.md "terms-only-up"). Changes nothing
    /// in the store and spends no revision.
    Term { term: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    Put { value: Vec<u8>, lease: i64 },
    Delete,
}

impl Record {
    /// The bytes this record takes in a batch's payload (what [`encode_batch`] writes).
    pub fn encoded_len(&self) -> usize {
        let changes = |changes: &[Change]| changes.iter().map(Change::encoded_len).sum::<usize>();
        match &self.body {
            RecordBody::Txn { changes: list, .. } => 1 + 8 + 4 + changes(list),
            RecordBody::Compact { .. } => 1 + 8,
            RecordBody::LeaseGrant { .. } => 1 + 8 + 8,
            RecordBody::LeaseRevoke { changes: list, .. } => 1 + 8 + 8 + 4 + changes(list),
            RecordBody::Auth { change } => 1 + 4 + change.encode().len(),
            RecordBody::Term { .. } => 1 + 8,
        }
    }
}

impl Change {
    fn encoded_len(&self) -> usize {
        let value = match &self.kind {
            ChangeKind::Put { value, .. } => 4 + value.len() + 8,
            ChangeKind::Delete => 0,
        };
        1 + 4 + self.key.len() + value
    }
}

/// Splits dense records into runs that each fit one batch: at most `records_max` records
/// and, unless one record alone is larger, at most `bytes_max` encoded bytes.
pub fn batch_runs(records: &[Record], records_max: usize, bytes_max: usize) -> Vec<&[Record]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (at, record) in records.iter().enumerate() {
        let len = record.encoded_len();
        if at > start && (at - start >= records_max || bytes + len > bytes_max) {
            runs.push(&records[start..at]);
            (start, bytes) = (at, 0);
        }
        bytes += len;
    }
    if start < records.len() {
        runs.push(&records[start..]);
    }
    runs
}

/// Encodes records with consecutive indexes into one batch; refuses (`StorageFailure`: the
/// writer's bounds failed) a payload past [`BATCH_PAYLOAD_BYTES_MAX`], which no reader
/// would accept.
pub fn encode_batch(records: &[Record]) -> Result<Vec<u8>> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    for pair in records.windows(2) {
        assert_eq!(pair[0].index + 1, pair[1].index, "batch records must be dense");
    }
    let payload_len: usize = records.iter().map(Record::encoded_len).sum();
    if payload_len > BATCH_PAYLOAD_BYTES_MAX {
        return Err(Error::StorageFailure(format!(
            "a WAL batch of {} records would take {payload_len} bytes, over the bound of {BATCH_PAYLOAD_BYTES_MAX}",
            records.len()
        )));
    }
    let mut payload = Vec::with_capacity(payload_len);
    for record in records {
        encode_body(&record.body, &mut payload);
    }
    assert_eq!(payload.len(), payload_len, "encoded_len must say what encode_body writes");
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + payload.len());
    out.extend_from_slice(&BATCH_MAGIC.to_le_bytes());
    out.extend_from_slice(&BATCH_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&records[0].index.to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    let header_crc = crc32c::crc32c(&out[..28]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    debug_assert_eq!(out.len(), BATCH_HEADER_BYTES);
    out.extend_from_slice(&payload);
    Ok(out)
}

fn encode_body(body: &RecordBody, out: &mut Vec<u8>) {
    match body {
        RecordBody::Txn { revision, changes } => {
            assert!(*revision >= 2 && !changes.is_empty(), "a txn record changes something at a real revision");
            out.push(KIND_TXN);
            out.extend_from_slice(&revision.to_le_bytes());
            out.extend_from_slice(&(changes.len() as u32).to_le_bytes());
            for change in changes {
                encode_change(change, out);
            }
        }
        RecordBody::Compact { revision } => {
            out.push(KIND_COMPACT);
            out.extend_from_slice(&revision.to_le_bytes());
        }
        RecordBody::LeaseGrant { id, ttl } => {
            out.push(KIND_LEASE_GRANT);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&ttl.to_le_bytes());
        }
        RecordBody::LeaseRevoke { id, revision, changes } => {
            assert_eq!(*revision == 0, changes.is_empty(), "a revoke spends a revision exactly when it deletes keys");
            assert!(changes.iter().all(|change| change.kind == ChangeKind::Delete), "a revoke only deletes");
            out.push(KIND_LEASE_REVOKE);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&revision.to_le_bytes());
            out.extend_from_slice(&(changes.len() as u32).to_le_bytes());
            for change in changes {
                encode_change(change, out);
            }
        }
        RecordBody::Auth { change } => {
            let bytes = change.encode();
            out.push(KIND_AUTH);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        RecordBody::Term { term } => {
            assert!(*term >= 1, "a term record names a real term");
            out.push(KIND_TERM);
            out.extend_from_slice(&term.to_le_bytes());
        }
    }
}

fn encode_change(change: &Change, out: &mut Vec<u8>) {
    match &change.kind {
        ChangeKind::Put { .. } => out.push(CHANGE_PUT),
        ChangeKind::Delete => out.push(CHANGE_DELETE),
    }
    out.extend_from_slice(&(change.key.len() as u32).to_le_bytes());
    out.extend_from_slice(&change.key);
    if let ChangeKind::Put { value, lease } = &change.kind {
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
        out.extend_from_slice(&lease.to_le_bytes());
    }
}

/// Why a batch could not be decoded; recovery decides whether that is a torn tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchDefect {
    /// Fewer bytes than the header or the payload it announces.
    Truncated,
    /// Magic, version, a checksum or a field is wrong.
    Invalid(String),
}

/// The batch header's announced total length, once its own checksum holds.
pub fn batch_len(bytes: &[u8]) -> Result<usize, BatchDefect> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err(BatchDefect::Truncated);
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..28]) != u32_at(28) {
        return Err(BatchDefect::Invalid("batch header checksum mismatch".into()));
    }
    if u32_at(0) != BATCH_MAGIC {
        return Err(BatchDefect::Invalid("bad batch magic".into()));
    }
    let version = u16::from_le_bytes(bytes[4..6].try_into().expect("2 bytes"));
    if version != BATCH_VERSION {
        return Err(BatchDefect::Invalid(format!("unknown batch version {version}")));
    }
    // Written as zero; anything else is not a batch this version wrote (found by fuzzing:
    // such a header decoded, and did not re-encode to the same bytes).
    if bytes[6..8] != [0, 0] {
        return Err(BatchDefect::Invalid("reserved batch header bytes are not zero".into()));
    }
    let payload_len = u32_at(20) as usize;
    if payload_len > BATCH_PAYLOAD_BYTES_MAX {
        return Err(BatchDefect::Invalid("batch payload over its bound".into()));
    }
    Ok(BATCH_HEADER_BYTES + payload_len)
}

/// Decodes one batch at the start of `bytes`; returns its records and its length.
pub fn decode_batch(bytes: &[u8]) -> Result<(Vec<Record>, usize), BatchDefect> {
    let total = batch_len(bytes)?;
    if bytes.len() < total {
        return Err(BatchDefect::Truncated);
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let payload = &bytes[BATCH_HEADER_BYTES..total];
    if crc32c::crc32c(payload) != u32_at(24) {
        return Err(BatchDefect::Invalid("batch payload checksum mismatch".into()));
    }
    let first_index = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let count = u32_at(16) as usize;
    if first_index == 0 || count == 0 || first_index.checked_add(count as u64).is_none() {
        return Err(BatchDefect::Invalid("empty batch, index 0, or indexes past u64".into()));
    }
    let mut reader = Reader { bytes: payload, at: 0 };
    let mut records = Vec::with_capacity(count.min(payload.len()));
    for position in 0..count {
        let body = reader.body().map_err(BatchDefect::Invalid)?;
        records.push(Record { index: first_index + position as u64, body });
    }
    if reader.at != payload.len() {
        return Err(BatchDefect::Invalid("bytes left after the last record".into()));
    }
    Ok((records, total))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, len: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(len).filter(|end| *end <= self.bytes.len()).ok_or("record runs past its batch")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn body(&mut self) -> Result<RecordBody, String> {
        match self.u8()? {
            KIND_TXN => {
                let revision = self.i64()?;
                let count = self.u32()? as usize;
                if revision < 2 || count == 0 {
                    return Err(format!("txn record with revision {revision} and {count} changes"));
                }
                let mut changes = Vec::with_capacity(count.min(self.bytes.len()));
                for _ in 0..count {
                    changes.push(self.change()?);
                }
                Ok(RecordBody::Txn { revision, changes })
            }
            KIND_COMPACT => Ok(RecordBody::Compact { revision: self.i64()? }),
            KIND_LEASE_GRANT => Ok(RecordBody::LeaseGrant { id: self.i64()?, ttl: self.i64()? }),
            KIND_LEASE_REVOKE => {
                let (id, revision, count) = (self.i64()?, self.i64()?, self.u32()? as usize);
                if (revision == 0) != (count == 0) || (revision != 0 && revision < 2) {
                    return Err(format!("lease revoke record with revision {revision} and {count} changes"));
                }
                let mut changes = Vec::with_capacity(count.min(self.bytes.len()));
                for _ in 0..count {
                    let change = self.change()?;
                    if change.kind != ChangeKind::Delete {
                        return Err("lease revoke record with a put".into());
                    }
                    changes.push(change);
                }
                Ok(RecordBody::LeaseRevoke { id, revision, changes })
            }
            KIND_AUTH => {
                let len = self.u32()? as usize;
                Ok(RecordBody::Auth { change: AuthChange::decode(self.take(len)?)? })
            }
            KIND_TERM => match self.i64()? as u64 {
                0 => Err("term record of term 0".into()),
                term => Ok(RecordBody::Term { term }),
            },
            kind => Err(format!("unknown record kind {kind}")),
        }
    }

    fn change(&mut self) -> Result<Change, String> {
        let kind = self.u8()?;
        let key_len = self.u32()? as usize;
        let key = self.take(key_len)?.to_vec();
        if key.is_empty() {
            return Err("change with an empty key".into());
        }
        let kind = match kind {
            CHANGE_PUT => {
                let value_len = self.u32()? as usize;
                let value = self.take(value_len)?.to_vec();
                ChangeKind::Put { value, lease: self.i64()? }
            }
            CHANGE_DELETE => ChangeKind::Delete,
            other => return Err(format!("unknown change kind {other}")),
        };
        Ok(Change { key, kind })
    }
}

impl From<BatchDefect> for Error {
    fn from(defect: BatchDefect) -> Self {
        Error::Corrupt(format!("wal batch: {defect:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn change_strategy() -> impl Strategy<Value = Change> {
        let key = proptest::collection::vec(any::<u8>(), 1..16);
        let value = proptest::collection::vec(any::<u8>(), 0..32);
        (key, prop_oneof![value.prop_map(Some), Just(None)], any::<i64>()).prop_map(|(key, value, lease)| Change {
            key,
            kind: match value {
                Some(value) => ChangeKind::Put { value, lease },
                None => ChangeKind::Delete,
            },
        })
    }

    fn body_strategy() -> impl Strategy<Value = RecordBody> {
        prop_oneof![
            (2i64..1 << 40, proptest::collection::vec(change_strategy(), 1..6))
                .prop_map(|(revision, changes)| RecordBody::Txn { revision, changes }),
            (1i64..1 << 40).prop_map(|revision| RecordBody::Compact { revision }),
            (any::<i64>(), any::<i64>()).prop_map(|(id, ttl)| RecordBody::LeaseGrant { id, ttl }),
            (any::<i64>(), 2i64..1 << 40, proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..16), 0..4)).prop_map(
                |(id, revision, keys)| RecordBody::LeaseRevoke {
                    id,
                    revision: if keys.is_empty() { 0 } else { revision },
                    changes: keys.into_iter().map(|key| Change { key, kind: ChangeKind::Delete }).collect(),
                }
            ),
            ("[a-z]{0,8}", proptest::option::of("[ -~]{0,12}"), proptest::collection::vec(any::<u8>(), 0..6)).prop_map(
                |(name, password, key)| {
                    let change = match key.len() % 4 {
                        0 => AuthChange::UserAdd { name, password },
                        1 => AuthChange::RoleRevokePermission { name, key: key.clone(), range_end: key },
                        2 => AuthChange::UserGrantRole { name, role: password.unwrap_or_default() },
                        _ => AuthChange::Enable,
                    };
                    RecordBody::Auth { change }
                }
            ),
            (1u64..u64::MAX).prop_map(|term| RecordBody::Term { term }),
        ]
    }

    proptest! {
        #[test]
        fn batches_round_trip(first in 1u64..1 << 40, bodies in proptest::collection::vec(body_strategy(), 1..8)) {
            let records: Vec<Record> = bodies.into_iter().enumerate()
                .map(|(offset, body)| Record { index: first + offset as u64, body }).collect();
            let bytes = encode_batch(&records).expect("within bounds");
            let (decoded, len) = decode_batch(&bytes).unwrap();
            prop_assert_eq!(len, bytes.len());
            prop_assert_eq!(decoded, records);
        }

        #[test]
        fn every_prefix_is_truncated_and_every_flip_is_caught(
            bodies in proptest::collection::vec(body_strategy(), 1..4),
            flip_at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let records: Vec<Record> = bodies.into_iter().enumerate()
                .map(|(offset, body)| Record { index: 1 + offset as u64, body }).collect();
            let bytes = encode_batch(&records).expect("within bounds");
            for cut in 0..bytes.len() {
                prop_assert!(decode_batch(&bytes[..cut]).is_err());
            }
            let mut flipped = bytes.clone();
            let index = flip_at.index(flipped.len());
            flipped[index] ^= 1 << bit;
            prop_assert!(decode_batch(&flipped).is_err(), "a flipped bit must never decode");
        }
    }

    #[test]
    fn a_batch_past_its_payload_bound_is_refused_not_a_panic() {
        let value = vec![0u8; BATCH_PAYLOAD_BYTES_MAX];
        let change = Change { key: b"k".to_vec(), kind: ChangeKind::Put { value, lease: 0 } };
        let records = [Record { index: 1, body: RecordBody::Txn { revision: 2, changes: vec![change] } }];
        assert!(records[0].encoded_len() > BATCH_PAYLOAD_BYTES_MAX);
        assert!(matches!(encode_batch(&records), Err(Error::StorageFailure(_))));
    }

    #[test]
    fn batch_runs_keep_records_in_order_within_both_bounds() {
        let put = |index: u64, bytes: usize| Record {
            index,
            body: RecordBody::Txn {
                revision: index as i64 + 1,
                changes: vec![Change { key: b"k".to_vec(), kind: ChangeKind::Put { value: vec![1; bytes], lease: 0 } }],
            },
        };
        let records: Vec<Record> = [10, 10, 500, 10, 10, 10, 10].iter().enumerate().map(|(at, bytes)| put(at as u64 + 1, *bytes)).collect();
        let sizes: Vec<usize> = records.iter().map(Record::encoded_len).collect();
        let runs = batch_runs(&records, 3, 130);
        let lens: Vec<usize> = runs.iter().map(|run| run.len()).collect();
        assert_eq!(lens, [2, 1, 3, 1], "a run ends at 3 records or before passing 130 bytes; a larger record goes alone");
        assert_eq!(runs.concat(), records);
        for run in &runs[..] {
            let bytes: usize = run.iter().map(Record::encoded_len).sum();
            assert!(run.len() == 1 || bytes <= 130, "{bytes} bytes in {} records ({sizes:?})", run.len());
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 1u64;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (state >> 33) as u8
                })
                .collect();
            let _ = decode_batch(&bytes);
        }
    }
}
