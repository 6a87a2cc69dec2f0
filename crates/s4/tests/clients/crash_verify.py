"""After a kill -9 and restart: every acknowledged PUT is readable with its exact bytes and
ETag, no acknowledged DELETE is undone, and every listed key has a body.
Usage: crash_verify.py ENDPOINT ACCESS SECRET LOG_DIR"""

import glob
import hashlib
import sys

import boto3
import botocore
from botocore.config import Config

endpoint, access, secret, log_dir = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                  region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
expected = {}
deleted = set()
in_flight = set()  # deletes sent but not acknowledged: either outcome is allowed
for path in glob.glob(f"{log_dir}/acks-*.log"):
    for line in open(path):
        parts = line.split()
        if len(parts) == 4 and parts[0] == "PUT":
            expected[parts[1]] = (parts[2], parts[3])
        elif len(parts) == 2 and parts[0] == "SENDDEL":
            in_flight.add(parts[1])
        elif len(parts) == 2 and parts[0] == "DEL":
            expected.pop(parts[1], None)
            deleted.add(parts[1])
            in_flight.discard(parts[1])
assert len(expected) + len(deleted) >= 200, f"too little load before the crash: {len(expected)} puts, {len(deleted)} deletes"
for key, (etag, digest) in expected.items():
    if key in in_flight:
        try:
            got = s3.get_object(Bucket="crash", Key=key)
        except botocore.exceptions.ClientError as error:
            assert error.response["Error"]["Code"] == "NoSuchKey", error
            continue
    else:
        got = s3.get_object(Bucket="crash", Key=key)
    body = got["Body"].read()
    assert got["ETag"] == etag and hashlib.sha256(body).hexdigest() == digest, f"acknowledged {key} came back different"
for key in deleted:
    try:
        s3.head_object(Bucket="crash", Key=key)
        raise AssertionError(f"acknowledged delete of {key} was undone")
    except botocore.exceptions.ClientError as error:
        assert error.response["Error"]["Code"] in ("404", "NoSuchKey"), error
listed = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="crash"):
    for entry in page.get("Contents", []):
        s3.head_object(Bucket="crash", Key=entry["Key"])
        listed += 1
print(f"ok: {len(expected) - len(in_flight)} acknowledged objects intact, {len(in_flight)} in-flight deletes either way, {len(deleted)} deletes held, {listed} listed keys all readable")
