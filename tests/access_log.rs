//! The access log of the real binary: one JSON line per request with the
//! field names log pipelines index without mapping (`@timestamp`, `level`,
//! `service`, `trace_id`, `message`, …), and no secret header anywhere in
//! the log.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;

use support::{ProxyProcess, http_backend, send};

#[tokio::test]
async fn one_json_line_per_request_and_no_secrets() {
    let backend = http_backend("logged");
    let yaml = format!(
        "service: {{ name: shop }}\n\
         upstreams:\n  - name: logged\n    listen: 127.0.0.1:0\n    discovery: {{ static: [{}] }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n",
        backend.addr
    );
    let mut proxy = ProxyProcess::start(&yaml, 1);
    let request = Request::get(format!(
        "http://{}/?token=QUERYSECRET",
        proxy.listener("logged")
    ))
    .header("authorization", "Bearer TOPSECRET")
    .header("cookie", "session=TOPSECRET")
    .header("x-consul-token", "TOPSECRET")
    .header(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    .body(Full::new(Bytes::new()))
    .unwrap();
    let reply = send(Version::HTTP_11, request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);

    let lines = tokio::task::spawn_blocking(move || {
        let lines = proxy.log_until("\"message\":\"request\"");
        (lines, proxy)
    });
    let (lines, _proxy) = tokio::time::timeout(Duration::from_secs(30), lines)
        .await
        .unwrap()
        .unwrap();
    let access: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["service"], "shop");
    assert_eq!(access["message"], "request");
    assert_eq!(access["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(access["span_id"].as_str().unwrap().len(), 16);
    assert_eq!(access["request_id"].as_str().unwrap().len(), 36);
    assert_eq!(access["direction"], "outbound");
    assert_eq!(access["upstream"], "logged");
    assert_eq!(access["endpoint"], backend.addr.to_string());
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/", "the query is not logged");
    assert_eq!(access["status"], 200);
    assert_eq!(access["bytes"], 6);
    assert!(access["duration_ms"].as_f64().unwrap() >= 0.0);
    let timestamp = access["@timestamp"].as_str().unwrap();
    assert!(timestamp.len() >= 20 && timestamp.ends_with('Z') && &timestamp[10..11] == "T");
    for line in &lines {
        assert!(
            !line.contains("TOPSECRET") && !line.contains("QUERYSECRET"),
            "{line}"
        );
    }
}
