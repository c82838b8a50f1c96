//! HTTP/1.1 protocol upgrades through remora: only the protocols a listener's
//! `upgrades` allows are tunnelled (WebSocket by default); an `h2c` upgrade
//! (whose HTTP/2 streams would bypass every policy) or any other reaches the
//! application as a plain request without its upgrade headers. A tunnel keeps
//! its client connection counted under `limits.max_connections` (and in the
//! gauges) until it ends, and is closed after `timeouts.idle` without a byte.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use support::config::TestConfig;
use support::raw_http1::{read_head, read_response};
use support::{Proxy, eventually, serve, websocket_echo, websocket_roundtrip};

/// An application that switches protocols whenever a request asks to: it
/// answers `101` to any request with an `Upgrade` header (naming the first
/// protocol offered) and then echoes raw bytes; other requests get `200
/// plain`. Records every request head it receives (lowercased).
struct SwitchingOrigin {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl SwitchingOrigin {
    fn start() -> SwitchingOrigin {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&heads);
        let addr = serve(move |mut stream| {
            let heads = Arc::clone(&recorded);
            async move {
                while let Some(head) = read_head(&mut stream).await {
                    heads.lock().unwrap().push(head.clone());
                    let offered = head
                        .lines()
                        .find_map(|line| line.strip_prefix("upgrade:"))
                        .map(|value| value.split(',').next().unwrap_or_default().trim().to_owned());
                    let Some(protocol) = offered else {
                        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain";
                        if stream.write_all(plain).await.is_err() {
                            return;
                        }
                        continue;
                    };
                    let switching = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {protocol}\r\n\r\n"
                    );
                    if stream.write_all(switching.as_bytes()).await.is_err() {
                        return;
                    }
                    let (mut reader, mut writer) = stream.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                    return;
                }
            }
        })
        .detach();
        SwitchingOrigin { addr, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn inbound_yaml(app: SocketAddr) -> String {
    TestConfig::inbound_to("app", app).yaml()
}

fn upstream_yaml(name: &str, endpoint: SocketAddr, extra: &str) -> String {
    TestConfig::one_upstream(name, "http", [endpoint])
        .lines(&format!("    {extra}\n"))
        .yaml()
}

/// Sends `Upgrade: <protocol>` on a fresh connection to `addr`; returns the
/// connection and the response head.
async fn ask_upgrade(addr: SocketAddr, protocol: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nhost: app\r\nconnection: upgrade\r\nupgrade: {protocol}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream))
        .await
        .expect("a response head within 10 s")
        .expect("a response head before the connection ends");
    (stream, head)
}

/// Writes `bytes` into a tunnel and expects them echoed back.
async fn echoes(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
    let mut echoed = vec![0u8; bytes.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
        .await
        .expect("the echo within 10 s")
        .unwrap();
    assert_eq!(echoed, bytes);
}

/// The h2c upgrade of issue 13: behind an application that would switch to
/// HTTP/2, every later stream would skip remora's stack, and a forged
/// `x-remora-client-id` would reach the application. The upgrade headers are
/// stripped instead, and the request is answered as a plain one.
#[tokio::test]
async fn h2c_upgrade_reaches_the_app_as_a_plain_request() {
    let app = SwitchingOrigin::start();
    let proxy = Proxy::start(&inbound_yaml(app.addr)).await;
    let mut stream = TcpStream::connect(proxy.inbound()).await.unwrap();
    let h2c = "GET / HTTP/1.1\r\nhost: app\r\n\
               connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n\
               http2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
               x-remora-client-id: spiffe://forged/ns/default/dc/dc1/svc/admin\r\n\r\n";
    stream.write_all(h2c.as_bytes()).await.unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "plain");

    // Still HTTP/1.1 through remora's stack, not a tunnel.
    stream
        .write_all(b"GET /again HTTP/1.1\r\nhost: app\r\nx-remora-client-id: forged\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "plain");

    let heads = app.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for head in &heads {
        for hidden in ["upgrade", "http2-settings", "forged"] {
            assert!(!head.contains(hidden), "`{hidden}` reached the app: {head}");
        }
    }
}

/// `Upgrade: websocket, h2c` offers two protocols: only the allowed one
/// reaches the application, which cannot pick the other.
#[tokio::test]
async fn only_allowed_protocols_of_an_upgrade_offer_reach_the_app() {
    let app = SwitchingOrigin::start();
    let proxy = Proxy::start(&inbound_yaml(app.addr)).await;
    let (mut stream, head) = ask_upgrade(proxy.inbound(), "h2c, WebSocket").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echoes(&mut stream, b"tunnelled").await;
    let heads = app.heads();
    assert_eq!(heads.len(), 1);
    assert!(heads[0].contains("\r\nupgrade: websocket\r\n"), "{heads:?}");
    assert!(!heads[0].contains("h2c"), "{heads:?}");
}

/// `limits.max_connections` counts a tunnelled connection until the tunnel
/// ends: of 20 WebSocket clients at a limit of 3, three get a tunnel and the
/// others are refused; once the three close, new clients get theirs, and the
/// connection and in-flight gauges are back at 0.
#[tokio::test]
async fn websocket_tunnels_keep_their_connection_slot() {
    let echo = websocket_echo();
    let proxy = Proxy::start(&upstream_yaml("ws", echo, "limits: { max_connections: 3 }")).await;
    let url = format!("ws://{}/", proxy.upstream("ws"));
    let mut tunnels = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((mut ws, _)) => {
                ws.send(Message::text("hello")).await.unwrap();
                let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
                    .await
                    .expect("an echo within 10 s");
                assert!(matches!(echoed, Some(Ok(Message::Text(_)))), "{echoed:?}");
                tunnels.push(ws);
            }
            Err(_) => refused += 1,
        }
    }
    assert_eq!((tunnels.len(), refused), (3, 17));
    let labels = [("direction", "outbound"), ("listener", "ws")];
    assert_eq!(proxy.metric("remora_connections_open", &labels).await, 3.0);
    let refused_total = proxy
        .metric("remora_connections_refused_total", &labels)
        .await;
    assert_eq!(refused_total, 17.0);

    for mut ws in tunnels {
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
    }
    eventually(Duration::from_secs(10), "tunnels closed", || async {
        proxy.metric("remora_connections_open", &labels).await == 0.0
    })
    .await;
    let in_flight = [("direction", "outbound"), ("upstream", "ws")];
    assert_eq!(
        proxy.metric("remora_requests_in_flight", &in_flight).await,
        0.0
    );
    let target = proxy.upstream("ws");
    let again = futures_util::future::join_all(
        (0..3).map(|_| websocket_roundtrip(target, &["after", "close"])),
    )
    .await;
    assert!(again.iter().all(|echoed| echoed == &["after", "close"]));
}

/// A tunnel with no byte either way for `timeouts.idle` is closed on both
/// sides; one with traffic lives on past it.
#[tokio::test]
async fn idle_tunnels_are_closed_after_timeouts_idle() {
    let app = SwitchingOrigin::start();
    let proxy = Proxy::start(&upstream_yaml("idle", app.addr, "timeouts: { idle: 1s }")).await;
    let addr = proxy.upstream("idle");

    let (mut busy, head) = ask_upgrade(addr, "websocket").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        echoes(&mut busy, b"still here").await;
    }

    let (mut quiet, head) = ask_upgrade(addr, "websocket").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echoes(&mut quiet, b"once").await;
    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), quiet.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle tunnel is still open after 10 s");
    assert!(rest.is_empty(), "{rest:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
}

/// `upgrades` names the protocols tunnelled: a custom one when listed
/// (matched case-insensitively), only WebSocket by default.
#[tokio::test]
async fn custom_upgrade_protocols_are_tunnelled_when_listed() {
    let app = SwitchingOrigin::start();
    let echo = websocket_echo();
    let proxy = Proxy::start(&format!(
        "service: {{ name: test }}\n\
         upstreams:\n\
         \x20 - {{ name: custom, listen: 127.0.0.1:0, discovery: {{ static: [{app}] }}, upgrades: [websocket, x-custom] }}\n\
         \x20 - {{ name: default, listen: 127.0.0.1:0, discovery: {{ static: [{app}] }} }}\n\
         \x20 - {{ name: ws-default, listen: 127.0.0.1:0, discovery: {{ static: [{echo}] }} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        app = app.addr,
    ))
    .await;

    let (mut tunnel, head) = ask_upgrade(proxy.upstream("custom"), "X-Custom").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echoes(&mut tunnel, b"custom bytes").await;

    let (mut plain, head) = ask_upgrade(proxy.upstream("default"), "x-custom").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let mut body = [0u8; 5];
    plain.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"plain");
    let heads = app.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[0].contains("upgrade: x-custom"), "{heads:?}");
    assert!(!heads[1].contains("upgrade"), "{heads:?}");

    // Named apart from the other test's `ws`: its gauges are checked exactly, and the test
    // process has one metrics registry.
    let echoed = websocket_roundtrip(proxy.upstream("ws-default"), &["default", "websocket"]).await;
    assert_eq!(echoed, ["default", "websocket"]);
}

/// An application that answers `101` to a request that offered no upgrade
/// remora allows (here an `h2c` offer, which remora took out) gets the client
/// a 502 `upstream_protocol`, not a switched connection with nothing behind it.
#[tokio::test]
async fn a_switch_the_request_did_not_ask_for_is_a_bad_gateway() {
    let app = serve(|mut stream| async move {
        if read_head(&mut stream).await.is_some() {
            let switching =
                b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n";
            let _ = stream.write_all(switching).await;
            let _ = stream.read(&mut [0u8; 64]).await;
        }
    })
    .detach();
    let proxy = Proxy::start(&inbound_yaml(app)).await;
    for request in [
        "GET / HTTP/1.1\r\nhost: app\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: app\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(proxy.inbound()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let (head, _) = read_response(&mut stream).await;
        assert!(head.starts_with("http/1.1 502"), "{head}");
        assert!(head.contains("x-remora-error: upstream_protocol"), "{head}");
    }
}
