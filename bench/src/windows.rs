//! Windowed aggregation benchmarks (docs/benchmarks.md#windows): the built-in `window` task on
//! the real engine, next to a bare loop over the same records in the same run.
//!
//! - **q5-like** (Nexmark query 5's shape): bids on 10,000 items with hot items (zipf), a
//!   sliding window of 10 s every 2 s, count per item. Event time advances 10 µs per record per
//!   partition (100,000 bids per second of event time per partition, as Nexmark's generator
//!   spreads its events; 40M records are 100 s of event time, so windows keep closing), with
//!   up to 2 ms of disorder and a 5 ms out-of-orderness bound.
//! - **tumbling count**: 100,000 uniform keys, 10 s tumbling windows, same clock.
//!
//! The baseline is the physical limit of the computation on this machine: one thread per
//! container over the same key and timestamp sequence, assigning each record to its windows
//! in a `HashMap` (no state store, no timers, no checkpoints, no output), and closing windows
//! as the same watermark passes them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cairn_contract::JobSpec;
use cairn_worker::source::generator::{KeyTable, RecordRule};
use cairn_worker::task::TaskRegistry;

use crate::{drop_caches, pct, run_spec, sorted};

/// One windowed job to measure.
struct Case<'a> {
    title: &'a str,
    keys: u64,
    distribution: &'a str,
    window: &'a str,
    size_ms: u64,
    slide_ms: u64,
}

pub fn windows(scratch: &Path, records: u64, only: Option<&str>) {
    let cases = [
        Case {
            title: "q5-like: 10,000 items (zipf), sliding 10 s every 2 s, count",
            keys: 10_000,
            distribution: "zipf",
            window: "{window: sliding, size: 10s, slide: 2s, aggregate: count}",
            size_ms: 10_000,
            slide_ms: 2_000,
        },
        Case {
            title: "tumbling count: 100,000 keys (uniform), 10 s windows",
            keys: 100_000,
            distribution: "uniform",
            window: "{window: tumbling, size: 10s, aggregate: count}",
            size_ms: 10_000,
            slide_ms: 10_000,
        },
    ];
    for case in cases
        .iter()
        .filter(|c| only.is_none_or(|o| c.title.starts_with(o)))
    {
        run_case(scratch, records, case);
    }
}

fn run_case(scratch: &Path, records: u64, case: &Case<'_>) {
    let partitions = 4u32;
    let dir = scratch.join("windows");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        "name: bench-windows\n\
         input: {{type: generator, partitions: {partitions}, keys: {}, distribution: {}, seed: 1, \
         recordsPerPartition: {}, timestampStep: 10us, timestampDisorder: 2ms}}\n\
         eventTime: {{maxOutOfOrderness: 5ms}}\n\
         task: {{name: window, config: {}}}\noutput: {{type: \"null\"}}\nparallelism: 2\n\
         checkpoint: {{interval: 10s, store: \"file://./ckpt\", retained: 3}}\n\
         state: {{dir: ./state, cacheSize: 256MiB}}\n",
        case.keys,
        case.distribution,
        records / partitions as u64,
        case.window
    );
    let spec = JobSpec::from_yaml_str(&yaml).unwrap();
    drop_caches();
    let (elapsed, progress) = run_spec(spec.clone(), TaskRegistry::with_builtins(), &dir);
    let rate = records as f64 / elapsed.as_secs_f64();
    let pauses = sorted(
        progress
            .sync_pauses
            .lock()
            .unwrap()
            .iter()
            .copied()
            .collect(),
    );
    let (bare_rate, bare_secs, windows) = bare_windows(&spec, case.size_ms, case.slide_ms);
    println!(
        "\n### {}: {records} records, 4 partitions, 2 containers, checkpoint every 10 s\n",
        case.title
    );
    println!("| what | records/s | time |");
    println!("|---|---|---|");
    println!(
        "| Cairn `window` job (generator -> window -> null sink, incl. final checkpoint) | {rate:.0} | {:.2} s |",
        elapsed.as_secs_f64()
    );
    println!(
        "| bare loop: same records into a HashMap per window, 2 threads, nothing kept | {bare_rate:.0} | {bare_secs:.2} s |"
    );
    println!(
        "\nwindows emitted by the bare loop: {windows}; sync pauses: {} samples, p50 {:.3} ms, p99 {:.3} ms",
        pauses.len(),
        pct(&pauses, 0.5) * 1e3,
        pct(&pauses, 0.99) * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The computation alone: per record, its windows' counts in a `HashMap`; windows closed (and
/// counted) as the watermark passes them.
fn bare_windows(spec: &JobSpec, size: u64, slide: u64) -> (f64, f64, u64) {
    let cairn_contract::InputSpec::Generator(g) = &spec.input else {
        unreachable!()
    };
    let out_of_orderness = 5;
    let table = Arc::new(KeyTable::build(g));
    let started = Instant::now();
    let threads: Vec<_> = (0..2u32)
        .map(|t| {
            let (table, g) = (table.clone(), g.clone());
            std::thread::spawn(move || {
                let mut emitted = 0u64;
                for p in (0..g.partitions).filter(|p| p % 2 == t) {
                    let rule = RecordRule::new(&g, &table, p);
                    let mut open: HashMap<(u64, u64), u64> = HashMap::new();
                    let mut watermark = 0u64;
                    let mut next_close = u64::MAX;
                    for j in 0..g.records_per_partition.unwrap() {
                        let (id, _) = rule.record(j);
                        let ts = rule.timestamp(j);
                        let last = ts - ts % slide;
                        let mut start = last;
                        loop {
                            if start + size <= ts {
                                break;
                            }
                            if start + size - 1 > watermark {
                                *open.entry((id, start)).or_insert(0) += 1;
                                next_close = next_close.min(start + size - 1);
                            }
                            match start.checked_sub(slide) {
                                Some(s) => start = s,
                                None => break,
                            }
                        }
                        watermark = watermark.max(ts.saturating_sub(out_of_orderness + 1));
                        if next_close <= watermark {
                            let before = open.len();
                            open.retain(|(_, s), _| s + size - 1 > watermark);
                            emitted += (before - open.len()) as u64;
                            next_close = open
                                .keys()
                                .map(|(_, s)| s + size - 1)
                                .min()
                                .unwrap_or(u64::MAX);
                        }
                    }
                    emitted += open.len() as u64;
                }
                emitted
            })
        })
        .collect();
    let windows: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let secs = started.elapsed().as_secs_f64();
    let records = g.records_per_partition.unwrap() * g.partitions as u64;
    (records as f64 / secs, secs, windows)
}
