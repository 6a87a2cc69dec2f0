//! Requests and faults that must never stop the node or leave it claiming to serve while it
//! cannot (issue 15, docs/robustness.md "Hostile input").

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{DeleteOptions, GetOptions, PutOptions};
use futures::StreamExt;
use t4::env::{SimDisk, SimDiskFaults};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::server::{http_get, TestServer};

/// A key a little under etcd's default request bound (1.5 MiB); 190 of them are ~285 MB,
/// more than one WAL batch may carry (256 MiB). Before the write bounds, deleting them all
/// panicked the writer: every later write failed while health still said serving.
const BIG_KEY_BYTES: usize = 1_500_000;
const BIG_KEYS: usize = 190;

fn big_key(i: usize) -> Vec<u8> {
    let mut key = format!("/big/{i:03}/").into_bytes();
    key.resize(BIG_KEY_BYTES, b'k');
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_range_over_huge_keys_is_refused_and_the_node_keeps_serving() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    tracing::info!("--- {BIG_KEYS} keys of {BIG_KEY_BYTES} bytes, eight writers at a time");
    for group in (0..BIG_KEYS).collect::<Vec<_>>().chunks(8) {
        let puts = group.iter().map(|&i| {
            let mut client = client.clone();
            async move { client.put(big_key(i), "v", None).await.map(|_| ()) }
        });
        for outcome in futures::future::join_all(puts).await {
            outcome.unwrap();
        }
    }

    tracing::info!("--- deleting them all is refused with etcd's error, and deletes nothing");
    let refused = client.delete("/big/", Some(DeleteOptions::new().with_prefix())).await.unwrap_err();
    assert!(refused.to_string().contains("etcdserver: request is too large"), "{refused}");
    let count = client.get("/big/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count();
    assert_eq!(count, BIG_KEYS as i64);

    tracing::info!("--- nine racing deletes of 20 keys each (~270 MB of deleted keys in all) go through");
    let racing = (0..9).map(|part| {
        let mut client = client.clone();
        let (from, to) = (format!("/big/{:03}", part * 20), format!("/big/{:03}", part * 20 + 20));
        async move { client.delete(from, Some(DeleteOptions::new().with_range(to))).await.map(|deleted| deleted.deleted()) }
    });
    for outcome in futures::future::join_all(racing).await {
        assert_eq!(outcome.unwrap(), 20);
    }

    tracing::info!("--- the node still writes and says it is ready; what is left survives a restart");
    let put = client.put("/after", "ok", Some(PutOptions::new())).await.unwrap();
    assert!(put.header().unwrap().revision() > BIG_KEYS as i64);
    assert_eq!(http_get(server.metrics_addr, "/readyz").await.unwrap().0, 200);
    drop(client);
    let server = TestServer::start_in(server.stop().await, |_| {}).await;
    let mut client = server.client().await;
    let count = client.get("/big/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count();
    assert_eq!(count, BIG_KEYS as i64 - 180);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_reports_a_node_that_stopped_serving() {
    let disk = SimDisk::new();
    let env = t4::env::Env { clock: Arc::new(t4::env::RealClock::new()), disk: Arc::new(disk.clone()) };
    let node = t4::Node::open_with_env(t4::Config::new("/unused"), env).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let member = t4::api::MemberInfo { name: "health".into(), client_urls: vec![format!("http://{addr}")], peer_urls: Vec::new() };
    let core = t4::api::EtcdCore::new(node.clone(), member, Duration::from_secs(300));
    let metrics = Arc::new(t4_server::metrics::Metrics::new(Arc::new(t4::env::RealClock::new())));
    let service = t4_server::etcd::Service::new(core, metrics, Default::default());
    let mut builder = tonic::transport::Server::builder();
    let router = service.add_to(&mut builder, 1 << 20);
    let incoming = tokio_stream_listener(listener);
    tokio::spawn(router.serve_with_incoming(incoming));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let status = |response: tonic::Response<tonic_health::pb::HealthCheckResponse>| response.into_inner().status;
    let check = HealthCheckRequest { service: String::new() };
    assert_eq!(status(health.check(check.clone()).await.unwrap()), ServingStatus::Serving as i32);

    tracing::info!("--- a failed fsync stops the node: health says NOT_SERVING within a moment");
    node.put("before", "1").await.unwrap();
    disk.set_faults(SimDiskFaults { sync_failures: 1, ..Default::default() });
    assert!(node.put("during", "2").await.is_err());
    let mut seen = None;
    for _ in 0..100 {
        seen = Some(status(health.check(check.clone()).await.unwrap()));
        if seen == Some(ServingStatus::NotServing as i32) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, Some(ServingStatus::NotServing as i32));
    assert!(node.health().is_err());
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_gets_the_allowance_and_reads_go_on() {
    use t4::proto::etcdserverpb::auth_client::AuthClient;
    use t4::proto::etcdserverpb::AuthenticateRequest;
    let server = TestServer::start_with(|config| {
        config.auth_enabled = true;
        config.root_password = Some("rootpw".into());
    })
    .await;
    let channel = tonic::transport::Channel::from_shared(server.url()).unwrap().connect().await.unwrap();
    let mut root = etcd_client::Client::connect([server.endpoint()], Some(etcd_client::ConnectOptions::new().with_user("root", "rootpw")))
        .await
        .unwrap();
    root.put("/k", "v", None).await.unwrap();

    tracing::info!("--- 1,000 logins at once: 500 wrong passwords for root, 500 for users that do not exist");
    let logins = (0..1000).map(|i| {
        let mut auth = AuthClient::new(channel.clone());
        let name = if i % 2 == 0 { "root".to_string() } else { format!("nobody-{}", i % 10) };
        async move {
            let started = tokio::time::Instant::now();
            let outcome = auth.authenticate(AuthenticateRequest { name, password: "wrong".into() }).await;
            (outcome.map(|_| ()).map_err(|status| status.message().to_string()), started.elapsed())
        }
    });
    let reads = async {
        let started = tokio::time::Instant::now();
        for _ in 0..50 {
            root.get("/k", None).await.unwrap();
        }
        started.elapsed()
    };
    let (outcomes, read_time) = tokio::join!(futures::future::join_all(logins), reads);

    tracing::info!("--- each name got its allowance of checked attempts; the rest were refused at once");
    let failed = outcomes
        .iter()
        .filter(|(outcome, _)| {
            outcome.as_ref().err().map(String::as_str) == Some("etcdserver: authentication failed, invalid user ID or password")
        })
        .count();
    let limited =
        outcomes.iter().filter(|(outcome, _)| outcome.as_ref().err().map(String::as_str) == Some("etcdserver: too many requests")).count();
    let others: std::collections::BTreeSet<_> = outcomes.iter().map(|(outcome, _)| format!("{outcome:?}")).collect();
    assert_eq!(failed + limited, 1000, "no login passed and nothing else was answered: {others:?}");
    let allowance = t4::auth::tokens::FAILURES_BEFORE_BACKOFF as usize;
    assert!(failed <= 11 * allowance, "root and ten unknown names, {allowance} checked attempts each at most: {failed} were checked");
    assert!(failed >= 1);
    assert!(read_time < Duration::from_secs(5), "50 reads took {read_time:?} during the storm");

    tracing::info!("--- an unknown user's failed login takes as long as a known one's (one password check each)");
    // Five users that exist and five names that do not, one attempt each (no waits), taken
    // in turns; medians, so that a test running alongside cannot decide it.
    for i in 0..5 {
        root.user_add(format!("known-{i}"), "pw", None).await.unwrap();
    }
    let mut auth = AuthClient::new(channel.clone());
    let time = |name: String| {
        let mut auth = auth.clone();
        async move {
            let started = tokio::time::Instant::now();
            let outcome = auth.authenticate(AuthenticateRequest { name, password: "wrong".into() }).await;
            assert_eq!(outcome.unwrap_err().message(), "etcdserver: authentication failed, invalid user ID or password");
            started.elapsed()
        }
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..5 {
        known.push(time(format!("known-{i}")).await);
        unknown.push(time(format!("nobody-at-all-{i}")).await);
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[2], unknown[2]);
    assert!(unknown * 3 > known && known * 3 > unknown, "medians: known {known:?}, unknown {unknown:?}");
    tracing::info!("--- once root's wait (now 2 s) is over, its right password is let in");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let token = auth.authenticate(AuthenticateRequest { name: "root".into(), password: "rootpw".into() }).await.unwrap();
    assert!(!token.into_inner().token.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_caps_client_connections_and_drops_ones_that_never_speak() {
    let server = TestServer::start_with(|config| config.connections_max = 2).await;
    tracing::info!("--- two silent connections take both places; a third waits in the backlog");
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    let started = tokio::time::Instant::now();
    tracing::info!("--- a real client gets in once the silent ones are dropped (no HTTP/2 preface in 10 s)");
    let put = async {
        let mut client = server.client().await;
        client.put("/in", "yes", None).await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(30), put).await.expect("the client never got a place");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(9), "the cap let a third connection in at once ({waited:?})");
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent[0].read(&mut buffer)).await.expect("still open");
    assert!(matches!(read, Ok(0) | Err(_)), "a silent connection was closed by the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watches_and_progress_requests_on_one_stream() {
    use t4::proto::etcdserverpb::watch_client::WatchClient;
    use t4::proto::etcdserverpb::watch_request::RequestUnion;
    use t4::proto::etcdserverpb::{WatchCreateRequest, WatchProgressRequest, WatchRequest};
    let server = TestServer::start().await;
    let mut client = server.client().await;
    tracing::info!("--- 10,000 watches, then one more, then 10,000 RequestProgress, on one stream");
    let create = |i: usize| WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: format!("/w/{}", i % 100).into_bytes(),
            ..Default::default()
        })),
    };
    let progress = || WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) };
    let requests =
        futures::stream::iter((0..10_001).map(create).chain((0..10_000).map(move |_| progress()))).chain(futures::stream::pending());
    let mut raw = WatchClient::connect(server.url()).await.unwrap();
    let mut responses = raw.watch(requests).await.unwrap().into_inner();
    let (mut created, mut refused, mut progress_answers) = (0, 0, 0);
    while created + refused < 10_001 || progress_answers == 0 {
        let response = tokio::time::timeout(Duration::from_secs(30), responses.next()).await.expect("the stream stalled").unwrap().unwrap();
        if response.created && !response.canceled {
            created += 1;
        } else if response.canceled {
            refused += 1;
        } else if response.watch_id == -1 {
            progress_answers += 1;
        }
    }
    assert_eq!((created, refused), (10_000, 1), "the watch past the per-stream bound is refused");
    assert!((1..=10_000).contains(&progress_answers));

    tracing::info!("--- a write reaches the 100 watches of its key, and other clients are served meanwhile");
    client.put("/w/7", "x", None).await.unwrap();
    let mut events = 0;
    while events < 100 {
        let response = tokio::time::timeout(Duration::from_secs(30), responses.next()).await.expect("events stalled").unwrap().unwrap();
        events += response.events.len();
    }
    assert_eq!(events, 100);
    assert_eq!(client.get("/w/7", None).await.unwrap().kvs()[0].value(), b"x");
}

/// `t4 run` serves loopback by default; told to serve every address without TLS and auth,
/// it says so at start (tracing writes to stdout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_run_warns_when_it_serves_beyond_loopback_unprotected() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_t4")).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    assert!(help.contains("[default: 127.0.0.1:3379]") && help.contains("[default: 127.0.0.1:9090]"), "{help}");
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_t4"))
        .args(["run", "--listen", &format!("0.0.0.0:{port}"), "--metrics-addr", "off", "--log-level", "warn", "--data-dir"])
        .arg(data.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(crate::server::await_endpoint(&format!("127.0.0.1:{port}")).await, "t4 did not come up");
    t4_testkit::terminate(&child);
    let output = child.wait_with_output().unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(printed.contains("non-loopback address without both TLS"), "{printed}");
}

/// A watch storm with slow readers, on the real binary: 64 watch streams whose client
/// never reads, under 1,500 writes of 32 KiB that every one of them watches (48 MB each,
/// 3 GB in all if the server kept it for them). The server's memory stays bounded, other
/// clients are served meanwhile, and each slow watcher, once it reads, gets every revision
/// once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_storm_with_slow_readers_keeps_memory_bounded_and_loses_nothing() {
    const WATCHERS: usize = 64;
    const WRITES: usize = 1_500;
    const VALUE_BYTES: usize = 32 << 10;
    let mut t4 = crate::server::T4Process::start(&[]).await;
    let pid = t4.pid();
    let slow = etcd_client::Client::connect([t4.endpoint.clone()], None).await.unwrap();
    let mut streams = Vec::new();
    for _ in 0..WATCHERS {
        let (_watcher, stream) = slow.watch_client().watch("/storm/", Some(etcd_client::WatchOptions::new().with_prefix())).await.unwrap();
        streams.push((_watcher, stream));
    }
    let start_revision = {
        let mut client = etcd_client::Client::connect([t4.endpoint.clone()], None).await.unwrap();
        client.status().await.unwrap().header().unwrap().revision()
    };
    let memory = t4_testkit::RssPeak::sample(pid, Duration::from_millis(50));
    tracing::info!("--- {WRITES} writes of {VALUE_BYTES} B watched by {WATCHERS} streams that never read");
    let mut writer = etcd_client::Client::connect([t4.endpoint.clone()], None).await.unwrap();
    let mut reader = etcd_client::Client::connect([t4.endpoint.clone()], None).await.unwrap();
    let value = vec![b'v'; VALUE_BYTES];
    let mut slowest_read = Duration::ZERO;
    for i in 0..WRITES {
        writer.put(format!("/storm/{:02}", i % 50), value.clone(), None).await.unwrap();
        if i % 50 == 0 {
            let started = tokio::time::Instant::now();
            reader.get("/storm/00", None).await.unwrap();
            slowest_read = slowest_read.max(started.elapsed());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = memory.grown();
    eprintln!("watch storm: RSS grew {} MiB at most, slowest read {slowest_read:?}", grown >> 20);
    assert!(t4.alive());
    assert!(slowest_read < Duration::from_secs(2), "reads waited {slowest_read:?} during the storm");
    // Per stream: its queue (4 MiB), the response HTTP/2 holds for it (up to 4 MiB) and the
    // one its pump is merging; 16 MiB each is far below the 48 MB each was sent.
    assert!(grown < (WATCHERS as u64) << 24, "the server held {} MiB for {WATCHERS} slow watch streams", grown >> 20);

    tracing::info!("--- the slow watchers read at last: every revision once, in order");
    // All at once: unread streams of one connection hold its HTTP/2 window between them.
    let mut readers = Vec::new();
    for (index, (watcher, mut stream)) in streams.into_iter().enumerate() {
        readers.push(tokio::spawn(async move {
            let _watcher = watcher;
            let mut next = start_revision + 1;
            while next <= start_revision + WRITES as i64 {
                let response = tokio::time::timeout(Duration::from_secs(60), stream.message())
                    .await
                    .expect("a slow watcher stalled")
                    .unwrap()
                    .unwrap();
                for event in response.events() {
                    assert_eq!(event.kv().unwrap().mod_revision(), next, "watcher {index}: revisions once and in order");
                    next += 1;
                }
            }
        }));
    }
    for reader in readers {
        reader.await.unwrap();
    }
}
