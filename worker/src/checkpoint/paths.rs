//! The layout of a checkpoint store, as pure functions. Ids are zero-padded so listings sort.
//!
//! ```text
//! generations/0000000003                    claim of process generation 3 (create-only)
//! checkpoints/000000000042/g0000000003/task-0001.json   task 1's manifest of checkpoint 42,
//!                                                       written by generation 3
//! checkpoints/000000000042/g0000000003/task-0001/MANIFEST-000012   small per-checkpoint files
//! checkpoints/000000000042/_COMMIT.json     the commit record: written last, create-only
//! tasks/task-0001/db-000003-9f2c01ab/000123.sst  immutable SSTs, namespaced per DB instance
//!                                                (whose id starts with its generation)
//! ```
//!
//! Every file a task writes is attributable to the generation of the process that wrote it
//! ([`writer_generation_of`]), so that retention run by an older, fenced process can spare a
//! newer one's files, and two generations that pick the same checkpoint id never write the same
//! key. Stores written before the generation was part of the key (manifests at
//! `checkpoints/<id>/task-0001.json`) are still read: readers follow the keys recorded in the
//! commit record and the manifests, never recompute them.

/// Prefix of every checkpoint.
pub const CHECKPOINTS: &str = "checkpoints/";
/// Prefix of every task's SST files.
pub const TASKS: &str = "tasks/";
/// Prefix of generation claims.
pub const GENERATIONS: &str = "generations/";
/// File name of a commit record.
pub const COMMIT_FILE: &str = "_COMMIT.json";
/// Marker of a committed checkpoint that restore found unusable (a file missing or corrupt):
/// it is no longer listed as committed, and retention collects it.
pub const UNUSABLE_FILE: &str = "_UNUSABLE.json";

/// `checkpoints/<id>/`
pub fn checkpoint_prefix(id: u64) -> String {
    format!("{CHECKPOINTS}{id:012}/")
}

/// The commit record of checkpoint `id`.
pub fn commit_key(id: u64) -> String {
    format!("{}{COMMIT_FILE}", checkpoint_prefix(id))
}

/// The unusable marker of checkpoint `id`.
pub fn unusable_key(id: u64) -> String {
    format!("{}{UNUSABLE_FILE}", checkpoint_prefix(id))
}

/// `checkpoints/<id>/g<generation>/`: what processes of `generation` wrote for checkpoint `id`.
pub fn checkpoint_writer_prefix(id: u64, generation: u64) -> String {
    format!("{}g{generation:010}/", checkpoint_prefix(id))
}

/// Task `task`'s manifest in checkpoint `id`, written by `generation`.
pub fn task_manifest_key(id: u64, generation: u64, task: u32) -> String {
    format!(
        "{}task-{task:04}.json",
        checkpoint_writer_prefix(id, generation)
    )
}

/// A small, mutable-named RocksDB file (CURRENT, MANIFEST-*, OPTIONS-*) of one checkpoint.
pub fn checkpoint_file_key(id: u64, generation: u64, task: u32, name: &str) -> String {
    format!(
        "{}task-{task:04}/{name}",
        checkpoint_writer_prefix(id, generation)
    )
}

/// An immutable SST of DB instance `db_id` of task `task`.
pub fn sst_key(task: u32, db_id: &str, name: &str) -> String {
    format!("{TASKS}task-{task:04}/db-{db_id}/{name}")
}

/// The claim of generation `g`.
pub fn generation_key(g: u64) -> String {
    format!("{GENERATIONS}{g:010}")
}

/// The checkpoint id of any key under `checkpoints/`.
pub fn checkpoint_id_of(key: &str) -> Option<u64> {
    key.strip_prefix(CHECKPOINTS)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// The generation of a key under `generations/`.
pub fn generation_of(key: &str) -> Option<u64> {
    key.strip_prefix(GENERATIONS)?.parse().ok()
}

/// The generation of the process that wrote a task file, from its key: the `g<generation>`
/// directory of a checkpoint (`checkpoints/<id>/g<generation>/…`) or the database instance of
/// an SST (`tasks/task-NNNN/db-<generation>-<salt>/…`, see `checkpoint::start::new_db_id`). `None`
/// for keys that carry none: commit records and markers, and stores written before the
/// generation was recorded.
pub fn writer_generation_of(key: &str) -> Option<u64> {
    let mut segments = key.split('/');
    match (segments.next()?, segments.next()?, segments.next()?) {
        ("checkpoints", _, dir) if segments.next().is_some() => {
            let digits = dir.strip_prefix('g')?;
            all_digits(digits).then(|| digits.parse().ok())?
        }
        ("tasks", _, dir) if segments.next().is_some() => {
            let (digits, _) = dir.strip_prefix("db-")?.split_once('-')?;
            all_digits(digits).then(|| digits.parse().ok())?
        }
        _ => None,
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// True for files RocksDB never rewrites under the same name (uploaded once per DB instance).
pub fn is_immutable_db_file(name: &str) -> bool {
    name.ends_with(".sst") || name.ends_with(".blob")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_and_parse_back() {
        assert_eq!(commit_key(42), "checkpoints/000000000042/_COMMIT.json");
        assert!(commit_key(9) < commit_key(10));
        assert_eq!(
            task_manifest_key(7, 2, 3),
            "checkpoints/000000000007/g0000000002/task-0003.json"
        );
        assert_eq!(checkpoint_id_of(&task_manifest_key(7, 2, 3)), Some(7));
        assert_eq!(
            checkpoint_file_key(7, 2, 3, "CURRENT"),
            "checkpoints/000000000007/g0000000002/task-0003/CURRENT"
        );
        assert_eq!(
            checkpoint_id_of(&checkpoint_file_key(7, 2, 3, "CURRENT")),
            Some(7)
        );
        assert_eq!(checkpoint_id_of("tasks/x"), None);
        assert_eq!(generation_of(&generation_key(12)), Some(12));
        assert_eq!(
            sst_key(1, "a-b", "000001.sst"),
            "tasks/task-0001/db-a-b/000001.sst"
        );
        assert!(is_immutable_db_file("000001.sst") && !is_immutable_db_file("MANIFEST-000004"));
    }

    #[test]
    fn every_file_a_task_writes_names_its_generation() {
        assert_eq!(writer_generation_of(&task_manifest_key(7, 12, 3)), Some(12));
        assert_eq!(
            writer_generation_of(&checkpoint_file_key(7, 12, 3, "MANIFEST-000005")),
            Some(12)
        );
        assert_eq!(
            writer_generation_of(&sst_key(3, "000012-9f2c01ab", "000123.sst")),
            Some(12)
        );
        assert_eq!(
            writer_generation_of(&sst_key(3, "1234567-9f2c01ab", "000123.sst")),
            Some(1_234_567)
        );
        for none in [
            commit_key(7).as_str(),
            unusable_key(7).as_str(),
            "checkpoints/000000000007/task-0003.json",
            "checkpoints/000000000007/task-0003/CURRENT",
            "checkpoints/000000000007/g/task-0003.json",
            "checkpoints/000000000007/g12x/task-0003.json",
            "tasks/task-0003/db-savepoint-sp-1/000001.sst",
            "tasks/task-0003/db-000012-x",
            "generations/0000000012",
            "savepoints/sp-000000000007/task-0000/000001.sst",
        ] {
            assert_eq!(writer_generation_of(none), None, "{none}");
        }
    }
}
