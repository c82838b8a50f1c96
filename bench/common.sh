# Shared by bench/run.sh and bench/h2c.sh (sourced after they set their
# defaults, LOG_TAG and TMP_PREFIX): command-line arguments, logging, checks
# of numeric settings, a scratch directory and the process list (both
# cleaned up on exit), and free loopback ports.

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
