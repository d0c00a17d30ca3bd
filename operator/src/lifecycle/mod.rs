//! The job lifecycle as a pure state machine: from the desired spec, the recorded status (the
//! write-ahead log) and what was observed, decide the next status, the effects to carry out
//! after writing it, and the events to publish. No client and no clock inside: tests drive it
//! with fixtures and a fixed time.
//!
//! Order of work per reconcile: the new status is written first, then the effects run. So a
//! savepoint is in status before any pod is deleted, and a target spec is in status before its
//! pods are created; an operator killed at any point resumes from status.

mod autoscale;
mod classify;
pub mod conditions;
mod load_model;
mod plan;
pub mod standby;
mod store_work;

pub use autoscale::{with_autoscaled_parallelism, LoadMemory, HISTORY as AUTOSCALER_HISTORY};
pub use classify::{classify, Change};
pub use plan::{
    backoff, elapsed, plan, refused, savepoint_answered, Effect, Input, Note, Observed, Outcome,
    Plan, Workers, MAX_REQUEUE,
};
