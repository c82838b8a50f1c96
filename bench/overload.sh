#!/usr/bin/env bash
# The adaptive-concurrency benchmark: a backend whose latency grows with its concurrency,
# driven past its capacity by an open-loop load, behind remora with no limit, with static
# limits guessed high and low, and with `adaptive_concurrency: {}`. Prints markdown tables
# on stdout (progress on stderr). See bench/README.md.
#
# Environment (defaults): WORKERS=32 and SERVICE_MS=50 (the backend: 640 requests/s),
# RATE=1.5 × capacity, DURATION=20 (s per scenario; 5 scenarios, ≈ 2 min in all),
# REMORA_BIN=<repo>/target/release-fast/remora (built with `cargo build --profile
# release-fast` if missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export REMORA_BIN=${REMORA_BIN:-$ROOT/target/release-fast/remora}
command -v python3 >/dev/null || { echo "python3 not found: apt-get install python3" >&2; exit 1; }
if [[ ! -x "$REMORA_BIN" ]]; then
  echo "[overload] building $REMORA_BIN" >&2
  (cd "$ROOT" && cargo build --profile release-fast >&2)
fi
exec python3 "$ROOT/bench/overload.py" run
