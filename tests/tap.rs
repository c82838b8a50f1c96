//! The live request tap, `GET /tap` on the admin listener, read by real
//! HTTP clients over real sockets: NDJSON and Server-Sent Events framing,
//! every event field, the filters, header redaction, the per-stream rate
//! limit with its drop reports, the subscriber cap (503) and its slot freed
//! when a client goes away, bad queries (400), and `remora tap` (the real
//! binary) printing a line per request.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use support::{Proxy, get, http_backend, send};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// An open `/tap` stream: its chunks, as they arrive.
struct TapStream {
    chunks: mpsc::UnboundedReceiver<Bytes>,
    buffer: String,
    /// The connection and the body reader: aborted (the socket closed) when
    /// the stream is dropped.
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for TapStream {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|task| task.abort());
    }
}

/// Opens `GET /tap?query` on `admin` with `accept`; returns the status and,
/// on 200, the stream.
async fn open(admin: SocketAddr, query: &str, accept: &str) -> (StatusCode, Option<TapStream>) {
    let stream = TcpStream::connect(admin).await.expect("connect to admin");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .expect("handshake");
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::get(format!("/tap?{query}"))
        .header("host", admin.to_string())
        .header("accept", accept)
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("response head");
    let status = response.status();
    if status != StatusCode::OK {
        return (status, None);
    }
    let (chunks_tx, chunks) = mpsc::unbounded_channel();
    let mut body = response.into_body();
    let reader = tokio::spawn(async move {
        let _sender = sender;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data()
                && chunks_tx.send(data).is_err()
            {
                break;
            }
        }
    });
    let stream = TapStream {
        chunks,
        buffer: String::new(),
        tasks: [connection, reader],
    };
    (status, Some(stream))
}

impl TapStream {
    /// The next NDJSON record (within 5 s).
    async fn record(&mut self) -> Value {
        let line = self.until("\n").await;
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    /// The next SSE event: (event name, data as JSON).
    async fn event(&mut self) -> (String, Value) {
        let block = self.until("\n\n").await;
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .expect("event:");
        let data = block
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data:");
        (
            name.to_owned(),
            serde_json::from_str(data).expect("JSON data"),
        )
    }

    /// The text up to the next `separator`, consumed.
    async fn until(&mut self, separator: &str) -> String {
        loop {
            if let Some(end) = self.buffer.find(separator) {
                let text = self.buffer[..end].to_owned();
                self.buffer.drain(..end + separator.len());
                return text;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.chunks.recv())
                .await
                .unwrap_or_else(|_| panic!("nothing within 5 s; so far {:?}", self.buffer))
                .expect("the stream ended");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Whether anything arrives within `within`.
    async fn silent_for(&mut self, within: Duration) -> bool {
        self.buffer.is_empty()
            && tokio::time::timeout(within, self.chunks.recv())
                .await
                .is_err()
    }
}

fn yaml(api: SocketAddr, web: SocketAddr, tap: &str) -> String {
    format!(
        "service: {{ name: tap-svc }}\n\
         upstreams:\n\
         \x20 - {{ name: tap-api, listen: 127.0.0.1:0, protocol: http, discovery: {{ static: [{api}] }}, \
         routes: [{{ name: slow, match: {{ path: {{ prefix: /slow }} }}, backend: default }}] }}\n\
         \x20 - {{ name: tap-web, listen: 127.0.0.1:0, protocol: http, discovery: {{ static: [{web}] }} }}\n\
         admin: {{ listen: 127.0.0.1:0, tap: {tap} }}\n\
         logging: {{ access_log: false }}\n"
    )
}

#[tokio::test]
async fn streams_each_request_with_its_fields_and_redacted_headers() {
    let api = http_backend("tap-api-app");
    let web = http_backend("tap-web-app");
    let proxy = Proxy::start(&yaml(api.addr, web.addr, "{ redact_headers: [x-api-key] }")).await;
    let admin = proxy.bound.admin;
    let (status, stream) = open(admin, "upstream=tap-api&headers=true", "*/*").await;
    assert_eq!(status, StatusCode::OK);
    let mut stream = stream.unwrap();
    let subscribed = stream.record().await;
    assert_eq!(subscribed["type"], "subscribed");
    assert_eq!(subscribed["rate"], 100);
    assert_eq!(subscribed["filter"]["upstream"], "tap-api");

    // Another upstream's request is filtered out; this one comes through.
    get(
        Version::HTTP_11,
        &format!("http://{}/", proxy.upstream("tap-web")),
    )
    .await
    .unwrap();
    let request = Request::get(format!(
        "http://{}/slow/20?secret=1",
        proxy.upstream("tap-api")
    ))
    .header("authorization", "Bearer hunter2")
    .header("cookie", "session=abc")
    .header("x-api-key", "k-123")
    .header("x-plain", "visible")
    .header("traceparent", format!("00-{TRACE_ID}-b7ad6b7169203331-01"))
    .body(Full::new(Bytes::new()))
    .unwrap();
    let reply = send(Version::HTTP_11, request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let event = stream.record().await;
    assert_eq!(event["type"], "request", "{event}");
    assert_eq!(event["direction"], "outbound");
    assert_eq!(event["upstream"], "tap-api");
    assert_eq!(event["route"], "slow");
    assert_eq!(event["method"], "GET");
    assert_eq!(event["path"], "/slow/20", "no query: it may carry secrets");
    assert_eq!(event["authority"], proxy.upstream("tap-api").to_string());
    assert_eq!(event["status"], 200);
    assert_eq!(event["endpoint"], api.addr.to_string());
    assert_eq!(event["retries"], 0);
    assert_eq!(event["trace_id"], TRACE_ID);
    assert_eq!(event["error"], Value::Null);
    let duration = event["duration_ms"].as_f64().unwrap();
    assert!((20.0..5000.0).contains(&duration), "{event}");
    let sent = &event["request_headers"];
    assert_eq!(sent["authorization"][0], "<redacted>", "{event}");
    assert_eq!(sent["cookie"][0], "<redacted>");
    assert_eq!(sent["x-api-key"][0], "<redacted>");
    assert_eq!(sent["x-plain"][0], "visible");
    assert_eq!(event["response_headers"]["x-backend"][0], "tap-api-app");
    let text = event.to_string();
    assert!(!text.contains("hunter2") && !text.contains("k-123") && !text.contains("session=abc"));

    // A proxy-made error carries its kind; without headers=true, no headers.
    let (_, errors) = open(admin, "status=5xx&format=ndjson", "*/*").await;
    let mut errors = errors.unwrap();
    errors.record().await;
    drop(api);
    let failed = get(
        Version::HTTP_11,
        &format!("http://{}/", proxy.upstream("tap-api")),
    )
    .await
    .unwrap();
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    let event = errors.record().await;
    assert_eq!(event["status"], 502);
    assert_eq!(event["error"], "connect_failed", "{event}");
    assert!(event.get("request_headers").is_none(), "{event}");
}

#[tokio::test]
async fn filters_frame_as_sse_rate_limit_and_cap_subscribers() {
    let api = http_backend("tap-api-app");
    let web = http_backend("tap-web-app");
    let proxy = Proxy::start(&yaml(
        api.addr,
        web.addr,
        "{ max_subscribers: 2, max_events_per_second: 5 }",
    ))
    .await;
    let admin = proxy.bound.admin;
    let api_url = |path: &str| format!("http://{}{path}", proxy.upstream("tap-api"));

    // SSE (chosen by Accept), 5xx under /status only.
    let (status, sse) = open(
        admin,
        "status=5xx&path=%2Fstatus&min_duration=0ms",
        "text/event-stream",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut sse = sse.unwrap();
    let (name, subscribed) = sse.event().await;
    assert_eq!(
        (name.as_str(), subscribed["filter"]["status"].as_str()),
        ("subscribed", Some("5xx"))
    );
    for path in ["/status/200", "/status/404", "/", "/status/502"] {
        get(Version::HTTP_11, &api_url(path)).await.unwrap();
    }
    let (name, event) = sse.event().await;
    assert_eq!(name, "request");
    assert_eq!(
        (event["path"].as_str(), event["status"].as_u64()),
        (Some("/status/502"), Some(502))
    );

    // min_duration: only the slow one.
    let (_, slow) = open(admin, "min_duration=150ms", "*/*").await;
    let mut slow = slow.unwrap();
    slow.record().await;
    get(Version::HTTP_11, &api_url("/")).await.unwrap();
    get(Version::HTTP_11, &api_url("/slow/200")).await.unwrap();
    let event = slow.record().await;
    assert_eq!(event["path"], "/slow/200");
    assert!(event["duration_ms"].as_f64().unwrap() >= 150.0);

    // Two streams open: a third is refused, until one goes away.
    let (status, _) = open(admin, "", "*/*").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    drop(slow);
    support::eventually(Duration::from_secs(3), "the slot freed", || async {
        open(admin, "upstream=nobody", "*/*").await.0 == StatusCode::OK
    })
    .await;

    // Bad queries.
    for query in ["upstrem=tap-api", "status=9xx", "min_duration=fast"] {
        assert_eq!(
            open(admin, query, "*/*").await.0,
            StatusCode::BAD_REQUEST,
            "{query}"
        );
    }

    // The rate limit: 5 events a second (burst 5); the rest are counted.
    // (The stream just opened to see the slot free has gone away too.)
    let mut limited = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while limited.is_none() && tokio::time::Instant::now() < deadline {
        limited = open(admin, "upstream=tap-web", "*/*").await.1;
    }
    let mut limited = limited.expect("a slot within 3 s");
    limited.record().await;
    let web_url = format!("http://{}/", proxy.upstream("tap-web"));
    let sending = std::time::Instant::now();
    for _ in 0..30 {
        get(Version::HTTP_11, &web_url).await.unwrap();
    }
    // The bucket starts full (5) and refills 5 a second while they are sent.
    let allowed = 5 + (5.0 * sending.elapsed().as_secs_f64()).ceil() as u64;
    let (mut events, mut dropped) = (0, 0);
    while events + dropped < 30 {
        let record = limited.record().await;
        match record["type"].as_str() {
            Some("request") => events += 1,
            Some("dropped") => {
                dropped += record["count"].as_u64().unwrap();
                assert_eq!(record["total"].as_u64().unwrap(), dropped);
            }
            other => panic!("{other:?}: {record}"),
        }
    }
    assert_eq!(events + dropped, 30);
    assert!(
        (5..=allowed).contains(&events) && dropped > 0,
        "{events} events passed a limit of 5/s (at most {allowed} in the time taken)"
    );
    assert!(limited.silent_for(Duration::from_millis(1500)).await);
}

#[tokio::test]
async fn remora_tap_prints_a_line_per_request() {
    let api = http_backend("tap-api-app");
    let web = http_backend("tap-web-app");
    let proxy = Proxy::start(&yaml(api.addr, web.addr, "{}")).await;
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_remora"))
        .args([
            "tap",
            "--admin",
            &proxy.bound.admin.to_string(),
            "--upstream",
            "tap-api",
            "--headers",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start remora tap");
    let stdout = cli.stdout.take().unwrap();
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            if line.map(|line| lines_tx.send(line)).is_err() {
                break;
            }
        }
    });
    let next = async |lines: &mut mpsc::UnboundedReceiver<String>| {
        tokio::time::timeout(Duration::from_secs(10), lines.recv())
            .await
            .expect("a line within 10 s")
            .expect("remora tap ended")
    };
    let first = next(&mut lines).await;
    assert!(
        first.starts_with("tapping (at most 100 events/s)"),
        "{first}"
    );
    assert!(first.contains("upstream=tap-api"), "{first}");
    get(
        Version::HTTP_11,
        &format!("http://{}/", proxy.upstream("tap-web")),
    )
    .await
    .unwrap();
    let request = Request::get(format!("http://{}/status/418", proxy.upstream("tap-api")))
        .header("authorization", "Bearer hunter2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(Version::HTTP_11, request).await.unwrap();
    let line = next(&mut lines).await;
    let expected = format!(
        " outbound tap-api/default GET {}/status/418 418 ",
        proxy.upstream("tap-api")
    );
    assert!(line.contains(&expected), "{line}");
    assert!(line.contains(&format!("{} retries=0", api.addr)), "{line}");
    let mut headers = Vec::new();
    while !headers
        .iter()
        .any(|line: &String| line.contains("authorization"))
    {
        headers.push(next(&mut lines).await);
    }
    assert!(
        headers.contains(&"  > authorization: <redacted>".to_owned()),
        "{headers:?}"
    );
    assert!(
        !headers.iter().any(|line| line.contains("hunter2")),
        "{headers:?}"
    );
    cli.kill().unwrap();
    cli.wait().unwrap();
}
