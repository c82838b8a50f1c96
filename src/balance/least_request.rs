//! Least request: the eligible endpoint with the fewest requests in flight,
//! ties broken uniformly at random.
//!
//! Envoy's `LEAST_REQUEST` policy defaults to "power of two choices" on the
//! active request count (sample two, keep the less loaded) and offers a full
//! scan as an option. We always do the full scan: a sidecar's upstream sets
//! are small (tens of endpoints), so a scan of one atomic per endpoint is
//! cheap, and it gives the exact "least" that the policy's name promises;
//! P2C with a latency-aware cost is already available as `P2cEwma`. The
//! random tie-break (reservoir sampling, no allocation) matters because at
//! low load every endpoint is idle: without it the first endpoint would get
//! all the traffic, and concurrent picks on different cores would pile onto
//! the same endpoint.

use super::Target;
use super::candidates::Candidates;

pub(super) fn pick<T: Target>(c: &Candidates<'_, T>) -> Option<usize> {
    let mut best = None;
    let mut best_in_flight = u32::MAX;
    let mut ties = 0u32;
    for i in (0..c.len()).filter(|&i| c.is_eligible(i)) {
        let in_flight = c.load(i).in_flight();
        if in_flight < best_in_flight {
            best = Some(i);
            best_in_flight = in_flight;
            ties = 1;
        } else if in_flight == best_in_flight {
            // Keep each of the `ties` tied endpoints with probability 1/ties.
            ties += 1;
            if fastrand::u32(..ties) == 0 {
                best = Some(i);
            }
        }
    }
    best
}
