//! MemObjectStore: a strongly consistent in-memory bucket with ETags and atomic
//! conditional writes. Conditions are evaluated and applied under one lock.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Condition, ObjectError, ObjectInfo, ObjectStore, PutOutcome};

#[derive(Debug, Default)]
pub struct MemObjectStore {
    state: Mutex<MemState>,
}

#[derive(Debug, Default)]
struct MemState {
    objects: BTreeMap<String, (Bytes, String)>,
    /// Monotonic counter; ETags are unique per write even for equal bodies.
    writes: u64,
}

impl MemObjectStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.state.lock().expect("mem object store lock")
    }
}

#[async_trait]
impl ObjectStore for MemObjectStore {
    async fn get(&self, key: &str) -> Result<(Bytes, String), ObjectError> {
        self.lock().objects.get(key).cloned().ok_or_else(|| ObjectError::NotFound(key.to_string()))
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, ObjectError> {
        let (body, _) = self.get(key).await?;
        if start > end || end > body.len() as u64 {
            return Err(ObjectError::Other(format!("invalid range {start}..{end} of {key}")));
        }
        Ok(body.slice(start as usize..end as usize))
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        let (body, etag) = self.get(key).await?;
        Ok(ObjectInfo { key: key.to_string(), size: body.len() as u64, etag })
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<ObjectInfo>, ObjectError> {
        let state = self.lock();
        let infos = state
            .objects
            .range(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(key, _)| start_after.is_none_or(|after| key.as_str() > after))
            .take(limit)
            .map(|(key, (body, etag))| ObjectInfo { key: key.clone(), size: body.len() as u64, etag: etag.clone() })
            .collect();
        Ok(infos)
    }

    async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<PutOutcome, ObjectError> {
        let mut state = self.lock();
        match (&condition, state.objects.get(key)) {
            (Condition::IfNoneMatch, Some(_)) => return Err(ObjectError::PreconditionFailed(key.to_string())),
            (Condition::IfMatch(_), None) => return Err(ObjectError::NotFound(key.to_string())),
            (Condition::IfMatch(expected), Some((_, etag))) if etag != expected => {
                return Err(ObjectError::PreconditionFailed(key.to_string()));
            }
            _ => {}
        }
        state.writes += 1;
        let etag = format!("\"{:016x}-{}\"", crc32c::crc32c(&body), state.writes);
        state.objects.insert(key.to_string(), (body, etag.clone()));
        Ok(PutOutcome { etag })
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), ObjectError> {
        let mut state = self.lock();
        match (if_match, state.objects.get(key)) {
            (Some(_), None) => return Err(ObjectError::NotFound(key.to_string())),
            (Some(expected), Some((_, etag))) if etag != expected => {
                return Err(ObjectError::PreconditionFailed(key.to_string()));
            }
            _ => {}
        }
        state.objects.remove(key);
        Ok(())
    }
}
