//! Connections to one upstream endpoint: connect with a timeout, a pool of idle
//! HTTP/1.1 connections, and one shared, multiplexed HTTP/2 connection.
//!
//! The HTTP/1.1 pool is a LIFO stack of idle connections (the most recently used
//! connection is the warmest and the least likely to have been closed by the
//! peer). A connection goes back to the pool only after its response body was
//! read to the end; idle connections older than the idle timeout are closed, and
//! at most [`MAX_IDLE_PER_ENDPOINT`] are kept.
//!
//! Towards a meshed upstream every connection originates mTLS (`tls`).
//! ALPN offers what the connection will carry: `h2` for HTTP/2, `http/1.1`
//! for a protocol upgrade, and both for an HTTP/1.1 request; when the server
//! picks `h2` there, the connection becomes the endpoint's shared HTTP/2
//! connection and later requests to the endpoint use HTTP/2 too.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::error::ProxyError;
use crate::tls::Alpn;
use crate::tls::outbound::UpstreamTls;
use crate::tls::stream::UpstreamIo;

/// Idle HTTP/1.1 connections kept per endpoint; more are closed when returned.
pub const MAX_IDLE_PER_ENDPOINT: usize = 512;

/// An HTTP/2 connection task, shared between the task that drives it and
/// the client that reads its settings.
type H2Connection = Arc<Mutex<http2::Connection<TokioIo<UpstreamIo>, RequestBody, TokioExecutor>>>;

/// Connection settings shared by all endpoints of an upstream.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Mesh mTLS towards the upstream, when on.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// What [`EndpointClient::connect_h1`] opened.
pub enum Opened {
    Http1(H1Sender),
    /// The server chose `h2` by ALPN: the connection is now the endpoint's
    /// shared HTTP/2 connection.
    Http2,
}

pub type H1Sender = http1::SendRequest<RequestBody>;
pub type H2Sender = http2::SendRequest<RequestBody>;

struct IdleConnection {
    sender: H1Sender,
    since: Instant,
}

/// The connections of one endpoint.
pub struct EndpointClient {
    addr: SocketAddr,
    settings: ClientSettings,
    idle_h1: Mutex<Vec<IdleConnection>>,
    h2: tokio::sync::Mutex<Option<H2Sender>>,
    /// The current HTTP/2 connection itself (driven by its own task), for
    /// the upstream's SETTINGS_MAX_CONCURRENT_STREAMS.
    h2_connection: Mutex<Option<H2Connection>>,
    /// The last TLS handshake for an HTTP/1.1 request chose `h2`.
    negotiated_h2: AtomicBool,
}

impl EndpointClient {
    pub fn new(addr: SocketAddr, settings: ClientSettings) -> Self {
        Self {
            addr,
            settings,
            idle_h1: Mutex::new(Vec::new()),
            h2: tokio::sync::Mutex::new(None),
            h2_connection: Mutex::new(None),
            negotiated_h2: AtomicBool::new(false),
        }
    }

    /// An idle HTTP/1.1 connection that is ready for a request, if the pool has one.
    pub async fn checkout_h1(&self) -> Option<H1Sender> {
        loop {
            let idle = self.lock_idle().pop()?;
            if idle.since.elapsed() > self.settings.idle_timeout || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            // Just after a body ended the connection task may not have marked the
            // connection ready yet; `ready` waits for that or reports it closed.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Returns a connection whose last response was read to the end.
    pub fn checkin_h1(&self, sender: H1Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock_idle();
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(IdleConnection {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections that have been idle longer than the idle timeout.
    pub fn close_expired_idle(&self) {
        let timeout = self.settings.idle_timeout;
        self.lock_idle()
            .retain(|idle| idle.since.elapsed() <= timeout && !idle.sender.is_closed());
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<IdleConnection>> {
        // A panic while holding this lock leaves only a Vec of idle senders
        // behind, which is always consistent: recover it.
        self.idle_h1
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new HTTP/1.1 connection (for an `upgrade`, e.g. to WebSocket, one
    /// that can only be HTTP/1.1) — or, when the server chose `h2` by ALPN,
    /// a new shared HTTP/2 connection.
    pub async fn connect_h1(&self, upgrade: bool) -> Result<Opened, ProxyError> {
        let alpn = if upgrade { Alpn::Http1 } else { Alpn::Http };
        let (io, h2) = self.connect(alpn).await?;
        if !upgrade {
            self.negotiated_h2.store(h2, Ordering::Relaxed);
        }
        if h2 {
            let mut shared = self.h2.lock().await;
            *shared = Some(self.start_h2(io).await?);
            return Ok(Opened::Http2);
        }
        let (sender, connection) = http1::Builder::new()
            .writev(false)
            .handshake(io)
            .await
            .map_err(|source| self.handshake_failed(source))?;
        drive(connection.with_upgrades(), "HTTP/1.1");
        Ok(Opened::Http1(sender))
    }

    /// True when the endpoint's server chose `h2` for HTTP/1.1 requests, so
    /// they go over its HTTP/2 connection.
    pub fn negotiated_h2(&self) -> bool {
        self.negotiated_h2.load(Ordering::Relaxed)
    }

    /// The endpoint's HTTP/2 connection, opened on first use and reopened when
    /// it has closed. The boolean says whether it was already open.
    pub async fn h2_sender(&self) -> Result<(H2Sender, bool), ProxyError> {
        let mut shared = self.h2.lock().await;
        if let Some(sender) = shared.as_ref().filter(|sender| !sender.is_closed()) {
            return Ok((sender.clone(), true));
        }
        let (io, _) = self.connect(Alpn::Http2).await?;
        let sender = self.start_h2(io).await?;
        *shared = Some(sender.clone());
        Ok((sender, false))
    }

    /// The HTTP/2 handshake on `io`; the connection is driven by its own task.
    async fn start_h2(&self, io: TokioIo<UpstreamIo>) -> Result<H2Sender, ProxyError> {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|source| self.handshake_failed(source))?;
        // Shared with `h2_stream_limit`; the lock is only ever held for one
        // poll or one read.
        let connection = Arc::new(Mutex::new(connection));
        *lock(&self.h2_connection) = Some(Arc::clone(&connection));
        drive(
            std::future::poll_fn(move |cx| Pin::new(&mut *lock(&connection)).poll(cx)),
            "HTTP/2",
        );
        Ok(sender)
    }

    /// How many streams the upstream accepts at once on the HTTP/2
    /// connection (its SETTINGS_MAX_CONCURRENT_STREAMS).
    pub fn h2_stream_limit(&self) -> Option<usize> {
        lock(&self.h2_connection)
            .as_ref()
            .map(|connection| lock(connection).current_max_send_streams())
    }

    /// Drops the shared HTTP/2 connection, so the next request opens a new one.
    pub async fn forget_h2(&self) {
        self.h2.lock().await.take();
    }

    fn handshake_failed(&self, source: hyper::Error) -> ProxyError {
        ProxyError::Handshake {
            addr: self.addr,
            source,
        }
    }

    /// A connection for opaque TCP proxying (mTLS without ALPN when on).
    pub async fn connect_tcp(&self) -> Result<UpstreamIo, ProxyError> {
        let (io, _) = self.connect(Alpn::None).await?;
        Ok(io.into_inner())
    }

    /// A TCP connection to the endpoint within the connect timeout, with
    /// mTLS offering `alpn` when the upstream is meshed. The boolean says
    /// whether the server chose `h2`.
    async fn connect(&self, alpn: Alpn) -> Result<(TokioIo<UpstreamIo>, bool), ProxyError> {
        let addr = self.addr;
        let timeout = self.settings.connect_timeout;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(ProxyError::ConnectFailed { addr, source }),
            Err(_) => return Err(ProxyError::ConnectTimeout { addr, timeout }),
        };
        // Requests are small writes that must leave at once.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        match &self.settings.tls {
            None => Ok((TokioIo::new(UpstreamIo::Plain(stream)), false)),
            Some(tls) => {
                let (stream, h2) = tls.connect(stream, addr, alpn).await?;
                Ok((TokioIo::new(UpstreamIo::Tls(Box::new(stream))), h2))
            }
        }
    }
}

/// Runs an upstream connection's I/O task until the connection closes.
fn drive<C>(connection: C, version: &'static str)
where
    C: Future<Output = hyper::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, version, "upstream connection ended with an error");
        }
    });
}

/// Locks one of the client's mutexes. What they guard (a list of idle
/// senders, a connection handle) is consistent after any panic elsewhere,
/// so a poisoned lock is recovered.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
