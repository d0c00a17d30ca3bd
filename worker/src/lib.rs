//! The Cairn worker: task instances with RocksDB keyed state, coordinated incremental
//! checkpoints to a durable store, exact restore.
//!
//! A job author implements [`task::StreamTask`], registers it in a [`task::TaskRegistry`] and
//! calls [`cli::main_with`] from their own `main` to get a worker binary with every
//! subcommand of `cairn-worker`.
// No unsafe code but one audited line: the CPU's prefetch hint in state/dirty_map.rs, which
// std offers only as an unsafe intrinsic. Everything else is denied it.
#![deny(unsafe_code)]

pub mod checkpoint;
pub mod cli;
pub mod control;
pub mod housekeeping;
pub mod http;
pub mod inspect;
mod kafka;
pub mod metrics;
pub mod partition;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod state;
pub mod storage;
pub mod task;
