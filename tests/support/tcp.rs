//! `tcp_echo`: an opaque-TCP upstream that echoes bytes and makes half-close visible.
//! On read EOF it writes a last line `bye\n` and shuts down its write side, so a test can
//! check that a proxy forwards a client's FIN without closing the other direction.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::serve;

/// Starts the echo server; it runs until the test's runtime shuts down.
pub fn tcp_echo() -> SocketAddr {
    serve(|mut stream| async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        let _ = stream.write_all(b"bye\n").await;
        let _ = stream.shutdown().await;
    })
    .detach()
}
