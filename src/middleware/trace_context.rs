//! Trace context: every hop through remora joins the caller's trace (or
//! starts one) and gets a span id of its own, and requests carry an
//! `x-request-id`.
//!
//! * W3C Trace Context (`traceparent`, `tracestate`): `traceparent` is parsed
//!   strictly — version `00`, exactly 55 characters, lowercase hex, trace and
//!   parent ids not all zero; anything else is dropped and a new trace is
//!   started (an invalid header is never forwarded). `tracestate` is passed
//!   through when it is at most 512 bytes (W3C's limit for propagation),
//!   dropped otherwise.
//! * B3 (`propagation: [b3]`): read from the multi-header form
//!   (`x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`, `x-b3-flags`) or the
//!   single `b3` header when no valid `traceparent` came; 64-bit trace ids
//!   are left-padded with zeros to 128 bits. Written in the multi-header form.
//!   W3C is read first when both are listed and present.
//! * New traces are sampled at `tracing.otlp.sample_ratio` when span export
//!   is configured (always otherwise); joined traces keep the caller's flag.
//! * The upstream request carries remora's new span id as its parent; the
//!   response carries the request's `x-request-id` (created as a UUID v4
//!   when absent and `request_id: true`).
//! * The ids written (and a caller's `x-request-id`) are new on every request,
//!   so they are marked never-indexed for HTTP/2's HPACK (RFC 7541 §6.2.3):
//!   indexing them would cost a table probe and insert per request and evict
//!   the entries that do repeat.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::body::ResponseBody;
use crate::config::{Propagation, TracingConfig};
use crate::context::TraceContext;

use crate::headers::{
    B3, B3_FLAGS, B3_PARENT_SPAN_ID, B3_SAMPLED, B3_SPAN_ID, B3_TRACE_ID, REQUEST_ID, TRACEPARENT,
    TRACESTATE,
};

/// Longest `tracestate` passed on (W3C Trace Context §3.3.1.5).
const MAX_TRACESTATE: usize = 512;

/// Reading and writing the trace headers: the context itself is a request
/// extension defined in `context`, below the telemetry that exports it.
impl TraceContext {
    /// Joins the caller's trace found in `headers`, or starts a new one.
    pub fn from_headers(headers: &HeaderMap, propagation: &[Propagation]) -> Self {
        let incoming = propagation.iter().find_map(|p| match p {
            Propagation::W3c => header(headers, &TRACEPARENT).and_then(parse_traceparent),
            Propagation::B3 => read_b3(headers),
        });
        let span_id = nonzero_u64();
        match incoming {
            Some((trace_id, parent_id, sampled)) => Self {
                trace_id,
                parent_id: Some(parent_id),
                span_id,
                sampled,
            },
            None => Self {
                trace_id: u128::from(nonzero_u64()) << 64 | u128::from(fastrand::u64(..)),
                parent_id: None,
                span_id,
                sampled: true,
            },
        }
    }

    /// `00-<trace>-<span>-<flags>` with this hop's span as the parent (ASCII).
    pub fn traceparent(&self) -> [u8; 55] {
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&mut text[3..35], self.trace_id);
        hex_into(&mut text[36..52], u128::from(self.span_id));
        hex_into(&mut text[53..55], u128::from(u8::from(self.sampled)));
        text
    }

    /// Replaces the trace headers of an upstream request with this context.
    /// Requests seldom carry B3 headers: one pass over the names spares five
    /// lookups when they do not; `traceparent` is replaced by the insert.
    fn write(&self, headers: &mut HeaderMap, propagation: &[Propagation]) {
        if headers.keys().any(is_b3) {
            for name in [
                &B3,
                &B3_TRACE_ID,
                &B3_SPAN_ID,
                &B3_PARENT_SPAN_ID,
                &B3_SAMPLED,
                &B3_FLAGS,
            ] {
                headers.remove(name);
            }
        }
        if !propagation.contains(&Propagation::W3c) {
            headers.remove(&TRACEPARENT);
        }
        if headers
            .get(&TRACESTATE)
            .is_some_and(|state| state.len() > MAX_TRACESTATE)
        {
            headers.remove(&TRACESTATE);
        }
        for p in propagation {
            match p {
                Propagation::W3c => insert(headers, TRACEPARENT, &self.traceparent()),
                Propagation::B3 => {
                    insert(headers, B3_TRACE_ID, hex(self.trace_id, 32).as_bytes());
                    insert(
                        headers,
                        B3_SPAN_ID,
                        hex(u128::from(self.span_id), 16).as_bytes(),
                    );
                    if let Some(parent) = self.parent_id {
                        let parent = hex(u128::from(parent), 16);
                        insert(headers, B3_PARENT_SPAN_ID, parent.as_bytes());
                    }
                    insert(headers, B3_SAMPLED, if self.sampled { b"1" } else { b"0" });
                }
            }
        }
    }
}

/// `(trace id, parent id, sampled)` of a valid `traceparent`.
fn parse_traceparent(value: &str) -> Option<(u128, u64, bool)> {
    let bytes = value.as_bytes();
    if bytes.len() != 55 || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    if &value[..2] != "00" {
        return None;
    }
    let trace_id = lower_hex_u128(&value[3..35])?;
    let parent_id = u64::try_from(lower_hex_u128(&value[36..52])?).ok()?;
    let flags = u8::try_from(lower_hex_u128(&value[53..55])?).ok()?;
    (trace_id != 0 && parent_id != 0).then_some((trace_id, parent_id, flags & 1 == 1))
}

/// The caller's B3 context, multi-header form first, then single header.
fn read_b3(headers: &HeaderMap) -> Option<(u128, u64, bool)> {
    if let (Some(trace), Some(span)) = (header(headers, &B3_TRACE_ID), header(headers, &B3_SPAN_ID))
    {
        let debug = header(headers, &B3_FLAGS) == Some("1");
        let sampled = debug || header(headers, &B3_SAMPLED).is_none_or(|s| s == "1" || s == "true");
        return b3_ids(trace, span).map(|(t, s)| (t, s, sampled));
    }
    let single = header(headers, &B3)?;
    let mut parts = single.split('-');
    let (trace, span) = (parts.next()?, parts.next()?);
    let sampled = parts.next().is_none_or(|s| s == "1" || s == "d");
    b3_ids(trace, span).map(|(t, s)| (t, s, sampled))
}

/// B3 trace id (16 or 32 hex digits; 64-bit ids padded) and span id.
fn b3_ids(trace: &str, span: &str) -> Option<(u128, u64)> {
    let trace = trace.to_ascii_lowercase();
    let span = span.to_ascii_lowercase();
    if !matches!(trace.len(), 16 | 32) || span.len() != 16 {
        return None;
    }
    let trace_id = lower_hex_u128(&trace)?;
    let span_id = u64::try_from(lower_hex_u128(&span)?).ok()?;
    (trace_id != 0 && span_id != 0).then_some((trace_id, span_id))
}

/// Lowercase hex only (W3C forbids uppercase), at most 32 digits.
fn lower_hex_u128(digits: &str) -> Option<u128> {
    let valid = !digits.is_empty()
        && digits.len() <= 32
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    valid
        .then(|| u128::from_str_radix(digits, 16).ok())
        .flatten()
}

/// True for the names of B3's single and multi-header forms.
fn is_b3(name: &HeaderName) -> bool {
    *name == B3 || name.as_str().starts_with("x-b3-")
}

fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(value) {
        headers.insert(name, unique(value));
    }
}

/// `value`, marked as one that is new on every request (a span id, a request
/// id), so HTTP/2 never indexes it: HPACK would otherwise probe its table for
/// it and insert it, each time, only to evict entries that do repeat.
fn unique(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// True with probability `ratio` (0 to 1).
fn sample(ratio: f64) -> bool {
    ratio >= 1.0 || (ratio > 0.0 && fastrand::f64() < ratio)
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

/// A random UUID v4 (RFC 9562 §5.4), lowercase and hyphenated (ASCII).
pub fn uuid_v4() -> [u8; 36] {
    let bits = (fastrand::u128(..) & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let mut text = [b'-'; 36];
    hex_into(&mut text[0..8], bits >> 96);
    hex_into(&mut text[9..13], bits >> 80);
    hex_into(&mut text[14..18], bits >> 64);
    hex_into(&mut text[19..23], bits >> 48);
    hex_into(&mut text[24..36], bits);
    text
}

/// The lowest `digits` hex digits of `value`, lowercase.
fn hex(value: u128, digits: usize) -> String {
    let mut text = [0u8; 32];
    hex_into(&mut text[..digits], value);
    ascii(&text[..digits])
}

/// Fills `out` with the lowest `out.len()` hex digits of `value`, lowercase.
/// Every request gets a `traceparent` and an `x-request-id`, so this avoids
/// the formatting machinery (measurably cheaper than `format!("{:032x}")`),
/// and both are written on the stack: the header value is their only
/// allocation.
fn hex_into(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// `bytes` (hex digits and hyphens) as a `String`.
fn ascii(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("hex digits and hyphens are ASCII")
}

/// The stack is cloned for every request, so the config is shared, not copied.
#[derive(Clone)]
pub struct TraceContextLayer {
    config: Arc<TracingConfig>,
}

impl TraceContextLayer {
    pub fn new(config: &TracingConfig) -> Self {
        Self {
            config: Arc::new(config.clone()),
        }
    }
}

impl<S> Layer<S> for TraceContextLayer {
    type Service = TraceContextService<S>;
    fn layer(&self, inner: S) -> TraceContextService<S> {
        TraceContextService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

#[derive(Clone)]
pub struct TraceContextService<S> {
    inner: S,
    config: Arc<TracingConfig>,
}

impl<S, B> Service<Request<B>> for TraceContextService<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let headers = request.headers_mut();
        let mut context = TraceContext::from_headers(headers, &self.config.propagation);
        if context.parent_id.is_none() {
            context.sampled = sample(self.config.otlp.as_ref().map_or(1.0, |o| o.sample_ratio));
        }
        context.write(headers, &self.config.propagation);
        let request_id = match headers.entry(REQUEST_ID) {
            Entry::Occupied(mut id) => {
                id.get_mut().set_sensitive(true);
                Some(id.get().clone())
            }
            Entry::Vacant(slot) if self.config.request_id => {
                let id = HeaderValue::from_bytes(&uuid_v4()).expect("hex and hyphens");
                Some(slot.insert(unique(id)).clone())
            }
            Entry::Vacant(_) => None,
        };
        request.extensions_mut().insert(context);
        let response = self.inner.call(request);
        crate::svc::boxed(|| async move {
            let mut response = response.await?;
            if let Some(id) = request_id {
                response.headers_mut().insert(REQUEST_ID, id);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    /// Each request's ids reach HTTP/2 as never-indexed (see the module doc):
    /// the ones written, and a caller's `x-request-id` on the response too.
    #[tokio::test]
    async fn per_request_ids_are_never_indexed() {
        let config = TracingConfig {
            propagation: vec![Propagation::W3c, Propagation::B3],
            ..TracingConfig::default()
        };
        let upstream = tower::service_fn(|request: Request<()>| async move {
            let headers = request.headers();
            for name in ["traceparent", "x-b3-traceid", "x-b3-spanid", "x-request-id"] {
                assert!(headers[name].is_sensitive(), "{name}");
            }
            Ok::<_, std::convert::Infallible>(Response::new(ResponseBody::empty()))
        });
        let mut service = TraceContextLayer::new(&config).layer(upstream);
        for caller in [None, Some("from-the-caller")] {
            let mut request = Request::new(());
            if let Some(id) = caller {
                request
                    .headers_mut()
                    .insert(REQUEST_ID, HeaderValue::from_static(id));
            }
            let response = service.call(request).await.unwrap();
            let id = &response.headers()[REQUEST_ID];
            assert!(id.is_sensitive());
            if let Some(caller) = caller {
                assert_eq!(id, caller);
            }
        }
    }

    #[test]
    fn strict_traceparent_parsing() {
        assert_eq!(
            parse_traceparent(VALID),
            Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, true))
        );
        for invalid in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert_eq!(parse_traceparent(invalid), None, "{invalid}");
        }
    }

    #[test]
    fn joins_the_callers_trace_with_a_new_span() {
        let incoming = headers(&[("traceparent", VALID)]);
        let context = TraceContext::from_headers(&incoming, &[Propagation::W3c]);
        assert_eq!(context.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(context.parent_id, Some(0x00f067aa0ba902b7));
        assert_ne!(context.span_id, 0x00f067aa0ba902b7);
        let mut outgoing = incoming.clone();
        context.write(&mut outgoing, &[Propagation::W3c]);
        let written = outgoing["traceparent"].to_str().unwrap();
        assert!(written.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_eq!(parse_traceparent(written).unwrap().1, context.span_id);
    }

    #[test]
    fn invalid_traceparent_starts_a_new_trace_and_is_not_forwarded() {
        let mut map = headers(&[("traceparent", "00-xyz-00f067aa0ba902b7-01")]);
        let context = TraceContext::from_headers(&map, &[Propagation::W3c]);
        assert_eq!(context.parent_id, None);
        context.write(&mut map, &[Propagation::W3c]);
        assert!(parse_traceparent(map["traceparent"].to_str().unwrap()).is_some());
    }

    #[test]
    fn b3_multi_and_single_with_64_bit_ids_padded() {
        let multi = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
        ]);
        let context = TraceContext::from_headers(&multi, &[Propagation::W3c, Propagation::B3]);
        assert_eq!(context.trace_id, 0x463ac35c9f6413ad);
        assert_eq!(context.parent_id, Some(0xa2fb4a1d1a96d312));
        assert!(!context.sampled);
        let mut out = multi.clone();
        context.write(&mut out, &[Propagation::W3c, Propagation::B3]);
        assert_eq!(out["x-b3-traceid"], "0000000000000000463ac35c9f6413ad");
        assert_eq!(out["x-b3-parentspanid"], "a2fb4a1d1a96d312");
        assert!(out["traceparent"].to_str().unwrap().ends_with("-00"));

        let single = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]);
        let context = TraceContext::from_headers(&single, &[Propagation::B3]);
        assert_eq!(context.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
        assert!(context.sampled);
    }

    #[test]
    fn headers_of_unlisted_propagations_are_removed() {
        let incoming = headers(&[
            ("traceparent", VALID),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-parentspanid", "a2fb4a1d1a96d311"),
            ("x-b3-sampled", "1"),
            ("x-b3-flags", "1"),
        ]);
        let context = TraceContext::from_headers(&incoming, &[Propagation::W3c]);
        let mut w3c_only = incoming.clone();
        context.write(&mut w3c_only, &[Propagation::W3c]);
        let names: Vec<&str> = w3c_only.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["traceparent"]);

        let mut b3_only = incoming.clone();
        context.write(&mut b3_only, &[Propagation::B3]);
        assert!(b3_only.get("traceparent").is_none());
        assert!(b3_only.get("b3").is_none());
        assert!(b3_only.get("x-b3-flags").is_none());
        assert_eq!(
            b3_only["x-b3-spanid"],
            format!("{:016x}", context.span_id).as_str()
        );
    }

    #[test]
    fn oversized_tracestate_is_dropped() {
        let long = "k=".to_owned() + &"v".repeat(MAX_TRACESTATE);
        let mut map = headers(&[("tracestate", &long)]);
        TraceContext::from_headers(&map, &[Propagation::W3c]).write(&mut map, &[Propagation::W3c]);
        assert!(map.get("tracestate").is_none());
        let mut map = headers(&[("tracestate", "congo=t61rcWkgMzE")]);
        TraceContext::from_headers(&map, &[Propagation::W3c]).write(&mut map, &[Propagation::W3c]);
        assert_eq!(map["tracestate"], "congo=t61rcWkgMzE");
    }

    #[test]
    fn sample_ratio_bounds() {
        assert!(sample(1.0));
        assert!(!sample(0.0));
        let sampled = (0..1000).filter(|_| sample(0.5)).count();
        assert!((300..700).contains(&sampled), "{sampled}");
    }

    #[test]
    fn hex_writing_matches_the_formatter() {
        for _ in 0..1000 {
            let context = TraceContext {
                trace_id: fastrand::u128(..),
                parent_id: None,
                span_id: fastrand::u64(..),
                sampled: fastrand::bool(),
            };
            let expected = format!(
                "00-{:032x}-{:016x}-{:02x}",
                context.trace_id,
                context.span_id,
                u8::from(context.sampled)
            );
            assert_eq!(context.traceparent(), expected.as_bytes());
            assert_eq!(
                hex(context.trace_id, 32),
                format!("{:032x}", context.trace_id)
            );
            assert_eq!(hex(1, 16), "0000000000000001");
        }
        let id = ascii(&uuid_v4());
        let digits: String = id.split('-').collect();
        let lengths: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(lengths, [8, 4, 4, 4, 12]);
        assert!(u128::from_str_radix(&digits, 16).is_ok(), "{id}");
    }

    #[test]
    fn uuid_v4_shape() {
        let id = ascii(&uuid_v4());
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(uuid_v4(), id.as_bytes());
    }
}
