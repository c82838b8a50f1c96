//! Envoy's healthy panic threshold: while fewer than `percent` % of an
//! upstream's endpoints are healthy (passing their health checks and not
//! ejected), the balancer ignores health and spreads requests over all of
//! them, so that the few healthy ones are not overloaded into failing too.
//! Connect backoff still applies. Entering and leaving panic is logged;
//! requests balanced in panic are counted, and a gauge shows the mode.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use ::metrics::{Counter, Gauge};

use crate::telemetry::metrics;

/// The panic mode of one upstream, shared by its successive balancers.
pub struct PanicMode {
    percent: u32,
    upstream: String,
    active: AtomicBool,
    requests: Counter,
    gauge: Gauge,
}

impl PanicMode {
    /// Panic below `percent` % healthy endpoints (0: never).
    pub fn new(percent: u32, upstream: &str) -> Self {
        let (requests, gauge) = metrics::panic_handles(upstream);
        Self {
            percent,
            upstream: upstream.to_owned(),
            active: AtomicBool::new(false),
            requests,
            gauge,
        }
    }

    /// Decides for one pick whether `healthy` of `total` endpoints call for
    /// panic, noting a change of mode and counting the request when so.
    pub(super) fn judge(&self, healthy: usize, total: usize) -> bool {
        let panic = self.percent > 0 && healthy * 100 < self.percent as usize * total;
        if self.active.load(Relaxed) != panic && self.active.swap(panic, Relaxed) != panic {
            self.gauge.set(if panic { 1.0 } else { 0.0 });
            if panic {
                tracing::warn!(upstream = %self.upstream, healthy, total, threshold_percent = self.percent, "too few healthy endpoints: balancing over all of them (panic)");
            } else {
                tracing::info!(upstream = %self.upstream, healthy, total, "enough healthy endpoints again: panic over");
            }
        }
        if panic {
            self.requests.increment(1);
        }
        panic
    }

    /// True when the threshold can never be crossed (it is 0).
    pub(super) fn is_off(&self) -> bool {
        self.percent == 0
    }
}
