//! Round robin: endpoints in turn.
//!
//! With equal weights this is the classic policy (Envoy `ROUND_ROBIN`
//! without weights, nginx's default) on one shared atomic counter. Pick
//! number `n` goes to endpoint `n mod N`; the counter starts at a random
//! offset so that proxies which rebuild their balancer at the same moment do
//! not all send their next request to the same endpoint. If that endpoint is
//! not eligible (backoff, excluded, another zone), the pick goes to the next
//! of the `k` eligible endpoints in a turn of their own: a second counter,
//! taken modulo `k`. Each eligible endpoint so gets one pick of every `N`
//! and an even share of the gaps' picks, rather than the one after a gap
//! getting its share twice (the first counter's `n mod k` would not do
//! either: when `k` and `N` share a factor, the gaps' turns fall on some of
//! the eligible endpoints only — endpoints 1 and 3 of four out, endpoint 2
//! got three picks in four). The counters are shared by every core; a
//! `fetch_add` per request is cheap next to the request itself.
//!
//! With unequal weights it is nginx's smooth weighted round robin
//! (`ngx_http_upstream_get_peer`): each pick adds every eligible endpoint's
//! weight to its running score, takes the endpoint with the highest score
//! and subtracts the total weight from it. Over every `Σw` picks each
//! endpoint gets exactly its weight's share, interleaved (weights 5:1:1 give
//! a a b a c a a, not a a a a a b c). The scores live behind a mutex held for
//! one pass over the endpoints; an ineligible endpoint is skipped and
//! neither gains nor loses score meanwhile, as in nginx. nginx starts every
//! balancer at the top of that sequence, so each rebuild (every discovery
//! change) sent its next pick to the heaviest endpoint, and proxies that
//! rebuilt together all sent theirs to the same one. A new balancer here
//! starts at a random place in the sequence instead, as Envoy's weighted
//! round robin does: its scores are those after a random number of picks
//! (fewer than `Σw`, at most [`MOST_PHASE_PICKS`]) with every endpoint
//! eligible, so the first pick falls on each endpoint in proportion to its
//! weight.
//!
//! The turns are the first tries': a request's later try (a retry, a hedge)
//! is drawn at random among the eligible endpoints, in proportion to weight.
//! Had it taken a turn too, a request making two picks (two endpoints, and a
//! hedge or a per-try timeout that retries) would advance the turn by two,
//! and every first try would go to the same endpoint.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::Target;
use super::candidates::Candidates;

/// The most picks played at start to put a weighted balancer at a random
/// place in its sequence: bounds a rebuild's work to this many passes.
const MOST_PHASE_PICKS: u64 = 1024;

pub(super) struct RoundRobin {
    next: AtomicUsize,
    /// The turns of the eligible endpoints, for the picks that fall on an
    /// ineligible one.
    next_eligible: AtomicUsize,
    /// Smooth weighted round robin scores (unequal weights only).
    scores: Mutex<Vec<i64>>,
}

impl RoundRobin {
    /// A balancer over endpoints of these weights (each at least 1), at a
    /// random place in its turns.
    pub(super) fn new(weights: &[u32], uniform: bool) -> Self {
        let mut scores = vec![0; weights.len()];
        if !uniform {
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            for _ in 0..fastrand::u64(..total.min(MOST_PHASE_PICKS)) {
                smooth_weighted_pick(
                    &mut scores,
                    weights.iter().map(|&w| i64::from(w)).enumerate(),
                );
            }
        }
        Self {
            next: AtomicUsize::new(fastrand::usize(..)),
            next_eligible: AtomicUsize::new(fastrand::usize(..)),
            scores: Mutex::new(scores),
        }
    }

    pub(super) fn pick<T: Target>(&self, c: &Candidates<'_, T>) -> Option<usize> {
        if c.is_later_try() {
            return c.random();
        }
        if !c.uniform() {
            return self.pick_weighted(c);
        }
        let n = self.next.fetch_add(1, Relaxed);
        let i = n % c.len();
        if c.is_eligible(i) {
            return Some(i);
        }
        match c.count() {
            0 => {
                // The turn is not used up: the next, looser filter takes it
                // (`candidates.rs`). Advancing once per failed filter too
                // would move the counter by the number of filters tried, and
                // a count that shares a factor with N sends every such
                // pick to the same few endpoints.
                self.next.fetch_sub(1, Relaxed);
                None
            }
            k => c.nth(self.next_eligible.fetch_add(1, Relaxed) % k),
        }
    }

    fn pick_weighted<T: Target>(&self, c: &Candidates<'_, T>) -> Option<usize> {
        // A panic while holding the lock leaves valid scores behind.
        let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        let eligible = (0..c.len())
            .filter(|&i| c.is_eligible(i))
            .map(|i| (i, i64::from(c.weight(i))));
        smooth_weighted_pick(&mut scores, eligible)
    }
}

/// One pick of smooth weighted round robin among the `eligible` endpoints
/// (index, weight): every one gains its weight, the highest score wins and
/// pays the total.
fn smooth_weighted_pick(
    scores: &mut [i64],
    eligible: impl Iterator<Item = (usize, i64)>,
) -> Option<usize> {
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for (i, weight) in eligible {
        scores[i] += weight;
        total += weight;
        if best.is_none_or(|b| scores[i] > scores[b]) {
            best = Some(i);
        }
    }
    if let Some(best) = best {
        scores[best] -= total;
    }
    best
}
