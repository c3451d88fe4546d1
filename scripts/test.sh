#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test, including the live tests on a
# real Kafka-protocol broker (Tansu), which the tests start themselves, then a bounded
# fuzzing run of the decoder.
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(scripts/install-tools.sh)"
export TANSU_BIN CARGO_FUZZ

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== deployment artefacts (alerts, dashboard, Helm chart, compose)"
scripts/check-deploy.sh
echo "== cargo test"
cargo test --all-targets --locked
echo "== fuzz decode for ${AUDIT_STREAM_FUZZ_SECONDS:-60} s (libFuzzer, stable toolchain)"
scripts/fuzz.sh
