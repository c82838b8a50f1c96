//! Opaque TCP proxying: one upstream connection per client connection, bytes
//! copied both ways. When one side finishes sending (EOF), remora shuts down
//! the write half towards the other side and keeps copying the other way, so
//! half-closed protocols work. Discovery, balancing, connect timeout,
//! backoff, circuit breaking and outlier detection are the same as for HTTP,
//! at connection granularity: a connection is a success once connected
//! (for a meshed upstream: once the mTLS handshake is done).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::outcome::Outcome;
use crate::telemetry::metrics;
use crate::upstream::Upstream;

/// Proxies one client connection until both directions have finished.
pub async fn proxy<S>(mut client: S, upstream: Arc<Upstream>)
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
    let mut server = server;
    match tokio::io::copy_bidirectional(&mut client, &mut server).await {
        Ok((sent, received)) => metrics::tcp_bytes(upstream.name(), sent, received),
        Err(error) => {
            tracing::debug!(upstream = upstream.name(), endpoint = %endpoint.0.addr, %error, "TCP proxying ended with an error");
        }
    }
}
