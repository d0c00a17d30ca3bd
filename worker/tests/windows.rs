//! Event-time windows give exactly the oracle's results (tests/common/windows.rs) however the
//! job is interrupted: out-of-order input (timestamps moved back by up to 1.2 s, more than a
//! window's 1 s, so some records are late for all their windows and many for some), a
//! sliding-window sum, and
//! - 20+ random SIGKILLs of the worker, each restart resuming from the last checkpoint with
//!   its windows, timers and watermarks;
//! - a stop while windows are open, then a savepoint restored with P and N changed (4 -> 6
//!   partitions, 2 -> 3 containers), the open windows moving with their keys.
//!
//! Every window must be published exactly once with exactly the oracle's sum, and none may
//! be missing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_contract::JobSpec;
use common::windows::WindowOracle;
use common::*;

const SIZE_MS: u64 = 1000;
const SLIDE_MS: u64 = 250;
const OUT_OF_ORDERNESS_MS: u64 = 100;

fn job(input: &str, parallelism: u32, out: &str, savepoint: Option<&str>) -> String {
    let restore = savepoint
        .map(|s| format!("restore:\n  savepoint: \"{s}\"\n"))
        .unwrap_or_default();
    format!(
        "name: windowed\n\
         input: {input}\n\
         eventTime:\n  maxOutOfOrderness: {OUT_OF_ORDERNESS_MS}ms\n\
         task:\n  name: window\n  config: {{window: sliding, size: {SIZE_MS}ms, slide: {SLIDE_MS}ms, aggregate: sum}}\n\
         output:\n  type: file\n  path: ./{out}\n\
         parallelism: {parallelism}\n\
         checkpoint:\n  interval: 150ms\n  retained: 2\n  timeout: 20s\n{restore}"
    )
}

/// Published lines of several output directories together.
fn published(dir: &Path, outs: &[&str]) -> BTreeMap<(String, String), u32> {
    let mut all = BTreeMap::new();
    for out in outs {
        for (line, n) in published_lines(&dir.join(out)) {
            *all.entry(line).or_insert(0) += n;
        }
    }
    all
}

fn assert_exactly(published: &BTreeMap<(String, String), u32>, oracle: &WindowOracle) {
    // A line can be due twice. After a re-split every task starts at the lowest old watermark,
    // so a window that its key's old task had closed opens again with the new task's records
    // (about a hundred per run of the savepoint test); now and then its sum equals the first
    // one. Only a line published more often than the oracle emits it is a duplicate.
    let duplicated: Vec<_> = published
        .iter()
        .filter(|(line, n)| **n > oracle.emitted.get(*line).copied().unwrap_or(1).max(1))
        .take(5)
        .collect();
    assert!(
        duplicated.is_empty(),
        "windows published more often than the oracle emits them: {duplicated:?}"
    );
    let missing: Vec<_> = oracle
        .emitted
        .keys()
        .filter(|k| !published.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "windows missing or with another sum: {missing:?}"
    );
    let extra: Vec<_> = published
        .keys()
        .filter(|k| !oracle.emitted.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        extra.is_empty(),
        "windows the oracle does not have: {extra:?}"
    );
    assert_eq!(published, &oracle.emitted);
}

#[test]
fn windows_are_exact_across_random_sigkills() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let yaml = job(
        "{type: generator, partitions: 4, keys: 200, seed: 5, recordsPerPartition: 30000, \
         ratePerSecond: 3000, timestampDisorder: 1200ms}",
        2,
        "out",
        None,
    );
    std::fs::write(dir.join("job.yaml"), &yaml).unwrap();
    let spec = JobSpec::from_yaml_str(&yaml).unwrap();

    let kills = kill_repeatedly(dir, &mut kill_schedule(0x51DE), 22, |_| &[]);
    assert!(
        kills >= 20,
        "the job finished after {kills} kills; slow it down"
    );
    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    assert!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut oracle = WindowOracle::new(SIZE_MS, SLIDE_MS, OUT_OF_ORDERNESS_MS);
    for p in 0..4 {
        oracle.generator(&spec, p, 0, 30_000);
        oracle.end(p);
    }
    assert!(
        oracle.late > 100,
        "the input has late records ({})",
        oracle.late
    );
    assert!(
        oracle.emitted.len() > 10_000,
        "{} windows",
        oracle.emitted.len()
    );
    assert_exactly(&published(dir, &["out"]), &oracle);
}

/// The offsets a savepoint recorded, by partition.
fn savepoint_offsets(url: &str) -> BTreeMap<u32, u64> {
    let path = Path::new(url.strip_prefix("file://").unwrap()).join("_SAVEPOINT.json");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut offsets = BTreeMap::new();
    for task in manifest["tasks"].as_array().unwrap() {
        for (p, offset) in task["offsets"].as_object().unwrap() {
            offsets.insert(p.parse().unwrap(), offset.as_u64().unwrap());
        }
        assert!(
            task["watermarks"]
                .as_object()
                .is_some_and(|w| !w.is_empty()),
            "the savepoint records the task's watermark: {task}"
        );
    }
    offsets
}

#[test]
fn open_windows_move_with_their_keys_through_a_savepoint_with_p_and_n_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A: endless, 4 partitions on 2 containers, stopped while windows are open.
    let a = job(
        "{type: generator, partitions: 4, keys: 300, seed: 8, ratePerSecond: 4000, \
         timestampDisorder: 1200ms}",
        2,
        "out-a",
        None,
    );
    std::fs::write(dir.join("job.yaml"), &a).unwrap();
    let child = spawn_run(dir, &[]);
    std::thread::sleep(Duration::from_millis(2500));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "A failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sp = {
        let out = run_cmd(dir, &["savepoint", "file://./.cairn/checkpoints"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let offsets = savepoint_offsets(&sp);
    assert!(
        offsets.values().all(|o| *o > 1000 && *o < 40_000),
        "{offsets:?}"
    );

    // B: 6 partitions on 3 containers, finite, from the savepoint.
    let b = job(
        "{type: generator, partitions: 6, keys: 300, seed: 8, recordsPerPartition: 40000, \
         timestampDisorder: 1200ms}",
        3,
        "out-b",
        Some(&sp),
    );
    std::fs::write(dir.join("job.yaml"), &b).unwrap();
    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    assert!(
        out.status.success(),
        "B failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut oracle = WindowOracle::new(SIZE_MS, SLIDE_MS, OUT_OF_ORDERNESS_MS);
    let spec_a = JobSpec::from_yaml_str(&a).unwrap();
    for (&p, &offset) in &offsets {
        oracle.generator(&spec_a, p, 0, offset);
    }
    let open_before = oracle.emitted.len();
    oracle.resplit(6);
    let spec_b = JobSpec::from_yaml_str(&b).unwrap();
    for p in 0..6 {
        oracle.generator(&spec_b, p, offsets.get(&p).copied().unwrap_or(0), 40_000);
        oracle.end(p);
    }
    assert!(open_before > 0 && oracle.emitted.len() > open_before);
    assert_exactly(&published(dir, &["out-a", "out-b"]), &oracle);
}

#[test]
fn windows_are_exact_when_one_container_of_three_is_killed_repeatedly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let yaml = job(
        "{type: generator, partitions: 6, keys: 400, seed: 21, recordsPerPartition: 24000, \
         ratePerSecond: 6000, timestampDisorder: 1200ms}",
        3,
        "out",
        None,
    );
    std::fs::write(dir.join("job.yaml"), &yaml).unwrap();
    let addr = free_local_addr();
    let container = |k: u32| {
        container_command(dir, k, &addr)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (c0, c1, mut c2) = (container(0), container(1), container(2));
    let mut kills = 0;
    let started = Instant::now();
    while kills < 5 && started.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(350 + 90 * kills));
        if c2.try_wait().unwrap().is_some() {
            break;
        }
        c2.kill().unwrap(); // SIGKILL
        c2.wait().unwrap();
        kills += 1;
        c2 = container(2);
    }
    assert!(kills >= 3, "container 2 was killed only {kills} times");
    for (name, child) in [
        ("container 0", c0),
        ("container 1", c1),
        ("container 2", c2),
    ] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let spec = JobSpec::from_yaml_str(&yaml).unwrap();
    let mut oracle = WindowOracle::new(SIZE_MS, SLIDE_MS, OUT_OF_ORDERNESS_MS);
    for p in 0..6 {
        oracle.generator(&spec, p, 0, 24_000);
        oracle.end(p);
    }
    assert!(oracle.late > 0);
    assert_exactly(&published(dir, &["out"]), &oracle);
}
