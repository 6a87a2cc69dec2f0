//! The peer protocol's messages (`proto/proto/peer.proto`) to and from the replication state
//! machines' types. Everything from a peer is checked before it is believed: a batch whose
//! bytes do not decode to the records its header names, batches that are not dense from the
//! append's `prev`, or terms that go back are refused with a clear error, never applied.

use t4_proto::peer::{AppendRequest, AppendResponse, LogBatch, LogPosition, PromiseResponse};

use super::log_terms::Position;
use super::replica::{Append, BatchMeta};
use crate::error::{Error, Result};
use crate::wal::{decode_batch, Record};

impl From<LogPosition> for Position {
    fn from(position: LogPosition) -> Self {
        Position { index: position.index, term: position.term }
    }
}

impl From<Position> for LogPosition {
    fn from(position: Position) -> Self {
        LogPosition { index: position.index, term: position.term }
    }
}

/// An append as received: its plan-able outline and each batch's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedAppend {
    pub append: Append,
    /// Per batch of `append.batches`, its records and the bytes they came in (written to the
    /// local log as they are).
    pub records: Vec<(Vec<Record>, Vec<u8>)>,
}

fn refused(what: String) -> Error {
    Error::InvalidArgument(format!("peer append refused: {what}"))
}

/// Checks and decodes a leader's append.
pub fn receive_append(request: AppendRequest) -> Result<ReceivedAppend> {
    let prev: Position = request.prev.unwrap_or_default().into();
    if prev.term > request.term {
        return Err(refused(format!("prev term {} is newer than the leader's term {}", prev.term, request.term)));
    }
    let mut next = prev.index + 1;
    let mut term = prev.term;
    let mut batches = Vec::with_capacity(request.batches.len());
    let mut records = Vec::with_capacity(request.batches.len());
    for LogBatch { term: batch_term, first_index, count, wal_bytes } in request.batches {
        if first_index != next || count == 0 {
            return Err(refused(format!("a batch of {count} records from {first_index}, expected records from {next}")));
        }
        if batch_term < term || batch_term > request.term {
            return Err(refused(format!("a batch of term {batch_term} after term {term} in an append of term {}", request.term)));
        }
        let (decoded, len) = decode_batch(&wal_bytes).map_err(|defect| refused(format!("a batch that does not decode: {defect:?}")))?;
        if len != wal_bytes.len() || decoded.first().map(|record| record.index) != Some(first_index) || decoded.len() as u64 != count {
            return Err(refused(format!("a batch whose bytes do not hold records {first_index}..+{count}")));
        }
        batches.push(BatchMeta { term: batch_term, first: first_index, count });
        records.push((decoded, wal_bytes));
        next = first_index + count;
        term = batch_term;
    }
    let append = Append { term: request.term, prev, batches, commit: request.commit_index };
    Ok(ReceivedAppend { append, records })
}

/// The answer to an append: taken through `durable`, or refused with where to resend from.
pub fn append_response(term: u64, outcome: std::result::Result<Position, u64>) -> AppendResponse {
    match outcome {
        Ok(durable) => AppendResponse { term, accepted: true, durable: Some(durable.into()), mismatch_index: 0 },
        Err(from) => AppendResponse { term, accepted: false, durable: None, mismatch_index: from },
    }
}

/// The answer to a promise request: promised with the last position, or the newer term.
pub fn promise_response(outcome: std::result::Result<(u64, Position), u64>, commit: u64) -> PromiseResponse {
    match outcome {
        Ok((term, last)) => PromiseResponse { term, promised: true, last: Some(last.into()), commit_index: commit },
        Err(newer) => PromiseResponse { term: newer, promised: false, last: None, commit_index: commit },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{encode_batch, Change, ChangeKind, RecordBody};

    fn put(index: u64) -> Record {
        let change = Change { key: format!("k{index}").into_bytes(), kind: ChangeKind::Put { value: b"v".to_vec(), lease: 0 } };
        Record { index, body: RecordBody::Txn { revision: index as i64 + 1, changes: vec![change] } }
    }

    fn batch(term: u64, first: u64, count: u64) -> LogBatch {
        let records: Vec<Record> = (first..first + count).map(put).collect();
        LogBatch { term, first_index: first, count, wal_bytes: encode_batch(&records).unwrap() }
    }

    fn request(term: u64, prev: (u64, u64), batches: Vec<LogBatch>) -> AppendRequest {
        AppendRequest {
            term,
            leader_id: "a".into(),
            prev: Some(LogPosition { index: prev.0, term: prev.1 }),
            batches,
            commit_index: 3,
            ..Default::default()
        }
    }

    #[test]
    fn a_well_formed_append_decodes_to_its_outline_and_records() {
        let received = receive_append(request(5, (2, 4), vec![batch(4, 3, 2), batch(5, 5, 1)])).unwrap();
        assert_eq!(received.append.prev, Position { index: 2, term: 4 });
        assert_eq!(received.append.batches, vec![BatchMeta { term: 4, first: 3, count: 2 }, BatchMeta { term: 5, first: 5, count: 1 }]);
        assert_eq!(received.records[1].0, vec![put(5)]);
        let heartbeat = receive_append(request(5, (9, 5), Vec::new())).unwrap();
        assert!(heartbeat.append.batches.is_empty());
    }

    #[test]
    fn malformed_appends_are_refused_with_what_is_wrong() {
        let refusal = |request: AppendRequest| receive_append(request).unwrap_err().to_string();
        assert!(refusal(request(5, (2, 4), vec![batch(4, 4, 1)])).contains("expected records from 3"), "a gap");
        assert!(refusal(request(5, (2, 4), vec![batch(3, 3, 1)])).contains("term 3 after term 4"), "terms back");
        assert!(refusal(request(5, (2, 4), vec![batch(6, 3, 1)])).contains("append of term 5"), "a term from the future");
        assert!(refusal(request(3, (2, 4), vec![])).contains("newer than the leader's term"));
        let mut lying = batch(4, 3, 2);
        lying.count = 3;
        assert!(refusal(request(5, (2, 4), vec![lying])).contains("do not hold records 3..+3"));
        let mut damaged = batch(4, 3, 2);
        let mut bytes = damaged.wal_bytes.clone();
        bytes[40] ^= 1;
        damaged.wal_bytes = bytes;
        assert!(refusal(request(5, (2, 4), vec![damaged])).contains("does not decode"));
        let mut shifted = batch(4, 3, 2);
        shifted.wal_bytes = batch(4, 7, 2).wal_bytes;
        assert!(refusal(request(5, (2, 4), vec![shifted])).contains("do not hold records"));
    }

    #[test]
    fn answers_carry_the_position_or_where_to_resend_from() {
        let taken = append_response(5, Ok(Position { index: 9, term: 5 }));
        assert!(taken.accepted && taken.durable == Some(LogPosition { index: 9, term: 5 }));
        let refused = append_response(6, Err(4));
        assert!(!refused.accepted && refused.mismatch_index == 4 && refused.term == 6);
        let promised = promise_response(Ok((7, Position { index: 3, term: 2 })), 3);
        assert!(promised.promised && promised.term == 7 && promised.commit_index == 3);
        assert!(!promise_response(Err(9), 3).promised);
    }
}
