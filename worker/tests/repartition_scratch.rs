//! Local files of a repartition, with real processes: four `cairn-worker` processes of one
//! job on one machine (one state directory) restore a savepoint with another partition count at
//! the same moment, each in its own scratch, and commit exact state; scratch left by dead
//! processes is removed at the next start while a live process's is left alone; and after the
//! partition count shrinks, no task directory of a partition that no longer exists is left.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use cairn_contract::JobSpec;
use common::launcher::wait_until;
use common::*;

const STORE: &str = "file://./.cairn/checkpoints";
const NAME: &str = "split";

fn job(partitions: u32, parallelism: u32, records: u64, savepoint: Option<&str>) -> String {
    let restore = savepoint
        .map(|s| format!("restore:\n  savepoint: \"{s}\"\n"))
        .unwrap_or_default();
    format!(
        "name: {NAME}\ninput:\n  type: generator\n  partitions: {partitions}\n  keys: 300\n  seed: 17\n  \
         recordsPerPartition: {records}\ntask:\n  name: count\nparallelism: {parallelism}\n\
         checkpoint:\n  interval: 100ms\n{restore}"
    )
}

/// `<state.dir>/<job name>`: where the job's local state lives.
fn state_dir(dir: &Path) -> PathBuf {
    dir.join(".cairn/state").join(NAME)
}

/// Names in a directory.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Runs `cairn-worker <args>` to success; its stdout.
fn run_ok(dir: &Path, args: &[&str]) -> String {
    let out = run_cmd(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the job in `dir` to its end in one process, after writing `spec` as its job.yaml.
fn run_to_end(dir: &Path, spec: &str) {
    std::fs::write(dir.join("job.yaml"), spec).unwrap();
    run_ok(dir, &["run", "job.yaml", "--quiet"]);
}

/// The P processes of one job; killed if the test fails before they exit.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// Starts container `k` of the job in `dir`, logging (at info) to `c<k>.log`.
fn container(dir: &Path, k: u32, addr: &str) -> Child {
    let log = std::fs::File::create(dir.join(format!("c{k}.log"))).unwrap();
    container_command(dir, k, addr)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

fn logs(dir: &Path, parallelism: u32) -> String {
    (0..parallelism)
        .map(|k| {
            let log = std::fs::read_to_string(dir.join(format!("c{k}.log"))).unwrap_or_default();
            format!("--- container {k}:\n{log}")
        })
        .collect()
}

#[test]
fn four_processes_on_one_machine_repartition_9_to_6_and_commit_exact_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let a = job(9, 1, 3_000, None);
    run_to_end(dir, &a);
    let sp = run_ok(dir, &["savepoint", STORE]).trim().to_owned();

    // N 9 -> 6, P = 4: four processes sharing the state directory re-split at once.
    let b = job(6, 4, 6_000, Some(&sp));
    std::fs::write(dir.join("job.yaml"), &b).unwrap();
    let addr = free_local_addr();
    let mut procs = Processes((0..4).map(|k| container(dir, k, &addr)).collect());
    // Bounded so that a stalled job fails the test instead of hanging it; the job takes a few
    // seconds when it works.
    wait_until("all four processes to finish the job", 180, || {
        procs.0.iter_mut().all(|p| p.try_wait().unwrap().is_some())
    });
    for (k, p) in procs.0.iter_mut().enumerate() {
        let status = p.wait().unwrap();
        assert!(
            status.success(),
            "container {k}: {status}\n{}",
            logs(dir, 4)
        );
    }
    let all_logs = logs(dir, 4);
    for k in 0..4 {
        let log = std::fs::read_to_string(dir.join(format!("c{k}.log"))).unwrap();
        assert!(log.contains("state re-split"), "container {k}:\n{all_logs}");
    }

    let mut expected = BTreeMap::new();
    add_generator_records(
        &mut expected,
        &JobSpec::from_yaml_str(&a).unwrap(),
        &BTreeMap::new(),
    );
    let kept: BTreeMap<u32, u64> = (0..6).map(|p| (p, 3_000)).collect();
    add_generator_records(&mut expected, &JobSpec::from_yaml_str(&b).unwrap(), &kept);
    assert_eq!(dumped_counts(dir, STORE), expected, "{all_logs}");

    // Every scratch is gone, and so is the state of the three partitions that no longer exist.
    assert_eq!(
        names(&state_dir(dir)),
        (0..6)
            .map(|t| format!("task-{t:04}"))
            .collect::<BTreeSet<_>>()
    );
}

#[test]
fn a_start_removes_scratch_of_dead_processes_and_leaves_a_live_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let state = state_dir(dir);
    let plant = |relative: &str| {
        let path = state.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
    };
    // Left by a worker of the old layout killed mid-repartition.
    plant("repartition-3/old-0000/restoring-old/000012.sst");
    // Left by a dead container process: its lock file is held by nobody.
    plant("repartition-5-c1/split/old-0000-to-0001.sst");
    plant("repartition-5-c1.lock");
    plant("repartition-6-all.lock");
    // In use by a live process (this test) that holds its lock.
    plant("repartition-9-c2/split/old-0003-to-0000.sst");
    plant("repartition-9-c2.lock");
    let lock = std::fs::File::open(state.join("repartition-9-c2.lock")).unwrap();
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();

    run_to_end(dir, &job(2, 1, 1_000, None));

    assert_eq!(
        names(&state),
        BTreeSet::from([
            "repartition-9-c2".to_owned(),
            "repartition-9-c2.lock".to_owned(),
            "task-0000".to_owned(),
            "task-0001".to_owned(),
        ])
    );
    assert!(state
        .join("repartition-9-c2/split/old-0003-to-0000.sst")
        .is_file());
}

#[test]
fn after_shrinking_8_to_4_no_local_state_of_dropped_partitions_is_left() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let a = job(8, 2, 2_000, None);
    run_to_end(dir, &a);
    let eight: BTreeSet<String> = (0..8).map(|t| format!("task-{t:04}")).collect();
    assert_eq!(names(&state_dir(dir)), eight);
    let sp = run_ok(dir, &["savepoint", STORE]).trim().to_owned();

    let b = job(4, 2, 4_000, None);
    std::fs::write(dir.join("job.yaml"), &b).unwrap();
    run_ok(
        dir,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &sp],
    );

    assert_eq!(
        names(&state_dir(dir)),
        (0..4)
            .map(|t| format!("task-{t:04}"))
            .collect::<BTreeSet<_>>()
    );
    let mut expected = BTreeMap::new();
    add_generator_records(
        &mut expected,
        &JobSpec::from_yaml_str(&a).unwrap(),
        &BTreeMap::new(),
    );
    let kept: BTreeMap<u32, u64> = (0..4).map(|p| (p, 2_000)).collect();
    add_generator_records(&mut expected, &JobSpec::from_yaml_str(&b).unwrap(), &kept);
    assert_eq!(dumped_counts(dir, STORE), expected);
}
