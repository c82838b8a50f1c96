//! One round of SRV discovery: the SRV records of the name give targets
//! and ports, the targets' A/AAAA records (from the answer's additional
//! section, or looked up) give the addresses.
//!
//! Only the lowest SRV priority group is used (RFC 2782: higher priorities
//! are fallbacks). Each record's weight becomes the balancing weight of its
//! target's addresses; weight 0 ("very small chance" in RFC 2782) counts as
//! 1, the smallest weight the balancers know. The answer is valid for the
//! shortest TTL of the SRV records and the addresses used. A target whose
//! addresses cannot be looked up fails the whole round (the set is kept
//! rather than shrunk on a partial answer).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::future::try_join_all;
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{Name, RData, Record};

use super::address::address_records;
use super::{Answer, DnsError};
use crate::endpoint::WeightedAddr;

/// One round against the DNS server: SRV, then the targets' addresses.
pub(super) async fn lookup(resolver: &TokioResolver, name: &Name) -> Result<Answer, DnsError> {
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
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::str::FromStr;

    use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};

    use super::*;

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
}
