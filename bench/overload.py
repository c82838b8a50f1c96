#!/usr/bin/env python3
"""The adaptive-concurrency benchmark (bench/overload.sh runs `run`; see bench/README.md).

run
    Runs every scenario below, each on a fresh backend and a fresh remora, and prints markdown
    tables for docs/benchmarks.md. Settings from the environment: REMORA_BIN, WORKERS (32),
    SERVICE_MS (50), RATE (requests/s, default 1.5 × the backend's capacity), DURATION (20 s).

backend PORT WORKERS SERVICE_MS
    An HTTP/1.1 server whose latency grows with its concurrency, as a real server's does:
    WORKERS requests are worked on at once, SERVICE_MS each; the others wait for a worker.
    Capacity: WORKERS / SERVICE_MS requests per millisecond; past it the queue, and the
    latency, grow without bound. Answers 200 "ok" to every request.

load URL RATE SECONDS [MAX_CONNECTIONS]
    An open-loop load generator (wrk2-style): request i is due at start + i / RATE whatever
    happened to the requests before it, and its latency is measured from that due time, so a
    stalled server cannot hide behind fewer requests (no coordinated omission). Each request
    takes an idle keep-alive connection or opens one, up to MAX_CONNECTIONS (default 2000);
    a request due when all are busy is counted as `unsent`. Runs SECONDS, then waits at most
    5 s for the answers still outstanding (counted `unanswered` after that) and prints one
    JSON object: counts by outcome, goodput (200s answered while the load ran, per second), latency percentiles of the 200s and of the 503s, the p99
    of the 200s per second of the run, and how late the generator itself sent requests (its
    own lag is in every latency; it must stay small for the figures to mean anything).
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from urllib.parse import urlsplit


async def backend(port, workers, service_ms):
    semaphore = asyncio.Semaphore(workers)
    service = service_ms / 1000
    response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"

    async def connection(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                async with semaphore:
                    await asyncio.sleep(service)
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


async def load(url, rate, seconds, max_connections):
    parts = urlsplit(url)
    host, port, path = parts.hostname, parts.port, parts.path or "/"
    request = f"GET {path} HTTP/1.1\r\nhost: {parts.netloc}\r\n\r\n".encode()
    idle = []
    open_connections = 0
    counts = {"ok": 0, "ok_in_time": 0, "overloaded": 0, "other": 0, "unsent": 0, "failed": 0, "unanswered": 0}
    ok_latencies = []  # (second of the run, latency in s)
    shed_latencies = []

    async def exchange(reader, writer):
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, error = 0, None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"x-remora-error":
                error = value.strip().decode()
        if length:
            await reader.readexactly(length)
        return status, error

    async def one(due):
        nonlocal open_connections
        if idle:
            connection = idle.pop()
        elif open_connections < max_connections:
            open_connections += 1
            try:
                connection = await asyncio.open_connection(host, port)
            except OSError:
                open_connections -= 1
                counts["failed"] += 1
                return
        else:
            counts["unsent"] += 1
            return
        try:
            status, error = await exchange(*connection)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            open_connections -= 1
            connection[1].close()
            counts["failed"] += 1
            return
        latency = time.monotonic() - due
        idle.append(connection)
        if status == 200:
            counts["ok"] += 1
            ok_latencies.append((int(due - start), latency))
            if time.monotonic() <= start + seconds:
                counts["ok_in_time"] += 1
        elif status == 503 and error == "overloaded":
            counts["overloaded"] += 1
            shed_latencies.append(latency)
        else:
            counts["other"] += 1

    start = time.monotonic()
    tasks = set()
    total = int(rate * seconds)
    late = []  # how late the generator itself sent each request
    for i in range(total):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        late.append(time.monotonic() - due)
        task = asyncio.create_task(one(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=5)
        counts["unanswered"] = len(pending)
        for task in pending:
            task.cancel()
    ok = sorted(latency for _, latency in ok_latencies)
    shed = sorted(shed_latencies)
    per_second = {}
    for second, latency in ok_latencies:
        per_second.setdefault(second, []).append(latency)
    ms = lambda value: None if value is None else round(value * 1000, 1)  # noqa: E731
    result = {
        "rate": rate,
        "seconds": seconds,
        "sent": total - counts["unsent"],
        "counts": counts,
        # 200s answered while the load ran (a backlog answered afterwards is not goodput).
        "goodput": round(counts["ok_in_time"] / seconds, 1),
        "ok_ms": {p: ms(percentile(ok, q)) for p, q in
                  (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
        "generator_late_ms": {p: ms(percentile(sorted(late), q)) for p, q in
                              (("p50", 0.5), ("p99", 0.99))},
        "overloaded_ms": {p: ms(percentile(shed, q)) for p, q in (("p50", 0.5), ("p99", 0.99))},
        "ok_p99_ms_per_second": [ms(percentile(sorted(per_second.get(s, [])), 0.99))
                                 for s in range(int(seconds))],
    }
    print(json.dumps(result))


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def wait_until_accepting(port, process, name, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{name} exited with {process.returncode} before it was ready")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{name} not accepting on port {port} after {timeout} s")


def scrape(admin_port):
    """The samples of remora's /metrics that the tables show, by metric name."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).read()
    wanted = ("remora_concurrency_limit{", "remora_shed_requests_total{",
              "remora_concurrency_rtt_noload_seconds{")
    samples = {}
    for line in text.decode().splitlines():
        if line.startswith(wanted):
            samples[line.split("{", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return samples


def scenario(name, limit_yaml, rate, duration, settings):
    """One run: a fresh backend and remora (with `limit_yaml` on the upstream), open-loop load
    at `rate` for `duration` s; returns the load generator's result and remora's metrics."""
    backend_port, proxy_port, admin_port = free_ports(3)
    me = os.path.abspath(__file__)
    backend_process = subprocess.Popen(
        [sys.executable, me, "backend", str(backend_port), str(settings["workers"]),
         str(settings["service_ms"])])
    config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    config.write(
        "service: { name: bench }\n"
        "upstreams:\n"
        "  - name: backend\n"
        f"    listen: 127.0.0.1:{proxy_port}\n"
        "    protocol: http\n"
        f"    discovery: {{ static: [127.0.0.1:{backend_port}] }}\n"
        + (f"    {limit_yaml}\n" if limit_yaml else "")
        + f"admin: {{ listen: 127.0.0.1:{admin_port} }}\n"
        "logging: { level: warn, access_log: false }\n")
    config.close()
    proxy = subprocess.Popen([settings["remora"], "run", "--config", config.name],
                             stderr=subprocess.DEVNULL)
    try:
        wait_until_accepting(backend_port, backend_process, "backend")
        wait_until_accepting(admin_port, proxy, "remora")
        wait_until_accepting(proxy_port, proxy, "remora")
        out = subprocess.run(
            [sys.executable, me, "load", f"http://127.0.0.1:{proxy_port}/", str(rate),
             str(duration)], check=True, capture_output=True, text=True).stdout
        result = json.loads(out)
        result["metrics"] = scrape(admin_port)
        result["name"] = name
        print(f"[overload] {name}: {out.strip()} {result['metrics']}", file=sys.stderr)
        return result
    finally:
        for process in (proxy, backend_process):
            process.terminate()
            process.wait()
        os.unlink(config.name)


def run():
    workers = int(os.environ.get("WORKERS", 32))
    service_ms = float(os.environ.get("SERVICE_MS", 50))
    capacity = workers * 1000 / service_ms
    rate = float(os.environ.get("RATE", 1.5 * capacity))
    duration = int(os.environ.get("DURATION", 20))
    settings = {"workers": workers, "service_ms": service_ms,
                "remora": os.environ["REMORA_BIN"]}
    scenarios = [
        ("unloaded (¼ capacity), no limit", None, capacity / 4),
        ("no limit", None, rate),
        ("`max_concurrent_requests: 256` (guessed high)", "max_concurrent_requests: 256", rate),
        (f"`max_concurrent_requests: {workers // 2}` (guessed low)",
         f"max_concurrent_requests: {workers // 2}", rate),
        ("`adaptive_concurrency: {}`", "adaptive_concurrency: {}", rate),
    ]
    results = [scenario(name, limit, load_rate, duration, settings)
               for name, limit, load_rate in scenarios]
    print(f"Backend: {workers} workers × {service_ms:g} ms = {capacity:g} requests/s capacity, "
          f"{service_ms:g} ms unloaded. Open-loop load for {duration} s per row.\n")
    print("| remora upstream | offered req/s | goodput (200/s) | 200 p50 | p90 | p99 | max "
          "| 503 `overloaded` (p99) | not sent / failed | limit at end | generator lag p99 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ok, shed, counts = r["ok_ms"], r["overloaded_ms"], r["counts"]
        limit = r["metrics"].get("remora_concurrency_limit")
        print(f"| {r['name']} | {r['rate']:g} | {r['goodput']:g} | {ok['p50']} ms | {ok['p90']} ms "
              f"| {ok['p99']} ms | {ok['max']} ms | {counts['overloaded']} ({shed['p99']} ms) "
              f"| {counts['unsent']} / {counts['failed'] + counts['unanswered'] + counts['other']} "
              f"| {'—' if limit is None else f'{limit:g}'} | {r['generator_late_ms']['p99']} ms |")
    print("\np99 of the 200s, second by second (ms):\n")
    for r in results[1:]:
        series = ", ".join("—" if v is None else f"{v:g}" for v in r["ok_p99_ms_per_second"])
        print(f"- {r['name']}: {series}")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "run":
        run()
    elif command == "backend":
        asyncio.run(backend(int(args[0]), int(args[1]), float(args[2])))
    elif command == "load":
        max_connections = int(args[3]) if len(args) > 3 else 2000
        asyncio.run(load(args[0], float(args[1]), float(args[2]), max_connections))
    else:
        sys.exit(f"unknown command {command}: expected run, backend or load")


if __name__ == "__main__":
    main()
