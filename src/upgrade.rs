//! HTTP/1.1 protocol upgrades: which are tunnelled, and the tunnel.
//!
//! A listener tunnels only the protocols its `upgrades` lists (WebSocket by
//! default, never an HTTP/2 upgrade such as `h2c`: the streams in the tunnel
//! would skip every policy of the stack). [`Upgrades::screen`] takes every
//! other protocol out of a request's `Upgrade` offer and, when none is left,
//! the upgrade itself (`Upgrade`, `HTTP2-Settings`), so that the request goes
//! on as a plain one (hop-by-hop stripping then removes its `Connection`), as
//! Envoy does with `h2c`.
//!
//! Once the upstream answers `101`, [`tunnel`] copies bytes both ways until
//! either side closes or no byte has moved for the upstream's idle timeout,
//! holding the client connection's [`ConnectionHold`] meanwhile: a tunnel
//! counts under the listener's `limits.max_connections` until it ends.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http::header::{self, HeaderName, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::config::UpgradeProtocol;
use crate::idle::{Activity, IdleIo};

/// Carries the client's HTTP/2 settings in an `h2c` upgrade (RFC 7540 §3.2.1).
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// The protocols a listener's requests may upgrade to.
#[derive(Debug, Clone)]
pub struct Upgrades(Arc<[UpgradeProtocol]>);

impl Upgrades {
    pub fn new(allowed: &[UpgradeProtocol]) -> Self {
        Self(allowed.into())
    }

    /// Leaves only allowed protocols in `Upgrade` (names compared without
    /// case or version); with none left, removes it (and the request's
    /// [`ConnectionHold`]). `HTTP2-Settings` goes from every request that
    /// offers an upgrade.
    pub fn screen<B>(&self, mut request: Request<B>) -> Request<B> {
        let headers = request.headers_mut();
        if !headers.contains_key(header::UPGRADE) {
            return request;
        }
        headers.remove(HTTP2_SETTINGS);
        let kept: Vec<&str> = (headers.get_all(header::UPGRADE).iter())
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|protocol| self.allows(protocol))
            .collect();
        let kept = kept.join(", ");
        headers.remove(header::UPGRADE);
        match HeaderValue::from_str(&kept) {
            Ok(kept) if !kept.is_empty() => {
                headers.insert(header::UPGRADE, kept);
            }
            // A plain request now: its connection ends with hyper's.
            _ => {
                request.extensions_mut().remove::<ConnectionHold>();
            }
        }
        request
    }

    /// True when `protocol` (`name` or `name/version`) is allowed.
    fn allows(&self, protocol: &str) -> bool {
        let name = protocol.split('/').next().unwrap_or_default();
        (self.0.iter()).any(|allowed| allowed.as_str().eq_ignore_ascii_case(name))
    }
}

/// What keeps an accepted client connection counted (its place under the
/// listener's `limits.max_connections`, the open-connections gauge, the
/// drain's count) for as long as its socket is in use. A request that may
/// upgrade carries it (request extension) so that its tunnel holds it after
/// hyper is done with the connection.
#[derive(Clone)]
pub struct ConnectionHold {
    _held: Arc<dyn Send + Sync>,
}

impl ConnectionHold {
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self {
            _held: Arc::new(held),
        }
    }
}

/// Copies bytes both ways between an upgraded client and upstream
/// connection until either side closes, or closes both once no byte has
/// moved either way for `idle`. Holds `hold` until then.
pub fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: Duration,
    hold: Option<ConnectionHold>,
) {
    crate::task::spawn(async move {
        let _hold = hold;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "protocol upgrade failed");
                return;
            }
        };
        let activity = Activity::new();
        let mut client = IdleIo::new(TokioIo::new(client), Arc::clone(&activity));
        let mut upstream = IdleIo::new(TokioIo::new(upstream), Arc::clone(&activity));
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(error) = copied {
                    tracing::debug!(%error, "upgraded connection ended with an error");
                }
            }
            () = crate::idle::expired(&activity, idle) => {
                tracing::debug!(?idle, "upgraded connection idle: closed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screened(allowed: &[&str], upgrade: &[&str]) -> Request<()> {
        let allowed: Vec<UpgradeProtocol> = allowed.iter().map(|p| p.parse().unwrap()).collect();
        let mut request = Request::builder()
            .header(header::CONNECTION, "Upgrade, HTTP2-Settings")
            .header(HTTP2_SETTINGS, "AAMAAABkAARAAAAAAAIAAAAA");
        for value in upgrade {
            request = request.header(header::UPGRADE, *value);
        }
        Upgrades::new(&allowed).screen(request.body(()).unwrap())
    }

    #[test]
    fn h2c_and_unlisted_protocols_are_taken_out_of_the_offer() {
        let request = screened(&["websocket"], &["h2c"]);
        assert!(request.headers().get(header::UPGRADE).is_none());
        assert!(request.headers().get(HTTP2_SETTINGS).is_none());

        let request = screened(&["websocket"], &["h2c, WebSocket/13", "x-custom"]);
        assert_eq!(request.headers()[header::UPGRADE], "WebSocket/13");

        let request = screened(&["websocket", "x-custom"], &["X-Custom"]);
        assert_eq!(request.headers()[header::UPGRADE], "X-Custom");

        let request = screened(&[], &["websocket"]);
        assert!(request.headers().get(header::UPGRADE).is_none());
    }

    #[test]
    fn a_declined_upgrade_lets_go_of_the_connection_hold() {
        let held = Arc::new(());
        let upgrades = Upgrades::new(&["websocket".parse().unwrap()]);
        for (offer, kept) in [("websocket", true), ("h2c", false)] {
            let mut request = Request::builder()
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, offer)
                .body(())
                .unwrap();
            request
                .extensions_mut()
                .insert(ConnectionHold::new(Arc::clone(&held)));
            let request = upgrades.screen(request);
            assert_eq!(request.extensions().get::<ConnectionHold>().is_some(), kept);
            assert_eq!(Arc::strong_count(&held), if kept { 2 } else { 1 });
        }
    }
}
