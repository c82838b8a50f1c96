//! One round of A/AAAA resolution of a hostname (`discovery.dns` with
//! `type: a`, and each hostname of a `discovery.static` list): its A and
//! AAAA records, asked for separately, become endpoints at the configured
//! port and weight.
//!
//! A family without records just contributes nothing: NODATA, or NXDOMAIN
//! (what a name gets for the family `/etc/hosts` does not list, when the
//! hosts file answers the other one — glibc too takes the file's word).
//! No address in either family, or either query failing (timeout,
//! SERVFAIL, REFUSED), fails the round, so that a transient failure of one
//! family never shrinks the set. The answer is valid for the shortest TTL
//! of the records.
//!
//! Order (RFC 8305 §4, happy eyeballs): IPv6 and IPv4 addresses alternate,
//! IPv6 first, each family sorted, so the endpoint list a balancer walks
//! reaches both families early; the same answer always gives the same list.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use super::{Answer, DnsError};
use crate::endpoint::WeightedAddr;

/// Resolves `name` to endpoints at `port`, each of `weight`.
pub(in crate::discovery) async fn lookup(
    resolver: &TokioResolver,
    name: &Name,
    port: u16,
    weight: u32,
) -> Result<Answer, DnsError> {
    // Every round asks the server; the TTL scheduling replaces the cache.
    resolver.clear_cache();
    let (v4, v6) = futures_util::future::join(
        family(resolver, name, RecordType::A),
        family(resolver, name, RecordType::AAAA),
    )
    .await;
    let records: Vec<Record> = v4?.into_iter().chain(v6?).collect();
    let addresses = address_records(&records, None);
    if addresses.is_empty() {
        return Err(DnsError::NoAddresses {
            name: name.to_string(),
        });
    }
    let ttl = records.iter().map(|record| record.ttl).min().unwrap_or(0);
    let ips = addresses.into_iter().map(|(ip, _)| ip).collect();
    let endpoints = happy_eyeballs_order(ips)
        .into_iter()
        .map(|ip| WeightedAddr {
            addr: SocketAddr::new(ip, port),
            weight,
        })
        .collect();
    Ok(Answer {
        endpoints,
        ttl: Duration::from_secs(u64::from(ttl)),
    })
}

/// The answer records of one family; none when the name has no record of
/// that type (NODATA, NXDOMAIN), an error when the query failed.
async fn family(
    resolver: &TokioResolver,
    name: &Name,
    record_type: RecordType,
) -> Result<Vec<Record>, DnsError> {
    match resolver.lookup(name.clone(), record_type).await {
        Ok(lookup) => Ok(lookup.answers().to_vec()),
        Err(error) if error.is_no_records_found() => Ok(Vec::new()),
        Err(source) => Err(DnsError::Addresses {
            name: name.to_string(),
            source: Box::new(source),
        }),
    }
}

/// A/AAAA records (for `name` when given) as (address, TTL).
pub(super) fn address_records(records: &[Record], name: Option<&Name>) -> Vec<(IpAddr, u32)> {
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

/// `ips` sorted within each family and deduplicated, IPv6 and IPv4
/// alternating, IPv6 first (RFC 8305 §4 with a first address family count
/// of 1).
fn happy_eyeballs_order(ips: Vec<IpAddr>) -> Vec<IpAddr> {
    let (mut v6, mut v4): (Vec<IpAddr>, Vec<IpAddr>) = ips.into_iter().partition(IpAddr::is_ipv6);
    for family in [&mut v6, &mut v4] {
        family.sort_unstable();
        family.dedup();
    }
    let mut ordered = Vec::with_capacity(v6.len() + v4.len());
    let (mut v6, mut v4) = (v6.into_iter(), v4.into_iter());
    loop {
        match (v6.next(), v4.next()) {
            (None, None) => return ordered,
            (six, four) => ordered.extend(six.into_iter().chain(four)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_resolver::proto::op::{Message, OpCode, ResponseCode};
    use hickory_resolver::proto::rr::rdata::A;

    use super::*;
    use crate::discovery::dns::{dns_name, resolver};

    /// A DNS server on 127.0.0.1 answering every A query with 10.0.0.1 and
    /// every AAAA query with `aaaa` (an empty answer).
    async fn server(aaaa: ResponseCode) -> SocketAddr {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buffer).await {
                let query = Message::from_vec(&buffer[..n]).expect("a query");
                let question = query.queries[0].clone();
                let mut reply = Message::response(query.metadata.id, OpCode::Query);
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                reply.add_query(question.clone());
                if question.query_type() == RecordType::A {
                    let a = RData::A(A(Ipv4Addr::new(10, 0, 0, 1)));
                    reply.add_answer(Record::from_rdata(question.name().clone(), 30, a));
                } else {
                    reply.metadata.response_code = aaaa;
                }
                let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_family_without_records_is_empty_and_a_failing_family_fails_the_round() {
        let name = dns_name("api.test.internal").unwrap();
        for (aaaa, resolves) in [
            (ResponseCode::NoError, true),
            (ResponseCode::NXDomain, true),
            (ResponseCode::ServFail, false),
            (ResponseCode::Refused, false),
        ] {
            let resolver = resolver(Some(server(aaaa).await)).unwrap();
            let answer = lookup(&resolver, &name, 80, 2).await;
            if resolves {
                let answer = answer.unwrap_or_else(|e| panic!("AAAA {aaaa}: {e}"));
                let expected = WeightedAddr {
                    addr: "10.0.0.1:80".parse().unwrap(),
                    weight: 2,
                };
                assert_eq!(answer.endpoints, [expected], "AAAA {aaaa}");
                assert_eq!(answer.ttl, Duration::from_secs(30));
            } else {
                assert!(
                    matches!(answer, Err(DnsError::Addresses { .. })),
                    "AAAA {aaaa}: {answer:?}"
                );
            }
        }
    }

    fn ips(texts: &[&str]) -> Vec<IpAddr> {
        texts.iter().map(|text| text.parse().unwrap()).collect()
    }

    #[test]
    fn families_alternate_ipv6_first_each_sorted() {
        assert_eq!(
            happy_eyeballs_order(ips(&["10.0.0.2", "10.0.0.1", "::2", "10.0.0.3", "::1"])),
            ips(&["::1", "10.0.0.1", "::2", "10.0.0.2", "10.0.0.3"])
        );
        assert_eq!(
            happy_eyeballs_order(ips(&["10.0.0.1", "::1", "::3", "::2", "::1"])),
            ips(&["::1", "10.0.0.1", "::2", "::3"])
        );
        assert_eq!(
            happy_eyeballs_order(ips(&["10.0.0.2", "10.0.0.1"])),
            ips(&["10.0.0.1", "10.0.0.2"])
        );
        assert!(happy_eyeballs_order(Vec::new()).is_empty());
    }
}
