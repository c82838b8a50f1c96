//! Ring hash: consistent hashing, so that requests with the same key (a
//! session id, a user id) keep going to the same endpoint, and a change of the
//! endpoint set moves as few keys as possible.
//!
//! The scheme is Karger et al., "Consistent Hashing and Random Trees" (STOC
//! 1997), with virtual nodes as in Ketama and Envoy's `RING_HASH` policy
//! (`source/extensions/load_balancing_policies/ring_hash`): every endpoint is
//! placed on a 64-bit ring at [`VNODES_PER_ENDPOINT`] pseudo-random points,
//! `xxh3_64_with_seed(stable_id, i)` for `i` in `0..VNODES_PER_ENDPOINT`. A key
//! hashes to `xxh3_64(key)` and belongs to the first point clockwise from it
//! (binary search over the sorted points, wrapping past the top).
//!
//! * The points depend only on each endpoint's stable id (its address), not on
//!   the order of the list, so every proxy builds the same ring.
//! * Adding an endpoint moves only the keys that now fall just before one of
//!   its points, about `1/(N+1)` of them, and all of them to the new endpoint;
//!   removing one moves only its own keys.
//! * 160 points per endpoint (Ketama's number) keep each endpoint's share of
//!   the ring within roughly ±8% of its fair share (relative standard
//!   deviation ≈ 1/√160), at 16 bytes per point.
//! * An endpoint that is not eligible (backoff, excluded for a retry) is
//!   skipped by walking on clockwise to the next point of an eligible one, so
//!   its keys spread over its neighbours and come back when it recovers, and
//!   a retry of a key deterministically goes to the key's "second choice".
//!
//! * Weights: with unequal weights an endpoint gets virtual nodes in
//!   proportion to its weight, `round(160 × N × w / Σw)` (at least 1), so
//!   the ring keeps about 160 points per endpoint and each endpoint's share
//!   of the keys follows its weight (Envoy scales its hashes per host by the
//!   normalized weight the same way). The points of an endpoint are
//!   `0..its vnode count`, so a weight change moves only the keys of the
//!   points added or removed.
//!
//! Two endpoints with the same id get the same points; ids are expected to be
//! unique. A request without a hash key is balanced at random (in proportion
//! to weight).

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::Target;
use super::candidates::Candidates;

/// Virtual nodes per endpoint.
const VNODES_PER_ENDPOINT: u32 = 160;

#[derive(Debug)]
struct Point {
    hash: u64,
    target: u32,
}

pub(super) struct Ring {
    /// Sorted by hash (ties by endpoint id, so the order of the input list
    /// never matters).
    points: Vec<Point>,
}

impl Ring {
    /// `ids[i]` is the stable id of target `i`, `weights[i]` (≥ 1) its weight.
    pub(super) fn new(ids: &[&str], weights: &[u32]) -> Self {
        let vnodes = vnode_counts(weights);
        let mut points: Vec<Point> = ids
            .iter()
            .zip(vnodes)
            .enumerate()
            .flat_map(|(target, (id, vnodes))| {
                (0..vnodes).map(move |vnode| Point {
                    hash: xxh3_64_with_seed(id.as_bytes(), u64::from(vnode)),
                    // Endpoint sets are far below 2^32 entries.
                    target: target as u32,
                })
            })
            .collect();
        points.sort_unstable_by(|a, b| {
            (a.hash, ids[a.target as usize]).cmp(&(b.hash, ids[b.target as usize]))
        });
        Self { points }
    }

    pub(super) fn pick<T: Target>(&self, c: &Candidates<'_, T>, key: &[u8]) -> Option<usize> {
        let hash = xxh3_64(key);
        let start = self.points.partition_point(|p| p.hash < hash);
        let (below, from_key) = self.points.split_at(start);
        // Clockwise from the key's position, wrapping around once.
        from_key
            .iter()
            .chain(below)
            .map(|p| p.target as usize)
            .find(|&i| c.is_eligible(i))
    }
}

/// Virtual nodes per endpoint: [`VNODES_PER_ENDPOINT`] each when the weights
/// are equal, else in proportion to weight with the same total (≥ 1 each).
fn vnode_counts(weights: &[u32]) -> Vec<u32> {
    if weights.windows(2).all(|pair| pair[0] == pair[1]) {
        return vec![VNODES_PER_ENDPOINT; weights.len()];
    }
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let ring = f64::from(VNODES_PER_ENDPOINT) * weights.len() as f64;
    weights
        .iter()
        // At most 160 × N points in all, far below u32::MAX.
        .map(|&w| ((ring * f64::from(w) / total).round() as u32).max(1))
        .collect()
}
