//! Which endpoints a policy may choose from, and the fallback order when the
//! preferred set is empty.
//!
//! A pick runs the policy over at most six successively looser filters and
//! takes the first one that yields an endpoint:
//!
//! 1. available (not in connect backoff, not ejected), checked (not
//!    awaiting its first health check) and not an excluded endpoint (those
//!    the request's earlier tries went to);
//! 2. available and checked, even if it is an excluded one: the request is
//!    retried on the endpoint that just failed rather than sent to one known
//!    to refuse connections (an endpoint excluded *because* it refused a
//!    connection is itself in backoff, so this only happens after other
//!    kinds of failure);
//! 3. and 4. the same, with endpoints awaiting their first check admitted:
//!    an endpoint that joined a running set takes traffic only once its
//!    checks pass, unless no checked endpoint can take it (`health.rs`);
//! 5. not excluded, ignoring backoff: when *every* endpoint is backing off the
//!    policy picks as if none were, so the request is still tried (the
//!    endpoints may have recovered, and failing without trying would turn a
//!    short outage into a longer one);
//! 6. anything, which only matters when the excluded endpoints are the only ones.
//!
//! With zones, the first filter is tried within the chosen zone before all
//! six over every zone (`locality.rs`): a retry whose zone has no endpoint
//! left to try goes to another zone, not back to the one it avoids.
//!
//! Every filter leaves out endpoints failing their active health checks,
//! and filters 1 to 4 ejected ones too, unless the upstream is in panic
//! (`panic.rs`), when health counts for nothing: endpoints awaiting their
//! first check are then admitted by every filter too.
//!
//! Filters 2, 4 and 6 are skipped when nothing is excluded. The last filter
//! admits every endpoint that passes its checks, so a pick over a non-empty
//! set succeeds unless all of them fail their checks outside panic.
//! In the common case (everything available) only the first filter runs and
//! the helpers below touch just the endpoints they sample.
//!
//! Uniform sampling among the eligible endpoints needs no allocation: draw
//! from the whole set and keep the draw if it is eligible (the common case);
//! otherwise count the eligible endpoints and take the k-th. Conditioned on
//! being kept, the first draw is uniform over the eligible set, and so is the
//! second, so the mixture is uniform too. When the weights differ, sampling
//! is in proportion to weight instead: one pass sums the eligible weights, a
//! second walks to the drawn point (still no allocation).

use std::sync::Arc;

use tokio::time::Instant;

use super::{EndpointLoad, Target, Zones};

/// One filter over the target list (see the module doc).
pub(super) struct Candidates<'a, T> {
    targets: &'a [Arc<T>],
    weights: &'a [u32],
    uniform: bool,
    now: Instant,
    respect_backoff: bool,
    excluded: &'a [Arc<T>],
    /// The request has been to an endpoint before (a retry or a hedge),
    /// whether or not this filter excludes it.
    later_try: bool,
    /// Endpoints awaiting their first health check are admitted.
    admit_unchecked: bool,
    panic: bool,
    /// Only the endpoints of this zone (`locality.rs`).
    zone: Option<(&'a Zones, u8)>,
}

impl<'a, T: Target> Candidates<'a, T> {
    /// The filters of the module doc, strictest first.
    pub(super) fn tiers(
        targets: &'a [Arc<T>],
        weights: &'a [u32],
        uniform: bool,
        now: Instant,
        excluded: &'a [Arc<T>],
        panic: bool,
    ) -> impl Iterator<Item = Self> {
        let later_try = !excluded.is_empty();
        [
            (true, excluded, false),
            (true, &[], false),
            (true, excluded, true),
            (true, &[], true),
            (false, excluded, true),
            (false, &[], true),
        ]
        .into_iter()
        .enumerate()
        // Without an exclusion, filters 2, 4 and 6 repeat 1, 3 and 5.
        .filter(move |(i, _)| !excluded.is_empty() || i % 2 == 0)
        .map(
            move |(_, (respect_backoff, excluded, admit_unchecked))| Self {
                targets,
                weights,
                uniform,
                now,
                respect_backoff,
                excluded,
                later_try,
                admit_unchecked,
                panic,
                zone: None,
            },
        )
    }

    /// The same filter, further limited to the endpoints of `zone`.
    pub(super) fn in_zone(self, (zones, zone): (&'a Zones, u8)) -> Self {
        Self {
            zone: Some((zones, zone)),
            ..self
        }
    }

    /// Size of the whole target list (eligible or not).
    pub(super) fn len(&self) -> usize {
        self.targets.len()
    }

    /// False for the filters that ignore backoff (every endpoint is in it).
    pub(super) fn respects_backoff(&self) -> bool {
        self.respect_backoff
    }

    pub(super) fn now(&self) -> Instant {
        self.now
    }

    pub(super) fn load(&self, i: usize) -> &EndpointLoad {
        self.targets[i].load()
    }

    /// Weight of endpoint `i` (≥ 1).
    pub(super) fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }

    /// A pick for a request's later try (a retry or a hedge).
    pub(super) fn is_later_try(&self) -> bool {
        self.later_try
    }

    /// True when every endpoint has the same weight.
    pub(super) fn uniform(&self) -> bool {
        self.uniform
    }

    pub(super) fn is_eligible(&self, i: usize) -> bool {
        let target = &self.targets[i];
        let available =
            || target.load().is_available(self.now) && (self.panic || !target.is_ejected(self.now));
        !(self.excluded.iter()).any(|excluded| Arc::ptr_eq(excluded, target))
            && self.zone.is_none_or(|(zones, zone)| zones.of(i) == zone)
            && (self.panic || target.passes_checks())
            && (self.admit_unchecked || self.panic || !target.awaits_first_check())
            && (!self.respect_backoff || available())
    }

    /// Number of eligible endpoints.
    pub(super) fn count(&self) -> usize {
        (0..self.len()).filter(|&i| self.is_eligible(i)).count()
    }

    /// Index of the `k`-th eligible endpoint.
    pub(super) fn nth(&self, k: usize) -> Option<usize> {
        (0..self.len()).filter(|&i| self.is_eligible(i)).nth(k)
    }

    /// A random eligible endpoint, drawn in proportion to weight.
    pub(super) fn random(&self) -> Option<usize> {
        if !self.uniform {
            return self.weighted_random(None);
        }
        let i = fastrand::usize(..self.len());
        if self.is_eligible(i) {
            return Some(i);
        }
        match self.count() {
            0 => None,
            n => self.nth(fastrand::usize(..n)),
        }
    }

    /// Two distinct random eligible endpoints, drawn in proportion to weight
    /// (the second among the others); the second is `None` when only one is
    /// eligible.
    pub(super) fn random_pair(&self) -> Option<(usize, Option<usize>)> {
        if !self.uniform {
            let first = self.weighted_random(None)?;
            return Some((first, self.weighted_random(Some(first))));
        }
        if self.len() >= 2 {
            let (a, b) = distinct_pair(self.len());
            if self.is_eligible(a) && self.is_eligible(b) {
                return Some((a, Some(b)));
            }
        }
        match self.count() {
            0 => None,
            1 => Some((self.nth(0)?, None)),
            n => {
                let (a, b) = distinct_pair(n);
                Some((self.nth(a)?, Some(self.nth(b)?)))
            }
        }
    }

    /// An eligible endpoint other than `skip`, drawn in proportion to weight.
    fn weighted_random(&self, skip: Option<usize>) -> Option<usize> {
        let drawable = |i: &usize| Some(*i) != skip && self.is_eligible(*i);
        let total: u64 = (0..self.len())
            .filter(drawable)
            .map(|i| u64::from(self.weights[i]))
            .sum();
        if total == 0 {
            return None;
        }
        let mut point = fastrand::u64(..total);
        (0..self.len()).filter(drawable).find(|&i| {
            let weight = u64::from(self.weights[i]);
            if point < weight {
                return true;
            }
            point -= weight;
            false
        })
    }
}

/// Two distinct uniform indices below `n` (`n >= 2`).
fn distinct_pair(n: usize) -> (usize, usize) {
    let a = fastrand::usize(..n);
    let b = fastrand::usize(..n - 1);
    (a, if b >= a { b + 1 } else { b })
}
