//! One HTTP/2 client connection: its handshake, with the settings hyper's
//! client used (so peers see what they saw before), and the task that drives
//! it, which also sends keepalive PINGs.
//!
//! # Keepalive
//!
//! With a [`Keepalive`], a connection that has open streams and has read
//! nothing for `interval` sends a PING; a PING unanswered for `timeout`
//! closes the connection, failing its streams, so that a silently dead peer
//! is found without waiting for each request's own timeout. Idle
//! connections are not pinged (gRPC servers answer pings they find too
//! frequent with GOAWAY `ENHANCE_YOUR_CALM`). Reads are stamped as they
//! happen (`idle::IdleIo::reads`); the timer is set from the last one.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{Builder, Connection, SendRequest};
use h2::{Ping, PingPong};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use crate::clock;
use crate::http1::MAX_HEAD;
use crate::idle::{Activity, IdleIo};

/// Streams per connection assumed of a peer until its SETTINGS say
/// otherwise, and of one that announces no `SETTINGS_MAX_CONCURRENT_STREAMS`
/// (RFC 9113 §6.5.2: "no smaller than 100").
pub const UNANNOUNCED_STREAM_LIMIT: usize = 100;

/// PINGs on a connection with open streams that has read nothing for `interval`.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    pub interval: Duration,
    /// A PING unanswered for this long closes the connection.
    pub timeout: Duration,
}

/// The task that drives a connection; see [`drive`].
pub struct Driver<T> {
    connection: Connection<IdleIo<T>, Bytes>,
    pinger: Option<Pinger>,
}

/// Opens an HTTP/2 connection on `io`: the handle to send requests with,
/// and the connection's task, to be [driven](drive). A response head or its
/// trailers may be as large as over HTTP/1.1 ([`MAX_HEAD`]): `h2` fails a
/// larger head, and cuts larger trailers short without a word.
pub async fn handshake<T>(
    io: T,
    keepalive: Option<Keepalive>,
) -> Result<(SendRequest<Bytes>, Driver<T>), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let last_read = Activity::new();
    let io = IdleIo::reads(io, Arc::clone(&last_read));
    let (sender, mut connection) = Builder::new()
        .initial_max_send_streams(UNANNOUNCED_STREAM_LIMIT)
        .initial_window_size(2 * 1024 * 1024)
        .initial_connection_window_size(5 * 1024 * 1024)
        .max_frame_size(16 * 1024)
        .max_header_list_size(MAX_HEAD as u32)
        .max_send_buffer_size(1024 * 1024)
        .enable_push(false)
        .handshake(io)
        .await?;
    let pinger = keepalive.and_then(|keepalive| {
        connection.ping_pong().map(|ping_pong| Pinger {
            ping_pong,
            keepalive,
            last_read,
            timer: Box::pin(tokio::time::sleep(keepalive.interval)),
            awaiting_pong: false,
        })
    });
    Ok((sender, Driver { connection, pinger }))
}

/// Drives the connection until it is over: closed by either side, failed,
/// or — after a GOAWAY, or once no handle to it is left — its last stream
/// ended; or until a keepalive PING went unanswered (`busy` says whether
/// the connection has open streams). `silent` hears of that last case,
/// with the keepalive timeout, before the connection is dropped and its
/// streams fail.
pub async fn drive<T>(driver: Driver<T>, busy: impl Fn() -> bool, silent: impl FnOnce(Duration))
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let Driver {
        mut connection,
        mut pinger,
    } = driver;
    let mut silent = Some(silent);
    poll_fn(|cx| {
        if let Poll::Ready(result) = Pin::new(&mut connection).poll(cx) {
            if let Err(error) = result {
                tracing::debug!(%error, "upstream HTTP/2 connection ended with an error");
            }
            return Poll::Ready(());
        }
        if let Some(pinger) = &mut pinger
            && pinger.poll_silent(cx, &busy).is_ready()
        {
            tracing::debug!(
                timeout = ?pinger.keepalive.timeout,
                "upstream HTTP/2 connection closed: no answer to a keepalive PING"
            );
            if let Some(silent) = silent.take() {
                silent(pinger.keepalive.timeout);
            }
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;
}

struct Pinger {
    ping_pong: PingPong,
    keepalive: Keepalive,
    last_read: Arc<Activity>,
    /// When to look again: at the last read plus `interval`, or, with a PING
    /// out, at its deadline.
    timer: Pin<Box<Sleep>>,
    awaiting_pong: bool,
}

impl Pinger {
    /// Ready when a PING went unanswered for the timeout.
    fn poll_silent(&mut self, cx: &mut Context<'_>, busy: &impl Fn() -> bool) -> Poll<()> {
        loop {
            if self.awaiting_pong {
                match self.ping_pong.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.awaiting_pong = false;
                        let due = self.last_read.last() + self.keepalive.interval;
                        self.timer.as_mut().reset(due);
                        continue;
                    }
                    // The connection failed: its own poll reports that.
                    Poll::Ready(Err(_)) => return Poll::Pending,
                    Poll::Pending => {}
                }
                ready!(self.timer.as_mut().poll(cx));
                return Poll::Ready(());
            }
            ready!(self.timer.as_mut().poll(cx));
            let now = clock::now();
            let due = self.last_read.last() + self.keepalive.interval;
            if due > now {
                self.timer.as_mut().reset(due);
            } else if !busy() || self.ping_pong.send_ping(Ping::opaque()).is_err() {
                self.timer.as_mut().reset(now + self.keepalive.interval);
            } else {
                self.awaiting_pong = true;
                self.timer.as_mut().reset(now + self.keepalive.timeout);
            }
        }
    }
}
