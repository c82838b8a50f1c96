//! The response body remora hands to its listeners: an upstream's streamed body or
//! a body remora made itself, plus what has to happen when the body is done.
//!
//! Bodies are streamed frame by frame, never buffered whole. When the last frame
//! has been read (or the body is dropped early because the client went away),
//! the body releases its endpoint (connection back to the pool, in-flight count
//! down) and tells the request's observer (metrics, access log) how it ended —
//! including the `grpc-status` found in trailers, which only exists at the end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::endpoint::Release;

/// How a response body ended, for metrics and the access log.
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyEnd {
    /// Data bytes sent to the client.
    pub bytes: u64,
    /// `grpc-status` from the trailers, when there were any.
    pub grpc_status: Option<u16>,
    /// False when the body failed or was dropped before its end.
    pub complete: bool,
}

/// Called once when a response body ends.
pub type Observer = Box<dyn FnOnce(BodyEnd) + Send>;

enum Inner {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

/// A proxied or proxy-made response body.
pub struct ResponseBody {
    inner: Inner,
    release: Option<Release>,
    observer: Option<Observer>,
    end: BodyEnd,
}

impl ResponseBody {
    /// A body streamed from an upstream; `release` runs when it ends.
    pub fn upstream(body: Incoming, release: Release) -> Self {
        Self::new(Inner::Upstream(body), Some(release))
    }

    /// A body remora made itself.
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self::new(Inner::Local((!bytes.is_empty()).then_some(bytes)), None)
    }

    pub fn empty() -> Self {
        Self::new(Inner::Local(None), None)
    }

    fn new(inner: Inner, release: Option<Release>) -> Self {
        Self {
            inner,
            release,
            observer: None,
            end: BodyEnd::default(),
        }
    }

    /// Sets the observer told how the body ended. Replaces an earlier one.
    pub fn observe(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    fn finish(&mut self, complete: bool) {
        self.end.complete = complete;
        if let Some(release) = self.release.take() {
            release.finish(complete);
        }
        if let Some(observer) = self.observer.take() {
            observer(self.end);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
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
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Ready(None) => this.finish(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len()) as u64)
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.release.is_some() || self.observer.is_some() {
            // hyper never polls a body that reports its end up front (an empty one).
            let complete = self.is_end_stream();
            self.finish(complete);
        }
    }
}
