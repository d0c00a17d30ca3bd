//! The Kafka source (`input: {type: kafka}`): task `i` reads partition `i` of the topic.
//!
//! As in Samza, the job owns the assignment and the checkpoint owns the offsets: every task has
//! its own librdkafka consumer, assigned its one partition explicitly (no consumer group, no
//! rebalancing, nothing committed to Kafka), positioned at the offset its checkpoint recorded.
//! Records are read `read_committed`, so an exactly-once producer's aborted records are never
//! seen. A checkpointed offset that the topic no longer has (deleted by retention) is an error,
//! never a silent jump.
//!
//! The topic's partition count must equal `input.partitions` when the job starts (checked once
//! per process, before any state is restored), and a [`PartitionWatch`] keeps re-reading it while
//! the job runs, so a topic that grew is reported (log, `cairn_input_partitions_observed`,
//! `observedPartitions` in the control API status) for the operator to repartition the job.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use cairn_contract::KafkaInput;
use prometheus::IntGauge;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{Poll, RecordBatch, Source, SourceError};
use crate::kafka::consumer_base;

/// How long a metadata request may take at start before the job gives up.
const METADATA_TIMEOUT: Duration = Duration::from_secs(15);
/// How often each consumer reports statistics (its partition's last stable offset, for lag).
const STATS_INTERVAL_MS: &str = "5000";

/// What every task of one process shares: the spec, the start-up check, the partition watch.
pub(crate) struct KafkaShared {
    spec: KafkaInput,
    /// The topic's partition count at start, or why it could not be checked.
    checked: OnceLock<Result<u32, SourceError>>,
    watch: Arc<PartitionWatch>,
}

impl KafkaShared {
    pub(crate) fn new(spec: &KafkaInput) -> Arc<Self> {
        Arc::new(KafkaShared {
            spec: spec.clone(),
            checked: OnceLock::new(),
            watch: Arc::new(PartitionWatch::default()),
        })
    }

    /// The partition watch of this input.
    pub(crate) fn watch(&self) -> Arc<PartitionWatch> {
        Arc::clone(&self.watch)
    }

    /// Checks once per process that the topic exists with exactly `input.partitions`
    /// partitions, and then starts the watch.
    pub(crate) fn check(self: &Arc<Self>) -> Result<(), SourceError> {
        let result = self.checked.get_or_init(|| {
            let count = topic_partitions(&self.spec, METADATA_TIMEOUT)?;
            self.watch.observe(count, &self.spec);
            if count != self.spec.partitions {
                return Err(SourceError::PartitionCount {
                    topic: self.spec.topic.clone(),
                    expected: self.spec.partitions,
                    found: count,
                });
            }
            PartitionWatch::spawn(Arc::downgrade(self));
            Ok(count)
        });
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(e.duplicate()),
        }
    }
}

/// The partition count of `spec.topic`, from a metadata request.
fn topic_partitions(spec: &KafkaInput, timeout: Duration) -> Result<u32, SourceError> {
    let consumer: BaseConsumer = consumer_config(spec, "metadata")?
        .create()
        .map_err(|e| kafka_error(spec, format!("cannot create a client: {e}")))?;
    let metadata = consumer
        .fetch_metadata(Some(&spec.topic), timeout)
        .map_err(|e| {
            kafka_error(
                spec,
                format!(
                    "cannot read the topic's metadata from {} within {}s: {e}; check \
                     input.brokers and input.security",
                    spec.brokers,
                    timeout.as_secs()
                ),
            )
        })?;
    let Some(topic) = metadata.topics().iter().find(|t| t.name() == spec.topic) else {
        return Err(kafka_error(
            spec,
            "the brokers did not describe the topic".to_owned(),
        ));
    };
    if let Some(err) = topic.error() {
        let code = RDKafkaErrorCode::from(err);
        return Err(kafka_error(
            spec,
            match code {
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                    format!(
                        "the topic does not exist; create it with {} partitions (or fix \
                         input.topic)",
                        spec.partitions
                    )
                }
                other => format!("the brokers refused to describe the topic: {other}"),
            },
        ));
    }
    Ok(topic.partitions().len() as u32)
}

fn kafka_error(spec: &KafkaInput, message: String) -> SourceError {
    SourceError::Kafka {
        topic: spec.topic.clone(),
        message,
    }
}

/// Consumer settings: explicit assignment, offsets only in checkpoints, `read_committed`, and
/// an error (not a jump) when an offset is gone.
fn consumer_config(spec: &KafkaInput, client: &str) -> Result<ClientConfig, SourceError> {
    // librdkafka refuses assign() without a group id; the group is never joined (no
    // subscribe) and nothing is ever committed to it.
    let mut config = consumer_base(
        &spec.brokers,
        &spec.security,
        &spec.properties,
        "cairn-assign-only",
    )
    .map_err(|message| kafka_error(spec, message))?;
    config
        .set("client.id", format!("cairn-{}-{client}", spec.topic))
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false");
    Ok(config)
}

/// The topic's partition count as last observed, shared by the tasks of a process and
/// exported as a metric and in the control API status.
#[derive(Default)]
pub struct PartitionWatch {
    /// The last count read from the brokers; 0 (which no topic has) until the first read.
    observed: AtomicI64,
    gauge: Mutex<Option<IntGauge>>,
}

impl PartitionWatch {
    /// The partition count last read from the brokers, if any.
    pub fn observed(&self) -> Option<u32> {
        let n = self.observed.load(Ordering::Relaxed);
        (n > 0).then_some(n as u32)
    }

    /// Reports every observation to `gauge` (the `cairn_input_partitions_observed` metric)
    /// from now on, starting with the current one.
    pub fn export_to(&self, gauge: IntGauge) {
        if let Some(n) = self.observed() {
            gauge.set(i64::from(n));
        }
        *self.gauge.lock().expect("partition watch lock") = Some(gauge);
    }

    /// Records an observation; logs when the count differs from the spec's and when it changes.
    fn observe(&self, count: u32, spec: &KafkaInput) {
        let previous = self.observed.swap(i64::from(count), Ordering::Relaxed);
        if let Some(gauge) = self.gauge.lock().expect("partition watch lock").as_ref() {
            gauge.set(i64::from(count));
        }
        if previous == i64::from(count) {
            return;
        }
        if previous > 0 {
            tracing::info!(topic = %spec.topic, from = previous, to = count, "the topic's partition count changed");
        }
        if count > spec.partitions && previous > 0 {
            tracing::error!(
                topic = %spec.topic,
                partitions = count,
                input_partitions = spec.partitions,
                "the topic now has {count} partitions but the job reads {}: records in the new \
                 partitions are not read, and keys the producers now route to another partition \
                 get state in two tasks. Repartition the job: stop it with a savepoint and start \
                 it from the savepoint with input.partitions: {count} (docs/kafka.md)",
                spec.partitions
            );
        }
    }

    /// Re-reads the partition count every `partitionCheckInterval` until the source side of
    /// the job is gone.
    fn spawn(shared: Weak<KafkaShared>) {
        let spawned = std::thread::Builder::new()
            .name("cairn-kafka-watch".into())
            .spawn(move || {
                let mut next = Instant::now();
                loop {
                    std::thread::sleep(Duration::from_millis(200));
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    if Instant::now() < next {
                        continue;
                    }
                    let spec = &shared.spec;
                    next = Instant::now() + spec.partition_check_interval;
                    match topic_partitions(spec, spec.partition_check_interval) {
                        Ok(count) => shared.watch.observe(count, spec),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot re-read the topic's partition count")
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the Kafka partition watch");
        }
    }
}

/// Consumer context that keeps the partition's last stable offset from the statistics.
struct LagContext {
    topic: String,
    partition: i32,
    last_stable: Arc<AtomicI64>,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        let stable = statistics
            .topics
            .get(&self.topic)
            .and_then(|t| t.partitions.get(&self.partition))
            .map(|p| p.ls_offset);
        if let Some(offset) = stable.filter(|o| *o >= 0) {
            self.last_stable.store(offset, Ordering::Relaxed);
        }
    }
}

impl ConsumerContext for LagContext {}

/// One partition of a Kafka topic.
pub struct KafkaSource {
    shared: Arc<KafkaShared>,
    partition: u32,
    consumer: Option<BaseConsumer<LagContext>>,
    /// Offset of the next record to read.
    next: u64,
    last_stable: Arc<AtomicI64>,
    last_warning: Option<Instant>,
}

impl KafkaSource {
    pub(crate) fn new(shared: Arc<KafkaShared>, partition: u32) -> Self {
        KafkaSource {
            shared,
            partition,
            consumer: None,
            next: 0,
            last_stable: Arc::new(AtomicI64::new(-1)),
            last_warning: None,
        }
    }

    /// Creates the consumer (after the start-up check) and assigns the partition at `offset`:
    /// 0 means the partition's beginning, whatever retention has deleted; anything else that
    /// exact offset.
    fn assign(&mut self, offset: u64) -> Result<(), SourceError> {
        self.shared.check()?;
        let spec = &self.shared.spec;
        if self.consumer.is_none() {
            let context = LagContext {
                topic: spec.topic.clone(),
                partition: self.partition as i32,
                last_stable: Arc::clone(&self.last_stable),
            };
            let mut config = consumer_config(spec, &format!("p{}", self.partition))?;
            config.set("statistics.interval.ms", STATS_INTERVAL_MS);
            let consumer = config
                .create_with_context(context)
                .map_err(|e| kafka_error(spec, format!("cannot create a consumer: {e}")))?;
            self.consumer = Some(consumer);
        }
        let start = if offset == 0 {
            Offset::Beginning
        } else {
            Offset::Offset(offset as i64)
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&spec.topic, self.partition as i32, start)
            .map_err(|e| kafka_error(spec, e.to_string()))?;
        self.consumer
            .as_ref()
            .expect("created above")
            .assign(&tpl)
            .map_err(|e| kafka_error(spec, format!("cannot assign partition: {e}")))?;
        self.next = offset;
        Ok(())
    }

    /// Whether a consumer error stops the task (the data is gone or not readable) rather than
    /// being retried by librdkafka (brokers down, leader moving).
    fn fatal(&self, error: &KafkaError) -> bool {
        matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::AutoOffsetReset
                    | RDKafkaErrorCode::OffsetOutOfRange
                    | RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::Fatal
            )
        )
    }
}

impl Source for KafkaSource {
    fn poll(&mut self, batch: &mut RecordBatch, max: usize) -> Result<Poll, SourceError> {
        if self.consumer.is_none() {
            self.assign(self.next)?;
        }
        let consumer = self.consumer.as_ref().expect("assigned");
        let mut read = 0;
        while read < max && !batch.is_full() {
            match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(message)) => {
                    let offset = message.offset() as u64;
                    batch.push(
                        offset,
                        message.key().unwrap_or_default(),
                        message.payload().unwrap_or_default(),
                    );
                    // Create or log-append time, whichever the topic keeps; a record from
                    // before the epoch (or with none) has no timestamp.
                    if let Some(ms) = message.timestamp().to_millis() {
                        if let Ok(ms) = u64::try_from(ms) {
                            batch.stamp_last(ms);
                        }
                    }
                    self.next = offset + 1;
                    read += 1;
                }
                Some(Err(error)) if self.fatal(&error) => {
                    let spec = &self.shared.spec;
                    return Err(match error.rdkafka_error_code() {
                        Some(
                            RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
                        ) => SourceError::OffsetOutOfRange {
                            what: format!(
                                "kafka topic {} partition {}",
                                spec.topic, self.partition
                            ),
                            offset: self.next,
                            end: self.last_stable.load(Ordering::Relaxed).max(0) as u64,
                        },
                        _ => kafka_error(spec, format!("partition {}: {error}", self.partition)),
                    });
                }
                Some(Err(error)) => {
                    // Transient (broker restart, leader election): librdkafka retries; say so
                    // at most every 10 s.
                    if self
                        .last_warning
                        .is_none_or(|t| t.elapsed().as_secs() >= 10)
                    {
                        self.last_warning = Some(Instant::now());
                        tracing::warn!(topic = %self.shared.spec.topic, partition = self.partition, %error, "Kafka consumer error; retrying");
                    }
                    break;
                }
            }
        }
        Ok(if read > 0 { Poll::Records } else { Poll::Idle })
    }

    fn position(&self) -> u64 {
        self.next
    }

    fn seek(&mut self, offset: u64) -> Result<(), SourceError> {
        self.assign(offset)
    }

    fn lag(&self) -> Option<u64> {
        let stable = self.last_stable.load(Ordering::Relaxed);
        (stable >= 0).then(|| (stable as u64).saturating_sub(self.next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_reach_the_exported_gauge() {
        let spec = KafkaInput::new(4, "events", "127.0.0.1:9092");
        let watch = PartitionWatch::default();
        assert_eq!(watch.observed(), None);
        watch.observe(4, &spec);
        let metrics = crate::metrics::Metrics::new();
        watch.export_to(metrics.input_partitions_observed.clone());
        assert_eq!(metrics.input_partitions_observed.get(), 4);
        watch.observe(6, &spec);
        assert_eq!(watch.observed(), Some(6));
        assert_eq!(metrics.input_partitions_observed.get(), 6);
        assert!(metrics
            .render()
            .contains("\ncairn_input_partitions_observed 6\n"));
    }
}
