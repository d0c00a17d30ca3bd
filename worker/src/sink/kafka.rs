//! The Kafka sink (`output: {type: kafka}`), in one of two modes:
//!
//! * **at-least-once** (default): records are produced as the task emits them (idempotent
//!   producer, `acks=all`); the checkpoint's asynchronous phase waits until every record
//!   emitted before its synchronous phase is acknowledged by the brokers, so a committed
//!   checkpoint never has output that could still be lost. A restart repeats what was
//!   produced after the last commit.
//! * **exactly-once**: records are spooled to a local file per checkpoint (fsynced with the
//!   checkpoint, like the file sink's pending output), and after the checkpoint commits a
//!   background thread produces the file in one Kafka transaction that also records the
//!   checkpoint id as the committed offset of a per-task marker group. On restart the marker
//!   says which committed checkpoints already reached Kafka: their files are deleted, the
//!   others published again. So a crash before, during or after the Kafka commit neither loses
//!   nor repeats output — as long as the spool directory survives, which is why it belongs on
//!   the same persistent volume as the state (docs/kafka.md).
//!
//! Keys are partitioned with `murmur2_random`, the Java client's default partitioner, so output
//! lines up with a keyed Cairn job (or Kafka Streams app) reading the topic.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_contract::{KafkaDelivery, KafkaOutput};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{DurableWait, Sealed, Sink, SinkError};
use crate::kafka::{client_config, consumer_base};

/// How long librdkafka may try to deliver one record before reporting it failed.
const DELIVERY_TIMEOUT_MS: &str = "120000";
/// Upper bound of a checkpoint's wait for its records' acknowledgements (a little more than
/// the delivery timeout, after which librdkafka has reported every record one way or the other).
const DELIVERY_WAIT: Duration = Duration::from_secs(130);
/// Timeout of transactional calls (init, commit, abort) and of reading the marker.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);
/// Test hook: abort the process right before the first transaction commit of this process, to
/// prove that a crash between Cairn's commit and Kafka's loses and repeats nothing. Exists only
/// in builds with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub const CRASH_BEFORE_KAFKA_COMMIT_ENV: &str = "CAIRN_TEST_KAFKA_CRASH_BEFORE_COMMIT";

/// The [`CRASH_BEFORE_KAFKA_COMMIT_ENV`] test hook: aborts the process before the Kafka commit
/// of checkpoint `id`.
#[cfg(feature = "test-hooks")]
fn abort_before_commit(id: u64) {
    tracing::warn!(
        checkpoint = id,
        "{CRASH_BEFORE_KAFKA_COMMIT_ENV} is set: aborting before the Kafka commit"
    );
    std::process::abort();
}

/// Without the `test-hooks` feature the hook is never set, and does nothing.
#[cfg(not(feature = "test-hooks"))]
fn abort_before_commit(_id: u64) {}

/// Whether the `CAIRN_TEST_KAFKA_CRASH_BEFORE_COMMIT` test hook is set. Always `false` without the
/// `test-hooks` feature: release builds do not read the variable at all.
#[cfg(feature = "test-hooks")]
fn crash_before_commit_hook() -> bool {
    std::env::var_os(CRASH_BEFORE_KAFKA_COMMIT_ENV).is_some()
}

/// Without the `test-hooks` feature the hook does not exist: never set.
#[cfg(not(feature = "test-hooks"))]
fn crash_before_commit_hook() -> bool {
    false
}

/// Opens the sink of task `task`; `restored` is the checkpoint the task restored from.
pub fn open(
    spec: &KafkaOutput,
    task: u32,
    restored: Option<u64>,
) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match spec.delivery {
        KafkaDelivery::AtLeastOnce => Box::new(AtLeastOnceSink::open(spec, task)?),
        KafkaDelivery::ExactlyOnce => Box::new(ExactlyOnceSink::open(spec, task, restored)?),
    })
}

fn kafka_error(spec: &KafkaOutput, message: impl Into<String>) -> SinkError {
    topic_error(&spec.topic, message)
}

fn topic_error(topic: &str, message: impl Into<String>) -> SinkError {
    SinkError::Kafka {
        topic: topic.to_owned(),
        message: message.into(),
    }
}

/// Producer settings common to both modes.
fn producer_config(spec: &KafkaOutput, task: u32) -> Result<ClientConfig, SinkError> {
    let mut config = client_config(&spec.brokers, &spec.security, &spec.properties)
        .map_err(|message| kafka_error(spec, message))?;
    config
        .set("client.id", format!("cairn-{}-task-{task:04}", spec.topic))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", DELIVERY_TIMEOUT_MS);
    Ok(config)
}

/// Retries a send while librdkafka's local queue is full (the producer's polling thread drains
/// it); any other failure is returned.
fn send_with_backpressure<C: ProducerContext<DeliveryOpaque = usize>>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8], usize>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// At-least-once.

/// Records not yet acknowledged, by epoch (the records emitted between two checkpoints), and
/// the first delivery failure.
#[derive(Default)]
struct Deliveries {
    state: Mutex<DeliveryState>,
    changed: Condvar,
}

#[derive(Default)]
struct DeliveryState {
    outstanding: BTreeMap<u64, u64>,
    failed: Option<String>,
}

impl Deliveries {
    fn sent(&self, epoch: u64) {
        let mut state = self.state.lock().expect("deliveries lock");
        *state.outstanding.entry(epoch).or_insert(0) += 1;
    }

    fn done(&self, epoch: u64, error: Option<String>) {
        let mut state = self.state.lock().expect("deliveries lock");
        if let Some(count) = state.outstanding.get_mut(&epoch) {
            *count -= 1;
            if *count == 0 {
                state.outstanding.remove(&epoch);
            }
        }
        if state.failed.is_none() {
            state.failed = error;
        }
        drop(state);
        self.changed.notify_all();
    }

    fn failure(&self) -> Option<String> {
        self.state.lock().expect("deliveries lock").failed.clone()
    }

    /// Blocks until every record of epochs `..= epoch` is acknowledged, or one failed.
    fn wait_through(&self, epoch: u64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().expect("deliveries lock");
        loop {
            if let Some(failed) = &state.failed {
                return Err(failed.clone());
            }
            if state.outstanding.range(..=epoch).next().is_none() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let pending: u64 = state.outstanding.range(..=epoch).map(|(_, n)| n).sum();
                return Err(format!(
                    "{pending} records were not acknowledged within {}s",
                    timeout.as_secs()
                ));
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .expect("deliveries lock")
                .0;
        }
    }
}

/// Producer context that reports each record's delivery to [`Deliveries`].
struct DeliveryContext {
    deliveries: Arc<Deliveries>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, epoch: usize) {
        let error = result.as_ref().err().map(|(e, _)| e.to_string());
        self.deliveries.done(epoch as u64, error);
    }
}

/// Produces at once; a checkpoint waits for its records' acknowledgements.
struct AtLeastOnceSink {
    spec: KafkaOutput,
    producer: ThreadedProducer<DeliveryContext>,
    deliveries: Arc<Deliveries>,
    epoch: u64,
}

impl AtLeastOnceSink {
    fn open(spec: &KafkaOutput, task: u32) -> Result<Self, SinkError> {
        let deliveries = Arc::new(Deliveries::default());
        let producer = producer_config(spec, task)?
            .create_with_context(DeliveryContext {
                deliveries: Arc::clone(&deliveries),
            })
            .map_err(|e| kafka_error(spec, format!("cannot create a producer: {e}")))?;
        Ok(AtLeastOnceSink {
            spec: spec.clone(),
            producer,
            deliveries,
            epoch: 0,
        })
    }

    fn check(&self) -> Result<(), SinkError> {
        match self.deliveries.failure() {
            Some(error) => Err(kafka_error(
                &self.spec,
                format!("a record could not be delivered: {error}"),
            )),
            None => Ok(()),
        }
    }
}

impl Sink for AtLeastOnceSink {
    fn write(&mut self, key: &[u8], value: &[u8]) -> Result<(), SinkError> {
        self.check()?;
        self.deliveries.sent(self.epoch);
        let record = BaseRecord::with_opaque_to(&self.spec.topic, self.epoch as usize)
            .key(key)
            .payload(value);
        if let Err(error) = send_with_backpressure(&self.producer, record) {
            self.deliveries.done(self.epoch, None);
            return Err(kafka_error(&self.spec, format!("cannot produce: {error}")));
        }
        Ok(())
    }

    fn seal(&mut self, _id: u64) -> Result<Sealed, SinkError> {
        self.check()?;
        let epoch = self.epoch;
        self.epoch += 1;
        let deliveries = Arc::clone(&self.deliveries);
        let topic = self.spec.topic.clone();
        Ok(Sealed {
            waits: vec![DurableWait::new(move || {
                deliveries
                    .wait_through(epoch, DELIVERY_WAIT)
                    .map_err(|e| topic_error(&topic, e))
            })],
            ..Sealed::default()
        })
    }

    fn publish(&mut self, _id: u64) -> Result<(), SinkError> {
        self.check()
    }
}

// ---------------------------------------------------------------------------------------------
// Exactly-once.

/// Spool file of the records emitted since the last checkpoint.
const OPEN_SPOOL: &str = "open.spool";
/// File naming this spool directory's lineage; stored with the marker so a marker written by
/// another spool (a recreated directory) is not trusted.
const INSTANCE_FILE: &str = "instance";

fn spool_name(id: u64) -> String {
    format!("{id:012}.spool")
}

fn spool_id(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".spool")?;
    (digits.len() == 12).then(|| digits.parse().ok()).flatten()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the publisher thread is told.
enum Publish {
    /// Publish every sealed file up to this checkpoint.
    UpTo(u64),
    /// Finish what was asked and exit.
    Stop,
}

/// Spools per checkpoint, publishes each committed checkpoint in one transaction.
struct ExactlyOnceSink {
    spec: KafkaOutput,
    dir: PathBuf,
    /// `dir/open.spool`, where the records of the current checkpoint go.
    open_spool: PathBuf,
    writer: Option<BufWriter<File>>,
    requests: mpsc::Sender<Publish>,
    failed: Arc<Mutex<Option<String>>>,
    publisher: Option<JoinHandle<()>>,
}

impl ExactlyOnceSink {
    fn open(spec: &KafkaOutput, task: u32, restored: Option<u64>) -> Result<Self, SinkError> {
        let prefix = spec
            .transactional_id
            .clone()
            .ok_or_else(|| kafka_error(spec, "exactlyOnce needs output.transactionalId"))?;
        let transactional_id = format!("{prefix}-task-{task:04}");
        let dir = spec.spool_dir.join(&prefix).join(format!("task-{task:04}"));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let instance = spool_instance(&dir, restored.is_none())?;

        // The producer first: initialising it fences off any older process with the same
        // transactional id and aborts the transaction it had open.
        let mut config = producer_config(spec, task)?;
        config
            .set("transactional.id", &transactional_id)
            // librdkafka requires it to be at least the delivery timeout.
            .set("transaction.timeout.ms", DELIVERY_TIMEOUT_MS);
        let producer: ThreadedProducer<DeliveryContext> = config
            .create_with_context(DeliveryContext {
                deliveries: Arc::new(Deliveries::default()),
            })
            .map_err(|e| kafka_error(spec, format!("cannot create a producer: {e}")))?;
        producer.init_transactions(TXN_TIMEOUT).map_err(|e| {
            kafka_error(
                spec,
                format!(
                    "cannot initialise transactions as {transactional_id}: {e}; exactlyOnce \
                     needs brokers with transactions (Kafka 0.11 or later, \
                     transaction.state.log.replication.factor <= number of brokers)"
                ),
            )
        })?;
        let mut marker = Marker::open(spec, &transactional_id, &instance)?;
        let published = marker.read()?;

        // Sort the spool: published or never committed -> delete; committed, not published ->
        // publish now.
        let mut pending = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == INSTANCE_FILE {
                continue;
            }
            match spool_id(&name) {
                Some(id) if id > published && restored.is_some_and(|c| id <= c) => {
                    pending.push(name)
                }
                _ => std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?,
            }
        }
        if let Some(c) = restored.filter(|c| published > *c) {
            // Restored from before the last published checkpoint (a fallback past a damaged
            // checkpoint, or an older savepoint): the output of c+1..=published is in Kafka and
            // will be produced again. Later checkpoint ids need not stay above `published`, so
            // start a new spool lineage whose marker cannot be confused with the old one.
            tracing::warn!(task, restored = c, published, "restored a checkpoint older than the last one published to Kafka; the output of the checkpoints in between will be repeated");
            marker.instance = spool_instance(&dir, true)?;
        }
        if !pending.is_empty() {
            tracing::info!(task, files = ?pending, published, "publishing committed Kafka output that had not reached the topic");
        }

        let (requests, inbox) = mpsc::channel();
        let failed = Arc::new(Mutex::new(None));
        let publisher = Publisher {
            spec: spec.clone(),
            dir: dir.clone(),
            producer,
            marker,
            failed: Arc::clone(&failed),
            crash_before_commit: crash_before_commit_hook(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("cairn-kafka-publish-{task}"))
            .spawn(move || publisher.run(inbox))
            .map_err(io(&dir))?;
        if let (false, Some(c)) = (pending.is_empty(), restored) {
            let _ = requests.send(Publish::UpTo(c));
        }
        Ok(ExactlyOnceSink {
            spec: spec.clone(),
            open_spool: dir.join(OPEN_SPOOL),
            dir,
            writer: None,
            requests,
            failed,
            publisher: Some(handle),
        })
    }

    fn check(&self) -> Result<(), SinkError> {
        match self.failed.lock().expect("publisher state lock").as_ref() {
            Some(error) => Err(kafka_error(&self.spec, error.clone())),
            None => Ok(()),
        }
    }
}

/// The lineage id of a spool directory: kept while the task restores from checkpoints, made
/// anew (with an empty spool) when the task starts without one.
fn spool_instance(dir: &Path, fresh: bool) -> Result<String, SinkError> {
    let path = dir.join(INSTANCE_FILE);
    if !fresh {
        if let Ok(text) = std::fs::read_to_string(&path) {
            if !text.trim().is_empty() {
                return Ok(text.trim().to_owned());
            }
        }
    }
    let instance = format!("{:016x}", rand::random::<u64>());
    let temp = dir.join(".instance.tmp");
    std::fs::write(&temp, &instance).map_err(io(&temp))?;
    File::open(&temp)
        .and_then(|f| f.sync_all())
        .map_err(io(&temp))?;
    std::fs::rename(&temp, &path).map_err(io(&path))?;
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))?;
    Ok(instance)
}

impl Sink for ExactlyOnceSink {
    fn write(&mut self, key: &[u8], value: &[u8]) -> Result<(), SinkError> {
        if self.writer.is_none() {
            self.check()?;
            let file = File::create(&self.open_spool).map_err(io(&self.open_spool))?;
            self.writer = Some(BufWriter::with_capacity(1 << 20, file));
        }
        let writer = self.writer.as_mut().expect("opened above");
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&(key.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&(value.len() as u32).to_le_bytes());
        writer
            .write_all(&header)
            .and_then(|()| writer.write_all(key))
            .and_then(|()| writer.write_all(value))
            .map_err(io(&self.open_spool))
    }

    fn seal(&mut self, id: u64) -> Result<Sealed, SinkError> {
        self.check()?;
        let Some(writer) = self.writer.take() else {
            return Ok(Sealed::default());
        };
        let open = &self.open_spool;
        writer.into_inner().map_err(|e| io(open)(e.into_error()))?;
        let sealed = self.dir.join(spool_name(id));
        std::fs::rename(open, &sealed).map_err(io(&sealed))?;
        Ok(Sealed {
            files: vec![sealed],
            dirs: vec![self.dir.clone()],
            waits: Vec::new(),
        })
    }

    fn publish(&mut self, id: u64) -> Result<(), SinkError> {
        self.check()?;
        self.requests
            .send(Publish::UpTo(id))
            .map_err(|_| kafka_error(&self.spec, "the publisher thread has stopped"))
    }
}

impl Drop for ExactlyOnceSink {
    /// Lets the publisher finish the checkpoints already committed (the final one of a stop),
    /// so their output does not wait for the next start.
    fn drop(&mut self) {
        let _ = self.requests.send(Publish::Stop);
        if let Some(handle) = self.publisher.take() {
            let _ = handle.join();
        }
    }
}

/// The per-task marker: the committed offset of group `<transactional id>` on partition 0 of
/// the output topic is the last checkpoint whose output was committed, its metadata the spool
/// instance that wrote it. It is written inside each transaction, so it moves exactly when the
/// output becomes visible.
struct Marker {
    spec: KafkaOutput,
    consumer: BaseConsumer,
    instance: String,
}

impl Marker {
    fn open(spec: &KafkaOutput, group: &str, instance: &str) -> Result<Self, SinkError> {
        let consumer = consumer_base(&spec.brokers, &spec.security, &spec.properties, group)
            .map_err(|message| kafka_error(spec, message))?
            .create()
            .map_err(|e| kafka_error(spec, format!("cannot create the marker client: {e}")))?;
        Ok(Marker {
            spec: spec.clone(),
            consumer,
            instance: instance.to_owned(),
        })
    }

    fn partition_list(&self, offset: Offset) -> Result<TopicPartitionList, SinkError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.spec.topic, 0, offset)
            .map_err(|e| kafka_error(&self.spec, e.to_string()))?;
        Ok(tpl)
    }

    /// The last checkpoint this spool published (0 if none, or if the marker belongs to another
    /// spool instance).
    fn read(&self) -> Result<u64, SinkError> {
        let tpl = self.partition_list(Offset::Invalid)?;
        let committed = self
            .consumer
            .committed_offsets(tpl, TXN_TIMEOUT)
            .map_err(|e| kafka_error(&self.spec, format!("cannot read the marker offset: {e}")))?;
        let Some(element) = committed.find_partition(&self.spec.topic, 0) else {
            return Ok(0);
        };
        match element.offset() {
            Offset::Offset(id) if element.metadata() == self.instance => Ok(id.max(0) as u64),
            _ => Ok(0),
        }
    }

    /// The offsets to commit in the transaction of checkpoint `id`.
    fn offsets_for(&self, id: u64) -> Result<TopicPartitionList, SinkError> {
        let tpl = self.partition_list(Offset::Offset(id as i64))?;
        if let Some(mut element) = tpl.find_partition(&self.spec.topic, 0) {
            element.set_metadata(self.instance.clone());
        }
        Ok(tpl)
    }
}

/// The background thread of an exactly-once sink.
struct Publisher {
    spec: KafkaOutput,
    dir: PathBuf,
    producer: ThreadedProducer<DeliveryContext>,
    marker: Marker,
    failed: Arc<Mutex<Option<String>>>,
    crash_before_commit: bool,
}

impl Publisher {
    fn run(mut self, inbox: mpsc::Receiver<Publish>) {
        while let Ok(request) = inbox.recv() {
            let Publish::UpTo(id) = request else {
                return;
            };
            if let Err(e) = self.publish_up_to(id) {
                tracing::error!(error = %e, "exactly-once Kafka output failed; the task stops and restarts from its last checkpoint");
                *self.failed.lock().expect("publisher state lock") = Some(e.to_string());
                return;
            }
        }
    }

    fn publish_up_to(&mut self, up_to: u64) -> Result<(), SinkError> {
        let mut ids: Vec<u64> = std::fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| spool_id(&e.file_name().to_string_lossy()))
            .filter(|id| *id <= up_to)
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.publish_one(id)?;
        }
        Ok(())
    }

    /// Produces one spool file in one transaction with the marker, then deletes it.
    fn publish_one(&mut self, id: u64) -> Result<(), SinkError> {
        let path = self.dir.join(spool_name(id));
        let spec = &self.spec;
        let txn = |what: &str, e: KafkaError| kafka_error(spec, format!("{what}: {e}"));
        self.producer
            .begin_transaction()
            .map_err(|e| txn("cannot begin a transaction", e))?;
        let result = (|| {
            let mut reader =
                BufReader::with_capacity(1 << 20, File::open(&path).map_err(io(&path))?);
            let (mut key, mut value) = (Vec::new(), Vec::new());
            while read_record(&mut reader, &mut key, &mut value).map_err(io(&path))? {
                let record = BaseRecord::with_opaque_to(&spec.topic, 0)
                    .key(key.as_slice())
                    .payload(value.as_slice());
                send_with_backpressure(&self.producer, record)
                    .map_err(|e| txn("cannot produce", e))?;
            }
            let group = self.marker.consumer.group_metadata().ok_or_else(|| {
                kafka_error(spec, "the marker client has no consumer group metadata")
            })?;
            self.producer
                .send_offsets_to_transaction(&self.marker.offsets_for(id)?, &group, TXN_TIMEOUT)
                .map_err(|e| txn("cannot add the marker to the transaction", e))?;
            if self.crash_before_commit {
                abort_before_commit(id);
            }
            self.producer
                .commit_transaction(TXN_TIMEOUT)
                .map_err(|e| txn("cannot commit the transaction", e))
        })();
        if let Err(e) = result {
            if let Err(abort) = self.producer.abort_transaction(TXN_TIMEOUT) {
                tracing::warn!(error = %abort, "cannot abort the Kafka transaction");
            }
            return Err(e);
        }
        std::fs::remove_file(&path).map_err(io(&path))?;
        Ok(())
    }
}

/// Reads one `[key len u32][value len u32][key][value]` record; false at a clean end of file.
fn read_record(
    reader: &mut impl Read,
    key: &mut Vec<u8>,
    value: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut header = [0u8; 8];
    // Only an end of file before the first header byte is a clean end.
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let key_len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let value_len = u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) as usize;
    key.resize(key_len, 0);
    value.resize(value_len, 0);
    reader.read_exact(key)?;
    reader.read_exact(value)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Release builds (no `test-hooks` feature) must not read the hook's variable.
    #[cfg(not(feature = "test-hooks"))]
    #[test]
    fn the_crash_hook_is_compiled_out_without_the_feature() {
        std::env::set_var("CAIRN_TEST_KAFKA_CRASH_BEFORE_COMMIT", "1");
        assert!(!crash_before_commit_hook());
    }

    #[test]
    fn spool_names_sort_and_parse() {
        assert_eq!(spool_name(42), "000000000042.spool");
        assert_eq!(spool_id("000000000042.spool"), Some(42));
        assert_eq!(spool_id("open.spool"), None);
        assert_eq!(spool_id("42.spool"), None);
        assert_eq!(spool_id("instance"), None);
    }

    #[test]
    fn records_round_trip_through_the_spool_format() {
        let mut data = Vec::new();
        for (k, v) in [(&b"k1"[..], &b"1"[..]), (b"", b"value"), (b"key", b"")] {
            data.extend_from_slice(&(k.len() as u32).to_le_bytes());
            data.extend_from_slice(&(v.len() as u32).to_le_bytes());
            data.extend_from_slice(k);
            data.extend_from_slice(v);
        }
        let mut reader = &data[..];
        let (mut k, mut v) = (Vec::new(), Vec::new());
        let mut seen = Vec::new();
        while read_record(&mut reader, &mut k, &mut v).unwrap() {
            seen.push((k.clone(), v.clone()));
        }
        assert_eq!(
            seen,
            [
                (b"k1".to_vec(), b"1".to_vec()),
                (Vec::new(), b"value".to_vec()),
                (b"key".to_vec(), Vec::new())
            ]
        );
        // A torn record (crash mid-write) is an error, not silently dropped data.
        let mut torn = &data[..data.len() - 1];
        let mut n = 0;
        let err = loop {
            match read_record(&mut torn, &mut k, &mut v) {
                Ok(true) => n += 1,
                Ok(false) => panic!("torn record read as a clean end"),
                Err(e) => break e,
            }
        };
        assert_eq!(n, 2);
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        let mut torn_header = &data[..3];
        assert_eq!(
            read_record(&mut torn_header, &mut k, &mut v)
                .unwrap_err()
                .kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn delivery_waits_cover_earlier_epochs_only() {
        let d = Deliveries::default();
        d.sent(0);
        d.sent(1);
        assert!(d
            .wait_through(0, Duration::from_millis(10))
            .unwrap_err()
            .contains("1 records were not acknowledged"));
        d.done(0, None);
        d.wait_through(0, Duration::from_millis(10)).unwrap();
        d.done(1, Some("broker said no".into()));
        assert_eq!(
            d.wait_through(5, Duration::from_millis(10)).unwrap_err(),
            "broker said no"
        );
    }
}
