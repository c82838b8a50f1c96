//! Protocol detection on the transparent listener, per connection: the
//! client's first bytes are peeked (not consumed) and compared with the
//! HTTP/2 connection preface and HTTP/1.x request methods; anything else is
//! opaque TCP. Detection waits at most `transparent.detect_timeout` (100 ms by
//! default) for bytes: a client that sends nothing first — it waits for a
//! server that speaks first (SMTP, MySQL, ...) — is opaque TCP when the timeout
//! expires, so its server's greeting is late by that much once per
//! connection. Ports in `transparent.opaque_ports` skip detection (and that
//! delay) entirely. A client that closes or fails before deciding is opaque
//! too; bytes are never lost, since nothing is read.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// The protocol a transparent connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Opaque,
}

impl Detected {
    /// The `protocol` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Detected::Http1 => "http1",
            Detected::Http2 => "http2",
            Detected::Opaque => "tcp",
        }
    }
}

/// RFC 9113 §3.4.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The request methods an HTTP/1.x connection may start with (RFC 9110 §9
/// and PATCH), with the space that ends the method.
const HTTP1_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

/// How long to wait before peeking again when the bytes so far could still
/// start either protocol (a preface or method split across packets).
pub(super) const REPEEK_INTERVAL: Duration = Duration::from_millis(1);

/// Decides from the first bytes of a connection; `None` while they are a
/// strict prefix of something HTTP and more are needed.
pub fn classify(bytes: &[u8]) -> Option<Detected> {
    if bytes.is_empty() {
        return None;
    }
    if bytes.starts_with(HTTP2_PREFACE) {
        return Some(Detected::Http2);
    }
    if HTTP1_METHODS.iter().any(|method| bytes.starts_with(method)) {
        return Some(Detected::Http1);
    }
    let could_become_http = HTTP2_PREFACE.starts_with(bytes)
        || HTTP1_METHODS.iter().any(|method| method.starts_with(bytes));
    if could_become_http {
        None
    } else {
        Some(Detected::Opaque)
    }
}

/// Peeks at `stream` until its first bytes decide the protocol, for at most
/// `timeout`.
pub async fn detect(stream: &TcpStream, timeout: Duration) -> Detected {
    let deadline = Instant::now() + timeout;
    let mut buffer = [0; HTTP2_PREFACE.len()];
    loop {
        let peeked = match tokio::time::timeout_at(deadline, stream.peek(&mut buffer)).await {
            Ok(Ok(peeked)) if peeked > 0 => peeked,
            // Nothing (more) in time, end of stream or an error.
            _ => return Detected::Opaque,
        };
        if let Some(detected) = classify(&buffer[..peeked]) {
            return detected;
        }
        // A peek returns at once while bytes wait, even past the deadline:
        // a client that stops inside a method would be peeked at forever.
        if Instant::now() >= deadline {
            return Detected::Opaque;
        }
        // Peeking again at once would return the same bytes: wait a little.
        tokio::time::sleep_until(deadline.min(Instant::now() + REPEEK_INTERVAL)).await;
    }
}

#[cfg(test)]
pub(super) mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"DELETE /x"), Some(Detected::Http1));
        assert_eq!(classify(HTTP2_PREFACE), Some(Detected::Http2));
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Detected::Opaque)); // TLS
        assert_eq!(classify(b"*2\r\n$3\r\nGET"), Some(Detected::Opaque)); // redis
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(b"PRI * HTTP/1.1"), Some(Detected::Opaque));
        assert_eq!(classify(b""), None);
    }

    /// A connected client and server socket on 127.0.0.1.
    pub(in crate::transparent) async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn a_silent_client_is_opaque_after_the_timeout() {
        let (_client, server) = pair().await;
        let started = std::time::Instant::now();
        let detected = detect(&server, Duration::from_millis(50)).await;
        assert_eq!(detected, Detected::Opaque);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(45), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    #[tokio::test]
    async fn a_client_that_stops_inside_a_method_is_opaque_after_the_timeout() {
        let (mut client, server) = pair().await;
        client.write_all(b"GE").await.unwrap();
        let started = std::time::Instant::now();
        let detected = tokio::time::timeout(
            Duration::from_secs(5),
            detect(&server, Duration::from_millis(50)),
        )
        .await;
        assert_eq!(detected, Ok(Detected::Opaque), "it stopped waiting");
        assert!(started.elapsed() >= Duration::from_millis(45));
    }

    #[tokio::test]
    async fn a_method_split_across_writes_is_still_http() {
        let (mut client, server) = pair().await;
        client.write_all(b"PA").await.unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(b"TCH / HTTP/1.1\r\n").await.unwrap();
            client
        });
        assert_eq!(
            detect(&server, Duration::from_secs(5)).await,
            Detected::Http1
        );
        let _client = writer.await.unwrap();
        // Nothing was consumed.
        let mut first = [0; 5];
        assert_eq!(server.peek(&mut first).await.unwrap(), 5);
        assert_eq!(&first, b"PATCH");
    }
}
