//! Power of two choices over peak-EWMA cost (the default policy).
//!
//! Draw two distinct eligible endpoints uniformly at random and send the
//! request to the one with the lower cost `ewma_rtt × (in_flight + 1)` (see
//! `load.rs`). This is the balancer of linkerd2-proxy
//! (`tower::balance::p2c::Balance` over `tower::load::PeakEwma`), which comes
//! from Finagle's `Balancers.p2cPeakEwma`. The choice of two is due to
//! Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing"
//! (2001): comparing just two random candidates gives an exponentially better
//! maximum load than one random choice, while avoiding the herding of always
//! taking the global minimum — the worst endpoint is never chosen, the best
//! is not chosen by everyone at once. With a single eligible endpoint it is
//! picked; equal costs keep the first (random) candidate.
//!
//! Weights: the two candidates are drawn in proportion to weight, and the
//! cost compared is `cost / weight`, so an endpoint of weight 3 counts as
//! loaded only when it has three times the cost of one of weight 1. Under
//! concurrent load the in-flight requests then split by weight; at light,
//! sequential load the cost is mostly latency, so the heavier endpoint is
//! preferred more than its weight's share (with two endpoints of 3:1 and equal latency, nearly all
//! requests go to the heavier one until its latency or in-flight count
//! rises). Use `round_robin`, `random` or `least_request` for a split that
//! follows the weights at every load. With equal weights nothing changes.

use super::Target;
use super::candidates::Candidates;

pub(super) fn pick<T: Target>(c: &Candidates<'_, T>) -> Option<usize> {
    match c.random_pair()? {
        (a, None) => Some(a),
        (a, Some(b)) => {
            let now = c.now();
            let cost = |i: usize| c.load(i).cost_at(now) / f64::from(c.weight(i));
            if cost(b) < cost(a) { Some(b) } else { Some(a) }
        }
    }
}
