//! The admin dashboard (`GET /` on the admin listener) in headless Chromium:
//! the page loads with no console error, shows every upstream of a running
//! proxy with its endpoints (a routing backend's too), breaker state and concurrency limit,
//! charts the request rate from two polls, and lists the proxy-made errors; its Live view
//! streams `/tap` with filters. Screenshots are written to the test's target directory
//! (`docs/dashboard.png` is a copy of the Live view's, `dashboard-live.png`).
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

/// Sets the Live view's upstream and status filters and its headers box,
/// applies them, and waits for the new stream.
async fn apply_filters(browser: &mut Browser, upstream: &str, status: &str, headers: bool) {
    browser
        .evaluate(&format!(
            "(() => {{ const form = document.getElementById('live-filters'); \
             form.upstream.value = '{upstream}'; form.status.value = '{status}'; \
             form.headers.checked = {headers}; \
             document.getElementById('live-apply').click(); return true; }})()"
        ))
        .await;
    wait_until(
        browser,
        "document.getElementById('live-state').textContent.startsWith('streaming')",
        Duration::from_secs(10),
    )
    .await;
}

/// The dashboard's Live view: an `EventSource` on `/tap` with the form's
/// filters, rows as requests complete, headers (redacted) on a click, the
/// stream closed when the view is left. With `max_subscribers: 1`, a stream
/// opened beside the page's is refused while the page streams, and let in
/// once the page has left the view. A screenshot of the view is written
/// beside the other (`docs/dashboard.png` is a copy of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_view_streams_filtered_requests_and_lets_go_of_its_stream() {
    let mut browser = Browser::launch().await;
    let api = http_backend("live-api");
    let web = http_backend("live-web");
    let yaml = format!(
        "service: {{ name: live-svc }}\n\
         upstreams:\n\
         \x20 - {{ name: live-api, listen: 127.0.0.1:0, protocol: http, discovery: {{ static: [{api}] }}, \
         routes: [{{ name: slow, match: {{ path: {{ prefix: /slow }} }}, backend: default }}] }}\n\
         \x20 - {{ name: live-web, listen: 127.0.0.1:0, protocol: http, discovery: {{ static: [{web}] }} }}\n\
         \x20 - {{ name: live-down, listen: 127.0.0.1:0, protocol: http, discovery: {{ static: [{dead}] }} }}\n\
         admin: {{ listen: 127.0.0.1:0, tap: {{ max_subscribers: 1 }} }}\n\
         logging: {{ access_log: false }}\n",
        api = api.addr,
        web = web.addr,
        dead = dead_addr(),
    );
    let proxy = Proxy::start(&yaml).await;
    let api_url = |path: &str| format!("http://{}{path}", proxy.upstream("live-api"));
    let web_url = |path: &str| format!("http://{}{path}", proxy.upstream("live-web"));
    // The status of a /tap stream opened beside the page's (then closed).
    let tap_status = || async {
        let client = support::http_client::<http_body_util::Empty<bytes::Bytes>>(Version::HTTP_11);
        let uri: http::Uri = proxy.admin_url("/tap?upstream=nobody").parse().unwrap();
        client.get(uri).await.map(|response| response.status())
    };

    browser.navigate(&proxy.admin_url("/#live")).await;
    wait_until(
        &mut browser,
        "!!document.getElementById('live-state') \
         && document.getElementById('live-state').textContent.startsWith('streaming') \
         && document.querySelectorAll('#live-upstream option').length === 4",
        Duration::from_secs(15),
    )
    .await;
    // The page holds the one slot.
    assert_eq!(tap_status().await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);

    // Filters: live-api's 5xx only.
    apply_filters(&mut browser, "live-api", "5xx", true).await;
    get(Version::HTTP_11, &api_url("/")).await.unwrap();
    get(Version::HTTP_11, &web_url("/status/500"))
        .await
        .unwrap();
    let secret = http::Request::get(api_url("/status/503"))
        .header("authorization", "Bearer hunter2")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    support::send(Version::HTTP_11, secret).await.unwrap();
    wait_until(
        &mut browser,
        "document.querySelectorAll('#live-events tr.event').length >= 1",
        Duration::from_secs(10),
    )
    .await;
    let rows = browser
        .evaluate("[...document.querySelectorAll('#live-events tr.event')].map(r => r.innerText)")
        .await;
    let rows: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "only live-api's 503: {rows:?}");
    assert!(
        rows[0].contains("live-api") && rows[0].contains("GET") && rows[0].contains("/status/503"),
        "{rows:?}"
    );
    assert!(
        rows[0].contains("503") && rows[0].contains(&api.addr.to_string()),
        "{rows:?}"
    );
    // A click shows the headers, the credential redacted.
    browser
        .evaluate("document.querySelector('#live-events tr.event').click(), true")
        .await;
    let headers = browser
        .evaluate("document.querySelector('#live-events tr.headers').innerText")
        .await;
    let headers = headers.as_str().unwrap();
    assert!(
        headers.contains("> authorization: <redacted>") && !headers.contains("hunter2"),
        "{headers}"
    );

    // Every request again, for the screenshot: a mix of upstreams, routes and statuses.
    apply_filters(&mut browser, "", "", false).await;
    for path in [
        "/",
        "/slow/120",
        "/status/404",
        "/",
        "/slow/40",
        "/status/503",
        "/",
    ] {
        get(Version::HTTP_11, &api_url(path)).await.unwrap();
        get(Version::HTTP_11, &web_url("/")).await.unwrap();
    }
    let down = format!("http://{}/orders", proxy.upstream("live-down"));
    get(Version::HTTP_11, &down).await.unwrap();
    get(Version::HTTP_11, &api_url("/")).await.unwrap();
    wait_until(
        &mut browser,
        "document.querySelectorAll('#live-events tr.event').length >= 16",
        Duration::from_secs(10),
    )
    .await;
    let routed = browser
        .evaluate("[...document.querySelectorAll('#live-events tr.event')].some(r => r.innerText.includes('live-api / slow'))")
        .await;
    assert_eq!(routed, Value::Bool(true));
    let failed = browser
        .evaluate("[...document.querySelectorAll('#live-events tr.event')].find(r => r.innerText.includes('live-down')).innerText")
        .await;
    let failed = failed.as_str().unwrap();
    assert!(
        failed.contains("502") && failed.contains("connect_failed"),
        "{failed}"
    );
    let png = browser.screenshot(1200, 700).await;
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-live.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());

    // Leaving the view closes the stream: the slot is free again.
    browser.evaluate("location.hash = '', true").await;
    let start = Instant::now();
    while tap_status().await.unwrap() != StatusCode::OK {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the page kept its stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // With `max_subscribers: 1`, a new filter's stream can be refused (503)
    // while the server has not yet seen the previous one close; the page
    // tries again, as the rows above show, but Chromium still logs the
    // refused load. Any other console problem fails the test.
    let problems: Vec<_> = (browser.problems.iter())
        .filter(|problem| !(problem.contains("status of 503") && problem.contains("/tap?")))
        .collect();
    assert!(problems.is_empty(), "console problems: {problems:#?}");
    proxy.shutdown().await;
}
