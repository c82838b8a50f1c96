//! A listener's socket and accept loop across applies: a listener keeps its
//! socket while its configured address is unchanged (or takes it over from
//! the listener that had that address), and its accept loop while the
//! handler's ingredients and the listener's `limits` ([`AcceptSource`]) are
//! unchanged; otherwise a new
//! accept loop takes over the socket and the old one is retired — signalled
//! to stop accepting, kept until its connections have drained.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpSocket};

use crate::config::{AuthorizationConfig, ListenerLimits, TransparentConfig};
use crate::context::Direction;
use crate::drain::DrainController;
use crate::http_connection::HttpProtocol;
use crate::server::{self, Handler};
use crate::telemetry::metrics::ConnectionMetrics;
use crate::tls::inbound::InboundTls;

/// A bound socket and the accept loop serving it.
pub(super) struct Listening {
    /// As configured (port 0 stays 0).
    pub(super) listen: SocketAddr,
    pub(super) socket: Arc<std::net::TcpListener>,
    pub(super) bound: SocketAddr,
    pub(super) source: AcceptSource,
    pub(super) accepting: DrainController,
}

/// What an accept loop was built from, besides the stack slot it serves
/// through (HTTP) or the upstream it holds (TCP).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct AcceptSource {
    pub(super) handler: HandlerSource,
    pub(super) limits: ListenerLimits,
}

/// What an accept loop's handler was built from.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum HandlerSource {
    Http {
        protocol: HttpProtocol,
        idle: Duration,
    },
    /// The authorization rules its TLS termination checks (inbound under mesh TLS).
    Tcp {
        authorization: Option<AuthorizationConfig>,
    },
    /// The `transparent` section.
    Transparent(Box<TransparentConfig>),
}

/// A listener's socket ready to commit.
pub(super) struct PlannedSocket {
    pub(super) listen: SocketAddr,
    pub(super) socket: Arc<std::net::TcpListener>,
    pub(super) bound: SocketAddr,
    /// The socket is new to this listener: logged as `listening`.
    pub(super) announce: bool,
    pub(super) source: AcceptSource,
    /// A new accept loop's listener (new socket, or a new handler on the
    /// old one) and its TLS termination.
    pub(super) new_accept: Option<(TcpListener, Option<Arc<InboundTls>>)>,
}

/// Plans `old`'s (or a new listener's) socket at `listen`: the same socket
/// while the address is unchanged (or taken over from the `running` listener
/// that had it), else a new one; a new accept loop unless socket and handler stay.
pub(super) fn plan_socket<'a>(
    running: impl Iterator<Item = &'a Listening>,
    old: Option<&'a Listening>,
    listen: SocketAddr,
    label: &str,
    source: AcceptSource,
    handler_kept: bool,
    tls: impl FnOnce() -> anyhow::Result<Option<Arc<InboundTls>>>,
) -> anyhow::Result<PlannedSocket> {
    let mut running = running;
    let reused_socket = old
        .filter(|listening| listening.listen == listen)
        .or_else(|| {
            (listen.port() != 0)
                .then(|| running.find(|listening| listening.listen == listen))
                .flatten()
        })
        .map(|listening| (Arc::clone(&listening.socket), listening.bound));
    let (socket, bound) = match reused_socket {
        Some(reused) => reused,
        None => {
            let listener = bind(listen, label)?;
            let bound = listener.local_addr()?;
            (Arc::new(listener.into_std()?), bound)
        }
    };
    let same_socket = old.is_some_and(|listening| Arc::ptr_eq(&listening.socket, &socket));
    let same_handler = handler_kept && old.is_some_and(|listening| listening.source == source);
    let new_accept = if same_socket && same_handler {
        None
    } else {
        let listener = socket
            .try_clone()
            .and_then(TcpListener::from_std)
            .with_context(|| format!("cannot share the {label} listener's socket"))?;
        Some((listener, tls()?))
    };
    Ok(PlannedSocket {
        listen,
        socket,
        bound,
        announce: !same_socket,
        source,
        new_accept,
    })
}

/// Starts the planned accept loop (retiring the old one) or keeps the old one.
pub(super) fn commit_socket(
    retired: &mut Vec<DrainController>,
    planned: PlannedSocket,
    old: Option<Listening>,
    handler: impl FnOnce() -> Handler,
    direction: Direction,
    name: &str,
) -> Listening {
    let accepting = match planned.new_accept {
        Some((listener, tls)) => {
            if planned.announce {
                tracing::info!(listener = %name, direction = direction.as_str(), addr = %planned.bound, "listening");
            }
            if let Some(old) = old {
                retire(retired, old.accepting);
            }
            let limits = planned.source.limits;
            spawn_accept_loop(listener, handler(), tls, limits, direction, name)
        }
        // `prepare` plans no new accept loop only for a listener that has one.
        None => old.expect("an existing listener's accept loop").accepting,
    };
    Listening {
        listen: planned.listen,
        socket: planned.socket,
        bound: planned.bound,
        source: planned.source,
        accepting,
    }
}

/// Closes a listener that is no longer configured; its connections drain.
pub(super) fn remove_listener(
    retired: &mut Vec<DrainController>,
    listening: Listening,
    direction: Direction,
    name: &str,
) {
    tracing::info!(listener = %name, direction = direction.as_str(), addr = %listening.bound, "listener removed; draining it");
    retire(retired, listening.accepting);
}

/// Signals an accept loop to drain; keeps it until its connections are gone.
fn retire(retired: &mut Vec<DrainController>, accepting: DrainController) {
    accepting.signal();
    retired.retain(|old| old.live() > 0);
    retired.push(accepting);
}

fn spawn_accept_loop(
    listener: TcpListener,
    handler: Handler,
    tls: Option<Arc<InboundTls>>,
    limits: ListenerLimits,
    direction: Direction,
    name: &str,
) -> DrainController {
    let accepting = DrainController::new();
    tokio::spawn(server::accept_loop(
        listener,
        handler,
        tls,
        limits,
        ConnectionMetrics::new(direction, name),
        accepting.watch(),
    ));
    accepting
}

/// Binds a listener; the error names it.
pub(crate) fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    listen(addr).with_context(|| format!("cannot listen on {addr} for the {what} listener"))
}

/// The most connections the kernel may queue for `accept`: it caps a listen
/// backlog at `net.core.somaxconn` (4096 by default since Linux 5.4), so
/// asking for the most gets that, as Envoy does. tokio's own `bind` asks for
/// 128: a burst of new connections larger than that, arriving while the
/// accept loop is busy, had the kernel drop their SYNs, and each of those
/// clients waited a second or more to try again.
const LISTEN_BACKLOG: u32 = i32::MAX as u32;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As tokio's `bind`: a restarted remora may bind while the last one's
    // connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
