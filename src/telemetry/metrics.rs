//! Prometheus metrics (`docs/metrics.md`): their names and the handles the
//! data path uses (the recorder itself is `recorder`).
//!
//! Per-request handles are registered once per status code and cached, so the
//! hot path does one array index instead of a label lookup. Every name is
//! prefixed `remora_`, counters end in `_total`, durations are in seconds, and
//! labels take bounded values only (direction, upstream, code, error kind).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::context::Direction;
use crate::error::ErrorKind;
use crate::telemetry::exemplars::SeriesExemplars;

pub const REQUESTS_TOTAL: &str = "remora_requests_total";
pub const GRPC_RESPONSES_TOTAL: &str = "remora_grpc_responses_total";
pub const REQUEST_DURATION: &str = "remora_request_duration_seconds";
pub const PROXY_ERRORS_TOTAL: &str = "remora_proxy_errors_total";
pub const CONNECTIONS_OPEN: &str = "remora_connections_open";
pub const CONNECTIONS_TOTAL: &str = "remora_connections_total";
pub const CONNECTIONS_REFUSED_TOTAL: &str = "remora_connections_refused_total";
pub const CLIENT_PROTOCOL_ERRORS_TOTAL: &str = "remora_client_protocol_errors_total";
pub const ENDPOINTS: &str = "remora_endpoints";
pub const CONNECT_ERRORS_TOTAL: &str = "remora_upstream_connect_errors_total";
pub const DISCOVERY_ERRORS_TOTAL: &str = "remora_discovery_errors_total";
pub const DISCOVERY_LAST_UPDATE: &str = "remora_discovery_last_update_timestamp_seconds";
pub const SERVICE_INSTANCES: &str = "remora_service_instances";
pub const DISCOVERY_WATCH_UP: &str = "remora_discovery_watch_up";
pub const CONFIG_RELOADS_TOTAL: &str = "remora_config_reloads_total";
pub const CONFIG_LAST_RELOAD_SUCCESS: &str = "remora_config_last_reload_success_timestamp_seconds";
pub const CONSUL_REGISTRATIONS_TOTAL: &str = "remora_consul_registrations_total";
pub const CONSUL_REGISTERED: &str = "remora_consul_registered";
pub const ETCD_REGISTRATIONS_TOTAL: &str = "remora_etcd_registrations_total";
pub const ETCD_REGISTERED: &str = "remora_etcd_registered";
pub const TCP_SENT_BYTES: &str = "remora_tcp_sent_bytes_total";
pub const TCP_RECEIVED_BYTES: &str = "remora_tcp_received_bytes_total";
pub const TRANSPARENT_CONNECTIONS_TOTAL: &str = "remora_transparent_connections_total";
pub const TRANSPARENT_UNMATCHED_TOTAL: &str = "remora_transparent_unmatched_total";
pub const TRANSPARENT_EGRESS_TOTAL: &str = "remora_transparent_egress_total";
pub const ROUTE_REQUESTS_TOTAL: &str = "remora_route_requests_total";
pub const ROUTE_REQUEST_DURATION: &str = "remora_route_request_duration_seconds";
pub const ROUTE_BACKEND_REQUESTS_TOTAL: &str = "remora_route_backend_requests_total";
pub const MIRROR_REQUESTS_TOTAL: &str = "remora_mirror_requests_total";

/// Latency buckets, 0.5 ms to 10 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Sets the number of endpoints an upstream currently has.
pub fn set_endpoint_count(upstream: &str, count: usize) {
    gauge!(ENDPOINTS, "upstream" => upstream.to_owned()).set(count as f64);
}

/// Counts a failed connection attempt to an endpoint of `upstream`.
pub fn connect_error(upstream: &str) {
    counter!(CONNECT_ERRORS_TOTAL, "upstream" => upstream.to_owned()).increment(1);
}

/// Shows an upstream's discovery metrics (at zero) before its first query.
pub fn register_discovery(upstream: &str) {
    counter!(DISCOVERY_ERRORS_TOTAL, "upstream" => upstream.to_owned()).increment(0);
    set_discovery_watch_up(upstream, false);
}

/// Whether the registry watch feeding `upstream` answers (1) or is failing
/// and the upstream serves its last known endpoints (0; also before the
/// first answer).
pub fn set_discovery_watch_up(upstream: &str, up: bool) {
    gauge!(DISCOVERY_WATCH_UP, "upstream" => upstream.to_owned()).set(f64::from(u8::from(up)));
}

/// Counts a failed discovery query for `upstream`.
pub fn discovery_error(upstream: &str) {
    counter!(DISCOVERY_ERRORS_TOTAL, "upstream" => upstream.to_owned()).increment(1);
}

/// Records that discovery confirmed `upstream`'s endpoint set just now
/// (as a Unix timestamp; its age is `time()` minus it).
/// The healthy instances of this sidecar's own service, as discovery lists
/// them (what `rate_limit.scope: service` divides by).
pub fn service_instances(count: u32) {
    gauge!(SERVICE_INSTANCES).set(f64::from(count));
}

pub fn discovery_updated(upstream: &str) {
    gauge!(DISCOVERY_LAST_UPDATE, "upstream" => upstream.to_owned()).set(unix_now());
}

/// Shows the reload metrics (at zero; the start counts as the last
/// successful load).
pub fn register_config_reloads() {
    for result in ["success", "failure"] {
        counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(0);
    }
    gauge!(CONFIG_LAST_RELOAD_SUCCESS).set(unix_now());
}

/// Counts one configuration reload by outcome.
pub fn config_reloaded(success: bool) {
    let result = if success { "success" } else { "failure" };
    counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(1);
    if success {
        gauge!(CONFIG_LAST_RELOAD_SUCCESS).set(unix_now());
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A registry remora registers the service with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registry {
    Consul,
    Etcd,
}

impl Registry {
    /// The names of its registration metrics: attempts, registered now.
    fn metric_names(self) -> (&'static str, &'static str) {
        match self {
            Registry::Consul => (CONSUL_REGISTRATIONS_TOTAL, CONSUL_REGISTERED),
            Registry::Etcd => (ETCD_REGISTRATIONS_TOTAL, ETCD_REGISTERED),
        }
    }
}

/// Shows a registration's metrics (at zero) before its first attempt.
pub fn register_registration(registry: Registry, service: &str) {
    let (attempts, _) = registry.metric_names();
    for result in ["success", "failure"] {
        counter!(attempts, "service" => service.to_owned(), "result" => result).increment(0);
    }
    set_registered(registry, service, false);
}

/// Counts one attempt to register `service` with `registry`.
pub fn registration_attempt(registry: Registry, service: &str, success: bool) {
    let (attempts, _) = registry.metric_names();
    let result = if success { "success" } else { "failure" };
    counter!(attempts, "service" => service.to_owned(), "result" => result).increment(1);
}

/// Whether `registry` has `service` registered, as far as remora knows.
pub fn set_registered(registry: Registry, service: &str, registered: bool) {
    let (_, gauge_name) = registry.metric_names();
    gauge!(gauge_name, "service" => service.to_owned()).set(f64::from(u8::from(registered)));
}

/// Request metrics of one listener (direction + upstream), or of one route
/// of it (+ route, under the `remora_route_*` names), with the trace-id
/// exemplars of the duration histogram.
pub struct RequestMetrics {
    direction: &'static str,
    upstream: Arc<str>,
    route: Option<Arc<str>>,
    by_code: Box<[OnceLock<CodeSeries>]>,
    /// gRPC calls by `grpc-status`: 0 to 16, then any other value.
    by_grpc_status: [OnceLock<Counter>; GRPC_STATUS_SERIES],
}

/// The `grpc-status` codes gRPC defines (0 to 16), and one series for any
/// other value.
const GRPC_STATUS_SERIES: usize = 18;

/// The series of one status code.
struct CodeSeries {
    requests: Counter,
    durations: Histogram,
    exemplars: Arc<SeriesExemplars>,
}

impl RequestMetrics {
    pub fn new(direction: Direction, upstream: &str) -> Self {
        Self {
            direction: direction.as_str(),
            upstream: upstream.into(),
            route: None,
            by_code: (100..600).map(|_| OnceLock::new()).collect(),
            by_grpc_status: Default::default(),
        }
    }

    /// The metrics of one route of an outbound upstream.
    pub fn route(upstream: &str, route: &str) -> Self {
        Self {
            route: Some(route.into()),
            ..Self::new(Direction::Outbound, upstream)
        }
    }

    /// Counts one finished request and its duration; `trace_id`, the
    /// request's sampled trace, becomes the exemplar of its bucket.
    pub fn record(
        &self,
        status: u16,
        duration: Duration,
        error: Option<ErrorKind>,
        trace_id: Option<u128>,
    ) {
        let series = self.by_code[usize::from(status.clamp(100, 599)) - 100].get_or_init(|| {
            let mut labels = vec![
                ("direction", self.direction.to_owned()),
                ("upstream", self.upstream.to_string()),
                ("code", status.to_string()),
            ];
            let (requests, duration_name) = match &self.route {
                Some(route) => {
                    labels.push(("route", route.to_string()));
                    (
                        counter!(ROUTE_REQUESTS_TOTAL, &labels),
                        ROUTE_REQUEST_DURATION,
                    )
                }
                None => (counter!(REQUESTS_TOTAL, &labels), REQUEST_DURATION),
            };
            CodeSeries {
                requests,
                durations: histogram!(duration_name, &labels),
                exemplars: SeriesExemplars::register(duration_name, &labels),
            }
        });
        series.requests.increment(1);
        series.durations.record(duration.as_secs_f64());
        if let Some(trace_id) = trace_id {
            series.exemplars.record(trace_id, duration);
        }
        if let (Some(kind), None) = (error, &self.route) {
            counter!(PROXY_ERRORS_TOTAL,
                "direction" => self.direction, "upstream" => self.upstream.to_string(), "kind" => kind.as_str())
            .increment(1);
        }
    }
}

impl RequestMetrics {
    /// Counts one finished gRPC call by its `grpc-status`.
    pub fn record_grpc_status(&self, grpc_status: u16) {
        let index = usize::from(grpc_status).min(GRPC_STATUS_SERIES - 1);
        let counter = self.by_grpc_status[index].get_or_init(|| {
            let label = if index < GRPC_STATUS_SERIES - 1 {
                grpc_status.to_string()
            } else {
                "other".to_owned()
            };
            counter!(GRPC_RESPONSES_TOTAL,
                "direction" => self.direction, "upstream" => self.upstream.to_string(), "grpc_status" => label)
        });
        counter.increment(1);
    }
}

/// Tries a route sent to one of its backends.
pub fn route_backend_counter(upstream: &str, route: &str, backend: &str) -> Counter {
    counter!(ROUTE_BACKEND_REQUESTS_TOTAL,
        "upstream" => upstream.to_owned(), "route" => route.to_owned(), "backend" => backend.to_owned())
}

/// Mirrored requests of a route by `outcome`: `answered`, `failed`,
/// `skipped_body` or `skipped_busy`.
pub fn mirror_counter(upstream: &str, route: &str, outcome: &'static str) -> Counter {
    counter!(MIRROR_REQUESTS_TOTAL,
        "upstream" => upstream.to_owned(), "route" => route.to_owned(), "outcome" => outcome)
}

/// Connection gauges and counters of one listener.
pub struct ConnectionMetrics {
    open: Gauge,
    total: Counter,
    refused: Counter,
    protocol_errors: ProtocolErrors,
}

impl ConnectionMetrics {
    pub fn new(direction: Direction, listener: &str) -> Self {
        let labels = [
            ("direction", direction.as_str().to_owned()),
            ("listener", listener.to_owned()),
        ];
        Self {
            open: gauge!(CONNECTIONS_OPEN, &labels),
            total: counter!(CONNECTIONS_TOTAL, &labels),
            refused: counter!(CONNECTIONS_REFUSED_TOTAL, &labels),
            protocol_errors: ProtocolErrors {
                direction: direction.as_str(),
                listener: listener.into(),
            },
        }
    }

    /// What each connection of the listener counts its protocol errors in.
    pub fn protocol_errors(&self) -> ProtocolErrors {
        self.protocol_errors.clone()
    }

    /// Counts a connection closed at once because the listener was full.
    pub fn refused(&self) {
        self.refused.increment(1);
    }

    /// Counts a new connection; the open gauge goes down when the guard drops.
    pub fn opened(&self) -> OpenConnection {
        self.total.increment(1);
        self.open.increment(1.0);
        OpenConnection(self.open.clone())
    }
}

/// `remora_client_protocol_errors_total` of one listener: client
/// connections that ended on a protocol error (rare: the series is looked
/// up when one happens).
#[derive(Clone)]
pub struct ProtocolErrors {
    direction: &'static str,
    listener: Arc<str>,
}

impl ProtocolErrors {
    /// Counts a connection that ended on an error of `kind`.
    pub fn count(&self, kind: &'static str) {
        counter!(CLIENT_PROTOCOL_ERRORS_TOTAL,
            "direction" => self.direction, "listener" => self.listener.to_string(), "kind" => kind)
        .increment(1);
    }
}

/// Held for the life of a connection.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Byte counters of an opaque TCP upstream.
pub fn tcp_bytes(upstream: &str) -> (Counter, Counter) {
    (
        counter!(TCP_SENT_BYTES, "upstream" => upstream.to_owned()),
        counter!(TCP_RECEIVED_BYTES, "upstream" => upstream.to_owned()),
    )
}

// --- circuit breaking and outlier detection ---------------------------------

pub const CIRCUIT_BREAKER_STATE: &str = "remora_circuit_breaker_state";
pub const CIRCUIT_BREAKER_TRANSITIONS_TOTAL: &str = "remora_circuit_breaker_transitions_total";
pub const OUTLIER_EJECTIONS_TOTAL: &str = "remora_outlier_ejections_total";

/// Sets the breaker gauge: 0 closed, 1 open, 2 half-open.
pub fn circuit_breaker_state(upstream: &str, state: f64) {
    gauge!(CIRCUIT_BREAKER_STATE, "upstream" => upstream.to_owned()).set(state);
}

/// Counts a breaker transition into the state labelled `to`.
pub fn circuit_breaker_transition(upstream: &str, to: &'static str) {
    counter!(CIRCUIT_BREAKER_TRANSITIONS_TOTAL, "upstream" => upstream.to_owned(), "to" => to)
        .increment(1);
}

/// Counts an endpoint ejected by outlier detection.
pub fn outlier_ejection(upstream: &str) {
    counter!(OUTLIER_EJECTIONS_TOTAL, "upstream" => upstream.to_owned()).increment(1);
}

// ---- Retries and timeouts -------------------------------------------------

pub const RETRIES_TOTAL: &str = "remora_retries_total";
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "remora_retry_budget_exhausted_total";
pub const HEDGES_TOTAL: &str = "remora_hedges_total";
pub const HEDGE_WINS_TOTAL: &str = "remora_hedge_wins_total";
pub const TIMEOUTS_TOTAL: &str = "remora_timeouts_total";

/// Counters of one upstream's retry layer, registered once when it is built.
pub struct RetryMetrics {
    /// Retries whose try ended with an outcome not to be retried.
    pub succeeded: Counter,
    /// Retries whose try failed again (matched `on`, or timed out).
    pub failed: Counter,
    /// Failed tries that were not retried because the budget was exhausted.
    pub budget_exhausted: Counter,
    /// Tries cut off by `per_try_timeout`.
    pub per_try_timeouts: Counter,
    /// Hedges sent.
    pub hedges: Counter,
    /// Answers that came from a hedge rather than the first try.
    pub hedge_wins: Counter,
}

impl RetryMetrics {
    pub fn new(direction: Direction, upstream: &str) -> Self {
        let retries = |outcome: &'static str| counter!(RETRIES_TOTAL, "upstream" => upstream.to_owned(), "outcome" => outcome);
        Self {
            succeeded: retries("success"),
            failed: retries("failure"),
            budget_exhausted: counter!(RETRY_BUDGET_EXHAUSTED_TOTAL, "upstream" => upstream.to_owned()),
            per_try_timeouts: timeouts(direction, upstream, "per_try"),
            hedges: counter!(HEDGES_TOTAL, "upstream" => upstream.to_owned()),
            hedge_wins: counter!(HEDGE_WINS_TOTAL, "upstream" => upstream.to_owned()),
        }
    }
}

/// The `remora_timeouts_total` counter of `kind` (`request` or `per_try`).
pub fn timeouts(direction: Direction, upstream: &str, kind: &'static str) -> Counter {
    counter!(TIMEOUTS_TOTAL,
        "direction" => direction.as_str(), "upstream" => upstream.to_owned(), "kind" => kind)
}

// Rate limiting, load shedding and fault injection. Handles are created once
// per listener, when its stack is built, so the series exist (at 0) from the
// start.

pub const RATE_LIMITED_TOTAL: &str = "remora_rate_limited_total";
pub const SHED_REQUESTS_TOTAL: &str = "remora_shed_requests_total";
pub const REQUESTS_IN_FLIGHT: &str = "remora_requests_in_flight";
pub const FAULTS_INJECTED_TOTAL: &str = "remora_faults_injected_total";
pub const CONCURRENCY_LIMIT: &str = "remora_concurrency_limit";
pub const CONCURRENCY_IN_FLIGHT: &str = "remora_concurrency_in_flight";
pub const CONCURRENCY_RTT_NOLOAD: &str = "remora_concurrency_rtt_noload_seconds";

fn listener_labels(direction: Direction, upstream: &str) -> [(&'static str, String); 2] {
    [
        ("direction", direction.as_str().to_owned()),
        ("upstream", upstream.to_owned()),
    ]
}

/// Requests refused by a rate limit.
pub fn rate_limited_counter(direction: Direction, upstream: &str) -> Counter {
    counter!(RATE_LIMITED_TOTAL, &listener_labels(direction, upstream))
}

/// Requests refused by a concurrency limit.
pub fn shed_counter(direction: Direction, upstream: &str) -> Counter {
    counter!(SHED_REQUESTS_TOTAL, &listener_labels(direction, upstream))
}

/// The gauges of one concurrency limit (`max_concurrent_requests` or
/// `adaptive_concurrency`).
pub struct ConcurrencyGauges {
    /// The limit now.
    pub limit: Gauge,
    /// Requests holding a slot.
    pub in_flight: Gauge,
    /// The upstream's measured no-load latency (adaptive limits only).
    pub rtt_noload: Option<Gauge>,
}

impl ConcurrencyGauges {
    pub fn new(direction: Direction, upstream: &str, adaptive: bool) -> Self {
        let labels = listener_labels(direction, upstream);
        Self {
            limit: gauge!(CONCURRENCY_LIMIT, &labels),
            in_flight: gauge!(CONCURRENCY_IN_FLIGHT, &labels),
            rtt_noload: adaptive.then(|| gauge!(CONCURRENCY_RTT_NOLOAD, &labels)),
        }
    }
}

/// Requests received on an HTTP listener whose response has not ended yet.
pub fn in_flight_gauge(direction: Direction, upstream: &str) -> Gauge {
    gauge!(REQUESTS_IN_FLIGHT, &listener_labels(direction, upstream))
}

/// Faults injected; `fault` is `delay` or `abort`.
pub fn faults_counter(upstream: &str, fault: &'static str) -> Counter {
    counter!(FAULTS_INJECTED_TOTAL, "upstream" => upstream.to_owned(), "fault" => fault)
}

// ---- Build info, per-endpoint requests -------------------------------------

pub const BUILD_INFO: &str = "remora_build_info";
pub const ENDPOINT_REQUESTS_TOTAL: &str = "remora_endpoint_requests_total";
pub const ENDPOINT_REQUEST_DURATION: &str = "remora_endpoint_request_duration_seconds";
pub const UPSTREAM_RESENDS_TOTAL: &str = "remora_upstream_resends_total";
pub const POOL_CONNECTIONS: &str = "remora_upstream_pool_connections";
pub const POOL_PENDING_REQUESTS: &str = "remora_upstream_pool_pending_requests";

/// HTTP/2 connections open in the pools of an upstream's endpoints.
pub fn pool_connections(upstream: &str) -> Gauge {
    gauge!(POOL_CONNECTIONS, "upstream" => upstream.to_owned())
}

/// Requests waiting for an HTTP/2 stream to an upstream's endpoints.
pub fn pool_pending_requests(upstream: &str) -> Gauge {
    gauge!(POOL_PENDING_REQUESTS, "upstream" => upstream.to_owned())
}

/// Tries answered by one endpoint and how long the response head took,
/// registered once when the endpoint is created so a try records without a
/// label lookup.
pub struct EndpointMetrics {
    upstream: String,
    requests: Counter,
    durations: Histogram,
}

impl EndpointMetrics {
    pub fn new(upstream: &str, endpoint: std::net::SocketAddr) -> Self {
        let labels = [
            ("upstream", upstream.to_owned()),
            ("endpoint", endpoint.to_string()),
        ];
        Self {
            upstream: upstream.to_owned(),
            requests: counter!(ENDPOINT_REQUESTS_TOTAL, &labels),
            durations: histogram!(ENDPOINT_REQUEST_DURATION, &labels),
        }
    }

    /// Counts a request sent again because the upstream never processed it
    /// (`reason`: `not_written`, `goaway`, `refused_stream`,
    /// `closed_before_response`).
    pub fn resent(&self, reason: &'static str) {
        counter!(UPSTREAM_RESENDS_TOTAL, "upstream" => self.upstream.clone(), "reason" => reason)
            .increment(1);
    }

    /// Counts one try whose response head arrived after `duration`.
    pub fn record(&self, duration: Duration) {
        self.requests.increment(1);
        self.durations.record(duration.as_secs_f64());
    }
}

// ---- Active health checks, panic and fallbacks -----------------------------

pub const HEALTH_CHECKS_TOTAL: &str = "remora_health_checks_total";
pub const ENDPOINT_HEALTHY: &str = "remora_endpoint_healthy";
/// Rendered at scrape time by the admin listener, not recorded.
pub const ENDPOINT_IN_FLIGHT: &str = "remora_endpoint_in_flight";
pub const LB_PANIC: &str = "remora_lb_panic";
pub const LB_PANIC_REQUESTS_TOTAL: &str = "remora_lb_panic_requests_total";

/// The health checks of one endpoint: checks by result, and whether it
/// passes (1) or fails (0) them.
pub struct HealthCheckMetrics {
    passed: Counter,
    failed: Counter,
    healthy: Gauge,
}

impl HealthCheckMetrics {
    pub fn new(upstream: &str, endpoint: std::net::SocketAddr) -> Self {
        let check = |result: &'static str| counter!(HEALTH_CHECKS_TOTAL, "upstream" => upstream.to_owned(), "result" => result);
        let healthy = gauge!(ENDPOINT_HEALTHY, "upstream" => upstream.to_owned(), "endpoint" => endpoint.to_string());
        healthy.set(1.0);
        Self {
            passed: check("passed"),
            failed: check("failed"),
            healthy,
        }
    }

    pub fn checked(&self, passed: bool) {
        if passed {
            self.passed.increment(1);
        } else {
            self.failed.increment(1);
        }
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.set(if healthy { 1.0 } else { 0.0 });
    }
}

/// An upstream's panic handles: requests balanced in panic, and whether it
/// is in panic (1) or not (0).
pub fn panic_handles(upstream: &str) -> (Counter, Gauge) {
    let requests = counter!(LB_PANIC_REQUESTS_TOTAL, "upstream" => upstream.to_owned());
    let gauge = gauge!(LB_PANIC, "upstream" => upstream.to_owned());
    gauge.set(0.0);
    (requests, gauge)
}

pub const FALLBACKS_TOTAL: &str = "remora_fallbacks_total";
pub const LOCALITY_REQUESTS_TOTAL: &str = "remora_locality_requests_total";
pub const CONSUL_FAILOVER_DATACENTER: &str = "remora_consul_failover_datacenter";

/// Whether `upstream` uses the instances of datacenter `dc` (Consul failover).
pub fn failover_datacenter(upstream: &str, dc: &str, active: bool) {
    gauge!(CONSUL_FAILOVER_DATACENTER, "upstream" => upstream.to_owned(), "datacenter" => dc.to_owned())
        .set(if active { 1.0 } else { 0.0 });
}

/// Requests of `upstream` that locality-aware balancing sent to `zone`.
pub fn locality_counter(upstream: &str, zone: &str) -> Counter {
    counter!(LOCALITY_REQUESTS_TOTAL, "upstream" => upstream.to_owned(), "zone" => zone.to_owned())
}

/// Counts a fallback answer of `upstream` for `trigger`.
pub fn fallback(upstream: &str, trigger: &'static str) {
    counter!(FALLBACKS_TOTAL, "upstream" => upstream.to_owned(), "trigger" => trigger).increment(1);
}

// ---- Mesh TLS and authorization --------------------------------------------

pub const TLS_HANDSHAKE_ERRORS_TOTAL: &str = "remora_tls_handshake_errors_total";
pub const TLS_CERTIFICATE_UPDATES_TOTAL: &str = "remora_tls_certificate_updates_total";
pub const AUTHZ_DENIED_TOTAL: &str = "remora_authz_denied_total";

/// TLS handshakes that failed or timed out on the inbound listener
/// (`upstream` = `service.name`) or towards an upstream (outbound).
pub fn tls_handshake_errors(direction: Direction, upstream: &str) -> Counter {
    counter!(
        TLS_HANDSHAKE_ERRORS_TOTAL,
        &listener_labels(direction, upstream)
    )
}

/// Requests or connections refused by authorization (inbound: `upstream` =
/// `service.name`).
pub fn authz_denied_counter(direction: Direction, upstream: &str) -> Counter {
    counter!(AUTHZ_DENIED_TOTAL, &listener_labels(direction, upstream))
}

/// Counts new TLS material installed (`ok`) or rejected (`error`).
pub fn tls_certificate_update(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    counter!(TLS_CERTIFICATE_UPDATES_TOTAL, "result" => result).increment(1);
}

/// Connections of the transparent listener by detected protocol (`http1`,
/// `http2`, `tcp`).
pub fn transparent_connections(protocol: &'static str) -> Counter {
    counter!(TRANSPARENT_CONNECTIONS_TOTAL, "protocol" => protocol)
}

/// Transparent traffic that matched no upstream: HTTP requests and TCP
/// connections, by `protocol` and `action` (`passthrough`, `refused`).
pub fn transparent_unmatched(protocol: &'static str, action: &'static str) -> Counter {
    counter!(TRANSPARENT_UNMATCHED_TOTAL, "protocol" => protocol, "action" => action)
}

/// Egress decisions on unmatched transparent traffic (`unmatched: refuse`),
/// by `protocol` (`http1`, `http2`, `tls`, `tcp`), `decision` (`allowed`,
/// `refused`) and `reason`.
pub fn transparent_egress(
    protocol: &'static str,
    decision: &'static str,
    reason: &'static str,
) -> Counter {
    counter!(
        TRANSPARENT_EGRESS_TOTAL,
        "protocol" => protocol,
        "decision" => decision,
        "reason" => reason
    )
}

// ---- JWT --------------------------------------------------------------------

pub const JWT_VALIDATIONS_TOTAL: &str = "remora_jwt_validations_total";
pub const JWKS_FETCHES_TOTAL: &str = "remora_jwt_jwks_fetches_total";

/// Tokens the JWT layer checked, by `provider` and `result` (`ok` or a
/// `TokenRejection`; a missing token has no provider: `provider=""`).
pub fn jwt_validations(provider: &str, result: &'static str) -> Counter {
    counter!(JWT_VALIDATIONS_TOTAL, "provider" => provider.to_owned(), "result" => result)
}

/// Loads of a provider's JWKS (URL or file), `ok` or `error`.
pub fn jwks_fetches(provider: &str, ok: bool) -> Counter {
    let result = if ok { "ok" } else { "error" };
    counter!(JWKS_FETCHES_TOTAL, "provider" => provider.to_owned(), "result" => result)
}
