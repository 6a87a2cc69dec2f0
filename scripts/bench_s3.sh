#!/usr/bin/env bash
# t4 on local disk only against t4 with its log on s4 (sync upload: a write is acknowledged
# once its batch is in the bucket), same machine, same client (`t4 bench`). The two take
# turns, ROUNDS times (so a slower or faster spell of this shared machine falls on both);
# prints one JSON line per run, then each round's ratio and the ratio of the medians. The
# node on s4 takes checkpoints during the load (every 40% of it, by --checkpoint-entries:
# two, the last with about 20% of the log after it); then a fresh node's restore is timed:
# it starts from the newest checkpoint and replays the log after it.
#
#   scripts/bench_s3.sh               # par-put with 64 clients, 3 rounds of 50,000 puts each
#   TOTAL=1000000 ROUNDS=1 scripts/bench_s3.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL="${TOTAL:-50000}"
ROUNDS="${ROUNDS:-3}"
CLIENTS="${CLIENTS:-64}"
CHECKPOINT_ENTRIES="${CHECKPOINT_ENTRIES:-$((ROUNDS * TOTAL * 40 / 100))}"
cargo build -q --release -p t4-cli -p s4 --features t4-cli/bench
T4=target/release/t4 S4=target/release/s4
work=$(mktemp -d "${TMPDIR:-/var/tmp}/t4-bench-s3.XXXXXX")
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export S4_ACCESS_KEY_ID=bench S4_SECRET_ACCESS_KEY=bench-secret-key
export T4_S3_ACCESS_KEY_ID=bench T4_S3_SECRET_ACCESS_KEY=bench-secret-key
"$S4" --bind 127.0.0.1:29100 --data-dir "$work/s4" --log-level warn >"$work/s4.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:29100/health >/dev/null && break; sleep 0.1; done
"$S4" bench put --endpoint http://127.0.0.1:29100 --bucket t4-bench --total 1 >/dev/null   # creates the bucket

wait_up() { for _ in $(seq 600); do ETCDCTL_API=3 etcdctl --endpoints="$1" endpoint health >/dev/null 2>&1 && return; sleep 0.1; done; echo "t4 on $1 did not come up" >&2; exit 1; }
results="$work/results.jsonl"

"$T4" run --data-dir "$work/local" --listen 127.0.0.1:29101 --metrics-addr off --log-level warn >"$work/local.log" 2>&1 & pids+=($!)
wait_up 127.0.0.1:29101
"$T4" run --data-dir "$work/s3" --listen 127.0.0.1:29102 --metrics-addr 127.0.0.1:29103 --log-level warn \
  --s3-bucket t4-bench --s3-prefix bench/ --s3-endpoint http://127.0.0.1:29100 \
  --checkpoint-entries "$CHECKPOINT_ENTRIES" --checkpoint-interval-min 0 >"$work/s3.log" 2>&1 & s3_pid=$!; pids+=($s3_pid)
wait_up 127.0.0.1:29102
for _ in $(seq "$ROUNDS"); do
  "$T4" bench par-put --clients "$CLIENTS" --total "$TOTAL" --endpoints 127.0.0.1:29101 --label local --output json | tee -a "$results"
  "$T4" bench par-put --clients "$CLIENTS" --total "$TOTAL" --endpoints 127.0.0.1:29102 --label s3-sync --output json | tee -a "$results"
done
metric() { curl -sf http://127.0.0.1:29103/metrics | awk -v name="$1" '$1 == name {print $2}'; }
uploads=$(metric t4_wal_uploads_total)
# Wait for the second checkpoint to be written (and collected after).
for _ in $(seq 600); do
  [ "$(metric t4_checkpoints_total)" -ge 2 ] 2>/dev/null && break; sleep 0.2
done
sleep 2
checkpoints=$(metric t4_checkpoints_total); checkpoint_s=$(metric t4_checkpoint_seconds_total)
checkpoint_bytes=$(metric t4_checkpoint_bytes_total); uploaded_bytes=$(metric t4_checkpoint_uploaded_bytes_total)
kill "$s3_pid"; wait "$s3_pid" 2>/dev/null || true

# Restore: a fresh data dir rebuilds the store from the bucket's log.
now() { python3 -c 'import time; print(time.time())'; }
start=$(now)
"$T4" run --data-dir "$work/restored" --listen 127.0.0.1:29104 --metrics-addr off --log-level warn \
  --s3-bucket t4-bench --s3-prefix bench/ --s3-endpoint http://127.0.0.1:29100 >"$work/restored.log" 2>&1 & pids+=($!)
wait_up 127.0.0.1:29104
restore_s=$(python3 -c "print($(now) - $start)")
keys=$(ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:29104 get bench/ --prefix --limit 1 --write-out=json | python3 -c 'import json, sys; print(json.load(sys.stdin)["count"])')

python3 - "$results" "$uploads" "$restore_s" "$keys" "$checkpoints" "$checkpoint_s" "$checkpoint_bytes" "$uploaded_bytes" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
local = [row for row in rows if row['label'] == 'local']
s3 = [row for row in rows if row['label'] == 's3-sync']
print()
print("| round | mode | clients | puts/s | p50 ms | p99 ms | s3 / local |")
print("|---|---|---|---|---|---|---|")
for round, (l, s) in enumerate(zip(local, s3), 1):
    for row in (l, s):
        ratio = f"{s['ops_per_sec'] / l['ops_per_sec']:.2f}x" if row is s else ""
        print(f"| {round} | {row['label']} | {row['clients']} | {row['ops_per_sec']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {ratio} |")
median_local = statistics.median(row['ops_per_sec'] for row in local)
median_s3 = statistics.median(row['ops_per_sec'] for row in s3)
puts = sum(row['ops'] for row in s3)
print(f"\nmedians: local {median_local:,.0f}, s3-sync {median_s3:,.0f} puts/s; s3-sync / local: {median_s3 / median_local:.2f}x")
print(f"WAL objects uploaded: {sys.argv[2]} ({puts / max(1, int(float(sys.argv[2]))):.1f} puts per object)")
print(f"checkpoints during the load: {sys.argv[5]}, {float(sys.argv[6]):.1f} s in all, {float(sys.argv[7]) / 1e6:.1f} MB of history listed, {float(sys.argv[8]) / 1e6:.1f} MB uploaded")
print(f"restore of {sys.argv[4]} keys from the bucket into a fresh data dir, until the node answers: {float(sys.argv[3]):.1f} s")
PY
