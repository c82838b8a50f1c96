//! The adaptive limit: TCP Vegas's delay-based congestion avoidance applied
//! to requests in flight, as Netflix's concurrency-limits library does it
//! (`VegasLimit` behind a `WindowedLimit`, github.com/Netflix/concurrency-limits;
//! L. Brakmo, L. Peterson, "TCP Vegas: End to End Congestion Avoidance on a
//! Global Internet", IEEE JSAC 1995), with the no-load latency measured the
//! way Envoy's adaptive concurrency filter measures its minRTT.
//!
//! **Samples.** Each answered request gives its round-trip time (to the
//! response head) and the requests in flight when it was admitted. They are
//! gathered in windows of at least [`WINDOW_SAMPLES`] samples and
//! [`WINDOW_TIME`] (or [`MAX_WINDOW_TIME`], whichever comes first with one
//! sample); a window yields its mean RTT, its most requests in flight, and
//! whether any request was *dropped* — the upstream timed out or answered
//! 503 / 429 / gRPC `RESOURCE_EXHAUSTED`.
//!
//! **The update**, once per window. `rtt_noload` is the latency of the idle
//! upstream. By Little's law the requests *queued* rather than worked on are
//!
//! ```text
//! queue = ceil(limit × (1 − rtt_noload / rtt))
//! ```
//!
//! and the limit moves to keep that queue small, with thresholds that grow
//! with the logarithm of the limit (Netflix's defaults; `log` is
//! `max(1, log10(limit))`):
//!
//! | window | new limit |
//! |---|---|
//! | a request dropped | limit − log |
//! | most in flight < limit / 2 | unchanged (the caller, not the upstream, limited the load) |
//! | queue ≤ log | limit + 6·log (far below capacity: grow fast) |
//! | queue < 3·log (α) | limit + log |
//! | queue > 6·log (β) | limit − log |
//! | otherwise | unchanged |
//!
//! always within `[min_limit, max_limit]`.
//!
//! **Measuring `rtt_noload`** (Envoy's minRTT calculation). At the start and
//! then every [`PROBE_INTERVAL`] (±10 % jitter), the limit drops to
//! `min_limit` until [`PROBE_SAMPLES`] requests admitted under it have
//! answered; their median RTT becomes `rtt_noload` and the limit returns to
//! its value before the probe. Requests over `min_limit` during a probe are
//! refused like any over the limit — the price of a fresh baseline, which
//! keeps a slower upstream (a new version, a bigger dataset) from being
//! judged by an old minimum, and a queue that never drains from inflating
//! it. Netflix's Vegas instead resets its minimum to any sample every
//! `30 × limit` samples, which ratchets the limit up under steady overload.
//!
//! Drops do not end a probe: while the upstream sheds or times out every
//! request the limit stays at `min_limit`, which is what a failing upstream
//! should get. This cannot block the limit once the upstream recovers: the
//! first [`PROBE_SAMPLES`] answers at `min_limit` end the probe. Counting the
//! failures' latencies instead would measure `rtt_noload` from fast 503s (far
//! below the latency of real work, so every later window would look queued),
//! and ending the probe on a timer would restore the pre-probe limit against
//! an upstream still failing.

use std::time::{Duration, Instant};

/// Answered samples per window at least.
pub const WINDOW_SAMPLES: u32 = 10;
/// A window lasts this long at least …
pub const WINDOW_TIME: Duration = Duration::from_millis(100);
/// … and at most this long (when it has a sample).
pub const MAX_WINDOW_TIME: Duration = Duration::from_secs(1);
/// Samples at `min_limit` that measure `rtt_noload`.
pub const PROBE_SAMPLES: usize = 20;
/// Time between `rtt_noload` measurements.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// The `adaptive_concurrency` settings the algorithm needs.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub initial: u32,
    pub min: u32,
    pub max: u32,
}

/// What one finished request tells the limit.
#[derive(Debug, Clone, Copy)]
pub enum Sample {
    /// Answered in `rtt`; `in_flight` requests were in flight, itself
    /// included, when it was admitted.
    Answered { rtt: Duration, in_flight: u32 },
    /// The upstream shed it or timed out: it is over capacity.
    Dropped,
}

/// The state of one adaptive limit.
#[derive(Debug)]
pub struct Vegas {
    bounds: Bounds,
    limit: f64,
    phase: Phase,
    window: Window,
}

#[derive(Debug)]
enum Phase {
    /// Measuring `rtt_noload` at `min_limit`; `resume` is the limit after.
    Probing { resume: f64, rtts: Vec<Duration> },
    Tracking {
        rtt_noload: Duration,
        next_probe: Instant,
    },
}

#[derive(Debug)]
struct Window {
    started: Instant,
    samples: u32,
    rtt_sum: Duration,
    max_in_flight: u32,
    dropped: bool,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            samples: 0,
            rtt_sum: Duration::ZERO,
            max_in_flight: 0,
            dropped: false,
        }
    }

    fn is_complete(&self, now: Instant) -> bool {
        let age = now.saturating_duration_since(self.started);
        (self.samples >= WINDOW_SAMPLES && age >= WINDOW_TIME)
            || (self.samples > 0 && age >= MAX_WINDOW_TIME)
            || (self.dropped && age >= WINDOW_TIME)
    }
}

impl Vegas {
    /// A limit that starts by measuring `rtt_noload`, then goes on from
    /// `initial`.
    pub fn new(bounds: Bounds, now: Instant) -> Self {
        let initial = bounds.initial.clamp(bounds.min, bounds.max);
        Self {
            bounds,
            limit: f64::from(bounds.min),
            phase: Phase::Probing {
                resume: f64::from(initial),
                rtts: Vec::with_capacity(PROBE_SAMPLES),
            },
            window: Window::new(now),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        self.limit as u32
    }

    /// The latency of the idle upstream, once measured.
    pub fn rtt_noload(&self) -> Option<Duration> {
        match self.phase {
            Phase::Tracking { rtt_noload, .. } => Some(rtt_noload),
            Phase::Probing { .. } => None,
        }
    }

    /// Takes one sample at `now`; returns the limit from now on.
    pub fn update(&mut self, sample: Sample, now: Instant) -> u32 {
        match &mut self.phase {
            Phase::Probing { resume, rtts } => {
                if let Sample::Answered { rtt, in_flight } = sample
                    && in_flight <= self.bounds.min
                {
                    rtts.push(rtt);
                }
                if rtts.len() >= PROBE_SAMPLES {
                    rtts.sort_unstable();
                    let rtt_noload = rtts[rtts.len() / 2].max(Duration::from_micros(1));
                    self.limit = *resume;
                    self.phase = Phase::Tracking {
                        rtt_noload,
                        next_probe: now + PROBE_INTERVAL.mul_f64(0.9 + fastrand::f64() * 0.2),
                    };
                    self.window = Window::new(now);
                }
            }
            Phase::Tracking {
                rtt_noload,
                next_probe,
            } => {
                let rtt_noload = *rtt_noload;
                if now >= *next_probe {
                    self.phase = Phase::Probing {
                        resume: self.limit,
                        rtts: Vec::with_capacity(PROBE_SAMPLES),
                    };
                    self.limit = f64::from(self.bounds.min);
                    return self.limit();
                }
                match sample {
                    Sample::Answered { rtt, in_flight } => {
                        self.window.samples += 1;
                        self.window.rtt_sum += rtt;
                        self.window.max_in_flight = self.window.max_in_flight.max(in_flight);
                    }
                    Sample::Dropped => self.window.dropped = true,
                }
                if self.window.is_complete(now) {
                    self.limit = self.next_limit(rtt_noload);
                    self.window = Window::new(now);
                }
            }
        }
        self.limit()
    }

    /// The limit after the window just completed.
    fn next_limit(&self, rtt_noload: Duration) -> f64 {
        let window = &self.window;
        let log = self.limit.log10().max(1.0);
        let next = if window.dropped {
            self.limit - log
        } else if f64::from(window.max_in_flight) * 2.0 < self.limit {
            self.limit
        } else {
            let rtt = window.rtt_sum / window.samples;
            let ratio = rtt_noload.as_secs_f64() / rtt.max(Duration::from_micros(1)).as_secs_f64();
            let queue = (self.limit * (1.0 - ratio)).ceil();
            if queue <= log {
                self.limit + 6.0 * log
            } else if queue < 3.0 * log {
                self.limit + log
            } else if queue > 6.0 * log {
                self.limit - log
            } else {
                self.limit
            }
        };
        next.clamp(f64::from(self.bounds.min), f64::from(self.bounds.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        initial: 20,
        min: 3,
        max: 1000,
    };

    const SERVICE: Duration = Duration::from_millis(10);

    /// A backend with `workers` workers taking `SERVICE` each: a request
    /// waits when all are busy, so the RTT at `in_flight` requests is
    /// `SERVICE × max(1, in_flight / workers)`.
    fn rtt(in_flight: u32, workers: u32) -> Duration {
        SERVICE.mul_f64((f64::from(in_flight) / f64::from(workers)).max(1.0))
    }

    /// Drives the limit as a saturating load does (always `limit` in flight,
    /// a sample every millisecond) for `seconds`; returns the limit each
    /// millisecond.
    fn saturate(vegas: &mut Vegas, now: &mut Instant, workers: u32, seconds: u64) -> Vec<u32> {
        (0..seconds * 1000)
            .map(|_| {
                *now += Duration::from_millis(1);
                let in_flight = vegas.limit();
                let rtt = rtt(in_flight, workers);
                vegas.update(Sample::Answered { rtt, in_flight }, *now)
            })
            .collect()
    }

    #[test]
    fn the_limit_settles_just_above_the_backends_capacity_and_stays() {
        for workers in [8, 50, 300] {
            let mut now = Instant::now();
            let mut vegas = Vegas::new(BOUNDS, now);
            let limits = saturate(&mut vegas, &mut now, workers, 100);
            assert_eq!(vegas.rtt_noload(), Some(SERVICE));
            // After the first 20 s (and over the probes every ~30 s): a queue of α..β
            // requests (a few) on top of the workers, so latency stays near SERVICE.
            let settled: Vec<u32> = limits[20_000..]
                .iter()
                .copied()
                .filter(|limit| *limit > BOUNDS.min)
                .collect();
            let (low, high) = (settled.iter().min().unwrap(), settled.iter().max().unwrap());
            let (low_bound, high_bound) = (workers, workers + workers.div_ceil(5) + 12);
            assert!(
                *low >= low_bound && *high <= high_bound,
                "{workers} workers: limit between {low} and {high}"
            );
            let probing = limits[20_000..]
                .iter()
                .filter(|l| **l == BOUNDS.min)
                .count();
            assert!(
                probing < 1000,
                "{workers} workers: {probing} ms probing in 80 s"
            );
        }
    }

    #[test]
    fn the_first_probe_measures_at_min_limit_then_resumes_at_initial() {
        let mut now = Instant::now();
        let mut vegas = Vegas::new(BOUNDS, now);
        assert_eq!(vegas.limit(), 3);
        for answered in 1..=PROBE_SAMPLES {
            now += Duration::from_millis(1);
            // Requests admitted before the probe (many in flight) do not count.
            let late = Sample::Answered {
                rtt: Duration::from_secs(1),
                in_flight: 50,
            };
            vegas.update(late, now);
            let rtt = Duration::from_millis(if answered % 2 == 0 { 9 } else { 11 });
            let limit = vegas.update(Sample::Answered { rtt, in_flight: 2 }, now);
            let expected = if answered < PROBE_SAMPLES { 3 } else { 20 };
            assert_eq!(limit, expected, "after {answered} samples");
        }
        assert_eq!(vegas.rtt_noload(), Some(Duration::from_millis(11)));
    }

    #[test]
    fn drops_shrink_and_an_idle_caller_freezes_the_limit() {
        let mut now = Instant::now();
        let mut vegas = Vegas::new(BOUNDS, now);
        for _ in 0..PROBE_SAMPLES {
            vegas.update(
                Sample::Answered {
                    rtt: SERVICE,
                    in_flight: 1,
                },
                now,
            );
        }
        assert_eq!(vegas.limit(), 20);
        // One request at a time tests no limit: it stays.
        for _ in 0..1000 {
            now += Duration::from_millis(1);
            vegas.update(
                Sample::Answered {
                    rtt: SERVICE,
                    in_flight: 1,
                },
                now,
            );
        }
        assert_eq!(vegas.limit(), 20);
        // A drop in a window shrinks it by log10(limit), at least 1, down to min_limit.
        now += Duration::from_millis(100);
        assert_eq!(vegas.update(Sample::Dropped, now), 18);
        for _ in 0..100 {
            now += Duration::from_millis(100);
            vegas.update(Sample::Dropped, now);
        }
        assert_eq!(vegas.limit(), BOUNDS.min);
    }

    #[test]
    fn the_limit_stays_within_its_bounds() {
        let bounds = Bounds {
            initial: 10,
            min: 5,
            max: 40,
        };
        let mut now = Instant::now();
        let mut vegas = Vegas::new(bounds, now);
        let limits = saturate(&mut vegas, &mut now, 1000, 20);
        assert_eq!(*limits.iter().max().unwrap(), 40);
        assert_eq!(*limits.iter().min().unwrap(), 5);
    }

    #[test]
    fn a_probe_waits_out_a_failing_upstream_and_ends_once_it_answers() {
        let mut now = Instant::now();
        let mut vegas = Vegas::new(BOUNDS, now);
        for _ in 0..10_000 {
            now += Duration::from_millis(1);
            assert_eq!(vegas.update(Sample::Dropped, now), BOUNDS.min);
        }
        let answered = Sample::Answered {
            rtt: SERVICE,
            in_flight: 1,
        };
        for _ in 1..PROBE_SAMPLES {
            now += Duration::from_millis(1);
            assert_eq!(vegas.update(answered, now), BOUNDS.min);
        }
        assert_eq!(vegas.update(answered, now), BOUNDS.initial);
        assert_eq!(vegas.rtt_noload(), Some(SERVICE));
    }
}
