//! The S3 API over [`Engine`], through the s3s crate (which handles HTTP, XML, SigV4,
//! presigned URLs and aws-chunked bodies). Each method maps S3 inputs to one engine call and
//! engine errors to S3's error codes.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result, S3};

use super::engine::{Engine, EngineError, ObjectInfo, WriteCondition};

/// Keys returned by one listing at most (S3's limit).
const LIST_KEYS_MAX: usize = 1000;

#[derive(Debug, Clone)]
pub struct S4 {
    engine: Engine,
    upload_bytes_max: u64,
}

impl S4 {
    pub fn new(engine: Engine, upload_bytes_max: u64) -> Self {
        Self { engine, upload_bytes_max }
    }
}

fn s3_error_of(error: EngineError) -> S3Error {
    match error {
        EngineError::NoSuchBucket => s3_error!(NoSuchBucket),
        EngineError::BucketAlreadyOwnedByYou => s3_error!(BucketAlreadyOwnedByYou),
        EngineError::BucketNotEmpty => s3_error!(BucketNotEmpty),
        EngineError::NoSuchKey => s3_error!(NoSuchKey),
        EngineError::PreconditionFailed => s3_error!(PreconditionFailed),
        EngineError::Storage(message) | EngineError::Corrupt(message) => s3_error!(InternalError, "{message}"),
    }
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

fn etag(info: &ObjectInfo) -> ETag {
    ETag::Strong(info.etag.trim_matches('"').to_string())
}

fn condition_of(if_match: Option<ETagCondition>, if_none_match: Option<ETagCondition>) -> S3Result<WriteCondition> {
    match (if_match, if_none_match) {
        (None, None) => Ok(WriteCondition::None),
        (None, Some(ETagCondition::Any)) => Ok(WriteCondition::IfNoneMatch),
        (Some(ETagCondition::ETag(tag)), None) => Ok(WriteCondition::IfMatch(format!("\"{}\"", tag.value()))),
        (Some(ETagCondition::Any), None) => Ok(WriteCondition::IfMatch("*".into())),
        // Never silently ignore a condition s4 cannot evaluate.
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

/// Read preconditions: If-Match -> 412 when it fails; If-None-Match -> 304 when it matches;
/// If-Modified-Since -> 304 when the object is not newer.
fn check_read(
    info: &ObjectInfo,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
) -> S3Result<()> {
    if if_match.is_some_and(|condition| !matches(condition, info)) {
        return Err(s3_error!(PreconditionFailed));
    }
    if if_none_match.is_some_and(|condition| matches(condition, info)) {
        return Err(s3_error!(NotModified));
    }
    if let Some(since) = if_modified_since {
        let modified: time::OffsetDateTime = timestamp(info.last_modified_ms).into();
        let since: time::OffsetDateTime = since.clone().into();
        if if_none_match.is_none() && modified.unix_timestamp() <= since.unix_timestamp() {
            return Err(s3_error!(NotModified));
        }
    }
    Ok(())
}

impl S4 {
    async fn collect_body(&self, body: Option<StreamingBlob>) -> S3Result<Bytes> {
        let Some(mut body) = body else { return Ok(Bytes::new()) };
        let mut collected = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| s3_error!(IncompleteBody, "{error}"))?;
            if (collected.len() + chunk.len()) as u64 > self.upload_bytes_max {
                return Err(s3_error!(EntityTooLarge));
            }
            collected.extend_from_slice(&chunk);
        }
        Ok(collected.freeze())
    }
}

#[async_trait::async_trait]
impl S3 for S4 {
    async fn create_bucket(&self, request: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = request.input.bucket;
        self.engine.create_bucket(&bucket).await.map_err(s3_error_of)?;
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{bucket}")) }))
    }

    async fn delete_bucket(&self, request: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.engine.delete_bucket(&request.input.bucket).await.map_err(s3_error_of)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn head_bucket(&self, request: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let buckets = self.engine.list_buckets().map_err(s3_error_of)?;
        if !buckets.iter().any(|(name, _)| *name == request.input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(&self, request: S3Request<GetBucketLocationInput>) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let buckets = self.engine.list_buckets().map_err(s3_error_of)?;
        if !buckets.iter().any(|(name, _)| *name == request.input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
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

    async fn put_object(&self, request: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let input = request.input;
        let condition = condition_of(input.if_match, input.if_none_match)?;
        let body = self.collect_body(input.body).await?;
        if let Some(expected) = &input.content_md5 {
            let actual = base64_encode(&Md5::digest(&body));
            if *expected != actual {
                return Err(s3_error!(BadDigest));
            }
        }
        let metadata: BTreeMap<String, String> = input.metadata.unwrap_or_default().into_iter().collect();
        let stored =
            self.engine.put_object(&input.bucket, &input.key, body, input.content_type, metadata, condition).await.map_err(s3_error_of)?;
        Ok(S3Response::new(PutObjectOutput { e_tag: Some(etag(&stored)), size: Some(stored.size as i64), ..Default::default() }))
    }

    async fn get_object(&self, request: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = request.input;
        let info = self.engine.head_object(&input.bucket, &input.key).map_err(s3_error_of)?;
        check_read(&info, input.if_match.as_ref(), input.if_none_match.as_ref(), input.if_modified_since.as_ref())?;
        let range = match &input.range {
            Some(range) => Some(range.check(info.size).map_err(|_| s3_error!(InvalidRange))?),
            None => None,
        };
        // The body of the very version whose headers the preconditions were checked against.
        let span = range.as_ref().map(|range| (range.start, range.end));
        let body = self.engine.read_object(&info, span).await.map_err(s3_error_of)?;
        let content_range = range.as_ref().map(|range| format!("bytes {}-{}/{}", range.start, range.end.saturating_sub(1), info.size));
        let length = body.len() as i64;
        let output = GetObjectOutput {
            body: Some(StreamingBlob::wrap(futures::stream::once(async move { Ok::<_, std::io::Error>(body) }))),
            content_length: Some(length),
            content_range,
            content_type: info.content_type.clone(),
            e_tag: Some(etag(&info)),
            last_modified: Some(timestamp(info.last_modified_ms)),
            metadata: Some(info.metadata.clone().into_iter().collect()),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn head_object(&self, request: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = request.input;
        let info = self.engine.head_object(&input.bucket, &input.key).map_err(s3_error_of)?;
        check_read(&info, input.if_match.as_ref(), input.if_none_match.as_ref(), input.if_modified_since.as_ref())?;
        let output = HeadObjectOutput {
            content_length: Some(info.size as i64),
            content_type: info.content_type.clone(),
            e_tag: Some(etag(&info)),
            last_modified: Some(timestamp(info.last_modified_ms)),
            metadata: Some(info.metadata.clone().into_iter().collect()),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn delete_object(&self, request: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = request.input;
        let if_match = match input.if_match {
            None => None,
            Some(ETagCondition::ETag(tag)) => Some(format!("\"{}\"", tag.value())),
            Some(ETagCondition::Any) => Some("*".into()),
        };
        self.engine.delete_object(&input.bucket, &input.key, if_match).await.map_err(s3_error_of)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, request: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = request.input;
        let quiet = input.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for object in input.delete.objects {
            match self.engine.delete_object(&input.bucket, &object.key, None).await {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject { key: Some(object.key), ..Default::default() }),
                Err(error) => {
                    let error = s3_error_of(error);
                    errors.push(Error {
                        code: Some(error.code().as_str().to_string()),
                        key: Some(object.key),
                        message: error.message().map(str::to_string),
                        ..Default::default()
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
        let page = list_page(&self.engine, &input.bucket, &prefix, input.marker.as_deref(), input.delimiter.as_deref(), max_keys)?;
        // V1 sends NextMarker only with a delimiter; clients otherwise continue from the last key.
        let next_marker = if input.delimiter.is_some() { page.next.clone() } else { None };
        let output = ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(prefix),
            marker: input.marker,
            max_keys: Some(max_keys as i32),
            is_truncated: Some(page.next.is_some()),
            contents: Some(page.contents),
            common_prefixes: Some(page.common_prefixes),
            delimiter: input.delimiter,
            next_marker,
            encoding_type: input.encoding_type,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn list_objects_v2(&self, request: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = request.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max_keys = input.max_keys.map_or(LIST_KEYS_MAX, |keys| (keys.max(0) as usize).min(LIST_KEYS_MAX));
        // The continuation token is the last key returned (opaque to clients).
        let after = input.continuation_token.clone().or_else(|| input.start_after.clone());
        let page = list_page(&self.engine, &input.bucket, &prefix, after.as_deref(), input.delimiter.as_deref(), max_keys)?;
        let output = ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(prefix),
            max_keys: Some(max_keys as i32),
            key_count: Some((page.contents.len() + page.common_prefixes.len()) as i32),
            continuation_token: input.continuation_token,
            is_truncated: Some(page.next.is_some()),
            next_continuation_token: page.next,
            contents: Some(page.contents),
            common_prefixes: Some(page.common_prefixes),
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            start_after: input.start_after,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }
}

struct Page {
    contents: Vec<Object>,
    common_prefixes: Vec<CommonPrefix>,
    /// The last key consumed, when more remain.
    next: Option<String>,
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
