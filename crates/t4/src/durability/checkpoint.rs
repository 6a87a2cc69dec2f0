//! Checkpoints (docs/design.md §5): the store's whole history at one position, in the bucket.
//!
//! A checkpoint is the store's `kv_rev` entries in log order (each already checksummed),
//! cut into chunks at content-defined boundaries, each chunk an object `chunks/<sha256>`
//! named by the SHA-256 of its bytes, plus a manifest `checkpoint/<rev>/manifest` listing
//! them. A boundary falls after an entry when a hash of that entry alone says so, so it
//! does not depend on what came before: history that did not change since the last
//! checkpoint cuts into the same chunks, which are already in the bucket and are not
//! uploaded again. Restoring reads the chunks and rebuilds the indexes.
//!
//! Compaction removes old entries all over the history, which would change most chunks. So
//! a checkpoint keeps the previous checkpoint's chunks as they are, stale entries and all,
//! and adds chunks only for the history after it; the manifest says how many entries are
//! live, and a restore applies the compaction at the manifest's compact revision. Once the
//! kept chunks hold half again as many entries as the store does, the next checkpoint is
//! written afresh (and content-defined chunking still finds the unchanged stretches).
//!
//! A checkpoint is taken only at a position whose every record is in the bucket's log, so
//! it holds nothing but history, whoever writes it; its manifest is created only if absent.
//!
//! Formats (docs/formats.md, "Checkpoints"):
//! - chunk: magic `T4CHUNK1`, version (u32), entry count (u32), CRC32C of the payload (u32),
//!   then the payload: per entry its length (u32) and its bytes.
//! - manifest: magic `T4CKPT01`, version (u32), term, index, revision, compact revision,
//!   wall time in ms, entry count, live entry count, payload bytes (u64 each), chunk count
//!   (u32), then per
//!   chunk its SHA-256 (32 bytes), payload bytes (u64) and entry count (u32); then CRC32C of
//!   everything before it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use super::bucket::{list_all, object_error};
use super::format::FORMAT_VERSION;
use crate::auth::state::AuthState;
use crate::durability::layout;
use crate::env::{Clock, Condition, ObjectError, ObjectStore};
use crate::error::{Error, Result};
use crate::mvcc::{Position, Snapshot, Store};

const CHUNK_MAGIC: &[u8; 8] = b"T4CHUNK1";
const CHUNK_HEADER_BYTES: usize = 20;
pub(crate) const MANIFEST_MAGIC: &[u8; 8] = b"T4CKPT01";
const MANIFEST_FIXED_BYTES: usize = 8 + 4 + 8 * 8 + 4;
const MANIFEST_CHUNK_BYTES: usize = 32 + 8 + 4;

/// No boundary before a chunk holds this much; one at the first entry past the maximum.
const CHUNK_BYTES_MIN: usize = 64 * 1024;
const CHUNK_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Past the minimum, an entry of `n` bytes ends its chunk with probability `n / this`: chunks
/// average about `CHUNK_BYTES_MIN + this`.
const CHUNK_BOUNDARY_SPAN: u64 = 192 * 1024;
/// Entries read from the snapshot per step (bounds memory while exporting).
const EXPORT_STEP_BYTES: usize = 4 * 1024 * 1024;
/// Chunk uploads or downloads at once.
const TRANSFERS_IN_FLIGHT: usize = 8;

/// One chunk a manifest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRef {
    pub sha256: [u8; 32],
    /// Payload bytes (the entries with their length prefixes).
    pub bytes: u64,
    pub entries: u32,
}

impl ChunkRef {
    pub fn name(&self) -> String {
        layout::chunk(&self.sha256)
    }
}

/// A checkpoint's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The term of the node that wrote it (for humans: its content is history either way).
    pub term: u64,
    pub position: Position,
    pub wall_ms: u64,
    /// Entries in the chunks: more than `live_entries` when chunks of an earlier checkpoint
    /// were kept although compaction removed some of their entries since (a restore then
    /// applies the compaction).
    pub entries: u64,
    /// Entries the store held at this position.
    pub live_entries: u64,
    pub bytes: u64,
    pub chunks: Vec<ChunkRef>,
    /// The leases at this position: (id, granted TTL in seconds).
    pub leases: Vec<(i64, i64)>,
    /// Users, roles and whether auth is on, at this position.
    pub auth: AuthState,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MANIFEST_FIXED_BYTES + self.chunks.len() * MANIFEST_CHUNK_BYTES + 4);
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for field in [
            self.term,
            self.position.index,
            self.position.revision as u64,
            self.position.compact_revision as u64,
            self.wall_ms,
            self.entries,
            self.live_entries,
            self.bytes,
        ] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        for chunk in &self.chunks {
            out.extend_from_slice(&chunk.sha256);
            out.extend_from_slice(&chunk.bytes.to_le_bytes());
            out.extend_from_slice(&chunk.entries.to_le_bytes());
        }
        out.extend_from_slice(&(self.leases.len() as u32).to_le_bytes());
        for (id, ttl) in &self.leases {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&ttl.to_le_bytes());
        }
        let auth = self.auth.encode();
        out.extend_from_slice(&(auth.len() as u32).to_le_bytes());
        out.extend_from_slice(&auth);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(name: &str, bytes: &[u8]) -> Result<Self> {
        let corrupt = |what: &str| Error::Corrupt(format!("bucket object {name}: {what}"));
        if bytes.len() < MANIFEST_FIXED_BYTES + 4 {
            return Err(corrupt("shorter than a manifest"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc || &body[..8] != MANIFEST_MAGIC {
            return Err(corrupt("not a t4 checkpoint manifest (checksum or magic)"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        if u32_at(8) != FORMAT_VERSION {
            return Err(corrupt(&format!("manifest format {} is not {FORMAT_VERSION}", u32_at(8))));
        }
        let count = u32_at(MANIFEST_FIXED_BYTES - 4) as usize;
        let leases_at = MANIFEST_FIXED_BYTES.saturating_add(count.saturating_mul(MANIFEST_CHUNK_BYTES));
        // The lease list follows the chunks, then the auth state (manifests written before
        // leases, or auth, existed end before them: none).
        let (leases, auth_at) = if body.len() == leases_at {
            (Vec::new(), leases_at)
        } else {
            if body.len() < leases_at + 4 {
                return Err(corrupt("chunk list length does not match its count"));
            }
            let lease_count = u32_at(leases_at) as usize;
            let auth_at = (leases_at + 4).saturating_add(lease_count.saturating_mul(16));
            if body.len() < auth_at {
                return Err(corrupt("lease list length does not match its count"));
            }
            let leases = (0..lease_count)
                .map(|index| {
                    let at = leases_at + 4 + index * 16;
                    (u64_at(at) as i64, u64_at(at + 8) as i64)
                })
                .collect();
            (leases, auth_at)
        };
        let auth = if body.len() == auth_at {
            AuthState::default()
        } else {
            if body.len() < auth_at + 4 || body.len() != auth_at + 4 + u32_at(auth_at) as usize {
                return Err(corrupt("auth state length does not match"));
            }
            AuthState::decode(&body[auth_at + 4..]).map_err(|error| corrupt(&format!("auth state: {error}")))?
        };
        let chunks = (0..count)
            .map(|index| {
                let at = MANIFEST_FIXED_BYTES + index * MANIFEST_CHUNK_BYTES;
                ChunkRef { sha256: body[at..at + 32].try_into().expect("32 bytes"), bytes: u64_at(at + 32), entries: u32_at(at + 40) }
            })
            .collect();
        Ok(Self {
            term: u64_at(12),
            position: Position { index: u64_at(20), revision: u64_at(28) as i64, compact_revision: u64_at(36) as i64 },
            wall_ms: u64_at(44),
            entries: u64_at(52),
            live_entries: u64_at(60),
            bytes: u64_at(68),
            chunks,
            leases,
            auth,
        })
    }
}

/// A finished chunk: its object bytes and what the manifest says of it.
pub(crate) struct Chunk {
    pub(crate) object: Bytes,
    pub(crate) reference: ChunkRef,
}

pub(crate) fn encode_chunk(payload: &[u8], entries: u32) -> Chunk {
    let mut object = Vec::with_capacity(CHUNK_HEADER_BYTES + payload.len());
    object.extend_from_slice(CHUNK_MAGIC);
    object.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    object.extend_from_slice(&entries.to_le_bytes());
    object.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    object.extend_from_slice(payload);
    let sha256: [u8; 32] = Sha256::digest(&object).into();
    Chunk { object: Bytes::from(object), reference: ChunkRef { sha256, bytes: payload.len() as u64, entries } }
}

/// The entries of a chunk object, after checking that it is the chunk `reference` names.
pub fn decode_chunk(reference: &ChunkRef, object: &[u8]) -> Result<Vec<Vec<u8>>> {
    let name = reference.name();
    let corrupt = |what: &str| Error::Corrupt(format!("bucket object {name}: {what}"));
    let sha256: [u8; 32] = Sha256::digest(object).into();
    if sha256 != reference.sha256 {
        return Err(corrupt("its SHA-256 is not the one it is named by"));
    }
    if object.len() < CHUNK_HEADER_BYTES || &object[..8] != CHUNK_MAGIC {
        return Err(corrupt("not a t4 checkpoint chunk"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(object[at..at + 4].try_into().expect("4 bytes"));
    if u32_at(8) != FORMAT_VERSION {
        return Err(corrupt(&format!("chunk format {} is not {FORMAT_VERSION}", u32_at(8))));
    }
    let payload = &object[CHUNK_HEADER_BYTES..];
    if crc32c::crc32c(payload) != u32_at(16) || payload.len() as u64 != reference.bytes || u32_at(12) != reference.entries {
        return Err(corrupt("payload checksum, size or entry count mismatch"));
    }
    let mut entries = Vec::with_capacity(reference.entries as usize);
    let mut at = 0;
    while at < payload.len() {
        let len = payload.get(at..at + 4).map(|bytes| u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize);
        let entry = len.and_then(|len| payload.get(at + 4..at + 4 + len)).ok_or_else(|| corrupt("an entry runs past the end"))?;
        entries.push(entry.to_vec());
        at += 4 + entry.len();
    }
    if entries.len() != reference.entries as usize {
        return Err(corrupt("entry count mismatch"));
    }
    Ok(entries)
}

/// splitmix64's finaliser: spreads a CRC over 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Cuts a stream of entries into chunks. Whether a chunk ends after an entry depends on that
/// entry's bytes and on the chunk's length only (see the module docs).
#[derive(Default)]
struct Chunker {
    payload: Vec<u8>,
    entries: u32,
}

impl Chunker {
    fn push(&mut self, entry: &[u8]) -> Option<Chunk> {
        self.payload.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        self.payload.extend_from_slice(entry);
        self.entries += 1;
        let boundary = match self.payload.len() {
            len if len < CHUNK_BYTES_MIN => false,
            len if len >= CHUNK_BYTES_MAX => true,
            _ => mix(u64::from(crc32c::crc32c(entry)) | (entry.len() as u64) << 32) % CHUNK_BOUNDARY_SPAN < entry.len() as u64,
        };
        boundary.then(|| self.take())
    }

    fn finish(mut self) -> Option<Chunk> {
        (self.entries > 0).then(|| self.take())
    }

    fn take(&mut self) -> Chunk {
        let chunk = encode_chunk(&self.payload, self.entries);
        self.payload.clear();
        self.entries = 0;
        chunk
    }
}

/// What writing one checkpoint did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    pub revision: i64,
    pub index: u64,
    pub entries: u64,
    pub chunks: u64,
    /// Payload bytes of the whole checkpoint.
    pub bytes: u64,
    pub chunks_uploaded: u64,
    /// Chunks kept from the previous checkpoint without looking at them.
    pub chunks_reused: u64,
    /// Object bytes actually sent (new chunks and the manifest).
    pub bytes_uploaded: u64,
    /// A checkpoint at this revision was already there (nothing written).
    pub existed: bool,
    pub elapsed: Duration,
}

/// Writes a checkpoint of `snapshot` (whose every record must already be in the bucket's
/// log). Chunks already in the bucket are not sent again. `previous` is the newest complete
/// checkpoint in the bucket, if any: its chunks are kept as they are (see the module docs).
/// `present` is a listing of the chunks in the bucket.
pub async fn write(
    store: &Arc<dyn ObjectStore>,
    snapshot: Arc<Snapshot>,
    term: u64,
    clock: &Arc<dyn Clock>,
    present: &BTreeSet<String>,
    previous: Option<Manifest>,
) -> Result<CheckpointReport> {
    let started = clock.monotonic();
    let position = snapshot.position;
    let manifest_name = layout::checkpoint_manifest(position.revision as u64);
    let mut report = CheckpointReport { revision: position.revision, index: position.index, ..CheckpointReport::default() };
    if let Some(existing) = read_manifest_if_any(store.as_ref(), position.revision as u64).await? {
        tracing::debug!(revision = position.revision, index = existing.position.index, "checkpoint: one at this revision exists");
        report.existed = true;
        return Ok(report);
    }
    let counted = snapshot.clone();
    let live = crate::env::blocking(move || counted.entry_count()).await?;
    let mut chunker = Chunker::default();
    let leased = snapshot.clone();
    let (leases, auth) = crate::env::blocking(move || Ok::<_, Error>((leased.leases()?, leased.auth_state()?))).await?;
    let mut manifest =
        Manifest { term, position, wall_ms: clock.wall_ms(), entries: 0, live_entries: live, bytes: 0, chunks: Vec::new(), leases, auth };
    let mut cursor = None;
    let kept = previous.filter(|previous| {
        previous.position.revision <= position.revision
            && previous.position.index <= position.index
            && previous.position.compact_revision <= position.compact_revision
            && previous.entries <= live + live / 2
    });
    if let Some(previous) = kept {
        manifest.entries = previous.entries;
        manifest.bytes = previous.bytes;
        manifest.chunks = previous.chunks;
        cursor = Some((previous.position.revision as u64, u32::MAX));
        report.chunks_reused = manifest.chunks.len() as u64;
    }
    loop {
        let step = snapshot.clone();
        let (entries, last) = crate::env::blocking(move || step.entries_after(cursor, EXPORT_STEP_BYTES)).await?;
        let done = entries.is_empty();
        let mut finished: Vec<Chunk> = Vec::new();
        for entry in &entries {
            finished.extend(chunker.push(entry));
        }
        if done {
            finished.extend(std::mem::take(&mut chunker).finish());
        }
        manifest.entries += entries.len() as u64;
        cursor = last;
        let pending: Vec<(String, Bytes)> = finished
            .iter()
            .map(|chunk| (chunk.reference.name(), chunk.object.clone()))
            .filter(|(name, _)| !present.contains(name))
            .collect();
        let uploads = pending.into_iter().map(|(name, object)| {
            let store = store.clone();
            async move {
                let sent = object.len() as u64;
                match store.put(&name, object, Condition::IfNoneMatch).await {
                    // Named by content: one already there (uploaded by a checkpoint
                    // interrupted before its manifest) holds the same bytes.
                    Ok(_) | Err(ObjectError::PreconditionFailed(_)) => Ok(sent),
                    Err(error) => Err(object_error(&format!("upload {name}"), error)),
                }
            }
        });
        let sent: Vec<u64> = futures::stream::iter(uploads).buffer_unordered(TRANSFERS_IN_FLIGHT).try_collect().await?;
        report.chunks_uploaded += sent.len() as u64;
        report.bytes_uploaded += sent.iter().sum::<u64>();
        for chunk in finished {
            manifest.bytes += chunk.reference.bytes;
            manifest.chunks.push(chunk.reference);
        }
        if done {
            break;
        }
    }
    let body = Bytes::from(manifest.encode());
    report.bytes_uploaded += body.len() as u64;
    match store.put(&manifest_name, body, Condition::IfNoneMatch).await {
        Ok(_) => {}
        Err(ObjectError::PreconditionFailed(_)) => report.existed = true,
        Err(error) => return Err(object_error(&format!("write {manifest_name}"), error)),
    }
    report.entries = manifest.entries;
    report.chunks = manifest.chunks.len() as u64;
    report.bytes = manifest.bytes;
    report.elapsed = clock.monotonic().saturating_sub(started);
    Ok(report)
}

async fn read_manifest_if_any(store: &dyn ObjectStore, revision: u64) -> Result<Option<Manifest>> {
    let name = layout::checkpoint_manifest(revision);
    match store.get(&name).await {
        Ok((bytes, _)) => Manifest::decode(&name, &bytes).map(Some),
        Err(ObjectError::NotFound(_)) => Ok(None),
        Err(error) => Err(object_error(&format!("read {name}"), error)),
    }
}

/// Revisions of every checkpoint manifest in the bucket, ascending.
pub async fn list(store: &dyn ObjectStore) -> Result<Vec<u64>> {
    Ok(list_all(store, layout::CHECKPOINT_DIR).await?.iter().filter_map(|name| layout::parse_checkpoint_manifest(name)).collect())
}

pub async fn read_manifest(store: &dyn ObjectStore, revision: u64) -> Result<Manifest> {
    read_manifest_if_any(store, revision).await?.ok_or_else(|| Error::Corrupt(format!("{} is gone", layout::checkpoint_manifest(revision))))
}

/// The checkpoints whose every chunk is in the bucket (`chunks` is a listing of them),
/// newest first. One that misses a chunk was interrupted, or lost a race with GC: it is
/// passed over, never half used.
pub async fn complete(store: &dyn ObjectStore, chunks: &BTreeSet<String>) -> Result<Vec<Manifest>> {
    let mut found = Vec::new();
    for (manifest, complete) in manifests(store, chunks).await? {
        if complete {
            found.push(manifest);
        } else {
            tracing::warn!(revision = manifest.position.revision, "checkpoint: a chunk of this checkpoint is missing; passing it over");
        }
    }
    Ok(found)
}

/// Every checkpoint manifest, newest first, and whether all its chunks are in `chunks` (a
/// listing of them).
pub async fn manifests(store: &dyn ObjectStore, chunks: &BTreeSet<String>) -> Result<Vec<(Manifest, bool)>> {
    let mut found = Vec::new();
    for revision in list(store).await?.into_iter().rev() {
        let manifest = read_manifest(store, revision).await?;
        let complete = manifest.chunks.iter().all(|chunk| chunks.contains(&chunk.name()));
        found.push((manifest, complete));
    }
    Ok(found)
}

/// Replaces the content of `target` with the checkpoint `manifest` describes. Every chunk
/// is checked against its SHA-256 and every entry against its own checksum first; the store
/// changes in one transaction.
pub async fn restore(store: &Arc<dyn ObjectStore>, manifest: &Manifest, target: &Arc<Store>) -> Result<()> {
    let reads = manifest.chunks.clone().into_iter().map(|chunk| {
        let store = store.clone();
        async move {
            let name = chunk.name();
            let (object, _) = store.get(&name).await.map_err(|error| object_error(&format!("read {name}"), error))?;
            Ok::<_, Error>((chunk, object))
        }
    });
    let objects: Vec<(ChunkRef, Bytes)> = futures::stream::iter(reads).buffered(TRANSFERS_IN_FLIGHT).try_collect().await?;
    let (position, target, leases, auth) = (manifest.position, target.clone(), manifest.leases.clone(), manifest.auth.clone());
    let compact = manifest.entries != manifest.live_entries;
    crate::env::blocking(move || {
        let mut entries = objects.iter().flat_map(|(reference, object)| match decode_chunk(reference, object) {
            Ok(entries) => entries.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(error) => vec![Err(error)],
        });
        target.restore(position, &mut entries, compact, &leases, &auth, None)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seed: u64, len: usize) -> Vec<u8> {
        (0..len).map(|at| (mix(seed * 1000 + at as u64) & 0xff) as u8).collect()
    }

    fn cut(entries: &[Vec<u8>]) -> Vec<ChunkRef> {
        let mut chunker = Chunker::default();
        let mut chunks: Vec<ChunkRef> = entries.iter().filter_map(|entry| chunker.push(entry)).map(|chunk| chunk.reference).collect();
        chunks.extend(chunker.finish().map(|chunk| chunk.reference));
        chunks
    }

    #[test]
    fn boundaries_follow_content_so_unchanged_history_gives_the_same_chunks() {
        let entries: Vec<Vec<u8>> = (0..20_000).map(|seed| entry(seed, 60 + (seed as usize % 200))).collect();
        let first = cut(&entries);
        let total: u64 = first.iter().map(|chunk| chunk.bytes).sum();
        assert!(first.len() > 5, "{} chunks for {total} bytes", first.len());
        assert!(first.iter().all(|chunk| chunk.bytes <= (CHUNK_BYTES_MAX + 300) as u64));
        // History grows at the end and loses a few entries in the middle (compaction).
        let mut changed = entries.clone();
        changed.remove(10_000);
        changed.extend((20_000..20_200).map(|seed| entry(seed, 100)));
        let second = cut(&changed);
        let old: BTreeSet<[u8; 32]> = first.iter().map(|chunk| chunk.sha256).collect();
        let new_bytes: u64 = second.iter().filter(|chunk| !old.contains(&chunk.sha256)).map(|chunk| chunk.bytes).sum();
        assert!(new_bytes * 4 < total, "only the chunks around the changes are new: {new_bytes} of {total}");
    }

    #[test]
    fn chunks_and_manifests_round_trip_and_refuse_damage() {
        let entries: Vec<Vec<u8>> = (0..10).map(|seed| entry(seed, 50)).collect();
        let mut payload = Vec::new();
        for entry in &entries {
            payload.extend_from_slice(&(entry.len() as u32).to_le_bytes());
            payload.extend_from_slice(entry);
        }
        let chunk = encode_chunk(&payload, entries.len() as u32);
        assert_eq!(decode_chunk(&chunk.reference, &chunk.object).unwrap(), entries);
        for at in [0, 9, 13, 17, 25, chunk.object.len() - 1] {
            let mut damaged = chunk.object.to_vec();
            damaged[at] ^= 0x10;
            assert!(decode_chunk(&chunk.reference, &damaged).is_err(), "flip at {at}");
        }
        let manifest = Manifest {
            term: 3,
            position: Position { index: 77, revision: 70, compact_revision: 12 },
            wall_ms: 1234,
            entries: 10,
            live_entries: 9,
            bytes: payload.len() as u64,
            chunks: vec![chunk.reference.clone(), chunk.reference],
            leases: vec![(7, 60), (-3, 2)],
            auth: {
                let mut auth = AuthState::default();
                auth.apply(&crate::auth::state::AuthChange::UserAdd { name: "root".into(), password: Some("hash".into()) }).unwrap();
                auth
            },
        };
        let bytes = manifest.encode();
        assert_eq!(Manifest::decode("m", &bytes).unwrap(), manifest);
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert!(Manifest::decode("m", &damaged).is_err(), "flip at {at}");
        }
        assert!(Manifest::decode("m", &bytes[..bytes.len() - 10]).is_err());
        // A manifest written before auth existed ends after its leases: no users, auth off.
        let auth_bytes = manifest.auth.encode().len() + 4;
        let mut older = bytes[..bytes.len() - 4 - auth_bytes].to_vec();
        older.extend_from_slice(&crc32c::crc32c(&older).to_le_bytes());
        assert_eq!(Manifest::decode("m", &older).unwrap(), Manifest { auth: AuthState::default(), ..manifest });
    }
}
