//! Store keys and in-progress temp names.
//!
//! A key is a relative `/`-separated path such as `tasks/task-0003/db-7f3a/sst/000123.sst`. Keys
//! are checked before any backend sees them so that a key can never escape the store root on a
//! local filesystem (`..`, a leading `/`) and means the same thing on every backend (no empty
//! segments, a portable character set, at most S3's 1024 bytes).
//!
//! Writers stage content under a temp name `.<name>.tmp-g<generation>-<pid>-<random>` next to the
//! final file and publish it with a rename or hard link. A temp name can never be a key segment,
//! so listing can skip in-progress and abandoned temps without ever hiding a real file. The
//! generation (of the process that writes, see `checkpoint::generation`) lets a purge of
//! abandoned temps spare those of a newer process; writers that have no generation (and stores
//! written before it was recorded) leave `.<name>.tmp-<pid>-<random>`.

use super::StorageError;

/// Longest accepted key, in bytes (the S3 limit).
const MAX_KEY_LEN: usize = 1024;

/// Marker between the final name and the random suffix of a temp name.
const TEMP_MARKER: &str = ".tmp-";

/// Checks that `key` is a well-formed key: non-empty, relative, no empty, `.` or `..` segments,
/// no temp-name segment, only ASCII letters, digits and `-_.=+,@~:`.
pub(crate) fn validate_key(key: &str) -> Result<(), StorageError> {
    let invalid = |reason: String| {
        Err(StorageError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("the key is empty".to_owned());
    }
    if key.len() > MAX_KEY_LEN {
        return invalid(format!("the key is longer than {MAX_KEY_LEN} bytes"));
    }
    if key.starts_with('/') {
        return invalid("keys are relative and must not start with `/`".to_owned());
    }
    if let Some(bad) = key.chars().find(|c| !is_key_char(*c)) {
        return invalid(format!(
            "character {bad:?} is not allowed (use ASCII letters, digits, `/` and `-_.=+,@~:`)"
        ));
    }
    for segment in key.split('/') {
        match segment {
            "" => return invalid("the key has an empty path segment".to_owned()),
            "." | ".." => return invalid(format!("the key has a `{segment}` path segment")),
            s if is_temp_name(s) => {
                return invalid(format!(
                    "segment {s:?} has the form of an in-progress temp file"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a list prefix: empty (everything), or a key, optionally ending in `/`.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), StorageError> {
    match prefix.strip_suffix('/') {
        _ if prefix.is_empty() => Ok(()),
        Some(dir) => validate_key(dir).map_err(|e| match e {
            StorageError::InvalidKey { reason, .. } => StorageError::InvalidKey {
                key: prefix.to_owned(),
                reason,
            },
            other => other,
        }),
        None => validate_key(prefix),
    }
}

/// The directory part of a list prefix: everything up to and including its last `/`
/// (`"a/b/c"` -> `"a/b/"`, `"a/"` -> `"a/"`, `"a"` -> `""`). Only that directory needs walking.
pub(crate) fn prefix_dir(prefix: &str) -> &str {
    match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "",
    }
}

/// Characters allowed in a key (besides `/`).
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "/-_.=+,@~:".contains(c)
}

/// True if a file name is an in-progress (or abandoned) temp file of this module.
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && (name.contains(TEMP_MARKER) || is_hdfs_staging_name(name))
}

/// The staging names of the HDFS client's `object_store` implementation,
/// `.<final name>.tmp.<n>`: a killed writer leaves one behind, and it must not read as a key.
fn is_hdfs_staging_name(name: &str) -> bool {
    name.rsplit_once(".tmp.")
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A fresh temp name for staging `final_name` in the same directory, written by `generation`
/// (0: unknown). The suffix has the pid and 64 random bits: the pid alone is not unique when
/// workers in different containers (often all pid 1) share a mounted store.
pub(crate) fn temp_name(final_name: &str, generation: u64) -> String {
    let writer = if generation == 0 {
        String::new()
    } else {
        format!("g{generation}-")
    };
    format!(
        ".{final_name}{TEMP_MARKER}{writer}{:x}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

/// The generation recorded in a temp name by [`temp_name`]; `None` when it has none (written
/// without a generation, or by a version of Cairn that did not record it). The pid after the
/// marker is hexadecimal, so it never starts with `g`.
pub(crate) fn temp_generation(name: &str) -> Option<u64> {
    let (_, suffix) = name.rsplit_once(TEMP_MARKER)?;
    let (digits, _) = suffix.strip_prefix('g')?.split_once('-')?;
    digits.parse().ok()
}

/// The last segment of a key or path-like string.
pub(crate) fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(key: &str) -> String {
        match validate_key(key) {
            Err(StorageError::InvalidKey { key: k, reason }) => {
                assert_eq!(k, key);
                reason
            }
            other => panic!("{key:?}: expected InvalidKey, got {other:?}"),
        }
    }

    #[test]
    fn accepts_ordinary_keys() {
        for key in [
            "a",
            "tasks/task-0003/db-7f3a/sst/000123.sst",
            "manifests/ckpt-000012.json",
            "x/MANIFEST-000005",
            "a/.hidden",
            "a/b.tmp-1",
            "k=v,x@y~z:w+1",
        ] {
            validate_key(key).unwrap_or_else(|e| panic!("{key:?}: {e}"));
        }
    }

    #[test]
    fn rejects_malformed_keys_naming_the_problem() {
        assert!(reason("").contains("empty"));
        assert!(reason("/abs/x").contains("start with `/`"));
        assert!(reason("a//b").contains("empty path segment"));
        assert!(reason("a/").contains("empty path segment"));
        assert!(reason("a/../b").contains("`..`"));
        assert!(reason("..").contains("`..`"));
        assert!(reason("./a").contains("`.`"));
        assert!(reason("a\\b").contains("'\\\\'"));
        assert!(reason("a b").contains("' '"));
        assert!(reason("a\0b").contains("not allowed"));
        assert!(reason("dir/.x.sst.tmp-1-ab").contains("temp file"));
        assert!(reason(&"a".repeat(1025)).contains("1024"));
        let err = validate_key("a/../b").unwrap_err().to_string();
        assert!(err.contains("\"a/../b\""), "{err}");
    }

    #[test]
    fn prefixes() {
        for ok in ["", "a", "a/", "tasks/task-00", "tasks/task-0003/"] {
            validate_prefix(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in ["/", "/a", "a//", "../", "a/../"] {
            assert!(
                matches!(validate_prefix(bad), Err(StorageError::InvalidKey { ref key, .. }) if key == bad),
                "{bad:?}"
            );
        }
        assert_eq!(prefix_dir("a/b/c"), "a/b/");
        assert_eq!(prefix_dir("a/b/"), "a/b/");
        assert_eq!(prefix_dir("a"), "");
        assert_eq!(prefix_dir(""), "");
    }

    #[test]
    fn temp_names_are_recognised_and_unique() {
        let t1 = temp_name("000123.sst", 0);
        let t2 = temp_name("000123.sst", 0);
        assert_ne!(t1, t2);
        assert!(t1.starts_with(".000123.sst.tmp-"), "{t1}");
        assert!(is_temp_name(&t1));
        assert!(!is_temp_name("000123.sst"));
        assert!(!is_temp_name(".hidden"));
        assert!(!is_temp_name("x.tmp-1"));
        assert!(is_temp_name(".000123.sst.tmp.1"));
        assert!(is_temp_name(".commit.tmp.12"));
        assert!(!is_temp_name(".commit.tmp."));
        assert!(!is_temp_name(".commit.tmp.x1"));
        // A temp name is never a valid key segment, so `list` can skip temps safely.
        assert!(validate_key(&format!("dir/{t1}")).is_err());
    }

    #[test]
    fn temp_names_carry_the_writers_generation() {
        let tagged = temp_name("000123.sst", 42);
        assert!(tagged.starts_with(".000123.sst.tmp-g42-"), "{tagged}");
        assert!(is_temp_name(&tagged));
        assert_eq!(temp_generation(&tagged), Some(42));
        assert_eq!(temp_generation(&temp_name("x", 0)), None);
        // Names of earlier versions and foreign names have none.
        assert_eq!(temp_generation(".000009.sst.tmp-1-00ff00ff00ff00ff"), None);
        assert_eq!(temp_generation(".a.tmp-gx-1-2"), None);
        assert_eq!(temp_generation("plain"), None);
        // A final name that itself contains the marker does not confuse the parse.
        assert_eq!(temp_generation(&temp_name("weird.tmp-g9-name", 7)), Some(7));
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name("a/b/c.sst"), "c.sst");
        assert_eq!(file_name("c.sst"), "c.sst");
    }
}
