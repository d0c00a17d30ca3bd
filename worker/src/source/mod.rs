//! Input sources. A source reads one partition and is positioned by an offset that the
//! checkpoint records; seeking to that offset after a restore replays exactly what follows.

pub mod batch;
pub mod file;
pub mod generator;
pub mod kafka;

pub use batch::RecordBatch;

use std::sync::Arc;

use cairn_contract::InputSpec;
use prometheus::IntCounterVec;

/// What one poll produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Records were appended to the batch.
    Records,
    /// Nothing available right now (rate limit, or a followed file that has not grown).
    Idle,
    /// The partition is finished (finite input fully read).
    End,
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading the input failed.
    #[error("cannot read input {path}: {source}")]
    Io {
        /// The input file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint asks for an offset the input does not have.
    #[error("checkpoint offset {offset} is beyond the end of {what} ({end}); the input was replaced or truncated — reset offsets or restore an older checkpoint")]
    OffsetOutOfRange {
        /// The input.
        what: String,
        /// Requested offset.
        offset: u64,
        /// Its end.
        end: u64,
    },
    /// The Kafka topic cannot be read (unreachable brokers, missing topic, refused access).
    #[error("kafka topic {topic}: {message}")]
    Kafka {
        /// The topic.
        topic: String,
        /// What went wrong and what to check.
        message: String,
    },
    /// The topic's partition count is not the spec's N.
    #[error("input.partitions is {expected} but kafka topic {topic} has {found} partitions; a task reads exactly one partition, so repartition the job to {found}: stop it with a savepoint and start it from the savepoint with input.partitions: {found} (docs/savepoints.md); a topic cannot lose partitions, so if it was recreated, set input.partitions to its count and restore.resetOffsets: true")]
    PartitionCount {
        /// The topic.
        topic: String,
        /// N in the spec.
        expected: u32,
        /// Partitions the topic has.
        found: u32,
    },
}

impl SourceError {
    /// A copy of a start-up check's error, for each task that asks (I/O errors, which are not
    /// `Clone`, are carried as text).
    pub(crate) fn duplicate(&self) -> SourceError {
        match self {
            SourceError::Kafka { topic, message } => SourceError::Kafka {
                topic: topic.clone(),
                message: message.clone(),
            },
            SourceError::PartitionCount {
                topic,
                expected,
                found,
            } => SourceError::PartitionCount {
                topic: topic.clone(),
                expected: *expected,
                found: *found,
            },
            SourceError::OffsetOutOfRange { what, offset, end } => SourceError::OffsetOutOfRange {
                what: what.clone(),
                offset: *offset,
                end: *end,
            },
            SourceError::Io { path, source } => SourceError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
        }
    }
}

/// One partition of an input.
pub trait Source: Send {
    /// Appends up to `max` records to `batch`.
    fn poll(&mut self, batch: &mut RecordBatch, max: usize) -> Result<Poll, SourceError>;
    /// The offset of the next record to read: what a checkpoint stores.
    fn position(&self) -> u64;
    /// Positions the source at `offset` (a value previously returned by `position`).
    fn seek(&mut self, offset: u64) -> Result<(), SourceError>;
    /// Records (or bytes, for files) not read yet, when known.
    fn lag(&self) -> Option<u64>;
}

/// Builds sources for the partitions of one input, sharing what all partitions need (the
/// generator's key table, the Kafka start-up check and partition watch) across the tasks of a
/// process.
pub struct SourceFactory {
    spec: InputSpec,
    generator: Option<Arc<generator::KeyTable>>,
    kafka: Option<Arc<kafka::KafkaShared>>,
    /// `cairn_bad_records_total`, for input a source itself skips as bad (an over-long line).
    bad_records: Option<IntCounterVec>,
}

impl SourceFactory {
    /// Prepares to open partitions of `spec`.
    pub fn new(spec: &InputSpec) -> Self {
        let generator = match spec {
            InputSpec::Generator(g) => Some(Arc::new(generator::KeyTable::build(g))),
            InputSpec::File(_) | InputSpec::Kafka(_) => None,
        };
        let kafka = match spec {
            InputSpec::Kafka(k) => Some(kafka::KafkaShared::new(k)),
            _ => None,
        };
        SourceFactory {
            spec: spec.clone(),
            generator,
            kafka,
            bad_records: None,
        }
    }

    /// Checks that the input can be read as the spec says before any task starts: for Kafka,
    /// that the topic exists with exactly `input.partitions` partitions. Blocking (a metadata
    /// request). A run calls it before claiming a generation or restoring state, so a job
    /// whose input does not match fails at once; sources also check on their first seek (the
    /// result is kept, so the brokers are asked once per process).
    pub fn check(&self) -> Result<(), SourceError> {
        match &self.kafka {
            Some(shared) => shared.check(),
            None => Ok(()),
        }
    }

    /// The input's observed partition count (Kafka: re-read every
    /// `input.partitionCheckInterval`), for the status and metrics; `None` for inputs whose
    /// partition count is the spec's.
    pub fn partition_watch(&self) -> Option<Arc<kafka::PartitionWatch>> {
        self.kafka.as_ref().map(|shared| shared.watch())
    }

    /// Exports the observed partition count (Kafka) to `metrics`
    /// (`cairn_input_partitions_observed`; other inputs report N), and counts input the
    /// sources skip themselves in the task's `cairn_bad_records_total`.
    pub fn with_metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        self.bad_records = Some(metrics.bad_records.clone());
        match self.partition_watch() {
            Some(watch) => watch.export_to(metrics.input_partitions_observed.clone()),
            None => metrics
                .input_partitions_observed
                .set(i64::from(self.spec.partitions())),
        }
        self
    }

    /// Opens partition `p`, positioned at offset 0.
    pub fn open(&self, partition: u32) -> Box<dyn Source> {
        match &self.spec {
            InputSpec::Generator(g) => Box::new(generator::GeneratorSource::new(
                g,
                self.generator.clone().expect("built with the spec"),
                partition,
            )),
            InputSpec::File(f) => {
                let source = file::FileSource::new(f, partition);
                Box::new(match &self.bad_records {
                    // Labelled like the task's own metrics: the task id is its partition.
                    Some(counter) => source.with_bad_record_counter(
                        counter.with_label_values(&[&partition.to_string()]),
                    ),
                    None => source,
                })
            }
            InputSpec::Kafka(_) => Box::new(kafka::KafkaSource::new(
                self.kafka.clone().expect("built with the spec"),
                partition,
            )),
        }
    }
}
