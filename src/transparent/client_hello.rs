//! The server name (SNI) a TLS client asks for, read from its ClientHello
//! without terminating the connection: the first bytes are peeked (never
//! consumed) until they hold a whole ClientHello — which may arrive in
//! several TCP segments and span several TLS records — and parsed by rustls'
//! `Acceptor` (as Envoy's TLS inspector runs BoringSSL), on a copy; the
//! connection's bytes stay in the socket and go on to the original
//! destination unchanged. Waiting is bounded in size ([`MAX_CLIENT_HELLO`])
//! and time (`transparent.detect_timeout`); what is not a ClientHello within
//! those bounds names no server.

use std::time::Duration;

use rustls::server::Acceptor;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::detect::REPEEK_INTERVAL;

/// The most bytes peeked for a ClientHello. Real ones are well under 2 KiB
/// (a post-quantum key share included); a TLS record holds at most 16 KiB.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// What the first bytes of a connection say about the server it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// A ClientHello naming this server (lower case, no trailing dot).
    ServerName(String),
    /// A ClientHello without a host name: no `server_name` extension, or an
    /// IP address in it (RFC 6066 allows names only).
    NoServerName,
    /// The bytes do not start a TLS handshake record (or there are none).
    NotTls,
    /// A TLS handshake that is malformed, larger than [`MAX_CLIENT_HELLO`],
    /// or unfinished when the client stopped sending or time ran out.
    Invalid(String),
}

/// Reads the ClientHello at the start of `bytes`; `None` while they are a
/// strict prefix of one and more are needed.
pub fn parse(bytes: &[u8]) -> Option<ClientHello> {
    // A handshake record (22) of TLS 1.x (major version 3).
    match bytes {
        [] | [0x16] => return None,
        [0x16, 0x03, ..] => {}
        _ => return Some(ClientHello::NotTls),
    }
    let mut acceptor = Acceptor::default();
    let mut rest = bytes;
    loop {
        match acceptor.read_tls(&mut rest) {
            Ok(0) if !rest.is_empty() => {
                return Some(ClientHello::Invalid("rustls took no more bytes".to_owned()));
            }
            Ok(_) => {}
            Err(error) => return Some(ClientHello::Invalid(error.to_string())),
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let name = accepted.client_hello().server_name().map(|name| {
                    let name = name.strip_suffix('.').unwrap_or(name);
                    name.to_ascii_lowercase()
                });
                return Some(name.map_or(ClientHello::NoServerName, ClientHello::ServerName));
            }
            Ok(None) if rest.is_empty() => return None,
            Ok(None) => {}
            Err((error, _alert)) => return Some(ClientHello::Invalid(error.to_string())),
        }
    }
}

/// Peeks at `stream` until its first bytes hold a ClientHello (or show
/// there is none), for at most `timeout` and [`MAX_CLIENT_HELLO`] bytes.
pub async fn peek_client_hello(stream: &TcpStream, timeout: Duration) -> ClientHello {
    let deadline = Instant::now() + timeout;
    let mut buffer = vec![0; MAX_CLIENT_HELLO];
    let mut seen = 0;
    loop {
        let peeked = match tokio::time::timeout_at(deadline, stream.peek(&mut buffer)).await {
            Ok(Ok(peeked)) => peeked,
            Ok(Err(error)) => return ClientHello::Invalid(format!("peeking failed: {error}")),
            Err(_) => 0,
        };
        if peeked == 0 {
            // Closed (or half-closed) before sending a byte — a peek returns
            // the unread bytes, so it is 0 only when none came — or silent.
            return ClientHello::NotTls;
        }
        if peeked > seen {
            seen = peeked;
            if let Some(hello) = parse(&buffer[..seen]) {
                return hello;
            }
            if seen == buffer.len() {
                return ClientHello::Invalid(format!(
                    "no whole ClientHello in the first {MAX_CLIENT_HELLO} bytes"
                ));
            }
        }
        // A peek returns at once while bytes wait, even past the deadline.
        if Instant::now() >= deadline {
            return ClientHello::Invalid(format!(
                "{seen} bytes of an unfinished ClientHello after {timeout:?}"
            ));
        }
        // Peeking again at once would return the same bytes: wait a little.
        tokio::time::sleep_until(deadline.min(Instant::now() + REPEEK_INTERVAL)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::super::detect::tests::pair;
    use super::*;

    /// The first flight of a real rustls client for `name` (a ClientHello
    /// with a TLS 1.3 key share).
    fn rustls_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut client = ClientConnection::new(Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        client.write_tls(&mut bytes).unwrap();
        bytes
    }

    /// `hello` (one handshake record) as two records, split in its middle.
    fn in_two_records(hello: &[u8]) -> Vec<u8> {
        let (header, message) = hello.split_at(5);
        let (first, second) = message.split_at(message.len() / 2);
        let mut bytes = Vec::new();
        for part in [first, second] {
            bytes.extend_from_slice(&header[..3]);
            bytes.extend_from_slice(&u16::try_from(part.len()).unwrap().to_be_bytes());
            bytes.extend_from_slice(part);
        }
        bytes
    }

    #[test]
    fn reads_the_server_name_of_a_real_client_hello() {
        let hello = rustls_hello("API.Example.com");
        assert_eq!(hello[0], 0x16);
        assert_eq!(
            parse(&hello),
            Some(ClientHello::ServerName("api.example.com".to_owned()))
        );
        // rustls sends no SNI for an IP address.
        assert_eq!(
            parse(&rustls_hello("10.0.0.1")),
            Some(ClientHello::NoServerName)
        );
        // Bytes after the ClientHello (early data) do not matter.
        let mut more = hello.clone();
        more.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0xff]);
        assert!(matches!(parse(&more), Some(ClientHello::ServerName(_))));
    }

    /// OpenSSL's ClientHello (`openssl s_client -servername
    /// seed.example.com`, captured for the fuzz seeds): another
    /// implementation's choice and order of extensions.
    #[test]
    fn reads_the_server_name_of_an_openssl_client_hello() {
        let hello = include_bytes!("../../fuzz/seeds/client_hello/openssl_sni");
        assert_eq!(
            parse(hello),
            Some(ClientHello::ServerName("seed.example.com".to_owned()))
        );
        assert_eq!(parse(&hello[..hello.len() - 1]), None);
    }

    #[test]
    fn a_client_hello_across_records_is_joined() {
        let hello = in_two_records(&rustls_hello("split.example.com"));
        assert_eq!(
            parse(&hello),
            Some(ClientHello::ServerName("split.example.com".to_owned()))
        );
    }

    #[test]
    fn every_truncation_asks_for_more() {
        for hello in [
            rustls_hello("t.example.com"),
            in_two_records(&rustls_hello("t.example.com")),
        ] {
            for end in 0..hello.len() {
                assert_eq!(parse(&hello[..end]), None, "{end} of {} bytes", hello.len());
            }
        }
    }

    #[test]
    fn other_protocols_are_not_tls() {
        for bytes in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"SSH-2.0-OpenSSH",
            b"\x16\x02\x00",
            b"\x15\x03\x03\x00\x02\x02\x28",
            b"\x00",
        ] {
            assert_eq!(parse(bytes), Some(ClientHello::NotTls), "{bytes:?}");
        }
    }

    /// Garbage and damaged ClientHellos never panic, and a decided answer
    /// stays decided when more bytes follow.
    #[test]
    fn garbage_and_corrupted_hellos_are_handled() {
        let hello = rustls_hello("fuzz.example.com");
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut bytes = hello.clone();
            for _ in 0..=random() % 4 {
                let at = usize::try_from(random() % bytes.len() as u64).unwrap();
                bytes[at] ^= 1 << (random() % 8);
            }
            let end = usize::try_from(random() % (bytes.len() as u64 + 1)).unwrap();
            if let Some(decided) = parse(&bytes[..end]) {
                assert_eq!(parse(&bytes), Some(decided), "{bytes:?} cut at {end}");
            }
        }
        for length in 0..600 {
            let mut bytes = vec![0x16, 0x03];
            bytes.extend((0..length).map(|_| random() as u8));
            if let Some(hello) = parse(&bytes) {
                assert_ne!(hello, ClientHello::NotTls);
            }
        }
        // A record longer than TLS allows, a handshake that is no ClientHello.
        assert!(matches!(
            parse(b"\x16\x03\x01\xff\xff\x01\x00"),
            Some(ClientHello::Invalid(_))
        ));
        assert!(matches!(
            parse(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"),
            Some(ClientHello::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn a_client_hello_split_across_segments_is_peeked_not_consumed() {
        let hello = rustls_hello("segments.example.com");
        let (mut client, mut server) = pair().await;
        client.set_nodelay(true).unwrap();
        let (first, second) = hello.split_at(40);
        client.write_all(first).await.unwrap();
        let second = second.to_vec();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            client.write_all(&second).await.unwrap();
            client
        });
        assert_eq!(
            peek_client_hello(&server, Duration::from_secs(5)).await,
            ClientHello::ServerName("segments.example.com".to_owned())
        );
        let _client = writer.await.unwrap();
        let mut read = vec![0; hello.len()];
        server.read_exact(&mut read).await.unwrap();
        assert_eq!(read, hello, "every byte is still there, unchanged");
    }

    #[tokio::test]
    async fn waiting_is_bounded_in_time_and_size() {
        let hello = rustls_hello("slow.example.com");
        // Half a ClientHello, then nothing.
        let (mut client, server) = pair().await;
        client.write_all(&hello[..hello.len() / 2]).await.unwrap();
        let started = std::time::Instant::now();
        let peeked = peek_client_hello(&server, Duration::from_millis(100)).await;
        assert!(matches!(peeked, ClientHello::Invalid(_)), "{peeked:?}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(90), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        // Nothing at all: not TLS, after the timeout.
        let (_silent, server) = pair().await;
        let peeked = peek_client_hello(&server, Duration::from_millis(50)).await;
        assert_eq!(peeked, ClientHello::NotTls);
        // A ClientHello claiming more than the bound, in records of 16 KiB.
        let (mut client, server) = pair().await;
        let mut huge = b"\x16\x03\x01\x40\x00\x01\x01\x00\x00\x03\x03".to_vec();
        huge.resize(5 + 0x4000, 0);
        huge.extend_from_slice(b"\x16\x03\x01\x40\x00");
        huge.resize(huge.len() + 0x4000, 0);
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&huge).await;
            client
        });
        let started = std::time::Instant::now();
        let peeked = peek_client_hello(&server, Duration::from_secs(10)).await;
        assert!(matches!(peeked, ClientHello::Invalid(_)), "{peeked:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "it did not wait for the rest"
        );
        drop(writer);
    }
}
