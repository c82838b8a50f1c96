//! Wires a configuration into a running proxy: binds every listener, builds
//! each listener's stack, starts the admin listener, the Consul discovery
//! watches and the Consul registration, and deregisters then drains on
//! shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::admin::{self, AdminState, Readiness};
use crate::client::ClientSettings;
use crate::config::{
    Config, Discovery, ListenerLimits, ServiceProtocol, Timeouts, TlsConfig, TlsSource,
    UpstreamConfig, UpstreamProtocol,
};
use crate::consul;
use crate::discovery::consul::{Watches, query_for};
use crate::discovery::dns::DnsDiscoverer;
use crate::drain::{Drain, DrainController};
use crate::endpoint::WeightedAddr;
use crate::registration::{self, Registrar};
use crate::routing::backends::Backends;
use crate::server::{self, Handler, HttpProtocol};
use crate::stack;
use crate::telemetry::metrics::{self, ConnectionMetrics};
use crate::telemetry::spans::SpanExporter;
use crate::tls::authorization::Authorizer;
use crate::tls::files::PemFiles;
use crate::tls::inbound::InboundTls;
use crate::tls::outbound::UpstreamTls;
use crate::tls::{Alpn, ExpectedIdentity, MeshTls};
use crate::transparent::outbound::TransparentOutbound;
use crate::transparent::routes::{Route, RouteTable};
use crate::upstream::{Direction, Upstream, UpstreamSettings};

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
    tls: Option<Arc<InboundTls>>,
    limits: ListenerLimits,
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
    let mesh_tls = config.tls.as_ref().map(start_tls).transpose()?;
    let authorizer = (config.tls.as_ref())
        .map(|tls| Arc::new(Authorizer::new(&tls.authorization, &config.service.name)));

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
            client: client_settings(&Timeouts::default(), None),
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
        let tls = match &mesh_tls {
            Some(mesh) => {
                let (alpn, connection_authorizer) = match listen_protocol {
                    Some(HttpProtocol::Http2) => (Alpn::Http2, None),
                    Some(_) => (Alpn::Http, None),
                    None => (Alpn::None, authorizer.clone()),
                };
                let tls = InboundTls::new(mesh, alpn, &service.name, connection_authorizer)
                    .context("inbound TLS")?;
                Some(Arc::new(tls))
            }
            None => None,
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
                    authorizer.clone(),
                )
            }),
            tls,
            limits: inbound.limits,
        });
    }

    let mut watches = Watches::default();
    let mut targets = Vec::new();
    let mut routes = Vec::new();
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
            client: client_settings(
                &upstream.timeouts,
                upstream_tls(upstream, config, mesh_tls.as_ref())?,
            ),
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
        targets.push(target);
    }

    // Routing backends may name any upstream, so they are built once all exist.
    let by_name = |name: &str| targets.iter().find(|t| t.name() == name).cloned();
    let mut backend_upstreams = Vec::new();
    for (upstream, target) in config.upstreams.iter().zip(&targets) {
        let backends = Backends::build(target, upstream, &by_name);
        backend_upstreams.extend(
            (backends.iter())
                .filter(|(_, backend)| !targets.iter().any(|t| Arc::ptr_eq(t, backend)))
                .map(|(_, backend)| Arc::downgrade(backend)),
        );
        let listen_protocol = match upstream.protocol {
            UpstreamProtocol::Http => Some(HttpProtocol::Http1),
            UpstreamProtocol::Http2 | UpstreamProtocol::Grpc => Some(HttpProtocol::Http2),
            UpstreamProtocol::Auto => Some(HttpProtocol::Auto),
            UpstreamProtocol::Tcp => None,
        };
        let handler = handler(listen_protocol, Arc::clone(target), || {
            stack::outbound(
                &backends,
                upstream,
                &config.tracing,
                access_log,
                spans.clone(),
            )
        });
        if !upstream.hosts.is_empty() || !upstream.addresses.is_empty() {
            routes.push(Route {
                hosts: upstream.hosts.clone(),
                addresses: upstream.addresses.clone(),
                upstream: Arc::clone(target),
                http: match &handler {
                    Handler::Http(_, service, _) => Some(service.clone()),
                    _ => None,
                },
            });
        }
        if let Some(listen) = upstream.listen {
            let label = format!("upstream {}", upstream.name);
            listeners.push(Listener {
                name: upstream.name.clone(),
                direction: Direction::Outbound,
                listener: bind(listen, &label).await?,
                handler,
                tls: None,
                limits: upstream.limits,
            });
        }
    }
    let transparent = match &config.transparent {
        Some(transparent) => Some((
            bind(transparent.outbound_listen, "transparent outbound").await?,
            Arc::new(TransparentOutbound::new(
                transparent,
                RouteTable::new(routes),
            )),
        )),
        None => None,
    };

    let consul_tls = (config.tls.as_ref())
        .is_some_and(|tls| tls.source == TlsSource::Consul || tls.authorization.intentions);
    let consul_client = if watches.is_empty() && !consul_tls && !config.service.register {
        None
    } else {
        Some(Arc::new(consul::Client::from_config(&config.consul)?))
    };

    let admin_listener = bind(config.admin.listen, "admin").await?;
    let readiness = Arc::new(Readiness::new(upstreams.clone(), mesh_tls.clone()));
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
        transparent: (transparent.as_ref())
            .map(|(listener, _)| listener.local_addr())
            .transpose()?,
    };
    if let Some((listener, outbound)) = transparent {
        listeners.push(Listener {
            name: "transparent".into(),
            direction: Direction::Outbound,
            listener,
            handler: Handler::Transparent(outbound),
            tls: None,
            limits: ListenerLimits::default(),
        });
    }
    tracing::info!(addr = %bound.admin, "admin listening");
    if !bound.admin.ip().is_loopback() {
        tracing::warn!(
            addr = %bound.admin,
            "ADMIN LISTENER IS NOT ON LOOPBACK: /config, /metrics and the other admin endpoints \
             are reachable from the network without authentication; bind admin.listen to \
             127.0.0.1 unless this is intended"
        );
    }
    tokio::spawn(admin::serve(admin_listener, admin_state));

    let drain = DrainController::new();
    let registrar = match &consul_client {
        Some(client) if config.service.register => Some(Registrar::spawn(
            Arc::clone(client),
            registration::services(config, bound.inbound),
            config.consul.sync_interval,
        )),
        _ => None,
    };
    if let (Some(tls), Some(mesh)) = (&config.tls, &mesh_tls) {
        spawn_tls_updates(
            tls,
            config,
            mesh,
            authorizer.as_deref(),
            consul_client.as_ref(),
            &drain.watch(),
        );
    }
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
            listener.tls,
            listener.limits,
            connection_metrics,
            drain.watch(),
        ));
    }
    for discoverer in discoverers {
        discoverer.spawn(drain.watch());
    }
    let swept = (upstreams.iter().map(Arc::downgrade))
        .chain(backend_upstreams)
        .collect();
    spawn_idle_sweeper(swept, drain.watch());
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

fn client_settings(timeouts: &Timeouts, tls: Option<Arc<UpstreamTls>>) -> ClientSettings {
    ClientSettings {
        connect_timeout: timeouts.connect,
        idle_timeout: timeouts.idle,
        tls,
    }
}

/// The mesh TLS state; with `source: files`, the files are loaded now (a
/// problem stops the start).
fn start_tls(tls: &TlsConfig) -> anyhow::Result<Arc<MeshTls>> {
    let mesh = MeshTls::new(tls.handshake_timeout);
    if let Some(files) = pem_files(tls) {
        files.load(&mesh).context("tls")?;
    }
    Ok(mesh)
}

fn pem_files(tls: &TlsConfig) -> Option<PemFiles> {
    match (&tls.source, &tls.cert, &tls.key, &tls.ca) {
        (TlsSource::Files, Some(cert), Some(key), Some(ca)) => Some(PemFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        }),
        _ => None,
    }
}

/// Starts what keeps the TLS material and intentions current: the file
/// reloader, or the Consul Connect CA watches; the intentions watch.
fn spawn_tls_updates(
    tls: &TlsConfig,
    config: &Config,
    mesh: &Arc<MeshTls>,
    authorizer: Option<&Authorizer>,
    consul: Option<&Arc<consul::Client>>,
    drain: &Drain,
) {
    if let Some(files) = pem_files(tls) {
        files.spawn_reloader(Arc::clone(mesh), tls.reload_interval, drain.clone());
    }
    let Some(consul) = consul else {
        return;
    };
    if tls.source == TlsSource::Consul {
        let service = tls
            .service
            .clone()
            .unwrap_or_else(|| config.service.name.clone());
        crate::tls::consul::spawn_ca_watches(Arc::clone(consul), service, Arc::clone(mesh), drain);
    }
    if let Some(intentions) = authorizer.and_then(Authorizer::intentions) {
        crate::tls::consul::spawn_intentions_watch(
            Arc::clone(consul),
            config.service.name.clone(),
            Arc::clone(intentions),
            drain,
        );
    }
}

/// The mTLS origination of an upstream: on when `upstreams[].tls.enabled`
/// says so, by default for Consul `connect: true` discovery; the expected
/// identity is `tls.identity`, else the Consul service, else the upstream name.
fn upstream_tls(
    upstream: &UpstreamConfig,
    config: &Config,
    mesh: Option<&Arc<MeshTls>>,
) -> anyhow::Result<Option<Arc<UpstreamTls>>> {
    let consul = match &upstream.discovery {
        Discovery::Consul(consul) => Some(consul),
        Discovery::Static(_) | Discovery::Dns(_) => None,
    };
    let settings = upstream.tls.clone().unwrap_or_default();
    let enabled = settings
        .enabled
        .unwrap_or_else(|| consul.is_some_and(|c| c.connect));
    let Some(mesh) = mesh.filter(|_| enabled) else {
        return Ok(None);
    };
    let service = (settings.identity.as_deref())
        .or(consul.map(|c| c.service.as_str()))
        .unwrap_or(&upstream.name);
    let datacenter = consul
        .and_then(|c| c.datacenter.as_deref())
        .or(config.consul.datacenter.as_deref());
    let expected = ExpectedIdentity::from_config(service, datacenter);
    let tls = UpstreamTls::new(mesh, expected, &upstream.name)
        .with_context(|| format!("upstream {}: TLS", upstream.name))?;
    Ok(Some(Arc::new(tls)))
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what} listener"))
}

/// Closes pooled upstream connections that stayed idle past their timeout.
/// Held weakly: routing backends go away with the stack that uses them.
fn spawn_idle_sweeper(upstreams: Vec<Weak<Upstream>>, mut drain: Drain) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = ticks.tick() => (upstreams.iter())
                    .filter_map(Weak::upgrade)
                    .for_each(|upstream| upstream.close_expired_idle()),
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
