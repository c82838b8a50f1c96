//! `Prober`: a well-behaved client that keeps sending `GET /` to a listener
//! on its own keep-alive connection while a test attacks the same listener,
//! and reports the slowest answer. Hostile-input tests use it to show that
//! one client's abuse does not delay the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use tokio::task::JoinHandle;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A running prober; [`finish`](Prober::finish) stops it.
pub struct Prober {
    stop: Arc<AtomicBool>,
    task: JoinHandle<ProbeReport>,
}

/// What the prober saw.
#[derive(Debug)]
pub struct ProbeReport {
    /// Requests answered 200.
    pub answered: u32,
    /// Requests that failed or got another status.
    pub failed: u32,
    /// The slowest answer.
    pub slowest: Duration,
}

impl Prober {
    /// Starts probing `addr` with `version` (HTTP/1.1, or h2c prior knowledge),
    /// one request every 2 ms. Returns once the first request succeeded,
    /// so the connection is open before the attack begins.
    pub async fn start(addr: SocketAddr, version: Version) -> Prober {
        // TCP_NODELAY: without it Nagle and delayed ACKs add 40 ms to
        // small HTTP/2 exchanges, which would hide what is measured.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(version == Version::HTTP_2)
            .build::<_, Empty<Bytes>>(connector);
        let url = format!("http://{addr}/");
        let probe = move || {
            let request = Request::get(&url).body(Empty::new()).expect("request");
            let response = client.request(request);
            async move {
                let started = Instant::now();
                let ok = match response.await {
                    Ok(response) => {
                        let status = response.status();
                        response.into_body().collect().await.is_ok() && status == StatusCode::OK
                    }
                    Err(_) => false,
                };
                (ok, started.elapsed())
            }
        };
        let (ok, _) = probe().await;
        assert!(ok, "the prober's first request failed");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut report = ProbeReport {
                answered: 0,
                failed: 0,
                slowest: Duration::ZERO,
            };
            while !stopped.load(Ordering::SeqCst) {
                let (ok, took) = probe().await;
                if ok {
                    report.answered += 1;
                } else {
                    report.failed += 1;
                }
                report.slowest = report.slowest.max(took);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            report
        });
        Prober { stop, task }
    }

    /// Stops probing and asserts that every request was answered 200 within
    /// `bound`; returns the report (tests print it).
    pub async fn finish(self, what: &str, bound: Duration) -> ProbeReport {
        self.stop.store(true, Ordering::SeqCst);
        let report = self.task.await.expect("prober task");
        eprintln!("{what}: prober {report:?}");
        assert!(report.answered > 0, "{what}: no probe answered: {report:?}");
        assert_eq!(report.failed, 0, "{what}: probes failed: {report:?}");
        assert!(
            report.slowest < bound,
            "{what}: a probe took {:?} (bound {bound:?})",
            report.slowest
        );
        report
    }
}
