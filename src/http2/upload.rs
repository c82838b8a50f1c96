//! A request body sent on its HTTP/2 stream by a task of its own, so that
//! sending never waits on the response being read (nor the other way
//! round: a gRPC bidirectional stream needs both at once).
//!
//! # Algorithm
//!
//! Until the body ends, each turn: wait for at least one byte of the
//! peer's flow-control window (`reserve_capacity(1)`, then
//! `poll_capacity`), then read one frame of the body and send it; a DATA
//! frame may be larger than the window, h2 holds the rest until the window
//! opens. Trailers, or the body's end, end the stream. The task stops, and
//! resets the stream with `CANCEL` when it had more to send, when:
//!
//! * the body fails: its error is handed to the exchange first, which then
//!   reports it rather than the reset (see [`Upload::failure`]);
//! * the exchange is given up ([`Upload`] dropped: the response future or
//!   its body, say when the response ended before the request body did, as
//!   Envoy does);
//! * the peer reset the stream or the connection failed (no reset then).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{Reason, SendStream};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::sync::oneshot;

use super::BoxError;
use crate::clock::OneReadPerPoll;

/// The exchange's end of an upload: dropped, it stops the upload.
pub struct Upload {
    failure: oneshot::Receiver<BoxError>,
}

impl Upload {
    /// The request body's error, when reading it failed (the stream was
    /// reset for it).
    pub fn failure(&mut self) -> Option<BoxError> {
        self.failure.try_recv().ok()
    }
}

/// Starts sending `body` on `stream`, whose HEADERS went out without END_STREAM.
pub fn start<B>(body: B, stream: SendStream<Bytes>) -> Upload
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (report, failure) = oneshot::channel();
    tokio::spawn(OneReadPerPoll::new(Pipe {
        body,
        stream,
        report: Some(report),
    }));
    Upload { failure }
}

pin_project! {
    struct Pipe<B> {
        #[pin]
        body: B,
        stream: SendStream<Bytes>,
        // Taken when the body's error is reported.
        report: Option<oneshot::Sender<BoxError>>,
    }
}

impl<B> Future for Pipe<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut pipe = self.project();
        loop {
            if let Some(report) = pipe.report.as_mut()
                && report.poll_closed(cx).is_ready()
            {
                pipe.stream.send_reset(Reason::CANCEL);
                return Poll::Ready(());
            }
            pipe.stream.reserve_capacity(1);
            if pipe.stream.capacity() == 0 {
                match ready!(pipe.stream.poll_capacity(cx)) {
                    Some(Ok(_)) => continue,
                    // The stream was reset or its connection failed.
                    Some(Err(_)) | None => return Poll::Ready(()),
                }
            }
            if pipe.stream.poll_reset(cx).is_ready() {
                return Poll::Ready(());
            }
            let frame = match ready!(pipe.body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    if let Some(report) = pipe.report.take() {
                        let _ = report.send(error.into());
                    }
                    pipe.stream.send_reset(Reason::CANCEL);
                    return Poll::Ready(());
                }
                None => {
                    pipe.stream.reserve_capacity(0);
                    let _ = pipe.stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    let end = pipe.body.is_end_stream();
                    if pipe.stream.send_data(data, end).is_err() || end {
                        return Poll::Ready(());
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        pipe.stream.reserve_capacity(0);
                        let _ = pipe.stream.send_trailers(trailers);
                        return Poll::Ready(());
                    }
                }
            }
        }
    }
}
