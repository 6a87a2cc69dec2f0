#!/usr/bin/env bash
# Runs a 3-member t4 cluster (three `t4 run` on one `s4`) and a real 3-member etcd 3.4
# cluster (`--initial-cluster`) side by side on this machine and measures both with the same
# client (`t4 bench`, on the etcd-client crate) spread over the three members. Workloads
# alternate between the two clusters round by round (the machine drifts); then failover:
# the leader killed with SIGKILL, and the time from the kill to the first put acknowledged
# through another member, KILLS times per cluster (the killed member restarts between
# kills). Prints one JSON line per run and the tables of docs/benchmarks.md.
#
#   scripts/bench_cluster.sh                  # defaults below
#   TOTAL=5000 ROUNDS=1 KILLS=5 scripts/bench_cluster.sh
#   LEASE_MS=2000 DRIFT_MS=200 scripts/bench_cluster.sh   # t4's lease timing
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL="${TOTAL:-20000}"
ROUNDS="${ROUNDS:-2}"
KILLS="${KILLS:-20}"
LEASE_MS="${LEASE_MS:-5000}"
DRIFT_MS="${DRIFT_MS:-500}"
if [ -n "${T4_BIN:-}" ]; then
  T4="$T4_BIN"; S4="${S4_BIN:-target/release/s4}"
else
  cargo build -q --release -p t4-cli --features bench
  cargo build -q --release -p s4 --bin s4
  T4=target/release/t4; S4=target/release/s4
fi
work=$(mktemp -d)
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pid[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; done
  rm -rf "$work"
}
trap cleanup EXIT
export ETCDCTL_API=3

etcd_members=(e1 e2 e3)
t4_members=(n1 n2 n3)
declare -A client peer
for i in 1 2 3; do
  client[e$i]=127.0.0.1:2420$((2 * i - 1)); peer[e$i]=127.0.0.1:2420$((2 * i))
  client[n$i]=127.0.0.1:2431$i; peer[n$i]=127.0.0.1:2432$i
done
initial_cluster=$(for m in "${etcd_members[@]}"; do printf '%s=http://%s,' "$m" "${peer[$m]}"; done)
initial_cluster=${initial_cluster%,}

start_etcd() {
  local m=$1
  etcd --name "$m" --data-dir "$work/$m" --listen-client-urls "http://${client[$m]}" \
    --advertise-client-urls "http://${client[$m]}" --listen-peer-urls "http://${peer[$m]}" \
    --initial-advertise-peer-urls "http://${peer[$m]}" --initial-cluster "$initial_cluster" \
    --initial-cluster-state new --log-level error >>"$work/$m.log" 2>&1 &
  pid[$m]=$!
  disown "${pid[$m]}"  # no job notice when it is killed
}
export T4_S3_ACCESS_KEY_ID=bench T4_S3_SECRET_ACCESS_KEY=bench-secret-key
start_t4() {
  local m=$1
  "$T4" run --node-id "$m" --data-dir "$work/$m" --listen "${client[$m]}" --peer-listen "${peer[$m]}" \
    --metrics-addr off --log-level warn --leader-lease-ms "$LEASE_MS" --max-clock-drift-ms "$DRIFT_MS" \
    --s3-bucket bench --s3-prefix cluster/ --s3-endpoint http://127.0.0.1:24300 >>"$work/$m.log" 2>&1 &
  pid[$m]=$!
  disown "${pid[$m]}"
}
healthy() { etcdctl --endpoints="$1" --command-timeout=1s endpoint health >/dev/null 2>&1; }
wait_healthy() {
  for _ in $(seq 150); do healthy "$1" && return 0; sleep 0.2; done
  echo "bench_cluster: $1 never became healthy" >&2; return 1
}
endpoints_of() { local out=""; for m in "$@"; do out+="${client[$m]},"; done; echo "${out%,}"; }
# The member whose endpoint reports itself as the leader (empty: none yet).
leader_of() {
  for m in "$@"; do
    etcdctl --endpoints="${client[$m]}" --command-timeout=1s endpoint status -w json 2>/dev/null |
      python3 -c 'import json,sys
s=json.load(sys.stdin)[0]["Status"]; sys.exit(0 if s["header"]["member_id"]==s["leader"] else 1)' && { echo "$m"; return; }
  done
}
# Every member is a voter (t4's learners are promoted once caught up; etcd has none).
all_voters() {
  etcdctl --endpoints="$1" --command-timeout=1s member list -w json 2>/dev/null |
    python3 -c 'import json,sys
m=json.load(sys.stdin)["members"]; sys.exit(0 if len(m)==3 and not any(x.get("isLearner") for x in m) else 1)'
}

"$S4" --bind 127.0.0.1:24300 --data-dir "$work/s4" --access-key-id bench --secret-access-key bench-secret-key \
  --log-level warn >"$work/s4.log" 2>&1 &
pid[s4]=$!
disown "${pid[s4]}"
for _ in $(seq 50); do
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_DEFAULT_REGION=us-east-1 \
    aws --endpoint-url http://127.0.0.1:24300 s3 mb s3://bench >/dev/null 2>&1 && break
  sleep 0.2
done
for m in "${etcd_members[@]}"; do start_etcd "$m"; done
start_t4 n1; wait_healthy "${client[n1]}"
start_t4 n2; start_t4 n3
for m in "${etcd_members[@]}" "${t4_members[@]}"; do wait_healthy "${client[$m]}"; done
for _ in $(seq 300); do all_voters "${client[n1]}" && break; sleep 0.2; done
all_voters "${client[n1]}" || { echo "bench_cluster: t4's learners were never promoted" >&2; exit 1; }

etcd_endpoints=$(endpoints_of "${etcd_members[@]}")
t4_endpoints=$(endpoints_of "${t4_members[@]}")
runs=(
  "seq-put --total $((TOTAL / 4))"
  "par-put --clients 16 --total $TOTAL"
  "par-put --clients 64 --total $TOTAL"
  "par-get --clients 16 --total $TOTAL"
  "par-get --clients 64 --total $TOTAL"
  "mixed --clients 16 --total $TOTAL"
)
results="$work/results.jsonl"
for round in $(seq "$ROUNDS"); do
  for run in "${runs[@]}"; do
    # Alternate which cluster goes first, round by round.
    if [ $((round % 2)) = 1 ]; then order=(etcd t4); else order=(t4 etcd); fi
    for label in "${order[@]}"; do
      if [ "$label" = etcd ]; then endpoints=$etcd_endpoints; else endpoints=$t4_endpoints; fi
      # shellcheck disable=SC2086
      "$T4" bench $run --endpoints "$endpoints" --label "$label" --output json | tee -a "$results"
    done
  done
done

failover() {
  local label=$1; shift
  local members=("$@")
  for kill in $(seq "$KILLS"); do
    local leader=""
    for _ in $(seq 100); do leader=$(leader_of "${members[@]}"); [ -n "$leader" ] && break; sleep 0.1; done
    [ -n "$leader" ] || { echo "bench_cluster: no $label leader" >&2; return 1; }
    local others=()
    for m in "${members[@]}"; do [ "$m" != "$leader" ] && others+=("$m"); done
    local since
    since=$(date +%s%N)
    kill -9 "${pid[$leader]}" 2>/dev/null
    "$T4" bench first-ack --endpoints "$(endpoints_of "${others[@]}")" --since-unix-ns "$since" \
      --label "$label" --output json | tee -a "$results"
    while kill -0 "${pid[$leader]}" 2>/dev/null; do sleep 0.05; done
    if [ "$label" = etcd ]; then start_etcd "$leader"; else start_t4 "$leader"; fi
    wait_healthy "${client[$leader]}"
    # The restarted member catches up before the next kill (a kill of a majority's
    # only up-to-date member is not what this measures).
    etcdctl --endpoints="${client[$leader]}" --command-timeout=5s get bench/first-ack/"$since" >/dev/null 2>&1 || true
    [ "$label" = t4 ] && for _ in $(seq 150); do all_voters "${client[$leader]}" && break; sleep 0.2; done
    sleep 1
  done
}
if [ "$KILLS" -gt 0 ]; then
  failover etcd "${etcd_members[@]}"
  failover t4 "${t4_members[@]}"
fi

python3 - "$results" "$LEASE_MS" "$DRIFT_MS" <<'PY'
import json, sys, statistics
from collections import defaultdict
rows = [json.loads(line) for line in open(sys.argv[1])]
runs = defaultdict(lambda: {"etcd": [], "t4": []})
for row in rows:
    if row["workload"] != "first-ack":
        runs[(row["workload"], row["clients"])][row["label"]].append(row)
print()
print("| workload | clients | etcd ops/s | t4 ops/s | t4/etcd (per round) | etcd p99 ms | t4 p99 ms |")
print("|---|---|---|---|---|---|---|")
for (workload, clients), by in runs.items():
    e = statistics.median(r["ops_per_sec"] for r in by["etcd"]); t = statistics.median(r["ops_per_sec"] for r in by["t4"])
    ratios = ", ".join(f"{b['ops_per_sec'] / a['ops_per_sec']:.2f}" for a, b in zip(by["etcd"], by["t4"]))
    ep = statistics.median(r["p99_ms"] for r in by["etcd"]); tp = statistics.median(r["p99_ms"] for r in by["t4"])
    print(f"| {workload} | {clients} | {e:,.0f} | {t:,.0f} | {t / e:.2f}x ({ratios}) | {ep:.2f} | {tp:.2f} |")
kills = defaultdict(list)
for row in rows:
    if row["workload"] == "first-ack":
        kills[row["label"]].append(row["first_ack_ms"])
if kills:
    print()
    print(f"failover (leader SIGKILL to the first put acknowledged through another member; t4 lease {sys.argv[2]} ms, drift bound {sys.argv[3]} ms)")
    print()
    print("| cluster | kills | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for label, ms in kills.items():
        ms.sort()
        p = lambda q: ms[min(len(ms) - 1, int(len(ms) * q))]
        print(f"| {label} | {len(ms)} | {p(0.5):,.0f} | {p(0.99):,.0f} | {ms[-1]:,.0f} |")
PY
