# shellcheck shell=bash disable=SC2034  # RUN_REMORA is read by the scripts that source this
# Shared by the bench/ scripts (sourced after they set their
# defaults, LOG_TAG and TMP_PREFIX): command-line arguments, logging, checks
# of numeric settings, a scratch directory and the process list (both
# cleaned up on exit), the open-files limit, free loopback ports, a process's CPU time and
# resident memory, the median and ratio of figures, and the servers: waiting
# for one, HAProxy, the origin, and the no-policy remora configuration.

RUN_REMORA=1
for arg in "$@"; do
  case "$arg" in
    --no-remora) RUN_REMORA=0 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

log() { echo "[$LOG_TAG] $*" >&2; }
die() { log "error: $*"; exit 1; }

# Fails unless every named variable holds a non-negative integer.
require_integers() {
  local var
  for var in "$@"; do
    [[ "${!var}" =~ ^[0-9]+$ ]] || die "$var must be a non-negative integer, got '${!var}'"
  done
}

TMP=$(mktemp -d -t "$TMP_PREFIX.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Raises the soft open-files limit (inherited by every process started after) to N when it is
# lower; fails, naming CLIENTS, when the hard limit is lower still. The soft limit only (-S):
# lowering the hard one too would keep HAProxy from raising its own.
raise_open_files() { # n
  if (($(ulimit -Sn) < $1)); then
    ulimit -Sn "$1" 2>/dev/null ||
      die "open-files limit $(ulimit -Sn) < $1 and cannot be raised (hard limit $(ulimit -Hn)): lower CLIENTS"
  fi
}

# N distinct free loopback ports (held open together while picking, so no duplicates).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# User and system CPU time (utime and stime, in clock ticks) a process has used so far.
cpu_ticks_split() {
  # Field 2 (comm) may contain spaces: count fields after the last ')'.
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  read -r -a f <<<"$stat"
  echo "${f[11]} ${f[12]}" # utime, stime are fields 14 and 15 of the full line
}

# CPU time (utime + stime, in clock ticks) a process has used so far.
cpu_ticks() {
  local user system
  read -r user system <<<"$(cpu_ticks_split "$1")"
  echo $((user + system))
}

# µs of CPU a request: TICKS clock ticks of CPU time spread over REQUESTS requests.
us_per_request() { # ticks requests
  awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$2" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }'
}

# Times the threads of a process were preempted (involuntary context switches) so far.
preemptions() {
  cat "/proc/$1/task/"*/status 2>/dev/null |
    awk '/^nonvoluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}

# Resident set size of a process in MiB (VmRSS of /proc/PID/status).
rss_mb() {
  awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# Median and ratio of space-separated figures, for the tables.
median() { tr ' ' '\n' <<<"$1" | { grep . || true; } | sort -g | awk '{ v[NR] = $1 }
  END { if (NR == 0) print "—"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# --- servers ---------------------------------------------------------------------------------
# READY_TIMEOUT (s, default 10) bounds each wait; SERVER_CPUS (default 0) is where servers run.

# Fails the run with the tail of the server's log.
server_failed() { # name logfile message
  tail -n 20 "$2" >&2 || true
  die "$1 $3"
}

# Polls URL (HTTP/1.1; with READY_H2C=1, HTTP/2 prior knowledge) until it answers 200; fails
# early if PID died.
wait_ready() { # name url pid logfile
  local name=$1 url=$2 pid=$3 logfile=$4
  local deadline=$((SECONDS + ${READY_TIMEOUT:-10})) version=--http1.1
  [[ ${READY_H2C:-0} == 1 ]] && version=--http2-prior-knowledge
  until [[ "$(curl -s "$version" -o /dev/null -m 1 -w '%{http_code}' "$url")" == 200 ]]; do
    kill -0 "$pid" 2>/dev/null || server_failed "$name" "$logfile" "exited before becoming ready"
    ((SECONDS < deadline)) ||
      server_failed "$name" "$logfile" "not ready at $url after ${READY_TIMEOUT:-10}s"
    sleep 0.05
  done
}

# The global and defaults sections of a HAProxy configuration with THREADS threads.
haproxy_common() { # threads
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

# Starts HAProxy on CFG, on SERVER_CPUS; sets STARTED_PID.
start_haproxy() { # name cfg
  taskset -c "${SERVER_CPUS:-0}" haproxy -db -f "$2" >"$TMP/$1.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

# The origin every benchmark proxies to: a single-thread HAProxy on ORIGIN_PORT answering
# every request itself (`http-request return`, a 5-byte body: no file I/O, and the same
# cost in every row). Sets ORIGIN_PID once it answers.
start_origin() {
  {
    haproxy_common 1
    cat <<EOF
frontend origin
    bind 127.0.0.1:$ORIGIN_PORT
    http-request return status 200 content-type text/plain string "hello"
EOF
  } >"$TMP/origin.cfg"
  start_haproxy origin "$TMP/origin.cfg"
  ORIGIN_PID=$STARTED_PID
  wait_ready origin "http://127.0.0.1:$ORIGIN_PORT/" "$ORIGIN_PID" "$TMP/origin.log"
}

# bench/run.sh's `remora` target: one upstream to the origin, no policy, access log off.
no_policy_config() { # listen_port admin_port worker_threads
  cat <<EOF
service: { name: bench }
upstreams:
  - name: origin
    listen: 127.0.0.1:$1
    protocol: http
    discovery: { static: [127.0.0.1:$ORIGIN_PORT] }
    load_balancing: { policy: round_robin }
admin: { listen: 127.0.0.1:$2 }
runtime: { worker_threads: $3 }
logging: { level: warn, access_log: false }
EOF
}
