//! The bodies remora moves. [`RequestBody`]: a client's request body, streamed,
//! and for retries streamed while a copy is kept ([`replay`]) so the request
//! can be sent again. Reserved headers (`x-remora-client-id`, in any
//! spelling) are dropped from a client's trailers as they are read. A body
//! that has ended when its request arrives (a GET's) is held as empty, so it
//! still reads as ended should the client's connection close before the
//! request goes upstream ([`RequestBody::client_request`]); an HTTP/1.x
//! client's body dropped before its end is read and dropped, so that the
//! client's connection carries its next request ([`client`]).
//! A request mirrored to a shadow backend streams as usual while a bounded
//! copy is kept ([`tee`]); the shadow gets the copy once it is whole
//! ([`RequestBody::buffered`]).
//! [`ResponseBody`]: an upstream's streamed body or a body remora made itself,
//! plus what has to happen when the body is done, and the endpoint that
//! answered (for retries, the access log and per-endpoint metrics: carried
//! here rather than in the response's extensions, whose map a successful
//! response then never allocates).
//!
//! Bodies are streamed frame by frame, never buffered whole. When the last frame
//! has been read (or the body is dropped early because the client went away),
//! the body releases its endpoint (connection back to the pool, in-flight count
//! down; a body cut off by the stream idle timeout closes its connection) and tells the request's observer (metrics, access log) how it ended —
//! including the `grpc-status` found in trailers, which only exists at the end.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::http1::{Connection, Http1Body};
use crate::http2::Http2Body;
use crate::idle::Activity;
use crate::timer;

pub mod client;
pub mod replay;
pub mod tee;

use self::client::ClientBody;
use self::replay::{ReplayBody, Superseded};
use self::tee::TeeBody;

/// How a response body ended, for metrics and the access log.
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyEnd {
    /// Data bytes sent to the client.
    pub bytes: u64,
    /// `grpc-status` from the trailers, when there were any.
    pub grpc_status: Option<u16>,
    /// False when the body failed or was dropped before its end.
    pub complete: bool,
    /// Dropped before its end by the client's side (the client went away
    /// or reset its stream), rather than failed.
    pub abandoned: bool,
}

impl BodyEnd {
    /// How a body that did not end whole ended, for the access log:
    /// `cut` (it failed: the upstream or a timeout ended it) or `abandoned`
    /// (the client went away first); `None` for a whole body.
    pub fn unfinished(&self) -> Option<&'static str> {
        match (self.complete, self.abandoned) {
            (true, _) => None,
            (false, true) => Some("abandoned"),
            (false, false) => Some("cut"),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Called once when a response body ends.
pub type BodyEndObserver = Box<dyn FnOnce(BodyEnd) + Send>;

/// What a body streamed from an upstream hands back when it ends (the
/// endpoint's connection and in-flight count: `endpoint` implements it).
pub trait Release: Send {
    /// `reusable` is the HTTP/1.1 connection the body was read off, when
    /// the body ended whole and the connection may carry another request.
    fn finish(self: Box<Self>, reusable: Option<Connection>);
}

/// A response body as an upstream connection delivers it.
pub enum UpstreamBody {
    /// hyper's: an upgrade's, the transparent passthrough's.
    Hyper(Incoming),
    /// remora's own HTTP/1.1 client's (see `http1`).
    Http1(Http1Body),
    /// remora's own HTTP/2 client's (see `http2`).
    Http2(Http2Body),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
            UpstreamBody::Http1(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Http2(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(body) => body.is_end_stream(),
            UpstreamBody::Http1(body) => body.is_end_stream(),
            UpstreamBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(body) => body.size_hint(),
            UpstreamBody::Http1(body) => body.size_hint(),
            UpstreamBody::Http2(body) => body.size_hint(),
        }
    }
}

impl UpstreamBody {
    /// The HTTP/1.1 connection this body was read off, when it ended and
    /// the connection may carry another request.
    pub fn take_reusable(&mut self) -> Option<Connection> {
        match self {
            UpstreamBody::Http1(body) => body.take_reusable(),
            UpstreamBody::Hyper(_) | UpstreamBody::Http2(_) => None,
        }
    }
}

enum Inner {
    Upstream {
        body: UpstreamBody,
        idle: IdleTimeout,
    },
    Local(Option<Bytes>),
}

/// Why a streamed response body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?} (timeouts.idle)")]
pub struct StreamIdle(pub Duration);

/// Fails a streamed body that delivers nothing for `limit`. The deadline is
/// set only when the body first has to wait.
struct IdleTimeout {
    limit: Duration,
    timer: Option<timer::Sleep>,
}

impl IdleTimeout {
    /// Data arrived: the idle period starts again.
    fn active(&mut self) {
        if let Some(timer) = &mut self.timer {
            timer.reset(timer::from_now(self.limit));
        }
    }

    /// The body has to wait: true when it has waited for too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.limit;
        let timer = (self.timer).get_or_insert_with(|| timer::sleep_until(timer::from_now(limit)));
        Pin::new(timer).poll(cx).is_ready()
    }
}

/// A proxied or proxy-made response body. Its state is boxed: a response
/// moves through every layer of a stack, and each move copied all of it
/// (272 bytes) where it now copies a pointer (`docs/benchmarks.md`).
pub struct ResponseBody(Box<BodyState>);

struct BodyState {
    inner: Inner,
    release: Option<Box<dyn Release>>,
    observer: Option<BodyEndObserver>,
    end: BodyEnd,
    served_by: Option<SocketAddr>,
    /// A gRPC response's: a failure ends it with `grpc-status` trailers.
    grpc: bool,
}

impl ResponseBody {
    /// A body streamed from `endpoint`; `release` runs when it ends. It
    /// fails when the upstream sends nothing for `idle`.
    pub fn upstream(
        body: UpstreamBody,
        endpoint: SocketAddr,
        release: impl Release + 'static,
        idle: Duration,
    ) -> Self {
        let mut body = Self::streamed(body, idle);
        body.0.release = Some(Box::new(release));
        body.0.served_by = Some(endpoint);
        body
    }

    /// A body streamed from a connection that belongs to no endpoint (the
    /// transparent listener's passthrough), so nothing to release. It fails
    /// when the upstream sends nothing for `idle`.
    pub fn unreleased(body: UpstreamBody, idle: Duration) -> Self {
        Self::streamed(body, idle)
    }

    fn streamed(body: UpstreamBody, idle: Duration) -> Self {
        let idle = IdleTimeout {
            limit: idle,
            timer: None,
        };
        Self::new(Inner::Upstream { body, idle }, None)
    }

    /// A body remora made itself.
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self::new(Inner::Local((!bytes.is_empty()).then_some(bytes)), None)
    }

    pub fn empty() -> Self {
        Self::new(Inner::Local(None), None)
    }

    fn new(inner: Inner, release: Option<Box<dyn Release>>) -> Self {
        Self(Box::new(BodyState {
            inner,
            release,
            observer: None,
            end: BodyEnd::default(),
            served_by: None,
            grpc: false,
        }))
    }

    /// The endpoint that answered: the one an upstream's body streams from,
    /// or the one an error response's error names.
    pub fn served_by(&self) -> Option<SocketAddr> {
        self.0.served_by
    }

    pub fn set_served_by(&mut self, endpoint: SocketAddr) {
        self.0.served_by = Some(endpoint);
    }

    /// Makes this gRPC response's body, should the upstream fail it, end
    /// with trailers instead: `grpc-status` 14 (`UNAVAILABLE`: the upstream reset or
    /// closed) or 4 (`DEADLINE_EXCEEDED`: `timeouts.idle`), as a proxy-made
    /// response would, and a `grpc-message` saying what failed. A failed
    /// body resets the stream, which a gRPC client reads as `INTERNAL`, a
    /// status it must not retry; and the call would have no status in the
    /// access log. The body still counts as `cut`.
    pub fn end_failure_with_grpc_status(&mut self) {
        self.0.grpc = true;
    }

    /// Adds an observer told how the body ended; observers run in the order
    /// they were added.
    pub fn on_end(&mut self, observer: BodyEndObserver) {
        let state = &mut *self.0;
        state.observer = Some(match state.observer.take() {
            None => observer,
            Some(earlier) => Box::new(move |end| {
                earlier(end);
                observer(end);
            }),
        });
    }
}

impl BodyState {
    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream { body, .. } => body.is_end_stream(),
            Inner::Local(bytes) => bytes.is_none(),
        }
    }

    fn finish(&mut self, complete: bool) {
        self.end.complete = complete;
        if let Some(release) = self.release.take() {
            let reusable = match &mut self.inner {
                Inner::Upstream { body, .. } if complete => body.take_reusable(),
                _ => None,
            };
            release.finish(reusable);
        }
        if let Some(observer) = self.observer.take() {
            observer(self.end);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self.0;
        let polled = match &mut this.inner {
            Inner::Upstream { body, idle } => match Pin::new(body).poll_frame(cx) {
                Poll::Pending if idle.expired(cx) => {
                    Poll::Ready(Some(Err(StreamIdle(idle.limit).into())))
                }
                Poll::Pending => Poll::Pending,
                Poll::Ready(frame) => {
                    idle.active();
                    Poll::Ready(frame)
                }
            },
            Inner::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.end.bytes += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    this.end.grpc_status = crate::headers::grpc_status(trailers);
                }
            }
            Poll::Ready(Some(Err(error)))
                if this.grpc && !is_request_body_failure(error.as_ref()) =>
            {
                let trailers = grpc_failure(error.as_ref());
                this.end.grpc_status = crate::headers::grpc_status(&trailers);
                this.inner = Inner::Local(None);
                this.finish(false);
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Ready(None) => this.finish(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0.inner {
            Inner::Upstream { body, .. } => body.size_hint(),
            Inner::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len()) as u64)
            }
        }
    }
}

/// True when the exchange failed because the request body did (its client
/// went away, or a retry took it over): no upstream failure to report.
fn is_request_body_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    error.is::<RequestBodyError>()
        || matches!(
            error.downcast_ref::<crate::http1::Error>(),
            Some(crate::http1::Error::RequestBody(_))
        )
}

/// The trailers that end a gRPC response whose body failed with `error`.
fn grpc_failure(error: &(dyn std::error::Error + 'static)) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    let (code, message) = match error.downcast_ref::<StreamIdle>() {
        Some(idle) => (4, format!("remora: {idle}")),
        None => (
            14,
            format!("remora: the upstream's response failed: {error}"),
        ),
    };
    crate::headers::put_grpc_status(&mut trailers, code, &message);
    trailers
}

impl Drop for BodyState {
    fn drop(&mut self) {
        if self.release.is_some() || self.observer.is_some() {
            // hyper never polls a body that reports its end up front (an empty one).
            let complete = self.is_end_stream();
            self.end.abandoned = !complete;
            self.finish(complete);
        }
    }
}

/// A request body on its way upstream.
pub struct RequestBody {
    kind: RequestKind,
    /// Stamped with every frame sent on, when someone watches for idleness.
    activity: Option<Arc<Activity>>,
}

enum RequestKind {
    /// Read from the client as it is sent upstream.
    Streaming(ClientBody),
    /// Read from the client (or replayed) as it is sent upstream, a copy kept
    /// for the next try.
    Replaying(ReplayBody<RequestBody>),
    /// Streamed while a copy is kept for a mirrored request ([`tee`]).
    Teed(Box<TeeBody>),
    /// Read whole already (a mirror's copy): data, then trailers. Boxed, the
    /// rare trailers keep every request 80 bytes smaller (a request is moved
    /// a few dozen times on its way through the stack).
    Buffered {
        data: Option<Bytes>,
        trailers: Option<Box<http::HeaderMap>>,
    },
}

/// Why a request body could not be sent whole.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// Reading the client's body failed (it reset the stream or closed the
    /// connection).
    #[error("reading the request body from the client failed: {0}")]
    Client(#[from] hyper::Error),
    /// A retry took the body over: the try sending it was abandoned.
    #[error(transparent)]
    Superseded(#[from] Superseded),
}

impl RequestBodyError {
    /// The request body's own failure under an error hyper reported while
    /// sending the request, when that was the cause.
    pub fn under(error: &hyper::Error) -> Option<&RequestBodyError> {
        std::error::Error::source(error)?.downcast_ref()
    }

    /// True when the client's side failed, not a try that a retry took
    /// the body from.
    pub fn is_client(&self) -> bool {
        matches!(self, RequestBodyError::Client(_))
    }
}

/// Makes the bodies of a request's retries; see [`replay`].
pub struct Replay(ReplayKind);

enum ReplayKind {
    /// The body had ended before the first try (a GET's): each retry gets an
    /// empty body of its own, and there is nothing to copy or share.
    Empty,
    Copy(replay::Replay<RequestBody>),
}

impl RequestBody {
    /// A client's request, its body streamed. A body that has ended already
    /// (a GET whose HEADERS carried END_STREAM) is held as empty from here
    /// on: h2 stops saying that a stream has ended once the client's
    /// connection closes (its `recv_eof` turns a half-closed stream into one
    /// closed with an error), and hyper's client, reading `is_end_stream`
    /// only when it writes the request, would then send HEADERS without
    /// END_STREAM, fail to read the body and reset the upstream stream
    /// (`INTERNAL_ERROR`).
    pub fn client_request(request: http::Request<Incoming>) -> http::Request<Self> {
        ClientBody::request(request).map(|body| {
            if body.is_end_stream() {
                Self::empty()
            } else {
                Self::of(RequestKind::Streaming(body))
            }
        })
    }

    /// A body without data or trailers.
    pub fn empty() -> Self {
        Self::buffered(Bytes::new(), None)
    }

    fn of(kind: RequestKind) -> Self {
        Self {
            kind,
            activity: None,
        }
    }

    /// Stamps `activity` with every frame of this body from now on.
    pub fn watch(&mut self, activity: Arc<Activity>) {
        self.activity = Some(activity);
    }

    /// This body, streamed as before while a copy of up to `limit` bytes is
    /// kept; the receiver gets the copy once the body has ended (see [`tee`]).
    pub fn teed(self, limit: usize) -> (Self, tokio::sync::oneshot::Receiver<tee::Copy>) {
        let (body, copy) = tee::tee(self, limit);
        (Self::of(RequestKind::Teed(Box::new(body))), copy)
    }

    /// A body read whole already; sent as one data frame, then the trailers.
    pub fn buffered(data: Bytes, trailers: Option<http::HeaderMap>) -> Self {
        Self::of(RequestKind::Buffered {
            data: (!data.is_empty()).then_some(data),
            trailers: trailers.map(Box::new),
        })
    }

    /// The body of the first try, which streams while it keeps a copy of up
    /// to `limit` bytes, and the [`Replay`] that makes the retries' bodies.
    /// A body that has ended already (a GET's) is left as it is, and keeps
    /// no copy.
    pub fn replayable(self, limit: usize) -> (Self, Replay) {
        if self.is_end_stream() {
            return (self, Replay(ReplayKind::Empty));
        }
        let (first, replay) = replay::replayable(self, limit);
        (
            Self::of(RequestKind::Replaying(first)),
            Replay(ReplayKind::Copy(replay)),
        )
    }
}

impl Replay {
    /// True when a retry cannot have the body: more than the limit was read,
    /// or reading the client's body failed.
    pub fn is_capped(&self) -> bool {
        match &self.0 {
            ReplayKind::Empty => false,
            ReplayKind::Copy(replay) => replay.is_capped(),
        }
    }

    /// A body of its own for a try sent while another still streams (a
    /// hedge): the client's whole body, once it has ended and the copy holds
    /// all of it; `None` while it is still arriving or when capped.
    pub fn whole_body(&self) -> Option<RequestBody> {
        let ReplayKind::Copy(replay) = &self.0 else {
            return Some(RequestBody::empty());
        };
        let (data, trailers) = replay.whole()?;
        let data = match <[Bytes; 1]>::try_from(data) {
            Ok([one]) => one,
            Err(frames) => Bytes::from(frames.concat()),
        };
        Some(RequestBody::buffered(data, trailers))
    }

    /// The body of the next try — the copy, then the rest of the client's
    /// body — or `None` when capped. The previous try's body fails from now
    /// on, should its connection still be sending it.
    pub fn next_body(&self) -> Option<RequestBody> {
        let ReplayKind::Copy(replay) = &self.0 else {
            return Some(RequestBody::empty());
        };
        let body = replay.next_body()?;
        Some(RequestBody::of(RequestKind::Replaying(body)))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let polled = self.poll_kind(cx);
        if let (Poll::Ready(Some(Ok(_))), Some(activity)) = (&polled, &self.activity) {
            activity.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RequestKind::Streaming(body) => body.is_end_stream(),
            RequestKind::Replaying(body) => body.is_end_stream(),
            RequestKind::Teed(body) => body.is_end_stream(),
            RequestKind::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RequestKind::Streaming(body) => body.size_hint(),
            RequestKind::Replaying(body) => body.size_hint(),
            RequestKind::Teed(body) => body.size_hint(),
            RequestKind::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len()) as u64)
            }
        }
    }
}

/// A client's trailers, like its headers, may not set a reserved header.
fn without_reserved_trailers(mut frame: Frame<Bytes>) -> Frame<Bytes> {
    if let Some(trailers) = frame.trailers_mut() {
        crate::headers::remove_headers(trailers, crate::headers::is_reserved);
    }
    frame
}

impl RequestBody {
    /// The next frame, from whichever kind of body this is.
    fn poll_kind(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match &mut self.kind {
            RequestKind::Streaming(body) => Pin::new(body)
                .poll_frame(cx)
                .map_ok(without_reserved_trailers)
                .map_err(RequestBodyError::Client),
            RequestKind::Replaying(body) => Pin::new(body).poll_frame(cx),
            RequestKind::Teed(body) => Pin::new(body.as_mut()).poll_frame(cx),
            RequestKind::Buffered { data, trailers } => Poll::Ready(
                (data.take().map(Frame::data))
                    .or_else(|| trailers.take().map(|trailers| Frame::trailers(*trailers)))
                    .map(Ok),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::{Request, Response};
    use http_body_util::Empty;
    use hyper::server::conn::http2;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::sync::mpsc;

    use super::*;

    /// A GET whose HEADERS ended its stream reaches remora's HTTP/2 server;
    /// then the client's connection closes, before the request went
    /// upstream. Held as the `Incoming` it was, the body would now say it
    /// has not ended, and reading it would fail with h2's "stream closed
    /// because of a broken pipe".
    #[tokio::test]
    async fn a_body_that_had_ended_stays_ended_when_the_client_goes_away() {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (bodies, mut received) = mpsc::unbounded_channel();
        let service = service_fn(move |request: Request<Incoming>| {
            let _ = bodies.send(RequestBody::client_request(request).into_body());
            std::future::pending::<Result<Response<Empty<Bytes>>, Infallible>>()
        });
        let server = tokio::spawn(
            http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(server_io), service),
        );
        let (mut client, connection) = h2::client::handshake(client_io).await.unwrap();
        let connection = tokio::spawn(connection);
        let get = Request::get("http://origin/").body(()).unwrap();
        let (_response, _) = client.send_request(get, true).unwrap();
        let mut body = received.recv().await.unwrap();
        assert!(body.is_end_stream());

        connection.abort();
        drop(client);
        let ended = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(ended.is_ok(), "the server saw the connection close");

        // What hyper's client reads when it sends the request on: an ended
        // body goes out as END_STREAM on the HEADERS, no body is piped.
        assert!(body.is_end_stream());
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(frame.is_none(), "{frame:?}");
    }
}
