//! Random: a random eligible endpoint, drawn in proportion to its weight
//! (uniformly when the weights are equal).
//!
//! Envoy's `RANDOM` policy. Stateless, so it needs no coordination between
//! cores, and over many requests it spreads load as evenly as round robin, but
//! it ignores how loaded or slow each endpoint is. It is also the fallback of
//! ring hash when a request has no hash key.

use super::Target;
use super::candidates::Candidates;

pub(super) fn pick<T: Target>(c: &Candidates<'_, T>) -> Option<usize> {
    c.random()
}
