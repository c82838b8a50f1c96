//! The body of a response received on an HTTP/2 stream: its DATA frames as
//! they come, each one's flow-control window given back to the peer as it
//! is read (so the peer sends at the pace the body is read), then its
//! trailers. Dropped before its end, h2 resets the stream (`CANCEL`).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::RecvStream;
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body::{Body, Frame, SizeHint};

use super::BoxError;
use super::upload::Upload;

/// A response body streamed off an HTTP/2 stream.
pub struct Http2Body {
    received: RecvStream,
    /// Data bytes still to come, when the response announced its length.
    remaining: Option<u64>,
    /// All DATA frames have been read; trailers may follow.
    data_ended: bool,
    /// The request body still being sent, stopped if this body is dropped.
    upload: Option<Upload>,
}

impl Http2Body {
    /// `headers` are the response's: its announced length, if any.
    pub(super) fn new(received: RecvStream, headers: &HeaderMap, upload: Option<Upload>) -> Self {
        let remaining = if received.is_end_stream() {
            Some(0)
        } else {
            headers
                .get(CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok()?.parse().ok())
        };
        Self {
            received,
            remaining,
            data_ended: false,
            upload,
        }
    }

    /// Why the stream failed: the request body's error when reading it
    /// failed (the upload reset the stream for it), else h2's.
    fn failure(&mut self, error: h2::Error) -> BoxError {
        match self.upload.as_mut().and_then(Upload::failure) {
            Some(request_body) => request_body,
            None => error.into(),
        }
    }
}

impl Body for Http2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let body = self.get_mut();
        if !body.data_ended {
            match ready!(body.received.poll_data(cx)) {
                Some(Ok(data)) => {
                    let read = data.len();
                    // Fails only once the stream is closed, when no window matters.
                    let _ = body.received.flow_control().release_capacity(read);
                    if let Some(remaining) = &mut body.remaining {
                        *remaining = remaining.saturating_sub(read as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(body.failure(error)))),
                None => body.data_ended = true,
            }
        }
        match ready!(body.received.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|trailers| Ok(Frame::trailers(trailers)))),
            Err(error) => Poll::Ready(Some(Err(body.failure(error)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.received.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(remaining) => SizeHint::with_exact(remaining),
            None => SizeHint::default(),
        }
    }
}
