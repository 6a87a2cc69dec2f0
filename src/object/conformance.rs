//! The ObjectStore conformance suite: one behaviour every implementation must show
//! (mem today; fs, s3 against `s4`, and the simulator's S3 as they arrive).
//! It panics with a message naming the broken rule.

use bytes::Bytes;

use crate::env::{Condition, ObjectError, ObjectStore};

/// Runs every check under `prefix`, which must be empty.
pub async fn run(store: &dyn ObjectStore, prefix: &str) {
    create_only(store, prefix).await;
    compare_and_swap(store, prefix).await;
    ranges_and_heads(store, prefix).await;
    listing(store, prefix).await;
    deletes(store, prefix).await;
}

async fn create_only(store: &dyn ObjectStore, prefix: &str) {
    let key = format!("{prefix}create-only");
    let first = store.put(&key, Bytes::from_static(b"one"), Condition::IfNoneMatch).await;
    assert!(first.is_ok(), "create-only on a new key must succeed: {first:?}");
    let second = store.put(&key, Bytes::from_static(b"two"), Condition::IfNoneMatch).await;
    assert!(matches!(second, Err(ObjectError::PreconditionFailed(_))), "create-only on an existing key must be 412: {second:?}");
    let (body, _) = store.get(&key).await.expect("get after create");
    assert_eq!(&body[..], b"one", "a failed create-only must not change the object");
}

async fn compare_and_swap(store: &dyn ObjectStore, prefix: &str) {
    let key = format!("{prefix}cas");
    let missing = store.put(&key, Bytes::from_static(b"x"), Condition::IfMatch("\"nope\"".into())).await;
    assert!(matches!(missing, Err(ObjectError::NotFound(_))), "If-Match on a missing key must be 404: {missing:?}");
    let first = store.put(&key, Bytes::from_static(b"a"), Condition::Always).await.expect("put");
    let second =
        store.put(&key, Bytes::from_static(b"b"), Condition::IfMatch(first.etag.clone())).await.expect("cas with the current etag");
    assert_ne!(first.etag, second.etag, "every write must get a new etag");
    let stale = store.put(&key, Bytes::from_static(b"c"), Condition::IfMatch(first.etag)).await;
    assert!(matches!(stale, Err(ObjectError::PreconditionFailed(_))), "If-Match with a stale etag must be 412: {stale:?}");
    let (body, etag) = store.get(&key).await.expect("get");
    assert_eq!(&body[..], b"b");
    assert_eq!(etag, second.etag, "get must return the etag of the last write");
}

async fn ranges_and_heads(store: &dyn ObjectStore, prefix: &str) {
    let key = format!("{prefix}range");
    store.put(&key, Bytes::from_static(b"0123456789"), Condition::Always).await.expect("put");
    let slice = store.get_range(&key, 2, 5).await.expect("get_range");
    assert_eq!(&slice[..], b"234");
    let info = store.head(&key).await.expect("head");
    assert_eq!(info.size, 10);
    let missing = store.head(&format!("{prefix}absent")).await;
    assert!(matches!(missing, Err(ObjectError::NotFound(_))), "head of a missing key must be NotFound: {missing:?}");
}

async fn listing(store: &dyn ObjectStore, prefix: &str) {
    let dir = format!("{prefix}list/");
    for name in ["c", "a", "b"] {
        store.put(&format!("{dir}{name}"), Bytes::from_static(b"."), Condition::Always).await.expect("put");
    }
    let all = store.list(&dir, None, 100).await.expect("list");
    let names: Vec<_> = all.iter().map(|info| info.key.strip_prefix(&dir).unwrap_or("?").to_string()).collect();
    assert_eq!(names, ["a", "b", "c"], "list must be ascending and complete");
    let after = store.list(&dir, Some(&format!("{dir}a")), 1).await.expect("list after");
    assert_eq!(after.len(), 1, "list must honour its limit");
    assert_eq!(after[0].key, format!("{dir}b"), "list must start strictly after start_after");
}

async fn deletes(store: &dyn ObjectStore, prefix: &str) {
    let key = format!("{prefix}delete");
    let put = store.put(&key, Bytes::from_static(b"."), Condition::Always).await.expect("put");
    let stale = store.delete(&key, Some("\"stale\"")).await;
    assert!(matches!(stale, Err(ObjectError::PreconditionFailed(_))), "delete with a stale etag must be 412: {stale:?}");
    store.delete(&key, Some(&put.etag)).await.expect("delete with the current etag");
    store.delete(&key, None).await.expect("deleting a missing key is not an error");
    assert!(matches!(store.get(&key).await, Err(ObjectError::NotFound(_))));
}
