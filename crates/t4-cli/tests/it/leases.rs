//! Leases through the `etcd-client` crate: every Lease RPC, keys attached and revoked at one
//! revision, keepalives that spend nothing, expiry after the TTL and not before, restarts.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use tokio::time::Instant;

use crate::server::TestServer;

async fn revision(client: &mut etcd_client::Client) -> i64 {
    client.get("/", None).await.unwrap().header().unwrap().revision()
}

fn message(error: etcd_client::Error) -> String {
    error.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lease_rpc_with_etcds_answers_and_errors() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let start = revision(&mut client).await;

    let chosen = client.lease_grant(60, None).await.unwrap();
    assert!(chosen.id() > 0 && chosen.ttl() == 60);
    let short = client.lease_grant(1, Some(LeaseGrantOptions::new().with_id(77))).await.unwrap();
    assert_eq!((short.id(), short.ttl()), (77, 2), "TTLs below etcd's minimum are raised to 2 s");
    assert_eq!(revision(&mut client).await, start, "grants spend no revision");
    let exists = message(client.lease_grant(5, Some(LeaseGrantOptions::new().with_id(77))).await.unwrap_err());
    assert!(exists.contains("etcdserver: lease already exists"), "{exists}");
    let large = message(client.lease_grant(9_000_000_001, None).await.unwrap_err());
    assert!(large.contains("etcdserver: too large lease TTL"), "{large}");

    let id = chosen.id();
    client.put("/leased/a", "1", Some(PutOptions::new().with_lease(id))).await.unwrap();
    client.put("/leased/b", "2", Some(PutOptions::new().with_lease(id))).await.unwrap();
    let unknown = message(client.put("/leased/c", "3", Some(PutOptions::new().with_lease(12345))).await.unwrap_err());
    assert!(unknown.contains("etcdserver: requested lease not found"), "{unknown}");
    let kept = client.put("/leased/a", "", Some(PutOptions::new().with_ignore_value().with_ignore_lease())).await;
    kept.unwrap();
    let a = client.get("/leased/a", None).await.unwrap();
    assert_eq!((a.kvs()[0].lease(), a.kvs()[0].value()), (id, &b"1"[..]), "ignore_lease keeps the lease");

    let ttl = client.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys())).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 60);
    assert!((58..=60).contains(&ttl.ttl()), "{}", ttl.ttl());
    assert_eq!(ttl.keys(), [b"/leased/a".to_vec(), b"/leased/b".to_vec()]);
    let missing = client.lease_time_to_live(4242, None).await.unwrap();
    assert_eq!(missing.ttl(), -1, "etcd answers TTL -1 for a lease that does not exist");
    let mut ids: Vec<i64> = client.leases().await.unwrap().leases().iter().map(|lease| lease.id()).collect();
    ids.sort();
    let mut expected = vec![77, id];
    expected.sort();
    assert_eq!(ids, expected);

    // A txn can compare a key's lease.
    let on_lease = Txn::new().when([Compare::lease("/leased/b", CompareOp::Equal, id)]).and_then([TxnOp::get("/leased/b", None)]);
    assert!(client.txn(on_lease).await.unwrap().succeeded());
    let not_on = Txn::new().when([Compare::lease("/leased/b", CompareOp::Equal, 77)]);
    assert!(!client.txn(not_on).await.unwrap().succeeded());

    let (mut keeper, mut answers) = client.lease_keep_alive(id).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let answer = answers.message().await.unwrap().unwrap();
    assert_eq!((answer.id(), answer.ttl()), (id, 60));
    // etcd answers TTL 0 to a keepalive for no lease; the client turns that into its error.
    let Err(gone) = client.lease_keep_alive(999).await else { panic!("a keepalive for no lease must fail") };
    let gone = message(gone);
    assert!(gone.contains("lease not found"), "{gone}");

    let before = revision(&mut client).await;
    let revoked = client.lease_revoke(id).await.unwrap();
    assert_eq!(revoked.header().unwrap().revision(), before + 1);
    assert_eq!(client.get("/leased/", Some(GetOptions::new().with_prefix())).await.unwrap().count(), 0);
    let again = message(client.lease_revoke(id).await.unwrap_err());
    assert!(again.contains("etcdserver: requested lease not found"), "{again}");
    client.lease_revoke(77).await.unwrap();
    assert_eq!(revision(&mut client).await, before + 1, "revoking a lease without keys spends no revision");
    assert!(client.leases().await.unwrap().leases().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_lease_with_10k_keys_is_one_revision_and_one_batch_of_events() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let id = client.lease_grant(600, None).await.unwrap().id();
    for batch in 0..(10_000 / 100) {
        let puts: Vec<TxnOp> =
            (0..100).map(|i| TxnOp::put(format!("/many/{:05}", batch * 100 + i), "v", Some(PutOptions::new().with_lease(id)))).collect();
        client.txn(Txn::new().and_then(puts)).await.unwrap();
    }
    let before = revision(&mut client).await;
    let (_watcher, mut events) = client.watch("/many/", Some(WatchOptions::new().with_prefix())).await.unwrap();
    let started = Instant::now();
    let revoked = client.lease_revoke(id).await.unwrap();
    tracing::info!(elapsed = ?started.elapsed(), "revoked 10k keys");
    assert_eq!(revoked.header().unwrap().revision(), before + 1);
    let mut deleted = 0;
    while deleted < 10_000 {
        let response = tokio::time::timeout(Duration::from_secs(30), events.message()).await.unwrap().unwrap().unwrap();
        for event in response.events() {
            assert_eq!(event.event_type(), EventType::Delete);
            assert_eq!(event.kv().unwrap().mod_revision(), before + 1, "every delete at the one revision");
            deleted += 1;
        }
    }
    assert_eq!(deleted, 10_000);
    assert_eq!(client.get("/many/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count(), 0);
    assert_eq!(revision(&mut client).await, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keepalives_leave_the_revision_unchanged() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let id = client.lease_grant(30, None).await.unwrap().id();
    client.put("/kept", "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
    let before = revision(&mut client).await;
    let (mut keeper, mut answers) = client.lease_keep_alive(id).await.unwrap();
    for _ in 0..10_000 {
        keeper.keep_alive().await.unwrap();
        let answer = answers.message().await.unwrap().unwrap();
        assert_eq!((answer.id(), answer.ttl()), (id, 30));
    }
    assert_eq!(revision(&mut client).await, before, "keepalives spend no revision");
    let kv = client.get("/kept", None).await.unwrap();
    assert_eq!(kv.kvs()[0].mod_revision(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lives_while_kept_alive_and_expires_after_its_ttl_not_before() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let id = client.lease_grant(2, None).await.unwrap().id();
    client.put("/ephemeral", "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
    let (_watcher, mut events) = client.watch("/ephemeral", None).await.unwrap();
    let (mut keeper, mut answers) = client.lease_keep_alive(id).await.unwrap();
    let mut last_keepalive = Instant::now();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        keeper.keep_alive().await.unwrap();
        assert_eq!(answers.message().await.unwrap().unwrap().ttl(), 2);
        last_keepalive = Instant::now();
    }
    assert_eq!(client.get("/ephemeral", None).await.unwrap().count(), 1, "kept alive for 4 s with a 2 s TTL");
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(last_keepalive.elapsed())).await;
    assert_eq!(client.get("/ephemeral", None).await.unwrap().count(), 1, "1.5 s after the last keepalive of a 2 s lease");
    let response = tokio::time::timeout(Duration::from_secs(5), events.message()).await.expect("expired within 5 s").unwrap().unwrap();
    let expired_after = last_keepalive.elapsed();
    assert!(expired_after >= Duration::from_secs(2), "expired {expired_after:?} after the last keepalive");
    assert_eq!(response.events()[0].event_type(), EventType::Delete);
    assert_eq!(client.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
    // The expiry counter is bumped once the revoke has returned, which may be just after the
    // watcher saw its delete: wait a little for it.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = crate::server::http_get(server.metrics_addr, "/metrics").await.unwrap().1;
        if metrics.contains("t4_leases_expired_total 1\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains("t4_leases 0\n") && metrics.contains("t4_leases_expired_total 1\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_leases_expiring_together_go_within_seconds() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for index in 0..500 {
        let id = client.lease_grant(2, None).await.unwrap().id();
        client.put(format!("/expiring/{index:03}"), "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
    }
    let started = Instant::now();
    let count = GetOptions::new().with_prefix().with_count_only();
    while client.get("/expiring/", Some(count.clone())).await.unwrap().count() > 0 {
        assert!(started.elapsed() < Duration::from_secs(8), "500 expired leases were not all revoked within 8 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::info!(elapsed = ?started.elapsed(), "500 leases expired");
    assert!(client.leases().await.unwrap().leases().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_a_restart_with_their_whole_ttl_again() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let long = client.lease_grant(600, None).await.unwrap().id();
    let short = client.lease_grant(2, None).await.unwrap().id();
    client.put("/long", "v", Some(PutOptions::new().with_lease(long))).await.unwrap();
    client.put("/short", "v", Some(PutOptions::new().with_lease(short))).await.unwrap();
    drop(client);
    let dir = server.stop().await;
    // Down for longer than the short lease's TTL: etcd gives it its whole TTL again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut client = server.client().await;
    let long_ttl = client.lease_time_to_live(long, Some(LeaseTimeToLiveOptions::new().with_keys())).await.unwrap();
    assert!(long_ttl.ttl() >= 598, "{}", long_ttl.ttl());
    assert_eq!(long_ttl.keys(), [b"/long".to_vec()]);
    let short_ttl = client.lease_time_to_live(short, None).await.unwrap();
    assert!(short_ttl.ttl() >= 1 && short_ttl.granted_ttl() == 2, "{short_ttl:?}");
    assert_eq!(client.get("/short", None).await.unwrap().count(), 1);
    // Then it expires as usual.
    let deadline = Instant::now() + Duration::from_secs(6);
    while client.get("/short", None).await.unwrap().count() == 1 {
        assert!(Instant::now() < deadline, "the short lease did not expire after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(client.get("/long", None).await.unwrap().count(), 1);
}
