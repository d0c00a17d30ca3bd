//! The layout of a checkpoint store, as pure functions. Ids are zero-padded so listings sort.
//!
//! ```text
//! generations/0000000003                    claim of process generation 3 (create-only)
//! checkpoints/000000000042/task-0001.json   task 1's manifest of checkpoint 42
//! checkpoints/000000000042/task-0001/MANIFEST-000012   small per-checkpoint RocksDB files
//! checkpoints/000000000042/_COMMIT.json     the commit record: written last, create-only
//! tasks/task-0001/db-000003-9f2c01ab/000123.sst  immutable SSTs, namespaced per DB instance
//! ```

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

/// Task `task`'s manifest in checkpoint `id`.
pub fn task_manifest_key(id: u64, task: u32) -> String {
    format!("{}task-{task:04}.json", checkpoint_prefix(id))
}

/// A small, mutable-named RocksDB file (CURRENT, MANIFEST-*, OPTIONS-*) of one checkpoint.
pub fn checkpoint_file_key(id: u64, task: u32, name: &str) -> String {
    format!("{}task-{task:04}/{name}", checkpoint_prefix(id))
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
        assert_eq!(checkpoint_id_of(&task_manifest_key(7, 3)), Some(7));
        assert_eq!(
            checkpoint_id_of(&checkpoint_file_key(7, 3, "CURRENT")),
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
}
