//! Savepoints end to end with exact expected state: take one, restore it with another
//! parallelism and partition count (4 -> 6, not a multiple, -> 3) while records keep flowing,
//! check it is never modified or referenced by later checkpoints, upgrade a task's config, and
//! refuse a corrupt savepoint or incompatible state with a clear error.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use cairn_contract::JobSpec;
use common::*;

const STORE: &str = "file://./.cairn/checkpoints";

fn job(partitions: u32, parallelism: u32, records: u64, savepoint: Option<&str>) -> String {
    let restore = savepoint
        .map(|s| format!("restore:\n  savepoint: \"{s}\"\n"))
        .unwrap_or_default();
    format!(
        "name: resized\ninput:\n  type: generator\n  partitions: {partitions}\n  keys: 300\n  seed: 9\n  \
         recordsPerPartition: {records}\ntask:\n  name: count\nparallelism: {parallelism}\n\
         checkpoint:\n  interval: 100ms\n{restore}"
    )
}

/// Every file under a directory with its content.
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

fn local_path(url: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(url.strip_prefix("file://").unwrap())
}

#[test]
fn rescale_and_repartition_through_savepoints_are_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // A: N=4, P=1, 10k records per partition.
    let a = job(4, 1, 10_000, None);
    std::fs::write(dir.join("job.yaml"), &a).unwrap();
    run_logged_ok(dir, &["run", "job.yaml", "--quiet"]);
    let mut expected = BTreeMap::new();
    add_generator_records(
        &mut expected,
        &JobSpec::from_yaml_str(&a).unwrap(),
        &BTreeMap::new(),
    );
    assert_eq!(dumped_counts(dir, STORE), expected);
    let sp1 = savepoint_of_latest(dir, STORE);
    let sp1_files = snapshot(&local_path(&sp1));
    assert!(sp1_files.contains_key("_SAVEPOINT.json"));

    // B: N=6 (not a multiple of 4), P=3, 20k per partition, from the savepoint. Partitions 0-3
    // keep their offsets (10k), the new partitions 4-5 start at 0.
    let b = job(6, 3, 20_000, Some(&sp1));
    std::fs::write(dir.join("job.yaml"), &b).unwrap();
    let log = run_logged_ok(dir, &["run", "job.yaml"]);
    assert!(log.contains("state re-split"), "{log}");
    let from: BTreeMap<u32, u64> = (0..4).map(|p| (p, 10_000)).collect();
    add_generator_records(&mut expected, &JobSpec::from_yaml_str(&b).unwrap(), &from);
    assert_eq!(dumped_counts(dir, STORE), expected, "after 4 -> 6");
    assert_eq!(
        snapshot(&local_path(&sp1)),
        sp1_files,
        "restoring must not modify the savepoint"
    );

    // The savepoint is not referenced by B's checkpoints: deleting it changes nothing, and
    // rerunning B (its spec still names the savepoint) resumes from B's own checkpoint.
    std::fs::remove_dir_all(local_path(&sp1)).unwrap();
    let log = run_logged_ok(dir, &["run", "job.yaml"]);
    assert!(log.contains("resuming from its own checkpoints"), "{log}");
    assert_eq!(dumped_counts(dir, STORE), expected, "rerun of B");
    assert_store_consistent(&dir.join(".cairn/checkpoints"), 3);

    // C: N=3, P=2, 30k per partition, from a savepoint of B, on the command line.
    let sp2 = savepoint_of_latest(dir, STORE);
    let c = job(3, 2, 30_000, None);
    std::fs::write(dir.join("job.yaml"), &c).unwrap();
    run_logged_ok(
        dir,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &sp2],
    );
    let from: BTreeMap<u32, u64> = (0..3).map(|p| (p, 20_000)).collect();
    add_generator_records(&mut expected, &JobSpec::from_yaml_str(&c).unwrap(), &from);
    assert_eq!(dumped_counts(dir, STORE), expected, "after 6 -> 3");

    // The savepoints list shows what each recorded.
    let list = run_logged_ok(dir, &["savepoints", STORE, "--json"]);
    let lines: Vec<serde_json::Value> = list
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "sp1 was deleted, sp2 remains: {list}");
    assert_eq!(
        (
            lines[0]["partitions"].as_u64(),
            lines[0]["parallelism"].as_u64()
        ),
        (Some(6), Some(3))
    );
}

#[test]
fn a_relocated_savepoint_restores_and_a_damaged_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let a = job(2, 1, 5_000, None);
    std::fs::write(dir.join("job.yaml"), &a).unwrap();
    run_logged_ok(dir, &["run", "job.yaml", "--quiet"]);
    let sp = savepoint_of_latest(dir, STORE);
    let mut expected = BTreeMap::new();
    add_generator_records(
        &mut expected,
        &JobSpec::from_yaml_str(&a).unwrap(),
        &BTreeMap::new(),
    );

    // Move it somewhere else; restore into a fresh store from its new place.
    let moved = dir.join("elsewhere/sp");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(local_path(&sp), &moved).unwrap();
    let other = dir.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("job.yaml"), &a).unwrap();
    let url = format!("file://{}", moved.display());
    run_logged_ok(
        &other,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &url],
    );
    assert_eq!(dumped_counts(&other, STORE), expected);

    // Not a savepoint directory.
    let fresh = dir.join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::write(fresh.join("job.yaml"), &a).unwrap();
    let out = run_cmd(
        &fresh,
        &[
            "run",
            "job.yaml",
            "--quiet",
            "--from-savepoint",
            &format!("file://{}", dir.join("elsewhere").display()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no savepoint at"),
        "{err}"
    );

    // Truncate one of its SSTs: refused, naming the file, and nothing committed.
    let sst = walk(&moved)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "sst"))
        .unwrap();
    let len = std::fs::metadata(&sst).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&sst)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = run_cmd(
        &fresh,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &url],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let name = sst.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        !out.status.success() && err.contains(&name),
        "the error must name {name}: {err}"
    );
    assert!(
        committed_ids(&fresh, STORE).is_empty(),
        "a failed restore must not commit anything"
    );
}

#[test]
fn upgrades_keep_compatible_state_and_refuse_incompatible_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = "name: up\ninput: {type: file, partitions: 1, path: ./in, follow: false}\n";
    std::fs::create_dir(dir.join("in")).unwrap();
    std::fs::write(dir.join("in/partition-0"), "a\t1\na\t2\nb\t1\n").unwrap();
    std::fs::write(
        dir.join("job.yaml"),
        format!("{base}task: {{name: dedupe, config: {{by: key}}}}\n"),
    )
    .unwrap();
    run_logged_ok(dir, &["run", "job.yaml", "--quiet"]);
    let sp = savepoint_of_latest(dir, STORE);

    // Same task, new config: allowed, state kept (a and b stay seen).
    std::fs::write(dir.join("in/partition-0"), "a\t1\na\t2\nb\t1\nc\t5\na\t9\n").unwrap();
    std::fs::write(dir.join("job.yaml"), format!("{base}task: {{name: dedupe, config: {{by: record}}}}\noutput: {{type: file, path: ./out}}\n")).unwrap();
    run_logged_ok(
        dir,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &sp],
    );
    assert_eq!(
        published_lines(&dir.join("out"))
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec![("a".into(), "9".into()), ("c".into(), "5".into())]
    );

    // Another task: refused with the opt-in named...
    std::fs::write(
        dir.join("job.yaml"),
        format!("{base}task: {{name: count}}\n"),
    )
    .unwrap();
    let out = run_cmd(
        dir,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &sp],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("'dedupe'") && err.contains("allowStateDrop"),
        "{err}"
    );
    // ...and with it, state starts empty but offsets are kept (only the two new lines count).
    std::fs::write(
        dir.join("job.yaml"),
        format!("{base}task: {{name: count}}\nrestore: {{allowStateDrop: true}}\n"),
    )
    .unwrap();
    run_logged_ok(
        dir,
        &["run", "job.yaml", "--quiet", "--from-savepoint", &sp],
    );
    let counts = dumped_counts(dir, STORE);
    assert_eq!(
        counts,
        BTreeMap::from([("a".to_owned(), 1), ("c".to_owned(), 1)])
    );
}
