//! The worker runtime: task instances grouped into containers (one processing thread each, as
//! in Samza's run loop), driven by the checkpoint coordinator ([`coordinator`]: triggers
//! checkpoint `n`, collects one acknowledgement per task and commits `n` by writing its commit
//! record create-only, or aborts it), over the store-side mechanics of `checkpoint`.

pub mod container;
pub mod coordinator;
pub mod event_time;
pub mod failure;
pub mod held;
pub mod job;
pub mod job_progress;
pub mod messages;
pub mod objective;
pub mod progress;
pub mod recovery;
pub mod remote;
pub mod standby;
pub mod task_instance;

pub use job::{run_job, Outcome, Role, RunError, RunOptions};
