//! An oracle for the built-in `window` task (tumbling or sliding windows, `sum`, no allowed
//! lateness), computed from the definitions alone, task by task, the way docs/windows.md
//! states them:
//! - a window is every `[s, s + size)` with `s` a multiple of `slide`;
//! - a record joins each window holding its timestamp unless its task's watermark (the highest
//!   earlier timestamp of the task minus the out-of-orderness, minus 1) has reached the
//!   window's last millisecond; a record that joins none is late;
//! - a window is emitted once, as `{"start":S,"end":E,"sum":V}`, when its task's watermark
//!   reaches its last millisecond, or when the task's input ends;
//! - a re-split moves open windows with their keys, and every new task starts at the lowest
//!   watermark of the old tasks.

use std::collections::BTreeMap;

use cairn_contract::{GeneratorInput, InputSpec, JobSpec};
use cairn_worker::partition::partition_of;
use cairn_worker::source::generator::{KeyTable, RecordRule};

/// Open windows of one task: (key, start) -> sum.
type Open = BTreeMap<(String, u64), i64>;

/// The expected output of a windowed job.
pub struct WindowOracle {
    size: u64,
    slide: u64,
    out_of_orderness: u64,
    watermarks: BTreeMap<u32, Option<u64>>,
    open: BTreeMap<u32, Open>,
    /// Every window emitted, as the file sink publishes it: (key, value) -> times.
    pub emitted: BTreeMap<(String, String), u32>,
    /// Records that joined no window.
    pub late: u64,
}

impl WindowOracle {
    /// Windows of `size` ms every `slide` ms, watermarks `out_of_orderness` ms behind.
    pub fn new(size: u64, slide: u64, out_of_orderness: u64) -> Self {
        WindowOracle {
            size,
            slide,
            out_of_orderness,
            watermarks: BTreeMap::new(),
            open: BTreeMap::new(),
            emitted: BTreeMap::new(),
            late: 0,
        }
    }

    /// Task `task` reads a record.
    pub fn record(&mut self, task: u32, key: &str, ts: u64, value: i64) {
        let watermark = self.watermarks.get(&task).copied().flatten();
        let mut joined = false;
        for k in 0..=ts / self.slide {
            let start = k * self.slide;
            let last = start + self.size - 1;
            if start > ts || ts > last || watermark.is_some_and(|w| last <= w) {
                continue;
            }
            joined = true;
            *self
                .open
                .entry(task)
                .or_default()
                .entry((key.to_owned(), start))
                .or_insert(0) += value;
        }
        if !joined {
            self.late += 1;
        }
        if ts > self.out_of_orderness {
            let candidate = ts - self.out_of_orderness - 1;
            if watermark.is_none_or(|w| candidate > w) {
                self.watermarks.insert(task, Some(candidate));
                self.close(task, candidate);
            }
        }
    }

    /// Task `task`'s input ended: every open window is emitted (its watermark, as recorded in
    /// checkpoints, stays what the records made it).
    pub fn end(&mut self, task: u32) {
        self.close(task, u64::MAX);
    }

    fn close(&mut self, task: u32, watermark: u64) {
        let size = self.size;
        let open = self.open.entry(task).or_default();
        let due: Vec<(String, u64)> = open
            .keys()
            .filter(|(_, start)| start + size - 1 <= watermark)
            .cloned()
            .collect();
        for at in due {
            let sum = open.remove(&at).expect("listed");
            let (key, start) = at;
            let value = format!(
                "{{\"start\":{start},\"end\":{},\"sum\":{sum}}}",
                start + size
            );
            *self.emitted.entry((key, value)).or_insert(0) += 1;
        }
    }

    /// The job is restored with `partitions` partitions: open windows move to the partition
    /// of their key, and every task starts at the lowest old watermark (none if any had none).
    pub fn resplit(&mut self, partitions: u32) {
        let lowest = self
            .watermarks
            .values()
            .try_fold(u64::MAX, |low, w| w.map(|w| low.min(w)))
            .filter(|_| !self.watermarks.is_empty());
        let open = std::mem::take(&mut self.open);
        for ((key, start), sum) in open.into_values().flatten() {
            let task = partition_of(key.as_bytes(), partitions);
            self.open.entry(task).or_default().insert((key, start), sum);
        }
        self.watermarks = (0..partitions).map(|p| (p, lowest)).collect();
    }

    /// Feeds partition `p` of `spec`'s generator from record `from` to `to` (exclusive).
    pub fn generator(&mut self, spec: &JobSpec, p: u32, from: u64, to: u64) {
        let g = generator_of(spec);
        let table = KeyTable::build(g);
        let rule = RecordRule::new(g, &table, p);
        if !rule.has_keys() {
            return;
        }
        for j in from..to {
            let (id, value) = rule.record(j);
            self.record(p, &format!("k{id}"), rule.timestamp(j), value as i64);
        }
    }
}

/// The generator input of a spec.
pub fn generator_of(spec: &JobSpec) -> &GeneratorInput {
    match &spec.input {
        InputSpec::Generator(g) => g,
        _ => panic!("generator input expected"),
    }
}
