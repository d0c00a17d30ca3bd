//! `cairn-worker store purge <store-url> [--keep <savepoint-url>]...`: delete a deleted job's
//! data from its store — checkpoints, SST files, generation claims and savepoints, at the top
//! and in every `epoch-<n>/` — keeping the savepoints asked for and every key that is not
//! Cairn's (see [`super::layout`]).
//!
//! Order, so that a purge interrupted anywhere leaves a store that no restore misreads:
//! savepoints first (each disposed of crash-safely, see [`super::dispose`]), then commit
//! records (a checkpoint without one is never restored), then the other checkpoint files, the
//! SST files, and the generation claims last. A retry deletes what is left.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use cairn_contract::StoreUrl;
use futures::StreamExt;

use super::dispose::{dispose_dir, DisposeError, Disposed};
use super::layout::{classify, Kind, SavepointDir, MAX_URL_LEN};
use super::report::Failure;
use crate::checkpoint::paths::COMMIT_FILE;
use crate::runtime::progress::human_bytes;
use crate::storage::{CheckpointStore, ObjectInfo, StorageError};

/// Deletes in flight at once on an object store (see `dispose`).
const OBJECT_DELETES_IN_FLIGHT: usize = 16;

/// How many keys that are not Cairn's are named in the summary.
const FOREIGN_EXAMPLES: usize = 3;

/// Keys and bytes deleted of one kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    keys: usize,
    bytes: u64,
}

impl Tally {
    fn add(&mut self, keys: usize, bytes: u64) {
        self.keys += keys;
        self.bytes += bytes;
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {}", keys_text(self.keys), human_bytes(self.bytes))
    }
}

/// Purges `store_url`, printing what it did to `out`.
pub async fn run(
    store_url: &str,
    keep: &[String],
    base_dir: &Path,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let location = check_store_url(store_url)?;
    let store = match CheckpointStore::open_existing(store_url, base_dir) {
        Ok(store) => store,
        Err(StorageError::NoSuchStore { path, .. }) => {
            let _ = writeln!(out, "nothing to purge: {} does not exist", path.display());
            return Ok(());
        }
        Err(e) => {
            return Err(Failure::new(format!(
                "cannot open the store {store_url}: {e}"
            )))
        }
    };
    let kept = kept_dirs(&location, &store, keep, base_dir, out)?;
    let listing = store.list("").await.map_err(|e| {
        Failure::new(format!(
            "cannot list the store {store_url}: {e}; nothing was deleted"
        ))
    })?;
    let plan = Plan::of(&listing);
    let mut done = Done::default();
    let result = purge(&store, &plan, &kept, &mut done, out).await;
    done.print(store_url, &plan, out);
    if let Err(e) = result {
        return Err(Failure::new(format!(
            "purging {store_url} stopped after deleting {}: {e}; retry: a purge deletes what \
             is left",
            keys_text(done.deleted_keys())
        )));
    }
    if !done.still_writing.is_empty() {
        return Err(Failure::new(format!(
            "purged {store_url} but {} savepoint(s) may still be being written and were left: \
             {}",
            done.still_writing.len(),
            done.still_writing.join("; ")
        )));
    }
    Ok(())
}

/// Refuses store URLs a purge must not work on.
fn check_store_url(url: &str) -> Result<StoreUrl, Failure> {
    if url.len() > MAX_URL_LEN {
        return Err(Failure::new(format!(
            "the store URL is {} bytes long, more than {MAX_URL_LEN}; nothing was deleted",
            url.len()
        )));
    }
    let location = StoreUrl::parse(url).map_err(|e| {
        Failure::new(format!(
            "{url:?} is not a store URL ({e}); nothing was deleted"
        ))
    })?;
    match &location {
        StoreUrl::Memory(_) => Err(Failure::new(
            "a memory:// store lives inside one process; there is nothing to purge",
        )),
        StoreUrl::File(path) if path.components().any(|c| c == Component::ParentDir) => {
            Err(Failure::new(format!(
                "the store URL {url:?} has a `..` segment; give the store's own path (nothing \
                 was deleted)"
            )))
        }
        StoreUrl::File(path) if !path.components().any(|c| matches!(c, Component::Normal(_))) => {
            Err(Failure::new(format!(
                "{url:?} names the filesystem root or the working directory, not a job's \
                 store; nothing was deleted"
            )))
        }
        _ => Ok(location),
    }
}

/// The savepoint directories (prefixes in the store) to keep. A `--keep` URL that is not a
/// savepoint URL fails the purge before anything is deleted (what it meant to keep cannot be
/// told); one in another store is ignored, and the output says so.
fn kept_dirs(
    location: &StoreUrl,
    store: &CheckpointStore,
    keep: &[String],
    base_dir: &Path,
    out: &mut dyn Write,
) -> Result<BTreeSet<String>, Failure> {
    let mut kept = BTreeSet::new();
    for url in keep {
        let dir = SavepointDir::parse(url)
            .map_err(|why| Failure::new(format!("--keep {url:?}: {why}; nothing was deleted")))?;
        match relative_dir(location, store, &dir, base_dir) {
            Some(prefix) => {
                kept.insert(prefix);
            }
            None => {
                let _ = writeln!(out, "--keep {url:?} is not inside this store: ignored");
            }
        }
    }
    Ok(kept)
}

/// The prefix of savepoint `dir` inside the store `location` (opened as `store`), if it is
/// one of the store's savepoint directories (at the top or in an epoch).
fn relative_dir(
    location: &StoreUrl,
    store: &CheckpointStore,
    dir: &SavepointDir,
    base_dir: &Path,
) -> Option<String> {
    let inner = match (location, &dir.store) {
        (StoreUrl::File(_), StoreUrl::File(path)) => {
            // Compared as the filesystem resolves them (links, `./`), not as written.
            let root = canonical(store.local_root()?);
            let theirs = canonical(&base_dir.join(path));
            let rest = theirs.strip_prefix(&root).ok()?;
            let rest = rest.to_str()?;
            if rest.is_empty() {
                String::new()
            } else {
                format!("{rest}/")
            }
        }
        (
            StoreUrl::Object {
                service,
                bucket,
                prefix,
            },
            StoreUrl::Object {
                service: their_service,
                bucket: their_bucket,
                prefix: theirs,
            },
        ) if service == their_service && bucket == their_bucket => {
            if prefix == theirs {
                String::new()
            } else if prefix.is_empty() {
                format!("{theirs}/")
            } else {
                format!("{}/", theirs.strip_prefix(&format!("{prefix}/"))?)
            }
        }
        _ => return None,
    };
    let prefix = format!("{inner}{}", dir.prefix);
    // Only a savepoint directory of this store's layout counts (not one nested in a foreign
    // directory, which the purge leaves alone anyway).
    match classify(&format!("{prefix}x")) {
        Kind::Savepoint { dir } if dir == prefix => Some(prefix),
        _ => None,
    }
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// The store's keys by kind.
#[derive(Default)]
struct Plan<'a> {
    savepoints: BTreeMap<&'a str, usize>,
    commits: Vec<&'a ObjectInfo>,
    checkpoints: Vec<&'a ObjectInfo>,
    tasks: Vec<&'a ObjectInfo>,
    generations: Vec<&'a ObjectInfo>,
    foreign: Vec<&'a ObjectInfo>,
    /// `epoch-<n>` directories seen.
    epochs: BTreeSet<&'a str>,
}

impl<'a> Plan<'a> {
    fn of(listing: &'a [ObjectInfo]) -> Self {
        let mut plan = Plan::default();
        for obj in listing {
            let kind = classify(&obj.key);
            if kind != Kind::Foreign && obj.key.starts_with("epoch-") {
                plan.epochs
                    .insert(obj.key.split('/').next().unwrap_or_default());
            }
            match kind {
                Kind::Savepoint { dir } => *plan.savepoints.entry(dir).or_default() += 1,
                Kind::Checkpoints if obj.key.ends_with(&format!("/{COMMIT_FILE}")) => {
                    plan.commits.push(obj)
                }
                Kind::Checkpoints => plan.checkpoints.push(obj),
                Kind::Tasks => plan.tasks.push(obj),
                Kind::Generations => plan.generations.push(obj),
                Kind::Foreign => plan.foreign.push(obj),
            }
        }
        plan
    }
}

/// What a purge did so far.
#[derive(Default)]
struct Done {
    checkpoints: Tally,
    tasks: Tally,
    generations: Tally,
    savepoints: Tally,
    disposed: Vec<String>,
    kept: Vec<String>,
    /// Savepoint-like directories that are not Cairn's: their key counts, left.
    not_savepoints: Vec<(String, usize)>,
    still_writing: Vec<String>,
}

impl Done {
    fn deleted_keys(&self) -> usize {
        self.checkpoints.keys + self.tasks.keys + self.generations.keys + self.savepoints.keys
    }

    fn print(&self, url: &str, plan: &Plan, out: &mut dyn Write) {
        let _ = writeln!(out, "purged {url}");
        let _ = writeln!(out, "  checkpoints: {}", self.checkpoints);
        let _ = writeln!(out, "  tasks: {}", self.tasks);
        let _ = writeln!(out, "  generations: {}", self.generations);
        let _ = writeln!(
            out,
            "  savepoints: {} ({} disposed of{}{})",
            self.savepoints,
            self.disposed.len(),
            list_of(&self.disposed),
            match self.kept.len() {
                0 => String::new(),
                n => format!("; {n} kept{}", list_of(&self.kept)),
            }
        );
        if !plan.epochs.is_empty() {
            let epochs: Vec<&str> = plan.epochs.iter().copied().collect();
            let _ = writeln!(out, "  epochs: {}", epochs.join(", "));
        }
        let foreign =
            plan.foreign.len() + self.not_savepoints.iter().map(|(_, n)| n).sum::<usize>();
        if foreign > 0 {
            let examples: Vec<&str> = plan
                .foreign
                .iter()
                .map(|o| o.key.as_str())
                .chain(self.not_savepoints.iter().map(|(dir, _)| dir.as_str()))
                .take(FOREIGN_EXAMPLES)
                .collect();
            let _ = writeln!(
                out,
                "  left {} that {} not Cairn's (e.g. {})",
                keys_text(foreign),
                if foreign == 1 { "is" } else { "are" },
                examples.join(", ")
            );
        }
        for why in &self.still_writing {
            let _ = writeln!(out, "  left {why}");
        }
    }
}

/// "1 key", "2 keys".
fn keys_text(n: usize) -> String {
    if n == 1 {
        "1 key".to_owned()
    } else {
        format!("{n} keys")
    }
}

fn list_of(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(": {}", names.join(", "))
    }
}

async fn purge(
    store: &CheckpointStore,
    plan: &Plan<'_>,
    kept: &BTreeSet<String>,
    done: &mut Done,
    out: &mut dyn Write,
) -> Result<(), String> {
    for (&dir, &keys) in &plan.savepoints {
        if kept.contains(dir) {
            done.kept.push(dir.trim_end_matches('/').to_owned());
            continue;
        }
        match dispose_dir(store, dir).await {
            Ok(Disposed::Done { files, bytes }) => {
                done.savepoints.add(files, bytes);
                done.disposed.push(dir.trim_end_matches('/').to_owned());
            }
            Ok(Disposed::AlreadyGone) => {}
            Err(DisposeError::NotASavepoint(why)) => {
                let _ = writeln!(out, "left {dir}: {why}");
                done.not_savepoints.push((dir.to_owned(), keys));
            }
            Err(DisposeError::StillWriting(why)) => {
                done.still_writing.push(format!("{dir}: {why}"))
            }
            Err(DisposeError::Store(e)) => return Err(e.to_string()),
        }
    }
    // Commit records first: a checkpoint without one is never restored.
    delete_all(store, &plan.commits, &mut done.checkpoints).await?;
    delete_all(store, &plan.checkpoints, &mut done.checkpoints).await?;
    delete_all(store, &plan.tasks, &mut done.tasks).await?;
    delete_all(store, &plan.generations, &mut done.generations).await?;
    // On file://, deletes leave the layout's top-level directories; remove them when empty.
    for epoch in std::iter::once("").chain(plan.epochs.iter().copied()) {
        let parent = if epoch.is_empty() {
            String::new()
        } else {
            format!("{epoch}/")
        };
        for dir in ["checkpoints", "tasks", "generations", "savepoints"] {
            store
                .remove_dir_if_empty(&format!("{parent}{dir}"))
                .await
                .map_err(|e| e.to_string())?;
        }
        if !epoch.is_empty() {
            store
                .remove_dir_if_empty(epoch)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Deletes `objects` (one at a time on `file://`, see `dispose`), counting each in `tally`
/// as it goes.
async fn delete_all(
    store: &CheckpointStore,
    objects: &[&ObjectInfo],
    tally: &mut Tally,
) -> Result<(), String> {
    let in_flight = if store.local_root().is_some() {
        1
    } else {
        OBJECT_DELETES_IN_FLIGHT
    };
    let mut deletes = futures::stream::iter(
        objects
            .iter()
            .map(|o| async move { store.delete(&o.key).await.map(|()| o.size) }),
    )
    .buffer_unordered(in_flight);
    while let Some(deleted) = deletes.next().await {
        tally.add(1, deleted.map_err(|e| e.to_string())?);
    }
    Ok(())
}
