//! StreamJobs through kubectl: read, patch, wait for a status, delete.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::poll;
use crate::target::{Suite, NS};

/// The phase of a StreamJob's status.
pub fn phase(job: &Value) -> &str {
    job["status"]["phase"].as_str().unwrap_or("")
}

/// Running with no operation in progress.
pub fn idle_running(job: &Value) -> bool {
    phase(job) == "Running" && job["status"]["operation"].is_null()
}

/// The status (`True`, `False`, `Unknown`) of condition `type_` of StreamJob `j`.
pub fn condition<'a>(j: &'a Value, type_: &str) -> Option<&'a str> {
    j["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
}

/// How many savepoints the status lists.
pub fn savepoints(job: &Value) -> usize {
    job["status"]["savepoints"].as_array().map_or(0, Vec::len)
}

/// The reason of the newest savepoint in the status.
pub fn last_savepoint_reason(job: &Value) -> &str {
    job["status"]["savepoints"]
        .as_array()
        .and_then(|s| s.last())
        .and_then(|s| s["reason"].as_str())
        .unwrap_or("")
}

impl Suite {
    pub fn job(&self, name: &str) -> Value {
        let text = self.kubectl_ok(&["get", "sj", name, "-n", NS, "-o", "json"]);
        serde_json::from_str(&text).expect("StreamJob JSON")
    }

    /// A JSON merge patch of a StreamJob.
    pub fn patch(&self, name: &str, patch: Value) {
        self.kubectl_ok(&[
            "patch",
            "sj",
            name,
            "-n",
            NS,
            "--type",
            "merge",
            "-p",
            &patch.to_string(),
        ]);
    }

    /// Waits until `check` holds on the StreamJob, printing its status on timeout.
    pub fn wait(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        let polled = poll(timeout, Duration::from_secs(1), || {
            let job = self.job(name);
            if check(&job) {
                Ok(job)
            } else {
                Err(job)
            }
        });
        match polled {
            Ok(job) => {
                eprintln!(
                    "e2e: {name}: {what} after {:.0}s",
                    start.elapsed().as_secs_f64()
                );
                job
            }
            Err(job) => panic!(
                "timed out waiting for {what}; status: {}\n{}",
                serde_json::to_string_pretty(&job["status"]).unwrap(),
                self.diagnostics()
            ),
        }
    }

    /// Names of a job's worker pods.
    pub fn worker_pods(&self, name: &str) -> Vec<String> {
        self.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            // Not the job's one-off housekeeping pods (they carry the job label too).
            &format!("cairn.dev/job={name},app.kubernetes.io/name in (cairn-worker,cairn-worker-standby)"),
            "-o",
            "name",
        ])
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// The UIDs of a job's worker pods (not its standbys or one-off pods), space-separated.
    pub fn worker_pod_uids(&self, name: &str) -> String {
        self.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            &format!("cairn.dev/job={name},app.kubernetes.io/name=cairn-worker"),
            "-o",
            "jsonpath={.items[*].metadata.uid}",
        ])
    }

    /// Deletes a StreamJob and waits until it is gone (its finalizer released).
    pub fn delete_job(&self, name: &str) {
        self.kubectl_ok(&["delete", "sj", name, "-n", NS, "--wait=false"]);
        poll(Duration::from_secs(120), Duration::from_secs(1), || {
            let get = self.kubectl(&["get", "sj", name, "-n", NS]);
            if get.ok {
                Err(get.stdout)
            } else {
                Ok(())
            }
        })
        .unwrap_or_else(|seen| panic!("StreamJob {name} not deleted:\n{seen}"));
    }

    /// The events of the jobs' namespace, as JSON text.
    pub fn events(&self) -> String {
        self.kubectl_ok(&["get", "events", "-n", NS, "-o", "json"])
    }

    /// The messages of the events of reason `reason` in the jobs' namespace (read from their
    /// JSON: the text of [`Self::events`] escapes `>` and quotes).
    pub fn event_messages(&self, reason: &str) -> Vec<String> {
        let events: Value = serde_json::from_str(&self.events()).expect("events JSON");
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["reason"] == reason)
            .filter_map(|e| e["message"].as_str().map(str::to_owned))
            .collect()
    }
}
