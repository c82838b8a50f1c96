//! Outlier detection per endpoint (Envoy's consecutive-failure ejection):
//! an endpoint whose last `consecutive_failures` tries all failed is taken
//! out of balancing for `base_ejection` × (number of times it was ejected),
//! capped at `max_ejection`, and comes back by itself when that time is up.
//!
//! Never more than `max_ejection_percent` of an upstream's endpoints are
//! ejected at once (at least one may be, unless it is the only endpoint), so
//! a wide failure cannot empty the set; and if every endpoint is unavailable
//! anyway the balancer picks among all of them (see `balance::candidates`).
//! An endpoint that served well for `max_ejection` after returning starts
//! from a clean ejection count. Failures are the `failures` conditions (by
//! default those of the circuit breaker), judged per try in `forward`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock;
use crate::config::{Condition, OutlierDetection};
use crate::outcome::Outcome;
use crate::telemetry::metrics;

/// Outlier state of one endpoint (lock-free: read on every pick).
#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    /// Nanoseconds since [`origin`]; 0 = never ejected.
    ejected_until: AtomicU64,
}

impl OutlierState {
    /// True while the endpoint is ejected.
    pub fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Relaxed);
        until != 0 && nanos(now) < until
    }
}

/// What outlier detection needs of an endpoint (`endpoint` implements it).
pub trait Ejectable {
    /// The endpoint's address, for the log line of an ejection.
    fn addr(&self) -> SocketAddr;

    /// The endpoint's outlier state.
    fn outlier(&self) -> &OutlierState;
}

/// The outlier policy of one upstream.
pub struct OutlierDetector {
    upstream: String,
    config: OutlierDetection,
    failures: Vec<Condition>,
    /// Held while counting the ejected endpoints and ejecting one, so two
    /// endpoints failing at once on two threads cannot both pass the
    /// `max_ejection_percent` check. Only taken when an endpoint reaches its
    /// failure threshold, never on the request path otherwise.
    ejecting: Mutex<()>,
}

impl OutlierDetector {
    pub fn new(config: &OutlierDetection, upstream: &str) -> Self {
        Self {
            upstream: upstream.to_owned(),
            config: config.clone(),
            failures: config.failures.clone(),
            ejecting: Mutex::new(()),
        }
    }

    /// Counts one try's outcome on `endpoint`, ejecting it when it has
    /// failed too often in a row. `all` is the upstream's endpoint set.
    pub fn record<E: Ejectable>(&self, endpoint: &E, outcome: Outcome, all: &[Arc<E>]) {
        if outcome == Outcome::Refused {
            return;
        }
        let state = endpoint.outlier();
        let now = clock::now();
        if !outcome.matches_any(&self.failures) {
            state.consecutive_failures.store(0, Relaxed);
            let until = state.ejected_until.load(Relaxed);
            if until != 0 && nanos(now) > until + duration_nanos(self.config.max_ejection) {
                state.ejections.store(0, Relaxed);
            }
            return;
        }
        let failures = state.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if failures < self.config.consecutive_failures {
            return;
        }
        let _ejecting = self.ejecting.lock().unwrap_or_else(PoisonError::into_inner);
        if state.is_ejected(now) {
            return;
        }
        let ejected = all.iter().filter(|e| e.outlier().is_ejected(now)).count();
        if ejected >= self.max_ejected(all.len()) {
            return;
        }
        let ejections = state.ejections.fetch_add(1, Relaxed) + 1;
        let period = (self.config.base_ejection * ejections).min(self.config.max_ejection);
        state
            .ejected_until
            .store(nanos(now) + duration_nanos(period), Relaxed);
        state.consecutive_failures.store(0, Relaxed);
        metrics::outlier_ejection(&self.upstream);
        tracing::warn!(upstream = %self.upstream, endpoint = %endpoint.addr(), ?period, failures, "endpoint ejected");
    }

    /// How many of `total` endpoints may be ejected at once.
    fn max_ejected(&self, total: usize) -> usize {
        let by_percent = total * self.config.max_ejection_percent as usize / 100;
        by_percent.max(1).min(total.saturating_sub(1))
    }
}

/// A fixed point all ejection times are measured from.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(|| Instant::now() - Duration::from_secs(1))
}

fn nanos(now: Instant) -> u64 {
    duration_nanos(now.saturating_duration_since(origin()))
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint with nothing but what outlier detection looks at.
    struct Endpoint {
        addr: SocketAddr,
        outlier: OutlierState,
    }

    impl Ejectable for Endpoint {
        fn addr(&self) -> SocketAddr {
            self.addr
        }

        fn outlier(&self) -> &OutlierState {
            &self.outlier
        }
    }

    fn endpoints(n: u16) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                Arc::new(Endpoint {
                    addr: ([127, 0, 0, 1], 9000 + i).into(),
                    outlier: OutlierState::default(),
                })
            })
            .collect()
    }

    fn detector(percent: u32) -> OutlierDetector {
        OutlierDetector::new(
            &OutlierDetection {
                consecutive_failures: 3,
                base_ejection: Duration::from_secs(30),
                max_ejection: Duration::from_secs(75),
                max_ejection_percent: percent,
                failures: crate::config::default_failure_conditions(),
            },
            "test",
        )
    }

    const FAIL: Outcome = Outcome::ConnectFailure;
    const OK: Outcome = Outcome::Response {
        status: 200,
        grpc: None,
    };

    #[tokio::test(start_paused = true)]
    async fn ejects_after_consecutive_failures_for_growing_periods() {
        let all = endpoints(3);
        let detector = detector(50);
        let target: &Endpoint = &all[0];
        detector.record(target, FAIL, &all);
        detector.record(target, FAIL, &all);
        detector.record(target, OK, &all);
        detector.record(target, FAIL, &all);
        detector.record(target, FAIL, &all);
        assert!(!target.outlier.is_ejected(Instant::now()));
        detector.record(target, FAIL, &all);
        assert!(target.outlier.is_ejected(Instant::now()));

        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(
            !target.outlier.is_ejected(Instant::now()),
            "back after 30 s"
        );
        (0..3).for_each(|_| detector.record(target, FAIL, &all));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(
            target.outlier.is_ejected(Instant::now()),
            "second ejection: 60 s"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!target.outlier.is_ejected(Instant::now()));
        (0..3).for_each(|_| detector.record(target, FAIL, &all));
        tokio::time::advance(Duration::from_secs(74)).await;
        assert!(
            target.outlier.is_ejected(Instant::now()),
            "third: 90 s capped at 75 s"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!target.outlier.is_ejected(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_percentage_and_never_all() {
        let all = endpoints(4);
        let half = detector(50);
        for endpoint in &all {
            (0..3).for_each(|_| half.record(&**endpoint, FAIL, &all));
        }
        let now = Instant::now();
        assert_eq!(all.iter().filter(|e| e.outlier.is_ejected(now)).count(), 2);

        let single = endpoints(1);
        (0..10).for_each(|_| half.record(&*single[0], FAIL, &single));
        assert!(!single[0].outlier.is_ejected(now));

        let pair = endpoints(2);
        let strict = detector(0);
        (0..3).for_each(|_| strict.record(&*pair[0], FAIL, &pair));
        assert!(
            pair[0].outlier.is_ejected(now),
            "at least one may be ejected"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn remora_refusals_do_not_count() {
        let all = endpoints(2);
        let detector = detector(50);
        (0..5).for_each(|_| detector.record(&*all[0], Outcome::Refused, &all));
        assert!(!all[0].outlier.is_ejected(Instant::now()));
    }
}
