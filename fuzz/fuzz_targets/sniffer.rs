//! Raw client bytes against remora's listeners: the protocol sniffer of an
//! `auto` listener (HTTP/2 preface or HTTP/1.1), the HTTP/1.1-only and the
//! HTTP/2-only listeners, and the whole request path behind them up to a
//! real backend. The first input byte picks the listener, the rest is sent
//! as is, then the client half-closes and reads the answer. A panic in any
//! remora task aborts the process (libFuzzer's panic hook), so it is found.
#![no_main]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

struct Harness {
    runtime: Runtime,
    listeners: Vec<SocketAddr>,
    /// Kept (not dropped, not leaked) so remora serves for the process's life.
    _running: remora::app::Running,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (listeners, running) = runtime.block_on(async {
            let backend = start_backend().await;
            let yaml = format!(
                "service: {{ name: fuzz }}\n\
                 upstreams:\n\
                 \x20 - {{ name: auto, listen: 127.0.0.1:0, protocol: auto, discovery: {{ static: [{backend}] }} }}\n\
                 \x20 - {{ name: h1, listen: 127.0.0.1:0, protocol: http, discovery: {{ static: [{backend}] }} }}\n\
                 \x20 - {{ name: h2, listen: 127.0.0.1:0, protocol: http2, discovery: {{ static: [{backend}] }} }}\n\
                 admin: {{ listen: 127.0.0.1:0 }}\n\
                 logging: {{ access_log: false }}\n"
            );
            let config = remora::config::parse(&yaml, "fuzz.yaml").expect("fuzz config");
            let running = remora::app::start(&config).await.expect("remora starts");
            let listeners = ["auto", "h1", "h2"]
                .map(|name| running.bound.upstream(name).expect("listener"))
                .to_vec();
            (listeners, running)
        });
        Harness {
            runtime,
            listeners,
            _running: running,
        }
    })
}

/// An HTTP/1.1 + h2c backend answering 200 "ok" to everything.
async fn start_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, raw)) = data.split_first() else {
        return;
    };
    let harness = harness();
    let addr = harness.listeners[usize::from(selector) % harness.listeners.len()];
    harness.runtime.block_on(async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // Reset on close: no TIME_WAIT pile-up over millions of runs.
        let _ = stream.set_zero_linger();
        let _ = stream.write_all(raw).await;
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut answer)).await;
    });
});
