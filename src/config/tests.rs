//! Tests of the whole pipeline: every error class with its exact
//! `file:line:column: path: message`, env expansion, the shipped examples.
//! Over 500 lines: one test per error class, each through the whole
//! pipeline, so they share one set of helpers rather than one per section.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "API_PORT" => Some("9100".to_owned()),
        "REGION" => Some("eu-1".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn parse_test(text: &str) -> Result<Config, ConfigErrors> {
    parse_with_env(text, "test.yaml", &env)
}

fn errors(text: &str) -> Vec<String> {
    match parse_test(text) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

/// The key path of each `file:line:column: path: message` error.
fn key_paths(errors: &[String]) -> Vec<&str> {
    errors
        .iter()
        .map(|e| e.split(": ").nth(1).unwrap())
        .collect()
}

const SERVICE: &str = "service:\n  name: web\n  port: 8080\n";

/// Every YAML file under `dir` (recursively) loads; returns how many there were.
fn load_all_yaml(dir: &Path) -> usize {
    let mut loaded = 0;
    for entry in std::fs::read_dir(dir).expect("folder exists") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            loaded += load_all_yaml(&path);
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            if let Err(errors) = load(&path) {
                panic!("{} does not load:\n{errors}", path.display());
            }
            loaded += 1;
        }
    }
    loaded
}

#[test]
fn shipped_config_and_example_files_all_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        load_all_yaml(&root.join("config")) >= 3,
        "expected example.yaml, minimal.yaml, demo.yaml"
    );
    assert!(
        load_all_yaml(&root.join("examples")) >= 2,
        "expected the sidecar-pair configs"
    );
}

#[test]
fn demo_file_is_the_demo() {
    let config = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.yaml"))
        .expect("demo.yaml loads");
    assert_eq!(config.service.name, "demo");
    assert_eq!(config.service.port, Some(18080));
    let inbound = config.inbound.expect("inbound");
    assert_eq!(inbound.listen.to_string(), "127.0.0.1:15006");
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:15000");
    assert!(
        !config.logging.access_log,
        "the demo prints its own summary"
    );
    let [echo] = &config.upstreams[..] else {
        panic!("one upstream expected");
    };
    assert_eq!(echo.name, "echo");
    assert_eq!(echo.listen.expect("listen").to_string(), "127.0.0.1:9001");
    assert_eq!(echo.protocol, UpstreamProtocol::Http);
    assert_eq!(echo.load_balancing.policy, LoadBalancingPolicy::RoundRobin);
    let Discovery::Static(endpoints) = &echo.discovery else {
        panic!("static discovery expected");
    };
    let endpoints: Vec<String> = endpoints.iter().map(|e| e.address.to_string()).collect();
    assert_eq!(
        endpoints,
        ["127.0.0.1:18081", "127.0.0.1:18082", "127.0.0.1:18083"]
    );
}

#[test]
fn static_endpoints_with_weights() {
    let config = parse_test(
        "service: { name: web }\n\
         upstreams:\n  - name: api\n    listen: 127.0.0.1:9001\n    \
         discovery:\n      static:\n        - 127.0.0.1:8081\n        \
         - { address: 127.0.0.1:8082, weight: 3 }\n        - { address: 127.0.0.1:8083 }\n",
    )
    .expect("valid");
    let Discovery::Static(endpoints) = &config.upstreams[0].discovery else {
        panic!("static discovery expected");
    };
    let weights: Vec<(String, u32)> = endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("127.0.0.1:8081".to_owned(), 1),
            ("127.0.0.1:8082".to_owned(), 3),
            ("127.0.0.1:8083".to_owned(), 1)
        ]
    );
    // `/config` shows the short form for weight 1.
    let json = serde_json::to_value(&config).expect("serializes");
    assert_eq!(
        json["upstreams"][0]["discovery"]["static"],
        serde_json::json!(["127.0.0.1:8081", { "address": "127.0.0.1:8082", "weight": 3 }, "127.0.0.1:8083"])
    );

    let static_errors = |list: &str| {
        errors(&format!(
            "service: {{ name: web }}\nupstreams:\n  - name: api\n    listen: 127.0.0.1:9001\n    \
             discovery: {{ static: [{list}] }}\n"
        ))
    };
    assert_eq!(
        static_errors("{ address: 127.0.0.1:1, weight: 0 }"),
        ["test.yaml:5:59: upstreams[0].discovery.static[0].weight: must be at least 1"]
    );
    assert_eq!(
        static_errors("{ address: 127.0.0.1:1, wieght: 2 }"),
        [
            "test.yaml:5:51: upstreams[0].discovery.static[0].wieght: unknown field `wieght`, \
          expected one of address, weight, zone"
        ]
    );
}

#[test]
fn defaults() {
    let config = parse_test("service: { name: web }").expect("valid");
    assert_eq!(config.service.address.to_string(), "127.0.0.1");
    assert_eq!(config.service.protocol, ServiceProtocol::Http);
    assert!(!config.service.register);
    assert!(config.inbound.is_none());
    assert!(config.upstreams.is_empty());
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:15000");
    assert_eq!(config.admin.max_connections, 100);
    assert_eq!(config.admin.header_read_timeout, Duration::from_secs(10));
    assert!(config.admin.allowed_hosts.is_empty());
    assert_eq!(config.runtime.worker_threads, 1);
    assert_eq!(config.runtime.drain_timeout, Duration::from_secs(10));
    assert_eq!(config.logging.level, "info");
    assert_eq!(config.logging.format, LogFormat::Json);
    assert!(config.logging.access_log);

    let config = parse_test(
        "service: { name: web, port: 1, check: { tcp: 127.0.0.1:1 } }\n\
         inbound: {}\n\
         upstreams: [{ name: a, listen: 127.0.0.1:1, discovery: { static: [127.0.0.1:2] } }]\n",
    )
    .expect("valid");
    let check = config.service.check.expect("check");
    assert_eq!(check.interval, Duration::from_secs(10));
    assert_eq!(check.timeout, Duration::from_secs(2));
    assert_eq!(check.deregister_after, None);
    assert_eq!(
        config.inbound.expect("inbound").listen.to_string(),
        "0.0.0.0:15006"
    );
    let upstream = &config.upstreams[0];
    assert_eq!(upstream.protocol, UpstreamProtocol::Http);
    assert_eq!(upstream.load_balancing.policy, LoadBalancingPolicy::P2cEwma);
    assert_eq!(upstream.timeouts.connect, Duration::from_secs(1));
    assert_eq!(upstream.timeouts.request, None);
    assert_eq!(upstream.timeouts.idle, Duration::from_secs(60));
    let limits = upstream.limits;
    assert_eq!(limits.max_connections, 10_000);
    assert_eq!(limits.header_read_timeout, Duration::from_secs(30));
    assert_eq!(limits.max_header_bytes, 60 * 1024);
    assert_eq!(limits.max_headers, 100);
    assert_eq!(limits.max_concurrent_streams, 100);
    assert_eq!(
        limits.headers_with_underscores_action,
        HeadersWithUnderscoresAction::Allow
    );
}

#[test]
fn headers_with_underscores_action_values() {
    let config = parse_test(&format!(
        "{SERVICE}inbound: {{ limits: {{ headers_with_underscores_action: reject_request }} }}\n"
    ))
    .expect("valid");
    assert_eq!(
        config
            .inbound
            .expect("inbound")
            .limits
            .headers_with_underscores_action,
        HeadersWithUnderscoresAction::RejectRequest
    );
    let unknown =
        format!("{SERVICE}inbound: {{ limits: {{ headers_with_underscores_action: reject }} }}\n");
    let error = &errors(&unknown)[0];
    assert!(
        error.contains("inbound.limits.headers_with_underscores_action")
            && error.contains("allow, drop_header, reject_request"),
        "{error}"
    );
}

#[test]
fn listener_limits_out_of_range() {
    let text = format!(
        "{SERVICE}inbound:\n  limits: {{ max_connections: 0, header_read_timeout: 0s }}\n\
         upstreams:\n  - name: a\n    listen: 127.0.0.1:1\n    discovery: {{ static: [127.0.0.1:2] }}\n\
         \x20   limits: {{ max_header_bytes: 4096, max_headers: 0, max_concurrent_streams: 0 }}\n"
    );
    assert_eq!(
        errors(&text),
        [
            "test.yaml:5:30: inbound.limits.max_connections: must be at least 1",
            "test.yaml:5:54: inbound.limits.header_read_timeout: must be greater than zero",
            "test.yaml:10:33: upstreams[0].limits.max_header_bytes: must be between 8192 and 16777216",
            "test.yaml:10:52: upstreams[0].limits.max_headers: must be at least 1",
            "test.yaml:10:79: upstreams[0].limits.max_concurrent_streams: must be at least 1",
        ]
    );
    let unknown = format!("{SERVICE}inbound: {{ limits: {{ max_streams: 5 }} }}\n");
    assert!(
        errors(&unknown)[0].contains("inbound.limits"),
        "{:?}",
        errors(&unknown)
    );
}

#[test]
fn path_normalization_defaults_and_bad_values() {
    let text = format!(
        "{SERVICE}inbound: {{ path_normalization: {{ merge_slashes: false }} }}\n\
         upstreams:\n  - name: a\n    listen: 127.0.0.1:1\n    discovery: {{ static: [127.0.0.1:2] }}\n"
    );
    let config = parse_test(&text).expect("valid");
    let strict = PathNormalization {
        normalize_path: true,
        merge_slashes: true,
        path_with_escaped_slashes_action: EscapedSlashesAction::RejectRequest,
    };
    assert_eq!(config.upstreams[0].path_normalization, strict);
    let inbound = config.inbound.expect("inbound").path_normalization;
    assert_eq!(
        inbound,
        PathNormalization {
            merge_slashes: false,
            ..strict
        }
    );

    let text = format!(
        "{SERVICE}upstreams:\n  - name: a\n    listen: 127.0.0.1:1\n    discovery: {{ static: [127.0.0.1:2] }}\n\
         \x20   path_normalization: {{ path_with_escaped_slashes_action: unescape_and_redirect, merge: true }}\n"
    );
    assert_eq!(
        errors(&text),
        [
            "test.yaml:8:61: upstreams[0].path_normalization.path_with_escaped_slashes_action: \
             unknown variant `unescape_and_redirect`, expected one of keep_unchanged, reject_request, unescape_and_forward",
            "test.yaml:8:84: upstreams[0].path_normalization.merge: unknown field `merge`, \
             expected one of normalize_path, merge_slashes, path_with_escaped_slashes_action",
        ]
    );
}

#[test]
fn syntax_error() {
    let text = "service:\n  name: web\n  tags: [v1\n";
    assert_eq!(
        errors(text),
        ["test.yaml:3:9: service.tags: unclosed bracket '['"]
    );
}

#[test]
fn unknown_key_at_depth() {
    let text = "\
service: { name: web }
upstreams:
  - name: api
    listen: 127.0.0.1:9001
    discovery: { static: [127.0.0.1:8081] }
    timeouts: { connect: 1s, retry: 2s }
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:6:30: upstreams[0].timeouts.retry: unknown field `retry`, expected one of connect, request, idle"
        ]
    );
}

#[test]
fn the_search_for_structural_problems_is_bounded_and_says_so() {
    let unknown: String = (0..60).map(|i| format!("  unknown{i}: 1\n")).collect();
    let found = errors(&format!("service:\n  name: web\n{unknown}"));
    assert_eq!(found.len(), 51, "{found:#?}");
    assert!(
        (found.iter()).any(|line| line
            == "test.yaml:0:0: stopped after 50 rounds of structural problems; fix these and validate again"),
        "{found:#?}"
    );
    assert!(found.contains(&"test.yaml:52:3: service.unknown49: unknown field `unknown49`, expected one of name, id, address, port, protocol, tags, meta, register, check, locality".to_owned()), "{found:#?}");
}

#[test]
fn unknown_keys_at_every_depth_are_all_reported() {
    let text = "\
service:
  name: web
  bogus: 1
upstreams:
  - name: api
    listenn: 127.0.0.1:9002
    listen: 127.0.0.1:9001
    discovery: { static: [127.0.0.1:8081], extra: x }
    timeouts: { idle: 1s, retry: 2s }
  - { name: b, listen: 127.0.0.1:9003, discovery: { static: [127.0.0.1:1] }, weight: 2 }
admin:
  extra:
    nested: true
colour: blue
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:3:3: service.bogus: unknown field `bogus`, expected one of name, id, address, port, protocol, tags, meta, register, check, locality",
            "test.yaml:6:5: upstreams[0].listenn: unknown field `listenn`, expected one of name, listen, hosts, addresses, protocol, discovery, load_balancing, timeouts, connection_pool, retries, hedge, rate_limit, request_token, circuit_breaker, outlier_detection, health_check, fallback, max_concurrent_requests, adaptive_concurrency, fault, tls, backends, routes, limits, upgrades, path_normalization",
            "test.yaml:8:44: upstreams[0].discovery.extra: expected end of mapping after enum variant value",
            "test.yaml:9:27: upstreams[0].timeouts.retry: unknown field `retry`, expected one of connect, request, idle",
            "test.yaml:10:78: upstreams[1].weight: unknown field `weight`, expected one of name, listen, hosts, addresses, protocol, discovery, load_balancing, timeouts, connection_pool, retries, hedge, rate_limit, request_token, circuit_breaker, outlier_detection, health_check, fallback, max_concurrent_requests, adaptive_concurrency, fault, tls, backends, routes, limits, upgrades, path_normalization",
            "test.yaml:12:3: admin.extra: unknown field `extra`, expected one of listen, max_connections, header_read_timeout, allowed_hosts, tap",
            "test.yaml:14:1: colour: unknown field `colour`, expected one of service, inbound, upstreams, consul, etcd, dns, admin, runtime, logging, tracing, config_source, tls, transparent",
        ]
    );
}

/// Removing an entry to look further keeps the text valid YAML: an empty
/// value, the first entry of a multi-line flow mapping, a mapping left with
/// no entries, CRLF line ends and non-ASCII text before the errors.
#[test]
fn errors_after_awkward_entries_are_found() {
    let text = "\
service:\r
  name: web # café ☕\r
  bogus:\r
upstreams:\r
  - { colour: red, name: api, listen: 127.0.0.1:9001,\r
      discovery: { static: [127.0.0.1:1] }, size: 3 }\r
runtime:\r
  drain_timeout: 5\r
  worker_threads: many\r
";
    assert_eq!(
        key_paths(&errors(text)),
        [
            "service.bogus",
            "upstreams[0].colour",
            "upstreams[0].size",
            "runtime.drain_timeout",
            "runtime.worker_threads",
        ]
    );
    let found = errors(text);
    assert!(found[2].starts_with("test.yaml:6:45: "), "{found:?}");
    assert!(found[4].starts_with("test.yaml:9:19: "), "{found:?}");
}

#[test]
fn unknown_key_bad_duration_and_wrong_type_are_three_errors() {
    let text = "\
service:
  name: web
  port: eighty
runtime:
  drain_timeout: 5
upstreams:
  - name: api
    listen: 127.0.0.1:9001
    discovery: { static: [127.0.0.1:8081] }
    retry: 2
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:3:9: service.port: invalid u16",
            "test.yaml:5:18: runtime.drain_timeout: duration `5` has no unit: write e.g. \"5s\" or \"5ms\"",
            "test.yaml:10:5: upstreams[0].retry: unknown field `retry`, expected one of name, listen, hosts, addresses, protocol, discovery, load_balancing, timeouts, connection_pool, retries, hedge, rate_limit, request_token, circuit_breaker, outlier_detection, health_check, fallback, max_concurrent_requests, adaptive_concurrency, fault, tls, backends, routes, limits, upgrades, path_normalization",
        ]
    );
}

/// Semantic checks run next to unknown keys (dropping them leaves the file's
/// own configuration), not next to a dropped value (they would judge its
/// default).
#[test]
fn semantic_errors_are_reported_next_to_unknown_keys_only() {
    let upstreams = "\
upstreams:
  - name: Api
    listen: 127.0.0.1:9001
    discovery: { static: [] }
";
    let unknown_key = format!("service:\n  name: web\n  colour: blue\n{upstreams}");
    assert_eq!(
        errors(&unknown_key),
        [
            "test.yaml:3:3: service.colour: unknown field `colour`, expected one of name, id, address, port, protocol, tags, meta, register, check, locality",
            "test.yaml:5:11: upstreams[0].name: invalid upstream name `Api`: use lowercase letters, digits, `_` and `-`, starting with a letter or digit (it becomes a metric label)",
            "test.yaml:7:26: upstreams[0].discovery.static: needs at least one endpoint",
        ]
    );
    let wrong_type = format!("service:\n  name: web\n  port: eighty\n{upstreams}");
    assert_eq!(
        errors(&wrong_type),
        ["test.yaml:3:9: service.port: invalid u16"]
    );
}

/// A required key dropped for its bad value is not also reported missing;
/// a key that is really missing is, next to the other errors.
#[test]
fn dropped_values_are_not_reported_missing() {
    let text = "\
service:
  name: [web]
upstreams:
  - name: a
    listen: 127.0.0.1:9001
  - name: b
    listen: 127.0.0.1:9002
    discovery: { static: [localhost, 127.0.0.1:1, nope] }
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:2:9: service.name: expected string scalar",
            "test.yaml:4:5: upstreams[0]: missing field `discovery`",
            "test.yaml:8:27: upstreams[1].discovery.static[0]: invalid endpoint `localhost`: expected `ip:port` or `host:port`",
            "test.yaml:8:51: upstreams[1].discovery.static[2]: invalid endpoint `nope`: expected `ip:port` or `host:port`",
        ]
    );
}

#[test]
fn every_duplicate_key_is_reported() {
    let text = "service:\n  name: a\n  name: b\n  port: 1\n  port: 2\n";
    assert_eq!(
        errors(text),
        [
            "test.yaml:3:3: service.name: duplicate mapping key `name` is not allowed here",
            "test.yaml:5:3: service.port: duplicate mapping key `port` is not allowed here",
        ]
    );
}

#[test]
fn a_misplaced_section_is_an_unknown_key() {
    let text = "service: { name: web }\nroutes:\n  - path: /\n";
    assert_eq!(
        errors(text),
        [
            "test.yaml:2:1: routes: unknown field `routes`, expected one of service, inbound, upstreams, consul, etcd, dns, admin, runtime, logging, tracing, config_source, tls, transparent"
        ]
    );
}

#[test]
fn type_error() {
    let text = "service:\n  name: web\n  port: eighty\n";
    assert_eq!(errors(text), ["test.yaml:3:9: service.port: invalid u16"]);
}

#[test]
fn bad_static_endpoint() {
    let text = "\
service: { name: web }
upstreams:
  - name: a
    listen: 127.0.0.1:9001
    discovery: { static: [127.0.0.1:1] }
  - name: b
    listen: 127.0.0.1:9002
    discovery:
      static: [127.0.0.1:1, localhost]
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:9:29: upstreams[1].discovery.static[1]: invalid endpoint `localhost`: expected `ip:port` or `host:port`"
        ]
    );
}

#[test]
fn missing_field() {
    let text = "service:\n  port: 8080\n";
    assert_eq!(
        errors(text),
        ["test.yaml:2:3: service: missing field `name`"]
    );
}

#[test]
fn bare_number_duration() {
    let text = "service: { name: web }\nruntime:\n  drain_timeout: 5\n";
    assert_eq!(
        errors(text),
        [
            "test.yaml:3:18: runtime.drain_timeout: duration `5` has no unit: write e.g. \"5s\" or \"5ms\""
        ]
    );
}

#[test]
fn bad_duration() {
    let text = "service: { name: web }\nruntime:\n  drain_timeout: 5 parsecs\n";
    assert_eq!(
        errors(text),
        [
            "test.yaml:3:18: runtime.drain_timeout: invalid duration `5 parsecs`: unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)"
        ]
    );
}

#[test]
fn invalid_hash_on_header() {
    let text = "\
service: { name: web }
upstreams:
  - name: a
    listen: 127.0.0.1:9001
    discovery: { static: [127.0.0.1:1] }
    load_balancing: { policy: ring_hash, hash_on: \"header:bad header\" }
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:6:51: upstreams[0].load_balancing.hash_on: invalid header name `bad header` in hash_on"
        ]
    );
}

#[test]
fn h2c_and_malformed_upgrade_protocols_are_refused() {
    let text = "\
service: { name: web, port: 8080 }
inbound: { upgrades: [websocket, h2c] }
upstreams:
  - name: a
    listen: 127.0.0.1:9001
    discovery: { static: [127.0.0.1:1] }
    upgrades: [\"websocket/13\"]
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:2:34: inbound.upgrades[1]: `h2c` is never tunnelled: it switches to another HTTP version, whose requests would bypass every policy; remora strips its upgrade headers",
            "test.yaml:7:16: upstreams[0].upgrades[0]: invalid upgrade protocol `websocket/13`: expected a protocol name such as `websocket` (no version)",
        ]
    );
}

#[test]
fn upgrades_default_to_websocket() {
    let config = parse_test(&format!(
        "{SERVICE}inbound: {{}}\nupstreams:\n  - {{ name: a, listen: 127.0.0.1:9001, discovery: {{ static: [127.0.0.1:1] }}, upgrades: [] }}\n"
    ))
    .unwrap();
    let names = |protocols: &[UpgradeProtocol]| -> Vec<String> {
        protocols.iter().map(ToString::to_string).collect()
    };
    assert_eq!(names(&config.inbound.unwrap().upgrades), ["websocket"]);
    assert!(config.upstreams[0].upgrades.is_empty());
}

#[test]
fn env_expansion() {
    let text = "\
service:
  name: web-${REGION}
  port: ${API_PORT}
  tags: [\"${ZONE:-z1}\", '${EMPTY:-fallback}', $$HOME, plain]
  meta: { region: \"${REGION}\" }
";
    let config = parse_test(text).expect("valid");
    assert_eq!(config.service.name, "web-eu-1");
    assert_eq!(config.service.port, Some(9100));
    assert_eq!(config.service.tags, ["z1", "fallback", "$HOME", "plain"]);
    assert_eq!(config.service.meta["region"], "eu-1");
}

#[test]
fn env_value_cannot_inject_structure() {
    let injected = |name: &str| (name == "EVIL").then(|| "x\nport: 1\n".to_owned());
    let config =
        parse_with_env("service: { name: \"${EVIL}\" }", "t.yaml", &injected).expect("valid");
    assert_eq!(config.service.name, "x\nport: 1\n");
    assert_eq!(config.service.port, None);
}

#[test]
fn env_missing_variables_are_all_reported() {
    let text = "\
service:
  name: web-${NOPE}
  id: \"${ALSO_NOPE}\"
  tags: [\"${FINE:-ok}\", x$MISSING]
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:2:13: service.name: environment variable `NOPE` is not set (write `${NOPE:-default}` to give a default)",
            "test.yaml:3:8: service.id: environment variable `ALSO_NOPE` is not set (write `${ALSO_NOPE:-default}` to give a default)",
            "test.yaml:4:26: service.tags[1]: environment variable `MISSING` is not set (write `$$` for a literal `$`)",
        ]
    );
}

/// An unset variable does not hide structural errors elsewhere, and its
/// key is not also reported missing.
#[test]
fn unset_variables_and_structural_errors_are_reported_together() {
    let text = "\
service:
  name: ${NOPE}
  colour: blue
runtime:
  drain_timeout: 5
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:2:9: service.name: environment variable `NOPE` is not set (write `${NOPE:-default}` to give a default)",
            "test.yaml:3:3: service.colour: unknown field `colour`, expected one of name, id, address, port, protocol, tags, meta, register, check, locality",
            "test.yaml:5:18: runtime.drain_timeout: duration `5` has no unit: write e.g. \"5s\" or \"5ms\"",
        ]
    );
}

#[test]
fn semantic_errors_are_all_reported() {
    let text = "\
service:
  name: web
upstreams:
  - name: Api
    listen: 127.0.0.1:9001
    discovery: { static: [] }
    timeouts: { connect: 0s }
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:4:11: upstreams[0].name: invalid upstream name `Api`: use lowercase letters, digits, `_` and `-`, starting with a letter or digit (it becomes a metric label)",
            "test.yaml:6:26: upstreams[0].discovery.static: needs at least one endpoint",
            "test.yaml:7:26: upstreams[0].timeouts.connect: must be greater than zero",
        ]
    );
}

#[test]
fn duplicate_listeners_and_names() {
    let text = "\
service: { name: web, port: 8080 }
inbound:
  listen: 0.0.0.0:15006
upstreams:
  - name: api
    listen: 127.0.0.1:15006
    discovery: { static: [127.0.0.1:1] }
  - name: api
    listen: 127.0.0.1:0
    discovery: { static: [127.0.0.1:1] }
  - name: zero
    listen: 127.0.0.1:0
    discovery: { static: [127.0.0.1:1] }
admin: { listen: 127.0.0.1:9999 }
";
    let text = text.replace("127.0.0.1:9999", "127.0.0.1:15006");
    assert_eq!(
        errors(&text),
        [
            "test.yaml:6:13: upstreams[0].listen: listen address 127.0.0.1:15006 clashes with inbound.listen (0.0.0.0:15006)",
            "test.yaml:8:11: upstreams[1].name: upstream name `api` is already used by upstreams[0]",
            "test.yaml:14:18: admin.listen: listen address 127.0.0.1:15006 clashes with inbound.listen (0.0.0.0:15006)",
        ]
    );
}

#[test]
fn defaulted_listener_clash_points_at_the_section() {
    let text =
        "service: { name: web, port: 8080 }\nadmin: {}\ninbound: { listen: 127.0.0.1:15000 }\n";
    assert_eq!(
        errors(text),
        [
            "test.yaml:2:1: admin.listen: listen address 127.0.0.1:15000 clashes with inbound.listen (127.0.0.1:15000)"
        ]
    );
}

#[test]
fn ring_hash_rules() {
    let text = "\
service: { name: web }
upstreams:
  - name: a
    listen: 127.0.0.1:9001
    discovery: { static: [127.0.0.1:1] }
    load_balancing: { policy: ring_hash }
  - name: b
    listen: 127.0.0.1:9002
    discovery: { static: [127.0.0.1:1] }
    load_balancing: { policy: random, hash_on: header:x-user }
  - name: c
    listen: 127.0.0.1:9003
    protocol: tcp
    discovery: { static: [127.0.0.1:1] }
    load_balancing: { policy: ring_hash, hash_on: header:x-user }
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:6:31: upstreams[0].load_balancing.policy: ring_hash needs `hash_on: header:NAME`",
            "test.yaml:10:48: upstreams[1].load_balancing.hash_on: hash_on is only used by policy ring_hash",
            "test.yaml:13:15: upstreams[2].protocol: ring_hash / hash_on hash an HTTP header; protocol tcp has none",
        ]
    );
}

#[test]
fn service_and_runtime_rules() {
    let text = "\
service:
  name: \"\"
  check: { http: /healthz, interval: 0s }
inbound: { timeout: 0ms }
runtime: { worker_threads: 0, drain_timeout: 0s }
logging: { level: loud }
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:1:1: service.port: inbound is configured, so the application's port is required (1-65535)",
            "test.yaml:2:9: service.name: must not be empty",
            "test.yaml:3:38: service.check.interval: must be greater than zero",
            "test.yaml:4:21: inbound.timeout: must be greater than zero",
            "test.yaml:5:28: runtime.worker_threads: must be between 1 and 1024, got 0",
            "test.yaml:5:46: runtime.drain_timeout: must be greater than zero",
            "test.yaml:6:19: logging.level: invalid log level `loud`: use error, warn, info, debug, trace or a filter such as `info,remora=debug`",
        ]
    );
}

#[test]
fn filter_directives_are_accepted_as_levels() {
    let config = parse_test(&format!(
        "{SERVICE}logging: {{ level: \"info,remora=debug\" }}\n"
    ))
    .expect("valid");
    assert_eq!(config.logging.level, "info,remora=debug");
    let config = parse_test(&format!("{SERVICE}logging: {{ level: WARN }}\n")).expect("valid");
    assert_eq!(config.logging.level, "WARN");
}

#[test]
fn unreadable_file() {
    let errors = load(Path::new("/nonexistent/remora.yaml")).expect_err("missing file");
    assert_eq!(errors.0.len(), 1);
    let error = &errors.0[0];
    assert_eq!((error.line, error.column), (0, 0));
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/remora.yaml:0:0: cannot read the configuration file: "),
        "{error}"
    );
}

#[test]
fn errors_display_one_per_line() {
    let errors = ConfigErrors(vec![
        ConfigError {
            file: "f.yaml".to_owned(),
            line: 1,
            column: 2,
            path: "a.b".to_owned(),
            message: "first".to_owned(),
        },
        ConfigError {
            file: "f.yaml".to_owned(),
            line: 3,
            column: 4,
            path: String::new(),
            message: "second".to_owned(),
        },
    ]);
    assert_eq!(
        errors.to_string(),
        "f.yaml:1:2: a.b: first\nf.yaml:3:4: second"
    );
}

#[test]
fn serializes_durations_as_strings() {
    let config = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml"))
        .expect("example.yaml loads");
    let json = serde_json::to_value(&config).expect("serializable");
    let sessions = &json["upstreams"][1];
    assert_eq!(sessions["timeouts"]["connect"], "250ms");
    assert_eq!(sessions["timeouts"]["request"], "2s");
    assert_eq!(sessions["timeouts"]["idle"], "1m");
    assert_eq!(sessions["load_balancing"]["policy"], "ring_hash");
    assert_eq!(sessions["load_balancing"]["hash_on"], "header:x-user-id");
    assert_eq!(sessions["discovery"]["static"][0], "127.0.0.1:8091");
    assert_eq!(json["service"]["check"]["deregister_after"], "1m");
    assert_eq!(json["inbound"]["timeout"], "30s");
    assert_eq!(json["runtime"]["drain_timeout"], "10s");

    // What the admin endpoint shows parses back to the same configuration.
    let yaml = serde_json::to_string(&json).expect("json text");
    let again = parse_test(&yaml).expect("round trip");
    assert_eq!(serde_json::to_value(&again).expect("serializable"), json);
}

#[test]
fn missing_field_in_flow_mapping() {
    let text = "service: { name: web }\nupstreams:\n  - { name: a, listen: 127.0.0.1:1 }\n";
    assert_eq!(
        errors(text),
        ["test.yaml:3:5: upstreams[0]: missing field `discovery`"]
    );
    let text = "\n\nupstreams: []\n";
    assert_eq!(errors(text), ["test.yaml:3:1: missing field `service`"]);
    assert_eq!(
        errors("# nothing\n"),
        [
            "test.yaml:2:1: the file holds no configuration (at least `service: { name: ... }` is required)"
        ]
    );
}

#[test]
fn unknown_variants() {
    let text = "service: { name: web, protocol: quic }\n";
    assert_eq!(
        errors(text),
        [
            "test.yaml:1:33: service.protocol: unknown variant `quic`, expected one of http, http2, grpc, tcp"
        ]
    );
    let text = "\
service: { name: web }
upstreams:
  - name: a
    listen: 127.0.0.1:1
    discovery:
      zookeeper: { name: a }
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:6:7: upstreams[0].discovery.zookeeper: unknown variant `zookeeper`, expected one of static, consul, dns, etcd"
        ]
    );
}

#[test]
fn references_in_comments_and_keys_are_not_expanded() {
    let text = "# set ${UNSET} first\nservice:\n  name: web\n  meta:\n    ${UNSET}: v\n";
    let config = parse_test(text).expect("valid");
    assert_eq!(config.service.meta["${UNSET}"], "v");
}

#[test]
fn required_with_message() {
    let text = "service:\n  name: ${UNSET:?set the service name}\n";
    assert_eq!(
        errors(text),
        ["test.yaml:2:9: service.name: missing property `UNSET`: set the service name"]
    );
}

#[test]
fn duplicate_key() {
    let text = "service:\n  name: a\n  name: b\n";
    assert_eq!(
        errors(text),
        ["test.yaml:3:3: service.name: duplicate mapping key `name` is not allowed here"]
    );
}

#[test]
fn consul_registration_needs_the_application_port() {
    assert_eq!(
        errors("service:\n  name: web\n  register: true\n"),
        [
            "test.yaml:3:13: service.register: registration needs service.port, the application's port (1-65535)"
        ]
    );
    let config = parse_test("service:\n  name: web\n  port: 8080\n  register: true\n")
        .expect("register with a port is valid");
    assert!(config.service.register);
}

#[test]
fn consul_tls_files_need_https_and_come_in_pairs() {
    let found = errors(
        "service: { name: web }\n\
         consul:\n  address: http://127.0.0.1:8500\n  ca_file: /ca.pem\n  client_cert: /c.pem\n",
    );
    assert_eq!(
        key_paths(&found),
        ["consul.ca_file", "consul.client_cert", "consul.client_cert"],
        "{found:?}"
    );
    let https = "service: { name: web }\n\
                 consul:\n  address: https://127.0.0.1:8501\n  ca_file: /ca.pem\n  \
                 client_cert: /c.pem\n  client_key: /k.pem\n";
    let config = parse_test(https).expect("https with CA and a client pair is valid");
    assert_eq!(config.consul.ca_file, Some("/ca.pem".into()));
}

#[test]
fn http_only_resilience_keys_are_refused_on_tcp_upstreams() {
    let text = "service: { name: web }\n\
                upstreams:\n  - name: cache\n    listen: 127.0.0.1:9002\n    protocol: tcp\n    \
                discovery: { static: [127.0.0.1:6379] }\n    \
                retries: { attempts: 2 }\n    \
                max_concurrent_requests: 10\n";
    let found = errors(text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("test.yaml:7:14: upstreams[0].retries: applies to HTTP requests"));
    assert!(
        found[1]
            .starts_with("test.yaml:8:30: upstreams[0].max_concurrent_requests: applies to HTTP")
    );
}

#[test]
fn resilience_values_are_checked() {
    let text = "service: { name: web }\n\
                upstreams:\n  - name: api\n    listen: 127.0.0.1:9001\n    \
                discovery: { static: [127.0.0.1:8080] }\n    \
                retries: { attempts: 0, on: [reset, \"503\", unavailable] }\n    \
                circuit_breaker: { failure_rate: { threshold: 1.5 } }\n    \
                fault: { abort: { percent: 120, grpc_status: nope } }\n";
    let found = errors(text);
    assert_eq!(
        key_paths(&found),
        [
            "upstreams[0].retries.attempts",
            "upstreams[0].circuit_breaker.failure_rate.threshold",
            "upstreams[0].fault.abort.percent",
            "upstreams[0].fault.abort.grpc_status",
        ]
    );
}

#[test]
fn unknown_retry_conditions_are_named() {
    let found = errors(
        "service: { name: web }\n\
         upstreams:\n  - name: api\n    listen: 127.0.0.1:9001\n    \
         discovery: { static: [127.0.0.1:8080] }\n    \
         retries: { on: [reset, sometimes] }\n",
    );
    assert_eq!(found.len(), 1);
    assert!(
        found[0].contains("unknown condition `sometimes`"),
        "{found:?}"
    );
}

#[test]
fn dns_discovery_takes_defaults_and_validates_its_bounds() {
    let text = "service: { name: web }
upstreams:
  - name: api
    listen: 127.0.0.1:9001
    discovery: { dns: { name: _api._tcp.service.consul } }
";
    let config = parse_test(text).unwrap_or_else(|e| panic!("{e}"));
    let Discovery::Dns(dns) = &config.upstreams[0].discovery else {
        panic!("dns discovery expected");
    };
    assert_eq!(dns.name, "_api._tcp.service.consul");
    assert_eq!(dns.resolver, None);
    assert_eq!(dns.min_refresh, Duration::from_secs(1));
    assert_eq!(dns.max_refresh, Duration::from_secs(60));

    let text = "service: { name: web }
upstreams:
  - name: api
    listen: 127.0.0.1:9001
    discovery: { dns: { name: \" \", resolver: 127.0.0.1:8600, min_refresh: 0s, max_refresh: 0s } }
";
    let found = errors(text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("upstreams[0].discovery.dns.name: needs an SRV name"));
    assert!(found[1].contains("upstreams[0].discovery.dns.min_refresh: must be more than 0s"));
}

#[test]
fn static_lists_take_hostnames_beside_ips() {
    let text = "service: { name: web }
upstreams:
  - name: api
    listen: 127.0.0.1:9001
    discovery:
      static:
        - api.example.com:443
        - 10.0.0.1:80
        - { address: backup.example.com:8443, weight: 3, zone: b }
";
    let config = parse_test(text).unwrap_or_else(|e| panic!("{e}"));
    let Discovery::Static(endpoints) = &config.upstreams[0].discovery else {
        panic!("static discovery expected");
    };
    let hosts: Vec<Option<&str>> = endpoints.iter().map(|e| e.address.host()).collect();
    assert_eq!(
        hosts,
        [Some("api.example.com"), None, Some("backup.example.com")]
    );
    assert_eq!(endpoints[2].address.to_string(), "backup.example.com:8443");
    // Two hosts (and an IP): no one hostname.
    assert_eq!(config.upstreams[0].discovery.hostname(), None);
    let one_host: Discovery = serde_saphyr::from_str(
        "static: [\"api.example.com:443\", { address: \"api.example.com:8443\", weight: 2 }]",
    )
    .unwrap();
    assert_eq!(one_host.hostname(), Some("api.example.com"));
    assert_eq!(
        (endpoints[2].weight, endpoints[2].zone.as_deref()),
        (3, Some("b"))
    );
    assert_eq!(config.dns, DnsConfig::default());
    assert_eq!(config.dns.min_refresh, Duration::from_secs(1));
    assert_eq!(config.dns.max_refresh, Duration::from_secs(60));
    // `/config` shows them as written.
    let shown = crate::config::shown(&config).expect("shown");
    assert!(shown.contains("api.example.com:443"), "{shown}");

    let text = "service: { name: web }
upstreams:
  - name: api
    listen: 127.0.0.1:9001
    discovery: { static: [\"api.example.com:0\", { address: \"api_x.example.com:80\" }] }
dns: { resolver: 127.0.0.1:53, min_refresh: 0s, max_refresh: 0s }
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:5:27: upstreams[0].discovery.static[0]: invalid endpoint `api.example.com:0`: expected `ip:port` or `host:port`",
            "test.yaml:5:59: upstreams[0].discovery.static[1].address: invalid endpoint `api_x.example.com:80`: expected `ip:port` or `host:port`",
        ]
    );
    let text = "service: { name: web }
upstreams:
  - name: api
    listen: 127.0.0.1:9001
    discovery: { static: [api.example.com:443] }
dns: { resolver: 127.0.0.1:53, min_refresh: 0s, max_refresh: 0s }
";
    assert_eq!(
        errors(text),
        ["test.yaml:6:45: dns.min_refresh: must be more than 0s"]
    );
}

#[test]
fn dns_discovery_of_a_and_aaaa_records_needs_a_hostname_and_a_port() {
    let text = "service: { name: web }
upstreams:
  - name: api
    listen: 127.0.0.1:9001
    discovery: { dns: { name: api.example.com, type: a, port: 443 } }
";
    let config = parse_test(text).unwrap_or_else(|e| panic!("{e}"));
    let Discovery::Dns(dns) = &config.upstreams[0].discovery else {
        panic!("dns discovery expected");
    };
    assert_eq!((dns.record_type, dns.port), (DnsRecordType::A, Some(443)));
    assert_eq!(
        config.upstreams[0].discovery.hostname(),
        Some("api.example.com")
    );

    let text = "service: { name: web }
upstreams:
  - name: a
    listen: 127.0.0.1:9001
    discovery: { dns: { name: api.example.com, type: a } }
  - name: b
    listen: 127.0.0.1:9002
    discovery: { dns: { name: _api._tcp.example.com, port: 443 } }
  - name: c
    listen: 127.0.0.1:9003
    discovery: { dns: { name: _api._tcp.example.com, type: a, port: 0 } }
  - name: d
    listen: 127.0.0.1:9004
    discovery: { dns: { name: api.example.com, type: aaaa, port: 1 } }
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:14:54: upstreams[3].discovery.dns.type: unknown variant `aaaa`, expected one of srv, a"
        ]
    );
    let text = text.replace("type: aaaa", "type: a");
    assert_eq!(
        errors(&text),
        [
            "test.yaml:5:18: upstreams[0].discovery.dns.port: required with `type: a` (A and AAAA records carry no port)",
            "test.yaml:8:60: upstreams[1].discovery.dns.port: only with `type: a` (SRV records carry the ports)",
            "test.yaml:11:31: upstreams[2].discovery.dns.name: `_api._tcp.example.com` is not a hostname (`type: a`)",
            "test.yaml:11:69: upstreams[2].discovery.dns.port: must be 1 to 65535",
        ]
    );
}

#[test]
fn consul_file_and_defaults() {
    let config = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/consul.yaml"))
        .expect("consul.yaml loads");
    assert_eq!(config.consul.wait, Duration::from_secs(300));
    assert_eq!(config.consul.datacenter.as_deref(), Some("dc1"));
    assert_eq!(config.consul.sync_interval, Duration::from_secs(30));
    assert!(config.service.register);
    assert_eq!(config.service.id.as_deref(), Some("web-1"));
    let Discovery::Consul(api) = &config.upstreams[0].discovery else {
        panic!("consul discovery expected");
    };
    assert_eq!(api.service, "api");
    assert_eq!(api.tags, ["v2"]);
    assert!(api.passing_only && !api.connect);
    let Discovery::Consul(billing) = &config.upstreams[2].discovery else {
        panic!("consul discovery expected");
    };
    assert!(billing.connect && !billing.passing_only);

    let minimal = parse_test(
        "service: { name: web }\n\
         upstreams:\n  - name: api\n    listen: 127.0.0.1:9001\n    \
         discovery: { consul: { service: api } }\n",
    )
    .expect("valid");
    assert!(minimal.consul.address.is_none());
    assert!(minimal.consul.token.is_none() && minimal.consul.token_file.is_none());
    assert_eq!(minimal.consul.wait, Duration::from_secs(300));
    assert_eq!(minimal.consul.sync_interval, Duration::from_secs(30));
    assert!(minimal.consul.ca_file.is_none() && minimal.consul.client_cert.is_none());
    assert!(!minimal.service.register);
    let Discovery::Consul(api) = &minimal.upstreams[0].discovery else {
        panic!("consul discovery expected");
    };
    assert!(api.passing_only, "passing_only defaults to true");
    assert!(api.tags.is_empty() && api.datacenter.is_none() && !api.connect);
}

#[test]
fn consul_token_is_redacted() {
    let config = parse_test("service: { name: web }\nconsul: { token: s3cr3t }\n").expect("valid");
    assert_eq!(
        config.consul.token.as_ref().map(Secret::expose),
        Some("s3cr3t")
    );
    let json = serde_json::to_string(&config).expect("serializable");
    assert!(json.contains(r#""token":"<redacted>""#), "{json}");
    assert!(!json.contains("s3cr3t"));
    assert!(!format!("{config:?}").contains("s3cr3t"));
}

#[test]
fn consul_semantic_errors() {
    let found = errors(
        "service: { name: web }\n\
         consul: { address: \"tcp://consul:8501\", wait: 11m }\n\
         upstreams:\n  - name: api\n    listen: 127.0.0.1:9001\n    \
         discovery: { consul: { service: \"\", tags: [\"\"] } }\n",
    );
    let paths: Vec<&str> = found
        .iter()
        .map(|e| e.split(": ").nth(1).unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "consul.address",
            "consul.wait",
            "upstreams[0].discovery.consul.service",
            "upstreams[0].discovery.consul.tags",
        ],
        "{found:?}"
    );
    let unknown = errors(
        "service: { name: web }\n\
         upstreams:\n  - name: api\n    listen: 127.0.0.1:9001\n    \
         discovery: { consul: { service: api, passing: true } }\n",
    );
    assert_eq!(unknown.len(), 1, "{unknown:?}");
}

#[test]
fn otlp_defaults_and_invalid_values() {
    let config = parse_test(&format!("{SERVICE}tracing:\n  otlp: {{}}\n")).unwrap();
    let otlp = config.tracing.otlp.expect("otlp section");
    assert_eq!(otlp.endpoint, None);
    assert_eq!(otlp.sample_ratio, 1.0);
    assert_eq!((otlp.max_queue, otlp.batch_size), (2048, 512));
    assert_eq!(otlp.flush_interval, Duration::from_secs(1));
    assert!(parse_test(SERVICE).unwrap().tracing.otlp.is_none());

    let found = errors(&format!(
        "{SERVICE}tracing:\n  otlp:\n    endpoint: ftp://collector/v1/traces\n    sample_ratio: 1.5\n    max_queue: 0\n    batch_size: 0\n    flush_interval: 0s\n"
    ));
    let joined = found.join("\n");
    for path in [
        "tracing.otlp.endpoint",
        "tracing.otlp.sample_ratio",
        "tracing.otlp.max_queue",
        "tracing.otlp.batch_size",
        "tracing.otlp.flush_interval",
    ] {
        assert!(joined.contains(path), "{path} missing from:\n{joined}");
    }
}

#[test]
fn consul_kv_source_files_and_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bootstrap = load(&root.join("config/consul-kv.yaml")).expect("consul-kv.yaml loads");
    assert_eq!(
        bootstrap.config_source,
        Some(ConfigSource::ConsulKv(ConsulKvSource {
            key: "remora/web".into(),
            allowed_env: Vec::new(),
        }))
    );
    let value = std::fs::read_to_string(root.join("config/consul-kv-value.yaml")).unwrap();
    let config =
        parse_from_source(&value, "consul-kv:remora/web", &[]).expect("the value is valid");
    assert_eq!(config.upstreams[0].name, "api");

    // The value must not say how to reach itself.
    let refused = parse_from_source(
        "service: { name: web }\nconsul: { wait: 1s }\nconfig_source: { consul_kv: { key: x } }\n",
        "consul-kv:remora/web",
        &[],
    )
    .unwrap_err();
    let refused: Vec<String> = refused.0.iter().map(ToString::to_string).collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].starts_with("consul-kv:remora/web:2:1: consul: comes from the local"));
    assert!(
        refused[1].starts_with("consul-kv:remora/web:3:1: config_source: comes from the local")
    );

    assert_eq!(
        errors(
            "service: { name: web }\nconfig_source: { consul_kv: { key: k, allowed_env: [OK_1, X-1] } }\n"
        ),
        [
            "test.yaml:2:59: config_source.consul_kv.allowed_env[1]: `X-1` is not a variable name (letters, digits and `_`, e.g. `REGION`)"
        ]
    );
    assert_eq!(
        errors("service: { name: web }\nconfig_source: { consul_kv: { key: /remora/web } }\n"),
        [
            "test.yaml:2:36: config_source.consul_kv.key: a key has no leading or trailing `/` (e.g. `remora/web`)"
        ]
    );
}

#[test]
fn tls_section_defaults_and_errors() {
    let config = parse_test(&format!(
        "{SERVICE}tls:\n  cert: /c.pem\n  key: /k.pem\n  ca: /ca.pem\n  authorization: {{ deny: [web] }}\n"
    ))
    .expect("valid tls");
    let tls = config.tls.expect("tls");
    assert_eq!(tls.source, TlsSource::Files);
    assert_eq!(tls.reload_interval, Duration::from_secs(5));
    assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
    assert_eq!(tls.authorization.default, AuthorizationAction::Allow);
    assert!(!tls.authorization.intentions);
    assert_eq!(tls.authorization.until_intentions_load, None, "deny");
    let lenient = parse_test(&format!(
        "{SERVICE}tls:\n  source: consul\n  authorization: {{ intentions: true, until_intentions_load: default }}\n"
    ))
    .expect("valid until_intentions_load");
    assert_eq!(
        lenient.tls.unwrap().authorization.until_intentions_load,
        Some(UntilIntentionsLoad::Default)
    );
    assert_eq!(
        errors(&format!(
            "{SERVICE}tls:\n  source: consul\n  authorization: {{ until_intentions_load: default }}\n"
        )),
        [
            "test.yaml:6:43: tls.authorization.until_intentions_load: only used with `intentions: true`"
        ]
    );

    assert_eq!(
        errors(&format!("{SERVICE}tls:\n  cert: /c.pem\n  key: /k.pem\n")),
        ["test.yaml:5:3: tls: `tls.ca` is required with `source: files` (a PEM file path)"]
    );
    assert_eq!(
        errors(&format!(
            "{SERVICE}tls:\n  source: consul\n  cert: /c.pem\n  handshake_timeout: 0s\n  authorization:\n    allow: [\"\", \"https://x\"]\n    deny: [\"spiffe://TD/ns/a/dc/b/svc/web\", \"spiffe://td/ns/../svc/*\", \"web/admin\"]\n"
        )),
        [
            "test.yaml:6:9: tls.cert: not used with `source: consul` (Consul's CA issues the certificate)",
            "test.yaml:7:22: tls.handshake_timeout: must be greater than zero",
            "test.yaml:9:13: tls.authorization.allow[0]: ``: expected a service name (a-z, A-Z, 0-9, `.`, `-`, `_`) or a spiffe:// ID (`*` matches any characters but `/`)",
            "test.yaml:9:17: tls.authorization.allow[1]: `https://x`: only spiffe:// IDs are identities",
            "test.yaml:10:12: tls.authorization.deny[0]: `spiffe://TD/ns/a/dc/b/svc/web` is not a valid SPIFFE ID: the trust domain must be 1 to 255 of a-z, 0-9, `.`, `-`, `_` (lower case, no user info or port)",
            "test.yaml:10:45: tls.authorization.deny[1]: `spiffe://td/ns/../svc/*` is not a valid SPIFFE ID: a path segment is empty, `.` or `..`",
            "test.yaml:10:72: tls.authorization.deny[2]: `web/admin`: expected a service name (a-z, A-Z, 0-9, `.`, `-`, `_`) or a spiffe:// ID (`*` matches any characters but `/`)",
        ]
    );
    assert_eq!(
        errors(&format!(
            "{SERVICE}tls:\n  source: consul\n  authorization: {{ intentions: true, until_intentions_load: allow }}\n"
        )),
        [
            "test.yaml:6:61: tls.authorization.until_intentions_load: unknown variant `allow`, expected one of deny, default"
        ]
    );
    let upstream = "upstreams:\n  - name: api\n    listen: 127.0.0.1:0\n    discovery: { static: [127.0.0.1:1] }\n";
    let problems = errors(&format!(
        "{SERVICE}{upstream}    tls: {{ identity: \"spiffe://td/svc/api\" }}\n"
    ));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("upstreams[0].tls: mesh TLS needs the top-level `tls` section"));
    assert!(
        problems[1].contains("upstreams[0].tls.identity: `spiffe://td/svc/api` is not a SPIFFE ID")
    );
    assert!(errors(&format!("{SERVICE}tls:\n  source: consul\n  bogus: 1\n"))[0].contains("bogus"));
}

/// `upstreams[].tls`: `mode` defaults to `mesh`, whose keys keep their meaning; `mode:
/// simple` needs no `tls` section, takes a name, a CA file and a client certificate with
/// its key, and is refused without a name to verify towards IP endpoints, with half a
/// client certificate, an unparsable name or a mesh identity.
#[test]
fn upstream_tls_modes() {
    let upstream = "upstreams:\n  - name: api\n    listen: 127.0.0.1:0\n    discovery: { static: [127.0.0.1:1] }\n";
    let mesh = parse_test(&format!(
        "{SERVICE}tls:\n  cert: /c.pem\n  key: /k.pem\n  ca: /ca.pem\n{upstream}    tls: {{ enabled: true, identity: api }}\n"
    ))
    .expect("mesh keys unchanged");
    let mesh_tls = mesh.upstreams[0].tls.clone().expect("tls");
    assert_eq!(mesh_tls.mode, UpstreamTlsMode::Mesh);
    assert!(mesh_tls.originates(false));
    assert!(!UpstreamTlsConfig::default().originates(false));
    assert!(
        UpstreamTlsConfig::default().originates(true),
        "Consul connect"
    );

    let simple = parse_test(&format!(
        "{SERVICE}{upstream}    tls: {{ mode: simple, server_name: api.test.internal, ca_file: /ca.pem, cert_file: /c.pem, key_file: /k.pem }}\n"
    ))
    .expect("simple without a tls section");
    let api = &simple.upstreams[0];
    let simple_tls = api.tls.clone().expect("tls");
    assert_eq!(simple_tls.mode, UpstreamTlsMode::Simple);
    assert!(simple_tls.originates(false));
    assert_eq!(simple_tls.ca_file, Some(PathBuf::from("/ca.pem")));
    assert_eq!(api.tls_server_name().as_deref(), Some("api.test.internal"));
    let by_ip = parse_test(&format!(
        "{SERVICE}{upstream}    tls: {{ mode: simple, server_name: \"127.0.0.1\" }}\n"
    ))
    .expect("an IP server name");
    assert_eq!(
        by_ip.upstreams[0].tls_server_name().as_deref(),
        Some("127.0.0.1")
    );
    parse_test(&format!(
        "{SERVICE}{upstream}    tls: {{ mode: simple, enabled: false }}\n"
    ))
    .expect("no name needed while off");

    assert_eq!(
        errors(&format!(
            "{SERVICE}{upstream}    tls: {{ mode: simple, identity: api, key_file: /k.pem }}\n"
        )),
        [
            "test.yaml:8:10: upstreams[0].tls: `server_name` is required with `mode: simple` when the endpoints are not written with a hostname (the name the server's certificate must be valid for, sent as SNI)",
            "test.yaml:8:36: upstreams[0].tls.identity: only used with `mode: mesh`; `mode: simple` verifies `server_name`",
            "test.yaml:8:51: upstreams[0].tls.key_file: needs `cert_file` too (the client certificate it belongs to)",
        ]
    );
    assert_eq!(
        errors(&format!(
            "{SERVICE}{upstream}    tls: {{ mode: simple, server_name: \"bad name!\" }}\n"
        )),
        [
            "test.yaml:8:39: upstreams[0].tls.server_name: `bad name!` is neither a DNS name nor an IP address"
        ]
    );
    assert_eq!(
        errors(&format!("{SERVICE}{upstream}    tls: {{ mode: tunnel }}\n")),
        [
            "test.yaml:8:18: upstreams[0].tls.mode: unknown variant `tunnel`, expected one of mesh, simple"
        ]
    );
}

#[test]
fn tls_origination_backends_named_by_another_host_need_a_server_name() {
    let upstream = |server_name: &str| {
        format!(
            "{SERVICE}upstreams:\n  - name: api\n    listen: 127.0.0.1:0\n    discovery: {{ static: [\"api.example.com:443\"] }}\n    tls: {{ mode: simple{server_name} }}\n    backends:\n      same: {{ static: [\"api.example.com:8443\"] }}\n      other: {{ static: [\"api-canary.example.com:443\"] }}\n"
        )
    };
    assert_eq!(
        errors(&upstream("")),
        [
            "test.yaml:8:10: upstreams[0].tls: backend `other` names host `api-canary.example.com`, but TLS verifies every backend for `api.example.com` (the endpoints' hostname): set `server_name` to the name their certificates share"
        ]
    );
    parse_test(&upstream(", server_name: example.com")).expect("an explicit name is trusted");
}

#[test]
fn canary_file_routes_and_backends() {
    let config = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/canary.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let api = &config.upstreams[0];
    assert_eq!(api.backends.len(), 3);
    assert_eq!(
        api.backends["v2"],
        BackendConfig::Subset(SubsetConfig {
            tags: Vec::new(),
            meta: [("version".to_owned(), "v2".to_owned())].into()
        })
    );
    let names: Vec<&str> = api.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "maintenance",
            "legacy-docs",
            "testers",
            "orders-grpc",
            "checkout"
        ]
    );
    let checkout = &api.routes[4];
    let split: Vec<(&str, u32)> = (checkout.split.as_ref().unwrap().iter())
        .map(|t| (t.backend.as_str(), t.weight))
        .collect();
    assert_eq!(split, [("v1", 90), ("v2", 10)]);
    assert_eq!(checkout.sticky, Some(StickyKey::Cookie("session".into())));
    assert_eq!(checkout.timeout, Some(Duration::from_secs(2)));
    let mirror = checkout.mirror.as_ref().unwrap();
    assert_eq!((mirror.percent, mirror.max_in_flight), (5.0, 64));
    assert_eq!(api.routes[1].redirect.as_ref().unwrap().status, 301);
}

#[test]
fn route_errors_name_their_keys() {
    let found = errors(
        "service: { name: web }\n\
         upstreams:\n  - name: api\n    listen: 127.0.0.1:9001\n    \
         discovery: { static: [127.0.0.1:1] }\n    \
         backends:\n      default: { static: [] }\n      v2: { subset: { tags: [v2] } }\n      \
         eu: { upstream: nowhere }\n    \
         routes:\n      - name: Bad\n        match: { path: { prefix: api }, methods: [get], headers: [{ name: x }] }\n        \
         backend: missing\n        redirect: { status: 200 }\n      \
         - name: split\n        split: [{ backend: v3, weight: 0 }]\n        \
         rewrite: { path_prefix: /v2 }\n        mirror: { backend: default, percent: 200 }\n      \
         - name: sticky\n        sticky: header:x-user\n",
    );
    let joined = found.join("\n");
    for expected in [
        "upstreams[0].backends.default: invalid backend name",
        "upstreams[0].backends.default.static: needs at least one endpoint",
        "upstreams[0].backends.v2.subset: subsets select Consul or etcd instances",
        "upstreams[0].backends.eu.upstream: no upstream is named `nowhere`",
        "upstreams[0].routes[0].name: invalid route name `Bad`",
        "upstreams[0].routes[0].match.path: must start with `/`",
        "upstreams[0].routes[0].match.methods[0]: invalid method `get`",
        "upstreams[0].routes[0].match.headers[0]: needs exactly one of",
        "upstreams[0].routes[0]: give at most one of",
        "upstreams[0].routes[0].backend: unknown backend `missing`",
        "upstreams[0].routes[0].redirect.status: must be 301",
        "upstreams[0].routes[1].split: needs at least one backend with a weight above 0",
        "upstreams[0].routes[1].split[0].backend: unknown backend `v3`",
        "upstreams[0].routes[1].rewrite.path_prefix: replaces the matched prefix",
        "upstreams[0].routes[1].mirror.percent: must be a percentage",
        "upstreams[0].routes[2].sticky: only applies to a `split`",
    ] {
        assert!(
            joined.contains(expected),
            "{expected} missing from:\n{joined}"
        );
    }
    assert!(
        found.iter().all(|e| e.starts_with("test.yaml:")),
        "{joined}"
    );

    let regex = errors(
        "service: { name: web }\n\
         upstreams:\n  - name: api\n    listen: 127.0.0.1:9001\n    \
         discovery: { static: [127.0.0.1:1] }\n    \
         routes:\n      - name: r\n        match: { path: { regex: '(' } }\n",
    );
    assert_eq!(regex.len(), 1, "{regex:?}");
    assert!(
        regex[0].contains("upstreams[0].routes[0].match.path.regex")
            && regex[0].contains("invalid regex `(`"),
        "{regex:?}"
    );
    let unknown = errors(
        "service: { name: web }\n\
         upstreams:\n  - name: api\n    listen: 127.0.0.1:9001\n    \
         discovery: { static: [127.0.0.1:1] }\n    \
         routes:\n      - name: r\n        matches: {}\n",
    );
    assert_eq!(unknown.len(), 1, "{unknown:?}");
}

#[test]
fn admin_limits_and_hosts_are_checked() {
    assert_eq!(
        errors(
            "service: { name: web }\n\
             admin: { max_connections: 0, header_read_timeout: 0s, allowed_hosts: [ok.example, \"a:1\", \"u@h\", \"\"] }\n"
        ),
        [
            "test.yaml:2:27: admin.max_connections: must be greater than zero",
            "test.yaml:2:51: admin.header_read_timeout: must be greater than zero",
            "test.yaml:2:83: admin.allowed_hosts[1]: `a:1` is not a host name (no port, e.g. `remora-admin.internal`)",
            "test.yaml:2:90: admin.allowed_hosts[2]: `u@h` is not a host name (no port, e.g. `remora-admin.internal`)",
            "test.yaml:2:97: admin.allowed_hosts[3]: `` is not a host name (no port, e.g. `remora-admin.internal`)",
        ]
    );
}

#[test]
fn jwt_defaults_and_bad_values() {
    let good = format!(
        "{SERVICE}inbound:\n  jwt:\n    providers:\n\
         \x20     - {{ name: a, issuer: https://a, jwks: {{ url: \"https://a/jwks\" }} }}\n"
    );
    let config = parse_test(&good).expect("valid");
    let jwt = config.inbound.unwrap().jwt.unwrap();
    let provider = &jwt.providers[0];
    assert!(!jwt.required && jwt.rules.is_empty() && !provider.forward);
    assert_eq!(
        (provider.leeway, provider.cache_size),
        (Duration::from_secs(60), 1000)
    );
    assert_eq!(
        provider.jwks.as_ref().unwrap().refresh,
        Duration::from_secs(300)
    );

    let bad = format!(
        "{SERVICE}inbound:\n  jwt:\n    rules: [{{ prefix: api, required: true }}]\n    providers:\n\
         \x20     - {{ name: a, issuer: \"\", jwks: {{ url: \"ftp://a\" }}, secret: short }}\n\
         \x20     - {{ name: a, issuer: i, jwks: {{ file: /k, url: \"http://a\", refresh: 0s }} }}\n\
         \x20     - {{ name: b, issuer: i, secret: 0123456789abcdef0123456789abcdef, from: {{ header: x, cookie: y }} }}\n\
         \x20     - {{ name: c, issuer: i, jwks: {{ url: \"http://a\", ca_file: /ca }}, claims_to_headers: {{ sub: host, \"a..b\": x-ok, email: \"bad header\" }} }}\n"
    );
    assert_eq!(
        key_paths(&errors(&bad)),
        [
            "inbound.jwt.rules[0].prefix",
            "inbound.jwt.providers[0]",
            "inbound.jwt.providers[0].issuer",
            "inbound.jwt.providers[1].name",
            "inbound.jwt.providers[1].jwks",
            "inbound.jwt.providers[1].jwks.refresh",
            "inbound.jwt.providers[2].from",
            "inbound.jwt.providers[3].jwks.ca_file",
            "inbound.jwt.providers[3].claims_to_headers.sub",
            "inbound.jwt.providers[3].claims_to_headers.a..b",
            "inbound.jwt.providers[3].claims_to_headers.email",
        ]
    );
    let unknown = format!("{SERVICE}inbound: {{ jwt: {{ providers: [], requierd: true }} }}\n");
    assert!(
        errors(&unknown)[0].contains("inbound.jwt"),
        "{:?}",
        errors(&unknown)
    );
}

#[test]
fn request_token_defaults_and_bad_values() {
    let good = format!(
        "{SERVICE}upstreams:\n  - name: a\n    listen: 127.0.0.1:1\n    discovery: {{ static: [127.0.0.1:2] }}\n\
         \x20   request_token: {{ file: /var/run/secrets/token }}\n"
    );
    let config = parse_test(&good).expect("valid");
    let token = config.upstreams[0].request_token.as_ref().unwrap();
    assert_eq!(
        (token.header.as_str(), token.overwrite),
        ("authorization", false)
    );
    assert_eq!(token.reload_interval, Duration::from_secs(5));

    let bad = format!(
        "{SERVICE}upstreams:\n  - name: a\n    listen: 127.0.0.1:1\n    discovery: {{ static: [127.0.0.1:2] }}\n\
         \x20   request_token: {{ file: /t, header: host, reload_interval: 0s }}\n\
         \x20   routes:\n      - {{ name: r, request_token: {{ file: /t, header: \"x y\" }} }}\n\
         \x20 - name: t\n    listen: 127.0.0.1:3\n    protocol: tcp\n    discovery: {{ static: [127.0.0.1:2] }}\n\
         \x20   request_token: {{ file: /t }}\n"
    );
    assert_eq!(
        key_paths(&errors(&bad)),
        [
            "upstreams[0].request_token.header",
            "upstreams[0].request_token.reload_interval",
            "upstreams[0].routes[0].request_token.header",
            "upstreams[1].request_token",
        ]
    );
}

#[test]
fn admin_tap_rate_and_redacted_header_names_are_checked() {
    assert_eq!(
        errors(
            "service: { name: web }\n\
             admin: { tap: { max_events_per_second: 0, redact_headers: [x-api-key, \"bad header\"] } }\n"
        ),
        [
            "test.yaml:2:40: admin.tap.max_events_per_second: must be greater than zero (turn the tap off with max_subscribers: 0)",
            "test.yaml:2:71: admin.tap.redact_headers[1]: `bad header` is not a header name",
        ]
    );
    let config = parse_test("service: { name: web }\n").unwrap();
    assert_eq!(config.admin.tap.max_subscribers, 4);
    assert_eq!(config.admin.tap.max_events_per_second, 100);
}

#[test]
fn inbound_authorization_rules_and_their_errors() {
    let good = format!(
        "{SERVICE}tls: {{ cert: /c.pem, key: /k.pem, ca: /ca.pem }}\n\
         inbound:\n  jwt:\n    providers: [{{ name: corp, issuer: https://corp, jwks: {{ url: \"https://corp/jwks\" }} }}]\n\
         \x20 authorization:\n    rules:\n\
         \x20     - name: reports\n        action: allow\n        identities: [web]\n\
         \x20       jwt: {{ provider: corp, sub: alice, claims: [{{ name: [org, id], value: acme }}, {{ name: tier, value: gold }}] }}\n\
         \x20       match: {{ path: {{ prefix: /reports }}, methods: [GET] }}\n"
    );
    let config = parse_test(&good).expect("valid rules");
    let authorization = config.inbound.unwrap().authorization.unwrap();
    assert_eq!(authorization.default, AuthorizationAction::Deny, "default");
    let jwt = authorization.rules[0].jwt.as_ref().unwrap();
    assert_eq!(jwt.claims[0].name.path(), ["org", "id"]);
    assert_eq!(jwt.claims[1].name.path(), ["tier"]);

    let bad = format!(
        "{SERVICE}inbound:\n  authorization:\n    rules:\n\
         \x20     - {{ name: a, action: allow, identities: ['https://td/web'] }}\n\
         \x20     - {{ name: a, action: deny, jwt: {{ sub: '', claims: [{{ name: [], value: x }}] }} }}\n\
         \x20     - {{ name: B, action: allow, match: {{ path: {{ exact: x }}, methods: [get] }} }}\n"
    );
    assert_eq!(
        errors(&bad),
        [
            "test.yaml:7:47: inbound.authorization.rules[0].identities: needs the top-level `tls` section: without mTLS no caller has an identity",
            "test.yaml:7:48: inbound.authorization.rules[0].identities[0]: `https://td/web`: only spiffe:// IDs are identities",
            "test.yaml:8:17: inbound.authorization.rules[1].name: duplicate rule name `a`",
            "test.yaml:8:39: inbound.authorization.rules[1].jwt: needs `inbound.jwt`: without it no request has verified claims",
            "test.yaml:8:46: inbound.authorization.rules[1].jwt.sub: must not be empty",
            "test.yaml:8:67: inbound.authorization.rules[1].jwt.claims[0].name: needs a claim name, or a list of non-empty names for a nested claim",
            "test.yaml:9:17: inbound.authorization.rules[2].name: invalid rule name `B`: use lowercase letters, digits, `_` and `-`, starting with a letter or digit",
            "test.yaml:9:50: inbound.authorization.rules[2].match.path: must start with `/`",
            "test.yaml:9:74: inbound.authorization.rules[2].match.methods[0]: invalid method `get`: use upper case, e.g. GET",
        ]
    );
    let unknown_provider = format!(
        "{SERVICE}inbound:\n  jwt:\n    providers: [{{ name: corp, issuer: https://corp, jwks: {{ url: \"https://corp/jwks\" }} }}]\n\
         \x20 authorization:\n    rules: [{{ name: a, action: allow, jwt: {{ provider: crop }} }}]\n"
    );
    assert_eq!(
        errors(&unknown_provider),
        [
            "test.yaml:8:56: inbound.authorization.rules[0].jwt.provider: `crop` is not one of inbound.jwt.providers"
        ]
    );
    let misspelt = format!(
        "{SERVICE}inbound:\n  authorization:\n    rules: [{{ name: a, action: allow, jwt: {{ subject: x }} }}]\n"
    );
    assert!(
        errors(&misspelt)[0].starts_with("test.yaml:6:"),
        "{:?}",
        errors(&misspelt)
    );
    let claim_map = format!(
        "{SERVICE}inbound:\n  authorization:\n    rules: [{{ name: a, action: allow, jwt: {{ claims: [{{ name: {{ a: b }}, value: x }}] }} }}]\n"
    );
    assert_eq!(
        errors(&claim_map),
        [
            "test.yaml:6:63: inbound.authorization.rules[0].jwt.claims[0].name: invalid type: map, expected a claim name, or a list of names for a nested claim"
        ]
    );
}

#[test]
fn health_check_problems_name_their_keys() {
    let text = "\
service: { name: me }
upstreams:
  - name: api
    listen: 127.0.0.1:0
    discovery: { static: [127.0.0.1:8081] }
    load_balancing: { panic_threshold: 150 }
    health_check:
      http: { path: health }
      grpc: {}
      interval: 0s
      unhealthy_threshold: 0
  - name: web
    listen: 127.0.0.1:0
    discovery: { static: [127.0.0.1:8082] }
    health_check: { http: { expected_statuses: [\"300-200\"] } }
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:15:49: upstreams[1].health_check.http.expected_statuses[0]: invalid status range `300-200`: expected `LOW-HIGH`",
        ]
    );
    let text = text.replace("[\"300-200\"]", "[200, \"500-503\"]");
    assert_eq!(
        errors(&text),
        [
            "test.yaml:6:40: upstreams[0].load_balancing.panic_threshold: must be a percentage between 0 and 100",
            "test.yaml:8:7: upstreams[0].health_check: needs exactly one probe: `http: {...}`, `grpc: {...}` or `tcp: {}`",
            "test.yaml:10:17: upstreams[0].health_check.interval: must be greater than zero",
            "test.yaml:11:28: upstreams[0].health_check.unhealthy_threshold: must be at least 1",
        ]
    );
    let config = parse_test(&text.replace("      grpc: {}\n", "")).unwrap_err();
    assert!(
        config
            .to_string()
            .contains("health_check.http.path: must start with `/`"),
        "{config}"
    );
}

#[test]
fn fallback_problems_name_their_keys() {
    let text = "\
service: { name: me }
upstreams:
  - name: api
    listen: 127.0.0.1:0
    discovery: { static: [127.0.0.1:8081] }
    backends: { readonly: { static: [127.0.0.1:8082] } }
    fallback: { backend: nowhere }
    routes:
      - name: a
        fallback: { on: [], backend: readonly, response: { status: 42 } }
      - name: b
        fallback: { response: { headers: { 'bad name': x } } }
      - name: c
        fallback: { on: [timeout], backend: readonly }
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:14:26: upstreams[0].routes[2].fallback.on[0]: unknown variant `timeout`, expected one of circuit_open, no_healthy_endpoints, rate_limited",
        ]
    );
    let text = text.replace("on: [timeout]", "on: [rate_limited]");
    assert_eq!(
        errors(&text),
        [
            "test.yaml:7:26: upstreams[0].fallback.backend: unknown backend `nowhere`: name one under the upstream's `backends:`",
            "test.yaml:10:19: upstreams[0].routes[0].fallback: needs exactly one of `backend` and `response`",
            "test.yaml:10:25: upstreams[0].routes[0].fallback.on: must list at least one of circuit_open, no_healthy_endpoints, rate_limited",
            "test.yaml:12:56: upstreams[0].routes[1].fallback.response.headers.bad name: invalid header name `bad name`",
        ]
    );
}

#[test]
fn prefer_local_needs_the_sidecars_zone() {
    let text = "\
service: { name: me }
upstreams:
  - name: api
    listen: 127.0.0.1:0
    discovery: { static: [{ address: 127.0.0.1:8081, zone: a }] }
    load_balancing: { locality: prefer_local }
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:6:33: upstreams[0].load_balancing.locality: prefer_local needs this sidecar's zone: set `service.locality: { zone: ... }`"
        ]
    );
    let config = parse_test(&text.replace("{ name: me }", "{ name: me, locality: { zone: a } }"));
    let config = config.expect("valid with service.locality");
    let Discovery::Static(endpoints) = &config.upstreams[0].discovery else {
        panic!("static")
    };
    assert_eq!(endpoints[0].zone.as_deref(), Some("a"));
}

#[test]
fn consul_failover_problems_name_their_keys() {
    let text = "\
service: { name: me }
consul: { address: http://127.0.0.1:8500 }
upstreams:
  - name: api
    listen: 127.0.0.1:0
    discovery: { consul: { service: api, datacenter: dc1, failover: { datacenters: [dc2, dc1], min_healthy: 0 } } }
  - name: web
    listen: 127.0.0.1:0
    discovery: { consul: { service: web, failover: { datacenters: [] } } }
";
    assert_eq!(
        errors(text),
        [
            "test.yaml:6:84: upstreams[0].discovery.consul.failover.datacenters: names a datacenter twice (or the discovery's own)",
            "test.yaml:6:109: upstreams[0].discovery.consul.failover.min_healthy: must be at least 1",
            "test.yaml:9:67: upstreams[1].discovery.consul.failover.datacenters: must list at least one datacenter, none empty",
        ]
    );
}

#[test]
fn egress_allow_list_parses_and_needs_unmatched_refuse() {
    let config = parse_test(
        "service: { name: web }\n\
         transparent:\n  unmatched: refuse\n  egress:\n    allow:\n      \
         hosts: [Api.Example.com, \"*.googleapis.com:443\"]\n      cidrs: [10.0.0.0/8]\n",
    )
    .unwrap();
    let allow = &config.transparent.unwrap().egress.allow;
    let hosts: Vec<String> = allow.hosts.iter().map(ToString::to_string).collect();
    assert_eq!(hosts, ["api.example.com", "*.googleapis.com:443"]);
    assert_eq!(allow.cidrs[0].to_string(), "10.0.0.0/8");

    let with_passthrough = errors(
        "service: { name: web }\n\
         transparent:\n  egress:\n    allow: { hosts: [api.example.com] }\n",
    );
    assert_eq!(with_passthrough.len(), 1, "{with_passthrough:?}");
    assert!(
        with_passthrough[0].starts_with("test.yaml:4:12: transparent.egress.allow: an egress allow-list needs `transparent.unmatched: refuse`"),
        "{with_passthrough:?}"
    );

    let bad = errors(
        "service: { name: web }\n\
         transparent:\n  unmatched: refuse\n  egress:\n    allow:\n      \
         hosts: [ok.example.com, \"a.*.example.com\"]\n      cidrs: [10.0.0.0/40]\n      deny: []\n",
    );
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(
        bad[0].starts_with(
            "test.yaml:6:31: transparent.egress.allow.hosts[1]: invalid host `a.*.example.com`"
        ),
        "{bad:?}"
    );
    assert!(
        bad[1].starts_with("test.yaml:7:15: transparent.egress.allow.cidrs[0]: invalid CIDR"),
        "{bad:?}"
    );
    assert!(
        bad[2].starts_with("test.yaml:8:7: transparent.egress.allow.deny: unknown field `deny`"),
        "{bad:?}"
    );
}
