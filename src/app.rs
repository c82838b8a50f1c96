//! Wires a configuration into a running proxy: binds every listener, builds
//! each listener's stack, starts the admin listener, the Consul discovery
//! watches and the Consul registration, and deregisters then drains on
//! shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::admin::{self, AdminState, Readiness};
use crate::client::ClientSettings;
use crate::config::{Config, Discovery, ServiceProtocol, Timeouts, UpstreamProtocol};
use crate::consul;
use crate::discovery::consul::{Watches, query_for};
use crate::discovery::dns::DnsDiscoverer;
use crate::drain::{Drain, DrainController};
use crate::endpoint::WeightedAddr;
use crate::registration::{self, Registrar};
use crate::server::{self, Handler, HttpProtocol};
use crate::stack;
use crate::telemetry::metrics::{self, ConnectionMetrics};
use crate::telemetry::spans::SpanExporter;
use crate::upstream::{Direction, Upstream, UpstreamSettings};

/// The addresses remora actually bound (a configured port 0 becomes a real one).
#[derive(Debug, Clone)]
pub struct BoundAddrs {
    pub admin: SocketAddr,
    pub inbound: Option<SocketAddr>,
    /// Upstream name → its outbound listener.
    pub upstreams: Vec<(String, SocketAddr)>,
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
    pub bound: BoundAddrs,
    readiness: Arc<Readiness>,
    drain: DrainController,
    drain_timeout: Duration,
    registrar: Option<Registrar>,
}

impl Running {
    /// Drains: `/ready` turns 503, the Consul registrations are removed (so
    /// peers stop sending), listeners stop accepting, in-flight work gets up
    /// to the drain timeout. Returns the number of connections that were
    /// still open when the drain ended.
    pub async fn shutdown(self) -> usize {
        self.readiness.set_draining();
        if let Some(registrar) = self.registrar {
            registrar.deregister().await;
        }
        tracing::info!(timeout = ?self.drain_timeout, "draining");
        let left = self.drain.drain(self.drain_timeout).await;
        if left == 0 {
            tracing::info!("drained");
        } else {
            tracing::warn!(
                connections = left,
                "drain timeout reached; closing what is left"
            );
        }
        left
    }
}

/// One listener to start: where, and what it does.
struct Listener {
    name: String,
    direction: Direction,
    listener: TcpListener,
    handler: Handler,
}

/// Binds everything the configuration asks for and starts serving.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let metrics_handle = metrics::install()?;
    let access_log = if config.logging.access_log {
        config.logging.access_log_sample
    } else {
        0.0
    };
    let spans = (config.tracing.otlp.as_ref())
        .map(|otlp| SpanExporter::start(otlp, &config.service.name))
        .transpose()?;
    let mut upstreams = Vec::new();
    let mut listeners = Vec::new();
    let mut discoverers = Vec::new();

    if let Some(inbound) = &config.inbound {
        let service = &config.service;
        let port = service
            .port
            .context("service.port is required for inbound")?;
        let protocol = match service.protocol {
            ServiceProtocol::Http => UpstreamProtocol::Http,
            ServiceProtocol::Http2 => UpstreamProtocol::Http2,
            ServiceProtocol::Grpc => UpstreamProtocol::Grpc,
            ServiceProtocol::Tcp => UpstreamProtocol::Tcp,
        };
        let settings = UpstreamSettings {
            name: service.name.clone(),
            direction: Direction::Inbound,
            protocol,
            policy: Default::default(),
            hash_on: None,
            client: client_settings(&Timeouts::default()),
            circuit_breaker: None,
            outlier_detection: None,
            rate_limit: inbound.rate_limit.clone(),
        };
        let app = Arc::new(Upstream::new(
            settings,
            &[WeightedAddr {
                addr: SocketAddr::new(service.address, port),
                weight: 1,
            }],
        ));
        upstreams.push(Arc::clone(&app));
        // Other sidecars may speak either HTTP version to an HTTP service.
        let listen_protocol = match protocol {
            UpstreamProtocol::Http | UpstreamProtocol::Auto => Some(HttpProtocol::Auto),
            UpstreamProtocol::Http2 | UpstreamProtocol::Grpc => Some(HttpProtocol::Http2),
            UpstreamProtocol::Tcp => None,
        };
        listeners.push(Listener {
            name: "inbound".into(),
            direction: Direction::Inbound,
            listener: bind(inbound.listen, "inbound").await?,
            handler: handler(listen_protocol, app, || {
                stack::inbound(
                    Arc::clone(&upstreams[0]),
                    inbound,
                    &config.tracing,
                    access_log,
                    spans.clone(),
                )
            }),
        });
    }

    let mut watches = Watches::default();
    for upstream in &config.upstreams {
        // A Consul-discovered upstream starts empty (so not ready) until
        // its watch's first answer.
        let endpoints: Vec<WeightedAddr> = match &upstream.discovery {
            Discovery::Static(endpoints) => endpoints
                .iter()
                .map(|endpoint| WeightedAddr {
                    addr: endpoint.address,
                    weight: endpoint.weight,
                })
                .collect(),
            Discovery::Consul(_) | Discovery::Dns(_) => Vec::new(),
        };
        let settings = UpstreamSettings {
            name: upstream.name.clone(),
            direction: Direction::Outbound,
            protocol: upstream.protocol,
            policy: upstream.load_balancing.policy,
            hash_on: upstream.load_balancing.hash_on.clone(),
            client: client_settings(&upstream.timeouts),
            circuit_breaker: upstream.circuit_breaker.clone(),
            outlier_detection: upstream.outlier_detection.clone(),
            rate_limit: upstream.rate_limit.clone(),
        };
        let target = Arc::new(Upstream::new(settings, &endpoints));
        upstreams.push(Arc::clone(&target));
        if let Discovery::Consul(discovery) = &upstream.discovery {
            watches.add(query_for(discovery, &config.consul), Arc::clone(&target));
        }
        if let Discovery::Dns(dns) = &upstream.discovery {
            let discoverer = DnsDiscoverer::new(Arc::clone(&target), dns)
                .with_context(|| format!("upstream {}: DNS discovery", upstream.name))?;
            discoverers.push(discoverer);
        }
        let listen_protocol = match upstream.protocol {
            UpstreamProtocol::Http => Some(HttpProtocol::Http1),
            UpstreamProtocol::Http2 | UpstreamProtocol::Grpc => Some(HttpProtocol::Http2),
            UpstreamProtocol::Auto => Some(HttpProtocol::Auto),
            UpstreamProtocol::Tcp => None,
        };
        let label = format!("upstream {}", upstream.name);
        listeners.push(Listener {
            name: upstream.name.clone(),
            direction: Direction::Outbound,
            listener: bind(upstream.listen, &label).await?,
            handler: handler(listen_protocol, Arc::clone(&target), || {
                stack::outbound(
                    Arc::clone(&target),
                    upstream,
                    &config.tracing,
                    access_log,
                    spans.clone(),
                )
            }),
        });
    }

    let consul_client = if watches.is_empty() && !config.service.register {
        None
    } else {
        Some(consul::Client::from_config(&config.consul)?)
    };

    let admin_listener = bind(config.admin.listen, "admin").await?;
    let readiness = Arc::new(Readiness::new(upstreams.clone()));
    let admin_state = Arc::new(AdminState {
        metrics: metrics_handle,
        readiness: Arc::clone(&readiness),
        config_json: serde_json::to_string_pretty(config)?,
        upstreams: upstreams.clone(),
    });
    let bound = BoundAddrs {
        admin: admin_listener.local_addr()?,
        inbound: listeners
            .iter()
            .find(|l| l.direction == Direction::Inbound)
            .map(|l| l.listener.local_addr())
            .transpose()?,
        upstreams: listeners
            .iter()
            .filter(|l| l.direction == Direction::Outbound)
            .map(|l| Ok((l.name.clone(), l.listener.local_addr()?)))
            .collect::<std::io::Result<_>>()?,
    };
    tracing::info!(addr = %bound.admin, "admin listening");
    tokio::spawn(admin::serve(admin_listener, admin_state));

    let drain = DrainController::new();
    let registrar = match &consul_client {
        Some(client) if config.service.register => Some(Registrar::spawn(
            client.clone(),
            registration::services(config, bound.inbound),
            config.consul.sync_interval,
        )),
        _ => None,
    };
    if let Some(client) = consul_client
        && !watches.is_empty()
    {
        watches.spawn(client, &drain.watch());
    }
    for listener in listeners {
        let addr = listener.listener.local_addr()?;
        tracing::info!(listener = %listener.name, direction = listener.direction.as_str(), %addr, "listening");
        let connection_metrics = ConnectionMetrics::new(listener.direction, &listener.name);
        tokio::spawn(server::accept_loop(
            listener.listener,
            listener.handler,
            connection_metrics,
            drain.watch(),
        ));
    }
    for discoverer in discoverers {
        discoverer.spawn(drain.watch());
    }
    spawn_idle_sweeper(upstreams, drain.watch());
    readiness.set_listening();
    Ok(Running {
        bound,
        readiness,
        drain,
        drain_timeout: config.runtime.drain_timeout,
        registrar,
    })
}

fn handler(
    protocol: Option<HttpProtocol>,
    upstream: Arc<Upstream>,
    http_stack: impl FnOnce() -> stack::HttpService,
) -> Handler {
    match protocol {
        Some(protocol) => Handler::Http(
            protocol,
            http_stack(),
            upstream.settings.client.idle_timeout,
        ),
        None => Handler::Tcp(upstream),
    }
}

fn client_settings(timeouts: &Timeouts) -> ClientSettings {
    ClientSettings {
        connect_timeout: timeouts.connect,
        idle_timeout: timeouts.idle,
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what} listener"))
}

/// Closes pooled upstream connections that stayed idle past their timeout.
fn spawn_idle_sweeper(upstreams: Vec<Arc<Upstream>>, mut drain: Drain) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = ticks.tick() => upstreams.iter().for_each(|u| u.close_expired_idle()),
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
