//! What remora tells operators: JSON logs, the access log, Prometheus
//! metrics and OTLP spans.

pub mod access_log;
pub mod catalogue;
pub mod exemplars;
pub mod json_lines;
pub mod logging;
pub mod metrics;
pub mod openmetrics;
pub mod otlp_transport;
pub mod process;
pub mod recorder;
pub mod sinks;
pub mod spans;
pub mod tap;
pub mod totals;
