//! FsObjectStore: a bucket in a local (or shared) directory, for tests and for users whose
//! durable storage is a filesystem rather than S3.
//!
//! Each object is one file: a 28-byte header (magic `t4fsobj1`, the MD5 of the body, which is
//! the ETag as in S3, and the body's CRC32C) then the body. Writes go to a temporary file in
//! the same directory, are fsynced, and then appear atomically: create-only by `link(2)`,
//! which fails if the name exists; the rest by `rename(2)`; the directory is fsynced after.
//! Every write and delete holds an exclusive `flock` on `<root>/.lock` while it checks its
//! condition and swaps the file in, so conditions are atomic between tasks and between
//! processes on one machine (on network filesystems only where `flock` is honoured).
//!
//! Key to path: keys are split at `/`; each component is percent-encoded (everything but
//! ASCII letters, digits, `-` and `_`; an empty component is a lone `%`); the last one names
//! the file with a `~` appended. So `a` and `a/b` never collide (`a~` and `a/b~`), and no key
//! escapes the root.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5};

use t4_env::{Condition, ObjectError, ObjectInfo, ObjectStore, PutOutcome};

const MAGIC: &[u8; 8] = b"t4fsobj1";
const HEADER_BYTES: u64 = 28;
const LOCK_FILE: &str = ".lock";
const TEMP_DIR: &str = ".tmp";

#[derive(Debug, Clone)]
pub struct FsObjectStore {
    root: PathBuf,
}

impl FsObjectStore {
    /// Uses (and creates) `root` as the bucket.
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join(TEMP_DIR))?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> PathBuf {
        let mut path = self.root.clone();
        let components: Vec<&str> = key.split('/').collect();
        for (index, component) in components.iter().enumerate() {
            let mut name = encode(component);
            if index + 1 == components.len() {
                name.push('~');
            }
            path.push(name);
        }
        path
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(FsObjectStore) -> Result<T, ObjectError> + Send + 'static,
    ) -> Result<T, ObjectError> {
        let store = self.clone();
        t4_env::blocking(move || work(store)).await
    }

    /// Holds the store's write lock until the returned file is dropped.
    fn lock(&self) -> Result<File, ObjectError> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(self.root.join(LOCK_FILE)).map_err(io_error)?;
        file.lock().map_err(io_error)?;
        Ok(file)
    }

    /// The ETag of `key`, or `None` if it does not exist.
    fn current_etag(&self, key: &str) -> Result<Option<String>, ObjectError> {
        match File::open(self.path(key)) {
            Ok(mut file) => Ok(Some(read_header(&mut file, key)?.0)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(error)),
        }
    }

    /// Writes `body` to a synced temporary file; returns its path and the ETag.
    fn stage(&self, body: &[u8]) -> Result<(PathBuf, String), ObjectError> {
        let md5: [u8; 16] = Md5::digest(body).into();
        let temp = self.root.join(TEMP_DIR).join(format!("{}-{}", std::process::id(), unique()));
        let mut file = OpenOptions::new().create_new(true).write(true).open(&temp).map_err(io_error)?;
        let mut record = Vec::with_capacity(HEADER_BYTES as usize + body.len());
        record.extend_from_slice(MAGIC);
        record.extend_from_slice(&md5);
        record.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        record.extend_from_slice(body);
        file.write_all(&record).and_then(|()| file.sync_all()).map_err(|error| {
            let _ = std::fs::remove_file(&temp);
            io_error(error)
        })?;
        Ok((temp, etag_of(&md5)))
    }
}

/// A process-wide counter for temporary names (with the pid, unique across processes).
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn encode(component: &str) -> String {
    if component.is_empty() {
        return "%".to_string();
    }
    let mut out = String::with_capacity(component.len());
    for byte in component.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn decode(name: &str) -> Option<String> {
    if name == "%" {
        return Some(String::new());
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = name.get(at + 1..at + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn etag_of(md5: &[u8; 16]) -> String {
    let hex: String = md5.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("\"{hex}\"")
}

fn io_error(error: std::io::Error) -> ObjectError {
    ObjectError::Other(format!("fs object store: {error}"))
}

fn corrupt(key: &str, what: &str) -> ObjectError {
    ObjectError::Corrupt(format!("{key}: {what}"))
}

/// Reads the header: the ETag, the body's CRC32C and the body's length.
fn read_header(file: &mut File, key: &str) -> Result<(String, u32, u64), ObjectError> {
    let mut header = [0u8; HEADER_BYTES as usize];
    file.read_exact(&mut header).map_err(|_| corrupt(key, "object file shorter than its header"))?;
    if &header[..8] != MAGIC {
        return Err(corrupt(key, "not an object file (bad magic)"));
    }
    let md5: [u8; 16] = header[8..24].try_into().expect("16 bytes");
    let crc = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes"));
    let len = file.seek(SeekFrom::End(0)).map_err(io_error)? - HEADER_BYTES;
    Ok((etag_of(&md5), crc, len))
}

fn open(path: &Path, key: &str) -> Result<File, ObjectError> {
    File::open(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => ObjectError::NotFound(key.to_string()),
        _ => io_error(error),
    })
}

fn sync_dir(path: &Path) -> Result<(), ObjectError> {
    File::open(path).and_then(|dir| dir.sync_all()).map_err(io_error)
}

/// Creates the directories of `path` that are missing, syncing each parent.
fn make_parents(root: &Path, path: &Path) -> Result<(), ObjectError> {
    let parent = path.parent().expect("object paths have a parent");
    if parent.exists() {
        return Ok(());
    }
    let mut at = root.to_path_buf();
    for component in parent.strip_prefix(root).expect("under the root").components() {
        let next = at.join(component);
        match std::fs::create_dir(&next) {
            Ok(()) => sync_dir(&at)?,
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(io_error(error)),
        }
        at = next;
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for FsObjectStore {
    async fn get(&self, key: &str) -> Result<(Bytes, String), ObjectError> {
        let key = key.to_string();
        self.run(move |store| {
            let mut file = open(&store.path(&key), &key)?;
            let (etag, crc, len) = read_header(&mut file, &key)?;
            let mut body = vec![0u8; len as usize];
            file.read_exact_at(&mut body, HEADER_BYTES).map_err(io_error)?;
            if crc32c::crc32c(&body) != crc {
                return Err(corrupt(&key, "body checksum mismatch"));
            }
            Ok((Bytes::from(body), etag))
        })
        .await
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, ObjectError> {
        let key = key.to_string();
        self.run(move |store| {
            let mut file = open(&store.path(&key), &key)?;
            let (_, _, len) = read_header(&mut file, &key)?;
            if start > end || end > len {
                return Err(ObjectError::Other(format!("invalid range {start}..{end} of {key} ({len} bytes)")));
            }
            let mut body = vec![0u8; (end - start) as usize];
            file.read_exact_at(&mut body, HEADER_BYTES + start).map_err(io_error)?;
            Ok(Bytes::from(body))
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        let key = key.to_string();
        self.run(move |store| {
            let mut file = open(&store.path(&key), &key)?;
            let (etag, _, size) = read_header(&mut file, &key)?;
            Ok(ObjectInfo { key, size, etag })
        })
        .await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<ObjectInfo>, ObjectError> {
        let (prefix, start_after) = (prefix.to_string(), start_after.map(str::to_string));
        self.run(move |store| {
            // Walk only the directory named by the prefix's complete components.
            let (dirs, _) = prefix.rsplit_once('/').unwrap_or(("", ""));
            let mut base = store.root.clone();
            let mut base_key = String::new();
            if !dirs.is_empty() || prefix.contains('/') {
                for component in dirs.split('/') {
                    base.push(encode(component));
                    base_key.push_str(component);
                    base_key.push('/');
                }
            }
            let mut keys = Vec::new();
            collect(&base, &base_key, base == store.root, &mut keys)?;
            keys.retain(|key| key.starts_with(&prefix) && start_after.as_deref().is_none_or(|after| key.as_str() > after));
            keys.sort_unstable();
            keys.truncate(limit);
            let mut infos = Vec::with_capacity(keys.len());
            for key in keys {
                match File::open(store.path(&key)) {
                    Ok(mut file) => {
                        let (etag, _, size) = read_header(&mut file, &key)?;
                        infos.push(ObjectInfo { key, size, etag });
                    }
                    // Deleted since the walk.
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(io_error(error)),
                }
            }
            Ok(infos)
        })
        .await
    }

    async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<PutOutcome, ObjectError> {
        let key = key.to_string();
        self.run(move |store| {
            let path = store.path(&key);
            let (temp, etag) = store.stage(&body)?;
            let result = (|| {
                let _lock = store.lock()?;
                match (&condition, store.current_etag(&key)?) {
                    (Condition::IfNoneMatch, Some(_)) => return Err(ObjectError::PreconditionFailed(key.clone())),
                    (Condition::IfMatch(_), None) => return Err(ObjectError::NotFound(key.clone())),
                    (Condition::IfMatch(expected), Some(current)) if &current != expected => {
                        return Err(ObjectError::PreconditionFailed(key.clone()));
                    }
                    _ => {}
                }
                make_parents(&store.root, &path)?;
                if condition == Condition::IfNoneMatch {
                    // Atomic even against a writer that ignores the lock.
                    std::fs::hard_link(&temp, &path).map_err(|error| match error.kind() {
                        std::io::ErrorKind::AlreadyExists => ObjectError::PreconditionFailed(key.clone()),
                        _ => io_error(error),
                    })?;
                } else {
                    std::fs::rename(&temp, &path).map_err(io_error)?;
                }
                sync_dir(path.parent().expect("object paths have a parent"))
            })();
            let _ = std::fs::remove_file(&temp);
            result.map(|()| PutOutcome { etag })
        })
        .await
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), ObjectError> {
        let (key, if_match) = (key.to_string(), if_match.map(str::to_string));
        self.run(move |store| {
            let _lock = store.lock()?;
            let current = store.current_etag(&key)?;
            match (&if_match, &current) {
                (Some(_), None) => return Err(ObjectError::NotFound(key)),
                (Some(expected), Some(current)) if current != expected => return Err(ObjectError::PreconditionFailed(key)),
                (None, None) => return Ok(()),
                _ => {}
            }
            let path = store.path(&key);
            std::fs::remove_file(&path).map_err(io_error)?;
            sync_dir(path.parent().expect("object paths have a parent"))
        })
        .await
    }
}

/// Adds every object key below `dir` (whose keys start with `key_prefix`) to `keys`.
/// At the root, the store's own `.lock` and `.tmp` are skipped.
fn collect(dir: &Path, key_prefix: &str, at_root: bool, keys: &mut Vec<String>) -> Result<(), ObjectError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error(error)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if at_root && (name == LOCK_FILE || name == TEMP_DIR) {
            continue;
        }
        if let Some(file) = name.strip_suffix('~') {
            if let Some(component) = decode(file) {
                keys.push(format!("{key_prefix}{component}"));
            }
        } else if entry.file_type().map_err(io_error)?.is_dir() {
            if let Some(component) = decode(name) {
                collect(&entry.path(), &format!("{key_prefix}{component}/"), false, keys)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsObjectStore::new(dir.path()).unwrap();
        crate::conformance::run(&store, "conformance/").await;
        crate::conformance::run(&store, "").await;
    }

    #[test]
    fn keys_map_to_paths_that_never_collide_or_escape() {
        let store = FsObjectStore { root: PathBuf::from("/r") };
        assert_eq!(store.path("a"), Path::new("/r/a~"));
        assert_eq!(store.path("a/b"), Path::new("/r/a/b~"));
        assert_eq!(store.path("../x"), Path::new("/r/%2E%2E/x~"));
        assert_eq!(store.path("a//b/"), Path::new("/r/a/%/b/%~"));
        for key in ["", "a", "..", "a b", "ü/€", "%", "~", "x~y"] {
            let encoded = encode(key);
            assert_eq!(decode(&encoded).as_deref(), Some(key), "{key:?} -> {encoded:?}");
            assert!(!encoded.contains('~') && !encoded.contains('/') && encoded != "." && encoded != "..");
        }
    }

    #[tokio::test]
    async fn a_damaged_object_is_refused_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsObjectStore::new(dir.path()).unwrap();
        store.put("wal/1", Bytes::from_static(b"batch of records"), Condition::IfNoneMatch).await.unwrap();
        let path = store.path("wal/1");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(store.get("wal/1").await, Err(ObjectError::Corrupt(_))));
        std::fs::write(&path, b"junk").unwrap();
        assert!(matches!(store.head("wal/1").await, Err(ObjectError::Corrupt(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_create_only_puts_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsObjectStore::new(dir.path()).unwrap();
        for round in 0..50 {
            let key = format!("race/{round}");
            let mut tasks = Vec::new();
            for writer in 0..8u8 {
                let (store, key) = (store.clone(), key.clone());
                tasks.push(tokio::spawn(async move { store.put(&key, Bytes::from(vec![writer; 4]), Condition::IfNoneMatch).await }));
            }
            let mut winners = 0;
            for task in tasks {
                match task.await.unwrap() {
                    Ok(_) => winners += 1,
                    Err(ObjectError::PreconditionFailed(_)) => {}
                    Err(other) => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(winners, 1, "round {round}");
        }
        assert!(std::fs::read_dir(dir.path().join(TEMP_DIR)).unwrap().next().is_none(), "no temporary file is left behind");
    }
}
