//! The `remora` command line: `version`, `validate` (ok on the shipped example; every semantic
//! and every structural problem as `file:line:col: path: message`, exit 1), `run` refusing a bad
//! configuration, YAML syntax errors located by line and column, and `demo` (the README's
//! first command) balancing, serving and stopping on SIGINT.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

fn remora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_remora"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run remora")
}

/// A config file in the temp dir, removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(yaml: &str) -> TempConfig {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "remora-cli-test-{}-{}.yaml",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, yaml).expect("write config");
        TempConfig(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// 1-based (line, column) of the first `needle` on line `line` of `yaml`.
fn position_of(yaml: &str, line: usize, needle: &str) -> (usize, usize) {
    let text = yaml.lines().nth(line - 1).expect("line exists");
    let column = text.find(needle).expect("needle on the line") + 1;
    (line, column)
}

#[test]
fn version_prints_name_and_version() {
    let out = remora(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!("remora {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn validate_accepts_every_shipped_example() {
    let mut examples: Vec<_> = std::fs::read_dir("config")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 10, "{examples:?}");
    for example in examples {
        let out = remora(&["validate", "--config", example.to_str().unwrap()]);
        assert!(out.status.success(), "{example:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "ok\n", "{example:?}");
    }
}

const THREE_PROBLEMS: &str = "\
service: { name: test }
upstreams:
  - name: api
    listen: 127.0.0.1:0
    discovery: { static: [127.0.0.1:8081] }
  - name: api
    listen: 127.0.0.1:0
    discovery: { static: [] }
    timeouts: { connect: 0s }
admin: { listen: 127.0.0.1:0 }
";

/// Duplicate upstream name, empty static list, zero connect timeout: all three reported in
/// one run, in source order, each positioned at the offending value.
#[test]
fn validate_reports_every_problem_with_its_position() {
    assert_validate_reports(
        THREE_PROBLEMS,
        &[
            (
                6,
                "api",
                "upstreams[1].name",
                "upstream name `api` is already used by upstreams[0]",
            ),
            (
                8,
                "[]",
                "upstreams[1].discovery.static",
                "needs at least one endpoint",
            ),
            (
                9,
                "0s",
                "upstreams[1].timeouts.connect",
                "must be greater than zero",
            ),
        ],
    );
}

const DNS_PROBLEMS: &str = "\
service: { name: test }
upstreams:
  - name: by-a
    listen: 127.0.0.1:0
    discovery: { dns: { name: api.example.com, type: a } }
  - name: by-srv
    listen: 127.0.0.1:0
    discovery: { dns: { name: _api._tcp.example.com, port: 443 } }
dns: { min_refresh: 5s, max_refresh: 1s }
admin: { listen: 127.0.0.1:0 }
";

/// `discovery.dns`: `type: a` without `port`, `srv` with one; the `dns:`
/// section's bounds out of order.
#[test]
fn validate_reports_dns_keys_with_their_position() {
    assert_validate_reports(
        DNS_PROBLEMS,
        &[
            (
                5,
                "dns",
                "upstreams[0].discovery.dns.port",
                "required with `type: a`",
            ),
            (
                8,
                "443",
                "upstreams[1].discovery.dns.port",
                "only with `type: a`",
            ),
            (9, "1s", "dns.max_refresh", "must be at least min_refresh"),
        ],
    );
    let bad_hostname = "\
service: { name: test }
upstreams:
  - name: api
    listen: 127.0.0.1:0
    discovery: { static: [127.0.0.1:8081, api.example.com] }
";
    assert_validate_reports(
        bad_hostname,
        &[(
            5,
            "api.example.com",
            "upstreams[0].discovery.static[1]",
            "invalid endpoint `api.example.com`: expected `ip:port` or `host:port`",
        )],
    );
}

/// `remora validate` on `yaml` exits 1 and prints one line per expected
/// `(line, text the column points at, path, message start)`, in that order.
fn assert_validate_reports(yaml: &str, expected: &[(usize, &str, &str, &str)]) {
    let config = TempConfig::new(yaml);
    let out = remora(&["validate", "--config", config.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, &(row, needle, path, message)) in lines.iter().zip(expected) {
        let (row, column) = position_of(yaml, row, needle);
        let prefix = format!("{}:{row}:{column}: {path}: {message}", config.path());
        assert!(line.starts_with(&prefix), "want {prefix:?}, got {line:?}");
    }
}

const UNKNOWN_KEYS: &str = "\
service:
  name: test
  bogus: 1
upstreams:
  - name: api
    listen: 127.0.0.1:0
    listenn: 127.0.0.1:1
    discovery: { static: [127.0.0.1:8081] }
    timeouts: { connect: 5 }
admin:
  listen: 127.0.0.1:0
  extra: true
";

/// Three unknown keys at different depths and a duration without a unit: one line each, in
/// source order (serde-saphyr alone stops at the first).
#[test]
fn validate_reports_every_structural_problem() {
    assert_validate_reports(
        UNKNOWN_KEYS,
        &[
            (3, "bogus", "service.bogus", "unknown field `bogus`"),
            (
                7,
                "listenn",
                "upstreams[0].listenn",
                "unknown field `listenn`",
            ),
            (
                9,
                "5",
                "upstreams[0].timeouts.connect",
                "duration `5` has no unit",
            ),
            (12, "extra", "admin.extra", "unknown field `extra`"),
        ],
    );
}

#[test]
fn run_refuses_a_bad_config() {
    let config = TempConfig::new(THREE_PROBLEMS);
    let out = remora(&["run", "--config", config.path()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:8:26: upstreams[1].discovery.static",
            config.path()
        )),
        "{stderr}"
    );

    let missing = format!("{}.missing", config.path());
    let out = remora(&["run", "--config", &missing]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read the configuration file"),
        "{}",
        text(&out.stderr)
    );
}

/// Syntax errors name the line and column of the offending character, and the key path.
#[test]
fn malformed_yaml_names_line_and_column() {
    let cases = [
        (
            "service:\n  name: test\n  port: 80: 90\n",
            (3, 11),
            "service.port: mapping values are not allowed",
        ),
        (
            "service:\n  name: \"test\n  port: 80\n",
            (2, 9),
            "service.name: unclosed quote",
        ),
    ];
    for (yaml, (row, column), message) in cases {
        let config = TempConfig::new(yaml);
        let out = remora(&["validate", "--config", config.path()]);
        assert_eq!(out.status.code(), Some(1), "{yaml:?}");
        let stderr = text(&out.stderr);
        let prefix = format!("{}:{row}:{column}: {message}", config.path());
        assert!(
            stderr.starts_with(&prefix),
            "want {prefix:?}, got {stderr:?}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

/// The README's first command: `remora demo` balances its nine requests over
/// the three built-in backends, keeps serving (a request through the `echo`
/// listener), and exits 0 on SIGINT. Uses the demo's fixed ports
/// (9001, 15000, 15006, 18080–18083), all below the ephemeral range.
#[test]
fn the_demo_balances_over_three_backends_and_stops_on_sigint() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut demo = Command::new(env!("CARGO_BIN_EXE_remora"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run remora demo");
    let mut lines = BufReader::new(demo.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    let per_backend = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the demo ended early: {printed:#?}"))
            .expect("stdout is text");
        printed.push(line.clone());
        if let Some(counts) = line.trim().strip_prefix("per backend: ") {
            break counts.to_owned();
        }
    };
    assert_eq!(
        per_backend, r#"{"backend-1": 3, "backend-2": 3, "backend-3": 3}"#,
        "{printed:#?}"
    );

    let mut stream = std::net::TcpStream::connect("127.0.0.1:9001").expect("echo listener");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: echo\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("hello from backend-"), "{answer}");

    let pid = demo.id().to_string();
    let signal = Command::new("kill").args(["-INT", &pid]).status();
    assert!(signal.expect("kill runs").success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = demo.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the demo did not stop within 15 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "demo exit status {status}");
}

/// `hedge`: `max_extra` out of 1..=10 and a zero delay, on an upstream and a route; a
/// percentile delay outside p1..p99.9 (`p100`) is a structural problem.
#[test]
fn validate_reports_hedge_keys_with_their_position() {
    let out_of_range = "\
service: { name: test }
upstreams:
  - name: api
    listen: 127.0.0.1:0
    discovery: { static: [127.0.0.1:8081] }
    hedge: { delay: 50ms, max_extra: 11 }
    routes:
      - name: all
        match: { path: { prefix: / } }
        hedge: { delay: 0s, max_extra: 0 }
";
    assert_validate_reports(
        out_of_range,
        &[
            (
                6,
                "11",
                "upstreams[0].hedge.max_extra",
                "must be between 1 and 10",
            ),
            (
                10,
                "0s",
                "upstreams[0].routes[0].hedge.delay",
                "must be greater than zero",
            ),
            (
                10,
                "0 }",
                "upstreams[0].routes[0].hedge.max_extra",
                "must be between 1 and 10",
            ),
        ],
    );
    let p100 = "\
service: { name: test }
upstreams:
  - name: api
    listen: 127.0.0.1:0
    discovery: { static: [127.0.0.1:8081] }
    hedge: { delay: p100 }
";
    assert_validate_reports(
        p100,
        &[(
            6,
            "p100",
            "upstreams[0].hedge.delay",
            "`p100` is no percentile",
        )],
    );
}
