//! What the admin JSON shows about an upstream's traffic since start: request
//! and error totals, a latency histogram, and the last few proxy-made errors.
//!
//! The observe layer records every finished request here; `/upstreams` and
//! `/errors` read it, and the dashboard turns the totals into rates and
//! percentiles by taking differences between two reads. The histogram has the
//! buckets of `remora_request_duration_seconds`; the error list is a ring of
//! [`RECENT_ERRORS`] entries, so memory stays bounded whatever the error rate.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use http::Method;

use crate::error::ErrorKind;
use crate::telemetry::metrics::DURATION_BUCKETS;

/// Proxy-made errors kept per upstream.
pub const RECENT_ERRORS: usize = 20;

/// Longest path kept in an error entry; longer ones are cut (and marked `…`).
const MAX_PATH: usize = 120;

/// Totals of one upstream's listener.
#[derive(Debug, Default)]
pub struct RequestTotals {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Requests per latency bucket: `DURATION_BUCKETS`, then one above 10 s.
    latency: [AtomicU64; DURATION_BUCKETS.len() + 1],
    recent_errors: Mutex<VecDeque<RecentError>>,
}

/// One response remora made itself.
#[derive(Debug, Clone)]
pub struct RecentError {
    pub at: SystemTime,
    pub kind: ErrorKind,
    pub status: u16,
    pub method: Method,
    /// The request path, without the query (which may carry secrets).
    pub path: String,
    /// The endpoint the failed try went to, when there was one.
    pub endpoint: Option<SocketAddr>,
}

/// The request a finished response answered, as the totals need it.
pub struct Finished<'a> {
    pub status: u16,
    pub duration: Duration,
    pub error: Option<ErrorKind>,
    pub method: &'a Method,
    pub path: &'a str,
    pub endpoint: Option<SocketAddr>,
}

impl RequestTotals {
    /// Counts one finished request.
    pub fn record(&self, finished: &Finished<'_>) {
        self.requests.fetch_add(1, Relaxed);
        let seconds = finished.duration.as_secs_f64();
        let bucket = DURATION_BUCKETS.partition_point(|&bound| bound < seconds);
        self.latency[bucket].fetch_add(1, Relaxed);
        let Some(kind) = finished.error else {
            return;
        };
        self.errors.fetch_add(1, Relaxed);
        let entry = RecentError {
            at: SystemTime::now(),
            kind,
            status: finished.status,
            method: finished.method.clone(),
            path: shortened(finished.path),
            endpoint: finished.endpoint,
        };
        let mut recent = self.recent_errors.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back(entry);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }

    /// Requests per latency bucket (not cumulative); the last one is above
    /// the largest bound.
    pub fn latency_counts(&self) -> Vec<u64> {
        self.latency
            .iter()
            .map(|count| count.load(Relaxed))
            .collect()
    }

    /// The last proxy-made errors, oldest first.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        let recent = self.recent_errors.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().cloned().collect()
    }
}

fn shortened(path: &str) -> String {
    if path.len() <= MAX_PATH {
        return path.to_owned();
    }
    let mut end = MAX_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(millis: u64, error: Option<ErrorKind>, path: &str) -> Finished<'_> {
        Finished {
            status: if error.is_some() { 503 } else { 200 },
            duration: Duration::from_millis(millis),
            error,
            method: &Method::GET,
            path,
            endpoint: None,
        }
    }

    #[test]
    fn latency_lands_in_the_bucket_whose_bound_covers_it() {
        let totals = RequestTotals::default();
        for millis in [0, 1, 3, 10, 20_000] {
            totals.record(&finished(millis, None, "/"));
        }
        let counts = totals.latency_counts();
        assert_eq!(counts.len(), 15);
        // 0 ms ≤ 0.5 ms; 1 ms ≤ 1 ms; 3 ms ≤ 5 ms; 10 ms ≤ 10 ms; 20 s above all.
        assert_eq!((counts[0], counts[1], counts[3], counts[4]), (1, 1, 1, 1));
        assert_eq!(counts[14], 1);
        assert_eq!(counts.iter().sum::<u64>(), 5);
        assert_eq!((totals.requests(), totals.errors()), (5, 0));
    }

    #[test]
    fn recent_errors_are_bounded_and_keep_the_newest() {
        let totals = RequestTotals::default();
        for i in 0..RECENT_ERRORS + 5 {
            let path = format!("/{i}");
            totals.record(&finished(1, Some(ErrorKind::Timeout), &path));
        }
        totals.record(&finished(1, None, "/ok"));
        let recent = totals.recent_errors();
        assert_eq!(recent.len(), RECENT_ERRORS);
        assert_eq!(recent[0].path, "/5");
        assert_eq!(
            recent[RECENT_ERRORS - 1].path,
            format!("/{}", RECENT_ERRORS + 4)
        );
        assert_eq!(totals.errors(), (RECENT_ERRORS + 5) as u64);
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        let long = "é".repeat(100);
        assert!(shortened(&long).ends_with('…'));
        assert!(shortened(&long).len() <= MAX_PATH + '…'.len_utf8());
        assert_eq!(shortened("/short"), "/short");
    }
}
