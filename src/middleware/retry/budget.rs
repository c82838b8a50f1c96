//! The retry budget: how many retries an upstream may have in flight relative
//! to its traffic, so that retries cannot multiply the load on an upstream that
//! is already failing (a "retry storm").
//!
//! The algorithm is Finagle's `RetryBudget` (also linkerd2-proxy's and tower's
//! `TpsBudget`): every request *deposits* into a sliding window, every retry
//! *withdraws* from it, and a retry is allowed while
//!
//! ```text
//! withdrawals(window) + 1 ≤ ratio × deposits(window) + min_per_second × window
//! ```
//!
//! The second term is a reserve that lets an upstream with little traffic (or
//! one that has just started) retry at all. Withdrawals age out of the window
//! like deposits do, so over any stretch of `T` seconds an upstream that fails
//! every request sees at most `(1 + ratio) × requests + min_per_second × W ×
//! ⌈T / W⌉` tries (`W` = the window), plus the rounding of the slots below.
//!
//! The window is kept as ten slots of `window / 10` each, like tower's
//! `TpsBudget`: what happened in the oldest slot is forgotten as a whole, so
//! the window really spans between 0.9 and 1.0 × `window`. Unlike
//! `TpsBudget`, the ratio is used as given (tower rounds `1 / ratio` to an
//! integer, so 0.3 behaves like 0.333) and any non-zero window is accepted
//! (tower asserts 1 s ≤ window ≤ 60 s, a panic for a config value).
//!
//! Rejects nothing: a ratio of 0 with `min_per_second: 0` simply allows no
//! retries. One budget per upstream is shared (behind an `Arc`) by every
//! request to it; its state is one short mutex-guarded update per request.
//!
//! Sources: Finagle, "Retries — RetryBudget"
//! (<https://twitter.github.io/finagle/guide/Clients.html#retries>);
//! linkerd2-proxy `linkerd/retry` and `linkerd-http-retry`; tower
//! `retry::budget::TpsBudget`.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock;
use crate::config::RetryBudget;

/// Slots of the sliding window.
const SLOTS: usize = 10;

/// Float slack so that e.g. 5 deposits × 0.2 allow exactly one retry.
const EPSILON: f64 = 1e-9;

/// Deposits (requests) and withdrawals (retries) over a sliding window.
#[derive(Debug)]
pub struct Budget {
    ratio: f64,
    /// `min_per_second × window`: retries allowed with no traffic at all.
    reserve: f64,
    slot_width: Duration,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    slots: [Slot; SLOTS],
    /// Index of the slot now being written.
    current: usize,
    /// When the current slot began.
    current_start: Instant,
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    deposits: u64,
    withdrawals: u64,
}

impl Budget {
    pub fn new(config: &RetryBudget) -> Self {
        // Validation rejects a zero window; keep a sane slot width anyway.
        let window = config.window.max(Duration::from_millis(SLOTS as u64));
        Self {
            ratio: config.ratio.max(0.0),
            reserve: f64::from(config.min_per_second) * window.as_secs_f64(),
            slot_width: window / SLOTS as u32,
            window: Mutex::new(Window {
                slots: [Slot::default(); SLOTS],
                current: 0,
                current_start: Instant::now(),
            }),
        }
    }

    /// Records one request (every request, retried or not, deposits once).
    pub fn deposit(&self) {
        self.with_window(|window| window.slots[window.current].deposits += 1);
    }

    /// Takes one retry from the budget; false (and nothing taken) when the
    /// budget is exhausted.
    pub fn try_withdraw(&self) -> bool {
        self.with_window(|window| {
            let (deposits, withdrawals) = window.slots.iter().fold((0u64, 0u64), |(d, w), slot| {
                (d + slot.deposits, w + slot.withdrawals)
            });
            let allowed = self.ratio * deposits as f64 + self.reserve;
            let allow = withdrawals as f64 + 1.0 <= allowed + EPSILON;
            if allow {
                window.slots[window.current].withdrawals += 1;
            }
            allow
        })
    }

    fn with_window<T>(&self, f: impl FnOnce(&mut Window) -> T) -> T {
        // The state stays consistent even if a holder panicked: plain counters.
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        self.advance(&mut window, clock::now());
        f(&mut window)
    }

    /// Moves the current slot forward to `now`, clearing the slots it passes.
    fn advance(&self, window: &mut Window, now: Instant) {
        let elapsed = now.saturating_duration_since(window.current_start);
        let steps = (elapsed.as_nanos() / self.slot_width.as_nanos().max(1)) as usize;
        if steps == 0 {
            return;
        }
        if steps >= SLOTS {
            window.slots = [Slot::default(); SLOTS];
            window.current_start = now;
            return;
        }
        for _ in 0..steps {
            window.current = (window.current + 1) % SLOTS;
            window.slots[window.current] = Slot::default();
        }
        window.current_start += self.slot_width * steps as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_second: u32, window_ms: u64) -> Budget {
        Budget::new(&RetryBudget {
            ratio,
            min_per_second,
            window: Duration::from_millis(window_ms),
        })
    }

    fn withdraw_all(budget: &Budget) -> u32 {
        let mut taken = 0;
        while budget.try_withdraw() {
            taken += 1;
            assert!(taken < 1_000_000, "budget never runs out");
        }
        taken
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_is_min_per_second_times_window() {
        assert_eq!(withdraw_all(&budget(0.2, 10, 1000)), 10);
        assert_eq!(withdraw_all(&budget(0.2, 10, 3000)), 30);
        assert_eq!(withdraw_all(&budget(0.2, 0, 1000)), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_add_ratio_retries_each() {
        let budget = budget(0.2, 0, 1000);
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!(withdraw_all(&budget), 20);
        // Four more requests are not yet worth a retry; the fifth is.
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(!budget.try_withdraw());
        budget.deposit();
        assert!(budget.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn a_ratio_above_one_allows_several_retries_per_request() {
        let budget = budget(2.5, 0, 1000);
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(withdraw_all(&budget), 25);
    }

    #[tokio::test(start_paused = true)]
    async fn withdrawals_and_deposits_age_out_of_the_window() {
        let budget = budget(0.5, 1, 1000);
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(withdraw_all(&budget), 6); // 0.5 × 10 + 1 × 1 s
        // Half a window later nothing has expired yet.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(!budget.try_withdraw());
        // A full window after the first events they are all forgotten: only
        // the reserve is left.
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(withdraw_all(&budget), 1);
        // A long idle period clears every slot.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(withdraw_all(&budget), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides_slot_by_slot() {
        let budget = budget(1.0, 0, 1000);
        // 10 requests in each of two consecutive halves of the window.
        for _ in 0..10 {
            budget.deposit();
        }
        tokio::time::advance(Duration::from_millis(500)).await;
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(withdraw_all(&budget), 20);
        // At 1.1 s the first 10 deposits have aged out, while the 20
        // withdrawals made at 0.5 s still count: 10 − 20 < 1.
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(!budget.try_withdraw());
        // At 1.6 s everything has aged out: with no reserve, nothing is left.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(withdraw_all(&budget), 0);
    }

    /// The end-to-end bound: a client that retries every request as long as
    /// the budget lets it never exceeds `ratio × requests + reserve` per window.
    #[tokio::test(start_paused = true)]
    async fn steady_failure_is_bounded_per_window() {
        let budget = budget(0.2, 10, 1000);
        let mut retries = 0u32;
        for _ in 0..300 {
            budget.deposit();
            for _ in 0..2 {
                if budget.try_withdraw() {
                    retries += 1;
                }
            }
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        // 300 requests over 3 s: 0.2 × 300 + 10 × 3 = 90, plus at most one
        // slot's worth of early expiry per window.
        assert!((80..=100).contains(&retries), "retries: {retries}");
    }
}
