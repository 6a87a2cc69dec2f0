//! etcdctl 3.4 against t4: the commands people type, with outputs pinned by insta after
//! normalising what differs per run (ports, ids, timings).

use std::io::Write;
use std::process::{Command, Stdio};

use t4::api::MemberInfo;

use crate::etcd_process::EtcdProcess;
use crate::server::TestServer;

/// Runs `etcdctl` (ETCDCTL_API=3) with `args`, feeding `stdin`; returns stdout and stderr.
fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run etcdctl ({error}): scripts/test.sh installs etcd-client 3.4"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    let errors = String::from_utf8_lossy(&output.stderr);
    // etcdctl logs a JSON retry line before an error; keep only its last line ("Error: ...").
    if let Some(last) = errors.lines().rfind(|line| !line.starts_with('{')) {
        text.push_str(last);
        text.push('\n');
    }
    normalize(endpoint, &text)
}

/// Replaces what differs between servers and runs: the endpoint, member and cluster ids,
/// the raft term, timings.
fn normalize(endpoint: &str, text: &str) -> String {
    let member = MemberInfo { name: "default".into(), client_urls: Vec::new(), peer_urls: Vec::new() };
    let mut text = text.replace(endpoint, "<endpoint>");
    for field in ["\"cluster_id\":", "\"member_id\":", "\"raft_term\":"] {
        text = blank_numbers_after(&text, field);
    }
    let mut text = text
        .replace(&member.member_id().to_string(), "<member-id>")
        .replace(&format!("{:x}", member.member_id()), "<member-id>")
        .replace(&member.cluster_id().to_string(), "<cluster-id>");
    if let Some(start) = text.find("took = ") {
        let end = text[start..].find('\n').map_or(text.len(), |offset| start + offset);
        text.replace_range(start..end, "took = <duration>");
    }
    text
}

/// `"field":12345` -> `"field":<n>` wherever it occurs.
fn blank_numbers_after(text: &str, field: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(field) {
        let (before, after) = rest.split_at(at + field.len());
        out.push_str(before);
        let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
        out.push_str(if digits > 0 { "<n>" } else { "" });
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// One transcript: each command, then what it printed.
struct Transcript {
    endpoint: String,
    text: String,
}

impl Transcript {
    fn new(endpoint: impl Into<String>) -> Self {
        Self { endpoint: endpoint.into(), text: String::new() }
    }

    fn run(&mut self, args: &[&str]) -> &mut Self {
        self.run_with_stdin(args, None)
    }

    fn run_with_stdin(&mut self, args: &[&str], stdin: Option<&str>) -> &mut Self {
        let output = etcdctl(&self.endpoint, args, stdin);
        self.text.push_str(&format!("$ etcdctl {}\n{output}\n", args.join(" ")));
        self
    }
}

fn put_get_del(endpoint: &str) -> String {
    let mut transcript = Transcript::new(endpoint);
    transcript
        .run(&["put", "/app/b", "two"])
        .run(&["put", "/app/a", "one"])
        .run(&["put", "/app/c", "three"])
        .run(&["put", "/app/a", "uno", "--prev-kv"])
        .run(&["put", "/zzz", "last"])
        .run(&["get", "/app/a"])
        .run(&["get", "/app/", "--prefix"])
        .run(&["get", "/app/b", "--from-key"])
        .run(&["get", "/app/a", "--rev=3"])
        .run(&["get", "/app/", "--prefix", "--limit=2"])
        .run(&["get", "/app/", "--prefix", "--sort-by=MODIFY", "--order=DESCEND"])
        .run(&["get", "/app/", "--prefix", "--sort-by=VALUE", "--order=ASCEND"])
        .run(&["get", "/app/", "--prefix", "--keys-only"])
        .run(&["get", "/app/", "--prefix", "--print-value-only"])
        .run(&["get", "/app/a", "-w", "json"])
        .run(&["get", "/app/", "--prefix", "--limit=1", "-w", "json"])
        .run(&["del", "/app/c"])
        .run(&["del", "/app/", "--prefix", "--prev-kv"])
        .run(&["get", "", "--prefix"])
        .run(&["get", "/app/a", "--rev=99"])
        .run(&["put", "", "empty"]);
    transcript.text
}

fn txn_and_compaction(endpoint: &str) -> String {
    let mut transcript = Transcript::new(endpoint);
    transcript
        .run(&["put", "/lock", "free"])
        .run_with_stdin(&["txn"], Some("value(\"/lock\") = \"free\"\n\nput /lock held\nput /owner me\n\nget /lock\n\n"))
        .run_with_stdin(&["txn"], Some("value(\"/lock\") = \"free\"\n\nput /lock stolen\n\nget /lock\n\n"))
        .run_with_stdin(&["txn", "-w", "json"], Some("mod(\"/owner\") > \"0\"\n\ndel /owner\n\n\n"))
        .run(&["compaction", "3"])
        .run(&["get", "/lock", "--rev=2"])
        .run(&["get", "/lock", "--rev=3"])
        .run(&["compaction", "2"]);
    transcript.text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_del_with_the_flags_people_use() {
    let server = TestServer::start().await;
    insta::assert_snapshot!(put_get_del(&server.endpoint()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_interactive_compaction_and_history() {
    let server = TestServer::start().await;
    insta::assert_snapshot!(txn_and_compaction(&server.endpoint()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_transcripts_from_a_real_etcd() {
    let etcd = EtcdProcess::start().await;
    let server = TestServer::start().await;
    assert_eq!(put_get_del(&etcd.endpoint), put_get_del(&server.endpoint()));
    let etcd = EtcdProcess::start().await;
    assert_eq!(txn_and_compaction(&etcd.endpoint), txn_and_compaction(&server_fresh().await.endpoint()));
}

async fn server_fresh() -> TestServer {
    TestServer::start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_history_with_prev_kv() {
    let server = TestServer::start().await;
    for args in [["put", "/w/a", "1"], ["put", "/w/a", "2"], ["put", "/other", "x"], ["del", "/w/a", ""]] {
        let args: Vec<&str> = args.into_iter().filter(|arg| !arg.is_empty()).collect();
        etcdctl(&server.endpoint(), &args, None);
    }
    // The watch replays from revision 2 and is stopped after a second (coreutils timeout).
    let output = Command::new("timeout")
        .args(["1", "etcdctl", &format!("--endpoints={}", server.endpoint()), "watch", "/w/", "--prefix", "--rev=2", "--prev-kv"])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    insta::assert_snapshot!(String::from_utf8_lossy(&output.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_status_health_and_member_list() {
    let server = TestServer::start().await;
    etcdctl(&server.endpoint(), &["put", "k", "v"], None);
    let mut transcript = Transcript::new(server.endpoint());
    transcript.run(&["endpoint", "health"]).run(&["member", "list"]).run(&["member", "list", "-w", "json"]);
    insta::assert_snapshot!(transcript.text);
    let status = etcdctl(&server.endpoint(), &["endpoint", "status", "-w", "json"], None);
    for expected in ["\"leader\":<member-id>", "\"raftTerm\":1", "\"raftIndex\":1", "\"version\":\"3.4.0+t4."] {
        assert!(status.contains(expected), "{expected} missing from {status}");
    }
}

/// `etcdctl lease ...` as people type it; lease ids (the server picks them) become `<L1>`,
/// `<L2>` in commands and output, and seconds left become `<n>`.
fn leases(endpoint: &str) -> String {
    let script: &[&[&str]] = &[
        &["lease", "grant", "600"],
        &["put", "/svc/a", "up", "--lease=<L1>"],
        &["put", "/svc/b", "up", "--lease=<L1>"],
        &["get", "/svc/", "--prefix"],
        &["lease", "timetolive", "<L1>", "--keys"],
        &["lease", "keep-alive", "--once", "<L1>"],
        &["lease", "list"],
        &["lease", "grant", "1"],
        &["lease", "timetolive", "<L2>"],
        &["lease", "revoke", "<L2>"],
        &["lease", "revoke", "<L2>"],
        &["lease", "timetolive", "<L2>"],
        &["lease", "keep-alive", "--once", "<L2>"],
        &["put", "/x", "y", "--lease=1234"],
        &["lease", "grant", "9000000001"],
        &["lease", "revoke", "<L1>"],
        &["get", "/svc/", "--prefix"],
        &["lease", "list"],
    ];
    let mut ids: Vec<String> = Vec::new();
    let mut text = String::new();
    for command in script {
        let args: Vec<String> = command
            .iter()
            .map(|arg| ids.iter().enumerate().fold(arg.to_string(), |arg, (at, id)| arg.replace(&format!("<L{}>", at + 1), id)))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut output = etcdctl(endpoint, &args, None);
        if let Some(id) = output
            .strip_prefix("lease ")
            .and_then(|rest| rest.split(' ').next())
            .filter(|_| command[..2] == ["lease", "grant"] && output.contains("granted"))
        {
            ids.push(id.to_string());
        }
        for (at, id) in ids.iter().enumerate() {
            output = output.replace(id.as_str(), &format!("<L{}>", at + 1));
        }
        // etcd lists a lease's keys in no particular order (a Go map): sorted here.
        if let Some(start) = output.find("attached keys([") {
            let from = start + "attached keys([".len();
            let end = output[from..].find("])").map_or(output.len(), |offset| from + offset);
            let mut keys: Vec<&str> = output[from..end].split(' ').collect();
            keys.sort();
            output = format!("{}{}{}", &output[..from], keys.join(" "), &output[end..]);
        }
        if let Some(start) = output.find("remaining(") {
            let end = output[start..].find('s').map_or(output.len(), |offset| start + offset);
            output.replace_range(start..end, "remaining(<n>");
        }
        text.push_str(&format!("$ etcdctl {}\n{output}\n", command.join(" ")));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_as_etcdctl_shows_them_and_as_a_real_etcd_does() {
    let server = TestServer::start().await;
    let transcript = leases(&server.endpoint());
    insta::assert_snapshot!(transcript);
    let etcd = EtcdProcess::start().await;
    assert_eq!(leases(&etcd.endpoint), transcript);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_over_tls_and_mutual_tls() {
    let pki = t4_testkit::pki::Pki::new();
    let identity = pki.server();
    let ca = pki.ca_path().display().to_string();
    let cacert = format!("--cacert={ca}");

    // TLS: a client that trusts the CA talks; one that does not, or speaks plain text, fails.
    let tls = t4_net::tls::TlsAcceptor::from_pem_files(&identity.cert, &identity.key, None, &[b"h2"]).unwrap();
    let server = TestServer::start_with(|config| config.client_tls = Some(tls)).await;
    let https = format!("https://{}", server.endpoint());
    assert_eq!(etcdctl(&https, &[&cacert, "put", "/secure", "yes"], None), "OK\n");
    assert_eq!(etcdctl(&https, &[&cacert, "get", "/secure", "--print-value-only"], None), "yes\n");
    let untrusted = etcdctl(&https, &["--dial-timeout=2s", "--command-timeout=3s", "get", "/secure"], None);
    assert!(untrusted.contains("Error"), "{untrusted}");
    let plain = etcdctl(&server.endpoint(), &["--dial-timeout=2s", "--command-timeout=3s", "get", "/secure"], None);
    assert!(plain.contains("Error"), "{plain}");
    let members = etcdctl(&https, &[&cacert, "member", "list"], None);
    // The transcript shows the endpoint given (https://...) as <endpoint>: that is the URL.
    assert!(members.contains(", <endpoint>, false"), "the member advertises its https URL: {members}");

    // mTLS: a client certificate from the CA is required.
    let mutual = t4_net::tls::TlsAcceptor::from_pem_files(&identity.cert, &identity.key, Some(&pki.ca_path()), &[b"h2"]).unwrap();
    let server = TestServer::start_with(|config| config.client_tls = Some(mutual)).await;
    let https = format!("https://{}", server.endpoint());
    let alice = pki.client("alice");
    let (cert, key) = (format!("--cert={}", alice.cert.display()), format!("--key={}", alice.key.display()));
    assert_eq!(etcdctl(&https, &[&cacert, &cert, &key, "put", "/mutual", "yes"], None), "OK\n");
    assert_eq!(etcdctl(&https, &[&cacert, &cert, &key, "get", "/mutual", "--print-value-only"], None), "yes\n");
    let anonymous = etcdctl(&https, &[&cacert, "--dial-timeout=2s", "--command-timeout=3s", "get", "/mutual"], None);
    assert!(anonymous.contains("Error"), "{anonymous}");
    let stranger = t4_testkit::pki::Pki::new().client("mallory");
    let foreign = etcdctl(
        &https,
        &[
            &cacert,
            &format!("--cert={}", stranger.cert.display()),
            &format!("--key={}", stranger.key.display()),
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "get",
            "/mutual",
        ],
        None,
    );
    assert!(foreign.contains("Error"), "a certificate from another CA: {foreign}");
}

#[test]
fn the_common_name_of_a_client_certificate_is_read_from_its_subject() {
    let pki = t4_testkit::pki::Pki::new();
    let alice = pki.client("alice");
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_file(&alice.cert).unwrap();
    assert_eq!(t4_server::common_name(&der).as_deref(), Some("alice"), "the subject's CN, not the issuer's");
    assert_eq!(t4_server::common_name(b"not a certificate"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_run_takes_the_client_tls_flags() {
    let pki = t4_testkit::pki::Pki::new();
    let identity = pki.server();
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("127.0.0.1:{port}");
    let run = |key: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_t4"))
            .args(["run", "--listen", &endpoint, "--metrics-addr", "off", "--log-level", "warn", "--data-dir"])
            .arg(data.path())
            .arg("--client-tls-cert")
            .arg(&identity.cert)
            .arg("--client-tls-key")
            .arg(key)
            .arg("--client-tls-ca")
            .arg(pki.ca_path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let refused = run(&pki.ca_path()).wait_with_output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("client TLS: cannot read a private key"), "{refused:?}");

    let mut node = run(&identity.key);
    // The port speaks TLS only: wait for it to accept connections.
    let started = tokio::time::Instant::now();
    while tokio::net::TcpStream::connect(&endpoint).await.is_err() {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "t4 did not listen on {endpoint}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let client = pki.client("root");
    let args = [
        format!("--cacert={}", pki.ca_path().display()),
        format!("--cert={}", client.cert.display()),
        format!("--key={}", client.key.display()),
    ];
    let https = format!("https://{endpoint}");
    let mut put: Vec<&str> = args.iter().map(String::as_str).collect();
    put.extend(["put", "/via-flags", "ok"]);
    let answer = etcdctl(&https, &put, None);
    node.kill().unwrap();
    node.wait().unwrap();
    assert_eq!(answer, "OK\n");
}

/// `etcdctl user/role/auth` as an operator sets up RBAC, then what a user may and may not do.
fn auth(endpoint: &str) -> String {
    let root = "--user=root:rootpw";
    let alice = "--user=alice:alicepw";
    let mut transcript = Transcript::new(endpoint);
    transcript
        .run(&["auth", "enable"])
        .run(&["user", "add", "root:rootpw"])
        .run(&["user", "add", "root:again"])
        .run(&["role", "get", "root"])
        .run(&["auth", "enable"])
        .run(&["role", "get", "root"])
        .run(&["put", "a", "1"])
        .run(&["--user=root:wrong", "put", "a", "1"])
        .run(&[root, "put", "a", "1"])
        .run(&[root, "user", "add", "alice:alicepw"])
        .run(&[root, "role", "add", "reader"])
        .run(&[root, "role", "add", "reader"])
        .run(&[root, "role", "grant-permission", "reader", "read", "/a", "/b"])
        .run(&[root, "role", "grant-permission", "reader", "--prefix", "readwrite", "/p/"])
        .run(&[root, "role", "grant-permission", "reader", "--from-key", "write", "/w"])
        .run(&[root, "role", "get", "reader"])
        .run(&[root, "user", "grant-role", "alice", "reader"])
        .run(&[root, "user", "grant-role", "alice", "reader"])
        .run(&[root, "user", "grant-role", "alice", "nope"])
        .run(&[root, "user", "grant-role", "bob", "reader"])
        .run(&[alice, "get", "/a"])
        .run(&[alice, "get", "/a", "/c"])
        .run(&[alice, "put", "/a", "x"])
        .run(&[alice, "put", "/p/x", "y"])
        .run(&[alice, "put", "/wz", "y"])
        .run(&[alice, "get", "--prefix", "/p/"])
        .run(&[alice, "del", "--prefix", "/p/"])
        .run(&[alice, "role", "list"])
        .run(&[alice, "user", "get", "alice"])
        .run(&[alice, "auth", "disable"])
        .run(&[alice, "user", "list"])
        .run(&[root, "user", "list"])
        .run(&[root, "role", "list"])
        .run(&[root, "user", "get", "alice", "--detail"])
        .run(&[root, "user", "revoke-role", "alice", "nope"])
        .run(&[root, "user", "revoke-role", "root", "root"])
        .run(&[root, "role", "delete", "root"])
        .run(&[root, "user", "delete", "root"])
        .run(&[root, "role", "revoke-permission", "reader", "/zz"])
        .run(&[root, "role", "revoke-permission", "reader", "/a", "/b"])
        .run(&[root, "role", "get", "reader"])
        .run(&[root, "user", "get", "nobody"])
        .run(&[root, "role", "delete", "nobody"]);
    transcript.run_with_stdin(&[root, "user", "passwd", "alice", "--interactive=false"], Some("newpw\n"));
    transcript
        .run(&[alice, "get", "/a"])
        .run(&["--user=alice:newpw", "get", "/a"])
        .run(&[root, "role", "delete", "reader"])
        .run(&[root, "user", "get", "alice"])
        .run(&[root, "user", "delete", "alice"])
        .run(&["auth", "disable"])
        .run(&[root, "auth", "disable"])
        .run(&["auth", "disable"])
        .run(&["user", "list"])
        .run(&["role", "get", "root"]);
    transcript.text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_as_etcdctl_shows_it_and_as_a_real_etcd_does() {
    let server = TestServer::start().await;
    let transcript = auth(&server.endpoint());
    insta::assert_snapshot!(transcript);
    let etcd = EtcdProcess::start().await;
    assert_eq!(auth(&etcd.endpoint), transcript);
}

/// With auth on under mutual TLS, a client certificate's CN is the user (etcd's rule) when
/// no token is sent; `--user` still wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_mutual_tls_the_certificates_common_name_is_the_user() {
    let pki = t4_testkit::pki::Pki::new();
    let identity = pki.server();
    let mutual = t4_net::tls::TlsAcceptor::from_pem_files(&identity.cert, &identity.key, Some(&pki.ca_path()), &[b"h2"]).unwrap();
    let server = TestServer::start_with(|config| {
        config.client_tls = Some(mutual);
        config.auth_enabled = true;
        config.root_password = Some("rootpw".into());
    })
    .await;
    let https = format!("https://{}", server.endpoint());
    let cacert = format!("--cacert={}", pki.ca_path().display());
    let as_cert = |name: &str| {
        let identity = pki.client(name);
        (format!("--cert={}", identity.cert.display()), format!("--key={}", identity.key.display()))
    };
    let (root_cert, root_key) = as_cert("root");
    let root = |args: &[&str]| etcdctl(&https, &[&[cacert.as_str(), &root_cert, &root_key], args].concat(), None);
    assert_eq!(root(&["user", "add", "alice", "--no-password"]), "User alice created\n");
    assert_eq!(root(&["role", "add", "app"]), "Role app created\n");
    assert_eq!(root(&["role", "grant-permission", "app", "--prefix", "readwrite", "/app/"]), "Role app updated\n");
    assert_eq!(root(&["user", "grant-role", "alice", "app"]), "Role app is granted to user alice\n");
    assert_eq!(root(&["put", "/secret", "s"]), "OK\n");

    let (alice_cert, alice_key) = as_cert("alice");
    let alice = |args: &[&str]| etcdctl(&https, &[&[cacert.as_str(), &alice_cert, &alice_key], args].concat(), None);
    assert_eq!(alice(&["put", "/app/x", "1"]), "OK\n");
    assert_eq!(alice(&["get", "/app/x", "--print-value-only"]), "1\n");
    assert_eq!(alice(&["get", "/secret"]), "Error: etcdserver: permission denied\n");
    assert_eq!(alice(&["user", "list"]), "Error: etcdserver: permission denied\n");
    // A user without a password cannot log in with one; a token (from --user) wins over the CN.
    let output = alice(&["--user=alice:anything", "get", "/app/x"]);
    assert!(output.contains("authentication failed"), "{output}");
    assert_eq!(alice(&["--user=root:rootpw", "get", "/secret", "--print-value-only"]), "s\n");
    let (mallory_cert, mallory_key) = as_cert("mallory");
    let mallory = etcdctl(&https, &[&cacert, &mallory_cert, &mallory_key, "get", "/app/x"], None);
    assert_eq!(mallory, "Error: etcdserver: permission denied\n", "a CN that is no user may do nothing");
}

/// `t4 run --auth-enabled` with the root password from `T4_ROOT_PASSWORD`: auth is on from
/// the first request, and root (with the root role) can manage it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_run_auth_enabled_bootstraps_root() {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("127.0.0.1:{port}");
    let mut node = Command::new(env!("CARGO_BIN_EXE_t4"))
        .args(["run", "--listen", &endpoint, "--metrics-addr", "off", "--log-level", "warn", "--auth-enabled", "--data-dir"])
        .arg(data.path())
        .env("T4_ROOT_PASSWORD", "s3cret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(crate::server::await_endpoint(&endpoint).await, "t4 did not come up at {endpoint}");
    let anonymous = etcdctl(&endpoint, &["put", "/k", "v"], None);
    let as_root = etcdctl(&endpoint, &["--user=root:s3cret", "put", "/k", "v"], None);
    let roles = etcdctl(&endpoint, &["--user=root:s3cret", "user", "get", "root"], None);
    node.kill().unwrap();
    node.wait().unwrap();
    assert_eq!(anonymous, "Error: etcdserver: user name is empty\n");
    assert_eq!(as_root, "OK\n");
    assert_eq!(roles, "User: root\nRoles: root\n");
}

/// etcd's space quota, step by step through etcdctl against a real etcd and t4 with the
/// same `--quota-backend-bytes`: the NOSPACE alarm, what it refuses and lets through, and
/// the way out (delete, compact, defragment, disarm).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_space_quota_alarm_and_its_way_out_as_etcd() {
    const QUOTA: u64 = 4 << 20;
    let etcd = crate::etcd_process::EtcdProcess::start_with(&["--quota-backend-bytes", &QUOTA.to_string()]).await;
    let t4 = TestServer::start_with(|config| config.node.quota_backend_bytes = Some(QUOTA)).await;
    let mut transcripts = Vec::new();
    for endpoint in [etcd.endpoint.clone(), t4.endpoint()] {
        let run = |args: &[&str]| {
            let text = etcdctl(&endpoint, args, None);
            // Member ids differ between servers.
            let text = text.replace("<member-id>", "0");
            text.split("memberID:")
                .enumerate()
                .map(|(at, part)| {
                    if at == 0 {
                        part.to_string()
                    } else {
                        format!("memberID:<id>{}", part.trim_start_matches(|c: char| c.is_ascii_digit()))
                    }
                })
                .collect::<String>()
        };
        let mut lines = Vec::new();
        let value = "x".repeat(100_000);
        let mut failed = None;
        for i in 0..400 {
            let out = run(&["put", &format!("k{i:03}"), &value]);
            if out != "OK\n" {
                failed = Some(out);
                break;
            }
        }
        lines.push(format!("filling: {}", failed.expect("the quota never refused a put")));
        for (what, args) in [
            ("alarm list", &["alarm", "list"][..]),
            ("small put", &["put", "small", "x"]),
            ("lease grant", &["lease", "grant", "60"]),
            ("get", &["get", "k000", "--print-value-only=false", "--keys-only"]),
            ("delete one", &["del", "k000"]),
        ] {
            lines.push(format!("{what}: {}", run(args)));
        }
        let txn = etcdctl(&endpoint, &["txn"], Some("\n\nput a b\n\n"));
        lines.push(format!("txn with a put: {txn}"));
        // How many puts fit differs (bolt and redb lay pages out differently): all were deleted.
        let deleted: usize = run(&["del", "k", "--prefix"]).trim().parse().unwrap();
        lines.push(format!("delete all: {}\n", deleted > 0));
        let status = run(&["endpoint", "status", "-w", "json"]);
        let revision = status.split("\"revision\":").nth(1).and_then(|rest| rest.split(',').next()).unwrap().to_string();
        for (what, args) in [
            ("compact", vec!["compact".to_string(), revision.clone()]),
            ("defrag", vec!["defrag".to_string()]),
            ("put after defrag", vec!["put".into(), "after".into(), "1".into()]),
            ("disarm", vec!["alarm".into(), "disarm".into()]),
            ("alarm list", vec!["alarm".into(), "list".into()]),
            ("put after disarm", vec!["put".into(), "after".into(), "2".into()]),
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            lines.push(format!("{what}: {}", run(&args).replace(&revision, "<revision>")));
        }
        transcripts.push(lines.join(""));
    }
    assert!(transcripts[0].contains("alarm:NOSPACE"), "{}", transcripts[0]);
    assert_eq!(transcripts[1], transcripts[0], "t4 (right) answers as etcd (left)");
}
