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

use super::Target;
use super::candidates::Candidates;

pub(super) fn pick<T: Target>(c: &Candidates<'_, T>) -> Option<usize> {
    match c.random_pair()? {
        (a, None) => Some(a),
        (a, Some(b)) => {
            let now = c.now();
            if c.load(b).cost_at(now) < c.load(a).cost_at(now) {
                Some(b)
            } else {
                Some(a)
            }
        }
    }
}
