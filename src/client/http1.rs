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

use http::HeaderMap;
use hyper::client::conn::http1;
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::clock;

/// Idle HTTP/1.1 connections kept per endpoint; more are closed when returned.
pub const MAX_IDLE_PER_ENDPOINT: usize = 512;

/// How long before a server's announced keep-alive timeout remora stops
/// reusing the connection.
pub const KEEP_ALIVE_MARGIN: Duration = Duration::from_secs(1);

pub type H1Sender = http1::SendRequest<RequestBody>;

struct IdleConnection {
    sender: H1Sender,
    /// Not reused from this instant on.
    expires: Instant,
}

/// The idle HTTP/1.1 connections of one endpoint.
#[derive(Default)]
pub struct Http1Idle {
    idle: Mutex<Vec<IdleConnection>>,
}

impl Http1Idle {
    /// An idle connection that is ready for a request, if there is one.
    pub async fn checkout(&self) -> Option<H1Sender> {
        loop {
            let idle = self.lock().pop()?;
            if idle.expires <= clock::now() || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            // Just after a body ended the connection task may not have marked the
            // connection ready yet; `ready` waits for that or reports it closed.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Returns a connection whose last response was read to the end; it may
    /// be reused for `idle`, or until shortly before `keep_alive` ends.
    pub fn checkin(&self, sender: H1Sender, idle: Duration, keep_alive: Option<Duration>) {
        if sender.is_closed() {
            return;
        }
        let usable = match keep_alive {
            Some(announced) => idle.min(announced.saturating_sub(KEEP_ALIVE_MARGIN)),
            None => idle,
        };
        if usable.is_zero() {
            return;
        }
        let mut connections = self.lock();
        if connections.len() < MAX_IDLE_PER_ENDPOINT {
            connections.push(IdleConnection {
                sender,
                expires: clock::now() + usable,
            });
        }
    }

    /// Closes connections that may no longer be reused.
    pub fn close_expired(&self) {
        let now = Instant::now();
        self.lock()
            .retain(|idle| idle.expires > now && !idle.sender.is_closed());
    }

    fn lock(&self) -> MutexGuard<'_, Vec<IdleConnection>> {
        // A panic while holding this lock leaves only a Vec of idle senders
        // behind, which is always consistent: recover it.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `sender`, unless its connection has closed; called just after a request
/// was handed to it, and before its response is awaited.
///
/// hyper hands a request to the connection's task through a tokio mpsc
/// channel. When that task ends just as the request goes in (the keep-alive
/// race), the channel can outlive the task with the request in it: the
/// receiver, dropped, drains only the slots already written, and the rest
/// waits for the last sender to go. hyper's callback for the response waits
/// with it, so the response would never come — the request stood still
/// until `timeouts.idle` (seen once against nginx). The task marks the
/// sender closed before it lets go of the channel, so a sender found closed
/// here is dropped: that frees the channel, and the request comes back
/// unsent (or its error, when the task had taken it after all).
pub fn unless_closed(sender: H1Sender) -> Option<H1Sender> {
    (!sender.is_closed()).then_some(sender)
}

/// The `timeout=N` of a response's `Keep-Alive` header (RFC 2068 §19.7.1.1,
/// as nginx, Apache and Node send it), when there is one.
pub fn keep_alive_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("keep-alive")?.to_str().ok()?;
    value.split(',').find_map(|parameter| {
        let (name, seconds) = parameter.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        seconds.trim().parse().ok().map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep_alive(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("keep-alive", value.parse().unwrap());
        keep_alive_timeout(&headers)
    }

    #[test]
    fn reads_the_announced_timeout() {
        assert_eq!(keep_alive("timeout=5"), Some(Duration::from_secs(5)));
        assert_eq!(
            keep_alive("timeout=5, max=100"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            keep_alive("max=100, Timeout = 2"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(keep_alive("max=100"), None);
        assert_eq!(keep_alive("timeout=soon"), None);
        assert_eq!(keep_alive_timeout(&HeaderMap::new()), None);
    }
}
