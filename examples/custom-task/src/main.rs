//! A user's own worker binary: the built-in tasks plus `max-value`, a custom task.
//!
//! Build it into your image instead of `cairn-worker`; every subcommand (`run`, `checkpoints`,
//! `state dump`, …) works the same, and `task.name: max-value` becomes available to job specs.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use cairn_worker::task::{Record, StreamTask, TaskContext, TaskError, TaskRegistry};
use serde_json::{Map, Value};

/// Keeps the largest integer value seen per key, emits it each time it grows, and (to show the
/// timer and checkpoint callbacks) counts the keys it updated since the last checkpoint.
struct MaxValue {
    /// Only values at or above this are considered (config `floor`, default 0).
    floor: i64,
    updated_since_checkpoint: u64,
}

impl MaxValue {
    fn from_config(cfg: &Map<String, Value>) -> Result<Box<dyn StreamTask>, TaskError> {
        if let Some(k) = cfg.keys().find(|k| k.as_str() != "floor") {
            return Err(TaskError::Config {
                field: k.clone(),
                problem: "unknown key; expected: floor".into(),
            });
        }
        let floor = match cfg.get("floor") {
            None => 0,
            Some(v) => v.as_i64().ok_or_else(|| TaskError::Config {
                field: "floor".into(),
                problem: "must be an integer".into(),
            })?,
        };
        Ok(Box::new(MaxValue {
            floor,
            updated_since_checkpoint: 0,
        }))
    }
}

impl StreamTask for MaxValue {
    fn process(&mut self, r: &Record<'_>, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let value: i64 = std::str::from_utf8(r.value)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| TaskError::BadRecord {
                reason: "max-value needs an integer value".into(),
            })?;
        if value < self.floor {
            return Ok(());
        }
        let current = ctx
            .get(r.key)?
            .map(|v| i64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
        if current.is_none_or(|c| value > c) {
            ctx.put(r.key, &value.to_le_bytes())?;
            ctx.emit(r.key, value.to_string().as_bytes())?;
            self.updated_since_checkpoint += 1;
        }
        Ok(())
    }

    fn timer_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(30))
    }

    fn on_timer(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        eprintln!(
            "task {}: {} maxima raised since the last checkpoint",
            ctx.task_id(),
            self.updated_since_checkpoint
        );
        Ok(())
    }

    fn after_checkpoint(&mut self, _checkpoint_id: u64) {
        self.updated_since_checkpoint = 0;
    }

    fn describe_value(&self, value: &[u8]) -> Value {
        value
            .try_into()
            .map(i64::from_le_bytes)
            .map(Value::from)
            .unwrap_or(Value::Null)
    }
}

fn main() -> ExitCode {
    let mut registry = TaskRegistry::with_builtins();
    registry.register("max-value", MaxValue::from_config);
    cairn_worker::cli::main_with(registry)
}

/// A task is unit-tested record by record with in-memory state and a collecting sink: no
/// RocksDB, no directory, no job (the integration test in tests/ runs the whole binary).
#[cfg(test)]
mod tests {
    use cairn_worker::sink::CollectSink;
    use cairn_worker::state::MemoryState;
    use cairn_worker::task::{Record, TaskContext, TaskError};

    use super::MaxValue;

    #[test]
    fn keeps_the_max_per_key_above_the_floor_and_skips_bad_records() {
        let cfg = serde_json::json!({"floor": 3});
        let mut task = MaxValue::from_config(cfg.as_object().unwrap()).unwrap();
        let (mut state, mut sink) = (MemoryState::new(), CollectSink::default());
        let mut ctx = TaskContext::in_memory(&mut state, &mut sink, 0);
        let input = [
            ("a", "5"),
            ("b", "50"),
            ("a", "3"),
            ("a", "9"),
            ("c", "2"),
            ("c", "x"),
        ];
        let mut bad = 0;
        for (offset, (key, value)) in input.into_iter().enumerate() {
            let record = Record {
                partition: 0,
                offset: offset as u64,
                key: key.as_bytes(),
                value: value.as_bytes(),
            };
            match task.process(&record, &mut ctx) {
                Ok(()) => {}
                Err(TaskError::BadRecord { .. }) => bad += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(bad, 1);
        let max = |key: &[u8]| {
            state
                .get(key)
                .map(|v| i64::from_le_bytes(v.try_into().unwrap()))
        };
        assert_eq!((max(b"a"), max(b"b"), max(b"c")), (Some(9), Some(50), None));
        let emitted: Vec<(&[u8], &[u8])> = sink
            .records
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(
            emitted,
            [(&b"a"[..], &b"5"[..]), (b"b", b"50"), (b"a", b"9")]
        );
    }
}
