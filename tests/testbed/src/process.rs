//! Child processes of the test bed (etcd, the API server, controllers): each one runs in its own
//! process group, logs to a file, dies with the test binary, and is stopped with SIGTERM then
//! SIGKILL.
//!
//! Why a spawner thread: `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//! not the process. Tests run on short-lived threads, and a cluster shared by the tests of one
//! binary is started by whichever test comes first; forking from that test's thread would kill
//! the control plane as soon as that test returned. Every child is therefore forked by one
//! thread that lives as long as the process, so the signal fires exactly when the test binary
//! dies (including when it is SIGKILLed).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Errors of starting, watching and stopping a child process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The log file of a component could not be created.
    #[error("cannot create log file {path}: {source}")]
    LogFile {
        /// The log file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The program could not be started at all (missing, not executable, ...).
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        /// Component name, e.g. `etcd`.
        name: String,
        /// The binary.
        program: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Waiting on a child failed (should only happen if something else reaped it).
    #[error("cannot wait for {name} (pid {pid}): {source}")]
    Wait {
        /// Component name.
        name: String,
        /// Its pid.
        pid: u32,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

/// The environment variables removed from every child: the control plane talks to itself over
/// loopback and the pod-network bridge, and a proxy from the developer's shell would swallow
/// that traffic.
pub const PROXY_VARIABLES: [&str; 8] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// Removes the [`PROXY_VARIABLES`] from `cmd`'s environment; returns it for chaining.
pub fn without_proxy(cmd: &mut Command) -> &mut Command {
    for var in PROXY_VARIABLES {
        cmd.env_remove(var);
    }
    cmd
}

/// True while process `pid` exists and is not a zombie: a zombie waiting for whoever reaps
/// orphans here has stopped running, which is what tests of "nothing is left" mean.
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "123 (name) S ...": the command name may itself hold spaces and parentheses, so the
    // state is the first field after the last ')'. Z is a zombie, X (dead) is being reaped.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// One running child process, its own process-group leader, with stdout and stderr in a file.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    pid: u32,
    log_path: PathBuf,
    child: Child,
    status: Option<ExitStatus>,
}

impl ManagedProcess {
    /// Starts `program args...` as the leader of a new process group with stdin closed and
    /// stdout and stderr appended to `log_path`. The child gets `PR_SET_PDEATHSIG(SIGKILL)`, so
    /// it cannot outlive the test binary. It inherits this process's environment less the
    /// [`PROXY_VARIABLES`].
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log_path: &Path,
    ) -> Result<ManagedProcess, ProcessError> {
        ManagedProcess::spawn_with_env(name, program, args, &[], log_path)
    }

    /// [`ManagedProcess::spawn`] with `env` set on top of the inherited environment (servers
    /// configured through variables, such as MinIO's root credentials).
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log_path: &Path,
    ) -> Result<ManagedProcess, ProcessError> {
        let log_err = |source| ProcessError::LogFile {
            path: log_path.to_path_buf(),
            source,
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(log_err)?;
        let log2 = log.try_clone().map_err(log_err)?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(log).stderr(log2);
        without_proxy(&mut cmd);
        cmd.envs(env.iter().copied());
        let child = spawn_dying_with_parent(cmd).map_err(|source| ProcessError::Spawn {
            name: name.to_string(),
            program: program.to_path_buf(),
            source,
        })?;
        Ok(ManagedProcess {
            name: name.to_string(),
            pid: child.id(),
            log_path: log_path.to_path_buf(),
            child,
            status: None,
        })
    }

    /// The component name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pid, which is also the process-group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The file holding the child's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The exit status if the child has exited (it is reaped then), `None` while it runs.
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        if self.status.is_none() {
            self.status = self.child.try_wait().map_err(|source| ProcessError::Wait {
                name: self.name.clone(),
                pid: self.pid,
                source,
            })?;
        }
        Ok(self.status)
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// Stops the child: see [`terminate_all`].
    pub fn terminate(&mut self, grace: Duration) -> Result<(), ProcessError> {
        terminate_all(std::slice::from_mut(self), grace)
    }

    /// True while the child has exited but is not reaped yet, without reaping it: the process
    /// group id stays reserved until the reap, so signalling the group is still safe.
    fn exited_unreaped(&self) -> bool {
        // SAFETY: waitid only writes into the zeroed siginfo we own; WNOWAIT leaves the child
        // waitable, so `Child::wait` later still reaps it.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let rc = libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            rc == 0 && info.si_pid() != 0
        }
    }

    fn signal_group(&self, signal: libc::c_int) {
        // SAFETY: plain syscall. The group id is only ours while the leader is not reaped,
        // which callers guarantee by checking `status` first.
        unsafe {
            libc::killpg(self.pid as libc::pid_t, signal);
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if let Err(e) = self.terminate(Duration::from_secs(5)) {
            eprintln!("cairn-testbed: stopping {}: {e}", self.name);
        }
    }
}

/// Stops every process: SIGTERM to each process group at once, up to `grace` for all of them to
/// exit, then SIGKILL to the groups still alive, then reaps them all. Idempotent.
pub fn terminate_all(
    processes: &mut [ManagedProcess],
    grace: Duration,
) -> Result<(), ProcessError> {
    for p in processes.iter().filter(|p| p.status.is_none()) {
        p.signal_group(libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && processes
            .iter()
            .any(|p| p.status.is_none() && !p.exited_unreaped())
    {
        thread::sleep(Duration::from_millis(50));
    }
    let mut first_error = None;
    for p in processes.iter_mut().filter(|p| p.status.is_none()) {
        // Also when the leader exited on SIGTERM: anything it left in its group goes with it.
        p.signal_group(libc::SIGKILL);
        match p.child.wait() {
            Ok(status) => p.status = Some(status),
            Err(source) => {
                first_error.get_or_insert(ProcessError::Wait {
                    name: p.name.clone(),
                    pid: p.pid,
                    source,
                });
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The last `lines` lines of a text file (at most its last 64 KiB), or a note saying why it
/// could not be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from the process-lifetime spawner thread (see the module docs) as the leader of
/// a new process group, with `PR_SET_PDEATHSIG(SIGKILL)`.
pub fn spawn_dying_with_parent(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        // Never joined: the static keeps the sender, so this loop lives until the process ends.
        let spawned = thread::Builder::new()
            .name("cairn-testbed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = spawned {
            eprintln!("cairn-testbed: cannot start the spawner thread: {e}");
        }
        Mutex::new(tx)
    });

    // SAFETY: getpid is async-signal-safe and has no preconditions.
    let parent = unsafe { libc::getpid() };
    cmd.process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
    // functions (prctl, getppid, _exit); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl ran: then no signal will ever come.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    let send_result = sender
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((cmd, reply_tx));
    if send_result.is_err() {
        return Err(io::Error::other("the cairn-testbed spawner thread is gone"));
    }
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the cairn-testbed spawner thread is gone"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test, removed when the guard drops.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "cairn-testbed-process-{}-{test}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn log(&self) -> PathBuf {
            self.0.join("child.log")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn child_outlives_the_spawning_thread_and_logs_to_its_file() {
        let dir = TempDir::new("echo");
        let log = dir.log();
        let mut p = thread::spawn({
            let log = log.clone();
            move || {
                ManagedProcess::spawn(
                    "sh",
                    Path::new("/bin/sh"),
                    &["-c".into(), "echo started; exec sleep 30".into()],
                    &log,
                )
                .unwrap()
            }
        })
        .join()
        .unwrap();
        // The thread that asked for the child is gone; the child must still run.
        thread::sleep(Duration::from_millis(300));
        assert_eq!(p.exit_status().unwrap(), None);
        assert_eq!(p.log_tail(5), "started");
        p.terminate(Duration::from_secs(5)).unwrap();
        let status = p.exit_status().unwrap().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
    }

    #[test]
    fn a_child_ignoring_sigterm_is_killed_with_its_whole_group() {
        let dir = TempDir::new("stubborn");
        let log = dir.log();
        // The shell ignores TERM and leaves a grandchild in its group.
        let mut p = ManagedProcess::spawn(
            "stubborn",
            Path::new("/bin/sh"),
            &["-c".into(), "trap '' TERM; sleep 60 & echo $!; wait".into()],
            &log,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let grandchild: u32 = loop {
            if let Ok(pid) = p.log_tail(1).trim().parse() {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "the shell never printed its child's pid"
            );
            thread::sleep(Duration::from_millis(20));
        };
        let started = Instant::now();
        p.terminate(Duration::from_millis(300)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        let status = p.exit_status().unwrap().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        // The grandchild inherited the ignored TERM; only the SIGKILL to the group stops it. It
        // is gone, or a zombie waiting for whoever reaps orphans here.
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_running(grandchild) {
            assert!(
                Instant::now() < deadline,
                "grandchild {grandchild} survived"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Not a test on its own: the test below runs this test binary again with only this
    /// function (and `CAIRN_TESTBED_PDEATHSIG_HELPER` naming a directory), which starts a child,
    /// prints its pid and waits to be SIGKILLed.
    #[test]
    #[ignore = "child process of children_die_when_the_test_binary_is_sigkilled; run by it with --ignored"]
    fn pdeathsig_helper() {
        let dir = std::env::var_os("CAIRN_TESTBED_PDEATHSIG_HELPER").expect(
            "CAIRN_TESTBED_PDEATHSIG_HELPER is set by children_die_when_the_test_binary_is_sigkilled: run that test instead",
        );
        let log = PathBuf::from(dir).join("orphan.log");
        let p = ManagedProcess::spawn("orphan", Path::new("/bin/sleep"), &["600".into()], &log)
            .unwrap();
        println!("CHILD {}", p.pid());
        std::mem::forget(p); // only the kernel may stop it
        thread::sleep(Duration::from_secs(600));
    }

    #[test]
    fn children_die_when_the_test_binary_is_sigkilled() {
        use std::io::BufRead;
        let dir = TempDir::new("sigkilled");
        let mut helper = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "process::tests::pdeathsig_helper",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CAIRN_TESTBED_PDEATHSIG_HELPER", &dir.0)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = io::BufReader::new(helper.stdout.take().unwrap());
        let pid: u32 = stdout
            .lines()
            .map_while(Result::ok)
            // libtest prints the test name on the same line first.
            .find_map(|l| l.split("CHILD ").nth(1).and_then(|p| p.trim().parse().ok()))
            .expect("the helper never printed its child's pid");
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        assert!(is_running(pid), "child {pid} runs while its parent does");
        helper.kill().unwrap(); // SIGKILL: no destructor, no atexit runs
        helper.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Gone, or a zombie waiting for whoever reaps orphans here: either way not running.
        while is_running(pid) {
            assert!(
                Instant::now() < deadline,
                "child {pid} survived its parent: {}",
                std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn is_running_tells_a_live_process_from_a_zombie_and_a_reaped_one() {
        assert!(is_running(std::process::id()));
        // A process whose name holds ") Z" and spaces: only the state after the last ')' counts.
        let dir = TempDir::new("running");
        let odd = dir.0.join("a) Z b");
        std::os::unix::fs::symlink("/bin/sleep", &odd).unwrap();
        let mut child = Command::new(&odd).arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(is_running(pid));
        child.kill().unwrap();
        // Killed but not reaped yet: a zombie, still listed in /proc, no longer running.
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_running(pid) {
            assert!(Instant::now() < deadline, "{pid} survived SIGKILL");
            thread::sleep(Duration::from_millis(10));
        }
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} is a zombie until reaped"
        );
        child.wait().unwrap();
        assert!(!is_running(pid));
    }

    #[test]
    fn spawn_with_env_sets_the_variables() {
        let dir = TempDir::new("env");
        let log = dir.log();
        let mut p = ManagedProcess::spawn_with_env(
            "env",
            Path::new("/bin/sh"),
            &["-c".into(), "echo \"$CAIRN_A $CAIRN_B\"".into()],
            &[("CAIRN_A", "one"), ("CAIRN_B", "two words")],
            &log,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while p.exit_status().unwrap().is_none() {
            assert!(Instant::now() < deadline, "sh did not exit");
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(p.log_tail(1), "one two words");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error_naming_it() {
        let dir = TempDir::new("missing");
        let log = dir.log();
        let err =
            ManagedProcess::spawn("ghost", Path::new("/nonexistent/ghost"), &[], &log).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot start ghost (/nonexistent/ghost): "),
            "{err}"
        );
    }
}
