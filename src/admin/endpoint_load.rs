//! `remora_endpoint_in_flight` on `/metrics`: each endpoint's in-flight count,
//! read from the endpoint's own load figures when `/metrics` is scraped
//! rather than recorded by every request, so it costs requests nothing and
//! lists exactly the endpoints there are now.

use std::sync::{Arc, Weak};

use crate::telemetry::catalogue::{self, Sample};
use crate::telemetry::metrics::ENDPOINT_IN_FLIGHT;
use crate::upstream::Upstream;

/// The family as Prometheus text: every upstream's endpoints, then the
/// routing backends' own upstreams'.
pub fn render(upstreams: &[Arc<Upstream>], backends: &[Weak<Upstream>]) -> String {
    let mut samples = Vec::new();
    for upstream in super::every_upstream(upstreams, backends) {
        for endpoint in upstream.balancer().targets().iter() {
            samples.push(Sample {
                labels: vec![
                    ("upstream", upstream.name().to_owned()),
                    ("endpoint", endpoint.addr.to_string()),
                ],
                value: f64::from(endpoint.load.in_flight()),
            });
        }
    }
    let mut out = String::new();
    catalogue::write_family(&mut out, ENDPOINT_IN_FLIGHT, &samples);
    out
}
