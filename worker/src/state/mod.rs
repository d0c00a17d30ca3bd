//! Keyed task state: RocksDB behind a write-back cache, with hard-link snapshots for checkpoints.

pub mod db;
pub mod key;
pub mod keyed;

pub use db::{open_task_db, StateError};
pub use keyed::{KeyedState, Snapshot, SubEntry};
