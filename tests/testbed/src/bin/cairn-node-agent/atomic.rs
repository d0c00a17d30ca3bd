//! Kubelet's atomic writer for ConfigMap, Secret, downward API and projected volumes: the files
//! live in a timestamped directory, `..data` is a symlink to it and each top-level name is a
//! symlink through `..data`. An update writes a new directory and swaps `..data` with one
//! rename, so a process never sees half of an update — and since volumes are bind-mounted as
//! directories, the swap is visible inside running containers.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Relative path -> (contents, file mode).
pub type Payload = BTreeMap<String, (Vec<u8>, u32)>;

/// A volume directory could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    /// A payload path is absolute or climbs out of the volume.
    #[error("volume file path {path:?} must be relative and must not contain '..'")]
    BadPath {
        /// The path.
        path: String,
    },
    /// File system error.
    #[error("writing volume file {}: {source}", path.display())]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AtomicError + '_ {
    move |source| AtomicError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn check_path(path: &str) -> Result<(), AtomicError> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && !path.starts_with("..")
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(AtomicError::BadPath {
            path: path.to_string(),
        })
    }
}

/// The payload currently published in `dir`, or `None` when nothing is.
fn current(dir: &Path) -> Option<Payload> {
    let data = dir.join("..data");
    let mut out = Payload::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(data.join(&rel)).ok()? {
            let entry = entry.ok()?;
            let rel_path = rel.join(entry.file_name());
            let meta = entry.metadata().ok()?;
            if meta.is_dir() {
                stack.push(rel_path);
            } else {
                let bytes = std::fs::read(entry.path()).ok()?;
                out.insert(
                    rel_path.to_string_lossy().into_owned(),
                    (bytes, meta.permissions().mode() & 0o7777),
                );
            }
        }
    }
    Some(out)
}

/// Publishes `payload` in `dir` (created if missing). Returns false when it was already there.
pub fn write(dir: &Path, payload: &Payload) -> Result<bool, AtomicError> {
    for path in payload.keys() {
        check_path(path)?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if current(dir).as_ref() == Some(payload) {
        return Ok(false);
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let ts_name = format!("..{nanos}");
    let ts_dir = dir.join(&ts_name);
    std::fs::create_dir(&ts_dir).map_err(io(&ts_dir))?;
    for (rel, (bytes, mode)) in payload {
        let file = ts_dir.join(rel);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&file, bytes).map_err(io(&file))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))
            .map_err(io(&file))?;
    }
    ts_dir_permissions(&ts_dir)?;
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts_name, &tmp).map_err(io(&tmp))?;
    let data = dir.join("..data");
    std::fs::rename(&tmp, &data).map_err(io(&data))?;

    let top: std::collections::BTreeSet<String> = payload
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).map_err(io(&link))?;
        }
    }
    for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with("..") {
            if name != "..data" && name != ts_name {
                let _ = std::fs::remove_dir_all(&path);
            }
        } else if !top.contains(&name) {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(true)
}

/// Directories inside the payload must be traversable by non-root readers too.
fn ts_dir_permissions(ts_dir: &Path) -> Result<(), AtomicError> {
    std::fs::set_permissions(ts_dir, std::fs::Permissions::from_mode(0o755)).map_err(io(ts_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(items: &[(&str, &str, u32)]) -> Payload {
        items
            .iter()
            .map(|(p, c, m)| (p.to_string(), (c.as_bytes().to_vec(), *m)))
            .collect()
    }

    #[test]
    fn publishes_updates_and_removes_stale_names() {
        let dir = std::env::temp_dir().join(format!("cairn-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = payload(&[("job.yaml", "a: 1", 0o644), ("sub/x", "x", 0o600)]);
        assert!(write(&dir, &first).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join("job.yaml")).unwrap(),
            "a: 1"
        );
        assert_eq!(std::fs::read_to_string(dir.join("sub/x")).unwrap(), "x");
        let mode = std::fs::metadata(dir.join("sub/x"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            !write(&dir, &first).unwrap(),
            "same payload: nothing written"
        );

        let second = payload(&[("job.yaml", "a: 2", 0o644)]);
        assert!(write(&dir, &second).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join("job.yaml")).unwrap(),
            "a: 2"
        );
        assert!(std::fs::symlink_metadata(dir.join("sub")).is_err());
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != "..data")
            .collect();
        assert_eq!(
            names.len(),
            1,
            "only the current timestamped dir is kept: {names:?}"
        );
        assert!(matches!(
            write(&dir, &payload(&[("../evil", "", 0o644)])),
            Err(AtomicError::BadPath { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
