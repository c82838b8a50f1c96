//! Idempotency-aware retries end to end, through the `remora` binary: a request that is not
//! idempotent (POST, PATCH, a method a route leaves out of `idempotent_methods`, an unlisted
//! gRPC method) is retried only when its try provably never reached the upstream — a connect
//! failure, a refused stream, a stream above a GOAWAY's `last_stream_id` (nginx, retiring its
//! HTTP/2 connections under concurrent POSTs: each body reaches the application exactly
//! once) — while an `Idempotency-Key`, a listed gRPC method or `retry_non_idempotent: true`
//! make it retryable like a GET; a POST the upstream read and then reset is not.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use support::config::TestConfig;
use support::h2_origin::{answer, read_body};
use support::{
    ProxyProcess, Server, get, grpc_failing, grpc_unary, h2_origin, http_backend, prom, send, serve,
};

const RETRIES: &str = "{ attempts: 3, on: [connect_failure, refused_stream, \"503\"], \
                       backoff: { base: 1ms, max: 2ms } }";

/// Retries counted for `upstream`: (succeeded, failed).
async fn retries(proxy: &ProxyProcess, upstream: &str) -> (f64, f64) {
    let text = prom::scrape(&format!("http://{}/metrics", proxy.admin)).await;
    let count = |outcome| {
        let labels = [("upstream", upstream), ("outcome", outcome)];
        prom::sum(&text, "remora_retries_total", &labels)
    };
    (count("success"), count("failure"))
}

async fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> support::Reply {
    request_over(Version::HTTP_11, method, url, headers).await
}

async fn request_over(
    version: Version,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> support::Reply {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = Full::new(Bytes::from_static(b"order #1"));
    send(version, builder.body(body).unwrap()).await.unwrap()
}

/// A case: its name, the method, what follows `/status/503`, headers, the tries expected.
type Case<'a> = (&'a str, Method, &'a str, &'a [(&'a str, &'a str)], u64);

/// Every request gets the origin's 503: the tries the origin saw tell whether it was retried.
#[tokio::test]
async fn a_request_that_reached_the_upstream_is_retried_only_when_idempotent() {
    let origin = http_backend("origin");
    let routes = "\n      - name: opt-in\n        match: { query: [{ name: route, exact: opt-in }] }\n        \
         retries: { attempts: 3, on: [\"503\"], backoff: { base: 1ms, max: 2ms }, retry_non_idempotent: true }\n      \
         - name: strict\n        match: { query: [{ name: route, exact: strict }] }\n        \
         retries: { attempts: 3, on: [\"503\"], backoff: { base: 1ms, max: 2ms }, idempotent_methods: [GET] }";
    let yaml = TestConfig::one_upstream("orders", "http", [origin.addr])
        .with("retries", RETRIES)
        .with("routes", routes)
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 1);
    let base = format!("http://{}/status/503", proxy.listener("orders"));
    let key = [("idempotency-key", "5f1c0ffe-order-1")];
    let cases: [Case; 8] = [
        ("POST", Method::POST, "", &[], 1),
        ("PATCH", Method::PATCH, "", &[], 1),
        ("POST with Idempotency-Key", Method::POST, "", &key, 3),
        ("PATCH with Idempotency-Key", Method::PATCH, "", &key, 3),
        ("PUT", Method::PUT, "", &[], 3),
        ("DELETE", Method::DELETE, "", &[], 3),
        (
            "POST on the opted-in route",
            Method::POST,
            "?route=opt-in",
            &[],
            3,
        ),
        (
            "PUT where only GET is idempotent",
            Method::PUT,
            "?route=strict",
            &[],
            1,
        ),
    ];
    for (case, method, path, headers, tries) in cases {
        let before = origin.requests();
        let reply = request(method, &format!("{base}{path}"), headers).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{case}");
        assert!(reply.headers.get("x-remora-error").is_none(), "{case}");
        assert_eq!(origin.requests() - before, tries, "{case}: tries");
    }
    let reply = get(Version::HTTP_11, &format!("{base}?route=strict"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    // 5 retried requests × 2 retries, plus the strict route's GET.
    assert_eq!(retries(&proxy, "orders").await, (0.0, 12.0));
}

/// A POST whose connection could not be made, or whose HTTP/2 stream was refused (after the
/// endpoint's own resends), never reached the upstream: it is retried, body and all. Forward
/// itself resends an unsent request once to another endpoint, whatever its method; over three
/// dead endpoints with `attempts: 3`, the retry layer's own retries are what `remora_retries_total`
/// counts: two, both failed.
#[tokio::test]
async fn a_post_that_never_reached_the_upstream_is_retried() {
    let dead = [(); 3].map(|()| support::dead_addr());
    let yaml = TestConfig::one_upstream("connect", "http", dead)
        .with("retries", RETRIES)
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 1);
    let url = format!("http://{}/echo", proxy.listener("connect"));
    let reply = request(Method::POST, &url, &[]).await;
    assert!(reply.status.is_server_error(), "{reply:?}");
    assert_eq!(retries(&proxy, "connect").await, (0.0, 2.0));

    let refusing =
        support::h2_origin::refusing_first_streams(1 + remora::resend::MAX_RESENDS as u64);
    let yaml = TestConfig::one_upstream("refused", "http2", [refusing.addr])
        .with("retries", RETRIES)
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 1);
    let url = format!("http://{}/", proxy.listener("refused"));
    let reply = request_over(Version::HTTP_2, Method::POST, &url, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(retries(&proxy, "refused").await, (1.0, 0.0));
}

/// gRPC calls are POSTs: an UNAVAILABLE answer is retried only for a method listed in
/// `idempotent_grpc_methods`, by name or by `Service/*`.
#[tokio::test]
async fn a_grpc_method_is_retried_only_when_listed_idempotent() {
    for (case, (listed, retried)) in [
        ("[remora.test.Echo/Unary]", true),
        ("[\"remora.test.Echo/*\"]", true),
        ("[remora.test.Echo/Bidi, remora.test.Echoes/*]", false),
    ]
    .into_iter()
    .enumerate()
    {
        let (origin, calls) = grpc_failing(tonic::Code::Unavailable, 1);
        let policy = format!(
            "{{ attempts: 2, on: [unavailable], backoff: {{ base: 1ms, max: 2ms }}, \
             idempotent_grpc_methods: {listed} }}"
        );
        // Metrics are per process: one upstream name per case.
        let name = format!("grpc-{case}");
        let yaml = TestConfig::one_upstream(&name, "grpc", [origin.addr])
            .with("retries", policy)
            .yaml();
        let proxy = ProxyProcess::start(&yaml, 1);
        let result = grpc_unary(proxy.listener(&name), "again").await;
        if retried {
            let (text, _) = result.unwrap_or_else(|status| panic!("{listed}: {status:?}"));
            assert_eq!(text, "again");
            assert_eq!(calls.load(Ordering::SeqCst), 2, "{listed}");
            assert_eq!(retries(&proxy, &name).await, (1.0, 0.0), "{listed}");
        } else {
            let status = result.expect_err("not retried");
            assert_eq!(status.code(), tonic::Code::Unavailable, "{listed}");
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{listed}");
        }
    }
}

/// Idempotency settings that make no sense are reported with their position.
#[tokio::test]
async fn invalid_idempotency_settings_are_rejected_with_their_key() {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let yaml = TestConfig::one_upstream("bad", "http", [addr])
        .with(
            "retries",
            "{ idempotent_methods: [\"GE T\"], idempotent_grpc_methods: [Service] }",
        )
        .yaml();
    let output = remora::config::parse(&yaml, "test.yaml")
        .expect_err("rejected")
        .to_string();
    assert!(
        output.contains("retries.idempotent_methods[0]") && output.contains("not an HTTP method"),
        "{output}"
    );
    assert!(
        output.contains("retries.idempotent_grpc_methods[0]"),
        "{output}"
    );
}

/// An HTTP/1.1 application that keeps every request body it read and, 20 ms later (so that
/// requests overlap), answers 200 with it.
fn recording_app() -> (Server, Arc<Mutex<Vec<Bytes>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    let server = serve(move |stream| {
        let kept = Arc::clone(&kept);
        async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let kept = Arc::clone(&kept);
                async move {
                    let body = request.into_body().collect().await?.to_bytes();
                    kept.lock().unwrap().push(body.clone());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, hyper::Error>(Response::new(Full::new(body)))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    });
    (server, bodies)
}

/// nginx (h2c) in front of an application retires each HTTP/2 connection after 3 requests
/// with a GOAWAY whose `last_stream_id` is the third stream; the streams remora had opened
/// above it were never processed. 80 POSTs, 8 at a time on one connection, with no
/// `retries:`: each is resent transparently, every one succeeds with its own body, and the
/// application read each body exactly once — none of them was processed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_above_a_goaway_are_resent_and_processed_exactly_once() {
    let (app, bodies) = recording_app();
    let nginx = support::peers::nginx(&format!(
        "keepalive_requests 3;\n\
         server {{ listen 127.0.0.1:PORT http2;\n\
         location / {{ proxy_pass http://{}; proxy_http_version 1.1; }} }}",
        app.addr
    ));
    let yaml = TestConfig::one_upstream("nginx-goaway", "http2", [nginx.addr])
        .with("connection_pool", "{ max_connections_per_endpoint: 1 }")
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 1);
    let url = format!("http://{}/orders", proxy.listener("nginx-goaway"));
    let tasks = (0..8).map(|task| {
        let url = url.clone();
        tokio::spawn(async move {
            let mut failed = Vec::new();
            for number in 0..10 {
                let body = format!("order {task}-{number} {}", "x".repeat(2000));
                let post = Request::post(&url).body(Full::new(Bytes::from(body.clone())));
                let reply = send(Version::HTTP_2, post.unwrap()).await.unwrap();
                if reply.status != StatusCode::OK || reply.body != body {
                    failed.push((task, number, reply.status, reply.headers));
                }
            }
            failed
        })
    });
    let failed: Vec<_> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    assert!(failed.is_empty(), "failed POSTs: {failed:?}");

    // Each body the application read (and echoed: the replies above were whole), by its
    // name, `order T-N`.
    let mut read: Vec<String> = (bodies.lock().unwrap().iter())
        .map(|body| {
            String::from_utf8_lossy(body)
                .rsplit_once(' ')
                .unwrap()
                .0
                .to_owned()
        })
        .collect();
    read.sort();
    let mut sent: Vec<String> = (0..8)
        .flat_map(|task| (0..10).map(move |number| format!("order {task}-{number}")))
        .collect();
    sent.sort();
    assert_eq!(read, sent, "each body read once by the application");

    let text = prom::scrape(&format!("http://{}/metrics", proxy.admin)).await;
    let upstream = [("upstream", "nginx-goaway")];
    let goaway = prom::sum(
        &text,
        "remora_upstream_resends_total",
        &[("upstream", "nginx-goaway"), ("reason", "goaway")],
    );
    let resent = prom::sum(&text, "remora_upstream_resends_total", &upstream);
    eprintln!("80 POSTs through nginx's GOAWAYs: {resent} resent, {goaway} for a GOAWAY above");
    assert!(goaway > 0.0, "no POST was above a GOAWAY's last_stream_id");
    assert_eq!(prom::sum(&text, "remora_retries_total", &upstream), 0.0);
}

/// An HTTP/2 origin that reads each request body and resets the stream (`INTERNAL_ERROR`)
/// the first time it sees that body, answering 200 when it comes again: a try that reached
/// it and failed. With `retries: { on: [reset] }` a POST is not tried again — the origin read
/// it once, the client gets 502 `upstream_reset` — unless it carries an `Idempotency-Key`.
#[tokio::test]
async fn a_post_reset_after_the_upstream_read_it_is_not_retried_without_a_key() {
    let bodies = Arc::new(Mutex::new(Vec::<String>::new()));
    let origin = h2_origin({
        let bodies = Arc::clone(&bodies);
        move |_, request, mut respond| {
            let bodies = Arc::clone(&bodies);
            async move {
                let read = String::from_utf8(read_body(request).await).unwrap();
                let mut seen = bodies.lock().unwrap();
                let again = seen.contains(&read);
                seen.push(read);
                drop(seen);
                if again {
                    answer(respond, 200);
                } else {
                    respond.send_reset(h2::Reason::INTERNAL_ERROR);
                }
            }
        }
    });
    let yaml = TestConfig::one_upstream("reset-after-read", "http2", [origin.addr])
        .with(
            "retries",
            "{ attempts: 3, on: [reset], backoff: { base: 1ms, max: 2ms } }",
        )
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 1);
    let url = format!("http://{}/orders", proxy.listener("reset-after-read"));
    let post = |body: &'static str, key: Option<&'static str>| {
        let mut request = Request::post(&url);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        send(
            Version::HTTP_2,
            request.body(Full::new(Bytes::from(body))).unwrap(),
        )
    };

    let reply = post("order A", None).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    assert_eq!(reply.headers["x-remora-error"], "upstream_reset");
    assert_eq!(
        *bodies.lock().unwrap(),
        ["order A"],
        "read once, not retried"
    );
    assert_eq!(retries(&proxy, "reset-after-read").await, (0.0, 0.0));

    let reply = post("order B", Some("order-b")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(*bodies.lock().unwrap(), ["order A", "order B", "order B"]);
    assert_eq!(retries(&proxy, "reset-after-read").await, (1.0, 0.0));
}
