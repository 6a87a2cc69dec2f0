"""Concurrent PUT/DELETE load on s4 that records every acknowledged operation, one log per
thread, flushed before the next request. Runs until s4 dies (or 20 s pass).
Usage: crash_load.py ENDPOINT ACCESS SECRET LOG_DIR"""

import hashlib
import os
import random
import sys
import threading
import time

import boto3
import botocore
from botocore.config import Config

endpoint, access, secret, log_dir = sys.argv[1:5]
config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5)


def client():
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1", config=config)


client().create_bucket(Bucket="crash")
deadline = time.time() + 20


def worker(thread):
    s3 = client()
    rng = random.Random(thread)
    live = []
    with open(os.path.join(log_dir, f"acks-{thread}.log"), "w") as log:
        for index in range(1_000_000):
            if time.time() > deadline:
                return
            try:
                if live and rng.random() < 0.3:
                    key = live.pop(rng.randrange(len(live)))
                    # A delete in flight when s4 dies has an unknown outcome: say so first.
                    log.write(f"SENDDEL {key}\n")
                    log.flush()
                    s3.delete_object(Bucket="crash", Key=key)
                    log.write(f"DEL {key}\n")
                else:
                    key = f"t{thread}/{index}"
                    body = os.urandom(rng.randrange(1, 20000))
                    etag = s3.put_object(Bucket="crash", Key=key, Body=body)["ETag"]
                    log.write(f"PUT {key} {etag} {hashlib.sha256(body).hexdigest()}\n")
                    live.append(key)
                log.flush()
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                return


threads = [threading.Thread(target=worker, args=(thread,)) for thread in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
