#!/usr/bin/env bash
# Throughput, latency and memory of remora (without policies, and with the whole stack of
# bench/full-stack.yaml) against a direct connection and HAProxy, in one run.
# Prints markdown tables on stdout (progress goes to stderr). See bench/README.md.
#
#   bench/run.sh               # direct, haproxy, remora, remora-full
#   bench/run.sh --no-remora   # direct and haproxy only
#
# Environment (defaults): W=1 proxy worker threads, CONNS=50, DURATION=8 (s, each c=CONNS and
# each c=1 run), WARMUP=2 (s), ROUNDS=3 (targets measured round-robin, median reported),
# IDLE=10 (s before the "after" RSS readings), CLIENTS=1000 (keep-alive clients held open for
# the RSS reading), SERVER_CPUS=0 (origin + proxy), WRK_CPUS=1, WRK_THREADS=1,
# REMORA_BIN=<repo>/target/release/remora (built with `cargo build --release` if missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${W:-1}
CONNS=${CONNS:-50}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
IDLE=${IDLE:-10}
CLIENTS=${CLIENTS:-1000}
SERVER_CPUS=${SERVER_CPUS:-0}
WRK_CPUS=${WRK_CPUS:-1}
WRK_THREADS=${WRK_THREADS:-1}
REMORA_BIN=${REMORA_BIN:-$ROOT/target/release/remora}
READY_TIMEOUT=10 # seconds per server

LOG_TAG=bench
TMP_PREFIX=remora-bench
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

for tool in wrk haproxy taskset curl python3; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install wrk haproxy util-linux curl python3)"
done
require_integers W CONNS DURATION WARMUP ROUNDS IDLE CLIENTS WRK_THREADS
((W > 0 && ROUNDS > 0 && DURATION > 0 && CLIENTS > 0)) || die "W, ROUNDS, DURATION and CLIENTS must be > 0"

# The keep-alive clients hold CLIENTS connections to every proxy at once, and each proxy
# holds CLIENTS of its own: raise the open-files limit (inherited by all) when it is short.
raise_open_files $((3 * CLIENTS + 256))

read -r ORIGIN_PORT HAPROXY_PORT HAPROXY_SECOND_PORT REMORA_PORT ADMIN_PORT \
  FULL_PORT FULL_SECOND_PORT FULL_ADMIN_PORT <<<"$(free_ports 8)"

# Latency as printed by wrk (e.g. 412.00us, 1.23ms, 1.01s) -> milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'
}

# --- peer proxy: HAProxy with W threads ---------------------------------------------------
# Two frontend/backend pairs, as remora-full has two upstreams (the idle RSS compares like
# with like); the second one is never measured.
{
  haproxy_common "$W"
  cat <<EOF
frontend proxy
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend origin
backend origin
    server origin 127.0.0.1:$ORIGIN_PORT
frontend second
    bind 127.0.0.1:$HAPROXY_SECOND_PORT
    default_backend second
backend second
    server origin 127.0.0.1:$ORIGIN_PORT
EOF
} >"$TMP/haproxy.cfg"

# --- remora: no policy configured (the baseline) -------------------------------------------
no_policy_config "$REMORA_PORT" "$ADMIN_PORT" "$W" >"$TMP/remora.yaml"

# --- remora-full: bench/full-stack.yaml, every layer on; its variables say where to listen --
export BENCH_ORIGIN=127.0.0.1:$ORIGIN_PORT BENCH_LISTEN=127.0.0.1:$FULL_PORT \
  BENCH_SECOND_LISTEN=127.0.0.1:$FULL_SECOND_PORT BENCH_ADMIN=127.0.0.1:$FULL_ADMIN_PORT \
  BENCH_WORKER_THREADS=$W
FULL_CONFIG=$ROOT/bench/full-stack.yaml

if ((RUN_REMORA)) && [[ ! -x "$REMORA_BIN" ]]; then
  log "building remora (cargo build --release) because $REMORA_BIN is missing"
  (cd "$ROOT" && cargo build --release >&2)
  [[ -x "$REMORA_BIN" ]] || die "no executable at $REMORA_BIN after the build"
fi
if ((RUN_REMORA)); then
  "$REMORA_BIN" validate --config "$FULL_CONFIG" >&2 || die "$FULL_CONFIG does not validate"
fi

# --- measurement ---------------------------------------------------------------------------
# Per target, one value per round (space-separated); the report shows the medians.
# C1_* are the c=1 runs, RSS_* the proxies' resident memory (MiB; RSS_PEAK: the largest).
declare -A PORT PID RPS P50 P99 USREQ SYSREQ PREEMPT C1_P50 C1_P99 NOTE
declare -A RSS_IDLE RSS_PEAK RSS_AFTER RSS_CLIENTS RSS_CLIENTS_AFTER

# wrk_run NAME LABEL CONNECTIONS THREADS DURATION: one wrk run against NAME's port; the output
# file is left in WRK_OUT. Fails the run when no request completed; marks NAME on errors.
wrk_run() {
  local name=$1 label=$2 conns=$3 threads=$4 duration=$5 requests
  WRK_OUT="$TMP/wrk-$name-$label.txt"
  taskset -c "$WRK_CPUS" wrk -t"$threads" -c"$conns" -d"${duration}s" --latency \
    "http://127.0.0.1:${PORT[$name]}/" >"$WRK_OUT"
  requests=$(awk '/requests in/ { print $1 }' "$WRK_OUT")
  [[ "$requests" =~ ^[0-9]+$ && "$requests" -gt 0 ]] || { cat "$WRK_OUT" >&2; die "$name: no requests completed"; }
  if grep -qE 'Non-2xx|Socket errors' "$WRK_OUT"; then
    NOTE[$name]=" ⚠ errors"
    log "$name ($label): WARNING: $(grep -E 'Non-2xx|Socket errors' "$WRK_OUT" | tr -s ' ' | paste -sd ';')"
  fi
}

# A percentile (50%, 99%) of the last wrk run, in ms.
percentile_ms() { to_ms "$(awk -v p="$1" '$1 == p { print $2 }' "$WRK_OUT")"; }

# Fails the run when a proxy has died (the direct target has no PID).
check_alive() {
  local name=$1
  [[ "${PID[$name]}" == - ]] || kill -0 "${PID[$name]}" 2>/dev/null ||
    { tail -n 20 "$TMP/$name.log" >&2; die "$name died"; }
}

# bench NAME ROUND: warm-up (first round only), then one measured run with CONNS connections.
# PID[NAME] (or -) is the proxy whose CPU time is accounted to the requests and whose RSS is read.
bench() {
  local name=$1 round=$2 pid=${PID[$1]} user0 system0 user1 system1 preempted0 preempted1
  local requests rss
  check_alive "$name"
  if ((round == 1 && WARMUP > 0)); then
    log "$name: warm-up ${WARMUP}s"
    wrk_run "$name" warmup "$CONNS" "$WRK_THREADS" "$WARMUP"
  fi
  log "$name: round $round/$ROUNDS, measuring ${DURATION}s with $CONNS connections"
  if [[ "$pid" != - ]]; then
    read -r user0 system0 <<<"$(cpu_ticks_split "$pid")"
    preempted0=$(preemptions "$pid")
  fi
  wrk_run "$name" "c$CONNS-$round" "$CONNS" "$WRK_THREADS" "$DURATION"
  if [[ "$pid" != - ]]; then
    read -r user1 system1 <<<"$(cpu_ticks_split "$pid")"
    preempted1=$(preemptions "$pid")
  fi

  requests=$(awk '/requests in/ { print $1 }' "$WRK_OUT")
  RPS[$name]+=" $(awk '/^Requests\/sec:/ { print $2 }' "$WRK_OUT")"
  P50[$name]+=" $(percentile_ms 50%)"
  P99[$name]+=" $(percentile_ms 99%)"
  if [[ "$pid" != - ]]; then
    USREQ[$name]+=" $(us_per_request $((user1 + system1 - user0 - system0)) "$requests")"
    SYSREQ[$name]+=" $(us_per_request $((system1 - system0)) "$requests")"
    PREEMPT[$name]+=" $(awk -v p=$((preempted1 - preempted0)) -v n="$requests" \
      'BEGIN { printf "%.3f", p / n }')"
    rss=$(rss_mb "$pid")
    RSS_PEAK[$name]=$(awk -v a="${RSS_PEAK[$name]:-0}" -v b="$rss" 'BEGIN { print (b > a ? b : a) }')
  fi
}

# bench_c1 NAME ROUND: one measured run with a single connection (latency of one request at
# a time, no queueing).
bench_c1() {
  local name=$1 round=$2
  check_alive "$name"
  log "$name: round $round/$ROUNDS, measuring ${DURATION}s with 1 connection"
  wrk_run "$name" "c1-$round" 1 1 "$DURATION"
  C1_P50[$name]+=" $(percentile_ms 50%)"
  C1_P99[$name]+=" $(percentile_ms 99%)"
}

start_origin
PORT[direct]=$ORIGIN_PORT PID[direct]=-

# All proxies stay up for the whole run (an idle one costs nothing) so that rounds can
# interleave the targets: slow drift of the machine then hits every target alike.
start_haproxy haproxy "$TMP/haproxy.cfg"
PORT[haproxy]=$HAPROXY_PORT PID[haproxy]=$STARTED_PID
wait_ready haproxy "http://127.0.0.1:$HAPROXY_PORT/" "${PID[haproxy]}" "$TMP/haproxy.log"
TARGETS=(direct haproxy)

# start_remora NAME CONFIG ADMIN_PORT PORT
start_remora() {
  local name=$1 config=$2 admin_port=$3 port=$4
  taskset -c "$SERVER_CPUS" "$REMORA_BIN" run --config "$config" >"$TMP/$name.log" 2>&1 &
  PIDS+=("$!")
  PORT[$name]=$port PID[$name]=$!
  wait_ready "$name" "http://127.0.0.1:$admin_port/ready" "${PID[$name]}" "$TMP/$name.log"
  TARGETS+=("$name")
}
if ((RUN_REMORA)); then
  start_remora remora "$TMP/remora.yaml" "$ADMIN_PORT" "$REMORA_PORT"
  start_remora remora-full "$FULL_CONFIG" "$FULL_ADMIN_PORT" "$FULL_PORT"
fi
PROXIES=("${TARGETS[@]:1}")

for t in "${PROXIES[@]}"; do RSS_IDLE[$t]=$(rss_mb "${PID[$t]}"); done

for ((round = 1; round <= ROUNDS; round++)); do
  for t in "${TARGETS[@]}"; do bench "$t" "$round"; done
  for t in "${TARGETS[@]}"; do bench_c1 "$t" "$round"; done
done

log "all targets idle ${IDLE}s for the RSS reading after the load"
sleep "$IDLE"
for t in "${PROXIES[@]}"; do RSS_AFTER[$t]=$(rss_mb "${PID[$t]}"); done

log "$CLIENTS keep-alive clients to each proxy, then closed and ${IDLE}s idle"
CLIENT_TARGETS=()
for t in "${PROXIES[@]}"; do
  check_alive "$t"
  CLIENT_TARGETS+=("$t:${PORT[$t]}:${PID[$t]}")
done
taskset -c "$WRK_CPUS" python3 "$ROOT/bench/keepalive_clients.py" "$CLIENTS" "$IDLE" \
  "${CLIENT_TARGETS[@]}" >"$TMP/clients.txt" || die "the keep-alive clients failed (above)"
while read -r t open after; do
  RSS_CLIENTS[$t]=$open RSS_CLIENTS_AFTER[$t]=$after
done <"$TMP/clients.txt"

# --- report --------------------------------------------------------------------------------
spread() { tr ' ' '\n' <<<"$1" | { grep . || true; } | sort -g | awk '{ v[NR] = $1 } END { printf "%.0f–%.0f", v[1], v[NR] }'; }
# Milliseconds -> whole microseconds; the difference of two ms figures in µs, signed.
us() { awk -v v="$1" 'BEGIN { printf "%.0f", v * 1000 }'; }
added_us() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.0f", (a - b) * 1000 }'; }

# The cells of the summary (and the c=1 table's "added" ones), for proxy $1.
rps_cell() { printf '%.0f' "$(median "${RPS[$1]}")"; }
cpu_cell() { printf '%.1f' "$(median "${USREQ[$1]}")"; }
system_cell() { printf '%.1f' "$(median "${SYSREQ[$1]}")"; }
preempt_cell() { printf '%.2f' "$(median "${PREEMPT[$1]}")"; }
added_p50_cell() { added_us "$(median "${C1_P50[$1]}")" "$(median "${C1_P50[direct]}")"; }
added_p99_cell() { added_us "$(median "${C1_P99[$1]}")" "$(median "${C1_P99[direct]}")"; }
rss_idle_cell() { echo "${RSS_IDLE[$1]}"; }
rss_peak_cell() { echo "${RSS_PEAK[$1]}"; }
rss_after_cell() { echo "${RSS_AFTER[$1]}"; }
rss_clients_cell() { echo "${RSS_CLIENTS[$1]}"; }
rss_clients_after_cell() { echo "${RSS_CLIENTS_AFTER[$1]}"; }
# summary_row LABEL CELL: one row of the summary, CELL's value for each proxy.
summary_row() {
  local label=$1 cell=$2 t
  printf '| %s |' "$label"
  for t in "${PROXIES[@]}"; do printf ' %s |' "$("$cell" "$t")"; done
  echo
}

REMORA_NOTE=
if ((RUN_REMORA)); then
  REMORA_NOTE="remora: no policy, one upstream; remora-full: bench/full-stack.yaml (every layer on, two upstreams); "
fi
REV=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
echo "Run $(date -u +%Y-%m-%dT%H:%MZ), remora $REV, $(haproxy -v | head -n1 | cut -d' ' -f1-3)," \
  "kernel $(uname -r), $(nproc) CPUs."
echo "HTTP/1.1 keep-alive, wrk -t$WRK_THREADS -c$CONNS and wrk -t1 -c1, --latency, ${DURATION}s per" \
  "measurement (${WARMUP}s warm-up first), $ROUNDS interleaved rounds, medians shown; W=$W proxy" \
  "threads; origin + proxy on CPU $SERVER_CPUS, wrk on CPU $WRK_CPUS;" \
  "origin = single-thread HAProxy \`http-request return\` (5-byte body)." \
  "${REMORA_NOTE}haproxy: two frontend/backend pairs."
echo
printf '| measure |'
printf ' %s |' "${PROXIES[@]}"
printf '\n|---|'
printf -- '---:|%.0s' "${PROXIES[@]}"
echo
summary_row "HTTP/1.1 keep-alive c=$CONNS, req/s" rps_cell
summary_row "CPU per request (c=$CONNS), µs" cpu_cell
summary_row "of which system (kernel) time, µs" system_cell
summary_row "preemptions per request (c=$CONNS)" preempt_cell
summary_row "c=1 added p50 over direct, µs" added_p50_cell
summary_row "c=1 added p99 over direct, µs" added_p99_cell
summary_row "idle RSS (before any load), MB" rss_idle_cell
summary_row "RSS right after a c=$CONNS run (largest), MB" rss_peak_cell
summary_row "RSS ${IDLE} s after the load, MB" rss_after_cell
summary_row "RSS with $CLIENTS keep-alive clients open, MB" rss_clients_cell
summary_row "RSS ${IDLE} s after they closed, MB" rss_clients_after_cell
echo
echo "| target | requests/s | req/s range | p50 (ms) | p99 (ms) | × direct | × HAProxy | proxy CPU µs/req |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for t in "${TARGETS[@]}"; do
  rps=$(median "${RPS[$t]}")
  usreq=$(median "${USREQ[$t]:-}")
  [[ "$usreq" == — ]] || usreq=$(printf '%.1f' "$usreq")
  printf '| %s%s | %.0f | %s | %s | %s | %s | %s | %s |\n' "$t" "${NOTE[$t]:-}" "$rps" \
    "$(spread "${RPS[$t]}")" "$(printf '%.3f' "$(median "${P50[$t]}")")" \
    "$(printf '%.3f' "$(median "${P99[$t]}")")" \
    "$(ratio "$rps" "$(median "${RPS[direct]}")")" "$(ratio "$rps" "$(median "${RPS[haproxy]}")")" \
    "$usreq"
done
echo
echo "| target, c=1 | p50 (µs) | p99 (µs) | added p50 over direct (µs) | added p99 over direct (µs) |"
echo "|---|---:|---:|---:|---:|"
for t in "${TARGETS[@]}"; do
  added50=— added99=—
  [[ "$t" == direct ]] || added50=$(added_p50_cell "$t") added99=$(added_p99_cell "$t")
  printf '| %s | %s | %s | %s | %s |\n' "$t" "$(us "$(median "${C1_P50[$t]}")")" \
    "$(us "$(median "${C1_P99[$t]}")")" "$added50" "$added99"
done
