//! Checkpoint store URLs (`checkpoint.store`, savepoint URLs, the worker's `--store`): the one
//! grammar. The spec keeps the URL as the user wrote it; this module is the one place that says
//! what it means, so validation, the properties aliases, the worker that opens the store and the
//! CRD's schema (tested against [`CLUSTER_PATTERN`]) all read it the same way.
//!
//! `file://` URLs are not RFC 8089 URLs with a host part: everything after `file://` is a
//! filesystem path. `file:///var/lib/cairn` is the absolute path `/var/lib/cairn`, and
//! `file://./.cairn/checkpoints` (or `file://.cairn/checkpoints`) is relative to the working
//! directory of the process that resolves it. `file:<path>` (no `//`) is accepted as a
//! shorthand on the command line; the spec's validation and the cluster ask for `file://`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::FieldError;

/// The fix shown for every malformed store URL.
const STORE_FIX: &str = "write a URL such as `file://./.cairn/checkpoints` (relative to the \
                         working directory), `file:///var/lib/cairn/checkpoints` (absolute), \
                         `s3://bucket/prefix`, or `memory://name` (tests only)";

/// Store URLs usable on Kubernetes, as the CRD's schema checks them (CEL `matches`): an object
/// store bucket with a valid S3 name, or an absolute path every worker pod mounts (an RWX
/// volume). `memory://` and relative paths are local-mode only. A test checks that it accepts
/// exactly the URLs [`StoreUrl::parse`] reads as [`StoreUrl::is_cluster_usable`].
pub const CLUSTER_PATTERN: &str = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|file:///.+)$";

/// A checkpoint store location, parsed from a store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file://<path>`: a directory on a local or mounted filesystem. A relative path is relative
    /// to the working directory.
    File(PathBuf),
    /// `memory://[<name>]`: an in-process store, for tests (every opening is a new store; the
    /// name only labels it).
    Memory(String),
    /// `s3://<bucket>[/<prefix>]`: an object store bucket and key prefix (possibly empty).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket, without a leading or trailing `/`; may be empty.
        prefix: String,
    },
}

impl StoreUrl {
    /// Parses a store URL, or says what is wrong with it (as a `checkpoint.store` field error).
    pub fn parse(url: &str) -> Result<Self, FieldError> {
        let invalid = |problem: String| FieldError::new("checkpoint.store", problem, STORE_FIX);
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(invalid(format!(
                "{url:?} is not a URL (it has no `scheme://`)"
            )));
        };
        let slashed = rest.strip_prefix("//");
        match scheme {
            "file" => {
                let path = slashed.unwrap_or(rest);
                if path.is_empty() {
                    return Err(invalid(format!("{url:?} has no directory path")));
                }
                Ok(StoreUrl::File(PathBuf::from(path)))
            }
            "memory" | "s3" if slashed.is_none() => Err(invalid(format!(
                "{url:?} is not a URL (it has no `scheme://`)"
            ))),
            "memory" => Ok(StoreUrl::Memory(slashed.unwrap_or_default().to_owned())),
            "s3" => {
                let rest = slashed.unwrap_or_default();
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(invalid(format!("{url:?} has no bucket name")));
                }
                Ok(StoreUrl::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.trim_matches('/').to_owned(),
                })
            }
            _ if slashed.is_none() => Err(invalid(format!(
                "{url:?} is not a URL (it has no `scheme://`)"
            ))),
            _ => Err(invalid(format!(
                "{url:?} uses the scheme `{scheme}`, which is not one of `file`, `memory`, `s3`"
            ))),
        }
    }

    /// Parses the store URL of a job spec: the grammar of [`parse`](Self::parse), in its
    /// written-out form (`scheme://`), and a `memory://` store must be named (a spec that runs
    /// in tests says which).
    pub fn parse_spec(url: &str) -> Result<Self, FieldError> {
        let invalid = |problem: String| FieldError::new("checkpoint.store", problem, STORE_FIX);
        if !url.contains("://") {
            return Err(invalid(format!(
                "{url:?} is not a URL (it has no `scheme://`)"
            )));
        }
        match Self::parse(url)? {
            StoreUrl::Memory(name) if name.is_empty() => {
                Err(invalid(format!("{url:?} has no store name")))
            }
            store => Ok(store),
        }
    }

    /// Whether a job on Kubernetes can use it: an S3 bucket with a valid name (3 to 63
    /// lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit),
    /// or an absolute path. What [`CLUSTER_PATTERN`] checks, for URLs in the `scheme://` form.
    pub fn is_cluster_usable(&self) -> bool {
        match self {
            // `/` alone is no store directory (and the pattern wants a path after `file:///`).
            StoreUrl::File(path) => path.is_absolute() && path.as_os_str().len() > 1,
            StoreUrl::Memory(_) => false,
            StoreUrl::S3 { bucket, .. } => {
                let b = bucket.as_bytes();
                let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
                (3..=63).contains(&b.len())
                    && b.first().is_some_and(edge)
                    && b.last().is_some_and(edge)
                    && b.iter().all(|c| edge(c) || *c == b'.' || *c == b'-')
            }
        }
    }

    /// The `file://` store for a directory. A relative path is written `file://./<path>`
    /// (unless it already starts with `./` or `../`) so the URL visibly says "relative to the
    /// working directory"; an absolute one gives `file:///<path>`.
    pub fn for_dir(dir: &Path) -> Self {
        StoreUrl::File(dir.to_path_buf())
    }

    /// The URL form of this store, as written into `checkpoint.store`.
    pub fn to_url(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            StoreUrl::File(path) => {
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
            StoreUrl::Memory(name) => write!(f, "memory://{name}"),
            StoreUrl::S3 { bucket, prefix } if prefix.is_empty() => {
                write!(f, "s3://{bucket}")
            }
            StoreUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            StoreUrl::parse("file://./.cairn/checkpoints"),
            Ok(StoreUrl::File(PathBuf::from("./.cairn/checkpoints")))
        );
        assert_eq!(
            StoreUrl::parse("file:///var/lib/cairn"),
            Ok(StoreUrl::File(PathBuf::from("/var/lib/cairn")))
        );
        assert_eq!(
            StoreUrl::parse("file://ckpt"),
            Ok(StoreUrl::File(PathBuf::from("ckpt")))
        );
        assert_eq!(
            StoreUrl::parse("memory://t1"),
            Ok(StoreUrl::Memory("t1".to_owned()))
        );
        assert_eq!(
            StoreUrl::parse("s3://bucket/jobs/wc"),
            Ok(StoreUrl::S3 {
                bucket: "bucket".to_owned(),
                prefix: "jobs/wc".to_owned()
            })
        );
        assert_eq!(
            StoreUrl::parse("s3://bucket"),
            Ok(StoreUrl::S3 {
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
                "file:rel",
                "\"file:rel\" is not a URL (it has no `scheme://`)",
            ),
            (
                "hdfs://nn/ckpt",
                "\"hdfs://nn/ckpt\" uses the scheme `hdfs`, which is not one of `file`, `memory`, \
                 `s3`",
            ),
        ] {
            let err = StoreUrl::parse_spec(url).unwrap_err();
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
            let store = StoreUrl::for_dir(Path::new(dir));
            assert_eq!(store.to_url(), url);
            assert_eq!(StoreUrl::parse(url), Ok(StoreUrl::File(read_back.into())));
        }
    }

    /// One grammar for the spec and the worker: the command line's `file:` shorthand and an
    /// unnamed `memory://` parse, S3 prefixes lose their slashes at both ends (a doubled one
    /// too: `s3://b//x` is prefix `x`).
    #[test]
    fn the_grammar_is_the_workers_and_normalises_s3_prefixes() {
        assert_eq!(
            StoreUrl::parse("file:c/d"),
            Ok(StoreUrl::File("c/d".into()))
        );
        assert_eq!(
            StoreUrl::parse("file:/abs"),
            Ok(StoreUrl::File("/abs".into()))
        );
        assert_eq!(
            StoreUrl::parse("memory://"),
            Ok(StoreUrl::Memory(String::new()))
        );
        let s3 = |bucket: &str, prefix: &str| StoreUrl::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        };
        assert_eq!(StoreUrl::parse("s3://b"), Ok(s3("b", "")));
        assert_eq!(StoreUrl::parse("s3://b/"), Ok(s3("b", "")));
        assert_eq!(StoreUrl::parse("s3://b/jobs/wc/"), Ok(s3("b", "jobs/wc")));
        assert_eq!(StoreUrl::parse("s3://b//x"), Ok(s3("b", "x")));
        for bad in [
            "s3:///x",
            "file:",
            "file://",
            "memory:x",
            "s3:b",
            "./ckpt",
            "hdfs://nn/x",
        ] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad}");
        }
    }

    /// The CRD's pattern accepts exactly the URLs this grammar reads as usable on a cluster.
    #[test]
    fn the_cluster_pattern_agrees_with_the_grammar() {
        let pattern = regex::Regex::new(CLUSTER_PATTERN).unwrap();
        let long = format!("s3://{}/x", "a".repeat(64));
        let max = format!("s3://{}/x", "a".repeat(63));
        for url in [
            "s3://bucket",
            "s3://bucket/",
            "s3://bucket/jobs/count",
            "s3://my.bucket-1/p",
            "s3://ab/p",
            "s3://b",
            "s3://Bucket/p",
            "s3://-bucket/p",
            "s3://bucket-/p",
            "s3://buc_ket/p",
            long.as_str(),
            max.as_str(),
            "file:///var/lib/cairn",
            "file:///",
            "file://./rel",
            "file://rel",
            "memory://t1",
            "memory://",
        ] {
            let grammar = StoreUrl::parse(url).is_ok_and(|s| s.is_cluster_usable());
            assert_eq!(pattern.is_match(url), grammar, "{url}");
        }
    }
}
