//! Checkpoint store URLs (`checkpoint.store`).
//!
//! The spec keeps the URL as the user wrote it; this module is the one place that says what it
//! means, so validation, the properties aliases and the worker all resolve it the same way.
//!
//! `file://` URLs are not RFC 8089 URLs with a host part: everything after `file://` is a
//! filesystem path. `file:///var/lib/cairn` is the absolute path `/var/lib/cairn`, and
//! `file://./.cairn/checkpoints` (or `file://.cairn/checkpoints`) is relative to the working
//! directory of the process that resolves it.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::FieldError;

/// The fix shown for every malformed store URL.
const STORE_FIX: &str = "write a URL such as `file://./.cairn/checkpoints` (relative to the \
                         working directory), `file:///var/lib/cairn/checkpoints` (absolute), \
                         `s3://bucket/prefix`, or `memory://name` (tests only)";

/// A checkpoint store location, parsed from a `checkpoint.store` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointStore {
    /// `file://<path>`: a directory on a local or mounted filesystem. A relative path is relative
    /// to the working directory.
    File(PathBuf),
    /// `memory://<name>`: an in-process store, for tests; `name` tells stores apart.
    Memory(String),
    /// `s3://<bucket>/<prefix>`: an object store bucket and key prefix (possibly empty). The spec
    /// accepts it; whether a worker build supports it is up to the worker.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket, without a leading `/`; may be empty.
        prefix: String,
    },
}

impl CheckpointStore {
    /// Parses a store URL, or says what is wrong with it as a `checkpoint.store` field error.
    pub fn parse(url: &str) -> Result<Self, FieldError> {
        let invalid = |problem: String| FieldError::new("checkpoint.store", problem, STORE_FIX);
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(invalid(format!(
                "{url:?} is not a URL (it has no `scheme://`)"
            )));
        };
        match scheme {
            "file" if rest.is_empty() => Err(invalid(format!("{url:?} has no directory path"))),
            "file" => Ok(CheckpointStore::File(PathBuf::from(rest))),
            "memory" if rest.is_empty() => Err(invalid(format!("{url:?} has no store name"))),
            "memory" => Ok(CheckpointStore::Memory(rest.to_owned())),
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(invalid(format!("{url:?} has no bucket name")));
                }
                Ok(CheckpointStore::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                })
            }
            _ => Err(invalid(format!(
                "{url:?} uses the scheme `{scheme}`, which is not one of `file`, `memory`, `s3`"
            ))),
        }
    }

    /// The `file://` store for a directory. A relative path is written `file://./<path>`
    /// (unless it already starts with `./` or `../`) so the URL visibly says "relative to the
    /// working directory"; an absolute one gives `file:///<path>`.
    pub fn for_dir(dir: &Path) -> Self {
        CheckpointStore::File(dir.to_path_buf())
    }

    /// The URL form of this store, as written into `checkpoint.store`.
    pub fn to_url(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for CheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            CheckpointStore::File(path) => {
                let path = path.to_string_lossy();
                let explicit = path.is_empty()
                    || path.starts_with('/')
                    || path.starts_with("./")
                    || path.starts_with("../")
                    || path == "."
                    || path == "..";
                if explicit {
                    write!(f, "file://{path}")
                } else {
                    write!(f, "file://./{path}")
                }
            }
            CheckpointStore::Memory(name) => write!(f, "memory://{name}"),
            CheckpointStore::S3 { bucket, prefix } if prefix.is_empty() => {
                write!(f, "s3://{bucket}")
            }
            CheckpointStore::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            CheckpointStore::parse("file://./.cairn/checkpoints"),
            Ok(CheckpointStore::File(PathBuf::from("./.cairn/checkpoints")))
        );
        assert_eq!(
            CheckpointStore::parse("file:///var/lib/cairn"),
            Ok(CheckpointStore::File(PathBuf::from("/var/lib/cairn")))
        );
        assert_eq!(
            CheckpointStore::parse("file://ckpt"),
            Ok(CheckpointStore::File(PathBuf::from("ckpt")))
        );
        assert_eq!(
            CheckpointStore::parse("memory://t1"),
            Ok(CheckpointStore::Memory("t1".to_owned()))
        );
        assert_eq!(
            CheckpointStore::parse("s3://bucket/jobs/wc"),
            Ok(CheckpointStore::S3 {
                bucket: "bucket".to_owned(),
                prefix: "jobs/wc".to_owned()
            })
        );
        assert_eq!(
            CheckpointStore::parse("s3://bucket"),
            Ok(CheckpointStore::S3 {
                bucket: "bucket".to_owned(),
                prefix: String::new()
            })
        );
    }

    #[test]
    fn rejects_bad_urls_with_the_accepted_forms() {
        for (url, problem) in [
            ("./ckpt", "\"./ckpt\" is not a URL (it has no `scheme://`)"),
            ("file://", "\"file://\" has no directory path"),
            ("memory://", "\"memory://\" has no store name"),
            ("s3:///x", "\"s3:///x\" has no bucket name"),
            (
                "hdfs://nn/ckpt",
                "\"hdfs://nn/ckpt\" uses the scheme `hdfs`, which is not one of `file`, `memory`, \
                 `s3`",
            ),
        ] {
            let err = CheckpointStore::parse(url).unwrap_err();
            assert_eq!(err.field, "checkpoint.store");
            assert_eq!(err.problem, problem);
            assert!(
                err.fix.contains("`file://./.cairn/checkpoints`"),
                "{}",
                err.fix
            );
            assert!(
                err.fix.contains("`file:///var/lib/cairn/checkpoints`"),
                "{}",
                err.fix
            );
        }
    }

    #[test]
    fn dir_urls_are_explicit_about_relative_paths_and_read_back() {
        for (dir, url, read_back) in [
            ("/var/lib/cairn", "file:///var/lib/cairn", "/var/lib/cairn"),
            ("./ckpt", "file://./ckpt", "./ckpt"),
            ("../ckpt", "file://../ckpt", "../ckpt"),
            ("ckpt/a", "file://./ckpt/a", "./ckpt/a"),
            (".", "file://.", "."),
        ] {
            let store = CheckpointStore::for_dir(Path::new(dir));
            assert_eq!(store.to_url(), url);
            assert_eq!(
                CheckpointStore::parse(url),
                Ok(CheckpointStore::File(read_back.into()))
            );
        }
    }
}
