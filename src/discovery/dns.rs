//! DNS SRV discovery (`discovery: { dns: { name, resolver } }`): the SRV
//! records of `name` give targets and ports, the targets' A/AAAA records
//! (from the answer's additional section, or looked up) give the addresses.
//!
//! Only the lowest SRV priority group is used (RFC 2782: higher priorities
//! are fallbacks). Each record's weight becomes the balancing weight of its
//! target's addresses; weight 0 ("very small chance" in RFC 2782) counts as
//! 1, the smallest weight the balancers know. The name is re-queried when the shortest
//! TTL of the answer expires, clamped to `[min_refresh, max_refresh]`.
//!
//! Fail static: when the server is unreachable or answers an error
//! (SERVFAIL, NXDOMAIN, no usable record), the last known endpoints stay in
//! place indefinitely and the query is retried with backoff. A target whose
//! addresses cannot be looked up fails the whole round (the set is kept
//! rather than shrunk on a partial answer). Every failed
//! attempt counts in `remora_discovery_errors_total{upstream}`; the log gets
//! one line when discovery starts failing and one when it recovers.
//!
//! Over 500 lines: its tests (the discovery itself is about 330).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::ProtoError;
use hickory_resolver::proto::rr::{Name, RData, Record};

use crate::config::DnsDiscovery;
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
    #[error("invalid SRV name `{name}`: {source}")]
    Name {
        name: String,
        source: Box<ProtoError>,
    },
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
}

/// The bounds of the refresh interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refresh {
    min: Duration,
    max: Duration,
}

/// One successful round: the endpoint set and how long it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    endpoints: Vec<WeightedAddr>,
    ttl: Duration,
}

/// DNS discovery for one upstream, ready to run.
pub struct DnsDiscoverer {
    upstream: Arc<dyn EndpointSink>,
    resolver: TokioResolver,
    name: Name,
    refresh: Refresh,
}

impl DnsDiscoverer {
    /// Builds the resolver: one UDP name server when `resolver` is set,
    /// otherwise the system's (`/etc/resolv.conf`).
    pub fn new(upstream: Arc<dyn EndpointSink>, config: &DnsDiscovery) -> Result<Self, DnsError> {
        let name = Name::from_str(&config.name).map_err(|source| DnsError::Name {
            name: config.name.clone(),
            source: Box::new(source),
        })?;
        let mut builder = match config.resolver {
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
        let resolver = builder.build().map_err(|e| DnsError::Setup(Box::new(e)))?;
        Ok(Self {
            upstream,
            resolver,
            name,
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
                refresh,
            } = self;
            tracing::info!(upstream = upstream.name(), %name, "DNS discovery started");
            run(
                upstream.name(),
                refresh,
                || lookup(&resolver, &name),
                |endpoints| upstream.set_weighted_endpoints(endpoints),
                drain.signaled(),
            )
            .await;
        });
    }
}

/// The discovery loop: query, apply changes, sleep until the next query.
async fn run<L, F>(
    upstream: &str,
    refresh: Refresh,
    mut lookup: L,
    mut apply: impl FnMut(&[WeightedAddr]),
    stop: impl Future<Output = ()>,
) where
    L: FnMut() -> F,
    F: Future<Output = Result<Answer, DnsError>>,
{
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
                        failed_attempts = failures,
                        "DNS discovery recovered"
                    );
                }
                failures = 0;
                if current.as_ref() != Some(&answer.endpoints) {
                    tracing::info!(upstream, endpoints = ?answer.endpoints, "DNS discovery: endpoint set changed");
                    apply(&answer.endpoints);
                    current = Some(answer.endpoints);
                }
                after_answer(answer.ttl, refresh)
            }
            Err(error) => {
                metrics::discovery_error(upstream);
                failures = failures.saturating_add(1);
                let kept = current.as_ref().map_or(0, Vec::len);
                if failures == 1 {
                    tracing::warn!(upstream, %error, kept, "DNS discovery failing; keeping the last known endpoints");
                } else {
                    tracing::debug!(upstream, %error, failures, "DNS discovery still failing");
                }
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

/// One round against the DNS server: SRV, then the targets' addresses.
async fn lookup(resolver: &TokioResolver, name: &Name) -> Result<Answer, DnsError> {
    // Every round asks the server; the TTL scheduling here replaces the cache.
    resolver.clear_cache();
    let srv = resolver
        .srv_lookup(name.clone())
        .await
        .map_err(|e| DnsError::Srv(Box::new(e)))?;
    let targets = lowest_priority_targets(srv.answers());
    if targets.is_empty() {
        return Err(DnsError::NoTargets);
    }
    let additionals = srv.additionals();
    let resolved = try_join_all(
        targets
            .into_iter()
            .map(|(target, port, weight)| async move {
                let mut addresses = address_records(additionals, Some(&target));
                if addresses.is_empty() {
                    let ips = resolver.lookup_ip(target.clone()).await.map_err(|source| {
                        DnsError::Target {
                            target: target.to_string(),
                            source: Box::new(source),
                        }
                    })?;
                    addresses = address_records(ips.as_lookup().answers(), None);
                }
                Ok::<_, DnsError>(Resolved {
                    port,
                    weight,
                    addresses,
                })
            }),
    )
    .await?;
    let answer = to_answer(srv.answers(), &resolved);
    if answer.endpoints.is_empty() {
        return Err(DnsError::NoTargets);
    }
    Ok(answer)
}

/// The (target, port, weight) of the lowest-priority SRV records, weight 0
/// counted as 1. Targets of `.` ("service decidedly not available",
/// RFC 2782) are dropped.
fn lowest_priority_targets(answers: &[Record]) -> Vec<(Name, u16, u32)> {
    let usable: Vec<_> = answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) if !srv.target.is_root() => Some(srv),
            _ => None,
        })
        .collect();
    let Some(lowest) = usable.iter().map(|srv| srv.priority).min() else {
        return Vec::new();
    };
    usable
        .into_iter()
        .filter(|srv| srv.priority == lowest)
        .map(|srv| (srv.target.clone(), srv.port, u32::from(srv.weight.max(1))))
        .collect()
}

/// A/AAAA records (for `name` when given) as (address, TTL).
fn address_records(records: &[Record], name: Option<&Name>) -> Vec<(IpAddr, u32)> {
    records
        .iter()
        .filter(|record| name.is_none_or(|name| record.name.eq_ignore_root(name)))
        .filter_map(|record| match &record.data {
            RData::A(a) => Some((IpAddr::V4(a.0), record.ttl)),
            RData::AAAA(aaaa) => Some((IpAddr::V6(aaaa.0), record.ttl)),
            _ => None,
        })
        .collect()
}

/// An SRV target's port and weight with its addresses (and their TTLs).
#[derive(Debug)]
struct Resolved {
    port: u16,
    weight: u32,
    addresses: Vec<(IpAddr, u32)>,
}

/// The endpoint set (sorted by address; an address named by several records
/// once, at the highest of their weights) and the shortest TTL of the SRV
/// answers and the addresses used.
fn to_answer(srv_answers: &[Record], resolved: &[Resolved]) -> Answer {
    let mut endpoints: Vec<WeightedAddr> = resolved
        .iter()
        .flat_map(|target| {
            (target.addresses.iter()).map(|(ip, _)| WeightedAddr {
                addr: SocketAddr::new(*ip, target.port),
                weight: target.weight,
            })
        })
        .collect();
    endpoints.sort_unstable_by_key(|endpoint| (endpoint.addr, std::cmp::Reverse(endpoint.weight)));
    endpoints.dedup_by_key(|endpoint| endpoint.addr);
    let srv_ttls = srv_answers
        .iter()
        .filter(|record| matches!(record.data, RData::SRV(_)))
        .map(|record| record.ttl);
    let address_ttls = resolved
        .iter()
        .flat_map(|target| target.addresses.iter().map(|(_, ttl)| *ttl));
    let ttl = srv_ttls.chain(address_ttls).min().unwrap_or(0);
    Answer {
        endpoints,
        ttl: Duration::from_secs(u64::from(ttl)),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
    use tokio::time::Instant;

    use super::*;

    const BOUNDS: Refresh = Refresh {
        min: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    fn name(text: &str) -> Name {
        Name::from_str(text).unwrap()
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str, ttl: u32) -> Record {
        Record::from_rdata(
            name("_api._tcp.service.consul."),
            ttl,
            RData::SRV(SRV::new(priority, weight, port, name(target))),
        )
    }

    fn a(host: &str, ip: [u8; 4], ttl: u32) -> Record {
        Record::from_rdata(name(host), ttl, RData::A(A(Ipv4Addr::from(ip))))
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_the_lowest_priority_group_is_used() {
        let answers = [
            srv(20, 1, 8082, "backup.node.consul.", 30),
            srv(10, 5, 8080, "api-1.node.consul.", 30),
            srv(10, 1, 8081, "api-2.node.consul.", 30),
        ];
        assert_eq!(
            lowest_priority_targets(&answers),
            [
                (name("api-1.node.consul."), 8080, 5),
                (name("api-2.node.consul."), 8081, 1)
            ]
        );
    }

    #[test]
    fn root_targets_and_other_records_are_ignored() {
        let answers = [
            srv(0, 0, 0, ".", 30),
            a("api-1.node.consul.", [10, 0, 0, 1], 30),
            srv(5, 0, 9000, "api-1.node.consul.", 30),
        ];
        assert_eq!(
            lowest_priority_targets(&answers),
            [(name("api-1.node.consul."), 9000, 1)]
        );
        assert!(lowest_priority_targets(&[srv(0, 0, 0, ".", 30)]).is_empty());
        assert!(lowest_priority_targets(&[]).is_empty());
    }

    #[test]
    fn addresses_of_a_target_come_from_matching_a_and_aaaa_records() {
        let additionals = [
            a("API-1.node.consul.", [10, 0, 0, 1], 30),
            a("api-2.node.consul.", [10, 0, 0, 2], 30),
            Record::from_rdata(
                name("api-1.node.consul"),
                7,
                RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
            ),
        ];
        assert_eq!(
            address_records(&additionals, Some(&name("api-1.node.consul."))),
            [
                (IpAddr::from([10, 0, 0, 1]), 30),
                (IpAddr::V6(Ipv6Addr::LOCALHOST), 7)
            ]
        );
        assert_eq!(address_records(&additionals, None).len(), 3);
    }

    #[test]
    fn answer_is_sorted_deduplicated_weighted_and_valid_for_the_shortest_ttl() {
        let answers = [srv(1, 3, 8080, "a.", 30), srv(1, 1, 8080, "b.", 20)];
        let resolved = [
            Resolved {
                port: 8080,
                weight: 3,
                addresses: vec![(IpAddr::from([10, 0, 0, 2]), 15)],
            },
            Resolved {
                port: 8080,
                weight: 1,
                addresses: vec![
                    (IpAddr::from([10, 0, 0, 1]), 40),
                    (IpAddr::from([10, 0, 0, 2]), 15),
                ],
            },
        ];
        let weighted = |text, weight| WeightedAddr {
            addr: addr(text),
            weight,
        };
        assert_eq!(
            to_answer(&answers, &resolved),
            Answer {
                endpoints: vec![weighted("10.0.0.1:8080", 1), weighted("10.0.0.2:8080", 3)],
                ttl: Duration::from_secs(15),
            }
        );
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
    ) -> (Vec<u64>, Vec<Vec<SocketAddr>>) {
        let start = Instant::now();
        let results = RefCell::new(VecDeque::from(results));
        let queries = RefCell::new(Vec::new());
        let mut applied = Vec::new();
        run(
            "test",
            BOUNDS,
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
            |endpoints| applied.push(endpoints.iter().map(|e| e.addr).collect()),
            tokio::time::sleep(total),
        )
        .await;
        (queries.into_inner(), applied)
    }

    #[tokio::test(start_paused = true)]
    async fn queries_again_when_the_ttl_expires_and_applies_only_changes() {
        let (queries, applied) = script(
            vec![
                answer(&["10.0.0.1:80"], 5),
                answer(&["10.0.0.1:80"], 0),
                answer(&["10.0.0.2:80"], 600),
            ],
            Duration::from_secs(130),
        )
        .await;
        assert_eq!(queries, [0, 5, 6, 66, 126]);
        assert_eq!(
            applied,
            [vec![addr("10.0.0.1:80")], vec![addr("10.0.0.2:80")]]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_keep_the_last_endpoints_and_retry_with_backoff() {
        let (queries, applied) = script(
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
        let (queries, applied) =
            script(vec![Err(DnsError::NoTargets)], Duration::from_secs(30)).await;
        assert_eq!(queries, [0, 1, 3, 7, 15, 25]);
        assert!(applied.is_empty());
    }
}
