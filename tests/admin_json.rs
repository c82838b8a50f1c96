//! The admin JSON: `/endpoints` shows each endpoint's state (`healthy`, `backing_off` after a
//! refused connect, `ejected` by outlier detection), EWMA, in-flight, weight and when the set
//! was last updated; `/upstreams` shows protocol, policy, breaker state, rate limit and the
//! request / proxy-made error totals.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{StatusCode, Version};
use serde_json::Value;

use support::{Proxy, dead_addr, get, http_backend};

const WAIT: Duration = Duration::from_secs(3);

async fn admin_json(proxy: &Proxy, path: &str) -> Value {
    let reply = get(Version::HTTP_11, &proxy.admin_url(path)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
    assert_eq!(reply.headers["content-type"], "application/json");
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", reply.body))
}

/// The entry of upstream `name` in a `/endpoints` or `/upstreams` document.
fn upstream<'a>(document: &'a Value, name: &str) -> &'a Value {
    document["upstreams"]
        .as_array()
        .expect("upstreams array")
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no upstream {name} in {document}"))
}

/// `address → state` of the endpoints of upstream `name`.
fn states(document: &Value, name: &str) -> Vec<(String, String)> {
    upstream(document, name)["endpoints"]
        .as_array()
        .expect("endpoints array")
        .iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap().to_owned(),
                e["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn endpoints_show_healthy_backing_off_and_ejected() {
    let live = http_backend("aj-live");
    let good = [http_backend("aj-good-1"), http_backend("aj-good-2")];
    let dead = dead_addr();
    let yaml = format!(
        "service: {{ name: test }}\n\
         upstreams:\n\
         \x20 - name: aj-dead\n    listen: 127.0.0.1:0\n    protocol: http\n    \
         discovery: {{ static: [{live}, {dead}] }}\n    \
         load_balancing: {{ policy: round_robin }}\n\
         \x20 - name: aj-eject\n    listen: 127.0.0.1:0\n    protocol: http\n    \
         discovery: {{ static: [{g1}, {g2}] }}\n    \
         load_balancing: {{ policy: round_robin }}\n    \
         outlier_detection: {{ consecutive_failures: 1, base_ejection: 30s, max_ejection_percent: 50 }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        live = live.addr,
        g1 = good[0].addr,
        g2 = good[1].addr,
    );
    let started = SystemTime::now();
    let proxy = Proxy::start(&yaml).await;

    let before = admin_json(&proxy, "/endpoints").await;
    let entry = upstream(&before, "aj-dead");
    let last_update = entry["last_update"].as_f64().expect("last_update");
    let start_secs = started.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(
        (start_secs - 1.0..start_secs + 10.0).contains(&last_update),
        "last_update {last_update}, started {start_secs}"
    );
    for endpoint in entry["endpoints"].as_array().unwrap() {
        assert_eq!(endpoint["state"], "healthy", "{endpoint}");
        assert_eq!(endpoint["weight"], 1);
        assert_eq!(endpoint["in_flight"], 0);
        assert!(endpoint["ewma_ms"].as_f64().is_some(), "{endpoint}");
    }

    // A refused connect puts the dead endpoint in backoff (250 ms at first, growing), so
    // look right after requests until it shows.
    let url = format!("http://{}/", proxy.upstream("aj-dead"));
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "resent to the live endpoint");
        let now = admin_json(&proxy, "/endpoints").await;
        let states = states(&now, "aj-dead");
        if states.contains(&(dead.to_string(), "backing_off".into())) {
            assert!(
                states.contains(&(live.addr.to_string(), "healthy".into())),
                "{states:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never backing_off: {states:?}");
    }

    // One 503 per endpoint: the first ejects its endpoint, the second may not (50 %).
    let url = format!("http://{}/status/503", proxy.upstream("aj-eject"));
    for _ in 0..2 {
        get(Version::HTTP_11, &url).await.unwrap();
    }
    let after = admin_json(&proxy, "/endpoints").await;
    let mut states: Vec<String> = states(&after, "aj-eject")
        .into_iter()
        .map(|(_, state)| state)
        .collect();
    states.sort();
    assert_eq!(states, ["ejected", "healthy"], "{after}");
}

#[tokio::test]
async fn upstreams_show_settings_breaker_rate_limit_and_totals() {
    let backend = http_backend("aj-up");
    let yaml = format!(
        "service: {{ name: test }}\n\
         upstreams:\n\
         \x20 - name: aj-limited\n    listen: 127.0.0.1:0\n    protocol: http\n    \
         discovery: {{ static: [{backend}] }}\n    \
         load_balancing: {{ policy: least_request }}\n    \
         circuit_breaker: {{ consecutive_failures: 5, open_for: 30s }}\n    \
         rate_limit: {{ requests_per_second: 0.01, burst: 2 }}\n\
         \x20 - name: aj-plain\n    listen: 127.0.0.1:0\n    protocol: http\n    \
         discovery: {{ static: [{backend}] }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        backend = backend.addr,
    );
    let proxy = Proxy::start(&yaml).await;
    let url = format!("http://{}/", proxy.upstream("aj-limited"));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get(Version::HTTP_11, &url).await.unwrap().status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    let refused = format!(
        "http://{}/private/path?token=secret",
        proxy.upstream("aj-limited")
    );
    assert_eq!(get(Version::HTTP_11, &refused).await.unwrap().status, 429);

    // Totals are counted when a response body ends; poll briefly.
    let deadline = Instant::now() + WAIT;
    let document = loop {
        let document = admin_json(&proxy, "/upstreams").await;
        if upstream(&document, "aj-limited")["requests"] == 4 || Instant::now() >= deadline {
            break document;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let limited = upstream(&document, "aj-limited");
    assert_eq!(limited["direction"], "outbound");
    assert_eq!(limited["protocol"], "http");
    assert_eq!(limited["policy"], "least_request");
    assert_eq!(limited["circuit_breaker"], "closed");
    assert_eq!(
        limited["rate_limit"]["requests_per_second"], 0.01,
        "{limited}"
    );
    assert_eq!(limited["endpoints"], 1);
    assert_eq!(limited["requests"], 4, "{limited}");
    assert_eq!(limited["errors"], 2, "{limited}");
    let bounds = limited["latency"]["bounds_ms"].as_array().unwrap();
    let counts = limited["latency"]["counts"].as_array().unwrap();
    assert_eq!((bounds.len(), counts.len()), (14, 15), "{limited}");
    assert_eq!(
        (bounds[0].as_f64(), bounds[13].as_f64()),
        (Some(0.5), Some(10_000.0))
    );
    let counted: u64 = counts.iter().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(counted, 4, "every request in one latency bucket");

    // The two 429s, newest first, without the query.
    let errors = admin_json(&proxy, "/errors").await;
    let errors = errors["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0]["upstream"], "aj-limited");
    assert_eq!(errors[0]["kind"], "rate_limited");
    assert_eq!(errors[0]["status"], 429);
    assert_eq!(errors[0]["path"], "/private/path");
    assert_eq!(errors[1]["path"], "/");
    assert!(errors[0]["time"].as_f64() >= errors[1]["time"].as_f64());

    let plain = upstream(&document, "aj-plain");
    assert_eq!(plain["circuit_breaker"], "none");
    assert_eq!(plain["rate_limit"], Value::Null);
    assert_eq!(plain["requests"], 0);
    assert_eq!(plain["errors"], 0);
}
