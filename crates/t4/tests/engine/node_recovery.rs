//! Crash recovery through the embedded API on the crashable sim disk.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use t4::env::{CrashMode, SimDisk, SimDiskFaults};
use t4::ErrorKind;

use crate::support::sim_node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_power_loss() {
    for mode in [CrashMode::LoseUnsynced, CrashMode::Torn { seed: 11 }, CrashMode::Torn { seed: 12 }] {
        let disk = SimDisk::new();
        let node = sim_node(&disk).await.unwrap();
        tracing::info!("--- concurrent writers, crash while they run ({mode:?})");
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for writer in 0..8 {
            let node = node.clone();
            let acknowledged = acknowledged.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for index in 0..2000 {
                    let key = format!("w{writer}/{index}");
                    match node.put(key.clone(), format!("v{index}")).await {
                        Ok(revision) => acked.push((key, revision)),
                        Err(_) => break,
                    }
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                acked
            }));
        }
        while acknowledged.load(Ordering::SeqCst) < 1000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        disk.crash(mode);
        let mut acked = Vec::new();
        for task in tasks {
            acked.extend(task.await.unwrap());
        }
        assert!(acked.len() < 8 * 2000, "the crash must land while writers run");
        drop(node);

        tracing::info!("--- reopen: every acknowledged write is there at its revision");
        let node = sim_node(&disk).await.unwrap();
        for (key, revision) in &acked {
            let kv = node.get(key.clone()).await.unwrap().unwrap_or_else(|| panic!("lost acknowledged {key}"));
            assert_eq!(kv.mod_revision, *revision, "{key}");
        }
        let highest = acked.iter().map(|(_, revision)| *revision).max().unwrap_or(1);
        assert!(node.current_revision() >= highest);
        tracing::info!("--- and the next write takes the next revision, never a reused one");
        let next = node.put("after", "crash").await.unwrap();
        assert_eq!(next, node.current_revision());
        assert!(next > highest);
        node.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_failure_stops_acknowledging() {
    let disk = SimDisk::new();
    let node = sim_node(&disk).await.unwrap();
    node.put("before", "1").await.unwrap();
    disk.set_faults(SimDiskFaults { sync_failures: 1, ..Default::default() });
    let failed = node.put("during", "2").await.unwrap_err();
    assert_eq!(failed.kind(), ErrorKind::StorageFailure);
    tracing::info!("--- after a failed fsync nothing more is acknowledged");
    assert_eq!(node.put("after", "3").await.unwrap_err().kind(), ErrorKind::StorageFailure);
    assert_eq!(node.current_revision(), 2, "the failed write never became visible");
    assert!(node.close().await.is_err(), "close reports the failure");
    drop(node);

    tracing::info!("--- reopen recovers what was acknowledged, and only that");
    let node = sim_node(&disk).await.unwrap();
    assert_eq!(node.get("before").await.unwrap().unwrap().mod_revision, 2);
    assert!(node.get("during").await.unwrap().is_none());
    assert_eq!(node.put("again", "4").await.unwrap(), 3);
    node.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_syncs_drop_old_segments_and_recovery_still_works() {
    let disk = SimDisk::new();
    let env = t4::env::Env { clock: std::sync::Arc::new(t4::env::RealClock::new()), disk: std::sync::Arc::new(disk.clone()) };
    let mut config = t4::Config::new("/unused");
    config.wal_segment_bytes_max = 4096;
    config.store_sync_records = 50;
    let node = t4::Node::open_with_env(config.clone(), env.clone()).await.unwrap();
    for index in 0..500 {
        node.put(format!("k{index:04}"), vec![b'x'; 64]).await.unwrap();
    }
    let stats = node.stats();
    assert!(stats.store_syncs >= 5, "{stats:?}");
    let segments = disk.paths().iter().filter(|path| path.starts_with("wal/")).count();
    assert!(segments < 10, "old segments must be removed, found {segments}");
    disk.crash(CrashMode::LoseUnsynced);
    drop(node);
    let node = t4::Node::open_with_env(config, env).await.unwrap();
    assert_eq!(node.current_revision(), 501);
    let all = node
        .range(t4::proto::etcdserverpb::RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.count, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_in_the_log_fails_closed() {
    let disk = SimDisk::new();
    let node = sim_node(&disk).await.unwrap();
    for index in 0..20 {
        node.put(format!("k{index}"), "v").await.unwrap();
    }
    drop(node);
    disk.crash(CrashMode::LoseUnsynced);
    let segment = disk.paths().into_iter().find(|path| path.starts_with("wal/")).unwrap();
    // A bit flip inside the first batch, with valid batches after it: not a torn tail.
    disk.flip_bit(&segment, 40, 3).unwrap();
    let error = sim_node(&disk).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Corrupt, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_file_is_refused_or_read_correctly_never_misread() {
    let disk = SimDisk::new();
    let node = sim_node(&disk).await.unwrap();
    for index in 0..300 {
        node.put(format!("k{index:04}"), format!("value-{index}")).await.unwrap();
    }
    node.close().await.unwrap();
    drop(node);
    let pristine = disk.clone();
    let len = pristine.file_len("store.redb").unwrap();
    let mut refused = 0;
    for (round, offset) in (0..len).step_by((len / 96).max(1) as usize).enumerate() {
        tracing::info!("--- flip a bit at byte {offset} of the store file");
        let damaged = SimDisk::new();
        for path in pristine.paths() {
            copy_file(&pristine, &damaged, &path);
        }
        damaged.flip_bit("store.redb", offset, (round % 8) as u8).unwrap();
        let outcome = match sim_node(&damaged).await {
            Err(error) => Err(error),
            Ok(node) => node
                .range(t4::proto::etcdserverpb::RangeRequest { key: b"k".to_vec(), range_end: b"l".to_vec(), ..Default::default() })
                .await
                .map(|response| (response.count, response.kvs)),
        };
        match outcome {
            Ok((count, kvs)) => {
                assert_eq!(count, 300, "flip at {offset}: a store that opens must hold every key");
                for (index, kv) in kvs.iter().enumerate() {
                    assert_eq!(kv.value, format!("value-{index}").into_bytes(), "flip at {offset}: misread value");
                }
            }
            Err(error) => {
                // Reported as damage, never as a failing disk (robustness #25).
                assert_eq!(error.kind(), ErrorKind::Corrupt, "flip at {offset}: {error}");
                refused += 1;
            }
        }
    }
    tracing::info!(refused, "damaged stores refused");
}

fn copy_file(from: &SimDisk, to: &SimDisk, path: &str) {
    use t4::env::Disk;
    if let Some((dir, _)) = path.rsplit_once('/') {
        to.create_dir_all(dir).unwrap();
    }
    let source = from.open(path, false).unwrap();
    let mut bytes = vec![0; source.len().unwrap() as usize];
    source.read_at(0, &mut bytes).unwrap();
    let target = to.open(path, true).unwrap();
    target.write_at(0, &bytes).unwrap();
    target.sync_data().unwrap();
    to.sync_dir(path.rsplit_once('/').map_or("", |(dir, _)| dir)).unwrap();
}
