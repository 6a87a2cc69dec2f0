//! WAL recovery: read every segment, validate it, and decide what a damaged byte means.
//!
//! Decision table (also in docs/formats.md):
//!
//! | finding                                              | where                       | decision                      |
//! |------------------------------------------------------|-----------------------------|-------------------------------|
//! | segment header short or invalid, only zeros after it | last segment                | torn creation: remove file    |
//! | segment header invalid otherwise                     | any                         | Corrupt                       |
//! | segment name and header disagree                     | any                         | Corrupt                       |
//! | only zero bytes after the last batch                 | any segment                 | preallocated space: clean end |
//! | batch cut short by end of file                       | last segment                | torn tail: truncate           |
//! | batch checksum or field invalid, no valid batch after| last segment                | torn tail: truncate           |
//! | batch invalid and a valid batch follows it           | last segment                | Corrupt (damage mid-log)      |
//! | any batch defect                                     | earlier segment             | Corrupt (it was synced whole) |
//! | first index not the one expected                     | any                         | Corrupt (hole or reordering)  |
//!
//! Only the last segment can hold unsynced bytes: the writer syncs each batch before the
//! next and a segment's header before its first batch.

use std::sync::Arc;

use crate::env::Disk;
use crate::error::{Error, Result};

use super::record::{decode_batch, Record, BATCH_HEADER_BYTES, BATCH_MAGIC};
use super::writer::{decode_segment_header, segment_name, SEGMENT_HEADER_BYTES, WAL_DIR};

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Records with an index above the `skip_through` given to [`recover`], in order.
    pub records: Vec<Record>,
    /// First indexes of the segments kept, ascending.
    pub segments: Vec<u64>,
    /// Valid length of the last segment (after any torn tail was cut).
    pub last_len: u64,
    /// One past the last record in the log (0 when the log is empty).
    pub end_index: u64,
    /// Bytes cut from a torn tail, for the log line.
    pub torn_bytes: u64,
}

fn corrupt(name: &str, what: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("wal {name}: {what}"))
}

/// Reads the log, cuts a torn tail, and returns the records above `skip_through`.
pub fn recover(disk: &Arc<dyn Disk>, skip_through: u64) -> Result<Recovered> {
    let names = disk.list(WAL_DIR).map_err(|error| Error::storage("list wal", error))?;
    let mut firsts = Vec::new();
    for name in names {
        let Some(first) = name.strip_suffix(".wal").and_then(|stem| stem.parse::<u64>().ok()) else {
            continue;
        };
        firsts.push(first);
    }
    firsts.sort_unstable();
    let mut recovered = Recovered::default();
    let mut expected: Option<u64> = None;
    let mut cut_below_store: Option<(String, u64)> = None;
    for (position, first) in firsts.iter().copied().enumerate() {
        let is_last = position + 1 == firsts.len();
        let name = segment_name(first);
        let bytes = read_all(disk.as_ref(), &name)?;
        let Some((records, valid_len)) = scan_segment(&name, first, &bytes, is_last)? else {
            disk.remove(&name).map_err(|error| Error::storage("remove torn wal segment", error))?;
            continue;
        };
        if let Some(expected) = expected {
            if first > expected {
                return Err(corrupt(&name, format!("starts at index {first}, expected {expected}")));
            }
            if first < expected {
                // A cut (WalWriter::truncate_after): this segment supersedes what the older
                // ones hold from its first index on.
                // A cut at or below what the store holds is legal only if the log after it
                // reaches the store again (a member cuts above its commit index, then takes
                // and applies the new leader's records): checked once every segment is read.
                if first <= skip_through && cut_below_store.is_none() {
                    cut_below_store = Some((name.clone(), first));
                }
                recovered.records.retain(|record| record.index < first);
            }
        }
        let end = records.last().map_or(first, |record| record.index + 1);
        expected = Some(end);
        recovered.end_index = end;
        let tail = &bytes[valid_len as usize..];
        if !tail.iter().all(|byte| *byte == 0) {
            truncate(disk.as_ref(), &name, valid_len)?;
            recovered.torn_bytes = tail.len() as u64;
        }
        recovered.records.extend(records.into_iter().filter(|record| record.index > skip_through));
        recovered.segments.push(first);
        recovered.last_len = valid_len;
    }
    if let Some((name, first)) = cut_below_store {
        if recovered.end_index <= skip_through {
            return Err(corrupt(&name, format!("cuts the log at {first}, below what the store holds ({skip_through})")));
        }
    }
    if let Some(first) = recovered.records.first() {
        if first.index != skip_through + 1 {
            return Err(Error::Corrupt(format!(
                "wal resumes at index {} but the store holds through {skip_through}: records are missing",
                first.index
            )));
        }
    }
    Ok(recovered)
}

fn read_all(disk: &dyn Disk, name: &str) -> Result<Vec<u8>> {
    let file = disk.open(name, false).map_err(|error| Error::storage("open wal segment", error))?;
    let len = file.len().map_err(|error| Error::storage("stat wal segment", error))?;
    let mut bytes = vec![0; len as usize];
    file.read_at(0, &mut bytes).map_err(|error| Error::storage("read wal segment", error))?;
    Ok(bytes)
}

fn truncate(disk: &dyn Disk, name: &str, len: u64) -> Result<()> {
    let file = disk.open(name, false).map_err(|error| Error::storage("open wal segment", error))?;
    file.set_len(len).map_err(|error| Error::storage("truncate torn wal tail", error))?;
    file.sync_data().map_err(|error| Error::storage("sync truncated wal", error))
}

/// Validates one segment. `None` means a torn creation (the file should go).
fn scan_segment(name: &str, first: u64, bytes: &[u8], is_last: bool) -> Result<Option<(Vec<Record>, u64)>> {
    let header_first = match decode_segment_header(bytes) {
        Ok(header_first) => header_first,
        // Created (and preallocated) but its header never fully landed: nothing was written.
        Err(_) if is_last && bytes.iter().skip(SEGMENT_HEADER_BYTES).all(|byte| *byte == 0) => return Ok(None),
        Err(what) => return Err(corrupt(name, what)),
    };
    if header_first != first {
        return Err(corrupt(name, format!("header names index {header_first}")));
    }
    let mut records: Vec<Record> = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset < bytes.len() {
        match decode_batch(&bytes[offset..]) {
            Ok((batch, len)) => {
                let expected = records.last().map_or(first, |record| record.index + 1);
                if batch[0].index != expected {
                    return Err(corrupt(name, format!("batch at {offset} starts at index {}, expected {expected}", batch[0].index)));
                }
                records.extend(batch);
                offset += len;
            }
            Err(defect) => {
                if bytes[offset..].iter().all(|byte| *byte == 0) {
                    // Preallocated, never written: the log ends here, nothing was torn.
                    return Ok(Some((records, offset as u64)));
                }
                if !is_last {
                    return Err(corrupt(name, format!("{defect:?} at offset {offset} in a sealed segment")));
                }
                if let Some(later) = valid_batch_after(bytes, offset + 1) {
                    return Err(corrupt(name, format!("{defect:?} at offset {offset}, yet a valid batch follows at {later}")));
                }
                return Ok(Some((records, offset as u64)));
            }
        }
    }
    Ok(Some((records, offset as u64)))
}

/// The offset of any whole, valid batch at or after `from`.
fn valid_batch_after(bytes: &[u8], from: usize) -> Option<usize> {
    let magic = BATCH_MAGIC.to_le_bytes();
    let mut at = from;
    while at + BATCH_HEADER_BYTES <= bytes.len() {
        if bytes[at..at + 4] == magic && decode_batch(&bytes[at..]).is_ok() {
            return Some(at);
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{CrashMode, SimDisk};
    use crate::wal::Change;
    use crate::wal::{encode_batch, ChangeKind, RecordBody, WalWriter};

    fn txn(index: u64) -> Record {
        let change = Change { key: format!("k{index}").into_bytes(), kind: ChangeKind::Put { value: vec![7; 40], lease: 0 } };
        Record { index, body: RecordBody::Txn { revision: index as i64 + 1, changes: vec![change] } }
    }

    fn write_log(disk: &Arc<dyn Disk>, batches: u64, segment_bytes_max: u64) -> WalWriter {
        let mut writer = WalWriter::open(disk.clone(), Vec::new(), 0, 1, segment_bytes_max).unwrap();
        for index in 1..=batches {
            writer.append(&encode_batch(&[txn(index)]).unwrap(), index, 1).unwrap();
        }
        writer
    }

    #[test]
    fn reads_back_every_record_across_segments() {
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
        write_log(&disk, 50, 400);
        let recovered = recover(&disk, 0).unwrap();
        assert!(recovered.segments.len() > 3, "the small segment bound must rotate");
        assert_eq!(recovered.records, (1..=50).map(txn).collect::<Vec<_>>());
        assert_eq!(recover(&disk, 20).unwrap().records.first().unwrap().index, 21);
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_survives() {
        let sim = SimDisk::new();
        let disk: Arc<dyn Disk> = Arc::new(sim.clone());
        let writer = write_log(&disk, 5, 1 << 20);
        // An unsynced half-written batch at the end, as a crash mid-write leaves it.
        let batch = encode_batch(&[txn(6)]).unwrap();
        let file = disk.open(&segment_name(1), false).unwrap();
        let len = file.len().unwrap();
        file.write_at(len, &batch[..batch.len() / 2]).unwrap();
        drop(writer);
        sim.crash(CrashMode::Torn { seed: 3 });
        let recovered = recover(&disk, 0).unwrap();
        assert_eq!(recovered.records.len(), 5);
        assert_eq!(recovered.end_index, 6);
    }

    #[test]
    fn damage_before_a_valid_batch_is_corruption() {
        let sim = SimDisk::new();
        let disk: Arc<dyn Disk> = Arc::new(sim.clone());
        write_log(&disk, 5, 1 << 20);
        sim.flip_bit(&segment_name(1), SEGMENT_HEADER_BYTES as u64 + 40, 2).unwrap();
        let error = recover(&disk, 0).unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Corrupt, "{error}");
    }

    #[test]
    fn damage_in_a_sealed_segment_is_corruption() {
        let sim = SimDisk::new();
        let disk: Arc<dyn Disk> = Arc::new(sim.clone());
        write_log(&disk, 30, 400);
        let last_byte = sim.file_len(&segment_name(1)).unwrap() - 1;
        sim.flip_bit(&segment_name(1), last_byte, 0).unwrap();
        assert_eq!(recover(&disk, 0).unwrap_err().kind(), crate::ErrorKind::Corrupt);
    }

    #[test]
    fn preallocated_zeros_end_the_log_cleanly_and_a_torn_batch_before_them_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(crate::env::OsDisk::new(dir.path().to_path_buf()));
        let writer = write_log(&disk, 10, 1 << 20);
        drop(writer);
        let file = disk.open(&segment_name(1), false).unwrap();
        assert_eq!(file.len().unwrap(), 1 << 20, "segments are preallocated");
        let clean = recover(&disk, 0).unwrap();
        assert_eq!((clean.records.len(), clean.torn_bytes), (10, 0), "zeros after the last batch are not a torn tail");
        tracing::info!("--- half a batch lands in the preallocated space");
        let batch = encode_batch(&[txn(11)]).unwrap();
        file.write_at(clean.last_len, &batch[..batch.len() / 2]).unwrap();
        let torn = recover(&disk, 0).unwrap();
        assert_eq!(torn.records.len(), 10);
        assert!(torn.torn_bytes > 0);
        let reopened = WalWriter::open(disk.clone(), torn.segments, torn.last_len, 11, 1 << 20).unwrap();
        drop(reopened);
        assert_eq!(recover(&disk, 0).unwrap().torn_bytes, 0, "the cut tail is gone for good");
    }

    #[test]
    fn a_missing_segment_is_a_hole() {
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
        write_log(&disk, 30, 400);
        let segments = recover(&disk, 0).unwrap().segments;
        disk.remove(&segment_name(segments[1])).unwrap();
        assert_eq!(recover(&disk, 0).unwrap_err().kind(), crate::ErrorKind::Corrupt);
    }
}

#[cfg(test)]
mod truncation_tests {
    use super::*;
    use crate::env::{CrashMode, SimDisk};
    use crate::wal::{encode_batch, Change, ChangeKind, RecordBody, WalWriter};

    fn put(index: u64, value: u8) -> Record {
        let change = Change { key: format!("k{index}").into_bytes(), kind: ChangeKind::Put { value: vec![value; 40], lease: 0 } };
        Record { index, body: RecordBody::Txn { revision: index as i64 + 1, changes: vec![change] } }
    }

    /// Batches of three records (1..=3, 4..=6, ...) through `last`, written as `value`.
    fn write(writer: &mut WalWriter, from: u64, last: u64, value: u8) {
        let mut first = from;
        while first <= last {
            let records: Vec<Record> = (first..=(first + 2).min(last)).map(|index| put(index, value)).collect();
            writer.append(&encode_batch(&records).unwrap(), first, records.len() as u64).unwrap();
            first += records.len() as u64;
        }
    }

    fn values(records: &[Record]) -> Vec<(u64, u8)> {
        records
            .iter()
            .map(|record| match &record.body {
                RecordBody::Txn { changes, .. } => match &changes[0].kind {
                    ChangeKind::Put { value, .. } => (record.index, value[0]),
                    ChangeKind::Delete => unreachable!(),
                },
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_cut_inside_a_batch_keeps_what_is_below_and_the_new_tail_follows() {
        for segment_bytes_max in [1 << 20, 300] {
            let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
            let mut writer = WalWriter::open(disk.clone(), Vec::new(), 0, 1, segment_bytes_max).unwrap();
            write(&mut writer, 1, 9, b'o');
            writer.truncate_after(5).unwrap();
            assert_eq!(writer.next_index(), 6);
            write(&mut writer, 6, 7, b'n');
            let recovered = recover(&disk, 0).unwrap();
            let expected: Vec<(u64, u8)> = (1..=5).map(|i| (i, b'o')).chain((6..=7).map(|i| (i, b'n'))).collect();
            assert_eq!(values(&recovered.records), expected, "segments of {segment_bytes_max} bytes");
            // Reopened, it goes on after the new tail, and cuts again.
            let mut reopened = WalWriter::open(disk.clone(), recovered.segments, recovered.last_len, 8, segment_bytes_max).unwrap();
            reopened.truncate_after(2).unwrap();
            write(&mut reopened, 3, 4, b'x');
            let expected: Vec<(u64, u8)> = vec![(1, b'o'), (2, b'o'), (3, b'x'), (4, b'x')];
            assert_eq!(values(&recover(&disk, 0).unwrap().records), expected);
            // Old segments go once the store holds their records, superseded ones too.
            let recovered = recover(&disk, 0).unwrap();
            let mut reopened = WalWriter::open(disk.clone(), recovered.segments, recovered.last_len, 5, segment_bytes_max).unwrap();
            reopened.remove_through(4).unwrap();
            assert_eq!(recover(&disk, 4).unwrap().records, Vec::<Record>::new());
        }
    }

    #[test]
    fn a_crash_right_after_a_cut_leaves_the_cut_log() {
        for mode in [CrashMode::LoseUnsynced, CrashMode::Torn { seed: 7 }] {
            let sim = SimDisk::new();
            let disk: Arc<dyn Disk> = Arc::new(sim.clone());
            let mut writer = WalWriter::open(disk.clone(), Vec::new(), 0, 1, 300).unwrap();
            write(&mut writer, 1, 9, b'o');
            writer.truncate_after(4).unwrap();
            drop(writer);
            sim.crash(mode);
            let recovered = recover(&disk, 0).unwrap();
            assert_eq!(values(&recovered.records), (1..=4).map(|i| (i, b'o')).collect::<Vec<_>>(), "{mode:?}");
        }
    }

    #[test]
    fn power_failing_at_any_sync_of_a_cut_keeps_everything_up_to_the_cut() {
        use crate::env::SimDiskFaults;
        let mut seen = std::collections::BTreeSet::new();
        for after in 0..6 {
            let sim = SimDisk::new();
            let disk: Arc<dyn Disk> = Arc::new(sim.clone());
            let mut writer = WalWriter::open(disk.clone(), Vec::new(), 0, 1, 300).unwrap();
            write(&mut writer, 1, 9, b'o');
            sim.set_faults(SimDiskFaults { crash_on_sync: Some((after, CrashMode::LoseUnsynced)), ..Default::default() });
            let cut = writer.truncate_after(4);
            drop(writer);
            if cut.is_ok() {
                sim.crash(CrashMode::LoseUnsynced);
            }
            sim.set_faults(SimDiskFaults::default());
            // Everything up to the cut, then nothing or a prefix of the old tail (a tail that
            // was never committed: losing part of it is what the cut was for).
            let records = recover(&disk, 0).unwrap().records;
            let last = records.last().map_or(0, |record| record.index);
            assert!((4..=9).contains(&last), "power failed at sync {after}: the log ends at {last}");
            assert_eq!(values(&records), (1..=last).map(|i| (i, b'o')).collect::<Vec<_>>());
            seen.insert(last);
        }
        assert!(seen.contains(&4) && seen.len() > 1, "both a finished cut and an unfinished one happen: {seen:?}");
    }

    #[test]
    fn a_cut_below_what_the_store_holds_is_refused_at_recovery() {
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
        let mut writer = WalWriter::open(disk.clone(), Vec::new(), 0, 1, 1 << 20).unwrap();
        write(&mut writer, 1, 9, b'o');
        writer.truncate_after(3).unwrap();
        let error = recover(&disk, 6).unwrap_err();
        assert!(error.to_string().contains("below what the store holds"), "{error}");
        // Once the log after the cut reaches the store again (a member took the new
        // leader's records and applied them), the cut is history.
        write(&mut writer, 4, 8, b'n');
        let recovered = recover(&disk, 6).unwrap();
        assert_eq!(values(&recovered.records), vec![(7, b'n'), (8, b'n')]);
    }
}
