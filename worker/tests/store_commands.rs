//! `cairn-worker store dispose|purge|check-restore`, the housekeeping the operator runs in
//! one-off pods, on stores written by real jobs: what is deleted is exactly what should be
//! (compared file by file), hostile URLs delete nothing, an interrupted disposal is finished by
//! a retry, and every failure leaves one line in the termination log. On S3 (MinIO on
//! loopback) too, where a wrong secret must not appear in that line.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_contract::housekeeping::{MAX_DISPOSE_PER_POD, TARGET_JOB_ENV};
use common::minio::{Minio, SECRET_KEY};
use common::*;
use object_store::ObjectStoreExt;

const STORE: &str = "file://./.cairn/checkpoints";

fn job_yaml(task: &str, partitions: u32, store: &str) -> String {
    format!(
        "name: tidy\ninput:\n  type: generator\n  partitions: {partitions}\n  keys: 200\n  \
         seed: 5\n  recordsPerPartition: 3000\n  ratePerSecond: 6000\ntask:\n  name: {task}\n\
         checkpoint:\n  interval: 100ms\n  store: {store}\n"
    )
}

/// What a `store` command did.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    /// The termination log's content; `None` if the command did not write it.
    log: Option<String>,
}

/// Runs `cairn-worker store <command> --termination-log <dir>/termination-log <args>` in `dir`.
fn store_cmd(dir: &Path, command: &str, args: &[&str], env: &[(&str, String)]) -> Run {
    let log = dir.join("termination-log");
    let _ = std::fs::remove_file(&log);
    let mut all = vec!["store", command, "--termination-log", log.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = run_cmd_with_env(dir, &all, env);
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        log: std::fs::read_to_string(&log).ok(),
    }
}

/// The failure line of a run that must have failed: one line, in the log and on stderr.
fn failure_line(run: &Run) -> String {
    assert!(!run.ok, "expected a failure: {}{}", run.stdout, run.stderr);
    let log = run
        .log
        .clone()
        .expect("a failure writes the termination log");
    assert!(log.ends_with('\n') && log.lines().count() == 1, "{log:?}");
    let line = log.trim_end().to_owned();
    assert!(run.stderr.contains(&line), "stderr: {}", run.stderr);
    line
}

fn assert_ok(run: &Run) {
    assert!(run.ok, "failed: {}{}", run.stdout, run.stderr);
    assert_eq!(run.log, None, "a success writes no termination log");
}

/// Runs `job` (finite) in `dir` to its end.
fn run_job(dir: &Path, job: &str, env: &[(&str, String)]) {
    std::fs::write(dir.join("job.yaml"), job).unwrap();
    let out = run_cmd_with_env(dir, &["run", "job.yaml", "--quiet"], env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A savepoint of checkpoint `id` of `store`; its URL.
fn savepoint(dir: &Path, store: &str, id: u64, env: &[(&str, String)]) -> String {
    let out = run_cmd_with_env(
        dir,
        &["savepoint", store, "--checkpoint", &id.to_string()],
        env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// URLs listed by `cairn-worker savepoints <store> --json`.
fn listed_savepoints(dir: &Path, store: &str, env: &[(&str, String)]) -> Vec<String> {
    let out = run_cmd_with_env(dir, &["savepoints", store, "--json"], env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["url"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Every file under `dir` (relative path -> content).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walk(dir)
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(dir).unwrap().display().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// `snapshot` without the files under `prefix`.
fn without(files: &BTreeMap<String, Vec<u8>>, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .filter(|(k, _)| !k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn local_path(url: &str) -> PathBuf {
    PathBuf::from(url.strip_prefix("file://").unwrap())
}

/// The store directory's name of a savepoint, e.g. `savepoints/sp-000000000004/`.
fn dir_key(url: &str) -> String {
    let name = url.rsplit('/').next().unwrap();
    format!("savepoints/{name}/")
}

/// A job run in a fresh directory with two savepoints (of its two newest checkpoints):
/// (directory, store directory, older savepoint, newer savepoint).
fn job_with_two_savepoints() -> (tempfile::TempDir, PathBuf, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run_job(dir, &job_yaml("count", 2, STORE), &[]);
    let ids = committed_ids(dir, STORE);
    assert!(ids.len() >= 2, "{ids:?}");
    let older = savepoint(dir, STORE, ids[ids.len() - 2], &[]);
    let newer = savepoint(dir, STORE, ids[ids.len() - 1], &[]);
    let store_dir = dir.join(".cairn/checkpoints");
    (tmp, store_dir, older, newer)
}

#[test]
fn dispose_deletes_the_savepoint_and_nothing_else_and_a_retry_finds_it_gone() {
    let (tmp, store_dir, older, newer) = job_with_two_savepoints();
    let dir = tmp.path();
    let before = snapshot(&store_dir);
    let older_files = before
        .keys()
        .filter(|k| k.starts_with(&dir_key(&older)))
        .count();
    assert!(older_files >= 3, "{before:?}");

    let run = store_cmd(dir, "dispose", &[&older], &[]);
    assert_ok(&run);
    assert!(
        run.stdout
            .starts_with(&format!("disposed {older:?}: {older_files} files, ")),
        "{}",
        run.stdout
    );
    assert!(!local_path(&older).exists(), "the directory itself is gone");
    assert_eq!(snapshot(&store_dir), without(&before, &dir_key(&older)));
    assert_eq!(listed_savepoints(dir, STORE, &[]), vec![newer.clone()]);

    let run = store_cmd(dir, "dispose", &[&older], &[]);
    assert_ok(&run);
    assert_eq!(run.stdout, format!("already gone {older:?}\n"));
    assert_eq!(snapshot(&store_dir), without(&before, &dir_key(&older)));
}

#[test]
fn hostile_urls_are_refused_with_nothing_deleted_while_a_valid_one_is_disposed() {
    let (tmp, store_dir, older, newer) = job_with_two_savepoints();
    let dir = tmp.path();
    let root = store_dir.display().to_string();
    for (path, content) in [
        ("foreign/sp-000000000001/data", "not Cairn's"),
        ("savepoints/mine/data", "not Cairn's"),
        (
            "savepoints/sp-000000000999/notes.txt",
            "no marker: not Cairn's",
        ),
    ] {
        let path = store_dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let checkpoint = committed_ids(dir, STORE)[0];
    let newer_name = newer.rsplit('/').next().unwrap();
    let hostile = [
        format!("file://{root}"),
        format!("file://{root}/checkpoints"),
        format!("file://{root}/checkpoints/{checkpoint:012}"),
        format!("file://{root}/foreign/sp-000000000001"),
        format!("file://{root}/savepoints/sp-000000000999/../../checkpoints"),
        format!("file://{root}/tasks/../savepoints/{newer_name}"),
        format!("file://{root}/savepoints/mine"),
        format!("file://{root}/savepoints/sp-000000000999"),
        "s3://".to_owned(),
    ];
    let before = snapshot(&store_dir);
    let mut args: Vec<&str> = hostile.iter().map(String::as_str).collect();
    args.insert(3, &older);
    let run = store_cmd(dir, "dispose", &args, &[]);
    let line = failure_line(&run);
    assert!(
        line.starts_with(&format!(
            "{} of {} savepoint(s) not disposed of (the others are): ",
            hostile.len(),
            hostile.len() + 1
        )),
        "{line}"
    );
    for url in &hostile {
        assert!(line.contains(&format!("{url:?}: ")), "{url} in {line}");
        assert!(
            run.stdout.contains(&format!("refused {url:?}: ")),
            "{url}: {}",
            run.stdout
        );
    }
    assert!(line.contains("not a Cairn savepoint"), "{line}");
    assert!(line.contains("`..` segment"), "{line}");
    assert!(
        run.stdout.contains(&format!("disposed {older:?}: ")),
        "{}",
        run.stdout
    );
    // Only the valid savepoint went.
    assert_eq!(snapshot(&store_dir), without(&before, &dir_key(&older)));
    assert_eq!(listed_savepoints(dir, STORE, &[]), vec![newer.clone()]);

    // Too many URLs for one pod: nothing is done at all.
    let many = vec![newer.as_str(); MAX_DISPOSE_PER_POD + 1];
    let line = failure_line(&store_cmd(dir, "dispose", &many, &[]));
    assert!(
        line.starts_with(&format!(
            "{} savepoint URLs were given, more than the {MAX_DISPOSE_PER_POD}",
            MAX_DISPOSE_PER_POD + 1
        )),
        "{line}"
    );
    assert_eq!(listed_savepoints(dir, STORE, &[]), [newer]);
}

/// A pod killed mid-disposal: the marker is there, the manifest and some files are gone. The
/// directory is no savepoint any more (not listed, not restorable), and a retry finishes it.
#[test]
fn a_half_disposed_savepoint_is_never_restored_and_a_retry_finishes_it() {
    let (tmp, store_dir, older, newer) = job_with_two_savepoints();
    let dir = tmp.path();
    let before = snapshot(&store_dir);
    let sp_dir = local_path(&older);
    std::fs::write(sp_dir.join("_DISPOSING.json"), "{}").unwrap();
    std::fs::remove_file(sp_dir.join("_SAVEPOINT.json")).unwrap();
    let sst = walk(&sp_dir)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "sst"))
        .expect("an SST in the savepoint");
    std::fs::remove_file(sst).unwrap();

    assert_eq!(listed_savepoints(dir, STORE, &[]), vec![newer.clone()]);
    let fresh = dir.join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::write(fresh.join("job.yaml"), job_yaml("count", 2, STORE)).unwrap();
    let out = run_cmd(
        &fresh,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &older],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no savepoint at"),
        "{err}"
    );

    let run = store_cmd(dir, "dispose", &[&older], &[]);
    assert_ok(&run);
    assert!(
        run.stdout.starts_with(&format!("disposed {older:?}: ")),
        "{}",
        run.stdout
    );
    assert!(!sp_dir.exists());
    assert_eq!(snapshot(&store_dir), without(&before, &dir_key(&older)));
}

#[test]
fn purge_keeps_the_kept_savepoint_and_foreign_files_and_deletes_the_rest_of_every_epoch() {
    let (tmp, store_dir, older, newer) = job_with_two_savepoints();
    let dir = tmp.path();
    // A stateless restart: the same job in <store>/epoch-1, with a savepoint of its own.
    let epoch = "file://./.cairn/checkpoints/epoch-1";
    run_job(dir, &job_yaml("count", 2, epoch), &[]);
    let epoch_ids = committed_ids(dir, epoch);
    let epoch_sp = savepoint(dir, epoch, *epoch_ids.last().unwrap(), &[]);
    assert!(epoch_sp.contains("/epoch-1/savepoints/sp-"), "{epoch_sp}");
    for (path, content) in [
        ("notes.txt", "someone's notes"),
        ("epoch-1/README", "someone's readme"),
        ("other/data.bin", "someone's data"),
    ] {
        let path = store_dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let before = snapshot(&store_dir);
    let elsewhere = "file:///elsewhere/savepoints/sp-000000000001";

    let run = store_cmd(
        dir,
        "purge",
        &[STORE, "--keep", &newer, "--keep", elsewhere],
        &[],
    );
    assert_ok(&run);
    let expected: BTreeMap<String, Vec<u8>> = before
        .iter()
        .filter(|(k, _)| {
            k.starts_with(&dir_key(&newer))
                || ["notes.txt", "epoch-1/README", "other/data.bin"].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(snapshot(&store_dir), expected);
    for line in [
        format!("--keep {elsewhere:?} is not inside this store: ignored"),
        "  epochs: epoch-1".to_owned(),
        "  left 3 keys that are not Cairn's (e.g. epoch-1/README, notes.txt, other/data.bin)"
            .to_owned(),
    ] {
        assert!(
            run.stdout.lines().any(|l| l == line),
            "{line:?} in {}",
            run.stdout
        );
    }
    // Listed in key order: the epoch's first.
    let disposed = format!(
        "2 disposed of: epoch-1/{}, {}; 1 kept: {}",
        dir_key(&epoch_sp).trim_end_matches('/'),
        dir_key(&older).trim_end_matches('/'),
        dir_key(&newer).trim_end_matches('/'),
    );
    assert!(
        run.stdout.contains(&disposed),
        "{disposed} in {}",
        run.stdout
    );
    // The layout's emptied directories went too; a directory with foreign files stays.
    for gone in [
        "checkpoints",
        "tasks",
        "generations",
        "epoch-1/checkpoints",
        "epoch-1/savepoints",
    ] {
        assert!(!store_dir.join(gone).exists(), "{gone} is left");
    }
    assert_eq!(listed_savepoints(dir, STORE, &[]), vec![newer.clone()]);
    assert!(committed_ids(dir, STORE).is_empty());

    // Again: nothing left to do.
    let run = store_cmd(dir, "purge", &[STORE, "--keep", &newer], &[]);
    assert_ok(&run);
    assert!(
        run.stdout.contains("  checkpoints: 0 keys, 0 B"),
        "{}",
        run.stdout
    );
    assert_eq!(snapshot(&store_dir), expected);

    // A keep that is not a savepoint URL could mean anything: nothing is deleted.
    let line = failure_line(&store_cmd(
        dir,
        "purge",
        &[STORE, "--keep", "file:///data/../savepoints/sp-1"],
        &[],
    ));
    assert!(
        line.starts_with("--keep \"file:///data/../savepoints/sp-1\": "),
        "{line}"
    );
    assert_eq!(snapshot(&store_dir), expected);
}

/// A check-restore run with `doc` as the target job.
fn check(dir: &Path, doc: Option<&str>, store: &str, mode: &str) -> Run {
    let env: Vec<(&str, String)> = doc
        .map(|d| (TARGET_JOB_ENV, d.to_owned()))
        .into_iter()
        .collect();
    store_cmd(
        dir,
        "check-restore",
        &[
            "--job-env",
            TARGET_JOB_ENV,
            "--current-store",
            store,
            "--mode",
            mode,
        ],
        &env,
    )
}

#[test]
fn check_restore_accepts_what_restores_and_refuses_what_does_not_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let current = job_yaml("count", 2, STORE);
    run_job(dir, &current, &[]);
    let latest = *committed_ids(dir, STORE).last().unwrap();
    let commit_path = dir.join(format!(
        ".cairn/checkpoints/checkpoints/{latest:012}/_COMMIT.json"
    ));
    let commit: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&commit_path).unwrap()).unwrap();
    assert_eq!(commit["stateVersion"], 1, "the coordinator records it");

    for mode in ["savepoint", "last-state"] {
        let run = check(dir, Some(&current), STORE, mode);
        assert_ok(&run);
        assert!(
            run.stdout
                .contains("task `count` (state version 1): compatible")
                && run.stdout.contains("2 partitions: unchanged"),
            "{}",
            run.stdout
        );
    }
    // JSON is read as well.
    let json =
        serde_json::to_string(&cairn_contract::JobSpec::from_yaml_str(&current).unwrap()).unwrap();
    assert_ok(&check(dir, Some(&json), STORE, "last-state"));

    // Another task.
    let sum = job_yaml("sum", 2, STORE);
    let line = failure_line(&check(dir, Some(&sum), STORE, "savepoint"));
    assert_eq!(
        line,
        "the current state is task `count` (state version 1) but spec.job.task.name is `sum`: \
         set restoreFrom.allowStateDrop to start empty, or keep the task"
    );
    let dropping = format!("{sum}restore:\n  allowStateDrop: true\n");
    let run = check(dir, Some(&dropping), STORE, "savepoint");
    assert_ok(&run);
    assert!(
        run.stdout.contains("restore.allowStateDrop is set"),
        "{}",
        run.stdout
    );
    let line = failure_line(&check(dir, Some(&dropping), STORE, "last-state"));
    assert!(
        line.contains("a last-state upgrade restores the checkpoint as it is"),
        "{line}"
    );

    // Another N.
    let wider = job_yaml("count", 3, STORE);
    let line = failure_line(&check(dir, Some(&wider), STORE, "last-state"));
    assert_eq!(
        line,
        format!(
            "the current state has 2 partitions (checkpoint {latest}) but \
             spec.job.input.partitions is 3: a last-state upgrade cannot change the partition \
             count; use upgradeMode savepoint, which repartitions, or keep 2 partitions"
        )
    );
    let run = check(dir, Some(&wider), STORE, "savepoint");
    assert_ok(&run);
    assert!(run.stdout.contains("partitions 2 -> 3"), "{}", run.stdout);

    // The target's own store must be reachable from this pod.
    let lost = job_yaml("count", 2, "file:///nonexistent-cairn-mount/jobs/tidy");
    let line = failure_line(&check(dir, Some(&lost), STORE, "last-state"));
    assert_eq!(
        line,
        "spec.job.checkpoint.store file:///nonexistent-cairn-mount/jobs/tidy: neither \
         /nonexistent-cairn-mount/jobs/tidy nor its parent directory exists in this pod; mount \
         the volume that holds it, or fix the path"
    );

    // A state version other than this image's, and one the checkpoint did not record.
    let mut edited = commit.clone();
    edited["stateVersion"] = 7.into();
    std::fs::write(&commit_path, edited.to_string()).unwrap();
    let line = failure_line(&check(dir, Some(&current), STORE, "savepoint"));
    assert!(
        line.starts_with(
            "the current state is task `count` at state version 7 but this image's `count` has \
             state version 1"
        ),
        "{line}"
    );
    edited.as_object_mut().unwrap().remove("stateVersion");
    std::fs::write(&commit_path, edited.to_string()).unwrap();
    let run = check(dir, Some(&current), STORE, "savepoint");
    assert_ok(&run);
    assert!(
        run.stdout.contains("could not be checked"),
        "{}",
        run.stdout
    );

    // No document, a bad document, nothing to restore.
    let line = failure_line(&check(dir, None, STORE, "savepoint"));
    assert!(
        line.starts_with(&format!(
            "the environment variable {TARGET_JOB_ENV} holds no job document"
        )),
        "{line}"
    );
    let line = failure_line(&check(dir, Some("name: tidy\n"), STORE, "savepoint"));
    assert!(
        line.starts_with("the target job (spec.job, in CAIRN_TARGET_JOB) is not valid: "),
        "{line}"
    );
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let run = check(dir, Some(&current), "file://./empty", "last-state");
    assert_ok(&run);
    assert!(
        run.stdout.starts_with("nothing to restore yet"),
        "{}",
        run.stdout
    );
    assert!(!empty.join("checkpoints").exists(), "nothing is created");
}

#[test]
fn on_s3_dispose_and_purge_delete_only_cairns_keys_and_a_wrong_secret_is_never_shown() {
    let minio = Minio::start();
    minio.create_bucket("housekeeping");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = "s3://housekeeping/jobs/hk";
    let env = minio.env();
    let job = job_yaml("count", 2, store);
    run_job(dir, &job, &env);
    let ids = committed_ids_with_env(dir, store, &env);
    assert!(ids.len() >= 2, "{ids:?}");
    let older = savepoint(dir, store, ids[ids.len() - 2], &env);
    let newer = savepoint(dir, store, ids[ids.len() - 1], &env);
    let raw = minio.raw("housekeeping");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for key in ["jobs/hk/notes.txt", "jobs/other/data.bin"] {
            raw.put(&object_store::path::Path::from(key), "not Cairn's".into())
                .await
                .unwrap();
        }
    });
    let keys = |url: &str| -> Vec<String> {
        runtime.block_on(async {
            minio
                .store(url)
                .list("")
                .await
                .unwrap()
                .into_iter()
                .map(|o| o.key)
                .collect()
        })
    };
    let before = keys(store);

    // check-restore with the job's settings, then with a wrong secret.
    let doc = (TARGET_JOB_ENV, job.clone());
    let mut with_doc = env.clone();
    with_doc.push(doc.clone());
    let args = [
        "--job-env",
        TARGET_JOB_ENV,
        "--current-store",
        store,
        "--mode",
        "last-state",
    ];
    let run = store_cmd(dir, "check-restore", &args, &with_doc);
    assert_ok(&run);
    assert!(
        run.stdout
            .contains(&format!("target store {store}: reachable")),
        "{}",
        run.stdout
    );
    let wrong = "wrong-secret-0123456789abcdef";
    let wrong_env: Vec<(&str, String)> = with_doc
        .iter()
        .map(|(k, v)| match *k {
            "AWS_SECRET_ACCESS_KEY" => (*k, wrong.to_owned()),
            _ => (*k, v.clone()),
        })
        .collect();
    let run = store_cmd(dir, "check-restore", &args, &wrong_env);
    let line = failure_line(&run);
    eprintln!("the line of a wrong secret: {line}");
    assert!(
        line.starts_with(&format!("cannot read the current state in {store}: ")),
        "{line}"
    );
    assert!(line.contains("credentials"), "{line}");
    for secret in [wrong, SECRET_KEY] {
        assert!(!line.contains(secret), "{line}");
        assert!(!run.stderr.contains(secret) && !run.stdout.contains(secret));
    }

    // Dispose of the older savepoint.
    let run = store_cmd(dir, "dispose", &[&older], &env);
    assert_ok(&run);
    assert!(
        run.stdout.starts_with(&format!("disposed {older:?}: ")),
        "{}",
        run.stdout
    );
    let after: Vec<String> = before
        .iter()
        .filter(|k| !k.starts_with(&dir_key(&older)))
        .cloned()
        .collect();
    assert_eq!(keys(store), after);
    assert_eq!(listed_savepoints(dir, store, &env), vec![newer.clone()]);

    // Purge, keeping the newer one.
    let run = store_cmd(dir, "purge", &[store, "--keep", &newer], &env);
    assert_ok(&run);
    assert!(
        run.stdout
            .contains("  left 1 key that is not Cairn's (e.g. notes.txt)"),
        "{}",
        run.stdout
    );
    let kept: Vec<String> = before
        .iter()
        .filter(|k| k.starts_with(&dir_key(&newer)) || *k == "notes.txt")
        .cloned()
        .collect();
    assert_eq!(keys(store), kept);
    assert_eq!(keys("s3://housekeeping/jobs/other"), ["data.bin"]);
    assert_eq!(listed_savepoints(dir, store, &env), [newer]);
}
