//! Memory per connection, through the real binary: after 1,000 keep-alive
//! clients have each made a request and gone away, remora's resident memory
//! comes back to within a bound of where it started (issue 15: the memory of
//! closed connections stayed resident, 60 MB of it after 1,000).

mod support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::config::TestConfig;
use support::{ProxyProcess, http_backend, raise_open_files_limit};

const CLIENTS: usize = 1000;

/// What remora may keep after the clients left, over its RSS before them:
/// its pooled upstream connections (up to 512 idle ones, about 22 KB each,
/// until `timeouts.idle`) and allocator caches. The debug build this test
/// runs kept 43 MiB before remora gave freed memory back (the release build
/// 60 MB against a faster origin), and keeps 7–12 MiB since, as the release
/// build does; the bound leaves room for a loaded machine and still fails
/// the old behaviour by far.
const RETAINED_BOUND_KIB: u64 = 24 * 1024;

/// How long the memory may take to go back: mimalloc purges 1 s after a
/// free, and remora calls it once a second.
const GIVE_BACK_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn memory_of_closed_connections_is_given_back() {
    // Two descriptors per client here (client socket, backend side) and in
    // remora (client and upstream side), which inherits the limit.
    raise_open_files_limit(4 * CLIENTS as u64 + 256);
    let backend = http_backend("memory");
    let proxy = ProxyProcess::start(
        &TestConfig::one_upstream("memory", "http", [backend.addr]).yaml(),
        1,
    );
    let listener = proxy.listener("memory");
    // One request first, so that what any first request sets up is in the baseline.
    drop(keep_alive_clients(listener, 1).await);
    let baseline_kib = proxy.rss_kib();

    let clients = keep_alive_clients(listener, CLIENTS).await;
    let open_kib = proxy.rss_kib();
    drop(clients);

    let deadline = Instant::now() + GIVE_BACK_WITHIN;
    let mut after_kib = proxy.rss_kib();
    while after_kib.saturating_sub(baseline_kib) > RETAINED_BOUND_KIB && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        after_kib = proxy.rss_kib();
    }
    eprintln!(
        "remora RSS: {} MiB before, {} MiB with {CLIENTS} clients, {} MiB after they closed",
        baseline_kib / 1024,
        open_kib / 1024,
        after_kib / 1024
    );
    let retained_kib = after_kib.saturating_sub(baseline_kib);
    assert!(
        retained_kib <= RETAINED_BOUND_KIB,
        "remora kept {} MiB after {CLIENTS} connections closed (bound {} MiB)",
        retained_kib / 1024,
        RETAINED_BOUND_KIB / 1024
    );
}

/// `count` connections, each with one answered request, all open at once:
/// every request is sent before any response is read, so remora holds them
/// (and as many upstream requests) concurrently.
async fn keep_alive_clients(listener: std::net::SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let mut client = TcpStream::connect(listener)
            .await
            .expect("connect to remora");
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: memory\r\n\r\n")
            .await
            .expect("send request");
        clients.push(client);
    }
    for client in &mut clients {
        let mut response = Vec::new();
        let mut chunk = [0u8; 1024];
        while !(response.starts_with(b"HTTP/1.1 200") && response.ends_with(b"\r\n\r\nmemory")) {
            let read = client.read(&mut chunk).await.expect("read response");
            assert!(
                read > 0,
                "remora closed: {}",
                String::from_utf8_lossy(&response)
            );
            response.extend_from_slice(&chunk[..read]);
        }
    }
    clients
}
