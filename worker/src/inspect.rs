//! Read-only tools over a checkpoint store: list committed checkpoints, dump keyed state.

use std::io::Write;

use rocksdb::IteratorMode;
use serde::Serialize;

use crate::checkpoint::{catalog, restore, CheckpointError};
use crate::state::db::{open_read_only, TIMERS_CF};
use crate::state::{key, TimeDomain, Timer};
use crate::storage::CheckpointStore;
use crate::task::{describe_bytes, StreamTask, TaskRegistry};

/// One line of `cairn-worker checkpoints`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSummary {
    /// Checkpoint id.
    pub id: u64,
    /// Commit time (ms since the epoch).
    pub committed_at_ms: u64,
    /// State bytes referenced.
    pub total_bytes: u64,
    /// Bytes uploaded by it.
    pub uploaded_bytes: u64,
    /// Number of tasks.
    pub tasks: usize,
    /// Generation that committed it.
    pub generation: u64,
    /// Input offsets by partition.
    pub offsets: std::collections::BTreeMap<u32, u64>,
}

/// Errors of the inspection tools.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Reading the store failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The store has no committed checkpoint.
    #[error("the store {0} has no committed checkpoint")]
    Empty(String),
    /// The task asked for is not in the checkpoint.
    #[error("task {task} is not in checkpoint {checkpoint} (it has tasks 0..{tasks})")]
    NoSuchTask {
        /// Asked for.
        task: u32,
        /// The checkpoint.
        checkpoint: u64,
        /// Its task count.
        tasks: usize,
    },
    /// Opening or reading the restored database failed.
    #[error("reading the state of task {task}: {source}")]
    Db {
        /// Task id.
        task: u32,
        /// RocksDB's reason.
        #[source]
        source: rocksdb::Error,
    },
    /// Writing the output or a temp dir failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One line of `cairn-worker state dump`, fields in this order.
#[derive(Serialize)]
struct DumpLine {
    task: u32,
    key: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<serde_json::Value>,
    /// A state entry's value (absent on a timer's line).
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<serde_json::Value>,
    /// A timer of the key (after the task's state lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    timer: Option<TimerLine>,
}

/// A timer in `cairn-worker state dump`.
#[derive(Serialize)]
struct TimerLine {
    /// `processing` or `event`.
    domain: &'static str,
    /// When it fires, in milliseconds.
    at: u64,
}

/// Committed checkpoints, oldest first.
pub async fn list_checkpoints(
    store: &CheckpointStore,
) -> Result<Vec<CheckpointSummary>, InspectError> {
    let mut out = Vec::new();
    for id in catalog::committed_ids(store).await? {
        let c = match catalog::load_commit(store, id).await {
            Ok(c) => c,
            // A running job's retention deleted it between the listing and the read: it is no
            // longer committed, so it is not listed.
            Err(CheckpointError::Storage(e)) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        out.push(CheckpointSummary {
            id,
            committed_at_ms: c.committed_at_ms,
            total_bytes: c.total_bytes,
            uploaded_bytes: c.uploaded_bytes,
            tasks: c.tasks.len(),
            generation: c.generation,
            offsets: c.tasks.iter().flat_map(|t| t.offsets.clone()).collect(),
        });
    }
    Ok(out)
}

/// Writes the keyed state of `checkpoint` (default: the latest) as JSON lines
/// `{"task":..,"key":..,"value":..}` (plus `"sub"` for sub-keys), task by task in key order.
/// Values are rendered by the job's task when this binary knows it.
pub async fn dump_state(
    store: &CheckpointStore,
    checkpoint: Option<u64>,
    task: Option<u32>,
    registry: &TaskRegistry,
    out: &mut dyn Write,
) -> Result<u64, InspectError> {
    let id = match checkpoint {
        Some(id) => id,
        None => *catalog::committed_ids(store)
            .await?
            .last()
            .ok_or_else(|| InspectError::Empty(store.url().to_owned()))?,
    };
    let (commit, mut manifests) =
        catalog::load_checkpoint(store, id)
            .await
            .map_err(|e| match e {
                CheckpointError::Storage(s) if s.is_not_found() => CheckpointError::NotCommitted {
                    id,
                    store: store.url().to_owned(),
                },
                other => other,
            })?;
    manifests.sort_by_key(|m| m.task);
    if let Some(t) = task {
        if !manifests.iter().any(|m| m.task == t) {
            return Err(InspectError::NoSuchTask {
                task: t,
                checkpoint: id,
                tasks: manifests.len(),
            });
        }
    }
    // A WebAssembly component cannot describe its values (the default rendering is all it would
    // give): its module is not loaded, which would cost a compile and need its volume or
    // credentials.
    let renderer: Option<Box<dyn StreamTask>> = match &commit.spec.task.wasm {
        Some(_) => None,
        None => registry.build_task(&commit.spec.task).ok(),
    };
    let tmp = tempdir()?;
    let mut lines = 0;
    for m in manifests
        .iter()
        .filter(|m| task.is_none_or(|t| t == m.task))
    {
        let task_dir = tmp.join(format!("task-{}", m.task));
        let (db_dir, _) = restore::restore_task_db(store, m, &task_dir, "dump").await?;
        let db = open_read_only(&db_dir).map_err(|source| InspectError::Db {
            task: m.task,
            source,
        })?;
        for item in db.iterator(IteratorMode::Start) {
            let (k, v) = item.map_err(|source| InspectError::Db {
                task: m.task,
                source,
            })?;
            let Some(decoded) = key::decode(&k) else {
                continue;
            };
            let value = match &renderer {
                Some(t) => t.describe_value(&v),
                None => describe_bytes(&v),
            };
            let line = DumpLine {
                task: m.task,
                key: describe_bytes(decoded.key),
                sub: (!decoded.sub.is_empty()).then(|| describe_bytes(decoded.sub)),
                value: Some(value),
                timer: None,
            };
            serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            lines += 1;
        }
        // A checkpoint from before timers existed has no timers column family.
        let Some(timers) = db.cf_handle(TIMERS_CF) else {
            continue;
        };
        for item in db.iterator_cf(timers, IteratorMode::Start) {
            let (k, _) = item.map_err(|source| InspectError::Db {
                task: m.task,
                source,
            })?;
            let Some((decoded, timer)) =
                key::decode(&k).and_then(|d| Some((d.clone(), Timer::from_sub(d.sub)?)))
            else {
                continue;
            };
            let line = DumpLine {
                task: m.task,
                key: describe_bytes(decoded.key),
                sub: None,
                value: None,
                timer: Some(TimerLine {
                    domain: match timer.domain {
                        TimeDomain::Processing => "processing",
                        TimeDomain::Event => "event",
                    },
                    at: timer.at,
                }),
            };
            serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            lines += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(lines)
}

fn tempdir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "cairn-dump-{}-{}",
        std::process::id(),
        crate::checkpoint::now_ms()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
