//! Engine tests: S3 semantics, the create-only race, crashes, damaged bodies.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use t4_env::{CrashMode, RealClock, SimDisk};

async fn engine(disk: &SimDisk) -> Engine {
    Engine::open(Arc::new(disk.clone()), Arc::new(RealClock::new())).await.unwrap()
}

async fn put(engine: &Engine, key: &str, body: &'static [u8], condition: WriteCondition) -> Result<ObjectInfo, EngineError> {
    engine.put_object("b", key, Bytes::from_static(body), None, BTreeMap::new(), condition).await
}

#[tokio::test]
async fn objects_and_buckets_behave_like_s3() {
    let disk = SimDisk::new();
    let engine = engine(&disk).await;
    assert_eq!(put(&engine, "k", b"x", WriteCondition::None).await.unwrap_err(), EngineError::NoSuchBucket);
    engine.create_bucket("b").await.unwrap();
    assert_eq!(engine.create_bucket("b").await.unwrap_err(), EngineError::BucketAlreadyOwnedByYou);
    let mut metadata = BTreeMap::new();
    metadata.insert("owner".to_string(), "t4".to_string());
    let stored = engine
        .put_object("b", "dir/a", Bytes::from_static(b"hello world"), Some("text/plain".into()), metadata.clone(), WriteCondition::None)
        .await
        .unwrap();
    assert_eq!(stored.etag, "\"5eb63bbbe01eeed093cb22bb8f5acdc3\"", "the ETag of a simple put is the body's MD5");
    let (info, body) = engine.get_object("b", "dir/a", None).await.unwrap();
    assert_eq!((&body[..], info.metadata, info.content_type.as_deref()), (&b"hello world"[..], metadata, Some("text/plain")));
    let (_, slice) = engine.get_object("b", "dir/a", Some((6, 11))).await.unwrap();
    assert_eq!(&slice[..], b"world");
    put(&engine, "dir/b", b"2", WriteCondition::None).await.unwrap();
    put(&engine, "other", b"3", WriteCondition::None).await.unwrap();
    let listed: Vec<String> = engine.list_objects("b", "dir/", None, 100).unwrap().into_iter().map(|(key, _)| key).collect();
    assert_eq!(listed, ["dir/a", "dir/b"]);
    let after: Vec<String> = engine.list_objects("b", "", Some("dir/a"), 1).unwrap().into_iter().map(|(key, _)| key).collect();
    assert_eq!(after, ["dir/b"]);
    assert_eq!(engine.delete_bucket("b").await.unwrap_err(), EngineError::BucketNotEmpty);
    for key in ["dir/a", "dir/b", "other", "never-existed"] {
        engine.delete_object("b", key, None, None).await.unwrap();
    }
    assert_eq!(engine.head_object("b", "dir/a", None).unwrap_err(), EngineError::NoSuchKey);
    engine.delete_bucket("b").await.unwrap();
    assert!(engine.list_buckets().unwrap().is_empty());
}

#[tokio::test]
async fn conditional_writes_follow_s3() {
    let disk = SimDisk::new();
    let engine = engine(&disk).await;
    engine.create_bucket("b").await.unwrap();
    assert_eq!(put(&engine, "k", b"1", WriteCondition::IfMatch("\"abc\"".into())).await.unwrap_err(), EngineError::NoSuchKey);
    let first = put(&engine, "k", b"1", WriteCondition::IfNoneMatch).await.unwrap();
    assert_eq!(put(&engine, "k", b"2", WriteCondition::IfNoneMatch).await.unwrap_err(), EngineError::PreconditionFailed);
    let second = put(&engine, "k", b"2", WriteCondition::IfMatch(first.etag.clone())).await.unwrap();
    assert_eq!(put(&engine, "k", b"3", WriteCondition::IfMatch(first.etag.clone())).await.unwrap_err(), EngineError::PreconditionFailed);
    assert_eq!(engine.delete_object("b", "k", None, Some(first.etag)).await.unwrap_err(), EngineError::PreconditionFailed);
    engine.delete_object("b", "k", None, Some(second.etag)).await.unwrap();
    assert_eq!(engine.delete_object("b", "k", None, Some("\"gone\"".into())).await.unwrap_err(), EngineError::NoSuchKey);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_create_only_puts_have_exactly_one_winner() {
    let disk = SimDisk::new();
    let engine = engine(&disk).await;
    engine.create_bucket("b").await.unwrap();
    for round in 0..200 {
        let key = format!("race/{round}");
        let mut racers = Vec::new();
        for racer in 0..32u8 {
            let (engine, key) = (engine.clone(), key.clone());
            racers.push(tokio::spawn(async move {
                engine.put_object("b", &key, Bytes::from(vec![racer; 8]), None, BTreeMap::new(), WriteCondition::IfNoneMatch).await
            }));
        }
        let mut winners = Vec::new();
        for racer in racers {
            match racer.await.unwrap() {
                Ok(info) => winners.push(info),
                Err(error) => assert_eq!(error, EngineError::PreconditionFailed),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        let (info, _) = engine.get_object("b", &key, None).await.unwrap();
        assert_eq!(info.etag, winners[0].etag, "the stored object is the winner's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_objects_survive_power_loss() {
    for mode in [CrashMode::LoseUnsynced, CrashMode::Torn { seed: 5 }] {
        let disk = SimDisk::new();
        let engine = engine(&disk).await;
        engine.create_bucket("b").await.unwrap();
        let acknowledged = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut writers = Vec::new();
        for writer in 0..8 {
            let (engine, acknowledged) = (engine.clone(), acknowledged.clone());
            writers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for index in 0..3000 {
                    let key = format!("w{writer}/{index}");
                    let body = Bytes::from(format!("{key}-{}", "x".repeat(index % 50)));
                    match engine.put_object("b", &key, body.clone(), None, BTreeMap::new(), WriteCondition::None).await {
                        Ok(info) => acked.push((key, body, info.etag)),
                        Err(_) => break,
                    }
                    acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                acked
            }));
        }
        while acknowledged.load(std::sync::atomic::Ordering::SeqCst) < 500 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        disk.crash(mode);
        let mut acked = Vec::new();
        for writer in writers {
            acked.extend(writer.await.unwrap());
        }
        assert!((500..8 * 3000).contains(&acked.len()), "the crash must land mid-load: {}", acked.len());
        drop(engine);
        let engine = self::engine(&disk).await;
        for (key, body, etag) in &acked {
            let (info, stored) = engine.get_object("b", key, None).await.unwrap_or_else(|error| panic!("lost {key}: {error}"));
            assert_eq!((&stored, &info.etag), (body, etag), "{key}");
        }
        for (key, _) in engine.list_objects("b", "", None, usize::MAX).unwrap() {
            engine.get_object("b", &key, None).await.unwrap_or_else(|error| panic!("listed {key} has no body: {error}"));
        }
    }
}

#[tokio::test]
async fn a_damaged_body_is_refused() {
    let disk = SimDisk::new();
    let engine = engine(&disk).await;
    engine.create_bucket("b").await.unwrap();
    put(&engine, "k", b"precious bytes", WriteCondition::None).await.unwrap();
    let volume_len = disk.file_len(&volume::volume_name(1)).unwrap();
    disk.flip_bit(&volume::volume_name(1), volume_len - 3, 1).unwrap();
    assert!(matches!(engine.get_object("b", "k", None).await, Err(EngineError::Failed(Failure::Corrupt(_)))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_rotate_and_every_body_stays_durable() {
    let disk = SimDisk::new();
    let options = EngineOptions { volume_bytes_max: 4096, ..EngineOptions::default() };
    let open = || Engine::open_with(Arc::new(disk.clone()), Arc::new(RealClock::new()), options.clone());
    let engine = open().await.unwrap();
    engine.create_bucket("b").await.unwrap();
    let mut puts = Vec::new();
    for index in 0..40 {
        let (engine, body) = (engine.clone(), Bytes::from(vec![index as u8; 1000]));
        puts.push(tokio::spawn(async move {
            engine.put_object("b", &format!("k{index}"), body, None, BTreeMap::new(), WriteCondition::None).await
        }));
    }
    for put in puts {
        put.await.unwrap().unwrap();
    }
    drop(engine);
    disk.crash(CrashMode::LoseUnsynced);
    let volumes = disk.paths().iter().filter(|path| path.starts_with("volumes/")).count();
    assert!(volumes >= 5, "40 KB in 4 KB volumes must rotate: {volumes} volumes");
    let engine = open().await.unwrap();
    for index in 0..40u8 {
        let (_, body) = engine.get_object("b", &format!("k{index}"), None).await.unwrap();
        assert_eq!(body, vec![index; 1000]);
    }
}

async fn engine_with(disk: &SimDisk, options: EngineOptions) -> Engine {
    Engine::open_with(Arc::new(disk.clone()), Arc::new(RealClock::new()), options).await.unwrap()
}

fn now_ms() -> u64 {
    RealClock::new().wall_ms()
}

#[tokio::test]
async fn versioning_keeps_every_version_and_delete_markers() {
    let disk = SimDisk::new();
    let engine = engine(&disk).await;
    engine.create_bucket("b").await.unwrap();
    let unversioned = put(&engine, "k", b"before", WriteCondition::None).await.unwrap();
    assert_eq!(unversioned.version_id, NULL_VERSION);
    engine.set_versioning("b", Versioning::Enabled).await.unwrap();
    let first = put(&engine, "k", b"one", WriteCondition::None).await.unwrap();
    let second = put(&engine, "k", b"two", WriteCondition::None).await.unwrap();
    assert_ne!(first.version_id, second.version_id);
    assert_eq!(engine.get_object("b", "k", None).await.unwrap().1, &b"two"[..]);
    let old = engine.head_object("b", "k", Some(&first.version_id)).unwrap();
    assert_eq!(engine.read_object(&old, None).await.unwrap(), &b"one"[..]);
    let null = engine.head_object("b", "k", Some(NULL_VERSION)).unwrap();
    assert_eq!(engine.read_object(&null, None).await.unwrap(), &b"before"[..], "the pre-versioning object stays as version null");

    let deleted = engine.delete_object("b", "k", None, None).await.unwrap();
    assert!(deleted.delete_marker);
    let marker = deleted.version_id.unwrap();
    assert_eq!(engine.head_object("b", "k", None).unwrap_err(), EngineError::NoSuchKey);
    assert_eq!(engine.head_object("b", "k", Some(&marker)).unwrap_err(), EngineError::MethodNotAllowed);
    assert!(engine.list_objects("b", "", None, 10).unwrap().is_empty(), "a key whose current version is a marker is not listed");
    // Conditions apply to the current version: a marker counts as absent.
    assert_eq!(put(&engine, "k", b"x", WriteCondition::IfMatch(second.etag.clone())).await.unwrap_err(), EngineError::NoSuchKey);
    let listed: Vec<(String, bool, bool)> = engine
        .list_versions("b", "", None, None, 100)
        .unwrap()
        .into_iter()
        .map(|(_, info, latest)| (info.version_id, info.delete_marker, latest))
        .collect();
    assert_eq!(
        listed,
        [
            (marker.clone(), true, true),
            (second.version_id.clone(), false, false),
            (first.version_id.clone(), false, false),
            (NULL_VERSION.into(), false, false)
        ]
    );
    let page: Vec<String> = engine
        .list_versions("b", "", Some("k"), Some(&second.version_id), 100)
        .unwrap()
        .into_iter()
        .map(|(_, info, _)| info.version_id)
        .collect();
    assert_eq!(page, [first.version_id.clone(), NULL_VERSION.to_string()], "resuming after a version marker");

    // Removing the marker by id brings the previous version back.
    let removed = engine.delete_object("b", "k", Some(&marker), None).await.unwrap();
    assert!(removed.delete_marker);
    assert_eq!(engine.get_object("b", "k", None).await.unwrap().1, &b"two"[..]);
    assert_eq!(
        engine.delete_object("b", "k", Some("not-a-version"), None).await.unwrap_err(),
        EngineError::InvalidArgument("Invalid version id specified".into())
    );

    // Suspended: writes replace the null version and keep the others.
    engine.set_versioning("b", Versioning::Suspended).await.unwrap();
    assert!(engine.set_versioning("b", Versioning::Unversioned).await.is_err());
    put(&engine, "k", b"s1", WriteCondition::None).await.unwrap();
    let suspended = put(&engine, "k", b"s2", WriteCondition::None).await.unwrap();
    assert_eq!(suspended.version_id, NULL_VERSION);
    let ids: Vec<String> =
        engine.list_versions("b", "", None, None, 100).unwrap().into_iter().map(|(_, info, _)| info.version_id).collect();
    assert_eq!(ids, [NULL_VERSION.to_string(), second.version_id.clone(), first.version_id.clone()]);

    assert_eq!(engine.delete_bucket("b").await.unwrap_err(), EngineError::BucketNotEmpty);
    for id in ids {
        engine.delete_object("b", "k", Some(&id), None).await.unwrap();
    }
    assert_eq!(engine.stats().unwrap().bodies, 0, "every body was released");
    engine.delete_bucket("b").await.unwrap();
}

#[tokio::test]
async fn multipart_uploads_assemble_check_and_free_their_parts() {
    let disk = SimDisk::new();
    let engine = engine_with(&disk, EngineOptions { part_bytes_min: 4, ..EngineOptions::default() }).await;
    engine.create_bucket("b").await.unwrap();
    let id = engine.create_upload("b", "big", Some("text/plain".into()), BTreeMap::new()).await.unwrap();
    assert_eq!(engine.upload_part("b", "other", &id, 1, Bytes::from_static(b"x")).await.unwrap_err(), EngineError::NoSuchUpload);
    assert!(matches!(engine.upload_part("b", "big", &id, 0, Bytes::from_static(b"x")).await, Err(EngineError::InvalidArgument(_))));
    let one = engine.upload_part("b", "big", &id, 1, Bytes::from_static(b"aaaa")).await.unwrap();
    engine.upload_part("b", "big", &id, 2, Bytes::from_static(b"replaced")).await.unwrap();
    let two = engine.upload_part("b", "big", &id, 2, Bytes::from_static(b"bbbbb")).await.unwrap();
    let three = engine.upload_part("b", "big", &id, 3, Bytes::from_static(b"cc")).await.unwrap();
    let unused = engine.upload_part("b", "big", &id, 4, Bytes::from_static(b"unused")).await.unwrap();
    let parts: Vec<u32> = engine.list_parts("b", "big", &id, 0, 100).unwrap().into_iter().map(|(number, _)| number).collect();
    assert_eq!(parts, [1, 2, 3, 4]);
    assert_eq!(engine.list_parts("b", "big", &id, 2, 1).unwrap()[0].0, 3);
    assert_eq!(engine.list_uploads("b", "").unwrap().len(), 1);

    let complete = |parts: Vec<(u32, String)>| engine.complete_upload("b", "big", &id, parts, WriteCondition::None);
    assert_eq!(complete(vec![(1, one.etag.clone()), (2, "\"wrong\"".into())]).await.unwrap_err(), EngineError::InvalidPart);
    assert_eq!(complete(vec![(2, two.etag.clone()), (1, one.etag.clone())]).await.unwrap_err(), EngineError::InvalidPartOrder);
    assert_eq!(complete(vec![(3, three.etag.clone()), (4, unused.etag.clone())]).await.unwrap_err(), EngineError::EntityTooSmall);
    put(&engine, "big", b"exists", WriteCondition::None).await.unwrap();
    assert_eq!(
        engine.complete_upload("b", "big", &id, vec![(1, one.etag.clone())], WriteCondition::IfNoneMatch).await.unwrap_err(),
        EngineError::PreconditionFailed,
        "a create-only complete on an existing key fails and keeps the upload"
    );
    let info = complete(vec![(1, one.etag.clone()), (2, two.etag.clone()), (3, three.etag.clone())]).await.unwrap();
    assert!(info.etag.ends_with("-3\""), "{}", info.etag);
    assert_eq!((info.parts_count, info.size, info.content_type.as_deref()), (3, 11, Some("text/plain")));
    assert_eq!(engine.get_object("b", "big", None).await.unwrap().1, &b"aaaabbbbbcc"[..]);
    assert_eq!(engine.get_object("b", "big", Some((3, 10))).await.unwrap().1, &b"abbbbbc"[..], "a range across parts");
    assert_eq!(engine.list_parts("b", "big", &id, 0, 10).unwrap_err(), EngineError::NoSuchUpload);
    engine.delete_object("b", "big", None, None).await.unwrap();
    assert_eq!(engine.stats().unwrap().bodies, 0, "the unused and replaced parts were freed with the upload");

    let abandoned = engine.create_upload("b", "gone", None, BTreeMap::new()).await.unwrap();
    engine.upload_part("b", "gone", &abandoned, 1, Bytes::from_static(b"zz")).await.unwrap();
    engine.abort_upload("b", "gone", &abandoned).await.unwrap();
    assert_eq!(engine.abort_upload("b", "gone", &abandoned).await.unwrap_err(), EngineError::NoSuchUpload);
    assert_eq!(engine.stats().unwrap().bodies, 0);
}

#[tokio::test]
async fn copies_and_identical_bodies_share_bytes() {
    let disk = SimDisk::new();
    let engine = engine(&disk).await;
    engine.create_bucket("b").await.unwrap();
    let mut metadata = BTreeMap::new();
    metadata.insert("a".to_string(), "1".to_string());
    let source = engine
        .put_object("b", "src", Bytes::from(vec![7u8; 5000]), Some("x/y".into()), metadata.clone(), WriteCondition::None)
        .await
        .unwrap();
    let copy = engine.copy_object(&source, "b", "copy", None, WriteCondition::None).await.unwrap();
    assert_eq!((copy.etag.as_str(), &copy.metadata, copy.content_type.as_deref()), (source.etag.as_str(), &metadata, Some("x/y")));
    let replaced = engine.copy_object(&source, "b", "replaced", Some((None, BTreeMap::new())), WriteCondition::None).await.unwrap();
    assert!(replaced.metadata.is_empty() && replaced.content_type.is_none());
    assert_eq!(
        engine.copy_object(&source, "b", "copy", None, WriteCondition::IfNoneMatch).await.unwrap_err(),
        EngineError::PreconditionFailed
    );
    engine.put_object("b", "same", Bytes::from(vec![7u8; 5000]), None, BTreeMap::new(), WriteCondition::None).await.unwrap();
    assert_eq!(engine.stats().unwrap().bodies, 1, "copies and an identical put share one body");
    for key in ["src", "copy", "same"] {
        engine.delete_object("b", key, None, None).await.unwrap();
    }
    assert_eq!(engine.get_object("b", "replaced", None).await.unwrap().1, vec![7u8; 5000]);
    engine.delete_object("b", "replaced", None, None).await.unwrap();
    assert_eq!(engine.stats().unwrap().bodies, 0);
    assert_eq!(engine.copy_object(&source, "b", "late", None, WriteCondition::None).await.unwrap_err(), EngineError::NoSuchKey);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_reclaims_dead_space_while_reads_go_on() {
    let disk = SimDisk::new();
    let options = EngineOptions { volume_bytes_max: 16 * 1024, ..EngineOptions::default() };
    let engine = engine_with(&disk, options.clone()).await;
    engine.create_bucket("b").await.unwrap();
    for index in 0..200u32 {
        let body = Bytes::from(format!("{index:04}").repeat(250));
        put_bytes(&engine, &format!("k{index:03}"), body).await;
    }
    for index in (0..200u32).filter(|index| index % 4 != 0) {
        engine.delete_object("b", &format!("k{index:03}"), None, None).await.unwrap();
    }
    let before = engine.stats().unwrap();
    let reader = {
        let engine = engine.clone();
        tokio::spawn(async move {
            for round in 0..20 {
                for index in (0..200u32).step_by(4) {
                    let (_, body) = engine
                        .get_object("b", &format!("k{index:03}"), None)
                        .await
                        .unwrap_or_else(|error| panic!("round {round}: {error}"));
                    assert_eq!(body, format!("{index:04}").repeat(250));
                }
            }
        })
    };
    let report = engine.compact(0.5).await.unwrap();
    reader.await.unwrap();
    let after = engine.stats().unwrap();
    assert!(report.volumes_removed >= 10 && report.bytes_freed > 0, "{report:?}");
    assert!(after.volume_bytes < before.volume_bytes / 2, "{before:?} -> {after:?}");
    assert_eq!(after.live_bytes, before.live_bytes, "live bytes moved, none lost");
    drop(engine);
    disk.crash(CrashMode::LoseUnsynced);
    let engine = engine_with(&disk, options).await;
    for index in 0..200u32 {
        let got = engine.get_object("b", &format!("k{index:03}"), None).await;
        if index % 4 == 0 {
            assert_eq!(got.unwrap().1, format!("{index:04}").repeat(250), "k{index:03} after compaction and power loss");
        } else {
            assert_eq!(got.unwrap_err(), EngineError::NoSuchKey);
        }
    }
}

async fn put_bytes(engine: &Engine, key: &str, body: Bytes) -> ObjectInfo {
    engine.put_object("b", key, body, None, BTreeMap::new(), WriteCondition::None).await.unwrap()
}

#[tokio::test]
async fn lifecycle_expires_current_and_noncurrent_versions_and_old_uploads() {
    let disk = SimDisk::new();
    let engine = engine(&disk).await;
    engine.create_bucket("b").await.unwrap();
    engine.set_versioning("b", Versioning::Enabled).await.unwrap();
    let rule = LifecycleRule {
        id: "logs".into(),
        enabled: true,
        prefix: "logs/".into(),
        expiration_days: Some(1),
        noncurrent_days: Some(1),
        ..LifecycleRule::default()
    };
    engine.set_lifecycle("b", vec![rule]).await.unwrap();
    put_bytes(&engine, "logs/a", Bytes::from_static(b"1")).await;
    put_bytes(&engine, "logs/a", Bytes::from_static(b"2")).await;
    put_bytes(&engine, "keep/b", Bytes::from_static(b"3")).await;
    engine.create_upload("b", "any", None, BTreeMap::new()).await.unwrap();
    let day = 24 * 3600 * 1000;
    assert_eq!(engine.apply_lifecycle(now_ms()).await.unwrap(), LifecycleReport::default(), "nothing is due yet");
    let first = engine.apply_lifecycle(now_ms() + 2 * day).await.unwrap();
    assert_eq!((first.current_expired, first.noncurrent_removed, first.uploads_aborted), (1, 1, 0));
    assert_eq!(engine.head_object("b", "logs/a", None).unwrap_err(), EngineError::NoSuchKey, "expired behind a delete marker");
    let second = engine.apply_lifecycle(now_ms() + 4 * day).await.unwrap();
    assert_eq!(second.noncurrent_removed, 1);
    let third = engine.apply_lifecycle(now_ms() + 8 * day).await.unwrap();
    assert_eq!((third.markers_removed, third.uploads_aborted), (1, 1), "a lone marker goes, the week-old upload too");
    let left: Vec<String> = engine.list_versions("b", "", None, None, 100).unwrap().into_iter().map(|(key, _, _)| key).collect();
    assert_eq!(left, ["keep/b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_puts_and_deletes_survive_power_loss_under_mixed_load() {
    for seed in 0..4u64 {
        let disk = SimDisk::new();
        let engine = engine(&disk).await;
        engine.create_bucket("b").await.unwrap();
        let acknowledged = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut writers = Vec::new();
        for writer in 0..8u64 {
            let (engine, acknowledged) = (engine.clone(), acknowledged.clone());
            writers.push(tokio::spawn(async move {
                let mut state = seed * 1000 + writer + 1;
                let mut next = move || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                let (mut live, mut puts, mut deletes) = (Vec::new(), BTreeMap::new(), Vec::new());
                for index in 0..5000u64 {
                    let outcome = if !live.is_empty() && next() % 10 < 3 {
                        let key: String = live.swap_remove((next() % live.len() as u64) as usize);
                        engine.delete_object("b", &key, None, None).await.map(|_| {
                            puts.remove(&key);
                            deletes.push(key);
                        })
                    } else {
                        let key = format!("w{writer}/{index}");
                        let body = Bytes::from(format!("{key}:{}", next()).repeat((next() % 40) as usize + 1));
                        engine.put_object("b", &key, body.clone(), None, BTreeMap::new(), WriteCondition::None).await.map(|_| {
                            live.push(key.clone());
                            puts.insert(key, body);
                        })
                    };
                    if outcome.is_err() {
                        break;
                    }
                    acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                (puts, deletes)
            }));
        }
        while acknowledged.load(std::sync::atomic::Ordering::SeqCst) < 2000 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        disk.crash(CrashMode::LoseUnsynced);
        let (mut puts, mut deletes) = (BTreeMap::new(), Vec::new());
        for writer in writers {
            let (writer_puts, writer_deletes) = writer.await.unwrap();
            puts.extend(writer_puts);
            deletes.extend(writer_deletes);
        }
        drop(engine);
        let engine = self::engine(&disk).await;
        for (key, body) in &puts {
            let (_, stored) = engine.get_object("b", key, None).await.unwrap_or_else(|error| panic!("seed {seed}: lost {key}: {error}"));
            assert_eq!(&stored, body, "seed {seed}: {key}");
        }
        for key in &deletes {
            assert_eq!(engine.head_object("b", key, None).unwrap_err(), EngineError::NoSuchKey, "seed {seed}: delete of {key} undone");
        }
        for (key, _) in engine.list_objects("b", "", None, usize::MAX).unwrap() {
            engine.get_object("b", &key, None).await.unwrap_or_else(|error| panic!("seed {seed}: listed {key} has no body: {error}"));
        }
    }
}

#[tokio::test]
async fn a_storage_failure_stops_every_later_write_and_reads_go_on() {
    for faults in [
        t4_env::SimDiskFaults { sync_failures: 1, ..Default::default() },
        t4_env::SimDiskFaults { capacity_bytes: Some(0), ..Default::default() },
    ] {
        let disk = SimDisk::new();
        let engine = engine(&disk).await;
        engine.create_bucket("b").await.unwrap();
        put(&engine, "before", b"kept", WriteCondition::None).await.unwrap();
        assert!(engine.health().is_ok());
        tracing::info!("--- a failed fsync (or a full disk) fails the write that met it");
        disk.set_faults(faults.clone());
        let failed = put(&engine, "during", b"lost", WriteCondition::None).await.unwrap_err();
        assert!(matches!(failed, EngineError::Failed(Failure::Storage(_))), "{failed:?} ({faults:?})");
        tracing::info!("--- the disk works again, but s4 takes no write until restarted; reads go on");
        disk.set_faults(Default::default());
        let refused = put(&engine, "after", b"x", WriteCondition::None).await.unwrap_err();
        assert!(matches!(&refused, EngineError::Failed(Failure::Storage(text)) if text.contains("earlier failure")), "{refused:?}");
        assert!(engine.health().is_err());
        assert_eq!(&engine.get_object("b", "before", None).await.unwrap().1[..], b"kept");
        assert_eq!(engine.get_object("b", "during", None).await.unwrap_err(), EngineError::NoSuchKey);
    }
}

/// A body written as it arrives: while it is in flight its volume is sealed (other puts
/// fill the next ones) and compaction runs — it must leave that volume alone, since the
/// body is not committed yet. Then it commits, survives a crash, and reads back whole; a
/// body given up half-way is no object and no harm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_survives_rotation_compaction_and_a_crash() {
    let disk = SimDisk::new();
    let options = EngineOptions { volume_bytes_max: 64 << 10, ..EngineOptions::default() };
    let engine = engine_with(&disk, options.clone()).await;
    engine.create_bucket("b").await.unwrap();
    // A dead body in the first volume, so compaction wants it.
    engine.put_object("b", "dead", Bytes::from(vec![1u8; 60 << 10]), None, BTreeMap::new(), WriteCondition::None).await.unwrap();
    engine.delete_object("b", "dead", None, None).await.unwrap();
    let expected: Vec<u8> = (0..300_000u32).map(|index| (index % 253) as u8).collect();
    let mut upload = engine.start_body(expected.len() as u64).unwrap();
    let mut abandoned = engine.start_body(100_000).unwrap();
    for (index, piece) in expected.chunks(70_001).enumerate() {
        upload.write(Bytes::copy_from_slice(piece)).await.unwrap();
        if index == 0 {
            abandoned.write(Bytes::from(vec![9u8; 50_000])).await.unwrap();
        }
        // Others fill and seal volumes meanwhile; compaction runs.
        engine
            .put_object("b", &format!("other{index}"), Bytes::from(vec![2u8; 40 << 10]), None, BTreeMap::new(), WriteCondition::None)
            .await
            .unwrap();
        engine.compact(0.0).await.unwrap();
    }
    drop(abandoned);
    let stored = upload.finish().await.unwrap();
    engine.put_stored_object("b", "streamed", stored, None, BTreeMap::new(), WriteCondition::None).await.unwrap();
    drop(engine);
    disk.crash(CrashMode::LoseUnsynced);
    let engine = engine_with(&disk, options).await;
    let (info, body) = engine.get_object("b", "streamed", None).await.unwrap();
    assert_eq!(body, expected, "the streamed body, whole, after compaction and a crash");
    assert_eq!(info.etag, format!("\"{}\"", hex(&Md5::digest(&expected))));
    engine.compact(0.0).await.unwrap();
    let (_, body) = engine.get_object("b", "streamed", None).await.unwrap();
    assert_eq!(body, expected, "and after its volume is compacted in turn");
    assert!(engine.stats().unwrap().live_bytes >= expected.len() as u64);
}
