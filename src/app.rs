//! Wires a configuration into a running proxy: starts the admin listener,
//! hands the listeners, upstreams and discovery to `live` (which also moves
//! them to each reloaded configuration), starts the Consul and etcd
//! registrations and the configuration watch, and deregisters then drains
//! on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::admin::{self, AdminState, Readiness};
use crate::config::Config;
use crate::consul;
use crate::drain::{Drain, DrainController};
use crate::etcd;
use crate::live::{self, ListenerAddr, ListenerRole, LiveProxy, MeshSecurity};
use crate::registration::{self, EtcdRegistrar, Registrar};
use crate::reload::{self, Reloader, Source};
use crate::telemetry::sinks::RequestSinks;
use crate::telemetry::spans::{SpanExporter, SpanFlush};
use crate::telemetry::tap::Tap;
use crate::telemetry::{metrics, recorder};
use crate::upstream::UpstreamSet;

/// The addresses remora actually bound (a configured port 0 becomes a real one).
#[derive(Debug, Clone)]
pub struct BoundAddrs {
    pub admin: SocketAddr,
    pub inbound: Option<SocketAddr>,
    /// Upstream name → its outbound listener.
    pub upstreams: Vec<(String, SocketAddr)>,
    /// The transparent outbound listener.
    pub transparent: Option<SocketAddr>,
}

impl BoundAddrs {
    pub fn upstream(&self, name: &str) -> Option<SocketAddr> {
        self.upstreams
            .iter()
            .find(|(upstream, _)| upstream == name)
            .map(|(_, addr)| *addr)
    }
}

/// A started proxy.
pub struct Running {
    /// The addresses bound at start (see [`Running::current_bound`] after a reload).
    pub bound: BoundAddrs,
    readiness: Arc<Readiness>,
    reloader: Reloader,
    /// Stops the tasks that live as long as the process (idle sweeper, config watch).
    background: DrainController,
    registrar: Option<Registrar>,
    etcd_registrar: Option<EtcdRegistrar>,
    /// Exports the last spans at the end of the drain.
    span_flush: Option<SpanFlush>,
}

impl Running {
    /// Drains: `/ready` turns 503, the Consul and etcd registrations are
    /// removed (so peers stop sending), listeners stop accepting, in-flight work gets up
    /// to the drain timeout; then the spans still queued are exported. Returns the number of connections that were
    /// still open when the drain ended.
    pub async fn shutdown(self) -> usize {
        self.readiness.set_draining();
        self.background.signal();
        let consul = async {
            if let Some(registrar) = self.registrar {
                registrar.deregister().await;
            }
        };
        let etcd = async {
            if let Some(registrar) = self.etcd_registrar {
                registrar.deregister().await;
            }
        };
        tokio::join!(consul, etcd);
        let live = self.reloader.live();
        let drain_timeout = live.drain_timeout().await;
        tracing::info!(timeout = ?drain_timeout, "draining");
        let left = live.shutdown(drain_timeout).await;
        if left == 0 {
            tracing::info!("drained");
        } else {
            tracing::warn!(
                connections = left,
                "drain timeout reached; closing what is left"
            );
        }
        if let Some(span_flush) = self.span_flush {
            span_flush.flush().await;
        }
        left
    }

    /// Applies configurations from `source` as they change, until shutdown.
    pub fn watch_config(&self, source: Source) {
        tokio::spawn(reload::watch(
            source,
            self.reloader.clone(),
            self.background.watch(),
        ));
    }

    /// Applies `config` now, as a reload from any source would.
    pub async fn reload(&self, config: Config) -> bool {
        self.reloader.reload(config).await
    }

    /// The addresses bound now.
    pub async fn current_bound(&self) -> BoundAddrs {
        bound_addrs(self.bound.admin, &self.reloader.live().listeners().await)
    }
}

/// Binds everything the configuration asks for and starts serving.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let metrics_handle = recorder::install()?;
    let (spans, span_flush) = match &config.tracing.otlp {
        Some(otlp) => {
            let (exporter, flush) = SpanExporter::start(otlp, &config.service.name)?;
            (Some(exporter), Some(flush))
        }
        None => (None, None),
    };
    let admin_listener = live::bind(config.admin.listen, "admin")?;
    let admin_addr = admin_listener.local_addr()?;
    if !admin_addr.ip().is_loopback() {
        tracing::warn!(
            addr = %admin_addr,
            "ADMIN LISTENER IS NOT ON LOOPBACK: /config, /metrics and the other admin endpoints \
             are reachable from the network without authentication; bind admin.listen to \
             127.0.0.1 unless this is intended"
        );
    }

    let mesh = config.tls.as_ref().map(MeshSecurity::start).transpose()?;

    let upstreams = Arc::new(UpstreamSet::default());
    let tap = Tap::new(&config.admin.tap);
    let sinks = RequestSinks {
        spans,
        tap: tap.clone(),
    };
    let live = Arc::new(LiveProxy::new(Arc::clone(&upstreams), sinks, mesh.clone()));
    live.apply(config.clone()).await?;

    let tls = mesh.as_ref().map(|mesh| Arc::clone(mesh.material()));
    let readiness = Arc::new(Readiness::new(Arc::clone(&upstreams), tls));
    let admin_state = Arc::new(AdminState {
        metrics: metrics_handle,
        readiness: Arc::clone(&readiness),
        config_json: ArcSwap::from_pointee(crate::config::shown(config)?),
        upstreams: Arc::clone(&upstreams),
        backends: live.backend_upstreams(),
        tap,
    });
    tracing::info!(addr = %admin_addr, "admin listening");
    tokio::spawn(admin::serve(
        admin_listener,
        Arc::clone(&admin_state),
        config.admin.clone(),
    ));

    // Registration and the mesh TLS watches share one client of the
    // start-time `consul` section (both are fixed); discovery has its own,
    // which `live` replaces when a reload changes that section.
    // With an `etcd` section and no `consul` one, the registration is etcd's
    // only.
    let mesh_uses_consul = mesh.as_ref().is_some_and(MeshSecurity::uses_consul);
    let register_in_consul = config.service.register && config.consul_is_the_registry();
    let consul_client = if mesh_uses_consul || register_in_consul {
        Some(Arc::new(consul::Client::from_config(&config.consul)?))
    } else {
        None
    };
    let bound = bound_addrs(admin_addr, &live.listeners().await);
    let registrar = match &consul_client {
        Some(client) if register_in_consul => Some(Registrar::spawn(
            Arc::clone(client),
            registration::services(config, bound.inbound),
            config.consul.sync_interval,
        )),
        _ => None,
    };
    let etcd_registrar = match &config.etcd {
        Some(section) if config.service.register => Some(EtcdRegistrar::spawn(
            Arc::new(etcd::Client::from_config(section)?),
            config.service.name.clone(),
            registration::etcd::instance(config, section, bound.inbound),
            section.lease_ttl,
        )),
        _ => None,
    };
    let background = DrainController::new();
    if let Some(mesh) = &mesh {
        mesh.spawn_updates(config, consul_client.as_ref(), &background.watch());
    }
    spawn_idle_sweeper(Arc::clone(&live), background.watch());
    readiness.set_listening();
    metrics::register_config_reloads();
    Ok(Running {
        bound,
        readiness,
        reloader: Reloader::new(live, admin_state),
        background,
        registrar,
        etcd_registrar,
        span_flush,
    })
}

fn bound_addrs(admin: SocketAddr, listeners: &[ListenerAddr]) -> BoundAddrs {
    let of = |role| (listeners.iter()).filter(move |l: &&ListenerAddr| l.role == role);
    BoundAddrs {
        admin,
        inbound: of(ListenerRole::Inbound).next().map(|l| l.addr),
        upstreams: of(ListenerRole::Upstream)
            .map(|l| (l.name.clone(), l.addr))
            .collect(),
        transparent: of(ListenerRole::Transparent).next().map(|l| l.addr),
    }
}

/// Closes pooled upstream connections that stayed idle past their timeout,
/// checked every second: one is closed at most a second late.
fn spawn_idle_sweeper(live: Arc<LiveProxy>, mut drain: Drain) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = ticks.tick() => live.close_expired_idle(),
                () = drain.signaled() => return,
            }
        }
    });
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
