//! Reading HTTP/1.1 heads and responses byte by byte off a raw connection,
//! for tests that write their requests by hand (framing the clients of
//! `client.rs` would not send, several requests on one connection).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one request or response head (up to the blank line), lowercased;
/// `None` when the connection ends first.
pub async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).to_ascii_lowercase())
}

/// Reads one response with a `content-length` body (or none): its head and
/// body. Panics when none comes within 10 s or the connection ends first.
pub async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> (String, String) {
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(stream))
        .await
        .expect("a response head within 10 s")
        .expect("a response head before the connection ends");
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    (head, String::from_utf8(body).unwrap())
}

/// Reads until the peer closes (or 5 s), returns what arrived.
pub async fn read_until_close(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut buffer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
    String::from_utf8_lossy(&buffer).into_owned()
}

/// The head of a POST to `path` with a 5-byte body.
pub fn post_head(path: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n")
}

/// Sends `head` (a request with a 5-byte body, see [`post_head`]) and its
/// body 300 ms later (an answer may come first), then a GET; returns the
/// first response's head and the GET's response. Panics when the connection
/// fails under either.
pub async fn late_body_then_get(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    head: &str,
) -> (String, (String, String)) {
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(b"hello").await.unwrap();
    let (first, _) = read_response(stream).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    (first, read_response(stream).await)
}
