#!/usr/bin/env bash
# Fuzzes `Decoder::decode` for a bounded time: libFuzzer through cargo-fuzz, on the pinned
# stable toolchain (coverage instrumentation is a stable rustc option; only the
# sanitizers need nightly, hence --sanitizer none: Rust code here has no unsafe to
# sanitize). Fails on a panic or a broken invariant, and leaves the input that caused it
# in fuzz/artifacts/decode/.
#   scripts/fuzz.sh [SECONDS]      (default 60, or AUDIT_STREAM_FUZZ_SECONDS)
# Needs CARGO_FUZZ from scripts/install-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-${AUDIT_STREAM_FUZZ_SECONDS:-60}}"
: "${CARGO_FUZZ:?run eval \"\$(scripts/install-tools.sh)\" first; it sets CARGO_FUZZ}"
PATH="$(dirname "$CARGO_FUZZ"):$PATH"
export PATH

# The instrumented build has its own flags: keep it apart from the main build, beside it
# when CARGO_TARGET_DIR names a cache (CI), else in fuzz/target.
target_dir="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
target_dir="${target_dir:-target}"

# A fresh working corpus each run, seeded with the committed inputs (fuzz/seeds/decode,
# taken from examples/): the run is bounded and the seeds do not grow in the checkout.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
status=0
cargo fuzz run --sanitizer none --target-dir "$target_dir" decode "$work/corpus" seeds/decode -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$work/log" 2>&1 || status=$?
# libFuzzer prints a line per new input: show the failure (the panic, the input it
# saved and how to reproduce it), else the final stats. Dictionary lines are noise.
if [ "$status" -ne 0 ] && grep -q 'panicked at' "$work/log"; then
    grep -v '^"' "$work/log" | sed -n '/panicked at/,$p' | head -n 100
else
    grep -v '^"' "$work/log" | tail -n 30
fi
exit "$status"
