//! Where the observe layer hands each completed request besides the metrics
//! and the access log: the OTLP span exporter (with `tracing.otlp`) and the
//! live tap. Both are fixed for the process.

use crate::telemetry::spans::SpanExporter;
use crate::telemetry::tap::Tap;

#[derive(Clone)]
pub struct RequestSinks {
    /// Where sampled spans go, when `tracing.otlp` is set.
    pub spans: Option<SpanExporter>,
    pub tap: Tap,
}
