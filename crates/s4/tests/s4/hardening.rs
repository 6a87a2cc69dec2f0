//! s4 under hostile and resource-starved conditions: out of file descriptors, connection
//! caps, slow and idle clients, signature v2, generated credentials, bodies larger than it
//! may buffer.

use std::time::Duration;

use t4_testkit::http_get;
use t4_testkit::s4::LimitedS4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_out_of_file_descriptors_keeps_serving() {
    let mut s4 = LimitedS4::start(128, "--max-connections 100000").await;
    tracing::info!("--- 400 idle connections exhaust s4's 128 file descriptors: accept fails with EMFILE");
    let held = s4.idle_connections(400).await;
    assert!(held.len() > 128, "the kernel's backlog takes connections s4 cannot accept ({})", held.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(s4.alive(), "s4 exited on an accept error");
    tracing::info!("--- idle connections are closed after the header timeout; s4 answers again");
    assert!(s4.answers_within(Duration::from_secs(10)).await, "s4 did not recover");
    drop(held);
    assert!(s4.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_caps_connections_and_drops_slow_and_idle_clients() {
    let mut s4 = LimitedS4::start(1024, "--max-connections 20").await;
    tracing::info!("--- 50 idle connections: 20 are served, 30 wait; all idle ones are dropped at the header timeout");
    let held = s4.idle_connections(50).await;
    assert_eq!(held.len(), 50);
    let started = tokio::time::Instant::now();
    assert!(s4.answers_within(Duration::from_secs(10)).await);
    assert!(started.elapsed() >= Duration::from_millis(1500), "the 21st connection waited for a place");

    tracing::info!("--- a slowloris client (a request head never finished) is dropped too");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = tokio::net::TcpStream::connect(s4.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: s4\r\n").await.unwrap();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(6), slow.read(&mut buffer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the half-sent request was not dropped: {read:?}");
    drop(held);
    assert!(s4.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_refuses_signature_v2_unless_allowed() {
    let request = |addr: std::net::SocketAddr, head: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut response = String::new();
        socket.read_to_string(&mut response).await.unwrap();
        response
    };
    let header = "GET /bucket/key HTTP/1.1\r\nHost: s4\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nAuthorization: AWS k:c2lnbmF0dXJl\r\nConnection: close\r\n\r\n";
    let presigned = "GET /bucket/key?AWSAccessKeyId=k&Expires=9999999999&Signature=c2ln HTTP/1.1\r\nHost: s4\r\nConnection: close\r\n\r\n";
    let s4 = LimitedS4::start(1024, "").await;
    for head in [header, presigned] {
        let response = request(s4.addr, head).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
        assert!(response.contains("<Code>InvalidRequest</Code>") && response.contains("AWS4-HMAC-SHA256"), "{response}");
    }
    tracing::info!("--- with --allow-sigv2 the signature is checked (and this one is wrong)");
    let allowing = LimitedS4::start(1024, "--allow-sigv2 true").await;
    let response = request(allowing.addr, header).await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_keeps_generated_credentials_out_of_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_s4"))
            .args(["--bind", &addr.to_string(), "--log-level", "info", "--data-dir"])
            .arg(dir.path())
            .env_remove("S4_ACCESS_KEY_ID")
            .env_remove("S4_SECRET_ACCESS_KEY")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    for round in 0..2 {
        let child = start();
        let mut up = false;
        for _ in 0..100 {
            if http_get(addr, "/health").await.is_some() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up);
        t4_testkit::terminate(&child);
        let output = child.wait_with_output().unwrap();
        let file = std::fs::read_to_string(dir.path().join("credentials")).unwrap();
        let secret = file.lines().find_map(|line| line.strip_prefix("S4_SECRET_ACCESS_KEY=")).unwrap().to_string();
        assert_eq!(secret.len(), 40, "round {round}");
        let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(!printed.contains(&secret), "the secret was printed: {printed}");
        assert!(printed.contains("credentials"), "stderr says where the credentials are: {printed}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("credentials")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// An s4 PUT far larger than s4 may buffer (`--max-buffered-bytes` 8 MiB): a 256 MiB object,
/// a 64 MiB part and a 64 MiB copied part are written to disk as they arrive; s4's memory
/// grows by a few MiB, not by the body, and every byte reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_streams_bodies_larger_than_it_may_buffer() {
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    use sha2::{Digest, Sha256};
    const OBJECT_BYTES: usize = 256 << 20;
    const PART_BYTES: usize = 64 << 20;
    let mut s4 = LimitedS4::start(1024, "--max-buffered-bytes 8388608").await;
    let pid = s4.pid();
    let s3 = crate::sdk::client_with(&format!("http://{}", s4.addr), crate::sdk::SECRET, None);
    s3.create_bucket().bucket("big").send().await.unwrap();
    let object: Vec<u8> = (0..OBJECT_BYTES).map(|index| (index % 251) as u8 ^ (index >> 20) as u8).collect();
    let memory = t4_testkit::RssPeak::sample(pid, Duration::from_millis(20));
    tracing::info!("--- a 256 MiB PUT, then a 64 MiB part and a 64 MiB copied part");
    s3.put_object().bucket("big").key("object").body(ByteStream::from(object.clone())).send().await.unwrap();
    let upload = s3.create_multipart_upload().bucket("big").key("assembled").send().await.unwrap();
    let id = upload.upload_id().unwrap();
    let first = s3
        .upload_part()
        .bucket("big")
        .key("assembled")
        .upload_id(id)
        .part_number(1)
        .body(ByteStream::from(object[..PART_BYTES].to_vec()))
        .send()
        .await
        .unwrap();
    let second = s3
        .upload_part_copy()
        .bucket("big")
        .key("assembled")
        .upload_id(id)
        .part_number(2)
        .copy_source("big/object")
        .copy_source_range(format!("bytes={}-{}", PART_BYTES, 2 * PART_BYTES - 1))
        .send()
        .await
        .unwrap();
    let parts = [
        CompletedPart::builder().part_number(1).e_tag(first.e_tag().unwrap()).build(),
        CompletedPart::builder().part_number(2).e_tag(second.copy_part_result().unwrap().e_tag().unwrap()).build(),
    ];
    let completed = CompletedMultipartUpload::builder().set_parts(Some(parts.to_vec())).build();
    s3.complete_multipart_upload().bucket("big").key("assembled").upload_id(id).multipart_upload(completed).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let grown = memory.grown();
    eprintln!("s4 streamed 384 MiB of bodies with --max-buffered-bytes 8 MiB: RSS grew {} MiB at most", grown >> 20);
    assert!(grown < 64 << 20, "s4 held {} MiB while streaming bodies", grown >> 20);

    tracing::info!("--- every byte reads back");
    for (key, expected) in [("object", &object[..]), ("assembled", &object[..2 * PART_BYTES])] {
        let mut body = s3.get_object().bucket("big").key(key).send().await.unwrap().body;
        let (mut hash, mut len) = (Sha256::new(), 0);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            hash.update(&chunk);
            len += chunk.len();
        }
        assert_eq!(len, expected.len(), "{key}: length");
        assert_eq!(hash.finalize(), Sha256::digest(expected), "{key}: bytes");
    }
    assert!(s4.alive());
}
