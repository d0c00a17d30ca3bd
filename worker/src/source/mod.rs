//! Input sources. A source reads one partition and is positioned by an offset that the
//! checkpoint records; seeking to that offset after a restore replays exactly what follows.

pub mod batch;
pub mod file;
pub mod generator;

pub use batch::RecordBatch;

use std::sync::Arc;

use cairn_spec::InputSpec;

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
/// generator's key table) across the tasks of a process.
pub struct SourceFactory {
    spec: InputSpec,
    generator: Option<Arc<generator::KeyTable>>,
}

impl SourceFactory {
    /// Prepares to open partitions of `spec`.
    pub fn new(spec: &InputSpec) -> Self {
        let generator = match spec {
            InputSpec::Generator(g) => Some(Arc::new(generator::KeyTable::build(g))),
            InputSpec::File(_) => None,
        };
        SourceFactory {
            spec: spec.clone(),
            generator,
        }
    }

    /// Opens partition `p`, positioned at offset 0.
    pub fn open(&self, partition: u32) -> Box<dyn Source> {
        match &self.spec {
            InputSpec::Generator(g) => Box::new(generator::GeneratorSource::new(
                g,
                self.generator.clone().expect("built with the spec"),
                partition,
            )),
            InputSpec::File(f) => Box::new(file::FileSource::new(f, partition)),
        }
    }
}
