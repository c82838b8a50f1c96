//! `GET /tap`: the live request stream (`telemetry::tap`) over HTTP, as
//! Server-Sent Events (`Accept: text/event-stream`, or `format=sse`: what
//! the dashboard's `EventSource` reads) or NDJSON (otherwise, or
//! `format=ndjson`: what `remora tap` reads).
//!
//! The stream opens with a `subscribed` record (the filter and the rate
//! granted), then one `request` record per completed request that matches.
//! Events dropped by the rate limit or a full queue are reported as a
//! `dropped` record (`count` since the last report, `total`) before the
//! next event, or within a second. A keepalive follows 15 s of silence (an
//! SSE comment; an NDJSON `keepalive` record) so a client that went away is
//! noticed and its slot freed. A bad query gets 400, a full tap 503.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use crate::telemetry::tap::{SubscribeError, Subscription, Tap, TapQuery};

/// Silence after which a keepalive is sent.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// How often dropped events are reported while no event goes out.
const DROP_REPORT: Duration = Duration::from_secs(1);

/// The admin listener's response body: whole, or a tap stream.
pub type AdminBody = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Sse,
    Ndjson,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Sse => "text/event-stream",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    /// One record, framed.
    fn frame(self, record: &Value) -> Bytes {
        let kind = record["type"].as_str().unwrap_or("request");
        Bytes::from(match self {
            Format::Sse => format!("event: {kind}\ndata: {record}\n\n"),
            Format::Ndjson => format!("{record}\n"),
        })
    }

    fn keepalive(self) -> Bytes {
        match self {
            Format::Sse => Bytes::from_static(b": keepalive\n\n"),
            Format::Ndjson => Bytes::from_static(b"{\"type\":\"keepalive\"}\n"),
        }
    }
}

/// The response to `GET /tap?query` with `accept`.
pub fn stream(
    tap: &Tap,
    query: &str,
    accept: Option<&HeaderValue>,
) -> Result<Response<AdminBody>, (StatusCode, String)> {
    let query = TapQuery::parse(query)
        .map_err(|problem| (StatusCode::BAD_REQUEST, format!("{problem}\n")))?;
    let format = match query.format.as_deref() {
        Some("sse") => Format::Sse,
        Some(_) => Format::Ndjson,
        None if accept
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| accept.contains("text/event-stream")) =>
        {
            Format::Sse
        }
        None => Format::Ndjson,
    };
    let subscription = tap
        .subscribe(&query)
        .map_err(|SubscribeError::Full { max }| {
            let message = match max {
                0 => "the tap is off (admin.tap.max_subscribers: 0)\n".to_owned(),
                max => format!(
                    "the tap already has its {max} streams open (admin.tap.max_subscribers)\n"
                ),
            };
            (StatusCode::SERVICE_UNAVAILABLE, message)
        })?;
    let subscribed = json!({
        "type": "subscribed",
        "rate": tap.rate_for(query.rate),
        "headers": query.headers,
        "filter": {
            "upstream": query.filter.upstream,
            "route": query.filter.route,
            "direction": query.filter.direction,
            "path": query.filter.path_prefix,
            "status": query.filter.status.map(|status| status.to_string()),
            "min_duration_ms": query.filter.min_duration.map(|d| d.as_secs_f64() * 1e3),
        },
    });
    let state = Stream {
        tap: tap.clone(),
        subscription,
        format,
        total_dropped: 0,
        pending: Some(format.frame(&subscribed)),
    };
    let frames = futures_util::stream::unfold(state, |mut state| async move {
        let bytes = state.next().await?;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), state))
    });
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// One open stream's state.
struct Stream {
    tap: Tap,
    subscription: Subscription,
    format: Format,
    total_dropped: u64,
    /// The `subscribed` record, sent first.
    pending: Option<Bytes>,
}

impl Stream {
    /// The next bytes to send: an event (after the report of the events
    /// dropped before it), a drop report, or a keepalive.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.pending.take() {
            return Some(first);
        }
        let mut silent = Duration::ZERO;
        loop {
            match tokio::time::timeout(DROP_REPORT, self.subscription.next()).await {
                Ok(Some(event)) => {
                    let mut out = self.drop_report().map(Vec::from).unwrap_or_default();
                    let record =
                        event.to_json(self.subscription.with_headers(), self.tap.redacted());
                    out.extend_from_slice(&self.format.frame(&record));
                    return Some(Bytes::from(out));
                }
                Ok(None) => return None,
                Err(_elapsed) => {
                    if let Some(report) = self.drop_report() {
                        return Some(report);
                    }
                    silent += DROP_REPORT;
                    if silent >= KEEPALIVE {
                        return Some(self.format.keepalive());
                    }
                }
            }
        }
    }

    /// The `dropped` record, if events were dropped since the last one.
    fn drop_report(&mut self) -> Option<Bytes> {
        let count = self.subscription.take_dropped();
        if count == 0 {
            return None;
        }
        self.total_dropped += count;
        let record = json!({"type": "dropped", "count": count, "total": self.total_dropped});
        Some(self.format.frame(&record))
    }
}
