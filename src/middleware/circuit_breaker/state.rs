//! The circuit breaker's state machine, free of I/O so it can be tested with
//! a paused clock.
//!
//! * **Closed**: every request goes through. Each result is counted: the
//!   breaker opens after `consecutive_failures` failures in a row, or when a
//!   sliding window of the last `window` holds at least `min_requests`
//!   results of which a `threshold` fraction failed (failure accrual as in
//!   linkerd2-proxy, and Envoy's consecutive-5xx / failure-percentage).
//! * **Open**: requests fail at once (`circuit_open`), nothing reaches the
//!   upstream, for the open period (`open_for` at first).
//! * **HalfOpen**: after the open period, `half_open_requests` probes go
//!   through (more are refused). When they have all succeeded the breaker
//!   closes; a failed probe re-opens it with the open period doubled, up to
//!   `max_open_for` (exponential backoff, as linkerd2-proxy's failure accrual).
//!
//! Results are tied to the state they were admitted in (a generation
//! number): a slow request admitted while closed that fails after the breaker
//! opened does not count again.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::CircuitBreakerConfig;

/// What the breaker looks like from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed,
    Open,
    HalfOpen,
}

impl Phase {
    /// The value of the `remora_circuit_breaker_state` gauge.
    pub fn gauge(self) -> f64 {
        match self {
            Phase::Closed => 0.0,
            Phase::Open => 1.0,
            Phase::HalfOpen => 2.0,
        }
    }

    /// Its name: the `to` label of `remora_circuit_breaker_transitions_total`
    /// and the breaker state the admin `/upstreams` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::HalfOpen => "half_open",
        }
    }
}

/// A request let through: its result must be reported with the same ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    generation: u64,
    probe: bool,
}

#[derive(Debug)]
enum Current {
    Closed { consecutive: u32, window: Window },
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

/// The breaker of one upstream.
#[derive(Debug)]
pub struct State {
    config: CircuitBreakerConfig,
    current: Current,
    generation: u64,
    /// The open period used at the next opening.
    open_for: Duration,
}

impl State {
    pub fn new(config: &CircuitBreakerConfig, now: Instant) -> Self {
        Self {
            config: config.clone(),
            current: Current::Closed {
                consecutive: 0,
                window: Window::new(config, now),
            },
            generation: 0,
            open_for: config.open_for,
        }
    }

    pub fn phase(&self) -> Phase {
        match self.current {
            Current::Closed { .. } => Phase::Closed,
            Current::Open { .. } => Phase::Open,
            Current::HalfOpen { .. } => Phase::HalfOpen,
        }
    }

    /// Lets a request through, or refuses it (`None`).
    pub fn admit(&mut self, now: Instant) -> Option<Ticket> {
        if let Current::Open { until } = self.current
            && now >= until
        {
            self.transition(Current::HalfOpen {
                admitted: 0,
                succeeded: 0,
            });
        }
        let generation = self.generation;
        match &mut self.current {
            Current::Closed { .. } => Some(Ticket {
                generation,
                probe: false,
            }),
            Current::Open { .. } => None,
            Current::HalfOpen { admitted, .. } => (*admitted < self.config.half_open_requests)
                .then(|| {
                    *admitted += 1;
                    Ticket {
                        generation,
                        probe: true,
                    }
                }),
        }
    }

    /// Reports how an admitted request went.
    pub fn record(&mut self, ticket: Ticket, failed: bool, now: Instant) {
        if ticket.generation != self.generation {
            return;
        }
        let threshold = self.config.consecutive_failures;
        match &mut self.current {
            Current::Closed {
                consecutive,
                window,
            } => {
                *consecutive = if failed { *consecutive + 1 } else { 0 };
                window.add(failed, now);
                if *consecutive >= threshold || window.tripped(now) {
                    self.open(now);
                }
            }
            Current::HalfOpen { succeeded, .. } if ticket.probe => {
                if failed {
                    self.open_for = (self.open_for * 2).min(self.config.max_open_for);
                    self.open(now);
                } else {
                    *succeeded += 1;
                    if *succeeded >= self.config.half_open_requests {
                        self.open_for = self.config.open_for;
                        let window = Window::new(&self.config, now);
                        self.transition(Current::Closed {
                            consecutive: 0,
                            window,
                        });
                    }
                }
            }
            Current::HalfOpen { .. } | Current::Open { .. } => {}
        }
    }

    /// An admitted request ended without a result that says anything about
    /// the upstream (cancelled, refused by remora itself): a probe slot
    /// becomes free again.
    pub fn release(&mut self, ticket: Ticket) {
        if ticket.generation != self.generation || !ticket.probe {
            return;
        }
        if let Current::HalfOpen { admitted, .. } = &mut self.current {
            *admitted = admitted.saturating_sub(1);
        }
    }

    fn open(&mut self, now: Instant) {
        self.transition(Current::Open {
            until: now + self.open_for,
        });
    }

    fn transition(&mut self, next: Current) {
        self.generation += 1;
        self.current = next;
    }
}

/// Results over the last `window`, in ten time slots, for the failure rate.
#[derive(Debug)]
struct Window {
    rate: Option<(f64, u32)>,
    slot_length: Duration,
    slots: [(u32, u32); SLOTS],
    current: usize,
    current_start: Instant,
}

const SLOTS: usize = 10;

impl Window {
    fn new(config: &CircuitBreakerConfig, now: Instant) -> Self {
        let (rate, window) = match &config.failure_rate {
            Some(rate) => (Some((rate.threshold, rate.min_requests)), rate.window),
            None => (None, Duration::from_secs(1)),
        };
        Self {
            rate,
            slot_length: window / SLOTS as u32,
            slots: [(0, 0); SLOTS],
            current: 0,
            current_start: now,
        }
    }

    fn add(&mut self, failed: bool, now: Instant) {
        if self.rate.is_none() {
            return;
        }
        self.advance(now);
        let (total, failures) = &mut self.slots[self.current];
        *total += 1;
        *failures += u32::from(failed);
    }

    fn tripped(&mut self, now: Instant) -> bool {
        let Some((threshold, min_requests)) = self.rate else {
            return false;
        };
        self.advance(now);
        let (total, failures) = self.slots.iter().fold((0, 0), |(t, f), (total, failures)| {
            (t + total, f + failures)
        });
        total >= min_requests && f64::from(failures) >= threshold * f64::from(total)
    }

    /// Moves to the slot `now` falls in, clearing the slots passed over.
    /// (Nearly always `now` is still in the current slot: one comparison.)
    fn advance(&mut self, now: Instant) {
        let slot_end = self.current_start.checked_add(self.slot_length);
        if slot_end.is_none_or(|end| now < end) {
            return;
        }
        let elapsed = now.saturating_duration_since(self.current_start);
        let steps = (elapsed.as_nanos() / self.slot_length.as_nanos().max(1)) as usize;
        for _ in 0..steps.min(SLOTS) {
            self.current = (self.current + 1) % SLOTS;
            self.slots[self.current] = (0, 0);
        }
        if steps > 0 {
            self.current_start += self.slot_length * steps as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FailureRate;

    fn config() -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            consecutive_failures: 3,
            failure_rate: None,
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(35),
            half_open_requests: 2,
            failures: crate::config::default_failure_conditions(),
        }
    }

    fn fail(state: &mut State, now: Instant) {
        let ticket = state.admit(now).expect("admitted");
        state.record(ticket, true, now);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let now = Instant::now();
        let mut state = State::new(&config(), now);
        fail(&mut state, now);
        fail(&mut state, now);
        let ticket = state.admit(now).unwrap();
        state.record(ticket, false, now);
        fail(&mut state, now);
        fail(&mut state, now);
        assert_eq!(state.phase(), Phase::Closed);
        fail(&mut state, now);
        assert_eq!(state.phase(), Phase::Open);
        assert_eq!(state.admit(now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_probes_close_it_or_reopen_it_for_longer() {
        let start = Instant::now();
        let mut state = State::new(&config(), start);
        (0..3).for_each(|_| fail(&mut state, start));
        assert_eq!(state.admit(start + Duration::from_millis(9_999)), None);

        // After 10 s: two probes, no third.
        let t = start + Duration::from_secs(10);
        let first = state.admit(t).expect("probe");
        let second = state.admit(t).expect("probe");
        assert_eq!(state.phase(), Phase::HalfOpen);
        assert_eq!(state.admit(t), None);
        state.record(first, false, t);
        state.record(second, true, t);
        assert_eq!(state.phase(), Phase::Open);

        // Re-opened for 20 s, then 35 s (capped).
        assert_eq!(state.admit(t + Duration::from_millis(19_999)), None);
        let t = t + Duration::from_secs(20);
        let probe = state.admit(t).expect("probe");
        state.record(probe, true, t);
        assert_eq!(state.admit(t + Duration::from_millis(34_999)), None);

        // Both probes succeed: closed, and the open period is back to 10 s.
        let t = t + Duration::from_secs(35);
        let probes = [state.admit(t).unwrap(), state.admit(t).unwrap()];
        probes.into_iter().for_each(|p| state.record(p, false, t));
        assert_eq!(state.phase(), Phase::Closed);
        (0..3).for_each(|_| fail(&mut state, t));
        assert!(state.admit(t + Duration::from_secs(10)).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_probe_frees_its_slot() {
        let start = Instant::now();
        let mut state = State::new(&config(), start);
        (0..3).for_each(|_| fail(&mut state, start));
        let t = start + Duration::from_secs(10);
        let probes = [state.admit(t).unwrap(), state.admit(t).unwrap()];
        assert_eq!(state.admit(t), None);
        state.release(probes[0]);
        assert!(state.admit(t).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn results_from_an_earlier_state_are_ignored() {
        let now = Instant::now();
        let mut state = State::new(&config(), now);
        let slow = state.admit(now).unwrap();
        (0..3).for_each(|_| fail(&mut state, now));
        let t = now + Duration::from_secs(10);
        let probe = state.admit(t).unwrap();
        state.record(slow, true, t);
        assert_eq!(state.phase(), Phase::HalfOpen);
        state.record(probe, false, t);
        assert_eq!(state.phase(), Phase::HalfOpen, "one of two probes so far");
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_over_the_window_once_min_requests_are_seen() {
        let mut config = config();
        config.consecutive_failures = 1000;
        config.failure_rate = Some(FailureRate {
            threshold: 0.5,
            window: Duration::from_secs(10),
            min_requests: 20,
        });
        let start = Instant::now();
        let mut state = State::new(&config, start);
        // 10 failures, 9 successes: 19 < min_requests.
        for i in 0..19 {
            let ticket = state.admit(start).unwrap();
            state.record(ticket, i % 2 == 0, start);
        }
        assert_eq!(state.phase(), Phase::Closed);
        // Old results slide out of the window: 11 s later, 19 fresh
        // successes and one failure stay well under half.
        let later = start + Duration::from_secs(11);
        for i in 0..20 {
            let ticket = state.admit(later).unwrap();
            state.record(ticket, i == 0, later);
        }
        assert_eq!(state.phase(), Phase::Closed);
        // Then failures: after 18 more, 19 of 38 results failed (≥ 0.5).
        let mut failures = 0;
        while let Some(ticket) = state.admit(later) {
            state.record(ticket, true, later);
            failures += 1;
        }
        assert_eq!(failures, 18);
        assert_eq!(state.phase(), Phase::Open);
    }
}
