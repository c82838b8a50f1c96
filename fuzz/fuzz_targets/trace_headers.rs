//! The trace-header parsers (`traceparent`, B3 multi-header and single `b3`)
//! on arbitrary header values: the context is joined or a new one started,
//! never a panic.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use remora::config::Propagation;
use remora::context::TraceContext;

const NAMES: [&str; 7] = [
    "traceparent",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

fuzz_target!(|data: &[u8]| {
    // Input: values separated by 0xff, assigned to the trace headers in turn.
    let mut headers = HeaderMap::new();
    for (value, name) in data.split(|b| *b == 0xff).zip(NAMES.iter().cycle()) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    for propagation in [
        &[Propagation::W3c][..],
        &[Propagation::B3],
        &[Propagation::B3, Propagation::W3c],
    ] {
        let context = TraceContext::from_headers(&headers, propagation);
        assert_ne!(context.span_id, 0);
        assert_eq!(context.traceparent().len(), 55);
    }
});
