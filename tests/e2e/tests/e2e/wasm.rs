//! Component tasks on Kubernetes with the stock worker image: the C count from a ConfigMap
//! (examples/k8s/wasm-task.yaml) runs to the end of its input, then upgrades, each through a
//! savepoint of the finished job, to the Python and then the JavaScript count read from the
//! checkpoint store (S3, MinIO in the cluster), with more input each time. After each step
//! the state equals a local run of the same component over the same input, key for key.

use std::time::Duration;

use serde_json::{json, Value};

use crate::count::store_url;
use crate::inspect::reference_state;
use crate::jobs::{idle_running, last_savepoint_reason, phase, savepoints};
use crate::repo;
use crate::services::Minio;
use crate::target::{Suite, NS};

const NAME: &str = "wasm-count";
const BUCKET: &str = "modules";

/// The example components (examples/wasm/build.sh builds them, or finds them built).
fn components() -> std::path::PathBuf {
    let out = std::process::Command::new(repo("examples/wasm/build.sh"))
        .output()
        .expect("run examples/wasm/build.sh");
    assert!(
        out.status.success(),
        "examples/wasm/build.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    std::path::PathBuf::from(stdout.lines().last().expect("its output directory").trim())
}

/// The example manifest, made finite and fast, with the suite's store.
fn wasm_job(suite: &Suite, records: u64) -> Value {
    let text = std::fs::read_to_string(repo("examples/k8s/wasm-task.yaml")).unwrap();
    let mut job: Value = serde_yaml::from_str(&text).unwrap();
    job["metadata"]["namespace"] = json!(NS);
    job["spec"]["job"]["input"]["recordsPerPartition"] = json!(records);
    job["spec"]["job"]["input"]["ratePerSecond"] = json!(200);
    job["spec"]["job"]["checkpoint"]["interval"] = json!("2s");
    job["spec"]["job"]["checkpoint"]["store"] = json!(store_url(NAME));
    job["spec"]["upgradeTimeout"] = json!("90s");
    job["spec"]["credentialsSecret"] = json!("s3-credentials");
    let volumes = job["spec"]["podTemplate"]["volumes"]
        .as_array_mut()
        .unwrap();
    volumes[0] = suite.store_volume("store");
    job
}

/// The job as the local reference run sees it: the same input, the component at `local`.
fn reference(
    suite: &Suite,
    job: &Value,
    local: &std::path::Path,
    dir: &str,
) -> std::collections::BTreeMap<String, String> {
    let mut local_job = job.clone();
    local_job["spec"]["job"]["task"]["wasm"]["module"] = json!(local.to_str().unwrap());
    reference_state(&suite.worker, &local_job, &suite.work_dir.join(dir))
}

/// Waits until the job has finished its input, with no operation left.
fn wait_finished(suite: &Suite, what: &str) -> Value {
    suite.wait(NAME, what, Duration::from_secs(240), |j| {
        phase(j) == "Finished" && j["status"]["operation"].is_null()
    })
}

pub fn wasm_flow(suite: &Suite) {
    let built = components();
    let minio = Minio::start(suite);
    minio.create_bucket(BUCKET);
    for file in ["count-python.wasm", "count-js.wasm"] {
        let bytes = std::fs::read(built.join(file)).unwrap();
        minio.put_object(BUCKET, file, &bytes);
    }
    // The credentials the workers read the modules with (labelled for the operator's policy,
    // as docs/helm.md asks of a user).
    let credentials: serde_json::Map<String, Value> = minio
        .env()
        .into_iter()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    suite.apply_ok(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s3-credentials", "namespace": NS,
                     "labels": {"cairn.dev/streamjob-access": "allowed"}},
        "stringData": credentials,
    }));
    // The C component (8 KiB) in a ConfigMap, mounted into the worker pods.
    let c = std::fs::read(built.join("count-c.wasm")).unwrap();
    suite.apply_ok(&json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "count-task", "namespace": NS},
        "binaryData": {"count.wasm": base64(&c)},
    }));

    let mut job = wasm_job(suite, 1000);
    job["spec"]["podTemplate"]["env"] =
        json!([{"name": "CAIRN_S3_ENDPOINT", "value": minio.endpoint}]);
    suite.apply_ok(&job);
    let expected = reference(suite, &job, &built.join("count-c.wasm"), "wasm-c");
    assert!(!expected.is_empty(), "the reference run counted nothing");
    let url = store_url(NAME);
    suite.wait_for_state(
        "wasm: C from a ConfigMap",
        &url,
        &[],
        &expected,
        Duration::from_secs(240),
    );
    wait_finished(suite, "finished (C)");

    // Python, from the store, with more input: an upgrade through a savepoint; the state
    // (8-byte counters) carries over because both components are of state version 1. While it
    // runs, its second worker is SIGKILLed: the kubelet restarts it, and it restores from the
    // last checkpoint. Then JavaScript, the same way.
    for (step, (file, records)) in [("count-python.wasm", 5000), ("count-js.wasm", 5300)]
        .into_iter()
        .enumerate()
    {
        let before = savepoints(&suite.job(NAME));
        let module = format!("s3://{BUCKET}/{file}");
        suite.patch(
            NAME,
            json!({"spec": {"job": {
                "input": {"recordsPerPartition": records},
                "task": {"wasm": {"module": module}},
            }}}),
        );
        job["spec"]["job"]["input"]["recordsPerPartition"] = json!(records);
        if step == 0 {
            suite.wait(NAME, "running Python", Duration::from_secs(240), |j| {
                idle_running(j) && savepoints(j) > before
            });
            let killed = suite.kill(NS, &format!("{NAME}-1"));
            suite.assert_recovered(killed);
        }
        let expected = reference(suite, &job, &built.join(file), &format!("wasm-{step}"));
        suite.wait_for_state(
            &format!("wasm: {file} from the store"),
            &url,
            &[],
            &expected,
            Duration::from_secs(300),
        );
        let j = wait_finished(suite, &format!("finished ({file})"));
        assert_eq!(last_savepoint_reason(&j), "upgrade");
    }
    suite.delete_job(NAME);
}

/// Standard base64 (a ConfigMap's `binaryData`).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
