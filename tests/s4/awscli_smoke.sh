#!/usr/bin/env bash
# s4 against the real aws CLI (s3 and s3api). Usage: awscli_smoke.sh ENDPOINT ACCESS SECRET
set -euo pipefail
export AWS_ACCESS_KEY_ID="$2" AWS_SECRET_ACCESS_KEY="$3" AWS_DEFAULT_REGION=us-east-1
aws() { command aws --endpoint-url "$1" "${@:2}"; }
endpoint="$1"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
echo "hello from the aws cli" > "$work/hello.txt"
head -c 3000000 /dev/urandom > "$work/big.bin"

aws "$endpoint" s3 mb s3://smoke
aws "$endpoint" s3 cp "$work/hello.txt" s3://smoke/docs/hello.txt
aws "$endpoint" s3 cp "$work/big.bin" s3://smoke/big.bin
aws "$endpoint" s3 ls s3://smoke/ --recursive | grep -q "docs/hello.txt"
aws "$endpoint" s3 cp s3://smoke/big.bin "$work/big.back"
cmp "$work/big.bin" "$work/big.back"
aws "$endpoint" s3api put-object --bucket smoke --key lock --body "$work/hello.txt" --if-none-match '*' >/dev/null
if aws "$endpoint" s3api put-object --bucket smoke --key lock --body "$work/hello.txt" --if-none-match '*' 2>"$work/err"; then
  echo "second create-only put succeeded"; exit 1
fi
grep -q PreconditionFailed "$work/err"
etag=$(aws "$endpoint" s3api head-object --bucket smoke --key lock --query ETag --output text)
aws "$endpoint" s3api put-object --bucket smoke --key lock --body "$work/hello.txt" --if-match "$etag" >/dev/null
aws "$endpoint" s3 rm s3://smoke --recursive >/dev/null
aws "$endpoint" s3 rb s3://smoke
echo "aws cli smoke: ok"
