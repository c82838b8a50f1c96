//! The `runtime:` section: process-level settings (worker threads, drain
//! timeout).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Process-level settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default = "default_worker_threads")]
    pub worker_threads: usize,
    #[serde(default = "default_drain_timeout", with = "duration")]
    pub drain_timeout: Duration,
}

fn default_worker_threads() -> usize {
    1
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            worker_threads: default_worker_threads(),
            drain_timeout: default_drain_timeout(),
        }
    }
}
