//! `/ready`: ready once every listener is bound, every upstream has at
//! least one endpoint and the mesh TLS certificate (when configured) is loaded; not ready again as soon as the drain starts, so load
//! balancers and Kubernetes stop sending new traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::tls::MeshTls;
use crate::upstream::Upstream;

pub struct Readiness {
    listening: AtomicBool,
    draining: AtomicBool,
    upstreams: Vec<Arc<Upstream>>,
    tls: Option<Arc<MeshTls>>,
}

impl Readiness {
    pub fn new(upstreams: Vec<Arc<Upstream>>, tls: Option<Arc<MeshTls>>) -> Self {
        Self {
            listening: AtomicBool::new(false),
            draining: AtomicBool::new(false),
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
        let empty: Vec<&str> = self
            .upstreams
            .iter()
            .filter(|upstream| upstream.endpoint_count() == 0)
            .map(|upstream| upstream.name())
            .collect();
        (!empty.is_empty()).then(|| format!("no endpoints for {}", empty.join(", ")))
    }
}
