//! The Rust side of `wit/task.wit`: the host traits and types `bindgen!` generates, and the
//! borrowed record the host lowers into the component without copying it first.

use wasmtime::component::{ComponentType, Lower};

use crate::source::batch::RecordBatch;
use crate::state::{TimeDomain, Timer};

/// The generated code, in a module of its own: the world's `use` brings WIT names (`timer`,
/// `task-error`) that would clash with the worker's.
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "batch-task",
        // A host import may trap: a state or sink failure stops the task (HostData::settle).
        imports: { default: trappable },
    });
}

pub(super) use self::generated::cairn;
pub(super) use self::generated::cairn::task::types::{
    Entry, Level, Rejected, TaskError as GuestError, TimeDomain as GuestDomain, Timer as GuestTimer,
};
pub(super) use self::generated::BatchTask;

/// `input-record` as the host lowers it: borrowed from the source's batch, copied once, into
/// the component's memory.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
pub(super) struct InputRecordRef<'a> {
    pub partition: u32,
    pub offset: u64,
    pub timestamp: Option<u64>,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// `record-batch` as the host lowers it: the packed lists of [`PackedBatch`], borrowed.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
pub(super) struct RecordBatchRef<'a> {
    pub partition: u32,
    pub offsets: &'a [u64],
    pub timestamps: &'a [Option<u64>],
    pub keys: &'a [u8],
    #[component(name = "key-ends")]
    pub key_ends: &'a [u32],
    pub values: &'a [u8],
    #[component(name = "value-ends")]
    pub value_ends: &'a [u32],
}

/// A batch of records packed into the lists of `record-batch`; kept by a task instance and
/// refilled for every batch, so that packing allocates only while batches grow.
#[derive(Default)]
pub(super) struct PackedBatch {
    partition: u32,
    offsets: Vec<u64>,
    timestamps: Vec<Option<u64>>,
    keys: Vec<u8>,
    key_ends: Vec<u32>,
    values: Vec<u8>,
    value_ends: Vec<u32>,
}

impl PackedBatch {
    /// Packs `batch`; `None` if its keys or values exceed the 4 GiB a component can address.
    pub(super) fn fill(&mut self, batch: &RecordBatch) -> Option<()> {
        self.offsets.clear();
        self.timestamps.clear();
        self.keys.clear();
        self.key_ends.clear();
        self.values.clear();
        self.value_ends.clear();
        for i in 0..batch.len() {
            let record = batch.get(i);
            self.partition = record.partition;
            self.offsets.push(record.offset);
            self.timestamps.push(record.timestamp);
            self.keys.extend_from_slice(record.key);
            self.key_ends.push(u32::try_from(self.keys.len()).ok()?);
            self.values.extend_from_slice(record.value);
            self.value_ends.push(u32::try_from(self.values.len()).ok()?);
        }
        Some(())
    }

    /// The packed batch as the component's argument.
    pub(super) fn as_arg(&self) -> RecordBatchRef<'_> {
        RecordBatchRef {
            partition: self.partition,
            offsets: &self.offsets,
            timestamps: &self.timestamps,
            keys: &self.keys,
            key_ends: &self.key_ends,
            values: &self.values,
            value_ends: &self.value_ends,
        }
    }
}

impl From<Timer> for GuestTimer {
    fn from(timer: Timer) -> Self {
        GuestTimer {
            domain: match timer.domain {
                TimeDomain::Processing => GuestDomain::Processing,
                TimeDomain::Event => GuestDomain::Event,
            },
            at: timer.at,
        }
    }
}

impl From<GuestTimer> for Timer {
    fn from(timer: GuestTimer) -> Self {
        Timer {
            domain: match timer.domain {
                GuestDomain::Processing => TimeDomain::Processing,
                GuestDomain::Event => TimeDomain::Event,
            },
            at: timer.at,
        }
    }
}
