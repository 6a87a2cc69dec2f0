//! Three `t4 run` processes on one `s4` form a cluster (docs/clustering.md): `member list`
//! shows all three, clients of followers see one cluster (writes, txns, leases and
//! etcdctl through them; reads and watches on them), writes survive kill -9 of the leader
//! and a pause of the leader past its lease, and afterwards every member holds every
//! acknowledged write at its revision, with equal hashes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::GetOptions;
use tokio::time::Instant;

use crate::bucket_process::{s4_with_bucket, BUCKET};
use t4_testkit::s4::{S4Process, ACCESS, SECRET};

const LEASE_MS: &str = "1000";
const DRIFT_MS: &str = "100";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One member: its process (when running), ports and data dir.
struct Member {
    node_id: String,
    endpoint: String,
    peer: String,
    metrics: String,
    data_dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn new(node_id: &str, root: &Path) -> Self {
        Self {
            node_id: node_id.into(),
            endpoint: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            metrics: format!("127.0.0.1:{}", free_port()),
            data_dir: root.join(node_id),
            child: None,
        }
    }

    fn command(&self, s4: &S4Process) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_t4"));
        command
            .args(["run", "--listen", &self.endpoint, "--metrics-addr", &self.metrics, "--log-level", "warn", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--node-id", &self.node_id, "--peer-listen", &self.peer])
            .args(["--leader-lease-ms", LEASE_MS, "--max-clock-drift-ms", DRIFT_MS])
            .args(["--s3-bucket", BUCKET, "--s3-prefix", "cluster/", "--s3-endpoint", &s4.endpoint])
            .env("T4_S3_ACCESS_KEY_ID", ACCESS)
            .env("T4_S3_SECRET_ACCESS_KEY", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        command
    }

    fn start(&mut self, s4: &S4Process) {
        assert!(self.child.is_none(), "{} already running", self.node_id);
        self.child = Some(self.command(s4).spawn().unwrap());
    }

    fn kill_9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.as_ref().expect("running").id() as libc::pid_t;
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    async fn client(&self) -> Option<etcd_client::Client> {
        let options = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(2));
        etcd_client::Client::connect([self.endpoint.clone()], Some(options)).await.ok()
    }

    /// (its member id, the leader it knows, its raft term) from Status.
    async fn status(&self) -> Option<(u64, u64, u64)> {
        let status = self.client().await?.status().await.ok()?;
        let header = status.header()?;
        Some((header.member_id(), status.leader(), status.raft_term()))
    }
}

impl Member {
    /// `GET path` on the member's metrics port: the status line and the body.
    fn http_get(&self, path: &str) -> (String, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.metrics).expect("the metrics port");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: t4\r\n\r\n").unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
        (head.lines().next().unwrap_or_default().to_string(), body.to_string())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until the running members agree on one leader among them; its index.
async fn leader(members: &[Member], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let mut seen = Vec::new();
        for (index, member) in members.iter().enumerate().filter(|(_, member)| member.child.is_some()) {
            seen.push((index, member.status().await));
        }
        let leaders: Vec<(usize, u64)> = seen
            .iter()
            .filter_map(|(index, status)| status.filter(|(me, leader, _)| me == leader).map(|(me, _, _)| (*index, me)))
            .collect();
        if let [(leader, id)] = leaders[..] {
            if seen.iter().all(|(_, status)| status.is_some_and(|(_, known, _)| known == id)) {
                return leader;
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader within {limit:?}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writers putting `/w/<writer>/<n>` to whichever member answers, moving on to the next on
/// any error ("not leader", a dead or paused process), until `stop`; each returns what was
/// acknowledged as (key, value, revision).
fn writers(
    endpoints: Vec<String>,
    count: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Vec<(String, String, i64)>>> {
    (0..count)
        .map(|writer| {
            let (endpoints, stop, acked) = (endpoints.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                let mut target = writer % endpoints.len();
                let mut client = None;
                let mut index = 0;
                while !stop.load(Ordering::SeqCst) {
                    if client.is_none() {
                        let options = etcd_client::ConnectOptions::new().with_timeout(Duration::from_millis(1500));
                        client = etcd_client::Client::connect([endpoints[target].clone()], Some(options)).await.ok();
                    }
                    let Some(connected) = client.as_mut() else {
                        target = (target + 1) % endpoints.len();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let (key, value) = (format!("/w/{writer:02}/{index:06}"), format!("v{writer}-{index}"));
                    index += 1; // a key whose outcome is unknown is never written again
                    match connected.put(key.clone(), value.clone(), None).await {
                        Ok(response) => {
                            done.push((key, value, response.header().unwrap().revision()));
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => {
                            client = None;
                            target = (target + 1) % endpoints.len();
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                done
            })
        })
        .collect()
}

async fn wait_for(counter: &AtomicUsize, at_least: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while counter.load(Ordering::SeqCst) < at_least {
        assert!(Instant::now() < deadline, "only {} of {at_least} writes acknowledged in {limit:?}", counter.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a member holds under `/w/`, by serializable reads of its own state.
async fn held(member: &Member) -> Option<BTreeMap<String, (String, i64)>> {
    let mut client = member.client().await?;
    let response = client.get("/w/", Some(GetOptions::new().with_prefix().with_serializable())).await.ok()?;
    Some(
        response
            .kvs()
            .iter()
            .map(|kv| (kv.key_str().unwrap().to_string(), (kv.value_str().unwrap().to_string(), kv.mod_revision())))
            .collect(),
    )
}

/// `etcdctl` (ETCDCTL_API=3) against `endpoint`: its stdout, or its error line.
fn etcdctl(endpoint: &str, args: &[&str]) -> String {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run etcdctl ({error}): scripts/test.sh installs etcd-client 3.4"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let errors = String::from_utf8_lossy(&output.stderr);
    text + errors.lines().rfind(|line| !line.starts_with('{')).unwrap_or_default()
}

/// A client of a follower sees one cluster: its writes go through the leader, its
/// linearizable reads see every write acknowledged anywhere before them, its leases live
/// while it keeps them alive there, and its watches see the leader's writes.
async fn through_the_followers(members: &[Member], leader: usize) {
    let followers: Vec<&Member> = members.iter().enumerate().filter(|(index, _)| *index != leader).map(|(_, member)| member).collect();
    let (one, other) = (followers[0], followers[1]);
    let mut on_one = one.client().await.expect("a follower answers");
    let mut on_other = other.client().await.expect("a follower answers");
    let mut on_leader = members[leader].client().await.expect("the leader answers");

    // Read-your-write across members, both ways, each read on another member at once.
    for round in 0..20 {
        let (writer, reader) = if round % 2 == 0 { (&mut on_one, &mut on_other) } else { (&mut on_other, &mut on_one) };
        let value = format!("r{round}");
        let put = writer.put("/f/ryw", value.clone(), None).await.expect("a put through a follower");
        let got = reader.get("/f/ryw", None).await.expect("a linearizable read on a follower");
        assert_eq!(got.kvs()[0].value_str().unwrap(), value, "round {round}: a read after an acknowledged write missed it");
        assert!(got.header().unwrap().revision() >= put.header().unwrap().revision());
    }
    // A txn through a follower: compare-and-set on the revision it read.
    let read = on_one.get("/f/ryw", None).await.unwrap();
    let mod_revision = read.kvs()[0].mod_revision();
    let swap = |expected: i64| {
        etcd_client::Txn::new()
            .when([etcd_client::Compare::mod_revision("/f/ryw", etcd_client::CompareOp::Equal, expected)])
            .and_then([etcd_client::TxnOp::put("/f/ryw", "swapped", None)])
    };
    assert!(on_one.txn(swap(mod_revision)).await.unwrap().succeeded());
    assert!(!on_other.txn(swap(mod_revision)).await.unwrap().succeeded(), "a second swap on the old revision");

    // A watch on a follower sees a write made on the leader, and one through the other
    // follower, in order.
    let (_watcher, mut events) = on_other.watch("/f/watched", None).await.unwrap();
    on_leader.put("/f/watched", "from the leader", None).await.unwrap();
    on_one.put("/f/watched", "through a follower", None).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let response = tokio::time::timeout(Duration::from_secs(10), events.message()).await.expect("watch events").unwrap().unwrap();
        seen.extend(response.events().iter().map(|event| event.kv().unwrap().value_str().unwrap().to_string()));
    }
    assert_eq!(seen, ["from the leader", "through a follower"]);

    // A lease granted and kept alive through a follower outlives its TTL; its key is there.
    let lease = on_one.lease_grant(2, None).await.unwrap().id();
    on_one.put("/f/leased", "kept", Some(etcd_client::PutOptions::new().with_lease(lease))).await.unwrap();
    let (mut keeper, mut kept) = on_one.lease_keep_alive(lease).await.unwrap();
    for _ in 0..6 {
        keeper.keep_alive().await.unwrap();
        let answer = kept.message().await.unwrap().expect("a keepalive answer");
        assert!(answer.ttl() > 0, "the lease ran out while kept alive through a follower");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(on_other.get("/f/leased", None).await.unwrap().kvs().len(), 1, "the leased key after 4 s of a 2 s TTL");
    on_other.lease_revoke(lease).await.unwrap();
    assert!(on_one.get("/f/leased", None).await.unwrap().kvs().is_empty(), "revoked through the other follower");

    // etcdctl against a follower, as a person types it.
    assert_eq!(etcdctl(&one.endpoint, &["put", "/f/ctl", "typed"]).trim(), "OK");
    assert_eq!(etcdctl(&other.endpoint, &["get", "/f/ctl", "--print-value-only"]).trim(), "typed");
    assert_eq!(etcdctl(&other.endpoint, &["del", "/f/ctl"]).trim(), "1");
    let status = etcdctl(&one.endpoint, &["endpoint", "status", "-w", "json"]);
    assert!(status.contains("\"leader\":"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_replicate_fail_over_and_agree() {
    let s4 = s4_with_bucket().await;
    let root = tempfile::tempdir().unwrap();
    let mut members: Vec<Member> = ["n0", "n1", "n2"].iter().map(|id| Member::new(id, root.path())).collect();
    for member in &mut members {
        member.start(&s4);
        // The first forms the cluster; the others join it as learners and are promoted.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let first = leader(&members, Duration::from_secs(30)).await;
    // member list: every member with its URLs, all voters once promoted.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = members[first].client().await.unwrap().member_list().await.unwrap();
        let voters: Vec<(String, String, String)> = listed
            .members()
            .iter()
            .filter(|member| !member.is_learner())
            .map(|member| (member.name().to_string(), member.peer_urls()[0].clone(), member.client_urls()[0].clone()))
            .collect();
        if voters.len() == 3 {
            for member in &members {
                let want = (member.node_id.clone(), format!("http://{}", member.peer), format!("http://{}", member.endpoint));
                assert!(voters.contains(&want), "{want:?} not in {voters:?}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "not three voters: {listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    through_the_followers(&members, first).await;

    // /healthz/leader: 200 on the leader alone; a follower names the leader. Metrics say
    // who leads and what each member holds.
    for (index, member) in members.iter().enumerate() {
        let (status, body) = member.http_get("/healthz/leader");
        if index == first {
            assert!(status.contains("200"), "{status}: {body}");
        } else {
            assert!(status.contains("503"), "{status}: {body}");
            assert!(body.contains(&members[first].endpoint), "a follower names the leader: {body}");
        }
        let (_, metrics) = member.http_get("/metrics");
        let role = if index == first { "t4_cluster_role 2" } else { "t4_cluster_role 0" };
        assert!(metrics.contains(role) && metrics.contains("t4_cluster_voters 3"), "{metrics}");
    }
    let (_, metrics) = members[first].http_get("/metrics");
    for member in &members {
        assert!(metrics.contains(&format!("t4_cluster_member_matched_index{{member=\"{}\"}}", member.node_id)), "{metrics}");
    }

    let endpoints: Vec<String> = members.iter().map(|member| member.endpoint.clone()).collect();
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let writing = writers(endpoints, 8, stop.clone(), acked.clone());
    wait_for(&acked, 200, Duration::from_secs(30)).await;

    // kill -9 the leader under load: another takes over with every acknowledged write.
    members[first].kill_9();
    let second = leader(&members, Duration::from_secs(20)).await;
    assert_ne!(second, first);
    let before = acked.load(Ordering::SeqCst);
    wait_for(&acked, before + 200, Duration::from_secs(30)).await;
    members[first].start(&s4);

    // SIGSTOP the new leader past its lease: a third term begins without it; once resumed
    // it finds itself deposed and follows.
    members[second].signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let others: Vec<usize> = (0..3).filter(|index| *index != second).collect();
    let before = acked.load(Ordering::SeqCst);
    wait_for(&acked, before + 200, Duration::from_secs(30)).await;
    members[second].signal(libc::SIGCONT);
    let third = leader(&members, Duration::from_secs(20)).await;
    assert!(others.contains(&third), "the paused leader leads again: {third}");
    let before = acked.load(Ordering::SeqCst);
    wait_for(&acked, before + 100, Duration::from_secs(30)).await;

    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for writer in writing {
        acknowledged.extend(writer.await.unwrap());
    }
    // No two acknowledged writes share a revision (one history, no split brain).
    let mut revisions: Vec<i64> = acknowledged.iter().map(|(_, _, revision)| *revision).collect();
    revisions.sort_unstable();
    let total = revisions.len();
    revisions.dedup();
    assert_eq!(revisions.len(), total, "two acknowledged writes at one revision");

    // Every member catches up to the same state, holding every acknowledged write.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut states = Vec::new();
        let mut hashes = Vec::new();
        for member in &members {
            states.push(held(member).await);
            let hash = match member.client().await {
                Some(mut client) => client.hash_kv(0).await.ok().map(|hash| (hash.hash(), hash.header().unwrap().revision())),
                None => None,
            };
            hashes.push(hash);
        }
        let complete = states.iter().all(|state| {
            state
                .as_ref()
                .is_some_and(|state| acknowledged.iter().all(|(key, value, revision)| state.get(key) == Some(&(value.clone(), *revision))))
        });
        if complete && hashes.iter().all(|hash| hash.is_some() && *hash == hashes[0]) && states.iter().all(|state| *state == states[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "members did not converge on every acknowledged write: hashes {hashes:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("cluster: {total} writes acknowledged across two failovers; {} members agree", members.len());

    // etcdctl's membership commands: add answers how members join; remove, sent to a
    // follower, takes one member out; the cluster goes on with two voters.
    let leader_now = leader(&members, Duration::from_secs(20)).await;
    let follower = (0..3).find(|index| *index != leader_now).unwrap();
    let removed = (0..3).find(|index| *index != leader_now && *index != follower).unwrap();
    let added = etcdctl(&members[follower].endpoint, &["member", "add", "n3", "--peer-urls=http://127.0.0.1:1"]);
    assert!(added.contains("joins as a learner"), "{added}");
    let listed = etcdctl(&members[follower].endpoint, &["member", "list"]);
    let id =
        listed.lines().find(|line| line.contains(&format!(", {}, ", members[removed].node_id))).expect("listed").split(',').next().unwrap();
    let answer = etcdctl(&members[follower].endpoint, &["member", "remove", id]);
    assert!(answer.contains(&format!("Member {id} removed")), "{answer}");
    let listed = etcdctl(&members[leader_now].endpoint, &["member", "list"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(!listed.contains(&members[removed].node_id), "{listed}");
    let missing = etcdctl(&members[follower].endpoint, &["member", "remove", id]);
    assert!(missing.contains("member not found"), "{missing}");
    let put = etcdctl(&members[follower].endpoint, &["put", "/after/removal", "two"]);
    assert!(put.contains("OK"), "{put}");
    // The removed member stops serving: its health says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = etcdctl(&members[removed].endpoint, &["endpoint", "health"]);
        if health.contains("unhealthy") {
            break;
        }
        assert!(Instant::now() < deadline, "the removed member still healthy: {health}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn cluster_flags_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_t4"))
            .args(["run", "--listen", "127.0.0.1:0", "--metrics-addr", "off", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra)
            .output()
            .unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).to_string())
    };
    let (code, stderr) = run(&["--peer-listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("needs --s3-bucket"), "{stderr}");
    let objects = dir.path().join("objects");
    let objects = objects.to_str().unwrap();
    let (code, stderr) =
        run(&["--peer-listen", "127.0.0.1:0", "--object-dir", objects, "--leader-lease-ms", "1000", "--max-clock-drift-ms", "600"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--max-clock-drift-ms"), "{stderr}");
    let (code, stderr) = run(&["--peer-listen", "0.0.0.0:0", "--object-dir", objects]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--advertise-peer"), "{stderr}");
    let (code, stderr) = run(&["--peer-listen", "127.0.0.1:0", "--object-dir", objects, "--follower-wait-mode", "most"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("most"), "{stderr}");
}
