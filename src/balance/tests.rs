//! Tests of the balancer and its policies. Randomness is seeded
//! (`fastrand::seed` seeds the test thread's generator), time is paused.
//!
//! Over 500 lines: the tests of every policy share the helpers at the top
//! (endpoint sets, pick histograms, key maps); a split by policy would
//! scatter them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use super::*;

const ALL: [LoadBalancingPolicy; 5] = [
    LoadBalancingPolicy::RoundRobin,
    LoadBalancingPolicy::Random,
    LoadBalancingPolicy::LeastRequest,
    LoadBalancingPolicy::P2cEwma,
    LoadBalancingPolicy::RingHash,
];

/// How long a probe claim holds (the connect timeout in the proxy).
const PROBE_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Ep {
    id: String,
    load: EndpointLoad,
    /// Fails its active health checks.
    failing: AtomicBool,
    /// Awaits its first health check.
    pending: AtomicBool,
}

impl Target for Ep {
    fn load(&self) -> &EndpointLoad {
        &self.load
    }

    fn passes_checks(&self) -> bool {
        !self.failing.load(Relaxed)
    }

    fn awaits_first_check(&self) -> bool {
        self.pending.load(Relaxed)
    }
}

fn endpoints(n: usize) -> Vec<Arc<Ep>> {
    (0..n)
        .map(|i| {
            Arc::new(Ep {
                id: format!("10.0.0.{i}:8080"),
                load: EndpointLoad::new(PROBE_WINDOW),
                failing: AtomicBool::new(false),
                pending: AtomicBool::new(false),
            })
        })
        .collect()
}

fn balancer(policy: LoadBalancingPolicy, eps: &[Arc<Ep>]) -> Balancer<Ep> {
    weighted(policy, eps, &vec![1; eps.len()])
}

fn weighted(policy: LoadBalancingPolicy, eps: &[Arc<Ep>], weights: &[u32]) -> Balancer<Ep> {
    let members = eps
        .iter()
        .zip(weights)
        .map(|(e, &weight)| Member {
            id: e.id.clone(),
            target: Arc::clone(e),
            weight,
        })
        .collect();
    Balancer::new(policy, members)
}

/// A balancer over `eps`, each in the zone of the same place in `zones`,
/// for a proxy in zone `a`.
fn zoned(policy: LoadBalancingPolicy, eps: &[Arc<Ep>], zones: &[&str]) -> Balancer<Ep> {
    let zones: Vec<Option<Arc<str>>> = zones.iter().map(|z| Some(Arc::from(*z))).collect();
    balancer(policy, eps).with_zones(Zones::new("a", &zones, "balance-test").expect("zones"))
}

fn index(b: &Balancer<Ep>, picked: &Arc<Ep>) -> usize {
    b.targets()
        .iter()
        .position(|t| Arc::ptr_eq(t, picked))
        .expect("picked target is in the set")
}

/// Picks per target over `n` picks (with distinct hash keys, so ring hash
/// spreads too).
fn histogram(b: &Balancer<Ep>, n: usize, exclude: &[Arc<Ep>]) -> Vec<usize> {
    let mut counts = vec![0; b.len()];
    for k in 0..n {
        let key = format!("key-{k}");
        let picked = b.pick(Some(key.as_bytes()), exclude).expect("non-empty");
        counts[index(b, &picked)] += 1;
    }
    counts
}

fn key_map(b: &Balancer<Ep>, keys: usize) -> Vec<String> {
    (0..keys)
        .map(|k| {
            let key = format!("key-{k}");
            b.pick(Some(key.as_bytes()), &[])
                .expect("non-empty")
                .id
                .clone()
        })
        .collect()
}

#[test]
fn balancer_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Balancer<Ep>>();
}

#[test]
fn empty_set_picks_none() {
    for policy in ALL {
        let b = balancer(policy, &[]);
        assert!(b.is_empty());
        assert!(b.pick(Some(b"k"), &[]).is_none(), "{policy:?}");
        assert!(b.pick(None, &[]).is_none(), "{policy:?}");
    }
}

#[test]
fn single_target_always_picked() {
    let eps = endpoints(1);
    for policy in ALL {
        let b = balancer(policy, &eps);
        for _ in 0..10 {
            assert!(Arc::ptr_eq(&b.pick(None, &[]).expect("one"), &eps[0]));
            // Excluding the only endpoint still picks it.
            assert!(Arc::ptr_eq(
                &b.pick(None, std::slice::from_ref(&eps[0])).expect("one"),
                &eps[0]
            ));
        }
    }
}

#[test]
fn a_new_endpoint_waits_for_its_first_check_unless_no_checked_one_can_serve() {
    fastrand::seed(7);
    let eps = endpoints(3);
    for policy in ALL {
        let b = balancer(policy, &eps);
        eps[2].pending.store(true, Relaxed);
        assert_eq!(
            histogram(&b, 300, &[])[2],
            0,
            "{policy:?}: new endpoint picked"
        );
        // A retry that has tried both checked ones goes back to one of them.
        let h = histogram(&b, 300, &eps[..2]);
        assert_eq!(h[2], 0, "{policy:?}: {h:?}");
        // At start every endpoint awaits its first check: any may serve.
        for ep in &eps {
            ep.pending.store(true, Relaxed);
        }
        assert_eq!(histogram(&b, 300, &[]).iter().sum::<usize>(), 300);
        assert_eq!(histogram(&b, 300, &eps[..2]), [0, 0, 300], "{policy:?}");
        // The checked ones failing, the new one is the last resort.
        eps[0].pending.store(false, Relaxed);
        eps[1].pending.store(false, Relaxed);
        eps[0].failing.store(true, Relaxed);
        eps[1].failing.store(true, Relaxed);
        assert_eq!(histogram(&b, 300, &[]), [0, 0, 300], "{policy:?}");
        for ep in &eps {
            ep.pending.store(false, Relaxed);
            ep.failing.store(false, Relaxed);
        }
    }
}

#[test]
fn endpoints_awaiting_a_first_check_do_not_count_for_the_panic_threshold() {
    fastrand::seed(7);
    // One passing, two failing, two new: one healthy of the three checked
    // is below 50 %, so the upstream is in panic and health counts for
    // nothing: all five serve. Counted as healthy, the new ones would have
    // kept the upstream out of panic, every request on the one endpoint.
    let eps = endpoints(5);
    eps[1].failing.store(true, Relaxed);
    eps[2].failing.store(true, Relaxed);
    eps[3].pending.store(true, Relaxed);
    eps[4].pending.store(true, Relaxed);
    let b = balancer(LoadBalancingPolicy::RoundRobin, &eps)
        .with_panic(Arc::new(PanicMode::new(50, "balance-test")));
    assert_eq!(histogram(&b, 300, &[]), [60; 5]);
    // One failing, one new (a deploy replacing instances): in panic, the
    // new one serves too, not only the failing one.
    let eps = endpoints(2);
    eps[0].failing.store(true, Relaxed);
    eps[1].pending.store(true, Relaxed);
    let b = balancer(LoadBalancingPolicy::RoundRobin, &eps)
        .with_panic(Arc::new(PanicMode::new(50, "balance-test")));
    assert_eq!(histogram(&b, 300, &[]), [150, 150]);
}

#[tokio::test(start_paused = true)]
async fn round_robin_spreads_the_turns_of_endpoints_out_evenly() {
    // Two of four out: each gap's turn must not always land on the same
    // remaining endpoint (it did: [1000, 0, 3000, 0]).
    let eps = endpoints(4);
    let b = balancer(LoadBalancingPolicy::RoundRobin, &eps);
    for i in [1, 3] {
        eps[i]
            .load
            .mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
    }
    let h = histogram(&b, 4_000, &[]);
    assert_eq!(h[1] + h[3], 0, "{h:?}");
    assert!(
        h[0].abs_diff(2_000) <= 2 && h[2].abs_diff(2_000) <= 2,
        "{h:?}"
    );
}

#[test]
fn round_robin_over_an_interleaved_local_zone_is_even() {
    let eps = endpoints(4);
    let b = zoned(LoadBalancingPolicy::RoundRobin, &eps, &["a", "b", "a", "b"]);
    let h = histogram(&b, 4_000, &[]);
    assert!(
        h[0].abs_diff(2_000) <= 2 && h[2].abs_diff(2_000) <= 2,
        "{h:?}"
    );
}

#[test]
fn with_zones_a_retry_leaves_the_zone_rather_than_return() {
    // One endpoint per zone, the local one excluded (its try failed): the
    // retry goes to another zone (it went back to a: [300, 0, 0]).
    fastrand::seed(11);
    let eps = endpoints(3);
    for policy in ALL {
        let b = zoned(policy, &eps, &["a", "b", "c"]);
        let h = histogram(&b, 300, std::slice::from_ref(&eps[0]));
        assert_eq!(h[0], 0, "{policy:?} {h:?}");
    }
}

#[test]
fn round_robin_is_exact() {
    let eps = endpoints(3);
    let b = balancer(LoadBalancingPolicy::RoundRobin, &eps);
    assert_eq!(histogram(&b, 30_000, &[]), vec![10_000; 3]);
    // Strict rotation.
    let first = index(&b, &b.pick(None, &[]).expect("non-empty"));
    for k in 1..30 {
        assert_eq!(
            index(&b, &b.pick(None, &[]).expect("non-empty")),
            (first + k) % 3
        );
    }
}

#[tokio::test(start_paused = true)]
async fn round_robin_spreads_evenly_around_backoff() {
    let eps = endpoints(3);
    let b = balancer(LoadBalancingPolicy::RoundRobin, &eps);
    eps[1]
        .load
        .mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
    let h = histogram(&b, 30_000, &[]);
    assert_eq!(h[1], 0);
    assert!(
        h[0].abs_diff(15_000) <= 2 && h[2].abs_diff(15_000) <= 2,
        "{h:?}"
    );
}

#[test]
fn random_is_uniform() {
    fastrand::seed(1);
    let eps = endpoints(4);
    let b = balancer(LoadBalancingPolicy::Random, &eps);
    let h = histogram(&b, 30_000, &[]);
    for c in &h {
        assert!(c.abs_diff(7_500) <= 375, "{h:?}"); // ±5%
    }
}

#[test]
fn least_request_prefers_idle() {
    fastrand::seed(2);
    let eps = endpoints(3);
    let b = balancer(LoadBalancingPolicy::LeastRequest, &eps);
    let _busy: Vec<InFlight> = (0..3)
        .map(|_| eps[0].load.start())
        .chain([eps[1].load.start()])
        .collect();
    assert_eq!(histogram(&b, 3_000, &[]), vec![0, 0, 3_000]);
}

#[test]
fn least_request_breaks_ties_randomly_and_levels_load() {
    fastrand::seed(3);
    let eps = endpoints(3);
    let b = balancer(LoadBalancingPolicy::LeastRequest, &eps);
    // All idle: random tie-break, ±5%.
    let h = histogram(&b, 30_000, &[]);
    for c in &h {
        assert!(c.abs_diff(10_000) <= 500, "{h:?}");
    }
    // Holding every request open keeps the in-flight counts level.
    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(b.pick(None, &[]).expect("non-empty").load.start());
    }
    let in_flight: Vec<u32> = eps.iter().map(|e| e.load.in_flight()).collect();
    assert_eq!(in_flight, vec![100; 3]);
    drop(held);
    assert!(eps.iter().all(|e| e.load.in_flight() == 0));
}

#[tokio::test(start_paused = true)]
async fn p2c_avoids_slow_endpoint() {
    fastrand::seed(4);
    let eps = endpoints(4);
    let b = balancer(LoadBalancingPolicy::P2cEwma, &eps);
    for (i, e) in eps.iter().enumerate() {
        let rtt = if i == 0 { 300 } else { 30 };
        e.load.start().observe_rtt(Duration::from_millis(rtt));
    }
    let h = histogram(&b, 30_000, &[]);
    // The 10× slower endpoint loses every comparison while the others idle.
    assert!(h[0] < 300, "{h:?}");
    for c in &h[1..] {
        assert!(c.abs_diff(10_000) <= 500, "{h:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn p2c_avoids_slow_endpoint_under_load() {
    fastrand::seed(5);
    let eps = endpoints(3);
    let b = balancer(LoadBalancingPolicy::P2cEwma, &eps);
    for (i, e) in eps.iter().enumerate() {
        let rtt = if i == 0 { 300 } else { 30 };
        e.load.start().observe_rtt(Duration::from_millis(rtt));
    }
    // Requests pile up (never complete): the in-flight factor eventually
    // sends some traffic to the slow endpoint, but far less.
    let mut held = Vec::new();
    for _ in 0..3_000 {
        held.push(b.pick(None, &[]).expect("non-empty").load.start());
    }
    let in_flight: Vec<u32> = eps.iter().map(|e| e.load.in_flight()).collect();
    assert!(in_flight[0] * 5 < in_flight[1], "{in_flight:?}");
    assert!(in_flight[0] * 5 < in_flight[2], "{in_flight:?}");
}

#[tokio::test(start_paused = true)]
async fn p2c_avoids_endpoint_with_many_in_flight() {
    fastrand::seed(6);
    let eps = endpoints(3);
    let b = balancer(LoadBalancingPolicy::P2cEwma, &eps);
    let _busy: Vec<InFlight> = (0..20).map(|_| eps[0].load.start()).collect();
    let h = histogram(&b, 30_000, &[]);
    assert!(h[0] < 300, "{h:?}");
}

#[tokio::test(start_paused = true)]
async fn p2c_probes_spiked_endpoint_again_after_idle_decay() {
    fastrand::seed(7);
    let eps = endpoints(3);
    let b = balancer(LoadBalancingPolicy::P2cEwma, &eps);
    eps[0].load.start().observe_rtt(Duration::from_millis(300));
    assert!(histogram(&b, 1_000, &[])[0] < 10);
    // The others keep being observed at 30 ms; the idle one decays.
    for _ in 0..40 {
        tokio::time::advance(Duration::from_secs(1)).await;
        for e in &eps[1..] {
            e.load.start().observe_rtt(Duration::from_millis(30));
        }
    }
    // 300 ms × e^-4 ≈ 5.5 ms < 30 ms: it wins its comparisons again.
    assert!(histogram(&b, 1_000, &[])[0] > 500);
}

#[tokio::test(start_paused = true)]
async fn p2c_with_one_available_picks_it() {
    let eps = endpoints(3);
    let b = balancer(LoadBalancingPolicy::P2cEwma, &eps);
    eps[0]
        .load
        .mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
    eps[2]
        .load
        .mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
    assert_eq!(histogram(&b, 1_000, &[]), vec![0, 1_000, 0]);
}

#[tokio::test(start_paused = true)]
async fn every_policy_skips_backoff_until_it_expires() {
    fastrand::seed(8);
    let eps = endpoints(3);
    eps[1]
        .load
        .mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
    for policy in ALL {
        let b = balancer(policy, &eps);
        let h = histogram(&b, 3_000, &[]);
        assert_eq!(h[1], 0, "{policy:?} {h:?}");
        assert!(h[0] > 0 && h[2] > 0, "{policy:?} {h:?}");
    }
    for policy in ALL {
        // When the backoff expires, one pick probes the endpoint; until the
        // probe's outcome is known the others keep away from it.
        tokio::time::advance(DEFAULT_BACKOFF).await;
        let b = balancer(policy, &eps);
        assert_eq!(histogram(&b, 3_000, &[])[1], 1, "{policy:?}");
        // The probe connected: back in full rotation.
        eps[1].load.mark_reachable();
        let h = histogram(&b, 3_000, &[]);
        assert!(h[1] > 500, "{policy:?} {h:?}");
        eps[1]
            .load
            .mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
    }
}

#[tokio::test(start_paused = true)]
async fn every_policy_probes_once_per_expired_backoff() {
    fastrand::seed(12);
    for policy in ALL {
        let eps = endpoints(3);
        let b = balancer(policy, &eps);
        eps[1]
            .load
            .mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
        // Each expiry: exactly one probe among many picks, which fails and
        // doubles the backoff (250 ms, 500 ms, 1 s).
        for delay_ms in [250, 500, 1000] {
            tokio::time::advance(Duration::from_millis(delay_ms)).await;
            let h = histogram(&b, 1_000, &[]);
            assert_eq!(h[1], 1, "{policy:?} after {delay_ms} ms: {h:?}");
            let next = eps[1]
                .load
                .mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
            assert_eq!(next, Duration::from_millis(delay_ms * 2), "{policy:?}");
        }
        // A probe whose outcome never comes (cancelled) holds for the probe
        // window only; then the next pick probes.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(histogram(&b, 1_000, &[])[1], 1, "{policy:?}");
        tokio::time::advance(PROBE_WINDOW - Duration::from_millis(1)).await;
        assert_eq!(histogram(&b, 1_000, &[])[1], 0, "{policy:?}");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(histogram(&b, 1_000, &[])[1], 1, "{policy:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_lone_endpoint_in_backoff_still_gets_every_request() {
    // When every endpoint is in backoff the picks ignore it (and claim
    // nothing), so a lone dead endpoint is still tried by every request.
    let eps = endpoints(1);
    let b = balancer(LoadBalancingPolicy::P2cEwma, &eps);
    eps[0]
        .load
        .mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
    assert_eq!(histogram(&b, 10, &[]), vec![10]);
    tokio::time::advance(DEFAULT_BACKOFF).await;
    // The first pick after the expiry probes; the others fall back.
    assert_eq!(histogram(&b, 10, &[]), vec![10]);
}

#[tokio::test(start_paused = true)]
async fn all_in_backoff_still_picks_as_if_none_were() {
    fastrand::seed(9);
    // Two and three endpoints: round robin's turns must not depend on how
    // many filters came up empty before the one that picks.
    for n in [2, 3] {
        let eps = endpoints(n);
        for e in &eps {
            e.load.mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
        }
        for policy in ALL {
            let h = histogram(&balancer(policy, &eps), 3_000, &[]);
            assert!(h.iter().all(|&c| c > 500), "{policy:?} {h:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn exclude_avoids_the_endpoint_when_another_exists() {
    fastrand::seed(10);
    let eps = endpoints(3);
    for policy in ALL {
        let b = balancer(policy, &eps);
        let h = histogram(&b, 3_000, std::slice::from_ref(&eps[0]));
        assert_eq!(h[0], 0, "{policy:?} {h:?}");
        assert!(h[1] > 500 && h[2] > 500, "{policy:?} {h:?}");
    }
    // Exclusion beats backoff in the sense that a retry avoids the excluded
    // endpoint even if the alternative is backing off...
    for e in &eps[1..] {
        e.load.mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
    }
    eps[0]
        .load
        .mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
    for policy in ALL {
        let h = histogram(
            &balancer(policy, &eps),
            1_000,
            std::slice::from_ref(&eps[0]),
        );
        assert_eq!(h[0], 0, "{policy:?} {h:?}");
    }
    // ...only when everything is backing off; an available excluded endpoint
    // is preferred over ones known to refuse connections.
    eps[0].load.mark_reachable();
    for policy in ALL {
        let h = histogram(
            &balancer(policy, &eps),
            1_000,
            std::slice::from_ref(&eps[0]),
        );
        assert_eq!(h, vec![1_000, 0, 0], "{policy:?}");
    }
}

#[test]
fn ring_hash_is_stable_and_order_independent() {
    let eps = endpoints(10);
    let b = balancer(LoadBalancingPolicy::RingHash, &eps);
    let first = key_map(&b, 10_000);
    assert_eq!(first, key_map(&b, 10_000));
    let mut reversed = eps.clone();
    reversed.reverse();
    assert_eq!(
        first,
        key_map(&balancer(LoadBalancingPolicy::RingHash, &reversed), 10_000)
    );
}

#[test]
fn ring_hash_balance() {
    let eps = endpoints(10);
    let b = balancer(LoadBalancingPolicy::RingHash, &eps);
    let h = histogram(&b, 10_000, &[]);
    eprintln!("ring hash keys per endpoint (N=10, 10k keys): {h:?}");
    for c in &h {
        assert!((500..=1_500).contains(c), "{h:?}");
    }
}

#[test]
fn ring_hash_adding_an_endpoint_moves_about_one_in_n_plus_one() {
    let eps = endpoints(11);
    let before = key_map(&balancer(LoadBalancingPolicy::RingHash, &eps[..10]), 10_000);
    let after = key_map(&balancer(LoadBalancingPolicy::RingHash, &eps), 10_000);
    let new_id = &eps[10].id;
    let moved: Vec<usize> = (0..before.len())
        .filter(|&k| before[k] != after[k])
        .collect();
    eprintln!(
        "ring hash: adding an 11th endpoint moved {} of 10000 keys ({:.2}%, ideal {:.2}%)",
        moved.len(),
        moved.len() as f64 / 100.0,
        100.0 / 11.0
    );
    assert!(moved.iter().all(|&k| &after[k] == new_id));
    let fraction = moved.len() as f64 / 10_000.0;
    assert!((0.5 / 11.0..=1.5 / 11.0).contains(&fraction), "{fraction}");
}

#[test]
fn ring_hash_removing_an_endpoint_moves_only_its_keys() {
    let eps = endpoints(10);
    let before = key_map(&balancer(LoadBalancingPolicy::RingHash, &eps), 10_000);
    let removed = &eps[3].id;
    let rest: Vec<Arc<Ep>> = eps.iter().filter(|e| &e.id != removed).cloned().collect();
    let after = key_map(&balancer(LoadBalancingPolicy::RingHash, &rest), 10_000);
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if b == removed {
            assert_ne!(a, removed);
            moved += 1;
        } else {
            assert_eq!(a, b);
        }
    }
    eprintln!("ring hash: removing one of 10 endpoints moved {moved} of 10000 keys");
}

#[tokio::test(start_paused = true)]
async fn ring_hash_walks_past_unavailable_endpoint_and_returns() {
    let eps = endpoints(10);
    let b = balancer(LoadBalancingPolicy::RingHash, &eps);
    let before = key_map(&b, 10_000);
    eps[3]
        .load
        .mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
    let during = key_map(&b, 10_000);
    let mut new_homes = HashMap::new();
    for (b, d) in before.iter().zip(&during) {
        if b == &eps[3].id {
            assert_ne!(d, b);
            *new_homes.entry(d.clone()).or_insert(0) += 1;
        } else {
            assert_eq!(d, b);
        }
    }
    // Its keys spread over several neighbours rather than one.
    assert!(new_homes.len() >= 5, "{new_homes:?}");
    // The backoff expires and the one probe connects: every key returns.
    tokio::time::advance(DEFAULT_BACKOFF).await;
    b.pick(Some(b"probe"), &[]);
    eps[3].load.mark_reachable();
    assert_eq!(key_map(&b, 10_000), before);
}

#[test]
fn ring_hash_retry_goes_to_the_keys_second_choice() {
    let eps = endpoints(5);
    let b = balancer(LoadBalancingPolicy::RingHash, &eps);
    let first = b.pick(Some(b"session-42"), &[]).expect("non-empty");
    let retry = b
        .pick(Some(b"session-42"), std::slice::from_ref(&first))
        .expect("non-empty");
    assert!(!Arc::ptr_eq(&first, &retry));
    for _ in 0..10 {
        let again = b
            .pick(Some(b"session-42"), std::slice::from_ref(&first))
            .expect("non-empty");
        assert!(Arc::ptr_eq(&again, &retry));
    }
}

#[test]
fn ring_hash_without_key_is_random() {
    fastrand::seed(11);
    let eps = endpoints(4);
    let b = balancer(LoadBalancingPolicy::RingHash, &eps);
    let mut counts = [0usize; 4];
    for _ in 0..30_000 {
        counts[index(&b, &b.pick(None, &[]).expect("non-empty"))] += 1;
    }
    for c in counts {
        assert!(c.abs_diff(7_500) <= 375, "{counts:?}");
    }
}

/// Share of the picks (in %) that went to each endpoint.
fn shares(h: &[usize]) -> Vec<f64> {
    let total: usize = h.iter().sum();
    h.iter().map(|&c| c as f64 * 100.0 / total as f64).collect()
}

#[test]
fn smooth_weighted_round_robin_is_exact_and_interleaved() {
    let eps = endpoints(3);
    let b = weighted(LoadBalancingPolicy::RoundRobin, &eps, &[5, 1, 1]);
    let sequence: Vec<usize> = (0..7)
        .map(|_| index(&b, &b.pick(None, &[]).expect("non-empty")))
        .collect();
    // nginx's example, a a b a c a a, from a random place in it.
    let nginx = [0, 0, 1, 0, 2, 0, 0];
    assert!(
        (0..7).any(|start| (0..7).all(|k| sequence[k] == nginx[(start + k) % 7])),
        "{sequence:?}"
    );
    assert_eq!(histogram(&b, 7_000, &[]), vec![5_000, 1_000, 1_000]);
}

#[test]
fn round_robin_turns_are_the_first_tries() {
    fastrand::seed(15);
    let eps = endpoints(2);
    for (weights, expected) in [([1, 1], [1_500, 1_500]), ([1, 2], [1_000, 2_000])] {
        let b = weighted(LoadBalancingPolicy::RoundRobin, &eps, &weights);
        let mut first = [0usize; 2];
        for _ in 0..3_000 {
            // Every request also makes a second pick (a hedge, or a retry).
            let tried = b.pick(None, &[]).expect("non-empty");
            first[index(&b, &tried)] += 1;
            let again = b
                .pick(None, std::slice::from_ref(&tried))
                .expect("non-empty");
            assert!(!Arc::ptr_eq(&again, &tried));
        }
        // Exactly the turns' split: the second picks took none of them.
        assert_eq!(first, expected, "{weights:?}");
    }
}

#[test]
fn rebuilt_weighted_round_robin_starts_anywhere_in_proportion() {
    fastrand::seed(14);
    let eps = endpoints(3);
    let mut first = [0usize; 3];
    for _ in 0..7_000 {
        let b = weighted(LoadBalancingPolicy::RoundRobin, &eps, &[5, 1, 1]);
        first[index(&b, &b.pick(None, &[]).expect("non-empty"))] += 1;
    }
    // Each rebuild's first pick: 5 : 1 : 1, not always the heaviest.
    for (picks, expected) in first.into_iter().zip([5_000, 1_000, 1_000]) {
        assert!(picks.abs_diff(expected) <= 150, "{first:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn smooth_weighted_round_robin_skips_backoff() {
    let eps = endpoints(3);
    let b = weighted(LoadBalancingPolicy::RoundRobin, &eps, &[3, 1, 1]);
    eps[1]
        .load
        .mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
    assert_eq!(histogram(&b, 4_000, &[]), vec![3_000, 0, 1_000]);
}

#[test]
fn random_least_request_and_ring_hash_follow_weights() {
    fastrand::seed(11);
    let eps = endpoints(2);
    for policy in [
        LoadBalancingPolicy::Random,
        LoadBalancingPolicy::LeastRequest,
        LoadBalancingPolicy::RingHash,
    ] {
        let b = weighted(policy, &eps, &[3, 1]);
        let share = shares(&histogram(&b, 40_000, &[]))[0];
        assert!((72.0..=78.0).contains(&share), "{policy:?}: {share:.1}%");
    }
}

#[test]
fn weighted_least_request_holds_in_flight_in_proportion() {
    fastrand::seed(12);
    let eps = endpoints(2);
    let b = weighted(LoadBalancingPolicy::LeastRequest, &eps, &[3, 1]);
    let held: Vec<InFlight> = (0..400)
        .map(|_| b.pick(None, &[]).expect("non-empty").load.start())
        .collect();
    let in_flight: Vec<u32> = eps.iter().map(|e| e.load.in_flight()).collect();
    assert_eq!(in_flight, vec![300, 100]);
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn weighted_p2c_divides_cost_by_weight() {
    fastrand::seed(13);
    let eps = endpoints(2);
    let b = weighted(LoadBalancingPolicy::P2cEwma, &eps, &[3, 1]);
    // Equal latency: the heavier endpoint stays the cheaper one until it holds about three
    // times the in-flight requests.
    let held: Vec<InFlight> = (0..400)
        .map(|_| b.pick(None, &[]).expect("non-empty").load.start())
        .collect();
    let in_flight: Vec<u32> = eps.iter().map(|e| e.load.in_flight()).collect();
    assert!(in_flight[0].abs_diff(300) <= 2, "{in_flight:?}");
    drop(held);
}

#[test]
fn weighted_random_pairs_are_drawn_in_proportion() {
    fastrand::seed(14);
    let eps = endpoints(4);
    // Idle, equal cost: p2c keeps its first candidate, drawn by weight.
    let b = weighted(LoadBalancingPolicy::Random, &eps, &[4, 2, 1, 1]);
    let share = shares(&histogram(&b, 40_000, &[]));
    for (got, want) in share.iter().zip([50.0, 25.0, 12.5, 12.5]) {
        assert!((got - want).abs() <= 1.5, "{share:?}");
    }
}

#[test]
fn equal_weights_change_nothing() {
    let eps = endpoints(3);
    let b = weighted(LoadBalancingPolicy::RoundRobin, &eps, &[7, 7, 7]);
    let first = index(&b, &b.pick(None, &[]).expect("non-empty"));
    for k in 1..30 {
        assert_eq!(
            index(&b, &b.pick(None, &[]).expect("non-empty")),
            (first + k) % 3
        );
    }
    let ring = weighted(LoadBalancingPolicy::RingHash, &eps, &[2, 2, 2]);
    assert_eq!(
        key_map(&ring, 1_000),
        key_map(&balancer(LoadBalancingPolicy::RingHash, &eps), 1_000)
    );
    assert_eq!(b.weights(), [7, 7, 7]);
}
