#!/usr/bin/env bash
# A burst of new connections at once: CLIENTS clients each open a connection and send one
# `GET /` before any response is read, to an origin that answers each request DELAY seconds
# after it came, so the proxy holds every client and (HTTP/1.1: one request a connection) as
# many upstream connections at the same time. Measured for HAProxy and remora-full
# (bench/full-stack.yaml) in one run: the time until every response has come, the most
# upstream connections open at once, and the proxy's memory (idle, at the peak, 10 s after the
# clients closed). Prints a markdown table on stdout (progress on stderr). See bench/README.md.
#
#   bench/burst.sh
#   REMORA_BIN=target/release-pgo/remora bench/burst.sh
#
# Environment (defaults): CLIENTS=1000, DELAY=1 (s), IDLE=10 (s before the "after" reading),
# SERVER_CPUS=0 (origin + proxies), CLIENT_CPUS=1, REMORA_BIN=<repo>/target/release/remora.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLIENTS=${CLIENTS:-1000}
DELAY=${DELAY:-1}
IDLE=${IDLE:-10}
SERVER_CPUS=${SERVER_CPUS:-0}
CLIENT_CPUS=${CLIENT_CPUS:-1}
REMORA_BIN=${REMORA_BIN:-$ROOT/target/release/remora}
READY_TIMEOUT=10

LOG_TAG=burst
TMP_PREFIX=remora-burst
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

for tool in haproxy taskset curl python3 ss; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install haproxy util-linux curl python3 iproute2)"
done
require_integers CLIENTS IDLE
((RUN_REMORA)) || die "--no-remora: burst.sh measures remora beside HAProxy"
[[ -x "$REMORA_BIN" ]] || die "no remora at $REMORA_BIN (cargo build --release)"
raise_open_files $((3 * CLIENTS + 256))

read -r ORIGIN_PORT REMORA_ORIGIN_PORT HAPROXY_PORT FULL_PORT FULL_SECOND_PORT FULL_ADMIN_PORT \
  <<<"$(free_ports 6)"

# The origin: answers each request DELAY seconds after it came, on every connection at once.
# One port per proxy, so that counting a proxy's upstream connections does not count the idle
# ones the other keeps.
cat >"$TMP/origin.py" <<'EOF'
import asyncio, sys
delay, ports = float(sys.argv[1]), [int(port) for port in sys.argv[2:]]
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(0 if head.startswith(b"GET /ready") else delay)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()
async def main():
    servers = [await asyncio.start_server(serve, "127.0.0.1", port, backlog=65535) for port in ports]
    await asyncio.gather(*(server.serve_forever() for server in servers))
asyncio.run(main())
EOF
taskset -c "$SERVER_CPUS" python3 "$TMP/origin.py" "$DELAY" "$ORIGIN_PORT" "$REMORA_ORIGIN_PORT" >"$TMP/origin.log" 2>&1 &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
wait_ready origin "http://127.0.0.1:$ORIGIN_PORT/ready" "$ORIGIN_PID" "$TMP/origin.log"
wait_ready origin "http://127.0.0.1:$REMORA_ORIGIN_PORT/ready" "$ORIGIN_PID" "$TMP/origin.log"

{
  haproxy_common 1
  cat <<EOF
    maxconn $((2 * CLIENTS + 100))
frontend proxy
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend origin
backend origin
    server origin 127.0.0.1:$ORIGIN_PORT
EOF
} >"$TMP/haproxy.cfg"
start_haproxy haproxy "$TMP/haproxy.cfg"
HAPROXY_PID=$STARTED_PID
wait_ready haproxy "http://127.0.0.1:$HAPROXY_PORT/ready" "$HAPROXY_PID" "$TMP/haproxy.log"

export BENCH_ORIGIN=127.0.0.1:$REMORA_ORIGIN_PORT BENCH_LISTEN=127.0.0.1:$FULL_PORT \
  BENCH_SECOND_LISTEN=127.0.0.1:$FULL_SECOND_PORT BENCH_ADMIN=127.0.0.1:$FULL_ADMIN_PORT \
  BENCH_WORKER_THREADS=1
taskset -c "$SERVER_CPUS" "$REMORA_BIN" run --config "$ROOT/bench/full-stack.yaml" >"$TMP/remora.log" 2>&1 &
REMORA_PID=$!
PIDS+=("$REMORA_PID")
wait_ready remora-full "http://127.0.0.1:$FULL_ADMIN_PORT/ready" "$REMORA_PID" "$TMP/remora.log"

# The clients: all connect and send, then read every response; a sampler reads the proxy's
# RSS and its upstream connections every 50 ms meanwhile.
cat >"$TMP/burst.py" <<'EOF'
import socket, subprocess, sys, threading, time
clients, port, pid, origin, idle = (int(a) for a in sys.argv[1:6])
def rss():
    with open(f"/proc/{pid}/status") as status:
        return next(int(l.split()[1]) / 1024 for l in status if l.startswith("VmRSS:"))
def upstream():
    ss = subprocess.run(["ss", "-Htn", "state", "established", "dst", f"127.0.0.1:{origin}"],
                        capture_output=True, text=True, check=True)
    return len(ss.stdout.splitlines())
idle_rss, peak, sampling = rss(), [0.0, 0], True
def sample():
    while sampling:
        peak[0], peak[1] = max(peak[0], rss()), max(peak[1], upstream())
        time.sleep(0.05)
sampler = threading.Thread(target=sample)
sampler.start()
started = time.monotonic()
conns = []
for _ in range(clients):
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    conns.append(conn)
for conn in conns:
    data = b""
    while b"\r\n\r\n" not in data or (data.startswith(b"HTTP/1.1 200") and not data.endswith(b"hello")):
        chunk = conn.recv(4096)
        if not chunk:
            sys.exit(f"a connection closed before its response: {data!r}")
        data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        sys.exit(f"answered {data.splitlines()[0]!r}")
took = time.monotonic() - started
sampling = False
sampler.join()
for conn in conns:
    conn.close()
time.sleep(idle)
print(f"{took:.1f} {peak[1]} {idle_rss:.1f} {peak[0]:.1f} {rss():.1f}")
EOF

echo "| proxy | all $CLIENTS answered after, s | upstream connections at most | RSS idle MB | RSS peak MB | RSS ${IDLE} s after MB |"
echo "|---|---:|---:|---:|---:|---:|"
for target in haproxy:$HAPROXY_PORT:$HAPROXY_PID:$ORIGIN_PORT \
  remora-full:$FULL_PORT:$REMORA_PID:$REMORA_ORIGIN_PORT; do
  IFS=: read -r name port pid origin <<<"$target"
  log "$name: $CLIENTS clients at once, the origin answering after ${DELAY}s"
  figures=$(taskset -c "$CLIENT_CPUS" python3 "$TMP/burst.py" "$CLIENTS" "$port" "$pid" "$origin" "$IDLE") ||
    die "$name: the clients failed (above)"
  read -r took upstream idle peak after <<<"$figures"
  echo "| $name | $took | $upstream | $idle | $peak | $after |"
done
