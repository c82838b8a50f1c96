//! Configuration reloads: where a new configuration comes from, and what
//! happens to it.
//!
//! The file given to `remora run --config` is read every `--watch-interval`
//! (1 s by default) and hashed (xxh3); a reload starts only when the content
//! differs from the last one seen. Comparing content rather than watching
//! inode events keeps working when an editor replaces the file, and under a
//! Kubernetes ConfigMap mount, where the file is a symlink into a `..data`
//! directory that is swapped atomically (every read follows the link). SIGHUP
//! reloads at once, changed or not.
//!
//! A new configuration goes through the same parsing and validation as at
//! start. One with errors is refused: each error is logged with its
//! `file:line:column: key path`, and the running configuration stays. A
//! valid one is applied by `live` (all or nothing); settings that cannot
//! change while running keep their value, with a warning naming the key.
//! Either way the outcome counts in `remora_config_reloads_total{result}`;
//! a success also sets `remora_config_last_reload_success_timestamp_seconds`
//! and the admin `/config`. A file that cannot be read counts as one failed
//! reload when it becomes unreadable, not once per poll.
//!
//! With `config_source: { consul_kv: { key } }` the configuration comes from
//! a Consul KV key instead (`GET /v1/kv/KEY?raw` as blocking queries); with
//! `config_source: { etcd: { key } }` from an etcd key (a get, then a watch
//! from the next revision; see `key`). The local file is then the
//! bootstrap: it gives `consul` and `etcd` (how to reach the source) and
//! `config_source`, which the value may not set, and the fixed settings
//! (see `live::fixed`), which always keep the file's values. The value
//! expands only the environment variables the local file lists in
//! `config_source.*.allowed_env` (whoever writes the key reads no other
//! secret of the process). The value must exist and be valid at start;
//! later values go through the same rules as a changed file, their errors
//! labelled `consul-kv:KEY` or `etcd:KEY`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use xxhash_rust::xxh3::xxh3_64;

use crate::admin::AdminState;
use crate::config::{self, Config, ConfigErrors};
use crate::drain::Drain;
use crate::live::LiveProxy;
use crate::telemetry::metrics;

mod key;

/// Where reloaded configurations come from.
pub enum Source {
    /// A local file, polled every `interval` (`None`: on SIGHUP only).
    File {
        path: PathBuf,
        interval: Option<Duration>,
        /// The text the running configuration was parsed from.
        loaded: String,
    },
    /// A key in Consul KV or etcd (`config_source`), followed from where
    /// the start left it.
    Key(Box<key::KeyWatch>),
}

/// The first configuration to run and where later ones come from: the
/// file's own configuration and the file; or, with `config_source`, the
/// configuration read from there and that source. Reading the source at
/// start must succeed — a missing key or an invalid value ends the start as
/// an invalid file does.
pub async fn initial(
    bootstrap: Config,
    path: PathBuf,
    interval: Option<Duration>,
    loaded: String,
) -> anyhow::Result<(Config, Source)> {
    if bootstrap.config_source.is_none() {
        let source = Source::File {
            path,
            interval,
            loaded,
        };
        return Ok((bootstrap, source));
    }
    let (config, watch) = key::initial(bootstrap).await?;
    Ok((config, Source::Key(Box::new(watch))))
}

/// Applies new configurations to a running proxy; cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    live: Arc<LiveProxy>,
    admin: Arc<AdminState>,
}

impl Reloader {
    pub fn new(live: Arc<LiveProxy>, admin: Arc<AdminState>) -> Self {
        Self { live, admin }
    }

    pub fn live(&self) -> &LiveProxy {
        &self.live
    }

    /// Applies a parsed configuration, or logs and counts its errors. True
    /// when the configuration now runs.
    pub async fn reload_parsed(&self, parsed: Result<Config, ConfigErrors>) -> bool {
        match parsed {
            Ok(config) => self.reload(config).await,
            Err(errors) => {
                refused(&errors);
                false
            }
        }
    }

    /// Applies a validated configuration. True when it now runs.
    pub async fn reload(&self, config: Config) -> bool {
        match self.live.apply(config).await {
            Ok(applied) => {
                for key in &applied.kept_fixed {
                    tracing::warn!(
                        key,
                        "this setting cannot change while remora runs; it keeps its running value until a restart"
                    );
                }
                match config::shown(&applied.effective) {
                    Ok(json) => self.admin.config_json.store(Arc::new(json)),
                    Err(error) => tracing::warn!(%error, "cannot show the new configuration"),
                }
                metrics::config_reloaded(true);
                tracing::info!("configuration reloaded");
                true
            }
            Err(error) => {
                metrics::config_reloaded(false);
                tracing::error!(
                    error = format!("{error:#}"),
                    "configuration not applied; the running configuration stays"
                );
                false
            }
        }
    }
}

/// Logs a refused configuration and counts the failed reload.
pub(super) fn refused(errors: &ConfigErrors) {
    metrics::config_reloaded(false);
    for error in &errors.0 {
        tracing::error!(error = %error, "invalid configuration");
    }
    tracing::error!(
        errors = errors.0.len(),
        "configuration refused; the running configuration stays"
    );
}

/// Follows `source` and applies what changes until `stop` is signalled.
pub async fn watch(source: Source, reloader: Reloader, stop: Drain) {
    match source {
        Source::File {
            path,
            interval,
            loaded,
        } => watch_file(path, interval, &loaded, reloader, stop).await,
        Source::Key(watch) => key::watch(*watch, reloader, stop).await,
    }
}

async fn watch_file(
    path: PathBuf,
    interval: Option<Duration>,
    loaded: &str,
    reloader: Reloader,
    mut stop: Drain,
) {
    let name = path.display().to_string();
    let mut hangup = hangup_signal();
    let mut ticks = interval.map(|period| {
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks
    });
    // The text last applied or refused as invalid.
    let mut last_seen = xxh3_64(loaded.as_bytes());
    let mut retry: Option<Retry> = None;
    let mut unreadable = false;
    match interval {
        Some(interval) => {
            tracing::info!(file = %name, ?interval, "watching the configuration file");
        }
        None => tracing::info!(file = %name, "configuration file read again on SIGHUP only"),
    }
    loop {
        let forced = tokio::select! {
            () = tick(&mut ticks) => false,
            Some(()) = recv(&mut hangup) => {
                tracing::info!("SIGHUP received; reloading the configuration");
                true
            }
            () = stop.signaled() => return,
        };
        let text = match config::read(&path) {
            Ok(text) => text,
            Err(errors) => {
                if forced || !unreadable {
                    refused(&errors);
                }
                unreadable = true;
                continue;
            }
        };
        unreadable = false;
        let hash = xxh3_64(text.as_bytes());
        if hash == last_seen && !forced {
            continue;
        }
        let again = retry.as_ref().filter(|retry| retry.hash == hash);
        if again.is_some_and(|retry| Instant::now() < retry.at) && !forced {
            continue;
        }
        match config::parse(&text, &name) {
            // The same text would fail the same way: not read again.
            Err(errors) => {
                refused(&errors);
                last_seen = hash;
                retry = None;
            }
            Ok(config) => {
                match again {
                    Some(_) => tracing::info!(file = %name, "applying the configuration again"),
                    None => tracing::info!(file = %name, "configuration changed; reloading"),
                }
                let pause = again.map_or(FIRST_RETRY, |retry| (retry.pause * 2).min(MOST_RETRY));
                if reloader.reload(config).await {
                    last_seen = hash;
                    retry = None;
                } else {
                    retry = Some(Retry {
                        hash,
                        at: Instant::now() + pause,
                        pause,
                    });
                }
            }
        }
    }
}

/// A valid configuration that could not be applied (a port in use, say):
/// tried again after `pause`, which doubles from [`FIRST_RETRY`] to
/// [`MOST_RETRY`], while the file holds it.
struct Retry {
    hash: u64,
    at: Instant,
    pause: Duration,
}

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MOST_RETRY: Duration = Duration::from_secs(30);

/// SIGHUP, when the handler can be installed (logged otherwise).
pub(super) fn hangup_signal() -> Option<Signal> {
    signal(SignalKind::hangup())
        .inspect_err(
            |error| tracing::warn!(%error, "cannot handle SIGHUP; reload by changing the file"),
        )
        .ok()
}

async fn tick(ticks: &mut Option<Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

pub(super) async fn recv(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
