//! s4 in-process, driven by `aws-sdk-s3`: every operation and error code the S3 API promises,
//! the ObjectStore conformance suite through t4's S3 store, signatures, presigned URLs,
//! clock skew, and bad input over raw HTTP.

#![allow(clippy::disallowed_methods, reason = "SDK time sources and presign times are wall-clock by nature")]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::*;
use aws_sdk_s3::Client;
use s4::engine::Engine;
use s4::server::{serve, ServeSettings};
use t4_env::{ObjectStore, OsDisk, RealClock};
use t4_object::{S3Config, S3ObjectStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) use t4_testkit::s4::{ACCESS, SECRET};
const UPLOAD_MAX: u64 = 16 << 20;
const MIB: usize = 1 << 20;

struct Server {
    endpoint: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn server() -> Server {
    server_with(None).await
}

/// With `tls`, the server speaks HTTPS only.
async fn server_with(tls: Option<t4_net::tls::TlsAcceptor>) -> Server {
    server_adjusted(|settings| settings.tls = tls).await
}

/// A server whose settings `adjust` changes first.
async fn server_adjusted(adjust: impl FnOnce(&mut ServeSettings)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(RealClock::new());
    let engine = Engine::open(Arc::new(OsDisk::new(dir.path().to_path_buf())), clock.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut settings = ServeSettings::new(ACCESS.into(), SECRET.into(), UPLOAD_MAX);
    adjust(&mut settings);
    let scheme = if settings.tls.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, engine, clock, settings, async move {
        let _ = stopped.await;
    }));
    Server { endpoint, _dir: dir, stop: Some(stop) }
}

pub(crate) fn client_with(endpoint: &str, secret: &str, skew: Option<Duration>) -> Client {
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(ACCESS, secret, None, None, "test"))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .endpoint_url(endpoint)
        .force_path_style(true)
        // Retries would hide the first answer (the SDK even corrects its clock from a
        // RequestTimeTooSkewed reply and tries again).
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled());
    if let Some(skew) = skew {
        config = config.time_source(aws_smithy_async::time::StaticTimeSource::new(SystemTime::now() + skew));
    }
    Client::from_conf(config.build())
}

fn client(server: &Server) -> Client {
    client_with(&server.endpoint, SECRET, None)
}

/// The HTTP status and S3 error code of a failed call.
fn failure<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> (u16, String) {
    let error = result.expect_err("the call must fail");
    let status = error.raw_response().map_or(0, |response| response.status().as_u16());
    (status, error.code().unwrap_or("").to_string())
}

fn body(bytes: &[u8]) -> ByteStream {
    ByteStream::from(bytes.to_vec())
}

async fn read(client: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let output = client.get_object().bucket(bucket).key(key).send().await.unwrap();
    output.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4s_s3_object_store_passes_the_conformance_suite_against_s4() {
    let server = server().await;
    client(&server).create_bucket().bucket("t4-bucket").send().await.unwrap();
    for prefix in ["", "cluster-a/"] {
        let store = S3ObjectStore::connect(store_config(&server, prefix, None)).await.unwrap();
        t4_object::conformance::run(&store, "conformance/").await;
    }
}

fn store_config(server: &Server, prefix: &str, ca_certificate_pem: Option<&str>) -> S3Config {
    S3Config {
        endpoint: Some(server.endpoint.clone()),
        region: "us-east-1".into(),
        bucket: "t4-bucket".into(),
        prefix: prefix.into(),
        credentials: t4_object::S3Credentials::keys(ACCESS, SECRET),
        ca_certificate_pem: ca_certificate_pem.map(|pem| pem.as_bytes().to_vec()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_t4s_store_passes_the_conformance_suite_and_untrusted_clients_fail() {
    let pki = t4_testkit::pki::Pki::new();
    let identity = pki.server();
    let tls = t4_net::tls::TlsAcceptor::from_pem_files(&identity.cert, &identity.key, None, &[b"h2", b"http/1.1"]).unwrap();
    let server = server_with(Some(tls)).await;
    let trusted = S3ObjectStore::connect(store_config(&server, "", Some(&pki.ca_pem))).await.unwrap();
    trusted.client().create_bucket().bucket("t4-bucket").send().await.unwrap();
    t4_object::conformance::run(&trusted, "tls/").await;

    // The system roots alone do not trust a private CA; plain HTTP gets no S3 answer.
    let untrusted = S3ObjectStore::connect(store_config(&server, "", None)).await.unwrap();
    let refused = untrusted.get("tls/anything").await.expect_err("an untrusted certificate must not connect");
    assert!(!matches!(refused, t4_env::ObjectError::NotFound(_)), "{refused:?}");
    let plain = client_with(&server.endpoint.replace("https://", "http://"), SECRET, None);
    assert!(plain.list_buckets().send().await.is_err());
    // The server keeps serving after both.
    t4_object::conformance::run(&trusted, "tls-again/").await;

    let bad =
        S3ObjectStore::connect(store_config(&server, "", Some("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")))
            .await;
    assert!(bad.is_err(), "a CA that does not parse is refused when the store is built");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_objects_ranges_and_read_conditions() {
    let server = server().await;
    let s3 = client(&server);
    assert_eq!(failure(s3.head_bucket().bucket("nope").send().await).0, 404);
    assert_eq!(failure(s3.create_bucket().bucket("Bad_Name").send().await), (400, "InvalidBucketName".into()));
    s3.create_bucket().bucket("bkt").send().await.unwrap();
    assert_eq!(failure(s3.create_bucket().bucket("bkt").send().await), (409, "BucketAlreadyOwnedByYou".into()));
    s3.head_bucket().bucket("bkt").send().await.unwrap();
    s3.get_bucket_location().bucket("bkt").send().await.unwrap();
    let buckets = s3.list_buckets().send().await.unwrap().buckets.unwrap();
    assert_eq!(buckets.iter().map(|bucket| bucket.name().unwrap()).collect::<Vec<_>>(), ["bkt"]);

    let put = s3
        .put_object()
        .bucket("bkt")
        .key("dir/hello.txt")
        .body(body(b"hello world"))
        .content_type("text/plain")
        .metadata("owner", "t4")
        .send()
        .await
        .unwrap();
    assert_eq!(put.e_tag(), Some("\"5eb63bbbe01eeed093cb22bb8f5acdc3\""));
    let head = s3.head_object().bucket("bkt").key("dir/hello.txt").send().await.unwrap();
    assert_eq!((head.content_length(), head.content_type()), (Some(11), Some("text/plain")));
    assert_eq!(head.metadata().unwrap().get("owner").map(String::as_str), Some("t4"));
    let ranged = s3.get_object().bucket("bkt").key("dir/hello.txt").range("bytes=6-").send().await.unwrap();
    assert_eq!(ranged.content_range(), Some("bytes 6-10/11"));
    assert_eq!(ranged.body.collect().await.unwrap().into_bytes().as_ref(), b"world");
    assert_eq!(failure(s3.get_object().bucket("bkt").key("dir/hello.txt").range("bytes=20-30").send().await), (416, "InvalidRange".into()));
    assert_eq!(failure(s3.get_object().bucket("bkt").key("missing").send().await), (404, "NoSuchKey".into()));
    assert_eq!(failure(s3.get_object().bucket("nope").key("k").send().await), (404, "NoSuchBucket".into()));
    let etag = put.e_tag().unwrap();
    assert_eq!(failure(s3.get_object().bucket("bkt").key("dir/hello.txt").if_none_match(etag).send().await).0, 304);
    assert_eq!(
        failure(s3.get_object().bucket("bkt").key("dir/hello.txt").if_match("\"other\"").send().await),
        (412, "PreconditionFailed".into())
    );
    let later = aws_sdk_s3::primitives::DateTime::from(SystemTime::now() + Duration::from_secs(3600));
    assert_eq!(failure(s3.get_object().bucket("bkt").key("dir/hello.txt").if_modified_since(later).send().await).0, 304);
    let earlier = aws_sdk_s3::primitives::DateTime::from(SystemTime::now() - Duration::from_secs(3600));
    assert_eq!(failure(s3.get_object().bucket("bkt").key("dir/hello.txt").if_unmodified_since(earlier).send().await).0, 412);

    // Conditional writes.
    assert_eq!(failure(s3.put_object().bucket("bkt").key("dir/hello.txt").if_none_match("*").body(body(b"x")).send().await).0, 412);
    assert_eq!(failure(s3.put_object().bucket("bkt").key("absent").if_match(etag).body(body(b"x")).send().await).0, 404);
    let swapped = s3.put_object().bucket("bkt").key("dir/hello.txt").if_match(etag).body(body(b"new")).send().await.unwrap();
    assert_eq!(failure(s3.delete_object().bucket("bkt").key("dir/hello.txt").if_match(etag).send().await).0, 412);
    s3.delete_object().bucket("bkt").key("dir/hello.txt").if_match(swapped.e_tag().unwrap()).send().await.unwrap();
    s3.delete_object().bucket("bkt").key("dir/hello.txt").send().await.unwrap();
    let unsupported = s3
        .put_object()
        .bucket("bkt")
        .key("k")
        .body(body(b"x"))
        .customize()
        .mutate_request(|request| {
            request.headers_mut().insert("if-unmodified-since", "Sat, 01 Jan 2000 00:00:00 GMT");
        })
        .send()
        .await;
    assert_eq!(failure(unsupported), (501, "NotImplemented".into()), "a condition s4 cannot evaluate is refused, never ignored");

    // Delete: BucketNotEmpty, idempotent deletes, DeleteObjects (quiet and not).
    for key in ["a", "b", "c"] {
        s3.put_object().bucket("bkt").key(key).body(body(key.as_bytes())).send().await.unwrap();
    }
    assert_eq!(failure(s3.delete_bucket().bucket("bkt").send().await), (409, "BucketNotEmpty".into()));
    let ids = |keys: &[&str]| {
        Delete::builder().set_objects(Some(keys.iter().map(|key| ObjectIdentifier::builder().key(*key).build().unwrap()).collect()))
    };
    let loud = s3.delete_objects().bucket("bkt").delete(ids(&["a", "zz"]).build().unwrap()).send().await.unwrap();
    assert_eq!(loud.deleted().len(), 2, "deleting a missing key counts as deleted");
    let quiet = s3.delete_objects().bucket("bkt").delete(ids(&["b", "c"]).quiet(true).build().unwrap()).send().await.unwrap();
    assert!(quiet.deleted().is_empty() && quiet.errors().is_empty());
    s3.delete_bucket().bucket("bkt").send().await.unwrap();
    assert_eq!(failure(s3.delete_bucket().bucket("bkt").send().await), (404, "NoSuchBucket".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_paginate_roll_up_and_url_encode() {
    let server = server().await;
    let s3 = client(&server);
    s3.create_bucket().bucket("lst").send().await.unwrap();
    let keys = ["a/1", "a/2", "b/1", "c", "d e", "f+g"];
    for key in keys {
        s3.put_object().bucket("lst").key(key).body(body(b".")).send().await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = s3.list_objects_v2().bucket("lst").max_keys(2).set_continuation_token(token).send().await.unwrap();
        seen.extend(page.contents().iter().map(|object| object.key().unwrap().to_string()));
        token = page.next_continuation_token().map(str::to_string);
        if !page.is_truncated().unwrap_or(false) {
            break;
        }
    }
    assert_eq!(seen, keys);
    let rolled = s3.list_objects_v2().bucket("lst").delimiter("/").send().await.unwrap();
    let prefixes: Vec<_> = rolled.common_prefixes().iter().map(|prefix| prefix.prefix().unwrap()).collect();
    assert_eq!(prefixes, ["a/", "b/"]);
    assert_eq!(rolled.contents().iter().map(|object| object.key().unwrap()).collect::<Vec<_>>(), ["c", "d e", "f+g"]);
    let after = s3.list_objects_v2().bucket("lst").start_after("c").prefix("").send().await.unwrap();
    assert_eq!(after.contents().len(), 2);
    let encoded = s3.list_objects_v2().bucket("lst").prefix("d").encoding_type(EncodingType::Url).send().await.unwrap();
    // The SDK hands url-encoded keys over as they came.
    assert_eq!(encoded.contents()[0].key(), Some("d%20e"));
    let v1 = s3.list_objects().bucket("lst").prefix("a/").marker("a/1").send().await.unwrap();
    assert_eq!(v1.contents().iter().map(|object| object.key().unwrap()).collect::<Vec<_>>(), ["a/2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_keep_or_replace_metadata_and_honour_conditions() {
    let server = server().await;
    let s3 = client(&server);
    s3.create_bucket().bucket("cpy").send().await.unwrap();
    let source = s3
        .put_object()
        .bucket("cpy")
        .key("src")
        .body(body(b"copy me"))
        .metadata("kind", "source")
        .content_type("a/b")
        .send()
        .await
        .unwrap();
    let copied = s3.copy_object().bucket("cpy").key("dst").copy_source("cpy/src").send().await.unwrap();
    assert_eq!(copied.copy_object_result().unwrap().e_tag(), source.e_tag());
    let head = s3.head_object().bucket("cpy").key("dst").send().await.unwrap();
    assert_eq!((head.metadata().unwrap().get("kind").map(String::as_str), head.content_type()), (Some("source"), Some("a/b")));
    s3.copy_object()
        .bucket("cpy")
        .key("replaced")
        .copy_source("cpy/src")
        .metadata_directive(MetadataDirective::Replace)
        .metadata("kind", "new")
        .send()
        .await
        .unwrap();
    let head = s3.head_object().bucket("cpy").key("replaced").send().await.unwrap();
    assert_eq!(head.metadata().unwrap().get("kind").map(String::as_str), Some("new"));
    assert_eq!(read(&s3, "cpy", "replaced").await, b"copy me");
    assert_eq!(failure(s3.copy_object().bucket("cpy").key("dst").copy_source("cpy/src").if_none_match("*").send().await).0, 412);
    assert_eq!(
        failure(s3.copy_object().bucket("cpy").key("x").copy_source("cpy/src").copy_source_if_match("\"nope\"").send().await).0,
        412
    );
    assert_eq!(failure(s3.copy_object().bucket("cpy").key("x").copy_source("cpy/missing").send().await), (404, "NoSuchKey".into()));
    assert_eq!(failure(s3.copy_object().bucket("cpy").key("src").copy_source("cpy/src").send().await), (400, "InvalidRequest".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_complete_copy_list_and_refuse_bad_parts() {
    let server = server().await;
    let s3 = client(&server);
    s3.create_bucket().bucket("mpu").send().await.unwrap();
    let first: Vec<u8> = (0..5 * MIB).map(|index| (index % 251) as u8).collect();
    s3.put_object().bucket("mpu").key("source").body(body(b"0123456789")).send().await.unwrap();

    let upload = s3.create_multipart_upload().bucket("mpu").key("big").content_type("x/y").send().await.unwrap();
    let id = upload.upload_id().unwrap().to_string();
    let part = |number: i32, bytes: Vec<u8>| {
        s3.upload_part().bucket("mpu").key("big").upload_id(&id).part_number(number).body(ByteStream::from(bytes)).send()
    };
    let one = part(1, first.clone()).await.unwrap();
    let two = s3
        .upload_part_copy()
        .bucket("mpu")
        .key("big")
        .upload_id(&id)
        .part_number(2)
        .copy_source("mpu/source")
        .copy_source_range("bytes=2-5")
        .send()
        .await
        .unwrap();
    let listed = s3.list_parts().bucket("mpu").key("big").upload_id(&id).send().await.unwrap();
    assert_eq!(
        listed.parts().iter().map(|part| (part.part_number().unwrap(), part.size().unwrap())).collect::<Vec<_>>(),
        [(1, 5 * MIB as i64), (2, 4)]
    );
    let uploads = s3.list_multipart_uploads().bucket("mpu").send().await.unwrap();
    assert_eq!(uploads.uploads().len(), 1);

    let completed = |parts: Vec<(i32, &str)>| {
        CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts.into_iter().map(|(number, etag)| CompletedPart::builder().part_number(number).e_tag(etag).build()).collect(),
            ))
            .build()
    };
    let two_etag = two.copy_part_result().unwrap().e_tag().unwrap().to_string();
    let complete = |parts| s3.complete_multipart_upload().bucket("mpu").key("big").upload_id(&id).multipart_upload(completed(parts)).send();
    assert_eq!(failure(complete(vec![(1, one.e_tag().unwrap()), (2, "\"bad\"")]).await), (400, "InvalidPart".into()));
    assert_eq!(failure(complete(vec![(2, &two_etag), (1, one.e_tag().unwrap())]).await), (400, "InvalidPartOrder".into()));
    let done = complete(vec![(1, one.e_tag().unwrap()), (2, &two_etag)]).await.unwrap();
    assert!(done.e_tag().unwrap().ends_with("-2\""), "{:?}", done.e_tag());
    let mut expected = first.clone();
    expected.extend_from_slice(b"2345");
    assert_eq!(read(&s3, "mpu", "big").await, expected);
    let head = s3.head_object().bucket("mpu").key("big").send().await.unwrap();
    assert_eq!((head.content_type(), head.e_tag()), (Some("x/y"), done.e_tag()));
    assert_eq!(failure(s3.list_parts().bucket("mpu").key("big").upload_id(&id).send().await), (404, "NoSuchUpload".into()));

    // A part below 5 MiB that is not the last one.
    let small = s3.create_multipart_upload().bucket("mpu").key("small").send().await.unwrap().upload_id().unwrap().to_string();
    let mut etags = Vec::new();
    for number in 1..=2 {
        let part =
            s3.upload_part().bucket("mpu").key("small").upload_id(&small).part_number(number).body(body(b"tiny")).send().await.unwrap();
        etags.push(part.e_tag().unwrap().to_string());
    }
    let parts = vec![(1, etags[0].as_str()), (2, etags[1].as_str())];
    let too_small =
        s3.complete_multipart_upload().bucket("mpu").key("small").upload_id(&small).multipart_upload(completed(parts)).send().await;
    assert_eq!(failure(too_small), (400, "EntityTooSmall".into()));
    // Create-only completion on an existing key.
    let only = vec![(1, etags[0].as_str())];
    let exists =
        s3.complete_multipart_upload().bucket("mpu").key("small").upload_id(&small).multipart_upload(completed(only.clone())).send().await;
    exists.unwrap();
    let again = s3.create_multipart_upload().bucket("mpu").key("small").send().await.unwrap().upload_id().unwrap().to_string();
    let tag = s3.upload_part().bucket("mpu").key("small").upload_id(&again).part_number(1).body(body(b"tiny")).send().await.unwrap();
    let refused = s3
        .complete_multipart_upload()
        .bucket("mpu")
        .key("small")
        .upload_id(&again)
        .if_none_match("*")
        .multipart_upload(completed(vec![(1, tag.e_tag().unwrap())]))
        .send()
        .await;
    assert_eq!(failure(refused).0, 412);
    s3.abort_multipart_upload().bucket("mpu").key("small").upload_id(&again).send().await.unwrap();
    assert_eq!(
        failure(s3.abort_multipart_upload().bucket("mpu").key("small").upload_id(&again).send().await),
        (404, "NoSuchUpload".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioning_delete_markers_and_lifecycle_configuration() {
    let server = server().await;
    let s3 = client(&server);
    s3.create_bucket().bucket("ver").send().await.unwrap();
    assert!(s3.get_bucket_versioning().bucket("ver").send().await.unwrap().status().is_none());
    let enable = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    s3.put_bucket_versioning().bucket("ver").versioning_configuration(enable).send().await.unwrap();
    assert_eq!(s3.get_bucket_versioning().bucket("ver").send().await.unwrap().status(), Some(&BucketVersioningStatus::Enabled));
    let one = s3.put_object().bucket("ver").key("k").body(body(b"one")).send().await.unwrap();
    let two = s3.put_object().bucket("ver").key("k").body(body(b"two")).send().await.unwrap();
    let (one_id, two_id) = (one.version_id().unwrap(), two.version_id().unwrap());
    let old = s3.get_object().bucket("ver").key("k").version_id(one_id).send().await.unwrap();
    assert_eq!(old.body.collect().await.unwrap().into_bytes().as_ref(), b"one");
    let deleted = s3.delete_object().bucket("ver").key("k").send().await.unwrap();
    assert_eq!(deleted.delete_marker(), Some(true));
    assert_eq!(failure(s3.get_object().bucket("ver").key("k").send().await), (404, "NoSuchKey".into()));
    let marker = deleted.version_id().unwrap();
    assert_eq!(failure(s3.head_object().bucket("ver").key("k").version_id(marker).send().await).0, 405);
    let versions = s3.list_object_versions().bucket("ver").send().await.unwrap();
    assert_eq!(versions.versions().iter().map(|version| version.version_id().unwrap()).collect::<Vec<_>>(), [two_id, one_id]);
    assert_eq!(versions.delete_markers().len(), 1);
    assert_eq!(versions.delete_markers()[0].is_latest(), Some(true));
    s3.delete_object().bucket("ver").key("k").version_id(marker).send().await.unwrap();
    assert_eq!(read(&s3, "ver", "k").await, b"two");
    assert_eq!(failure(s3.get_object().bucket("ver").key("k").version_id("00000000000000ff").send().await), (404, "NoSuchVersion".into()));

    let rule = LifecycleRule::builder()
        .id("logs")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("logs/").build())
        .expiration(LifecycleExpiration::builder().days(30).build())
        .noncurrent_version_expiration(NoncurrentVersionExpiration::builder().noncurrent_days(7).build())
        .abort_incomplete_multipart_upload(AbortIncompleteMultipartUpload::builder().days_after_initiation(2).build())
        .build()
        .unwrap();
    let configuration = BucketLifecycleConfiguration::builder().rules(rule).build().unwrap();
    s3.put_bucket_lifecycle_configuration().bucket("ver").lifecycle_configuration(configuration).send().await.unwrap();
    let stored = s3.get_bucket_lifecycle_configuration().bucket("ver").send().await.unwrap();
    let rule = &stored.rules()[0];
    assert_eq!((rule.id(), rule.expiration().and_then(|expiration| expiration.days())), (Some("logs"), Some(30)));
    assert_eq!(rule.noncurrent_version_expiration().and_then(|expiration| expiration.noncurrent_days()), Some(7));
    let transition = LifecycleRule::builder()
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .transitions(Transition::builder().days(1).storage_class(TransitionStorageClass::Glacier).build())
        .build()
        .unwrap();
    let refused = s3
        .put_bucket_lifecycle_configuration()
        .bucket("ver")
        .lifecycle_configuration(BucketLifecycleConfiguration::builder().rules(transition).build().unwrap())
        .send()
        .await;
    assert_eq!(failure(refused), (501, "NotImplemented".into()), "a rule s4 cannot apply is refused, not accepted and ignored");
    s3.delete_bucket_lifecycle().bucket("ver").send().await.unwrap();
    assert_eq!(failure(s3.get_bucket_lifecycle_configuration().bucket("ver").send().await), (404, "NoSuchLifecycleConfiguration".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_presigned_urls_and_clock_skew() {
    let server = server().await;
    let s3 = client(&server);
    s3.create_bucket().bucket("sig").send().await.unwrap();
    s3.put_object().bucket("sig").key("k").body(body(b"signed")).send().await.unwrap();
    let wrong = client_with(&server.endpoint, "not-the-secret", None);
    assert_eq!(failure(wrong.get_object().bucket("sig").key("k").send().await), (403, "SignatureDoesNotMatch".into()));
    let skewed = client_with(&server.endpoint, SECRET, Some(Duration::from_secs(3600)));
    assert_eq!(failure(skewed.get_object().bucket("sig").key("k").send().await), (403, "RequestTimeTooSkewed".into()));

    let presigned =
        s3.get_object().bucket("sig").key("k").presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap()).await.unwrap();
    let (status, text) =
        raw(&server, &format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", path_of(presigned.uri()), host(&server)), b"")
            .await;
    assert!(status == 200 && text.ends_with("signed"), "presigned GET: {status} {text}");
    let expired = PresigningConfig::builder()
        .start_time(SystemTime::now() - Duration::from_secs(3600))
        .expires_in(Duration::from_secs(60))
        .build()
        .unwrap();
    let presigned = s3.get_object().bucket("sig").key("k").presigned(expired).await.unwrap();
    let (status, text) =
        raw(&server, &format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", path_of(presigned.uri()), host(&server)), b"")
            .await;
    assert!(status == 403 && text.contains("AccessDenied"), "expired presign: {status} {text}");
}

fn host(server: &Server) -> &str {
    server.endpoint.trim_start_matches("http://")
}

fn path_of(uri: &str) -> &str {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    &rest[rest.find('/').unwrap_or(rest.len())..]
}

/// Sends raw bytes, returns the status and the response text (the connection is closed
/// by the server or after the read timeout).
async fn raw(server: &Server, head: &str, payload: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(host(server)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(payload).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.split(' ').nth(1).and_then(|status| status.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_s3_errors_and_leaves_nothing_half_written() {
    let server = server().await;
    let s3 = client(&server);
    s3.create_bucket().bucket("bad").send().await.unwrap();
    // Oversized body.
    let big = vec![0u8; UPLOAD_MAX as usize + 1];
    assert_eq!(failure(s3.put_object().bucket("bad").key("big").body(ByteStream::from(big)).send().await), (400, "EntityTooLarge".into()));
    // Invalid key name.
    let long = "k".repeat(1025);
    assert_eq!(failure(s3.put_object().bucket("bad").key(&long).body(body(b".")).send().await).1, "KeyTooLongError");
    // Wrong Content-MD5.
    let digest = s3.put_object().bucket("bad").key("md5").content_md5("1B2M2Y8AsgTpgAmY7PhCfg==").body(body(b"not empty")).send().await;
    assert_eq!(failure(digest).1, "BadDigest");
    // Malformed XML in a signed request.
    let malformed = s3
        .put_bucket_versioning()
        .bucket("bad")
        .versioning_configuration(VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build())
        .customize()
        .mutate_request(|request| {
            let garbage = b"<VersioningConfiguration><Status>Enabled</Sta".to_vec();
            request.headers_mut().insert("content-length", garbage.len().to_string());
            request.headers_mut().remove("content-md5");
            *request.body_mut() = aws_sdk_s3::primitives::SdkBody::from(garbage);
        })
        .send()
        .await;
    assert_eq!(failure(malformed), (400, "MalformedXML".into()));
    // A truncated upload and a client that disconnects mid-body (presigned, so raw HTTP
    // can carry it): nothing becomes visible.
    for (key, declared, sent) in [("truncated", 100_000usize, 1_000usize), ("disconnected", 2 * MIB, 64 * 1024)] {
        let presigned = s3
            .put_object()
            .bucket("bad")
            .key(key)
            .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
            .await
            .unwrap();
        let head = format!("PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {declared}\r\n\r\n", path_of(presigned.uri()), host(&server));
        let mut stream = tokio::net::TcpStream::connect(host(&server)).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&vec![b'z'; sent]).await.unwrap();
        stream.shutdown().await.unwrap();
        drop(stream);
    }
    // The control: the same raw presigned PUT, whole, does land.
    let presigned = s3
        .put_object()
        .bucket("bad")
        .key("whole")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n",
        path_of(presigned.uri()),
        host(&server)
    );
    let (status, text) = raw(&server, &head, &[b'z'; 1000]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(read(&s3, "bad", "whole").await, vec![b'z'; 1000]);
    s3.delete_object().bucket("bad").key("whole").send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for key in ["truncated", "disconnected", "big", "md5"] {
        assert_eq!(failure(s3.head_object().bucket("bad").key(key).send().await).0, 404, "{key} must not exist");
    }
    let listed = s3.list_objects_v2().bucket("bad").send().await.unwrap();
    assert!(listed.contents().is_empty(), "nothing half-written is listed");
    // And the server keeps serving.
    s3.put_object().bucket("bad").key("after").body(body(b"fine")).send().await.unwrap();
    assert_eq!(read(&s3, "bad", "after").await, b"fine");
}

/// DeleteObjects of many keys is a few durable commits, not one per key (t4's GC sends
/// 1,000 keys a request; one after another they took ~1.9 s and held up every PUT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_objects_commits_its_keys_together() {
    let server = server().await;
    let s3 = client(&server);
    s3.create_bucket().bucket("many").send().await.unwrap();
    let keys: Vec<String> = (0..300).map(|index| format!("k{index:03}")).collect();
    for key in &keys {
        s3.put_object().bucket("many").key(key).body(body(key.as_bytes())).send().await.unwrap();
    }
    let batches = || async {
        let (_, text) = raw(&server, &format!("GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", host(&server)), b"").await;
        let line = text.lines().find(|line| line.starts_with("s4_commit_batches_total ")).expect("s4_commit_batches_total");
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    let before = batches().await;
    let ids = keys.iter().map(|key| ObjectIdentifier::builder().key(key).build().unwrap()).collect();
    let output = s3.delete_objects().bucket("many").delete(Delete::builder().set_objects(Some(ids)).build().unwrap()).send().await.unwrap();
    let deleted: Vec<&str> = output.deleted().iter().filter_map(|deleted| deleted.key()).collect();
    assert_eq!(deleted, keys.iter().map(String::as_str).collect::<Vec<_>>(), "answered in the request's order");
    let commits = batches().await - before;
    assert!(commits <= 10, "300 deletes took {commits} commits");
    assert_eq!(s3.list_objects_v2().bucket("many").send().await.unwrap().key_count(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_answer_unsigned_gets() {
    let server = server().await;
    let s3 = client(&server);
    s3.create_bucket().bucket("health").send().await.unwrap();
    s3.put_object().bucket("health").key("k").body(body(b".")).send().await.unwrap();
    let (status, text) = raw(&server, &format!("GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", host(&server)), b"").await;
    assert!(status == 200 && text.ends_with("ok\n"), "{text}");
    let (status, text) = raw(&server, &format!("GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", host(&server)), b"").await;
    assert_eq!(status, 200);
    assert!(text.contains("s4_responses_total{method=\"PUT\",status=\"2xx\"} 2"), "{text}");
    let metric = |name: &str| -> u64 {
        let line = text.lines().find(|line| line.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name} in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // CreateBucket and PutObject, one after the other: two commits, each its own batch.
    assert_eq!((metric("s4_commits_total"), metric("s4_commit_batches_total")), (2, 2), "{text}");
    assert_eq!(metric("s4_bodies"), 1);
    // A signed request for the bucket named `health` is still S3.
    let listed = s3.list_objects_v2().bucket("health").send().await.unwrap();
    assert_eq!(listed.contents().len(), 1);
}

/// Bodies are buffered whole (streaming is not built): the bytes held at once are bounded,
/// a body that does not fit the bound is refused, and uploads that together pass it wait
/// their turn instead of growing memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_bodies_are_bounded_in_bytes_across_requests() {
    let server = server_adjusted(|settings| settings.buffered_bytes_max = 1 << 20).await;
    let s3 = client(&server);
    s3.create_bucket().bucket("buffers").send().await.unwrap();
    tracing::info!("--- a body larger than the whole bound, of declared length, is streamed to disk and stored");
    let big: Vec<u8> = (0..3 << 20).map(|index| (index % 241) as u8).collect();
    s3.put_object().bucket("buffers").key("big").body(ByteStream::from(big.clone())).send().await.unwrap();
    assert_eq!(read(&s3, "buffers", "big").await, big);
    tracing::info!("--- one of no declared length must be read whole: past the bound it is refused");
    let presigned = s3
        .put_object()
        .bucket("buffers")
        .key("unsized")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        path_of(presigned.uri()),
        host(&server)
    );
    let mut chunked = Vec::new();
    for _ in 0..40 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 << 10).as_bytes());
        chunked.extend_from_slice(&[5u8; 64 << 10]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    // Read while writing: s4 answers before the body ends, and closing on unread bytes
    // resets the connection, which would drop an answer not yet read.
    let mut stream = tokio::net::TcpStream::connect(host(&server)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sending = tokio::spawn(async move {
        let _ = writer.write_all(&chunked).await;
    });
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut response)).await;
    sending.abort();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 400") && text.contains("EntityTooLarge"), "{text}");
    tracing::info!("--- four bodies of 700 KiB at once: each waits for room, all are stored");
    let puts = (0..4).map(|i| {
        let s3 = s3.clone();
        async move { s3.put_object().bucket("buffers").key(format!("k{i}")).body(ByteStream::from(vec![i as u8; 700 << 10])).send().await }
    });
    for outcome in futures::future::join_all(puts).await {
        outcome.unwrap();
    }
    for i in 0..4u8 {
        let body = s3.get_object().bucket("buffers").key(format!("k{i}")).send().await.unwrap().body.collect().await.unwrap().into_bytes();
        assert_eq!((body.len(), body[0]), (700 << 10, i));
    }
}

/// XML bodies no parser should choke on: truncated, wrongly rooted, not UTF-8, nested a
/// hundred thousand deep, entity expansion ("billion laughs"), and far more objects than a
/// DeleteObjects may name. Each gets a 4xx S3 error from every operation that reads XML,
/// nothing changes, and the server goes on serving (docs/robustness.md "Hostile input").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_xml_bodies_get_s3_errors_from_every_xml_operation() {
    let server = server().await;
    let s3 = client(&server);
    s3.create_bucket().bucket("xml").send().await.unwrap();
    s3.put_object().bucket("xml").key("kept").body(body(b"kept")).send().await.unwrap();
    let upload = s3.create_multipart_upload().bucket("xml").key("mpu").send().await.unwrap();
    let upload_id = upload.upload_id().unwrap().to_string();
    let laughs = {
        let mut doctype = String::from("<!DOCTYPE v [<!ENTITY a0 \"lol\">");
        for level in 1..10 {
            let refs = format!("&a{};", level - 1).repeat(10);
            doctype.push_str(&format!("<!ENTITY a{level} \"{refs}\">"));
        }
        format!("<?xml version=\"1.0\"?>{doctype}]><VersioningConfiguration><Status>&a9;</Status></VersioningConfiguration>")
    };
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", b"<VersioningConfiguration><Status>Enab".to_vec()),
        ("wrong root", b"<Nonsense><Status>Enabled</Status></Nonsense>".to_vec()),
        (
            "not UTF-8",
            [&b"<VersioningConfiguration><Status>"[..], &[0xff, 0xfe, 0xc3, 0x28], b"</Status></VersioningConfiguration>"].concat(),
        ),
        ("nested 100,000 deep", format!("<Delete>{}{}</Delete>", "<Object>".repeat(100_000), "</Object>".repeat(100_000)).into_bytes()),
        ("billion laughs", laughs.into_bytes()),
        ("200,000 objects", format!("<Delete>{}</Delete>", "<Object><Key>kept</Key></Object>".repeat(200_000)).into_bytes()),
    ];
    for (name, garbage) in &bodies {
        tracing::info!("--- {name} ({} bytes)", garbage.len());
        let garbage = Arc::new(garbage.clone());
        let replace = move |request: &mut aws_sdk_s3::config::http::HttpRequest| {
            request.headers_mut().insert("content-length", garbage.len().to_string());
            for header in ["content-md5", "x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-sdk-checksum-algorithm", "x-amz-trailer"]
            {
                request.headers_mut().remove(header);
            }
            *request.body_mut() = aws_sdk_s3::primitives::SdkBody::from(garbage.as_ref().clone());
        };
        let versioning = s3
            .put_bucket_versioning()
            .bucket("xml")
            .versioning_configuration(VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build())
            .customize()
            .mutate_request(replace.clone())
            .send()
            .await;
        let object = ObjectIdentifier::builder().key("kept").build().unwrap();
        let delete = s3
            .delete_objects()
            .bucket("xml")
            .delete(Delete::builder().objects(object).build().unwrap())
            .customize()
            .mutate_request(replace.clone())
            .send()
            .await;
        let part = CompletedPart::builder().part_number(1).e_tag("\"e\"").build();
        let complete = s3
            .complete_multipart_upload()
            .bucket("xml")
            .key("mpu")
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().parts(part).build())
            .customize()
            .mutate_request(replace.clone())
            .send()
            .await;
        let rule = LifecycleRule::builder()
            .id("r")
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .expiration(LifecycleExpiration::builder().days(1).build())
            .build()
            .unwrap();
        let lifecycle = s3
            .put_bucket_lifecycle_configuration()
            .bucket("xml")
            .lifecycle_configuration(BucketLifecycleConfiguration::builder().rules(rule).build().unwrap())
            .customize()
            .mutate_request(replace)
            .send()
            .await;
        for (operation, (status, code)) in [
            ("PutBucketVersioning", failure(versioning)),
            ("DeleteObjects", failure(delete)),
            ("CompleteMultipartUpload", failure(complete)),
            ("PutBucketLifecycleConfiguration", failure(lifecycle)),
        ] {
            eprintln!("{operation} with {name}: {status} {code}");
            assert!((400..500).contains(&status) && !code.is_empty(), "{operation} with {name}: {status} {code}");
        }
    }
    tracing::info!("--- nothing changed, and the server serves");
    let versioning = s3.get_bucket_versioning().bucket("xml").send().await.unwrap();
    assert_eq!(versioning.status(), None, "versioning was never turned on");
    assert_eq!(read(&s3, "xml", "kept").await, b"kept");
    let uploads = s3.list_multipart_uploads().bucket("xml").send().await.unwrap();
    assert_eq!(uploads.uploads().len(), 1, "the upload is still open");
    s3.put_object().bucket("xml").key("after").body(body(b"fine")).send().await.unwrap();
    assert_eq!(read(&s3, "xml", "after").await, b"fine");
}

/// Keys that look like paths out of the data directory (`..`, encoded `..`, absolute
/// paths, backslashes, NUL-free control bytes) are keys: each is stored and read back under
/// its own name, listed as such, and no file appears outside s4's data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_look_like_paths_stay_keys() {
    let outside = tempfile::tempdir().unwrap();
    let data = outside.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let clock = Arc::new(RealClock::new());
    let engine = Engine::open(Arc::new(OsDisk::new(data.clone())), clock.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, engine, clock, ServeSettings::new(ACCESS.into(), SECRET.into(), UPLOAD_MAX), async move {
        let _ = stopped.await;
    }));
    let s3 = client_with(&endpoint, SECRET, None);
    s3.create_bucket().bucket("paths").send().await.unwrap();
    let keys = [
        "../escaped",
        "../../../../../../tmp/escaped",
        "a/../../escaped",
        "%2e%2e/%2e%2e/escaped",
        "/etc/passwd",
        "..\\..\\escaped",
        "./.././escaped",
        "volumes/00000001.vol",
        "meta.redb",
    ];
    for (index, key) in keys.iter().enumerate() {
        let body = format!("body {index}");
        s3.put_object().bucket("paths").key(*key).body(ByteStream::from(body.clone().into_bytes())).send().await.unwrap();
        assert_eq!(read(&s3, "paths", key).await, body.as_bytes(), "{key} reads back as itself");
    }
    let listed = s3.list_objects_v2().bucket("paths").send().await.unwrap();
    let mut names: Vec<&str> = listed.contents().iter().filter_map(|object| object.key()).collect();
    names.sort_unstable();
    let mut expected = keys.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected, "every key listed under its own name");
    // Nothing beside the data directory; inside it, only s4's own files.
    let beside: Vec<_> = std::fs::read_dir(outside.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("data")]);
    assert!(!std::path::Path::new("/tmp/escaped").exists());
    let mut inside: Vec<String> =
        std::fs::read_dir(&data).unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap()).collect();
    inside.sort_unstable();
    assert!(inside.contains(&"meta.redb".to_string()) && inside.contains(&"volumes".to_string()), "{inside:?}");
    assert!(inside.iter().all(|name| ["meta.redb", "volumes", "LOCK", ".lock"].contains(&name.as_str())), "{inside:?}");
    let _ = stop.send(());
}
