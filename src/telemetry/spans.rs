//! Span export over OTLP — HTTP/protobuf or gRPC (`tracing.otlp`,
//! `otlp_transport`).
//!
//! The data path hands each finished, sampled request to [`SpanExporter::submit`],
//! which only does a `try_send` on a bounded queue: a full queue drops the
//! span and counts it (`remora_spans_dropped_total{reason="queue_full"}`), so
//! no request ever waits for export. One tokio task drains the queue into
//! batches (at most `batch_size` spans, or whatever came within
//! `flush_interval` of the batch's first span), encodes them as an
//! `ExportTraceServiceRequest` and sends it to the collector
//! (`otlp_transport`: http or https, headers, gzip, a kept connection). A failed or timed-out
//! export drops the batch (`reason="export_failed"`); a 2xx counts it in
//! `remora_spans_exported_total`. There is no retry of failed batches. At
//! shutdown, after the drain, [`SpanFlush::flush`] has the task export what
//! is queued at once (the spans of the last `flush_interval`, the drained
//! requests' among them), for at most [`FINAL_FLUSH_TIMEOUT`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use metrics::{Counter, counter};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::OtlpConfig;
use crate::context::{Direction, TraceContext};
use crate::error::ErrorKind;
use crate::telemetry::otlp_transport::{Settings, Transport};

pub const SPANS_EXPORTED_TOTAL: &str = "remora_spans_exported_total";
pub const SPANS_DROPPED_TOTAL: &str = "remora_spans_dropped_total";

/// Longest one export request may take before its batch is dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest the final flush at shutdown may hold the exit up (a collector
/// that does not answer).
pub const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// The most bytes of a request's path or host a span keeps (Envoy's
/// `max_path_tag_length` default): a queue of spans held while the
/// collector is slow stays small whatever paths the callers send.
pub const MAX_TEXT_ATTRIBUTE: usize = 256;

/// `value`, cut to [`MAX_TEXT_ATTRIBUTE`] bytes at a character boundary.
pub fn attribute_text(value: &str) -> String {
    let mut end = value.len().min(MAX_TEXT_ATTRIBUTE);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

/// One finished request, as the data path saw it; turned into an OTLP span
/// by the export task, off the request path.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub context: TraceContext,
    /// Inbound → SERVER span, outbound → CLIENT span.
    pub direction: Direction,
    pub start: SystemTime,
    pub duration: Duration,
    pub method: Method,
    /// The request's path, at most [`MAX_TEXT_ATTRIBUTE`] bytes of it.
    pub path: String,
    /// Host of the request (authority or `Host`, port removed), at most
    /// [`MAX_TEXT_ATTRIBUTE`] bytes of it.
    pub host: Option<String>,
    /// Who sent the request to remora.
    pub client: Option<SocketAddr>,
    pub status: u16,
    /// Set when remora answered itself (`x-remora-error`).
    pub error: Option<ErrorKind>,
    pub upstream: String,
    /// The route taken, on an upstream with `routes:`.
    pub route: Option<String>,
    /// The endpoint that answered, when one did.
    pub endpoint: Option<SocketAddr>,
    /// Retries the request took (0 without a retry policy).
    pub retries: u32,
}

/// The data path's handle on the export queue.
#[derive(Clone)]
pub struct SpanExporter {
    queue: mpsc::Sender<SpanRecord>,
    queue_full: Counter,
}

/// What flushes the export queue at shutdown.
pub struct SpanFlush {
    finish: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl SpanFlush {
    /// Exports what is queued now and stops the export task, waiting at
    /// most [`FINAL_FLUSH_TIMEOUT`].
    pub async fn flush(self) {
        let _ = self.finish.send(());
        if tokio::time::timeout(FINAL_FLUSH_TIMEOUT, self.task)
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?FINAL_FLUSH_TIMEOUT, "the last spans were not all exported at shutdown");
        }
    }
}

impl SpanExporter {
    /// Spawns the export task on the current tokio runtime.
    pub fn start(config: &OtlpConfig, service_name: &str) -> anyhow::Result<(Self, SpanFlush)> {
        let settings = Settings::resolve(config, |name| std::env::var(name).ok())?;
        let transport = Transport::new(&settings, EXPORT_TIMEOUT)?;
        let (queue, receiver) = mpsc::channel(config.max_queue);
        let queue_full = counter!(SPANS_DROPPED_TOTAL, "reason" => "queue_full");
        let (finish, finishing) = oneshot::channel();
        let task = ExportTask {
            receiver,
            finishing: Some(finishing),
            transport,
            endpoint: settings.endpoint,
            resource: resource(service_name),
            batch_size: config.batch_size,
            flush_interval: config.flush_interval,
            exported: counter!(SPANS_EXPORTED_TOTAL),
            export_failed: counter!(SPANS_DROPPED_TOTAL, "reason" => "export_failed"),
        };
        let task = tokio::spawn(task.run());
        Ok((Self { queue, queue_full }, SpanFlush { finish, task }))
    }

    /// Queues a span for export, or drops and counts it when the queue is full.
    pub fn submit(&self, span: SpanRecord) {
        if self.queue.try_send(span).is_err() {
            self.queue_full.increment(1);
        }
    }
}

/// Where batches go: the address to connect to and the request target.
struct ExportTask {
    receiver: mpsc::Receiver<SpanRecord>,
    /// Fires at shutdown; `None` once it has.
    finishing: Option<oneshot::Receiver<()>>,
    transport: Transport,
    endpoint: String,
    resource: Resource,
    batch_size: usize,
    flush_interval: Duration,
    exported: Counter,
    export_failed: Counter,
}

impl ExportTask {
    /// Batches and exports until every [`SpanExporter`] is gone, or the
    /// flush at shutdown has exported what was queued.
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut failing = false;
        while let Some(first) = self.next(None).await {
            batch.push(first);
            let deadline = Instant::now() + self.flush_interval;
            while batch.len() < self.batch_size {
                match self.next(Some(deadline)).await {
                    Some(span) => batch.push(span),
                    None => break,
                }
            }
            let count = batch.len() as u64;
            let body = encode(&self.resource, batch.drain(..));
            let result = tokio::time::timeout(EXPORT_TIMEOUT, self.transport.export(body))
                .await
                .unwrap_or_else(|_| Err("timed out".to_owned()));
            match result {
                Ok(()) => {
                    self.exported.increment(count);
                    if failing {
                        tracing::info!("span export recovered");
                        failing = false;
                    }
                }
                Err(error) => {
                    self.export_failed.increment(count);
                    // Logged once per outage, not once per batch.
                    if !failing {
                        tracing::warn!(%error, endpoint = %self.endpoint, "span export failing; dropping spans");
                        failing = true;
                    }
                }
            }
        }
    }
}

impl ExportTask {
    /// The next span, or `None` past `deadline` or once the queue is closed
    /// and empty. The signal to finish closes the queue: what is in it is
    /// still handed out, and no wait is left for the deadline.
    async fn next(&mut self, deadline: Option<Instant>) -> Option<SpanRecord> {
        let until = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until);
        loop {
            let finishing = async {
                match &mut self.finishing {
                    Some(finishing) => finishing.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                span = self.receiver.recv() => return span,
                () = &mut until => return None,
                _ = finishing => {
                    self.finishing = None;
                    self.receiver.close();
                }
            }
        }
    }
}

/// The resource every batch names: this service.
fn resource(service_name: &str) -> Resource {
    Resource {
        attributes: vec![string("service.name", service_name)],
        ..Default::default()
    }
}

/// One `ExportTraceServiceRequest` holding `spans`.
fn encode(resource: &Resource, spans: impl Iterator<Item = SpanRecord>) -> Vec<u8> {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "remora".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: spans.map(to_span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    request.encode_to_vec()
}

/// OTLP span with the HTTP semantic-convention attributes.
fn to_span(record: SpanRecord) -> Span {
    let context = record.context;
    let (kind, peer) = match record.direction {
        Direction::Inbound => (span::SpanKind::Server, record.client.map(|a| a.ip())),
        Direction::Outbound => (span::SpanKind::Client, record.endpoint.map(|a| a.ip())),
    };
    let mut attributes = vec![
        string("http.request.method", record.method.as_str()),
        string("url.path", &record.path),
        int("http.response.status_code", i64::from(record.status)),
        string("remora.upstream", &record.upstream),
        int("remora.retry_count", i64::from(record.retries)),
    ];
    let server = record
        .host
        .or_else(|| record.endpoint.map(|a| a.ip().to_string()));
    if let Some(server) = server {
        attributes.push(string("server.address", &server));
    }
    if let Some(peer) = peer {
        attributes.push(string("network.peer.address", &ip(peer)));
    }
    if let Some(endpoint) = record.endpoint {
        attributes.push(string("remora.endpoint", &endpoint.to_string()));
    }
    if let Some(route) = &record.route {
        attributes.push(string("remora.route", route));
    }
    if let Some(error) = record.error {
        attributes.push(string("error.type", error.as_str()));
    }
    // Semantic conventions: 5xx is an error on both sides, 4xx only on the client.
    let failed = record.error.is_some()
        || record.status >= 500
        || (kind == span::SpanKind::Client && record.status >= 400);
    let start = nanos(record.start);
    Span {
        trace_id: context.trace_id.to_be_bytes().to_vec(),
        span_id: context.span_id.to_be_bytes().to_vec(),
        parent_span_id: context
            .parent_id
            .map(|id| id.to_be_bytes().to_vec())
            .unwrap_or_default(),
        flags: u32::from(context.sampled),
        name: record.method.as_str().to_owned(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start
            .saturating_add(u64::try_from(record.duration.as_nanos()).unwrap_or(u64::MAX)),
        attributes,
        status: failed.then(|| Status {
            message: String::new(),
            code: status::StatusCode::Error as i32,
        }),
        ..Default::default()
    }
}

fn ip(addr: IpAddr) -> String {
    addr.to_canonical().to_string()
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_and_hosts_are_cut_at_a_character_boundary() {
        assert_eq!(attribute_text("/short"), "/short");
        let long = "/".to_owned() + &"a".repeat(50_000);
        assert_eq!(attribute_text(&long).len(), MAX_TEXT_ATTRIBUTE);
        // A two-byte character across the limit is left out whole.
        let straddling = "a".repeat(MAX_TEXT_ATTRIBUTE - 1) + "é";
        assert_eq!(
            attribute_text(&straddling),
            "a".repeat(MAX_TEXT_ATTRIBUTE - 1)
        );
    }

    #[test]
    fn span_ids_and_attributes() {
        let record = SpanRecord {
            context: TraceContext {
                trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
                parent_id: Some(0x00f067aa0ba902b7),
                span_id: 0x1122334455667788,
                sampled: true,
            },
            direction: Direction::Outbound,
            start: UNIX_EPOCH + Duration::from_secs(1),
            duration: Duration::from_millis(5),
            method: Method::GET,
            path: "/x".into(),
            host: Some("api".into()),
            client: None,
            status: 503,
            error: Some(ErrorKind::NoEndpoints),
            upstream: "api".into(),
            route: Some("canary".into()),
            endpoint: None,
            retries: 2,
        };
        let span = to_span(record);
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(span.span_id, 0x1122334455667788u64.to_be_bytes());
        assert_eq!(span.parent_span_id, 0x00f067aa0ba902b7u64.to_be_bytes());
        assert_eq!(span.kind, span::SpanKind::Client as i32);
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            5_000_000
        );
        let keys: Vec<_> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert!(keys.contains(&"error.type"), "{keys:?}");
        assert!(keys.contains(&"server.address"), "{keys:?}");
        assert!(keys.contains(&"remora.route"), "{keys:?}");
        let retries = span
            .attributes
            .iter()
            .find(|kv| kv.key == "remora.retry_count")
            .and_then(|kv| kv.value.as_ref()?.value.clone());
        assert_eq!(retries, Some(any_value::Value::IntValue(2)));
        assert_eq!(span.status.unwrap().code, status::StatusCode::Error as i32);
    }
}
