//! Least request: the eligible endpoint with the fewest requests in flight
//! per unit of weight (`in_flight / weight`), ties broken at random in
//! proportion to weight.
//!
//! Envoy's `LEAST_REQUEST` policy defaults to "power of two choices" on the
//! active request count (sample two, keep the less loaded) and offers a full
//! scan as an option. We always do the full scan: a sidecar's upstream sets
//! are small (tens of endpoints), so a scan of one atomic per endpoint is
//! cheap, and it gives the exact "least" that the policy's name promises;
//! P2C with a latency-aware cost is already available as `P2cEwma`. The
//! random tie-break (weighted reservoir sampling, no allocation) matters
//! because at low load every endpoint is idle: without it the first endpoint
//! would get all the traffic, and concurrent picks on different cores would
//! pile onto the same endpoint.
//!
//! Weights: dividing the load by the weight makes an endpoint of weight 3
//! hold three times the in-flight requests of one of weight 1 under load,
//! and the weighted tie-break gives it three times the picks when everything
//! is idle (sequential traffic), so the split follows the weights at every
//! load. With equal weights this is plain "fewest in flight, uniform ties".

use super::Target;
use super::candidates::Candidates;

pub(super) fn pick<T: Target>(c: &Candidates<'_, T>) -> Option<usize> {
    let mut best: Option<(usize, u64, u64)> = None; // (index, in_flight, weight)
    let mut tied_weight = 0u64;
    for i in (0..c.len()).filter(|&i| c.is_eligible(i)) {
        let in_flight = u64::from(c.load(i).in_flight());
        let weight = u64::from(c.weight(i));
        let Some((_, best_in_flight, best_weight)) = best else {
            best = Some((i, in_flight, weight));
            tied_weight = weight;
            continue;
        };
        // in_flight / weight < best_in_flight / best_weight, without division.
        let (this, other) = (in_flight * best_weight, best_in_flight * weight);
        if this < other {
            best = Some((i, in_flight, weight));
            tied_weight = weight;
        } else if this == other {
            // Keep each tied endpoint with probability weight / tied weight so far.
            tied_weight += weight;
            if fastrand::u64(..tied_weight) < weight {
                best = Some((i, in_flight, weight));
            }
        }
    }
    best.map(|(i, _, _)| i)
}
