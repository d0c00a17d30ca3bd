//! The JSON documents of a checkpoint: one manifest per task and the job's commit record.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::CheckpointError;
use crate::storage::{validate_key, FileMeta};

/// Format version written by this worker; readers refuse newer ones.
pub const FORMAT_VERSION: u32 = 1;

/// Longest accepted file name, in bytes (the usual `NAME_MAX` of Linux filesystems).
pub const MAX_FILE_NAME_LEN: usize = 255;

/// One file of a task's database in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestFile {
    /// File name inside the RocksDB directory.
    pub name: String,
    /// Where it is in the store.
    pub key: String,
    /// Size and checksum, verified on restore.
    #[serde(flatten)]
    pub meta: FileMeta,
}

/// Why a manifest's file list is refused. Restore joins each name to the directory it builds,
/// so a name is the one thing that decides where a restore writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileListError {
    /// A name is not a plain file name.
    #[error("files[{index}]: name {name:?} is not a plain file name ({reason}); a checkpoint only names files inside the database directory, such as \"000123.sst\" or \"MANIFEST-000005\"")]
    BadName {
        /// Position in the list.
        index: usize,
        /// The name, as found.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key is not a valid store key.
    #[error("files[{index}] ({name:?}): {reason}")]
    BadKey {
        /// Position in the list.
        index: usize,
        /// The file's name.
        name: String,
        /// The store's reason.
        reason: String,
    },
    /// The key's last segment is not the name: the entry would restore one file under
    /// another's name.
    #[error("files[{index}]: name {name:?} does not match its key {key:?} (the key must end in \"/{name}\")")]
    KeyMismatch {
        /// Position in the list.
        index: usize,
        /// The name.
        name: String,
        /// The key.
        key: String,
    },
    /// Two entries have the same name.
    #[error("files[{index}]: name {name:?} is listed twice (also files[{first}]); each file of a database appears once")]
    Duplicate {
        /// Position of the second entry.
        index: usize,
        /// Position of the first.
        first: usize,
        /// The name.
        name: String,
    },
}

/// Checks that `name` is a plain file name: not empty, not `.` or `..`, no `/`, `\\` or NUL,
/// at most [`MAX_FILE_NAME_LEN`] bytes.
fn check_name(name: &str) -> Result<(), &'static str> {
    match name {
        "" => Err("it is empty"),
        "." | ".." => Err("it names a directory"),
        _ if name.contains('/') => Err("it contains `/`"),
        _ if name.contains('\\') => Err("it contains a backslash"),
        _ if name.contains('\0') => Err("it contains a NUL byte"),
        _ if name.len() > MAX_FILE_NAME_LEN => Err("it is longer than 255 bytes"),
        _ => Ok(()),
    }
}

/// The files of one task's database in a manifest, checked when built or parsed: every name is
/// a plain file name, every key a valid store key ending in `/<name>` (or equal to it), and no
/// name appears twice. A list that breaks these rules cannot exist, so every restore — `run`,
/// `--from-savepoint`, `restore.savepoint`, `state dump` — writes only inside the directory it
/// builds, whatever a store or savepoint holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestFiles(Vec<ManifestFile>);

impl ManifestFiles {
    /// Checks `files` (see the type).
    pub fn new(files: Vec<ManifestFile>) -> Result<Self, FileListError> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (index, f) in files.iter().enumerate() {
            check_name(&f.name).map_err(|reason| FileListError::BadName {
                index,
                name: f.name.clone(),
                reason,
            })?;
            validate_key(&f.key).map_err(|e| FileListError::BadKey {
                index,
                name: f.name.clone(),
                reason: e.to_string(),
            })?;
            if crate::storage::key_file_name(&f.key) != f.name {
                return Err(FileListError::KeyMismatch {
                    index,
                    name: f.name.clone(),
                    key: f.key.clone(),
                });
            }
            if let Some(first) = seen.insert(&f.name, index) {
                return Err(FileListError::Duplicate {
                    index,
                    first,
                    name: f.name.clone(),
                });
            }
        }
        Ok(ManifestFiles(files))
    }

    /// The same files with `prefix` put before every key (a savepoint's directory inside its
    /// store). Names, and so uniqueness and the name/key match, are unchanged; the store checks
    /// the longer keys when they are used.
    pub fn with_key_prefix(&self, prefix: &str) -> Self {
        ManifestFiles(
            self.0
                .iter()
                .map(|f| ManifestFile {
                    key: format!("{prefix}{}", f.key),
                    ..f.clone()
                })
                .collect(),
        )
    }
}

impl std::ops::Deref for ManifestFiles {
    type Target = [ManifestFile];

    fn deref(&self) -> &[ManifestFile] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a ManifestFiles {
    type Item = &'a ManifestFile;
    type IntoIter = std::slice::Iter<'a, ManifestFile>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Serialize for ManifestFiles {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ManifestFiles {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let files = Vec::<ManifestFile>::deserialize(deserializer)?;
        ManifestFiles::new(files).map_err(serde::de::Error::custom)
    }
}

/// What one task contributed to a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskManifest {
    /// [`FORMAT_VERSION`] at writing.
    pub format: u32,
    /// Checkpoint id.
    pub checkpoint: u64,
    /// Generation of the process that wrote it.
    pub generation: u64,
    /// Task id (= input partition).
    pub task: u32,
    /// The RocksDB instance the files come from.
    pub db_id: String,
    /// Input partition -> next offset to read.
    pub offsets: BTreeMap<u32, u64>,
    /// Input partition -> watermark at the checkpoint (jobs with event time, once known;
    /// absent from manifests written before event time existed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub watermarks: BTreeMap<u32, u64>,
    /// Every file of the database at the checkpoint.
    pub files: ManifestFiles,
    /// Bytes uploaded for this checkpoint (new SSTs + small files).
    pub uploaded_bytes: u64,
    /// Bytes of SSTs that were new since the task's previous checkpoint.
    pub new_sst_bytes: u64,
    /// When the manifest was written.
    pub created_at_ms: u64,
}

impl TaskManifest {
    /// Total bytes of the task's state files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.meta.size).sum()
    }
}

/// A task's entry in the commit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommittedTask {
    /// Task id.
    pub task: u32,
    /// Container (worker) that ran it.
    pub container: u32,
    /// Key of its manifest.
    pub manifest: String,
    /// Input partition -> next offset.
    pub offsets: BTreeMap<u32, u64>,
    /// Input partition -> watermark.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub watermarks: BTreeMap<u32, u64>,
}

/// The commit record: its presence makes checkpoint `checkpoint` usable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitRecord {
    /// [`FORMAT_VERSION`] at writing.
    pub format: u32,
    /// Checkpoint id.
    pub checkpoint: u64,
    /// Generation of the committing process.
    pub generation: u64,
    /// When the coordinator triggered it.
    pub triggered_at_ms: u64,
    /// When it was committed.
    pub committed_at_ms: u64,
    /// The job spec in force.
    pub spec: cairn_contract::JobSpec,
    /// Its hash.
    pub spec_hash: String,
    /// N.
    pub partitions: u32,
    /// P.
    pub parallelism: u32,
    /// One entry per task.
    pub tasks: Vec<CommittedTask>,
    /// Total bytes of state referenced.
    pub total_bytes: u64,
    /// Bytes uploaded by this checkpoint.
    pub uploaded_bytes: u64,
    /// Bytes of new SSTs since the previous checkpoint.
    pub new_sst_bytes: u64,
    /// URL of the savepoint this lineage of checkpoints was restored from, if any: a job whose
    /// spec names that savepoint resumes from its own checkpoints instead of the savepoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The task's state version at the commit (`StreamTask::state_version`), so that a check
    /// before an upgrade (`cairn-worker store check-restore`) and an offline savepoint know it.
    /// Absent from records written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_version: Option<u32>,
}

/// Parses a manifest-like document, checking its format version.
pub fn parse<T: serde::de::DeserializeOwned>(
    key: &str,
    bytes: &[u8],
) -> Result<T, CheckpointError> {
    #[derive(Deserialize)]
    struct Version {
        format: u32,
    }
    let version: Version =
        serde_json::from_slice(bytes).map_err(|source| CheckpointError::BadManifest {
            key: key.to_owned(),
            source,
        })?;
    if version.format > FORMAT_VERSION {
        return Err(CheckpointError::FormatTooNew {
            key: key.to_owned(),
            found: version.format,
            supported: FORMAT_VERSION,
        });
    }
    serde_json::from_slice(bytes).map_err(|source| CheckpointError::BadManifest {
        key: key.to_owned(),
        source,
    })
}

/// Serialises a manifest-like document.
pub fn to_bytes<T: Serialize>(doc: &T) -> bytes::Bytes {
    serde_json::to_vec_pretty(doc)
        .expect("manifests always serialise")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, key: &str) -> serde_json::Value {
        serde_json::json!({ "name": name, "key": key, "size": 3, "crc32c": 7 })
    }

    fn task_manifest(files: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "format": FORMAT_VERSION, "checkpoint": 4, "generation": 2, "task": 0,
            "dbId": "000002-0a0b0c0d", "offsets": { "0": 10 }, "files": files,
            "uploadedBytes": 0, "newSstBytes": 0, "createdAtMs": 0,
        }))
        .unwrap()
    }

    const KEY: &str = "checkpoints/000000000004/g0000000002/task-0000.json";

    #[test]
    fn well_formed_file_lists_parse_and_round_trip() {
        let bytes = task_manifest(vec![
            file("000012.sst", "tasks/task-0000/db-000001-aa/000012.sst"),
            file(
                "MANIFEST-000005",
                "checkpoints/000000000004/g0000000002/task-0000/MANIFEST-000005",
            ),
            // Savepoint keys are relative to the savepoint directory.
            file("CURRENT", "task-0000/CURRENT"),
        ]);
        let m: TaskManifest = parse(KEY, &bytes).unwrap();
        assert_eq!(
            m.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["000012.sst", "MANIFEST-000005", "CURRENT"]
        );
        let again: TaskManifest = parse(KEY, &to_bytes(&m)).unwrap();
        assert_eq!(again, m);
        let prefixed = m.files.with_key_prefix("savepoints/sp-000000000004/");
        assert_eq!(
            prefixed[2].key,
            "savepoints/sp-000000000004/task-0000/CURRENT"
        );
        assert_eq!(prefixed[2].name, "CURRENT");
    }

    /// Every way a crafted name could point a restore outside its directory, or make one entry
    /// overwrite another, is refused when the manifest is parsed, naming the entry.
    #[test]
    fn hostile_file_lists_are_refused_naming_the_entry() {
        let ok = file("000001.sst", "tasks/task-0000/db-000001-aa/000001.sst");
        let long = "a".repeat(256);
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (file("../../x", "tasks/task-0000/db-1/x"), "contains `/`"),
            (file("/etc/passwd", "tasks/passwd"), "contains `/`"),
            (file("..", "tasks/task-0000/db-1/x"), "names a directory"),
            (file(".", "tasks/task-0000/db-1/x"), "names a directory"),
            (file("", "tasks/task-0000/db-1/x"), "is empty"),
            (file("a\\b.sst", "tasks/a/b.sst"), "backslash"),
            (file("a\0b.sst", "tasks/a/b.sst"), "NUL"),
            (file(&long, &format!("tasks/{long}")), "longer than 255"),
            (
                file("000009.sst", "tasks/task-0000/db-000001-aa/000010.sst"),
                "does not match its key",
            ),
            (
                file("x.sst", "../outside/x.sst"),
                "invalid checkpoint store key",
            ),
            (file("x.sst", "/abs/x.sst"), "invalid checkpoint store key"),
            (ok.clone(), "listed twice (also files[0])"),
        ];
        for (bad, reason) in cases {
            let bytes = task_manifest(vec![ok.clone(), bad.clone()]);
            let err = parse::<TaskManifest>(KEY, &bytes).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, CheckpointError::BadManifest { .. }),
                "{bad}: {msg}"
            );
            assert!(msg.starts_with(KEY), "{msg}");
            assert!(msg.contains("files[1]"), "{bad}: {msg}");
            assert!(msg.contains(reason), "{bad}: expected {reason:?} in {msg}");
            if let Some(name) = bad["name"].as_str().filter(|n| n.len() < 100) {
                assert!(msg.contains(&format!("{name:?}")), "{msg}");
            }
        }
    }

    /// Commit records written before the state version was recorded still parse (as unknown),
    /// and a recorded one survives a round trip; `None` is not written at all.
    #[test]
    fn the_commit_records_state_version_is_optional() {
        let spec = cairn_contract::JobSpec::from_yaml_str(
            "name: t\ninput: {type: generator, partitions: 1}\ntask: {name: count}\n",
        )
        .unwrap();
        let mut doc = serde_json::json!({
            "format": FORMAT_VERSION, "checkpoint": 3, "generation": 1, "triggeredAtMs": 0,
            "committedAtMs": 0, "spec": spec, "specHash": "h", "partitions": 1,
            "parallelism": 1, "tasks": [], "totalBytes": 0, "uploadedBytes": 0,
            "newSstBytes": 0,
        });
        let key = "checkpoints/000000000003/_COMMIT.json";
        let old: CommitRecord = parse(key, doc.to_string().as_bytes()).unwrap();
        assert_eq!(old.state_version, None);
        assert!(!String::from_utf8(to_bytes(&old).to_vec())
            .unwrap()
            .contains("stateVersion"));
        doc["stateVersion"] = 4.into();
        let new: CommitRecord = parse(key, doc.to_string().as_bytes()).unwrap();
        assert_eq!(new.state_version, Some(4));
        assert_eq!(parse::<CommitRecord>(key, &to_bytes(&new)).unwrap(), new);
    }

    #[test]
    fn the_constructor_checks_like_the_parser() {
        let f = |name: &str, key: &str| ManifestFile {
            name: name.into(),
            key: key.into(),
            meta: FileMeta { size: 1, crc32c: 1 },
        };
        assert!(ManifestFiles::new(vec![f("a.sst", "t/a.sst"), f("b.sst", "t/b.sst")]).is_ok());
        assert_eq!(
            ManifestFiles::new(vec![f("a.sst", "t/a.sst"), f("a.sst", "u/a.sst")]),
            Err(FileListError::Duplicate {
                index: 1,
                first: 0,
                name: "a.sst".into()
            })
        );
        assert!(matches!(
            ManifestFiles::new(vec![f("../a.sst", "t/a.sst")]),
            Err(FileListError::BadName { index: 0, .. })
        ));
    }
}
