//! Checkpoints and savepoints on a real S3-compatible server (MinIO built from its Go module):
//! a job killed mid-run restores from S3 after its local state is deleted; a savepoint in S3
//! starts a rescaled job; a server killed and restarted in the middle of uploads, and an object
//! missing from the newest checkpoint, never lead to a corrupt commit or a wrong result.

mod common;

use std::path::Path;
use std::process::{Child, Output};
use std::time::Duration;

use common::jobs::{start_logged, store_job, worker_log as log};
use common::launcher::wait_until;
use common::minio::Minio;
use common::*;
use object_store::ObjectStoreExt;

/// The store job (`common::jobs::store_job`) on 4 partitions.
fn job(store: &str, records: u64, rate: u64, parallelism: u32) -> String {
    store_job(store, 4, parallelism, records, rate)
}

/// A MinIO server with `bucket`, and a directory holding `spec_text` as `job.yaml`.
fn setup(bucket: &str, spec_text: String) -> (Minio, tempfile::TempDir, cairn_contract::JobSpec) {
    let minio = Minio::start();
    minio.create_bucket(bucket);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("job.yaml"), &spec_text).unwrap();
    let spec = cairn_contract::JobSpec::from_yaml_str(&spec_text).unwrap();
    (minio, tmp, spec)
}

fn start(dir: &Path, minio: &Minio, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut all = minio.env();
    all.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    start_logged(dir, args, &all)
}

fn run(dir: &Path, minio: &Minio, args: &[&str]) -> Output {
    run_cmd_with_env(dir, args, &minio.env())
}

fn wait_success(dir: &Path, mut child: Child) {
    let status = child.wait().unwrap();
    assert!(status.success(), "worker failed: {}", log(dir));
}

/// Count per key in the latest checkpoint of `store`, read with `state dump`.
fn dumped(dir: &Path, minio: &Minio, store: &str) -> std::collections::BTreeMap<String, i64> {
    dumped_counts_with_env(dir, store, &minio.env())
}

fn committed(dir: &Path, minio: &Minio, store: &str) -> Vec<u64> {
    committed_ids_with_env(dir, store, &minio.env())
}

#[test]
fn checkpoints_and_savepoints_in_s3_restore_after_local_state_is_deleted() {
    let store = "s3://cairn/jobs/wc";
    let (minio, tmp, spec) = setup("cairn", job(store, 20_000, 8_000, 2));
    let dir = tmp.path();

    let mut child = start(dir, &minio, &[], &[]);
    wait_until("a checkpoint in S3", 30, || {
        !committed(dir, &minio, store).is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL mid-run
    child.wait().unwrap();
    // The machine is gone: nothing local survives but the output directory.
    std::fs::remove_dir_all(dir.join(".cairn")).unwrap();
    wait_success(dir, start(dir, &minio, &[], &[]));

    let expected = expected_counts(&spec);
    assert_eq!(dumped(dir, &minio, store), expected);
    assert_eq!(
        published_lines(&dir.join("out")),
        expected_count_output(&expected)
    );
    assert_commits_complete(&minio.store(store));

    // A savepoint in S3 starts a rescaled copy of the job (P 2 -> 3) in another prefix.
    let savepoint = savepoint_of_latest_with_env(dir, store, &minio.env());
    assert!(
        savepoint.starts_with("s3://cairn/jobs/wc/savepoints/sp-"),
        "{savepoint}"
    );
    let copy = tempfile::tempdir().unwrap();
    let copy_store = "s3://cairn/jobs/wc-rescaled";
    std::fs::write(
        copy.path().join("job.yaml"),
        job(copy_store, 20_000, 8_000, 3),
    )
    .unwrap();
    wait_success(
        copy.path(),
        start(copy.path(), &minio, &["--from-savepoint", &savepoint], &[]),
    );
    assert_eq!(dumped(copy.path(), &minio, copy_store), expected);
    let out = run(dir, &minio, &["savepoints", store]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&savepoint));
}

#[test]
fn a_server_killed_mid_upload_leaves_no_corrupt_commit() {
    let store = "s3://faults/job";
    let (minio, tmp, spec) = setup("faults", job(store, 15_000, 3_000, 2));
    let dir = tmp.path();

    // Slow uploads (a pause before each file) so the server dies while files are in flight.
    let child = start(dir, &minio, &[], &[("CAIRN_FAULT_UPLOAD_DELAY_MS", "40")]);
    wait_until("a checkpoint in S3", 30, || {
        !committed(dir, &minio, store).is_empty()
    });
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(700));
        minio.kill();
        std::thread::sleep(Duration::from_millis(1500));
        minio.resume();
    }
    wait_success(dir, child);
    // The outages hit store requests in flight, which were retried.
    assert!(
        log(dir).contains("checkpoint store request failed; retrying"),
        "{}",
        log(dir)
    );

    let expected = expected_counts(&spec);
    assert_eq!(dumped(dir, &minio, store), expected);
    assert_eq!(
        published_lines(&dir.join("out")),
        expected_count_output(&expected)
    );
    assert_commits_complete(&minio.store(store));
}

#[test]
fn an_object_missing_from_the_newest_checkpoint_falls_back_exactly() {
    let store = "s3://missing/job";
    let (minio, tmp, spec) = setup("missing", job(store, 30_000, 6_000, 1));
    let dir = tmp.path();

    let child = start(dir, &minio, &[], &[]);
    wait_until("three checkpoints in S3", 30, || {
        committed(dir, &minio, store).len() >= 3
    });
    sigterm(&child);
    wait_success(dir, child);
    let ids = committed(dir, &minio, store);
    let newest = *ids.last().unwrap();

    // Delete a file only the newest checkpoint has (its copy of the RocksDB MANIFEST).
    let raw = minio.raw("missing");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let victim = runtime.block_on(async {
        let s = minio.store(store);
        let files = s.list(&format!("checkpoints/{newest:012}/")).await.unwrap();
        let victim = files
            .iter()
            .find(|o| o.key.contains("/MANIFEST-"))
            .expect("a per-checkpoint MANIFEST")
            .key
            .clone();
        raw.delete(&object_store::path::Path::from(format!("job/{victim}")))
            .await
            .unwrap();
        victim
    });

    wait_success(dir, start(dir, &minio, &[], &[]));
    assert!(
        log(dir).contains(&victim),
        "the log names the missing object {victim}: {}",
        log(dir)
    );
    let expected = expected_counts(&spec);
    assert_eq!(dumped(dir, &minio, store), expected);
    assert_eq!(
        published_lines(&dir.join("out")),
        expected_count_output(&expected)
    );
}
