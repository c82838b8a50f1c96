//! The process-wide Prometheus recorder: installed once, its histogram
//! samples folded into buckets every second, rendered by the admin
//! listener's `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::telemetry::catalogue;
use crate::telemetry::metrics::{
    BUILD_INFO, DURATION_BUCKETS, ENDPOINT_REQUEST_DURATION, REQUEST_DURATION,
    ROUTE_REQUEST_DURATION,
};

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same
/// handle) and returns the handle that renders `/metrics`.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &DURATION_BUCKETS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(ENDPOINT_REQUEST_DURATION.into()),
                        &DURATION_BUCKETS,
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(ROUTE_REQUEST_DURATION.into()),
                        &DURATION_BUCKETS,
                    )
                })
                .map_err(|error| error.to_string())?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .map_err(|_| "another metrics recorder is already installed".to_owned())?;
            catalogue::describe();
            build_info();
            spawn_upkeep(handle.clone())?;
            Ok(handle)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Folds the histograms' samples into their buckets every
/// [`UPKEEP_INTERVAL`]. The recorder keeps every sample recorded until then
/// (two per request), and a scrape is what folded them before: unscraped,
/// 50,000 requests a second held 10 MB more every 5 s, for good.
fn spawn_upkeep(handle: PrometheusHandle) -> Result<(), String> {
    std::thread::Builder::new()
        .name("remora-metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        })
        .map(drop)
        .map_err(|error| format!("cannot start the metrics upkeep thread: {error}"))
}

/// Sets `remora_build_info{version}` to 1.
fn build_info() {
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}
