//! The S3 API over [`Engine`], through the s3s crate (which handles HTTP, XML, SigV4,
//! presigned URLs and aws-chunked bodies). Each method maps S3 inputs to engine calls and
//! engine errors to S3's error codes.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result, S3};

use super::engine::{self, Engine, EngineError, Failure, ObjectInfo, StoredBody, Versioning, WriteCondition, NULL_VERSION};

/// Keys returned by one listing at most (S3's limit).
const LIST_KEYS_MAX: usize = 1000;

#[derive(Debug, Clone)]
pub struct S4 {
    engine: Engine,
    upload_bytes_max: u64,
    /// Request bodies held in memory: small bodies and bodies of no declared length whole,
    /// streamed ones a piece at a time; at most this many KiB at once, across every request.
    buffers: std::sync::Arc<tokio::sync::Semaphore>,
    buffered_kib_max: u32,
}

/// How long a body waits for room among the buffered bytes before s4 answers SlowDown.
const BUFFER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Room taken by one buffered body; given back when the request is done with it.
type BufferRoom = Vec<tokio::sync::OwnedSemaphorePermit>;

impl S4 {
    /// `buffered_bytes_max` bounds the bodies held in memory at once (`--max-buffered-bytes`);
    /// a body read whole (one of no declared length) may not be larger.
    pub fn new(engine: Engine, upload_bytes_max: u64, buffered_bytes_max: u64) -> Self {
        let buffered_kib_max = (buffered_bytes_max >> 10).clamp(1, u64::from(u32::MAX >> 4)) as u32;
        let buffers = std::sync::Arc::new(tokio::sync::Semaphore::new(buffered_kib_max as usize));
        Self { engine, upload_bytes_max, buffers, buffered_kib_max }
    }

    /// Room for `bytes` more buffered bytes: waits up to [`BUFFER_WAIT`] for it, then
    /// answers SlowDown (503), as S3 does when it is overloaded.
    async fn buffer_room(&self, bytes: u64) -> S3Result<tokio::sync::OwnedSemaphorePermit> {
        self.buffer_room_kib(bytes.div_ceil(1024)).await
    }

    async fn buffer_room_kib(&self, kib: u64) -> S3Result<tokio::sync::OwnedSemaphorePermit> {
        let kib = kib.min(u64::from(self.buffered_kib_max)) as u32;
        match tokio::time::timeout(BUFFER_WAIT, self.buffers.clone().acquire_many_owned(kib)).await {
            Ok(permit) => Ok(permit.expect("the semaphore is never closed")),
            Err(_) => Err(s3_error!(SlowDown, "Please reduce your request rate.")),
        }
    }
}

fn s3_error_of(error: EngineError) -> S3Error {
    match error {
        EngineError::NoSuchBucket => s3_error!(NoSuchBucket),
        EngineError::BucketAlreadyOwnedByYou => s3_error!(BucketAlreadyOwnedByYou),
        EngineError::BucketNotEmpty => s3_error!(BucketNotEmpty),
        EngineError::NoSuchKey => s3_error!(NoSuchKey),
        EngineError::NoSuchVersion => s3_error!(NoSuchVersion),
        EngineError::NoSuchUpload => s3_error!(NoSuchUpload),
        EngineError::PreconditionFailed => s3_error!(PreconditionFailed),
        EngineError::InvalidPart => s3_error!(InvalidPart),
        EngineError::InvalidPartOrder => s3_error!(InvalidPartOrder),
        EngineError::EntityTooSmall => s3_error!(EntityTooSmall),
        EngineError::MethodNotAllowed => s3_error!(MethodNotAllowed),
        EngineError::InvalidArgument(message) => s3_error!(InvalidArgument, "{message}"),
        EngineError::Failed(Failure::Storage(message) | Failure::Corrupt(message)) => s3_error!(InternalError, "{message}"),
    }
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

fn etag(info: &ObjectInfo) -> ETag {
    ETag::Strong(info.etag.trim_matches('"').to_string())
}

/// The `x-amz-version-id` to send: none for objects written without versioning.
fn version_of(info: &ObjectInfo) -> Option<String> {
    (info.version_id != NULL_VERSION).then(|| info.version_id.clone())
}

fn header<'a>(headers: &'a hyper::HeaderMap, name: &str) -> S3Result<Option<&'a str>> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value.to_str().map(Some).map_err(|_| s3_error!(InvalidArgument, "header {name} is not valid text")),
    }
}

/// The precondition of a write, from its headers. `If-None-Match: *` and a single `If-Match`
/// are evaluated atomically with the write; anything else conditional is refused with 501,
/// never silently ignored.
fn write_condition(headers: &hyper::HeaderMap) -> S3Result<WriteCondition> {
    for unsupported in ["if-modified-since", "if-unmodified-since", "x-amz-if-match-last-modified-time", "x-amz-if-match-size"] {
        if headers.contains_key(unsupported) {
            return Err(s3_error!(NotImplemented, "s4 does not evaluate {unsupported} on writes"));
        }
    }
    match (header(headers, "if-match")?, header(headers, "if-none-match")?) {
        (None, None) => Ok(WriteCondition::None),
        (None, Some("*")) => Ok(WriteCondition::IfNoneMatch),
        (Some(tag), None) if tag.trim() == "*" => Ok(WriteCondition::IfMatch("*".into())),
        (Some(tag), None) if !tag.contains(',') => Ok(WriteCondition::IfMatch(format!("\"{}\"", tag.trim().trim_matches('"')))),
        _ => Err(s3_error!(NotImplemented, "s4 supports If-None-Match: * or a single If-Match on writes")),
    }
}

/// Whether `condition` (from If-Match / If-None-Match on a read) matches the object.
fn matches(condition: &ETagCondition, info: &ObjectInfo) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(tag) => tag.value() == info.etag.trim_matches('"'),
    }
}

fn seconds(at: &Timestamp) -> i64 {
    let at: time::OffsetDateTime = at.clone().into();
    at.unix_timestamp()
}

/// Read preconditions (RFC 9110 order): If-Match, else If-Unmodified-Since -> 412;
/// If-None-Match, else If-Modified-Since -> 304.
fn check_read(
    info: &ObjectInfo,
    if_match: Option<&ETagCondition>,
    if_unmodified_since: Option<&Timestamp>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let modified = (info.last_modified_ms / 1000) as i64;
    match if_match {
        Some(condition) if !matches(condition, info) => return Err(s3_error!(PreconditionFailed)),
        Some(_) => {}
        None => {
            if if_unmodified_since.is_some_and(|since| modified > seconds(since)) {
                return Err(s3_error!(PreconditionFailed));
            }
        }
    }
    match if_none_match {
        Some(condition) if matches(condition, info) => return Err(s3_error!(NotModified)),
        Some(_) => {}
        None => {
            if if_modified_since.is_some_and(|since| modified <= seconds(since)) {
                return Err(s3_error!(NotModified));
            }
        }
    }
    Ok(())
}

/// The same for a copy source (`x-amz-copy-source-if-*`): every failure is 412.
fn check_copy_source(
    info: &ObjectInfo,
    if_match: Option<&ETagCondition>,
    if_unmodified_since: Option<&Timestamp>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
) -> S3Result<()> {
    check_read(info, if_match, if_unmodified_since, if_none_match, if_modified_since).map_err(|error| {
        if *error.code() == s3s::S3ErrorCode::NotModified {
            s3_error!(PreconditionFailed)
        } else {
            error
        }
    })
}

fn metadata_of(metadata: Option<Metadata>) -> BTreeMap<String, String> {
    metadata.unwrap_or_default().into_iter().collect()
}

fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() || key.len() > 1024 {
        return Err(s3_error!(KeyTooLongError, "object keys are 1 to 1024 bytes"));
    }
    Ok(())
}

/// Bodies declared larger than this are written into their volume as they arrive; smaller
/// ones, and bodies of no declared length, are read whole first (one write, one hash pass).
const STREAMED_BODY_MIN: u64 = 1 << 20;
/// What a streamed body holds in memory at once: pieces are gathered up to this, then written.
const STREAMED_PIECE_BYTES: usize = 1 << 20;

impl S4 {
    /// Stores a request's body in a volume, checked against its Content-MD5.
    async fn store_body(
        &self,
        body: Option<StreamingBlob>,
        limit: u64,
        declared: Option<i64>,
        content_md5: Option<&String>,
    ) -> S3Result<StoredBody> {
        let declared_len = declared.and_then(|length| u64::try_from(length).ok()).filter(|length| *length <= limit);
        let stored = match (body, declared_len) {
            (Some(body), Some(len)) if len > STREAMED_BODY_MIN => self.stream_body(body, len).await?,
            (body, _) => {
                let limit = limit.min(u64::from(self.buffered_kib_max) << 10);
                let (bytes, _room) = self.collect_body(body, limit, declared).await?;
                self.engine.store_body(bytes).await.map_err(s3_error_of)?
            }
        };
        if content_md5.is_some_and(|expected| *expected != base64_encode(&stored.md5())) {
            return Err(s3_error!(BadDigest));
        }
        Ok(stored)
    }

    /// A body of declared length `len`, written into its volume piece by piece as it
    /// arrives; it holds [`STREAMED_PIECE_BYTES`] of the buffer room, whatever its size.
    async fn stream_body(&self, mut body: StreamingBlob, len: u64) -> S3Result<StoredBody> {
        let _room = self.buffer_room(STREAMED_PIECE_BYTES as u64).await?;
        let mut upload = self.engine.start_body(len).map_err(s3_error_of)?;
        let mut piece = BytesMut::with_capacity(STREAMED_PIECE_BYTES);
        let mut total = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| s3_error!(IncompleteBody, "{error}"))?;
            total += chunk.len() as u64;
            if total > len {
                return Err(s3_error!(IncompleteBody, "the body is longer than its Content-Length"));
            }
            piece.extend_from_slice(&chunk);
            if piece.len() >= STREAMED_PIECE_BYTES {
                upload.write(piece.split().freeze()).await.map_err(s3_error_of)?;
            }
        }
        if total < len {
            return Err(s3_error!(IncompleteBody, "You did not provide the number of bytes specified by the Content-Length HTTP header."));
        }
        if !piece.is_empty() {
            upload.write(piece.freeze()).await.map_err(s3_error_of)?;
        }
        upload.finish().await.map_err(s3_error_of)
    }

    /// The whole body, with the buffer room it holds: all of it up front for the length the
    /// request declares (so two bodies never each hold half of what both need), else chunk
    /// by chunk as it arrives.
    async fn collect_body(&self, body: Option<StreamingBlob>, limit: u64, declared: Option<i64>) -> S3Result<(Bytes, BufferRoom)> {
        let Some(mut body) = body else { return Ok((Bytes::new(), Vec::new())) };
        // A body declared past the limit is read up to it and refused then, as before (an
        // answer sent before the client is done sending reaches it as a broken connection).
        let declared = declared.and_then(|length| u64::try_from(length).ok()).filter(|length| *length <= limit);
        let mut room = Vec::new();
        if let Some(length) = declared {
            room.push(self.buffer_room(length).await?);
        }
        let mut collected = BytesMut::new();
        let mut held_kib = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| s3_error!(IncompleteBody, "{error}"))?;
            let total = (collected.len() + chunk.len()) as u64;
            if total > limit {
                return Err(s3_error!(EntityTooLarge));
            }
            if declared.is_some_and(|length| total > length) {
                return Err(s3_error!(IncompleteBody, "the body is longer than its Content-Length"));
            }
            if declared.is_none() {
                // Room for the KiB the body now spans (chunks need not be whole KiB).
                let needed = total.div_ceil(1024).saturating_sub(held_kib);
                if needed > 0 {
                    room.push(self.buffer_room_kib(needed).await?);
                    held_kib += needed;
                }
            }
            collected.extend_from_slice(&chunk);
        }
        Ok((collected.freeze(), room))
    }

    /// The source of a copy: its current version (or the one named), checked against the
    /// `x-amz-copy-source-if-*` conditions.
    fn copy_source(
        &self,
        source: &CopySource,
        if_match: Option<&ETagCondition>,
        if_unmodified_since: Option<&Timestamp>,
        if_none_match: Option<&ETagCondition>,
        if_modified_since: Option<&Timestamp>,
    ) -> S3Result<ObjectInfo> {
        let CopySource::Bucket { bucket, key, version_id } = source else {
            return Err(s3_error!(NotImplemented, "s4 copies from bucket/key sources only"));
        };
        let info = self.engine.head_object(bucket, key, version_id.as_deref()).map_err(s3_error_of)?;
        check_copy_source(&info, if_match, if_unmodified_since, if_none_match, if_modified_since)?;
        Ok(info)
    }
}

#[async_trait::async_trait]
impl S3 for S4 {
    async fn create_bucket(&self, request: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = request.input.bucket;
        if !engine::valid_bucket_name(&bucket) {
            return Err(s3_error!(InvalidBucketName));
        }
        self.engine.create_bucket(&bucket).await.map_err(s3_error_of)?;
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{bucket}")) }))
    }

    async fn delete_bucket(&self, request: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.engine.delete_bucket(&request.input.bucket).await.map_err(s3_error_of)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn head_bucket(&self, request: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.engine.bucket(&request.input.bucket).map_err(s3_error_of)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(&self, request: S3Request<GetBucketLocationInput>) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.engine.bucket(&request.input.bucket).map_err(s3_error_of)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_buckets(&self, _request: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self
            .engine
            .list_buckets()
            .map_err(s3_error_of)?
            .into_iter()
            .map(|(name, created_ms)| Bucket { name: Some(name), creation_date: Some(timestamp(created_ms)), ..Default::default() })
            .collect();
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), ..Default::default() }))
    }

    async fn put_bucket_versioning(&self, request: S3Request<PutBucketVersioningInput>) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let input = request.input;
        let state = match input.versioning_configuration.status.as_ref().map(BucketVersioningStatus::as_str) {
            Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
            Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
            _ => return Err(s3_error!(MalformedXML, "versioning status must be Enabled or Suspended")),
        };
        if input.versioning_configuration.mfa_delete.is_some() {
            return Err(s3_error!(NotImplemented, "s4 has no MFA delete"));
        }
        self.engine.set_versioning(&input.bucket, state).await.map_err(s3_error_of)?;
        Ok(S3Response::new(PutBucketVersioningOutput::default()))
    }

    async fn get_bucket_versioning(&self, request: S3Request<GetBucketVersioningInput>) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let (versioning, _) = self.engine.bucket(&request.input.bucket).map_err(s3_error_of)?;
        let status = match versioning {
            Versioning::Unversioned => None,
            Versioning::Enabled => Some(BucketVersioningStatus::from_static(BucketVersioningStatus::ENABLED)),
            Versioning::Suspended => Some(BucketVersioningStatus::from_static(BucketVersioningStatus::SUSPENDED)),
        };
        Ok(S3Response::new(GetBucketVersioningOutput { status, ..Default::default() }))
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        request: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        let input = request.input;
        let rules = input.lifecycle_configuration.map(|configuration| configuration.rules).unwrap_or_default();
        let rules = rules.into_iter().map(lifecycle_rule).collect::<S3Result<Vec<_>>>()?;
        self.engine.set_lifecycle(&input.bucket, rules).await.map_err(s3_error_of)?;
        Ok(S3Response::new(PutBucketLifecycleConfigurationOutput::default()))
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        request: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        let (_, rules) = self.engine.bucket(&request.input.bucket).map_err(s3_error_of)?;
        if rules.is_empty() {
            return Err(s3_error!(NoSuchLifecycleConfiguration));
        }
        let rules = rules.into_iter().map(s3_lifecycle_rule).collect();
        Ok(S3Response::new(GetBucketLifecycleConfigurationOutput { rules: Some(rules), ..Default::default() }))
    }

    async fn delete_bucket_lifecycle(
        &self,
        request: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        self.engine.set_lifecycle(&request.input.bucket, Vec::new()).await.map_err(s3_error_of)?;
        Ok(S3Response::new(DeleteBucketLifecycleOutput::default()))
    }

    async fn put_object(&self, request: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let condition = write_condition(&request.headers)?;
        let input = request.input;
        check_key(&input.key)?;
        let body = self.store_body(input.body, self.upload_bytes_max, input.content_length, input.content_md5.as_ref()).await?;
        let metadata = metadata_of(input.metadata);
        let stored = self
            .engine
            .put_stored_object(&input.bucket, &input.key, body, input.content_type, metadata, condition)
            .await
            .map_err(s3_error_of)?;
        let version_id = version_of(&stored);
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&stored)),
            size: Some(stored.size as i64),
            version_id,
            ..Default::default()
        }))
    }

    async fn copy_object(&self, request: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let condition = write_condition(&request.headers)?;
        let input = request.input;
        check_key(&input.key)?;
        let source = self.copy_source(
            &input.copy_source,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
        )?;
        let replace = match input.metadata_directive.as_ref().map(MetadataDirective::as_str) {
            None | Some(MetadataDirective::COPY) => None,
            Some(MetadataDirective::REPLACE) => Some((input.content_type, metadata_of(input.metadata))),
            Some(other) => return Err(s3_error!(InvalidArgument, "unknown metadata directive {other}")),
        };
        if replace.is_none() {
            if let CopySource::Bucket { bucket, key, version_id: None } = &input.copy_source {
                if **bucket == *input.bucket && **key == *input.key {
                    return Err(s3_error!(
                        InvalidRequest,
                        "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
                    ));
                }
            }
        }
        let copied = self.engine.copy_object(&source, &input.bucket, &input.key, replace, condition).await.map_err(s3_error_of)?;
        let result =
            CopyObjectResult { e_tag: Some(etag(&copied)), last_modified: Some(timestamp(copied.last_modified_ms)), ..Default::default() };
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(result),
            copy_source_version_id: version_of(&source),
            version_id: version_of(&copied),
            ..Default::default()
        }))
    }

    async fn get_object(&self, request: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = request.input;
        if input.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "s4 does not serve GetObject by partNumber"));
        }
        let info = self.engine.head_object(&input.bucket, &input.key, input.version_id.as_deref()).map_err(s3_error_of)?;
        check_read(
            &info,
            input.if_match.as_ref(),
            input.if_unmodified_since.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
        )?;
        let range = match &input.range {
            Some(range) => Some(range.check(info.size).map_err(|_| s3_error!(InvalidRange))?),
            None => None,
        };
        // The body of the very version whose headers the preconditions were checked against,
        // streamed one segment at a time.
        let span = range.as_ref().map(|range| (range.start, range.end));
        let reader = self.engine.open_body(&info, span).map_err(s3_error_of)?;
        let length = span.map_or(info.size, |(start, end)| end - start) as i64;
        let content_range = range.as_ref().map(|range| format!("bytes {}-{}/{}", range.start, range.end.saturating_sub(1), info.size));
        let stream = futures::stream::unfold(reader, |mut reader| async move {
            let chunk = reader.next_chunk().await?;
            Some((chunk.map_err(std::io::Error::other), reader))
        });
        let output = GetObjectOutput {
            body: Some(StreamingBlob::wrap(stream)),
            content_length: Some(length),
            content_range,
            content_type: info.content_type.clone(),
            e_tag: Some(etag(&info)),
            last_modified: Some(timestamp(info.last_modified_ms)),
            metadata: Some(info.metadata.clone().into_iter().collect()),
            accept_ranges: Some("bytes".into()),
            version_id: version_of(&info),
            parts_count: (info.parts_count > 0).then_some(info.parts_count as i32),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn head_object(&self, request: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = request.input;
        if input.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "s4 does not serve HeadObject by partNumber"));
        }
        let info = self.engine.head_object(&input.bucket, &input.key, input.version_id.as_deref()).map_err(s3_error_of)?;
        check_read(
            &info,
            input.if_match.as_ref(),
            input.if_unmodified_since.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
        )?;
        let output = HeadObjectOutput {
            content_length: Some(info.size as i64),
            content_type: info.content_type.clone(),
            e_tag: Some(etag(&info)),
            last_modified: Some(timestamp(info.last_modified_ms)),
            metadata: Some(info.metadata.clone().into_iter().collect()),
            accept_ranges: Some("bytes".into()),
            version_id: version_of(&info),
            parts_count: (info.parts_count > 0).then_some(info.parts_count as i32),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn delete_object(&self, request: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        if request.headers.contains_key("if-none-match") {
            return Err(s3_error!(NotImplemented, "s4 supports only If-Match on DeleteObject"));
        }
        let if_match = match write_condition(&request.headers)? {
            WriteCondition::IfMatch(tag) => Some(tag),
            _ => None,
        };
        let input = request.input;
        let outcome =
            self.engine.delete_object(&input.bucket, &input.key, input.version_id.as_deref(), if_match).await.map_err(s3_error_of)?;
        Ok(S3Response::new(DeleteObjectOutput {
            delete_marker: outcome.delete_marker.then_some(true),
            version_id: outcome.version_id,
            ..Default::default()
        }))
    }

    async fn delete_objects(&self, request: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = request.input;
        let quiet = input.delete.quiet.unwrap_or(false);
        if input.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1000 keys per DeleteObjects"));
        }
        // Every key's delete is queued at once, so the committer takes them in a few
        // transactions (one fsync each) rather than one after another; answers keep the
        // request's order.
        let outcomes = futures::future::join_all(
            input
                .delete
                .objects
                .iter()
                .map(|object| self.engine.delete_object(&input.bucket, &object.key, object.version_id.as_deref(), None)),
        )
        .await;
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for (object, outcome) in input.delete.objects.into_iter().zip(outcomes) {
            match outcome {
                Ok(_) if quiet => {}
                Ok(outcome) => deleted.push(DeletedObject {
                    key: Some(object.key),
                    version_id: object.version_id.clone(),
                    delete_marker: outcome.delete_marker.then_some(true),
                    delete_marker_version_id: if outcome.delete_marker && object.version_id.is_none() { outcome.version_id } else { None },
                }),
                Err(error) => {
                    let error = s3_error_of(error);
                    errors.push(Error {
                        code: Some(error.code().as_str().to_string()),
                        key: Some(object.key),
                        message: error.message().map(str::to_string),
                        version_id: object.version_id,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), errors: Some(errors), ..Default::default() }))
    }

    async fn list_objects(&self, request: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = request.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max_keys = input.max_keys.map_or(LIST_KEYS_MAX, |keys| (keys.max(0) as usize).min(LIST_KEYS_MAX));
        let encode = url_encoding(input.encoding_type.as_ref())?;
        let mut page = list_page(&self.engine, &input.bucket, &prefix, input.marker.as_deref(), input.delimiter.as_deref(), max_keys)?;
        // V1 sends NextMarker only with a delimiter; clients otherwise continue from the last key.
        let next_marker = if input.delimiter.is_some() { page.next.clone() } else { None };
        page.encode(encode);
        let output = ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(encoded(encode, prefix)),
            marker: input.marker.map(|marker| encoded(encode, marker)),
            max_keys: Some(max_keys as i32),
            is_truncated: Some(page.next.is_some()),
            contents: Some(page.contents),
            common_prefixes: Some(page.common_prefixes),
            delimiter: input.delimiter.map(|delimiter| encoded(encode, delimiter)),
            next_marker: next_marker.map(|marker| encoded(encode, marker)),
            encoding_type: input.encoding_type,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn list_objects_v2(&self, request: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = request.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max_keys = input.max_keys.map_or(LIST_KEYS_MAX, |keys| (keys.max(0) as usize).min(LIST_KEYS_MAX));
        let encode = url_encoding(input.encoding_type.as_ref())?;
        // The continuation token is the last key returned (opaque to clients).
        let after = input.continuation_token.clone().or_else(|| input.start_after.clone());
        let mut page = list_page(&self.engine, &input.bucket, &prefix, after.as_deref(), input.delimiter.as_deref(), max_keys)?;
        page.encode(encode);
        let output = ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encoded(encode, prefix)),
            max_keys: Some(max_keys as i32),
            key_count: Some((page.contents.len() + page.common_prefixes.len()) as i32),
            continuation_token: input.continuation_token,
            is_truncated: Some(page.next.is_some()),
            next_continuation_token: page.next,
            contents: Some(page.contents),
            common_prefixes: Some(page.common_prefixes),
            delimiter: input.delimiter.map(|delimiter| encoded(encode, delimiter)),
            encoding_type: input.encoding_type,
            start_after: input.start_after.map(|after| encoded(encode, after)),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn list_object_versions(&self, request: S3Request<ListObjectVersionsInput>) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = request.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max_keys = input.max_keys.map_or(LIST_KEYS_MAX, |keys| (keys.max(0) as usize).min(LIST_KEYS_MAX));
        let encode = url_encoding(input.encoding_type.as_ref())?;
        let delimiter = input.delimiter.clone().filter(|delimiter| !delimiter.is_empty());
        let (mut versions, mut markers, mut common_prefixes) = (Vec::new(), Vec::new(), Vec::<CommonPrefix>::new());
        let mut cursor = (input.key_marker.clone(), input.version_id_marker.clone());
        let mut next = None;
        'pages: loop {
            let batch = self
                .engine
                .list_versions(&input.bucket, &prefix, cursor.0.as_deref(), cursor.1.as_deref(), LIST_KEYS_MAX + 1)
                .map_err(s3_error_of)?;
            let exhausted = batch.len() <= LIST_KEYS_MAX;
            for (key, info, latest) in batch {
                let rolled = delimiter.as_deref().and_then(|delimiter| {
                    key[prefix.len()..].find(delimiter).map(|at| key[..prefix.len() + at + delimiter.len()].to_string())
                });
                if let Some(common) = rolled {
                    if common_prefixes.last().and_then(|last| last.prefix.as_deref()) != Some(common.as_str()) {
                        if versions.len() + markers.len() + common_prefixes.len() >= max_keys {
                            next = cursor.clone().0.map(|key| (key, cursor.1.clone()));
                            break 'pages;
                        }
                        common_prefixes.push(CommonPrefix { prefix: Some(common) });
                    }
                    cursor = (Some(key), Some(info.version_id.clone()));
                    continue;
                }
                if versions.len() + markers.len() + common_prefixes.len() >= max_keys {
                    next = cursor.clone().0.map(|key| (key, cursor.1.clone()));
                    break 'pages;
                }
                cursor = (Some(key.clone()), Some(info.version_id.clone()));
                if info.delete_marker {
                    markers.push(DeleteMarkerEntry {
                        key: Some(encoded(encode, key)),
                        version_id: Some(info.version_id.clone()),
                        is_latest: Some(latest),
                        last_modified: Some(timestamp(info.last_modified_ms)),
                        ..Default::default()
                    });
                } else {
                    versions.push(ObjectVersion {
                        key: Some(encoded(encode, key)),
                        version_id: Some(info.version_id.clone()),
                        is_latest: Some(latest),
                        e_tag: Some(etag(&info)),
                        size: Some(info.size as i64),
                        last_modified: Some(timestamp(info.last_modified_ms)),
                        storage_class: Some(ObjectVersionStorageClass::from_static(ObjectVersionStorageClass::STANDARD)),
                        ..Default::default()
                    });
                }
            }
            if exhausted {
                break;
            }
        }
        for common in &mut common_prefixes {
            common.prefix = common.prefix.take().map(|prefix| encoded(encode, prefix));
        }
        let output = ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: Some(encoded(encode, prefix)),
            key_marker: input.key_marker,
            version_id_marker: input.version_id_marker,
            max_keys: Some(max_keys as i32),
            is_truncated: Some(next.is_some()),
            next_key_marker: next.as_ref().map(|(key, _)| key.clone()),
            next_version_id_marker: next.and_then(|(_, version)| version),
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: Some(common_prefixes),
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn create_multipart_upload(
        &self,
        request: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = request.input;
        check_key(&input.key)?;
        let upload_id = self
            .engine
            .create_upload(&input.bucket, &input.key, input.content_type, metadata_of(input.metadata))
            .await
            .map_err(s3_error_of)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, request: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let input = request.input;
        let part_number = part_number(input.part_number)?;
        self.engine.upload(&input.bucket, &input.key, &input.upload_id).map_err(s3_error_of)?;
        let limit = PART_BYTES_MAX.min(self.upload_bytes_max);
        let body = self.store_body(input.body, limit, input.content_length, input.content_md5.as_ref()).await?;
        let part =
            self.engine.upload_stored_part(&input.bucket, &input.key, &input.upload_id, part_number, body).await.map_err(s3_error_of)?;
        Ok(S3Response::new(UploadPartOutput { e_tag: Some(ETag::Strong(part.etag.trim_matches('"').to_string())), ..Default::default() }))
    }

    async fn upload_part_copy(&self, request: S3Request<UploadPartCopyInput>) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = request.input;
        let part_number = part_number(input.part_number)?;
        self.engine.upload(&input.bucket, &input.key, &input.upload_id).map_err(s3_error_of)?;
        let source = self.copy_source(
            &input.copy_source,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
        )?;
        let span = match &input.copy_source_range {
            None => None,
            Some(range) => Some(copy_source_range(range, source.size)?),
        };
        let copied = span.map_or(source.size, |(start, end)| end - start);
        if copied > PART_BYTES_MAX.min(self.upload_bytes_max) {
            return Err(s3_error!(EntityTooLarge));
        }
        // A part is its own body: the bytes are read and stored again (a range of a source
        // cannot share the source's body), a piece at a time when they are many.
        let body = if copied > STREAMED_BODY_MIN {
            let _room = self.buffer_room(STREAMED_PIECE_BYTES as u64).await?;
            let mut reader = self.engine.open_body(&source, span).map_err(s3_error_of)?;
            let mut upload = self.engine.start_body(copied).map_err(s3_error_of)?;
            while let Some(chunk) = reader.next_chunk().await {
                upload.write(chunk.map_err(s3_error_of)?).await.map_err(s3_error_of)?;
            }
            upload.finish().await.map_err(s3_error_of)?
        } else {
            let _room = self.buffer_room(copied).await?;
            let bytes = self.engine.read_object(&source, span).await.map_err(s3_error_of)?;
            self.engine.store_body(bytes).await.map_err(s3_error_of)?
        };
        let part =
            self.engine.upload_stored_part(&input.bucket, &input.key, &input.upload_id, part_number, body).await.map_err(s3_error_of)?;
        let result = CopyPartResult {
            e_tag: Some(ETag::Strong(part.etag.trim_matches('"').to_string())),
            last_modified: Some(timestamp(part.last_modified_ms)),
            ..Default::default()
        };
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(result),
            copy_source_version_id: version_of(&source),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        request: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let condition = write_condition(&request.headers)?;
        let input = request.input;
        let mut parts = Vec::new();
        for part in input.multipart_upload.and_then(|upload| upload.parts).unwrap_or_default() {
            let (Some(number), Some(tag)) = (part.part_number, part.e_tag) else {
                return Err(s3_error!(MalformedXML, "every part needs a PartNumber and an ETag"));
            };
            parts.push((part_number(number)?, format!("\"{}\"", tag.value())));
        }
        let info = self.engine.complete_upload(&input.bucket, &input.key, &input.upload_id, parts, condition).await.map_err(s3_error_of)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            e_tag: Some(etag(&info)),
            version_id: version_of(&info),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        request: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = request.input;
        self.engine.abort_upload(&input.bucket, &input.key, &input.upload_id).await.map_err(s3_error_of)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(&self, request: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let input = request.input;
        let max_parts = input.max_parts.map_or(LIST_KEYS_MAX, |parts| (parts.max(0) as usize).min(LIST_KEYS_MAX));
        let after = input.part_number_marker.unwrap_or(0).max(0) as u32;
        let mut listed = self.engine.list_parts(&input.bucket, &input.key, &input.upload_id, after, max_parts + 1).map_err(s3_error_of)?;
        let truncated = listed.len() > max_parts;
        listed.truncate(max_parts);
        let next = if truncated { listed.last().map(|(number, _)| *number as i32) } else { None };
        let parts = listed
            .into_iter()
            .map(|(number, part)| Part {
                part_number: Some(number as i32),
                e_tag: Some(ETag::Strong(part.etag.trim_matches('"').to_string())),
                size: Some(part.len as i64),
                last_modified: Some(timestamp(part.last_modified_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max_parts as i32),
            part_number_marker: input.part_number_marker,
            is_truncated: Some(truncated),
            next_part_number_marker: next,
            parts: Some(parts),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        request: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = request.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max_uploads = input.max_uploads.map_or(LIST_KEYS_MAX, |uploads| (uploads.max(0) as usize).min(LIST_KEYS_MAX));
        let mut listed: Vec<_> = self
            .engine
            .list_uploads(&input.bucket, &prefix)
            .map_err(s3_error_of)?
            .into_iter()
            .filter(|(id, upload)| match (&input.key_marker, &input.upload_id_marker) {
                (None, _) => true,
                (Some(marker), None) => upload.key.as_str() > marker.as_str(),
                (Some(marker), Some(id_marker)) => (upload.key.as_str(), id.as_str()) > (marker.as_str(), id_marker.as_str()),
            })
            .collect();
        let truncated = listed.len() > max_uploads;
        listed.truncate(max_uploads);
        let next = if truncated { listed.last().map(|(id, upload)| (upload.key.clone(), id.clone())) } else { None };
        let uploads = listed
            .into_iter()
            .map(|(id, upload)| MultipartUpload {
                key: Some(upload.key),
                upload_id: Some(id),
                initiated: Some(timestamp(upload.initiated_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(prefix),
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max_uploads as i32),
            is_truncated: Some(truncated),
            next_key_marker: next.as_ref().map(|(key, _)| key.clone()),
            next_upload_id_marker: next.map(|(_, id)| id),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

/// S3's largest part.
const PART_BYTES_MAX: u64 = 5 << 30;

fn part_number(number: i32) -> S3Result<u32> {
    u32::try_from(number)
        .ok()
        .filter(|number| (1..=engine::PART_NUMBER_MAX).contains(number))
        .ok_or_else(|| s3_error!(InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive"))
}

/// `bytes=first-last` of a copy source, as `[start, end)`.
fn copy_source_range(range: &str, size: u64) -> S3Result<(u64, u64)> {
    let invalid = || {
        s3_error!(InvalidArgument, "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy")
    };
    let (first, last) = range.strip_prefix("bytes=").and_then(|span| span.split_once('-')).ok_or_else(invalid)?;
    let (first, last): (u64, u64) = (first.parse().map_err(|_| invalid())?, last.parse().map_err(|_| invalid())?);
    if first > last || last >= size {
        return Err(s3_error!(InvalidRange));
    }
    Ok((first, last + 1))
}

/// Lifecycle rules s4 applies; anything else (transitions, tag or size filters, dates) is
/// refused rather than accepted and ignored.
fn lifecycle_rule(rule: LifecycleRule) -> S3Result<engine::LifecycleRule> {
    if rule.transitions.as_ref().is_some_and(|list| !list.is_empty())
        || rule.noncurrent_version_transitions.as_ref().is_some_and(|list| !list.is_empty())
    {
        return Err(s3_error!(NotImplemented, "s4 has one storage class: transitions are not supported"));
    }
    let prefix = match &rule.filter {
        None => rule.prefix.clone().unwrap_or_default(),
        Some(filter) => {
            if filter.tag.is_some()
                || filter.and.is_some()
                || filter.object_size_greater_than.is_some()
                || filter.object_size_less_than.is_some()
            {
                return Err(s3_error!(NotImplemented, "s4 filters lifecycle rules by prefix only"));
            }
            filter.prefix.clone().or_else(|| rule.prefix.clone()).unwrap_or_default()
        }
    };
    let positive = |days: Option<i32>| -> S3Result<Option<u32>> {
        match days {
            None => Ok(None),
            Some(days) if days > 0 => Ok(Some(days as u32)),
            Some(_) => Err(s3_error!(InvalidArgument, "'Days' in a lifecycle rule must be a positive integer")),
        }
    };
    let (mut expiration_days, mut expired_object_delete_marker) = (None, false);
    if let Some(expiration) = &rule.expiration {
        if expiration.date.is_some() {
            return Err(s3_error!(NotImplemented, "s4 expires objects by Days, not by Date"));
        }
        expiration_days = positive(expiration.days)?;
        expired_object_delete_marker = expiration.expired_object_delete_marker.unwrap_or(false);
    }
    let noncurrent_days = match &rule.noncurrent_version_expiration {
        None => None,
        Some(expiration) => {
            if expiration.newer_noncurrent_versions.is_some() {
                return Err(s3_error!(NotImplemented, "s4 does not support NewerNoncurrentVersions"));
            }
            positive(expiration.noncurrent_days)?
        }
    };
    let abort_incomplete_days = positive(rule.abort_incomplete_multipart_upload.as_ref().and_then(|abort| abort.days_after_initiation))?;
    if expiration_days.is_none() && !expired_object_delete_marker && noncurrent_days.is_none() && abort_incomplete_days.is_none() {
        return Err(s3_error!(MalformedXML, "a lifecycle rule needs at least one action"));
    }
    Ok(engine::LifecycleRule {
        id: rule.id.unwrap_or_default(),
        enabled: rule.status.as_str() == ExpirationStatus::ENABLED,
        prefix,
        expiration_days,
        expired_object_delete_marker,
        noncurrent_days,
        abort_incomplete_days,
    })
}

fn s3_lifecycle_rule(rule: engine::LifecycleRule) -> LifecycleRule {
    let expiration = (rule.expiration_days.is_some() || rule.expired_object_delete_marker).then(|| LifecycleExpiration {
        days: rule.expiration_days.map(|days| days as i32),
        expired_object_delete_marker: rule.expired_object_delete_marker.then_some(true),
        ..Default::default()
    });
    LifecycleRule {
        id: Some(rule.id).filter(|id| !id.is_empty()),
        status: ExpirationStatus::from_static(if rule.enabled { ExpirationStatus::ENABLED } else { ExpirationStatus::DISABLED }),
        filter: Some(LifecycleRuleFilter { prefix: Some(rule.prefix), ..Default::default() }),
        expiration,
        noncurrent_version_expiration: rule
            .noncurrent_days
            .map(|days| NoncurrentVersionExpiration { noncurrent_days: Some(days as i32), ..Default::default() }),
        abort_incomplete_multipart_upload: rule
            .abort_incomplete_days
            .map(|days| AbortIncompleteMultipartUpload { days_after_initiation: Some(days as i32) }),
        prefix: None,
        transitions: None,
        noncurrent_version_transitions: None,
    }
}

/// Whether listings must URL-encode keys (`encoding-type=url`).
fn url_encoding(encoding: Option<&EncodingType>) -> S3Result<bool> {
    match encoding.map(EncodingType::as_str) {
        None => Ok(false),
        Some(EncodingType::URL) => Ok(true),
        Some(_) => Err(s3_error!(InvalidArgument, "Invalid Encoding Method specified in Request")),
    }
}

fn encoded(encode: bool, text: String) -> String {
    if !encode {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

struct Page {
    contents: Vec<Object>,
    common_prefixes: Vec<CommonPrefix>,
    /// The last key consumed, when more remain.
    next: Option<String>,
}

impl Page {
    /// URL-encodes the keys and prefixes (`encoding-type=url`).
    fn encode(&mut self, encode: bool) {
        if !encode {
            return;
        }
        for object in &mut self.contents {
            object.key = object.key.take().map(|key| encoded(true, key));
        }
        for common in &mut self.common_prefixes {
            common.prefix = common.prefix.take().map(|prefix| encoded(true, prefix));
        }
    }
}

/// One page of a listing: keys after `after`, with keys sharing a `delimiter`-ended prefix
/// rolled up into one common prefix.
fn list_page(engine: &Engine, bucket: &str, prefix: &str, after: Option<&str>, delimiter: Option<&str>, max_keys: usize) -> S3Result<Page> {
    let mut page = Page { contents: Vec::new(), common_prefixes: Vec::new(), next: None };
    let mut cursor = after.map(str::to_string);
    let delimiter = delimiter.filter(|delimiter| !delimiter.is_empty());
    loop {
        let batch = engine.list_objects(bucket, prefix, cursor.as_deref(), LIST_KEYS_MAX + 1).map_err(s3_error_of)?;
        let exhausted = batch.len() <= LIST_KEYS_MAX;
        for (key, info) in batch {
            if page.contents.len() + page.common_prefixes.len() >= max_keys {
                page.next = cursor;
                return Ok(page);
            }
            let rolled = delimiter
                .and_then(|delimiter| key[prefix.len()..].find(delimiter).map(|at| key[..prefix.len() + at + delimiter.len()].to_string()));
            match rolled {
                Some(common) => {
                    if page.common_prefixes.last().and_then(|last| last.prefix.as_deref()) != Some(common.as_str()) {
                        page.common_prefixes.push(CommonPrefix { prefix: Some(common) });
                    }
                }
                None => page.contents.push(Object {
                    key: Some(key.clone()),
                    e_tag: Some(etag(&info)),
                    size: Some(info.size as i64),
                    last_modified: Some(timestamp(info.last_modified_ms)),
                    ..Default::default()
                }),
            }
            cursor = Some(key);
        }
        if exhausted {
            return Ok(page);
        }
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let triple = (u32::from(chunk[0]) << 16) | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8) | u32::from(*chunk.get(2).unwrap_or(&0));
        for position in 0..4 {
            if position <= chunk.len() {
                out.push(ALPHABET[((triple >> (18 - 6 * position)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc_examples() {
        for (input, expected) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(super::base64_encode(input.as_bytes()), expected);
        }
    }
}
