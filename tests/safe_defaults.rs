//! Safe defaults, checked on the real binary: the admin listener is on
//! loopback unless configured otherwise, and remora warns loudly when it is
//! not; secrets (the Consul token, `authorization`, cookies, token headers
//! and query strings) never reach a log line, even at `trace`; and remora
//! serves when run as an unprivileged user (`nobody`).

mod support;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Empty;

use support::consul::{ConsulStandIn, Instance};
use support::{ProxyProcess, get, http_backend, http_client};

const ADMIN_WARNING: &str = "ADMIN LISTENER IS NOT ON LOOPBACK";

fn config(admin: &str, backend: std::net::SocketAddr) -> String {
    format!(
        "service: {{ name: safe }}\n\
         upstreams:\n  - {{ name: app, listen: 127.0.0.1:0, discovery: {{ static: [{backend}] }} }}\n\
         admin: {{ listen: \"{admin}\" }}\n"
    )
}

#[test]
fn admin_defaults_to_loopback() {
    let config = remora::config::parse("service: { name: web }", "t.yaml").unwrap();
    assert!(config.admin.listen.ip().is_loopback());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_loopback_admin_listener_is_warned_about() {
    let backend = http_backend("target");
    let loopback = tokio::task::block_in_place(|| {
        ProxyProcess::start(&config("127.0.0.1:0", backend.addr), 1)
    });
    assert!(
        !loopback
            .startup_log
            .iter()
            .any(|l| l.contains(ADMIN_WARNING)),
        "{:#?}",
        loopback.startup_log
    );
    let exposed =
        tokio::task::block_in_place(|| ProxyProcess::start(&config("0.0.0.0:0", backend.addr), 1));
    let warning = exposed
        .startup_log
        .iter()
        .find(|l| l.contains(ADMIN_WARNING))
        .unwrap_or_else(|| panic!("no warning in {:#?}", exposed.startup_log));
    let event: serde_json::Value = serde_json::from_str(warning).unwrap();
    assert_eq!(event["level"], "WARN", "{warning}");
    assert!(
        event["addr"].as_str().unwrap().starts_with("0.0.0.0:"),
        "{warning}"
    );
}

/// Every secret a request or the configuration can carry, with logging at
/// `trace` (dependencies included) and a Consul agent that rejects the
/// token: none of them appears in any log line.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_reach_the_logs() {
    let backend = http_backend("target");
    let consul = ConsulStandIn::start();
    consul.set_token(Some("the-agent-wants-another-token"));
    consul.register(Instance::new("a", "api", backend.addr));
    let yaml = format!(
        "service: {{ name: safe }}\n\
         upstreams:\n\
         \x20 - {{ name: app, listen: 127.0.0.1:0, discovery: {{ static: [{}] }} }}\n\
         \x20 - {{ name: api, listen: 127.0.0.1:0, discovery: {{ consul: {{ service: api }} }} }}\n\
         consul: {{ address: \"{}\", token: secret-consul-token-1, wait: 1s }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ level: trace }}\n",
        backend.addr,
        consul.url()
    );
    let mut proxy = tokio::task::block_in_place(|| ProxyProcess::start(&yaml, 2));
    let request = Request::get(format!(
        "http://{}/?token=secret-query-2",
        proxy.listener("app")
    ))
    .header("authorization", "Bearer secret-bearer-3")
    .header("cookie", "session=secret-cookie-4")
    .header("x-consul-token", "secret-header-5")
    .header("x-api-key", "secret-header-6")
    .body(Empty::<Bytes>::new())
    .unwrap();
    let response = http_client(Version::HTTP_11)
        .request(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let config = get(Version::HTTP_11, &format!("http://{}/config", proxy.admin))
        .await
        .unwrap();
    assert!(!config.body.contains("secret-"), "{}", config.body);

    // The Consul failure may already be among the startup lines; trace
    // lines keep coming, so only wait for what has not been seen.
    let mut lines = proxy.startup_log.clone();
    for needle in ["Consul discovery failing", "\"message\":\"request\""] {
        if !lines.iter().any(|l| l.contains(needle)) {
            lines.extend(tokio::task::block_in_place(|| proxy.log_until(needle)));
        }
    }
    assert!(
        lines.iter().any(|l| l.contains("\"level\":\"TRACE\"")),
        "trace logging is on: {lines:#?}"
    );
    let leaks: Vec<&String> = lines.iter().filter(|l| l.contains("secret-")).collect();
    assert!(leaks.is_empty(), "secrets in the logs: {leaks:#?}");
}

/// remora needs no privilege to serve on unprivileged ports: run as
/// `nobody` (setpriv, from util-linux), it proxies and answers `/ready`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root (CI runs as root): setpriv switches to `nobody`"]
async fn serves_as_an_unprivileged_user() {
    support::requirements::require_root("setpriv switches to `nobody`");
    let backend = http_backend("target");
    let proxy = tokio::task::block_in_place(|| {
        ProxyProcess::start_wrapped(
            &[
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--",
            ],
            &config("127.0.0.1:0", backend.addr),
            1,
        )
    });
    assert_eq!(
        support::requirements::real_uid(proxy.child.id()),
        "65534",
        "remora runs as nobody"
    );
    let reply = get(
        Version::HTTP_11,
        &format!("http://{}/", proxy.listener("app")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "target");
    let ready = get(Version::HTTP_11, &format!("http://{}/ready", proxy.admin))
        .await
        .unwrap();
    assert_eq!(ready.status, 200);
}
