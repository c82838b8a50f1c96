//! Checks on `runtime:`: worker threads between 1 and 1024 and a non-zero
//! drain timeout.

use super::Problems;
use crate::config::model::Config;

/// Most tokio worker threads accepted.
const MAX_WORKER_THREADS: usize = 1024;

pub(super) fn check_runtime(config: &Config, problems: &mut Problems) {
    let workers = config.runtime.worker_threads;
    if workers == 0 || workers > MAX_WORKER_THREADS {
        problems.add(
            "runtime.worker_threads",
            format!("must be between 1 and {MAX_WORKER_THREADS}, got {workers}"),
        );
    }
    problems.nonzero(
        "runtime.drain_timeout".to_owned(),
        config.runtime.drain_timeout,
    );
}
