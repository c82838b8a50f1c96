//! `black_hole`: an origin that reads a request head and never answers, for
//! timeout tests; it reports when the proxy gave up on each connection. Also
//! the two raw-socket steps such origins are made of.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::serve;

/// An origin that reads a request head and never answers. For each connection it reports how
/// long after the request arrived the peer closed it (`None`: still open after 5 s).
pub fn black_hole() -> (SocketAddr, mpsc::UnboundedReceiver<Option<Duration>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = serve(move |mut stream| {
        let tx = tx.clone();
        async move {
            if !read_request_head(&mut stream).await {
                return;
            }
            let arrived = Instant::now();
            let closed =
                tokio::time::timeout(Duration::from_secs(5), read_until_closed(&mut stream))
                    .await
                    .is_ok();
            let _ = tx.send(closed.then(|| arrived.elapsed()));
        }
    })
    .detach();
    (addr, rx)
}

/// Reads until the end of a request head; false if the peer went away first.
pub async fn read_request_head(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// Reads (and drops) whatever comes until the peer closes or resets.
pub async fn read_until_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}
