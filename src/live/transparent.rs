//! The transparent listener across applies: its socket and accept loop
//! follow the `transparent` section like any listener's (see `listening`),
//! and its route table (hosts, addresses → upstream and its stack slot) is
//! built anew from the committed sites at every apply.

use std::sync::Arc;

use crate::config::{Config, TransparentConfig};
use crate::context::Direction;
use crate::server::Handler;
use crate::transparent::outbound::TransparentOutbound;
use crate::transparent::routes::{RouteTable, TransparentRoute};

use super::State;
use super::listening::{
    AcceptSource, HandlerSource, Listening, PlannedSocket, commit_socket, plan_socket,
    remove_listener,
};
use super::site::Site;
use super::swap::SwappableService;

/// The name of the transparent listener (logs, connection metrics).
pub(super) const TRANSPARENT: &str = "transparent";

/// The transparent listener.
pub(super) struct TransparentSite {
    pub(super) listening: Listening,
    outbound: Arc<TransparentOutbound>,
}

/// The transparent listener ready to commit.
pub(super) struct PlannedTransparent {
    socket: PlannedSocket,
    config: TransparentConfig,
}

pub(super) fn plan_transparent(
    state: &State,
    config: &TransparentConfig,
) -> anyhow::Result<PlannedTransparent> {
    let old = state.transparent.as_ref().map(|t| &t.listening);
    let handler = HandlerSource::Transparent(Box::new(config.clone()));
    let socket = plan_socket(
        state.listening(),
        old,
        config.outbound_listen,
        "transparent outbound",
        AcceptSource {
            handler,
            limits: config.limits,
        },
        true,
        || Ok(None),
    )?;
    Ok(PlannedTransparent {
        socket,
        config: config.clone(),
    })
}

/// Moves the transparent listener to the plan; its route table is built
/// from the committed sites before any connection can use it.
pub(super) fn commit_transparent(
    state: &mut State,
    planned: Option<PlannedTransparent>,
    config: &Config,
) {
    let old = state.transparent.take();
    let Some(planned) = planned else {
        if let Some(old) = old {
            remove_listener(
                &mut state.retired,
                old.listening,
                Direction::Outbound,
                TRANSPARENT,
            );
        }
        return;
    };
    let routes = route_table(&state.sites, config);
    let (old_listening, outbound) = match old {
        Some(running) if planned.socket.new_accept.is_none() => {
            running.outbound.set_routes(routes);
            (Some(running.listening), running.outbound)
        }
        old => (
            old.map(|old| old.listening),
            Arc::new(TransparentOutbound::new(&planned.config, routes)),
        ),
    };
    let listening = commit_socket(
        &mut state.retired,
        planned.socket,
        old_listening,
        || Handler::Transparent(Arc::clone(&outbound)),
        Direction::Outbound,
        TRANSPARENT,
    );
    state.transparent = Some(TransparentSite {
        listening,
        outbound,
    });
}

/// The upstreams the transparent listener routes to, in configuration order.
fn route_table(sites: &[Site], config: &Config) -> RouteTable {
    let routes = (config.upstreams.iter())
        .filter(|upstream| !upstream.hosts.is_empty() || !upstream.addresses.is_empty())
        .filter_map(|upstream| {
            let site = sites
                .iter()
                .find(|site| site.is(Direction::Outbound, &upstream.name))?;
            Some(TransparentRoute {
                hosts: upstream.hosts.clone(),
                addresses: upstream.addresses.clone(),
                upstream: Arc::clone(&site.upstream),
                http: (site.stack.as_ref()).map(|slot| SwappableService::boxed(Arc::clone(slot))),
            })
        });
    RouteTable::new(routes.collect())
}
