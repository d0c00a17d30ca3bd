//! The recovery-time objective (`checkpoint.targetRecoveryTime`, seed section 8.3): the
//! coordinator predicts how long recovery from a failure would take and sets the checkpoint
//! interval so that the prediction stays under the target at the lowest checkpoint cost.
//!
//! Recovery, as predicted and as measured (docs/recovery.md), runs from the failure until the
//! job has processed again everything it had processed before it. For a failure at the worst
//! moment, just before checkpoint `n + 1` commits:
//!
//! ```text
//! detect   assumed: a restart is noticed and started                  DETECT
//! restore  per process, in parallel: a fixed cost + state bytes / fetch rate
//! replay   per container: (interval + checkpoint duration) x busy fraction
//! ```
//!
//! The busy fraction (time spent processing / elapsed time) is the input rate divided by the
//! processing rate, so replaying `w` seconds of input takes `w x busy` seconds. The state
//! change rate enters through the measured checkpoint duration. Longer intervals cost less
//! (fewer uploads, fewer pauses), so the coordinator picks the longest interval whose
//! prediction fits the target with a margin, within `[minInterval, maxInterval]`.
//!
//! The estimates follow a rise at once and a fall slowly (each checkpoint may halve them): a
//! burst of input shortens the interval at the next commit, a quiet spell lengthens it only
//! gradually, and the interval grows at most twofold per checkpoint.

use std::time::Duration;

use cairn_contract::control::{PredictedRecovery, RecoveryObjective};
use cairn_contract::CheckpointSpec;

/// Assumed time from a failure to a restarted process: the kubelet restarts a crashed
/// container at once the first time (its back-off after repeated crashes is not modeled).
pub const DETECT: Duration = Duration::from_secs(2);
/// Fixed part of a restore: process start, RocksDB open, the source positioned.
pub const RESTORE_FIXED: Duration = Duration::from_millis(500);
/// Share of the target the prediction may use; the rest absorbs estimation error.
pub const MARGIN: f64 = 0.8;
/// A restore that fetched less than this measures latency, not throughput; the default fetch
/// rate is kept.
const MEASURED_FETCH_MIN_BYTES: u64 = 64 << 20;
/// Assumed fetch rates (bytes/s) until a restore of this process measures one, from
/// docs/benchmarks.md with room to spare: a `file://` store on a local or network volume, and
/// an object store.
const FILE_FETCH_RATE: f64 = 400e6;
const OBJECT_FETCH_RATE: f64 = 100e6;

/// What one committed checkpoint showed of one container (or of all the containers of one
/// process, for the restore).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ContainerLoad {
    /// Time the container's thread spent processing records, summed over its tasks.
    pub busy: Duration,
    /// The time that covers (the longest of its tasks' windows).
    pub window: Duration,
    /// State bytes its tasks' checkpoints reference: what a restore onto an empty volume
    /// fetches.
    pub state_bytes: u64,
    /// Which process restores it: containers of one process restore one after another.
    pub process: u32,
}

/// The objective of one job, kept by its coordinator.
#[derive(Debug, Clone)]
pub struct Objective {
    target: Duration,
    min: Duration,
    max: Duration,
    interval: Duration,
    fetch_rate: f64,
    /// Estimates, updated at each commit; `None` before the first.
    estimate: Option<Estimate>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Estimate {
    /// Highest busy fraction of a container, 0..=1.
    busy: f64,
    /// Trigger to commit, seconds.
    checkpoint_s: f64,
    /// Restore time of the slowest process, seconds.
    restore_s: f64,
}

impl Objective {
    /// The objective of `spec`, or `None` without `targetRecoveryTime`. `object_store`: the
    /// checkpoint store is an object store (sets the assumed fetch rate).
    pub fn for_spec(spec: &CheckpointSpec, object_store: bool) -> Option<Self> {
        let target = spec.target_recovery_time?;
        let (min, max) = spec.interval_bounds();
        Some(Objective {
            target,
            min,
            max,
            interval: spec.first_interval(),
            fetch_rate: if object_store {
                OBJECT_FETCH_RATE
            } else {
                FILE_FETCH_RATE
            },
            estimate: None,
        })
    }

    /// `checkpoint.targetRecoveryTime`.
    pub fn target(&self) -> Duration {
        self.target
    }

    /// The interval in force.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// This process's own restore: if it fetched enough to measure, its rate replaces the
    /// assumed one.
    pub fn restored(&mut self, fetched_bytes: u64, took: Duration) {
        if fetched_bytes >= MEASURED_FETCH_MIN_BYTES && !took.is_zero() {
            self.fetch_rate = fetched_bytes as f64 / took.as_secs_f64();
        }
    }

    /// A checkpoint committed after `took` (trigger to commit); `loads` has one entry per
    /// container. Returns the interval until the next one.
    pub fn committed(&mut self, took: Duration, loads: &[ContainerLoad]) -> Duration {
        let busy = loads
            .iter()
            .map(|l| ratio(l.busy, l.window))
            .fold(0.0, f64::max);
        let mut per_process = std::collections::BTreeMap::<u32, u64>::new();
        for l in loads {
            // Saturating: the sizes come from other processes.
            let bytes = per_process.entry(l.process).or_default();
            *bytes = bytes.saturating_add(l.state_bytes);
        }
        let largest = per_process.values().copied().max().unwrap_or(0);
        let sample = Estimate {
            busy,
            checkpoint_s: took.as_secs_f64(),
            restore_s: RESTORE_FIXED.as_secs_f64() + largest as f64 / self.fetch_rate,
        };
        // Up at once, down by at most half per checkpoint.
        let follow = |old: f64, new: f64| new.max(old / 2.0);
        let estimate = match self.estimate {
            None => sample,
            Some(old) => Estimate {
                busy: follow(old.busy, sample.busy),
                checkpoint_s: follow(old.checkpoint_s, sample.checkpoint_s),
                // The state's size is known, not estimated: no smoothing.
                restore_s: sample.restore_s,
            },
        };
        self.estimate = Some(estimate);
        self.interval = self.choose(estimate);
        self.interval
    }

    /// The longest interval whose prediction fits `MARGIN x target`, within the bounds and at
    /// most twice the current one.
    fn choose(&self, e: Estimate) -> Duration {
        let budget = self.target.as_secs_f64() * MARGIN - DETECT.as_secs_f64() - e.restore_s;
        let longest = if budget <= 0.0 {
            0.0
        } else if e.busy <= 0.0 {
            f64::INFINITY
        } else {
            budget / e.busy - e.checkpoint_s
        };
        let grown = self.interval.saturating_mul(2).as_secs_f64();
        let seconds = longest.min(grown).min(self.max.as_secs_f64()).max(0.0);
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(self.max)
            .max(self.min)
    }

    /// Whether a failure now would already take recovery past the budget, with `debt` the
    /// busiest container's busy time since the last trigger (what replaying its input would
    /// cost) and the input of one more checkpoint's duration. Before the first commit nothing
    /// else is known and the restore counts its fixed part only, so that a busy job restarted
    /// with a long first `interval` still checkpoints in time.
    pub fn overdue(&self, debt: Duration) -> bool {
        let (restore_s, checkpoint_replay_s) = match self.estimate {
            Some(e) => (e.restore_s, e.checkpoint_s * e.busy),
            None => (RESTORE_FIXED.as_secs_f64(), 0.0),
        };
        let predicted = DETECT.as_secs_f64() + restore_s + debt.as_secs_f64() + checkpoint_replay_s;
        predicted >= self.target.as_secs_f64() * MARGIN
    }

    fn predict(&self, e: Estimate) -> PredictedRecovery {
        let ms = |s: f64| (s * 1000.0).round() as u64;
        let detect_ms = DETECT.as_millis() as u64;
        let restore_ms = ms(e.restore_s);
        let replay_ms = ms((self.interval.as_secs_f64() + e.checkpoint_s) * e.busy);
        PredictedRecovery {
            detect_ms,
            restore_ms,
            replay_ms,
            total_ms: detect_ms + restore_ms + replay_ms,
        }
    }

    /// What `/v1/status` and the StreamJob's status show.
    pub fn status(&self) -> RecoveryObjective {
        let (predicted, problem) = match self.estimate {
            None => (
                None,
                Some(
                    "no checkpoint has committed yet: nothing is measured to predict from"
                        .to_owned(),
                ),
            ),
            Some(e) => {
                let p = self.predict(e);
                let over = p.total_ms > self.target.as_millis() as u64;
                let problem = over.then(|| self.why_over(&p, e));
                (Some(p), problem)
            }
        };
        RecoveryObjective {
            target_ms: self.target.as_millis() as u64,
            interval_ms: self.interval.as_millis() as u64,
            predicted,
            problem,
        }
    }

    /// Why a prediction is over the target, and what would help.
    fn why_over(&self, p: &PredictedRecovery, e: Estimate) -> String {
        let budget_ms = (self.target.as_secs_f64() * MARGIN * 1000.0) as u64;
        if p.detect_ms + p.restore_ms >= budget_ms {
            format!(
                "restarting and restoring alone take {:.1}s (the slowest process fetches its state at {:.0} MB/s): raise targetRecoveryTime, or spread the state over more containers (parallelism) so each fetches less",
                (p.detect_ms + p.restore_ms) as f64 / 1000.0,
                self.fetch_rate / 1e6
            )
        } else {
            format!(
                "the busiest container processes for {:.0}% of the time, so even at minInterval ({}) replaying the input since the last checkpoint takes {:.1}s: raise targetRecoveryTime, lower minInterval, or add parallelism",
                e.busy * 100.0,
                cairn_contract::units::format_duration(self.min),
                p.replay_ms as f64 / 1000.0
            )
        }
    }

    /// The prediction in seconds (-1 before there is one), for the metrics.
    pub fn predicted_seconds(&self) -> f64 {
        self.estimate
            .map_or(-1.0, |e| self.predict(e).total_ms as f64 / 1000.0)
    }
}

/// `part / whole`, within 0..=1 (0 for an empty window).
fn ratio(part: Duration, whole: Duration) -> f64 {
    if whole.is_zero() {
        return 0.0;
    }
    (part.as_secs_f64() / whole.as_secs_f64()).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target_s: u64, interval_s: u64) -> CheckpointSpec {
        CheckpointSpec {
            interval: Duration::from_secs(interval_s),
            target_recovery_time: Some(Duration::from_secs(target_s)),
            ..Default::default()
        }
    }

    fn load(busy_ms: u64, window_ms: u64, state_bytes: u64, process: u32) -> ContainerLoad {
        ContainerLoad {
            busy: Duration::from_millis(busy_ms),
            window: Duration::from_millis(window_ms),
            state_bytes,
            process,
        }
    }

    #[test]
    fn no_target_no_objective_and_the_first_interval_is_inside_the_bounds() {
        assert!(Objective::for_spec(&CheckpointSpec::default(), false).is_none());
        let o = Objective::for_spec(&spec(30, 60), false).unwrap();
        assert_eq!(o.interval(), Duration::from_secs(60));
        let mut s = spec(30, 60);
        s.max_interval = Some(Duration::from_secs(20));
        assert_eq!(
            Objective::for_spec(&s, false).unwrap().interval(),
            Duration::from_secs(20)
        );
        let status = Objective::for_spec(&s, false).unwrap().status();
        assert_eq!(status.met(), None);
        assert!(status.problem.unwrap().contains("no checkpoint"));
    }

    /// The interval solves detect + restore + (interval + checkpoint) x busy = margin x target.
    #[test]
    fn the_interval_is_the_longest_that_fits_the_target() {
        let mut o = Objective::for_spec(&spec(30, 10), false).unwrap();
        // 40 MB at 400 MB/s: restore 0.5 + 0.1 s. Busy 50%, checkpoint 1 s.
        // budget = 24 - 2 - 0.6 = 21.4 s; interval = 21.4 / 0.5 - 1 = 41.8 s, but at most
        // twice the current 10 s.
        let i = o.committed(
            Duration::from_secs(1),
            &[load(5_000, 10_000, 40_000_000, 0)],
        );
        assert_eq!(i, Duration::from_secs(20));
        let i = o.committed(
            Duration::from_secs(1),
            &[load(5_000, 10_000, 40_000_000, 0)],
        );
        assert!((i.as_secs_f64() - 40.0).abs() < 1e-9, "{i:?}");
        let i = o.committed(
            Duration::from_secs(1),
            &[load(5_000, 10_000, 40_000_000, 0)],
        );
        assert!((i.as_secs_f64() - 41.8).abs() < 1e-6, "{i:?}");
        let status = o.status();
        let p = status.predicted.clone().unwrap();
        assert_eq!((p.detect_ms, p.restore_ms), (2_000, 600));
        assert_eq!(p.replay_ms, 21_400);
        assert_eq!(p.total_ms, 24_000);
        assert_eq!(status.met(), Some(true));
        assert_eq!(status.problem, None);
    }

    #[test]
    fn a_doubled_input_rate_halves_the_replay_budget_at_once_and_a_fall_recovers_slowly() {
        let mut o = Objective::for_spec(&spec(20, 5), false).unwrap();
        let steady = |o: &mut Objective, busy_ms| {
            o.committed(Duration::ZERO, &[load(busy_ms, 10_000, 0, 0)])
        };
        for _ in 0..10 {
            steady(&mut o, 2_000);
        }
        // budget 16 - 2 - 0.5 = 13.5 s; busy 0.2: 67.5 s.
        assert!((o.interval().as_secs_f64() - 67.5).abs() < 1e-6);
        // The rate doubles: busy 0.4, interval 33.75 s at the next commit.
        assert!((steady(&mut o, 4_000).as_secs_f64() - 33.75).abs() < 1e-6);
        assert!(o.status().met().unwrap());
        // It halves again: the estimate falls by half per commit, never below the sample.
        assert!((steady(&mut o, 2_000).as_secs_f64() - 67.5).abs() < 1e-6);
        // A nearly idle spell lengthens the interval twofold per commit, up to maxInterval.
        let mut last = o.interval();
        for _ in 0..10 {
            let next = steady(&mut o, 0);
            assert!(next <= last * 2);
            last = next;
        }
        assert_eq!(last, DEFAULT_MAX);
    }
    const DEFAULT_MAX: Duration = cairn_contract::DEFAULT_MAX_INTERVAL;

    /// A rise of the input rate after a commit is seen before the next one: the replay debt
    /// (busy time since the trigger) reaches the budget early.
    #[test]
    fn a_replay_debt_past_the_budget_is_overdue() {
        let mut o = Objective::for_spec(&spec(20, 5), false).unwrap();
        // Before any commit: detect and the fixed restore leave 16 - 2 - 0.5 = 13.5 s.
        assert!(!o.overdue(Duration::from_millis(13_400)));
        assert!(o.overdue(Duration::from_millis(13_500)));
        // 40 MB to fetch (0.1 s) and 1 s checkpoints at 20% busy (0.2 s): 13.2 s left.
        o.committed(
            Duration::from_secs(1),
            &[load(2_000, 10_000, 40_000_000, 0)],
        );
        assert!(!o.overdue(Duration::from_millis(13_150)));
        assert!(o.overdue(Duration::from_millis(13_250)));
    }

    #[test]
    fn an_unreachable_target_takes_min_interval_and_says_why() {
        // Saturated: busy 100%, and a checkpoint takes 10 s: even minInterval (1 s) replays 11 s.
        let mut o = Objective::for_spec(&spec(10, 5), false).unwrap();
        let i = o.committed(Duration::from_secs(10), &[load(9_000, 9_000, 0, 0)]);
        assert_eq!(i, Duration::from_secs(1));
        let status = o.status();
        assert_eq!(status.met(), Some(false));
        assert!(
            status
                .problem
                .as_deref()
                .unwrap()
                .contains("processes for 100%"),
            "{status:?}"
        );

        // State too large to fetch: 20 GB over an object store at the assumed 100 MB/s.
        let mut o = Objective::for_spec(&spec(60, 5), true).unwrap();
        o.committed(Duration::ZERO, &[load(0, 1_000, 20_000_000_000, 0)]);
        let status = o.status();
        assert_eq!(status.met(), Some(false));
        assert!(status.problem.unwrap().contains("restoring alone"));
    }

    #[test]
    fn containers_of_one_process_restore_together_and_a_measured_fetch_rate_is_used() {
        let mut o = Objective::for_spec(&spec(60, 5), false).unwrap();
        o.restored(1 << 20, Duration::from_millis(1)); // too small to measure
        o.restored(800_000_000, Duration::from_secs(1)); // 800 MB/s
        o.committed(
            Duration::ZERO,
            &[
                load(0, 1_000, 400_000_000, 0),
                load(0, 1_000, 400_000_000, 0),
                load(0, 1_000, 600_000_000, 1),
            ],
        );
        // Process 0 fetches 800 MB in 1 s.
        assert_eq!(o.status().predicted.unwrap().restore_ms, 1_500);
    }
}
