//! Where the `t4` binary finds S3 credentials when no keys are given: the AWS credential
//! chain, each link served by a loopback fake of the AWS endpoint it calls (EC2 instance
//! metadata, the container credentials endpoint, STS), against a real `s4`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use t4::env::{Clock, RealClock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::bucket_process::{s4_with_bucket, BUCKET};
use t4_testkit::s4::{S4Process, ACCESS, SECRET};

/// One request the fake answered.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
}

/// A loopback HTTP server playing IMDSv2, the container credentials endpoint and STS; the
/// credentials it hands out are s4's keys (with a session token s4 does not check), valid
/// for `lifetime`.
struct FakeAws {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeAws {
    async fn start(lifetime: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else { return };
                    let (status, body) = answer(&request, lifetime);
                    log.lock().unwrap().push(request);
                    // IMDS says how long its session token lives; nothing else needs headers.
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(body.as_bytes()).await;
                });
            }
        });
        Self { endpoint, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, method: &str, path: &str) -> usize {
        self.seen().iter().filter(|seen| seen.method == method && seen.path == path).count()
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break at;
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: BTreeMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|value| value.parse().ok()).unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Some(Seen { method, path, headers, body: String::from_utf8_lossy(&body).to_string() })
}

const IMDS_TOKEN: &str = "fake-imds-token";
const ROLE: &str = "t4-node-role";
const CONTAINER_AUTHORIZATION: &str = "fake-container-authorization";

fn answer(request: &Seen, lifetime: Duration) -> (&'static str, String) {
    let expiration = rfc3339(now_ms() + lifetime.as_millis() as u64);
    let imds_authorised = request.headers.get("x-aws-ec2-metadata-token").map(String::as_str) == Some(IMDS_TOKEN);
    match (request.method.as_str(), request.path.as_str()) {
        ("PUT", "/latest/api/token") if request.headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") => {
            ("200 OK", IMDS_TOKEN.into())
        }
        ("GET", "/latest/meta-data/iam/security-credentials/") if imds_authorised => ("200 OK", ROLE.into()),
        ("GET", path) if imds_authorised && path == format!("/latest/meta-data/iam/security-credentials/{ROLE}") => (
            "200 OK",
            format!(
                r#"{{"Code":"Success","LastUpdated":"{}","Type":"AWS-HMAC","AccessKeyId":"{ACCESS}","SecretAccessKey":"{SECRET}","Token":"imds-session","Expiration":"{expiration}"}}"#,
                rfc3339(now_ms())
            ),
        ),
        ("GET", "/container-credentials") if request.headers.get("authorization").map(String::as_str) == Some(CONTAINER_AUTHORIZATION) => (
            "200 OK",
            format!(r#"{{"AccessKeyId":"{ACCESS}","SecretAccessKey":"{SECRET}","Token":"container-session","Expiration":"{expiration}"}}"#),
        ),
        ("POST", "/") => {
            let action = if request.body.contains("Action=AssumeRoleWithWebIdentity") {
                "AssumeRoleWithWebIdentity"
            } else if request.body.contains("Action=AssumeRole") {
                "AssumeRole"
            } else {
                return ("400 Bad Request", String::new());
            };
            (
                "200 OK",
                format!(
                    r#"<{action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><{action}Result><Credentials><AccessKeyId>{ACCESS}</AccessKeyId><SecretAccessKey>{SECRET}</SecretAccessKey><SessionToken>sts-session</SessionToken><Expiration>{expiration}</Expiration></Credentials><AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/t4/node</Arn><AssumedRoleId>AROAEXAMPLE:node</AssumedRoleId></AssumedRoleUser></{action}Result><ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata></{action}Response>"#
                ),
            )
        }
        _ => ("404 Not Found", String::new()),
    }
}

fn now_ms() -> u64 {
    RealClock::new().wall_ms()
}

/// `2026-11-22T22:15:00Z` for milliseconds since the epoch (UTC).
fn rfc3339(wall_ms: u64) -> String {
    let seconds = (wall_ms / 1000) as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// A `t4` command with no AWS settings from this process: no keys, an empty home, no
/// instance metadata unless the test sets its endpoint.
fn t4(home: &Path, args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_t4"));
    command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("HOME", home);
    command.env("AWS_EC2_METADATA_DISABLED", "true");
    for (name, value) in env {
        command.env(name, value);
    }
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

fn status(s4: &S4Process, home: &Path, extra: &[&str], env: &[(&str, String)]) -> Output {
    let mut args = vec!["status", "--s3-bucket", BUCKET, "--s3-prefix", "chain/", "--s3-endpoint", &s4.endpoint];
    args.extend_from_slice(extra);
    t4(home, &args, env).output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_t4_asks_the_aws_credential_chain_link_by_link() {
    let s4 = s4_with_bucket().await;
    let fake = FakeAws::start(Duration::from_secs(3600)).await;
    let home = tempfile::tempdir().unwrap();

    // Nothing anywhere: a clear error, quickly.
    let started = tokio::time::Instant::now();
    let none = status(&s4, home.path(), &[], &[]);
    assert!(!none.status.success() && text(&none).contains("no S3 credentials from the AWS credential chain"), "{}", text(&none));
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());

    // EC2 instance metadata (IMDSv2: a session token first, then the role's credentials).
    let imds = status(
        &s4,
        home.path(),
        &[],
        &[("AWS_EC2_METADATA_DISABLED", "false".into()), ("AWS_EC2_METADATA_SERVICE_ENDPOINT", fake.endpoint.clone())],
    );
    assert!(imds.status.success(), "{}", text(&imds));
    assert!(fake.count("PUT", "/latest/api/token") >= 1, "{:?}", fake.seen());
    assert!(fake.count("GET", &format!("/latest/meta-data/iam/security-credentials/{ROLE}")) >= 1, "{:?}", fake.seen());

    // The container endpoint (ECS, EKS pod identity) with its authorization token.
    let container = status(
        &s4,
        home.path(),
        &[],
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/container-credentials", fake.endpoint)),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", CONTAINER_AUTHORIZATION.into()),
        ],
    );
    assert!(container.status.success(), "{}", text(&container));
    assert!(fake.count("GET", "/container-credentials") >= 1, "{:?}", fake.seen());

    // Web identity (EKS service accounts): the token file is exchanged at STS.
    let token_file = home.path().join("web-identity-token");
    std::fs::write(&token_file, "a-web-identity-jwt").unwrap();
    let web = status(
        &s4,
        home.path(),
        &[],
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.display().to_string()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/t4".into()),
            ("AWS_ROLE_SESSION_NAME", "t4-test".into()),
            ("AWS_ENDPOINT_URL_STS", fake.endpoint.clone()),
        ],
    );
    assert!(web.status.success(), "{}", text(&web));
    let exchange = fake.seen().into_iter().find(|seen| seen.body.contains("Action=AssumeRoleWithWebIdentity")).expect("an STS call");
    assert!(exchange.body.contains("WebIdentityToken=a-web-identity-jwt"), "{exchange:?}");

    // A profile that assumes a role with another profile's keys; `--s3-profile` picks it
    // even with other keys in the environment, as the AWS CLI's `--profile` does.
    let config = home.path().join("config");
    std::fs::write(
        &config,
        "[profile base]\naws_access_key_id = base-key\naws_secret_access_key = base-secret\n\n[profile assumer]\nrole_arn = arn:aws:iam::123456789012:role/t4\nsource_profile = base\n",
    )
    .unwrap();
    let assumed = status(
        &s4,
        home.path(),
        &["--s3-profile", "assumer"],
        &[
            ("AWS_CONFIG_FILE", config.display().to_string()),
            ("AWS_ENDPOINT_URL_STS", fake.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "environment-key".into()),
            ("AWS_SECRET_ACCESS_KEY", "environment-secret".into()),
        ],
    );
    assert!(assumed.status.success(), "{}", text(&assumed));
    let assume = fake.seen().into_iter().find(|seen| seen.body.contains("Action=AssumeRole&")).expect("an AssumeRole call");
    assert!(assume.headers.get("authorization").is_some_and(|value| value.contains("Credential=base-key/")), "{assume:?}");

    // A credential process, and the proof that what the chain finds is what signs: the same
    // process with a wrong secret is refused by s4.
    let script = |name: &str, secret: &str| {
        let path = home.path().join(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho '{{\"Version\": 1, \"AccessKeyId\": \"{ACCESS}\", \"SecretAccessKey\": \"{secret}\"}}'\n"),
        )
        .unwrap();
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&path, permissions).unwrap();
        path
    };
    let credentials = home.path().join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[process]\ncredential_process = {}\n\n[wrong]\ncredential_process = {}\n",
            script("good.sh", SECRET).display(),
            script("wrong.sh", "not-the-secret").display()
        ),
    )
    .unwrap();
    let file = [("AWS_SHARED_CREDENTIALS_FILE", credentials.display().to_string())];
    let process = status(&s4, home.path(), &["--s3-profile", "process"], &file);
    assert!(process.status.success(), "{}", text(&process));
    let wrong = status(&s4, home.path(), &["--s3-profile", "wrong"], &file);
    assert!(!wrong.status.success() && text(&wrong).contains("SignatureDoesNotMatch"), "{}", text(&wrong));
    let missing = status(&s4, home.path(), &["--s3-profile", "nope"], &file);
    assert!(!missing.status.success() && text(&missing).contains("no S3 credentials from profile \"nope\""), "{}", text(&missing));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_credentials_are_fetched_again_before_they_expire() {
    let s4 = s4_with_bucket().await;
    // Valid for 14 s: the SDK's cache refreshes them 10 s before they expire.
    let fake = FakeAws::start(Duration::from_secs(14)).await;
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("127.0.0.1:{port}");
    let data_dir = data.path().display().to_string();
    let mut node = t4(
        home.path(),
        &["run", "--listen", &endpoint, "--metrics-addr", "off", "--log-level", "warn", "--data-dir", &data_dir],
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/container-credentials", fake.endpoint)),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", CONTAINER_AUTHORIZATION.into()),
        ],
    )
    .args(["--s3-bucket", BUCKET, "--s3-prefix", "refresh/", "--s3-endpoint", &s4.endpoint])
    .stdout(Stdio::null())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    assert!(crate::server::await_endpoint(&endpoint).await);
    let mut client = etcd_client::Client::connect([endpoint.clone()], None).await.unwrap();
    client.put("/refresh/first", "v", None).await.unwrap();
    let at_start = fake.count("GET", "/container-credentials");
    // Writes over 20 s: every one acknowledged (so uploaded), across at least one refresh.
    for round in 0..40 {
        client.put(format!("/refresh/{round}"), "v", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fetches = fake.count("GET", "/container-credentials");
    node.kill().unwrap();
    node.wait().unwrap();
    assert!(fetches > at_start, "credentials fetched {at_start} time(s) at the start and not again in 20 s with a 14 s lifetime");
}
