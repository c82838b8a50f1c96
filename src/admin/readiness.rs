//! `/ready`: ready once every listener is bound, every upstream of the
//! running configuration has at least one endpoint and the mesh TLS
//! certificate (when configured) is loaded; not ready again as soon as the
//! drain starts, so load balancers and Kubernetes stop sending new traffic.
//!
//! Endpoints count at start only, as Envoy's initial cluster warming does:
//! once ready, an upstream losing all its endpoints (a callee scaled to
//! zero, an emptied etcd prefix) does not make this sidecar unready. It
//! answers 503 `no_endpoints` to the requests for that upstream, but its
//! own service still serves, and taking every caller's pod out of its
//! load balancers would spread one service's outage to its callers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::tls::MeshTls;
use crate::upstream::UpstreamSet;

pub struct Readiness {
    listening: AtomicBool,
    draining: AtomicBool,
    /// Has been ready once: endpoints no longer count.
    started: AtomicBool,
    upstreams: Arc<UpstreamSet>,
    tls: Option<Arc<MeshTls>>,
}

impl Readiness {
    pub fn new(upstreams: Arc<UpstreamSet>, tls: Option<Arc<MeshTls>>) -> Self {
        Self {
            listening: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            started: AtomicBool::new(false),
            upstreams,
            tls,
        }
    }

    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Why the proxy is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.draining.load(Ordering::Acquire) {
            return Some("draining".into());
        }
        if !self.listening.load(Ordering::Acquire) {
            return Some("listeners not bound yet".into());
        }
        if self.tls.as_ref().is_some_and(|tls| tls.current().is_none()) {
            return Some("TLS certificate not loaded yet".into());
        }
        if self.started.load(Ordering::Acquire) {
            return None;
        }
        let upstreams = self.upstreams.load();
        let empty: Vec<&str> = upstreams
            .iter()
            .filter(|upstream| upstream.endpoint_count() == 0)
            .map(|upstream| upstream.name())
            .collect();
        if empty.is_empty() {
            self.started.store(true, Ordering::Release);
            return None;
        }
        Some(format!("no endpoints for {}", empty.join(", ")))
    }
}
