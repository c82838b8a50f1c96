//! The HTTP/2 connections of one endpoint: as many as the load needs, each
//! carrying at most as many streams as the peer allows.
//!
//! # Algorithm
//!
//! A request [checks out](Http2Pool::checkout) a stream:
//!
//! 1. Connections that closed, received GOAWAY, outlived
//!    `max_connection_age` or carried `max_requests_per_connection` are
//!    *retired*: they leave the pool, take no new stream, and close once
//!    their last stream ends (the pool drops its handle; h2 then closes the
//!    connection when its streams are done). A connection that meets GOAWAY
//!    or closes under a stream leaves at once, not at the next checkout.
//! 2. The oldest connection with a free stream takes the request: open
//!    streams (ours, counted until the response body ends) below the peer's
//!    `SETTINGS_MAX_CONCURRENT_STREAMS` as the connection reads it now, so a
//!    changed SETTINGS mid-connection counts from then on. A peer that has
//!    announced no limit is held to [`UNANNOUNCED_STREAM_LIMIT`], the least
//!    RFC 9113 §6.5.2 recommends. Until a connection is *confirmed* (its
//!    task read the peer's first SETTINGS, and told the pool), its limit is
//!    the one the endpoint's last confirmed connection had, or *one stream*
//!    for the endpoint's first: a peer with a small limit (nginx's
//!    `http2_max_concurrent_streams 16`, a gRPC server's 2) would otherwise
//!    refuse most of the streams sent on each new connection, or — as h2
//!    holds back streams past a limit it has just read — have them wait
//!    inside that one connection, outside the pool's queue, while others
//!    could open. Filling the oldest first leaves extra connections idle when load falls,
//!    so they close after `timeouts.idle`. A request being resent after a
//!    GOAWAY or a refusal takes the *newest confirmed* one instead
//!    ([`Purpose::Resend`]), or a new connection, where its stream is the
//!    first: peers retire their oldest connections first (request-count and
//!    age limits), and the request should meet neither a second GOAWAY nor a
//!    second refusal. When no new connection may open, it takes the newest
//!    unconfirmed one with a free stream rather than wait for a confirmation
//!    that may never come.
//! 3. Otherwise, while fewer than `max_connections_per_endpoint` are open or
//!    opening, the request opens a new one ([`Checkout::Open`]).
//! 4. Otherwise it waits, with at most `max_pending_requests` others, for at
//!    most `pending_timeout`, and is woken when a stream ends or a connection
//!    opens, is confirmed or retires. Past either bound: 503 `overloaded`. A
//!    connection being opened or awaiting its confirmation is counted on for
//!    the streams it is expected to take (the learned limit, or
//!    [`UNANNOUNCED_STREAM_LIMIT`] before any), so that a burst at start
//!    waits one round trip for the peer's SETTINGS rather than open a
//!    connection per request.
//!
//! This is how Envoy's and HAProxy's HTTP/2 pools behave; hyper's own
//! client keeps one connection and queues streams above the limit inside it.
//!
//! Over 500 lines: one job — connections, streams, open slots and waiters
//! share the pool's one lock and state — and this documentation.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use metrics::Gauge;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock;
use crate::config::ConnectionPool;
use crate::error::ProxyError;
use crate::http2::connection::{Events, UNANNOUNCED_STREAM_LIMIT, peer_stream_limit};

use super::lock;

/// One HTTP/2 connection of the pool.
pub struct Http2Connection {
    /// Cloned for each stream. While the pool holds it, h2 keeps the
    /// connection open even with no streams.
    sender: SendRequest<Bytes>,
    /// Streams checked out and not yet ended.
    streams: AtomicUsize,
    /// Streams ever checked out.
    requests: AtomicU64,
    opened: Instant,
    /// When `streams` last fell to 0.
    idle_since: Mutex<Instant>,
    /// Takes no new streams (GOAWAY, closed, too old, too many requests).
    retired: AtomicBool,
    /// Its GOAWAY with an error code has been counted against the endpoint.
    goaway_counted: AtomicBool,
    /// Closed because a keepalive PING went unanswered for this long.
    silent: OnceLock<Duration>,
}

impl Http2Connection {
    /// The peer's first SETTINGS have been read.
    fn is_confirmed(&self) -> bool {
        peer_stream_limit(&self.sender).is_some()
    }

    /// The peer's limit once confirmed; before, the `learned` limit of the
    /// endpoint's last confirmed connection, or one stream when there is
    /// none yet (0).
    fn stream_limit(&self, learned: usize) -> usize {
        match peer_stream_limit(&self.sender) {
            Some(limit) => limit,
            None => learned.max(1),
        }
    }

    /// Streams it is expected to take that it does not carry yet, while it
    /// awaits its confirmation (0 once confirmed).
    fn expected_streams(&self, expected: usize) -> usize {
        if self.is_confirmed() {
            return 0;
        }
        expected.saturating_sub(self.streams.load(Ordering::Relaxed))
    }

    /// Takes no new streams from now on.
    fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// Retires the connection when it may take no more streams; true when it
    /// is retired.
    fn retire_if_spent(&self, limits: &ConnectionPool, now: Instant) -> bool {
        let too_old = limits
            .max_connection_age
            .is_some_and(|age| now.saturating_duration_since(self.opened) >= age);
        let too_many = limits
            .max_requests_per_connection
            .is_some_and(|most| self.requests.load(Ordering::Relaxed) >= most);
        if too_old || too_many {
            self.retire();
        }
        self.retired.load(Ordering::Relaxed)
    }

    fn has_free_stream(&self, learned: usize) -> bool {
        self.streams.load(Ordering::Relaxed) < self.stream_limit(learned)
    }

    fn is_idle_since(&self, before: Instant) -> bool {
        self.streams.load(Ordering::Relaxed) == 0 && *lock(&self.idle_since) <= before
    }
}

/// A checked-out stream: its connection's open-stream count until dropped
/// (when the response body ends, or the request fails).
pub struct Http2Stream {
    pool: Arc<Shared>,
    connection: Arc<Http2Connection>,
}

impl Http2Stream {
    /// The connection received GOAWAY or closed under this stream: it
    /// leaves the pool (its streams below the GOAWAY finish), no new streams
    /// go to it, and waiting requests look again.
    pub fn retire_connection(&self) {
        self.pool.drop_connection(&self.connection);
    }

    /// True for the first stream to report its connection's GOAWAY with an
    /// error code: one event, counted against the endpoint once however
    /// many streams it cut off.
    pub fn first_to_report_goaway(&self) -> bool {
        !self.connection.goaway_counted.swap(true, Ordering::Relaxed)
    }

    /// The keepalive timeout, when the connection was closed because a PING
    /// went unanswered for that long: why the stream failed.
    pub fn connection_silent(&self) -> Option<Duration> {
        self.connection.silent.get().copied()
    }
}

impl Drop for Http2Stream {
    fn drop(&mut self) {
        if self.connection.streams.fetch_sub(1, Ordering::Relaxed) == 1 {
            *lock(&self.connection.idle_since) = clock::now();
        }
        self.pool.changed.notify_one();
    }
}

/// What a stream is checked out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A request's first send: the oldest connection with a free stream.
    First,
    /// A request sent again: the newest confirmed connection with a free
    /// stream, else a new connection.
    Resend,
}

/// What a checkout got.
pub enum Checkout {
    /// A stream on an open connection, and the handle to send its request with.
    Stream(Http2Stream, SendRequest<Bytes>),
    /// The right to open a new connection; give it to [`OpenSlot::opened`].
    Open(OpenSlot),
}

/// A connection being opened; its place in the pool is given back if it is
/// dropped (the connect or handshake failed).
pub struct OpenSlot {
    pool: Arc<Shared>,
    done: bool,
}

impl OpenSlot {
    /// Adds the connection the slot was for and takes its first stream (and
    /// a sender for it); the connection's task calls [`ConnectionEnd::ended`]
    /// when it is over.
    pub fn opened(
        mut self,
        sender: SendRequest<Bytes>,
    ) -> (Http2Stream, SendRequest<Bytes>, ConnectionEnd) {
        let now = Instant::now();
        let connection = Arc::new(Http2Connection {
            sender: sender.clone(),
            streams: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            opened: now,
            idle_since: Mutex::new(now),
            retired: AtomicBool::new(false),
            goaway_counted: AtomicBool::new(false),
            silent: OnceLock::new(),
        });
        let stream = {
            let mut state = self.pool.lock();
            state.opening -= 1;
            state.connections.push(Arc::clone(&connection));
            self.pool.gauges.connections.increment(1.0);
            count_stream(&self.pool, &connection)
        };
        self.done = true;
        self.pool.changed.notify_waiters();
        let end = ConnectionEnd {
            pool: Arc::downgrade(&self.pool),
            connection: Arc::downgrade(&connection),
        };
        (stream, sender, end)
    }

    /// The connection could not be opened: the requests that were waiting
    /// for it fail with the same error.
    pub fn failed(mut self, addr: SocketAddr, error: &ProxyError) {
        let mut state = self.pool.lock();
        state.opening -= 1;
        state.failed_opens += 1;
        state.last_failure = Some(copy_open_error(addr, error));
        drop(state);
        self.done = true;
        self.pool.changed.notify_waiters();
    }
}

/// Tells the pool that a connection's task has ended (closed, or GOAWAY
/// seen and its last stream ended). Weak, so it keeps neither the pool nor
/// the connection alive.
pub struct ConnectionEnd {
    pool: Weak<Shared>,
    connection: Weak<Http2Connection>,
}

impl Events for ConnectionEnd {
    /// True while the connection has streams checked out.
    fn busy(&self) -> bool {
        (self.connection.upgrade())
            .is_some_and(|connection| connection.streams.load(Ordering::Relaxed) > 0)
    }

    /// The connection is confirmed: it is held to the peer's own stream
    /// limit, which the endpoint's next connections assume until they are
    /// confirmed, and the requests waiting for it look again.
    fn settings_received(&self) {
        let (Some(pool), Some(connection)) = (self.pool.upgrade(), self.connection.upgrade())
        else {
            return;
        };
        if let Some(limit) = peer_stream_limit(&connection.sender) {
            pool.learned_stream_limit.store(limit, Ordering::Relaxed);
        }
        pool.changed.notify_waiters();
    }

    /// The connection is being closed: a keepalive PING went unanswered
    /// for `timeout`. Its streams fail next, and say so.
    fn silent(&self, timeout: Duration) {
        if let Some(connection) = self.connection.upgrade() {
            let _ = connection.silent.set(timeout);
        }
    }
}

impl ConnectionEnd {
    pub fn ended(self) {
        match (self.pool.upgrade(), self.connection.upgrade()) {
            (Some(pool), Some(connection)) => pool.drop_connection(&connection),
            (Some(pool), None) => pool.changed.notify_waiters(),
            (None, Some(connection)) => connection.retire(),
            (None, None) => {}
        }
    }
}

impl Drop for OpenSlot {
    /// Abandoned (its request went away): waiting requests look again.
    fn drop(&mut self) {
        if !self.done {
            self.pool.lock().opening -= 1;
            self.pool.changed.notify_waiters();
        }
    }
}

/// Gauges of one upstream's pools (summed over its endpoints).
#[derive(Clone)]
pub struct PoolGauges {
    /// Open HTTP/2 connections in pools.
    pub connections: Gauge,
    /// Requests waiting for a stream.
    pub pending: Gauge,
}

/// The HTTP/2 connections of one endpoint.
pub struct Http2Pool {
    shared: Arc<Shared>,
}

struct Shared {
    limits: ConnectionPool,
    state: Mutex<PoolState>,
    /// Woken when a stream ends, a connection opens, fails to open or retires.
    changed: Notify,
    gauges: PoolGauges,
    /// The stream limit of the last connection confirmed (0: none yet).
    learned_stream_limit: AtomicUsize,
}

#[derive(Default)]
struct PoolState {
    connections: Vec<Arc<Http2Connection>>,
    /// Connections being opened now.
    opening: usize,
    /// Requests waiting for a stream now.
    pending: usize,
    /// Of those, the ones counting on a connection being opened or
    /// awaiting its confirmation.
    awaiting_open: usize,
    /// Opens that failed so far, and the last one's error.
    failed_opens: u64,
    last_failure: Option<ProxyError>,
}

/// A place in the wait queue, given back when dropped.
struct Pending<'a> {
    shared: &'a Shared,
    /// Waiting for a connection being opened: the count of failed opens
    /// when the wait began (a later failure fails this request too).
    awaiting_open: Option<u64>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.pending -= 1;
        if self.awaiting_open.is_some() {
            state.awaiting_open -= 1;
        }
        self.shared.gauges.pending.decrement(1.0);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        lock(&self.state)
    }

    /// The right to open one more connection, when fewer than
    /// `max_connections_per_endpoint` are open or opening.
    fn reserve(self: &Arc<Self>, state: &mut PoolState) -> Option<OpenSlot> {
        self.has_room(state).then(|| {
            state.opening += 1;
            OpenSlot {
                pool: Arc::clone(self),
                done: false,
            }
        })
    }

    /// Retires `connection` and takes it out of the pool at once (not at
    /// the next checkout), so the gauge counts only connections that take
    /// streams; waiting requests look again.
    fn drop_connection(&self, connection: &Http2Connection) {
        connection.retire();
        let mut state = self.lock();
        self.remove(&mut state, |pooled| std::ptr::eq(pooled, connection));
        drop(state);
        self.changed.notify_waiters();
    }

    /// True while fewer than `max_connections_per_endpoint` are open or opening.
    fn has_room(&self, state: &PoolState) -> bool {
        let max = self.limits.max_connections_per_endpoint as usize;
        state.connections.len() + state.opening < max
    }

    /// Takes the connections for which `leave` is true out of the pool.
    fn remove(&self, state: &mut PoolState, mut leave: impl FnMut(&Http2Connection) -> bool) {
        let before = state.connections.len();
        state.connections.retain(|connection| !leave(connection));
        let removed = before - state.connections.len();
        if removed > 0 {
            self.gauges.connections.decrement(removed as f64);
        }
    }
}

impl Drop for Shared {
    /// The endpoint is gone: its connections leave the gauge (they close as
    /// their last streams end).
    fn drop(&mut self) {
        let open = lock(&self.state).connections.len();
        self.gauges.connections.decrement(open as f64);
    }
}

impl Http2Pool {
    pub fn new(limits: ConnectionPool, gauges: PoolGauges) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                state: Mutex::new(PoolState::default()),
                changed: Notify::new(),
                gauges,
                learned_stream_limit: AtomicUsize::new(0),
            }),
        }
    }

    /// A stream on a connection with room for it, the right to open a new
    /// connection, or — after waiting as the module doc says — `Overloaded`.
    pub async fn checkout(
        &self,
        addr: SocketAddr,
        purpose: Purpose,
    ) -> Result<Checkout, ProxyError> {
        let shared = &self.shared;
        let limits = &shared.limits;
        let mut queued: Option<Pending<'_>> = None;
        let mut deadline = None;
        loop {
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            {
                let mut state = shared.lock();
                if let Some(pending) = &mut queued
                    && let Some(seen) = pending.awaiting_open.take()
                {
                    state.awaiting_open -= 1;
                    if state.failed_opens > seen
                        && let Some(failure) = &state.last_failure
                    {
                        return Err(copy_open_error(addr, failure));
                    }
                }
                let now = clock::now();
                shared.remove(&mut state, |connection| {
                    connection.retire_if_spent(limits, now)
                });
                let learned = shared.learned_stream_limit.load(Ordering::Relaxed);
                let free = |connection: &&Arc<Http2Connection>| connection.has_free_stream(learned);
                let newest_confirmed = || {
                    (state.connections.iter().rev())
                        .filter(|connection| connection.is_confirmed())
                        .find(free)
                };
                let found = match purpose {
                    Purpose::First => state.connections.iter().find(free),
                    // With no room for a new connection, an unconfirmed one
                    // rather than a wait that may last `pending_timeout`.
                    Purpose::Resend => newest_confirmed().or_else(|| {
                        let full = !shared.has_room(&state) && state.opening == 0;
                        full.then(|| state.connections.iter().rev().find(free))?
                    }),
                };
                if let Some(connection) = found {
                    let mut sender = connection.sender.clone();
                    // h2 takes no stream once the connection received
                    // GOAWAY or failed (its task may go on, finishing the
                    // streams below the GOAWAY): such a connection retires now.
                    let waker = std::task::Waker::noop();
                    if let Poll::Ready(Err(_)) = sender.poll_ready(&mut Context::from_waker(waker))
                    {
                        connection.retire();
                        continue;
                    }
                    let stream = count_stream(shared, connection);
                    return Ok(Checkout::Stream(stream, sender));
                }
                // Connections being opened or confirmed are counted on for
                // the streams they are expected to take.
                let expected = if learned == 0 {
                    UNANNOUNCED_STREAM_LIMIT
                } else {
                    learned
                };
                let to_come = state.opening * expected
                    + (state.connections.iter())
                        .map(|connection| connection.expected_streams(expected))
                        .sum::<usize>();
                let counting_on_open = state.awaiting_open < to_come;
                if !counting_on_open && let Some(slot) = shared.reserve(&mut state) {
                    return Ok(Checkout::Open(slot));
                }
                let pending = match &mut queued {
                    Some(pending) => pending,
                    None => {
                        if state.pending >= limits.max_pending_requests as usize {
                            return Err(overloaded(addr, limits));
                        }
                        state.pending += 1;
                        shared.gauges.pending.increment(1.0);
                        queued.insert(Pending {
                            shared,
                            awaiting_open: None,
                        })
                    }
                };
                if counting_on_open {
                    state.awaiting_open += 1;
                    pending.awaiting_open = Some(state.failed_opens);
                }
                // Registered before the lock is let go: no wake-up is missed.
                changed.as_mut().enable();
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + limits.pending_timeout);
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(overloaded(addr, limits));
            }
        }
    }

    /// The right to add a connection opened for another reason (an HTTP/1.1
    /// request whose server chose `h2` by ALPN), when there is room for it.
    pub fn reserve(&self) -> Option<OpenSlot> {
        self.shared.reserve(&mut self.shared.lock())
    }

    /// Closes connections that have had no stream for longer than `idle`.
    pub fn close_idle(&self, idle: Duration) {
        let Some(before) = Instant::now().checked_sub(idle) else {
            return;
        };
        let mut state = self.shared.lock();
        (self.shared).remove(&mut state, |connection| connection.is_idle_since(before));
    }
}

/// Counts a new stream on `connection`.
fn count_stream(pool: &Arc<Shared>, connection: &Arc<Http2Connection>) -> Http2Stream {
    connection.streams.fetch_add(1, Ordering::Relaxed);
    connection.requests.fetch_add(1, Ordering::Relaxed);
    Http2Stream {
        pool: Arc::clone(pool),
        connection: Arc::clone(connection),
    }
}

/// The error of a failed open, again, for a request that waited on it.
fn copy_open_error(addr: SocketAddr, error: &ProxyError) -> ProxyError {
    let again = |source: &std::io::Error| std::io::Error::new(source.kind(), source.to_string());
    match error {
        ProxyError::ConnectTimeout { timeout, .. } => ProxyError::ConnectTimeout {
            addr,
            timeout: *timeout,
        },
        ProxyError::ConnectFailed { source, .. } => ProxyError::ConnectFailed {
            addr,
            source: again(source),
        },
        ProxyError::TlsHandshake { source, .. } => ProxyError::TlsHandshake {
            addr,
            source: again(source),
        },
        other => ProxyError::ConnectFailed {
            addr,
            source: std::io::Error::other(other.to_string()),
        },
    }
}

fn overloaded(addr: SocketAddr, limits: &ConnectionPool) -> ProxyError {
    ProxyError::PoolExhausted {
        addr,
        connections: limits.max_connections_per_endpoint,
        pending: limits.max_pending_requests,
        wait: limits.pending_timeout,
    }
}
