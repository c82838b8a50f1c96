//! Locality-aware balancing (`load_balancing.locality: prefer_local`), as
//! Envoy's zone-aware routing computes it. Each pick first chooses a zone,
//! then the policy picks among that zone's endpoints.
//!
//! With `local_share` the local zone's share of the traffic's sources and
//! `capacity[z]` zone z's share of the healthy endpoints (passing their
//! checks, not ejected):
//!
//! * `capacity[local] ≥ local_share`: the local zone can serve its own
//!   traffic — every request stays local;
//! * otherwise a request stays local with probability
//!   `capacity[local] / local_share`, and the rest spills over to the other
//!   zones in proportion to their residual capacity,
//!   `max(0, capacity[z] − share[z])`.
//!
//! Envoy takes the sources' shares from its local cluster (the caller's own
//! instances per zone). remora takes them from the upstream's endpoint set,
//! healthy or not (endpoints awaiting their first health check are not counted
//! at all, in either share): the caller is assumed to be spread over the zones
//! as the service it calls is, which is how services are usually deployed. So
//! while every zone is whole everything stays local, and when the local zone
//! loses healthy endpoints it keeps the traffic it can still serve and spills
//! the rest where there is capacity to spare.
//!
//! Endpoints without a zone form a zone of their own (`unknown`). Without a
//! healthy endpoint, in panic, or when the chosen zone has no endpoint to
//! offer, the pick is made over every zone. At most [`MAX_ZONES`] zones are
//! told apart (counting happens in a fixed array: no allocation per pick);
//! an upstream with more balances without zones. Requests sent to each zone
//! are counted (`remora_locality_requests_total`).

use std::collections::HashMap;
use std::sync::Arc;

use ::metrics::Counter;
use tokio::time::Instant;

use super::Target;
use crate::telemetry::metrics;

/// The most zones told apart.
pub const MAX_ZONES: usize = 16;

const UNKNOWN_ZONE: &str = "unknown";

/// The zones of one endpoint set.
pub struct Zones {
    /// The zone index of each target.
    of: Vec<u8>,
    local: usize,
    /// Requests sent to each zone.
    sent: Vec<Counter>,
}

impl Zones {
    /// The zones of targets whose zones are `zones` (in target order), for a
    /// sidecar in `local`; `None` with more than [`MAX_ZONES`] zones.
    pub fn new(local: &str, zones: &[Option<Arc<str>>], upstream: &str) -> Option<Self> {
        let mut index: HashMap<String, u8> = HashMap::new();
        let mut names: Vec<String> = Vec::new();
        let mut slot = |name: &str| -> Option<u8> {
            if let Some(&i) = index.get(name) {
                return Some(i);
            }
            let i = u8::try_from(names.len())
                .ok()
                .filter(|&i| usize::from(i) < MAX_ZONES)?;
            index.insert(name.to_owned(), i);
            names.push(name.to_owned());
            Some(i)
        };
        let local_index = slot(local)?;
        let of = (zones.iter())
            .map(|zone| slot(zone.as_deref().unwrap_or(UNKNOWN_ZONE)))
            .collect::<Option<Vec<u8>>>();
        let Some(of) = of else {
            tracing::warn!(
                upstream,
                max = MAX_ZONES,
                "too many zones: balancing without locality"
            );
            return None;
        };
        let sent = names
            .iter()
            .map(|zone| metrics::locality_counter(upstream, zone))
            .collect();
        Some(Self {
            of,
            local: usize::from(local_index),
            sent,
        })
    }

    /// The zone of target `i`.
    pub(super) fn of(&self, i: usize) -> u8 {
        self.of[i]
    }

    /// The zone this pick goes to, or `None` for any.
    pub(super) fn choose<T: Target>(&self, targets: &[Arc<T>], now: Instant) -> Option<u8> {
        let mut total = [0u32; MAX_ZONES];
        let mut healthy = [0u32; MAX_ZONES];
        let counted = targets.iter().zip(&self.of);
        for (target, &zone) in counted.filter(|(target, _)| !target.awaits_first_check()) {
            total[usize::from(zone)] += 1;
            if target.is_healthy(now) {
                healthy[usize::from(zone)] += 1;
            }
        }
        let zone = choose(&total, &healthy, self.local, fastrand::f64())?;
        self.sent[zone].increment(1);
        u8::try_from(zone).ok()
    }
}

/// Envoy's zone choice over per-zone endpoint counts, for a uniform draw
/// `draw` in [0, 1).
fn choose(total: &[u32], healthy: &[u32], local: usize, draw: f64) -> Option<usize> {
    let all: u32 = total.iter().sum();
    let all_healthy: u32 = healthy.iter().sum();
    if all == 0 || all_healthy == 0 || total[local] == 0 {
        return None;
    }
    let share = |zone: usize| f64::from(total[zone]) / f64::from(all);
    let capacity = |zone: usize| f64::from(healthy[zone]) / f64::from(all_healthy);
    let local_share = share(local);
    if capacity(local) >= local_share {
        return Some(local);
    }
    let stay = capacity(local) / local_share;
    if draw < stay {
        return Some(local);
    }
    let residual = |zone: usize| {
        if zone == local {
            0.0
        } else {
            (capacity(zone) - share(zone)).max(0.0)
        }
    };
    let spare: f64 = (0..total.len()).map(residual).sum();
    if spare <= 0.0 {
        return None;
    }
    // The part of the draw past `stay`, rescaled onto the spare capacity.
    let mut point = (draw - stay) / (1.0 - stay) * spare;
    (0..total.len())
        .filter(|&zone| residual(zone) > 0.0)
        .find(|&zone| {
            point -= residual(zone);
            point < 0.0
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How often each zone is chosen over `n` evenly spread draws.
    fn split(total: &[u32], healthy: &[u32], n: u32) -> Vec<u32> {
        let mut chosen = vec![0; total.len()];
        for k in 0..n {
            let draw = (f64::from(k) + 0.5) / f64::from(n);
            if let Some(zone) = choose(total, healthy, 0, draw) {
                chosen[zone] += 1;
            }
        }
        chosen
    }

    #[test]
    fn a_whole_local_zone_keeps_everything() {
        assert_eq!(split(&[2, 2, 2], &[2, 2, 2], 600), [600, 0, 0]);
        // Others losing capacity leaves the local zone even more room.
        assert_eq!(split(&[2, 2, 2], &[2, 1, 0], 600), [600, 0, 0]);
    }

    #[test]
    fn a_short_local_zone_spills_its_excess_by_residual_capacity() {
        // Local 1 of 2 healthy: capacity 1/5 against a share of 1/3 — 60 %
        // stays, the rest splits by residual (2/5 − 1/3 each).
        assert_eq!(split(&[2, 2, 2], &[1, 2, 2], 1000), [600, 200, 200]);
        // Unequal residuals: b has 3 healthy of 3, c 1 of 3.
        let [local, b, c] = split(&[3, 3, 3], &[1, 3, 1], 1000)[..] else {
            unreachable!()
        };
        // capacity 1/5 vs share 1/3: 60 % stays; residual b 3/5 − 1/3, c none.
        assert_eq!((local, b, c), (600, 400, 0));
        // No healthy local endpoint: everything spills.
        assert_eq!(split(&[2, 2, 2], &[0, 2, 1], 900), [0, 900, 0]);
    }

    #[test]
    fn nothing_to_go_by_means_any_zone() {
        assert_eq!(choose(&[2, 2], &[0, 0], 0, 0.5), None);
        assert_eq!(choose(&[0, 2], &[0, 2], 0, 0.5), None, "no local endpoint");
    }
}
