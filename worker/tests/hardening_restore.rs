//! Restore and the read-only commands against hostile or damaged stores, through the real
//! binary: crafted file names in a task manifest or a savepoint never make a restore write
//! outside its directory; a store file that rotted while a local copy existed is detected and
//! uploaded again; reading commands never create directories; `--from-checkpoint` says truly
//! that it does not fall back.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const STORE: &str = "file://./.cairn/checkpoints";

fn job(records: u64, interval: &str, retained: u32) -> String {
    format!(
        "name: hardened\ninput:\n  type: generator\n  partitions: 2\n  keys: 100\n  seed: 3\n  \
         recordsPerPartition: {records}\ntask:\n  name: count\noutput:\n  type: null\n\
         checkpoint:\n  interval: {interval}\n  retained: {retained}\n"
    )
}

fn run_ok(dir: &Path, args: &[&str]) -> String {
    let out = worker(dir).args(args).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?} failed: {log}");
    log
}

/// Runs a command that must fail; returns its stderr.
fn run_err(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut cmd = worker(dir);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} must fail: {log}");
    log
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, doc: &serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
}

/// A name that resolves to `target` from any directory: enough `..` to reach `/`, then the
/// absolute path.
fn climbing_to(target: &Path) -> String {
    format!(
        "{}{}",
        "../".repeat(40),
        target.to_str().unwrap().trim_start_matches('/')
    )
}

/// The manifest of task 0 in the newest committed checkpoint of the store in `dir`.
fn newest_task_manifest(dir: &Path) -> PathBuf {
    let store = dir.join(".cairn/checkpoints");
    let id = *committed_ids(dir, STORE)
        .last()
        .expect("a committed checkpoint");
    let commit = read_json(&store.join(format!("checkpoints/{id:012}/_COMMIT.json")));
    let task0 = commit["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == 0)
        .unwrap();
    store.join(task0["manifest"].as_str().unwrap())
}

/// Hostile edits of a manifest's `files`, each with what the error must say and the paths a
/// restore that followed the names would have written.
fn hostile_variants(
    files: &[serde_json::Value],
    outside: &Path,
) -> Vec<(&'static str, Vec<serde_json::Value>, String, Vec<PathBuf>)> {
    let sst = files
        .iter()
        .position(|f| f["name"].as_str().unwrap().ends_with(".sst"))
        .expect("an SST");
    let small = files
        .iter()
        .position(|f| !f["name"].as_str().unwrap().ends_with(".sst"))
        .expect("a small file");
    let mut out = Vec::new();

    // `../` on a small file (downloaded) and on an SST (linked): both would land in `outside`.
    let dotdot = outside.join("escaped-by-dotdot");
    let mut v = files.to_vec();
    v[small]["name"] = climbing_to(&dotdot).into();
    out.push((
        "../",
        v,
        format!("files[{small}]: name \"../"),
        vec![dotdot.clone()],
    ));
    let dotdot_sst = outside.join("escaped-by-dotdot.sst");
    let mut v = files.to_vec();
    v[sst]["name"] = climbing_to(&dotdot_sst).into();
    out.push((
        "../ on an SST",
        v,
        format!("files[{sst}]: name \"../"),
        vec![dotdot_sst],
    ));

    // An absolute name.
    let abs = outside.join("abs/escaped-absolute.sst");
    let mut v = files.to_vec();
    v[sst]["name"] = abs.to_str().unwrap().into();
    out.push((
        "absolute",
        v,
        format!(
            "files[{sst}]: name {:?} is not a plain file name",
            abs.to_str().unwrap()
        ),
        vec![abs.clone(), outside.join("abs")],
    ));

    // The same name twice.
    let mut v = files.to_vec();
    v.push(files[sst].clone());
    let name = files[sst]["name"].as_str().unwrap().to_owned();
    out.push((
        "duplicate",
        v,
        format!(
            "files[{}]: name {name:?} is listed twice (also files[{sst}])",
            files.len()
        ),
        vec![],
    ));

    // An SST restored under another name than its key's.
    let mut v = files.to_vec();
    v[sst]["name"] = "999999.sst".into();
    out.push((
        "mismatched key",
        v,
        format!("files[{sst}]: name \"999999.sst\" does not match its key"),
        vec![],
    ));
    out
}

fn assert_nothing_written(targets: &[PathBuf], what: &str) {
    for t in targets {
        assert!(
            !t.exists() && t.symlink_metadata().is_err(),
            "{what}: a restore wrote {} outside its directory",
            t.display()
        );
    }
}

#[test]
fn crafted_file_names_never_write_outside_the_restore_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("work");
    let outside = tmp.path().join("outside");
    let tmpdir = tmp.path().join("tmpdir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(&tmpdir).unwrap();
    let spec_text = job(3000, "1h", 3);
    std::fs::write(dir.join("job.yaml"), &spec_text).unwrap();
    run_ok(&dir, &["run", "job.yaml", "--quiet"]);
    let expected = expected_counts(&cairn_contract::JobSpec::from_yaml_str(&spec_text).unwrap());
    assert_eq!(dumped_counts(&dir, STORE), expected);

    // A savepoint of that checkpoint, for the savepoint variants.
    let out = run_cmd(&dir, &["savepoint", STORE]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sp_url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let sp_file = PathBuf::from(sp_url.strip_prefix("file://").unwrap()).join("_SAVEPOINT.json");

    // 1. `state dump` and `run` restore the job's own checkpoint with a crafted task manifest.
    let manifest_path = newest_task_manifest(&dir);
    let original = read_json(&manifest_path);
    let files = original["files"].as_array().unwrap().clone();
    for (what, crafted, message, targets) in hostile_variants(&files, &outside) {
        let mut doc = original.clone();
        doc["files"] = crafted.into();
        write_json(&manifest_path, &doc);
        let env: &[(&str, &Path)] = &[("TMPDIR", &tmpdir)];
        let err = run_err(&dir, &["state", "dump", "--store", STORE], env);
        assert!(
            err.contains(&message),
            "{what}: state dump must say {message:?}: {err}"
        );
        assert!(
            err.contains(manifest_path.file_name().unwrap().to_str().unwrap()),
            "{what}: the error names the manifest: {err}"
        );
        assert_nothing_written(&targets, what);
        // `run` falls back past the damaged checkpoint: it is the only one, so it refuses.
        let err = run_err(&dir, &["run", "job.yaml", "--quiet"], &[]);
        assert!(
            err.contains(&message),
            "{what}: run must say {message:?}: {err}"
        );
        assert_nothing_written(&targets, what);
        // Un-mark it for the next variant (only damage marks a checkpoint unusable).
        for marker in walk(&dir.join(".cairn/checkpoints/checkpoints")) {
            if marker.ends_with("_UNUSABLE.json") {
                std::fs::remove_file(marker).unwrap();
            }
        }
    }
    write_json(&manifest_path, &original);
    assert_eq!(dumped_counts(&dir, STORE), expected);

    // 2. `run --from-savepoint` with a crafted savepoint manifest, in a fresh job directory.
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(fresh.join("job.yaml"), &spec_text).unwrap();
    let original = read_json(&sp_file);
    let files = original["tasks"][0]["files"].as_array().unwrap().clone();
    for (what, crafted, message, targets) in hostile_variants(&files, &outside) {
        let mut doc = original.clone();
        doc["tasks"][0]["files"] = crafted.into();
        write_json(&sp_file, &doc);
        let err = run_err(
            &fresh,
            &["run", "job.yaml", "--quiet", "--from-savepoint", &sp_url],
            &[],
        );
        assert!(
            err.contains(&message),
            "{what}: --from-savepoint must say {message:?}: {err}"
        );
        assert!(err.contains("_SAVEPOINT.json"), "{what}: {err}");
        assert_nothing_written(&targets, what);
    }
    write_json(&sp_file, &original);
    run_ok(
        &fresh,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &sp_url],
    );
    assert_eq!(dumped_counts(&fresh, STORE), expected);
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
}

/// An SST of the store rots while the local state still has an identical copy: the restart
/// notices, restores from the local copy, and its checkpoints upload the file again instead of
/// referencing the rotten one, so they restore without the local copy.
#[test]
fn a_rotten_store_copy_is_uploaded_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = job(3000, "1h", 3);
    std::fs::write(dir.join("job.yaml"), &first).unwrap();
    run_ok(dir, &["run", "job.yaml", "--quiet"]);
    let first_ids = committed_ids(dir, STORE);

    // Rot: one byte of one SST of the only checkpoint, same size (what a failing disk does).
    let store = dir.join(".cairn/checkpoints");
    let manifest = read_json(&newest_task_manifest(dir));
    let key = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_owned())
        .find(|k| k.ends_with(".sst"))
        .expect("an SST");
    let mut bytes = std::fs::read(store.join(&key)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(store.join(&key), &bytes).unwrap();

    // The job grows (more records) and runs again with its local state in place.
    let second = job(3500, "1h", 3);
    std::fs::write(dir.join("job.yaml"), &second).unwrap();
    let log = run_ok(dir, &["run", "job.yaml", "--quiet"]);
    assert!(
        log.contains("checkpoint store file is corrupt") && log.contains(&key),
        "the restart must report the rotten file {key}: {log}"
    );

    // No checkpoint of the second run references the rotten file.
    let second_ids: Vec<u64> = committed_ids(dir, STORE)
        .into_iter()
        .filter(|id| !first_ids.contains(id))
        .collect();
    assert!(!second_ids.is_empty());
    for id in second_ids {
        let commit = read_json(&store.join(format!("checkpoints/{id:012}/_COMMIT.json")));
        for t in commit["tasks"].as_array().unwrap() {
            let m = read_json(&store.join(t["manifest"].as_str().unwrap()));
            assert!(
                m["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|f| f["key"] != key.as_str()),
                "checkpoint {id} still references the rotten {key}"
            );
        }
    }
    // Without any local state, the newest checkpoint restores exactly.
    std::fs::remove_dir_all(dir.join(".cairn/state")).unwrap();
    let expected = expected_counts(&cairn_contract::JobSpec::from_yaml_str(&second).unwrap());
    assert_eq!(dumped_counts(dir, STORE), expected);
}

/// Reading commands and restores from a savepoint never create the directory a mistyped URL
/// names; they fail naming it.
#[test]
fn reading_a_store_or_savepoint_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("job.yaml"), job(100, "1h", 1)).unwrap();
    let typo = tmp.path().join("typo");
    let url = |rest: &str| format!("file://{}/{rest}", typo.display());
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec!["checkpoints".into(), url("a")], "a".into()),
        (vec!["savepoints".into(), url("b")], "b".into()),
        (
            vec!["state".into(), "dump".into(), "--store".into(), url("c")],
            "c".into(),
        ),
        (vec!["savepoint".into(), url("d")], "d".into()),
        (
            vec![
                "run".into(),
                "job.yaml".into(),
                "--quiet".into(),
                "--from-savepoint".into(),
                url("savepoints/sp-000000000001"),
            ],
            "savepoints/sp-000000000001".into(),
        ),
    ];
    for (args, rest) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = run_err(&dir, &args, &[]);
        let path = typo.join(&rest);
        assert!(
            err.contains("no such") && err.contains(&path.display().to_string()),
            "{args:?} must fail naming {}: {err}",
            path.display()
        );
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    // The same through the spec's restore.savepoint.
    std::fs::write(
        dir.join("job.yaml"),
        format!(
            "{}restore:\n  savepoint: \"{}\"\n",
            job(100, "1h", 1),
            url("savepoints/sp-000000000002")
        ),
    )
    .unwrap();
    let err = run_err(&dir, &["run", "job.yaml", "--quiet"], &[]);
    assert!(err.contains("no such savepoint"), "{err}");
    assert!(
        !typo.exists(),
        "restore.savepoint created {}",
        typo.display()
    );
}

/// `--from-checkpoint` on a damaged checkpoint refuses without pretending to fall back; without
/// it, the log names the checkpoint it falls back to.
#[test]
fn the_fallback_message_tells_the_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Slow enough input that several checkpoints commit.
    let slow = job(20_000, "50ms", 3).replace("seed: 3", "seed: 3\n  ratePerSecond: 40000");
    std::fs::write(dir.join("job.yaml"), &slow).unwrap();
    run_ok(dir, &["run", "job.yaml", "--quiet"]);
    let ids = committed_ids(dir, STORE);
    assert!(ids.len() >= 2, "{ids:?}");
    let newest = *ids.last().unwrap();
    let previous = ids[ids.len() - 2];
    std::fs::remove_file(newest_task_manifest(dir)).unwrap();

    let newest_arg = newest.to_string();
    let err = run_err(
        dir,
        &[
            "run",
            "job.yaml",
            "--quiet",
            "--from-checkpoint",
            &newest_arg,
        ],
        &[],
    );
    assert!(
        err.contains("checkpoint unusable") && err.contains("there is no fallback"),
        "{err}"
    );
    assert!(!err.contains("trying the previous one"), "{err}");

    let log = run_ok(dir, &["run", "job.yaml", "--quiet"]);
    assert!(
        log.contains(&format!("trying the previous one, checkpoint {previous}")),
        "{log}"
    );
}
