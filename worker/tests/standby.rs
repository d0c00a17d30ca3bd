//! Warm standbys (`standby: true`), as real processes: the coordinator with container 0, and
//! two processes for container 1 in directories of their own (as two pods with their own
//! volumes). The first to join runs container 1, the second stands by and follows every
//! commit. The test SIGKILLs whichever process runs container 1, over and over while
//! checkpoints commit, and restarts it (playing the kubelet): each time the standby takes over
//! and the restarted process stands by in turn. It also kills the standby once. The job ends
//! with exact totals, every output record published exactly once, and a consistent store.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "standby-test-token-0123456789";

fn job(store: &Path, out: &Path) -> String {
    format!(
        "\
name: warm
input:
  type: generator
  partitions: 4
  keys: 300
  seed: 5
  recordsPerPartition: 40000
  ratePerSecond: 4000
task:
  name: count
output:
  type: file
  path: {out}
parallelism: 2
standby: true
checkpoint:
  store: file://{store}
  interval: 200ms
  retained: 2
",
        out = out.display(),
        store = store.display()
    )
}

/// One process for container 1: its directory, its metrics address, and the process.
struct Candidate {
    dir: PathBuf,
    metrics: String,
    child: Option<Child>,
}

impl Candidate {
    fn new(root: &Path, name: &str, job: &str) -> Self {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("job.yaml"), job).unwrap();
        std::fs::write(dir.join("token"), TOKEN).unwrap();
        Candidate {
            dir,
            metrics: free_local_addr(),
            child: None,
        }
    }

    fn start(&mut self, coordinator: &str) {
        let child = container_command(&self.dir, 1, coordinator)
            .args(["--metrics-addr", &self.metrics])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// A metric of this process; `None` while it does not answer.
    fn metric(&self, name: &str) -> Option<f64> {
        let page = http_get(&self.metrics, "/metrics").ok()?;
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// The committed checkpoint it holds as a standby; `None` if it is not a warm standby.
    fn holds(&self) -> Option<f64> {
        self.metric("cairn_standby_checkpoint")
            .filter(|c| *c >= 0.0)
    }
}

/// Waits until `check` holds, for at most `limit`; false if it never did.
fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_warm_standby_takes_over_each_killed_container_and_totals_stay_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (store, out) = (root.join("store"), root.join("out"));
    let job = job(&store, &out);
    std::fs::write(root.join("job.yaml"), &job).unwrap();
    std::fs::write(root.join("token"), TOKEN).unwrap();
    let addr = free_local_addr();
    let mut c0 = container_command(root, 0, &addr)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut a = Candidate::new(root, "a", &job);
    let mut b = Candidate::new(root, "b", &job);
    a.start(&addr);
    std::thread::sleep(Duration::from_millis(300));
    b.start(&addr);
    // Whichever joined second stands by.
    assert!(
        wait_for(Duration::from_secs(30), || a.holds().is_some()
            || b.holds().is_some()),
        "neither process for container 1 became a warm standby"
    );
    let (mut active, mut standby) = if b.holds().is_some() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    let mut takeovers = 0;
    let mut standby_killed = false;
    let started = Instant::now();
    while takeovers < 4 && started.elapsed() < Duration::from_secs(9) {
        // The standby holds a committed checkpoint, whose files it fetched itself (the
        // very first commits may hold no files yet).
        if !wait_for(Duration::from_secs(10), || {
            standby.holds().is_some()
                && standby
                    .metric("cairn_standby_fetched_bytes_total")
                    .is_some_and(|b| b > 0.0)
        }) {
            break; // the input may have run out: the job stopped
        }
        if !standby_killed && takeovers == 1 {
            // A standby that dies costs the job nothing; restarted, it stands by again.
            standby.kill();
            standby_killed = true;
            standby.start(&addr);
            continue;
        }
        std::thread::sleep(Duration::from_millis(150 + 70 * takeovers));
        if !active.running() {
            break; // finished
        }
        active.kill();
        // The standby takes over: it stops being a standby and runs container 1's tasks.
        assert!(
            wait_for(Duration::from_secs(20), || standby
                .metric("cairn_standby_checkpoint")
                .is_some_and(|c| c < 0.0)),
            "the standby did not take over after kill {}",
            takeovers + 1
        );
        takeovers += 1;
        assert!(
            c0.try_wait().unwrap().is_none(),
            "the coordinator must keep running"
        );
        // The killed process comes back, finds container 1 taken, and stands by.
        active.start(&addr);
        std::mem::swap(&mut active, &mut standby);
    }
    assert!(
        takeovers >= 3,
        "only {takeovers} takeovers before the input ran out"
    );

    let mut processes = vec![("container 0", c0)];
    for (name, candidate) in [("a", &mut a), ("b", &mut b)] {
        processes.push((name, candidate.child.take().expect("running")));
    }
    for (name, child) in processes {
        let done = child.wait_with_output().unwrap();
        assert!(
            done.status.success(),
            "{name} failed: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }

    let spec = cairn_contract::JobSpec::from_yaml_str(&job).unwrap();
    let expected = expected_counts(&spec);
    assert_eq!(expected.values().sum::<i64>(), 160_000);
    let store_url = format!("file://{}", store.display());
    assert_eq!(dumped_counts(root, &store_url), expected);
    assert_eq!(published_lines(&out), expected_count_output(&expected));
    assert_store_consistent(&store, 2);
}
