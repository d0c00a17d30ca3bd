//! The work directory of one cluster (certificates, kubeconfigs, logs, etcd data), under
//! `${CAIRN_TESTBED_DIR:-$TMPDIR/cairn-testbed}/<name>-<pid>-<n>/`.
//!
//! Each directory holds a `.owner.lock` that its harness keeps `flock`ed. A harness that died
//! without cleaning up (SIGKILL, Ctrl-C) leaves an unlocked directory behind; the next cluster
//! started on the machine deletes it, unless it was kept on purpose (`KEPT` marker, written
//! when `CAIRN_TESTBED_KEEP=1`).

use std::fs::{self, File};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Name of the lock file inside each work directory.
const OWNER_LOCK: &str = ".owner.lock";
/// Marker of a directory kept for debugging: never cleaned up automatically.
pub const KEPT_MARKER: &str = "KEPT";

/// Errors of creating or removing the work directory.
#[derive(Debug, thiserror::Error)]
pub enum WorkDirError {
    /// A directory or file could not be created or locked.
    #[error("cannot create the test-bed work directory {path}: {source}; set CAIRN_TESTBED_DIR to a writable directory")]
    Create {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The directory could not be removed at teardown.
    #[error("cannot remove the test-bed work directory {path}: {source}")]
    Remove {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A locked work directory. Dropping it releases the lock but keeps the files: removal is an
/// explicit [`WorkDir::remove`], because the logs of a failed start must survive it.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    _lock: File,
}

/// `${CAIRN_TESTBED_DIR:-$TMPDIR/cairn-testbed}`.
pub fn base_dir() -> PathBuf {
    std::env::var_os("CAIRN_TESTBED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("cairn-testbed"))
}

impl WorkDir {
    /// Creates and locks a new directory for cluster `name`, after deleting the directories of
    /// dead harnesses.
    pub fn create(name: &str) -> Result<WorkDir, WorkDirError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let base = base_dir();
        let create_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WorkDirError::Create { path, source }
        };
        fs::create_dir_all(&base).map_err(create_err(&base))?;
        remove_stale(&base);
        let path = base.join(format!(
            "{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover with our pid and sequence number is from a dead process with a recycled pid.
        if path.exists() {
            fs::remove_dir_all(&path).map_err(create_err(&path))?;
        }
        fs::create_dir(&path).map_err(create_err(&path))?;
        let lock_path = path.join(OWNER_LOCK);
        let lock = File::create(&lock_path).map_err(create_err(&lock_path))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(WorkDirError::Create {
                path: lock_path,
                source: io::Error::last_os_error(),
            });
        }
        Ok(WorkDir { path, _lock: lock })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks the directory as kept for debugging, so no later run deletes it.
    pub fn keep(&self) -> Result<(), WorkDirError> {
        let marker = self.path.join(KEPT_MARKER);
        fs::write(&marker, "kept because CAIRN_TESTBED_KEEP=1\n").map_err(|source| {
            WorkDirError::Create {
                path: marker,
                source,
            }
        })
    }

    /// Deletes the directory and everything in it. Idempotent.
    pub fn remove(&self) -> Result<(), WorkDirError> {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(WorkDirError::Remove {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// Deletes every directory under `base` whose owner lock exists and is free (its harness is
/// dead) and that is not marked kept. Best effort: a failure only leaves the directory there.
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() || dir.join(KEPT_MARKER).exists() {
            continue;
        }
        // Opened without `create`: a directory that has no lock file yet is still being set up.
        let Ok(lock) = File::open(dir.join(OWNER_LOCK)) else {
            continue;
        };
        // SAFETY: flock on a descriptor we own; it is released when `lock` is dropped.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            if let Err(e) = fs::remove_dir_all(&dir) {
                eprintln!(
                    "cairn-testbed: cannot remove stale work dir {}: {e}",
                    dir.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_directories_are_removed_and_live_or_kept_ones_stay() {
        let base =
            std::env::temp_dir().join(format!("cairn-testbed-workdir-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        // A dead harness: lock file present, nobody holds it.
        let dead = base.join("dead-1-0");
        fs::create_dir_all(&dead).unwrap();
        fs::write(dead.join(OWNER_LOCK), "").unwrap();
        fs::write(dead.join("etcd.log"), "x").unwrap();
        // A kept one and one still being created (no lock file yet).
        let kept = base.join("kept-1-0");
        fs::create_dir_all(&kept).unwrap();
        fs::write(kept.join(OWNER_LOCK), "").unwrap();
        fs::write(kept.join(KEPT_MARKER), "").unwrap();
        let young = base.join("young-1-0");
        fs::create_dir_all(&young).unwrap();
        // A live one: locked by an open WorkDir (same process, separate open file: flock
        // conflicts).
        let live_lock = base.join("live-1-0");
        fs::create_dir_all(&live_lock).unwrap();
        let held = File::create(live_lock.join(OWNER_LOCK)).unwrap();
        assert_eq!(
            unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0
        );

        remove_stale(&base);
        assert!(!dead.exists());
        assert!(kept.exists());
        assert!(young.exists());
        assert!(live_lock.exists());
        drop(held);
        fs::remove_dir_all(&base).unwrap();
    }
}
