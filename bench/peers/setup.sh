#!/usr/bin/env bash
# Creates (or reuses) the virtual environment of the quixstreams peer under
# bench/peers/.venv, from the pinned requirements. Prints the venv's python on stdout.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${AUDIT_STREAM_BENCH_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ] || ! cmp -s requirements.txt "$VENV/.requirements.txt"; then
    "$PYTHON" -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt >&2
    cp requirements.txt "$VENV/.requirements.txt"
fi
echo "$(cd "$VENV" && pwd)/bin/python"
