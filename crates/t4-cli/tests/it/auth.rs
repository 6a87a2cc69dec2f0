//! Authentication and RBAC through the `etcd-client` crate. The main scenario runs against
//! t4 and against a real etcd 3.4, and both must answer every step alike; what t4 does
//! beyond etcd 3.4 (stricter checks, rate limiting, token expiry, CN-as-user, restarts) is
//! tested on t4 alone.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, LeaseTimeToLiveOptions, Permission, PutOptions,
    RoleRevokePermissionOptions, Txn, TxnOp, WatchOptions,
};
use t4::auth::state::AuthChange;
use t4::mvcc::WriteRequest;
use t4::proto::etcdserverpb::PutRequest;

use crate::etcd_process::EtcdProcess;
use crate::server::TestServer;

async fn connect(endpoint: &str, user: Option<(&str, &str)>) -> Result<Client, etcd_client::Error> {
    let options = user.map(|(name, password)| ConnectOptions::new().with_user(name, password));
    Client::connect([endpoint], options).await
}

/// An outcome as a line: `ok <detail>` or `<gRPC code> <message>`.
fn line<T>(outcome: Result<T, etcd_client::Error>, detail: impl FnOnce(T) -> String) -> String {
    match outcome {
        Ok(value) => format!("ok {}", detail(value)),
        Err(etcd_client::Error::GRpcStatus(status)) => format!("{:?} {}", status.code(), status.message()),
        Err(other) => format!("client error {other}"),
    }
}

fn done<T>(_: T) -> String {
    String::new()
}

/// The answer to a watch of the prefix `key`: created, or canceled with its reason. The
/// crate reads the first answer of a stream itself, so the watch is the stream's second.
async fn watch_outcome(client: &mut Client, key: &str) -> String {
    let (mut watcher, mut stream) = match client.watch("/probe", None).await {
        Ok(opened) => opened,
        Err(error) => return line::<()>(Err(error), done),
    };
    watcher.watch(key, Some(WatchOptions::new().with_prefix())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
        Ok(Ok(Some(response))) if response.canceled() => format!("canceled {}", response.cancel_reason()),
        Ok(Ok(Some(response))) => format!("created {}", response.created()),
        other => format!("no answer: {other:?}"),
    }
}

/// etcd's auth rules, step by step; returns what each step answered.
async fn rbac_scenario(endpoint: &str) -> String {
    let mut log = Vec::new();
    let mut step = |name: &str, outcome: String| log.push(format!("{name:<44} {outcome}"));
    let mut anon = connect(endpoint, None).await.unwrap();
    step("enable without a root user", line(anon.auth_enable().await, done));
    step("add root", line(anon.user_add("root", "rootpw", None).await, done));
    step("enable: root lacks the root role", line(anon.auth_enable().await, done));
    step("add role root", line(anon.role_add("root").await, done));
    step("grant root to root", line(anon.user_grant_role("root", "root").await, done));
    step("add alice", line(anon.user_add("alice", "alicepw", None).await, done));
    step("add role app", line(anon.role_add("app").await, done));
    let app = Permission::read_write("/app/").with_prefix();
    step("app may read and write /app/*", line(anon.role_grant_permission("app", app).await, done));
    step("app may read /shared", line(anon.role_grant_permission("app", Permission::read("/shared")).await, done));
    step("grant app to alice", line(anon.user_grant_role("alice", "app").await, done));
    step("put /secret/s", line(anon.put("/secret/s", "s", None).await, done));
    step("put /shared", line(anon.put("/shared", "x", None).await, done));
    step("enable", line(anon.auth_enable().await, done));
    step("anonymous get", line(anon.get("/shared", None).await, done));
    step("anonymous watch", watch_outcome(&mut anon, "/shared").await);
    step("alice with a wrong password", line(connect(endpoint, Some(("alice", "nope"))).await, done));
    step("nobody", line(connect(endpoint, Some(("nobody", "x"))).await, done));

    let mut alice = connect(endpoint, Some(("alice", "alicepw"))).await.unwrap();
    step("alice put /app/a", line(alice.put("/app/a", "1", None).await, done));
    step("alice put /shared (read only)", line(alice.put("/shared", "y", None).await, done));
    step("alice get /shared", line(alice.get("/shared", None).await, |r| format!("{}", r.count())));
    step("alice get /app/*", line(alice.get("/app/", Some(GetOptions::new().with_prefix())).await, |r| format!("{}", r.count())));
    let wide = GetOptions::new().with_range("/z");
    step("alice get [/app/, /z) (past her grant)", line(alice.get("/app/", Some(wide)).await, done));
    step("alice get /secret/s", line(alice.get("/secret/s", None).await, done));
    step("alice get everything", line(alice.get("", Some(GetOptions::new().with_all_keys())).await, done));
    step("alice put /shared with prev_kv", line(alice.put("/shared", "y", Some(PutOptions::new().with_prev_key())).await, done));
    let prefix_delete = DeleteOptions::new().with_prefix().with_prev_key();
    step("alice delete /app/* with prev_kv", line(alice.delete("/app/", Some(prefix_delete)).await, |r| format!("{}", r.deleted())));
    let reads_secret = Txn::new().when([Compare::version("/secret/s", CompareOp::Greater, 0)]).and_then([TxnOp::put("/app/b", "2", None)]);
    step("alice txn comparing /secret/s", line(alice.txn(reads_secret).await, done));
    let else_shared = Txn::new()
        .when([Compare::version("/app/b", CompareOp::Equal, 0)])
        .and_then([TxnOp::put("/app/b", "2", None)])
        .or_else([TxnOp::put("/shared", "z", None)]);
    step("alice txn writing /shared in its else", line(alice.txn(else_shared).await, done));
    let nested_ok = Txn::new().and_then([TxnOp::txn(Txn::new().and_then([TxnOp::put("/app/n", "n", None)]))]);
    step("alice nested txn in /app/", line(alice.txn(nested_ok).await, |r| format!("{}", r.succeeded())));
    step("alice watch /secret/*", watch_outcome(&mut alice, "/secret/").await);
    step("alice watch /app/*", watch_outcome(&mut alice, "/app/").await);
    step("alice user list", line(alice.user_list().await, done));
    step("alice user get alice", line(alice.user_get("alice").await, |r| format!("{:?}", r.roles())));
    step("alice user get root", line(alice.user_get("root").await, done));
    step("alice role get app", line(alice.role_get("app").await, |r| format!("{}", r.permissions().len())));
    step("alice role get root", line(alice.role_get("root").await, done));
    step("alice role add", line(alice.role_add("mine").await, done));
    step("alice auth disable", line(alice.auth_disable().await, done));

    let mut root = connect(endpoint, Some(("root", "rootpw"))).await.unwrap();
    step("root user list", line(root.user_list().await, |r| format!("{:?}", r.users())));
    step("root role list", line(root.role_list().await, |r| format!("{:?}", r.roles())));
    step("root delete root", line(root.user_delete("root").await, done));
    step("root delete role root", line(root.role_delete("root").await, done));
    step("root revoke root from root", line(root.user_revoke_role("root", "root").await, done));
    step("root get nobody", line(root.user_get("nobody").await, done));
    step("root get role nobody", line(root.role_get("nobody").await, done));
    step("root add alice again", line(root.user_add("alice", "x", None).await, done));
    step("root add role app again", line(root.role_add("app").await, done));
    step("root grant role nope", line(root.user_grant_role("alice", "nope").await, done));
    step("root grant to nobody", line(root.user_grant_role("nobody", "app").await, done));
    step("root revoke a role alice lacks", line(root.user_revoke_role("alice", "nope").await, done));
    step("root revoke a permission app lacks", line(root.role_revoke_permission("app", "/nope", None).await, done));

    // A lease holding a key alice may not write: she may not revoke it, nor attach to it.
    let lease = root.lease_grant(600, None).await.unwrap().id();
    root.put("/secret/leased", "v", Some(PutOptions::new().with_lease(lease))).await.unwrap();
    step("alice revoke a lease on /secret/leased", line(alice.lease_revoke(lease).await, done));
    step("alice put /app/l on that lease", line(alice.put("/app/l", "v", Some(PutOptions::new().with_lease(lease))).await, done));
    step("root revoke that lease", line(root.lease_revoke(lease).await, done));

    let revoke_prefix = RoleRevokePermissionOptions::new().with_prefix();
    step("root revoke /app/* from app", line(root.role_revoke_permission("app", "/app/", Some(revoke_prefix)).await, done));
    step("alice put /app/a after the revoke", line(alice.put("/app/a", "1", None).await, done));
    step("alice get /shared still", line(alice.get("/shared", None).await, |r| format!("{}", r.count())));
    step("root revoke app from alice", line(root.user_revoke_role("alice", "app").await, done));
    step("alice get /shared without her role", line(alice.get("/shared", None).await, done));
    step("root change alice's password", line(root.user_change_password("alice", "newpw").await, done));
    step("alice old password", line(connect(endpoint, Some(("alice", "alicepw"))).await, done));
    step("alice new password", line(connect(endpoint, Some(("alice", "newpw"))).await, done));
    step("root delete alice", line(root.user_delete("alice").await, done));
    step("alice after her deletion", line(connect(endpoint, Some(("alice", "newpw"))).await, done));
    step("root disable", line(root.auth_disable().await, done));
    step("anonymous get after disable", line(anon.get("/secret/s", None).await, |r| format!("{}", r.count())));
    step("disable again", line(anon.auth_disable().await, done));
    step("authenticate with auth off", line(connect(endpoint, Some(("root", "rootpw"))).await, done));
    log.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_answers_as_a_real_etcd_does() {
    let server = TestServer::start().await;
    let t4 = rbac_scenario(&server.endpoint()).await;
    insta::assert_snapshot!(t4);
    let etcd = EtcdProcess::start().await;
    assert_eq!(rbac_scenario(&etcd.endpoint).await, t4);
}

fn message<T: std::fmt::Debug>(outcome: Result<T, etcd_client::Error>) -> String {
    line(outcome, |value| format!("{value:?}"))
}

async fn bootstrapped(adjust: impl FnOnce(&mut t4_server::ServerConfig)) -> TestServer {
    TestServer::start_with(|config| {
        config.auth_enabled = true;
        config.root_password = Some("rootpw".into());
        adjust(config);
    })
    .await
}

/// Checks t4 makes that etcd 3.4.23 does not (docs/auth.md): the ops of nested txns, prev_kv
/// of puts in txns, lease
/// keys listed only to a user who may read them (etcd fixed this in 3.4.26), compaction,
/// hashes and defragment for root only, leases for authenticated users only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_is_stricter_than_etcd_3_4_where_3_4_leaked() {
    let server = bootstrapped(|_| {}).await;
    let mut root = connect(&server.endpoint(), Some(("root", "rootpw"))).await.unwrap();
    root.user_add("alice", "alicepw", None).await.unwrap();
    root.role_add("app").await.unwrap();
    root.role_grant_permission("app", Permission::read_write("/app/").with_prefix()).await.unwrap();
    root.user_grant_role("alice", "app").await.unwrap();
    let lease = root.lease_grant(600, None).await.unwrap().id();
    root.put("/secret/leased", "v", Some(PutOptions::new().with_lease(lease))).await.unwrap();
    let mut alice = connect(&server.endpoint(), Some(("alice", "alicepw"))).await.unwrap();
    // etcd 3.4.23 runs a nested txn's ops unchecked: here it would delete /secret/leased.
    let nested = Txn::new().and_then([TxnOp::txn(Txn::new().and_then([TxnOp::delete("/secret/leased", None)]))]);
    assert_eq!(message(alice.txn(nested).await), "PermissionDenied etcdserver: permission denied");
    // Nor does it ask read access for prev_kv of a put inside a txn (it does outside one).
    root.role_grant_permission("app", Permission::write("/write-only")).await.unwrap();
    let peek = Txn::new().and_then([TxnOp::put("/write-only", "v", Some(PutOptions::new().with_prev_key()))]);
    assert_eq!(message(alice.txn(peek).await), "PermissionDenied etcdserver: permission denied");
    assert!(message(alice.txn(Txn::new().and_then([TxnOp::put("/write-only", "v", None)])).await).starts_with("ok"));
    let keys = Some(LeaseTimeToLiveOptions::new().with_keys());
    assert_eq!(message(alice.lease_time_to_live(lease, keys).await), "PermissionDenied etcdserver: permission denied");
    assert!(message(alice.lease_time_to_live(lease, None).await).starts_with("ok"), "without keys: allowed");
    assert!(message(root.lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys())).await).starts_with("ok"));
    let revision = root.get("/", None).await.unwrap().header().unwrap().revision();
    assert_eq!(message(alice.compact(revision, None).await), "PermissionDenied etcdserver: permission denied");
    assert!(message(root.compact(revision, None).await).starts_with("ok"));
    assert_eq!(message(alice.hash_kv(0).await), "PermissionDenied etcdserver: permission denied");
    assert_eq!(message(alice.defragment().await), "PermissionDenied etcdserver: permission denied");
    assert!(message(root.defragment().await).starts_with("ok"));
    let mut anonymous = connect(&server.endpoint(), None).await.unwrap();
    assert_eq!(message(anonymous.lease_grant(60, None).await), "InvalidArgument etcdserver: user name is empty");
    assert_eq!(message(anonymous.leases().await), "InvalidArgument etcdserver: user name is empty");
    assert!(message(alice.lease_grant(60, None).await).starts_with("ok"));
    assert!(message(anonymous.status().await).starts_with("ok"), "status needs no user, as in etcd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_slowed_down_and_idle_tokens_expire() {
    let server = bootstrapped(|config| config.token_ttl = Duration::from_secs(1)).await;
    let endpoint = server.endpoint();
    for _ in 0..5 {
        assert_eq!(
            line(connect(&endpoint, Some(("root", "wrong"))).await, done),
            "InvalidArgument etcdserver: authentication failed, invalid user ID or password"
        );
    }
    let waited = line(connect(&endpoint, Some(("root", "rootpw"))).await, done);
    assert_eq!(waited, "ResourceExhausted etcdserver: too many requests", "even the right password waits after 5 failures");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut root = connect(&endpoint, Some(("root", "rootpw"))).await.unwrap();
    // Used within its TTL, a token lives on; idle for longer, it is refused.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(message(root.get("/x", None).await).starts_with("ok"));
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(message(root.get("/x", None).await), "Unauthenticated etcdserver: invalid auth token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_roles_and_auth_survive_a_restart() {
    let server = bootstrapped(|_| {}).await;
    let mut root = connect(&server.endpoint(), Some(("root", "rootpw"))).await.unwrap();
    root.user_add("alice", "alicepw", None).await.unwrap();
    root.role_add("app").await.unwrap();
    root.role_grant_permission("app", Permission::read("/app/").with_prefix()).await.unwrap();
    root.user_grant_role("alice", "app").await.unwrap();
    root.put("/app/a", "1", None).await.unwrap();
    drop(root);
    let dir = server.stop().await;
    // No --root-password this time: the root user exists and auth is on already.
    let server = TestServer::start_in(dir, |config| config.auth_enabled = true).await;
    let mut anonymous = connect(&server.endpoint(), None).await.unwrap();
    assert_eq!(message(anonymous.get("/app/a", None).await), "InvalidArgument etcdserver: user name is empty");
    let mut alice = connect(&server.endpoint(), Some(("alice", "alicepw"))).await.unwrap();
    assert_eq!(alice.get("/app/a", None).await.unwrap().kvs()[0].value(), b"1");
    assert_eq!(message(alice.put("/app/a", "2", None).await), "PermissionDenied etcdserver: permission denied");
    // Authenticate answers only while auth is on.
    assert!(connect(&server.endpoint(), Some(("root", "rootpw"))).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_enabled_without_a_root_user_needs_its_password() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = t4_server::ServerConfig::new(t4::Config::new(dir.path()), listener.local_addr().unwrap());
    config.auth_enabled = true;
    let error = t4_server::serve(config, listener, None, std::future::pending()).await.unwrap_err();
    assert!(error.to_string().contains("--root-password"), "{error}");
}

/// A write checked under auth rules that changed before it reached the writer is refused
/// with etcd's "revision of auth store is old" (the client checks again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_checked_under_rules_since_changed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = t4::Node::open(t4::Config::new(dir.path())).await.unwrap();
    let checked_at = node.auth_state().revision;
    node.auth_change(AuthChange::RoleAdd { name: "app".into() }).await.unwrap();
    let put = || WriteRequest::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() });
    let stale = node.write_checked(put(), Some(checked_at)).await.unwrap_err();
    assert_eq!(stale.to_string(), "etcdserver: revision of auth store is old");
    assert!(node.get("k").await.unwrap().is_none(), "nothing was written");
    node.write_checked(put(), Some(node.auth_state().revision)).await.unwrap();
    // Checked with auth off: still fine after other auth changes, refused once auth is on.
    node.auth_change(AuthChange::UserAdd { name: "root".into(), password: None }).await.unwrap();
    node.write_checked(put(), Some(t4::auth::gate::AUTH_OFF)).await.unwrap();
    node.auth_change(AuthChange::UserGrantRole { name: "root".into(), role: "root".into() }).await.unwrap();
    node.auth_change(AuthChange::Enable).await.unwrap();
    let late = node.write_checked(put(), Some(t4::auth::gate::AUTH_OFF)).await.unwrap_err();
    assert_eq!(late.to_string(), "etcdserver: revision of auth store is old");
    node.close().await.unwrap();
}

/// The next answer on a watch stream that is not an event: its cancellation, if any.
async fn cancelled(stream: &mut etcd_client::WatchStream) -> Option<String> {
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.ok()?.ok()??;
        if answer.canceled() {
            return Some(answer.cancel_reason().to_string());
        }
    }
}

/// A watch is checked again whenever auth changes: the role losing its permission, the
/// user's password changing, the user deleted, or auth enabled under a watch opened without
/// it cancels the watch with the error a new watch would get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_are_cancelled_once_their_sender_may_no_longer_read() {
    let server = bootstrapped(|_| {}).await;
    let endpoint = server.endpoint();
    let mut root = connect(&endpoint, Some(("root", "rootpw"))).await.unwrap();
    root.user_add("alice", "alicepw", None).await.unwrap();
    root.role_add("reader").await.unwrap();
    root.role_grant_permission("reader", Permission::read("/a/").with_prefix()).await.unwrap();
    root.user_grant_role("alice", "reader").await.unwrap();
    let watch_as_alice = || async {
        let mut alice = connect(&endpoint, Some(("alice", "alicepw"))).await.unwrap();
        let (watcher, stream) = alice.watch("/a/", Some(WatchOptions::new().with_prefix())).await.unwrap();
        (alice, watcher, stream)
    };

    tracing::info!("--- an unrelated auth change leaves the watch alone; events still flow");
    let (_alice, _watcher, mut stream) = watch_as_alice().await;
    root.role_add("other").await.unwrap();
    root.put("/a/1", "x", None).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(answer.events().len(), 1, "{answer:?}");

    tracing::info!("--- the role loses its permission: cancelled as permission denied, no event after");
    root.role_revoke_permission("reader", "/a/", Some(RoleRevokePermissionOptions::new().with_prefix())).await.unwrap();
    root.put("/a/2", "secret", None).await.unwrap();
    let reason = cancelled(&mut stream).await.expect("the watch was not cancelled");
    assert!(reason.contains("etcdserver: permission denied"), "{reason}");

    tracing::info!("--- a password change, then a deletion, cancel the watches of that user");
    root.role_grant_permission("reader", Permission::read("/a/").with_prefix()).await.unwrap();
    let (_alice, _watcher, mut stream) = watch_as_alice().await;
    root.user_change_password("alice", "newpw").await.unwrap();
    let reason = cancelled(&mut stream).await.expect("a password change did not cancel the watch");
    assert!(reason.contains("etcdserver: invalid auth token"), "{reason}");
    let mut alice = connect(&endpoint, Some(("alice", "newpw"))).await.unwrap();
    let (_watcher, mut stream) = alice.watch("/a/", Some(WatchOptions::new().with_prefix())).await.unwrap();
    root.user_delete("alice").await.unwrap();
    assert!(cancelled(&mut stream).await.is_some(), "deleting the user did not cancel the watch");

    tracing::info!("--- a watch opened with auth off is cancelled when auth is enabled");
    root.auth_disable().await.unwrap();
    let mut anon = connect(&endpoint, None).await.unwrap();
    let (_watcher, mut stream) = anon.watch("/a/", Some(WatchOptions::new().with_prefix())).await.unwrap();
    root.auth_enable().await.unwrap();
    let reason = cancelled(&mut stream).await.expect("enabling auth did not cancel the anonymous watch");
    assert!(reason.contains("etcdserver: user name is empty"), "{reason}");
}

/// A put with a lease inside a txn needs write access to every key on the lease, as a plain
/// put with that lease does (revoking the lease would delete them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_put_with_a_lease_is_checked_like_a_plain_one() {
    let server = bootstrapped(|_| {}).await;
    let endpoint = server.endpoint();
    let mut root = connect(&endpoint, Some(("root", "rootpw"))).await.unwrap();
    root.user_add("bob", "bobpw", None).await.unwrap();
    root.role_add("mine").await.unwrap();
    root.role_grant_permission("mine", Permission::read_write("/bob/").with_prefix()).await.unwrap();
    root.user_grant_role("bob", "mine").await.unwrap();
    let lease = root.lease_grant(60, None).await.unwrap().id();
    root.put("/root-only", "x", Some(PutOptions::new().with_lease(lease))).await.unwrap();
    let mut bob = connect(&endpoint, Some(("bob", "bobpw"))).await.unwrap();
    let plain = bob.put("/bob/k", "v", Some(PutOptions::new().with_lease(lease))).await;
    assert_eq!(message(plain), "PermissionDenied etcdserver: permission denied");
    let in_txn = Txn::new().when([]).or_else([TxnOp::put("/bob/k", "v", Some(PutOptions::new().with_lease(lease)))]);
    assert_eq!(message(bob.txn(in_txn).await), "PermissionDenied etcdserver: permission denied");
    let nested =
        Txn::new().and_then([TxnOp::txn(Txn::new().and_then([TxnOp::put("/bob/k", "v", Some(PutOptions::new().with_lease(lease)))]))]);
    assert_eq!(message(bob.txn(nested).await), "PermissionDenied etcdserver: permission denied");
    assert_eq!(root.get("/bob/k", None).await.unwrap().count(), 0);
    let own = bob.lease_grant(60, None).await.unwrap().id();
    let fine = Txn::new().and_then([TxnOp::put("/bob/k", "v", Some(PutOptions::new().with_lease(own)))]);
    assert!(bob.txn(fine).await.unwrap().succeeded());
}
