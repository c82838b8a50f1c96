//! DNS discovery (`discovery: { dns: { name, type, port, resolver } }`):
//! endpoints from the SRV records of `name` (`type: srv`, the default; see
//! `srv`), or from its A and AAAA records at `port` (`type: a`; see
//! `address`). The hostnames of `discovery.static` lists run the same loop
//! (`discovery::static_names`).
//!
//! The name is re-queried when the shortest TTL of the answer expires,
//! clamped to `[min_refresh, max_refresh]`; the resolver's cache is cleared
//! before each round, so the schedule here is the only cache.
//!
//! Fail static: when the server is unreachable or answers an error
//! (SERVFAIL, NXDOMAIN, no usable record), the last known endpoints stay in
//! place indefinitely and the query is retried with backoff. Every failed
//! attempt counts in `remora_discovery_errors_total{upstream}`; the log gets
//! one line when a name starts failing and one when it recovers.

mod address;
mod srv;

pub(in crate::discovery) use address::lookup as lookup_addresses;

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::ProtoError;
use hickory_resolver::proto::rr::Name;

use crate::config::{DnsDiscovery, DnsRecordType};
use crate::discovery::EndpointSink;
use crate::drain::Drain;
use crate::endpoint::WeightedAddr;
use crate::telemetry::metrics;

/// Retries after failures back off from `min_refresh`, doubling, up to
/// `max_refresh` but never beyond this, so a recovered server is noticed soon.
const FAILURE_RETRY_CAP: Duration = Duration::from_secs(10);

/// How long one query may take before it counts as failed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Why discovery could not start, or why one round failed (hickory's errors
/// are boxed: they are large and the failure path is cold).
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid DNS name `{name}`: {source}")]
    Name {
        name: String,
        source: Box<ProtoError>,
    },
    #[error("`type: a` needs a port")]
    NoPort,
    #[error("cannot set up the resolver: {0}")]
    Setup(Box<NetError>),
    #[error("SRV lookup failed: {0}")]
    Srv(Box<NetError>),
    #[error("the SRV answer names no usable target")]
    NoTargets,
    #[error("address lookup of SRV target {target} failed: {source}")]
    Target {
        target: String,
        source: Box<NetError>,
    },
    #[error("address lookup of {name} failed: {source}")]
    Addresses { name: String, source: Box<NetError> },
    #[error("{name} has no A or AAAA record (NXDOMAIN or NODATA)")]
    NoAddresses { name: String },
}

/// The bounds of the refresh interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::discovery) struct Refresh {
    pub(in crate::discovery) min: Duration,
    pub(in crate::discovery) max: Duration,
}

/// One successful round: the endpoint set and how long it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::discovery) struct Answer {
    pub(in crate::discovery) endpoints: Vec<WeightedAddr>,
    pub(in crate::discovery) ttl: Duration,
}

/// `text` as a DNS name.
pub(in crate::discovery) fn dns_name(text: &str) -> Result<Name, DnsError> {
    Name::from_str(text).map_err(|source| DnsError::Name {
        name: text.to_owned(),
        source: Box::new(source),
    })
}

/// A resolver asking one UDP name server when `server` is set, otherwise
/// the system's (`/etc/resolv.conf`); one try of at most `QUERY_TIMEOUT`.
pub(in crate::discovery) fn resolver(
    server: Option<SocketAddr>,
) -> Result<TokioResolver, DnsError> {
    let mut builder = match server {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let server = NameServerConfig::new(addr.ip(), true, vec![udp]);
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![server]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| DnsError::Setup(Box::new(e)))?,
    };
    let options = builder.options_mut();
    options.timeout = QUERY_TIMEOUT;
    options.attempts = 1;
    builder.build().map_err(|e| DnsError::Setup(Box::new(e)))
}

/// Which records a [`DnsDiscoverer`] asks for.
#[derive(Debug, Clone, Copy)]
enum Query {
    Srv,
    /// A and AAAA, endpoints at this port.
    Addresses {
        port: u16,
    },
}

/// DNS discovery for one upstream, ready to run.
pub struct DnsDiscoverer {
    upstream: Arc<dyn EndpointSink>,
    resolver: TokioResolver,
    name: Name,
    query: Query,
    refresh: Refresh,
}

impl DnsDiscoverer {
    /// Builds the resolver: one UDP name server when `resolver` is set,
    /// otherwise the system's (`/etc/resolv.conf`).
    pub fn new(upstream: Arc<dyn EndpointSink>, config: &DnsDiscovery) -> Result<Self, DnsError> {
        let query = match (config.record_type, config.port) {
            (DnsRecordType::Srv, _) => Query::Srv,
            (DnsRecordType::A, Some(port)) => Query::Addresses { port },
            (DnsRecordType::A, None) => return Err(DnsError::NoPort),
        };
        Ok(Self {
            upstream,
            resolver: resolver(config.resolver)?,
            name: dns_name(&config.name)?,
            query,
            refresh: Refresh {
                min: config.min_refresh,
                max: config.max_refresh,
            },
        })
    }

    /// Runs discovery until the drain starts.
    pub fn spawn(self, mut drain: Drain) {
        tokio::spawn(async move {
            let Self {
                upstream,
                resolver,
                name,
                query,
                refresh,
            } = self;
            tracing::info!(upstream = upstream.name(), %name, ?query, "DNS discovery started");
            let text = name.to_string();
            let watch = Watch {
                upstream: upstream.name(),
                name: &text,
                refresh,
            };
            let apply = |round: Round<'_>| {
                if let Round::Changed(endpoints) = round {
                    upstream.set_weighted_endpoints(endpoints);
                }
            };
            let lookup = || async {
                match query {
                    Query::Srv => srv::lookup(&resolver, &name).await,
                    Query::Addresses { port } => address::lookup(&resolver, &name, port, 1).await,
                }
            };
            run(&watch, lookup, apply, drain.signaled()).await;
        });
    }
}

/// What one discovery loop watches, for its logs, metrics and schedule.
pub(in crate::discovery) struct Watch<'a> {
    /// The upstream fed (the metrics' label).
    pub(in crate::discovery) upstream: &'a str,
    /// The name queried.
    pub(in crate::discovery) name: &'a str,
    pub(in crate::discovery) refresh: Refresh,
}

/// What a round of the loop reports.
pub(in crate::discovery) enum Round<'a> {
    /// An answer differing from the last one (or the first).
    Changed(&'a [WeightedAddr]),
    /// The round failed; the last endpoints stay.
    Failed,
}

/// The discovery loop: query, report changes and failures, sleep until the
/// next query.
pub(in crate::discovery) async fn run<L, F>(
    watch: &Watch<'_>,
    mut lookup: L,
    mut apply: impl FnMut(Round<'_>),
    stop: impl Future<Output = ()>,
) where
    L: FnMut() -> F,
    F: Future<Output = Result<Answer, DnsError>>,
{
    let Watch {
        upstream,
        name,
        refresh,
    } = *watch;
    tokio::pin!(stop);
    let mut current: Option<Vec<WeightedAddr>> = None;
    let mut failures: u32 = 0;
    loop {
        let result = tokio::select! {
            result = lookup() => result,
            () = &mut stop => return,
        };
        let delay = match result {
            Ok(answer) => {
                if failures > 0 {
                    tracing::info!(
                        upstream,
                        name,
                        failed_attempts = failures,
                        "DNS discovery recovered"
                    );
                }
                failures = 0;
                if current.as_ref() != Some(&answer.endpoints) {
                    tracing::info!(upstream, name, endpoints = ?answer.endpoints, "DNS discovery: endpoint set changed");
                    apply(Round::Changed(&answer.endpoints));
                    current = Some(answer.endpoints);
                }
                after_answer(answer.ttl, refresh)
            }
            Err(error) => {
                metrics::discovery_error(upstream);
                failures = failures.saturating_add(1);
                let kept = current.as_ref().map_or(0, Vec::len);
                if failures == 1 {
                    tracing::warn!(upstream, name, %error, kept, "DNS discovery failing; keeping the last known endpoints");
                } else {
                    tracing::debug!(upstream, name, %error, failures, "DNS discovery still failing");
                }
                apply(Round::Failed);
                after_failure(failures, refresh)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut stop => return,
        }
    }
}

/// The wait after an answer: its shortest TTL, within the bounds.
fn after_answer(ttl: Duration, refresh: Refresh) -> Duration {
    ttl.clamp(refresh.min, refresh.max)
}

/// The wait after `failures` (≥ 1) consecutive failures: `min`, doubling,
/// up to `max` and at most `FAILURE_RETRY_CAP` (but never below `min`).
fn after_failure(failures: u32, refresh: Refresh) -> Duration {
    let cap = refresh.max.min(FAILURE_RETRY_CAP).max(refresh.min);
    let doublings = failures.saturating_sub(1).min(16);
    refresh.min.saturating_mul(1 << doublings).min(cap)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use tokio::time::Instant;

    use super::*;

    const BOUNDS: Refresh = Refresh {
        min: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_refresh_follows_the_ttl_within_the_bounds() {
        assert_eq!(after_answer(Duration::ZERO, BOUNDS), Duration::from_secs(1));
        assert_eq!(
            after_answer(Duration::from_secs(15), BOUNDS),
            Duration::from_secs(15)
        );
        assert_eq!(
            after_answer(Duration::from_secs(3600), BOUNDS),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn failures_back_off_up_to_the_cap() {
        let waits: Vec<u64> = (1..=7)
            .map(|n| after_failure(n, BOUNDS).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10, 10]);
        let tight = Refresh {
            min: Duration::from_secs(2),
            max: Duration::from_secs(3),
        };
        assert_eq!(after_failure(5, tight), Duration::from_secs(3));
        assert_eq!(after_failure(u32::MAX, BOUNDS), Duration::from_secs(10));
        let slow = Refresh {
            min: Duration::from_secs(30),
            max: Duration::from_secs(60),
        };
        assert_eq!(after_failure(3, slow), Duration::from_secs(30));
    }

    fn answer(endpoints: &[&str], ttl: u64) -> Result<Answer, DnsError> {
        Ok(Answer {
            endpoints: endpoints
                .iter()
                .map(|text| WeightedAddr {
                    addr: addr(text),
                    weight: 1,
                })
                .collect(),
            ttl: Duration::from_secs(ttl),
        })
    }

    /// Runs the loop over scripted results (then the last one forever) for
    /// `total` of paused time; returns when each query ran (seconds from the
    /// start) and every endpoint set applied.
    async fn script(
        results: Vec<Result<Answer, DnsError>>,
        total: Duration,
    ) -> (Vec<u64>, Vec<Vec<SocketAddr>>, usize) {
        let start = Instant::now();
        let results = RefCell::new(VecDeque::from(results));
        let queries = RefCell::new(Vec::new());
        let mut applied = Vec::new();
        let mut failed = 0;
        let watch = Watch {
            upstream: "test",
            name: "api.test",
            refresh: BOUNDS,
        };
        run(
            &watch,
            || {
                queries.borrow_mut().push(start.elapsed().as_secs());
                let mut results = results.borrow_mut();
                let next = if results.len() > 1 {
                    results.pop_front()
                } else {
                    results.front().map(|last| match last {
                        Ok(answer) => Ok(answer.clone()),
                        Err(_) => Err(DnsError::NoTargets),
                    })
                };
                std::future::ready(next.unwrap())
            },
            |round| match round {
                Round::Changed(endpoints) => {
                    applied.push(endpoints.iter().map(|e| e.addr).collect());
                }
                Round::Failed => failed += 1,
            },
            tokio::time::sleep(total),
        )
        .await;
        (queries.into_inner(), applied, failed)
    }

    #[tokio::test(start_paused = true)]
    async fn queries_again_when_the_ttl_expires_and_applies_only_changes() {
        let (queries, applied, failed) = script(
            vec![
                answer(&["10.0.0.1:80"], 5),
                answer(&["10.0.0.1:80"], 0),
                answer(&["10.0.0.2:80"], 600),
            ],
            Duration::from_secs(130),
        )
        .await;
        assert_eq!(queries, [0, 5, 6, 66, 126]);
        assert_eq!(failed, 0);
        assert_eq!(
            applied,
            [vec![addr("10.0.0.1:80")], vec![addr("10.0.0.2:80")]]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_keep_the_last_endpoints_and_retry_with_backoff() {
        let (queries, applied, failed) = script(
            vec![
                answer(&["10.0.0.1:80"], 3),
                Err(DnsError::NoTargets),
                Err(DnsError::NoTargets),
                Err(DnsError::NoTargets),
                answer(&["10.0.0.1:80", "10.0.0.3:80"], 30),
            ],
            Duration::from_secs(41),
        )
        .await;
        // 3 s TTL, then failures wait 1, 2, 4 s, then the 30 s TTL.
        assert_eq!(queries, [0, 3, 4, 6, 10, 40]);
        assert_eq!(failed, 3);
        assert_eq!(
            applied,
            [
                vec![addr("10.0.0.1:80")],
                vec![addr("10.0.0.1:80"), addr("10.0.0.3:80")]
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_applied_before_the_first_answer() {
        let (queries, applied, failed) =
            script(vec![Err(DnsError::NoTargets)], Duration::from_secs(30)).await;
        assert_eq!(queries, [0, 1, 3, 7, 15, 25]);
        assert!(applied.is_empty());
        assert_eq!(failed, 6);
    }
}
