//! The Rust side of `wit/task.wit`: the host traits and types `bindgen!` generates, and the
//! borrowed record the host lowers into the component without copying it first.

use wasmtime::component::{ComponentType, Lower};

use crate::state::{TimeDomain, Timer};

/// The generated code, in a module of its own: the world's `use` brings WIT names (`timer`,
/// `task-error`) that would clash with the worker's.
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "task",
        // A host import may trap: a state or sink failure stops the task (HostData::settle).
        imports: { default: trappable },
    });
}

pub(super) use self::generated::cairn;
pub(super) use self::generated::cairn::task::types::{
    Entry, Level, TaskError as GuestError, TimeDomain as GuestDomain, Timer as GuestTimer,
};
pub(super) use self::generated::Task;

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
