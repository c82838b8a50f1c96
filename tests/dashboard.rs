//! The admin dashboard (`GET /` on the admin listener) in headless Chromium:
//! the page loads with no console error, shows every upstream of a running
//! proxy with its endpoints (a routing backend's too), breaker state and concurrency limit, charts the request rate from
//! two polls, and lists the proxy-made errors. A screenshot is written to
//! the test's target directory (`docs/dashboard.png` is a copy of one).
//!
//! Needs `chromium` (installed by `scripts/test.sh`); fails, naming the
//! package, when it is missing.

mod support;

use std::time::{Duration, Instant};

use http::{StatusCode, Version};
use serde_json::Value;

use support::browser::Browser;
use support::{Proxy, dead_addr, get, http_backend};

/// Evaluates `expression` until it returns `true`, for `within` at most.
async fn wait_until(browser: &mut Browser, expression: &str, within: Duration) {
    let start = Instant::now();
    while browser.evaluate(expression).await != Value::Bool(true) {
        assert!(
            start.elapsed() < within,
            "the page never satisfied `{expression}` within {within:?}; it shows:\n{}",
            browser.evaluate("document.body.innerText").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_upstreams_endpoints_breakers_and_errors() {
    let mut browser = Browser::launch().await;
    let app = http_backend("dash-app");
    let api = http_backend("dash-api");
    let canary = http_backend("dash-canary");
    let dead = dead_addr();
    let yaml = format!(
        "service: {{ name: dash-svc, port: {app}, protocol: http }}\n\
         inbound: {{ listen: 127.0.0.1:0 }}\n\
         upstreams:\n\
         \x20 - name: dash-api\n    listen: 127.0.0.1:0\n    protocol: http\n    \
         discovery: {{ static: [{api}] }}\n    \
         rate_limit: {{ requests_per_second: 1000 }}\n    \
         adaptive_concurrency: {{ min_limit: 5, initial_limit: 40 }}\n    \
         backends: {{ canary: {{ static: [{canary}] }} }}\n    \
         routes: [{{ name: canary, match: {{ headers: [{{ name: x-canary, present: true }}] }}, backend: canary }}]\n\
         \x20 - name: dash-down\n    listen: 127.0.0.1:0\n    protocol: http\n    \
         discovery: {{ static: [{dead}] }}\n    \
         circuit_breaker: {{ consecutive_failures: 2, open_for: 60s }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        app = app.addr.port(),
        api = api.addr,
        canary = canary.addr,
    );
    let proxy = Proxy::start(&yaml).await;
    let api_url = format!("http://{}/", proxy.upstream("dash-api"));
    let down_url = format!(
        "http://{}/missing?token=secret",
        proxy.upstream("dash-down")
    );
    for _ in 0..20 {
        let reply = get(Version::HTTP_11, &api_url).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    for _ in 0..3 {
        let reply = get(Version::HTTP_11, &down_url).await.unwrap();
        assert!(reply.status.is_server_error(), "{reply:?}");
    }

    // The dashboard is one page that needs nothing but this listener.
    let page = get(Version::HTTP_11, &proxy.admin_url("/")).await.unwrap();
    assert_eq!(page.status, StatusCode::OK);
    let policy = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        policy.starts_with("default-src 'none'") && policy.contains("connect-src 'self'"),
        "{policy}"
    );
    assert!(!page.body.contains("src=\"http") && !page.body.contains("href=\"http"));

    browser.navigate(&proxy.admin_url("/")).await;
    wait_until(
        &mut browser,
        "['dash-svc', 'dash-api', 'dash-down'].every(name => \
         document.querySelector(`[data-upstream=\"${name}\"]`)) \
         && document.getElementById('status').textContent.startsWith('updated')",
        Duration::from_secs(15),
    )
    .await;

    // A rate needs two polls (2 s apart) with traffic in between, a line
    // on the chart two rates: steady traffic until the chart has 3 points.
    let traffic = tokio::spawn({
        let api_url = api_url.clone();
        async move {
            loop {
                get(Version::HTTP_11, &api_url).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    wait_until(
        &mut browser,
        "document.querySelector('[data-upstream=\"dash-api\"] .chart polyline')\
         .getAttribute('points').split(' ').length >= 3",
        Duration::from_secs(20),
    )
    .await;
    traffic.abort();
    let rate = browser
        .evaluate(
            "document.querySelector('[data-upstream=\"dash-api\"] .chart .value').textContent",
        )
        .await;
    let rate: f64 = rate.as_str().unwrap().parse().unwrap();
    assert!(rate > 5.0, "requests / s shown: {rate}");

    let card =
        |name: &str| format!("document.querySelector('[data-upstream=\"{name}\"]').innerText");
    let api_card = browser.evaluate(&card("dash-api")).await;
    let api_card = api_card.as_str().unwrap();
    assert!(api_card.contains(&api.addr.to_string()), "{api_card}");
    assert!(
        api_card.contains("healthy") && api_card.contains("1000 rps limit"),
        "{api_card}"
    );
    assert!(api_card.contains("breaker none"), "{api_card}");
    // The adaptive concurrency limit, from /metrics: a number with what is in flight.
    let limit = browser
        .evaluate(
            "[...document.querySelectorAll('[data-upstream=\"dash-api\"] .chart.limit .value')]\
             .map(v => v.textContent).join()",
        )
        .await;
    let limit = limit.as_str().unwrap();
    assert!(
        limit.ends_with(" in flight)") && limit.split(' ').next().unwrap().parse::<u32>().is_ok(),
        "concurrency limit shown: {limit:?}"
    );
    let down_limit = browser.evaluate(&card("dash-down")).await;
    assert!(
        !down_limit.as_str().unwrap().contains("concurrency limit"),
        "no limit, no chart"
    );
    // The routing backend's own endpoints, under the upstream.
    assert!(
        api_card.contains("backend canary") && api_card.contains(&canary.addr.to_string()),
        "{api_card}"
    );

    let upstreams = get(Version::HTTP_11, &proxy.admin_url("/upstreams"))
        .await
        .unwrap();
    let upstreams: Value = serde_json::from_str(&upstreams.body).unwrap();
    let down_state = upstreams["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "dash-down")
        .unwrap()["circuit_breaker"]
        .as_str()
        .unwrap()
        .replace('_', "-");
    assert_eq!(down_state, "open", "two failed connects open the breaker");
    let down_card = browser.evaluate(&card("dash-down")).await;
    assert!(
        down_card.as_str().unwrap().contains("breaker open"),
        "{down_card}"
    );

    let errors = browser
        .evaluate("document.getElementById('errors').innerText")
        .await;
    let errors = errors.as_str().unwrap();
    assert!(errors.contains("connect_failed"), "{errors}");
    assert!(errors.contains("circuit_open"), "{errors}");
    assert!(
        errors.contains("GET /missing") && !errors.contains("secret"),
        "{errors}"
    );

    let png = browser.screenshot(1200, 900).await;
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());

    assert!(
        browser.problems.is_empty(),
        "console problems: {:#?}",
        browser.problems
    );
    proxy.shutdown().await;
}
