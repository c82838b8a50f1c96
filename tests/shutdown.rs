//! Graceful shutdown of the real binary: on SIGTERM `/ready` turns 503, the upstream listener
//! stops accepting, the request in flight still completes, and the process exits 0 within the
//! drain timeout; an HTTP/2 stream and a TCP tunnel open at SIGTERM carry on through the drain
//! too; SIGINT with nothing in flight exits 0 at once.

mod support;

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use http::{StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::config::TestConfig;
use support::{Backend, ProxyProcess, eventually, get, http_backend, raw_h2, tcp_echo};

const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

fn yaml(name: &str, endpoint: std::net::SocketAddr) -> String {
    TestConfig::one_upstream(name, "http", [endpoint])
        .section("runtime", "{ drain_timeout: 5s }")
        .yaml()
}

/// Waits (bounded) for the process to exit; returns its status and when it was seen to exit.
async fn wait_for_exit(proxy: &mut ProxyProcess, within: Duration) -> (ExitStatus, Instant) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            return (status, Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "remora still running after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `backend` has received `n` requests (so they are in flight in the proxy).
async fn wait_for_requests(backend: &Backend, n: u64) {
    eventually(Duration::from_secs(5), "requests reach the backend", || {
        let arrived = backend.requests() == n;
        async move { arrived }
    })
    .await;
}

/// Sends SIGTERM and waits until `/ready` answers 503, i.e. the drain has begun (the admin
/// listener stays up during the drain). Returns when the signal was sent.
async fn terminate(proxy: &ProxyProcess) -> Instant {
    let ready_url = format!("http://{}/ready", proxy.admin);
    proxy.signal("TERM");
    let terminated = Instant::now();
    eventually(Duration::from_secs(1), "/ready turns 503", || {
        let url = ready_url.clone();
        async move {
            get(Version::HTTP_11, &url)
                .await
                .is_ok_and(|reply| reply.status == StatusCode::SERVICE_UNAVAILABLE)
        }
    })
    .await;
    terminated
}

/// Asserts that the process exits 0 before the drain timeout has passed since `terminated`;
/// `note` says what was still running at SIGTERM.
async fn assert_drained_and_exited(proxy: &mut ProxyProcess, terminated: Instant, note: &str) {
    let (status, exited) = wait_for_exit(proxy, DRAIN_TIMEOUT + Duration::from_secs(2)).await;
    let took = exited - terminated;
    eprintln!("SIGTERM → exit in {took:?} ({note})");
    assert!(status.success(), "exit status {status}");
    assert!(took < DRAIN_TIMEOUT, "exit {took:?} after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let backend = http_backend("drain-backend");
    let mut proxy = ProxyProcess::start(&yaml("drain", backend.addr), 1);
    let listener = proxy.listener("drain");
    let ready_url = format!("http://{}/ready", proxy.admin);
    assert_eq!(
        get(Version::HTTP_11, &ready_url).await.unwrap().status,
        StatusCode::OK
    );

    let slow_url = format!("http://{listener}/slow/1500");
    let in_flight = tokio::spawn(async move { get(Version::HTTP_11, &slow_url).await });
    wait_for_requests(&backend, 1).await;

    // (a) not ready any more
    let terminated = terminate(&proxy).await;
    // (b) new connections to the upstream listener are refused
    eventually(
        Duration::from_secs(1),
        "upstream listener refuses connections",
        || async move { TcpStream::connect(listener).await.is_err() },
    )
    .await;
    assert!(
        !in_flight.is_finished(),
        "the slow request ended before the checks"
    );

    // (c) the request in flight completes normally
    let reply = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("in-flight request finishes")
        .unwrap()
        .expect("in-flight request succeeds");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "drain-backend");
    assert!(reply.headers.get("x-remora-error").is_none());

    // (d) the process exits 0 within the drain bound
    assert_drained_and_exited(&mut proxy, terminated, "slow request had ~1.5 s left").await;
}

/// Writes `line` on the tunnel and reads its echo back.
async fn echo_through(tunnel: &mut TcpStream, line: &[u8]) {
    tunnel.write_all(line).await.unwrap();
    let mut echoed = vec![0; line.len()];
    tokio::time::timeout(Duration::from_secs(5), tunnel.read_exact(&mut echoed))
        .await
        .expect("echo within 5 s")
        .unwrap();
    assert_eq!(echoed, line);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_http2_stream_and_a_tcp_tunnel_finish() {
    let backend = http_backend("drain-h2-backend");
    let echo = tcp_echo();
    let yaml = format!(
        "service: {{ name: test }}\n\
         upstreams:\n\
         \x20 - {{ name: h2, listen: 127.0.0.1:0, protocol: http2, discovery: {{ static: [{}] }} }}\n\
         \x20 - {{ name: tunnel, listen: 127.0.0.1:0, protocol: tcp, discovery: {{ static: [{echo}] }} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         runtime: {{ drain_timeout: 5s }}\n\
         logging: {{ access_log: false }}\n",
        backend.addr
    );
    let mut proxy = ProxyProcess::start(&yaml, 2);

    let slow_url = format!("http://{}/slow/1500", proxy.listener("h2"));
    let stream = tokio::spawn(async move { get(Version::HTTP_2, &slow_url).await });
    let mut tunnel = TcpStream::connect(proxy.listener("tunnel")).await.unwrap();
    echo_through(&mut tunnel, b"before\n").await;
    wait_for_requests(&backend, 1).await;

    let terminated = terminate(&proxy).await;
    assert!(!stream.is_finished(), "the stream ended before the drain");

    // The tunnel still carries bytes during the drain.
    echo_through(&mut tunnel, b"during the drain\n").await;

    // The stream completes normally.
    let reply = tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .expect("stream finishes")
        .unwrap()
        .expect("stream succeeds");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.body, "drain-h2-backend");
    assert!(reply.headers.get("x-remora-error").is_none());

    // The tunnel ends the way the client ends it: half-close, the echo's last line, EOF.
    tunnel.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut rest))
        .await
        .expect("tunnel closes within 5 s")
        .unwrap();
    assert_eq!(rest, b"bye\n");

    // With nothing left open the process exits 0 before the drain timeout.
    let note = "HTTP/2 stream had ~1.5 s left, the tunnel closed after it";
    assert_drained_and_exited(&mut proxy, terminated, note).await;
}

#[tokio::test]
async fn sigint_when_idle_exits_zero_quickly() {
    let backend = http_backend("sigint-backend");
    let mut proxy = ProxyProcess::start(&yaml("sigint", backend.addr), 1);
    let reply = get(
        Version::HTTP_11,
        &format!("http://{}/", proxy.listener("sigint")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);

    proxy.signal("INT");
    let interrupted = Instant::now();
    let (status, exited) = wait_for_exit(&mut proxy, Duration::from_secs(5)).await;
    let took = exited - interrupted;
    eprintln!("SIGINT → exit in {took:?}");
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(2), "exit {took:?} after SIGINT");
}

/// As an HTTP/2 server remora drains the way it expects its upstreams to (RFC 9113 §6.8): a
/// first GOAWAY with the largest stream id and a PING, then, once the PING is answered, a
/// GOAWAY with the last stream it took — and that stream still gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_get_a_two_step_goaway_on_drain() {
    let backend = http_backend("drain-h2");
    let yaml = yaml("drain-h2", backend.addr).replace("protocol: http", "protocol: http2");
    let mut proxy = ProxyProcess::start(&yaml, 1);
    let mut client = raw_h2::client_get(proxy.listener("drain-h2"), "/slow/500").await;
    wait_for_requests(&backend, 1).await;
    let terminated = terminate(&proxy).await;
    let goaways = raw_h2::goaways_until_answered(&mut client).await;
    assert_eq!(
        goaways,
        [(0x7fff_ffff, 0), (1, 0)],
        "GOAWAYs (last stream id, code)"
    );
    drop(client);
    assert_drained_and_exited(&mut proxy, terminated, "two-step GOAWAY").await;
}
