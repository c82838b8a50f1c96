//! Transparent mode: the application calls any address as it always did,
//! iptables redirects the connection to remora, and remora finds where it was
//! going. Outbound connections reach the transparent listener
//! (`transparent.outbound_listen`, 127.0.0.1:15001), which recovers the
//! original destination (`original_dst`), detects the protocol (`detect`),
//! routes HTTP by Host / `:authority` or by destination and opaque TCP by
//! destination to an upstream (`routes`, `outbound`), and passes what matches
//! no upstream through to its original destination, or refuses it
//! (`passthrough`), or — with `unmatched: refuse` — lets through only what
//! the egress allow-list names (`egress`, reading a TLS ClientHello's server
//! name with `client_hello`). Inbound connections are redirected to the ordinary inbound
//! listener (15006). `iptables` generates, applies and removes the nat rules.

pub mod client_hello;
pub mod detect;
mod egress;
pub mod iptables;
pub mod original_dst;
pub mod outbound;
mod passthrough;
pub mod routes;
