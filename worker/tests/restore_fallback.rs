//! Restore falls back past a corrupt or incomplete checkpoint to the previous committed one,
//! names the bad file, and still ends with exact state and exactly-once output; SIGTERM stops
//! a job with a final checkpoint that the next run resumes from.

mod common;

use std::time::Duration;

use common::*;

const JOB: &str = "\
name: fallback
input:
  type: generator
  partitions: 2
  keys: 200
  seed: 5
  recordsPerPartition: 40000
  ratePerSecond: 20000
task:
  name: count
output:
  type: file
  path: ./out
checkpoint:
  interval: 200ms
  retained: 3
";

const STORE: &str = "file://./.cairn/checkpoints";

/// Runs until at least `min_checkpoints` are committed, then SIGTERMs; returns the ids.
fn run_then_sigterm(dir: &std::path::Path, min_checkpoints: usize) -> Vec<u64> {
    let before = if dir.join(".cairn").exists() {
        committed_ids(dir, STORE).len()
    } else {
        0
    };
    let child = spawn_run(dir, &[]);
    std::thread::sleep(Duration::from_millis(900));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "SIGTERM must stop the job cleanly: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = committed_ids(dir, STORE);
    assert!(
        ids.len() >= min_checkpoints.min(3) && ids.len() >= before.min(3),
        "ids {ids:?}"
    );
    ids
}

fn corrupt(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn sigterm_then_corrupt_and_missing_checkpoints_fall_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("job.yaml"), JOB).unwrap();
    let spec = cairn_contract::JobSpec::from_yaml_str(JOB).unwrap();
    let store_dir = dir.join(".cairn/checkpoints");

    // 1. SIGTERM: the job stops with a final checkpoint and the next run resumes from it.
    let ids = run_then_sigterm(dir, 2);
    let last = *ids.last().unwrap();
    let offsets: u64 = {
        let c: serde_json::Value = serde_json::from_slice(
            &std::fs::read(store_dir.join(format!("checkpoints/{last:012}/_COMMIT.json"))).unwrap(),
        )
        .unwrap();
        total_offsets(&c)
    };
    assert!(
        offsets > 0 && offsets < 80_000,
        "stopped mid-input, offsets {offsets}"
    );

    // 2. Corrupt a file only the newest checkpoint has (its RocksDB MANIFEST copy).
    let newest_files = walk(&store_dir.join(format!("checkpoints/{last:012}")));
    let manifest_copy = newest_files
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("MANIFEST-")
        })
        .expect("per-checkpoint MANIFEST file");
    corrupt(manifest_copy);
    let second = run_then_sigterm(dir, 2);
    assert!(second.len() >= 2);

    // 3. Delete an SST only the newest checkpoint references.
    let newest = *second.last().unwrap();
    let previous = second[second.len() - 2];
    let files_of = |id: u64| -> Vec<String> {
        let c: serde_json::Value = serde_json::from_slice(
            &std::fs::read(store_dir.join(format!("checkpoints/{id:012}/_COMMIT.json"))).unwrap(),
        )
        .unwrap();
        c["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| {
                let m: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(store_dir.join(t["manifest"].as_str().unwrap())).unwrap(),
                )
                .unwrap();
                m["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["key"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let old = files_of(previous);
    let only_newest = files_of(newest)
        .into_iter()
        .find(|k| k.ends_with(".sst") && !old.contains(k));
    if let Some(key) = &only_newest {
        std::fs::remove_file(store_dir.join(key)).unwrap();
    }

    // 4. Run to the end; the log names the unusable checkpoints' files.
    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "final run failed: {log}");
    if let Some(key) = &only_newest {
        assert!(
            log.contains("checkpoint unusable") && log.contains(key.as_str()),
            "log must name {key}: {log}"
        );
    }

    let expected = expected_counts(&spec);
    assert_eq!(dumped_counts(dir, STORE), expected);
    assert_eq!(
        published_lines(&dir.join("out")),
        expected_count_output(&expected)
    );
    assert_store_consistent(&store_dir, 3);
}

#[test]
fn the_second_run_after_corrupting_the_only_checkpoint_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let job = JOB
        .replace("retained: 3", "retained: 1")
        .replace("interval: 200ms", "interval: 1h");
    std::fs::write(dir.join("job.yaml"), &job).unwrap();
    // Finite run: the only checkpoint is the final one.
    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ssts: Vec<_> = walk(&dir.join(".cairn/checkpoints/tasks"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    assert!(!ssts.is_empty());
    corrupt(&ssts[0]);
    // Remove the local state so restore must read the store.
    std::fs::remove_dir_all(dir.join(".cairn/state")).unwrap();
    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a corrupt only checkpoint must not be silently skipped"
    );
    let name = ssts[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.contains("no committed checkpoint could be restored") && err.contains(&name),
        "{err}"
    );
    // It is now marked unusable; the next start still refuses rather than start empty.
    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("marked unusable"),
        "{err}"
    );
}
