//! Container processes: each container is one local process (with its own process group) that,
//! between fork and exec, joins the pod's network namespace, gets a private mount namespace with
//! the container's volumes bind-mounted on their mount paths and the pod's hosts file on
//! `/etc/hosts`, and a UTS namespace with the pod's hostname.
//!
//! Every process is forked by one long-lived thread: `PR_SET_PDEATHSIG` fires when the *thread*
//! that forked a child exits, so forking from tokio's short-lived blocking threads would kill
//! containers at random. The signal makes sure a SIGKILLed agent leaves no container running.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use tokio::sync::oneshot;

/// One bind mount into a container's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Host path (a volume directory or file).
    pub source: PathBuf,
    /// Path inside the container.
    pub target: PathBuf,
    /// Remounted read-only.
    pub read_only: bool,
}

/// How each run's first line in a container log starts: the agent writes it (`container.rs`)
/// and cuts the runs apart at it (`kubelet_api.rs`, for `kubectl logs` of one run).
pub const BANNER_PREFIX: &str = "=== cairn-node-agent ";

/// Everything needed to start one container process.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Binary to execute.
    pub program: PathBuf,
    /// Arguments after the program.
    pub args: Vec<String>,
    /// The whole environment (nothing is inherited from the agent).
    pub env: Vec<(String, String)>,
    /// Working directory, as seen inside the container.
    pub working_dir: PathBuf,
    /// Standard output and error are appended here.
    pub log_path: PathBuf,
    /// Network namespace file to join.
    pub netns_path: PathBuf,
    /// Hostname set in the container's UTS namespace.
    pub hostname: String,
    /// Bind mounts, applied in order (so a later mount may cover part of an earlier one).
    pub mounts: Vec<BindMount>,
    /// A line written to the log before the process starts (which container, which restart).
    pub banner: String,
}

/// How a container process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal number when killed by a signal (as container runtimes report).
    pub code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
}

/// A container process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Preparing the log file or a mount point failed.
    #[error("{what} {}: {source}", path.display())]
    Prepare {
        /// What was being prepared.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A path or argument contains a NUL byte.
    #[error("{what} contains a NUL byte: {value:?}")]
    Nul {
        /// Which value.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// fork/exec or the namespace setup in the child failed.
    #[error("starting {}: {source} (the container log says which setup step failed)", program.display())]
    Spawn {
        /// Binary.
        program: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The spawner thread is gone (the agent is shutting down).
    #[error("the agent is shutting down")]
    ShuttingDown,
}

type ExitCallback = Box<dyn FnOnce(Exit) + Send>;

struct Request {
    spec: LaunchSpec,
    on_exit: ExitCallback,
    reply: oneshot::Sender<Result<u32, RuntimeError>>,
}

/// Handle on the spawner thread. Cheap to clone.
#[derive(Clone)]
pub struct Spawner {
    tx: mpsc::Sender<Request>,
}

impl Spawner {
    /// Starts the spawner thread; it lives as long as the process.
    pub fn start() -> Spawner {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for request in rx {
                    let result = spawn_now(request.spec, request.on_exit);
                    let _ = request.reply.send(result);
                }
                // All senders gone: park forever rather than exit, since exiting this thread
                // would SIGKILL every container still running.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawning the spawner thread");
        Spawner { tx }
    }

    /// Starts a container process; `on_exit` is called (on another thread) when it ends.
    /// Returns its PID, which is also its process group.
    pub async fn spawn(
        &self,
        spec: LaunchSpec,
        on_exit: impl FnOnce(Exit) + Send + 'static,
    ) -> Result<u32, RuntimeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                spec,
                on_exit: Box::new(on_exit),
                reply,
            })
            .map_err(|_| RuntimeError::ShuttingDown)?;
        rx.await.map_err(|_| RuntimeError::ShuttingDown)?
    }
}

/// Sends `signal` to the container's whole process group (its children too).
pub fn signal_group(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(-pid, signal);
    }
}

fn cstring(what: &'static str, bytes: &[u8]) -> Result<CString, RuntimeError> {
    CString::new(bytes).map_err(|_| RuntimeError::Nul {
        what,
        value: String::from_utf8_lossy(bytes).into_owned(),
    })
}

/// Makes sure a mount point exists on the host: a bind mount needs a target of the same kind
/// (directory or file) as its source.
fn ensure_mount_point(mount: &BindMount) -> Result<(), RuntimeError> {
    let prepare = |source| RuntimeError::Prepare {
        what: "mount point",
        path: mount.target.clone(),
        source,
    };
    if mount.target.exists() {
        return Ok(());
    }
    if mount.source.is_dir() {
        std::fs::create_dir_all(&mount.target).map_err(prepare)
    } else {
        if let Some(parent) = mount.target.parent() {
            std::fs::create_dir_all(parent).map_err(prepare)?;
        }
        File::create(&mount.target).map(|_| ()).map_err(prepare)
    }
}

/// Where a path inside the container lives on the host: under the source of the last mount
/// covering it, else the same path.
pub fn host_path_of(mounts: &[BindMount], inside: &Path) -> PathBuf {
    for mount in mounts.iter().rev() {
        if let Ok(rest) = inside.strip_prefix(&mount.target) {
            return mount.source.join(rest);
        }
    }
    inside.to_path_buf()
}

/// Setup steps in the child, named in the log when one fails.
const STEP_NAMES: [&[u8]; 7] = [
    b"cairn-node-agent: PR_SET_PDEATHSIG failed or the agent died\n",
    b"cairn-node-agent: joining the pod network namespace (setns) failed\n",
    b"cairn-node-agent: creating the mount and UTS namespaces (unshare) failed\n",
    b"cairn-node-agent: making / private (mount --make-rprivate) failed\n",
    b"cairn-node-agent: a volume bind mount failed (see the mount list above)\n",
    b"cairn-node-agent: sethostname failed\n",
    b"cairn-node-agent: chdir to the working directory failed\n",
];

fn spawn_now(spec: LaunchSpec, on_exit: ExitCallback) -> Result<u32, RuntimeError> {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_path)
        .map_err(|source| RuntimeError::Prepare {
            what: "container log",
            path: spec.log_path.clone(),
            source,
        })?;
    let _ = writeln!(log, "{}", spec.banner);
    for mount in &spec.mounts {
        ensure_mount_point(mount)?;
        let _ = writeln!(
            log,
            "cairn-node-agent: mount {} on {}{}",
            mount.source.display(),
            mount.target.display(),
            if mount.read_only { " (read-only)" } else { "" }
        );
    }
    let netns: OwnedFd = File::open(&spec.netns_path)
        .map_err(|source| RuntimeError::Prepare {
            what: "network namespace",
            path: spec.netns_path.clone(),
            source,
        })?
        .into();
    let working_host = host_path_of(&spec.mounts, &spec.working_dir);
    std::fs::create_dir_all(&working_host).map_err(|source| RuntimeError::Prepare {
        what: "working directory",
        path: working_host.clone(),
        source,
    })?;

    // Everything the child needs is allocated here, before fork: only async-signal-safe
    // system calls run between fork and exec.
    let mounts: Vec<(CString, CString, bool)> = spec
        .mounts
        .iter()
        .map(|m| {
            Ok((
                cstring("mount source", m.source.as_os_str().as_bytes())?,
                cstring("mount path", m.target.as_os_str().as_bytes())?,
                m.read_only,
            ))
        })
        .collect::<Result<_, RuntimeError>>()?;
    let root = cstring("root", b"/")?;
    let run_netns = cstring("netns dir", b"/run/netns")?;
    let working_dir = cstring("working directory", spec.working_dir.as_os_str().as_bytes())?;
    let hostname = spec.hostname.clone().into_bytes();
    let netns_fd = netns.as_raw_fd();
    let parent = std::process::id() as libc::pid_t;

    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|source| RuntimeError::Prepare {
            what: "container log",
            path: spec.log_path.clone(),
            source,
        })?)
        .stderr(log)
        .process_group(0);
    // SAFETY: the closure only makes async-signal-safe system calls on memory prepared before
    // fork (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            let fail = |step: usize| {
                let err = std::io::Error::last_os_error();
                let msg = STEP_NAMES[step];
                libc::write(2, msg.as_ptr().cast(), msg.len());
                Err(err)
            };
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != parent
            {
                return fail(0);
            }
            if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                return fail(1);
            }
            if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0 {
                return fail(2);
            }
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return fail(3);
            }
            // The copies of other pods' netns mounts would keep their namespaces (and veths,
            // and so their IPs) alive after the agent deletes them: drop them all here. This
            // process is already in its own network namespace.
            libc::umount2(run_netns.as_ptr(), libc::MNT_DETACH);
            for (source, target, read_only) in &mounts {
                if libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
                {
                    return fail(4);
                }
                if *read_only
                    && libc::mount(
                        std::ptr::null(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ) != 0
                {
                    return fail(4);
                }
            }
            if libc::sethostname(hostname.as_ptr().cast(), hostname.len()) != 0 {
                return fail(5);
            }
            if libc::chdir(working_dir.as_ptr()) != 0 {
                return fail(6);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
        program: spec.program.clone(),
        source,
    })?;
    drop(netns);
    let pid = child.id();
    std::thread::Builder::new()
        .name(format!("wait-{pid}"))
        .spawn(move || {
            let exit = match child.wait() {
                Ok(status) => match (status.code(), status.signal()) {
                    (Some(code), _) => Exit { code, signal: None },
                    (None, Some(sig)) => Exit {
                        code: 128 + sig,
                        signal: Some(sig),
                    },
                    (None, None) => Exit {
                        code: 255,
                        signal: None,
                    },
                },
                Err(e) => {
                    tracing::error!(pid, error = %e, "waiting for a container process failed");
                    Exit {
                        code: 255,
                        signal: None,
                    }
                }
            };
            on_exit(exit);
        })
        .map_err(|source| RuntimeError::Spawn {
            program: spec.program,
            source,
        })?;
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_path_uses_the_innermost_mount() {
        let mounts = vec![
            BindMount {
                source: "/pods/a/volumes/data".into(),
                target: "/data".into(),
                read_only: false,
            },
            BindMount {
                source: "/pods/a/volumes/cache".into(),
                target: "/data/cache".into(),
                read_only: false,
            },
        ];
        assert_eq!(
            host_path_of(&mounts, Path::new("/data/x")),
            PathBuf::from("/pods/a/volumes/data/x")
        );
        assert_eq!(
            host_path_of(&mounts, Path::new("/data/cache/y")),
            PathBuf::from("/pods/a/volumes/cache/y")
        );
        assert_eq!(
            host_path_of(&mounts, Path::new("/opt")),
            PathBuf::from("/opt")
        );
    }
}
