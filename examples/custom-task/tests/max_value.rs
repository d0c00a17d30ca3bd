//! The example worker binary runs its custom task from YAML and its state can be dumped with
//! its own `state dump` (values rendered by the custom task).

use std::collections::BTreeMap;
use std::process::Command;

#[test]
fn custom_task_runs_and_keeps_the_max_per_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("in")).unwrap();
    std::fs::write(
        dir.join("in/partition-0"),
        "a\t5\nb\t50\na\t3\na\t9\nb\t1\nc\t2\nc\tx\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("job.yaml"),
        "name: maxes\ninput: {type: file, partitions: 1, path: ./in, follow: false}\n\
         task: {name: max-value, config: {floor: 3}}\noutput: {type: file, path: ./out}\n",
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_cairn-example-worker");
    let run = Command::new(bin)
        .current_dir(dir)
        .args(["run", "job.yaml", "--quiet"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let dump = Command::new(bin)
        .current_dir(dir)
        .args(["state", "dump", "--store", "file://./.cairn/checkpoints"])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let state: BTreeMap<String, i64> = String::from_utf8(dump.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().to_owned(),
                v["value"].as_i64().unwrap(),
            )
        })
        .collect();
    // c=2 is below the floor; "x" is a bad record.
    assert_eq!(
        state,
        BTreeMap::from([("a".to_owned(), 9), ("b".to_owned(), 50)])
    );
    let out = std::fs::read_to_string(
        dir.join("out/task-0000")
            .read_dir()
            .unwrap()
            .find_map(|e| {
                let p = e.unwrap().path();
                p.extension().is_some_and(|x| x == "out").then_some(p)
            })
            .unwrap(),
    )
    .unwrap();
    assert_eq!(out, "a\t5\nb\t50\na\t9\n");
}
