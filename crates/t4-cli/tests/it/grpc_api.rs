//! Every etcd RPC t4 serves, through the `etcd-client` crate (and, where that client hides
//! a field, t4's own generated tonic client).

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, WatchFilterType, WatchOptions,
};
use futures::StreamExt;

use crate::server::{http_get, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_range_put_delete_txn_compact() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    tracing::info!("--- put with prev_kv, get with every range shape");
    client.put("/a/1", "x", None).await.unwrap();
    let put = client.put("/a/1", "y", Some(PutOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(put.prev_key().unwrap().value(), b"x");
    assert_eq!(put.header().unwrap().revision(), 3);
    client.put("/a/2", "z", None).await.unwrap();
    client.put("/b/1", "w", None).await.unwrap();
    let prefix = client.get("/a/", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(prefix.kvs().len(), 2);
    let from_key = client.get("/a/2", Some(GetOptions::new().with_from_key())).await.unwrap();
    assert_eq!(from_key.count(), 2, "/a/2 and /b/1");
    let all = client.get("", Some(GetOptions::new().with_all_keys().with_limit(1))).await.unwrap();
    assert_eq!((all.kvs().len(), all.count(), all.more()), (1, 3, true));
    let old = client.get("/a/1", Some(GetOptions::new().with_revision(2))).await.unwrap();
    assert_eq!(old.kvs()[0].value(), b"x");
    let sorted = client
        .get("/", Some(GetOptions::new().with_prefix().with_sort(SortTarget::Value, SortOrder::Descend).with_keys_only()))
        .await
        .unwrap();
    let keys: Vec<&[u8]> = sorted.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(keys, [&b"/a/2"[..], b"/a/1", b"/b/1"], "z > y > w, sorted before keys_only drops values");
    assert!(sorted.kvs()[0].value().is_empty(), "keys_only drops values");
    let counted = client.get("/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!((counted.count(), counted.kvs().len()), (3, 0));
    let recent = client.get("/", Some(GetOptions::new().with_prefix().with_min_mod_revision(4))).await.unwrap();
    assert_eq!(recent.kvs().len(), 2);

    tracing::info!("--- txn: compare, both branches, nested ops");
    let txn = Txn::new()
        .when([Compare::value("/a/1", CompareOp::Equal, "y"), Compare::mod_revision("/a/2", CompareOp::Less, 100)])
        .and_then([TxnOp::put("/a/3", "new", None), TxnOp::get("/a/", Some(GetOptions::new().with_prefix()))])
        .or_else([TxnOp::delete("/a/1", None)]);
    let response = client.txn(txn).await.unwrap();
    assert!(response.succeeded());
    assert_eq!(response.header().unwrap().revision(), 6);
    let failed =
        client.txn(Txn::new().when([Compare::version("/a/1", CompareOp::Greater, 5)]).or_else([TxnOp::get("/a/1", None)])).await.unwrap();
    assert!(!failed.succeeded());

    tracing::info!("--- delete ranges with prev_kv; compact and its errors");
    let deleted = client.delete("/a/", Some(DeleteOptions::new().with_prefix().with_prev_key())).await.unwrap();
    assert_eq!((deleted.deleted(), deleted.prev_kvs().len()), (3, 3));
    let revision = deleted.header().unwrap().revision();
    client.compact(revision - 1, None).await.unwrap();
    let error = client.get("/a/1", Some(GetOptions::new().with_revision(2))).await.unwrap_err();
    assert!(error.to_string().contains("required revision has been compacted"), "{error}");
    let error = client.get("/a/1", Some(GetOptions::new().with_revision(revision + 10))).await.unwrap_err();
    assert!(error.to_string().contains("required revision is a future revision"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_etcd_errors_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let empty = client.put("", "x", None).await.unwrap_err().to_string();
    assert!(empty.contains("etcdserver: key is not provided"), "{empty}");
    let large = client.put("big", vec![0u8; 1536 * 1024], None).await.unwrap_err().to_string();
    assert!(large.contains("etcdserver: request is too large"), "{large}");
    let ops: Vec<TxnOp> = (0..129).map(|index| TxnOp::put(format!("k{index}"), "v", None)).collect();
    let many = client.txn(Txn::new().and_then(ops)).await.unwrap_err().to_string();
    assert!(many.contains("etcdserver: too many operations in txn request"), "{many}");
    let duplicate =
        client.txn(Txn::new().and_then([TxnOp::put("k", "1", None), TxnOp::put("k", "2", None)])).await.unwrap_err().to_string();
    assert!(duplicate.contains("etcdserver: duplicate key given in txn request"), "{duplicate}");
    let inverted = client.get("z", Some(GetOptions::new().with_range("a"))).await.unwrap();
    assert_eq!(inverted.count(), 0, "range_end below key names nothing, as in etcd");

    tracing::info!("--- garbage bytes on the gRPC port do not stop the server");
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut socket, b"GET / HTTP/1.1\r\n\r\n\x00\xff garbage \x01\x02").await.unwrap();
    drop(socket);
    client.put("still", "serving", None).await.unwrap();
    assert_eq!(client.get("still", None).await.unwrap().kvs()[0].value(), b"serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_live_past_filtered_cancelled_and_compacted() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for index in 0..3 {
        client.put("/w/key", format!("v{index}"), None).await.unwrap();
    }
    client.delete("/w/key", None).await.unwrap();

    tracing::info!("--- from a past revision, with prev_kv");
    let (_watcher, mut stream) =
        client.watch("/w/", Some(WatchOptions::new().with_prefix().with_start_revision(2).with_prev_key())).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let response = stream.next().await.unwrap().unwrap();
        for event in response.events() {
            seen.push((event.event_type(), event.kv().unwrap().mod_revision(), event.prev_kv().map(|kv| kv.value().to_vec())));
        }
    }
    assert_eq!(seen[0], (EventType::Put, 2, None));
    assert_eq!(seen[1], (EventType::Put, 3, Some(b"v0".to_vec())));
    assert_eq!(seen[3].0, EventType::Delete);
    assert_eq!(seen[3].2, Some(b"v2".to_vec()));

    tracing::info!("--- NOPUT filter sees only the delete");
    let (_watcher, mut deletes) = client
        .watch("/w/", Some(WatchOptions::new().with_prefix().with_start_revision(1).with_filters([WatchFilterType::NoPut])))
        .await
        .unwrap();
    let response = deletes.next().await.unwrap().unwrap();
    assert_eq!(response.events().len(), 1);
    assert_eq!(response.events()[0].event_type(), EventType::Delete);

    tracing::info!("--- live events, then cancel");
    let (mut watcher, mut live) = client.watch("/live", None).await.unwrap();
    client.put("/live", "1", None).await.unwrap();
    let response = live.next().await.unwrap().unwrap();
    assert_eq!(response.events()[0].kv().unwrap().value(), b"1");
    watcher.cancel().await.unwrap();
    let cancelled = live.next().await.unwrap().unwrap();
    assert!(cancelled.canceled());

    tracing::info!("--- a watch from a compacted revision is cancelled with the compact revision");
    client.compact(4, None).await.unwrap();
    let (_watcher, mut stale) = client.watch("/w/", Some(WatchOptions::new().with_prefix().with_start_revision(2))).await.unwrap();
    let response = stale.next().await.unwrap().unwrap();
    assert!(response.canceled());
    assert_eq!(response.compact_revision(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_progress_notifications() {
    let server = TestServer::start_with(|config| config.watch.progress_notify_interval = Duration::from_millis(100)).await;
    let mut client = server.client().await;
    client.put("/p/a", "1", None).await.unwrap();
    let (mut watcher, mut stream) = client.watch("/p/", Some(WatchOptions::new().with_prefix().with_progress_notify())).await.unwrap();
    tracing::info!("--- periodic progress: an empty response at the current revision");
    let response = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
    assert!(response.events().is_empty());
    assert_eq!(response.header().unwrap().revision(), 2);
    tracing::info!("--- RequestProgress after writes elsewhere: the revision moves on, nothing is skipped");
    client.put("/other", "x", None).await.unwrap();
    watcher.request_progress().await.unwrap();
    let mut revision = 0;
    while revision < 3 {
        let response = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
        assert!(response.events().is_empty());
        revision = response.header().unwrap().revision();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fragments_large_revisions() {
    use t4::proto::etcdserverpb::watch_client::WatchClient;
    use t4::proto::etcdserverpb::watch_request::RequestUnion;
    use t4::proto::etcdserverpb::{WatchCreateRequest, WatchRequest};
    let server = TestServer::start().await;
    let mut client = server.client().await;
    tracing::info!("--- one txn writes 3 x 1 MiB: one revision, over the fragment bound");
    let ops: Vec<TxnOp> = (0..3).map(|index| TxnOp::put(format!("/f/{index}"), vec![b'x'; 1 << 20], None)).collect();
    for op in ops {
        client.txn(Txn::new().and_then([op])).await.unwrap();
    }
    let mut raw = WatchClient::connect(server.url()).await.unwrap();
    let create =
        WatchCreateRequest { key: b"/f/".to_vec(), range_end: b"/f0".to_vec(), start_revision: 1, fragment: true, ..Default::default() };
    let requests = futures::stream::iter([WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }])
        .chain(futures::stream::pending());
    let mut responses = raw.watch(requests).await.unwrap().into_inner();
    let created = responses.next().await.unwrap().unwrap();
    assert!(created.created);
    let mut events = 0;
    let mut fragments = 0;
    while events < 3 {
        let response = responses.next().await.unwrap().unwrap();
        fragments += usize::from(response.fragment);
        events += response.events.len();
    }
    assert_eq!(events, 3);
    assert!(fragments >= 1, "3 MiB of events must arrive in fragments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_cluster_health_metrics_and_what_is_not_built() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.put("k", "v", None).await.unwrap();
    let status = client.status().await.unwrap();
    assert!(status.db_size() > 0);
    assert_eq!(status.leader(), status.header().unwrap().member_id());
    assert_eq!(status.raft_index(), 1, "one WAL record written");
    let members = client.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    assert_eq!(members.members()[0].client_urls(), [server.url()]);
    let hash = client.hash_kv(0).await.unwrap();
    client.put("k2", "v", None).await.unwrap();
    assert_eq!(client.hash_kv(2).await.unwrap().hash(), hash.hash(), "a hash at a fixed revision is stable");
    assert_ne!(client.hash_kv(0).await.unwrap().hash(), hash.hash());
    client.defragment().await.unwrap();
    let alarms = client.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None).await.unwrap();
    assert!(alarms.alarms().is_empty());

    tracing::info!("--- gRPC health");
    let channel = tonic::transport::Channel::from_shared(server.url()).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(serving.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    tracing::info!("--- metrics and probes");
    let (code, metrics) = http_get(server.metrics_addr, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("t4_revision 3"), "{metrics}");
    assert!(metrics.contains("t4_request_duration_seconds_count{method=\"put\"} 2"), "{metrics}");
    assert_eq!(http_get(server.metrics_addr, "/healthz").await.unwrap().0, 200);
    assert_eq!(http_get(server.metrics_addr, "/readyz").await.unwrap().0, 200);

    tracing::info!("--- AuthStatus of a fresh store: auth off, auth revision 1 (etcd's first)");
    let mut auth = t4::proto::etcdserverpb::auth_client::AuthClient::new(channel);
    let status = auth.auth_status(t4::proto::etcdserverpb::AuthStatusRequest {}).await.unwrap().into_inner();
    assert!(!status.enabled);
    assert_eq!(status.auth_revision, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_then_restart_keeps_everything() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for index in 0..100 {
        client.put(format!("/keep/{index:03}"), "v", None).await.unwrap();
    }
    drop(client);
    let dir = server.stop().await;
    tracing::info!("--- a new server on the same directory serves the same store");
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut client = server.client().await;
    let all = client.get("/keep/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!(all.count(), 100);
    assert_eq!(client.put("/next", "v", None).await.unwrap().header().unwrap().revision(), 102);
}
