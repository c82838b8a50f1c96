//! Connections to one upstream endpoint: connect with a timeout, a stack of
//! idle HTTP/1.1 connections ([`http1`], of remora's own client, `crate::http1`;
//! hyper's client only for upgrades) and a pool of multiplexed HTTP/2
//! connections scaled by the peer's stream limit ([`http2`]).
//!
//! Towards a meshed upstream every connection originates mTLS (`tls`).
//! ALPN offers what the connection will carry: `h2` for HTTP/2, `http/1.1`
//! for a protocol upgrade, and both for an HTTP/1.1 request; when the server
//! picks `h2` there, later requests to the endpoint use its HTTP/2 pool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use hyper::client::conn::http1 as hyper_http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::ConnectionPool;
use crate::error::ProxyError;
use crate::http1::Connection;
use crate::http2::connection::{self, Driver, Keepalive};
use crate::tls::Alpn;
use crate::tls::outbound::UpstreamTls;
use crate::tls::stream::UpstreamIo;

pub mod http1;
pub mod http2;

pub use self::http1::H1Sender;
pub use self::http2::{Http2Stream, PoolGauges, Purpose};

use self::http1::Http1Idle;
use self::http2::{Checkout, ConnectionEnd, Http2Pool};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connection settings shared by all endpoints of an upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Mesh mTLS towards the upstream, when on.
    pub tls: Option<Arc<UpstreamTls>>,
    pub pool: ConnectionPool,
}

/// What [`EndpointClient::connect_h1`] opened.
pub enum Opened {
    Http1(Connection),
    /// The server chose `h2` by ALPN: requests go to the HTTP/2 pool from now on.
    Http2,
}

/// The connections of one endpoint.
pub struct EndpointClient {
    addr: SocketAddr,
    settings: ClientSettings,
    h1: Http1Idle,
    h2: Http2Pool,
    /// The last TLS handshake for an HTTP/1.1 request chose `h2`.
    negotiated_h2: AtomicBool,
}

impl EndpointClient {
    pub fn new(addr: SocketAddr, settings: ClientSettings, gauges: PoolGauges) -> Self {
        Self {
            addr,
            h1: Http1Idle::default(),
            h2: Http2Pool::new(settings.pool, gauges),
            settings,
            negotiated_h2: AtomicBool::new(false),
        }
    }

    /// An idle HTTP/1.1 connection the server has not closed, if the pool has one.
    pub fn checkout_h1(&self) -> Option<Connection> {
        self.h1.checkout()
    }

    /// Returns a connection whose last response was read to the end.
    pub fn checkin_h1(&self, connection: Connection) {
        self.h1.checkin(connection, self.settings.idle_timeout);
    }

    /// Closes idle connections that may no longer be reused.
    pub fn close_expired_idle(&self) {
        self.h1.close_expired();
        self.h2.close_idle(self.settings.idle_timeout);
    }

    /// A new HTTP/1.1 connection — or [`Opened::Http2`] when the server
    /// chose `h2` by ALPN.
    pub async fn connect_h1(&self) -> Result<Opened, ProxyError> {
        let (io, h2) = self.connect(Alpn::Http).await?;
        self.negotiated_h2.store(h2, Ordering::Relaxed);
        if h2 {
            // The connection joins the HTTP/2 pool (closed if it is full).
            if let Some(slot) = self.h2.reserve() {
                let (sender, driver) = self.handshake_h2(io.into_inner()).await?;
                let (_stream, _sender, end) = slot.opened(sender);
                drive_h2(driver, end);
            }
            return Ok(Opened::Http2);
        }
        Ok(Opened::Http1(Connection::new(io.into_inner())))
    }

    /// A new HTTP/1.1-only connection driven by hyper's client: for a
    /// request that upgrades it (to WebSocket, say), as hyper hands the
    /// connection over to the tunnel once the server switches protocols,
    /// and for the transparent passthrough.
    pub async fn connect_hyper_h1(&self) -> Result<H1Sender, ProxyError> {
        let (io, _) = self.connect(Alpn::Http1).await?;
        let (sender, connection) = hyper_http1::Builder::new()
            .writev(false)
            .handshake(io)
            .await
            .map_err(|source| self.handshake_failed(source.into()))?;
        crate::task::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream HTTP/1.1 connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// True when the endpoint's server chose `h2` for HTTP/1.1 requests, so
    /// they go over its HTTP/2 pool.
    pub fn negotiated_h2(&self) -> bool {
        self.negotiated_h2.load(Ordering::Relaxed)
    }

    /// A stream on one of the endpoint's HTTP/2 connections, opening one when
    /// all are full, or waiting (bounded) when no more may open; with the
    /// sender for its request.
    pub async fn h2_stream(
        &self,
        purpose: Purpose,
    ) -> Result<(Http2Stream, SendRequest<Bytes>), ProxyError> {
        match self.h2.checkout(self.addr, purpose).await? {
            Checkout::Stream(stream, sender) => Ok((stream, sender)),
            // Boxed: opening is the cold path, and its large future would
            // otherwise be part of every request's.
            Checkout::Open(slot) => match Box::pin(self.open_h2()).await {
                Ok((sender, driver)) => {
                    let (stream, sender, end) = slot.opened(sender);
                    drive_h2(driver, end);
                    Ok((stream, sender))
                }
                Err(error) => {
                    slot.failed(self.addr, &error);
                    Err(error)
                }
            },
        }
    }

    /// A new HTTP/2 connection, its task not yet driven.
    async fn open_h2(&self) -> Result<(SendRequest<Bytes>, Driver<UpstreamIo>), ProxyError> {
        let (io, _) = self.connect(Alpn::Http2).await?;
        self.handshake_h2(io.into_inner()).await
    }

    /// The HTTP/2 handshake (remora's own client, `crate::http2`), with PING
    /// keepalive when `connection_pool.keepalive_interval` is set.
    async fn handshake_h2(
        &self,
        io: UpstreamIo,
    ) -> Result<(SendRequest<Bytes>, Driver<UpstreamIo>), ProxyError> {
        let keepalive = (self.settings.pool.keepalive_interval).map(|interval| Keepalive {
            interval,
            timeout: self.settings.pool.keepalive_timeout,
        });
        connection::handshake(io, keepalive)
            .await
            .map_err(|source| self.handshake_failed(source.into()))
    }

    fn handshake_failed(&self, source: BoxError) -> ProxyError {
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

/// Drives an HTTP/2 connection's task; the pool is told when it ends.
fn drive_h2(driver: Driver<UpstreamIo>, end: ConnectionEnd) {
    crate::task::spawn(async move {
        connection::drive(driver, &end).await;
        end.ended();
    });
}

/// Locks one of the client's mutexes. What they guard (a connection task,
/// pool bookkeeping) is consistent after a panic elsewhere, so a poisoned
/// lock is recovered.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
