//! `service.register: true` with an `etcd` section: the instance is the key
//! `<etcd.prefix><service.name>/<service.id>`, holding the JSON of
//! `etcd::value::InstanceValue` — the inbound listener's address and bound
//! port when `inbound` is configured (peers' traffic then passes through
//! this sidecar; a wildcard listener advertises `service.address`), else
//! `service.address` and `service.port`; weight 1, `service.tags` and
//! `service.meta` — so other remoras (and go-kit style clients) find it
//! with `discovery: { etcd: { service } }`.
//!
//! The key is attached to a lease of `etcd.lease_ttl`, kept alive every
//! third of the TTL while remora runs, so a remora that is killed leaves
//! the key for at most one TTL. Each round also reads the key back and puts
//! it again when it is missing or changed (deleted by hand, a wiped etcd).
//! A lease etcd no longer knows (expired while etcd was unreachable for
//! longer than the TTL, or lost with etcd's data) is replaced: a new lease
//! and the key put again. Fail static: while etcd fails, remora keeps
//! serving and retries with jittered backoff; logs once per state change
//! (registered, lost, failing, recovered); `remora_etcd_registrations_total
//! {service,result}` counts the puts and `remora_etcd_registered{service}`
//! says whether the key is there as far as remora knows. On shutdown the
//! key is deleted and the lease revoked before the drain starts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::backoff::Pacer;
use crate::config::{Config, EtcdConfig};
use crate::etcd::value::InstanceValue;
use crate::etcd::{Client, EtcdError};
use crate::telemetry::metrics::{self, Registry};

use super::{DEREGISTER_TIMEOUT, service_id};

/// The key and value of this instance.
pub fn instance(
    config: &Config,
    etcd: &EtcdConfig,
    inbound: Option<std::net::SocketAddr>,
) -> (String, Vec<u8>) {
    let service = &config.service;
    let (address, port) = match inbound {
        Some(inbound) if !inbound.ip().is_unspecified() => (inbound.ip(), inbound.port()),
        Some(inbound) => (service.address, inbound.port()),
        None => (service.address, service.port.unwrap_or_default()),
    };
    let value = InstanceValue {
        address: address.to_string(),
        port,
        weight: 1,
        tags: service.tags.clone(),
        meta: service.meta.clone().into_iter().collect(),
    };
    let key = format!(
        "{}{}",
        etcd.service_prefix(&service.name),
        service_id(config)
    );
    let value = serde_json::to_vec(&value).unwrap_or_default();
    (key, value)
}

/// Keeps the instance's key in etcd until [`deregister`](Self::deregister).
pub struct EtcdRegistrar {
    client: Arc<Client>,
    key: String,
    /// The lease holding the key now, when there is one.
    lease: Arc<Mutex<Option<i64>>>,
    task: JoinHandle<()>,
}

impl EtcdRegistrar {
    /// Starts registering `key` = `value` of service `name` under leases of `ttl`.
    pub fn spawn(
        client: Arc<Client>,
        name: String,
        (key, value): (String, Vec<u8>),
        ttl: Duration,
    ) -> EtcdRegistrar {
        metrics::register_registration(Registry::Etcd, &name);
        let lease = Arc::new(Mutex::new(None));
        let registration = Registration {
            client: Arc::clone(&client),
            name,
            key: key.clone(),
            value,
            ttl,
            lease: Arc::clone(&lease),
        };
        let task = tokio::spawn(registration.keep());
        EtcdRegistrar {
            client,
            key,
            lease,
            task,
        }
    }

    /// Stops keeping the key and deletes it, revoking its lease (at most
    /// [`DEREGISTER_TIMEOUT`]); failures are logged, the shutdown goes on
    /// (the key then expires with its lease).
    pub async fn deregister(self) {
        self.task.abort();
        let lease = *self.lease.lock().unwrap_or_else(|e| e.into_inner());
        let deregister = async {
            self.client.delete(&self.key).await?;
            if let Some(lease) = lease {
                self.client.revoke(lease).await?;
            }
            Ok::<(), EtcdError>(())
        };
        match tokio::time::timeout(DEREGISTER_TIMEOUT, deregister).await {
            Ok(Ok(())) => tracing::info!(key = %self.key, "deregistered from etcd"),
            Ok(Err(error)) => {
                tracing::warn!(key = %self.key, %error, "etcd deregistration failed; the key expires with its lease")
            }
            Err(_) => {
                tracing::warn!(key = %self.key, timeout = ?DEREGISTER_TIMEOUT, "etcd deregistration timed out; the key expires with its lease")
            }
        }
    }
}

/// What the registration task keeps.
struct Registration {
    client: Arc<Client>,
    name: String,
    key: String,
    value: Vec<u8>,
    ttl: Duration,
    lease: Arc<Mutex<Option<i64>>>,
}

impl Registration {
    /// Registers, then keeps the lease alive and the key in place; backs
    /// off while etcd fails.
    async fn keep(self) {
        let mut pacer = Pacer::new();
        let mut failing = false;
        loop {
            match self.round().await {
                Ok(()) => {
                    pacer.succeeded();
                    if failing {
                        failing = false;
                        tracing::info!(key = %self.key, "etcd registration recovered");
                    }
                    tokio::time::sleep(self.ttl / 3).await;
                }
                Err(error) => {
                    if !failing {
                        failing = true;
                        tracing::error!(key = %self.key, %error, "etcd registration failing; retrying with backoff, still serving");
                    }
                    tokio::time::sleep(pacer.failed()).await;
                }
            }
        }
    }

    fn current_lease(&self) -> Option<i64> {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_lease(&self, lease: Option<i64>) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = lease;
        metrics::set_registered(Registry::Etcd, &self.name, lease.is_some());
    }

    /// One round: a lease that etcd lost is replaced; the lease is kept
    /// alive; the key is put when it is not there as it should be.
    async fn round(&self) -> Result<(), EtcdError> {
        let lease = match self.current_lease() {
            Some(lease) if self.client.keep_alive(lease).await? => lease,
            known => {
                if known.is_some() {
                    self.set_lease(None);
                    tracing::warn!(key = %self.key, "etcd lost the registration's lease; registering again");
                }
                let lease = self.client.grant(self.ttl).await?;
                return self.put(lease).await;
            }
        };
        let read = self.client.get(&self.key).await?;
        if read.kvs.first().is_some_and(|kv| kv.value == self.value) {
            return Ok(());
        }
        tracing::warn!(key = %self.key, "the registration's key is gone from etcd; registering again");
        self.put(lease).await
    }

    async fn put(&self, lease: i64) -> Result<(), EtcdError> {
        let result = self
            .client
            .put_with_lease(&self.key, &self.value, lease)
            .await;
        metrics::registration_attempt(Registry::Etcd, &self.name, result.is_ok());
        result?;
        self.set_lease(Some(lease));
        tracing::info!(key = %self.key, lease, ttl = ?self.ttl, "registered with etcd");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(inbound: &str) -> Config {
        let text = format!(
            "service: {{ name: web, id: web-7, address: 10.1.2.3, port: 8080, tags: [v2], \
             meta: {{ zone: a }}, register: true }}\n{inbound}\
             etcd: {{ endpoints: [\"http://127.0.0.1:2379\"], prefix: /svc/ }}\n"
        );
        crate::config::parse(&text, "test.yaml").expect("valid")
    }

    fn value(config: &Config, inbound: Option<&str>) -> (String, serde_json::Value) {
        let etcd = config.etcd.as_ref().unwrap();
        let inbound = inbound.map(|addr| addr.parse().unwrap());
        let (key, value) = instance(config, etcd, inbound);
        (key, serde_json::from_slice(&value).unwrap())
    }

    #[test]
    fn the_instance_is_the_inbound_listener_or_the_application() {
        let with_inbound = config("inbound: { listen: 10.1.2.4:15006 }\n");
        let (key, json) = value(&with_inbound, Some("10.1.2.4:15006"));
        assert_eq!(key, "/svc/web/web-7");
        assert_eq!(
            json,
            serde_json::json!({"address": "10.1.2.4", "port": 15006, "weight": 1,
                "tags": ["v2"], "meta": {"zone": "a"}})
        );
        let (_, wildcard) = value(&with_inbound, Some("0.0.0.0:15006"));
        assert_eq!(
            (&wildcard["address"], &wildcard["port"]),
            (&"10.1.2.3".into(), &15006.into())
        );
        let (_, app) = value(&config(""), None);
        assert_eq!(
            (&app["address"], &app["port"]),
            (&"10.1.2.3".into(), &8080.into())
        );
    }
}
