//! Fault injection (`fault:` of an upstream), for chaos testing: with
//! probability `delay.percent` % a request waits `delay.duration` before it
//! goes on; with probability `abort.percent` % it is answered by remora with
//! [`ProxyError::FaultAbort`] — `abort.status` for HTTP, `abort.grpc_status`
//! (default UNAVAILABLE) for gRPC, `x-remora-error: fault_abort` — and never
//! reaches the upstream. Both are drawn independently per request; when both
//! hit, the delay comes first (as in Envoy's fault filter).
//!
//! A delayed request waits in its own timer, not in a queue; the layer sits
//! outside the rate limit and the request timeout, so an injected delay is
//! not counted against `timeouts.request`.

use std::future::ready;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use metrics::Counter;
use tower::{Layer, Service};

use crate::body::ResponseBody;
use crate::config::{FaultConfig, grpc_code};
use crate::error::ProxyError;
use crate::telemetry::metrics::faults_counter;

/// The faults of one upstream, shared by every clone of its layer.
struct Faults {
    delay: Option<(f64, Duration)>,
    abort: Option<Abort>,
    delays: Counter,
    aborts: Counter,
}

struct Abort {
    percent: f64,
    status: StatusCode,
    grpc_status: Option<u16>,
}

/// True with probability `percent` %.
fn hit(percent: f64) -> bool {
    fastrand::f64() * 100.0 < percent
}

impl Faults {
    fn draw_delay(&self) -> Option<Duration> {
        let (percent, duration) = self.delay?;
        hit(percent).then_some(duration)
    }

    fn draw_abort(&self) -> Option<ProxyError> {
        let abort = self.abort.as_ref()?;
        hit(abort.percent).then_some(ProxyError::FaultAbort {
            status: abort.status,
            grpc_status: abort.grpc_status,
        })
    }
}

/// Injects the configured faults into the requests of one upstream.
#[derive(Clone)]
pub struct FaultLayer {
    faults: Arc<Faults>,
}

impl FaultLayer {
    /// `upstream` labels the `remora_faults_injected_total` metric.
    pub fn new(config: &FaultConfig, upstream: &str) -> Self {
        let abort = config.abort.as_ref().map(|abort| Abort {
            percent: abort.percent,
            // config::validate admits only statuses 200..=599, all valid.
            status: StatusCode::from_u16(abort.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            grpc_status: abort.grpc_status.as_deref().and_then(grpc_code),
        });
        Self {
            faults: Arc::new(Faults {
                delay: config.delay.as_ref().map(|d| (d.percent, d.duration)),
                abort,
                delays: faults_counter(upstream, "delay"),
                aborts: faults_counter(upstream, "abort"),
            }),
        }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = Fault<S>;
    fn layer(&self, inner: S) -> Fault<S> {
        Fault {
            inner,
            faults: Arc::clone(&self.faults),
        }
    }
}

#[derive(Clone)]
pub struct Fault<S> {
    inner: S,
    faults: Arc<Faults>,
}

impl<S, B> Service<Request<B>> for Fault<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let delay = self.faults.draw_delay();
        let abort = self.faults.draw_abort();
        let Some(delay) = delay else {
            return match abort {
                Some(abort) => {
                    self.faults.aborts.increment(1);
                    Box::pin(ready(Err(abort)))
                }
                None => Box::pin(self.inner.call(request)),
            };
        };
        self.faults.delays.increment(1);
        // The service made ready by poll_ready goes into the future; a clone
        // stays for the next request (tower's usual pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let faults = Arc::clone(&self.faults);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if let Some(abort) = abort {
                faults.aborts.increment(1);
                return Err(abort);
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::time::Instant;
    use tower::ServiceExt;
    use tower::util::BoxCloneSyncService;

    use crate::config::{FaultAbort, FaultDelay};

    type Inner = BoxCloneSyncService<Request<()>, Response<ResponseBody>, ProxyError>;

    /// A fault layer over a service that counts its calls.
    fn faulty(config: &FaultConfig) -> (Fault<Inner>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let inner = tower::service_fn(move |_: Request<()>| {
            counted.fetch_add(1, Ordering::SeqCst);
            ready(Ok(Response::new(ResponseBody::empty())))
        });
        let service = FaultLayer::new(config, "unit").layer(Inner::new(inner));
        (service, calls)
    }

    fn abort(percent: f64, status: u16, grpc_status: Option<&str>) -> FaultConfig {
        FaultConfig {
            delay: None,
            abort: Some(FaultAbort {
                percent,
                status,
                grpc_status: grpc_status.map(str::to_owned),
            }),
        }
    }

    #[tokio::test]
    async fn a_certain_abort_answers_without_calling_the_upstream() {
        let (mut service, calls) = faulty(&abort(100.0, 418, Some("resource_exhausted")));
        let result = service.ready().await.unwrap().call(Request::new(())).await;
        match result {
            Err(ProxyError::FaultAbort {
                status,
                grpc_status,
            }) => {
                assert_eq!(status, StatusCode::IM_A_TEAPOT);
                assert_eq!(grpc_status, Some(8));
            }
            other => panic!("expected FaultAbort, got {:?}", other.map(|_| ())),
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn zero_percent_never_injects() {
        let (mut service, calls) = faulty(&abort(0.0, 503, None));
        for _ in 0..100 {
            assert!(
                service
                    .ready()
                    .await
                    .unwrap()
                    .call(Request::new(()))
                    .await
                    .is_ok()
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 100);
    }

    #[tokio::test]
    async fn half_the_requests_abort_at_fifty_percent() {
        let (mut service, calls) = faulty(&abort(50.0, 503, None));
        for _ in 0..2_000 {
            let _ = service.ready().await.unwrap().call(Request::new(())).await;
        }
        let passed = calls.load(Ordering::SeqCst);
        assert!((800..=1_200).contains(&passed), "{passed} of 2000 passed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_comes_before_the_upstream_call_and_before_an_abort() {
        let delay = Some(FaultDelay {
            percent: 100.0,
            duration: Duration::from_millis(150),
        });
        let (mut service, calls) = faulty(&FaultConfig { delay, abort: None });
        let started = Instant::now();
        let future = service.ready().await.unwrap().call(Request::new(()));
        assert_eq!(calls.load(Ordering::SeqCst), 0, "called before the delay");
        assert!(future.await.is_ok());
        assert_eq!(started.elapsed(), Duration::from_millis(150));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let mut both = abort(100.0, 503, None);
        both.delay = Some(FaultDelay {
            percent: 100.0,
            duration: Duration::from_millis(150),
        });
        let (mut service, calls) = faulty(&both);
        let started = Instant::now();
        let result = service.ready().await.unwrap().call(Request::new(())).await;
        assert!(matches!(result, Err(ProxyError::FaultAbort { .. })));
        assert_eq!(started.elapsed(), Duration::from_millis(150));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
