//! The access log of the real binary: one JSON line per request with the
//! field names log pipelines index without mapping (`@timestamp`, `level`,
//! `service`, `trace_id`, `message`, …), and no secret header anywhere in
//! the log; `authority`, the `error` of a proxy-made response and the
//! `grpc_status` of gRPC calls (from trailers and trailers-only); a response
//! body the upstream cut, or the client abandoned, says so; a client's
//! failed body names the endpoint it was going to.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::raw_http1::read_head;
use support::{
    ProxyProcess, dead_addr, get, grpc_echo, grpc_fail, grpc_unary, http_backend, send, serve,
};

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

/// Waits for the next access-log line of `proxy` (on a blocking thread: the log is read from
/// a channel) and parses it.
async fn next_access_line(mut proxy: ProxyProcess) -> (serde_json::Value, ProxyProcess) {
    let read = tokio::task::spawn_blocking(move || {
        let line = proxy.wait_for_log("\"message\":\"request\"");
        (serde_json::from_str(&line).expect("JSON line"), proxy)
    });
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("access line within 30 s")
        .unwrap()
}

#[tokio::test]
async fn authority_proxy_errors_and_grpc_status_are_logged() {
    let backend = http_backend("logged");
    let grpc = grpc_echo();
    let yaml = format!(
        "service: {{ name: shop }}\n\
         upstreams:\n\
         \x20 - {{ name: web, listen: 127.0.0.1:0, discovery: {{ static: [{}] }} }}\n\
         \x20 - {{ name: gone, listen: 127.0.0.1:0, discovery: {{ static: [{}] }} }}\n\
         \x20 - {{ name: rpc, listen: 127.0.0.1:0, protocol: http2, discovery: {{ static: [{}] }} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n",
        backend.addr,
        dead_addr(),
        grpc.addr,
    );
    let proxy = ProxyProcess::start(&yaml, 3);

    let request = Request::get(format!("http://{}/", proxy.listener("web")))
        .header("host", "shop.example:8080")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        send(Version::HTTP_11, request).await.unwrap().status,
        StatusCode::OK
    );
    let (access, proxy) = next_access_line(proxy).await;
    assert_eq!(access["upstream"], "web");
    assert_eq!(access["authority"], "shop.example:8080");
    assert!(access["error"].is_null(), "{access}");
    assert!(access["response_body"].is_null(), "a whole body: {access}");

    let url = format!("http://{}/", proxy.listener("gone"));
    let reply = get(Version::HTTP_11, &url).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let (access, proxy) = next_access_line(proxy).await;
    assert_eq!(access["upstream"], "gone");
    assert_eq!(access["status"], 502);
    assert_eq!(access["error"], "connect_failed", "{access}");

    // Status in trailers (after the reply message), then trailers-only.
    let (echoed, _) = grpc_unary(proxy.listener("rpc"), "hi").await.unwrap();
    assert_eq!(echoed, "hi");
    let (access, proxy) = next_access_line(proxy).await;
    assert_eq!(access["upstream"], "rpc");
    assert_eq!(access["grpc_status"], 0, "{access}");
    let failed = grpc_fail(proxy.listener("rpc")).await.unwrap_err();
    assert_eq!(failed.code(), tonic::Code::Unavailable);
    let (access, _proxy) = next_access_line(proxy).await;
    assert_eq!(access["status"], 200);
    assert_eq!(access["grpc_status"], 14, "{access}");
    assert!(
        access["error"].is_null(),
        "the upstream's own error: {access}"
    );
}

/// An origin that answers every request with a head announcing 10 bytes and 5 of them, then
/// closes (`close`) or holds the connection open.
fn short_origin(close: bool) -> support::Server {
    serve(move |mut stream| async move {
        let _ = read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")
            .await;
        if !close {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    })
}

#[tokio::test]
async fn a_response_body_cut_or_abandoned_says_so() {
    let (cut, stalled) = (short_origin(true), short_origin(false));
    let yaml = format!(
        "service: {{ name: shop }}\n\
         upstreams:\n\
         \x20 - {{ name: cut, listen: 127.0.0.1:0, discovery: {{ static: [{}] }} }}\n\
         \x20 - {{ name: stalled, listen: 127.0.0.1:0, discovery: {{ static: [{}] }} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n",
        cut.addr, stalled.addr,
    );
    let proxy = ProxyProcess::start(&yaml, 2);

    // The upstream closes after 5 of its 10 bytes.
    let _ = get(
        Version::HTTP_11,
        &format!("http://{}/", proxy.listener("cut")),
    )
    .await;
    let (access, proxy) = next_access_line(proxy).await;
    assert_eq!(access["upstream"], "cut");
    assert_eq!(access["response_body"], "cut", "{access}");
    assert_eq!(access["bytes"], 5, "{access}");

    // The client reads the head and goes away while the upstream holds the rest.
    let mut client = TcpStream::connect(proxy.listener("stalled")).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut client).await.expect("a response head");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let mut five = [0u8; 5];
    client.read_exact(&mut five).await.unwrap();
    drop(client);
    let (access, _proxy) = next_access_line(proxy).await;
    assert_eq!(access["upstream"], "stalled");
    assert_eq!(access["response_body"], "abandoned", "{access}");
}

/// Sends `request` to an upstream whose origin reads the head and never answers, and goes
/// away 300 ms later; returns the access line, the proxy and the origin.
async fn sent_then_gone(request: &[u8]) -> (serde_json::Value, ProxyProcess, support::Server) {
    let origin = serve(|mut stream| async move {
        let _ = read_head(&mut stream).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let yaml = format!(
        "service: {{ name: shop }}\n\
         upstreams:\n\
         \x20 - {{ name: silent, listen: 127.0.0.1:0, discovery: {{ static: [{}] }} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n",
        origin.addr,
    );
    let proxy = ProxyProcess::start(&yaml, 1);
    let mut client = TcpStream::connect(proxy.listener("silent")).await.unwrap();
    client.write_all(request).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(client);
    let (access, proxy) = next_access_line(proxy).await;
    (access, proxy, origin)
}

/// A request whose body fails on the client's side (it closes its connection
/// partway) is logged as `client_body`, with the endpoint the body was going to.
#[tokio::test]
async fn a_failed_client_body_names_its_endpoint() {
    let (access, _proxy, origin) =
        sent_then_gone(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc").await;
    assert_eq!(access["error"], "client_body", "{access}");
    assert_eq!(access["endpoint"], origin.addr.to_string(), "{access}");
}

/// A client that goes away before the response head (it gave up on a slow upstream) is
/// still logged and counted: status 499 (nginx's "client closed request"), `response_body`
/// `abandoned`. It used to leave no trace but the in-flight gauge going down.
#[tokio::test]
async fn a_request_given_up_before_its_answer_is_logged_as_499() {
    let (access, proxy, _origin) = sent_then_gone(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(access["status"], 499, "{access}");
    assert_eq!(access["response_body"], "abandoned", "{access}");
    assert_eq!(access["path"], "/slow", "{access}");
    let metrics = support::prom::scrape(&format!("http://{}/metrics", proxy.admin)).await;
    let given_up = support::prom::value(
        &metrics,
        "remora_requests_total",
        &[("upstream", "silent"), ("code", "499")],
    );
    assert_eq!(given_up, Some(1.0), "{metrics}");
}
