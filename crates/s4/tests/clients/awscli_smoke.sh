#!/usr/bin/env bash
# s4 against the real aws CLI (s3 and s3api). Usage: awscli_smoke.sh ENDPOINT ACCESS SECRET
set -euo pipefail
export AWS_ACCESS_KEY_ID="$2" AWS_SECRET_ACCESS_KEY="$3" AWS_DEFAULT_REGION=us-east-1
aws() { command aws --endpoint-url "$1" "${@:2}"; }
endpoint="$1"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
echo "hello from the aws cli" > "$work/hello.txt"
head -c 3000000 /dev/urandom > "$work/big.bin"
head -c 20000000 /dev/urandom > "$work/huge.bin"   # above 8 MiB: the CLI uploads it in parts

aws "$endpoint" s3 mb s3://smoke
aws "$endpoint" s3 cp --no-progress "$work/hello.txt" s3://smoke/docs/hello.txt
aws "$endpoint" s3 cp --no-progress "$work/big.bin" s3://smoke/big.bin
aws "$endpoint" s3 ls s3://smoke/ --recursive | grep -q "docs/hello.txt"
aws "$endpoint" s3 cp --no-progress s3://smoke/big.bin "$work/big.back"
cmp "$work/big.bin" "$work/big.back"
aws "$endpoint" s3 cp --no-progress "$work/huge.bin" s3://smoke/huge.bin
aws "$endpoint" s3api head-object --bucket smoke --key huge.bin --query ETag --output text | grep -q -- '-3"'
aws "$endpoint" s3 cp --no-progress s3://smoke/huge.bin "$work/huge.back"
cmp "$work/huge.bin" "$work/huge.back"
aws "$endpoint" s3 cp --no-progress s3://smoke/docs/hello.txt s3://smoke/docs/copy.txt
aws "$endpoint" s3 cp --no-progress s3://smoke/docs/copy.txt "$work/copy.txt"
cmp "$work/hello.txt" "$work/copy.txt"
mkdir -p "$work/tree/sub" "$work/tree.back"
for name in a b sub/c; do echo "file $name" > "$work/tree/$name"; done
aws "$endpoint" s3 sync --no-progress "$work/tree" s3://smoke/tree >/dev/null
aws "$endpoint" s3 sync --no-progress s3://smoke/tree "$work/tree.back" >/dev/null
diff -r "$work/tree" "$work/tree.back"
aws "$endpoint" s3api put-bucket-versioning --bucket smoke --versioning-configuration Status=Enabled
aws "$endpoint" s3api get-bucket-versioning --bucket smoke --query Status --output text | grep -q Enabled
v1=$(aws "$endpoint" s3api put-object --bucket smoke --key v --body "$work/hello.txt" --query VersionId --output text)
aws "$endpoint" s3api put-object --bucket smoke --key v --body "$work/big.bin" >/dev/null
aws "$endpoint" s3api get-object --bucket smoke --key v --version-id "$v1" "$work/v1" >/dev/null
cmp "$work/hello.txt" "$work/v1"
aws "$endpoint" s3api delete-object --bucket smoke --key v --query DeleteMarker --output text | grep -q True
test "$(aws "$endpoint" s3api list-object-versions --bucket smoke --prefix v --query 'length(Versions)' --output text)" = 2
aws "$endpoint" s3api put-object --bucket smoke --key lock --body "$work/hello.txt" --if-none-match '*' >/dev/null
if aws "$endpoint" s3api put-object --bucket smoke --key lock --body "$work/hello.txt" --if-none-match '*' 2>"$work/err"; then
  echo "second create-only put succeeded"; exit 1
fi
grep -q PreconditionFailed "$work/err"
etag=$(aws "$endpoint" s3api head-object --bucket smoke --key lock --query ETag --output text)
aws "$endpoint" s3api put-object --bucket smoke --key lock --body "$work/hello.txt" --if-match "$etag" >/dev/null
# Empty the bucket: every version and delete marker.
# Every version and delete marker goes, one row per line ("None" when a list is empty).
for kind in Versions DeleteMarkers; do
  aws "$endpoint" s3api list-object-versions --bucket smoke --query "$kind[].[Key,VersionId]" --output text |
    while read -r key version; do
      [ "$key" = None ] && continue
      aws "$endpoint" s3api delete-object --bucket smoke --key "$key" --version-id "$version" >/dev/null
    done
done
aws "$endpoint" s3 rb s3://smoke
echo "aws cli smoke: ok"
