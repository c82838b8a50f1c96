//! Request-context types every layer shares, defined below all of them: the
//! direction of a stack, and the request extensions through which layers
//! tell each other about a request (the client's address, its deadline, the
//! endpoint a try went to or should avoid, the one that answered, the
//! retries it took, the trace it belongs to). See `docs/request-path.md`
//! for who sets and reads each.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

/// Where traffic through a listener comes from and goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the mesh to the local application.
    Inbound,
    /// From the local application to an upstream service.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// The address of the client that sent a request (set by the server).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// When the whole request must be done, set by the timeout layer; the
/// upstream request carries what is left of it.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

/// Set on a request (by retries and hedges) to send it to another endpoint
/// than these (where its earlier tries went) when the upstream has another.
#[derive(Debug, Clone)]
pub struct AvoidEndpoints(pub Vec<SocketAddr>);

/// Set on a request (by retries with a per-try timeout) to learn which
/// endpoint the try went to, even when the try is abandoned before it answers.
/// Holds the last endpoint picked.
#[derive(Debug, Clone, Default)]
pub struct PickedEndpoint(Arc<Mutex<Option<SocketAddr>>>);

impl PickedEndpoint {
    pub fn get(&self) -> Option<SocketAddr> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set(&self, addr: SocketAddr) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(addr);
    }
}

/// A request extension through which an outer layer learns how many retries
/// the request took, whatever the outcome (the observe layer puts it on the
/// request's span; the retry layer fills it in).
#[derive(Clone, Default)]
pub struct RetryCount(Arc<AtomicU32>);

impl RetryCount {
    pub fn get(&self) -> u32 {
        self.0.load(Relaxed)
    }

    pub fn set(&self, retries: u32) {
        self.0.store(retries, Relaxed);
    }
}

/// The trace a request belongs to, with this hop's own span id: a request
/// extension the trace-context layer sets (joining the caller's trace from
/// its headers, or starting one) and the observe layer turns into a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// The caller's span, when the trace came from the caller.
    pub parent_id: Option<u64>,
    pub span_id: u64,
    pub sampled: bool,
}

/// The claims of a verified JWT, set on an inbound request by the JWT layer
/// (`middleware::jwt`) and read by the authorization rules and the access
/// log. Absent when the request carried no token.
#[derive(Debug, Clone)]
pub struct VerifiedClaims {
    /// The name of the provider that verified the token.
    pub provider: Arc<str>,
    /// The token's payload, as JSON.
    pub claims: Arc<serde_json::Map<String, serde_json::Value>>,
}
