//! A `file` source job end to end: partition files read to their end, a bad record skipped and
//! counted, exact sums in state and in the exactly-once file output; then the files grow and a
//! rerun processes only the new lines.

mod common;

use std::collections::BTreeMap;

use common::*;

const JOB: &str = "\
name: sums
input:
  type: file
  partitions: 2
  path: ./in
  follow: false
task:
  name: sum
output:
  type: file
  path: ./out
checkpoint:
  interval: 50ms
";

#[test]
fn file_input_is_summed_exactly_and_resumes_after_growth() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("job.yaml"), JOB).unwrap();
    std::fs::create_dir(dir.join("in")).unwrap();
    std::fs::write(
        dir.join("in/partition-0"),
        "a\t1\nb\t2\na\t3\nbad\tnot-a-number\n",
    )
    .unwrap();
    std::fs::write(dir.join("in/partition-1"), "c\t10\nc\t-4\n").unwrap();

    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("skipping bad record") && log.contains("offset=12"),
        "bad record must be logged with its offset: {log}"
    );
    let expected: BTreeMap<String, i64> =
        [("a".into(), 4), ("b".into(), 2), ("c".into(), 6)].into();
    assert_eq!(dumped_counts(dir, "file://./.cairn/checkpoints"), expected);

    // Append and rerun: only the new lines are read (offsets are byte positions).
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("in/partition-1"))
        .unwrap();
    f.write_all(b"c\t100\nd\t1\n").unwrap();
    let out = run_cmd(dir, &["run", "job.yaml", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: BTreeMap<String, i64> = [
        ("a".into(), 4),
        ("b".into(), 2),
        ("c".into(), 106),
        ("d".into(), 1),
    ]
    .into();
    assert_eq!(dumped_counts(dir, "file://./.cairn/checkpoints"), expected);

    let published = published_lines(&dir.join("out"));
    let want: BTreeMap<(String, String), u32> = [
        ("a", "1"),
        ("b", "2"),
        ("a", "4"),
        ("c", "10"),
        ("c", "6"),
        ("c", "106"),
        ("d", "1"),
    ]
    .iter()
    .map(|(k, v)| ((k.to_string(), v.to_string()), 1))
    .collect();
    assert_eq!(published, want);
}
