//! The fail-static bookkeeping every registry watch shares (Consul, etcd):
//! while the registry fails, the upstreams keep their last known endpoints;
//! a warning is logged when the watch starts failing and an info line when
//! it recovers — once per state change, never per attempt. Every failure
//! counts in `remora_discovery_errors_total{upstream}`, every answer sets
//! `remora_discovery_last_update_timestamp_seconds{upstream}`, and
//! `remora_discovery_watch_up{upstream}` is 1 while the watch answers, 0
//! before its first answer and while it fails.

use std::fmt::Display;
use std::sync::Arc;

use crate::discovery::{EndpointSink, Instance};
use crate::telemetry::metrics;

/// One watch's state and the upstreams it feeds.
pub struct FailStatic {
    /// `Consul` or `etcd`, for the log lines.
    registry: &'static str,
    service: String,
    upstreams: Vec<Arc<dyn EndpointSink>>,
    /// The upstreams' names joined, for the log lines.
    names: String,
    failing: bool,
    /// The set last handed to the upstreams.
    current: Option<Vec<Instance>>,
}

impl FailStatic {
    /// Shows the upstreams' discovery metrics before the first answer.
    pub fn new(
        registry: &'static str,
        service: &str,
        upstreams: Vec<Arc<dyn EndpointSink>>,
    ) -> FailStatic {
        for upstream in &upstreams {
            metrics::register_discovery(upstream.name());
        }
        let names: Vec<&str> = upstreams.iter().map(|u| u.name()).collect();
        let names = names.join(",");
        tracing::info!(service, upstreams = %names, "watching {registry}");
        FailStatic {
            registry,
            service: service.to_owned(),
            names,
            upstreams,
            failing: false,
            current: None,
        }
    }

    /// The registry answered (the set may be unchanged).
    pub fn answered(&mut self) {
        if self.failing {
            self.failing = false;
            tracing::info!(service = %self.service, upstreams = %self.names, "{} discovery recovered", self.registry);
        }
        for upstream in &self.upstreams {
            metrics::discovery_updated(upstream.name());
            metrics::set_discovery_watch_up(upstream.name(), true);
        }
    }

    /// Hands `instances` (sorted, see [`Instance::sorted`]) to the
    /// upstreams when they differ from the last set.
    pub fn publish(&mut self, instances: Vec<Instance>) {
        if self.current.as_ref() == Some(&instances) {
            return;
        }
        tracing::info!(service = %self.service, upstreams = %self.names, endpoints = instances.len(), "{} endpoints changed", self.registry);
        for upstream in &self.upstreams {
            upstream.set_instances(&instances);
        }
        self.current = Some(instances);
    }

    /// An attempt failed; the upstreams keep their endpoints.
    pub fn failed(&mut self, error: &dyn Display) {
        for upstream in &self.upstreams {
            metrics::discovery_error(upstream.name());
            metrics::set_discovery_watch_up(upstream.name(), false);
        }
        if !self.failing {
            self.failing = true;
            tracing::warn!(service = %self.service, upstreams = %self.names, %error, "{} discovery failing; keeping the last known endpoints", self.registry);
        }
    }
}
