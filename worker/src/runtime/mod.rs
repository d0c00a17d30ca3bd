//! The worker runtime: task instances grouped into containers (one processing thread each, as
//! in Samza's run loop), driven by the checkpoint coordinator.

pub mod container;
pub mod job;
pub mod messages;
pub mod progress;
pub mod remote;
pub mod start;
pub mod task_instance;

pub use job::{run_job, Outcome, Role, RunError, RunOptions};
