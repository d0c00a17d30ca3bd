//! The command line as a user meets it: bad specs rejected with the field named, the Samza
//! properties form, the metrics endpoint, and inspection of an empty store.

mod common;

use std::time::Duration;

use common::*;

fn write(dir: &std::path::Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn stderr_of(dir: &std::path::Path, args: &[&str]) -> String {
    let out = run_cmd(dir, args);
    assert!(!out.status.success(), "expected failure for {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn invalid_specs_are_rejected_naming_the_field_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = "name: j\ninput: {type: generator, partitions: 4}\ntask: {name: count}\n";

    write(dir, "p.yaml", &format!("{base}parallelism: 6\n"));
    let err = stderr_of(dir, &["run", "p.yaml"]);
    assert!(
        err.contains("parallelism") && err.contains("input.partitions"),
        "{err}"
    );

    write(dir, "typo.yaml", &format!("{base}paralelism: 2\n"));
    let err = stderr_of(dir, &["run", "typo.yaml"]);
    assert!(err.contains("paralelism"), "{err}");

    write(
        dir,
        "task.yaml",
        "name: j\ninput: {type: generator, partitions: 1}\ntask: {name: cuont}\n",
    );
    let err = stderr_of(dir, &["run", "task.yaml"]);
    assert!(
        err.contains("task.name") && err.contains("cuont") && err.contains("count"),
        "{err}"
    );

    write(dir, "cfg.yaml", "name: j\ninput: {type: generator, partitions: 1}\ntask: {name: dedupe, config: {by: color}}\n");
    let err = stderr_of(dir, &["run", "cfg.yaml"]);
    assert!(err.contains("task.config.by"), "{err}");

    write(
        dir,
        "store.yaml",
        &format!("{base}checkpoint: {{store: \"ftp://x/y\"}}\n"),
    );
    let err = stderr_of(dir, &["run", "store.yaml"]);
    assert!(err.contains("checkpoint.store"), "{err}");

    let err = stderr_of(dir, &["run", "missing.yaml"]);
    assert!(err.contains("missing.yaml"), "{err}");
    // Nothing was created by the rejected runs.
    assert!(!dir.join(".cairn").exists());
}

#[test]
fn samza_properties_describe_the_same_job_as_yaml() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let yaml = run_cmd(&root, &["validate", "examples/wordcount.yaml"]);
    let props = run_cmd(&root, &["validate", "examples/wordcount.properties"]);
    assert!(
        yaml.status.success() && props.status.success(),
        "{}",
        String::from_utf8_lossy(&props.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&yaml.stdout),
        String::from_utf8_lossy(&props.stdout)
    );
}

#[test]
fn metrics_endpoint_reports_progress_and_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "job.yaml",
        "name: m\ninput: {type: generator, partitions: 2, keys: 100, ratePerSecond: 2000}\ntask: {name: count}\ncheckpoint: {interval: 100ms}\n",
    );
    let addr = free_local_addr();
    let mut child = worker(dir)
        .args(["run", "job.yaml", "--quiet", "--metrics-addr", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut body = String::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        body = http_get(&addr, "/metrics").unwrap_or_default();
        if body.contains("cairn_checkpoint_last_committed_id 2")
            || body.contains("cairn_checkpoint_last_committed_id 3")
        {
            break;
        }
    }
    let health = http_get(&addr, "/healthz").unwrap_or_default();
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    assert!(
        body.contains("cairn_records_in_total{task=\"0\"}"),
        "{body}"
    );
    assert!(
        body.contains("cairn_checkpoint_sync_seconds_count"),
        "{body}"
    );
    let committed: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("cairn_checkpoint_last_committed_id "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(committed >= 2.0, "checkpoints should be committing: {body}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
}

#[test]
fn inspecting_an_empty_store_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    // A store that does not exist is an error (reading creates nothing: a typo is not an
    // empty store); one that exists but holds no commit says so.
    let missing = stderr_of(tmp.path(), &["checkpoints", "file://./nothing-here"]);
    assert!(missing.contains("no such checkpoint store"), "{missing}");
    assert!(!tmp.path().join("nothing-here").exists());
    std::fs::create_dir(tmp.path().join("nothing-here")).unwrap();
    let out = run_cmd(tmp.path(), &["checkpoints", "file://./nothing-here"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no committed checkpoint"));
    let err = stderr_of(
        tmp.path(),
        &["state", "dump", "--store", "file://./nothing-here"],
    );
    assert!(err.contains("has no committed checkpoint"), "{err}");
}

#[test]
fn sigusr1_takes_a_checkpoint_on_demand() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "job.yaml",
        "name: u\ninput: {type: generator, partitions: 2, keys: 10, ratePerSecond: 1000}\ntask: {name: count}\ncheckpoint: {interval: 1h}\n",
    );
    let child = spawn_run(dir, &[]);
    std::thread::sleep(Duration::from_millis(400));
    let store = "file://./.cairn/checkpoints";
    for expected in 1..=2 {
        let status = std::process::Command::new("kill")
            .args(["-USR1", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut ids = Vec::new();
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(50));
            ids = committed_ids(dir, store);
            if ids.len() >= expected {
                break;
            }
        }
        assert_eq!(
            ids.len(),
            expected,
            "on-demand checkpoint {expected} not committed: {ids:?}"
        );
    }
    sigterm(&child);
    assert!(child.wait_with_output().unwrap().status.success());
    assert_eq!(
        committed_ids(dir, store).len(),
        3,
        "two on-demand checkpoints and the final one"
    );
}
