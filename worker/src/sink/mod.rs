//! Output sinks. A sink seals what a task emitted since the last checkpoint at the checkpoint's
//! synchronous phase, and publishes it only when the whole job has committed that checkpoint
//! (two-phase). `stdout` and `null` have nothing to seal.

pub mod file;
pub mod kafka;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use cairn_contract::OutputSpec;

/// Why a sink failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing, syncing or publishing output failed.
    #[error("output {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Producing to Kafka failed (after librdkafka's own retries).
    #[error("kafka output topic {topic}: {message}")]
    Kafka {
        /// The output topic.
        topic: String,
        /// What went wrong.
        message: String,
    },
}

/// Output sealed at a checkpoint, to be made durable off the task thread.
#[derive(Debug, Default)]
pub struct Sealed {
    /// Files to fsync.
    pub files: Vec<PathBuf>,
    /// Directories to fsync after the files.
    pub dirs: Vec<PathBuf>,
    /// Waits for output handed to another system (Kafka acknowledgements), run after the
    /// fsyncs.
    pub waits: Vec<DurableWait>,
}

/// A blocking wait until output sealed at a checkpoint is durable somewhere other than a local
/// file, e.g. acknowledged by Kafka brokers.
#[derive(Clone)]
pub struct DurableWait(Arc<dyn Fn() -> Result<(), SinkError> + Send + Sync>);

impl DurableWait {
    /// A wait that runs `wait` (blocking) in the checkpoint's asynchronous phase.
    pub fn new(wait: impl Fn() -> Result<(), SinkError> + Send + Sync + 'static) -> Self {
        DurableWait(Arc::new(wait))
    }
}

impl std::fmt::Debug for DurableWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DurableWait")
    }
}

impl Sealed {
    /// fsyncs everything sealed, then runs the waits; blocking.
    pub fn make_durable(&self) -> Result<(), SinkError> {
        for path in self.files.iter().chain(&self.dirs) {
            let io = |source| SinkError::Io {
                path: path.clone(),
                source,
            };
            std::fs::File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
        }
        for wait in &self.waits {
            (wait.0)()?;
        }
        Ok(())
    }
}

/// Where a task's output goes.
pub trait Sink: Send {
    /// Writes one output record.
    fn write(&mut self, key: &[u8], value: &[u8]) -> Result<(), SinkError>;
    /// Synchronous phase of checkpoint `id`: closes the output written since the previous
    /// checkpoint so that it belongs to `id`.
    fn seal(&mut self, id: u64) -> Result<Sealed, SinkError>;
    /// Checkpoint `id` is committed: publish everything sealed up to it.
    fn publish(&mut self, id: u64) -> Result<(), SinkError>;
}

/// Builds the sink of `task` for the job's output spec. `restored` is the checkpoint the task
/// was restored from: output sealed after it is discarded, output up to it is published.
pub fn open(
    spec: &OutputSpec,
    task: u32,
    restored: Option<u64>,
) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match spec {
        OutputSpec::Stdout => Box::new(StdoutSink {
            out: std::io::stdout(),
        }),
        OutputSpec::Null => Box::new(NullSink),
        OutputSpec::File { path } => Box::new(file::FileSink::open(path, task, restored)?),
        OutputSpec::Kafka(kafka) => kafka::open(kafka, task, restored)?,
    })
}

/// Prints `key<TAB>value` lines; at-least-once (a restart may print records again).
pub struct StdoutSink {
    out: std::io::Stdout,
}

impl Sink for StdoutSink {
    fn write(&mut self, key: &[u8], value: &[u8]) -> Result<(), SinkError> {
        let mut lock = self.out.lock();
        let io = |source| SinkError::Io {
            path: "stdout".into(),
            source,
        };
        lock.write_all(key).map_err(io)?;
        lock.write_all(b"\t").map_err(io)?;
        lock.write_all(value).map_err(io)?;
        lock.write_all(b"\n").map_err(io)
    }
    fn seal(&mut self, _id: u64) -> Result<Sealed, SinkError> {
        Ok(Sealed::default())
    }
    fn publish(&mut self, _id: u64) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Keeps every record written, in order: the output side of a task's unit test (with
/// `TaskContext::in_memory`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CollectSink {
    /// (key, value) of each record written.
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Sink for CollectSink {
    fn write(&mut self, key: &[u8], value: &[u8]) -> Result<(), SinkError> {
        self.records.push((key.to_vec(), value.to_vec()));
        Ok(())
    }
    fn seal(&mut self, _id: u64) -> Result<Sealed, SinkError> {
        Ok(Sealed::default())
    }
    fn publish(&mut self, _id: u64) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Discards everything (benchmarks, jobs whose result is their state).
pub struct NullSink;

impl Sink for NullSink {
    fn write(&mut self, _key: &[u8], _value: &[u8]) -> Result<(), SinkError> {
        Ok(())
    }
    fn seal(&mut self, _id: u64) -> Result<Sealed, SinkError> {
        Ok(Sealed::default())
    }
    fn publish(&mut self, _id: u64) -> Result<(), SinkError> {
        Ok(())
    }
}
