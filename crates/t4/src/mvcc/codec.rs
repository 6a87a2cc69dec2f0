//! StoredKv: one key's entry at one revision, and its byte encoding (docs/formats.md).

use crate::error::{Error, Result};
use t4_proto::mvccpb::KeyValue;

/// Encoding version of an entry; bump with a reader for the old one.
const ENTRY_FORMAT: u8 = 1;
const FLAG_TOMBSTONE: u8 = 1;
/// Where the CRC32C sits; it covers every other byte of the entry. redb checks its own
/// structure but not the bytes of a value, so a flipped bit in a page would otherwise be
/// served as data.
const CRC_AT: usize = 1 + 1 + 4 + 8 * 4 + 4;
const HEADER_BYTES: usize = CRC_AT + 4;

fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&bytes[..CRC_AT]), &bytes[HEADER_BYTES..])
}

/// Checks length, format and checksum before any field is read.
fn verify(bytes: &[u8]) -> Result<()> {
    let corrupt = |what: &str| Err(Error::Corrupt(format!("store entry: {what}")));
    if bytes.len() < HEADER_BYTES {
        return corrupt("shorter than its header");
    }
    if bytes[0] != ENTRY_FORMAT {
        return corrupt(&format!("unknown format {}", bytes[0]));
    }
    let stored = u32::from_le_bytes(bytes[CRC_AT..HEADER_BYTES].try_into().expect("4 bytes"));
    if stored != checksum(bytes) {
        return corrupt("checksum mismatch");
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKv {
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// Writes since creation; a tombstone has version 0.
    pub version: i64,
    pub lease: i64,
    /// Position of this change within its txn (op order).
    pub sub: u32,
    pub tombstone: bool,
    pub value: Vec<u8>,
}

/// The encoded length of an entry with a key and a value of these lengths.
pub fn stored_len_of(key_bytes: usize, value_bytes: usize) -> usize {
    HEADER_BYTES + key_bytes + value_bytes
}

impl StoredKv {
    /// Decodes an entry that must be the one filed at `(key, revision, sub)`; any other is
    /// corruption (a flipped key or a misdirected write in the store file).
    pub fn decode_expected(bytes: &[u8], key: Option<&[u8]>, revision: Option<(u64, u32)>) -> Result<Self> {
        let entry = Self::decode(bytes)?;
        let key_matches = key.is_none_or(|key| entry.key == key);
        let revision_matches = revision.is_none_or(|(revision, sub)| entry.mod_revision as u64 == revision && entry.sub == sub);
        if !key_matches || !revision_matches {
            return Err(Error::Corrupt(format!("store entry at revision {} is filed in the wrong place", entry.mod_revision)));
        }
        Ok(entry)
    }

    pub fn to_key_value(&self, keys_only: bool) -> KeyValue {
        debug_assert!(!self.tombstone, "a tombstone is never returned as a live key");
        KeyValue {
            key: self.key.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: if keys_only { Vec::new() } else { self.value.clone() },
            lease: self.lease,
        }
    }

    /// The event form of a deletion: only key and mod_revision, as etcd sends it.
    pub fn to_delete_event_kv(&self) -> KeyValue {
        KeyValue { key: self.key.clone(), mod_revision: self.mod_revision, ..Default::default() }
    }

    /// The length of [`StoredKv::encode`]'s output.
    pub fn stored_len(&self) -> usize {
        stored_len_of(self.key.len(), self.value.len())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.key.len() + self.value.len());
        out.push(ENTRY_FORMAT);
        out.push(if self.tombstone { FLAG_TOMBSTONE } else { 0 });
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        for number in [self.create_revision, self.mod_revision, self.version, self.lease] {
            out.extend_from_slice(&number.to_le_bytes());
        }
        out.extend_from_slice(&self.sub.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.value);
        let crc = checksum(&out);
        out[CRC_AT..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
        debug_assert!(verify(&out).is_ok());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        verify(bytes)?;
        let corrupt = |what: &str| Error::Corrupt(format!("store entry: {what}"));
        let flags = bytes[1];
        if flags & !FLAG_TOMBSTONE != 0 {
            return Err(corrupt("unknown flags"));
        }
        let key_len = u32::from_le_bytes(bytes[2..6].try_into().expect("4 bytes")) as usize;
        let number = |index: usize| {
            let start = 6 + index * 8;
            i64::from_le_bytes(bytes[start..start + 8].try_into().expect("8 bytes"))
        };
        let sub = u32::from_le_bytes(bytes[38..42].try_into().expect("4 bytes"));
        if bytes.len() < HEADER_BYTES + key_len {
            return Err(corrupt("key runs past the entry"));
        }
        let entry = StoredKv {
            key: bytes[HEADER_BYTES..HEADER_BYTES + key_len].to_vec(),
            create_revision: number(0),
            mod_revision: number(1),
            version: number(2),
            lease: number(3),
            sub,
            tombstone: flags & FLAG_TOMBSTONE != 0,
            value: bytes[HEADER_BYTES + key_len..].to_vec(),
        };
        if entry.key.is_empty() || entry.mod_revision < 2 {
            return Err(corrupt("empty key or impossible revision"));
        }
        Ok(entry)
    }
}

/// `(mod_revision, tombstone)` of an encoded entry filed under `key`, without copying key
/// or value. The entry must be intact and carry that key.
pub fn peek_revision(bytes: &[u8], key: &[u8]) -> Result<(i64, bool)> {
    verify(bytes)?;
    let key_len = u32::from_le_bytes(bytes[2..6].try_into().expect("4 bytes")) as usize;
    if bytes.get(HEADER_BYTES..HEADER_BYTES + key_len) != Some(key) {
        return Err(Error::Corrupt("store entry filed under another key".into()));
    }
    let mod_revision = i64::from_le_bytes(bytes[14..22].try_into().expect("8 bytes"));
    Ok((mod_revision, bytes[1] & FLAG_TOMBSTONE != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let entry = StoredKv {
            key: b"k".to_vec(),
            create_revision: 2,
            mod_revision: 5,
            version: 3,
            lease: 7,
            sub: 1,
            tombstone: false,
            value: b"value".to_vec(),
        };
        assert_eq!(StoredKv::decode(&entry.encode()).unwrap(), entry);
        assert!(StoredKv::decode(&[9; 10]).is_err());
        let mut bad = entry.encode();
        bad[0] = 2;
        assert!(StoredKv::decode(&bad).is_err());
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let entry = StoredKv {
            key: b"key".to_vec(),
            create_revision: 2,
            mod_revision: 9,
            version: 4,
            lease: 0,
            sub: 0,
            tombstone: false,
            value: b"some value".to_vec(),
        };
        let encoded = entry.encode();
        for index in 0..encoded.len() * 8 {
            let mut flipped = encoded.clone();
            flipped[index / 8] ^= 1 << (index % 8);
            assert!(StoredKv::decode(&flipped).is_err(), "bit {index} flipped went unnoticed");
            assert!(peek_revision(&flipped, b"key").is_err(), "bit {index} flipped went unnoticed by peek");
        }
        assert!(peek_revision(&encoded, b"other").is_err(), "an entry filed under another key is corrupt");
    }
}
