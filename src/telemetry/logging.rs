//! Process logs through tracing-subscriber: JSON lines (default, see
//! `json_lines`) or text, to stderr. The access log is the `remora::access`
//! target; it is enabled or off independently of the log level, so
//! `level: warn` can keep access logs.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingConfig};
use crate::telemetry::access_log::TARGET;
use crate::telemetry::json_lines::JsonLines;

/// Installs the global subscriber. Fails if the level is not a valid filter.
pub fn init(config: &LoggingConfig, service: &str) -> anyhow::Result<()> {
    let access = if config.access_log { "info" } else { "off" };
    let filter = EnvFilter::try_new(format!("{},{TARGET}={access}", config.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match config.format {
        LogFormat::Json => builder.event_format(JsonLines::new(service)).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}
