//! `queueing_backend`: an origin whose latency grows with its concurrency, as a real server's
//! does — `workers` requests are worked on at once, each for `service`; the others wait for a
//! worker. Its capacity is `workers / service` requests per second; past it, latency grows with
//! the queue. It answers 200 `ok` to every request and counts what it saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::Semaphore;

use super::{Server, serve};

/// A running `queueing_backend`.
pub struct QueueingBackend {
    pub addr: std::net::SocketAddr,
    counts: Arc<Counts>,
    _server: Server,
}

#[derive(Default)]
struct Counts {
    served: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

impl QueueingBackend {
    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.counts.served.load(Ordering::SeqCst)
    }

    /// Most requests at the backend (worked on or waiting) at once.
    pub fn peak_in_flight(&self) -> u64 {
        self.counts.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Forgets the peak, to measure from now on.
    pub fn reset_peak(&self) {
        let now = self.counts.in_flight.load(Ordering::SeqCst);
        self.counts.peak_in_flight.store(now, Ordering::SeqCst);
    }
}

/// Starts a backend with `workers` workers taking `service` per request.
pub fn queueing_backend(workers: usize, service: Duration) -> QueueingBackend {
    let counts = Arc::new(Counts::default());
    let semaphore = Arc::new(Semaphore::new(workers));
    let shared = (counts.clone(), semaphore);
    let server = serve(move |stream| {
        let (counts, semaphore) = shared.clone();
        async move {
            let service = service_fn(move |_request: Request<Incoming>| {
                let (counts, semaphore) = (counts.clone(), semaphore.clone());
                async move {
                    let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    counts.peak_in_flight.fetch_max(now, Ordering::SeqCst);
                    let worker = semaphore.acquire().await.expect("semaphore open");
                    tokio::time::sleep(service).await;
                    drop(worker);
                    counts.in_flight.fetch_sub(1, Ordering::SeqCst);
                    counts.served.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    });
    QueueingBackend {
        addr: server.addr,
        counts,
        _server: server,
    }
}
