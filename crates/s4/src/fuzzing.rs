//! Fuzz entry points for s4, shared by the cargo-fuzz targets in `fuzz/` and the stable
//! test that replays their corpora. Neither may panic on any input.
//!
//! [`s4_metadata`]: s4's metadata records (buckets, objects, bodies, uploads, parts) decode
//! garbage to an error and re-encode what decodes to the same bytes.
//!
//! [`s4_request`]: requests written as text requests written as text (a request line, header lines, a blank
//! line, a body; requests separated by NUL bytes) through the S3 service s4 serves, on a
//! fresh engine: header and query parsing, SigV4 and presigned-URL parsing, XML bodies,
//! ranges, conditions, multipart uploads. Anonymous requests are let through the access
//! check so that the handlers are reached; signed ones are verified as s4 verifies them.
//! Whatever arrives, s4 answers, never panics or hangs, stays healthy, and still stores
//! and serves an object afterwards.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::S3Result;

use t4_env::fuzzing::{runtime, Scratch};
use t4_env::{OsDisk, RealClock};

use crate::engine::Engine;
use crate::service::S4;

/// Credentials a seed may sign with (the signatures in seeds are not valid; the parsing
/// before the check is what is exercised).
const ACCESS: &str = "fuzzaccess";
const SECRET: &str = "fuzzsecret";

/// Written in a request's target or body, it is replaced by the upload id of the newest
/// CreateMultipartUpload answer, so that seeds can complete uploads.
const UPLOAD_ID: &[u8] = b"UPLOADID";

/// How long one request may take before the target calls it a hang.
const REQUEST_TIME_MAX: Duration = Duration::from_secs(20);

struct AnonymousAllowed;

#[async_trait::async_trait]
impl S3Access for AnonymousAllowed {
    async fn check(&self, _cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        Ok(())
    }
}

pub fn s4_request(data: &[u8]) {
    runtime().block_on(drive(data));
}

async fn drive(data: &[u8]) {
    let scratch = Scratch::new("s4");
    let engine =
        Engine::open(Arc::new(OsDisk::new(scratch.path().to_path_buf())), Arc::new(RealClock::new())).await.expect("the engine opens");
    engine.create_bucket("fuzz").await.expect("a bucket");
    let mut builder = S3ServiceBuilder::new(S4::new(engine.clone(), 64 << 20, 256 << 20));
    builder.set_auth(SimpleAuth::from_single(ACCESS, SECRET));
    builder.set_access(AnonymousAllowed);
    let service = builder.build();
    let mut upload_id = Vec::new();
    for raw in data.split(|byte| *byte == 0).take(16) {
        let raw = replace(raw, UPLOAD_ID, &upload_id);
        let Some(request) = parse(&raw) else { continue };
        // The fuzz build forces overflow checks on every crate, so the known s3s credential
        // date panic (robustness #42; off in our debug and release builds) is stepped around
        // there, and only there: the stable replay of the corpus sends it.
        #[cfg(fuzzing)]
        if known_s3s_date_panic(&request) {
            continue;
        }
        let line = format!("{} {}", request.method(), request.uri());
        let (status, body) = call(&service, request).await;
        if trace() {
            eprintln!("s4_request: {line} -> {status} {}", String::from_utf8_lossy(&body[..body.len().min(160)]));
        }
        if let Some(id) = between(&body, b"<UploadId>", b"</UploadId>") {
            upload_id = id.to_vec();
        }
    }
    engine.health().expect("s4 is still healthy after the requests");
    // Still serving: a bucket of its own (the requests may have deleted `fuzz`), an object in it.
    let _ = call(&service, request("PUT", "/fuzz-sentinel", Bytes::new())).await;
    let (status, _) = call(&service, request("PUT", "/fuzz-sentinel/object", Bytes::from_static(b"still serving"))).await;
    assert_eq!(status, 200, "a PUT after the requests");
    let (status, body) = call(&service, request("GET", "/fuzz-sentinel/object", Bytes::new())).await;
    assert_eq!((status, body.as_ref()), (200, &b"still serving"[..]), "a GET after the requests");
}

/// `T4_FUZZ_TRACE=1` prints every request and its answer (for writing seeds).
fn trace() -> bool {
    std::env::var_os("T4_FUZZ_TRACE").is_some()
}

fn request(method: &str, target: &str, body: Bytes) -> hyper::Request<s3s::Body> {
    hyper::Request::builder()
        .method(method)
        .uri(target)
        .header(HOST, "127.0.0.1:9000")
        .header(CONTENT_LENGTH, body.len())
        .body(s3s::Body::from(body))
        .expect("a well-formed request")
}

/// The answer's status and its whole body.
async fn call(service: &S3Service, request: hyper::Request<s3s::Body>) -> (u16, Bytes) {
    let answer = async {
        match service.call(request).await {
            Ok(mut response) => {
                let body = response.body_mut().store_all_limited(256 << 20).await.unwrap_or_default();
                (response.status().as_u16(), body)
            }
            Err(_) => (0, Bytes::new()),
        }
    };
    tokio::time::timeout(REQUEST_TIME_MAX, answer).await.expect("s4 answers every request in time")
}

/// A request from text: `METHOD target`, `Name: value` lines, a blank line, the body.
/// What hyper would refuse before s4 saw it (a bad method, target or header) is skipped;
/// the body's length is the one hyper would have framed.
fn parse(raw: &[u8]) -> Option<hyper::Request<s3s::Body>> {
    let (head, body) = match raw.windows(2).position(|pair| pair == b"\n\n") {
        Some(at) => (&raw[..at], &raw[at + 2..]),
        None => (raw, &[][..]),
    };
    let mut lines = head.split(|byte| *byte == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let first = lines.next()?;
    let space = first.iter().position(|byte| *byte == b' ')?;
    let method = hyper::Method::from_bytes(&first[..space]).ok()?;
    let uri = hyper::Uri::try_from(&first[space + 1..]).ok()?;
    let mut request = hyper::Request::builder().method(method).uri(uri).body(s3s::Body::from(Bytes::copy_from_slice(body))).ok()?;
    let headers = request.headers_mut();
    for line in lines {
        let Some(colon) = line.iter().position(|byte| *byte == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(line[..colon].trim_ascii()), HeaderValue::from_bytes(line[colon + 1..].trim_ascii()))
        else {
            continue;
        };
        headers.append(name, value);
    }
    headers.remove(TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    if !headers.contains_key(HOST) {
        headers.insert(HOST, HeaderValue::from_static("127.0.0.1:9000"));
    }
    Some(request)
}

/// A SigV4 credential (header or presigned query) whose date has a byte below '0'.
#[cfg(fuzzing)]
fn known_s3s_date_panic(request: &hyper::Request<s3s::Body>) -> bool {
    let header = request.headers().get(hyper::header::AUTHORIZATION).map(|value| value.as_bytes().to_vec());
    let query = request.uri().query().map(|query| query.as_bytes().to_vec());
    [header, query].into_iter().flatten().any(|text| {
        text.windows(b"Credential=".len()).enumerate().any(|(at, window)| {
            window == b"Credential=" && {
                let rest = &text[at + window.len()..];
                // access key id / date: the date is the second field, split on '/' or "%2F".
                let fields: Vec<&[u8]> = rest.split(|byte| *byte == b'/').collect();
                let date = fields.get(1).copied().unwrap_or_else(|| rest.split(|byte| *byte == b'%').nth(1).unwrap_or(&[]));
                date.iter().take(8).any(|byte| *byte < b'0')
            }
        })
    })
}

fn replace(raw: &[u8], pattern: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut at = 0;
    while at < raw.len() {
        if raw[at..].starts_with(pattern) {
            out.extend_from_slice(with);
            at += pattern.len();
        } else {
            out.push(raw[at]);
            at += 1;
        }
    }
    out
}

fn between<'a>(text: &'a [u8], open: &[u8], close: &[u8]) -> Option<&'a [u8]> {
    let start = text.windows(open.len()).position(|window| window == open)? + open.len();
    let len = text[start..].windows(close.len()).position(|window| window == close)?;
    Some(&text[start..start + len])
}

/// s4's metadata records (buckets, objects, bodies, uploads, parts).
pub fn s4_metadata(data: &[u8]) {
    crate::meta::fuzz_records(data);
}
