//! How many healthy instances this sidecar's own service (`service.name`)
//! has, as discovery sees them: what `rate_limit.scope: service` divides a
//! service-wide rate by. One count in the process ([`ServiceInstances::own`]),
//! fed by whichever discovery watches the service (an [`EndpointSink`]: the
//! Consul or the etcd watch of `service.name`, see `live::registry`) and read
//! by every rate limiter of scope `service`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use crate::discovery::{EndpointSink, Instance};
use crate::endpoint::WeightedAddr;
use crate::telemetry::metrics;

/// The healthy instances of this sidecar's service.
pub struct ServiceInstances {
    /// 0 until discovery first answered.
    count: AtomicU32,
}

impl ServiceInstances {
    /// The count of this sidecar's service, shared by the whole process.
    pub fn own() -> Arc<ServiceInstances> {
        static OWN: OnceLock<Arc<ServiceInstances>> = OnceLock::new();
        Arc::clone(OWN.get_or_init(|| {
            Arc::new(ServiceInstances {
                count: AtomicU32::new(0),
            })
        }))
    }

    /// The instances to divide a service-wide rate among: at least 1 (before
    /// discovery answered, or when it lists none — this instance not yet
    /// passing its checks — this sidecar takes the whole rate).
    pub fn divisor(&self) -> u32 {
        self.count.load(Ordering::Acquire).max(1)
    }

    fn set(&self, count: usize) {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        self.count.store(count, Ordering::Release);
        metrics::service_instances(count);
    }
}

impl EndpointSink for ServiceInstances {
    fn name(&self) -> &str {
        "own service"
    }

    fn set_weighted_endpoints(&self, endpoints: &[WeightedAddr]) {
        self.set(endpoints.len());
    }

    fn set_instances(&self, instances: &[Instance]) {
        self.set(instances.len());
    }
}
