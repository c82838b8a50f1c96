//! The `/metrics` exposition in OpenMetrics 1.0 text, for scrapers that ask
//! for it (`Accept: application/openmetrics-text`): the Prometheus text the
//! recorder renders, rewritten — a counter's family is named without its
//! `_total` (its samples keep it), no blank lines, `# EOF` at the end — with
//! the request-duration histograms' bucket lines carrying their trace-id
//! exemplar (`exemplars`): `… 12 # {trace_id="…"} 0.0042 1765000000.123`.

use std::fmt::Write as _;

use crate::telemetry::exemplars;
use crate::telemetry::metrics::{REQUEST_DURATION, ROUTE_REQUEST_DURATION};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header prefers OpenMetrics to the Prometheus text
/// format (by q-value; a tie goes to OpenMetrics, absent types count 0).
pub fn preferred(accept: &str) -> bool {
    let mut openmetrics = 0.0_f64;
    let mut text = 0.0_f64;
    for range in accept.split(',') {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or_default().to_ascii_lowercase();
        let q = params
            .find_map(|param| param.strip_prefix("q="))
            .and_then(|q| q.parse::<f64>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" => text = text.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= text
}

/// Rewrites the recorder's Prometheus text as OpenMetrics.
pub fn from_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = family(name, kind.trim());
            let _ = writeln!(out, "# TYPE {name} {}", kind.trim());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // The HELP line comes before TYPE: a counter is known by its name.
            let name = name.strip_suffix("_total").unwrap_or(name);
            let _ = writeln!(out, "# HELP {name} {help}");
        } else if line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
        } else {
            out.push_str(line);
            if let Some(exemplar) = exemplar_of(line) {
                let _ = write!(
                    out,
                    " # {{trace_id=\"{:032x}\"}} {} {:.3}",
                    exemplar.trace_id, exemplar.value, exemplar.timestamp
                );
            }
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

/// A family's name in OpenMetrics: a counter's without `_total`.
fn family<'a>(name: &'a str, kind: &str) -> &'a str {
    match kind {
        "counter" => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

/// The exemplar of a request-duration bucket line, if it has one.
fn exemplar_of(line: &str) -> Option<exemplars::Exemplar> {
    let (name, rest) = line.split_once('{')?;
    let histogram = name.strip_suffix("_bucket")?;
    if histogram != REQUEST_DURATION && histogram != ROUTE_REQUEST_DURATION {
        return None;
    }
    let labels = parse_labels(rest)?;
    let le = labels.iter().find(|(key, _)| key == "le")?.1.clone();
    exemplars::lookup(
        histogram,
        labels
            .iter()
            .filter(|(key, _)| key != "le")
            .map(|(key, value)| (key.as_str(), value.as_str())),
        &le,
    )
}

/// The label pairs of a sample line after its `{`, values unescaped.
fn parse_labels(mut rest: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches(',');
        if rest.starts_with('}') {
            return Some(labels);
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_openmetrics_by_q_value() {
        assert!(preferred("application/openmetrics-text"));
        assert!(preferred(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
        ));
        assert!(!preferred("text/plain;version=0.0.4"));
        assert!(!preferred("*/*"));
        assert!(!preferred("application/openmetrics-text;q=0.2,text/plain"));
        assert!(!preferred("application/openmetrics-text;q=0"));
    }

    #[test]
    fn parses_escaped_label_values() {
        assert_eq!(
            parse_labels(r#"a="x\"y",b="1\\2\n"} 3"#),
            Some(vec![
                ("a".into(), "x\"y".into()),
                ("b".into(), "1\\2\n".into())
            ])
        );
    }

    #[test]
    fn renames_counter_families_and_ends_with_eof() {
        let text = "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n\n\
                    # TYPE g gauge\ng 1\n";
        assert_eq!(
            from_prometheus(text),
            "# HELP x Things.\n# TYPE x counter\nx_total 3\n# TYPE g gauge\ng 1\n# EOF\n"
        );
    }
}
