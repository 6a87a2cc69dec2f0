//! The S3 ObjectStore: any S3-compatible server (s4, AWS S3) through `aws-sdk-s3`.
//!
//! The SDK's own retries are off: a conditional PUT retried blindly after a lost answer
//! would report 412 for its own successful write. Failures are typed instead: a request
//! that may have reached the server and committed is [`ObjectError::Ambiguous`], and the
//! caller resolves it by reading back (docs/design.md §2). Keys are stored under `prefix`.

use async_trait::async_trait;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::credentials::{self, S3Credentials};
use t4_env::{Condition, ObjectError, ObjectInfo, ObjectStore, PutOutcome};

/// The SDK's TLS layer panics on a certificate it cannot parse; refuse one up front.
fn check_certificates(pem: &[u8]) -> Result<(), ObjectError> {
    use rustls_pki_types::pem::PemObject;
    let certificates = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ObjectError::Other(format!("CA certificate: {error}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate).map_err(|error| ObjectError::Other(format!("CA certificate: {error}")))?;
    }
    if roots.is_empty() {
        return Err(ObjectError::Other("CA certificate: the PEM holds no certificate".into()));
    }
    Ok(())
}

/// Where the bucket is and how to sign.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `http://127.0.0.1:9000` for s4; `None` for AWS's endpoint of `region`.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Prepended to every key (`t4/` style); may be empty.
    pub prefix: String,
    pub credentials: S3Credentials,
    /// An extra CA certificate (PEM) to trust for an `https://` endpoint, besides the
    /// system's roots: for an s4 with a private certificate.
    pub ca_certificate_pem: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct S3ObjectStore {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3ObjectStore {
    /// Fails on a `ca_certificate_pem` that holds no valid certificate, and when the
    /// credential chain finds no credentials (it is asked once here).
    pub async fn connect(config: S3Config) -> Result<Self, ObjectError> {
        let plain_http = config.endpoint.as_deref().is_some_and(|endpoint| endpoint.starts_with("http://"));
        let http_client = if plain_http {
            aws_smithy_http_client::Builder::new().build_http()
        } else {
            use aws_smithy_http_client::tls;
            let mut trust = tls::TrustStore::default();
            if let Some(pem) = config.ca_certificate_pem {
                check_certificates(&pem)?;
                trust = trust.with_pem_certificate(pem);
            }
            let context =
                tls::TlsContext::builder().with_trust_store(trust).build().expect("a TLS context from a trust store always builds");
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
                .tls_context(context)
                .build_https()
        };
        let region = Region::new(config.region);
        let credentials = credentials::provider(config.credentials, region.clone(), http_client.clone()).await?;
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region)
            .credentials_provider(credentials)
            .http_client(http_client)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .force_path_style(true);
        if let Some(endpoint) = config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Self { client: Client::from_conf(builder.build()), bucket: config.bucket, prefix: config.prefix })
    }

    /// The SDK client (for tools and tests that need more than the ObjectStore calls).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// Whether a request may have been applied: anything past "could not send".
enum Effect {
    Read,
    Write,
}

fn classify<E>(error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>, key: &str, effect: Effect) -> ObjectError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = match &error {
        SdkError::ServiceError(service) => Some(service_status(service.raw())),
        _ => None,
    };
    let code = match &error {
        SdkError::ServiceError(service) => service.err().code().map(str::to_string),
        _ => None,
    };
    match (status, code.as_deref()) {
        (Some(412), _) | (_, Some("PreconditionFailed")) => ObjectError::PreconditionFailed(key.to_string()),
        (Some(409), _) | (_, Some("ConditionalRequestConflict")) => ObjectError::Conflict(key.to_string()),
        (Some(404), _) | (_, Some("NoSuchKey")) | (_, Some("NotFound")) => ObjectError::NotFound(key.to_string()),
        (Some(503), _) | (_, Some("SlowDown")) => ObjectError::SlowDown,
        // A 500 on a write may have committed first; a 4xx was refused.
        (Some(status), _) if status >= 500 && matches!(effect, Effect::Write) => {
            ObjectError::Ambiguous(key.to_string(), format!("HTTP {status}: {}", code.unwrap_or_default()))
        }
        (Some(status), _) if (400..500).contains(&status) => {
            ObjectError::Refused(format!("{key}: HTTP {status} {}", code.unwrap_or_default()))
        }
        (Some(status), _) => ObjectError::Other(format!("{key}: HTTP {status} {}", code.unwrap_or_default())),
        (None, _) => match (&error, effect) {
            // Never sent: safe to retry.
            (SdkError::ConstructionFailure(_) | SdkError::DispatchFailure(_), _) | (_, Effect::Read) => {
                ObjectError::Other(format!("{key}: {}", aws_sdk_s3::error::DisplayErrorContext(&error)))
            }
            _ => ObjectError::Ambiguous(key.to_string(), aws_sdk_s3::error::DisplayErrorContext(&error).to_string()),
        },
    }
}

fn service_status(raw: &aws_sdk_s3::config::http::HttpResponse) -> u16 {
    raw.status().as_u16()
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn get(&self, key: &str) -> Result<(Bytes, String), ObjectError> {
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|error| classify(error, key, Effect::Read))?;
        let etag = output.e_tag.clone().unwrap_or_default();
        let body = output.body.collect().await.map_err(|error| ObjectError::Other(format!("{key}: reading the body: {error}")))?;
        Ok((body.into_bytes(), etag))
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, ObjectError> {
        if start >= end {
            return Ok(Bytes::new());
        }
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .range(format!("bytes={start}-{}", end - 1))
            .send()
            .await
            .map_err(|error| classify(error, key, Effect::Read))?;
        let body = output.body.collect().await.map_err(|error| ObjectError::Other(format!("{key}: reading the body: {error}")))?;
        Ok(body.into_bytes())
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        let output = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|error| classify(error, key, Effect::Read))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: output.content_length.unwrap_or(0).max(0) as u64,
            etag: output.e_tag.unwrap_or_default(),
        })
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<ObjectInfo>, ObjectError> {
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        while listed.len() < limit {
            let mut request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full(prefix))
                .max_keys((limit - listed.len()).min(1000) as i32);
            request = match &token {
                Some(token) => request.continuation_token(token),
                None => request.set_start_after(start_after.map(|after| self.full(after))),
            };
            let output = request.send().await.map_err(|error| classify(error, prefix, Effect::Read))?;
            for object in output.contents.unwrap_or_default() {
                let key = object.key.unwrap_or_default();
                let key = key.strip_prefix(&self.prefix).unwrap_or(&key).to_string();
                listed.push(ObjectInfo { key, size: object.size.unwrap_or(0).max(0) as u64, etag: object.e_tag.unwrap_or_default() });
            }
            token = output.next_continuation_token.filter(|_| output.is_truncated.unwrap_or(false));
            if token.is_none() {
                break;
            }
        }
        listed.truncate(limit);
        Ok(listed)
    }

    async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<PutOutcome, ObjectError> {
        let mut request = self.client.put_object().bucket(&self.bucket).key(self.full(key)).body(ByteStream::from(body));
        request = match condition {
            Condition::Always => request,
            Condition::IfNoneMatch => request.if_none_match("*"),
            Condition::IfMatch(etag) => request.if_match(etag),
        };
        let output = request.send().await.map_err(|error| classify(error, key, Effect::Write))?;
        Ok(PutOutcome { etag: output.e_tag.unwrap_or_default() })
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), ObjectError> {
        let request = self.client.delete_object().bucket(&self.bucket).key(self.full(key)).set_if_match(if_match.map(str::to_string));
        request.send().await.map_err(|error| classify(error, key, Effect::Write))?;
        Ok(())
    }

    /// One DeleteObjects request (quiet: only failures are listed). A key S3 could not
    /// delete fails the call, naming the first such key and its error code.
    async fn delete_many(&self, keys: &[String]) -> Result<(), ObjectError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let Some(first) = keys.first() else { return Ok(()) };
        let objects = keys
            .iter()
            .map(|key| ObjectIdentifier::builder().key(self.full(key)).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| ObjectError::Refused(format!("{first}: {error}")))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|error| ObjectError::Refused(format!("{first}: {error}")))?;
        let output = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|error| classify(error, first, Effect::Write))?;
        match output.errors().iter().find(|failed| failed.code() != Some("NoSuchKey")) {
            None => Ok(()),
            Some(failed) => {
                let (key, code) = (failed.key().unwrap_or_default(), failed.code().unwrap_or_default());
                let what = format!("{key}: DeleteObjects: {code} {}", failed.message().unwrap_or_default());
                Err(match code {
                    "SlowDown" | "InternalError" | "ServiceUnavailable" => ObjectError::Other(what),
                    _ => ObjectError::Refused(what),
                })
            }
        }
    }
}
