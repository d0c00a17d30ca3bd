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

use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use cairn_contract::KafkaInput;
use prometheus::IntGauge;
use rdkafka::bindings as rdsys;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{Poll, RecordBatch, Source, SourceError};
use crate::kafka::consumer_base;

/// How long a metadata request may take at start before the job gives up.
const METADATA_TIMEOUT: Duration = Duration::from_secs(15);
/// How often each consumer reports statistics (its partition's last stable offset, for lag).
const STATS_INTERVAL_MS: &str = "5000";
/// librdkafka's `fetch.queue.backoff.ms` for the job's consumers, unless the job sets it.
pub const FETCH_QUEUE_BACKOFF_MS: &str = "10";
/// The most records one `rd_kafka_consume_batch_queue` call takes off the partition's queue.
pub const FETCH: usize = 1024;

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
    if !spec.properties.contains_key("fetch.queue.backoff.ms") {
        // When a partition's queue holds more than `queued.min.messages` (100k) records,
        // librdkafka postpones its next fetch by this much, 1 s by default. A task that falls
        // behind its fetcher by that much (a count costs more per record than reading) then
        // drains the queue in tens of milliseconds and waits the rest of the second for
        // records. A short backoff keeps the fetcher just ahead of the task.
        config.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    }
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

/// The partition's own librdkafka queue, read in batches, and the records of the last batch not
/// yet handed to the task.
///
/// librdkafka puts the partition's fetched records (and its consumer errors, such as an offset
/// the topic no longer has) on the partition's fetch queue, which a consumer normally forwards
/// to the consumer's queue, where `BaseConsumer::poll` returns them one event at a time. Here
/// the fetch queue is detached from the consumer's (`rd_kafka_queue_forward(.., NULL)`, before
/// the first assignment, so librdkafka never forwards it again) and read with
/// `rd_kafka_consume_batch_queue`: up to [`FETCH`] records per call, with no event or
/// allocation per record. The consumer's queue still carries statistics (the lag), logs and
/// client errors, served by `BaseConsumer::poll` once per [`Source::poll`].
#[allow(unsafe_code)]
pub mod queue {
    use super::*;

    /// The records of one batch are owned here until handed over.
    pub struct PartitionQueue {
        queue: NonNull<rdsys::rd_kafka_queue_t>,
        /// `messages[next..len]`: fetched, in offset order, not yet handed over; each owned
        /// here (destroyed when handed over, on [`PartitionQueue::discard`] or on drop).
        messages: Vec<*mut rdsys::rd_kafka_message_t>,
        next: usize,
        len: usize,
    }

    // SAFETY: librdkafka queues and messages may be used from any thread (its queue operations
    // lock; a message is immutable once returned). The pointers are owned by this value alone
    // (no copies escape: `Fetched` borrows it mutably), so moving it moves the ownership.
    unsafe impl Send for PartitionQueue {}

    /// One record handed over by [`PartitionQueue::next`]; destroyed when dropped.
    pub struct Fetched<'q> {
        message: NonNull<rdsys::rd_kafka_message_t>,
        _queue: std::marker::PhantomData<&'q mut PartitionQueue>,
    }

    impl PartitionQueue {
        /// The fetch queue of `partition` of `topic` in `consumer`, detached from the
        /// consumer's queue. Called before the partition is first assigned.
        pub fn detach<C: ConsumerContext>(
            consumer: &BaseConsumer<C>,
            topic: &str,
            partition: u32,
        ) -> Option<Self> {
            let topic = CString::new(topic).ok()?;
            let partition = i32::try_from(partition).ok()?;
            // SAFETY: the client pointer is the consumer's, alive for this call; the topic is
            // a NUL-terminated string librdkafka copies. The result is a new reference to the
            // partition's fetch queue, released in `drop` (before the consumer: see
            // `KafkaSource`'s `Drop`).
            let queue = NonNull::new(unsafe {
                rdsys::rd_kafka_queue_get_partition(
                    consumer.client().native_ptr(),
                    topic.as_ptr(),
                    partition,
                )
            })?;
            // SAFETY: `queue` is valid (above). Forwarding to NULL stops the forwarding and
            // marks the queue as forwarded by the application, so `assign` (fetch start)
            // leaves it alone.
            unsafe { rdsys::rd_kafka_queue_forward(queue.as_ptr(), std::ptr::null_mut()) };
            Some(PartitionQueue {
                queue,
                messages: vec![std::ptr::null_mut(); FETCH],
                next: 0,
                len: 0,
            })
        }

        /// The next fetched record or consumer error, taking up to `want` (at most [`FETCH`])
        /// off the queue when none is left from the last batch, waiting up to `wait_ms` for the
        /// first of them (the source never waits: 0).
        pub fn next(&mut self, want: usize, wait_ms: i32) -> Option<Fetched<'_>> {
            if self.next == self.len {
                let want = want.clamp(1, FETCH);
                // SAFETY: the queue is valid while `self` lives; `messages` has room for
                // `want` pointers, and librdkafka writes at most that many (the count it
                // returns), handing their ownership to us.
                let n = unsafe {
                    rdsys::rd_kafka_consume_batch_queue(
                        self.queue.as_ptr(),
                        wait_ms,
                        self.messages.as_mut_ptr(),
                        want,
                    )
                };
                // -1 (an invalid queue) cannot happen for a valid one; treat it as empty.
                self.next = 0;
                self.len = usize::try_from(n).unwrap_or(0).min(want);
                if self.len == 0 {
                    return None;
                }
            }
            let message = NonNull::new(self.messages[self.next])?;
            self.next += 1;
            Some(Fetched {
                message,
                _queue: std::marker::PhantomData,
            })
        }

        /// Destroys the records fetched but not handed over (on a seek: the task will not see
        /// them, and its position is still the first of them).
        pub fn discard(&mut self) {
            for &message in &self.messages[self.next..self.len] {
                // SAFETY: each pointer in `next..len` is owned here and destroyed once: the
                // range is emptied right after.
                unsafe { rdsys::rd_kafka_message_destroy(message) };
            }
            self.next = 0;
            self.len = 0;
        }
    }

    impl Drop for PartitionQueue {
        fn drop(&mut self) {
            self.discard();
            // SAFETY: the reference taken in `detach`, released once.
            unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) };
        }
    }

    impl Fetched<'_> {
        fn raw(&self) -> &rdsys::rd_kafka_message_t {
            // SAFETY: the message is owned by this value and not destroyed before it drops.
            unsafe { self.message.as_ref() }
        }

        /// The error librdkafka reports in place of a record, if this is one.
        pub fn error(&self) -> Option<(RDKafkaErrorCode, String)> {
            let raw = self.raw();
            if raw.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return None;
            }
            // SAFETY: for an error message librdkafka returns a NUL-terminated string that
            // lives as long as the message (its payload, or a static string).
            let text = unsafe { CStr::from_ptr(rdsys::rd_kafka_message_errstr(raw)) }
                .to_string_lossy()
                .into_owned();
            Some((RDKafkaErrorCode::from(raw.err), text))
        }

        /// The record's offset.
        pub fn offset(&self) -> i64 {
            self.raw().offset
        }

        /// Key and value (empty when null), borrowed from the message.
        pub fn key_value(&self) -> (&[u8], &[u8]) {
            let raw = self.raw();
            // SAFETY: librdkafka's key and payload are `key_len` / `len` bytes owned by the
            // message, alive and unchanged until it is destroyed, which happens when `self`
            // drops; the borrow of `self` keeps the slices from outliving it.
            let bytes = |ptr: *mut std::ffi::c_void, len: usize| -> &[u8] {
                if ptr.is_null() || len == 0 {
                    &[]
                } else {
                    unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }
                }
            };
            (bytes(raw.key, raw.key_len), bytes(raw.payload, raw.len))
        }

        /// Create or log-append time (ms since the epoch), whichever the topic keeps; none for
        /// a record without one or from before the epoch.
        pub fn timestamp(&self) -> Option<u64> {
            let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            // SAFETY: a valid message (owned here) and a valid out-pointer.
            let ms = unsafe { rdsys::rd_kafka_message_timestamp(self.raw(), &mut kind) };
            if kind == rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE {
                return None;
            }
            u64::try_from(ms).ok()
        }
    }

    impl Drop for Fetched<'_> {
        fn drop(&mut self) {
            // SAFETY: handed over by `PartitionQueue::next`, which no longer holds it; destroyed
            // once, here.
            unsafe { rdsys::rd_kafka_message_destroy(self.message.as_ptr()) };
        }
    }
}

use queue::PartitionQueue;

/// One partition of a Kafka topic.
pub struct KafkaSource {
    shared: Arc<KafkaShared>,
    partition: u32,
    /// Declared before `consumer`, and dropped first in `Drop`: librdkafka wants every
    /// message and queue reference released before its client is destroyed.
    queue: Option<PartitionQueue>,
    consumer: Option<BaseConsumer<LagContext>>,
    /// Offset of the next record to hand to the task: the record after the last one pushed
    /// into a batch. Records fetched from librdkafka but not handed over yet are not counted,
    /// so a checkpoint never skips them.
    next: u64,
    last_stable: Arc<AtomicI64>,
    last_warning: Option<Instant>,
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.queue = None;
        self.consumer = None;
    }
}

impl KafkaSource {
    pub(crate) fn new(shared: Arc<KafkaShared>, partition: u32) -> Self {
        KafkaSource {
            shared,
            partition,
            queue: None,
            consumer: None,
            next: 0,
            last_stable: Arc::new(AtomicI64::new(-1)),
            last_warning: None,
        }
    }

    /// Creates the consumer (after the start-up check) and assigns the partition at `offset`:
    /// 0 means the partition's beginning, whatever retention has deleted; anything else that
    /// exact offset. Records fetched for the previous position are dropped.
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
            let consumer: BaseConsumer<LagContext> = config
                .create_with_context(context)
                .map_err(|e| kafka_error(spec, format!("cannot create a consumer: {e}")))?;
            let queue = PartitionQueue::detach(&consumer, &spec.topic, self.partition).ok_or_else(
                || {
                    kafka_error(
                        spec,
                        format!("cannot get the queue of partition {}", self.partition),
                    )
                },
            )?;
            self.queue = Some(queue);
            self.consumer = Some(consumer);
        }
        if let Some(queue) = self.queue.as_mut() {
            queue.discard();
        }
        let start = if offset == 0 {
            Offset::Beginning
        } else {
            Offset::Offset(offset as i64)
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&spec.topic, self.partition as i32, start)
            .map_err(|e| kafka_error(spec, e.to_string()))?;
        // Assigning again (a seek) restarts the partition's fetch at `start` under a new
        // version; librdkafka drops records of the old one still in the queue.
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
    fn fatal(code: RDKafkaErrorCode) -> bool {
        matches!(
            code,
            RDKafkaErrorCode::AutoOffsetReset
                | RDKafkaErrorCode::OffsetOutOfRange
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::Fatal
        )
    }

    /// The task's error for a fatal consumer error.
    fn fatal_error(&self, code: RDKafkaErrorCode, error: &dyn std::fmt::Display) -> SourceError {
        let spec = &self.shared.spec;
        match code {
            RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange => {
                SourceError::OffsetOutOfRange {
                    what: format!("kafka topic {} partition {}", spec.topic, self.partition),
                    offset: self.next,
                    end: self.last_stable.load(Ordering::Relaxed).max(0) as u64,
                }
            }
            _ => kafka_error(spec, format!("partition {}: {error}", self.partition)),
        }
    }

    /// A transient error (broker restart, leader election): librdkafka retries; say so at most
    /// every 10 s.
    fn warn_transient(&mut self, error: &dyn std::fmt::Display) {
        if self
            .last_warning
            .is_none_or(|t| t.elapsed().as_secs() >= 10)
        {
            self.last_warning = Some(Instant::now());
            tracing::warn!(topic = %self.shared.spec.topic, partition = self.partition, %error, "Kafka consumer error; retrying");
        }
    }

    /// Serves one event of the consumer's own queue: statistics (the lag, through the
    /// context), logs and client errors. Records never arrive there (the partition's queue is
    /// detached before the assignment); one that did would be out of order with the
    /// partition's queue, so it fails the task, which restarts from its checkpoint.
    fn serve_consumer_queue(&mut self) -> Result<(), SourceError> {
        let consumer = self.consumer.as_ref().expect("assigned");
        let error = match consumer.poll(Duration::ZERO) {
            None => return Ok(()),
            Some(Ok(message)) => {
                let offset = rdkafka::message::Message::offset(&message);
                return Err(kafka_error(
                    &self.shared.spec,
                    format!(
                        "partition {}: record {offset} arrived on the consumer's queue instead \
                         of the partition's",
                        self.partition
                    ),
                ));
            }
            Some(Err(error)) => error,
        };
        match error.rdkafka_error_code() {
            Some(code) if Self::fatal(code) => Err(self.fatal_error(code, &error)),
            _ => {
                self.warn_transient(&error);
                Ok(())
            }
        }
    }
}

impl Source for KafkaSource {
    fn poll(&mut self, batch: &mut RecordBatch, max: usize) -> Result<Poll, SourceError> {
        if self.consumer.is_none() {
            self.assign(self.next)?;
        }
        self.serve_consumer_queue()?;
        let queue = self.queue.as_mut().expect("assigned");
        let mut read = 0;
        let mut failure = None;
        while read < max && !batch.is_full() {
            let Some(message) = queue.next(max - read, 0) else {
                break;
            };
            if let Some((code, text)) = message.error() {
                failure = Some((code, text));
                break;
            }
            let offset = message.offset() as u64;
            let (key, value) = message.key_value();
            batch.push(offset, key, value);
            if let Some(ms) = message.timestamp() {
                batch.stamp_last(ms);
            }
            self.next = offset + 1;
            read += 1;
        }
        if let Some((code, text)) = failure {
            let error = format!("{code} ({text})");
            if Self::fatal(code) {
                return Err(self.fatal_error(code, &error));
            }
            self.warn_transient(&error);
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

    /// The fetch backoff is short unless the job sets its own.
    #[test]
    fn consumers_refetch_soon_unless_the_job_says_otherwise() {
        let mut spec = KafkaInput::new(4, "events", "127.0.0.1:9092");
        let config = consumer_config(&spec, "p0").unwrap();
        assert_eq!(
            config.get("fetch.queue.backoff.ms"),
            Some(FETCH_QUEUE_BACKOFF_MS)
        );
        spec.properties
            .insert("fetch.queue.backoff.ms".into(), "500".into());
        let config = consumer_config(&spec, "p0").unwrap();
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("500"));
    }

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
