//! WebSocket upstream (HTTP/1.1 Upgrade) that echoes text and binary messages, and a
//! lock-step client. No TLS (`ws://` only), no subprotocols, no extensions.

use std::fmt::Display;
use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::serve;

/// Starts the echo server; it runs until the test's runtime shuts down.
pub fn websocket_echo() -> SocketAddr {
    serve(|stream| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        // Pings and the closing handshake are answered by tungstenite itself.
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    })
    .detach()
}

/// Connects to `target` (`127.0.0.1:port`, a `SocketAddr`, or a full `ws://` URL), sends each
/// message and waits for its echo before sending the next, then closes. Returns the echoes.
/// Panics on any failure (it is a test helper).
pub async fn websocket_roundtrip(target: impl Display, msgs: &[&str]) -> Vec<String> {
    let target = target.to_string();
    let url = if target.contains("://") {
        target
    } else {
        format!("ws://{target}/")
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap_or_else(|e| panic!("websocket connect to {url}: {e}"));
    let mut echoes = Vec::with_capacity(msgs.len());
    for msg in msgs {
        ws.send(Message::text(*msg)).await.expect("websocket send");
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    echoes.push(text.to_string());
                    break;
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("websocket read: {e}"),
                None => panic!("websocket closed before echoing {msg:?}"),
            }
        }
    }
    ws.close(None).await.expect("websocket close");
    while let Some(Ok(_)) = ws.next().await {}
    echoes
}
