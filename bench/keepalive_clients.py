#!/usr/bin/env python3
"""Memory of a proxy holding many idle keep-alive clients, for bench/run.sh.

    keepalive_clients.py COUNT IDLE NAME:PORT:PID...

For each target in turn: opens COUNT HTTP/1.1 connections to 127.0.0.1:PORT, sends one
`GET /` on each and reads its whole response, one connection after the other, and keeps
every connection open; once the COUNT are open, reads the VmRSS of process PID. When all
targets hold their COUNT clients, closes every connection, waits IDLE seconds and reads
each PID's VmRSS again. Prints one line per target: `NAME RSS_OPEN_MB RSS_AFTER_MB`.
Exits non-zero (with the reason on stderr) when a connection or a response fails.
"""

import socket
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def read_response(conn):
    """Reads one response with a Content-Length body; fails on anything but a 200."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed before the response head")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split()
    if len(status_line) < 2 or status_line[1] != "200":
        raise RuntimeError(f"answered {lines[0]!r}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length is None:
        raise RuntimeError("response without content-length")
    while len(body) < length:
        chunk = conn.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed inside the response body")
        body += chunk


def open_clients(port, count):
    clients = []
    for number in range(1, count + 1):
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            clients.append(conn)
            conn.sendall(REQUEST)
            read_response(conn)
        except (OSError, RuntimeError) as error:
            raise RuntimeError(f"keep-alive client {number}/{count}: {error}") from error
    return clients


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    count, idle = int(sys.argv[1]), float(sys.argv[2])
    targets = [arg.split(":") for arg in sys.argv[3:]]
    held, rss_open = [], {}
    for name, port, pid in targets:
        try:
            held += open_clients(int(port), count)
        except RuntimeError as error:
            sys.exit(f"{name}: {error}")
        rss_open[name] = rss_mb(pid)
    for conn in held:
        conn.close()
    time.sleep(idle)
    for name, _, pid in targets:
        print(f"{name} {rss_open[name]:.1f} {rss_mb(pid):.1f}")


if __name__ == "__main__":
    main()
