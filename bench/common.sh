# shellcheck shell=bash disable=SC2034  # RUN_REMORA is read by the scripts that source this
# Shared by bench/run.sh and bench/h2c.sh (sourced after they set their
# defaults, LOG_TAG and TMP_PREFIX): command-line arguments, logging, checks
# of numeric settings, a scratch directory and the process list (both
# cleaned up on exit), free loopback ports, a process's CPU time and
# resident memory, and the median and ratio of figures.

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

# CPU time (utime + stime, in clock ticks) a process has used so far.
cpu_ticks() {
  # Field 2 (comm) may contain spaces: count fields after the last ')'.
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  read -r -a f <<<"$stat"
  echo $((f[11] + f[12])) # utime, stime are fields 14 and 15 of the full line
}

# Resident set size of a process in MiB (VmRSS of /proc/PID/status).
rss_mb() {
  awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# Median and ratio of space-separated figures, for the tables.
median() { tr ' ' '\n' <<<"$1" | { grep . || true; } | sort -g | awk '{ v[NR] = $1 }
  END { if (NR == 0) print "—"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
