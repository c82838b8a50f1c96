//! Reading remora's `/metrics` in tests: a small parser for the Prometheus text format that
//! looks samples up by name and labels in any order, and a poll that waits (bounded) for a
//! value, since remora records a request only when its response body has ended.
//! Not a full parser: no escapes in label values other than `\"` and `\\`, no timestamps.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::Version;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of `text`; comment lines (`# HELP`, `# TYPE`) and blank lines are skipped.
/// Panics on a line it cannot read, so a malformed exposition fails the test.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("bad metrics line: {line:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([',', ' ']);
            if let Some(after) = inner.strip_prefix('}') {
                break after;
            }
            let (key, after_key) = inner.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after_key.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => value.push(chars.next()?.1),
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.trim().to_owned(), value);
            inner = &after_key[end + 1..];
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The samples named `name` that carry every `(key, value)` of `labels` (and maybe more).
pub fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The value of the one sample matching `name` and `labels`; `None` when there is none.
/// Panics when several match (the labels given are ambiguous).
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let samples = parse(text);
    let found = find(&samples, name, labels);
    assert!(
        found.len() <= 1,
        "{name} {labels:?} matches {} samples: {found:?}",
        found.len()
    );
    found.first().map(|s| s.value)
}

/// The sum of the samples named `name` that carry every `(key, value)` of `labels`; 0 when
/// there is none.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let samples = parse(text);
    find(&samples, name, labels)
        .iter()
        .map(|s| s.value)
        .sum::<f64>()
        + 0.0
}

/// `GET <url>` (the admin `/metrics`) and return the text.
pub async fn scrape(url: &str) -> String {
    let reply = super::get(Version::HTTP_11, url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(reply.status, http::StatusCode::OK, "GET {url}");
    reply.body
}

/// Scrapes `url` until the sample reaches `expected` or `within` has passed; returns the last
/// value seen (0 when absent), so the caller's assertion shows what was there.
pub async fn wait_for_value(
    url: &str,
    name: &str,
    labels: &[(&str, &str)],
    expected: f64,
    within: Duration,
) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let current = value(&scrape(url).await, name, labels).unwrap_or(0.0);
        if current == expected || Instant::now() >= deadline {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to `within`) for the sample of `name` with `labels` to reach
/// `expected`, and asserts that it did.
pub async fn assert_value_within(
    url: &str,
    name: &str,
    labels: &[(&str, &str)],
    expected: f64,
    within: Duration,
) {
    let reached = wait_for_value(url, name, labels, expected, within).await;
    assert_eq!(reached, expected, "{name} {labels:?}");
}

/// `GET <url>` asking for OpenMetrics (as Prometheus does); returns the
/// `Content-Type` and the text.
pub async fn scrape_openmetrics(url: &str) -> (String, String) {
    let request = http::Request::get(url)
        .header(
            http::header::ACCEPT,
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1",
        )
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let reply = super::send(Version::HTTP_11, request)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(reply.status, http::StatusCode::OK, "GET {url}");
    let content_type = reply
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (content_type, reply.body)
}

/// Which parser of the Prometheus Python client reads a text.
#[derive(Debug, Clone, Copy)]
pub enum Format {
    /// `prometheus_client.parser` (text format 0.0.4).
    Prometheus,
    /// `prometheus_client.openmetrics.parser` (OpenMetrics 1.0, strict).
    OpenMetrics,
}

/// `text` parsed by the Prometheus Python client (`python3-prometheus-client`,
/// `tests/fixtures/parse_metrics.py`): a JSON array of families (`name`,
/// `type`, `help`, `samples` with `name`, `labels`, `value`, `exemplar`).
/// Panics with the parser's error when it refuses the text.
pub fn parse_with_prometheus_client(text: &str, format: Format) -> serde_json::Value {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let python = "/usr/bin/python3";
    let has_client = Command::new(python)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        has_client,
        "{python} with prometheus_client is needed: apt-get install python3-prometheus-client \
         (scripts/test.sh installs it)"
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/parse_metrics.py"
    );
    let argument = match format {
        Format::Prometheus => "prometheus",
        Format::OpenMetrics => "openmetrics",
    };
    let mut child = Command::new(python)
        .args([script, argument])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start parse_metrics.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the exposition");
    let output = child.wait_with_output().expect("parse_metrics.py");
    assert!(
        output.status.success(),
        "prometheus_client ({argument}) refused the exposition: {}\n\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("parse_metrics.py prints JSON")
}
