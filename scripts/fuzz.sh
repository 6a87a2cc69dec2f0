#!/usr/bin/env bash
# A fuzzing campaign over every target in fuzz/ on the stable toolchain: cargo-fuzz with
# RUSTC_BOOTSTRAP=1 (libFuzzer and AddressSanitizer need unstable flags; see
# ../docs/robustness.md "Fuzzing"). The targets are built once and then run as binaries
# (an edit to the sources mid-campaign rebuilds nothing). Each target gets an equal share
# of MINUTES x FUZZ_JOBS; FUZZ_JOBS targets run at once (default 1), at low priority. New
# inputs are kept in fuzz/corpus/<target> (minimised after the run), crashes in
# fuzz/artifacts/<target>, logs and a summary (executions, coverage, CPU seconds per
# target) in fuzz/logs. CI does not run this: it replays the corpora on every run
# (crates/t4/tests/engine/fuzz_corpus.rs).
#
#   scripts/fuzz.sh 60                 # one hour over all targets
#   scripts/fuzz.sh 10 wal_batch       # ten minutes of one target
#   FUZZ_JOBS=2 scripts/fuzz.sh 90     # 90 minutes, two targets at a time (3 CPU-hours)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
minutes="${1:-10}"
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
jobs="${FUZZ_JOBS:-1}"
share=$(( minutes * 60 * jobs / ${#targets[@]} ))
[ "$share" -gt 0 ] || share=1
cargo fuzz build
export FUZZ_BIN="target/x86_64-unknown-linux-gnu/release" FUZZ_SHARE="$share"
mkdir -p logs

run_target() {
  local target="$1"
  mkdir -p "corpus/$target" "artifacts/$target"
  echo "=== $target: ${FUZZ_SHARE} s"
  # -rss_limit_mb: the node and s4 targets open a store per input.
  /usr/bin/time -f "%U %S" -o "logs/$target.time" nice -n 15 "$FUZZ_BIN/$target" "corpus/$target" \
    -artifact_prefix="artifacts/$target/" -max_total_time="$FUZZ_SHARE" -rss_limit_mb=4096 -print_final_stats=1 \
    >"logs/$target.log" 2>&1 || true
  grep -E '^==[0-9]+==|SUMMARY|panicked|Test unit written' "logs/$target.log" | head -20 || true
  # Keep the corpus small: only inputs that add coverage.
  rm -rf "corpus/$target.min" && mkdir "corpus/$target.min"
  if "$FUZZ_BIN/$target" -merge=1 "corpus/$target.min" "corpus/$target" >/dev/null 2>&1; then
    rm -rf "corpus/$target" && mv "corpus/$target.min" "corpus/$target"
  else
    rm -rf "corpus/$target.min"
  fi
}
export -f run_target
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_target {}'

printf '\n%-20s %14s %10s %12s %8s\n' target executions coverage cpu_seconds corpus
for target in "${targets[@]}"; do
  log="logs/$target.log"
  executions=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)
  coverage=$(grep -oE '(DONE|pulse|NEW|REDUCE) +cov: [0-9]+' "$log" | awk '{print $3}' | tail -1)
  cpu=$(tail -n 1 "logs/$target.time" 2>/dev/null | awk '{printf "%d", $1 + $2}')
  printf '%-20s %14s %10s %12s %8s\n' "$target" "${executions:-?}" "${coverage:-?}" "$cpu" "$(ls "corpus/$target" | wc -l)"
done | tee "logs/summary-$(date +%Y%m%d-%H%M%S)-$$.txt"
if ls artifacts/*/crash-* artifacts/*/timeout-* artifacts/*/oom-* >/dev/null 2>&1; then
  echo "findings:"; ls artifacts/*/crash-* artifacts/*/timeout-* artifacts/*/oom-* 2>/dev/null; exit 1
fi
