//! The idle HTTP/1.1 connections of one endpoint: a LIFO stack (the most
//! recently used connection is the warmest and the least likely to have been
//! closed by the peer). A connection goes back only after its response body
//! was read to the end; at most [`MAX_IDLE_PER_ENDPOINT`] are kept.
//!
//! An idle connection is closed once it has been idle for `timeouts.idle`,
//! or a little before the `Keep-Alive: timeout=N` its server announced
//! ([`KEEP_ALIVE_MARGIN`] earlier), when that comes first: reusing it just as
//! the server closes it would lose the request's first bytes. A request that
//! still meets such a race is resent by `endpoint.rs` when that is safe.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hyper::client::conn::http1;
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::clock;
use crate::http1::Connection;

/// Idle HTTP/1.1 connections kept per endpoint; more are closed when returned.
pub const MAX_IDLE_PER_ENDPOINT: usize = 512;

/// How long before a server's announced keep-alive timeout remora stops
/// reusing the connection.
pub const KEEP_ALIVE_MARGIN: Duration = Duration::from_secs(1);

/// hyper's HTTP/1.1 client, for requests that upgrade their connection.
pub type H1Sender = http1::SendRequest<RequestBody>;

struct IdleConnection {
    connection: Connection,
    /// Not reused from this instant on.
    expires: Instant,
}

/// The idle HTTP/1.1 connections of one endpoint.
#[derive(Default)]
pub struct Http1Idle {
    idle: Mutex<Vec<IdleConnection>>,
}

impl Http1Idle {
    /// An idle connection the server has not closed, if there is one.
    pub fn checkout(&self) -> Option<Connection> {
        loop {
            let mut idle = self.lock().pop()?;
            if idle.expires > clock::now() && idle.connection.is_open() {
                return Some(idle.connection);
            }
        }
    }

    /// Returns a connection whose last response was read to the end; it may
    /// be reused for `idle`, or until shortly before the keep-alive timeout
    /// its server announced ends.
    pub fn checkin(&self, connection: Connection, idle: Duration) {
        let usable = match connection.keep_alive() {
            Some(announced) => idle.min(announced.saturating_sub(KEEP_ALIVE_MARGIN)),
            None => idle,
        };
        if usable.is_zero() {
            return;
        }
        let mut connections = self.lock();
        if connections.len() < MAX_IDLE_PER_ENDPOINT {
            connections.push(IdleConnection {
                connection,
                expires: clock::now() + usable,
            });
        }
    }

    /// Closes connections that may no longer be reused.
    pub fn close_expired(&self) {
        let now = Instant::now();
        self.lock()
            .retain_mut(|idle| idle.expires > now && idle.connection.is_open());
    }

    fn lock(&self) -> MutexGuard<'_, Vec<IdleConnection>> {
        // A panic while holding this lock leaves only a Vec of idle
        // connections behind, which is always consistent: recover it.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncWriteExt, DuplexStream, duplex};

    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    /// A connection, and the server's end of it.
    fn connection() -> (Connection, DuplexStream) {
        let (ours, servers) = duplex(64);
        (Connection::new(ours), servers)
    }

    fn count_reusable(pool: &Http1Idle) -> usize {
        std::iter::from_fn(|| pool.checkout()).count()
    }

    #[tokio::test]
    async fn the_most_recently_returned_connection_goes_out_first() {
        let pool = Http1Idle::default();
        let (older, mut older_server) = connection();
        let (newer, _newer_server) = connection();
        pool.checkin(older, IDLE);
        pool.checkin(newer, IDLE);
        let mut first = pool.checkout().unwrap();
        // Bytes nobody asked for: the older connection may not be reused.
        older_server.write_all(b"HTTP/1.1 408\r\n").await.unwrap();
        assert!(first.is_open(), "the newer connection came out first");
        assert!(
            pool.checkout().is_none(),
            "the older one was closed, not handed out"
        );
    }

    #[tokio::test]
    async fn a_connection_its_server_closed_while_idle_is_not_handed_out() {
        let pool = Http1Idle::default();
        let (kept, _kept_server) = connection();
        let (closed, closed_server) = connection();
        pool.checkin(kept, IDLE);
        pool.checkin(closed, IDLE);
        drop(closed_server);
        assert!(pool.checkout().is_some());
        assert!(pool.checkout().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_expires_after_the_idle_period() {
        let pool = Http1Idle::default();
        let (first, _first_server) = connection();
        let (second, _second_server) = connection();
        let (unusable, _unusable_server) = connection();
        pool.checkin(first, Duration::from_millis(100));
        pool.checkin(second, Duration::from_millis(300));
        pool.checkin(unusable, Duration::ZERO);
        tokio::time::advance(Duration::from_millis(200)).await;
        pool.close_expired();
        assert_eq!(
            pool.lock().len(),
            1,
            "the first expired, the unusable was never kept"
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(pool.checkout().is_none(), "the second expired too");
    }

    #[tokio::test]
    async fn at_most_max_idle_connections_are_kept() {
        let pool = Http1Idle::default();
        let mut servers = Vec::new();
        for _ in 0..MAX_IDLE_PER_ENDPOINT + 10 {
            let (connection, server) = connection();
            servers.push(server);
            pool.checkin(connection, IDLE);
        }
        assert_eq!(count_reusable(&pool), MAX_IDLE_PER_ENDPOINT);
    }

    /// Four threads take connections out and put them back at once: each
    /// finds one every time (8 idle, at most 4 out), and none is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_checkouts_and_checkins_lose_no_connection() {
        let pool = Arc::new(Http1Idle::default());
        let mut servers = Vec::new();
        for _ in 0..8 {
            let (connection, server) = connection();
            servers.push(server);
            pool.checkin(connection, IDLE);
        }
        let workers = (0..4).map(|_| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                let mut taken = 0;
                for _ in 0..2_000 {
                    if let Some(mut connection) = pool.checkout() {
                        assert!(connection.is_open());
                        taken += 1;
                        tokio::task::yield_now().await;
                        pool.checkin(connection, IDLE);
                    }
                }
                taken
            })
        });
        let mut taken = 0;
        for worker in workers.collect::<Vec<_>>() {
            taken += worker.await.unwrap();
        }
        assert_eq!(taken, 8_000);
        assert_eq!(count_reusable(&pool), 8);
    }
}
