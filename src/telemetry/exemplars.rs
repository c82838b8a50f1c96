//! Trace-id exemplars of the request-duration histograms: per series, the
//! latest sampled request of each bucket (trace id, duration, time), kept
//! beside the recorder's histogram and attached to its bucket lines when
//! `/metrics` is asked for OpenMetrics (`openmetrics`).
//!
//! A series' exemplars are created with its histogram handle (once per
//! listener, route and status code) and registered under the series' labels;
//! recording one is a `try_lock` of its bucket's slot (skipped, never waited
//! for, when a scrape or another request holds it).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::telemetry::metrics::DURATION_BUCKETS;

/// One bucket's latest exemplar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    pub trace_id: u128,
    /// The request's duration, in seconds.
    pub value: f64,
    /// When it was recorded, in seconds since the Unix epoch.
    pub timestamp: f64,
}

/// The exemplars of one histogram series: one slot per bucket of
/// [`DURATION_BUCKETS`], and one for `+Inf`.
pub struct SeriesExemplars {
    slots: [Mutex<Option<Exemplar>>; DURATION_BUCKETS.len() + 1],
}

impl SeriesExemplars {
    /// The exemplars of the series `name{labels}` (labels without `le`),
    /// registered for the OpenMetrics rendering.
    pub fn register(name: &'static str, labels: &[(&'static str, String)]) -> Arc<Self> {
        let exemplars = Arc::new(Self {
            slots: std::array::from_fn(|_| Mutex::new(None)),
        });
        let key = series_key(name, labels.iter().map(|(k, v)| (*k, v.as_str())));
        registry()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key, Arc::clone(&exemplars));
        exemplars
    }

    /// Keeps `trace_id` as the exemplar of the bucket `duration` falls in.
    pub fn record(&self, trace_id: u128, duration: Duration) {
        let value = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(DURATION_BUCKETS.len());
        if let Ok(mut slot) = self.slots[bucket].try_lock() {
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            *slot = Some(Exemplar {
                trace_id,
                value,
                timestamp,
            });
        }
    }

    /// The exemplar of the bucket whose upper bound is `le` (`+Inf` for the
    /// last), if one was recorded.
    fn of_bucket(&self, le: &str) -> Option<Exemplar> {
        let bucket = if le == "+Inf" {
            DURATION_BUCKETS.len()
        } else {
            let bound: f64 = le.parse().ok()?;
            DURATION_BUCKETS.iter().position(|b| *b == bound)?
        };
        *self.slots[bucket]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The exemplar of the bucket `le` of series `name{labels}` (labels without
/// `le`, any order).
pub fn lookup<'a>(
    name: &str,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    le: &str,
) -> Option<Exemplar> {
    let key = series_key(name, labels);
    let series = registry()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&key)
        .cloned()?;
    series.of_bucket(le)
}

/// Metric name and sorted label pairs: one series.
type SeriesKey = (String, BTreeMap<String, String>);

fn series_key<'a>(name: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> SeriesKey {
    (
        name.to_owned(),
        labels
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect(),
    )
}

fn registry() -> &'static Mutex<HashMap<SeriesKey, Arc<SeriesExemplars>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<SeriesKey, Arc<SeriesExemplars>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_exemplar_of_the_bucket_a_duration_falls_in() {
        let labels = [
            ("upstream", "exemplar-unit".to_owned()),
            ("code", "200".to_owned()),
        ];
        let series = SeriesExemplars::register("remora_test_seconds", &labels);
        series.record(1, Duration::from_millis(3));
        series.record(2, Duration::from_millis(4));
        series.record(3, Duration::from_secs(60));
        let find = |le| {
            lookup(
                "remora_test_seconds",
                [("code", "200"), ("upstream", "exemplar-unit")].into_iter(),
                le,
            )
        };
        let in_5ms = find("0.005").expect("an exemplar in the 5 ms bucket");
        assert_eq!((in_5ms.trace_id, in_5ms.value), (2, 0.004));
        assert_eq!(find("0.0025"), None);
        assert_eq!(find("+Inf").map(|e| e.trace_id), Some(3));
        assert_eq!(find("0.123"), None);
    }
}
