#!/usr/bin/env bash
# HTTP/2 cleartext (h2c, prior knowledge): remora against a direct connection and HAProxy,
# in one run. Prints a markdown table on stdout (progress goes to stderr). See bench/README.md.
#
#   bench/h2c.sh               # direct, haproxy, remora
#   bench/h2c.sh --no-remora   # direct and haproxy only
#
# Environment (defaults): W=1 proxy worker threads, CONNS=50 and STREAMS=10 (h2load -c / -m),
# DURATION=10 (s), WARMUP=2 (s, first round only), ROUNDS=3 (targets measured round-robin,
# medians reported), IDLE=10 (s of idle after the last round, before the second RSS reading),
# SERVER_CPUS=0 (origin + proxy),
# LOAD_CPUS=1 and LOAD_THREADS=1 (h2load),
# REMORA_BIN=<repo>/target/release/remora (built with `cargo build --release` if missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${W:-1}
CONNS=${CONNS:-50}
STREAMS=${STREAMS:-10}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
IDLE=${IDLE:-10}
SERVER_CPUS=${SERVER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
LOAD_THREADS=${LOAD_THREADS:-1}
REMORA_BIN=${REMORA_BIN:-$ROOT/target/release/remora}
READY_TIMEOUT=10 # seconds per server

LOG_TAG=h2c
TMP_PREFIX=remora-h2c
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

# tool:Debian package
for dep in h2load:nghttp2-client nginx:nginx-light haproxy:haproxy taskset:util-linux \
  curl:curl python3:python3; do
  command -v "${dep%%:*}" >/dev/null ||
    die "${dep%%:*} not found: apt-get install ${dep#*:}" \
      "(all needed: nghttp2-client nginx-light haproxy util-linux curl python3)"
done
require_integers W CONNS STREAMS DURATION WARMUP ROUNDS IDLE LOAD_THREADS
((W > 0 && ROUNDS > 0 && DURATION > 0 && CONNS > 0 && STREAMS > 0 && LOAD_THREADS > 0)) ||
  die "W, ROUNDS, DURATION, CONNS, STREAMS and LOAD_THREADS must be > 0"
((LOAD_THREADS <= CONNS)) || die "LOAD_THREADS ($LOAD_THREADS) must not exceed CONNS ($CONNS)"

read -r ORIGIN_PORT HAPROXY_PORT REMORA_PORT ADMIN_PORT <<<"$(free_ports 4)"

# Waits until PORT accepts TCP connections (READY_TIMEOUT s at most); fails early if PID died.
wait_port() {
  local name=$1 port=$2 pid=$3 logfile=$4
  local deadline=$((SECONDS + READY_TIMEOUT))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || server_failed "$name" "$logfile" "exited before accepting connections"
    ((SECONDS < deadline)) || server_failed "$name" "$logfile" "not accepting on port $port after ${READY_TIMEOUT}s"
    sleep 0.05
  done
}


# One h2c request with h2load: proves the target speaks HTTP/2 prior knowledge end to end.
check_h2c() {
  local name=$1 url=$2 logfile=$3 out="$TMP/check-$1.txt"
  taskset -c "$LOAD_CPUS" h2load -n 1 -c 1 "$url" >"$out" 2>&1 || true
  grep -q '^status codes: 1 2xx' "$out" || {
    cat "$out" >&2
    server_failed "$name" "$logfile" "did not answer one h2c request to $url with 2xx (output above, log tail below)"
  }
}

# --- origin: nginx, h2c, one process ---------------------------------------------------------
# master_process off: the process we start is the one serving (its CPU and RSS are read for
# the direct row). Every path points into $TMP so that it runs as any user.
mkdir -p "$TMP/nginx"
NGINX_BUILD=$(nginx -V 2>&1)
{
  cat <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log stderr warn;
pid $TMP/nginx.pid;
events {
    worker_connections 4096;
}
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 100000;
    http2_max_concurrent_streams 128;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
EOF
  # Only the temp-path directives of modules this nginx build has.
  for module in fastcgi uwsgi scgi; do
    [[ "$NGINX_BUILD" == *"--without-http_${module}_module"* ]] ||
      echo "    ${module}_temp_path $TMP/nginx/$module;"
  done
  cat <<EOF
    server {
        listen 127.0.0.1:$ORIGIN_PORT http2;
        location / {
            return 200 "ok\n";
        }
    }
}
EOF
} >"$TMP/nginx.conf"

# --- peer proxy: HAProxy with W threads, h2 on both sides --------------------------------------
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread $W
    maxconn 4096
defaults
    mode http
    timeout connect 30s
    timeout client 30s
    timeout server 30s
frontend proxy
    bind 127.0.0.1:$HAPROXY_PORT proto h2
    default_backend origin
backend origin
    server s1 127.0.0.1:$ORIGIN_PORT proto h2
EOF

# --- remora ----------------------------------------------------------------------------------
cat >"$TMP/remora.yaml" <<EOF
service:
  name: bench
admin:
  listen: 127.0.0.1:$ADMIN_PORT
runtime:
  worker_threads: $W
logging:
  level: warn
  access_log: false
upstreams:
  - name: origin
    listen: 127.0.0.1:$REMORA_PORT
    protocol: http2
    discovery:
      static: [127.0.0.1:$ORIGIN_PORT]
EOF

if ((RUN_REMORA)) && [[ ! -x "$REMORA_BIN" ]]; then
  log "building remora (cargo build --release) because $REMORA_BIN is missing"
  (cd "$ROOT" && cargo build --release >&2)
  [[ -x "$REMORA_BIN" ]] || die "no executable at $REMORA_BIN after the build"
fi

# --- measurement -----------------------------------------------------------------------------
# Per target, one value per round (space-separated); the report shows medians (failures: sum).
declare -A RPS USREQ FAILED RSS_RUN RSS_IDLE

# bench NAME URL PID ROUND: warm-up (first round only), one measured run, RSS right after it.
# PID is the process whose CPU time is accounted to the requests and whose RSS is read.
bench() {
  local name=$1 url=$2 pid=$3 round=$4 out="$TMP/h2load-$1-$4.txt"
  local before after ndone failed n3xx rps
  local h2load=(taskset -c "$LOAD_CPUS" h2load -t "$LOAD_THREADS" -c "$CONNS" -m "$STREAMS")
  if ((round == 1 && WARMUP > 0)); then
    log "$name: warm-up ${WARMUP}s"
    "${h2load[@]}" -D "$WARMUP" "$url" >"$TMP/h2load-$name-warmup.txt" 2>&1 || true
  fi
  log "$name: round $round/$ROUNDS, measuring ${DURATION}s"
  before=$(cpu_ticks "$pid")
  "${h2load[@]}" -D "$DURATION" "$url" >"$out" 2>&1 || true
  after=$(cpu_ticks "$pid")
  RSS_RUN[$name]+=" $(rss_mb "$pid")"

  # finished in 10.00s, 61234.50 req/s, 4.03MB/s
  # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
  # status codes: N 2xx, N 3xx, N 4xx, N 5xx
  rps=$(awk '/^finished in/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^req\/s/) print $i }' "$out")
  ndone=$(awk '/^requests:/ { for (i = 2; i < NF; i++) if ($(i + 1) ~ /^done/) print $i }' "$out")
  failed=$(awk '/^requests:/ { for (i = 2; i < NF; i++) if ($(i + 1) ~ /^failed/) print $i }' "$out")
  n3xx=$(awk '/^status codes:/ { for (i = 3; i < NF; i++) if ($(i + 1) ~ /^3xx/) print $i }' "$out")
  [[ "$rps" =~ ^[0-9.]+$ && "$ndone" =~ ^[0-9]+$ && "$failed" =~ ^[0-9]+$ && "$n3xx" =~ ^[0-9]+$ ]] ||
    { cat "$out" >&2; die "$name: could not parse h2load's output (above)"; }
  ((ndone > 0)) || { cat "$out" >&2; die "$name: no requests completed"; }

  RPS[$name]+=" $rps"
  USREQ[$name]+=" $(us_per_request $((after - before)) "$ndone")"
  # h2load's "failed" already includes "errored" (network errors, resets, timeouts) and 4xx/5xx;
  # 3xx count as "succeeded" there, so they are added: every request not answered with a 2xx.
  FAILED[$name]+=" $((failed + n3xx))"
  if ((failed + n3xx > 0)); then
    log "$name: WARNING: $(grep -E '^(requests|status codes):' "$out" | paste -sd ';')"
  fi
}

taskset -c "$SERVER_CPUS" nginx -p "$TMP/nginx/" -c "$TMP/nginx.conf" -e stderr >"$TMP/nginx.log" 2>&1 &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
wait_port origin "$ORIGIN_PORT" "$ORIGIN_PID" "$TMP/nginx.log"
check_h2c origin "http://127.0.0.1:$ORIGIN_PORT/" "$TMP/nginx.log"

# All servers stay up for the whole run (an idle one costs nothing) so that rounds can
# interleave the targets: slow drift of the machine then hits every target alike.
taskset -c "$SERVER_CPUS" haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
wait_port haproxy "$HAPROXY_PORT" "$HAPROXY_PID" "$TMP/haproxy.log"
check_h2c haproxy "http://127.0.0.1:$HAPROXY_PORT/" "$TMP/haproxy.log"
TARGETS=(direct haproxy)

if ((RUN_REMORA)); then
  taskset -c "$SERVER_CPUS" "$REMORA_BIN" run --config "$TMP/remora.yaml" >"$TMP/remora.log" 2>&1 &
  REMORA_PID=$!
  PIDS+=("$REMORA_PID")
  wait_ready remora "http://127.0.0.1:$ADMIN_PORT/ready" "$REMORA_PID" "$TMP/remora.log"
  check_h2c remora "http://127.0.0.1:$REMORA_PORT/" "$TMP/remora.log"
  TARGETS+=(remora)
fi

alive() { kill -0 "$2" 2>/dev/null || server_failed "$1" "$3" "died during the run"; }
for ((round = 1; round <= ROUNDS; round++)); do
  alive origin "$ORIGIN_PID" "$TMP/nginx.log"
  bench direct "http://127.0.0.1:$ORIGIN_PORT/" "$ORIGIN_PID" "$round"
  alive haproxy "$HAPROXY_PID" "$TMP/haproxy.log"
  bench haproxy "http://127.0.0.1:$HAPROXY_PORT/" "$HAPROXY_PID" "$round"
  if ((RUN_REMORA)); then
    alive remora "$REMORA_PID" "$TMP/remora.log"
    bench remora "http://127.0.0.1:$REMORA_PORT/" "$REMORA_PID" "$round"
  fi
done

# The rounds run back to back: an idle pause between measurements (as this script had, for
# the second RSS reading) made HAProxy's next measurement 10-20 % dearer per request and
# remora's not (docs/benchmarks.md). So all targets idle once, after the last round.
if ((IDLE > 0)); then
  log "all targets idle ${IDLE}s for the second RSS reading"
  sleep "$IDLE"
fi
declare -A PID_OF=([direct]=$ORIGIN_PID [haproxy]=$HAPROXY_PID [remora]=${REMORA_PID:-})
for t in "${TARGETS[@]}"; do RSS_IDLE[$t]=$(rss_mb "${PID_OF[$t]}"); done

# --- report ----------------------------------------------------------------------------------
sum() { tr ' ' '\n' <<<"$1" | awk '{ s += $1 } END { print s + 0 }'; }

REV=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
echo "Run $(date -u +%Y-%m-%dT%H:%MZ), remora $REV, $(haproxy -v | head -n1 | cut -d' ' -f1-3)," \
  "$(nginx -v 2>&1 | sed 's/^nginx version: //'), $(h2load --version | head -n1), kernel $(uname -r), $(nproc) CPUs."
echo "h2c (HTTP/2 prior knowledge) on both sides, h2load -t$LOAD_THREADS -c$CONNS -m$STREAMS," \
  "${DURATION}s per measurement (${WARMUP}s warm-up first), $ROUNDS interleaved rounds, medians" \
  "shown (failed: sum over rounds); W=$W proxy threads; origin + proxy on CPU $SERVER_CPUS," \
  "h2load on CPU $LOAD_CPUS; origin = nginx (one process) answering \`return 200\` with a 3-byte body."
echo
echo "| target | req/s | ratio vs haproxy | CPU µs/request | CPU × haproxy | failed | RSS after run MB | RSS ${IDLE} s later MB |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for t in "${TARGETS[@]}"; do
  label=$t
  [[ "$t" != direct ]] || label="direct †"
  rps=$(median "${RPS[$t]}")
  usreq=$(median "${USREQ[$t]}")
  printf '| %s | %.0f | %s | %.1f | %s | %s | %.1f | %.1f |\n' "$label" "$rps" \
    "$(ratio "$rps" "$(median "${RPS[haproxy]}")")" "$usreq" \
    "$(ratio "$usreq" "$(median "${USREQ[haproxy]}")")" \
    "$(sum "${FAILED[$t]}")" "$(median "${RSS_RUN[$t]}")" "${RSS_IDLE[$t]}"
done
echo
echo "† direct: CPU and RSS are the origin's (the nginx process), not a proxy's. Other rows: the" \
  "proxy process only (all threads). failed = h2load failed (includes errored and 4xx/5xx) + 3xx."
