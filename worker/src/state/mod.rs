//! Keyed task state: RocksDB behind a write-back cache, with hard-link snapshots for checkpoints;
//! and an in-memory stand-in for unit tests of tasks ([`MemoryState`]).

pub mod db;
mod dirty_map;
mod ingest;
pub mod key;
pub mod keyed;
pub mod memory;
mod small_bytes;
pub mod timer;

pub use db::{open_task_db, StateError};
pub use keyed::{KeyedState, Snapshot, SubEntry};
pub use memory::MemoryState;
pub use timer::{TimeDomain, Timer, TimerQueue};
