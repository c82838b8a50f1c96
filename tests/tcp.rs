//! Opaque TCP through remora: bytes both ways (small and 4 MiB), half-close (the client's FIN
//! reaches the upstream while the return direction stays open), the inbound
//! `service.protocol: tcp` listener, a connection to a dead-only upstream closed promptly, and
//! the `remora_tcp_{sent,received}_bytes_total` counters.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::config::TestConfig;
use support::{Proxy, dead_addr, prom, tcp_echo};

/// Longest any single exchange may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(10);

fn tcp_upstream_yaml(name: &str, endpoint: SocketAddr) -> String {
    TestConfig::one_upstream(name, "tcp", [endpoint]).yaml()
}

async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(HANG, stream.read_to_end(&mut received))
        .await
        .expect("EOF within the hang bound")
        .expect("read");
    received
}

/// Sends `payload`, then shuts down the write side without reading first; returns everything
/// that came back up to EOF. The writer runs concurrently with the reader, so a payload larger
/// than the socket buffers cannot deadlock.
async fn send_half_close_and_collect(addr: SocketAddr, payload: Vec<u8>) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let write = tokio::spawn(async move {
        writer.write_all(&payload).await.unwrap();
        writer.shutdown().await.unwrap();
        writer // keep the half alive until the reader is done
    });
    let mut received = Vec::new();
    tokio::time::timeout(HANG, reader.read_to_end(&mut received))
        .await
        .expect("EOF within the hang bound")
        .expect("read");
    drop(write.await.unwrap());
    received
}

/// Interactive exchange: each write is echoed before the next one is sent (so nothing is
/// buffered until close), then half-close: the FIN reaches the echo server, whose `bye\n`
/// still comes back, then EOF.
#[tokio::test]
async fn bytes_flow_both_ways_and_half_close_is_forwarded() {
    let echo = tcp_echo();
    let proxy = Proxy::start(&tcp_upstream_yaml("tcp-basic", echo)).await;
    let mut stream = TcpStream::connect(proxy.upstream("tcp-basic"))
        .await
        .unwrap();

    for message in ["hello\n", "second line\n", "x"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(HANG, stream.read_exact(&mut echoed))
            .await
            .expect("echo within the hang bound")
            .unwrap();
        assert_eq!(echoed, message.as_bytes());
    }

    // Unread echo still in flight when the client half-closes.
    stream.write_all(b"tail").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut stream).await, b"tailbye\n");
}

/// 4 MiB in one connection, written while reading, then half-closed: every byte comes back in
/// order followed by `bye\n`, and `/metrics` counts exactly the bytes of each direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_mib_round_trip_and_byte_counters() {
    const SIZE: usize = 4 * 1024 * 1024;
    let echo = tcp_echo();
    let proxy = Proxy::start(&tcp_upstream_yaml("tcp-large", echo)).await;
    let payload: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();

    let received = send_half_close_and_collect(proxy.upstream("tcp-large"), payload.clone()).await;
    assert_eq!(received.len(), SIZE + 4, "bytes received");
    assert!(received[..SIZE] == payload[..], "echo differs from payload");
    assert_eq!(&received[SIZE..], b"bye\n");

    let metrics = proxy.admin_url("/metrics");
    let labels = [("upstream", "tcp-large")];
    prom::assert_value_within(
        &metrics,
        "remora_tcp_sent_bytes_total",
        &labels,
        SIZE as f64,
        Duration::from_secs(2),
    )
    .await;
    let text = prom::scrape(&metrics).await;
    assert_eq!(
        prom::value(&text, "remora_tcp_received_bytes_total", &labels),
        Some((SIZE + 4) as f64),
        "remora_tcp_received_bytes_total"
    );
}

/// Two sequential connections add up in the counters (they are per upstream, not per
/// connection).
#[tokio::test]
async fn byte_counters_add_up_over_connections() {
    let echo = tcp_echo();
    let proxy = Proxy::start(&tcp_upstream_yaml("tcp-counted", echo)).await;
    let addr = proxy.upstream("tcp-counted");
    assert_eq!(
        send_half_close_and_collect(addr, b"0123456789".to_vec()).await,
        b"0123456789bye\n"
    );
    assert_eq!(
        send_half_close_and_collect(addr, b"abc".to_vec()).await,
        b"abcbye\n"
    );

    let metrics = proxy.admin_url("/metrics");
    let labels = [("upstream", "tcp-counted")];
    prom::assert_value_within(
        &metrics,
        "remora_tcp_sent_bytes_total",
        &labels,
        13.0,
        Duration::from_secs(2),
    )
    .await;
    prom::assert_value_within(
        &metrics,
        "remora_tcp_received_bytes_total",
        &labels,
        21.0,
        Duration::from_secs(2),
    )
    .await;
}

/// Bytes are counted as they go: an open connection's show at once, and a connection that
/// ends with a reset keeps its count (it was lost when the copy ended with an error).
#[tokio::test]
async fn bytes_count_while_open_and_after_a_reset() {
    let echo = tcp_echo();
    let proxy = Proxy::start(&tcp_upstream_yaml("tcp-live", echo)).await;
    let mut stream = TcpStream::connect(proxy.upstream("tcp-live"))
        .await
        .unwrap();
    let payload = vec![7u8; 1000];
    stream.write_all(&payload).await.unwrap();
    let mut echoed = vec![0u8; 1000];
    tokio::time::timeout(HANG, stream.read_exact(&mut echoed))
        .await
        .expect("echo within the hang bound")
        .unwrap();
    let metrics = proxy.admin_url("/metrics");
    let labels = [("upstream", "tcp-live")];
    for name in [
        "remora_tcp_sent_bytes_total",
        "remora_tcp_received_bytes_total",
    ] {
        prom::assert_value_within(&metrics, name, &labels, 1000.0, Duration::from_secs(2)).await;
    }
    // Reset: the client closes with SO_LINGER 0.
    stream.set_zero_linger().unwrap();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = prom::scrape(&metrics).await;
    for name in [
        "remora_tcp_sent_bytes_total",
        "remora_tcp_received_bytes_total",
    ] {
        assert_eq!(prom::value(&text, name, &labels), Some(1000.0), "{name}");
    }
}

/// Inbound listener in front of a TCP application: the same tunnel, counted under the
/// service's name.
#[tokio::test]
async fn inbound_tcp_service_is_tunnelled() {
    let app = tcp_echo();
    let yaml = format!(
        "service: {{ name: tcp-inbound-app, port: {}, protocol: tcp }}\n\
         inbound: {{ listen: 127.0.0.1:0 }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        app.port()
    );
    let proxy = Proxy::start(&yaml).await;

    let mut stream = TcpStream::connect(proxy.inbound()).await.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(HANG, stream.read_exact(&mut echoed))
        .await
        .expect("echo within the hang bound")
        .unwrap();
    assert_eq!(&echoed, b"ping");
    stream.write_all(b"!").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut stream).await, b"!bye\n");

    prom::assert_value_within(
        &proxy.admin_url("/metrics"),
        "remora_tcp_sent_bytes_total",
        &[("upstream", "tcp-inbound-app")],
        5.0,
        Duration::from_secs(2),
    )
    .await;
}

/// The only endpoint refuses connections: remora accepts the client, fails to connect
/// upstream, and closes the client promptly instead of leaving it hanging. It stays usable:
/// a second connection is closed just as fast. Each failed connect is counted.
#[tokio::test]
async fn dead_only_endpoint_closes_the_connection_promptly() {
    let proxy = Proxy::start(&tcp_upstream_yaml("tcp-dead", dead_addr())).await;
    for attempt in 0..2 {
        let started = Instant::now();
        let mut stream = TcpStream::connect(proxy.upstream("tcp-dead"))
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("attempt {attempt}: connection left open for 5 s"));
        // A clean EOF or a reset are both "closed"; data is not.
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "attempt {attempt}: unexpected data {read:?}"
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(1),
            "attempt {attempt}: closed only after {elapsed:?}"
        );
    }
    let text = prom::scrape(&proxy.admin_url("/metrics")).await;
    let errors = prom::value(
        &text,
        "remora_upstream_connect_errors_total",
        &[("upstream", "tcp-dead")],
    )
    .unwrap_or(0.0);
    assert!(errors >= 2.0, "connect errors counted: {errors}");
}
