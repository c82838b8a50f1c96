//! `remora tap`: follows an admin listener's live request stream (`GET
//! /tap` as NDJSON) and prints one line per request in a terminal — or the
//! records themselves with `--json`. The filters are the stream's own
//! (`upstream`, `route`, `direction`, `path`, `status`, `min_duration`);
//! the proxy applies them, and its rate limit, before anything is sent.

use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::BytesMut;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// What to follow and how to print it.
#[derive(Debug)]
pub struct TapArgs {
    /// The admin listener.
    pub admin: SocketAddr,
    /// `(name, value)` query parameters: the filters, `headers`, `rate`.
    pub query: Vec<(&'static str, String)>,
    /// Print the NDJSON records as they come.
    pub json: bool,
    /// Print request and response headers under each line.
    pub headers: bool,
}

/// Follows the stream until it ends or fails; the error says why.
pub async fn run(args: &TapArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let admin = args.admin;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("format", "ndjson");
    for (name, value) in &args.query {
        query.append_pair(name, value);
    }
    if args.headers {
        query.append_pair("headers", "true");
    }
    let stream = TcpStream::connect(admin).await.map_err(|error| {
        anyhow::anyhow!("cannot connect to the admin listener {admin}: {error}")
    })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get(format!("/tap?{}", query.finish()))
        .header(header::HOST, admin.to_string())
        .header(header::ACCEPT, "application/x-ndjson")
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    if status != StatusCode::OK {
        let text = body.collect().await?.to_bytes();
        anyhow::bail!(
            "{admin} answered {status}: {}",
            String::from_utf8_lossy(&text).trim()
        );
    }
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buffer.extend_from_slice(&data);
        }
        while let Some(end) = buffer.iter().position(|byte| *byte == b'\n') {
            let line = buffer.split_to(end + 1);
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            let text = if args.json {
                Some(line)
            } else {
                serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|record| human(&record, args.headers))
            };
            if let Some(text) = text {
                writeln!(out, "{text}")?;
                out.flush()?;
            }
        }
    }
    Ok(())
}

/// A record as a terminal line (`None` for keepalives).
fn human(record: &Value, headers: bool) -> Option<String> {
    let text = |key: &str| record[key].as_str().unwrap_or_default().to_owned();
    match record["type"].as_str()? {
        "subscribed" => Some(format!(
            "tapping (at most {} events/s){}",
            record["rate"],
            describe_filter(&record["filter"])
        )),
        "dropped" => Some(format!(
            "… {} events dropped (rate limit or slow reader; {} in all)",
            record["count"], record["total"]
        )),
        "request" => {
            let mut line = format!(
                "{} {} {}{} {} {}{} {}",
                clock(record["time"].as_f64().unwrap_or_default()),
                text("direction"),
                text("upstream"),
                record["route"]
                    .as_str()
                    .map(|route| format!("/{route}"))
                    .unwrap_or_default(),
                text("method"),
                text("authority"),
                text("path"),
                record["status"],
            );
            if let Some(grpc) = record["grpc_status"].as_u64() {
                let _ = write!(line, " grpc={grpc}");
            }
            let _ = write!(
                line,
                " {:.1}ms {} retries={}",
                record["duration_ms"].as_f64().unwrap_or_default(),
                record["endpoint"].as_str().unwrap_or("-"),
                record["retries"],
            );
            if let Some(trace) = record["trace_id"].as_str() {
                let _ = write!(line, " trace={trace}");
            }
            if let Some(error) = record["error"].as_str() {
                let _ = write!(line, " error={error}");
            }
            if headers {
                for (which, key) in [(">", "request_headers"), ("<", "response_headers")] {
                    for (name, values) in record[key].as_object().into_iter().flatten() {
                        for value in values.as_array().into_iter().flatten() {
                            let _ = write!(
                                line,
                                "\n  {which} {name}: {}",
                                value.as_str().unwrap_or_default()
                            );
                        }
                    }
                }
            }
            Some(line)
        }
        _ => None,
    }
}

/// `, upstream=api status=5xx` for the filters set.
fn describe_filter(filter: &Value) -> String {
    let set: Vec<String> = (filter.as_object().into_iter().flatten())
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| match value.as_str() {
            Some(text) => format!("{name}={text}"),
            None => format!("{name}={value}"),
        })
        .collect();
    match set.is_empty() {
        true => String::new(),
        false => format!(", {}", set.join(" ")),
    }
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time.
fn clock(unix: f64) -> String {
    let millis = (unix * 1e3) as u64 % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn prints_a_request_as_one_line_with_its_headers_below() {
        let record = json!({
            "type": "request", "time": 3661.5, "direction": "outbound", "upstream": "api",
            "route": "v1", "method": "GET", "authority": "api.local", "path": "/x", "status": 503,
            "grpc_status": null, "duration_ms": 12.34, "endpoint": "10.0.0.1:80", "retries": 2,
            "trace_id": "abc", "error": "timeout",
            "request_headers": {"authorization": ["<redacted>"]}, "response_headers": {},
        });
        assert_eq!(
            human(&record, true).unwrap(),
            "01:01:01.500 outbound api/v1 GET api.local/x 503 12.3ms 10.0.0.1:80 retries=2 \
             trace=abc error=timeout\n  > authorization: <redacted>"
        );
        assert_eq!(human(&json!({"type": "keepalive"}), false), None);
    }
}
