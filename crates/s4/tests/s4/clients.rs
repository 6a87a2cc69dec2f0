//! The `s4` binary against real S3 clients: the aws CLI and boto3 (tests/clients/).

use std::process::Command;

use t4_testkit::s4::{s4_command, S4Process, ACCESS, SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_works_against_s4() {
    let s4 = S4Process::start().await;
    run_client(&s4, "bash", "awscli_smoke.sh", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_trusts_an_https_s4_through_its_ca_bundle() {
    let pki = t4_testkit::pki::Pki::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s4 = S4Process::start_with(tempfile::tempdir().unwrap(), port, Some(&pki.server())).await;
    let aws = |args: &[&str], ca: Option<&std::path::Path>| {
        let mut command = Command::new("aws");
        command
            .args(["--endpoint-url", &s4.endpoint, "--region", "us-east-1"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", ACCESS)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_MAX_ATTEMPTS", "1");
        if let Some(ca) = ca {
            command.arg("--ca-bundle").arg(ca);
        }
        command.output().unwrap()
    };
    let ca = pki.ca_path();
    let made = aws(&["s3", "mb", "s3://tls-bucket"], Some(&ca));
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let listed = aws(&["s3", "ls"], Some(&ca));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("tls-bucket"));
    let untrusted = aws(&["s3", "ls"], None);
    assert!(!untrusted.status.success(), "a client without the CA must not connect");
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains("SSL"), "{}", String::from_utf8_lossy(&untrusted.stderr));
}

#[test]
fn s4_refuses_to_start_on_a_bad_tls_identity() {
    let pki = t4_testkit::pki::Pki::new();
    let server = pki.server();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    // A missing key file, a certificate without its key, and a key that is not the certificate's.
    let other = pki.client("other");
    for (cert, key, expected) in [
        (Some(&server.cert), Some(&missing), "missing.pem"),
        (Some(&server.cert), None, "--tls-key"),
        (Some(&server.cert), Some(&other.key), "do not make a TLS identity"),
    ] {
        let mut command = s4_command(dir.path(), 1);
        if let Some(cert) = cert {
            command.env("S4_TLS_CERT", cert);
        }
        if let Some(key) = key {
            command.env("S4_TLS_KEY", key);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "expected {expected:?} in: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4s_s3_object_store_passes_the_conformance_suite_against_the_s4_binary() {
    let s4 = S4Process::start().await;
    let config = |prefix: &str| t4_object::S3Config {
        endpoint: Some(s4.endpoint.clone()),
        region: "us-east-1".into(),
        bucket: "t4-conformance".into(),
        prefix: prefix.into(),
        credentials: t4_object::S3Credentials::keys(ACCESS, SECRET),
        ca_certificate_pem: None,
    };
    let store = t4_object::S3ObjectStore::connect(config("")).await.unwrap();
    store.client().create_bucket().bucket("t4-conformance").send().await.unwrap();
    t4_object::conformance::run(&store, "suite/").await;
    let prefixed = t4_object::S3ObjectStore::connect(config("cluster-b/")).await.unwrap();
    t4_object::conformance::run(&prefixed, "suite/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_operations_errors_conditions_and_the_create_only_race() {
    let s4 = S4Process::start().await;
    run_client(&s4, "python3", "boto3_suite.py", &["1000"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_put_and_delete_load_loses_nothing_acknowledged() {
    let s4 = S4Process::start().await;
    let logs = tempfile::tempdir().unwrap();
    let log_dir = logs.path().to_str().unwrap().to_string();
    let mut load = client_script(&s4, "python3", "crash_load.py", &[&log_dir]).spawn().unwrap();
    // Kill once enough operations were acknowledged (however busy the machine is).
    let acknowledged = || -> usize {
        std::fs::read_dir(&log_dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| {
                        std::fs::read_to_string(entry.path())
                            .unwrap_or_default()
                            .lines()
                            .filter(|line| !line.starts_with("SENDDEL"))
                            .count()
                    })
                    .sum()
            })
            .unwrap_or(0)
    };
    for _ in 0..300 {
        if acknowledged() >= 400 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut s4 = s4;
    s4.kill_9();
    assert!(load.wait().unwrap().success(), "the load script itself failed");
    s4.restart().await;
    run_client(&s4, "python3", "crash_verify.py", &[&log_dir]);
}

fn client_script(s4: &S4Process, program: &str, script: &str, extra: &[&str]) -> Command {
    let script = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(program);
    command.arg(&script).args([s4.endpoint.as_str(), ACCESS, SECRET]).args(extra);
    command
}

fn run_client(s4: &S4Process, program: &str, script: &str, extra: &[&str]) {
    let output = client_script(s4, program, script, extra)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program} ({error}): scripts/test.sh installs it"));
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
