//! The ObjectStore conformance suite: one behaviour every implementation must show
//! (mem, fs, the retry layer, s3 against `s4`; the simulator's S3 as it arrives).
//! It panics with a message naming the broken rule.

use bytes::Bytes;

use t4_env::{Condition, ObjectError, ObjectStore};

/// Runs every check under `prefix`, which must be empty.
pub async fn run(store: &dyn ObjectStore, prefix: &str) {
    create_only(store, prefix).await;
    compare_and_swap(store, prefix).await;
    ranges_and_heads(store, prefix).await;
    listing(store, prefix).await;
    deletes(store, prefix).await;
    edges(store, prefix).await;
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

    // Many at once: present and missing keys alike; the keys not named stay.
    let many: Vec<String> = (0..40).map(|index| format!("{prefix}many/{index:02}")).collect();
    for key in &many {
        store.put(key, Bytes::from(key.clone()), Condition::IfNoneMatch).await.expect("put for delete_many");
    }
    let mut doomed: Vec<String> = many.iter().step_by(2).cloned().collect();
    doomed.push(format!("{prefix}many/absent"));
    store.delete_many(&doomed).await.expect("delete_many");
    store.delete_many(&[]).await.expect("delete_many of nothing");
    let left: Vec<String> =
        store.list(&format!("{prefix}many/"), None, 100).await.expect("list").into_iter().map(|info| info.key).collect();
    assert_eq!(left, many.iter().skip(1).step_by(2).cloned().collect::<Vec<_>>(), "delete_many removes exactly the keys it names");
}

async fn edges(store: &dyn ObjectStore, prefix: &str) {
    let missing = store.get(&format!("{prefix}edge/absent")).await;
    assert!(matches!(missing, Err(ObjectError::NotFound(_))), "get of a missing key must be NotFound: {missing:?}");
    let missing = store.delete(&format!("{prefix}edge/absent"), Some("\"any\"")).await;
    assert!(matches!(missing, Err(ObjectError::NotFound(_))), "conditional delete of a missing key must be NotFound: {missing:?}");

    let empty = format!("{prefix}edge/empty");
    store.put(&empty, Bytes::new(), Condition::IfNoneMatch).await.expect("an empty object");
    assert_eq!(store.get(&empty).await.expect("get empty").0.len(), 0);
    assert_eq!(store.head(&empty).await.expect("head empty").size, 0);

    // Names with spaces, non-ASCII, dots and a key that is also a prefix of others.
    let odd = [format!("{prefix}edge/a b"), format!("{prefix}edge/ü/€.bin"), format!("{prefix}edge/dir"), format!("{prefix}edge/dir/x")];
    for (index, key) in odd.iter().enumerate() {
        store.put(key, Bytes::from(vec![index as u8; index + 1]), Condition::IfNoneMatch).await.expect("odd key");
    }
    for (index, key) in odd.iter().enumerate() {
        assert_eq!(store.get(key).await.expect("odd key back").0, vec![index as u8; index + 1], "{key}");
    }
    let listed: Vec<String> =
        store.list(&format!("{prefix}edge/d"), None, 10).await.expect("list").into_iter().map(|info| info.key).collect();
    assert_eq!(listed, [format!("{prefix}edge/dir"), format!("{prefix}edge/dir/x")], "a prefix need not end at a /");
    let all = store.list(&format!("{prefix}edge/"), None, 100).await.expect("list all");
    assert_eq!(all.len(), 5, "nested keys are listed too: {all:?}");

    let large = format!("{prefix}edge/large");
    let body: Vec<u8> = (0..(1u32 << 20) + 7).map(|index| (index % 251) as u8).collect();
    let put = store.put(&large, Bytes::from(body.clone()), Condition::Always).await.expect("1 MiB");
    let (back, etag) = store.get(&large).await.expect("1 MiB back");
    assert!(back[..] == body[..] && etag == put.etag, "a large body must come back intact");
    let slice = store.get_range(&large, (1 << 20) - 3, (1 << 20) + 7).await.expect("range at the end");
    assert_eq!(&slice[..], &body[(1 << 20) - 3..], "ranges read the bytes asked for");
    assert_eq!(store.head(&large).await.expect("head").etag, put.etag, "head and put agree on the etag");
}
