#!/usr/bin/env bash
# What the live tap (admin GET /tap) costs the data path: one remora process measured with
# wrk, round-robin, with no tap stream open (`idle`, the zero-cost claim), with one stream
# whose filter matches nothing (`tap-nomatch`: every request's event is built and filtered
# out), and with one stream that takes every request (`tap-all`: events built, 100/s sent,
# the rest dropped and counted) — and, when BASELINE_BIN is set, a remora built without the
# tap (e.g. main's) on the same origin, as `baseline`. Prints a markdown table on stdout:
# the medians of requests/s, remora's CPU time per request, p50 and p99.
#
#   bench/tap.sh
#   BASELINE_BIN=/path/to/old/remora ROUNDS=5 bench/tap.sh
#
# Environment (defaults): CONNS=50, DURATION=5 (s per run), WARMUP=2, ROUNDS=3, SERVER_CPUS=0,
# WRK_CPUS=1, REMORA_BIN=<repo>/target/release-fast/remora (built if missing), BASELINE_BIN
# (none). Needs wrk, haproxy, taskset, curl, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONNS=${CONNS:-50}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
SERVER_CPUS=${SERVER_CPUS:-0}
WRK_CPUS=${WRK_CPUS:-1}
REMORA_BIN=${REMORA_BIN:-$ROOT/target/release-fast/remora}
BASELINE_BIN=${BASELINE_BIN:-}

LOG_TAG=tap-bench
TMP_PREFIX=remora-tap-bench
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

for tool in wrk haproxy taskset curl python3; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install wrk haproxy util-linux curl python3)"
done
require_integers CONNS DURATION WARMUP ROUNDS
if [[ ! -x "$REMORA_BIN" ]]; then
  log "building remora (cargo build --profile release-fast)"
  (cd "$ROOT" && cargo build --profile release-fast --bin remora >&2)
fi

read -r ORIGIN_PORT REMORA_PORT ADMIN_PORT BASE_PORT BASE_ADMIN_PORT <<<"$(free_ports 5)"

start_origin

declare -A PORT PID RPS USREQ P50 P99
start_remora() { # name binary port admin
  no_policy_config "$3" "$4" 1 >"$TMP/$1.yaml"
  taskset -c "$SERVER_CPUS" "$2" run --config "$TMP/$1.yaml" >"$TMP/$1.log" 2>&1 &
  PID[$1]=$!
  PIDS+=("$!")
  PORT[$1]=$3
  wait_ready "$1" "http://127.0.0.1:$4/ready" "${PID[$1]}" "$TMP/$1.log"
}
start_remora remora "$REMORA_BIN" "$REMORA_PORT" "$ADMIN_PORT"
SCENARIOS=(idle tap-nomatch tap-all)
if [[ -n "$BASELINE_BIN" ]]; then
  start_remora baseline "$BASELINE_BIN" "$BASE_PORT" "$BASE_ADMIN_PORT"
  SCENARIOS=(baseline "${SCENARIOS[@]}")
fi

to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; printf "%.3f", n }'
}

# measure SCENARIO: one wrk run against its process, a tap stream open as it says.
measure() {
  local scenario=$1 name=remora query="" tap_pid="" before after requests out
  case "$scenario" in
    baseline) name=baseline ;;
    tap-nomatch) query="upstream=nobody" ;;
    tap-all) query="" ;;
  esac
  if [[ "$scenario" == tap-* ]]; then
    curl -sN "http://127.0.0.1:$ADMIN_PORT/tap?$query" >"$TMP/tap-$scenario.ndjson" &
    tap_pid=$!
    local deadline=$((SECONDS + 5))
    until grep -q subscribed "$TMP/tap-$scenario.ndjson" 2>/dev/null; do
      ((SECONDS < deadline)) || die "the tap stream did not open"
      sleep 0.05
    done
  fi
  out="$TMP/wrk-$scenario.txt"
  before=$(cpu_ticks "${PID[$name]}")
  taskset -c "$WRK_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:${PORT[$name]}/" >"$out"
  after=$(cpu_ticks "${PID[$name]}")
  if [[ -n "$tap_pid" ]]; then
    kill "$tap_pid"
    wait "$tap_pid" 2>/dev/null || true
  fi
  requests=$(awk '/requests in/ { print $1 }' "$out")
  [[ "$requests" =~ ^[0-9]+$ && "$requests" -gt 0 ]] || { cat "$out" >&2; die "$scenario: no requests"; }
  grep -qE 'Non-2xx|Socket errors' "$out" && log "$scenario: WARNING: errors in the run"
  RPS[$scenario]+="$(awk '/Requests\/sec/ { print $2 }' "$out") "
  USREQ[$scenario]+="$(us_per_request $((after - before)) "$requests") "
  P50[$scenario]+="$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")") "
  P99[$scenario]+="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")") "
}

for name in "${!PORT[@]}"; do
  log "$name: warm-up ${WARMUP}s"
  taskset -c "$WRK_CPUS" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:${PORT[$name]}/" >/dev/null
done
for round in $(seq "$ROUNDS"); do
  for scenario in "${SCENARIOS[@]}"; do
    log "round $round/$ROUNDS: $scenario"
    measure "$scenario"
  done
done

echo "| scenario | requests/s | remora CPU µs/request | p50 ms | p99 ms | requests/s per round |"
echo "|---|---|---|---|---|---|"
for scenario in "${SCENARIOS[@]}"; do
  echo "| $scenario | $(median "${RPS[$scenario]}") | $(median "${USREQ[$scenario]}") | $(median "${P50[$scenario]}") | $(median "${P99[$scenario]}") | ${RPS[$scenario]% } |"
done
