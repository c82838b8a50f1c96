//! Every in-flight figure of an upstream, as `/metrics` shows it, and a bounded wait for all
//! of them to be back at 0 (issue 12: nothing may stay counted after any kind of ending).

use std::time::{Duration, Instant};

use super::Proxy;
use super::prom;

/// The listener's gauge, the pool's queue, the concurrency limit's gauge (0 without a limit)
/// and the upstream's endpoints' gauges, summed. The endpoints' gauge must be there, so that a
/// check cannot pass by not finding it.
pub async fn figures(proxy: &Proxy, upstream: &str) -> [f64; 4] {
    let text = prom::scrape(&proxy.admin_url("/metrics")).await;
    let listener = [("direction", "outbound"), ("upstream", upstream)];
    let gauge = |name, labels: &[(&str, &str)]| prom::value(&text, name, labels).unwrap_or(0.0);
    let endpoints = format!("remora_endpoint_in_flight{{upstream=\"{upstream}\"");
    assert!(text.contains(&endpoints), "{upstream}: no endpoint gauge");
    [
        gauge("remora_requests_in_flight", &listener),
        gauge(
            "remora_upstream_pool_pending_requests",
            &[("upstream", upstream)],
        ),
        gauge("remora_concurrency_in_flight", &listener),
        prom::sum(
            &text,
            "remora_endpoint_in_flight",
            &[("upstream", upstream)],
        ),
    ]
}

/// Waits (at most 5 s) until every figure of `upstream` is 0; `after` names what just ended.
pub async fn assert_nothing_in_flight(proxy: &Proxy, upstream: &str, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let figures = figures(proxy, upstream).await;
        if figures == [0.0; 4] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {after}: in flight (listener, pool queue, concurrency limit, endpoints) = {figures:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
