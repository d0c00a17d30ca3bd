//! Retention and clean-up never delete what they do not own: a process fenced out by a newer
//! generation deletes nothing of it (two generations run at once against one store, real
//! processes); emptied directories are removed; abandoned incomplete savepoints are removed,
//! completed and possibly still-written ones are not.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use cairn_worker::checkpoint::retention::RETENTION_GATE_ENV;
use common::launcher::wait_until;
use common::*;

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Starts `cairn-worker run job.yaml` in `dir` with its log in `dir/worker.log`.
fn start(dir: &Path, env: &[(&str, String)]) -> Child {
    let log = std::fs::File::create(dir.join("worker.log")).unwrap();
    let mut cmd = worker(dir);
    cmd.args(["run", "job.yaml", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("worker.log")).unwrap_or_default()
}

/// Waits (bounded) for a child to exit.
fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(what, 120, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// Keys of the files below `dir`, relative to `root`.
fn keys_below(root: &Path, dir: &str) -> Vec<String> {
    walk(&root.join(dir))
        .into_iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Every committed checkpoint of the store restores (by `state dump`, which reads the store
/// only) to exactly the state its commit record's offsets imply.
fn assert_every_checkpoint_restores_exactly(dir: &Path, store_url: &str, store: &Path) {
    let spec = cairn_contract::JobSpec::from_path(&dir.join("job.yaml")).unwrap();
    let ids = committed_ids(dir, store_url);
    assert!(!ids.is_empty());
    for id in ids {
        let commit = read_json(&store.join(format!("checkpoints/{id:012}/_COMMIT.json")));
        let offsets = commit["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["offsets"].as_object().unwrap().clone())
            .map(|(p, o)| (p.parse().unwrap(), o.as_u64().unwrap()))
            .collect();
        let out = run_cmd(
            dir,
            &[
                "state",
                "dump",
                "--store",
                store_url,
                "--checkpoint",
                &id.to_string(),
            ],
        );
        assert!(
            out.status.success(),
            "checkpoint {id} does not restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            counts_from_dump(&out.stdout),
            expected_counts_up_to(&spec, &offsets),
            "checkpoint {id}"
        );
    }
}

/// Process A commits a checkpoint and then, in its retention pass, waits (fault injection)
/// until process B — a newer generation of the same job on the same store — has restored that
/// checkpoint and uploaded an SST of its own that no commit references yet. A then resumes:
/// it must see that it is fenced and delete nothing, so every checkpoint B commits restores.
#[test]
fn a_fenced_process_deletes_nothing_of_its_successor() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let store_url = format!("file://{}", store.display());
    let job = format!(
        "name: fenced\ninput:\n  type: generator\n  partitions: 2\n  keys: 200\n  seed: 4\n  \
         recordsPerPartition: 6000\n  ratePerSecond: 2000\ntask:\n  name: count\noutput:\n  \
         type: null\ncheckpoint:\n  interval: 200ms\n  retained: 2\n  timeout: 60s\n  \
         store: \"{store_url}\"\n"
    );
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    for dir in [&dir_a, &dir_b] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("job.yaml"), &job).unwrap();
    }
    let gate = tmp.path().join("gate");

    // A: generation 1; its first retention pass waits for the gate.
    let mut a = start(&dir_a, &[(RETENTION_GATE_ENV, gate.display().to_string())]);
    wait_until("A's first commit", 60, || {
        assert!(
            a.try_wait().unwrap().is_none(),
            "A exited: {}",
            log_of(&dir_a)
        );
        keys_below(&store, "checkpoints")
            .iter()
            .any(|k| k.ends_with("_COMMIT.json"))
    });
    let a_commits: Vec<String> = keys_below(&store, "checkpoints")
        .into_iter()
        .filter(|k| k.ends_with("_COMMIT.json"))
        .collect();
    assert_eq!(a_commits.len(), 1, "{a_commits:?}");

    // B: generation 2, uploading slowly so that its first checkpoint stays uncommitted for
    // seconds after its first SST is in the store.
    let mut b = start(&dir_b, &[("CAIRN_FAULT_UPLOAD_DELAY_MS", "1500".into())]);
    let b_sst_dir = "/db-000002-";
    wait_until("B's first uploaded SST", 60, || {
        assert!(
            b.try_wait().unwrap().is_none(),
            "B exited: {}",
            log_of(&dir_b)
        );
        keys_below(&store, "tasks")
            .iter()
            .any(|k| k.contains(b_sst_dir) && k.ends_with(".sst"))
    });
    let b_uploaded: Vec<String> = keys_below(&store, "tasks")
        .into_iter()
        .filter(|k| k.contains(b_sst_dir))
        .collect();
    // Still uncommitted: only A's commit exists.
    let commits: Vec<String> = keys_below(&store, "checkpoints")
        .into_iter()
        .filter(|k| k.ends_with("_COMMIT.json"))
        .collect();
    assert_eq!(commits, a_commits, "B committed before the gate opened");

    // Open the gate: A's retention pass runs now, while B's checkpoint is in flight.
    std::fs::write(&gate, b"open").unwrap();
    let status = wait_exit(&mut a, "A to stop");
    let log_a = log_of(&dir_a);
    assert!(
        !status.success(),
        "a fenced process must not end cleanly: {log_a}"
    );
    assert!(
        log_a.contains("fenced: generation 2 of this job started after ours (1)"),
        "{log_a}"
    );
    for key in &b_uploaded {
        assert!(
            store.join(key).exists(),
            "the fenced process deleted {key} of its successor"
        );
    }

    let status = wait_exit(&mut b, "B to finish");
    assert!(status.success(), "B failed: {}", log_of(&dir_b));
    assert_every_checkpoint_restores_exactly(&dir_b, &store_url, &store);
    let spec = cairn_contract::JobSpec::from_path(&dir_b.join("job.yaml")).unwrap();
    let out = run_cmd(&dir_b, &["state", "dump", "--store", &store_url]);
    assert!(out.status.success());
    assert_eq!(counts_from_dump(&out.stdout), expected_counts(&spec));
}

/// Directories below the top level of a `file://` store that are empty.
fn empty_dirs(root: &Path) -> Vec<PathBuf> {
    fn visit(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        if entries.is_empty() && depth > 1 {
            out.push(dir.to_path_buf());
        }
        for e in entries.iter().filter(|e| e.is_dir()) {
            visit(e, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    visit(root, 0, &mut out);
    out
}

#[test]
fn retention_leaves_no_empty_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("job.yaml"),
        "name: tidy\ninput:\n  type: generator\n  partitions: 2\n  keys: 100\n  \
         recordsPerPartition: 20000\n  ratePerSecond: 20000\ntask:\n  name: count\noutput:\n  \
         type: null\ncheckpoint:\n  interval: 50ms\n  retained: 1\n",
    )
    .unwrap();
    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = dir.join(".cairn/checkpoints");
    let ids = committed_ids(dir, "file://./.cairn/checkpoints");
    assert_eq!(ids.len(), 1);
    let final_id = ids[0];
    assert!(final_id > 5, "too few checkpoints to tell: {final_id}");
    assert_eq!(empty_dirs(&root), Vec::<PathBuf>::new());
    let checkpoint_dirs: Vec<String> = std::fs::read_dir(root.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(checkpoint_dirs, [format!("{final_id:012}")]);
    assert_store_consistent(&root, 1);
}

#[test]
fn abandoned_incomplete_savepoints_are_removed_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("job.yaml"),
        "name: sp\ninput:\n  type: generator\n  partitions: 1\n  keys: 50\n  \
         recordsPerPartition: 5000\n  ratePerSecond: 10000\ntask:\n  name: count\noutput:\n  \
         type: null\ncheckpoint:\n  interval: 50ms\n",
    )
    .unwrap();
    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store_url = "file://./.cairn/checkpoints";
    let root = dir.join(".cairn/checkpoints");
    let id = *committed_ids(dir, store_url).last().unwrap();
    assert!(id >= 5, "the fabricated savepoints need ids 1-4 below {id}");

    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let hours = |h: u64| Duration::from_secs(h * 3600);
    let plant = |n: u64, marker_age: Option<Duration>, complete: bool| {
        let d = root.join(format!("savepoints/sp-{n:012}"));
        std::fs::create_dir_all(d.join("task-0000")).unwrap();
        std::fs::write(d.join("task-0000/000007.sst"), b"partial copy").unwrap();
        if let Some(age) = marker_age {
            let marker = serde_json::json!({
                "startedAtMs": now_ms - age.as_millis() as u64, "writer": "pid 1"
            });
            std::fs::write(d.join("_IN_PROGRESS.json"), marker.to_string()).unwrap();
        }
        if complete {
            std::fs::write(d.join("_SAVEPOINT.json"), b"{}").unwrap();
        }
    };
    plant(1, Some(hours(2)), false); // abandoned: removed
    plant(2, Some(Duration::from_secs(60)), false); // its writer may still be copying: kept
    plant(3, None, false); // no marker (an older Cairn's): kept
    plant(4, Some(hours(2)), true); // completed, marker left by a crash: kept
    plant(id + 1000, Some(hours(2)), false); // not older than the new one: kept

    let before = keys_below(&root, "savepoints");
    let out = run_cmd(dir, &["savepoint", store_url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let new = format!("savepoints/sp-{id:012}/");
    assert!(url.ends_with(new.trim_end_matches('/')), "{url}");
    let after = keys_below(&root, "savepoints");

    let abandoned = "savepoints/sp-000000000001/";
    let expected: Vec<String> = before
        .iter()
        .filter(|k| !k.starts_with(abandoned))
        .cloned()
        .collect();
    let mut others: Vec<String> = after
        .iter()
        .filter(|k| !k.starts_with(&new))
        .cloned()
        .collect();
    others.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(others, expected);
    assert!(
        !root.join(abandoned).exists(),
        "the abandoned directory is left"
    );
    // The new savepoint is complete, and its marker is gone.
    assert!(
        after.contains(&format!("{new}_SAVEPOINT.json")),
        "{after:?}"
    );
    assert!(
        !after.contains(&format!("{new}_IN_PROGRESS.json")),
        "{after:?}"
    );
}
