//! The `t4` binary on the `s4` binary over the S3 protocol: total disk loss under load,
//! two processes on one prefix (fencing), and s4 restarted mid-load.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use etcd_client::{GetOptions, WatchOptions};
use futures::StreamExt;

use t4_testkit::s4::{S4Process, ACCESS, SECRET};

pub(crate) const BUCKET: &str = "t4-durable";

struct T4 {
    child: Child,
    endpoint: String,
}

impl T4 {
    async fn start(s4: &S4Process, data_dir: &std::path::Path, prefix: &str) -> Self {
        Self::start_with(s4, data_dir, prefix, &[]).await
    }

    async fn start_with(s4: &S4Process, data_dir: &std::path::Path, prefix: &str, extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let endpoint = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_t4"))
            .args(["run", "--listen", &endpoint, "--metrics-addr", "off", "--log-level", "warn", "--data-dir"])
            .arg(data_dir)
            .args(["--s3-bucket", BUCKET, "--s3-prefix", prefix, "--s3-endpoint", &s4.endpoint])
            .args(extra)
            .env("T4_S3_ACCESS_KEY_ID", ACCESS)
            .env("T4_S3_SECRET_ACCESS_KEY", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let process = Self { child, endpoint };
        // Opening replays the bucket's log first: allow for it.
        for _ in 0..1200 {
            if let Ok(mut client) = etcd_client::Client::connect([process.endpoint.clone()], None).await {
                if client.status().await.is_ok() {
                    return process;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("t4 did not come up on {}", process.endpoint);
    }

    async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint.clone()], None).await.unwrap()
    }

    fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for T4 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn bucket_store(s4: &S4Process, prefix: &str) -> t4::object::S3ObjectStore {
    let config = t4::object::S3Config {
        endpoint: Some(s4.endpoint.clone()),
        region: "us-east-1".into(),
        bucket: BUCKET.into(),
        prefix: prefix.into(),
        credentials: t4::object::S3Credentials::keys(ACCESS, SECRET),
        ca_certificate_pem: None,
    };
    t4::object::S3ObjectStore::connect(config).await.unwrap()
}

pub(crate) async fn s4_with_bucket() -> S4Process {
    let s4 = S4Process::start().await;
    bucket_store(&s4, "").await.client().create_bucket().bucket(BUCKET).send().await.unwrap();
    s4
}

/// `clients` writers putting `/load/<writer>/<n>` until an error; each returns what it had
/// acknowledged, (key, revision).
fn writers(endpoint: &str, clients: usize, acked: Arc<AtomicUsize>) -> Vec<tokio::task::JoinHandle<Vec<(String, i64)>>> {
    (0..clients)
        .map(|writer| {
            let (endpoint, acked) = (endpoint.to_string(), acked.clone());
            tokio::spawn(async move {
                let mut client = etcd_client::Client::connect([endpoint], None).await.unwrap();
                let mut done = Vec::new();
                for index in 0.. {
                    let key = format!("/load/{writer:02}/{index:06}");
                    match client.put(key.clone(), format!("v-{writer}-{index}"), None).await {
                        Ok(response) => done.push((key, response.header().unwrap().revision())),
                        Err(_) => break,
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                done
            })
        })
        .collect()
}

async fn wait_for(counter: &AtomicUsize, at_least: usize, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while counter.load(Ordering::SeqCst) < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {at_least} writes acknowledged in {limit:?}",
            counter.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every acknowledged (key, revision) is there with its value, at that revision.
async fn check(t4: &T4, acked: &[(String, i64)], clients: usize) {
    let mut client = t4.client().await;
    let mut stored = BTreeMap::new();
    for writer in 0..clients {
        let prefix = format!("/load/{writer:02}/");
        let response = client.get(prefix, Some(GetOptions::new().with_prefix())).await.unwrap();
        for kv in response.kvs() {
            stored.insert(kv.key_str().unwrap().to_string(), (kv.mod_revision(), kv.value_str().unwrap().to_string()));
        }
    }
    for (key, revision) in acked {
        let (stored_revision, value) = stored.get(key).unwrap_or_else(|| panic!("acknowledged {key} lost"));
        assert_eq!(stored_revision, revision, "{key}");
        let (writer, index) = key["/load/".len()..].split_once('/').unwrap();
        assert_eq!(*value, format!("v-{}-{}", writer.parse::<usize>().unwrap(), index.parse::<usize>().unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_on_s4_loses_its_disk_under_load_and_gets_every_acknowledged_write_back() {
    let s4 = s4_with_bucket().await;
    let data = tempfile::tempdir().unwrap();
    // Checkpoints during the load: the restore starts from one, and GC removes the log below.
    let checkpoints = ["--checkpoint-entries", "30000", "--checkpoint-interval-min", "0"];
    let mut t4 = T4::start_with(&s4, data.path(), "node/", &checkpoints).await;
    const CLIENTS: usize = 32;
    let acked_count = Arc::new(AtomicUsize::new(0));
    let tasks = writers(&t4.endpoint, CLIENTS, acked_count.clone());
    wait_for(&acked_count, 100_000, Duration::from_secs(300)).await;
    t4.kill_9();
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    assert!(acked.len() >= 100_000);
    std::fs::remove_dir_all(data.path()).unwrap();
    let status = t4::durability::status::status(&bucket_store(&s4, "node/").await).await.unwrap();
    let newest = status.checkpoints.iter().rev().find(|(_, complete)| *complete).expect("a complete checkpoint").0.position;
    assert!(newest.index >= 30_000, "{newest:?}");
    assert!(status.terms[0].first_seq > 1, "GC removed the log below the checkpoint: {:?}", status.terms[0]);

    let t4 = T4::start_with(&s4, data.path(), "node/", &checkpoints).await;
    check(&t4, &acked, CLIENTS).await;
    let highest = acked.iter().map(|(_, revision)| *revision).max().unwrap();

    // A watch from a retained revision replays every acknowledged put after it, in order.
    let start = highest - 5_000;
    let mut client = t4.client().await;
    let (_watcher, mut stream) = client.watch("/load/", Some(WatchOptions::new().with_prefix().with_start_revision(start))).await.unwrap();
    let mut replayed = BTreeMap::new();
    let mut last = 0;
    while last < highest {
        let response = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("the replay stalled").unwrap().unwrap();
        for event in response.events() {
            let kv = event.kv().unwrap();
            assert!(kv.mod_revision() >= last, "events replay in revision order");
            last = kv.mod_revision();
            replayed.insert(kv.key_str().unwrap().to_string(), kv.mod_revision());
        }
    }
    for (key, revision) in acked.iter().filter(|(_, revision)| *revision >= start) {
        assert_eq!(replayed.get(key), Some(revision), "{key} missing from the replay");
    }
    let next = client.put("/after", "restore", None).await.unwrap().header().unwrap().revision();
    assert!(next > highest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_t4_on_the_same_prefix_fences_the_first_and_keeps_every_acknowledged_write() {
    let s4 = s4_with_bucket().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = T4::start(&s4, dir_a.path(), "shared/").await;
    let acked_count = Arc::new(AtomicUsize::new(0));
    let tasks = writers(&a.endpoint, 8, acked_count.clone());
    wait_for(&acked_count, 2_000, Duration::from_secs(60)).await;
    // b takes the next term and seals a's log while a's writers run.
    let b = T4::start(&s4, dir_b.path(), "shared/").await;
    let mut acked = Vec::new();
    for task in tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks)).await.expect("a stops acknowledging") {
        acked.extend(task.unwrap());
    }
    let mut client_a = a.client().await;
    let refused = client_a.put("/a/late", "x", None).await.unwrap_err();
    assert!(refused.to_string().contains("fenced"), "{refused}");
    check(&b, &acked, 8).await;
    let mut client_b = b.client().await;
    let after = client_b.put("/b/after", "y", None).await.unwrap().header().unwrap().revision();
    assert!(after > acked.iter().map(|(_, revision)| *revision).max().unwrap());
    assert!(client_b.get("/a/late", None).await.unwrap().kvs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_stops_acknowledging_while_s4_is_down_and_resumes_losing_nothing() {
    let mut s4 = s4_with_bucket().await;
    let data = tempfile::tempdir().unwrap();
    let t4 = T4::start(&s4, data.path(), "outage/").await;
    let acked_count = Arc::new(AtomicUsize::new(0));
    let tasks = writers(&t4.endpoint, 8, acked_count.clone());
    wait_for(&acked_count, 1_000, Duration::from_secs(60)).await;
    s4.kill_9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = acked_count.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(acked_count.load(Ordering::SeqCst), during, "nothing is acknowledged while the bucket is down");
    s4.restart().await;
    wait_for(&acked_count, during + 1_000, Duration::from_secs(60)).await;
    let mut t4 = t4;
    t4.kill_9();
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    // Everything acknowledged, before, across and after the outage, is in the bucket.
    let elsewhere = tempfile::tempdir().unwrap();
    let restored = T4::start(&s4, elsewhere.path(), "outage/").await;
    check(&restored, &acked, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_keeps_its_log_in_a_directory_and_t4_status_reads_it() {
    let (objects, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |data: &std::path::Path, port: u16| {
        Command::new(env!("CARGO_BIN_EXE_t4"))
            .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--metrics-addr", "off", "--log-level", "warn", "--data-dir"])
            .arg(data)
            .arg("--object-dir")
            .arg(objects.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut first = start(data.path(), port);
    assert!(crate::server::await_endpoint(&format!("127.0.0.1:{port}")).await);
    let mut client = etcd_client::Client::connect([format!("127.0.0.1:{port}")], None).await.unwrap();
    for index in 0..20 {
        client.put(format!("/dir/{index}"), "v", None).await.unwrap();
    }
    first.kill().unwrap();
    first.wait().unwrap();

    // A second node on a fresh disk gets it all back from the directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut second = start(elsewhere.path(), port);
    assert!(crate::server::await_endpoint(&format!("127.0.0.1:{port}")).await);
    let mut client = etcd_client::Client::connect([format!("127.0.0.1:{port}")], None).await.unwrap();
    let response = client.get("/dir/", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(response.kvs().len(), 20);
    second.kill().unwrap();
    second.wait().unwrap();

    let status = Command::new(env!("CARGO_BIN_EXE_t4")).args(["status", "--object-dir"]).arg(objects.path()).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}{}", String::from_utf8_lossy(&status.stderr));
    assert!(text.contains("lock: term 2"), "{text}");
    assert!(text.contains("wal term 1: 20 objects, records 1..=20, sealed at seq 21"), "{text}");
    assert!(text.contains("log: records 1..=20"), "{text}");
    let refused = Command::new(env!("CARGO_BIN_EXE_t4")).args(["status"]).output().unwrap();
    assert!(!refused.status.success());
}

/// Writers putting `/async/<round>/<writer>/<n>` until an error; each returns (key, mod
/// revision, when the acknowledgement arrived).
fn timed_writers(
    endpoint: &str,
    clients: usize,
    round: &str,
    acked: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Vec<(String, i64, Instant)>>> {
    (0..clients)
        .map(|writer| {
            let (endpoint, round, acked) = (endpoint.to_string(), round.to_string(), acked.clone());
            tokio::spawn(async move {
                let mut client = etcd_client::Client::connect([endpoint], None).await.unwrap();
                let mut done = Vec::new();
                for index in 0.. {
                    let key = format!("/async/{round}/{writer:02}/{index:06}");
                    match tokio::time::timeout(Duration::from_secs(30), client.put(key.clone(), key.clone(), None)).await {
                        Ok(Ok(response)) => done.push((key, response.header().unwrap().revision(), Instant::now())),
                        _ => break,
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                done
            })
        })
        .collect()
}

async fn joined(tasks: Vec<tokio::task::JoinHandle<Vec<(String, i64, Instant)>>>) -> Vec<(String, i64, Instant)> {
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

/// (mod revision, value) of every key under `prefix`.
async fn stored(t4: &T4, prefix: &str) -> BTreeMap<String, (i64, String)> {
    let mut client = t4.client().await;
    let response = client.get(prefix, Some(GetOptions::new().with_prefix())).await.unwrap();
    response.kvs().iter().map(|kv| (kv.key_str().unwrap().to_string(), (kv.mod_revision(), kv.value_str().unwrap().to_string()))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_upload_in_the_background_a_lost_disk_loses_at_most_the_last_seconds() {
    const CLIENTS: usize = 16;
    const MAX_AGE: Duration = Duration::from_secs(1);
    let mut s4 = s4_with_bucket().await;
    let data = tempfile::tempdir().unwrap();
    let args = ["--wal-sync-upload=false", "--segment-max-age-sec", "1"];
    let mut t4 = T4::start_with(&s4, data.path(), "async/", &args).await;

    // kill -9 with the disk kept: the local WAL holds every acknowledged write, and the
    // restart puts what the bucket lacked into it.
    let count = Arc::new(AtomicUsize::new(0));
    let tasks = timed_writers(&t4.endpoint, CLIENTS, "kept", count.clone());
    wait_for(&count, 5_000, Duration::from_secs(120)).await;
    t4.kill_9();
    let kept = joined(tasks).await;
    let mut t4 = T4::start_with(&s4, data.path(), "async/", &args).await;
    let found = stored(&t4, "/async/kept/").await;
    for (key, revision, _) in &kept {
        assert_eq!(found.get(key), Some(&(*revision, key.clone())), "acknowledged {key} lost with the disk kept");
    }

    // The bucket down: acknowledgements stop once it is MAX_AGE behind, and resume after.
    let count = Arc::new(AtomicUsize::new(0));
    let tasks = timed_writers(&t4.endpoint, CLIENTS, "outage", count.clone());
    wait_for(&count, 1_000, Duration::from_secs(60)).await;
    s4.kill_9();
    let down_at = Instant::now();
    tokio::time::sleep(MAX_AGE * 4).await;
    let during = count.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count.load(Ordering::SeqCst), during, "no write is acknowledged while the bucket is too far behind");
    s4.restart().await;
    wait_for(&count, during + 1_000, Duration::from_secs(60)).await;

    // Now the disk is lost: writes acknowledged more than MAX_AGE before the last
    // acknowledgement are in the bucket (half a second allowed for answers in flight).
    t4.kill_9();
    let outage = joined(tasks).await;
    let last_ack = outage.iter().map(|(_, _, at)| *at).max().unwrap();
    let late_in_outage = outage.iter().filter(|(_, _, at)| *at > down_at + MAX_AGE * 2 && *at < down_at + MAX_AGE * 4).count();
    assert_eq!(late_in_outage, 0, "acknowledged while the bucket was down for more than MAX_AGE");
    std::fs::remove_dir_all(data.path()).unwrap();
    let t4 = T4::start_with(&s4, data.path(), "async/", &args).await;
    let found = stored(&t4, "/async/outage/").await;
    let bound = last_ack - MAX_AGE - Duration::from_millis(500);
    let (mut promised, mut extra) = (0, 0);
    for (key, revision, at) in &outage {
        match found.get(key) {
            Some(entry) => {
                assert_eq!(entry, &(*revision, key.clone()), "{key} came back different");
                extra += usize::from(*at > bound);
            }
            None => assert!(*at > bound, "{key}, acknowledged {:?} before the last acknowledgement, was lost", last_ack - *at),
        }
        promised += usize::from(*at <= bound);
    }
    assert!(promised > 1_000, "the check covered {promised} writes");
    println!("background upload: {promised} writes promised and present, {extra} of the last second present too");
}

/// Runs the `t4` binary; returns (success, stdout + stderr).
fn t4_cli(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_t4")).args(args).output().unwrap();
    (output.status.success(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_tools_restore_inspect_and_collect_a_bucket() {
    let (objects, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut node = Command::new(env!("CARGO_BIN_EXE_t4"))
        .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--metrics-addr", "off", "--log-level", "warn", "--data-dir"])
        .arg(data.path())
        .arg("--object-dir")
        .arg(objects.path())
        .args(["--checkpoint-entries", "10", "--checkpoint-interval-min", "0"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(crate::server::await_endpoint(&format!("127.0.0.1:{port}")).await);
    let mut client = etcd_client::Client::connect([format!("127.0.0.1:{port}")], None).await.unwrap();
    let (objects_arg, data_arg) = (objects.path().as_os_str(), data.path().as_os_str());
    // The checkpointer looks every second: wait for the checkpoint of each phase.
    let checkpointed = |revision: i64| async move {
        let at_revision = format!("checkpoint at revision {revision} ");
        let mut status = String::new();
        for _ in 0..100 {
            status = t4_cli(&["status".as_ref(), "--object-dir".as_ref(), objects_arg]).1;
            if status.contains(&at_revision) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no checkpoint at {revision}: {status}");
    };
    for index in 0..30 {
        client.put(format!("/tool/k{index:02}"), format!("value {index}"), None).await.unwrap();
    }
    checkpointed(31).await;
    for version in 1..=5 {
        client.put("/tool/hot", format!("v{version}"), None).await.unwrap();
    }
    client.delete("/tool/k07", None).await.unwrap();
    for index in 0..5 {
        client.put(format!("/tool/late{index}"), "x", None).await.unwrap();
    }
    let revision = client.get("/tool/hot", None).await.unwrap().header().unwrap().revision();
    let status = checkpointed(revision).await;
    node.kill().unwrap();
    node.wait().unwrap();
    assert_eq!(status.matches("checkpoint at revision").count(), 2, "GC keeps two: {status}");
    assert!(status.contains("from seq"), "the log below the newest checkpoint was collected: {status}");

    // From the bucket (a checkpoint and the log after it) and from the data dir alike.
    for source in [["--object-dir".as_ref(), objects_arg], ["--data-dir".as_ref(), data_arg]] {
        let run = |command: &[&str]| {
            let mut args: Vec<&std::ffi::OsStr> = vec!["inspect".as_ref()];
            args.extend(source);
            args.extend(command.iter().map(|arg| std::ffi::OsStr::new(*arg)));
            let (ok, text) = t4_cli(&args);
            assert!(ok, "{command:?}: {text}");
            text
        };
        let get = run(&["get", "/tool/hot"]);
        assert!(get.contains("value: v5") && get.contains("mod_revision: 36") && get.contains("version: 5"), "{get}");
        let old = run(&["get", "/tool/hot", "--revision", "34"]);
        assert!(old.contains("value: v3"), "{old}");
        assert!(run(&["get", "/tool/k07"]).contains("/tool/k07: not found"));
        let list = run(&["list", "/tool/"]);
        assert!(list.contains("35 of 35 key(s)") && list.contains("/tool/k29  mod_revision 31  8 bytes"), "{list}");
        let history = run(&["history", "/tool/hot"]);
        assert!(history.contains("5 change(s) held for /tool/hot") && history.contains("value: v1"), "{history}");
        let deleted = run(&["history", "/tool/k07"]);
        assert!(deleted.contains("revision 37: deleted") && deleted.contains("2 change(s)"), "{deleted}");
        let meta = run(&["meta"]);
        assert!(meta.contains(&format!("revision: {revision}\n")), "{meta}");
    }
    let inspected = t4_cli(&["inspect".as_ref(), "--object-dir".as_ref(), objects_arg, "meta".as_ref()]).1;
    assert!(inspected.contains("source: bucket: checkpoint at revision"), "{inspected}");

    // A restored data dir serves the checkpoint's state; a full directory is refused.
    let restored = tempfile::tempdir().unwrap();
    let (ok, text) = t4_cli(&[
        "restore".as_ref(),
        "checkpoint".as_ref(),
        "--data-dir".as_ref(),
        restored.path().as_os_str(),
        "--object-dir".as_ref(),
        objects_arg,
    ]);
    assert!(ok && text.contains(&format!("restored the checkpoint at revision {revision}")), "{text}");
    let meta = t4_cli(&["inspect".as_ref(), "--data-dir".as_ref(), restored.path().as_os_str(), "meta".as_ref()]).1;
    assert!(meta.contains(&format!("revision: {revision}\n")), "{meta}");
    let (ok, text) =
        t4_cli(&["restore".as_ref(), "checkpoint".as_ref(), "--data-dir".as_ref(), data_arg, "--object-dir".as_ref(), objects_arg]);
    assert!(!ok && text.contains("is not empty"), "{text}");

    let (ok, text) = t4_cli(&["gc".as_ref(), "--object-dir".as_ref(), objects_arg, "--checkpoint-retain".as_ref(), "1".as_ref()]);
    assert!(ok && text.contains("kept 1 checkpoint(s)") && text.contains("1 manifest(s)"), "{text}");
    let status = t4_cli(&["status".as_ref(), "--object-dir".as_ref(), objects_arg]).1;
    assert_eq!(status.matches("checkpoint at revision").count(), 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_a_profile_of_the_shared_credentials_file() {
    let s4 = s4_with_bucket().await;
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("credentials");
    std::fs::write(&file, format!("[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[s4]\naws_access_key_id = {ACCESS}\naws_secret_access_key = {SECRET}\n")).unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let t4 = |profile: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_t4"));
        command
            .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--metrics-addr", "off", "--log-level", "warn", "--data-dir"])
            .arg(data.path())
            .args(["--s3-bucket", BUCKET, "--s3-prefix", "profile/", "--s3-endpoint", &s4.endpoint, "--s3-profile", profile])
            .env("AWS_SHARED_CREDENTIALS_FILE", &file)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    let missing = t4("nope").output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no S3 credentials from profile \"nope\""), "{missing:?}");
    let mut node = t4("s4").spawn().unwrap();
    assert!(crate::server::await_endpoint(&format!("127.0.0.1:{port}")).await);
    let mut client = etcd_client::Client::connect([format!("127.0.0.1:{port}")], None).await.unwrap();
    client.put("/profile", "works", None).await.unwrap();
    node.kill().unwrap();
    node.wait().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_t4"))
        .args(["status", "--s3-bucket", BUCKET, "--s3-prefix", "profile/", "--s3-endpoint", &s4.endpoint, "--s3-profile", "s4"])
        .env("AWS_SHARED_CREDENTIALS_FILE", &file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success() && text.contains("records 1..=1"), "{text}{}", String::from_utf8_lossy(&status.stderr));
}
