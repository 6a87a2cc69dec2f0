"""s4 against boto3 (a real S3 client): operations, error codes, conditional writes, the
create-only race. Usage: boto3_suite.py ENDPOINT ACCESS_KEY SECRET_KEY. Exits non-zero on
the first failed check, naming it."""

import concurrent.futures
import sys

import boto3
import botocore
from botocore.config import Config

endpoint, access, secret = sys.argv[1:4]
config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                  region_name="us-east-1", config=config)


def error_code(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except botocore.exceptions.ClientError as error:
        return error.response["Error"]["Code"]
    raise AssertionError(f"{call.__name__} succeeded but should have failed")


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


check(error_code(s3.head_bucket, Bucket="missing") in ("404", "NoSuchBucket"), "HeadBucket on a missing bucket is 404")
s3.create_bucket(Bucket="suite")
check(error_code(s3.create_bucket, Bucket="suite") == "BucketAlreadyOwnedByYou", "creating a bucket twice")
check(error_code(s3.put_object, Bucket="missing", Key="k", Body=b"x") == "NoSuchBucket", "put into a missing bucket")

put = s3.put_object(Bucket="suite", Key="dir/a.txt", Body=b"hello world", ContentType="text/plain",
                    Metadata={"owner": "t4"})
check(put["ETag"] == '"5eb63bbbe01eeed093cb22bb8f5acdc3"', "the ETag is the body's MD5")
got = s3.get_object(Bucket="suite", Key="dir/a.txt")
check(got["Body"].read() == b"hello world" and got["ContentType"] == "text/plain" and got["Metadata"] == {"owner": "t4"},
      "get returns body, content type and user metadata")
ranged = s3.get_object(Bucket="suite", Key="dir/a.txt", Range="bytes=6-10")
check(ranged["Body"].read() == b"world" and ranged["ResponseMetadata"]["HTTPStatusCode"] == 206, "range get is 206")
check(error_code(s3.get_object, Bucket="suite", Key="dir/a.txt", Range="bytes=100-200") == "InvalidRange", "unsatisfiable range is 416")
check(error_code(s3.get_object, Bucket="suite", Key="nope") == "NoSuchKey", "missing key")
check(error_code(s3.get_object, Bucket="suite", Key="dir/a.txt", IfMatch='"0000"') == "PreconditionFailed", "GET If-Match mismatch is 412")
check(error_code(s3.get_object, Bucket="suite", Key="dir/a.txt", IfNoneMatch=put["ETag"]) == "304", "GET If-None-Match match is 304")
head = s3.head_object(Bucket="suite", Key="dir/a.txt")
check(head["ContentLength"] == 11, "head reports the size")

check(error_code(s3.put_object, Bucket="suite", Key="dir/a.txt", Body=b"x", IfNoneMatch="*") == "PreconditionFailed",
      "If-None-Match: * on an existing key is 412")
swapped = s3.put_object(Bucket="suite", Key="dir/a.txt", Body=b"v2", IfMatch=put["ETag"])
check(error_code(s3.put_object, Bucket="suite", Key="dir/a.txt", Body=b"v3", IfMatch=put["ETag"]) == "PreconditionFailed",
      "If-Match with a stale ETag is 412")
check(error_code(s3.put_object, Bucket="suite", Key="new", Body=b"v", IfMatch=put["ETag"]) == "NoSuchKey",
      "If-Match on a missing key is 404")
check(s3.get_object(Bucket="suite", Key="dir/a.txt")["Body"].read() == b"v2", "the CAS winner is stored")

for index in range(5):
    s3.put_object(Bucket="suite", Key=f"dir/sub{index}/x", Body=b".")
    s3.put_object(Bucket="suite", Key=f"list/{index:02}", Body=b".")
listed = s3.list_objects_v2(Bucket="suite", Prefix="dir/", Delimiter="/")
check([entry["Key"] for entry in listed["Contents"]] == ["dir/a.txt"] and len(listed["CommonPrefixes"]) == 5,
      "list v2 with delimiter rolls up common prefixes")
keys, token = [], None
while True:
    page = s3.list_objects_v2(Bucket="suite", Prefix="list/", MaxKeys=2, **({"ContinuationToken": token} if token else {}))
    keys += [entry["Key"] for entry in page.get("Contents", [])]
    if not page["IsTruncated"]:
        break
    token = page["NextContinuationToken"]
check(keys == [f"list/{index:02}" for index in range(5)], "continuation tokens page through every key once")
after = s3.list_objects_v2(Bucket="suite", Prefix="list/", StartAfter="list/02")
check([entry["Key"] for entry in after["Contents"]] == ["list/03", "list/04"], "start-after")

deleted = s3.delete_objects(Bucket="suite", Delete={"Objects": [{"Key": f"list/{index:02}"} for index in range(5)], "Quiet": True})
check(not deleted.get("Errors") and not deleted.get("Deleted"), "quiet DeleteObjects reports nothing on success")
check(error_code(s3.delete_bucket, Bucket="suite") == "BucketNotEmpty", "deleting a non-empty bucket")
s3.delete_object(Bucket="suite", Key="never-existed")
print("ok: deleting a missing key succeeds")

bad = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key="wrong",
                   region_name="us-east-1", config=config)
check(error_code(bad.list_buckets) == "SignatureDoesNotMatch", "a wrong secret is SignatureDoesNotMatch")

s3.create_bucket(Bucket="race")


def racer(args):
    round_, racer_id = args
    try:
        s3.put_object(Bucket="race", Key=f"r{round_}", Body=f"{racer_id}".encode(), IfNoneMatch="*")
        return 1
    except botocore.exceptions.ClientError as error:
        assert error.response["Error"]["Code"] == "PreconditionFailed", error
        return 0


rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 50
with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
    for round_ in range(rounds):
        winners = sum(pool.map(racer, [(round_, racer_id) for racer_id in range(32)]))
        check(winners == 1, f"race round {round_}: exactly one of 32 create-only PUTs wins") if round_ % 10 == 0 else None
        if winners != 1:
            raise AssertionError(f"race round {round_}: {winners} winners")
print("ok: all", rounds, "rounds had exactly one winner")
