#!/usr/bin/env bash
# Runs t4 and a real etcd side by side on this machine and measures both with the same
# client (`t4 bench`, on the etcd-client crate). Prints one JSON line per run and a table of
# t4/etcd ratios. Data directories live under a temp dir; both servers listen on loopback.
#
#   scripts/bench.sh            # all workloads
#   TOTAL=5000 scripts/bench.sh # fewer requests per run
#   T4_BIN=path/to/t4 scripts/bench.sh  # a t4 built elsewhere (another commit: before/after)
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL="${TOTAL:-20000}"
if [ -n "${T4_BIN:-}" ]; then
  T4="$T4_BIN"
else
  cargo build -q --release -p t4-cli --features bench
  T4=target/release/t4
fi
work=$(mktemp -d)
cleanup() { kill "${etcd_pid:-}" "${t4_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

etcd --name bench --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:23791 \
  --advertise-client-urls http://127.0.0.1:23791 --listen-peer-urls http://127.0.0.1:23792 \
  --initial-advertise-peer-urls http://127.0.0.1:23792 --initial-cluster bench=http://127.0.0.1:23792 \
  --log-level error >"$work/etcd.log" 2>&1 &
etcd_pid=$!
"$T4" run --data-dir "$work/t4" --listen 127.0.0.1:23793 --metrics-addr off --log-level warn >"$work/t4.log" 2>&1 &
t4_pid=$!
for endpoint in 127.0.0.1:23791 127.0.0.1:23793; do
  for _ in $(seq 50); do ETCDCTL_API=3 etcdctl --endpoints=$endpoint endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
done

runs=(
  "seq-put --total $((TOTAL / 4))"
  "par-put --clients 16 --total $TOTAL"
  "par-put --clients 64 --total $TOTAL"
  "seq-get --total $((TOTAL / 4))"
  "par-get --clients 16 --total $TOTAL"
  "par-get --clients 64 --total $TOTAL"
  "mixed --clients 16 --total $TOTAL"
  "watch --watchers 16 --total $((TOTAL / 4))"
)
results="$work/results.jsonl"
for run in "${runs[@]}"; do
  for target in etcd:127.0.0.1:23791 t4:127.0.0.1:23793; do
    label=${target%%:*}; endpoint=${target#*:}
    # shellcheck disable=SC2086
    "$T4" bench $run --endpoints "$endpoint" --label "$label" --output json | tee -a "$results"
  done
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print()
print("| workload | clients | etcd ops/s | t4 ops/s | t4/etcd | etcd p99 ms | t4 p99 ms |")
print("|---|---|---|---|---|---|---|")
for etcd, t4 in zip(rows[0::2], rows[1::2]):
    clients = etcd["watchers"] if etcd["workload"] == "watch" else etcd["clients"]
    ratio = t4["ops_per_sec"] / etcd["ops_per_sec"] if etcd["ops_per_sec"] else float("nan")
    if etcd["workload"] == "watch":
        ratio = etcd["p99_ms"] / t4["p99_ms"] if t4["p99_ms"] else float("nan")
    print(f"| {etcd['workload']} | {clients} | {etcd['ops_per_sec']:,.0f} | {t4['ops_per_sec']:,.0f} | {ratio:.2f}x | {etcd['p99_ms']:.2f} | {t4['p99_ms']:.2f} |")
print("\n(watch: ops/s counts delivered events; the ratio is etcd p99 / t4 p99, >1 means t4 delivers faster)")
PY
