//! Engine tests: S3 semantics, the create-only race, crashes, damaged bodies.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::env::{CrashMode, RealClock, SimDisk};

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
        engine.delete_object("b", key, None).await.unwrap();
    }
    assert_eq!(engine.head_object("b", "dir/a").unwrap_err(), EngineError::NoSuchKey);
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
    assert_eq!(engine.delete_object("b", "k", Some(first.etag)).await.unwrap_err(), EngineError::PreconditionFailed);
    engine.delete_object("b", "k", Some(second.etag)).await.unwrap();
    assert_eq!(engine.delete_object("b", "k", Some("\"gone\"".into())).await.unwrap_err(), EngineError::NoSuchKey);
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
    let info = put(&engine, "k", b"precious bytes", WriteCondition::None).await.unwrap();
    disk.flip_bit(&volume::volume_name(1), info.location.offset + 3, 1).unwrap();
    assert!(matches!(engine.get_object("b", "k", None).await, Err(EngineError::Corrupt(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_rotate_and_every_body_stays_durable() {
    let disk = SimDisk::new();
    let open = || Engine::open_with(Arc::new(disk.clone()), Arc::new(RealClock::new()), 4096);
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
