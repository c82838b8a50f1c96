//! Request paths are normalized before routes match and rewrite them, on
//! every listener (`path_normalization`): dot segments, doubled slashes and
//! percent-encoded letters cannot dodge a route; encoded `/` and `\` and
//! malformed escapes are refused (400 `bad_path`) unless configured; the
//! origin gets the normalized path with the query untouched. Hostile-input
//! tests: each path is sent as is (hyper's client does not normalize).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::config::TestConfig;
use support::{Backend, Proxy, http_backend, prom, send};

/// `upstream` with its own endpoint `origin` and the given upstream keys
/// (indented for the upstream's mapping). Metrics are process-wide: a test
/// that reads them names its upstream alone.
fn yaml(upstream: &str, origin: SocketAddr, upstream_extra: &str) -> String {
    TestConfig::one_upstream(upstream, "auto", [origin])
        .lines(upstream_extra)
        .yaml()
}

/// A prefix route `/admin` that answers 403 itself.
const ADMIN_FORBIDDEN: &str = "    routes:\n      - { name: admin, match: { path: { prefix: /admin } }, \
     direct_response: { status: 403, body: no } }\n";

async fn fetch(version: Version, listener: SocketAddr, target: &str) -> support::Reply {
    let url = format!("http://{listener}{target}");
    let request = Request::get(&url).body(Full::new(Bytes::new())).unwrap();
    send(version, request)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The targets the origin received for one HTTP/1.1 request to `listener`.
async fn forwarded(origin: &Backend, listener: SocketAddr, target: &str) -> Vec<String> {
    forwarded_over(Version::HTTP_11, origin, listener, target).await
}

async fn forwarded_over(
    version: Version,
    origin: &Backend,
    listener: SocketAddr,
    target: &str,
) -> Vec<String> {
    let before = origin.uris().len();
    fetch(version, listener, target).await;
    origin.uris().split_off(before)
}

#[tokio::test]
async fn dot_segments_double_slashes_and_escaped_letters_hit_the_admin_route() {
    let origin = http_backend("origin");
    let proxy = Proxy::start(&yaml("api", origin.addr, ADMIN_FORBIDDEN)).await;
    let api = proxy.upstream("api");
    let disguised = [
        "/admin",
        "//admin",
        "/./admin",
        "/x/../admin",
        "/%61dmin",
        "/%2e%2E/admin/",
        "/a/b/../../admin/users?x=1",
        "/..//./admin",
    ];
    for version in [Version::HTTP_11, Version::HTTP_2] {
        for target in disguised {
            let reply = fetch(version, api, target).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{version:?} {target}");
            assert_eq!(reply.body, "no");
        }
    }
    assert_eq!(
        origin.uris(),
        Vec::<String>::new(),
        "none reached the origin"
    );
}

#[tokio::test]
async fn the_origin_gets_the_normalized_path_and_the_query_untouched() {
    let origin = http_backend("origin");
    let proxy = Proxy::start(&yaml("api", origin.addr, "")).await;
    let api = proxy.upstream("api");
    let cases = [
        ("/a//b/./c/../d?q=/x/../%2f%7e", "/a/b/d?q=/x/../%2f%7e"),
        ("/%7euser/%c3%a9", "/~user/%C3%A9"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/a/b/..", "/a/"),
        ("/", "/"),
    ];
    for version in [Version::HTTP_11, Version::HTTP_2] {
        for (sent, expected) in cases {
            let seen = forwarded_over(version, &origin, api, sent).await;
            assert_eq!(seen, [expected], "{version:?} {sent}");
        }
    }
}

#[tokio::test]
async fn a_path_prefix_rewrite_sees_the_normalized_path() {
    let origin = http_backend("origin");
    let routes = format!(
        "{ADMIN_FORBIDDEN}      - {{ name: checkout, match: {{ path: {{ prefix: /checkout }} }}, \
         rewrite: {{ path_prefix: /v2/checkout }} }}\n"
    );
    let proxy = Proxy::start(&yaml("api", origin.addr, &routes)).await;
    let api = proxy.upstream("api");
    let reply = fetch(Version::HTTP_11, api, "/checkout/../../admin").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        forwarded(&origin, api, "/checkout/./cart/../items?id=7").await,
        ["/v2/checkout/items?id=7"]
    );
    assert_eq!(
        forwarded(&origin, api, "/shop/../checkout//pay").await,
        ["/v2/checkout/pay"]
    );
}

#[tokio::test]
async fn encoded_slashes_and_malformed_escapes_are_refused_by_default() {
    let origin = http_backend("origin");
    let proxy = Proxy::start(&yaml("refusing", origin.addr, "")).await;
    let api = proxy.upstream("refusing");
    let refused = [
        "/a%2Fb",
        "/a%2fb",
        "/a%5Cb",
        "/a%5c..%5cadmin",
        "/%zz",
        "/a%4",
        "/a%",
    ];
    for target in refused {
        let reply = fetch(Version::HTTP_11, api, target).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{target}");
        assert_eq!(reply.headers["x-remora-error"], "bad_path", "{target}");
    }
    assert_eq!(
        origin.uris(),
        Vec::<String>::new(),
        "none reached the origin"
    );
    let metrics = proxy.admin_url("/metrics");
    let labels = [
        ("direction", "outbound"),
        ("upstream", "refusing"),
        ("kind", "bad_path"),
    ];
    prom::assert_value_within(
        &metrics,
        "remora_proxy_errors_total",
        &labels,
        refused.len() as f64,
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn escaped_slashes_action_keep_unchanged_and_unescape_and_forward() {
    let origin = http_backend("origin");
    let keep = "    path_normalization: { path_with_escaped_slashes_action: keep_unchanged }\n";
    let proxy = Proxy::start(&yaml("api", origin.addr, keep)).await;
    let api = proxy.upstream("api");
    assert_eq!(forwarded(&origin, api, "/a%2Fb").await, ["/a%2Fb"]);
    assert_eq!(
        forwarded(&origin, api, "/a%5c..%2f/b").await,
        ["/a%5C..%2F/b"]
    );

    let unescape =
        "    path_normalization: { path_with_escaped_slashes_action: unescape_and_forward }\n";
    let proxy = Proxy::start(&yaml("api", origin.addr, unescape)).await;
    let api = proxy.upstream("api");
    assert_eq!(forwarded(&origin, api, "/a%2Fb").await, ["/a/b"]);
    assert_eq!(forwarded(&origin, api, "/x/y%2F..%2Fz").await, ["/x/z"]);
}

#[tokio::test]
async fn merge_slashes_and_normalize_path_can_be_turned_off() {
    let origin = http_backend("origin");
    let no_merge = "    path_normalization: { merge_slashes: false }\n";
    let proxy = Proxy::start(&yaml("api", origin.addr, no_merge)).await;
    let api = proxy.upstream("api");
    assert_eq!(forwarded(&origin, api, "//a//b/./c").await, ["//a//b/c"]);

    let raw = "    path_normalization: { normalize_path: false, merge_slashes: false, \
               path_with_escaped_slashes_action: keep_unchanged }\n";
    let proxy = Proxy::start(&yaml("api", origin.addr, raw)).await;
    let api = proxy.upstream("api");
    let target = "//x/../%61%2f%zz";
    assert_eq!(forwarded(&origin, api, target).await, [target]);
}

#[tokio::test]
async fn the_inbound_listener_normalizes_too() {
    let app = http_backend("app");
    let yaml = format!(
        "service: {{ name: test, port: {}, protocol: http }}\n\
         inbound: {{ listen: 127.0.0.1:0 }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        app.addr.port()
    );
    let proxy = Proxy::start(&yaml).await;
    let inbound = proxy.inbound();
    assert_eq!(forwarded(&app, inbound, "/x/..//%61pi").await, ["/api"]);
    let reply = fetch(Version::HTTP_11, inbound, "/a%2Fb").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

/// An upstream reached through the transparent listener (by `Host`) has its
/// requests normalized by its own `path_normalization`, as from its listener.
#[tokio::test]
async fn the_transparent_listener_normalizes_with_the_upstream_settings() {
    let origin = http_backend("origin");
    let yaml = format!(
        "service: {{ name: test }}\n\
         upstreams:\n  - name: api\n    hosts: [api]\n    discovery: {{ static: [{}] }}\n\
         {ADMIN_FORBIDDEN}\
         \x20   path_normalization: {{ merge_slashes: false }}\n\
         transparent: {{ outbound_listen: 127.0.0.1:0 }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\nlogging: {{ access_log: false }}\n",
        origin.addr
    );
    let proxy = Proxy::start(&yaml).await;
    let transparent = proxy.bound.transparent.expect("transparent listener");
    let via_host = |target: &str| {
        let request = Request::get(format!("http://{transparent}{target}"))
            .header("host", "api")
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(Version::HTTP_11, request)
    };
    let reply = via_host("/x/../admin").await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    via_host("/a//b/%7e/.").await.unwrap();
    assert_eq!(origin.uris(), ["/a//b/~/"]);
}

/// Sends `head` raw on a new connection to `listener`; the whole answer.
async fn raw_exchange(listener: SocketAddr, head: &[u8]) -> String {
    let mut stream = TcpStream::connect(listener).await.unwrap();
    stream.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// `OPTIONS *` (asterisk-form) is not a path: it is forwarded as is. Any
/// other method with `*` is refused.
#[tokio::test]
async fn options_asterisk_is_forwarded_as_is_and_other_non_paths_refused() {
    let origin = http_backend("origin");
    let proxy = Proxy::start(&yaml("api", origin.addr, ADMIN_FORBIDDEN)).await;
    let api = proxy.upstream("api");
    let options = b"OPTIONS * HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n";
    let answer = raw_exchange(api, options).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert_eq!(origin.uris(), ["*"]);

    let get = b"GET * HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n";
    let answer = raw_exchange(api, get).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("x-remora-error: bad_path"), "{answer}");
    assert_eq!(origin.uris(), ["*"], "GET * did not reach the origin");
}
