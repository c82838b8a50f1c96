//! gRPC echo upstream and clients, without protoc: the message is a hand-written prost struct
//! and the server routes on the path to `tonic::server::Grpc` (h2c prior knowledge only).
//!
//! Service `remora.test.Echo`:
//! - `Unary`: returns the request; trailers carry `grpc-status: 0` and `x-echo-trailer: done`.
//!   (Served as a one-message server stream: identical on the wire to a unary reply, but tonic's
//!   `unary` path cannot put custom metadata in the trailers.)
//! - `Bidi`: echoes each message as soon as it arrives; ends with `grpc-status: 0` and
//!   `x-echo-trailer: done` in the trailers once the client closes its side.
//! - `Fail`: answers trailers-only with `UNAVAILABLE`.
//! - `FailAfterReply`: returns the request, then `INTERNAL` in the trailers (a status known
//!   only when the body ends).
//!
//! `grpc_failing` serves the same methods after answering its first calls with a chosen status.
//!
//! Anything else gets `UNIMPLEMENTED`.

use std::convert::Infallible;
use std::future::ready;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use super::{Server, serve};

pub const UNARY: &str = "/remora.test.Echo/Unary";
pub const BIDI: &str = "/remora.test.Echo/Bidi";
pub const FAIL: &str = "/remora.test.Echo/Fail";
pub const FAIL_AFTER_REPLY: &str = "/remora.test.Echo/FailAfterReply";

/// How long `grpc_bidi` waits for each echo before concluding the stream is being buffered.
pub const ECHO_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMsg {
    #[prost(string, tag = "1")]
    pub text: String,
}

fn codec() -> ProstCodec<EchoMsg, EchoMsg> {
    ProstCodec::default()
}

/// Starts the echo service on its own port; dropping the returned `Server` stops it.
pub fn grpc_echo() -> Server {
    serve(|stream| async move {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service_fn(route))
            .await;
    })
}

/// An echo service that answers its first `failing` calls (any method) with `code`, in a
/// trailers-only response, and serves normally after that. Returns the server and the count
/// of calls received.
pub fn grpc_failing(code: Code, failing: u64) -> (Server, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let server = serve(move |stream| {
        let counted = counted.clone();
        async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let call = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    if call < failing {
                        let status = Status::new(code, "grpc_failing: fail on purpose");
                        return Ok(status.into_http());
                    }
                    route(req).await
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    });
    (server, calls)
}

/// The whole server: one match on the path. Generic over the body, so it also fits a
/// tower stack or `tonic::transport::Server` if a test wants that.
pub async fn route<B>(
    req: http::Request<B>,
) -> Result<http::Response<tonic::body::Body>, Infallible>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let mut grpc = tonic::server::Grpc::new(codec());
    let response = match req.uri().path() {
        UNARY => grpc.server_streaming(tower::service_fn(unary), req).await,
        BIDI => grpc.streaming(tower::service_fn(bidi), req).await,
        FAIL => grpc.unary(tower::service_fn(fail), req).await,
        FAIL_AFTER_REPLY => {
            let service = tower::service_fn(fail_after_reply);
            grpc.server_streaming(service, req).await
        }
        path => Status::unimplemented(format!("no method {path}")).into_http(),
    };
    Ok(response)
}

type EchoStream = BoxStream<'static, Result<EchoMsg, Status>>;

/// Ends a response stream with status OK plus custom trailer metadata (tonic writes an `Err`
/// item of a server stream as the trailers, whatever its code).
fn ok_with_trailer() -> Result<EchoMsg, Status> {
    let mut trailers = MetadataMap::new();
    trailers.insert("x-echo-trailer", MetadataValue::from_static("done"));
    Err(Status::with_metadata(Code::Ok, "", trailers))
}

async fn fail_after_reply(req: Request<EchoMsg>) -> Result<Response<EchoStream>, Status> {
    let internal = Status::internal("echo backend: fail after the reply");
    let reply = stream::iter([Ok(req.into_inner()), Err(internal)]);
    Ok(Response::new(reply.boxed()))
}

async fn unary(req: Request<EchoMsg>) -> Result<Response<EchoStream>, Status> {
    let reply = stream::iter([Ok(req.into_inner()), ok_with_trailer()]);
    Ok(Response::new(reply.boxed()))
}

async fn bidi(req: Request<Streaming<EchoMsg>>) -> Result<Response<EchoStream>, Status> {
    let echoes = req
        .into_inner()
        .chain(stream::once(ready(ok_with_trailer())));
    Ok(Response::new(echoes.boxed()))
}

async fn fail(_: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
    Err(Status::unavailable("echo backend: fail on purpose"))
}

async fn client(addr: SocketAddr) -> Result<tonic::client::Grpc<Channel>, Status> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("connect to {addr}: {e}")))?;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    Ok(client)
}

/// Calls `Unary`; returns the echoed text and the response *trailers* (not the headers).
pub async fn grpc_unary(addr: SocketAddr, text: &str) -> Result<(String, MetadataMap), Status> {
    grpc_call(addr, UNARY, text).await
}

/// Calls `path` (`UNARY` or `FAIL_AFTER_REPLY`), whose reply is one message then trailers;
/// returns the echoed text and the trailers, or the status the call failed with.
pub async fn grpc_call(
    addr: SocketAddr,
    path: &'static str,
    text: &str,
) -> Result<(String, MetadataMap), Status> {
    grpc_call_with(addr, path, text, &[]).await
}

/// [`grpc_call`] with request metadata (e.g. `authorization`).
pub async fn grpc_call_with(
    addr: SocketAddr,
    path: &'static str,
    text: &str,
    metadata: &[(&'static str, &str)],
) -> Result<(String, MetadataMap), Status> {
    let mut client = client(addr).await?;
    let mut request = Request::new(EchoMsg { text: text.into() });
    for (name, value) in metadata {
        let value = value
            .parse()
            .map_err(|_| Status::invalid_argument("metadata value"))?;
        request.metadata_mut().insert(*name, value);
    }
    let path = PathAndQuery::from_static(path);
    let mut replies = client
        .server_streaming(request, path, codec())
        .await?
        .into_inner();
    let reply = replies
        .message()
        .await?
        .ok_or_else(|| Status::internal("Unary: stream ended without a reply"))?;
    let trailers = replies.trailers().await?.unwrap_or_default();
    Ok((reply.text, trailers))
}

/// Calls `Fail` with tonic's real unary client path; expect `Err(status)` with `Unavailable`.
pub async fn grpc_fail(addr: SocketAddr) -> Result<String, Status> {
    let mut client = client(addr).await?;
    let request = Request::new(EchoMsg {
        text: "fail".into(),
    });
    let path = PathAndQuery::from_static(FAIL);
    let reply = client.unary(request, path, codec()).await?;
    Ok(reply.into_inner().text)
}

/// Calls `Bidi` in lock step: message n+1 is sent only after the echo of message n arrived,
/// with the request stream still open. If anything between client and server buffers the
/// stream, no echo arrives and this fails with `DeadlineExceeded` after `ECHO_WAIT`.
/// Returns the echoes and the trailers.
pub async fn grpc_bidi(
    addr: SocketAddr,
    msgs: Vec<String>,
) -> Result<(Vec<String>, MetadataMap), Status> {
    let mut client = client(addr).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let request = Request::new(ReceiverStream::new(rx));
    let path = PathAndQuery::from_static(BIDI);
    let mut replies = tokio::time::timeout(ECHO_WAIT, client.streaming(request, path, codec()))
        .await
        .map_err(|_| Status::deadline_exceeded("Bidi: no response headers"))??
        .into_inner();

    let mut echoes = Vec::with_capacity(msgs.len());
    for (n, text) in msgs.into_iter().enumerate() {
        tx.send(EchoMsg { text })
            .await
            .map_err(|_| Status::internal("Bidi: request stream closed early"))?;
        let echo = tokio::time::timeout(ECHO_WAIT, replies.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "Bidi: no echo of message {n} within {ECHO_WAIT:?}; is the stream buffered?"
                ))
            })??
            .ok_or_else(|| Status::internal(format!("Bidi: stream ended before echo {n}")))?;
        echoes.push(echo.text);
    }
    drop(tx); // half-close: the server now ends the stream with its trailers.
    if replies.message().await?.is_some() {
        return Err(Status::internal("Bidi: more echoes than messages"));
    }
    let trailers = replies.trailers().await?.unwrap_or_default();
    Ok((echoes, trailers))
}
