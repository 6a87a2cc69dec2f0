#!/usr/bin/env bash
# A fuzzing campaign over every target in fuzz/ on the stable toolchain: cargo-fuzz with
# RUSTC_BOOTSTRAP=1 (libFuzzer and AddressSanitizer need unstable flags; see
# ../docs/robustness.md "Fuzzing"). Each target gets an equal share of MINUTES; new inputs
# are kept in fuzz/corpus/<target> (minimised), crashes in fuzz/artifacts/<target>.
# CI does not run this: it replays the corpora on every run (tests/it/fuzz_corpus.rs).
#
#   scripts/fuzz.sh 60            # one hour over all targets
#   scripts/fuzz.sh 10 wal_batch  # ten minutes of one target
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
minutes="${1:-10}"
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
share=$(( minutes * 60 / ${#targets[@]} ))
[ "$share" -gt 0 ] || share=1
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  printf '\n=== %s: %s s\n' "$target" "$share"
  # -rss_limit_mb: the store target opens a redb per input; the default 2 GiB is plenty.
  cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$share" -print_final_stats=1 2>&1 \
    | grep -E '^(#[0-9]+.*(DONE|pulse)|stat::|INFO: (Loaded|seed)|==[0-9]+==|SUMMARY|artifact_prefix|Test unit)' || true
  # Keep the corpus small: only inputs that add coverage.
  cargo fuzz cmin "$target" "corpus/$target" >/dev/null 2>&1 || true
done
if ls artifacts/*/crash-* >/dev/null 2>&1; then
  echo "crashes found:"; ls artifacts/*/crash-*; exit 1
fi
