//! Transparent traffic that matches no upstream, sent on unchanged to the
//! original destination (`transparent.unmatched: passthrough`). It is outside
//! the mesh: no discovery, balancing, retries or policies, and it is counted
//! (`remora_transparent_unmatched_total`), not traced. Opaque TCP copies bytes
//! both ways. HTTP requests go over one upstream connection per client
//! connection — the original destination is the same for every request of a
//! connection — in the client's HTTP version; hop-by-hop headers are removed,
//! so an upgrade (WebSocket) request arrives as a plain request.

use std::net::SocketAddr;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use crate::body::{RequestBody, ResponseBody, UpstreamBody};
use crate::client::{ClientSettings, EndpointClient, H1Sender, PoolGauges, Purpose};
use crate::error::ProxyError;
use crate::headers::strip_hop_by_hop;
use crate::http2;

/// The original destination of one client connection.
pub struct Passthrough {
    destination: SocketAddr,
    client: EndpointClient,
    settings: ClientSettings,
    /// The HTTP/1.1 connection of an HTTP/1.1 client; its requests come one
    /// at a time, so one upstream connection serves them all.
    h1: tokio::sync::Mutex<Option<H1Sender>>,
}

impl Passthrough {
    pub fn new(destination: SocketAddr, settings: ClientSettings) -> Self {
        Self {
            destination,
            client: EndpointClient::new(destination, settings.clone(), unmetered()),
            settings,
            h1: tokio::sync::Mutex::new(None),
        }
    }

    /// Copies bytes between `client` and the destination until both sides
    /// have finished.
    pub async fn tcp(&self, mut client: TcpStream) {
        let mut server = match self.client.connect_tcp().await {
            Ok(server) => server,
            Err(error) => {
                tracing::debug!(%error, "passthrough: closing the connection");
                return;
            }
        };
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
            tracing::debug!(%error, "passthrough TCP proxying ended with an error");
        }
    }

    /// Sends one request to the destination.
    pub async fn http(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let mut request = RequestBody::client_request(request);
        strip_hop_by_hop(request.headers_mut(), false);
        let addr = self.destination;
        let response = if request.version() == Version::HTTP_2 {
            // The stream counts against the connection's limit until the
            // response head (passthrough keeps no release for its body).
            let (_stream, sender) = self.client.h2_stream(Purpose::First).await?;
            http2::send(sender, request)
                .await
                .map_err(|failed| ProxyError::Http2Exchange {
                    addr,
                    source: failed.error,
                })?
                .map(UpstreamBody::Http2)
        } else {
            let mut h1 = self.h1.lock().await;
            let sender = match h1.take() {
                Some(sender) if !sender.is_closed() => sender,
                _ => self.client.connect_hyper_h1().await?,
            };
            let sender = h1.insert(sender);
            // Ready once the previous response has been read.
            let response = match sender.ready().await {
                Ok(()) => sender.send_request(request).await,
                Err(error) => Err(error),
            };
            response
                .map_err(|source| ProxyError::UpstreamReset { addr, source })?
                .map(UpstreamBody::Hyper)
        };
        let idle = self.settings.idle_timeout;
        Ok(response.map(|body| ResponseBody::unreleased(body, idle)))
    }
}

/// Passthrough connections are outside the mesh: not in the pool gauges.
fn unmetered() -> PoolGauges {
    PoolGauges {
        connections: metrics::Gauge::noop(),
        pending: metrics::Gauge::noop(),
    }
}
