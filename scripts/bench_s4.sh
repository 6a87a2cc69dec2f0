#!/usr/bin/env bash
# Measures s4 with `s4 bench` (aws-sdk-s3 clients): PUT and GET of 4 KiB and 1 MiB objects
# with 1 and 32 clients, and the rate of one fsync per 4 KiB write on the same filesystem,
# the rate a store that syncs once per PUT could not beat. Prints one JSON line per run and
# a table. s4 runs from a temp dir on loopback; the clients share the machine's cores.
#
#   scripts/bench_s4.sh              # 2000 small requests per run, 200 of 1 MiB
#   TOTAL=5000 scripts/bench_s4.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL="${TOTAL:-2000}"
LARGE_TOTAL="${LARGE_TOTAL:-$((TOTAL / 10))}"
cargo build -q --release -p s4 --bin s4
S4=target/release/s4
work=$(mktemp -d "${TMPDIR:-/var/tmp}/s4-bench.XXXXXX")
cleanup() { kill "${s4_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export S4_ACCESS_KEY_ID=bench S4_SECRET_ACCESS_KEY=bench-secret-key
"$S4" --bind 127.0.0.1:29000 --data-dir "$work/data" --log-level warn >"$work/s4.log" 2>&1 &
s4_pid=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:29000/health >/dev/null && break; sleep 0.1; done

# user + system CPU of the s4 process so far, in ms (clock ticks are 10 ms here).
server_cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$s4_pid/stat"; }
metric() { curl -sf http://127.0.0.1:29000/metrics | awk -v name="$1" '$1 == name {print $2}'; }
results="$work/results.jsonl"
"$S4" bench fsync --size 4KiB --total "$TOTAL" --dir "$work/data" --output json | tee -a "$results"
for size in 4KiB 1MiB; do
  total=$TOTAL; [ "$size" = 1MiB ] && total=$LARGE_TOTAL
  for operation in put get; do
    for clients in 1 32; do
      before=$(server_cpu_ms); commits=$(metric s4_commits_total); batches=$(metric s4_commit_batches_total)
      line=$("$S4" bench "$operation" --endpoint http://127.0.0.1:29000 --size "$size" --clients "$clients" \
        --total "$total" --key-space 64 --output json)
      # The server's CPU time during the run (populating a get run's objects included).
      cpu=$(( $(server_cpu_ms) - before ))
      commits=$(( $(metric s4_commits_total) - commits )); batches=$(( $(metric s4_commit_batches_total) - batches ))
      echo "${line%\}},\"server_cpu_ms\":$cpu,\"commits\":$commits,\"batches\":$batches}" | tee -a "$results"
    done
  done
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
fsync = rows[0]["ops_per_sec"]
print()
print(f"one 4 KiB write + fdatasync per operation: {fsync:,.0f}/s (p50 {rows[0]['p50_ms']:.2f} ms)")
print()
print("| operation | size | clients | ops/s | MiB/s | p50 ms | p99 ms | errors | vs fsync rate | server CPU µs/op | writes per fsync |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for row in rows[1:]:
    size = f"{row['size'] // 1024} KiB" if row["size"] < 1 << 20 else f"{row['size'] >> 20} MiB"
    ratio = f"{row['ops_per_sec'] / fsync:.1f}x" if row["operation"] == "put" else ""
    per_batch = f"{row['commits'] / row['batches']:.1f}" if row["operation"] == "put" and row["batches"] else ""
    cpu = row["server_cpu_ms"] * 1000 / row["ops"] if row["ops"] else float("nan")
    print(f"| {row['operation']} | {size} | {row['clients']} | {row['ops_per_sec']:,.0f} | {row['mib_per_sec']:,.1f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors']} | {ratio} | {cpu:,.0f} | {per_batch} |")
print("\n(get runs' server CPU includes writing their 64 objects first)")
PY
