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

/// Streams per connection assumed of a peer that announces no
/// `SETTINGS_MAX_CONCURRENT_STREAMS` (RFC 9113 §6.5.2: "no smaller than
/// 100").
pub const UNANNOUNCED_STREAM_LIMIT: usize = 100;

/// The stream limit h2 holds to until the peer's SETTINGS arrive: a value
/// no SETTINGS can carry (it has 32 bits), so that [`peer_stream_limit`]
/// can tell that they have not. The pool decides meanwhile how many streams
/// go to the connection.
const BEFORE_SETTINGS: usize = usize::MAX - 1;

/// The peer's `SETTINGS_MAX_CONCURRENT_STREAMS` as it stands now, or `None`
/// before its first SETTINGS were read. A peer that announced none is held
/// to [`UNANNOUNCED_STREAM_LIMIT`] (h2 reads it as unlimited).
pub fn peer_stream_limit(sender: &SendRequest<Bytes>) -> Option<usize> {
    match sender.current_max_send_streams() {
        BEFORE_SETTINGS => None,
        usize::MAX => Some(UNANNOUNCED_STREAM_LIMIT),
        limit => Some(limit),
    }
}

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
        .initial_max_send_streams(BEFORE_SETTINGS)
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

/// What a connection's task tells its owner, besides its end.
pub trait Events {
    /// True while the connection has open streams.
    fn busy(&self) -> bool;
    /// The peer's first SETTINGS were read: [`peer_stream_limit`] now says
    /// what the peer allows.
    fn settings_received(&self);
    /// A keepalive PING went unanswered for `timeout`: the connection is
    /// dropped next and its streams fail.
    fn silent(&self, timeout: Duration);
}

/// Drives the connection until it is over: closed by either side, failed,
/// or — after a GOAWAY, or once no handle to it is left — its last stream
/// ended; or until a keepalive PING went unanswered. `events` hears of the
/// peer's first SETTINGS and of an unanswered PING.
pub async fn drive<T>(driver: Driver<T>, events: &impl Events)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let Driver {
        mut connection,
        mut pinger,
    } = driver;
    let mut settings_received = false;
    poll_fn(|cx| {
        if let Poll::Ready(result) = Pin::new(&mut connection).poll(cx) {
            if let Err(error) = result {
                tracing::debug!(%error, "upstream HTTP/2 connection ended with an error");
            }
            return Poll::Ready(());
        }
        if !settings_received && connection.max_concurrent_send_streams() != BEFORE_SETTINGS {
            settings_received = true;
            events.settings_received();
        }
        if let Some(pinger) = &mut pinger
            && pinger.poll_silent(cx, || events.busy()).is_ready()
        {
            tracing::debug!(
                timeout = ?pinger.keepalive.timeout,
                "upstream HTTP/2 connection closed: no answer to a keepalive PING"
            );
            events.silent(pinger.keepalive.timeout);
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
    fn poll_silent(&mut self, cx: &mut Context<'_>, busy: impl Fn() -> bool) -> Poll<()> {
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
