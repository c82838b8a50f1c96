//! The catalogue of every metric remora exports — name, type, label names
//! and meaning — the one source of both the exposition's `# HELP` lines
//! ([`describe`], and `process` for the `process_*` metrics) and the table
//! of `docs/metrics.md` (a test fails when the two differ; `cargo test --lib
//! catalogue` prints the table to paste).

use std::fmt::Write as _;

use crate::telemetry::metrics::*;
use crate::telemetry::{process, spans};

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family.
#[derive(Debug)]
pub struct MetricDoc {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    /// Markdown, as `docs/metrics.md` shows it.
    pub meaning: &'static str,
}

impl MetricDoc {
    /// The meaning as a `# HELP` text: the markdown emphasis removed.
    pub fn help(&self) -> String {
        self.meaning.replace('*', "")
    }
}

/// Gives the recorder the help text of every `remora_*` metric (the
/// `process_*` ones are rendered by `process`, which reads them here).
pub fn describe() {
    for metric in CATALOGUE {
        let help = metric.help();
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, help),
        }
    }
}

/// One sample of a family rendered at scrape time: label pairs and value.
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// Writes one metric family as Prometheus text: its `# HELP` and `# TYPE`
/// lines from the catalogue (nothing for a name not in it), then a line a
/// sample — for the families rendered at scrape time rather than recorded.
pub fn write_family(out: &mut String, name: &str, samples: &[Sample]) {
    let Some(metric) = CATALOGUE.iter().find(|m| m.name == name) else {
        return;
    };
    let (help, kind) = (metric.help(), metric.kind.as_str());
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for Sample { labels, value } in samples {
        out.push_str(name);
        if !labels.is_empty() {
            let pairs: Vec<String> = (labels.iter())
                .map(|(label, value)| format!("{label}=\"{}\"", escape_label(value)))
                .collect();
            let _ = write!(out, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(out, " {value}");
    }
    out.push('\n');
}

/// A label value as the text format writes it: `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The table of `docs/metrics.md`, one row per metric.
pub fn markdown_table() -> String {
    let mut table = String::from("| name | type | labels | meaning |\n|---|---|---|---|\n");
    for metric in CATALOGUE {
        let labels: Vec<String> = metric.labels.iter().map(|l| format!("`{l}`")).collect();
        let labels = match labels.join(", ") {
            none if none.is_empty() => " ".to_owned(),
            some => format!(" {some} "),
        };
        table.push_str(&format!(
            "| `{}` | {} |{labels}| {} |\n",
            metric.name,
            metric.kind.as_str(),
            metric.meaning
        ));
    }
    table
}

pub const CATALOGUE: &[MetricDoc] = &[
    MetricDoc {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        labels: &["version"],
        meaning: "Always 1; `version` is remora's crate version.",
    },
    MetricDoc {
        name: REQUESTS_TOTAL,
        kind: Kind::Counter,
        labels: &["direction", "upstream", "code"],
        meaning: "Requests whose response has ended, by status code, including responses remora made itself, and requests the client gave up before their response head (code `499`). *Appears after the first response of a listener.*",
    },
    MetricDoc {
        name: GRPC_RESPONSES_TOTAL,
        kind: Kind::Counter,
        labels: &["direction", "upstream", "grpc_status"],
        meaning: "gRPC calls whose response has ended with a `grpc-status` (in its trailers, or a trailers-only head), by that status: `0` to `16`, `other` for any other value; the calls remora failed itself included (`14`, `4`, `8`...). Their HTTP status, nearly always 200, is in `remora_requests_total`. A call cut with no status at all is not counted here. *Appears after the first gRPC response of a listener.*",
    },
    MetricDoc {
        name: REQUEST_DURATION,
        kind: Kind::Histogram,
        labels: &["direction", "upstream", "code"],
        meaning: "Time from request arrival to the end of the response body. *Appears after the first response of a listener.*",
    },
    MetricDoc {
        name: PROXY_ERRORS_TOTAL,
        kind: Kind::Counter,
        labels: &["direction", "upstream", "kind"],
        meaning: "Responses remora made itself, by error kind (`no_endpoints`, `no_healthy_endpoints`, `connect_failed`, `connect_timeout`, `upstream_reset`, `upstream_protocol`, `timeout`, `rate_limited`, `circuit_open`, `overloaded`, `fault_abort`, `client_body`, `unauthenticated`, `forbidden`, `no_route`, `bad_path`). *Appears after the first proxy-made error.*",
    },
    MetricDoc {
        name: ROUTE_REQUESTS_TOTAL,
        kind: Kind::Counter,
        labels: &["direction", "upstream", "route", "code"],
        meaning: "Requests of an upstream with `routes:`, by the route that took them (`default` for unmatched requests) and status code; local answers (redirects, direct responses) and proxy-made errors included. Only upstreams with routes have it; `remora_requests_total` is unchanged. *Appears after the first response of a route.*",
    },
    MetricDoc {
        name: ROUTE_REQUEST_DURATION,
        kind: Kind::Histogram,
        labels: &["direction", "upstream", "route", "code"],
        meaning: "Like `remora_request_duration_seconds`, per route. *Appears after the first response of a route.*",
    },
    MetricDoc {
        name: ROUTE_BACKEND_REQUESTS_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream", "route", "backend"],
        meaning: "Tries a route sent to each of its backends (`default` = the upstream's own endpoints), retries included: the observed split.",
    },
    MetricDoc {
        name: MIRROR_REQUESTS_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream", "route", "outcome"],
        meaning: "Mirrored copies by `outcome`: `answered` (the shadow sent a whole response, any status), `failed` (error or `mirror.timeout`), `skipped_body` (body larger than `max_body`, not whole within `mirror.timeout`, or an upgrade), `skipped_busy` (`max_in_flight` shadows already running). Only routes with `mirror`.",
    },
    MetricDoc {
        name: REQUESTS_IN_FLIGHT,
        kind: Kind::Gauge,
        labels: &["direction", "upstream"],
        meaning: "Requests of an HTTP listener whose response has not ended yet (every HTTP listener).",
    },
    MetricDoc {
        name: UPSTREAM_RESENDS_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream", "reason"],
        meaning: "Requests sent again, transparently, because the upstream never processed them — or, for idempotent requests only, may not have (`not_written`, `goaway`, `refused_stream`, `closed_before_response`; see the README's \"HTTP/2 upstreams\"). Not retries: `remora_retries_total` does not count them.",
    },
    MetricDoc {
        name: POOL_CONNECTIONS,
        kind: Kind::Gauge,
        labels: &["upstream"],
        meaning: "HTTP/2 connections open in the pools of the upstream's endpoints (retired ones, finishing their last streams, not counted).",
    },
    MetricDoc {
        name: POOL_PENDING_REQUESTS,
        kind: Kind::Gauge,
        labels: &["upstream"],
        meaning: "Requests waiting for an HTTP/2 stream: every connection full, or one being opened (`connection_pool.max_pending_requests`).",
    },
    MetricDoc {
        name: ENDPOINT_REQUESTS_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream", "endpoint"],
        meaning: "Tries an endpoint answered (response head received), retries included. Not counted: tries that failed before a response.",
    },
    MetricDoc {
        name: ENDPOINT_REQUEST_DURATION,
        kind: Kind::Histogram,
        labels: &["upstream", "endpoint"],
        meaning: "Time from sending a try to its response head, per endpoint.",
    },
    MetricDoc {
        name: CONNECT_ERRORS_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream"],
        meaning: "Failed connection attempts to an upstream's endpoints (refused or timed out). *Appears after the first failed connect.*",
    },
    MetricDoc {
        name: CLIENT_PROTOCOL_ERRORS_TOTAL,
        kind: Kind::Counter,
        labels: &["direction", "listener", "kind"],
        meaning: "Client connections that ended because the client broke the protocol or the listener's `limits`: `kind` `malformed` (an HTTP/1.1 request that could not be parsed: 400; also each request head remora refuses before its stack — more than one `Host`, HTTP/1.1 without `Host`, a header with `_` under `limits.headers_with_underscores_action: reject_request`: 400 `bad_request`, the connection lives on), `too_large` (a head over `max_header_bytes` / `max_headers`: 431), `header_timeout` (no complete head within `header_read_timeout`), `http2` (remora ended the connection with a GOAWAY error: malformed frames, floods). These requests never reach the stack, so they are in no other request metric. *Appears after the first such connection.*",
    },
    MetricDoc {
        name: CONNECTIONS_OPEN,
        kind: Kind::Gauge,
        labels: &["direction", "listener"],
        meaning: "Client connections open on a listener (an upgraded, WebSocket, connection until its tunnel ends).",
    },
    MetricDoc {
        name: CONNECTIONS_TOTAL,
        kind: Kind::Counter,
        labels: &["direction", "listener"],
        meaning: "Client connections accepted by a listener.",
    },
    MetricDoc {
        name: CONNECTIONS_REFUSED_TOTAL,
        kind: Kind::Counter,
        labels: &["direction", "listener"],
        meaning: "Client connections closed as soon as they were accepted because the listener already had `limits.max_connections` open.",
    },
    MetricDoc {
        name: ENDPOINTS,
        kind: Kind::Gauge,
        labels: &["upstream"],
        meaning: "Endpoints an upstream currently has.",
    },
    MetricDoc {
        name: DISCOVERY_ERRORS_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream"],
        meaning: "Failed discovery attempts: Consul queries that failed (unreachable, timeout, non-2xx such as a 403 for a bad token, unreadable body); etcd reads and watches that failed (unreachable, a member partitioned — noticed by HTTP/2 keep-alive — a watch stream ended or cancelled, an auth error); DNS query rounds that failed (`discovery.dns`, and each hostname of a `discovery.static` list). A compacted etcd watch revision is no failure (the service is read afresh). *Appears after the first failed discovery attempt (DNS, hostnames), or at 0 when a Consul or etcd watch starts.*",
    },
    MetricDoc {
        name: DISCOVERY_LAST_UPDATE,
        kind: Kind::Gauge,
        labels: &["upstream"],
        meaning: "Unix time of the last successful Consul answer or etcd read, watch creation or watch event for the upstream; the age of its endpoint set is `time() - remora_discovery_last_update_timestamp_seconds` (with Consul it grows up to `consul.wait` while the catalog is idle; with etcd, while nothing under the service changes; beyond, while the registry fails). *Appears after the first answer (Consul and etcd discovery only).*",
    },
    MetricDoc {
        name: DISCOVERY_WATCH_UP,
        kind: Kind::Gauge,
        labels: &["upstream"],
        meaning: "1 while the Consul or etcd watch feeding the upstream answers, 0 before its first answer and while it fails (the upstream then serves its last known endpoints: fail static). *Appears after a Consul or etcd watch started.*",
    },
    MetricDoc {
        name: CONFIG_RELOADS_TOTAL,
        kind: Kind::Counter,
        labels: &["result"],
        meaning: "Configuration reloads (file change, SIGHUP, Consul KV change), `result` `success` (now running) or `failure` (refused: invalid, unreadable, or not applicable such as a port already in use; the running configuration stayed).",
    },
    MetricDoc {
        name: CONFIG_LAST_RELOAD_SUCCESS,
        kind: Kind::Gauge,
        labels: &[],
        meaning: "Unix time of the last successful configuration load (the start counts).",
    },
    MetricDoc {
        name: CONSUL_REGISTRATIONS_TOTAL,
        kind: Kind::Counter,
        labels: &["service", "result"],
        meaning: "Attempts to register a service with the Consul agent (`service.register`), `service` the application's name or `<name>-sidecar-proxy`, `result` `success` or `failure` (agent unreachable, non-2xx such as a 403 for a bad token). A registration again after the agent lost it counts as another attempt. Only with `service.register`.",
    },
    MetricDoc {
        name: CONSUL_REGISTERED,
        kind: Kind::Gauge,
        labels: &["service"],
        meaning: "1 while the agent has the service registered (as last checked, every `consul.sync_interval`), else 0. Only with `service.register`.",
    },
    MetricDoc {
        name: ETCD_REGISTRATIONS_TOTAL,
        kind: Kind::Counter,
        labels: &["service", "result"],
        meaning: "Puts of the instance's key in etcd (`service.register` with an `etcd` section), `service` the application's name, `result` `success` or `failure` (etcd unreachable, auth refused). A registration again (after a lost lease or a key gone) counts as another put. *Appears after an etcd registration started.*",
    },
    MetricDoc {
        name: ETCD_REGISTERED,
        kind: Kind::Gauge,
        labels: &["service"],
        meaning: "1 while the instance's key is in etcd under a live lease (as last checked, every third of `etcd.lease_ttl`), else 0. *Appears after an etcd registration started.*",
    },
    MetricDoc {
        name: TCP_SENT_BYTES,
        kind: Kind::Counter,
        labels: &["upstream"],
        meaning: "Bytes sent to the upstream by a TCP listener, counted as they are written (an open connection's too, and one that ends with an error). *Appears after the first TCP connection is made.*",
    },
    MetricDoc {
        name: TCP_RECEIVED_BYTES,
        kind: Kind::Counter,
        labels: &["upstream"],
        meaning: "Bytes received from the upstream by a TCP listener, counted as they are written to the client. *Appears after the first TCP connection is made.*",
    },
    MetricDoc {
        name: TRANSPARENT_CONNECTIONS_TOTAL,
        kind: Kind::Counter,
        labels: &["protocol"],
        meaning: "Connections accepted by the transparent outbound listener, by detected protocol: `http1`, `http2`, `tcp` (opaque: not HTTP, silent for `transparent.detect_timeout`, an `opaque_ports` port, or a tcp upstream's address). With `transparent:` only.",
    },
    MetricDoc {
        name: TRANSPARENT_UNMATCHED_TOTAL,
        kind: Kind::Counter,
        labels: &["protocol", "action"],
        meaning: "Transparent traffic that matched no upstream — HTTP requests (`protocol` `http1` / `http2`) and TCP connections (`tcp`) — by `action`: `passthrough` (sent on to the original destination) or `refused` (502 `no_route`, or the connection closed; also when there is no original destination). With `transparent:` only.",
    },
    MetricDoc {
        name: TRANSPARENT_EGRESS_TOTAL,
        kind: Kind::Counter,
        labels: &["protocol", "decision", "reason"],
        meaning: "Egress-policy decisions on transparent traffic that matched no upstream, with `transparent.unmatched: refuse` (see the README's \"Egress policy\"): HTTP requests (`protocol` `http1` / `http2`), TLS connections (`tls`: a ClientHello was read) and other TCP connections (`tcp`), by `decision` (`allowed`, `refused`) and `reason`: `cidr` (the original destination is in `egress.allow.cidrs`), `host` (the HTTP Host is, or is not, in `egress.allow.hosts`), `sni` (the TLS server name is, or is not), `no_sni` (a ClientHello without a server name), `no_name` (nothing names the destination: TCP that is not TLS, a malformed or unfinished ClientHello, a request without Host). With `transparent.unmatched: refuse` only.",
    },
    MetricDoc {
        name: RETRIES_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream", "outcome"],
        meaning: "Retries; `outcome` `success` when the retried try's outcome was not one to retry, else `failure`.",
    },
    MetricDoc {
        name: RETRY_BUDGET_EXHAUSTED_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream"],
        meaning: "Failed tries not retried, and hedges not sent, because the retry budget was exhausted.",
    },
    MetricDoc {
        name: HEDGES_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream"],
        meaning: "Hedges sent: second (or later) tries of an idempotent request whose first try was slower than `hedge.delay`. Where `retries` or `hedge` is set.",
    },
    MetricDoc {
        name: HEDGE_WINS_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream"],
        meaning: "Answers that came from a hedge rather than the first try (the others were cancelled). Where `retries` or `hedge` is set.",
    },
    MetricDoc {
        name: TIMEOUTS_TOTAL,
        kind: Kind::Counter,
        labels: &["direction", "upstream", "kind"],
        meaning: "Requests cut off by `kind` `request` (the request timeout), `per_try` (only with retries) or `idle` (no response head while the request body stood still for `timeouts.idle`).",
    },
    MetricDoc {
        name: RATE_LIMITED_TOTAL,
        kind: Kind::Counter,
        labels: &["direction", "upstream"],
        meaning: "Requests refused by a rate limit (only where one is set).",
    },
    MetricDoc {
        name: SERVICE_INSTANCES,
        kind: Kind::Gauge,
        labels: &[],
        meaning: "Healthy instances of this sidecar's own service (`service.name`) in Consul, or in etcd with an `etcd` section and no `consul` one: what `rate_limit.scope: service` divides its rates by. *Appears after the first answer of that watch (only with `rate_limit.scope: service`).*",
    },
    MetricDoc {
        name: SHED_REQUESTS_TOTAL,
        kind: Kind::Counter,
        labels: &["direction", "upstream"],
        meaning: "Requests refused by `max_concurrent_requests` or `adaptive_concurrency` (only where one is set).",
    },
    MetricDoc {
        name: CONCURRENCY_LIMIT,
        kind: Kind::Gauge,
        labels: &["direction", "upstream"],
        meaning: "The concurrency limit now: `max_concurrent_requests`, or the adaptive limit (`min_limit` while the no-load latency is measured). Only where one is set.",
    },
    MetricDoc {
        name: CONCURRENCY_IN_FLIGHT,
        kind: Kind::Gauge,
        labels: &["direction", "upstream"],
        meaning: "Requests holding a slot of the concurrency limit (until their response ends, or they fail or are cancelled). Only where a limit is set.",
    },
    MetricDoc {
        name: CONCURRENCY_RTT_NOLOAD,
        kind: Kind::Gauge,
        labels: &["direction", "upstream"],
        meaning: "The no-load latency the adaptive limit measured (median of `min_limit`-concurrency samples, every ~30 s); 0 until the first measurement. Only with `adaptive_concurrency`.",
    },
    MetricDoc {
        name: FAULTS_INJECTED_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream", "fault"],
        meaning: "Faults injected, `fault` `delay` or `abort` (only where `fault` is set).",
    },
    MetricDoc {
        name: CIRCUIT_BREAKER_STATE,
        kind: Kind::Gauge,
        labels: &["upstream"],
        meaning: "0 closed, 1 open, 2 half-open (only where a breaker is set).",
    },
    MetricDoc {
        name: CIRCUIT_BREAKER_TRANSITIONS_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream", "to"],
        meaning: "Breaker transitions into `to` (`open`, `half_open`, `closed`). *Appears after the first transition.*",
    },
    MetricDoc {
        name: OUTLIER_EJECTIONS_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream"],
        meaning: "Endpoints ejected by outlier detection. *Appears after the first ejection.*",
    },
    MetricDoc {
        name: HEALTH_CHECKS_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream", "result"],
        meaning: "Active health checks (`health_check`) by `result`: `passed` or `failed` (a timeout, a refused connection, an unexpected status, a gRPC status other than `SERVING`). Only where `health_check` is set.",
    },
    MetricDoc {
        name: ENDPOINT_HEALTHY,
        kind: Kind::Gauge,
        labels: &["upstream", "endpoint"],
        meaning: "1 while the endpoint passes its active health checks (or has no result yet: one that joined a running set then takes requests only when no checked endpoint can), 0 while it fails them (it takes no new requests). Only where `health_check` is set.",
    },
    MetricDoc {
        name: ENDPOINT_IN_FLIGHT,
        kind: Kind::Gauge,
        labels: &["upstream", "endpoint"],
        meaning: "Requests sent to the endpoint and not yet ended (until the response body ends, or the try fails). Read from the endpoint's own count (the one balancing uses) each time `/metrics` is scraped: it costs a request nothing.",
    },
    MetricDoc {
        name: LB_PANIC,
        kind: Kind::Gauge,
        labels: &["upstream"],
        meaning: "1 while the upstream is in panic: fewer than `load_balancing.panic_threshold` % of its endpoints are healthy (passing their checks, not ejected), so balancing spreads over all of them; 0 otherwise.",
    },
    MetricDoc {
        name: LB_PANIC_REQUESTS_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream"],
        meaning: "Requests balanced in panic.",
    },
    MetricDoc {
        name: LOCALITY_REQUESTS_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream", "zone"],
        meaning: "Requests that locality-aware balancing (`load_balancing.locality: prefer_local`) sent to `zone` (`unknown`: endpoints without a zone); the local zone's against the others' is the spill-over. *Appears after an upstream's endpoint set is built with `prefer_local` (at 0).*",
    },
    MetricDoc {
        name: CONSUL_FAILOVER_DATACENTER,
        kind: Kind::Gauge,
        labels: &["upstream", "datacenter"],
        meaning: "1 for the datacenter whose instances a Consul-discovered upstream with `discovery.consul.failover` uses, 0 for its others (`local` when the discovery names no datacenter). *Appears after the first answer of such a watch.*",
    },
    MetricDoc {
        name: FALLBACKS_TOTAL,
        kind: Kind::Counter,
        labels: &["upstream", "trigger"],
        meaning: "Requests answered by the upstream's or route's `fallback` (static response or fallback backend), by `trigger`: `circuit_open`, `no_healthy_endpoints`, `rate_limited`. *Appears after the first fallback.*",
    },
    MetricDoc {
        name: spans::SPANS_EXPORTED_TOTAL,
        kind: Kind::Counter,
        labels: &[],
        meaning: "Spans the OTLP collector accepted (a 2xx; over gRPC, `grpc-status` 0) (only with `tracing.otlp`).",
    },
    MetricDoc {
        name: spans::SPANS_DROPPED_TOTAL,
        kind: Kind::Counter,
        labels: &["reason"],
        meaning: "Spans not exported: `queue_full` (the bounded queue was full: collector down or slow), `export_failed` (the batch's export failed, timed out, or got a non-2xx or a non-zero `grpc-status`) (only with `tracing.otlp`).",
    },
    MetricDoc {
        name: TLS_HANDSHAKE_ERRORS_TOTAL,
        kind: Kind::Counter,
        labels: &["direction", "upstream"],
        meaning: "TLS handshakes that failed or timed out: inbound (`upstream` = `service.name`: no or untrusted client certificate, plaintext client, `tls.handshake_timeout`) and outbound (untrusted server, wrong identity; with `upstreams[].tls.mode: simple` also a certificate not valid for `server_name` or expired, a client certificate refused). Registered at start, only with `tls` or an upstream originating TLS (outbound: for upstreams originating TLS).",
    },
    MetricDoc {
        name: TLS_CERTIFICATE_UPDATES_TOTAL,
        kind: Kind::Counter,
        labels: &["result"],
        meaning: "TLS material installed (`ok`: at start, after a file change or a new Consul leaf/roots; the files of an `upstreams[].tls.mode: simple` upstream after a change, not at start) or rejected (`error`: unreadable file, key not matching the certificate, bad CA). Only with `tls` or a `mode: simple` upstream.",
    },
    MetricDoc {
        name: AUTHZ_DENIED_TOTAL,
        kind: Kind::Counter,
        labels: &["direction", "upstream"],
        meaning: "Inbound requests (403) or TCP connections (closed) refused by `tls.authorization` (Consul intentions included) or by `inbound.authorization`; `upstream` = `service.name`. Registered at start, only with `tls` or `inbound.authorization`.",
    },
    MetricDoc {
        name: JWT_VALIDATIONS_TOTAL,
        kind: Kind::Counter,
        labels: &["provider", "result"],
        meaning: "Tokens checked by `inbound.jwt`, by provider and `result`: `ok`, or why one was refused with 401 (`malformed`, `duplicate`, `algorithm`, `unknown_key`, `bad_signature`, `expired`, `not_yet_valid`, `issued_in_future`, `issuer`, `audience`); `missing` (a request without a token where one is required) has `provider=\"\"`. Registered at start, only with `inbound.jwt`.",
    },
    MetricDoc {
        name: JWKS_FETCHES_TOTAL,
        kind: Kind::Counter,
        labels: &["provider", "result"],
        meaning: "Loads of a provider's JWKS (`jwks.url` or `jwks.file`): at start, every `refresh`, early for an unknown `kid`; `ok`, or `error` (unreachable, HTTP status other than 200, not a JWKS), after which the last good keys stay in use. Only with `inbound.jwt` and JWKS providers.",
    },
    MetricDoc {
        name: process::RESIDENT_MEMORY,
        kind: Kind::Gauge,
        labels: &[],
        meaning: "Resident memory (`VmRSS` of `/proc/self/status`). Linux only.",
    },
    MetricDoc {
        name: process::OPEN_FDS,
        kind: Kind::Gauge,
        labels: &[],
        meaning: "Open file descriptors (entries of `/proc/self/fd`). Linux only.",
    },
    MetricDoc {
        name: process::CPU_SECONDS,
        kind: Kind::Counter,
        labels: &[],
        meaning: "User + system CPU time (`/proc/self/stat`). Linux only.",
    },
    MetricDoc {
        name: process::START_TIME,
        kind: Kind::Gauge,
        labels: &[],
        meaning: "Process start, seconds since the Unix epoch (`/proc/self/stat` + boot time). Linux only.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_metrics_table_is_the_catalogue() {
        let doc = include_str!("../../docs/metrics.md");
        let start = doc
            .find("| name | type |")
            .expect("the table in docs/metrics.md");
        let end = doc[start..]
            .find("\n\n")
            .map_or(doc.len(), |len| start + len + 1);
        let table = markdown_table();
        assert!(
            doc[start..end] == table,
            "docs/metrics.md's table differs from src/telemetry/catalogue.rs; the table for it:\n{table}"
        );
    }

    #[test]
    fn every_metric_has_a_unique_name_a_single_line_help_and_total_iff_counter() {
        let mut names = std::collections::BTreeSet::new();
        for metric in CATALOGUE {
            assert!(names.insert(metric.name), "{} twice", metric.name);
            let help = metric.help();
            assert!(!help.is_empty() && !help.contains('\n') && !help.contains('*'));
            // OpenMetrics names a counter's family without `_total`.
            assert_eq!(
                metric.kind == Kind::Counter,
                metric.name.ends_with("_total"),
                "{}",
                metric.name
            );
        }
    }
}
