//! A real HDFS for the tests: a NameNode and `n` DataNodes in one JVM (Hadoop's
//! MiniDFSCluster, from the official jars that `tests/services/hdfs/fetch.sh` fetches with
//! Maven), all on loopback, killed with the test process (see [`super::launcher`]). The
//! NameNode listens on a fixed port, so it keeps its address across restarts.
//!
//! Faults are commands to the launcher (`tests/services/hdfs/MiniHdfs.java`) over its stdin:
//! NameNode restart, stop and start, DataNode stop and restart, and deleting a file's block
//! replicas from the DataNodes' disks. Each blocks until done (a restarted node serves again);
//! async tests can call them from the test body of a multi-threaded runtime, whose worker
//! threads keep running the clients meanwhile.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::launcher;

/// How long a command (or startup) may take: the launcher gives up on a node that does not
/// serve again after 60 s, and answers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// One HDFS cluster.
pub struct Hdfs {
    /// `hdfs://127.0.0.1:<port>`.
    pub url: String,
    /// The cluster's directory: `base/` (NameNode and DataNode storage), `hdfs.log` (the
    /// JVM's stderr; `CAIRN_HDFS_LOG_LEVEL=INFO` makes it verbose, the default is `WARN`).
    pub dir: PathBuf,
    control: Mutex<Control>,
}

struct Control {
    child: Child,
    stdin: ChildStdin,
    /// Lines the launcher prints on stdout (its answers), read by a thread.
    answers: mpsc::Receiver<String>,
}

impl Hdfs {
    /// One DataNode, replication 1.
    pub fn start() -> Hdfs {
        Hdfs::start_with(1, 1)
    }

    /// `datanodes` DataNodes, files replicated `replication` times by default.
    pub fn start_with(datanodes: usize, replication: usize) -> Hdfs {
        Hdfs::start_with_conf(datanodes, replication, &[])
    }

    /// [`Hdfs::start_with`] plus HDFS settings (e.g. `dfs.namenode.fs-limits.min-block-size`
    /// to allow small blocks).
    pub fn start_with_conf(datanodes: usize, replication: usize, conf: &[(&str, &str)]) -> Hdfs {
        let started = Instant::now();
        static CACHE: OnceLock<PathBuf> = OnceLock::new();
        let cache = CACHE.get_or_init(|| launcher::service_script("hdfs/fetch.sh"));
        let dir = launcher::service_dir("hdfs");
        let addr = super::free_local_addr();
        let port = addr.rsplit_once(':').unwrap().1;
        let log = std::fs::File::create(dir.join("hdfs.log")).unwrap();
        // Jetty (the nodes' web UIs) unpacks into the temp dir and leaves it behind a SIGKILL.
        let tmp = dir.join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let mut cmd = Command::new("java");
        // A short-lived test JVM: C1 only, the serial collector and no perf data file start
        // fastest (about 0.5 s of a 4 s start).
        cmd.args(["-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-XX:-UsePerfData")
            .arg(format!("-Djava.io.tmpdir={}", tmp.display()))
            .arg(format!(
                "-Dminihdfs.log.level={}",
                std::env::var("CAIRN_HDFS_LOG_LEVEL").unwrap_or_else(|_| "WARN".to_owned())
            ))
            .arg("-cp")
            .arg(format!("{0}/classes:{0}/libs/*", cache.display()))
            .arg("MiniHdfs")
            .arg(port)
            .arg(dir.join("base"))
            .args([datanodes.to_string(), replication.to_string()])
            .args(conf.iter().map(|(k, v)| format!("{k}={v}")))
            // Anything Hadoop writes relative to its working directory stays in `dir`.
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = launcher::spawn(cmd).expect("start java (MiniHdfs)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let hdfs = Hdfs {
            url: format!("hdfs://{addr}"),
            dir,
            control: Mutex::new(Control {
                child,
                stdin,
                answers,
            }),
        };
        let ready = hdfs.answer(&mut hdfs.control.lock().unwrap(), "startup");
        assert_eq!(
            ready,
            format!("READY {}", hdfs.url),
            "unexpected first line"
        );
        eprintln!(
            "hdfs on {} ({datanodes} DataNodes) ready after {:.1}s",
            hdfs.url,
            started.elapsed().as_secs_f64()
        );
        hdfs
    }

    /// A client of this cluster with default settings. It retries an unreachable NameNode
    /// for minutes (15 attempts, backing off up to 15 s): see [`Hdfs::client_builder`].
    pub fn client(&self) -> hdfs_native::Client {
        self.client_builder().build().unwrap()
    }

    /// A client builder for this cluster, to add settings (e.g. fewer NameNode retries:
    /// `dfs.client.failover.max.attempts`).
    pub fn client_builder(&self) -> hdfs_native::ClientBuilder {
        hdfs_native::ClientBuilder::new().with_url(&self.url)
    }

    /// Restarts the NameNode (same port and metadata) and waits until it serves: out of safe
    /// mode, every running DataNode registered and its blocks reported. Panics after 60 s if
    /// it does not (e.g. safe mode kept by blocks whose only replicas are on stopped
    /// DataNodes).
    pub fn restart_namenode(&self) {
        self.command("restart-namenode");
    }

    /// Stops the NameNode; clients get connection errors until [`Hdfs::start_namenode`].
    pub fn stop_namenode(&self) {
        self.command("stop-namenode");
    }

    /// Starts the stopped NameNode again and waits until it serves (as
    /// [`Hdfs::restart_namenode`]).
    pub fn start_namenode(&self) {
        self.command("start-namenode");
    }

    /// Stops DataNode `i` (numbered from 0 as started). The NameNode still lists it as a
    /// location of its replicas (it is declared dead only after minutes of silence).
    pub fn stop_datanode(&self, i: usize) {
        self.command(&format!("stop-datanode {i}"));
    }

    /// Starts DataNode `i` again (stopping it first if it runs), on the same ports and disk,
    /// and waits until it has registered with the NameNode and reported its blocks (if the
    /// NameNode runs; else [`Hdfs::start_namenode`] waits for it).
    pub fn restart_datanode(&self, i: usize) {
        self.command(&format!("restart-datanode {i}"));
    }

    /// Deletes the block and checksum files of every replica of `path` on the running
    /// DataNodes, behind their back (a disk that lost them); returns how many replicas went.
    pub fn delete_blocks(&self, path: &str) -> usize {
        let deleted = self.command(&format!("delete-blocks {path}"));
        deleted.parse().expect("a replica count")
    }

    /// Sends one command; returns what follows `OK` in the answer, panics on `ERR`.
    fn command(&self, line: &str) -> String {
        let mut control = self.control.lock().unwrap();
        writeln!(control.stdin, "{line}")
            .and_then(|()| control.stdin.flush())
            .unwrap_or_else(|e| panic!("HDFS launcher gone before `{line}`: {e}"));
        let answer = self.answer(&mut control, line);
        match answer.split_once(' ').unwrap_or((&answer, "")) {
            ("OK", rest) => rest.to_owned(),
            _ => panic!("HDFS `{line}` failed: {answer}; see {}", self.log()),
        }
    }

    /// The launcher's next line, within [`ANSWER_TIMEOUT`].
    fn answer(&self, control: &mut Control, what: &str) -> String {
        match control.answers.recv_timeout(ANSWER_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "HDFS `{what}`: no answer within {ANSWER_TIMEOUT:?}; see {}",
                self.log()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                "HDFS `{what}`: the JVM exited ({:?}); see {}",
                control.child.wait(),
                self.log()
            ),
        }
    }

    fn log(&self) -> String {
        self.dir.join("hdfs.log").display().to_string()
    }
}

impl Drop for Hdfs {
    fn drop(&mut self) {
        // SIGKILL: the data goes with the directory, so a graceful shutdown buys nothing.
        // A command that panicked poisoned the lock; the JVM must go all the same.
        let control = self
            .control
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = control.child.kill();
        let _ = control.child.wait();
        // A failing test keeps the log (and data) its messages point to.
        if std::thread::panicking() {
            eprintln!("kept the HDFS directory {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
