//! A client's request body as its connection hands it over ([`ClientBody`]),
//! and what becomes of a rest that remora does not read.
//!
//! hyper's HTTP/1.x server reads a connection's next request only once this
//! one's body was read. A body dropped before its end is read as far as what
//! has arrived, and if that is not all of it the connection closes after the
//! answer, an answer sent without `Connection: close`: the client's next
//! request on it fails. That happens whenever the answer comes before the
//! body: an upstream's early `204` or `413`, and every answer remora makes
//! itself (a `502` from an endpoint that refuses, `401`, `403`, `429`, `503`).
//! So a body that came over HTTP/1.x and is dropped before its end is read
//! to its end by a task of its own, and dropped: for at most [`DRAIN_FOR`],
//! up to [`DRAIN_AT_MOST`] bytes, and while the client sends something at
//! least every [`DRAIN_IDLE`]; past any of these the rest is left unread and
//! the connection closes after its answer, as it did before. On a connection
//! that closes after this request anyway, the drain also spares the client
//! the reset that closing on unread bytes makes, which can destroy the
//! answer before the client read it (nginx's lingering close).
//!
//! Not drained: a body whose client still waits for `100 Continue` (hyper
//! sends it when the body is first read, and only while no answer has
//! started; a client that got its answer instead may send the body or not,
//! so the connection must close), and an HTTP/2 request's, which hyper ends
//! with a stream reset that costs the client nothing.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// The most of an unread rest that is read and dropped.
pub const DRAIN_AT_MOST: u64 = 1 << 20;

/// How long an unread rest is read and dropped for.
pub const DRAIN_FOR: Duration = Duration::from_secs(30);

/// How long the drain waits for the client's next bytes before it gives up
/// (nginx's `lingering_timeout`): a client that stopped sending its body
/// does not hold its connection, or the end of an answer that its close
/// delimits, for all of [`DRAIN_FOR`].
pub const DRAIN_IDLE: Duration = Duration::from_secs(5);

/// A client's request body, drained when dropped before its end (see the
/// module doc).
pub struct ClientBody {
    /// Taken only when the body is dropped.
    incoming: Option<Incoming>,
    /// Read to its end, or failed: nothing is left to drain.
    ended: bool,
    /// It came over HTTP/1.x.
    drain_rest: bool,
    /// The client waits for `100 Continue`, and the body was never read.
    awaits_continue: bool,
}

impl ClientBody {
    /// `request`, its body as its connection handed it over.
    pub fn request(request: Request<Incoming>) -> Request<Self> {
        let drain_rest = request.version() < Version::HTTP_2;
        // As hyper reads it: any `Expect` field, on HTTP/1.1 only.
        let awaits_continue = request.version() == Version::HTTP_11
            && (request.headers().get_all(header::EXPECT).iter())
                .any(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        request.map(|incoming| Self {
            incoming: Some(incoming),
            ended: false,
            drain_rest,
            awaits_continue,
        })
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        // hyper sends `100 Continue` when this poll reaches its connection,
        // unless an answer has started by then: that takes the answer to be
        // ready within the very poll that first reads the body.
        this.awaits_continue = false;
        let Some(incoming) = &mut this.incoming else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(incoming).poll_frame(cx);
        // Trailers come last: a reader may stop at them.
        this.ended |= match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers(),
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Pending => false,
        };
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.incoming.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        let unread = self.drain_rest && !self.awaits_continue && !self.is_end_stream();
        if let (true, Some(incoming)) = (unread, self.incoming.take())
            && tokio::runtime::Handle::try_current().is_ok()
        {
            crate::task::spawn(drain(incoming));
        }
    }
}

/// The body of a request answered before it reached the stack (a
/// `bad_request`, a `no_route`), given up unread: drained as a dropped
/// [`ClientBody`] is.
pub fn discard_body(request: Request<Incoming>) {
    drop(ClientBody::request(request));
}

/// Reads `body` to its end and drops it, within the bounds.
async fn drain(mut body: Incoming) {
    let reading = async {
        let mut dropped = 0;
        while dropped < DRAIN_AT_MOST {
            match tokio::time::timeout(DRAIN_IDLE, body.frame()).await {
                Ok(Some(Ok(frame))) => dropped += frame.data_ref().map_or(0, |d| d.len() as u64),
                Ok(Some(Err(_)) | None) => return true,
                Err(_) => return false,
            }
        }
        false
    };
    if !matches!(tokio::time::timeout(DRAIN_FOR, reading).await, Ok(true)) {
        tracing::debug!(
            "the unread rest of a request body was longer or slower than remora drops; \
             the client's connection closes after its answer"
        );
    }
}
