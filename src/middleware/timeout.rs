//! Request timeout: the whole exchange up to the response head — including
//! every retry and the backoff between them, since this layer sits outside the
//! retry layer — must finish by a deadline, else the request is abandoned (the
//! in-flight upstream try is dropped, so the upstream sees its connection or
//! stream reset) and the client gets 504 `timeout` (gRPC: `grpc-status: 4`,
//! DEADLINE_EXCEEDED).
//!
//! The deadline is `now + timeouts.request`. A gRPC request
//! (`content-type: application/grpc…`) may shorten it with its own
//! `grpc-timeout` header: the deadline is then the earlier of the two, and with
//! no configured timeout the `grpc-timeout` alone sets it. The deadline rides
//! along in the request's extensions as [`Deadline`], from which `forward`
//! writes the time left into the upstream request's `grpc-timeout`.
//!
//! Rejects (ignores) a malformed `grpc-timeout`: anything but 1–8 ASCII digits
//! followed by one of the units `H M S m u n`; such a request keeps the
//! configured timeout, or none. `grpc-timeout` on a non-gRPC request is
//! ignored and passed on untouched. Without a configured timeout or a valid
//! `grpc-timeout` the layer passes requests straight through.

use std::task::{Context, Poll};
use std::time::Duration;

use ::metrics::Counter;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use tower::{Layer, Service};

use crate::clock;
use crate::context::Deadline;
use crate::context::Direction;
use crate::error::ProxyError;
use crate::headers::is_grpc;
use crate::telemetry::metrics;
use crate::timer;

/// The gRPC deadline header (gRPC over HTTP/2: `TimeoutValue TimeoutUnit`).
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// `grpc-timeout` for `remaining`: at most 8 digits, in the finest unit
/// that fits (milliseconds up to about 27 hours, then seconds).
pub fn encode_grpc_timeout(remaining: Duration) -> HeaderValue {
    let millis = remaining.as_millis();
    let text = if millis <= 99_999_999 {
        format!("{millis}m")
    } else {
        format!("{}S", remaining.as_secs().min(99_999_999))
    };
    // Digits and one ASCII letter are always a valid header value.
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("99999999S"))
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit
/// (`H`ours, `M`inutes, `S`econds, `m`illi-, `u` micro-, `n` nanoseconds).
/// `None` for anything else.
pub fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    let (&unit, digits) = bytes.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 8 digits: always fits, and the hour case fits in u64 seconds.
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The time a request has: the configured limit, shortened (or set) by the
/// `grpc-timeout` of a gRPC request.
pub fn request_limit(configured: Option<Duration>, headers: &HeaderMap) -> Option<Duration> {
    let grpc = is_grpc(headers)
        .then(|| headers.get(GRPC_TIMEOUT))
        .flatten()
        .and_then(parse_grpc_timeout);
    match (configured, grpc) {
        (Some(configured), Some(grpc)) => Some(configured.min(grpc)),
        (configured, grpc) => configured.or(grpc),
    }
}

#[derive(Clone)]
pub struct TimeoutLayer {
    limit: Option<Duration>,
    expired: Option<Counter>,
}

impl TimeoutLayer {
    pub fn new(limit: Option<Duration>) -> Self {
        Self {
            limit,
            expired: None,
        }
    }

    /// Counts expiries in `remora_timeouts_total{kind="request"}`.
    pub fn counted(mut self, direction: Direction, upstream: &str) -> Self {
        self.expired = Some(metrics::timeouts(direction, upstream, "request"));
        self
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            limit: self.limit,
            expired: self.expired.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Timeout<S> {
    inner: S,
    limit: Option<Duration>,
    expired: Option<Counter>,
}

impl<S, B> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<S::Response, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // A limit too large to be an instant (e.g. `99999999H`) is no limit.
        // The clock is read only when there is a limit.
        let bound = request_limit(self.limit, request.headers())
            .and_then(|limit| Some((limit, clock::now().checked_add(limit)?)));
        let Some((limit, deadline)) = bound else {
            return Box::pin(self.inner.call(request));
        };
        request.extensions_mut().insert(Deadline(deadline));
        let response = self.inner.call(request);
        let expired = self.expired.clone();
        crate::svc::boxed(|| async move {
            match timer::timeout_at(deadline, response).await {
                Some(result) => result,
                None => {
                    if let Some(expired) = expired {
                        expired.increment(1);
                    }
                    Err(ProxyError::Timeout(limit))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;
    use tower::ServiceExt;

    fn value(text: &'static str) -> HeaderValue {
        HeaderValue::from_static(text)
    }

    #[test]
    fn parses_every_grpc_timeout_unit() {
        let cases = [
            ("2H", Duration::from_secs(7200)),
            ("3M", Duration::from_secs(180)),
            ("5S", Duration::from_secs(5)),
            ("250m", Duration::from_millis(250)),
            ("1500u", Duration::from_micros(1500)),
            ("99999999n", Duration::from_nanos(99_999_999)),
            ("0m", Duration::ZERO),
            ("00000001S", Duration::from_secs(1)),
            ("99999999H", Duration::from_secs(99_999_999 * 3600)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_grpc_timeout(&value(text)), Some(expected), "{text}");
        }
    }

    #[test]
    fn rejects_malformed_grpc_timeouts() {
        for text in [
            "",
            "m",
            "10",
            "10s",
            "10ms",
            "1.5S",
            "-1S",
            " 1S",
            "1S ",
            "123456789m",
            "+5S",
            "5 S",
            "five S",
        ] {
            assert_eq!(parse_grpc_timeout(&value(text)), None, "{text:?}");
        }
    }

    #[test]
    fn encode_and_parse_round_trip() {
        for millis in [0, 1, 999, 5_000, 99_999_999] {
            let duration = Duration::from_millis(millis);
            assert_eq!(
                parse_grpc_timeout(&encode_grpc_timeout(duration)),
                Some(duration)
            );
        }
    }

    fn headers(grpc: bool, timeout: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if grpc {
            headers.insert("content-type", value("application/grpc+proto"));
        }
        if let Some(timeout) = timeout {
            headers.insert(GRPC_TIMEOUT, value(timeout));
        }
        headers
    }

    #[test]
    fn grpc_timeout_shortens_or_sets_the_limit_for_grpc_only() {
        let five = Some(Duration::from_secs(5));
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(request_limit(five, &headers(true, Some("100m"))), ms(100));
        assert_eq!(request_limit(five, &headers(true, Some("10S"))), five);
        assert_eq!(request_limit(None, &headers(true, Some("100m"))), ms(100));
        assert_eq!(request_limit(five, &headers(true, Some("bogus"))), five);
        assert_eq!(request_limit(None, &headers(true, Some("1x"))), None);
        assert_eq!(request_limit(five, &headers(false, Some("100m"))), five);
        assert_eq!(request_limit(None, &headers(false, Some("100m"))), None);
        assert_eq!(request_limit(None, &headers(true, None)), None);
    }

    /// A service that records the `Deadline` it saw and answers after `delay`.
    fn slow(
        delay: Duration,
        seen: Arc<Mutex<Option<Deadline>>>,
    ) -> impl Service<Request<()>, Response = (), Error = ProxyError, Future: Send + 'static> + Clone
    {
        tower::service_fn(move |request: Request<()>| {
            *seen.lock().unwrap() = request.extensions().get::<Deadline>().copied();
            async move {
                tokio::time::sleep(delay).await;
                Ok::<_, ProxyError>(())
            }
        })
    }

    fn grpc_request(timeout: &'static str) -> Request<()> {
        Request::builder()
            .header("content-type", "application/grpc")
            .header(GRPC_TIMEOUT, timeout)
            .body(())
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn sets_the_deadline_and_expires_exactly_at_it() {
        let seen = Arc::new(Mutex::new(None));
        let limit = Duration::from_millis(300);
        let service =
            TimeoutLayer::new(Some(limit)).layer(slow(Duration::from_secs(5), seen.clone()));
        let started = Instant::now();
        let result = service.oneshot(Request::new(())).await;
        assert!(
            matches!(result, Err(ProxyError::Timeout(l)) if l == limit),
            "{result:?}"
        );
        assert_eq!(started.elapsed(), limit);
        let Deadline(deadline) = seen.lock().unwrap().expect("deadline set");
        assert_eq!(deadline, started + limit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_answer_passes_through() {
        let seen = Arc::new(Mutex::new(None));
        let service = TimeoutLayer::new(Some(Duration::from_secs(1)))
            .layer(slow(Duration::from_millis(999), seen));
        assert!(service.oneshot(Request::new(())).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_timeout_shortens_the_deadline() {
        let seen = Arc::new(Mutex::new(None));
        let service = TimeoutLayer::new(Some(Duration::from_secs(5)))
            .layer(slow(Duration::from_secs(10), seen.clone()));
        let started = Instant::now();
        let result = service.oneshot(grpc_request("200m")).await;
        let expected = Duration::from_millis(200);
        assert!(
            matches!(result, Err(ProxyError::Timeout(l)) if l == expected),
            "{result:?}"
        );
        assert_eq!(started.elapsed(), expected);
        assert_eq!(seen.lock().unwrap().unwrap().0, started + expected);
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_timeout_alone_sets_a_deadline() {
        let seen = Arc::new(Mutex::new(None));
        let service = TimeoutLayer::new(None).layer(slow(Duration::from_secs(10), seen.clone()));
        let started = Instant::now();
        let result = service.oneshot(grpc_request("1S")).await;
        assert!(matches!(result, Err(ProxyError::Timeout(_))), "{result:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_means_no_deadline() {
        let seen = Arc::new(Mutex::new(None));
        let service = TimeoutLayer::new(None).layer(slow(Duration::from_secs(100), seen.clone()));
        assert!(service.clone().oneshot(Request::new(())).await.is_ok());
        assert!(seen.lock().unwrap().is_none());
        // A malformed grpc-timeout sets nothing either.
        assert!(service.oneshot(grpc_request("soon")).await.is_ok());
        assert!(seen.lock().unwrap().is_none());
    }
}
