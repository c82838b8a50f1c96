//! Idle timeouts. For client connections: a connection on which no byte has
//! moved in either direction for the idle period is shut down gracefully (a
//! request still in flight finishes; its own time is bounded by the request
//! timeout and the stream idle timeouts). For a request waiting for its
//! response head, `forward` stamps the request body's frames in an
//! [`Activity`] of its own.
//!
//! [`IdleIo`] wraps the socket and stamps every read and write (or, for an
//! upstream HTTP/2 connection's keepalive, every read only); [`expired`]
//! sleeps until the last stamp is one idle period old, and
//! [`expired_or_silent`] sooner for a connection on which nothing ever
//! moved (a client that connects and says nothing). One [`clock::now`]
//! per socket operation (or body frame), so at most one clock read per poll
//! of the connection's task; no timer reset per byte, and none when the wait
//! starts.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::clock;
use crate::timer;

/// When a connection last moved a byte.
pub struct Activity {
    origin: Instant,
    /// Nanoseconds after `origin`.
    last: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: clock::now(),
            last: AtomicU64::new(0),
        })
    }

    /// Something moved now.
    pub fn touch(&self) {
        let since = clock::now().saturating_duration_since(self.origin);
        // At least 1: 0 is "nothing moved yet" (`moved`), also for a stamp
        // in the clock tick the activity began in.
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.last.store(nanos, Relaxed);
    }

    /// Something has moved since the activity began.
    fn moved(&self) -> bool {
        self.last.load(Relaxed) != 0
    }

    /// When something last moved.
    pub fn last(&self) -> Instant {
        self.origin + Duration::from_nanos(self.last.load(Relaxed))
    }
}

/// Resolves once the connection has been idle for `limit`. Reads no clock:
/// it sleeps until one idle period after the last stamp and, woken, ends
/// unless a newer stamp has moved that point.
pub async fn expired(activity: &Activity, limit: Duration) {
    let mut deadline = timer::after(activity.last(), limit);
    loop {
        timer::sleep_until(deadline).await;
        let moved = timer::after(activity.last(), limit);
        if moved <= deadline {
            return;
        }
        deadline = moved;
    }
}

/// Like [`expired`], and sooner, `silent_for` after the activity began,
/// when nothing has moved by then: a client connection on which the
/// client sent no byte (the server says nothing first over HTTP/1.1, nor
/// before an HTTP/2 preface is sniffed) holds its place under
/// `max_connections` no longer than a slow request head may.
pub async fn expired_or_silent(activity: &Activity, limit: Duration, silent_for: Duration) {
    if silent_for < limit {
        timer::sleep_until(timer::after(activity.origin, silent_for)).await;
        if !activity.moved() {
            return;
        }
    }
    expired(activity, limit).await;
}

/// A socket that records its activity.
pub struct IdleIo<T> {
    inner: T,
    activity: Arc<Activity>,
    /// Writes are activity too (not for a keepalive, which asks whether
    /// the peer still sends).
    writes: bool,
}

impl<T> IdleIo<T> {
    /// Stamps reads and writes.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            writes: true,
        }
    }

    /// Stamps reads only.
    pub fn reads(inner: T, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            writes: false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if self.writes && matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if self.writes && matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn expires_one_idle_period_after_the_last_byte() {
        let (near, mut far) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut io = IdleIo::new(near, Arc::clone(&activity));
        let limit = Duration::from_secs(10);

        tokio::time::advance(Duration::from_secs(6)).await;
        io.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        far.read_exact(&mut buf).await.unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        far.write_all(b"pong").await.unwrap();
        io.read_exact(&mut buf).await.unwrap();

        let started = Instant::now();
        expired(&activity, limit).await;
        assert_eq!(
            started.elapsed(),
            limit,
            "10 s after the last byte, not after the first"
        );
    }
}
