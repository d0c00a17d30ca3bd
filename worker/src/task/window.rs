//! The built-in `window` task: keyed aggregations over event-time windows, from YAML alone
//! (docs/windows.md).
//!
//! ```yaml
//! task:
//!   name: window
//!   config: {window: sliding, size: 10s, slide: 2s, aggregate: count, allowedLateness: 5s}
//! ```
//!
//! A key's open windows are one state value: a list of `(start, end, aggregate, count)`
//! entries, 32 bytes each, in start order. Each window has an event-time timer at its last
//! millisecond (`end - 1`): when the watermark reaches it the window's result is emitted as
//! `{"start":S,"end":E,"<aggregate>":V}` under the key. With `allowedLateness` the window's
//! entry stays until the watermark passes `end - 1 + allowedLateness` (a second timer); a
//! record for it in the meantime updates it and emits the updated result at once. A record
//! for a window already past that is late: counted in `cairn_late_records_total`, and with
//! `lateRecords: emit` written to the output as `{"late":<timestamp>,"value":"…"}`.
//!
//! Everything a window needs is in keyed state and timers, so checkpoints, savepoints and
//! re-splits carry open windows with their keys, and the watermark moving per record makes the
//! results the same however often the job is restarted.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{fields, Record, StreamTask, TaskContext, TaskError, Timer};

/// How records are grouped in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed windows of `size` ms: `[k·size, (k+1)·size)`.
    Tumbling {
        /// Window length, ms.
        size: u64,
    },
    /// Windows of `size` ms starting every `slide` ms; a record is in `size / slide` of them.
    Sliding {
        /// Window length, ms.
        size: u64,
        /// Time between window starts, ms.
        slide: u64,
    },
    /// A key's records closer than `gap` ms to each other form one window, `[first, last +
    /// gap)`.
    Session {
        /// Largest quiet time inside a session, ms.
        gap: u64,
    },
}

/// What is computed per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Records.
    Count,
    /// Sum of the values.
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Mean of the values.
    Avg,
}

impl Aggregate {
    const NAMES: [(&'static str, Aggregate); 5] = [
        ("count", Aggregate::Count),
        ("sum", Aggregate::Sum),
        ("min", Aggregate::Min),
        ("max", Aggregate::Max),
        ("avg", Aggregate::Avg),
    ];

    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("count", |(n, _)| n)
    }
}

/// One open window of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    start: u64,
    end: u64,
    /// Sum, min or max of the values (unused by `count`).
    value: i64,
    /// Records in the window.
    count: i64,
}

const ENTRY_LEN: usize = 32;

impl Entry {
    fn last_ms(&self) -> u64 {
        self.end - 1
    }
}

/// What a window task computes: its windows, aggregate and lateness.
#[derive(Debug, Clone, Copy)]
struct Rules {
    kind: WindowKind,
    aggregate: Aggregate,
    allowed_lateness: u64,
}

/// The `window` task.
#[derive(Debug)]
pub struct Window {
    rules: Rules,
    value_field: Option<String>,
    emit_late: bool,
    /// The open windows of the key at hand, decoded.
    entries: Vec<Entry>,
    /// Windows a record opened (they need timers), and windows it updated after they fired.
    fresh: Vec<Entry>,
    refire: Vec<Entry>,
    buf: Vec<u8>,
    out: String,
}

const CONFIG_KEYS: &[&str] = &[
    "window",
    "size",
    "slide",
    "gap",
    "aggregate",
    "valueField",
    "allowedLateness",
    "lateRecords",
];

/// Longest window, slide, gap or lateness: a year, as for every duration of a job.
const MAX_SPAN: Duration = cairn_contract::units::MAX_DURATION;

fn config_error(field: &str, problem: impl Into<String>) -> TaskError {
    TaskError::Config {
        field: field.into(),
        problem: problem.into(),
    }
}

impl Rules {
    /// When the window whose last millisecond is `last` may be dropped.
    fn cleanup_at(&self, last: u64) -> u64 {
        last.saturating_add(self.allowed_lateness)
    }

    /// True if a window ending at `end` can no longer change: the watermark passed its end
    /// plus the allowed lateness.
    fn too_late(&self, end: u64, watermark: Option<u64>) -> bool {
        watermark.is_some_and(|w| self.cleanup_at(end - 1) <= w)
    }

    /// Adds `value` to `entry`; `None` when a sum would leave the 64-bit range.
    fn add(&self, entry: &mut Entry, value: i64) -> Option<()> {
        let first = entry.count == 0;
        entry.value = match self.aggregate {
            Aggregate::Count => 0,
            Aggregate::Sum | Aggregate::Avg => entry.value.checked_add(value)?,
            Aggregate::Min if !first => entry.value.min(value),
            Aggregate::Max if !first => entry.value.max(value),
            Aggregate::Min | Aggregate::Max => value,
        };
        // Saturating: a stored count comes from a checkpoint or savepoint, not only from us.
        entry.count = entry.count.saturating_add(1);
        Some(())
    }

    /// `a` and `b` combined (two sessions that merge).
    fn merge(&self, a: Entry, b: Entry) -> Option<Entry> {
        let value = match self.aggregate {
            Aggregate::Count => 0,
            Aggregate::Sum | Aggregate::Avg => a.value.checked_add(b.value)?,
            Aggregate::Min => a.value.min(b.value),
            Aggregate::Max => a.value.max(b.value),
        };
        Some(Entry {
            start: a.start.min(b.start),
            end: a.end.max(b.end),
            value,
            count: a.count.saturating_add(b.count),
        })
    }

    /// The `k`-th latest start of the tumbling or sliding windows holding `ts` (`k` from 0 to
    /// `size / slide - 1`), or `None` past the first window (starts are not negative).
    fn start(ts: u64, k: u64, size: u64, slide: u64) -> Option<u64> {
        let start = (ts - ts % slide).checked_sub(k * slide)?;
        (start.saturating_add(size) > ts).then_some(start)
    }

    /// Adds a record (timestamp `ts`, `value`) to its tumbling or sliding windows among a
    /// key's open `entries`, pushing the windows it opens to `fresh` and the ones it updates
    /// after they fired (within the allowed lateness) to `refire`. False if every window of
    /// the record was too late. Pure: timers and output are the caller's.
    fn assign(
        &self,
        entries: &mut Vec<Entry>,
        (ts, value, watermark): (u64, i64, Option<u64>),
        fresh: &mut Vec<Entry>,
        refire: &mut Vec<Entry>,
    ) -> Result<bool, TaskError> {
        let (size, slide) = match self.kind {
            WindowKind::Tumbling { size } => (size, size),
            WindowKind::Sliding { size, slide } => (size, slide),
            WindowKind::Session { .. } => unreachable!("sessions merge instead"),
        };
        let mut accepted = false;
        for k in 0..size / slide {
            let Some(start) = Self::start(ts, k, size, slide) else {
                break;
            };
            let end = start.saturating_add(size);
            if self.too_late(end, watermark) {
                continue;
            }
            let at = entries.partition_point(|e| e.start < start);
            let is_new = entries.get(at).is_none_or(|e| e.start != start);
            let mut entry = if is_new {
                Entry {
                    start,
                    end,
                    value: 0,
                    count: 0,
                }
            } else {
                entries[at]
            };
            self.add(&mut entry, value)
                .ok_or_else(|| overflow(start, end))?;
            if is_new {
                entries.insert(at, entry);
                fresh.push(entry);
            } else {
                entries[at] = entry;
            }
            accepted = true;
            if watermark.is_some_and(|w| entry.last_ms() <= w) {
                refire.push(entry);
            }
        }
        Ok(accepted)
    }
}

impl Window {
    /// Reads `task.config`; every problem names its key.
    pub fn from_config(cfg: &Map<String, Value>) -> Result<Self, TaskError> {
        if let Some(k) = cfg.keys().find(|k| !CONFIG_KEYS.contains(&k.as_str())) {
            return Err(config_error(
                k,
                format!("unknown key; expected one of: {}", CONFIG_KEYS.join(", ")),
            ));
        }
        let span = |field: &str| -> Result<Option<u64>, TaskError> {
            let Some(v) = cfg.get(field) else {
                return Ok(None);
            };
            let d = match v {
                Value::String(s) => cairn_contract::parse_duration(s)
                    .map_err(|e| config_error(field, e.to_string()))?,
                Value::Number(n) => Duration::from_millis(n.as_u64().ok_or_else(|| {
                    config_error(
                        field,
                        "must be a duration such as 10s, or whole milliseconds",
                    )
                })?),
                _ => return Err(config_error(field, "must be a duration such as 10s")),
            };
            if d > MAX_SPAN {
                return Err(config_error(field, "is longer than a year"));
            }
            Ok(Some(d.as_millis() as u64))
        };
        let positive = |field: &str| -> Result<u64, TaskError> {
            match span(field)? {
                Some(ms) if ms >= 1 => Ok(ms),
                Some(_) => Err(config_error(field, "must be at least 1ms")),
                None => Err(config_error(field, "is required by this window type")),
            }
        };
        let kind_name = cfg
            .get("window")
            .and_then(Value::as_str)
            .ok_or_else(|| config_error("window", "is required: tumbling, sliding or session"))?;
        let only = |allowed: &[&str]| -> Result<(), TaskError> {
            for k in ["size", "slide", "gap"] {
                if cfg.contains_key(k) && !allowed.contains(&k) {
                    return Err(config_error(
                        k,
                        format!("does not apply to `window: {kind_name}`"),
                    ));
                }
            }
            Ok(())
        };
        let kind = match kind_name {
            "tumbling" => {
                only(&["size"])?;
                WindowKind::Tumbling {
                    size: positive("size")?,
                }
            }
            "sliding" => {
                only(&["size", "slide"])?;
                let (size, slide) = (positive("size")?, positive("slide")?);
                if slide > size || size % slide != 0 {
                    return Err(config_error(
                        "slide",
                        format!(
                            "{slide}ms must divide the size ({size}ms), so every window starts \
                             on a slide; e.g. size: 10s, slide: 2s"
                        ),
                    ));
                }
                if size / slide > 1000 {
                    return Err(config_error(
                        "slide",
                        "puts each record in more than 1000 windows; use a longer slide",
                    ));
                }
                WindowKind::Sliding { size, slide }
            }
            "session" => {
                only(&["gap"])?;
                WindowKind::Session {
                    gap: positive("gap")?,
                }
            }
            other => {
                return Err(config_error(
                    "window",
                    format!("unknown window type {other:?}; use tumbling, sliding or session"),
                ))
            }
        };
        let aggregate = match cfg.get("aggregate") {
            None => Aggregate::Count,
            Some(v) => {
                let name = v.as_str().unwrap_or("");
                Aggregate::NAMES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, a)| *a)
                    .ok_or_else(|| {
                        config_error("aggregate", "must be count, sum, min, max or avg")
                    })?
            }
        };
        let value_field = match cfg.get("valueField") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Some(s.clone()),
            Some(_) => {
                return Err(config_error(
                    "valueField",
                    "must be the name (1 to 256 characters) of a top-level field of the JSON \
                     record value",
                ))
            }
        };
        let emit_late = match cfg.get("lateRecords").map(Value::as_str) {
            None | Some(Some("drop")) => false,
            Some(Some("emit")) => true,
            Some(_) => return Err(config_error("lateRecords", "must be drop or emit")),
        };
        Ok(Window {
            rules: Rules {
                kind,
                aggregate,
                allowed_lateness: span("allowedLateness")?.unwrap_or(0),
            },
            value_field,
            emit_late,
            entries: Vec::new(),
            fresh: Vec::new(),
            refire: Vec::new(),
            buf: Vec::new(),
            out: String::new(),
        })
    }

    /// The value a record contributes (`count` reads none).
    fn value_of(&self, r: &Record<'_>) -> Result<i64, TaskError> {
        let read = match (&self.rules.aggregate, &self.value_field) {
            (Aggregate::Count, _) => return Ok(0),
            (_, Some(field)) => fields::json_integer(r.value, field),
            (_, None) => fields::decimal(r.value),
        };
        read.map_err(|reason| TaskError::BadRecord {
            reason: format!("window {}: {reason}", self.rules.aggregate.name()),
        })
    }

    fn emit_result(
        &mut self,
        key: &[u8],
        e: &Entry,
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        use std::fmt::Write;
        self.out.clear();
        let name = self.rules.aggregate.name();
        let _ = write!(
            self.out,
            "{{\"start\":{},\"end\":{},\"{name}\":",
            e.start, e.end
        );
        let _ = match self.rules.aggregate {
            Aggregate::Count => write!(self.out, "{}", e.count),
            Aggregate::Avg => write!(self.out, "{}", e.value as f64 / e.count as f64),
            Aggregate::Sum | Aggregate::Min | Aggregate::Max => write!(self.out, "{}", e.value),
        };
        self.out.push('}');
        ctx.emit(key, self.out.as_bytes())
    }

    /// Reads the key's open windows into `self.entries`, decoding in place (no copy).
    fn load(&mut self, key: &[u8], ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let entries = &mut self.entries;
        entries.clear();
        ctx.read(key, |stored| decode(stored.unwrap_or_default(), entries))?
            .map_err(unreadable_windows)
    }

    /// Writes `self.entries` back (through a buffer kept across records).
    fn store(&mut self, key: &[u8], ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        if self.entries.is_empty() {
            return ctx.delete(key);
        }
        encode(&self.entries, &mut self.buf);
        ctx.put(key, &self.buf)
    }

    /// Registers the timers of a new window.
    fn watch(&self, key: &[u8], e: &Entry, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let mut timers = ctx.timers();
        timers.register(key, Timer::event(e.last_ms()))?;
        if self.rules.allowed_lateness > 0 {
            timers.register(key, Timer::event(self.rules.cleanup_at(e.last_ms())))?;
        }
        Ok(())
    }

    /// Deletes the timers of a window that merged into another, unless a remaining window of
    /// the key needs the same time.
    fn unwatch(
        &self,
        key: &[u8],
        gone: &Entry,
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        let needed = |t: u64| {
            self.entries.iter().any(|e| {
                e.last_ms() == t
                    || (self.rules.allowed_lateness > 0 && self.rules.cleanup_at(e.last_ms()) == t)
            })
        };
        let mut times = vec![gone.last_ms()];
        if self.rules.allowed_lateness > 0 {
            times.push(self.rules.cleanup_at(gone.last_ms()));
        }
        for t in times {
            if !needed(t) {
                ctx.timers().delete(key, Timer::event(t))?;
            }
        }
        Ok(())
    }

    /// Adds a record to its tumbling or sliding windows, reading and writing the key's open
    /// windows in one state update; false if every one was too late.
    fn assign(
        &mut self,
        key: &[u8],
        ts: u64,
        value: i64,
        ctx: &mut TaskContext<'_>,
    ) -> Result<bool, TaskError> {
        let watermark = ctx.watermark();
        let Window {
            rules,
            entries,
            fresh,
            refire,
            buf,
            ..
        } = self;
        fresh.clear();
        refire.clear();
        let mut outcome = Ok(false);
        let mut unreadable = None;
        let (outcome_out, unreadable_out) = (&mut outcome, &mut unreadable);
        ctx.update(key, move |stored| {
            entries.clear();
            match decode(stored.unwrap_or_default(), entries) {
                // Windows another task wrote are dropped (the record reports it).
                Err(len) => *unreadable_out = Some(len),
                Ok(()) => {
                    *outcome_out = rules.assign(entries, (ts, value, watermark), fresh, refire)
                }
            }
            // Whatever was accepted before a failure stays: the entries are written back.
            if entries.is_empty() {
                return None;
            }
            encode(entries, buf);
            let written: &Vec<u8> = buf;
            Some(written.as_slice())
        })?;
        if let Some(len) = unreadable {
            return Err(unreadable_windows(len));
        }
        for e in std::mem::take(&mut self.fresh) {
            self.watch(key, &e, ctx)?;
        }
        for e in std::mem::take(&mut self.refire) {
            // Fired already, within the allowed lateness: the updated result.
            self.emit_result(key, &e, ctx)?;
        }
        outcome
    }

    /// Adds a record to its key's sessions, merging the ones it joins; false if too late.
    fn merge_session(
        &mut self,
        key: &[u8],
        ts: u64,
        value: i64,
        gap: u64,
        ctx: &mut TaskContext<'_>,
    ) -> Result<bool, TaskError> {
        let watermark = ctx.watermark();
        let mut merged = Entry {
            start: ts,
            end: ts.saturating_add(gap),
            value: 0,
            count: 0,
        };
        if self.rules.add(&mut merged, value).is_none() {
            return Err(overflow(merged.start, merged.end));
        }
        // Sessions that touch or overlap the new one join it.
        let joins = |e: &Entry, m: &Entry| e.start <= m.end && m.start <= e.end;
        let mut absorbed = Vec::new();
        for e in &self.entries {
            if joins(e, &merged) {
                merged = self
                    .rules
                    .merge(merged, *e)
                    .ok_or_else(|| overflow(merged.start.min(e.start), merged.end.max(e.end)))?;
                absorbed.push(*e);
            }
        }
        if self.rules.too_late(merged.end, watermark) {
            return Ok(false);
        }
        self.entries.retain(|e| !absorbed.contains(e));
        let at = self.entries.partition_point(|e| e.start < merged.start);
        self.entries.insert(at, merged);
        for gone in &absorbed {
            if gone.end != merged.end {
                self.unwatch(key, gone, ctx)?;
            }
        }
        if absorbed.iter().all(|gone| gone.end != merged.end) {
            self.watch(key, &merged, ctx)?;
        }
        if watermark.is_some_and(|w| merged.last_ms() <= w) {
            self.emit_result(key, &merged, ctx)?;
        }
        Ok(true)
    }
}

/// Decodes a key's stored windows into `entries`; `Err(length)` when the value is not a
/// list of windows.
fn decode(bytes: &[u8], entries: &mut Vec<Entry>) -> Result<(), usize> {
    if !bytes.len().is_multiple_of(ENTRY_LEN) {
        return Err(bytes.len());
    }
    let word = |c: &[u8], i: usize| -> [u8; 8] { c[i * 8..i * 8 + 8].try_into().expect("8 bytes") };
    entries.extend(bytes.chunks_exact(ENTRY_LEN).map(|c| Entry {
        start: u64::from_le_bytes(word(c, 0)),
        end: u64::from_le_bytes(word(c, 1)).max(1),
        value: i64::from_le_bytes(word(c, 2)),
        count: i64::from_le_bytes(word(c, 3)),
    }));
    Ok(())
}

/// Encodes `entries` into `buf` (cleared first).
fn encode(entries: &[Entry], buf: &mut Vec<u8>) {
    buf.clear();
    for e in entries {
        buf.extend_from_slice(&e.start.to_le_bytes());
        buf.extend_from_slice(&e.end.to_le_bytes());
        buf.extend_from_slice(&e.value.to_le_bytes());
        buf.extend_from_slice(&e.count.to_le_bytes());
    }
}

/// A stored value of `len` bytes that is not a list of windows: not written by this task
/// (another task's state is refused at restore unless allowStateDrop). The key starts over
/// rather than failing every record of it.
fn unreadable_windows(len: usize) -> TaskError {
    TaskError::BadRecord {
        reason: format!(
            "the stored windows of this key are {len} bytes, not a multiple of {ENTRY_LEN}; \
             the key's windows are dropped"
        ),
    }
}

fn overflow(start: u64, end: u64) -> TaskError {
    TaskError::BadRecord {
        reason: format!(
            "the sum of window [{start}, {end}) would leave the 64-bit range; the record is \
             skipped and the window keeps its sum"
        ),
    }
}

impl StreamTask for Window {
    fn process(&mut self, r: &Record<'_>, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let ts = r.timestamp.ok_or_else(|| TaskError::BadRecord {
            reason: "the window task needs event time: add an `eventTime:` section to the job"
                .into(),
        })?;
        let value = self.value_of(r)?;
        let accepted = match self.rules.kind {
            WindowKind::Session { gap } => {
                if let Err(e) = self.load(r.key, ctx) {
                    // Unreadable windows of this key are dropped (the error says so).
                    self.entries.clear();
                    self.store(r.key, ctx)?;
                    return Err(e);
                }
                let accepted = self.merge_session(r.key, ts, value, gap, ctx);
                // Whatever was accepted before a failure stays accepted.
                self.store(r.key, ctx)?;
                accepted
            }
            _ => self.assign(r.key, ts, value, ctx),
        };
        if !accepted? {
            ctx.count_late();
            if self.emit_late {
                let late = serde_json::json!({
                    "late": ts,
                    "value": String::from_utf8_lossy(r.value),
                });
                ctx.emit(r.key, late.to_string().as_bytes())?;
            }
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        key: &[u8],
        timer: Timer,
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        if self.load(key, ctx).is_err() {
            self.entries.clear();
            return self.store(key, ctx);
        }
        let due: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| e.last_ms() == timer.at)
            .copied()
            .collect();
        for e in &due {
            self.emit_result(key, e, ctx)?;
        }
        let before = self.entries.len();
        let lateness = self.rules.allowed_lateness;
        self.entries
            .retain(|e| e.last_ms().saturating_add(lateness) > timer.at);
        if self.entries.len() != before {
            self.store(key, ctx)?;
        }
        Ok(())
    }

    fn state_version(&self) -> u32 {
        1
    }

    fn describe_value(&self, value: &[u8]) -> Value {
        if !value.len().is_multiple_of(ENTRY_LEN) {
            return super::describe_bytes(value);
        }
        let word = |c: &[u8], i: usize| -> [u8; 8] { c[i * 8..i * 8 + 8].try_into().expect("8") };
        Value::Array(
            value
                .chunks_exact(ENTRY_LEN)
                .map(|c| {
                    serde_json::json!({
                        "start": u64::from_le_bytes(word(c, 0)),
                        "end": u64::from_le_bytes(word(c, 1)),
                        "value": i64::from_le_bytes(word(c, 2)),
                        "count": i64::from_le_bytes(word(c, 3)),
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cairn_contract::EventTimeSpec;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::runtime::event_time::{EventClock, END_OF_TIME};
    use crate::sink::CollectSink;
    use crate::state::{MemoryState, TimeDomain};

    /// One input record: key, timestamp, value.
    type Input = (String, u64, i64);
    /// One emitted window: key, start, end, result (as JSON).
    type Output = (String, u64, u64, Value);

    fn fire(task: &mut Window, ctx: &mut TaskContext<'_>, watermark: u64) {
        ctx.set_watermark(Some(watermark));
        while let Some((key, timer)) = ctx.pop_due_timer(TimeDomain::Event, watermark).unwrap() {
            task.on_timer(&key, timer, ctx).unwrap();
        }
    }

    /// Runs `records` through a window task the way the runtime does (the watermark moves
    /// after each record and the timers it passes fire before the next; the input ends).
    /// Returns the windows emitted and the records counted late.
    fn run(config: Value, out_of_orderness: u64, records: &[Input]) -> (Vec<Output>, u64) {
        let mut task = Window::from_config(config.as_object().unwrap()).unwrap();
        let mut state = MemoryState::new();
        let mut sink = CollectSink::default();
        let spec = EventTimeSpec {
            max_out_of_orderness: Duration::from_millis(out_of_orderness),
            ..EventTimeSpec::default()
        };
        let mut clock = EventClock::new(&spec, None);
        let mut ctx = TaskContext::in_memory(&mut state, &mut sink, 0);
        for (i, (key, ts, value)) in records.iter().enumerate() {
            ctx.set_watermark(clock.watermark());
            let value = value.to_string();
            let record = Record {
                partition: 0,
                offset: i as u64,
                timestamp: Some(*ts),
                key: key.as_bytes(),
                value: value.as_bytes(),
            };
            task.process(&record, &mut ctx).unwrap();
            if clock.observe(*ts) {
                fire(&mut task, &mut ctx, clock.watermark().unwrap());
            }
        }
        clock.end();
        fire(&mut task, &mut ctx, END_OF_TIME);
        let late = ctx.late();
        assert!(
            state.is_empty(),
            "every window is gone once the input ended"
        );
        assert!(state.timer_queue().is_empty(), "and every timer fired");
        let outputs = sink
            .records
            .iter()
            .map(|(k, v)| {
                let v: Value = serde_json::from_slice(v).unwrap();
                let key = String::from_utf8(k.clone()).unwrap();
                (
                    key,
                    v["start"].as_u64().unwrap(),
                    v["end"].as_u64().unwrap(),
                    v,
                )
            })
            .collect();
        (outputs, late)
    }

    /// Out-of-order records on a few keys: timestamps go up by `step` per record, moved
    /// back by up to `disorder`.
    fn input(seed: u64, n: usize, keys: u64, step: u64, disorder: u64) -> Vec<Input> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n as u64)
            .map(|i| {
                let ts = (1000 + i * step).saturating_sub(rng.random_range(0..=disorder));
                (
                    format!("k{}", rng.random_range(0..keys)),
                    ts,
                    rng.random_range(-50..100),
                )
            })
            .collect()
    }

    /// The oracle for tumbling and sliding windows, computed from the definitions alone: a
    /// window is every `[s, s + size)` with `s` a multiple of `slide`; a record joins each
    /// window holding it unless the watermark before it (highest earlier timestamp minus the
    /// out-of-orderness, minus 1) has reached the window's end - 1 + lateness. Returns the
    /// final (count, sum, min, max) per (key, start), and the late records.
    #[allow(clippy::type_complexity)]
    fn oracle(
        records: &[Input],
        size: u64,
        slide: u64,
        lateness: u64,
        out_of_orderness: u64,
    ) -> (BTreeMap<(String, u64), (i64, i64, i64, i64)>, u64) {
        let mut windows = BTreeMap::new();
        let (mut watermark, mut late): (Option<u64>, u64) = (None, 0);
        for (key, ts, v) in records {
            let mut joined = false;
            for k in 0..=ts / slide {
                let start = k * slide;
                if !(start <= *ts && *ts < start + size) {
                    continue;
                }
                if watermark.is_some_and(|w| start + size - 1 + lateness <= w) {
                    continue;
                }
                joined = true;
                let e = windows
                    .entry((key.clone(), start))
                    .or_insert((0, 0, i64::MAX, i64::MIN));
                *e = (e.0 + 1, e.1 + v, e.2.min(*v), e.3.max(*v));
            }
            if !joined {
                late += 1;
            }
            if *ts > out_of_orderness {
                let w = ts - out_of_orderness - 1;
                watermark = Some(watermark.map_or(w, |old: u64| old.max(w)));
            }
        }
        (windows, late)
    }

    #[test]
    fn tumbling_and_sliding_windows_match_the_oracle_for_every_aggregate() {
        let mut all_late = 0;
        for (seed, (size, slide)) in [(100, 100), (300, 100), (1000, 250)]
            .into_iter()
            .enumerate()
        {
            for (aggregate, pick) in [
                ("count", 0usize),
                ("sum", 1),
                ("min", 2),
                ("max", 3),
                ("avg", 4),
            ] {
                // Disorder beyond the out-of-orderness makes some records late.
                let records = input(seed as u64, 3000, 7, 3, 400);
                let window = if size == slide { "tumbling" } else { "sliding" };
                let mut config =
                    serde_json::json!({"window": window, "size": size, "aggregate": aggregate});
                if window == "sliding" {
                    config["slide"] = slide.into();
                }
                let (out, late) = run(config, 150, &records);
                let (expected, expected_late) = oracle(&records, size, slide, 0, 150);
                all_late += expected_late;
                assert_eq!(late, expected_late, "{window} {aggregate}");
                let mut got = BTreeMap::new();
                for (key, start, end, v) in out {
                    assert_eq!(end, start + size);
                    assert!(
                        got.insert((key, start), v).is_none(),
                        "each window is emitted once"
                    );
                }
                assert_eq!(got.len(), expected.len(), "{window} {aggregate}");
                for (at, (count, sum, min, max)) in expected {
                    let v = &got[&at][aggregate];
                    let want = match pick {
                        0 => Value::from(count),
                        1 => Value::from(sum),
                        2 => Value::from(min),
                        3 => Value::from(max),
                        // A whole mean is written without a fraction (`-38`), and
                        // serde_json reads decimals back to within an ulp.
                        _ => {
                            let mean = sum as f64 / count as f64;
                            let got = v.as_f64().unwrap();
                            assert!(
                                (got - mean).abs() <= 1e-12 * mean.abs().max(1.0),
                                "{at:?}: {got} vs {mean}"
                            );
                            continue;
                        }
                    };
                    assert_eq!(v, &want, "{window} {aggregate} {at:?}");
                }
            }
        }
        assert!(all_late > 100, "the input has late records ({all_late})");
    }

    #[test]
    fn allowed_lateness_updates_a_fired_window_and_its_last_result_is_exact() {
        let records = input(7, 4000, 5, 2, 600);
        let config = serde_json::json!({"window": "tumbling", "size": "200ms", "aggregate": "sum", "allowedLateness": "250ms"});
        let (out, late) = run(config, 100, &records);
        let (expected, expected_late) = oracle(&records, 200, 200, 250, 100);
        assert_eq!(late, expected_late);
        let mut last = BTreeMap::new();
        let mut updates = 0;
        for (key, start, _, v) in out {
            if last
                .insert((key, start), v["sum"].as_i64().unwrap())
                .is_some()
            {
                updates += 1;
            }
        }
        assert!(
            updates > 0,
            "records within the lateness updated fired windows"
        );
        let expected: BTreeMap<_, _> = expected.into_iter().map(|(k, v)| (k, v.1)).collect();
        assert_eq!(last, expected);
    }

    #[test]
    fn sessions_are_the_runs_of_a_keys_records_closer_than_the_gap() {
        // Disorder 40, out-of-orderness 41: nothing is late and no session closes before a
        // record that joins it arrives, so the oracle is the sessions of the sorted timestamps.
        let records = input(3, 3000, 9, 7, 40);
        let gap = 50;
        let (out, late) = run(
            serde_json::json!({"window": "session", "gap": gap, "aggregate": "count"}),
            41,
            &records,
        );
        assert_eq!(late, 0);
        let mut by_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for (key, ts, _) in &records {
            by_key.entry(key).or_default().push(*ts);
        }
        let mut expected = Vec::new();
        for (key, mut times) in by_key {
            times.sort_unstable();
            let (mut first, mut last, mut n) = (times[0], times[0], 0);
            for ts in times {
                if ts > last + gap {
                    expected.push((key.to_owned(), first, last + gap, n));
                    first = ts;
                    n = 0;
                }
                last = ts;
                n += 1;
            }
            expected.push((key.to_owned(), first, last + gap, n));
        }
        let mut got: Vec<_> = out
            .into_iter()
            .map(|(k, s, e, v)| (k, s, e, v["count"].as_i64().unwrap()))
            .collect();
        got.sort();
        expected.sort();
        assert!(expected.iter().any(|s| s.3 > 1), "sessions merged records");
        assert_eq!(got, expected);
    }

    #[test]
    fn late_records_can_be_emitted_as_they_are() {
        let records = [
            ("a".to_owned(), 500, 1),
            ("a".to_owned(), 100, 2), // window [0, 200) closed at watermark 499
        ];
        let mut task = Window::from_config(
            serde_json::json!({"window": "tumbling", "size": 200, "lateRecords": "emit"})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let mut state = MemoryState::new();
        let mut sink = CollectSink::default();
        let mut ctx = TaskContext::in_memory(&mut state, &mut sink, 0);
        for (i, (key, ts, value)) in records.iter().enumerate() {
            ctx.set_watermark((i > 0).then_some(499));
            let value = value.to_string();
            let r = Record {
                partition: 0,
                offset: i as u64,
                timestamp: Some(*ts),
                key: key.as_bytes(),
                value: value.as_bytes(),
            };
            task.process(&r, &mut ctx).unwrap();
        }
        assert_eq!(ctx.late(), 1);
        assert_eq!(
            sink.records,
            [(b"a".to_vec(), br#"{"late":100,"value":"2"}"#.to_vec())]
        );
    }

    #[test]
    fn a_bad_config_names_its_key() {
        let err = |config: Value| {
            Window::from_config(config.as_object().unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(err(serde_json::json!({})).contains("task.config.window"));
        assert!(err(serde_json::json!({"window": "tumbling"})).contains("task.config.size"));
        assert!(
            err(serde_json::json!({"window": "sliding", "size": "10s", "slide": "3s"}))
                .contains("task.config.slide")
        );
        assert!(
            err(serde_json::json!({"window": "session", "gap": "1s", "size": "1s"}))
                .contains("task.config.size")
        );
        assert!(
            err(serde_json::json!({"window": "tumbling", "size": "0s"})).contains("at least 1ms")
        );
        assert!(
            err(serde_json::json!({"window": "tumbling", "size": 5, "aggregate": "p99"}))
                .contains("task.config.aggregate")
        );
        assert!(
            err(serde_json::json!({"window": "tumbling", "size": 5, "sizes": 5}))
                .contains("task.config.sizes")
        );
    }
}
