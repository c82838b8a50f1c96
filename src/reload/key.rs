//! A configuration that lives in one key of a store (`config_source`):
//! Consul KV (`consul_kv`, blocking queries) or etcd (`etcd`, a watch).
//! What both share is [`Followed`]: a value is applied only when its hash
//! changed (SIGHUP forces it), a deleted key counts as one failed reload,
//! a value that is not UTF-8 or not a valid configuration is refused with
//! its errors (labelled `consul-kv:KEY` / `etcd:KEY`) and the running
//! configuration stays, and failing to read is logged once when it starts
//! and once when it ends, retried with jittered backoff (`backoff::Pacer`).
//!
//! etcd: the key is read, then watched from the revision after that read,
//! so no change in between is missed. When the watch breaks (etcd down, a
//! member partitioned, a compaction), the key is read afresh and watched
//! from there: resuming from the last revision seen would miss an etcd that
//! came back with its data replaced (`discovery::etcd` says how).

use std::convert::Infallible;

use anyhow::Context as _;
use xxhash_rust::xxh3::xxh3_64;

use crate::backoff::Pacer;
use crate::config::{self, Config, ConfigErrors, ConfigSource};
use crate::consul::{self, blocking::next_index};
use crate::drain::Drain;
use crate::etcd::{self, Change, EtcdError, Watched};
use crate::live::keep_fixed;
use crate::telemetry::metrics;

use super::{Reloader, hangup_signal, recv};

/// A key to follow, from where the start left it.
pub struct KeyWatch {
    store: Store,
    followed: Followed,
}

/// Where the key is, and how far it was read.
enum Store {
    ConsulKv {
        client: consul::Client,
        /// The index of the value running now.
        index: u64,
    },
    Etcd {
        client: Box<etcd::Client>,
        /// The revision of the value running now.
        revision: i64,
    },
}

/// Reads the key of `bootstrap.config_source` once: it must exist and hold
/// a valid configuration, which is returned with the watch to follow it.
pub(super) async fn initial(bootstrap: Config) -> anyhow::Result<(Config, KeyWatch)> {
    let (store, registry, label, key, value) = match &bootstrap.config_source {
        Some(ConfigSource::ConsulKv(source)) => {
            let key = source.key.trim().to_owned();
            let client = consul::Client::from_config(&bootstrap.consul)?;
            let answer = (client.kv(&key, 0).await).with_context(|| {
                format!("cannot read the configuration from Consul KV key {key}")
            })?;
            let index = next_index(0, answer.index);
            let store = Store::ConsulKv { client, index };
            let value = answer.value.map(String::into_bytes);
            (store, "Consul KV", "consul-kv", key, value)
        }
        Some(ConfigSource::Etcd(source)) => {
            let section = (bootstrap.etcd.as_ref()).context("config_source.etcd needs `etcd`")?;
            let key = source.key.trim().to_owned();
            let client = etcd::Client::from_config(section)?;
            let read = (client.get(&key).await)
                .with_context(|| format!("cannot read the configuration from etcd key {key}"))?;
            let value = read.kvs.into_iter().next().map(|kv| kv.value);
            let store = Store::Etcd {
                client: Box::new(client),
                revision: read.revision,
            };
            (store, "etcd", "etcd", key, value)
        }
        None => anyhow::bail!("no config_source"),
    };
    let Some(value) = value else {
        anyhow::bail!("the {registry} key {key} (config_source) does not exist");
    };
    let followed = Followed {
        registry,
        label: format!("{label}:{key}"),
        key,
        last_seen: Some(xxh3_64(&value)),
        failing: false,
        bootstrap,
    };
    let text = String::from_utf8(value)
        .map_err(|_| anyhow::anyhow!("the {registry} key {} is not UTF-8", followed.key))?;
    let config = followed.config(&text)?;
    tracing::info!(key = %followed.key, "configuration read from {registry}");
    Ok((config, KeyWatch { store, followed }))
}

/// Follows the key and applies what changes until `stop` is signalled.
pub(super) async fn watch(watch: KeyWatch, reloader: Reloader, stop: Drain) {
    let KeyWatch { store, followed } = watch;
    tracing::info!(key = %followed.key, "watching the configuration in {}", followed.registry);
    match store {
        Store::ConsulKv { client, index } => {
            watch_consul_kv(client, index, followed, reloader, stop).await;
        }
        Store::Etcd { client, revision } => {
            watch_etcd(client, revision, followed, reloader, stop).await;
        }
    }
}

/// What following a key in either store has in common.
struct Followed {
    /// `Consul KV` or `etcd`, for the log lines.
    registry: &'static str,
    key: String,
    /// Labels the value's errors: `consul-kv:KEY`, `etcd:KEY`.
    label: String,
    /// The hash of the value last seen; `None` while the key is missing.
    last_seen: Option<u64>,
    failing: bool,
    /// The local file's configuration (see [`Followed::config`]).
    bootstrap: Config,
}

impl Followed {
    /// The configuration a value describes: parsed and validated as a file
    /// is, reading only the environment variables the local file allows,
    /// without `consul`, `etcd` and `config_source` of its own — it gets the
    /// local file's, which say how to reach it.
    fn config(&self, text: &str) -> Result<Config, ConfigErrors> {
        let allowed_env =
            (self.bootstrap.config_source.as_ref()).map_or(&[][..], ConfigSource::allowed_env);
        let mut config = config::parse_from_source(text, &self.label, allowed_env)?;
        config::adopt_local_sections(&mut config, &self.bootstrap);
        // The settings that cannot change while remora runs come from the
        // local file, also where the value leaves them to their defaults:
        // compared with the running ones, those defaults would read as
        // changes refused at every reload.
        let kept = keep_fixed(&self.bootstrap, &mut config);
        for key in config::keys_written(text, &kept) {
            tracing::warn!(
                key,
                "this setting comes from the local configuration file; the config_source value's is ignored"
            );
        }
        Ok(config)
    }

    /// A read failed: the running configuration stays.
    fn failed(&mut self, error: &dyn std::fmt::Display) {
        if !self.failing {
            self.failing = true;
            tracing::warn!(key = %self.key, %error, "cannot read the configuration from {}; the running configuration stays", self.registry);
        }
    }

    /// A read succeeded.
    fn answered(&mut self) {
        if self.failing {
            self.failing = false;
            tracing::info!(key = %self.key, "{} readable again", self.registry);
        }
    }

    /// The key now holds `value` (`None`: deleted); applied when it changed
    /// or `forced`.
    async fn value(&mut self, value: Option<&[u8]>, forced: bool, reloader: &Reloader) {
        let Some(value) = value else {
            if self.last_seen.take().is_some() || forced {
                metrics::config_reloaded(false);
                tracing::error!(key = %self.key, "the {} key is gone; the running configuration stays", self.registry);
            }
            return;
        };
        let hash = xxh3_64(value);
        if self.last_seen == Some(hash) && !forced {
            return;
        }
        self.last_seen = Some(hash);
        let Ok(text) = std::str::from_utf8(value) else {
            metrics::config_reloaded(false);
            tracing::error!(key = %self.key, "the {} value is not UTF-8; the running configuration stays", self.registry);
            return;
        };
        tracing::info!(key = %self.key, "configuration changed in {}; reloading", self.registry);
        reloader.reload_parsed(self.config(text)).await;
    }
}

/// Follows a KV key with blocking queries, paced and backed off as
/// discovery's are. SIGHUP re-reads the key at once and re-applies it,
/// changed or not.
async fn watch_consul_kv(
    client: consul::Client,
    mut index: u64,
    mut followed: Followed,
    reloader: Reloader,
    mut stop: Drain,
) {
    let mut hangup = hangup_signal();
    let mut pacer = Pacer::new();
    loop {
        let (answer, forced) = tokio::select! {
            answer = async {
                pacer.turn().await;
                client.kv(&followed.key, index).await
            } => (answer, false),
            Some(()) = recv(&mut hangup) => {
                tracing::info!("SIGHUP received; reloading the configuration");
                (client.kv(&followed.key, 0).await, true)
            }
            () = stop.signaled() => return,
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                followed.failed(&error);
                tokio::select! {
                    () = tokio::time::sleep(pacer.failed()) => continue,
                    () = stop.signaled() => return,
                }
            }
        };
        pacer.succeeded();
        followed.answered();
        index = next_index(index, answer.index);
        let value = answer.value.as_deref().map(str::as_bytes);
        followed.value(value, forced, &reloader).await;
    }
}

/// Follows an etcd key with a watch (see the module doc). SIGHUP re-reads
/// the key at once and re-applies it, changed or not.
async fn watch_etcd(
    client: Box<etcd::Client>,
    revision: i64,
    mut followed: Followed,
    reloader: Reloader,
    mut stop: Drain,
) {
    let mut hangup = hangup_signal();
    let mut pacer = Pacer::new();
    // The revision of the last read (at start, or SIGHUP's), to watch
    // from; `None` once the watch broke: the key is read afresh.
    let mut revision = Some(revision);
    loop {
        let session = async {
            pacer.turn().await;
            follow_etcd(&client, revision, &mut followed, &reloader, &mut pacer).await
        };
        let error = tokio::select! {
            Err(error) = session => error,
            Some(()) = recv(&mut hangup) => {
                tracing::info!("SIGHUP received; reloading the configuration");
                match client.get(&followed.key).await {
                    Ok(read) => {
                        followed.answered();
                        let value = read.kvs.first().map(|kv| kv.value.as_slice());
                        followed.value(value, true, &reloader).await;
                        revision = Some(read.revision);
                        continue;
                    }
                    Err(error) => error,
                }
            }
            () = stop.signaled() => return,
        };
        revision = None;
        if let EtcdError::Compacted { .. } = error {
            tracing::info!(key = %followed.key, %error, "reading the etcd key afresh");
            continue;
        }
        followed.failed(&error);
        tokio::select! {
            () = tokio::time::sleep(pacer.failed()) => {}
            () = stop.signaled() => return,
        }
    }
}

/// Reads the key unless `revision` is a read's just made, then watches it
/// from the next revision on, until something goes wrong.
async fn follow_etcd(
    client: &etcd::Client,
    revision: Option<i64>,
    followed: &mut Followed,
    reloader: &Reloader,
    pacer: &mut Pacer,
) -> Result<Infallible, EtcdError> {
    let from = match revision {
        Some(read) => read,
        None => {
            let read = client.get(&followed.key).await?;
            followed.answered();
            let value = read.kvs.first().map(|kv| kv.value.as_slice());
            followed.value(value, false, reloader).await;
            read.revision
        }
    };
    let mut watch = client.watch(&followed.key, false, from + 1).await?;
    loop {
        match watch.next().await? {
            Watched::Created => {
                pacer.succeeded();
                followed.answered();
            }
            Watched::Changes(changes) => {
                followed.answered();
                // Only the last change counts.
                let value = match changes.last() {
                    Some(Change::Put(kv)) => Some(kv.value.as_slice()),
                    Some(Change::Delete { .. }) => None,
                    None => continue,
                };
                followed.value(value, false, reloader).await;
            }
        }
    }
}
