//! Built-in tasks, usable from YAML alone.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::context::decode_i64;
use super::{Record, StreamTask, TaskContext, TaskError, TaskRegistry};

/// Registers every built-in task.
pub fn register_all(r: &mut TaskRegistry) {
    r.register("count", |cfg| Ok(Box::new(Count::from_config(cfg)?)));
    r.register("sum", |cfg| {
        reject_unknown(cfg, &[])?;
        Ok(Box::new(Sum))
    });
    r.register("dedupe", |cfg| Ok(Box::new(Dedupe::from_config(cfg)?)));
    r.register("filter", |cfg| Ok(Box::new(Filter::from_config(cfg)?)));
    r.register("window", |cfg| {
        Ok(Box::new(super::window::Window::from_config(cfg)?))
    });
    r.register("passthrough", |cfg| {
        reject_unknown(cfg, &[])?;
        Ok(Box::new(Filter::default()))
    });
}

fn reject_unknown(cfg: &Map<String, Value>, allowed: &[&str]) -> Result<(), TaskError> {
    for k in cfg.keys() {
        if !allowed.contains(&k.as_str()) {
            let expected = if allowed.is_empty() {
                "this task takes no config".into()
            } else {
                format!("expected one of: {}", allowed.join(", "))
            };
            return Err(TaskError::Config {
                field: k.clone(),
                problem: format!("unknown key; {expected}"),
            });
        }
    }
    Ok(())
}

fn describe_counter(value: &[u8]) -> Value {
    if value.len() == 8 {
        Value::from(decode_i64(value))
    } else {
        super::describe_bytes(value)
    }
}

/// Keyed count (word count): keeps a 64-bit count per key and emits `(key, new count)`.
/// `delayPerRecord` makes each record take that much longer (a load-shaping knob for tests).
#[derive(Default)]
pub struct Count {
    digits: itoa::Buffer,
    delay: Option<RecordDelay>,
}

impl Count {
    fn from_config(cfg: &Map<String, Value>) -> Result<Self, TaskError> {
        reject_unknown(cfg, &["delayPerRecord"])?;
        Ok(Count {
            delay: RecordDelay::from_config(cfg)?,
            ..Count::default()
        })
    }
}

impl StreamTask for Count {
    fn process(&mut self, r: &Record<'_>, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        if let Some(delay) = &mut self.delay {
            delay.record();
        }
        let n = ctx.add_i64(r.key, 1)?;
        let text = self.digits.format(n);
        ctx.emit(r.key, text.as_bytes())
    }

    fn state_keyed_by_record(&self) -> bool {
        true
    }

    fn describe_value(&self, value: &[u8]) -> Value {
        describe_counter(value)
    }
}

/// The longest `delayPerRecord`: it stands for a call to another service per record, and a
/// longer one is a typo that would make a job look hung.
const MAX_RECORD_DELAY: Duration = Duration::from_secs(1);

/// Sleeping shorter than this costs more in timer slack and wake-ups than it models.
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// `delayPerRecord`: each record costs this much wall time, as a call to an external service
/// would, but little CPU, so that a job's capacity grows with its containers even on a machine
/// with few cores (autoscaling tests, benchmarks). The delay accumulates per record and is
/// slept off once it reaches [`MIN_SLEEP`], less what the sleeps overshot.
#[derive(Debug)]
struct RecordDelay {
    per_record: Duration,
    /// Delay owed and not slept yet.
    debt: Duration,
}

impl RecordDelay {
    /// `None` without `delayPerRecord` (or with 0).
    fn from_config(cfg: &Map<String, Value>) -> Result<Option<Self>, TaskError> {
        const FIELD: &str = "delayPerRecord";
        let problem = |problem: String| TaskError::Config {
            field: FIELD.into(),
            problem,
        };
        let per_record = match cfg.get(FIELD) {
            None => return Ok(None),
            Some(Value::String(text)) => cairn_contract::parse_duration(text)
                .map_err(|e| problem(format!("{e}; for example \"2ms\"")))?,
            Some(other) => {
                return Err(problem(format!(
                    "must be a duration string such as \"2ms\", got {other}"
                )))
            }
        };
        if per_record > MAX_RECORD_DELAY {
            return Err(problem(format!(
                "{per_record:?} per record is more than the {MAX_RECORD_DELAY:?} allowed; it models a call to another service per record, use a few milliseconds such as \"2ms\""
            )));
        }
        Ok((!per_record.is_zero()).then_some(RecordDelay {
            per_record,
            debt: Duration::ZERO,
        }))
    }

    /// One record: owe its delay, and sleep once the debt is worth a sleep.
    fn record(&mut self) {
        self.debt += self.per_record;
        if self.debt >= MIN_SLEEP {
            let started = Instant::now();
            std::thread::sleep(self.debt);
            self.debt = self.debt.saturating_sub(started.elapsed());
        }
    }
}

/// Keyed sum of the records' values, which must be decimal integers; emits `(key, new sum)`.
pub struct Sum;

impl StreamTask for Sum {
    fn process(&mut self, r: &Record<'_>, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let text = std::str::from_utf8(r.value).unwrap_or("");
        let delta: i64 = text.trim().parse().map_err(|_| TaskError::BadRecord {
            reason: format!(
                "sum needs a decimal integer value, got {:?}",
                String::from_utf8_lossy(&r.value[..r.value.len().min(64)])
            ),
        })?;
        let n = ctx.add_i64(r.key, delta)?;
        ctx.emit(r.key, n.to_string().as_bytes())
    }

    fn state_keyed_by_record(&self) -> bool {
        true
    }

    fn describe_value(&self, value: &[u8]) -> Value {
        describe_counter(value)
    }
}

/// What makes two records duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DedupeBy {
    Key,
    Record,
}

/// Emits a record only the first time it is seen: by key (`by: key`, the default) or by the
/// whole record (`by: record`). Remembers what it saw in keyed state, so it survives restarts.
pub struct Dedupe {
    by: DedupeBy,
}

impl Dedupe {
    fn from_config(cfg: &Map<String, Value>) -> Result<Self, TaskError> {
        reject_unknown(cfg, &["by"])?;
        let by = match cfg.get("by").map(|v| v.as_str()) {
            None | Some(Some("key")) => DedupeBy::Key,
            Some(Some("record")) => DedupeBy::Record,
            Some(_) => {
                return Err(TaskError::Config {
                    field: "by".into(),
                    problem: "must be \"key\" or \"record\"".into(),
                })
            }
        };
        Ok(Dedupe { by })
    }
}

impl StreamTask for Dedupe {
    fn process(&mut self, r: &Record<'_>, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let sub: &[u8] = if self.by == DedupeBy::Record {
            r.value
        } else {
            b""
        };
        if ctx.get_sub(r.key, sub)?.is_none() {
            ctx.put_sub(r.key, sub, b"1")?;
            ctx.emit(r.key, r.value)?;
        }
        Ok(())
    }
}

/// Stateless filter: emits records that match every configured condition (`keyPrefix`,
/// `valueContains`, `minValue` for decimal values). With no conditions it passes everything
/// (`passthrough`).
#[derive(Default)]
pub struct Filter {
    key_prefix: Option<Vec<u8>>,
    value_contains: Option<Vec<u8>>,
    min_value: Option<i64>,
}

impl Filter {
    fn from_config(cfg: &Map<String, Value>) -> Result<Self, TaskError> {
        reject_unknown(cfg, &["keyPrefix", "valueContains", "minValue"])?;
        let string = |field: &str| -> Result<Option<Vec<u8>>, TaskError> {
            match cfg.get(field) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_bytes().to_vec())),
                Some(_) => Err(TaskError::Config {
                    field: field.into(),
                    problem: "must be a string".into(),
                }),
            }
        };
        let min_value = match cfg.get("minValue") {
            None => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| TaskError::Config {
                field: "minValue".into(),
                problem: "must be an integer".into(),
            })?),
        };
        Ok(Filter {
            key_prefix: string("keyPrefix")?,
            value_contains: string("valueContains")?,
            min_value,
        })
    }

    fn matches(&self, r: &Record<'_>) -> bool {
        if let Some(p) = &self.key_prefix {
            if !r.key.starts_with(p) {
                return false;
            }
        }
        if let Some(needle) = &self.value_contains {
            if !r
                .value
                .windows(needle.len().max(1))
                .any(|w| w == needle.as_slice())
            {
                return false;
            }
        }
        if let Some(min) = self.min_value {
            let parsed = std::str::from_utf8(r.value)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok());
            if parsed.is_none_or(|v| v < min) {
                return false;
            }
        }
        true
    }
}

impl StreamTask for Filter {
    fn process(&mut self, r: &Record<'_>, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        if self.matches(r) {
            ctx.emit(r.key, r.value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{Sealed, Sink, SinkError};
    use crate::state::{open_task_db, KeyedState};

    #[derive(Default)]
    struct Captured(Vec<(String, String)>);

    impl Sink for Captured {
        fn write(&mut self, key: &[u8], value: &[u8]) -> Result<(), SinkError> {
            self.0.push((
                String::from_utf8_lossy(key).into(),
                String::from_utf8_lossy(value).into(),
            ));
            Ok(())
        }
        fn seal(&mut self, _id: u64) -> Result<Sealed, SinkError> {
            Ok(Sealed::default())
        }
        fn publish(&mut self, _id: u64) -> Result<(), SinkError> {
            Ok(())
        }
    }

    /// Runs `records` through the named built-in task; returns the output and bad-record count.
    fn run(
        name: &str,
        config: serde_json::Value,
        records: &[(&str, &str)],
    ) -> (Vec<(String, String)>, usize) {
        let (out, bad, _) = run_and_read(name, config, records, &[]);
        (out, bad)
    }

    /// [`run`], also returning the counter stored at each of `keys` afterwards (`None` when
    /// absent).
    fn run_and_read(
        name: &str,
        config: serde_json::Value,
        records: &[(&str, &str)],
        keys: &[&str],
    ) -> (Vec<(String, String)>, usize, Vec<Option<i64>>) {
        let tmp = tempfile::tempdir().unwrap();
        let cache = rocksdb::Cache::new_lru_cache(1 << 20);
        let mut state = KeyedState::new(
            open_task_db(&tmp.path().join("db"), &cache).unwrap(),
            1 << 20,
        );
        let mut sink = Captured::default();
        let cfg = config.as_object().cloned().unwrap_or_default();
        let mut task = TaskRegistry::with_builtins().build(name, &cfg).unwrap();
        let mut ctx = TaskContext::new(&mut state, &mut sink, 0);
        let mut bad = 0;
        for (i, (k, v)) in records.iter().enumerate() {
            let r = Record {
                partition: 0,
                offset: i as u64,
                timestamp: None,
                key: k.as_bytes(),
                value: v.as_bytes(),
            };
            match task.process(&r, &mut ctx) {
                Ok(()) => {}
                Err(TaskError::BadRecord { .. }) => bad += 1,
                Err(e) => panic!("{e}"),
            }
        }
        let values = keys
            .iter()
            .map(|k| ctx.get(k.as_bytes()).unwrap().map(|v| decode_i64(&v)))
            .collect();
        (sink.0, bad, values)
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn count_emits_running_counts() {
        let (out, _) = run(
            "count",
            serde_json::json!({}),
            &[("a", ""), ("b", ""), ("a", "")],
        );
        assert_eq!(out, pairs(&[("a", "1"), ("b", "1"), ("a", "2")]));
    }

    /// `delayPerRecord` costs each record its delay in wall time and leaves the counts exact.
    #[test]
    fn count_with_a_delay_per_record_takes_that_long_and_counts_exactly() {
        let started = Instant::now();
        let (out, _) = run(
            "count",
            serde_json::json!({"delayPerRecord": "2ms"}),
            &[("a", ""), ("b", ""), ("a", ""), ("a", ""), ("c", "")],
        );
        assert!(started.elapsed() >= Duration::from_millis(10));
        assert_eq!(
            out,
            pairs(&[("a", "1"), ("b", "1"), ("a", "2"), ("a", "3"), ("c", "1")])
        );
        // Below a millisecond the delay is owed, then slept off: 4 × 300 µs ⇒ at least 1 ms.
        let mut delay = RecordDelay::from_config(
            serde_json::json!({"delayPerRecord": "300us"})
                .as_object()
                .unwrap(),
        )
        .unwrap()
        .unwrap();
        let started = Instant::now();
        for _ in 0..4 {
            delay.record();
        }
        assert!(started.elapsed() >= Duration::from_micros(900));
        assert!(delay.debt < MIN_SLEEP, "{:?}", delay.debt);
    }

    /// A wrong `delayPerRecord` is a config error naming the key and the fix, not a panic;
    /// absent or 0 means no delay.
    #[test]
    fn a_bad_delay_per_record_names_the_key_and_the_fix() {
        let build = |config: serde_json::Value| {
            TaskRegistry::with_builtins()
                .build("count", config.as_object().unwrap())
                .err()
                .map(|e| e.to_string())
        };
        for (config, says) in [
            (
                serde_json::json!({"delayPerRecord": "2s"}),
                "more than the 1s",
            ),
            (
                serde_json::json!({"delayPerRecord": "soon"}),
                "not a duration",
            ),
            (serde_json::json!({"delayPerRecord": 2}), "duration string"),
            (
                serde_json::json!({"delayPerRecord": "2ms", "x": 1}),
                "task.config.x",
            ),
        ] {
            let err = build(config.clone()).unwrap_or_else(|| panic!("{config} was accepted"));
            assert!(err.contains(says), "{config}: {err}");
            if !says.starts_with("task.config.x") {
                assert!(err.contains("task.config.delayPerRecord"), "{err}");
                assert!(err.contains("2ms"), "names an example: {err}");
            }
        }
        assert_eq!(build(serde_json::json!({"delayPerRecord": "1s"})), None);
        let none = |config: serde_json::Value| {
            RecordDelay::from_config(config.as_object().unwrap())
                .unwrap()
                .is_none()
        };
        assert!(none(serde_json::json!({})));
        assert!(none(serde_json::json!({"delayPerRecord": "0ms"})));
    }

    #[test]
    fn sum_adds_values_and_skips_bad_records() {
        let (out, bad) = run(
            "sum",
            serde_json::json!({}),
            &[("a", "5"), ("a", "x"), ("a", "-2"), ("b", " 7 ")],
        );
        assert_eq!(out, pairs(&[("a", "5"), ("a", "3"), ("b", "7")]));
        assert_eq!(bad, 1);
    }

    #[test]
    fn a_sum_that_would_overflow_is_a_bad_record_and_leaves_the_sum() {
        let max = i64::MAX.to_string();
        let min = i64::MIN.to_string();
        let (out, bad, state) = run_and_read(
            "sum",
            serde_json::json!({}),
            &[
                ("a", &max),
                ("a", "1"),
                ("a", "-5"),
                ("a", "6"),
                ("b", &min),
                ("b", "-1"),
                ("b", "3"),
            ],
            &["a", "b"],
        );
        let a = (i64::MAX - 5).to_string();
        let b = (i64::MIN + 3).to_string();
        assert_eq!(
            out,
            pairs(&[("a", &max), ("a", &a), ("b", &min), ("b", &b)])
        );
        assert_eq!(bad, 3, "a+1, a+6 and b-1 are outside the 64-bit range");
        assert_eq!(state, [Some(i64::MAX - 5), Some(i64::MIN + 3)]);
    }

    #[test]
    fn a_key_longer_than_a_state_key_is_a_bad_record() {
        let long = "k".repeat(crate::state::key::MAX_KEY_LEN + 1);
        let longest = "k".repeat(crate::state::key::MAX_KEY_LEN);
        for task in ["count", "sum", "dedupe"] {
            let (out, bad, state) = run_and_read(
                task,
                serde_json::json!({}),
                &[
                    ("a", "1"),
                    (&long, "1"),
                    ("a", "2"),
                    (&longest, "4"),
                    (&long, "3"),
                ],
                &["a"],
            );
            assert_eq!(bad, 2, "{task}: both records with the long key are skipped");
            assert_eq!(out.len(), if task == "dedupe" { 2 } else { 3 }, "{task}");
            assert!(out.iter().all(|(k, _)| k.len() <= longest.len()), "{task}");
            if task != "dedupe" {
                assert_eq!(state, [Some(if task == "count" { 2 } else { 3 })], "{task}");
            }
        }
    }

    #[test]
    fn dedupe_by_key_and_by_record() {
        let input = [("a", "1"), ("a", "2"), ("b", "1"), ("a", "1")];
        let (by_key, _) = run("dedupe", serde_json::json!({}), &input);
        assert_eq!(by_key, pairs(&[("a", "1"), ("b", "1")]));
        let (by_record, _) = run("dedupe", serde_json::json!({"by": "record"}), &input);
        assert_eq!(by_record, pairs(&[("a", "1"), ("a", "2"), ("b", "1")]));
    }

    #[test]
    fn filter_applies_every_condition() {
        let input = [
            ("user-1", "15"),
            ("user-2", "5"),
            ("bot-1", "50"),
            ("user-3", "x"),
        ];
        let (out, _) = run(
            "filter",
            serde_json::json!({"keyPrefix": "user-", "minValue": 10}),
            &input,
        );
        assert_eq!(out, pairs(&[("user-1", "15")]));
        let (all, _) = run("passthrough", serde_json::json!({}), &input);
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = TaskRegistry::with_builtins()
            .build(
                "filter",
                serde_json::json!({"minValu": 3}).as_object().unwrap(),
            )
            .err()
            .unwrap();
        assert!(err.to_string().contains("task.config.minValu"), "{err}");
        let err = TaskRegistry::with_builtins()
            .build("nope", &Default::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("count"), "{err}");
    }
}
