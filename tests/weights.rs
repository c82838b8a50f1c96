//! Endpoint weights honoured by the balancer, end to end: two backends registered in the Consul
//! stand-in at `Service.Weights` 3 and 1 get 75 % / 25 % (±3 points) of 4000 requests under
//! round robin, random and least request; a warning instance counts at its warning weight when
//! `passing_only` is false; static endpoints with `weight`; `/endpoints` shows the real weights.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::{StatusCode, Version};
use serde_json::Value;

use support::config::{TestConfig, Upstream};
use support::consul::{ConsulStandIn, Health, Instance};
use support::{Proxy, get, http_backend};

const REQUESTS: usize = 4000;

fn yaml(consul: &ConsulStandIn, upstreams: &[(&str, &str, &str)]) -> String {
    let mut config = TestConfig::new().service("{ name: weights }").section(
        "consul",
        format!("{{ address: \"{}\", wait: 2s }}", consul.url()),
    );
    for (name, discovery, policy) in upstreams {
        let discovery = format!("{{ consul: {discovery} }}");
        config = config
            .upstream(Upstream::discovered(name, &discovery).protocol("http"))
            .with("load_balancing", format!("{{ policy: {policy} }}"));
    }
    config.yaml()
}

/// Waits until `upstream` has `count` endpoints (per `/endpoints`); returns their weights by
/// address.
async fn endpoint_weights(proxy: &Proxy, upstream: &str, count: usize) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = get(Version::HTTP_11, &proxy.admin_url("/endpoints"))
            .await
            .expect("admin answers");
        let json: Value = serde_json::from_str(&reply.body).expect("JSON");
        let weights: BTreeMap<String, u64> = json["upstreams"]
            .as_array()
            .expect("upstreams")
            .iter()
            .filter(|u| u["name"] == upstream)
            .flat_map(|u| u["endpoints"].as_array().cloned().unwrap_or_default())
            .map(|e| {
                let address = e["address"].as_str().unwrap_or_default().to_owned();
                (address, e["weight"].as_u64().unwrap_or(0))
            })
            .collect();
        if weights.len() == count {
            return weights;
        }
        assert!(Instant::now() < deadline, "{upstream}: {weights:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `requests` requests through `upstream`, counted per backend that answered (`x-backend`).
async fn split(proxy: &Proxy, upstream: &str, requests: usize) -> BTreeMap<String, usize> {
    let url = format!("http://{}/", proxy.upstream(upstream));
    let mut answered = BTreeMap::new();
    for _ in 0..requests {
        let reply = get(Version::HTTP_11, &url).await.expect("proxy answers");
        assert_eq!(reply.status, StatusCode::OK);
        let backend = reply.headers["x-backend"].to_str().unwrap().to_owned();
        *answered.entry(backend).or_default() += 1;
    }
    answered
}

#[tokio::test]
async fn weights_three_to_one_split_traffic_three_to_one() {
    let consul = ConsulStandIn::start();
    let heavy = http_backend("heavy");
    let light = http_backend("light");
    consul.register(Instance::new("heavy", "weighted", heavy.addr).weights(3, 1));
    consul.register(Instance::new("light", "weighted", light.addr).weights(1, 1));
    let proxy = Proxy::start(&yaml(
        &consul,
        &[
            ("w-rr", "{ service: weighted }", "round_robin"),
            ("w-random", "{ service: weighted }", "random"),
            ("w-least", "{ service: weighted }", "least_request"),
        ],
    ))
    .await;
    let weights = endpoint_weights(&proxy, "w-rr", 2).await;
    assert_eq!(weights[&heavy.addr.to_string()], 3);
    assert_eq!(weights[&light.addr.to_string()], 1);

    for upstream in ["w-rr", "w-random", "w-least"] {
        let answered = split(&proxy, upstream, REQUESTS).await;
        let heavy_share = answered.get("heavy").copied().unwrap_or(0) as f64 / REQUESTS as f64;
        eprintln!(
            "{upstream}: {answered:?} ({:.1} % heavy)",
            heavy_share * 100.0
        );
        assert!(
            (heavy_share - 0.75).abs() <= 0.03,
            "{upstream}: {answered:?}"
        );
    }
}

#[tokio::test]
async fn a_warning_instance_counts_at_its_warning_weight() {
    let consul = ConsulStandIn::start();
    let ok = http_backend("w-ok");
    let degraded = http_backend("w-degraded");
    consul.register(Instance::new("ok", "degrading", ok.addr).weights(1, 1));
    consul.register(
        Instance::new("degraded", "degrading", degraded.addr)
            .weights(3, 1)
            .health(Health::Warning),
    );
    let proxy = Proxy::start(&yaml(
        &consul,
        &[(
            "w-warn",
            "{ service: degrading, passing_only: false }",
            "round_robin",
        )],
    ))
    .await;
    let weights = endpoint_weights(&proxy, "w-warn", 2).await;
    assert_eq!(weights[&degraded.addr.to_string()], 1, "warning weight");
    // Passing again: its passing weight.
    consul.set_health("degraded", Health::Passing);
    let deadline = Instant::now() + Duration::from_secs(5);
    while endpoint_weights(&proxy, "w-warn", 2).await[&degraded.addr.to_string()] != 3 {
        assert!(Instant::now() < deadline, "passing weight not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn static_endpoints_take_their_configured_weight() {
    let heavy = http_backend("s-heavy");
    let light = http_backend("s-light");
    let yaml = format!(
        "service: {{ name: static-weights }}\nupstreams:\n  - name: s-rr\n    \
         listen: 127.0.0.1:0\n    protocol: http\n    \
         discovery: {{ static: [{{ address: {}, weight: 3 }}, {}] }}\n    \
         load_balancing: {{ policy: round_robin }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\nlogging: {{ access_log: false }}\n",
        heavy.addr, light.addr
    );
    let proxy = Proxy::start(&yaml).await;
    let weights = endpoint_weights(&proxy, "s-rr", 2).await;
    assert_eq!(weights[&heavy.addr.to_string()], 3);
    assert_eq!(weights[&light.addr.to_string()], 1);
    let answered = split(&proxy, "s-rr", 400).await;
    // Smooth weighted round robin is exact.
    assert_eq!(answered["s-heavy"], 300, "{answered:?}");
    assert_eq!(answered["s-light"], 100, "{answered:?}");
}
