//! A request body that keeps a bounded copy of itself while it streams, for
//! mirroring: frames pass through untouched and at once (the caller's request
//! never waits for the copy), data and trailers are kept while the copy holds
//! at most `limit` bytes, and when the body has been read to its end (or
//! reports its end, as a `content-length` body does after its last byte) the
//! copy is handed over through a oneshot channel. A body that grows past the
//! limit, fails, or is dropped before its end hands nothing over (the
//! receiver sees the sender dropped) and keeps nothing from then on.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use super::{RequestBody, RequestBodyError};

/// A whole small body: data, then trailers.
pub type Copy = (Bytes, Option<HeaderMap>);

/// The copy while it is being made.
struct Copying {
    data: Vec<Bytes>,
    len: usize,
    limit: usize,
    trailers: Option<HeaderMap>,
    done: oneshot::Sender<Copy>,
}

/// See the module docs.
pub struct TeeBody {
    inner: RequestBody,
    copying: Option<Copying>,
}

/// Wraps `inner`; the receiver gets the copy once the body has ended within `limit` bytes.
pub fn tee(inner: RequestBody, limit: usize) -> (TeeBody, oneshot::Receiver<Copy>) {
    let (done, copy) = oneshot::channel();
    let copying = Copying {
        data: Vec::new(),
        len: 0,
        limit,
        trailers: None,
        done,
    };
    let body = TeeBody {
        inner,
        copying: Some(copying),
    };
    (body, copy)
}

impl TeeBody {
    fn keep(&mut self, frame: &Frame<Bytes>) {
        let Some(copying) = &mut self.copying else {
            return;
        };
        if let Some(data) = frame.data_ref() {
            copying.len += data.len();
            if copying.len > copying.limit {
                self.copying = None;
            } else {
                copying.data.push(data.clone());
            }
        } else if let Some(trailers) = frame.trailers_ref() {
            copying.trailers = Some(trailers.clone());
        }
    }

    fn finish(&mut self) {
        let Some(copying) = self.copying.take() else {
            return;
        };
        let mut data = BytesMut::with_capacity(copying.len);
        for chunk in copying.data {
            data.extend_from_slice(&chunk);
        }
        // The receiver may have given up waiting; the copy is then not needed.
        let _ = copying.done.send((data.freeze(), copying.trailers));
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.keep(frame);
                // hyper stops polling a body that reports its end (a
                // content-length body after its last byte).
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => self.copying = None,
            Poll::Ready(None) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn body() -> RequestBody {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        RequestBody::buffered(Bytes::from_static(b"hello"), Some(trailers))
    }

    #[tokio::test]
    async fn hands_over_a_whole_copy_within_the_limit() {
        let (teed, copy) = body().teed(5);
        let read = teed.collect().await.unwrap();
        assert_eq!(read.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(read.to_bytes(), "hello");
        let (data, trailers) = copy.await.expect("copy handed over");
        assert_eq!(data, "hello");
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
    }

    #[tokio::test]
    async fn keeps_nothing_past_the_limit_or_when_dropped_early() {
        let (teed, copy) = body().teed(4);
        assert_eq!(teed.collect().await.unwrap().to_bytes(), "hello");
        assert!(copy.await.is_err(), "over the limit: no copy");
        let (teed, copy) = body().teed(100);
        drop(teed);
        assert!(copy.await.is_err(), "dropped unread: no copy");
    }
}
