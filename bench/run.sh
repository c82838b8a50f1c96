#!/usr/bin/env bash
# Throughput/latency of remora against a direct connection and HAProxy, in one run.
# Prints a markdown table on stdout (progress goes to stderr). See bench/README.md.
#
#   bench/run.sh               # direct, haproxy, remora
#   bench/run.sh --no-remora   # direct and haproxy only
#
# Environment (defaults): W=1 proxy worker threads, CONNS=50, DURATION=10 (s), WARMUP=2 (s),
# ROUNDS=3 (targets measured round-robin, median reported), SERVER_CPUS=0 (origin + proxy),
# WRK_CPUS=1, WRK_THREADS=1,
# REMORA_BIN=<repo>/target/release/remora (built with `cargo build --release` if missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${W:-1}
CONNS=${CONNS:-50}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
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
require_integers W CONNS DURATION WARMUP ROUNDS WRK_THREADS
((W > 0 && ROUNDS > 0 && DURATION > 0)) || die "W, ROUNDS and DURATION must be > 0"

read -r ORIGIN_PORT HAPROXY_PORT REMORA_PORT ADMIN_PORT <<<"$(free_ports 4)"

# Polls URL until it answers 200, for at most READY_TIMEOUT s; fails early if PID died.
wait_ready() {
  local name=$1 url=$2 pid=$3 logfile=$4
  local deadline=$((SECONDS + READY_TIMEOUT))
  until [[ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url")" == 200 ]]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$logfile" >&2 || true
      die "$name exited before becoming ready"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$logfile" >&2 || true
      die "$name not ready at $url after ${READY_TIMEOUT}s"
    fi
    sleep 0.05
  done
}

# Latency as printed by wrk (e.g. 412.00us, 1.23ms, 1.01s) -> milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'
}

start_haproxy() { # name cfg -> sets STARTED_PID
  local name=$1 cfg=$2
  taskset -c "$SERVER_CPUS" haproxy -db -f "$cfg" >"$TMP/$name.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

haproxy_common() {
  cat <<EOF
global
    nbthread $1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
EOF
}

# --- origin: a separate HAProxy answering a fixed body, single thread --------------------
{
  haproxy_common 1
  cat <<EOF
frontend origin
    bind 127.0.0.1:$ORIGIN_PORT
    http-request return status 200 content-type text/plain string "hello"
EOF
} >"$TMP/origin.cfg"

# --- peer proxy: HAProxy with W threads ---------------------------------------------------
{
  haproxy_common "$W"
  cat <<EOF
frontend proxy
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend origin
backend origin
    server origin 127.0.0.1:$ORIGIN_PORT
EOF
} >"$TMP/haproxy.cfg"

# --- remora --------------------------------------------------------------------------------
cat >"$TMP/remora.yaml" <<EOF
service: { name: bench }
upstreams:
  - name: origin
    listen: 127.0.0.1:$REMORA_PORT
    protocol: http
    discovery: { static: [127.0.0.1:$ORIGIN_PORT] }
    load_balancing: { policy: round_robin }
admin: { listen: 127.0.0.1:$ADMIN_PORT }
runtime: { worker_threads: $W }
logging: { level: warn, access_log: false }
EOF

if ((RUN_REMORA)) && [[ ! -x "$REMORA_BIN" ]]; then
  log "building remora (cargo build --release) because $REMORA_BIN is missing"
  (cd "$ROOT" && cargo build --release >&2)
  [[ -x "$REMORA_BIN" ]] || die "no executable at $REMORA_BIN after the build"
fi

# --- measurement ---------------------------------------------------------------------------
# Per target, one value per round (space-separated); the report shows the medians.
declare -A RPS P50 P99 USREQ NOTE

# bench NAME URL PID ROUND: warm-up (first round only), then one measured run.
# PID (or -) is the proxy whose CPU time is accounted to the requests.
bench() {
  local name=$1 url=$2 pid=$3 round=$4 out="$TMP/wrk-$1-$4.txt" before after requests
  local wrk=(taskset -c "$WRK_CPUS" wrk -t"$WRK_THREADS" -c"$CONNS" --latency)
  if ((round == 1 && WARMUP > 0)); then
    log "$name: warm-up ${WARMUP}s"
    "${wrk[@]}" -d"${WARMUP}s" "$url" >/dev/null
  fi
  log "$name: round $round/$ROUNDS, measuring ${DURATION}s"
  [[ "$pid" == - ]] || before=$(cpu_ticks "$pid")
  "${wrk[@]}" -d"${DURATION}s" "$url" >"$out"
  [[ "$pid" == - ]] || after=$(cpu_ticks "$pid")

  requests=$(awk '/requests in/ { print $1 }' "$out")
  [[ "$requests" =~ ^[0-9]+$ && "$requests" -gt 0 ]] || { cat "$out" >&2; die "$name: no requests completed"; }
  RPS[$name]+=" $(awk '/^Requests\/sec:/ { print $2 }' "$out")"
  P50[$name]+=" $(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")"
  P99[$name]+=" $(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")"
  if [[ "$pid" != - ]]; then
    USREQ[$name]+=" $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
      'BEGIN { printf "%.2f", t / hz * 1e6 / n }')"
  fi
  if grep -qE 'Non-2xx|Socket errors' "$out"; then
    NOTE[$name]=" ⚠ errors"
    log "$name: WARNING: $(grep -E 'Non-2xx|Socket errors' "$out" | tr -s ' ' | paste -sd ';')"
  fi
}

start_haproxy origin "$TMP/origin.cfg"
ORIGIN_PID=$STARTED_PID
wait_ready origin "http://127.0.0.1:$ORIGIN_PORT/" "$ORIGIN_PID" "$TMP/origin.log"

# Both proxies stay up for the whole run (an idle one costs nothing) so that rounds can
# interleave the targets: slow drift of the machine then hits every target alike.
start_haproxy haproxy "$TMP/haproxy.cfg"
HAPROXY_PID=$STARTED_PID
wait_ready haproxy "http://127.0.0.1:$HAPROXY_PORT/" "$HAPROXY_PID" "$TMP/haproxy.log"
TARGETS=(direct haproxy)

if ((RUN_REMORA)); then
  taskset -c "$SERVER_CPUS" "$REMORA_BIN" run --config "$TMP/remora.yaml" >"$TMP/remora.log" 2>&1 &
  REMORA_PID=$!
  PIDS+=("$REMORA_PID")
  wait_ready remora "http://127.0.0.1:$ADMIN_PORT/ready" "$REMORA_PID" "$TMP/remora.log"
  TARGETS+=(remora)
fi

for ((round = 1; round <= ROUNDS; round++)); do
  bench direct "http://127.0.0.1:$ORIGIN_PORT/" - "$round"
  bench haproxy "http://127.0.0.1:$HAPROXY_PORT/" "$HAPROXY_PID" "$round"
  if ((RUN_REMORA)); then
    kill -0 "$REMORA_PID" 2>/dev/null || { tail -n 20 "$TMP/remora.log" >&2; die "remora died"; }
    bench remora "http://127.0.0.1:$REMORA_PORT/" "$REMORA_PID" "$round"
  fi
done

# --- report --------------------------------------------------------------------------------
spread() { tr ' ' '\n' <<<"$1" | { grep . || true; } | sort -g | awk '{ v[NR] = $1 } END { printf "%.0f–%.0f", v[1], v[NR] }'; }

REV=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
echo "Run $(date -u +%Y-%m-%dT%H:%MZ), remora $REV, $(haproxy -v | head -n1 | cut -d' ' -f1-3)," \
  "kernel $(uname -r), $(nproc) CPUs."
echo "HTTP/1.1 keep-alive, wrk -t$WRK_THREADS -c$CONNS --latency, ${DURATION}s per measurement" \
  "(${WARMUP}s warm-up first), $ROUNDS interleaved rounds, medians shown; W=$W proxy threads;" \
  "origin + proxy on CPU $SERVER_CPUS, wrk on CPU $WRK_CPUS;" \
  "origin = single-thread HAProxy \`http-request return\` (5-byte body)."
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
