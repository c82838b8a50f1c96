//! A request body sent on its HTTP/2 stream by a task of its own, so that
//! sending never waits on the response being read (nor the other way
//! round: a gRPC bidirectional stream needs both at once).
//!
//! # Algorithm
//!
//! Until the body ends, each turn: read one frame of the body; for a
//! non-empty DATA frame, wait for at least one byte of the peer's
//! flow-control window (`reserve_capacity(1)`, then `poll_capacity`), then
//! send it (h2 holds what the window does not take until it opens). The
//! window is claimed only with data in hand: a claim by a body that sends
//! nothing for a while (a gRPC stream) would pin the connection's window
//! and can stall the other streams of a peer that sends WINDOW_UPDATE only
//! once its window is used up (hyper's fix for the same, hyperium/hyper#4003).
//! Empty frames need no window. Trailers (without connection-specific
//! fields), or the body's end, end the stream. The task stops, and resets
//! the stream with `CANCEL` when it had more to send, when:
//!
//! * the body fails: its error is handed to the exchange first, which then
//!   reports it rather than the reset (see [`Upload::failure`]);
//! * the exchange is given up ([`Upload`] dropped: the response future or
//!   its body, say when the response ended before the request body did, as
//!   Envoy does);
//! * its trailers could not be sent;
//! * the peer reset the stream or the connection failed (no reset then).
//!
//! The rest of an HTTP/1.x client's body is then read and dropped where it
//! came in ([`crate::body::client`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{Reason, SendStream};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::sync::oneshot;

use super::BoxError;
use crate::headers::strip_hop_by_hop;

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
    crate::task::spawn(Pipe {
        body,
        stream,
        waiting: None,
        report: Some(report),
    });
    Upload { failure }
}

pin_project! {
    struct Pipe<B> {
        #[pin]
        body: B,
        stream: SendStream<Bytes>,
        // A DATA frame read, waiting for window; and whether it ends the body.
        waiting: Option<(Bytes, bool)>,
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
            // Registered while waiting for the body or the window, so that a
            // reset by the peer ends the task.
            if pipe.stream.poll_reset(cx).is_ready() {
                return Poll::Ready(());
            }
            if pipe.waiting.is_some() {
                while pipe.stream.capacity() == 0 {
                    match ready!(pipe.stream.poll_capacity(cx)) {
                        Some(Ok(_)) => {}
                        // The stream was reset or its connection failed.
                        Some(Err(_)) | None => return Poll::Ready(()),
                    }
                }
                if let Some((data, end)) = pipe.waiting.take()
                    && (pipe.stream.send_data(data, end).is_err() || end)
                {
                    return Poll::Ready(());
                }
                continue;
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
                    if data.is_empty() {
                        // Needs no window.
                        if pipe.stream.send_data(data, end).is_err() || end {
                            return Poll::Ready(());
                        }
                    } else {
                        pipe.stream.reserve_capacity(1);
                        *pipe.waiting = Some((data, end));
                    }
                }
                Err(frame) => {
                    if let Ok(mut trailers) = frame.into_trailers() {
                        pipe.stream.reserve_capacity(0);
                        strip_hop_by_hop(&mut trailers, false);
                        if pipe.stream.send_trailers(trailers).is_err() {
                            pipe.stream.send_reset(Reason::CANCEL);
                        }
                        return Poll::Ready(());
                    }
                }
            }
        }
    }
}
