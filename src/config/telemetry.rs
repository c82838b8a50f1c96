//! The `logging:` and `tracing:` sections: log lines, access logs,
//! trace-context propagation and span export.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Secret;
use super::duration;

/// Trace-context propagation and span export (`tracing:`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Create an `x-request-id` (UUID v4) when a request has none.
    #[serde(default = "default_request_id")]
    pub request_id: bool,
    /// Header formats read and written, in order of precedence.
    #[serde(default = "default_propagation")]
    pub propagation: Vec<Propagation>,
    /// Span export over OTLP/HTTP; off when absent.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            request_id: default_request_id(),
            propagation: default_propagation(),
            otlp: None,
        }
    }
}

/// Span export (`tracing.otlp:`): OTLP/HTTP protobuf or OTLP/gRPC to a
/// collector. What the section leaves unset comes from the OpenTelemetry
/// exporter environment variables (`OTEL_EXPORTER_OTLP_*`), read at start.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector: for `http/protobuf` the URL batches are POSTed to
    /// (`http://` or `https://`), for `grpc` the server's `http(s)://host:port`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `http/protobuf` or `grpc`.
    #[serde(default)]
    pub protocol: Option<OtlpProtocol>,
    /// Request headers (e.g. an API key), each a `value` or a `value_file`
    /// whose content (trimmed) is the value; shown redacted.
    #[serde(default)]
    pub headers: Vec<OtlpHeader>,
    /// `gzip` or `none`.
    #[serde(default)]
    pub compression: Option<OtlpCompression>,
    /// PEM CA certificates an `https://` collector must chain to, instead of
    /// the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Share of new traces sampled, 0 to 1 (joined traces keep the caller's flag).
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Spans waiting for export at most; more are dropped and counted.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Spans per export request at most.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest a span waits for its batch to fill before it is sent.
    #[serde(default = "default_flush_interval", with = "duration")]
    pub flush_interval: Duration,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum OtlpProtocol {
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

/// Compression of export requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpCompression {
    Gzip,
    None,
}

/// One header sent with every export request.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpHeader {
    pub name: String,
    #[serde(default)]
    pub value: Option<Secret>,
    /// A file whose content (surrounding whitespace trimmed) is the value,
    /// read at start.
    #[serde(default)]
    pub value_file: Option<PathBuf>,
}

fn default_sample_ratio() -> f64 {
    1.0
}

fn default_max_queue() -> usize {
    2048
}

fn default_batch_size() -> usize {
    512
}

fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_request_id() -> bool {
    true
}

fn default_propagation() -> Vec<Propagation> {
    vec![Propagation::W3c]
}

/// A trace header format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    /// W3C Trace Context: `traceparent`, `tracestate`.
    W3c,
    /// Zipkin B3: read multi-header or single `b3`, written multi-header.
    B3,
}

/// Logs and access logs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// A level (`error` .. `trace`) or an EnvFilter directive list.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default = "default_access_log")]
    pub access_log: bool,
    /// Share of requests that get an access-log line (0–1).
    #[serde(default = "default_access_log_sample")]
    pub access_log_sample: f64,
}

fn default_access_log_sample() -> f64 {
    1.0
}

fn default_log_level() -> String {
    "info".to_owned()
}

fn default_access_log() -> bool {
    true
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: default_log_level(),
            format: LogFormat::default(),
            access_log: default_access_log(),
            access_log_sample: default_access_log_sample(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}
