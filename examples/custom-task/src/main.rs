//! A user's own worker binary: the built-in tasks plus two custom tasks, `max-value` and
//! `minute-max` (a user-defined event-time window).
//!
//! Build it into your image instead of `cairn-worker`; every subcommand (`run`, `checkpoints`,
//! `state dump`, …) works the same, and `task.name: max-value` becomes available to job specs.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use cairn_worker::task::{Record, StreamTask, TaskContext, TaskError, TaskRegistry, Timer};
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

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(30))
    }

    fn on_tick(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
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

/// A user-defined window: the largest value of each key in each event-time minute, emitted as
/// `<minute start> <max>` when the watermark passes the minute's last millisecond. Needs
/// `eventTime:` in the job. Each minute of a key is a sub-key of its state, and one event-time
/// timer per key and minute closes it: both are in every checkpoint and savepoint and move
/// with the key on a re-split, so the window survives any failure or rescale.
struct MinuteMax;

const MINUTE_MS: u64 = 60_000;

impl StreamTask for MinuteMax {
    fn process(&mut self, r: &Record<'_>, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let (Some(ts), Some(value)) = (r.timestamp, integer(r.value)) else {
            return Err(TaskError::BadRecord {
                reason: "minute-max needs an integer value and event time (eventTime:)".into(),
            });
        };
        let start = ts - ts % MINUTE_MS;
        let last = start + MINUTE_MS - 1;
        if ctx.watermark().is_some_and(|w| last <= w) {
            // The minute was emitted already: the record is late.
            ctx.count_late();
            return Ok(());
        }
        let minute = start.to_be_bytes();
        let current = ctx.get_sub(r.key, &minute)?.map(|v| decode(&v));
        if current.is_none() {
            ctx.timers().register(r.key, Timer::event(last))?;
        }
        if current.is_none_or(|c| value > c) {
            ctx.put_sub(r.key, &minute, &value.to_le_bytes())?;
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        key: &[u8],
        timer: Timer,
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        let start = timer.at + 1 - MINUTE_MS;
        let minute = start.to_be_bytes();
        if let Some(max) = ctx.get_sub(key, &minute)? {
            ctx.emit(key, format!("{start} {}", decode(&max)).as_bytes())?;
            ctx.delete_sub(key, &minute)?;
        }
        Ok(())
    }
}

fn integer(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

fn decode(v: &[u8]) -> i64 {
    i64::from_le_bytes(v.try_into().unwrap_or([0; 8]))
}

fn main() -> ExitCode {
    let mut registry = TaskRegistry::with_builtins();
    registry.register("max-value", MaxValue::from_config);
    registry.register("minute-max", |_| Ok(Box::new(MinuteMax)));
    cairn_worker::cli::main_with(registry)
}

/// A task is unit-tested record by record with in-memory state and a collecting sink: no
/// RocksDB, no directory, no job (the integration test in tests/ runs the whole binary).
#[cfg(test)]
mod tests {
    use cairn_worker::sink::CollectSink;
    use cairn_worker::state::MemoryState;
    use cairn_worker::task::{Record, StreamTask, TaskContext, TaskError, TimeDomain};

    use super::{MaxValue, MinuteMax};

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
                timestamp: None,
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

    /// The window is driven as the runtime drives it: the watermark is set before each record,
    /// and due event-time timers fire after it.
    #[test]
    fn minute_max_emits_each_minute_once_when_the_watermark_passes_it() {
        let mut task = MinuteMax;
        let (mut state, mut sink) = (MemoryState::new(), CollectSink::default());
        let mut ctx = TaskContext::in_memory(&mut state, &mut sink, 0);
        // (key, timestamp, value, watermark after the record)
        let input = [
            ("a", 1_000, 5, None),
            ("a", 59_000, 7, Some(50_000)),
            ("b", 30_000, 1, Some(50_000)),
            ("a", 61_000, 2, Some(60_500)),    // passes minute 0
            ("a", 10_000, 99, Some(60_500)),   // late: minute 0 is closed
            ("a", 119_999, 3, Some(u64::MAX)), // the input ends
        ];
        let mut watermark = None;
        for (offset, (key, ts, value, after)) in input.into_iter().enumerate() {
            ctx.set_watermark(watermark);
            let value = value.to_string();
            let record = Record {
                partition: 0,
                offset: offset as u64,
                timestamp: Some(ts),
                key: key.as_bytes(),
                value: value.as_bytes(),
            };
            task.process(&record, &mut ctx).unwrap();
            watermark = after;
            if let Some(w) = after {
                ctx.set_watermark(after);
                while let Some((key, timer)) = ctx.pop_due_timer(TimeDomain::Event, w).unwrap() {
                    task.on_timer(&key, timer, &mut ctx).unwrap();
                }
            }
        }
        assert_eq!(ctx.late(), 1);
        let emitted: Vec<(String, String)> = sink
            .records
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k.clone()).unwrap(),
                    String::from_utf8(v.clone()).unwrap(),
                )
            })
            .collect();
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            emitted,
            pairs(&[("a", "0 7"), ("b", "0 1"), ("a", "60000 3")]),
            "each minute once, with its max, and the late 99 left out"
        );
        assert!(state.is_empty() && state.timer_queue().is_empty());
    }
}
