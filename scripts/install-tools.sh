#!/usr/bin/env bash
# Installs what the test suite needs, from the package registries, into a cache outside
# the checkout so that later runs on the same machine skip it:
#   - system packages for the Kafka client (librdkafka is built from source with OpenSSL)
#     and Prometheus (the live dashboard test scrapes the running service)
#   - Tansu, a Kafka-protocol broker written in Rust, for the live tests
#   - cargo-fuzz, which builds and runs the libFuzzer target of `decode`
# Prints the environment to use (TANSU_BIN, CARGO_FUZZ) on stdout as `export` lines.
set -euo pipefail

CACHE="${AUDIT_STREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/audit-stream}"
TANSU_VERSION="0.6.0"
mkdir -p "$CACHE"

log() { printf '[install-tools] %s\n' "$*" >&2; }

need_apt=()
for pkg in libssl-dev pkg-config build-essential prometheus; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    log "installing Debian packages: ${need_apt[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
fi

TANSU_BIN="$CACHE/tansu-$TANSU_VERSION/bin/tansu"
if [ -x "$TANSU_BIN" ]; then
    log "tansu $TANSU_VERSION cached at $TANSU_BIN"
else
    log "building tansu $TANSU_VERSION (10-15 minutes the first time on 2 cores; cached afterwards)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql \
        --root "$CACHE/tansu-$TANSU_VERSION" >&2
fi
echo "export TANSU_BIN=$TANSU_BIN"

# cargo-fuzz drives the libFuzzer target of `decode` (scripts/fuzz.sh).
CARGO_FUZZ_VERSION="0.13.2"
CARGO_FUZZ="$CACHE/tools/cargo-fuzz-$CARGO_FUZZ_VERSION/bin/cargo-fuzz"
if [ -x "$CARGO_FUZZ" ]; then
    log "cargo-fuzz $CARGO_FUZZ_VERSION cached at $CARGO_FUZZ"
else
    log "building cargo-fuzz $CARGO_FUZZ_VERSION (a few minutes the first time; cached afterwards)"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked \
        --root "$CACHE/tools/cargo-fuzz-$CARGO_FUZZ_VERSION" >&2
fi
echo "export CARGO_FUZZ=$CARGO_FUZZ"

# The quixstreams peer of `bench` (tests/bench_smoke.rs runs it): a virtual environment
# from the pinned bench/peers/requirements.txt, kept in the cache.
AUDIT_STREAM_BENCH_VENV="$CACHE/bench-venv"
export AUDIT_STREAM_BENCH_VENV
log "bench peer (quixstreams) venv at $AUDIT_STREAM_BENCH_VENV"
"$(dirname "$0")/../bench/peers/setup.sh" >/dev/null
echo "export AUDIT_STREAM_BENCH_VENV=$AUDIT_STREAM_BENCH_VENV"
