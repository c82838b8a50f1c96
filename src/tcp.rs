//! Opaque TCP proxying: one upstream connection per client connection, bytes
//! copied both ways. When one side finishes sending (EOF), remora shuts down
//! the write half towards the other side and keeps copying the other way, so
//! half-closed protocols work. Discovery, balancing, connect timeout,
//! backoff, circuit breaking and outlier detection are the same as for HTTP,
//! at connection granularity: a connection is a success once connected
//! (for a meshed upstream: once the mTLS handshake is done). The bytes are
//! counted as they are written to either side ([`Counted`]), so a long-lived
//! connection shows in the byte counters while it lasts, and a connection
//! that ends with an error (a reset, the drain timeout) still counts what
//! it carried.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::metrics::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::outcome::Outcome;
use crate::telemetry::metrics;
use crate::upstream::Upstream;

/// Proxies one client connection until both directions have finished.
pub async fn proxy<S>(client: S, upstream: Arc<Upstream>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let admission = match upstream
        .circuit_breaker()
        .map(|b| b.admit(None))
        .transpose()
    {
        Ok(admission) => admission,
        Err(open) => {
            tracing::debug!(upstream = upstream.name(), %open, "closing the connection");
            return;
        }
    };
    let balancer = upstream.balancer();
    let mut tried = None;
    let (endpoint, server) = loop {
        let Some(endpoint) = balancer.pick(None, tried.as_slice()) else {
            tracing::warn!(
                upstream = upstream.name(),
                "no endpoints: closing the connection"
            );
            return;
        };
        let mut in_flight = endpoint.load.start();
        match endpoint.client.connect_tcp().await {
            Ok(server) => {
                endpoint.load.mark_reachable();
                in_flight.observe_response();
                upstream.record_outcome(&endpoint, Outcome::Connected);
                if let Some(admission) = admission {
                    admission.record(Outcome::Connected);
                }
                break ((endpoint, in_flight), server);
            }
            Err(error) => {
                upstream.note_failure(&endpoint, &error);
                if tried.is_some() {
                    tracing::warn!(upstream = upstream.name(), %error, "closing the connection");
                    if let Some(admission) = admission {
                        admission.record(Outcome::of_error(&error));
                    }
                    return;
                }
                tried = Some(endpoint);
            }
        }
    };
    let (sent, received) = metrics::tcp_bytes(upstream.name());
    let mut server = Counted {
        io: server,
        written: sent,
    };
    let mut client = Counted {
        io: client,
        written: received,
    };
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
        tracing::debug!(upstream = upstream.name(), endpoint = %endpoint.0.addr, %error, "TCP proxying ended with an error");
    }
}

/// One side of a proxied connection; what is written to it is counted as
/// it goes.
struct Counted<S> {
    io: S,
    written: Counter,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(bytes)) = written {
            self.written.increment(bytes as u64);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(bytes)) = written {
            self.written.increment(bytes as u64);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
