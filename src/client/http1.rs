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
