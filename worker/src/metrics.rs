//! Prometheus metrics of a worker process. Counters are bumped once per batch, not per record,
//! so they stay off the hot path.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Files of the checkpoint store found corrupt (size or CRC32C not what the manifest records)
/// while a local copy kept the checkpoint restorable. Process-wide, because restore runs before
/// a job's [`Metrics`] are handed around; every [`Metrics`] registry exports it.
pub fn store_corrupt_files() -> &'static IntCounter {
    static COUNTER: std::sync::OnceLock<IntCounter> = std::sync::OnceLock::new();
    COUNTER.get_or_init(|| {
        IntCounter::new(
            "cairn_checkpoint_store_corrupt_files_total",
            "Checkpoint store files found corrupt at restore while an identical local copy \
             existed; the next checkpoint uploads them again",
        )
        .expect("valid metric")
    })
}

/// Every metric the worker exports.
pub struct Metrics {
    /// The registry served at `/metrics`.
    pub registry: Registry,
    /// Records read, by task.
    pub records_in: IntCounterVec,
    /// Records emitted, by task.
    pub records_out: IntCounterVec,
    /// Records skipped as bad input, by task.
    pub bad_records: IntCounterVec,
    /// Records (generator) or bytes (file) not read yet, by task.
    pub lag: IntGaugeVec,
    /// Records a task dropped as late (behind its watermark beyond the allowed lateness).
    pub late_records: IntCounterVec,
    /// The task's watermark, ms since the epoch (jobs with event time; absent until known).
    pub watermark: IntGaugeVec,
    /// Wall-clock time minus the task's watermark, ms (how far event time is behind).
    pub event_time_lag: IntGaugeVec,
    /// Time to process one batch of records.
    pub batch_seconds: Histogram,
    /// Checkpoint synchronous pause per task.
    pub sync_seconds: Histogram,
    /// Checkpoint asynchronous phase per task.
    pub async_seconds: Histogram,
    /// Bytes uploaded to the checkpoint store.
    pub uploaded_bytes: IntCounter,
    /// Checkpoints by result (committed, aborted).
    pub checkpoints: IntCounterVec,
    /// Id of the last committed checkpoint.
    pub last_committed_id: IntGauge,
    /// Unix time of the last commit.
    pub last_committed_timestamp: Gauge,
    /// Seconds since the last commit, computed at scrape time.
    pub last_committed_age: Gauge,
    /// State bytes referenced by the last committed checkpoint.
    pub last_committed_bytes: IntGauge,
    /// Duration of the restore at start-up.
    pub restore_seconds: Gauge,
    /// From the previous run's last progress mark to this start; -1 when unknown
    /// (`runtime::recovery`).
    pub recovery_detect_seconds: Gauge,
    /// Bytes of state fetched from the checkpoint store at start-up.
    pub recovery_fetched_bytes: IntGauge,
    /// Input offsets processed again since the restored checkpoint; -1 when unknown.
    pub recovery_replay_offsets: IntGauge,
    /// From the process's start to the task's first record, by task; -1 until then.
    pub task_resumed_ms: IntGaugeVec,
    /// From the process's start until the task is back where the previous run had got to, by
    /// task; -1 until then, and for good when the previous run left no mark.
    pub task_caught_up_ms: IntGaugeVec,
    /// The checkpoint interval in force (adapted under a recovery-time objective).
    pub checkpoint_interval_seconds: Gauge,
    /// The recovery-time objective; -1 without one.
    pub recovery_target_seconds: Gauge,
    /// The recovery time predicted for a failure now; -1 without an objective or before the
    /// first commit.
    pub recovery_predicted_seconds: Gauge,
    /// Partition count of the input as last observed (a Kafka topic that grew shows more than
    /// the job's N); 0 until known.
    pub input_partitions_observed: IntGauge,
    /// Warm standbys holding a committed checkpoint (the coordinator's process).
    pub standbys_warm: IntGauge,
    /// Bytes a warm standby fetched while following commits (the standby's process).
    pub standby_fetched_bytes: IntCounter,
    /// The newest committed checkpoint a warm standby holds; -1 until it holds one (the
    /// standby's process).
    pub standby_checkpoint: IntGauge,
    /// Whether checkpoints still commit, for `/healthz`.
    pub liveness: Liveness,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let task = &["task"];
        let counter_vec = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), task).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str| {
            let h = Histogram::with_opts(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let gauge = |name: &str, help: &str| {
            let g = Gauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let int_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let int_counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge_vec = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), task).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let lag = gauge_vec("cairn_task_lag", "Records or bytes not read yet");
        let uploaded_bytes = IntCounter::new(
            "cairn_checkpoint_uploaded_bytes_total",
            "Bytes uploaded to the checkpoint store",
        )
        .expect("valid metric");
        registry
            .register(Box::new(uploaded_bytes.clone()))
            .expect("unique metric");
        let checkpoints = IntCounterVec::new(
            Opts::new(
                "cairn_checkpoints_total",
                "Checkpoints by result: committed, aborted, skipped (a container not connected)",
            ),
            &["result"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(checkpoints.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(store_corrupt_files().clone()))
            .expect("unique metric");
        Metrics {
            records_in: counter_vec("cairn_records_in_total", "Records read"),
            records_out: counter_vec("cairn_records_out_total", "Records emitted"),
            bad_records: counter_vec("cairn_bad_records_total", "Records skipped as bad input"),
            lag,
            late_records: counter_vec(
                "cairn_late_records_total",
                "Records dropped as late: behind the watermark beyond the allowed lateness",
            ),
            watermark: gauge_vec(
                "cairn_watermark_milliseconds",
                "The task's event-time watermark, ms since the Unix epoch",
            ),
            event_time_lag: gauge_vec(
                "cairn_event_time_lag_milliseconds",
                "Wall-clock time minus the task's watermark, ms",
            ),
            batch_seconds: histogram(
                "cairn_batch_process_seconds",
                "Time to process one batch of records",
            ),
            sync_seconds: histogram(
                "cairn_checkpoint_sync_seconds",
                "Checkpoint synchronous pause per task",
            ),
            async_seconds: histogram(
                "cairn_checkpoint_async_seconds",
                "Checkpoint asynchronous phase per task",
            ),
            uploaded_bytes,
            checkpoints,
            last_committed_id: int_gauge(
                "cairn_checkpoint_last_committed_id",
                "Id of the last committed checkpoint",
            ),
            last_committed_timestamp: gauge(
                "cairn_checkpoint_last_committed_timestamp_seconds",
                "Unix time of the last committed checkpoint",
            ),
            last_committed_age: gauge(
                "cairn_checkpoint_last_committed_age_seconds",
                "Seconds since the last commit",
            ),
            last_committed_bytes: int_gauge(
                "cairn_checkpoint_last_committed_bytes",
                "State bytes referenced by the last committed checkpoint",
            ),
            restore_seconds: gauge(
                "cairn_restore_seconds",
                "Duration of the restore at start-up",
            ),
            recovery_detect_seconds: gauge(
                "cairn_recovery_detect_seconds",
                "From the previous run's last progress mark to this process's start (failure, \
                 detection, restart); -1 when unknown",
            ),
            recovery_fetched_bytes: int_gauge(
                "cairn_recovery_fetched_bytes",
                "Bytes of state fetched from the checkpoint store at start-up",
            ),
            recovery_replay_offsets: int_gauge(
                "cairn_recovery_replay_offsets",
                "Input (records, or bytes of a file) between the restored checkpoint and where \
                 the previous run had got to; -1 when unknown",
            ),
            task_resumed_ms: gauge_vec(
                "cairn_task_resumed_milliseconds",
                "From the process's start to the task's first processed record; -1 until then",
            ),
            task_caught_up_ms: gauge_vec(
                "cairn_task_caught_up_milliseconds",
                "From the process's start until the task is back at the input position the \
                 previous run had reached; -1 until then or when unknown",
            ),
            checkpoint_interval_seconds: gauge(
                "cairn_checkpoint_interval_seconds",
                "The checkpoint interval in force (adapted under checkpoint.targetRecoveryTime)",
            ),
            recovery_target_seconds: gauge(
                "cairn_recovery_target_seconds",
                "checkpoint.targetRecoveryTime; -1 without one",
            ),
            recovery_predicted_seconds: gauge(
                "cairn_recovery_predicted_seconds",
                "Recovery time predicted for a failure just before the next commit (detect + \
                 restore + replay, docs/recovery.md); -1 without an objective or a commit yet",
            ),
            input_partitions_observed: int_gauge(
                "cairn_input_partitions_observed",
                "Partition count of the input as last observed (a Kafka topic that grew shows \
                 more than the job's input.partitions); 0 until known",
            ),
            standbys_warm: int_gauge(
                "cairn_standbys_warm",
                "Warm standbys connected that hold a committed checkpoint (docs/recovery.md)",
            ),
            standby_fetched_bytes: int_counter(
                "cairn_standby_fetched_bytes_total",
                "Bytes this warm standby fetched while following committed checkpoints",
            ),
            standby_checkpoint: {
                let g = int_gauge(
                    "cairn_standby_checkpoint",
                    "The newest committed checkpoint this warm standby holds; -1 until it \
                     holds one, and in every process that is not a standby",
                );
                g.set(-1);
                g
            },
            registry,
            liveness: Liveness::default(),
        }
    }

    /// The text exposition, refreshing time-derived gauges first.
    pub fn render(&self) -> String {
        let ts = self.last_committed_timestamp.get();
        if ts > 0.0 {
            self.last_committed_age
                .set(crate::checkpoint::now_ms() as f64 / 1000.0 - ts);
        }
        let mut buf = String::new();
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_utf8(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The job's health rule, shared with the operator (its `CheckpointsLate` condition).
pub use cairn_contract::health::HealthRule;

/// What `/healthz` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// A checkpoint committed (or the tasks started) this long ago, within the rule.
    Committing(Duration),
    /// The job stopped (finished, stopped, holding after a stop): nothing is expected to commit.
    Stopped,
    /// Nothing committed for this long, more than [`HealthRule::dead_after`].
    Stale(Duration),
}

/// Monotonic time of the last commit this process saw, for the liveness probe. Every process
/// runs at least one container, and every container hears of every commit (`Committed`), so the
/// containers of other processes see commits stop as well as the coordinator does.
#[derive(Debug)]
pub struct Liveness {
    state: Mutex<LivenessState>,
}

#[derive(Debug, Clone, Copy)]
struct LivenessState {
    /// When the tasks started running, or the last commit, whichever is later.
    since: Instant,
    /// The job stopped.
    stopped: bool,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            state: Mutex::new(LivenessState {
                since: Instant::now(),
                stopped: false,
            }),
        }
    }
}

impl Liveness {
    /// The tasks start running now (after their restore, which may take long and must not
    /// count against the job).
    pub fn started(&self) {
        self.state.lock().expect("liveness lock").since = Instant::now();
    }

    /// A checkpoint committed now.
    pub fn committed(&self) {
        self.state.lock().expect("liveness lock").since = Instant::now();
    }

    /// The job stopped: a stopped (held) job commits nothing and must not be restarted for it.
    pub fn stopped(&self) {
        self.state.lock().expect("liveness lock").stopped = true;
    }

    /// Health now under `rule`.
    pub fn check(&self, rule: &HealthRule) -> Health {
        let state = *self.state.lock().expect("liveness lock");
        judge(state.stopped, state.since.elapsed(), rule)
    }
}

/// The liveness rule itself: stale once nothing has committed for more than
/// [`HealthRule::dead_after`].
fn judge(stopped: bool, since_commit: Duration, rule: &HealthRule) -> Health {
    if stopped {
        Health::Stopped
    } else if since_commit > rule.dead_after() {
        Health::Stale(since_commit)
    } else {
        Health::Committing(since_commit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn late_follows_the_operator_and_dead_adds_one_timeout() {
        let rule = |interval, timeout| HealthRule {
            interval: S(interval),
            timeout: S(timeout),
        };
        // Short intervals: the operator's 30 s floor.
        assert_eq!(rule(1, 5).late_after(), S(30));
        assert_eq!(rule(1, 5).dead_after(), S(35));
        // Defaults (1m, 10m): 3 intervals, then one timeout more.
        assert_eq!(rule(60, 600).late_after(), S(180));
        assert_eq!(rule(60, 600).dead_after(), S(780));
        // Durations no spec allows still give a bound instead of overflowing.
        let huge = HealthRule {
            interval: Duration::MAX,
            timeout: Duration::MAX,
        };
        assert_eq!(huge.late_after(), Duration::MAX);
        assert_eq!(huge.dead_after(), Duration::MAX);
    }

    #[test]
    fn stale_only_past_the_bound_and_never_once_stopped() {
        let rule = HealthRule {
            interval: S(10),
            timeout: S(20),
        };
        assert_eq!(rule.dead_after(), S(50));
        assert_eq!(judge(false, S(0), &rule), Health::Committing(S(0)));
        assert_eq!(judge(false, S(50), &rule), Health::Committing(S(50)));
        assert_eq!(
            judge(false, S(50) + Duration::from_millis(1), &rule),
            Health::Stale(S(50) + Duration::from_millis(1))
        );
        assert_eq!(judge(true, S(10_000), &rule), Health::Stopped);
    }

    #[test]
    fn a_commit_or_a_start_resets_the_clock_and_a_stop_ends_it() {
        // The shortest bound there is: the 30 s floor.
        let rule = HealthRule {
            interval: Duration::ZERO,
            timeout: Duration::ZERO,
        };
        assert_eq!(rule.dead_after(), S(30));
        let live = Liveness::default();
        let long_ago = || Instant::now().checked_sub(S(31)).expect("uptime over 31 s");
        live.state.lock().unwrap().since = long_ago();
        assert!(matches!(live.check(&rule), Health::Stale(d) if d >= S(31)));
        live.committed();
        assert!(matches!(live.check(&rule), Health::Committing(d) if d < S(30)));
        live.state.lock().unwrap().since = long_ago();
        live.started();
        assert!(matches!(live.check(&rule), Health::Committing(d) if d < S(30)));
        live.state.lock().unwrap().since = long_ago();
        live.stopped();
        assert_eq!(live.check(&rule), Health::Stopped);
    }
}
