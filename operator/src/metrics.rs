//! Prometheus metrics of the operator, served on `/metrics`.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by result (`ok`, `error`).
    pub reconciles: IntCounterVec,
    /// Reconcile errors by kind ([`crate::reconcile::Error::metric_label`]).
    pub errors: IntCounterVec,
    /// Panicked (and caught) reconciles by StreamJob.
    pub reconcile_panics: IntCounterVec,
    /// Reconcile duration.
    pub reconcile_seconds: HistogramVec,
    /// StreamJobs by phase.
    pub jobs: IntGaugeVec,
    /// Seconds since each job's last committed checkpoint.
    pub checkpoint_age: GaugeVec,
    /// Upgrade, rescale, repartition, ... durations.
    pub operation_seconds: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("cairn_operator_reconciles_total", "Reconciles by result"),
            &["result"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "cairn_operator_reconcile_errors_total",
                "Reconcile errors by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let reconcile_panics = IntCounterVec::new(
            Opts::new(
                "cairn_operator_reconcile_panics_total",
                "Reconciles that panicked (a bug; caught, the job is retried with backoff)",
            ),
            &["namespace", "job"],
        )
        .expect("valid metric");
        let reconcile_seconds = HistogramVec::new(
            HistogramOpts::new(
                "cairn_operator_reconcile_duration_seconds",
                "Reconcile duration",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &[],
        )
        .expect("valid metric");
        let jobs = IntGaugeVec::new(
            Opts::new("cairn_operator_jobs", "StreamJobs by phase"),
            &["phase"],
        )
        .expect("valid metric");
        let checkpoint_age = GaugeVec::new(
            Opts::new(
                "cairn_operator_checkpoint_age_seconds",
                "Seconds since the job's last committed checkpoint",
            ),
            &["namespace", "job"],
        )
        .expect("valid metric");
        let operation_seconds = HistogramVec::new(
            HistogramOpts::new(
                "cairn_operator_operation_duration_seconds",
                "Duration of upgrades, rescales, repartitions, restarts and rollbacks",
            )
            .buckets(vec![
                1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
            &["kind"],
        )
        .expect("valid metric");
        let collectors: [Box<dyn prometheus::core::Collector>; 7] = [
            Box::new(reconciles.clone()),
            Box::new(errors.clone()),
            Box::new(reconcile_panics.clone()),
            Box::new(reconcile_seconds.clone()),
            Box::new(jobs.clone()),
            Box::new(checkpoint_age.clone()),
            Box::new(operation_seconds.clone()),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            reconciles,
            errors,
            reconcile_panics,
            reconcile_seconds,
            jobs,
            checkpoint_age,
            operation_seconds,
        }
    }
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
