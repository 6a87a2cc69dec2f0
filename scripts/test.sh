#!/usr/bin/env bash
# The test command (README.md). Installs what the tests need, then runs, in order:
# formatting and lint checks, every test of the workspace, the simulator's tests, and a
# fixed budget of simulator seeds (plus every seed in sim/regressions.txt).
#
#   scripts/test.sh                 # everything (what CI runs)
#   T4_SIM_SEEDS=20 scripts/test.sh # fewer seeds per scenario
set -euo pipefail
cd "$(dirname "$0")/.."

SIM_SEEDS="${T4_SIM_SEEDS:-30}"
step() { printf '\n=== %s\n' "$*"; }

step "install test dependencies"
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)  # the etcd-client crate's build
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
command -v aws >/dev/null 2>&1 || python3 -m pip install -q awscli     # s4 client tests
python3 -c "import boto3" 2>/dev/null || python3 -m pip install -q boto3
# Whole outputs: with pipefail, `| head -1` could end the run by SIGPIPE (exit 141).
etcd --version
etcdctl version

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "tests (workspace): unit, model, integration with etcd-client and etcdctl, differential vs etcd, crash"
cargo nextest run --workspace --all-features --no-fail-fast

step "simulator build, self-tests and determinism"
export RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim
cargo clippy -p t4-sim --all-targets -- -D warnings
cargo nextest run -p t4-sim --no-fail-fast

step "simulator seeds: regressions, then ${SIM_SEEDS} seeds per scenario"
cargo build -q -p t4-sim --bin simrun
target/sim/debug/simrun --regressions sim/regressions.txt
base_seed=$(( 16#$(git rev-parse HEAD 2>/dev/null | cut -c1-12 || echo 1) ))
target/sim/debug/simrun --scenario all --seeds "$SIM_SEEDS" --base-seed "$base_seed"
