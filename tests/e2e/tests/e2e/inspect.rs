//! Reading a job's checkpoint store from inside the cluster: `cairn-worker checkpoints` and
//! `cairn-worker state dump` run in a short-lived pod of the worker image that mounts the same
//! store volume as the job, and the suite reads what it printed. So the suite needs no access
//! to the store itself (a PVC, a node's disk, an S3 endpoint only pods reach) on any cluster.
//! Also the local reference runs that give the exact expected state.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::poll;
use crate::target::{Suite, NS};

/// Where every job's store volume is mounted (the examples' path).
pub const STORE_MOUNT: &str = "/var/lib/cairn-store";

impl Suite {
    /// Runs `cairn-worker <args>` (with `env`) in a pod that mounts the store volume read-only,
    /// waits until it ends and returns what it printed: `Ok` when it succeeded, else `Err` with
    /// its output (a store being written can fail a read; callers that poll try again).
    pub fn run_in_pod(&self, args: &[&str], env: &[(&str, String)]) -> Result<String, String> {
        let name = format!("inspect-{}", self.next_inspection());
        let env: Vec<Value> = env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        self.apply_ok(&json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"cairn-e2e/inspect": "true"}},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "containers": [{
                    "name": "inspect", "image": self.worker_image, "args": args, "env": env,
                    "volumeMounts": [{"name": "store", "mountPath": STORE_MOUNT, "readOnly": true}],
                }],
                "volumes": [self.store_volume("store")],
            },
        }));
        let phase = poll(Duration::from_secs(120), Duration::from_millis(300), || {
            let phase = self
                .kubectl(&[
                    "get",
                    "pod",
                    &name,
                    "-n",
                    NS,
                    "-o",
                    "jsonpath={.status.phase}",
                ])
                .stdout;
            match phase.as_str() {
                "Succeeded" | "Failed" => Ok(phase),
                _ => Err(phase),
            }
        })
        .unwrap_or_else(|phase| {
            panic!(
                "inspection pod {name} ({args:?}) did not finish: phase {phase:?}\n{}",
                self.diagnostics()
            )
        });
        let output = self.pod_log(NS, &name, "inspect");
        self.kubectl(&["delete", "pod", &name, "-n", NS, "--wait=false"]);
        if phase == "Succeeded" {
            Ok(output)
        } else {
            Err(output)
        }
    }

    /// Committed checkpoint ids of the store at `store_url`.
    pub fn checkpoints(&self, store_url: &str) -> Vec<u64> {
        let out = self
            .run_in_pod(&["checkpoints", store_url, "--json"], &[])
            .unwrap_or_else(|out| panic!("cairn-worker checkpoints {store_url} failed:\n{out}"));
        json_lines(&out).filter_map(|v| v["id"].as_u64()).collect()
    }

    /// URLs of the savepoints in the store at `store_url`, sorted.
    pub fn savepoints_in_store(&self, store_url: &str) -> Vec<String> {
        let out = self
            .run_in_pod(&["savepoints", store_url, "--json"], &[])
            .unwrap_or_else(|out| panic!("cairn-worker savepoints {store_url} failed:\n{out}"));
        let mut urls: Vec<String> = json_lines(&out)
            .filter_map(|v| v["url"].as_str().map(str::to_owned))
            .collect();
        urls.sort();
        urls
    }

    /// key -> value over every task of the latest checkpoint of `store_url` (`env`: how to reach
    /// an S3 store), or the inspection pod's output when it failed.
    pub fn state(
        &self,
        store_url: &str,
        env: &[(&str, String)],
    ) -> Result<BTreeMap<String, String>, String> {
        let out = self.run_in_pod(&["state", "dump", "--store", store_url], env)?;
        Ok(state_lines(&out))
    }

    /// Waits until the latest checkpoint of the store at `store_url` holds exactly `expected`;
    /// `what` says what that means, for the log and the panic.
    pub fn wait_for_state(
        &self,
        what: &str,
        store_url: &str,
        env: &[(&str, String)],
        expected: &BTreeMap<String, String>,
        timeout: Duration,
    ) {
        poll(timeout, Duration::from_secs(2), || {
            match self.state(store_url, env) {
                Ok(got) if &got == expected => Ok(()),
                Ok(got) => {
                    let differing = expected
                        .iter()
                        .filter(|(k, v)| got.get(*k) != Some(*v))
                        .count();
                    Err(format!(
                        "{} keys vs {} expected, {differing} expected keys missing or different",
                        got.len(),
                        expected.len()
                    ))
                }
                Err(output) => Err(format!("state dump failed:\n{output}")),
            }
        })
        .unwrap_or_else(|seen| panic!("timed out waiting until {what} ({store_url}): {seen}"));
        eprintln!("e2e: {what} ({} keys)", expected.len());
    }
}

/// The JSON objects among a container's output lines (its log may interleave other lines).
fn json_lines(out: &str) -> impl Iterator<Item = Value> + '_ {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
}

/// The `{"key", "value"}` lines of `cairn-worker state dump`.
fn state_lines(out: &str) -> BTreeMap<String, String> {
    json_lines(out)
        .filter(|v| v.get("key").is_some() && v.get("value").is_some())
        .map(|v| {
            let key = v["key"]
                .as_str()
                .map_or_else(|| v["key"].to_string(), str::to_owned);
            (key, v["value"].to_string())
        })
        .collect()
}

/// Runs the same job locally (one process, no cluster) to the end: the expected state.
pub fn reference_state(worker: &Path, job: &Value, dir: &Path) -> BTreeMap<String, String> {
    let mut spec = job["spec"]["job"].clone();
    spec["name"] = json!("count");
    if spec["input"]["type"] == "generator" {
        spec["input"]["ratePerSecond"] = json!(0);
    }
    let store = format!("file://{}", dir.join("store").display());
    spec["checkpoint"]["store"] = json!(store);
    spec["state"] = json!({"dir": dir.join("state").to_str().unwrap()});
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("reference.yaml");
    std::fs::write(&file, serde_yaml::to_string(&spec).unwrap()).unwrap();
    let status = Command::new(worker)
        .args(["run", file.to_str().unwrap(), "--quiet"])
        .status()
        .expect("reference run");
    assert!(status.success(), "reference run failed");
    let out = Command::new(worker)
        .args(["state", "dump", "--store", &store])
        .output()
        .expect("cairn-worker runs");
    assert!(
        out.status.success(),
        "state dump of the reference run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    state_lines(&String::from_utf8_lossy(&out.stdout))
}
