//! Starts server processes (Kafka, MinIO) that die with the test process.
//!
//! Each child gets `PR_SET_PDEATHSIG = SIGKILL`, which the kernel delivers when the *thread*
//! that forked it exits. Test threads come and go, so every child is forked by one launcher
//! thread that lives as long as the process: when the test binary exits or is killed, the
//! launcher goes with it and so do the servers, leaving nothing running.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Request = (Command, mpsc::Sender<io::Result<Child>>);

static LAUNCHER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();

/// Spawns `command` from the launcher thread, with the parent-death signal set.
pub fn spawn(command: Command) -> io::Result<Child> {
    let sender = LAUNCHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("service-launcher".into())
            .spawn(move || {
                // The static keeps a sender alive, so this loop only ends with the process.
                while let Ok((mut command, reply)) = rx.recv() {
                    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of
                    // the parent; this runs in the child between fork and exec.
                    unsafe {
                        command.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the service launcher thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    sender
        .lock()
        .unwrap()
        .send((command, reply))
        .expect("launcher thread alive");
    answer.recv().expect("launcher thread replies")
}

/// A new directory for one server of this test process, under the system temp dir, named
/// `cairn-<kind>-<pid>-<n>` so that [`remove_stale`] can collect those of test processes that
/// were killed.
pub fn service_dir(kind: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    remove_stale(kind);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("cairn-{kind}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes `cairn-<kind>-<pid>` directories whose process is gone.
fn remove_stale(kind: &str) {
    let prefix = format!("cairn-{kind}-");
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        let Some(pid) = pid else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs a service script of `tests/services/` and returns the path it prints.
pub fn service_script(relative: &str) -> std::path::PathBuf {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/services")
        .join(relative);
    let out = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(out.status.success(), "{} failed", script.display());
    let path = String::from_utf8(out.stdout).unwrap();
    let path = path
        .lines()
        .last()
        .expect("the script prints a path")
        .trim();
    std::path::PathBuf::from(path)
}

/// Waits until `probe` returns true, polling every 100 ms, or panics after `seconds`.
pub fn wait_until(what: &str, seconds: u64, mut probe: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !probe() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {seconds}s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
