//! kill -9 of the real `t4` binary under concurrent write load: after a restart every
//! acknowledged write is there at its revision, revisions are dense, none is reused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{GetOptions, WatchOptions};
use futures::StreamExt;

use crate::server::T4Process;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut t4 = T4Process::start_in(dir.path(), port, &[]).await;

    tracing::info!("--- 16 writers, kill -9 once 2000 writes are acknowledged");
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for writer in 0..16 {
        let mut client = etcd_client::Client::connect([t4.endpoint.clone()], None).await.unwrap();
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for index in 0.. {
                let key = format!("/crash/{writer:02}/{index:06}");
                match client.put(key.clone(), format!("value-{writer}-{index}"), None).await {
                    Ok(response) => acked.push((key, response.header().unwrap().revision())),
                    Err(_) => break,
                }
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            acked
        }));
    }
    while acknowledged.load(Ordering::SeqCst) < 2000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t4.kill_9();
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.unwrap());
    }

    tracing::info!("--- restart on the same directory");
    let t4 = T4Process::start_in(dir.path(), port, &[]).await;
    let mut client = etcd_client::Client::connect([t4.endpoint.clone()], None).await.unwrap();
    let all = client.get("/crash/", Some(GetOptions::new().with_prefix())).await.unwrap();
    let found: std::collections::BTreeMap<Vec<u8>, i64> = all.kvs().iter().map(|kv| (kv.key().to_vec(), kv.mod_revision())).collect();
    for (key, revision) in &acked {
        assert_eq!(found.get(key.as_bytes()), Some(revision), "acknowledged {key} at {revision} lost or moved");
    }
    let current = all.header().unwrap().revision();
    let highest = acked.iter().map(|(_, revision)| *revision).max().unwrap();
    assert!(current >= highest);

    tracing::info!("--- the log is dense: one revision per write, none reused");
    let (_watcher, mut stream) = client.watch("/crash/", Some(WatchOptions::new().with_prefix().with_start_revision(1))).await.unwrap();
    let mut revisions = Vec::new();
    while revisions.last().copied().unwrap_or(1) < current {
        for event in stream.next().await.unwrap().unwrap().events() {
            revisions.push(event.kv().unwrap().mod_revision());
        }
    }
    assert_eq!(revisions, (2..=current).collect::<Vec<_>>());
    let next = client.put("/after", "restart", None).await.unwrap().header().unwrap().revision();
    assert_eq!(next, current + 1);
    assert!(acked.len() >= 2000, "{} acknowledged", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_cleanly_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut t4 = T4Process::start_in(dir.path(), port, &[]).await;
    let mut client = etcd_client::Client::connect([t4.endpoint.clone()], None).await.unwrap();
    for index in 0..100 {
        client.put(format!("/term/{index:03}"), "v", None).await.unwrap();
    }
    tracing::info!("--- SIGTERM: the process exits 0 on its own");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(t4.pid() as libc::pid_t, libc::SIGTERM) }, 0);
    let mut status = None;
    for _ in 0..100 {
        status = t4.exit_status();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(status.is_some_and(|status| status.success()), "t4 did not exit cleanly on SIGTERM: {status:?}");
    let t4 = T4Process::start_in(dir.path(), port, &[]).await;
    let mut client = etcd_client::Client::connect([t4.endpoint.clone()], None).await.unwrap();
    let all = client.get("/term/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!(all.count(), 100);
}
