//! Built-in tasks, usable from YAML alone.

use serde_json::{Map, Value};

use super::context::decode_i64;
use super::{Record, StreamTask, TaskContext, TaskError, TaskRegistry};

/// Registers every built-in task.
pub fn register_all(r: &mut TaskRegistry) {
    r.register("count", |cfg| {
        reject_unknown(cfg, &[])?;
        Ok(Box::new(Count::default()))
    });
    r.register("sum", |cfg| {
        reject_unknown(cfg, &[])?;
        Ok(Box::new(Sum))
    });
    r.register("dedupe", |cfg| Ok(Box::new(Dedupe::from_config(cfg)?)));
    r.register("filter", |cfg| Ok(Box::new(Filter::from_config(cfg)?)));
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
#[derive(Default)]
pub struct Count {
    digits: itoa::Buffer,
}

impl StreamTask for Count {
    fn process(&mut self, r: &Record<'_>, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let n = ctx.add_i64(r.key, 1)?;
        let text = self.digits.format(n);
        ctx.emit(r.key, text.as_bytes())
    }

    fn describe_value(&self, value: &[u8]) -> Value {
        describe_counter(value)
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
