//! The live request tap (`GET /tap` on the admin listener): every completed
//! request, offered to the streams that are open.
//!
//! Algorithm:
//! 1. Zero cost when nobody listens: the observe layer asks
//!    [`Tap::listening`] (one relaxed atomic load) before it captures or
//!    builds anything for the tap.
//! 2. While a stream is open, each completed request becomes one
//!    [`TapEvent`] (shared, built once); request and response headers are
//!    captured only while some stream asked for them (`headers=true`).
//! 3. Each stream's filter is applied, then its rate limit (a token bucket
//!    of `rate` events per second, burst `rate`), then the event is offered
//!    to its bounded queue with `try_send`: the request path never waits.
//!    An event refused by the limit or a full queue is counted as dropped;
//!    the stream reports the count (`Subscription::take_dropped`).
//! 4. At most `admin.tap.max_subscribers` streams; [`Tap::subscribe`]
//!    refuses more. A stream unsubscribes when its [`Subscription`] drops
//!    (the client went away).

pub mod event;
pub mod filter;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use http::HeaderName;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::TapConfig;

pub use event::TapEvent;
pub use filter::{Filter, TapQuery};

/// Events a stream's queue holds before more are dropped.
const QUEUE: usize = 256;

/// The process's tap: cheap to clone, shared by every listener's observe
/// layer and the admin listener.
#[derive(Clone)]
pub struct Tap(Arc<Hub>);

struct Hub {
    /// Streams open.
    listening: AtomicUsize,
    /// Streams open with `headers=true`.
    with_headers: AtomicUsize,
    subscribers: RwLock<Vec<Arc<Subscriber>>>,
    max_subscribers: usize,
    max_rate: u32,
    redact: Arc<[HeaderName]>,
}

struct Subscriber {
    filter: Filter,
    headers: bool,
    bucket: Mutex<TokenBucket>,
    dropped: AtomicU64,
    queue: mpsc::Sender<Arc<TapEvent>>,
}

/// Why a stream was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// `max_subscribers` streams are open already (or it is 0).
    Full { max: usize },
}

impl Tap {
    pub fn new(config: &TapConfig) -> Self {
        let redact = (config.redact_headers.iter())
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        Self(Arc::new(Hub {
            listening: AtomicUsize::new(0),
            with_headers: AtomicUsize::new(0),
            subscribers: RwLock::new(Vec::new()),
            max_subscribers: config.max_subscribers as usize,
            max_rate: config.max_events_per_second,
            redact,
        }))
    }

    /// Whether any stream is open: checked before anything is captured.
    pub fn listening(&self) -> bool {
        self.0.listening.load(Ordering::Relaxed) > 0
    }

    /// Whether any open stream wants headers.
    pub fn wants_headers(&self) -> bool {
        self.0.with_headers.load(Ordering::Relaxed) > 0
    }

    /// The header names redacted besides the always-redacted ones.
    pub fn redacted(&self) -> &[HeaderName] {
        &self.0.redact
    }

    /// The events per second a stream asking for `rate` gets.
    pub fn rate_for(&self, rate: Option<u32>) -> u32 {
        rate.map_or(self.0.max_rate, |rate| rate.min(self.0.max_rate))
    }

    /// Opens a stream for `query`, unless `max_subscribers` are open.
    pub fn subscribe(&self, query: &TapQuery) -> Result<Subscription, SubscribeError> {
        let hub = &self.0;
        let mut subscribers = hub.subscribers.write().unwrap_or_else(|e| e.into_inner());
        if subscribers.len() >= hub.max_subscribers {
            return Err(SubscribeError::Full {
                max: hub.max_subscribers,
            });
        }
        let (queue, events) = mpsc::channel(QUEUE);
        let subscriber = Arc::new(Subscriber {
            filter: query.filter.clone(),
            headers: query.headers,
            bucket: Mutex::new(TokenBucket::new(self.rate_for(query.rate))),
            dropped: AtomicU64::new(0),
            queue,
        });
        subscribers.push(Arc::clone(&subscriber));
        if query.headers {
            hub.with_headers.fetch_add(1, Ordering::Relaxed);
        }
        hub.listening.fetch_add(1, Ordering::Relaxed);
        Ok(Subscription {
            tap: self.clone(),
            subscriber,
            events,
        })
    }

    /// Offers a completed request to every open stream (never waits).
    pub fn publish(&self, event: TapEvent) {
        let event = Arc::new(event);
        let subscribers = self.0.subscribers.read().unwrap_or_else(|e| e.into_inner());
        for subscriber in subscribers.iter() {
            if !subscriber.filter.matches(&event) {
                continue;
            }
            let allowed = (subscriber.bucket.lock())
                .map(|mut bucket| bucket.take())
                .unwrap_or(false);
            if !allowed || subscriber.queue.try_send(Arc::clone(&event)).is_err() {
                subscriber.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One open stream; unsubscribes when dropped.
pub struct Subscription {
    tap: Tap,
    subscriber: Arc<Subscriber>,
    events: mpsc::Receiver<Arc<TapEvent>>,
}

impl Subscription {
    /// The next event for this stream.
    pub async fn next(&mut self) -> Option<Arc<TapEvent>> {
        self.events.recv().await
    }

    /// Events dropped (rate limit or full queue) since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.subscriber.dropped.swap(0, Ordering::Relaxed)
    }

    /// Whether this stream asked for headers.
    pub fn with_headers(&self) -> bool {
        self.subscriber.headers
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let hub = &self.tap.0;
        let mut subscribers = hub.subscribers.write().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|other| !Arc::ptr_eq(other, &self.subscriber));
        if self.subscriber.headers {
            hub.with_headers.fetch_sub(1, Ordering::Relaxed);
        }
        hub.listening.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `rate` tokens a second, at most `rate` saved up.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            refilled: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn event(upstream: &str, status: u16) -> TapEvent {
        TapEvent {
            time: 0.0,
            direction: "outbound",
            upstream: upstream.to_owned(),
            route: None,
            method: "GET".to_owned(),
            authority: "a".to_owned(),
            path: "/".to_owned(),
            status,
            grpc_status: None,
            duration: Duration::from_millis(1),
            bytes: 0,
            response_body: None,
            endpoint: None,
            retries: 0,
            trace_id: None,
            request_id: None,
            error: None,
            headers: None,
        }
    }

    fn config(max_subscribers: u32, rate: u32) -> TapConfig {
        TapConfig {
            max_subscribers,
            max_events_per_second: rate,
            redact_headers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn filters_rate_limits_counts_drops_and_caps_subscribers() {
        let tap = Tap::new(&config(2, 3));
        assert!(!tap.listening());
        let mut api = tap
            .subscribe(&TapQuery::parse("upstream=api").unwrap())
            .unwrap();
        let errors = tap
            .subscribe(&TapQuery::parse("status=5xx&headers=true").unwrap())
            .unwrap();
        assert!(tap.listening() && tap.wants_headers());
        assert_eq!(
            tap.subscribe(&TapQuery::parse("").unwrap()).err(),
            Some(SubscribeError::Full { max: 2 })
        );
        for _ in 0..5 {
            tap.publish(event("api", 200));
        }
        tap.publish(event("web", 200));
        for _ in 0..3 {
            assert_eq!(api.next().await.unwrap().upstream, "api");
        }
        // Burst 3: the other two were dropped by the rate limit.
        assert_eq!(api.take_dropped(), 2);
        assert_eq!(api.take_dropped(), 0);
        assert_eq!(errors.take_dropped(), 0);
        drop(errors);
        assert!(!tap.wants_headers());
        drop(api);
        assert!(!tap.listening());
        assert!(tap.subscribe(&TapQuery::parse("").unwrap()).is_ok());
    }

    #[test]
    fn rate_asked_is_capped_by_the_configured_maximum() {
        let tap = Tap::new(&config(4, 100));
        assert_eq!(tap.rate_for(None), 100);
        assert_eq!(tap.rate_for(Some(5)), 5);
        assert_eq!(tap.rate_for(Some(1000)), 100);
    }
}
