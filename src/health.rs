//! The active health-check verdict of one endpoint (`health_check::` runs
//! the checks and feeds it). Lock-free: the balancer reads it on every pick.
//!
//! An endpoint of an upstream without checks is `unchecked` and always
//! admitted. One with checks starts `pending`. An endpoint of the upstream's
//! first set (at start, or when a reload rebuilds the endpoints) is admitted
//! while pending, as discovery or the configuration vouched for it: were the
//! first ones to pass their checks to take all the traffic, one endpoint could
//! get it all for up to the jitter. An endpoint that joins a running set
//! (`joining`, shown as `pending`) waits for its first result
//! (`awaits_first_check`): the balancer picks it only when no checked endpoint
//! can take the request (`balance::candidates`). The first check runs at once,
//! after at most the jitter, and its result decides at once. From then on a
//! passing endpoint turns `failing` after `unhealthy_threshold` failed checks
//! in a row, and a failing one `passing` after `healthy_threshold` passed
//! checks in a row. Only the endpoint's one checker writes.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering::Relaxed};

/// What the checks say of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The upstream has no active health checks.
    Unchecked,
    /// Checked, no result yet.
    Pending,
    Passing,
    Failing,
    /// Checked, no result yet, and joined a running endpoint set: picked
    /// only when no checked endpoint can be. Shown as `pending`.
    Joining,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Unchecked => "unchecked",
            Verdict::Pending | Verdict::Joining => "pending",
            Verdict::Passing => "passing",
            Verdict::Failing => "failing",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => Verdict::Pending,
            2 => Verdict::Passing,
            3 => Verdict::Failing,
            4 => Verdict::Joining,
            _ => Verdict::Unchecked,
        }
    }
}

/// How many results in a row turn the verdict.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub healthy: u32,
    pub unhealthy: u32,
}

/// The health-check state of one endpoint.
#[derive(Debug)]
pub struct HealthState {
    verdict: AtomicU8,
    /// Results in a row that disagree with the verdict.
    streak: AtomicU32,
}

impl Default for HealthState {
    fn default() -> Self {
        Self {
            verdict: AtomicU8::new(Verdict::Unchecked as u8),
            streak: AtomicU32::new(0),
        }
    }
}

impl HealthState {
    pub fn verdict(&self) -> Verdict {
        Verdict::from_u8(self.verdict.load(Relaxed))
    }

    /// True unless the checks say the endpoint is failing.
    pub fn admits(&self) -> bool {
        self.verdict() != Verdict::Failing
    }

    /// True while the endpoint, which joined a running set, has no result
    /// yet: it is picked only when no checked endpoint can be.
    pub fn awaits_first_check(&self) -> bool {
        self.verdict() == Verdict::Joining
    }

    /// Marks the endpoint as checked, its first result pending; `joined`
    /// when it joins a running endpoint set (see the module doc).
    pub fn start(&self, joined: bool) {
        self.set(if joined {
            Verdict::Joining
        } else {
            Verdict::Pending
        });
    }

    /// Counts one check result; returns the new verdict when it changed.
    pub fn record(&self, passed: bool, thresholds: Thresholds) -> Option<Verdict> {
        let next = match (self.verdict(), passed) {
            (Verdict::Pending | Verdict::Joining | Verdict::Unchecked, true) => Verdict::Passing,
            (Verdict::Pending | Verdict::Joining | Verdict::Unchecked, false) => Verdict::Failing,
            (Verdict::Passing, true) | (Verdict::Failing, false) => {
                self.streak.store(0, Relaxed);
                return None;
            }
            (current, _) => {
                let streak = self.streak.fetch_add(1, Relaxed) + 1;
                let needed = match current {
                    Verdict::Passing => thresholds.unhealthy,
                    _ => thresholds.healthy,
                };
                if streak < needed {
                    return None;
                }
                if passed {
                    Verdict::Passing
                } else {
                    Verdict::Failing
                }
            }
        };
        self.set(next);
        Some(next)
    }

    fn set(&self, verdict: Verdict) {
        self.streak.store(0, Relaxed);
        self.verdict.store(verdict as u8, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLDS: Thresholds = Thresholds {
        healthy: 2,
        unhealthy: 3,
    };

    #[test]
    fn the_first_result_decides_then_streaks_turn_the_verdict() {
        let state = HealthState::default();
        assert_eq!(state.verdict(), Verdict::Unchecked);
        state.start(false);
        assert!(state.admits(), "pending is admitted");
        assert!(!state.awaits_first_check(), "of the first set");
        assert_eq!(state.record(true, THRESHOLDS), Some(Verdict::Passing));
        assert_eq!(state.record(false, THRESHOLDS), None);
        assert_eq!(state.record(false, THRESHOLDS), None);
        assert_eq!(
            state.record(true, THRESHOLDS),
            None,
            "a pass resets the streak"
        );
        assert_eq!(state.record(false, THRESHOLDS), None);
        assert_eq!(state.record(false, THRESHOLDS), None);
        assert_eq!(state.record(false, THRESHOLDS), Some(Verdict::Failing));
        assert!(!state.admits());
        assert_eq!(state.record(true, THRESHOLDS), None);
        assert_eq!(state.record(false, THRESHOLDS), None);
        assert_eq!(state.record(true, THRESHOLDS), None);
        assert_eq!(state.record(true, THRESHOLDS), Some(Verdict::Passing));

        let new = HealthState::default();
        new.start(false);
        assert_eq!(new.record(false, THRESHOLDS), Some(Verdict::Failing));
    }

    #[test]
    fn an_endpoint_joining_a_running_set_awaits_only_its_first_result() {
        let joined = HealthState::default();
        joined.start(true);
        assert!(joined.awaits_first_check());
        assert_eq!(joined.record(true, THRESHOLDS), Some(Verdict::Passing));
        assert!(!joined.awaits_first_check());
        assert_eq!(joined.record(false, THRESHOLDS), None);
        assert!(
            !joined.awaits_first_check(),
            "a failure is not a first result"
        );
    }
}
