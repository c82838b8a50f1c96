#!/usr/bin/env bash
# Instructions remora executes per request (user space, counted by valgrind's callgrind), for
# paired A/B comparisons of code changes on a machine too noisy for timings. Instruction
# counts do not move with the load of other processes: two runs of the same binary agree
# within about 0.2 %, so a change of 1 % shows. They leave out the kernel's work; with CACHE=1
# callgrind also simulates the caches and branch predictors and the table adds the estimated
# cycles a request (see below). They complement bench/run.sh rather than replace it. See
# bench/README.md.
#
#   bench/instructions.sh                          # target/release/remora, both configs
#   bench/instructions.sh A=path/to/old B=path/to/new   # the binaries side by side
#   PROTOCOL=h2c bench/instructions.sh A=... B=...      # h2c on both sides, no policy
#   CACHE=1 HAPROXY=1 bench/instructions.sh             # estimated cycles, HAProxy beside
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
# With CACHE=1, each figure is the estimated cycles a request, kcachegrind's formula:
# instructions + 10 × (first-level cache misses, instruction and data, and mispredicted
# branches) + 100 × last-level misses; the misses a request follow in brackets. A proxy's
# cost is as much in its misses as in its instructions: the estimate follows the user time
# measured by run.sh where the instruction count alone does not.
# With HAPROXY=1, a single-thread HAProxy proxying to the same origin is measured the same
# way in each round, as the row `haproxy` (the reference of run.sh and h2c.sh).
#
# Environment (defaults): DURATION=6 (s), ROUNDS=2 (each binary and config measured this many
# times, alternating), PROTOCOL=http1 (or h2c), CACHE=0, HAPROXY=0,
# REMORA_BIN=<repo>/target/release/remora (when no NAME=path is given), PROFILE_DIR= (when set,
# each measurement's callgrind profile is kept there as NAME-CONFIG-ROUND.callgrind, for
# callgrind_annotate --inclusive=yes), CALLGRIND_ARGS= (more valgrind arguments, e.g.
# `--dump-instr=yes` for costs by source line, with `callgrind_annotate --auto=yes`, of a binary
# built with `CARGO_PROFILE_RELEASE_DEBUG=line-tables-only`).
# Needs the Debian packages valgrind, wrk, haproxy, util-linux (taskset), curl, python3, and
# for h2c nghttp2-client (h2load).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-2}
PROTOCOL=${PROTOCOL:-http1}
PROFILE_DIR=${PROFILE_DIR:-}
CACHE=${CACHE:-0}
HAPROXY=${HAPROXY:-0}
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
require_integers DURATION ROUNDS CACHE HAPROXY
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
HAPROXY_PROTO=
if [[ $PROTOCOL == h2c ]]; then
  sed -i 's/^    protocol: http$/    protocol: http2/' "$TMP/remora.yaml"
  READY_H2C=1 # the listener of an http2 upstream speaks HTTP/2 only
  HAPROXY_PROTO=" proto h2"
fi
{
  haproxy_common 1
  cat <<EOF
frontend proxy
    bind 127.0.0.1:$LISTEN_PORT$HAPROXY_PROTO
    default_backend origin
backend origin
    server origin 127.0.0.1:$ORIGIN_PORT$HAPROXY_PROTO
EOF
} >"$TMP/haproxy.cfg"

VALGRIND=(valgrind --tool=callgrind)
read -r -a EXTRA <<<"${CALLGRIND_ARGS:-}"
VALGRIND+=("${EXTRA[@]}")
((CACHE)) && VALGRIND+=(--cache-sim=yes --branch-sim=yes)

# Sends load to URL for $1 seconds; prints the requests completed.
load() { # seconds url
  if [[ $PROTOCOL == h2c ]]; then
    h2load -c10 -m10 -D "$1" "$2" | awk '/^requests:/ { for (i = 2; i < NF; i++) if ($(i + 1) ~ /^succeeded/) print $i }'
  else
    wrk -t1 -c10 -d"$1s" "$2" | awk '/requests in/ { print $1 }'
  fi
}

# The figures a request in profile $1 of $2 requests: the instructions, then with CACHE=1 the
# estimated cycles, the first-level cache misses (instructions, data) and mispredicted branches.
per_request() { # profile requests
  callgrind_annotate "$1" 2>/dev/null | awk -v n="$2" '
    /^Events shown:/ { for (i = 3; i <= NF; i++) name[i - 2] = $i }
    /PROGRAM TOTALS/ { # a figure other than 0 is followed by its share, "(100.0%)"
      k = 0
      for (i = 1; i <= NF && (k + 1) in name; i++)
        if ($i !~ /^\(/) { v = $i; gsub(",", "", v); e[name[++k]] = v / n }
      printf "%d", e["Ir"]
      if ("I1mr" in e)
        printf " %d %d %d %d", e["Ir"] + 10 * (e["I1mr"] + e["D1mr"] + e["D1mw"] + e["Bcm"] + e["Bim"]) \
          + 100 * (e["ILmr"] + e["DLmr"] + e["DLmw"]), e["I1mr"], e["D1mr"] + e["D1mw"], e["Bcm"] + e["Bim"]
      print ""
    }'
}

# The figures a request (see per_request) of the proxy the command starts; its profile is kept
# as NAME when PROFILE_DIR is set.
measure() { # name command...
  local name=$1 url="http://127.0.0.1:$LISTEN_PORT/" pid requests profile
  shift
  BENCH_ADMIN=127.0.0.1:$ADMIN_PORT BENCH_LISTEN=127.0.0.1:$LISTEN_PORT \
    BENCH_SECOND_LISTEN=127.0.0.1:$SECOND_PORT BENCH_ORIGIN=127.0.0.1:$ORIGIN_PORT \
    BENCH_WORKER_THREADS=1 "${VALGRIND[@]}" --callgrind-out-file="$TMP/callgrind.%p" \
    "$@" >"$TMP/proxy.log" 2>&1 &
  pid=$!
  wait_ready "$1" "$url" "$pid" "$TMP/proxy.log"
  load 2 "$url" >/dev/null
  callgrind_control --zero "$pid" >/dev/null 2>&1
  requests=$(load "$DURATION" "$url")
  callgrind_control --dump "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  profile=$(ls -t "$TMP"/callgrind."$pid".* | head -n1)
  [[ -n $PROFILE_DIR ]] && cp "$profile" "$PROFILE_DIR/$name.callgrind"
  per_request "$profile" "$requests"
  rm -f "$TMP"/callgrind."$pid"*
}

# FIGURES[ROW CONFIG K]: the K-th figure of per_request, one value per round.
declare -A FIGURES
record() { # row config figures...
  local row=$1 config=$2 k=0 figure
  shift 2
  for figure in "$@"; do FIGURES[$row $config $((k++))]+="$figure "; done
}
ROWS=()
for binary in "${BINARIES[@]}"; do ROWS+=("${binary%%=*}"); done
((HAPROXY)) && ROWS+=(haproxy)
for ((round = 1; round <= ROUNDS; round++)); do
  for binary in "${BINARIES[@]}"; do
    for config in "${CONFIGS[@]}"; do
      file="$TMP/remora.yaml"
      [[ $config == full ]] && file="$ROOT/bench/full-stack.yaml"
      log "round $round: ${binary%%=*} $config"
      # An assignment, so that a failed measurement ends the run (set -e).
      figures=$(measure "${binary%%=*}-$config-$round" "${binary#*=}" run --config "$file")
      # shellcheck disable=SC2086 # one word a figure
      record "${binary%%=*}" "$config" $figures
    done
  done
  if ((HAPROXY)); then
    log "round $round: haproxy"
    figures=$(measure "haproxy-$round" haproxy -db -f "$TMP/haproxy.cfg")
    # shellcheck disable=SC2086 # one word a figure
    record haproxy remora $figures
  fi
done

# One table cell: the median of the main figure (instructions; with CACHE=1 estimated cycles)
# and every round's in brackets; with CACHE=1, the medians of the misses after it.
cell() { # row config
  local key="$1 $2" main=0
  [[ -n ${FIGURES[$key 0]:-} ]] || { echo "—"; return; }
  ((CACHE)) && main=1
  printf '%s (%s)' "$(median "${FIGURES[$key $main]}")" "${FIGURES[$key $main]% }"
  ((CACHE)) && printf '; %s instructions, %s I1 + %s D1 misses, %s mispredicted' \
    "$(median "${FIGURES[$key 0]}")" "$(median "${FIGURES[$key 2]}")" \
    "$(median "${FIGURES[$key 3]}")" "$(median "${FIGURES[$key 4]}")"
  echo
}

load_used="HTTP/1.1 keep-alive, wrk -c10"
[[ $PROTOCOL == h2c ]] && load_used="h2c on both sides, h2load -c10 -m10"
unit="instructions/request"
((CACHE)) && unit="est. cycles/request"
echo "Run $(date -u +%Y-%m-%dT%H:%MZ), $(valgrind --version), $load_used," \
  "${DURATION}s per measurement, $ROUNDS rounds (median; all figures in brackets)."
echo
echo "| binary | no policy, $unit | whole stack, $unit |"
echo "|---|---:|---:|"
for row in "${ROWS[@]}"; do
  if [[ $row == haproxy ]]; then
    full="— (no policy to run)"
  elif [[ $PROTOCOL == h2c ]]; then
    full="not measured (HTTP/1.1 only)"
  else
    full=$(cell "$row" full)
  fi
  echo "| $row | $(cell "$row" remora) | $full |"
done
