//! remora: a sidecar service-mesh proxy. One static binary, one YAML file.
//!
//! The request path reads top-down: `server` accepts connections, `stack`
//! composes the middleware of each direction, `forward` balances and sends,
//! `endpoint` and `client` hold the upstream connections. See
//! `docs/request-path.md` for the full picture, and `docs/architecture.md`
//! for the layers (lower modules never import higher ones: the order is in
//! `scripts/layers.sh`), the layout, and where new code goes.

#![forbid(unsafe_code)]

pub mod accept;
pub mod admin;
pub mod app;
pub mod backoff;
pub mod balance;
pub mod body;
pub mod client;
pub mod clock;
pub mod config;
pub mod consul;
pub mod context;
pub mod demo;
pub mod discovery;
pub mod drain;
pub mod endpoint;
pub mod error;
pub mod etcd;
pub mod forward;
pub mod headers;
pub mod health;
pub mod health_check;
pub mod http1;
pub mod http2;
pub mod http_connection;
pub mod idle;
pub mod live;
pub mod middleware;
pub mod outcome;
pub mod outlier;
pub mod path_normalize;
pub mod registration;
pub mod reload;
pub mod request_head;
pub mod request_match;
pub mod resend;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod spiffe;
pub mod stack;
pub mod svc;
pub mod tap_cli;
pub mod task;
pub mod tcp;
pub mod telemetry;
pub mod timer;
pub mod tls;
pub mod transparent;
pub mod upgrade;
pub mod upstream;
pub mod woken;
