//! `service.register: true`: the instance registered for as long as remora
//! runs — in etcd when there is an `etcd` section (see `etcd`), and with
//! Consul unless there is an `etcd` section and no `consul` one. Here, the
//! Consul side: the application and its sidecar registered with the local
//! Consul agent, Consul-Connect style, so other sidecars find this one through
//! `/v1/health/connect/<service>` and plain clients the application through
//! `/v1/health/service/<service>`.
//!
//! * The application: `Name` `service.name`, `ID` `service.id` (default
//!   `<name>-<hostname>`), its tags, meta, address and port, and
//!   `service.check` (`http` is a path on the application, `tcp` a
//!   `host:port`; interval, timeout, `deregister_after` →
//!   `DeregisterCriticalServiceAfter`).
//! * The sidecar, when `inbound` is configured: `Kind: connect-proxy`,
//!   `Name` `<name>-sidecar-proxy`, `ID` `<id>-sidecar-proxy`, the port the
//!   inbound listener really bound, the inbound IP as address (empty — the
//!   node's — for a wildcard listener), the application's tags and meta (as
//!   Consul's `sidecar_service` inherits them), `Proxy.Destination*` naming
//!   the application, a TCP check on the inbound listener and an alias check
//!   of the application, as Consul's own sidecar defaults have.
//!
//! Fail static: a registration that fails (agent down, 403 for a bad token)
//! never stops the proxy; it is retried with exponential backoff. Every
//! `consul.sync_interval` each service is read back (`GET
//! /v1/agent/service/:id`); a 404 means the agent lost it (an agent restart
//! forgets services registered over the API) and it is registered again.
//! Logs once per state change (registered, lost, failing, recovered);
//! `remora_consul_registrations_total{service,result}` counts attempts and
//! `remora_consul_registered{service}` says what the agent has now.
//! On shutdown both are deregistered before the drain starts, so peers stop
//! sending while in-flight work finishes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::backoff::Pacer;
use crate::config::{CheckConfig, Config};
use crate::consul::Client;
use crate::consul::agent::{AgentCheck, ProxyDestination, ServiceRegistration, go_duration};
use crate::telemetry::metrics::{self, Registry};

pub use etcd::EtcdRegistrar;

pub mod etcd;

/// Longest the deregistrations may hold up a shutdown.
pub(crate) const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval of the sidecar's TCP check when the application has no check.
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// The application's registration, and the sidecar's when `inbound` (bound
/// at `inbound`) is configured.
pub fn services(config: &Config, inbound: Option<SocketAddr>) -> Vec<ServiceRegistration> {
    let service = &config.service;
    let id = service_id(config);
    let port = service.port.unwrap_or_default();
    let address = service.address.to_string();
    let tags = service.tags.clone();
    let meta = service.meta.clone();
    let deregister_after = service
        .check
        .as_ref()
        .and_then(|check| check.deregister_after)
        .map(go_duration);
    let app = ServiceRegistration {
        id: id.clone(),
        name: service.name.clone(),
        kind: None,
        tags: tags.clone(),
        meta: meta.clone(),
        address: address.clone(),
        port,
        proxy: None,
        checks: service
            .check
            .iter()
            .map(|check| app_check(check, &service.name, &address, port))
            .collect(),
    };
    let Some(inbound) = inbound else {
        return vec![app];
    };
    let check_host = if inbound.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        inbound.ip().to_string()
    };
    let interval = service
        .check
        .as_ref()
        .map_or(DEFAULT_CHECK_INTERVAL, |check| check.interval);
    let sidecar = ServiceRegistration {
        id: format!("{id}-sidecar-proxy"),
        name: format!("{}-sidecar-proxy", service.name),
        kind: Some("connect-proxy".into()),
        tags,
        meta,
        address: if inbound.ip().is_unspecified() {
            String::new()
        } else {
            inbound.ip().to_string()
        },
        port: inbound.port(),
        proxy: Some(ProxyDestination {
            destination_service_name: service.name.clone(),
            destination_service_id: id.clone(),
            local_service_address: address,
            local_service_port: port,
        }),
        checks: vec![
            AgentCheck {
                name: "Connect Sidecar Listening".into(),
                http: None,
                tcp: Some(format!("{check_host}:{}", inbound.port())),
                alias_service: None,
                interval: Some(go_duration(interval)),
                timeout: None,
                deregister_critical_service_after: deregister_after,
            },
            AgentCheck {
                name: format!("Connect Sidecar Aliasing {id}"),
                http: None,
                tcp: None,
                alias_service: Some(id),
                interval: None,
                timeout: None,
                deregister_critical_service_after: None,
            },
        ],
    };
    vec![app, sidecar]
}

/// The instance ID: `service.id`, else `<name>-<hostname>`.
pub fn service_id(config: &Config) -> String {
    let service = &config.service;
    (service.id.clone()).unwrap_or_else(|| format!("{}-{}", service.name, hostname()))
}

/// `service.check` as an agent check: `http` is a path on the application.
fn app_check(check: &CheckConfig, name: &str, address: &str, port: u16) -> AgentCheck {
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_owned()
    };
    AgentCheck {
        name: format!("Service '{name}' check"),
        http: check
            .http
            .as_ref()
            .map(|path| format!("http://{host}:{port}/{}", path.trim_start_matches('/'))),
        tcp: check.tcp.clone(),
        alias_service: None,
        interval: Some(go_duration(check.interval)),
        timeout: Some(go_duration(check.timeout)),
        deregister_critical_service_after: check.deregister_after.map(go_duration),
    }
}

/// The host name (`/proc/sys/kernel/hostname`, else `HOSTNAME`), for the
/// default service ID.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Keeps services registered until [`deregister`](Self::deregister).
pub struct Registrar {
    client: Arc<Client>,
    ids: Vec<String>,
    task: JoinHandle<()>,
}

impl Registrar {
    /// Starts registering `services` (at once, then checked every
    /// `sync_interval`).
    pub fn spawn(
        client: Arc<Client>,
        services: Vec<ServiceRegistration>,
        sync_interval: Duration,
    ) -> Registrar {
        let ids = services.iter().map(|service| service.id.clone()).collect();
        for service in &services {
            metrics::register_registration(Registry::Consul, &service.name);
        }
        let task = tokio::spawn(keep_registered(
            Arc::clone(&client),
            services,
            sync_interval,
        ));
        Registrar { client, ids, task }
    }

    /// Stops keeping the services registered and deregisters them (at most
    /// [`DEREGISTER_TIMEOUT`]); failures are logged, the shutdown goes on.
    pub async fn deregister(self) {
        self.task.abort();
        let deregister_all = async {
            for id in &self.ids {
                match self.client.deregister_service(id).await {
                    Ok(()) => tracing::info!(id = %id, "deregistered from Consul"),
                    Err(error) => {
                        tracing::warn!(id = %id, %error, "Consul deregistration failed")
                    }
                }
            }
        };
        if tokio::time::timeout(DEREGISTER_TIMEOUT, deregister_all)
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?DEREGISTER_TIMEOUT, "Consul deregistration timed out");
        }
    }
}

/// Registers what is missing, then checks every `sync_interval`; backs off
/// while the agent fails.
async fn keep_registered(
    client: Arc<Client>,
    services: Vec<ServiceRegistration>,
    sync_interval: Duration,
) {
    let mut registered = vec![false; services.len()];
    let mut pacer = Pacer::new();
    let mut failing = false;
    loop {
        match sync(&client, &services, &mut registered).await {
            Ok(()) => {
                pacer.succeeded();
                if failing {
                    failing = false;
                    tracing::info!("Consul registration recovered");
                }
                tokio::time::sleep(sync_interval).await;
            }
            Err(error) => {
                if !failing {
                    failing = true;
                    tracing::error!(%error, "Consul registration failing; retrying with backoff, still serving");
                }
                tokio::time::sleep(pacer.failed()).await;
            }
        }
    }
}

/// One round: services not known to be registered are registered; the
/// others are read back, and registered again when the agent lost them.
async fn sync(
    client: &Client,
    services: &[ServiceRegistration],
    registered: &mut [bool],
) -> Result<(), crate::consul::ConsulError> {
    for (service, registered) in services.iter().zip(registered.iter_mut()) {
        if *registered {
            if client.service_registered(&service.id).await? {
                continue;
            }
            *registered = false;
            metrics::set_registered(Registry::Consul, &service.name, false);
            tracing::warn!(id = %service.id, "the Consul agent lost the registration; registering again");
        }
        let result = client.register_service(service).await;
        metrics::registration_attempt(Registry::Consul, &service.name, result.is_ok());
        result?;
        *registered = true;
        metrics::set_registered(Registry::Consul, &service.name, true);
        tracing::info!(id = %service.id, name = %service.name, port = service.port, "registered with Consul");
    }
    Ok(())
}
