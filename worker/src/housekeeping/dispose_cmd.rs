//! `cairn-worker store dispose <savepoint-url>...`: dispose of savepoints, each on its own — a
//! URL that is refused or fails never stops the others.

use std::io::Write;
use std::path::Path;

use cairn_contract::housekeeping::MAX_DISPOSE_PER_POD;
use cairn_contract::StoreUrl;

use super::dispose::{dispose_dir, DisposeError, Disposed};
use super::layout::{check_no_links, SavepointDir};
use super::report::Failure;
use crate::runtime::progress::human_bytes;
use crate::storage::{CheckpointStore, StorageError};

/// What became of one URL.
enum Outcome {
    Disposed(Disposed),
    /// Not disposed of: why, for the person reading the line.
    NotDisposed(String),
}

/// Disposes of each savepoint in `urls`, printing one line per URL to `out`; fails naming the
/// URLs that were refused or failed, after trying all of them.
pub async fn run(urls: &[String], base_dir: &Path, out: &mut dyn Write) -> Result<(), Failure> {
    if urls.len() > MAX_DISPOSE_PER_POD {
        return Err(Failure::new(format!(
            "{} savepoint URLs were given, more than the {MAX_DISPOSE_PER_POD} one pod disposes \
             of; nothing was deleted: give at most {MAX_DISPOSE_PER_POD} per pod",
            urls.len()
        )));
    }
    let mut failed = Vec::new();
    for url in urls {
        let line = match dispose_url(url, base_dir).await {
            Outcome::Disposed(Disposed::Done { files, bytes }) => {
                format!("disposed {url:?}: {files} files, {}", human_bytes(bytes))
            }
            Outcome::Disposed(Disposed::AlreadyGone) => format!("already gone {url:?}"),
            Outcome::NotDisposed(why) => {
                failed.push(format!("{url:?}: {why}"));
                format!("refused {url:?}: {why}")
            }
        };
        let _ = writeln!(out, "{line}");
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Failure::new(format!(
        "{} of {} savepoint(s) not disposed of (the others are): {}",
        failed.len(),
        urls.len(),
        failed.join("; ")
    )))
}

async fn dispose_url(url: &str, base_dir: &Path) -> Outcome {
    let dir = match SavepointDir::parse(url) {
        Ok(dir) => dir,
        Err(why) => return Outcome::NotDisposed(format!("{why}; nothing was deleted")),
    };
    let store = match open(&dir, base_dir) {
        Ok(Some(store)) => store,
        Ok(None) => return Outcome::Disposed(Disposed::AlreadyGone),
        Err(why) => return Outcome::NotDisposed(why),
    };
    if let Some(root) = store.local_root() {
        if let Err(why) = check_no_links(root, dir.prefix.trim_end_matches('/')) {
            return Outcome::NotDisposed(why);
        }
    }
    match dispose_dir(&store, &dir.prefix).await {
        Ok(done) => Outcome::Disposed(done),
        Err(e @ (DisposeError::NotASavepoint(_) | DisposeError::StillWriting(_))) => {
            Outcome::NotDisposed(e.to_string())
        }
        Err(DisposeError::Store(e)) => Outcome::NotDisposed(format!(
            "{e}; a retry finishes the disposal (it is idempotent)"
        )),
    }
}

/// The store holding a savepoint, opened without creating anything; `None` when its `file://`
/// directory does not exist (so neither does the savepoint).
pub(super) fn open(dir: &SavepointDir, base_dir: &Path) -> Result<Option<CheckpointStore>, String> {
    match CheckpointStore::open_existing(&dir.store_url(), base_dir) {
        Ok(store) => Ok(Some(store)),
        Err(StorageError::NoSuchStore { .. }) if matches!(dir.store, StoreUrl::File(_)) => Ok(None),
        Err(e) => Err(format!("cannot open its store {}: {e}", dir.store_url())),
    }
}
