//! Hedged requests ("The Tail at Scale", J. Dean and L. A. Barroso, CACM
//! 2013; gRPC's hedging policy, gRFC A6): when the first try of an
//! idempotent request has not answered after `delay`, a second try goes to
//! another endpoint; the first answer wins and the other tries are dropped,
//! which cancels them (HTTP/2: `RST_STREAM`; HTTP/1.1: the connection is
//! closed). Up to `max_extra` hedges, one more every `delay`, each to an
//! endpoint none of the earlier tries went to while the upstream has one.
//!
//! - Only requests that are idempotent ([`super::idempotency`]) are hedged.
//! - The first try streams the body as usual while the retry layer keeps its
//!   copy (`replay_body_limit`). A hedge is sent only with the whole body:
//!   when its time comes, the client's body must have ended and the copy must
//!   hold all of it ([`Replay::whole_body`]); each hedge then sends a body of
//!   its own, made from the copy, beside the first try still sending. A body
//!   still arriving (a client stream) puts the hedge off by another `delay`;
//!   a body over the limit is never hedged. Bodiless requests (a GET) and
//!   unary gRPC calls, whose one message arrives at once, are hedged after
//!   `delay`.
//! - Each hedge takes one retry from the retry budget; with the budget
//!   spent, no hedge is sent (`remora_retry_budget_exhausted_total`).
//! - An answer that is a failure to retry (`on`) does not win while other
//!   tries are in flight: the first *good* answer wins. When every try
//!   failed, the last failure goes on to the retry logic like a failed
//!   first try.
//! - `delay: p95` is the 95th percentile of the time to the response head of
//!   the recent good answers to *first* tries (the last [`WINDOW`]): the
//!   latency hedging is to cut. A first try cancelled because a hedge won
//!   counts with its time when cancelled (at least `delay`: a lower bound of
//!   its latency); leaving it out, or counting the hedges' own times, would
//!   keep only the fast answers and pull the delay down request after
//!   request. Until [`MIN_SAMPLES`] were seen no hedge is sent.
//!
//! Metrics: `remora_hedges_total{upstream}` (hedges sent),
//! `remora_hedge_wins_total{upstream}` (answers that came from a hedge).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use http::{Request, Response};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::body::{Replay, RequestBody, ResponseBody};
use crate::config::{HedgeDelay, HedgePolicy};
use crate::context::{AvoidEndpoints, PickedEndpoint};
use crate::error::ProxyError;

use super::{Shared, Tried, copy, retryable};

/// Recent latencies kept for a percentile delay.
pub const WINDOW: usize = 1000;
/// Latencies needed before a percentile delay is trusted.
pub const MIN_SAMPLES: usize = 20;
/// The percentile is recomputed after this many new latencies.
const RECOMPUTE_EVERY: u32 = 32;

/// The hedging policy of one upstream or route, and what it learned.
pub struct Hedge {
    delay: HedgeDelay,
    max_extra: u32,
    latencies: Mutex<Latencies>,
}

#[derive(Default)]
struct Latencies {
    recent: VecDeque<Duration>,
    since_recompute: u32,
    percentile: Option<Duration>,
}

impl Hedge {
    pub fn new(policy: &HedgePolicy) -> Self {
        Self {
            delay: policy.delay,
            max_extra: policy.max_extra,
            latencies: Mutex::new(Latencies::default()),
        }
    }

    /// How long the first try may run before a hedge; `None` while a
    /// percentile has too few latencies behind it.
    pub fn delay(&self) -> Option<Duration> {
        match self.delay {
            HedgeDelay::Fixed(delay) => Some(delay),
            HedgeDelay::Percentile(_) => self.lock().percentile,
        }
    }

    /// Records the latency of a good answer.
    pub fn record(&self, latency: Duration) {
        let HedgeDelay::Percentile(p) = self.delay else {
            return;
        };
        let mut latencies = self.lock();
        if latencies.recent.len() == WINDOW {
            latencies.recent.pop_front();
        }
        latencies.recent.push_back(latency);
        latencies.since_recompute += 1;
        let enough = latencies.recent.len() >= MIN_SAMPLES;
        if enough
            && (latencies.percentile.is_none() || latencies.since_recompute >= RECOMPUTE_EVERY)
        {
            let mut sorted: Vec<Duration> = latencies.recent.iter().copied().collect();
            sorted.sort_unstable();
            let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            latencies.percentile = Some(sorted[rank.clamp(1, sorted.len()) - 1]);
            latencies.since_recompute = 0;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Latencies> {
        self.latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The first try (with `body`, streamed) and its hedges (with copies of the
/// whole body from `replay`), raced: the first good answer, else the last
/// failure.
pub(super) async fn race<S>(
    shared: &Arc<Shared>,
    hedge: &Hedge,
    inner: S,
    template: &Request<()>,
    delay: Duration,
    body: RequestBody,
    replay: &Replay,
) -> Tried
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut tries = FuturesUnordered::new();
    let mut picked = Vec::new();
    let first_started = Instant::now();
    let (first, endpoint) = start(shared, &inner, template, 0, &[], body);
    tries.push(first);
    picked.push(endpoint);
    let mut first_pending = true;
    let mut extra = 0;
    let timer = tokio::time::sleep(delay);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            Some((number, tried)) = tries.next() => {
                first_pending &= number > 0;
                // Hedged requests are idempotent: a retryable answer may be repeated.
                if !retryable(&shared.on, &tried.result) {
                    if number > 0 {
                        shared.metrics.hedge_wins.increment(1);
                    }
                    if first_pending {
                        // The first try is cancelled: its latency is at least this.
                        hedge.record(first_started.elapsed().max(delay));
                    }
                    return tried;
                }
                if tries.is_empty() {
                    return tried;
                }
            }
            () = &mut timer, if extra < hedge.max_extra => {
                let Some(body) = replay.whole_body() else {
                    if replay.is_capped() {
                        // Over the limit: no try but the first can have the body.
                        extra = hedge.max_extra;
                    } else {
                        // Still arriving: looked at again after another delay.
                        timer.as_mut().reset(Instant::now() + delay);
                    }
                    continue;
                };
                extra += 1;
                if shared.budget.try_withdraw() {
                    shared.metrics.hedges.increment(1);
                    let (hedged, endpoint) = start(shared, &inner, template, extra, &picked, body);
                    tries.push(hedged);
                    picked.push(endpoint);
                    timer.as_mut().reset(Instant::now() + delay);
                } else {
                    shared.metrics.budget_exhausted.increment(1);
                    extra = hedge.max_extra;
                }
            }
        }
    }
}

/// Try `number` (0: the first) with `body`, avoiding the endpoints the tries
/// `avoid` went to (when the upstream has another): its future (the try's number and result) and the endpoint it
/// will be sent to, once picked.
fn start<S>(
    shared: &Arc<Shared>,
    inner: &S,
    template: &Request<()>,
    number: u32,
    avoid: &[PickedEndpoint],
    body: RequestBody,
) -> (BoxFuture<'static, (u32, Tried)>, PickedEndpoint)
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let endpoint = PickedEndpoint::default();
    let mut request = copy(template, body);
    request.extensions_mut().insert(endpoint.clone());
    let avoid: Vec<_> = avoid.iter().filter_map(PickedEndpoint::get).collect();
    if !avoid.is_empty() {
        request.extensions_mut().insert(AvoidEndpoints(avoid));
    }
    let (shared, mut service) = (Arc::clone(shared), inner.clone());
    let future = Box::pin(async move {
        let tried = match service.ready().await {
            Ok(service) if number == 0 => shared.first_try(service, request).await,
            Ok(service) => shared.try_once(service, request).await,
            Err(error) => Tried {
                result: Err(error),
                picked: None,
            },
        };
        (number, tried)
    });
    (future, endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percentile_delay_needs_samples_and_follows_them() {
        let hedge = Hedge::new(&HedgePolicy {
            delay: HedgeDelay::Percentile(95.0),
            max_extra: 1,
        });
        for ms in 1..MIN_SAMPLES as u64 {
            hedge.record(Duration::from_millis(ms));
            assert_eq!(hedge.delay(), None);
        }
        hedge.record(Duration::from_millis(20));
        assert_eq!(hedge.delay(), Some(Duration::from_millis(19)));
        // 1000 answers of 1..=100 ms: the 95th percentile is 95 ms.
        for i in 0..WINDOW as u64 {
            hedge.record(Duration::from_millis(i % 100 + 1));
        }
        assert_eq!(hedge.delay(), Some(Duration::from_millis(95)));
        let fixed = Hedge::new(&HedgePolicy {
            delay: HedgeDelay::Fixed(Duration::from_millis(50)),
            max_extra: 1,
        });
        assert_eq!(fixed.delay(), Some(Duration::from_millis(50)));
    }
}
