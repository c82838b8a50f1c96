# Shared by bench/run.sh and bench/h2c.sh (sourced): a scratch directory and
# the process list, both cleaned up on exit, and free loopback ports.
# The caller sets TMP_PREFIX before sourcing.

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
