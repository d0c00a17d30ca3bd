//! HDFS as the checkpoint store, against a real NameNode and DataNodes (Hadoop's own code,
//! from the official jars; `common::hdfs`): the seed's properties run a job end to end, and
//! the faults of a Hadoop cluster — a NameNode restarted in the middle of uploads, a DataNode
//! killed, a block lost from disk — never lead to a corrupt commit or a wrong result. The
//! storage contract is in storage_contract.rs, the SIGKILL and repartition scenario in
//! remote_stores.rs.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use cairn_contract::JobSpec;
use cairn_worker::storage::{CheckpointStore, StoreEnv};
use common::hdfs::Hdfs;
use common::jobs::{start_logged, store_job, worker_log as log};
use common::launcher::wait_until;
use common::*;

fn job(store: &str, records: u64, rate: u64, parallelism: u32) -> String {
    store_job(store, 4, parallelism, records, rate)
}

fn store_of(hdfs: &Hdfs, url: &str) -> CheckpointStore {
    CheckpointStore::from_url_with_env(url, &hdfs.dir, &StoreEnv::default()).unwrap()
}

fn wait_success(dir: &Path, mut child: Child) {
    let status = child.wait().unwrap();
    assert!(status.success(), "worker failed: {}", log(dir));
}

fn committed(dir: &Path, store: &str) -> Vec<u64> {
    committed_ids_with_env(dir, store, &[])
}

/// A job on `store` in a new directory, started with slowed uploads (a pause before each
/// file, so a fault meets files in flight), once it has committed its first checkpoint.
fn start_slowed(store: &str, records: u64) -> (tempfile::TempDir, JobSpec, Child) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = job(store, records, 3_000, 2);
    std::fs::write(dir.join("job.yaml"), &text).unwrap();
    let child = start_logged(
        dir,
        &[],
        &[("CAIRN_FAULT_UPLOAD_DELAY_MS", "40".to_owned())],
    );
    wait_until("a checkpoint in HDFS", 60, || {
        !committed(dir, store).is_empty()
    });
    (tmp, JobSpec::from_yaml_str(&text).unwrap(), child)
}

/// The checks every fault test ends with: the exact count per key in the newest checkpoint,
/// the exact exactly-once output, and no commit referencing a missing or partial file.
fn assert_exact(dir: &Path, hdfs: &Hdfs, store: &str, spec: &JobSpec) {
    let expected = expected_counts(spec);
    assert_eq!(dumped_counts_with_env(dir, store, &[]), expected);
    assert_eq!(
        published_lines(&dir.join("out")),
        expected_count_output(&expected)
    );
    assert_commits_complete(&store_of(hdfs, store));
}

/// Section 5.1 of the seed, as written there, with `factory=hdfs`: the bare path is on the
/// default file system that `HADOOP_CONF_DIR/core-site.xml` names, as in Hadoop.
#[test]
fn the_seeds_hdfs_properties_run_a_job_end_to_end() {
    let hdfs = Hdfs::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let conf = dir.join("hadoop-conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("core-site.xml"),
        format!(
            "<?xml version=\"1.0\"?>\n<configuration>\n  <property>\n    \
             <name>fs.defaultFS</name>\n    <value>{}</value>\n  </property>\n</configuration>\n",
            hdfs.url
        ),
    )
    .unwrap();
    let properties = "job.name=wordcount
job.container.count=2
task.class=count
cairn.input.type=generator
cairn.input.partitions=4
cairn.input.keys=300
cairn.input.seed=5
cairn.input.recordsPerPartition=5000
# Section 5.1 of the seed, verbatim but for the factory:
task.checkpoint.interval.ms=60000
task.checkpoint.store.factory=hdfs
task.checkpoint.store.hdfs.path=/path/to/checkpoint
task.checkpoint.store.filesystem.path=/path/to/local/checkpoint
";
    std::fs::write(dir.join("job.properties"), properties).unwrap();
    let env = [("HADOOP_CONF_DIR", conf.display().to_string())];
    let out = worker(dir)
        .args(["run", "job.properties", "--quiet"])
        .env("HADOOP_CONF_DIR", &conf)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = JobSpec::from_properties_str(properties).unwrap();
    assert_eq!(spec.checkpoint.store, "hdfs:///path/to/checkpoint");
    assert_eq!(
        dumped_counts_with_env(dir, "hdfs:///path/to/checkpoint", &env),
        expected_counts(&spec)
    );
    // The files are where the seed's path says, on that NameNode; nothing on the local path.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listed = runtime.block_on(async {
        hdfs.client()
            .list_status("/path/to/checkpoint/checkpoints", false)
            .await
            .unwrap()
    });
    assert!(!listed.is_empty());
    assert!(!Path::new("/path/to/local/checkpoint").exists());
}

#[test]
fn a_namenode_restarted_mid_upload_leaves_no_corrupt_commit() {
    let hdfs = Hdfs::start();
    let store = format!("{}/faults/namenode", hdfs.url);
    let (tmp, spec, child) = start_slowed(&store, 15_000);
    let dir = tmp.path();
    let before = committed(dir, &store).len();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(700));
        hdfs.restart_namenode();
    }
    wait_success(dir, child);
    assert!(
        committed(dir, &store).len() > before,
        "checkpoints commit again after the restarts"
    );
    // The restarts hit store requests in flight.
    assert!(
        log(dir).contains("checkpoint store request failed"),
        "{}",
        log(dir)
    );
    assert_exact(dir, &hdfs, &store, &spec);
}

/// One of two DataNodes dies mid-run. The NameNode keeps placing blocks on it until it
/// declares it dead (after 10.5 min with Hadoop's defaults), and `hdfs-native` does not leave a
/// node that refuses the connection out of its next block request, so about half the new files
/// fail: each request is tried again (a new file, placed anew), and a checkpoint whose write
/// still failed is aborted and taken again. The job runs on, commits on the other DataNode and ends exact;
/// once the dead DataNode is back, every committed checkpoint reads whole.
#[test]
fn a_datanode_killed_mid_run_leaves_no_corrupt_commit() {
    let hdfs = Hdfs::start_with(2, 1);
    let store = format!("{}/faults/datanode", hdfs.url);
    let (tmp, spec, child) = start_slowed(&store, 45_000);
    let dir = tmp.path();
    std::thread::sleep(Duration::from_millis(500));
    hdfs.stop_datanode(1);
    // Counted from the NameNode's namespace: reading the records may need the dead node.
    let commits = || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listed = runtime.block_on(store_of(&hdfs, &store).list("checkpoints/"));
        let listed = listed.unwrap();
        listed
            .iter()
            .filter(|o| o.key.ends_with("/_COMMIT.json"))
            .count()
    };
    let after_stop = commits();
    wait_success(dir, child);
    assert!(
        commits() > after_stop,
        "checkpoints commit with one DataNode down"
    );
    assert!(
        log(dir).contains("checkpoint store request failed"),
        "{}",
        log(dir)
    );
    // Files written before the failure have their only replica on the dead node: they read
    // again when it is back.
    hdfs.restart_datanode(1);
    assert_exact(dir, &hdfs, &store, &spec);
}

#[test]
fn a_block_lost_from_disk_falls_back_to_the_previous_checkpoint_exactly() {
    let hdfs = Hdfs::start();
    let store = format!("{}/faults/block", hdfs.url);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = job(&store, 30_000, 6_000, 1);
    std::fs::write(dir.join("job.yaml"), &text).unwrap();

    let child = start_logged(dir, &[], &[]);
    wait_until("three checkpoints in HDFS", 60, || {
        committed(dir, &store).len() >= 3
    });
    sigterm(&child);
    wait_success(dir, child);
    let newest = *committed(dir, &store).last().unwrap();

    // Lose the blocks of a file only the newest checkpoint has (its copy of the MANIFEST).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let victim = runtime.block_on(async {
        let files = store_of(&hdfs, &store)
            .list(&format!("checkpoints/{newest:012}/"))
            .await
            .unwrap();
        files
            .iter()
            .find(|o| o.key.contains("/MANIFEST-"))
            .expect("a per-checkpoint MANIFEST")
            .key
            .clone()
    });
    let replicas = hdfs.delete_blocks(&format!("/faults/block/{victim}"));
    assert!(replicas >= 1, "the file had a replica to lose");
    // The local state goes too, so the restart must read the store.
    std::fs::remove_dir_all(dir.join(".cairn")).unwrap();

    wait_success(dir, start_logged(dir, &[], &[]));
    assert!(
        log(dir).contains(&victim),
        "the log names the file with the lost block {victim}: {}",
        log(dir)
    );
    assert!(log(dir).contains("trying the previous one"), "{}", log(dir));
    let spec = JobSpec::from_yaml_str(&text).unwrap();
    let expected = expected_counts(&spec);
    assert_eq!(dumped_counts_with_env(dir, &store, &[]), expected);
    assert_eq!(
        published_lines(&dir.join("out")),
        expected_count_output(&expected)
    );
}
