//! The tokio runtime remora runs on. One worker (the default, as Linkerd's
//! proxy) is a current-thread runtime: no work stealing, fewer context
//! switches. More workers use the multi-thread scheduler.

use crate::config::RuntimeConfig;

pub fn build(config: &RuntimeConfig) -> std::io::Result<tokio::runtime::Runtime> {
    if config.worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .thread_name("remora-worker")
            .enable_all()
            .build()
    }
}
