#!/usr/bin/env bash
# Instructions remora executes per request (user space, counted by valgrind's callgrind), for
# paired A/B comparisons of code changes on a machine too noisy for timings. Instruction
# counts do not move with the load of other processes: two runs of the same binary agree
# within about 0.2 %, so a change of 1 % shows. They leave out the kernel's work and cache
# effects, so they complement bench/run.sh rather than replace it. See bench/README.md.
#
#   bench/instructions.sh                          # target/release/remora, both configs
#   bench/instructions.sh A=path/to/old B=path/to/new   # the binaries side by side
#   PROTOCOL=h2c bench/instructions.sh A=... B=...      # h2c on both sides, no policy
#
# Each binary runs under callgrind behind the no-policy config and bench/full-stack.yaml (the
# whole stack), in front of a single-thread HAProxy answering every request; after a warm-up,
# the counters are zeroed, wrk sends HTTP/1.1 keep-alive requests (10 connections) for
# DURATION seconds, and the instructions counted are divided by the requests wrk completed.
# With PROTOCOL=h2c, h2load sends HTTP/2 prior-knowledge requests instead (10 connections ×
# 10 streams), remora's upstream speaks h2c to the same HAProxy (which detects the HTTP/2
# preface itself), and only the no-policy config is measured (the whole-stack config is
# HTTP/1.1's).
#
# Environment (defaults): DURATION=6 (s), ROUNDS=2 (each binary and config measured this many
# times, alternating), PROTOCOL=http1 (or h2c),
# REMORA_BIN=<repo>/target/release/remora (when no NAME=path is given), PROFILE_DIR= (when set,
# each measurement's callgrind profile is kept there as NAME-CONFIG-ROUND.callgrind, for
# callgrind_annotate --inclusive=yes).
# Needs the Debian packages valgrind, wrk, haproxy, util-linux (taskset), curl, python3, and
# for h2c nghttp2-client (h2load).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-2}
PROTOCOL=${PROTOCOL:-http1}
PROFILE_DIR=${PROFILE_DIR:-}
READY_TIMEOUT=60 # seconds: a binary starts slowly under callgrind

BINARIES=()
OTHER_ARGS=()
for arg in "$@"; do
  if [[ "$arg" == *=* ]]; then BINARIES+=("$arg"); else OTHER_ARGS+=("$arg"); fi
done
set -- "${OTHER_ARGS[@]}"
((${#BINARIES[@]})) || BINARIES=("remora=${REMORA_BIN:-$ROOT/target/release/remora}")

LOG_TAG=instructions
TMP_PREFIX=remora-instructions
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

for tool in valgrind callgrind_control callgrind_annotate wrk haproxy taskset curl python3; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install valgrind wrk haproxy util-linux curl python3)"
done
require_integers DURATION ROUNDS
case $PROTOCOL in
  http1) CONFIGS=(remora full) ;;
  h2c)
    CONFIGS=(remora)
    command -v h2load >/dev/null || die "h2load not found (apt-get install nghttp2-client)"
    ;;
  *) die "PROTOCOL must be http1 or h2c, not $PROTOCOL" ;;
esac
for binary in "${BINARIES[@]}"; do
  [[ -x "${binary#*=}" ]] || die "${binary#*=} is not an executable (build it: cargo build --release)"
done

read -r ORIGIN_PORT LISTEN_PORT SECOND_PORT ADMIN_PORT <<<"$(free_ports 4)"

start_origin
no_policy_config "$LISTEN_PORT" "$ADMIN_PORT" 1 >"$TMP/remora.yaml"
if [[ $PROTOCOL == h2c ]]; then
  sed -i 's/^    protocol: http$/    protocol: http2/' "$TMP/remora.yaml"
  READY_H2C=1 # the listener of an http2 upstream speaks HTTP/2 only
fi

# Sends load to URL for $1 seconds; prints the requests completed.
load() { # seconds url
  if [[ $PROTOCOL == h2c ]]; then
    h2load -c10 -m10 -D "$1" "$2" | awk '/^requests:/ { for (i = 2; i < NF; i++) if ($(i + 1) ~ /^succeeded/) print $i }'
  else
    wrk -t1 -c10 -d"$1s" "$2" | awk '/requests in/ { print $1 }'
  fi
}

# Instructions per request of binary $1 with config $2.
measure() {
  local binary=$1 config=$2 url="http://127.0.0.1:$LISTEN_PORT/" pid requests total profile
  BENCH_ADMIN=127.0.0.1:$ADMIN_PORT BENCH_LISTEN=127.0.0.1:$LISTEN_PORT \
    BENCH_SECOND_LISTEN=127.0.0.1:$SECOND_PORT BENCH_ORIGIN=127.0.0.1:$ORIGIN_PORT \
    BENCH_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.%p" \
    "$binary" run --config "$config" >"$TMP/remora.log" 2>&1 &
  pid=$!
  wait_ready "$binary" "$url" "$pid" "$TMP/remora.log"
  load 2 "$url" >/dev/null
  callgrind_control --zero "$pid" >/dev/null 2>&1
  requests=$(load "$DURATION" "$url")
  callgrind_control --dump "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  profile=$(ls -t "$TMP"/callgrind."$pid".* | head -n1)
  total=$(callgrind_annotate "$profile" 2>/dev/null |
    awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  [[ -n $PROFILE_DIR ]] && cp "$profile" "$PROFILE_DIR/$3.callgrind"
  rm -f "$TMP"/callgrind."$pid"*
  echo $((total / requests))
}

declare -A FIGURES
for ((round = 1; round <= ROUNDS; round++)); do
  for binary in "${BINARIES[@]}"; do
    for config in "${CONFIGS[@]}"; do
      file="$TMP/remora.yaml"
      [[ $config == full ]] && file="$ROOT/bench/full-stack.yaml"
      log "round $round: ${binary%%=*} $config"
      FIGURES[${binary%%=*} $config]+="$(measure "${binary#*=}" "$file" "${binary%%=*}-$config-$round") "
    done
  done
done

load_used="HTTP/1.1 keep-alive, wrk -c10"
[[ $PROTOCOL == h2c ]] && load_used="h2c on both sides, h2load -c10 -m10"
echo "Run $(date -u +%Y-%m-%dT%H:%MZ), $(valgrind --version), $load_used," \
  "${DURATION}s per measurement, $ROUNDS rounds (median; all figures in brackets)."
echo
echo "| binary | no policy, instructions/request | whole stack, instructions/request |"
echo "|---|---:|---:|"
for binary in "${BINARIES[@]}"; do
  name=${binary%%=*}
  full="not measured (HTTP/1.1 only)"
  [[ -n ${FIGURES[$name full]:-} ]] && full="$(median "${FIGURES[$name full]}") (${FIGURES[$name full]% })"
  echo "| $name | $(median "${FIGURES[$name remora]}") (${FIGURES[$name remora]% }) | $full |"
done
