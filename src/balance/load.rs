//! Per-endpoint load state: in-flight count, peak-EWMA latency and
//! connect-failure backoff. Everything is atomics; nothing here locks.
//!
//! # Peak EWMA
//!
//! This is the load metric of Finagle's `PeakEwma` balancer
//! (`com.twitter.finagle.loadbalancer.PeakEwma`) as ported to
//! `tower::load::PeakEwma`, which linkerd2-proxy uses:
//!
//! * **cost** = `ewma_rtt × (in_flight + 1)`: a fast endpoint that is already
//!   busy looks as expensive as an idle slow one.
//! * **Observation** of a round-trip time `rtt`, `elapsed` after the previous
//!   update: if `rtt` is above the current estimate the estimate *jumps* to it
//!   (peak sensitivity: a latency spike is reacted to at once); otherwise it
//!   decays toward it, `ewma = ewma·w + rtt·(1−w)` with `w = exp(−elapsed/τ)`,
//!   τ = [`DECAY`] (10 s). Recovery is slow, degradation is instant.
//! * **Reading** the estimate (for [`EndpointLoad::cost`] and
//!   [`EndpointLoad::ewma`]) first decays it toward zero for the time since
//!   the last update, exactly as tower's `PeakEwma::load` (`decay()`) and
//!   Finagle's `rate()` (`observe(0.0)`) do. Without this, an endpoint that
//!   once spiked would never win a comparison again and would never be probed
//!   to learn that it recovered. As in tower, a non-peak observation that
//!   arrives just after a read carries little weight (its `elapsed` is small),
//!   so under heavy traffic the estimate behaves like a decaying peak.
//! * Before any observation the estimate is [`DEFAULT_RTT`] (30 ms, tower's and
//!   linkerd's default).
//!
//! A response head is observed with [`InFlight::observe_response`]. A request
//! whose guard drops without one (failed, timed out, cancelled) records the
//! time it was in flight, as tower's `PeakEwma` does; otherwise an endpoint
//! that swallows requests would never look slow.
//!
//! # Backoff
//!
//! [`EndpointLoad::mark_unreachable`] (connection refused, connect timeout)
//! takes the endpoint out of rotation for `base × 2^(failures−1)`, capped at
//! [`MAX_BACKOFF`] (5 s); the proxy passes [`DEFAULT_BACKOFF`] (250 ms) as the
//! base, so successive delays are 250 ms, 500 ms, 1 s, 2 s, 4 s, 5 s, 5 s…
//! When the delay expires the endpoint is eligible again (half-open): the next
//! failure doubles the delay, a successful connect
//! ([`EndpointLoad::mark_reachable`]) resets it. A failure reported while the
//! endpoint is already backing off (a connect that was started before the
//! first failure was noticed) does not escalate, so a burst of concurrent
//! failed connects counts once. Every policy skips endpoints in backoff unless
//! *all* of them are in backoff, in which case the policy picks as if none
//! were, so that a request is still tried (see `candidates.rs`).
//!
//! ## One probe per expired backoff
//!
//! Under concurrent traffic many requests are balanced in the time one
//! connect takes to fail, and a dead endpoint tends to win their
//! comparisons (nothing in flight, fast refusals). If the endpoint simply
//! became available when its backoff expired, every one of those requests
//! would try it, and a dead endpoint would cost one failed connect per
//! concurrent request instead of one per backoff window. So when a balancer
//! has *chosen* an endpoint whose backoff has expired, it must
//! [claim the probe](EndpointLoad::claim_probe) before sending to it:
//!
//! 1. The claim compare-and-swaps a second deadline, the *probe deadline*,
//!    from a past instant to `now + probe window` (the upstream's connect
//!    timeout). Exactly one of the racing requests wins; the others see the
//!    endpoint unavailable, as if still backing off, and pick again.
//! 2. The winner's connect decides: success (a connection in hand, before
//!    any answer: a recovering endpoint that is slow to answer is back at
//!    once, not one request per probe window) clears the backoff and the probe
//!    deadline ([`mark_reachable`](EndpointLoad::mark_reachable)); failure
//!    finds the backoff expired, so it escalates it as usual
//!    ([`mark_unreachable`](EndpointLoad::mark_unreachable)) and clears the
//!    probe deadline.
//! 3. If the outcome is not known within the probe window (the request was
//!    cancelled while connecting, or a TLS handshake outlasted the window),
//!    the claim lapses and the next pick may probe again.
//!
//! [`is_available`](EndpointLoad::is_available) only reads: balancers call it
//! to filter candidates, the admin API to show state. Only the pick of one
//! endpoint claims, and an endpoint that never failed needs no claim (one
//! atomic read).
//!
//! Over 500 lines: its tests (the load state itself is about 370).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock;

/// Estimate used before an endpoint has completed any request.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Time constant τ of the exponential decay.
const DECAY: Duration = Duration::from_secs(10);
/// Base backoff after the first connect failure; pass it to
/// [`EndpointLoad::mark_unreachable`] unless configured otherwise.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(250);
/// Upper bound of the exponential backoff (unless the base itself is larger).
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A read less than this long after the last update computes the decayed
/// estimate without storing it, to keep hot-path reads from writing.
const STORE_GRANULARITY_NS: u64 = 1_000_000;
/// The estimate never counts as less than 1 ns in [`EndpointLoad::cost`], so
/// that once it has decayed to zero the in-flight count still orders endpoints
/// (Finagle adds a penalty for the same reason).
const MIN_ESTIMATE_NS: f64 = 1.0;

/// Load state of one endpoint. Cheap to read concurrently; cloning the
/// [`InFlight`] guards it hands out is one atomic increment.
#[derive(Debug)]
pub struct EndpointLoad {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    /// Origin of the nanosecond timestamps below.
    origin: Instant,
    in_flight: AtomicU32,
    /// Peak-EWMA estimate in nanoseconds, as `f64` bits.
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated (ns since `origin`). Only moves
    /// forward (`fetch_max`), so concurrent updaters each decay over a
    /// disjoint interval and the total decay is right.
    stamp_ns: AtomicU64,
    /// Consecutive connect failures since the last success.
    failures: AtomicU32,
    /// Unavailable until this instant (ns since `origin`); 0 = available.
    backoff_until_ns: AtomicU64,
    /// After the backoff expired, one request claimed the probe: the others
    /// treat the endpoint as unavailable until this instant (ns since
    /// `origin`) or until the probe's outcome clears it; 0 = no probe.
    probe_until_ns: AtomicU64,
    /// How long a probe claim holds at most (the connect timeout).
    probe_window: Duration,
}

impl EndpointLoad {
    /// Fresh state: nothing in flight, the default 30 ms estimate, available.
    /// `probe_window` bounds how long one probe after a backoff keeps the
    /// others away (see the module doc); pass the connect timeout.
    pub fn new(probe_window: Duration) -> Self {
        Self {
            state: Arc::new(State {
                origin: Instant::now(),
                in_flight: AtomicU32::new(0),
                ewma_ns: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
                stamp_ns: AtomicU64::new(0),
                failures: AtomicU32::new(0),
                backoff_until_ns: AtomicU64::new(0),
                probe_until_ns: AtomicU64::new(0),
                probe_window,
            }),
        }
    }

    /// A request is being sent to this endpoint: in-flight +1 until the guard
    /// is dropped or [observed](InFlight::observe_response). The guard is `'static`
    /// and `Send`, so it can travel with the response body.
    pub fn start(&self) -> InFlight {
        self.state.in_flight.fetch_add(1, Relaxed);
        InFlight {
            state: Arc::clone(&self.state),
            started: clock::now(),
            observed: false,
        }
    }

    /// Requests currently in flight.
    pub fn in_flight(&self) -> u32 {
        self.state.in_flight.load(Relaxed)
    }

    /// Current peak-EWMA round-trip estimate (decayed toward zero for the
    /// time since the last observation, see the module doc).
    pub fn ewma(&self) -> Duration {
        Duration::from_nanos(self.state.estimate_ns(Instant::now()) as u64)
    }

    /// `ewma × (in_flight + 1)`, in nanoseconds. Lower is better.
    pub fn cost(&self) -> f64 {
        self.cost_at(Instant::now())
    }

    /// [`cost`](Self::cost) with the clock already read by the caller.
    pub(crate) fn cost_at(&self, now: Instant) -> f64 {
        let estimate = self.state.estimate_ns(now).max(MIN_ESTIMATE_NS);
        estimate * (f64::from(self.in_flight()) + 1.0)
    }

    /// Connecting failed: take the endpoint out of rotation for
    /// `base × 2^(failures−1)`, capped at 5 s (or `base` if larger). Returns
    /// the delay in force. A failure while already backing off does not
    /// escalate (it returns the remaining delay).
    pub fn mark_unreachable(&self, now: Instant, base: Duration) -> Duration {
        let s = &self.state;
        let now_ns = s.nanos(now);
        let until = s.backoff_until_ns.load(Relaxed);
        if now_ns < until {
            return Duration::from_nanos(until - now_ns);
        }
        let failures = s.failures.fetch_add(1, Relaxed).saturating_add(1);
        // 2^16 × base is far beyond any sane cap; limiting the shift keeps the
        // multiplication from overflowing.
        let factor = 1u32 << (failures - 1).min(16);
        let delay = base.saturating_mul(factor).min(MAX_BACKOFF.max(base));
        let delay_ns = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        s.backoff_until_ns
            .fetch_max(now_ns.saturating_add(delay_ns), Relaxed);
        // The probe (if this was it) has its answer; the new backoff rules.
        s.probe_until_ns.store(0, Relaxed);
        delay
    }

    /// Connecting succeeded: clear the backoff, the probe claim and the
    /// failure count.
    pub fn mark_reachable(&self) {
        let s = &self.state;
        // Check first so that the common case (nothing to clear) stays a read.
        if s.failures.load(Relaxed) != 0 || s.backoff_until_ns.load(Relaxed) != 0 {
            s.failures.store(0, Relaxed);
            s.backoff_until_ns.store(0, Relaxed);
            s.probe_until_ns.store(0, Relaxed);
        }
    }

    /// False while the endpoint is backing off after connect failures, or
    /// while another request probes it after its backoff expired. Only reads.
    pub fn is_available(&self, now: Instant) -> bool {
        let s = &self.state;
        let backoff_until = s.backoff_until_ns.load(Relaxed);
        backoff_until == 0 || s.nanos(now) >= backoff_until.max(s.probe_until_ns.load(Relaxed))
    }

    /// Called by a balancer on the endpoint it chose, before a request is
    /// sent to it: true if the request may go. An endpoint that has not
    /// failed is always free (one atomic read). One whose backoff has expired
    /// is handed to exactly one caller, the probe, until the probe's outcome
    /// is known or the probe window passes; every other caller gets false
    /// and must choose again (see the module doc).
    pub fn claim_probe(&self, now: Instant) -> bool {
        let s = &self.state;
        let backoff_until = s.backoff_until_ns.load(Relaxed);
        if backoff_until == 0 {
            return true;
        }
        let now_ns = s.nanos(now);
        let probe_until = s.probe_until_ns.load(Relaxed);
        if now_ns < backoff_until.max(probe_until) {
            return false;
        }
        let window_ns = u64::try_from(s.probe_window.as_nanos()).unwrap_or(u64::MAX);
        let claim = now_ns.saturating_add(window_ns);
        if (s.probe_until_ns)
            .compare_exchange(probe_until, claim, Relaxed, Relaxed)
            .is_err()
        {
            // Another request claimed the probe first.
            return false;
        }
        // A failure may have started a new backoff since it was read above:
        // then there is nothing to probe; give the claim back.
        if s.backoff_until_ns.load(Relaxed) > now_ns {
            let _ = (s.probe_until_ns).compare_exchange(claim, 0, Relaxed, Relaxed);
            return false;
        }
        true
    }
}

impl State {
    fn nanos(&self, t: Instant) -> u64 {
        // u64 nanoseconds last 584 years.
        u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Atomically applies `f(old_estimate_ns)` to the estimate.
    fn update_estimate(&self, f: impl Fn(f64) -> f64) -> f64 {
        let mut old = self.ewma_ns.load(Relaxed);
        loop {
            let new = f(f64::from_bits(old));
            match self
                .ewma_ns
                .compare_exchange_weak(old, new.to_bits(), Relaxed, Relaxed)
            {
                Ok(_) => return new,
                Err(actual) => old = actual,
            }
        }
    }

    /// Advances the update stamp to `now_ns`; returns the decay weight
    /// `exp(−elapsed/τ)` for the interval this caller owns.
    fn advance(&self, now_ns: u64) -> f64 {
        let prev = self.stamp_ns.fetch_max(now_ns, Relaxed);
        weight(now_ns.saturating_sub(prev))
    }

    /// The estimate decayed toward zero up to `now` (tower's `decay()`).
    fn estimate_ns(&self, now: Instant) -> f64 {
        let now_ns = self.nanos(now);
        let elapsed = now_ns.saturating_sub(self.stamp_ns.load(Relaxed));
        if elapsed < STORE_GRANULARITY_NS {
            return f64::from_bits(self.ewma_ns.load(Relaxed)) * weight(elapsed);
        }
        let w = self.advance(now_ns);
        self.update_estimate(|old| old * w)
    }

    fn observe(&self, now: Instant, rtt: Duration) {
        let rtt = rtt.as_nanos() as f64;
        let w = self.advance(self.nanos(now));
        self.update_estimate(|old| {
            if rtt > old {
                rtt
            } else {
                old * w + rtt * (1.0 - w)
            }
        });
    }
}

fn weight(elapsed_ns: u64) -> f64 {
    (-(elapsed_ns as f64) / DECAY.as_nanos() as f64).exp()
}

/// RAII guard for one request in flight on an endpoint.
#[derive(Debug)]
#[must_use = "dropping the guard immediately ends the request's in-flight accounting"]
pub struct InFlight {
    state: Arc<State>,
    started: Instant,
    observed: bool,
}

impl InFlight {
    /// The response head (or, for TCP, the connection) arrived now: record
    /// the time since [`EndpointLoad::start`] in the peak EWMA and return it
    /// (one clock read for both). The request stays in flight until the guard
    /// drops (for a proxy: when the response body ends), so streams count as
    /// load for their whole life.
    pub fn observe_response(&mut self) -> Duration {
        let now = clock::now();
        let rtt = now.saturating_duration_since(self.started);
        self.observe_at(now, rtt);
        rtt
    }

    /// Records a round trip of `rtt` ending now (tests choose the round trip).
    #[cfg(test)]
    pub fn observe_rtt(&mut self, rtt: Duration) {
        self.observe_at(Instant::now(), rtt);
    }

    fn observe_at(&mut self, now: Instant, rtt: Duration) {
        self.observed = true;
        self.state.observe(now, rtt);
    }
}

impl Drop for InFlight {
    /// A request that ends without an observed response (it failed, timed
    /// out or was cancelled) records the time it was in flight, as tower's
    /// `PeakEwma` does: an endpoint that swallows requests then looks as slow
    /// as it is, instead of keeping its last good estimate.
    fn drop(&mut self) {
        if !self.observed {
            let now = Instant::now();
            self.state
                .observe(now, now.saturating_duration_since(self.started));
        }
        self.state.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE_WINDOW: Duration = Duration::from_secs(1);

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.01
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_counts_and_drop_without_completion() {
        let load = EndpointLoad::new(PROBE_WINDOW);
        let a = load.start();
        let mut b = load.start();
        assert_eq!(load.in_flight(), 2);
        b.observe_rtt(Duration::from_millis(80));
        assert!(close(ms(load.ewma()), 80.0));
        drop(b);
        assert_eq!(load.in_flight(), 1);
        // Dropped without a response after 500 ms (failed, timed out or
        // cancelled): the time it was in flight counts, as a peak.
        tokio::time::advance(Duration::from_millis(500)).await;
        drop(a);
        assert_eq!(load.in_flight(), 0);
        assert!(close(ms(load.ewma()), 500.0));
    }

    #[tokio::test(start_paused = true)]
    async fn default_rtt_and_cost() {
        let load = EndpointLoad::new(PROBE_WINDOW);
        assert!(close(ms(load.ewma()), 30.0));
        let _g = (load.start(), load.start());
        // 30 ms × (2 + 1)
        assert!((load.cost() - 90e6).abs() < 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn peak_jumps_immediately() {
        let load = EndpointLoad::new(PROBE_WINDOW);
        tokio::time::advance(Duration::from_secs(1)).await;
        load.start().observe_rtt(Duration::from_millis(500));
        assert!(close(ms(load.ewma()), 500.0));
    }

    #[tokio::test(start_paused = true)]
    async fn lower_observation_decays_with_elapsed_time() {
        let load = EndpointLoad::new(PROBE_WINDOW);
        load.start().observe_rtt(Duration::from_millis(100));
        assert!(close(ms(load.ewma()), 100.0));

        // 5 s later a 10 ms observation: w = e^-0.5.
        tokio::time::advance(Duration::from_secs(5)).await;
        load.start().observe_rtt(Duration::from_millis(10));
        let w = (-0.5f64).exp();
        let expected = 100.0 * w + 10.0 * (1.0 - w); // 64.59 ms
        assert!(close(ms(load.ewma()), expected), "{:?}", load.ewma());

        // Another 10 ms observation 30 s later lands much closer to 10 ms.
        tokio::time::advance(Duration::from_secs(30)).await;
        load.start().observe_rtt(Duration::from_millis(10));
        let w = (-3.0f64).exp();
        let expected = expected * w + 10.0 * (1.0 - w);
        assert!(close(ms(load.ewma()), expected), "{:?}", load.ewma());
        assert!(ms(load.ewma()) < 13.0);

        // Back-to-back observations carry no weight (elapsed = 0) unless peaks.
        load.start().observe_rtt(Duration::from_millis(1));
        assert!(close(ms(load.ewma()), expected));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_estimate_decays_toward_zero_on_read() {
        let load = EndpointLoad::new(PROBE_WINDOW);
        load.start().observe_rtt(Duration::from_millis(100));
        tokio::time::advance(Duration::from_secs(10)).await;
        // e^-1 × 100 ms
        assert!(close(ms(load.ewma()), 100.0 * (-1.0f64).exp()));
        // Reading again decays further, not twice over the same interval.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(close(ms(load.ewma()), 100.0 * (-2.0f64).exp()));
        // Decayed to zero, in-flight still orders endpoints.
        tokio::time::advance(Duration::from_secs(100_000)).await;
        let idle = load.cost();
        let _g = load.start();
        assert!(load.cost() > idle);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_caps_and_resets() {
        let load = EndpointLoad::new(PROBE_WINDOW);
        let expected_ms = [250, 500, 1000, 2000, 4000, 5000, 5000];
        for want in expected_ms {
            let now = Instant::now();
            assert!(load.is_available(now));
            let delay = load.mark_unreachable(now, DEFAULT_BACKOFF);
            assert_eq!(delay, Duration::from_millis(want));
            assert!(!load.is_available(now));
            // A concurrent failure during the backoff does not escalate.
            assert_eq!(load.mark_unreachable(now, DEFAULT_BACKOFF), delay);
            tokio::time::advance(delay - Duration::from_millis(1)).await;
            assert!(!load.is_available(Instant::now()));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(load.is_available(Instant::now()));
        load.mark_reachable();
        let now = Instant::now();
        assert_eq!(load.mark_unreachable(now, DEFAULT_BACKOFF), DEFAULT_BACKOFF);
        load.mark_reachable();
        assert!(load.is_available(now));
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_endpoint_needs_no_claim() {
        let load = EndpointLoad::new(PROBE_WINDOW);
        let now = Instant::now();
        assert!((0..10).all(|_| load.claim_probe(now)));
        assert!(load.is_available(now));
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_per_expired_backoff() {
        let load = EndpointLoad::new(PROBE_WINDOW);
        load.mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
        assert!(!load.claim_probe(Instant::now()));
        tokio::time::advance(DEFAULT_BACKOFF).await;
        let now = Instant::now();
        // Reading availability (filters, admin) claims nothing.
        assert!((0..10).all(|_| load.is_available(now)));
        // The first claim wins; the others see the endpoint unavailable.
        assert!(load.claim_probe(now));
        assert!(!load.claim_probe(now));
        assert!(!load.is_available(now));
        // The probe fails: the backoff escalates (it had expired), and the
        // next expiry allows one probe again.
        assert_eq!(
            load.mark_unreachable(now, DEFAULT_BACKOFF),
            2 * DEFAULT_BACKOFF
        );
        tokio::time::advance(2 * DEFAULT_BACKOFF - Duration::from_millis(1)).await;
        assert!(!load.claim_probe(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(load.claim_probe(Instant::now()));
        assert!(!load.claim_probe(Instant::now()));
        // The probe connects: available to everyone.
        load.mark_reachable();
        let now = Instant::now();
        assert!(load.is_available(now));
        assert!((0..10).all(|_| load.claim_probe(now)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_without_outcome_lapses_after_the_window() {
        let load = EndpointLoad::new(PROBE_WINDOW);
        load.mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
        tokio::time::advance(DEFAULT_BACKOFF).await;
        assert!(load.claim_probe(Instant::now()));
        tokio::time::advance(PROBE_WINDOW - Duration::from_millis(1)).await;
        assert!(!load.is_available(Instant::now()));
        assert!(!load.claim_probe(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(load.is_available(Instant::now()));
        assert!(load.claim_probe(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_straggler_failure_during_the_probe_ends_it_once() {
        let load = EndpointLoad::new(PROBE_WINDOW);
        load.mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
        tokio::time::advance(DEFAULT_BACKOFF).await;
        let now = Instant::now();
        assert!(load.claim_probe(now));
        // A connect started earlier fails first: it escalates; the probe's own
        // failure right after does not escalate again.
        assert_eq!(
            load.mark_unreachable(now, DEFAULT_BACKOFF),
            2 * DEFAULT_BACKOFF
        );
        assert_eq!(
            load.mark_unreachable(now, DEFAULT_BACKOFF),
            2 * DEFAULT_BACKOFF
        );
        // The new backoff, not the probe window, decides when to probe next.
        tokio::time::advance(2 * DEFAULT_BACKOFF).await;
        assert!(load.claim_probe(Instant::now()));
    }

    #[test]
    fn guard_is_send_and_static() {
        fn assert_send_static<T: Send + Sync + 'static>() {}
        assert_send_static::<InFlight>();
        assert_send_static::<EndpointLoad>();
    }
}
