//! Whole jobs on every remote checkpoint store, each against a real server started by the
//! test: Azure Blob on Azurite, GCS on an emulator (fake-gcs-server), HDFS on a NameNode and
//! DataNodes from the official Hadoop jars (S3 on MinIO is in s3_checkpoints.rs). On each, the
//! same scenario: a job SIGKILLed mid-run restores exactly from the store after its local
//! state is deleted, then a savepoint in the store starts a repartitioned (N 4 -> 6) and
//! rescaled (P 2 -> 3) job with more input, whose state is exactly the count of every record.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use cairn_contract::JobSpec;
use cairn_worker::storage::CheckpointStore;
use common::jobs::{start_logged, store_job, worker_log as log};
use common::launcher::wait_until;
use common::*;

fn job(store: &str, partitions: u32, parallelism: u32, records: u64) -> String {
    store_job(store, partitions, parallelism, records, 8_000)
}

fn wait_success(dir: &Path, mut child: Child) {
    let status = child.wait().unwrap();
    assert!(status.success(), "worker failed: {}", log(dir));
}

/// The scenario of this file on the store at `store` (a URL), reached with `env`; `open`
/// opens a URL of that server in this process.
fn exact_across_sigkill_then_savepoint_repartition(
    store: &str,
    env: &[(&str, String)],
    open: impl Fn(&str) -> CheckpointStore,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let a = job(store, 4, 2, 20_000);
    std::fs::write(dir.join("job.yaml"), &a).unwrap();

    let mut child = start_logged(dir, &[], env);
    wait_until("a checkpoint in the store", 60, || {
        !committed_ids_with_env(dir, store, env).is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL mid-run
    child.wait().unwrap();
    // The machine is gone: nothing local survives but the output directory.
    std::fs::remove_dir_all(dir.join(".cairn")).unwrap();
    wait_success(dir, start_logged(dir, &[], env));

    let mut expected = expected_counts(&JobSpec::from_yaml_str(&a).unwrap());
    assert_eq!(dumped_counts_with_env(dir, store, env), expected);
    assert_eq!(
        published_lines(&dir.join("out")),
        expected_count_output(&expected)
    );
    assert_commits_complete(&open(store));

    // A savepoint in the store starts a repartitioned, rescaled job with more input.
    let savepoint = savepoint_of_latest_with_env(dir, store, env);
    assert!(
        savepoint.starts_with(&format!("{store}/savepoints/sp-")),
        "{savepoint}"
    );
    let copy = tempfile::tempdir().unwrap();
    let copy_store = format!("{store}-repartitioned");
    let b = job(&copy_store, 6, 3, 30_000);
    std::fs::write(copy.path().join("job.yaml"), &b).unwrap();
    wait_success(
        copy.path(),
        start_logged(copy.path(), &["--from-savepoint", &savepoint], env),
    );
    let from: BTreeMap<u32, u64> = (0..4).map(|p| (p, 20_000)).collect();
    add_generator_records(&mut expected, &JobSpec::from_yaml_str(&b).unwrap(), &from);
    assert_eq!(
        dumped_counts_with_env(copy.path(), &copy_store, env),
        expected,
        "after 4 -> 6 partitions"
    );
    assert_commits_complete(&open(&copy_store));
    let out = run_cmd_with_env(dir, &["savepoints", store], env);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&savepoint));
}

#[test]
fn azure_blob_jobs_are_exact_across_sigkill_and_repartition() {
    let azurite = common::azurite::Azurite::start();
    azurite.create_container("cairn");
    exact_across_sigkill_then_savepoint_repartition("az://cairn/jobs/wc", &azurite.env(), |url| {
        azurite.store(url)
    });
}

#[test]
fn gcs_jobs_are_exact_across_sigkill_and_repartition() {
    let gcs = common::gcs::FakeGcs::start();
    gcs.create_bucket("cairn");
    exact_across_sigkill_then_savepoint_repartition("gs://cairn/jobs/wc", &gcs.env(), |url| {
        gcs.store(url)
    });
}

#[test]
fn hdfs_jobs_are_exact_across_sigkill_and_repartition() {
    let hdfs = common::hdfs::Hdfs::start();
    let env = cairn_worker::storage::StoreEnv::default();
    exact_across_sigkill_then_savepoint_repartition(
        &format!("{}/cairn/jobs/wc", hdfs.url),
        &[],
        |url| CheckpointStore::from_url_with_env(url, &hdfs.dir, &env).unwrap(),
    );
}
