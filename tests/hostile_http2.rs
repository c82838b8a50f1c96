//! Hostile HTTP/2 input, sent as raw frames: more streams than
//! `limits.max_concurrent_streams`, a header list over
//! `limits.max_header_bytes`, the rapid-reset flood (CVE-2023-44487), a
//! CONTINUATION flood, and malformed frames. Each is contained on its own
//! connection (a refused stream, a 431, or GOAWAY and close) and a
//! well-behaved HTTP/2 client on another connection (`Prober`) is answered
//! within `LATENCY_BOUND` meanwhile.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::config::{TestConfig, Upstream};
use support::{Backend, Prober, Proxy, http_backend};

/// Slowest answer a well-behaved client may get while another connection
/// attacks the listener (generous: debug build, shared 2-core machine).
const LATENCY_BOUND: Duration = Duration::from_millis(200);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const NO_ERROR: u32 = 0x0;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap();
    let mut bytes = length.to_be_bytes()[1..].to_vec();
    bytes.extend([kind, flags]);
    bytes.extend(stream.to_be_bytes());
    bytes.extend(payload);
    bytes
}

/// An HPACK integer with an `prefix_bits`-bit prefix, `flags` in the high bits.
fn hpack_int(flags: u8, prefix_bits: u32, value: usize) -> Vec<u8> {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        return vec![flags | value as u8];
    }
    let mut bytes = vec![flags | max as u8];
    let mut rest = value - max;
    while rest >= 128 {
        bytes.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    bytes.push(rest as u8);
    bytes
}

/// A header block: `GET http://a<path>` plus `extra` literal headers.
fn request_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    // :method GET, :scheme http (static table), :path and :authority literal.
    let mut block = vec![0x82, 0x86];
    for (index, value) in [(4, path), (1, "a")] {
        block.extend(hpack_int(0x00, 4, index));
        block.extend(hpack_int(0x00, 7, value.len()));
        block.extend(value.as_bytes());
    }
    for (name, value) in extra {
        block.push(0x00);
        block.extend(hpack_int(0x00, 7, name.len()));
        block.extend(name.as_bytes());
        block.extend(hpack_int(0x00, 7, value.len()));
        block.extend(value.as_bytes());
    }
    block
}

fn get(stream: u32, path: &str) -> Vec<u8> {
    frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        stream,
        &request_block(path, &[]),
    )
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }

    /// The `:status` of a response HEADERS frame from remora: an indexed
    /// static-table status, or a literal with the `:status` name (index 8),
    /// plain or Huffman-coded (only the codes these tests expect).
    fn status(&self) -> Option<u16> {
        let block = &self.payload;
        match block.first()? {
            0x88 => return Some(200),
            0x8c => return Some(400),
            0x8d => return Some(404),
            _ => {}
        }
        if !matches!(block[0], 0x08 | 0x18 | 0x48) {
            return None;
        }
        match &block[1..] {
            [0x03, b'4', b'3', b'1', ..] | [0x83, 0x69, 0x90, 0xff, ..] => Some(431),
            [0x03, b'5', b'0', b'3', ..] | [0x82, 0x68, 0x1d, ..] => Some(503),
            _ => None,
        }
    }
}

/// A raw HTTP/2 client connection.
struct RawH2 {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// The server's SETTINGS: (identifier, value).
    settings: Vec<(u16, u32)>,
}

impl RawH2 {
    /// Connects, sends the preface and empty SETTINGS, reads the server's
    /// SETTINGS and acknowledges them, so its limits are in force.
    async fn connect(addr: SocketAddr) -> RawH2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(PREFACE).await.unwrap();
        stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        let mut raw = RawH2 {
            stream,
            buffer: Vec::new(),
            settings: Vec::new(),
        };
        loop {
            let frame = raw
                .next_frame(Duration::from_secs(5))
                .await
                .expect("SETTINGS");
            if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                raw.settings = frame
                    .payload
                    .chunks(6)
                    .map(|s| {
                        (
                            u16::from_be_bytes([s[0], s[1]]),
                            u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
                        )
                    })
                    .collect();
                break;
            }
        }
        raw.send(&frame(SETTINGS, ACK, 0, &[])).await;
        raw
    }

    /// Sends bytes; the server may already have closed (ignored).
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next frame, or `None` at EOF, on a reset or after `wait`.
    async fn next_frame(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.buffer.len() >= 9 {
                let length =
                    u32::from_be_bytes([0, self.buffer[0], self.buffer[1], self.buffer[2]]);
                let end = 9 + length as usize;
                if self.buffer.len() >= end {
                    let frame = Frame {
                        kind: self.buffer[3],
                        flags: self.buffer[4],
                        stream: u32::from_be_bytes(self.buffer[5..9].try_into().unwrap())
                            & 0x7fff_ffff,
                        payload: self.buffer[9..end].to_vec(),
                    };
                    self.buffer.drain(..end);
                    return Some(frame);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await;
            match read {
                Ok(Ok(n)) if n > 0 => self.buffer.extend(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Every frame until the server closes the connection (EOF or reset);
    /// panics if it is still open after `wait`.
    async fn frames_until_closed(&mut self, wait: Duration, what: &str) -> Vec<Frame> {
        let deadline = Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left).await {
                Some(frame) => frames.push(frame),
                None => {
                    assert!(
                        Instant::now() < deadline,
                        "{what}: connection still open after {wait:?}"
                    );
                    return frames;
                }
            }
        }
    }
}

fn config(prefix: &str, backend: SocketAddr, limits: &str) -> String {
    TestConfig::new()
        .upstream(Upstream::to(&format!("{prefix}-h2"), [backend]).protocol("http2"))
        .with("limits", limits)
        .upstream(Upstream::to(&format!("{prefix}-auto"), [backend]).protocol("auto"))
        .with("limits", limits)
        .yaml()
}

/// The defaults are advertised in SETTINGS: 100 streams, 60 KiB of headers.
#[tokio::test]
async fn settings_advertise_the_default_limits() {
    let backend = http_backend("target");
    let proxy = Proxy::start(&config("settings", backend.addr, "{}")).await;
    for listener in ["settings-h2", "settings-auto"] {
        let raw = RawH2::connect(proxy.upstream(listener)).await;
        assert!(
            raw.settings.contains(&(0x3, 100)),
            "{listener}: {:?}",
            raw.settings
        );
        assert!(
            raw.settings.contains(&(0x6, 60 * 1024)),
            "{listener}: {:?}",
            raw.settings
        );
    }
}

/// A stream beyond `max_concurrent_streams` is refused (REFUSED_STREAM, so
/// the client may retry it) at once; the others are answered.
#[tokio::test]
async fn streams_beyond_max_concurrent_streams_are_refused() {
    let backend = http_backend("target");
    let proxy = Proxy::start(&config(
        "streams",
        backend.addr,
        "{ max_concurrent_streams: 5 }",
    ))
    .await;
    for listener in ["streams-h2", "streams-auto"] {
        let addr = proxy.upstream(listener);
        let prober = Prober::start(addr, Version::HTTP_2).await;
        let mut raw = RawH2::connect(addr).await;
        assert!(raw.settings.contains(&(0x3, 5)), "{:?}", raw.settings);
        let started = Instant::now();
        let requests: Vec<u8> = (0..6).flat_map(|i| get(1 + 2 * i, "/slow/1000")).collect();
        raw.send(&requests).await;
        let mut refused = None;
        let mut answered = Vec::new();
        while answered.len() < 5 {
            let frame = raw
                .next_frame(Duration::from_secs(5))
                .await
                .expect("a frame");
            match frame.kind {
                RST_STREAM => {
                    assert_eq!(frame.error_code(), REFUSED_STREAM, "{frame:?}");
                    refused = Some((frame.stream, started.elapsed()));
                }
                HEADERS => answered.push((frame.stream, frame.status())),
                _ => {}
            }
        }
        let (stream, after) = refused.expect("the sixth stream was refused");
        assert_eq!(stream, 11);
        assert!(
            after < Duration::from_millis(500),
            "refused after {after:?}"
        );
        answered.sort();
        assert_eq!(answered, [1, 3, 5, 7, 9].map(|s| (s, Some(200))));
        prober
            .finish(&format!("{listener}: streams"), LATENCY_BOUND)
            .await;
    }
}

/// A header list over `max_header_bytes` gets 431 on its stream; the
/// connection lives on and serves the next stream.
#[tokio::test]
async fn oversized_header_lists_get_431() {
    let backend = http_backend("target");
    let proxy = Proxy::start(&config(
        "header-list",
        backend.addr,
        "{ max_header_bytes: 16384 }",
    ))
    .await;
    let big = "b".repeat(20 * 1024);
    let block = request_block("/", &[("x-big", &big)]);
    // HEADERS then CONTINUATION: frames are at most 16 KiB.
    let (first, rest) = block.split_at(16 * 1024);
    let mut bytes = frame(HEADERS, END_STREAM, 1, first);
    bytes.extend(frame(CONTINUATION, END_HEADERS, 1, rest));
    for listener in ["header-list-h2", "header-list-auto"] {
        refused_with_431(&proxy, listener, &backend, &bytes, "header list").await;
    }
}

/// More headers than `max_headers` get 431 on their stream (hyper counts
/// only HTTP/1.1 headers; remora counts HTTP/2 ones); the connection lives on.
#[tokio::test]
async fn too_many_headers_get_431() {
    let backend = http_backend("target");
    let proxy = Proxy::start(&config("header-count", backend.addr, "{ max_headers: 20 }")).await;
    let names: Vec<String> = (0..21).map(|i| format!("x-h{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "1")).collect();
    let bytes = frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &request_block("/", &headers),
    );
    for listener in ["header-count-h2", "header-count-auto"] {
        refused_with_431(&proxy, listener, &backend, &bytes, "header count").await;
    }
}

/// Sends `bytes` (a request on stream 1) to `listener`: stream 1 gets 431,
/// never reaches the upstream, and stream 3 is served on the same
/// connection, while a prober on another connection stays fast.
async fn refused_with_431(
    proxy: &Proxy,
    listener: &str,
    backend: &Backend,
    bytes: &[u8],
    what: &str,
) {
    let addr = proxy.upstream(listener);
    let prober = Prober::start(addr, Version::HTTP_2).await;
    let before = backend.requests();
    let mut raw = RawH2::connect(addr).await;
    raw.send(bytes).await;
    let answer = loop {
        let frame = raw
            .next_frame(Duration::from_secs(5))
            .await
            .expect("an answer");
        if frame.stream == 1 && matches!(frame.kind, HEADERS | RST_STREAM) {
            break frame;
        }
    };
    assert_eq!(
        (answer.kind, answer.status()),
        (HEADERS, Some(431)),
        "{listener}: {answer:?}"
    );
    raw.send(&get(3, "/")).await;
    let next = loop {
        let frame = raw
            .next_frame(Duration::from_secs(5))
            .await
            .expect("an answer");
        if frame.stream == 3 && frame.kind == HEADERS {
            break frame;
        }
    };
    assert_eq!(next.status(), Some(200));
    let report = prober
        .finish(&format!("{listener}: {what}"), LATENCY_BOUND)
        .await;
    assert_eq!(
        backend.requests() - before,
        1 + u64::from(report.answered),
        "the refused request never reached the upstream"
    );
}

/// CVE-2023-44487: a client opening streams and resetting them at once
/// (HEADERS + RST_STREAM, thousands of times) gets GOAWAY
/// (ENHANCE_YOUR_CALM) and is disconnected, the upstream sees a bounded
/// share of the flood, and other clients are not slowed down.
#[tokio::test]
async fn rapid_reset_flood_is_contained() {
    let backend = http_backend("target");
    let proxy = Proxy::start(&config("rapid-reset", backend.addr, "{}")).await;
    for listener in ["rapid-reset-h2", "rapid-reset-auto"] {
        let addr = proxy.upstream(listener);
        let prober = Prober::start(addr, Version::HTTP_2).await;
        let before = backend.requests();
        let mut raw = RawH2::connect(addr).await;
        const FLOOD: u32 = 10_000;
        let mut flood = Vec::new();
        for i in 0..FLOOD {
            let stream = 1 + 2 * i;
            flood.extend(get(stream, "/slow/100"));
            flood.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
        }
        let started = Instant::now();
        raw.send(&flood).await;
        let frames = raw
            .frames_until_closed(Duration::from_secs(10), listener)
            .await;
        let goaway = frames.iter().find(|f| f.kind == GOAWAY).expect("GOAWAY");
        assert_eq!(goaway.error_code(), ENHANCE_YOUR_CALM, "{goaway:?}");
        let report = prober
            .finish(&format!("{listener}: rapid reset"), LATENCY_BOUND)
            .await;
        let reached = backend.requests() - before - u64::from(report.answered);
        eprintln!(
            "{listener}: rapid reset of {FLOOD} streams: closed after {:?}, {reached} reached the upstream",
            started.elapsed()
        );
        assert!(
            reached < 200,
            "{reached} flood requests reached the upstream"
        );
    }
}

/// Malformed frames and a CONTINUATION flood: the connection gets GOAWAY
/// with the matching error code and is closed; nothing else is affected.
#[tokio::test]
async fn malformed_frames_close_only_their_connection() {
    let backend = http_backend("target");
    let proxy = Proxy::start(&config("malformed", backend.addr, "{}")).await;
    let continuation_flood = {
        let mut bytes = frame(HEADERS, END_STREAM, 1, &request_block("/", &[]));
        let junk = [0x00, 0x01, b'x', 0x7f, 0xff].repeat(4000);
        for _ in 0..2000 {
            bytes.extend(frame(CONTINUATION, 0, 1, &junk[..16 * 1024 - 16]));
        }
        bytes
    };
    // (what, bytes, whether remora must answer GOAWAY with an error code;
    // which code is h2's choice, printed for the record).
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "SETTINGS of 5 bytes",
            frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0]),
            true,
        ),
        ("DATA on stream 0", frame(DATA, 0, 0, b"hello"), true),
        (
            "WINDOW_UPDATE of 0",
            frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0]),
            true,
        ),
        ("PING of 7 bytes", frame(PING, 0, 0, &[0; 7]), true),
        (
            "frame over max_frame_size",
            frame(DATA, 0, 1, &[0; 16 * 1024 + 1]),
            true,
        ),
        (
            "HPACK garbage",
            frame(HEADERS, END_STREAM | END_HEADERS, 1, &[0xff; 32]),
            true,
        ),
        (
            "CONTINUATION without HEADERS",
            frame(CONTINUATION, END_HEADERS, 1, &request_block("/", &[])),
            true,
        ),
        ("HEADERS on an even stream", get(2, "/"), true),
        (
            "stream ids going backwards",
            [get(5, "/"), get(3, "/")].concat(),
            true,
        ),
        (
            "HEADERS interrupted by another frame",
            [
                frame(HEADERS, END_STREAM, 1, &request_block("/", &[])),
                frame(PING, 0, 0, &[0; 8]),
            ]
            .concat(),
            true,
        ),
        (
            "PRIORITY depending on itself, then a bad PING",
            [
                frame(PRIORITY, 0, 1, &[0, 0, 0, 1, 16]),
                frame(PING, 0, 0, &[0; 7]),
            ]
            .concat(),
            true,
        ),
        ("CONTINUATION flood", continuation_flood, false),
    ];
    for listener in ["malformed-h2", "malformed-auto"] {
        let addr = proxy.upstream(listener);
        let prober = Prober::start(addr, Version::HTTP_2).await;
        for (what, bytes, expect_goaway) in &cases {
            let mut raw = RawH2::connect(addr).await;
            raw.send(bytes).await;
            let what = format!("{listener}: {what}");
            let frames = raw.frames_until_closed(Duration::from_secs(5), &what).await;
            let goaway = frames.iter().find(|f| f.kind == GOAWAY);
            eprintln!("{what}: GOAWAY {:?}", goaway.map(Frame::error_code));
            if *expect_goaway {
                let goaway = goaway.unwrap_or_else(|| panic!("{what}: no GOAWAY in {frames:?}"));
                assert_ne!(goaway.error_code(), NO_ERROR, "{what}: {goaway:?}");
            }
        }
        prober
            .finish(&format!("{listener}: malformed frames"), LATENCY_BOUND)
            .await;
        // Every connection remora ended with a GOAWAY error is counted.
        let goaways = cases.iter().filter(|case| case.2).count() as f64;
        let labels = [
            ("direction", "outbound"),
            ("listener", listener),
            ("kind", "http2"),
        ];
        let counted = support::prom::wait_for_value(
            &proxy.admin_url("/metrics"),
            "remora_client_protocol_errors_total",
            &labels,
            goaways,
            Duration::from_secs(5),
        )
        .await;
        assert!(
            counted >= goaways,
            "{listener}: {counted} of {goaways} counted"
        );
    }
}
