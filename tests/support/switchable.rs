//! `Switchable`: an HTTP origin for health-check tests whose health path
//! and traffic can each be turned to 503, and whose health path can be
//! slowed down.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::{Server, serve};

/// An HTTP origin whose health path (`/health`) and traffic (anything
/// else, answered with `x-backend: <name>`) can each be switched to 503;
/// the health path answers after `health_delay_ms`.
pub struct Switchable {
    pub server: Server,
    pub healthy: Arc<AtomicBool>,
    pub serving: Arc<AtomicBool>,
    pub health_delay_ms: Arc<AtomicU64>,
    traffic: Arc<AtomicU64>,
}

impl Switchable {
    pub fn start(name: &'static str) -> Switchable {
        let healthy = Arc::new(AtomicBool::new(true));
        let serving = Arc::new(AtomicBool::new(true));
        let health_delay_ms = Arc::new(AtomicU64::new(0));
        let traffic = Arc::new(AtomicU64::new(0));
        let state = (
            healthy.clone(),
            serving.clone(),
            health_delay_ms.clone(),
            traffic.clone(),
        );
        let server = serve(move |stream| {
            let (healthy, serving, health_delay_ms, traffic) = state.clone();
            async move {
                let service = service_fn(move |request: http::Request<_>| {
                    let mut delay = Duration::ZERO;
                    let up = if request.uri().path() == "/health" {
                        delay = Duration::from_millis(health_delay_ms.load(Ordering::SeqCst));
                        healthy.load(Ordering::SeqCst)
                    } else {
                        traffic.fetch_add(1, Ordering::SeqCst);
                        serving.load(Ordering::SeqCst)
                    };
                    let mut response = Response::new(Full::new(Bytes::from_static(b"hi")));
                    if !up {
                        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    }
                    response
                        .headers_mut()
                        .insert("x-backend", name.parse().unwrap());
                    async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
        Switchable {
            server,
            healthy,
            serving,
            health_delay_ms,
            traffic,
        }
    }

    /// Requests other than health checks received so far.
    pub fn traffic(&self) -> u64 {
        self.traffic.load(Ordering::SeqCst)
    }
}
