//! `h2_origin`: an HTTP/2 (h2c prior knowledge) origin built on the `h2` crate itself, for what
//! hyper's server hides from a test: refusing a stream with `REFUSED_STREAM`, and seeing the
//! `RST_STREAM` a client sends when it abandons a stream. Each stream is handed to the test's
//! handler with its number (0, 1, … across all connections, in arrival order).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::Request;

use super::{Server, serve};

/// Starts the origin; `handle(number, request, respond)` runs on its own task per stream.
pub fn h2_origin<F, Fut>(handle: F) -> Server
where
    F: Fn(u64, Request<RecvStream>, SendResponse<Bytes>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let streams = Arc::new(AtomicU64::new(0));
    serve(move |stream| {
        let (handle, streams) = (handle.clone(), streams.clone());
        async move {
            let Ok(mut connection) = h2::server::handshake(stream).await else {
                return;
            };
            // Accepting drives the connection, so the per-stream tasks see their frames.
            while let Some(Ok((request, respond))) = connection.accept().await {
                let number = streams.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(handle(number, request, respond));
            }
        }
    })
}

/// Reads the request body to its end (releasing flow-control capacity as it goes); a stream
/// that fails keeps what arrived.
pub async fn read_body(request: Request<RecvStream>) -> Vec<u8> {
    let mut body = request.into_body();
    let mut read = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        read.extend_from_slice(&chunk);
    }
    read
}

/// Answers `status` with an empty body.
pub fn answer(mut respond: SendResponse<Bytes>, status: u16) {
    let response = http::Response::builder().status(status).body(()).unwrap();
    let _ = respond.send_response(response, true);
}

/// An HTTP/2 origin that refuses its first `refused` streams with `REFUSED_STREAM` and answers
/// 200 after.
pub fn refusing_first_streams(refused: u64) -> Server {
    h2_origin(move |number, _request, mut respond| async move {
        if number < refused {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        } else {
            answer(respond, 200);
        }
    })
}
