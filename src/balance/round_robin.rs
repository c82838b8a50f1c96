//! Round robin: endpoints in turn, from one shared atomic counter.
//!
//! The classic policy (Envoy `ROUND_ROBIN` without weights, nginx's default).
//! Pick number `n` goes to endpoint `n mod N`; the counter starts at a random
//! offset so that proxies which rebuild their balancer at the same moment do
//! not all send their next request to the same endpoint. If that endpoint is
//! not eligible (backoff, excluded), pick `n` goes to the `(n mod k)`-th of the
//! `k` eligible endpoints instead, which keeps the remaining endpoints evenly
//! loaded rather than doubling the share of the one after the gap.
//!
//! The counter is a single cache line shared by every core; a `fetch_add` per
//! request is cheap next to the request itself.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::Target;
use super::candidates::Candidates;

pub(super) struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub(super) fn new() -> Self {
        Self {
            next: AtomicUsize::new(fastrand::usize(..)),
        }
    }

    pub(super) fn pick<T: Target>(&self, c: &Candidates<'_, T>) -> Option<usize> {
        let n = self.next.fetch_add(1, Relaxed);
        let i = n % c.len();
        if c.is_eligible(i) {
            return Some(i);
        }
        match c.count() {
            0 => None,
            k => c.nth(n % k),
        }
    }
}
