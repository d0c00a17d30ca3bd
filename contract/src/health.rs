//! When a job counts as late or dead, from its checkpoint interval and timeout: one rule for the
//! worker's control API (`health: degraded`) and `/healthz` (the liveness probe), and for the
//! operator's `CheckpointsHealthy` condition (reason `CheckpointsLate`), so the three agree.

use std::time::Duration;

/// The least time without a commit that counts as late, whatever the interval: a job with a
/// 1 s interval is not late after 3 s of a slow store.
pub const LATE_FLOOR: Duration = Duration::from_secs(30);

/// The health rule of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthRule {
    /// `checkpoint.interval`.
    pub interval: Duration,
    /// `checkpoint.timeout`.
    pub timeout: Duration,
}

impl HealthRule {
    /// No commit for longer than this: late (`degraded`; the operator's `CheckpointsLate`):
    /// `max(3 × interval, 30 s)`. Saturating: the interval comes from a spec, and a health rule
    /// must never be where a bad value panics a process.
    pub fn late_after(&self) -> Duration {
        self.interval.saturating_mul(3).max(LATE_FLOOR)
    }

    /// No commit for longer than this: `/healthz` fails, so the liveness probe restarts the
    /// process, which resumes from the last committed checkpoint. One checkpoint timeout more
    /// than [`late_after`](Self::late_after): a checkpoint that may legitimately take up to
    /// `timeout` never fails the probe, and the operator reports late before the kubelet
    /// restarts anything.
    pub fn dead_after(&self) -> Duration {
        self.late_after().saturating_add(self.timeout)
    }

    /// Whether `since_last_commit` (time since the last commit, or since the start when none
    /// has committed yet) is late.
    pub fn is_late(&self, since_last_commit: Duration) -> bool {
        since_last_commit > self.late_after()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_is_three_intervals_with_a_floor_and_dead_adds_the_timeout() {
        let rule = |interval, timeout| HealthRule {
            interval: Duration::from_secs(interval),
            timeout: Duration::from_secs(timeout),
        };
        assert_eq!(rule(60, 0).late_after(), Duration::from_secs(180));
        assert_eq!(rule(1, 0).late_after(), LATE_FLOOR);
        assert_eq!(rule(60, 600).dead_after(), Duration::from_secs(780));
        assert!(!rule(60, 0).is_late(Duration::from_secs(180)));
        assert!(rule(60, 0).is_late(Duration::from_secs(181)));
        let huge = HealthRule {
            interval: Duration::MAX,
            timeout: Duration::MAX,
        };
        assert_eq!(huge.dead_after(), Duration::MAX);
    }
}
