//! The innermost service of an HTTP stack: balance, send to the chosen
//! endpoint, and stream the response back.
//!
//! An endpoint that refuses connections (or does not accept within the connect
//! timeout) is put in backoff, and the request — which it never saw — is sent
//! once more, to another endpoint when there is one. A try whose response
//! head has not come while its request body moved nothing for `timeouts.idle`
//! (a silent upstream, or a client stalled mid-body) is abandoned — the
//! upstream sees its connection or stream reset — with 504 `timeout`, counted
//! in `remora_timeouts_total{kind="idle"}`. A gRPC request with a
//! deadline carries the time left in `grpc-timeout`. An HTTP/1.1 upgrade
//! that the listener allows (see `upgrade`) is tunnelled once the upstream
//! answers `101`.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode, Version, header};
use http_body::Body;
use tokio::time::Instant;

use crate::body::{RequestBody, ResponseBody};
use crate::clock;
use crate::context::{AvoidEndpoints, Deadline, PickedEndpoint};
use crate::endpoint::{Endpoint, SendError, Sent};
use crate::error::ProxyError;
use crate::headers::{X_REMORA_ERROR, is_grpc, is_upgrade_request, strip_hop_by_hop};
use crate::idle::Activity;
use crate::middleware::timeout::{GRPC_TIMEOUT, encode_grpc_timeout};
use crate::outcome::Outcome;
use crate::telemetry::metrics;
use crate::timer;
use crate::upgrade::{ConnectionHold, tunnel};
use crate::upstream::Upstream;

/// Sends requests to an upstream's endpoints.
#[derive(Clone)]
pub struct Forward {
    upstream: Arc<Upstream>,
}

impl Forward {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Self { upstream }
    }
}

impl tower::Service<Request<RequestBody>> for Forward {
    type Response = Response<ResponseBody>;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, ProxyError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        crate::svc::boxed(|| forward(Arc::clone(&self.upstream), request))
    }
}

/// Resolves when a try has waited `idle` for its response head while its
/// request body moved nothing. A body that has ended never moves: the wait
/// is then bounded from now, and not watched at all when the request's
/// deadline comes first (its timeout ends the try).
fn head_wait(
    request: &mut Request<RequestBody>,
    idle: Duration,
    deadline: Option<Instant>,
) -> impl Future<Output = ()> + use<> {
    let ended = request.body().is_end_stream();
    let activity = (!ended).then(|| {
        let activity = Activity::new();
        request.body_mut().watch(Arc::clone(&activity));
        activity
    });
    let bound = timer::from_now(idle);
    let watched = !ended || deadline.is_none_or(|deadline| deadline >= bound);
    async move {
        match activity {
            Some(activity) => crate::idle::expired(&activity, idle).await,
            None if watched => timer::sleep_until(bound).await,
            None => std::future::pending().await,
        }
    }
}

async fn forward(
    upstream: Arc<Upstream>,
    mut request: Request<RequestBody>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let upgrade = request.version() <= Version::HTTP_11 && is_upgrade_request(request.headers());
    let client_upgrade = upgrade.then(|| {
        let hold = request.extensions_mut().remove::<ConnectionHold>();
        (hyper::upgrade::on(&mut request), hold)
    });
    let headers = request.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    // Seldom there: one pass over the names spares two lookups.
    // (hyper already answered `100 Continue` when the body is first read.)
    if (headers.keys()).any(|name| name == X_REMORA_ERROR || name == header::EXPECT) {
        headers.remove(X_REMORA_ERROR);
        headers.remove(header::EXPECT);
    }

    let version = upstream.version_for(request.version());
    let hash_key = upstream
        .hash_header()
        .and_then(|name| request.headers().get(name))
        .cloned();
    let deadline = request.extensions().get::<Deadline>().map(|d| d.0);
    if let Some(deadline) = deadline
        && is_grpc(request.headers())
    {
        let remaining = deadline.saturating_duration_since(clock::now());
        request
            .headers_mut()
            .insert(GRPC_TIMEOUT, encode_grpc_timeout(remaining));
    }
    let balancer = upstream.balancer();
    let mut tried: Vec<_> = (request.extensions().get::<AvoidEndpoints>())
        .map(|avoid| {
            (balancer.targets().iter())
                .filter(|e| avoid.0.contains(&e.addr))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let picked = request.extensions().get::<PickedEndpoint>().cloned();
    let mut resent = false;
    loop {
        let endpoint = balancer
            .pick(hash_key.as_ref().map(|v| v.as_bytes()), &tried)
            .ok_or_else(|| {
                let upstream = upstream.name().to_owned();
                if balancer.is_empty() {
                    ProxyError::NoEndpoints { upstream }
                } else {
                    ProxyError::NoHealthyEndpoints { upstream }
                }
            })?;
        if let Some(picked) = &picked {
            picked.set(endpoint.addr);
        }
        let mut timeout_watch = TimeoutWatch {
            upstream: &upstream,
            endpoint: &endpoint,
            deadline,
        };
        let idle = upstream.settings.client.idle_timeout;
        let waiting_too_long = head_wait(&mut request, idle, deadline);
        let mut goaway_errors = 0;
        let sent = tokio::select! {
            sent = endpoint.send(request, version, upgrade, &mut goaway_errors) => sent,
            () = waiting_too_long => {
                metrics::timeouts(upstream.settings.direction, upstream.name(), "idle").increment(1);
                let error = ProxyError::IdleTimeout { addr: endpoint.addr, idle };
                Err(SendError { error, request: None })
            }
        };
        timeout_watch.deadline = None;
        drop(timeout_watch);
        for _ in 0..goaway_errors {
            upstream.record_outcome(&endpoint, Outcome::Reset);
        }
        match sent {
            Ok(Sent {
                mut response,
                release,
            }) => {
                let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
                strip_hop_by_hop(response.headers_mut(), switching);
                if switching {
                    // Only a request the listener let upgrade may switch: any
                    // other 101 would leave the client a dead connection.
                    let Some((client_upgrade, hold)) = client_upgrade else {
                        upstream.record_outcome(&endpoint, Outcome::Reset);
                        return Err(ProxyError::UnrequestedUpgrade {
                            addr: endpoint.addr,
                        });
                    };
                    tunnel(
                        client_upgrade,
                        hyper::upgrade::on(&mut response),
                        idle,
                        hold,
                    );
                }
                let mut response =
                    response.map(|body| ResponseBody::upstream(body, endpoint.addr, release, idle));
                record_outlier_outcome(&upstream, &endpoint, &mut response);
                return Ok(response);
            }
            Err(SendError {
                error,
                request: unsent,
            }) => {
                upstream.note_failure(&endpoint, &error);
                // A full pool would only make the request wait again.
                let pool_full = matches!(error, ProxyError::PoolExhausted { .. });
                match unsent {
                    Some(unsent) if !resent && !pool_full => {
                        request = unsent;
                        tried.push(endpoint);
                        resent = true;
                    }
                    _ => return Err(error),
                }
            }
        }
    }
}

/// Tells outlier detection about a try that is dropped while it waits for
/// its response: at or past the request's deadline, a timeout cut it off and
/// it counts as a `timeout` failure of its endpoint; earlier, the client went
/// away and it says nothing about the endpoint. Disarmed (no deadline) once
/// the try has its answer.
struct TimeoutWatch<'a> {
    upstream: &'a Upstream,
    endpoint: &'a Endpoint,
    deadline: Option<Instant>,
}

impl Drop for TimeoutWatch<'_> {
    fn drop(&mut self) {
        if self
            .deadline
            .is_some_and(|deadline| clock::now() >= deadline)
        {
            self.upstream
                .record_outcome(self.endpoint, Outcome::Timeout);
        }
    }
}

/// Tells outlier detection how the try went: from the response head, or when
/// the body ends for a gRPC response whose status comes in trailers.
fn record_outlier_outcome(
    upstream: &Arc<Upstream>,
    endpoint: &Arc<Endpoint>,
    response: &mut Response<ResponseBody>,
) {
    if !upstream.detects_outliers() {
        return;
    }
    if !Outcome::awaits_trailers(response.headers()) {
        upstream.record_outcome(endpoint, Outcome::of_response(response));
        return;
    }
    let (upstream, endpoint) = (Arc::clone(upstream), Arc::clone(endpoint));
    let status = response.status().as_u16();
    response.body_mut().on_end(Box::new(move |end| {
        if end.complete {
            upstream.record_outcome(&endpoint, Outcome::of_trailers(status, end.grpc_status));
        }
    }));
}
