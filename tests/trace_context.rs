//! Trace context across two remora hops (app → remora A → remora B → app):
//! the trace id is kept, each hop adds its own span, invalid `traceparent`s
//! are replaced, B3 is read and written when listed, and `x-request-id` is
//! created, propagated and echoed.

mod support;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;

use support::proxy::two_hops;
use support::{Proxy, http_backend, send};

/// What the app saw: (headers as JSON, the response's x-request-id).
async fn call(a: &Proxy, headers: &[(&str, &str)]) -> (serde_json::Value, Option<String>) {
    let mut request = Request::get(format!("http://{}/headers", a.upstream("b")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let reply = send(
        Version::HTTP_11,
        request.body(Full::new(Bytes::new())).unwrap(),
    )
    .await
    .unwrap();
    let seen: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let id = reply
        .headers
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (seen["headers"].clone(), id)
}

fn parts(traceparent: &serde_json::Value) -> Vec<String> {
    traceparent[0]
        .as_str()
        .unwrap()
        .split('-')
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn each_hop_keeps_the_trace_and_adds_its_span() {
    let app = http_backend("app");
    let (a, _b) = two_hops(app.addr, "{ propagation: [w3c] }").await;
    let client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (seen, echoed) = call(
        &a,
        &[("traceparent", client), ("tracestate", "congo=t61rcWkgMzE")],
    )
    .await;
    let at_app = parts(&seen["traceparent"]);
    assert_eq!(at_app[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
    assert_ne!(at_app[2], "00f067aa0ba902b7", "a remora span is the parent");
    assert_eq!(at_app[3], "01");
    assert_eq!(seen["tracestate"][0], "congo=t61rcWkgMzE");
    let id = seen["x-request-id"][0]
        .as_str()
        .expect("a request id was created");
    assert_eq!(echoed.as_deref(), Some(id), "echoed on the response");
    assert_eq!(id.len(), 36);
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_new_trace() {
    let app = http_backend("app");
    let (a, _b) = two_hops(app.addr, "{ propagation: [w3c] }").await;
    let invalid = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
    let (seen, _) = call(&a, &[("traceparent", invalid), ("x-request-id", "req-7")]).await;
    let at_app = parts(&seen["traceparent"]);
    assert_eq!(at_app.len(), 4);
    assert_ne!(
        at_app[1].to_ascii_uppercase(),
        "4BF92F3577B34DA6A3CE929D0E0E4736"
    );
    assert_eq!(at_app[1], at_app[1].to_ascii_lowercase());
    assert_eq!(
        seen["x-request-id"][0], "req-7",
        "an existing request id is kept"
    );
}

#[tokio::test]
async fn b3_is_read_padded_and_written() {
    let app = http_backend("app");
    let (a, _b) = two_hops(app.addr, "{ propagation: [w3c, b3], request_id: false }").await;
    let (seen, echoed) = call(
        &a,
        &[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    assert_eq!(seen["x-b3-traceid"][0], "0000000000000000463ac35c9f6413ad");
    assert_ne!(seen["x-b3-spanid"][0], "a2fb4a1d1a96d312");
    assert_eq!(
        parts(&seen["traceparent"])[1],
        "0000000000000000463ac35c9f6413ad"
    );
    assert!(
        seen.get("x-request-id").is_none() && echoed.is_none(),
        "request_id: false"
    );
}
