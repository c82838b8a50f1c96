//! Active health checks (`upstreams[].health_check`): one task per checked
//! endpoint sends the configured probe every `interval` (plus up to
//! `jitter`, drawn anew each time, and once before the first check), each
//! within `timeout`, and feeds the result to the endpoint's `HealthState`
//! (`health.rs`: thresholds, verdict), which the balancer reads.
//!
//! Probes go through the endpoint's own [`Endpoint::probe`] — its connection
//! pool, mTLS identity and HTTP version — so a check sees the endpoint as a
//! proxied request would:
//!
//! * `http`: `GET path` with `Host: host` (default: the upstream name),
//!   passing when the status is one of `expected_statuses`;
//! * `grpc`: the standard `grpc.health.v1.Health/Check` over HTTP/2 for
//!   `service`, passing when it answers `grpc-status: 0` and `SERVING`;
//! * `tcp`: passing when a connection (and its TLS handshake) opens.
//!
//! The task holds the endpoint weakly and ends when the endpoint is gone
//! (discovery removed it and its last request finished, or a reload changed
//! the checks or connection settings and replaced it).

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderValue, Method, Request, StatusCode, header};
use prost::Message;

use crate::body::RequestBody;
use crate::config::{HealthCheck, Probe};
use crate::endpoint::{Endpoint, UpstreamVersion};
use crate::headers::grpc_status;
use crate::health::{Thresholds, Verdict};
use crate::telemetry::metrics::HealthCheckMetrics;

/// The checks of one upstream's endpoints.
pub struct HealthChecker {
    upstream: String,
    config: HealthCheck,
    /// The HTTP version of the upstream, for `http` probes.
    version: UpstreamVersion,
}

impl HealthChecker {
    pub fn new(config: &HealthCheck, upstream: &str, version: UpstreamVersion) -> Self {
        Self {
            upstream: upstream.to_owned(),
            config: config.clone(),
            version,
        }
    }

    /// Starts checking `endpoint` until it is dropped; `joined` when it
    /// joins a running endpoint set (it then waits for its first result,
    /// see `health.rs`).
    pub fn watch(self: &Arc<Self>, endpoint: &Arc<Endpoint>, joined: bool) {
        endpoint.health.start(joined);
        let checker = Arc::clone(self);
        let endpoint = Arc::downgrade(endpoint);
        tokio::spawn(async move { checker.run(endpoint).await });
    }

    async fn run(&self, endpoint: Weak<Endpoint>) {
        let thresholds = Thresholds {
            healthy: self.config.healthy_threshold,
            unhealthy: self.config.unhealthy_threshold,
        };
        let Some(addr) = endpoint.upgrade().map(|endpoint| endpoint.addr) else {
            return;
        };
        let metrics = HealthCheckMetrics::new(&self.upstream, addr);
        tokio::time::sleep(self.jitter()).await;
        loop {
            let Some(target) = endpoint.upgrade() else {
                return;
            };
            let result = tokio::time::timeout(self.config.timeout, self.check(&target))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.config.timeout)));
            metrics.checked(result.is_ok());
            if let Some(verdict) = target.health.record(result.is_ok(), thresholds) {
                self.report(&target, verdict, &result, &metrics);
            }
            drop(target);
            tokio::time::sleep(self.config.interval + self.jitter()).await;
        }
    }

    fn jitter(&self) -> Duration {
        let most = u64::try_from(self.config.jitter.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(..=most))
    }

    fn report(
        &self,
        endpoint: &Endpoint,
        verdict: Verdict,
        result: &Result<(), String>,
        metrics: &HealthCheckMetrics,
    ) {
        metrics.set_healthy(verdict == Verdict::Passing);
        let upstream = &self.upstream;
        let addr = endpoint.addr;
        match result {
            Err(reason) => {
                tracing::warn!(%upstream, endpoint = %addr, %reason, "endpoint failing its health checks: taken out of balancing");
            }
            Ok(()) => {
                tracing::info!(%upstream, endpoint = %addr, "endpoint passing its health checks: back in balancing");
            }
        }
    }

    /// One check; the error says why it failed.
    async fn check(&self, endpoint: &Endpoint) -> Result<(), String> {
        let probe = self
            .config
            .probe()
            .ok_or("no probe configured (rejected by validation)")?;
        match probe {
            Probe::Tcp => {
                let connection = endpoint.client.connect_tcp().await;
                connection.map(drop).map_err(|error| error.to_string())
            }
            Probe::Http(http) => {
                let host = http.host.as_deref().unwrap_or(&self.upstream);
                let request = self.request(Method::GET, &http.path, host, Bytes::new())?;
                let response = (endpoint.probe(request, self.version).await)
                    .map_err(|error| error.to_string())?;
                let status = response.status().as_u16();
                if http.expected_statuses.iter().any(|r| r.contains(status)) {
                    Ok(())
                } else {
                    Err(format!("status {status}"))
                }
            }
            Probe::Grpc(grpc) => {
                let authority = grpc.authority.as_deref().unwrap_or(&self.upstream);
                let message = HealthCheckRequest {
                    service: grpc.service.clone(),
                };
                let mut request = self.request(
                    Method::POST,
                    GRPC_HEALTH_CHECK,
                    authority,
                    grpc_frame(&message),
                )?;
                let headers = request.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
                let response = (endpoint.probe(request, UpstreamVersion::Http2).await)
                    .map_err(|error| error.to_string())?;
                if response.status() != StatusCode::OK {
                    return Err(format!("HTTP status {}", response.status()));
                }
                let (parts, body) = response.into_parts();
                let status = body.trailers().and_then(grpc_status);
                let status = status.or_else(|| grpc_status(&parts.headers));
                if status != Some(0) {
                    return Err(format!("grpc-status {status:?}"));
                }
                let reply = grpc_message::<HealthCheckResponse>(body.to_bytes())
                    .ok_or("no HealthCheckResponse in the reply")?;
                match reply.status {
                    SERVING => Ok(()),
                    other => Err(format!("serving status {other} (1 is SERVING)")),
                }
            }
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        host: &str,
        body: Bytes,
    ) -> Result<Request<RequestBody>, String> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host)
            .header(header::USER_AGENT, USER_AGENT)
            .body(RequestBody::buffered(body, None))
            .map_err(|error| format!("cannot build the check request: {error}"))
    }
}

const USER_AGENT: &str = concat!("remora-health-check/", env!("CARGO_PKG_VERSION"));

const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: i32 = 1;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `message` as one uncompressed gRPC length-prefixed frame.
fn grpc_frame(message: &impl Message) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.encoded_len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.encoded_len()).unwrap_or(u32::MAX));
    message.encode(&mut frame).ok();
    frame.freeze()
}

/// The first message of a gRPC reply body, when uncompressed and whole.
fn grpc_message<M: Message + Default>(mut body: Bytes) -> Option<M> {
    if body.len() < 5 || body.get_u8() != 0 {
        return None;
    }
    let len = usize::try_from(body.get_u32()).ok()?;
    M::decode(body.get(..len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_frames_round_trip() {
        let frame = grpc_frame(&HealthCheckResponse { status: SERVING });
        assert_eq!(&frame[..], &[0, 0, 0, 0, 2, 0x08, 0x01]);
        let reply: HealthCheckResponse = grpc_message(frame).unwrap();
        assert_eq!(reply.status, SERVING);
        assert!(
            grpc_message::<HealthCheckResponse>(Bytes::from_static(&[1, 0, 0, 0, 0])).is_none()
        );
        let request = grpc_frame(&HealthCheckRequest {
            service: "api".into(),
        });
        assert_eq!(&request[..], &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'p', b'i']);
    }
}
