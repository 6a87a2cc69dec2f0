#!/usr/bin/env bash
# The simulator's long soak: every scenario, seed after seed, for a time budget (default 30
# minutes), from a base seed taken from the clock unless given. Stops at the first failing
# seed and prints the command that replays it; add that seed to sim/regressions.txt once
# the cause is fixed.
#
#   scripts/soak.sh                 # 30 minutes
#   scripts/soak.sh 120 424242      # 120 minutes from base seed 424242
#
# Seeds run in rounds of T4_SOAK_CHUNK (10) per scenario, each round a fresh simrun process
# that reports as it ends, so a long soak shows its progress.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-30}"
base_seed="${2:-$(date +%s)}"
chunk="${T4_SOAK_CHUNK:-10}"
export RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim
cargo build -q -p t4-sim --bin simrun
echo "soak: ${minutes} minutes from base seed ${base_seed}, ${chunk} seeds per scenario per round"
deadline=$((SECONDS + minutes * 60))
seed="$base_seed"
total=0
while [ "$SECONDS" -lt "$deadline" ]; do
  left=$((deadline - SECONDS))
  out="$(target/sim/debug/simrun --scenario all --seeds "$chunk" --base-seed "$seed" --time-budget "$left")" || {
    printf '%s\n' "$out" | tail -20
    echo "soak: FAILED after ${total} passing seeds"
    exit 1
  }
  ran="$(printf '%s\n' "$out" | grep -c ' ok$' || true)"
  total=$((total + ran))
  echo "soak: round from base seed ${seed}: ${ran} seeds passed (${total} in ${SECONDS} s)"
  seed=$((seed + chunk))
done
echo "soak: ${total} seeds passed in ${SECONDS} s ($(awk -v n="$total" -v s="$SECONDS" 'BEGIN { printf "%.2f", n / s }') seeds/s), base seed ${base_seed}"
