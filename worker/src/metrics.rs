//! Prometheus metrics of a worker process. Counters are bumped once per batch, not per record,
//! so they stay off the hot path.

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
    /// Partition count of the input as last observed (a Kafka topic that grew shows more than
    /// the job's N); 0 until known.
    pub input_partitions_observed: IntGauge,
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
        let lag = IntGaugeVec::new(
            Opts::new("cairn_task_lag", "Records or bytes not read yet"),
            task,
        )
        .expect("valid metric");
        registry
            .register(Box::new(lag.clone()))
            .expect("unique metric");
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
            input_partitions_observed: int_gauge(
                "cairn_input_partitions_observed",
                "Partition count of the input as last observed (a Kafka topic that grew shows \
                 more than the job's input.partitions); 0 until known",
            ),
            registry,
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
