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
                         `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`, \
                         `abfss://container@account.dfs.core.windows.net/prefix`, \
                         `hdfs://namenode:8020/path` (or `hdfs:///path` for the default file \
                         system of the Hadoop configuration), or `memory://name` (tests only)";

/// Store URLs usable on Kubernetes, as the CRD's schema checks them (CEL `matches`): a bucket or
/// container with a valid name in an object store, a directory in HDFS, or an absolute path
/// every worker pod mounts (an RWX volume). `memory://` and relative paths are local-mode only.
/// A test checks that it accepts exactly the URLs [`StoreUrl::parse`] reads as
/// [`StoreUrl::is_cluster_usable`]. No backslashes: the pattern is a CEL string literal in the
/// CRD, where `\.` is not a valid escape (`[.]` is a literal dot).
pub const CLUSTER_PATTERN: &str = concat!(
    r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?",
    r"|gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/.*)?",
    r"|az://[a-z0-9][a-z0-9-]{1,61}[a-z0-9](/.*)?",
    r"|abfss?://[a-z0-9][a-z0-9-]{1,61}[a-z0-9]@[a-z0-9]{3,24}[.]dfs[.]core[.]windows[.]net(/.*)?",
    r"|hdfs://([A-Za-z0-9][A-Za-z0-9.-]*(:[1-9][0-9]{0,4})?)?/+[^/].*",
    r"|file:///.+)$"
);

/// The DNS suffix of Azure Data Lake Storage Gen2 endpoints in `abfs://` URLs.
const AZURE_DFS_SUFFIX: &str = ".dfs.core.windows.net";

/// A checkpoint store location, parsed from a store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file://<path>`: a directory on a local or mounted filesystem. A relative path is relative
    /// to the working directory.
    File(PathBuf),
    /// `memory://[<name>]`: an in-process store, for tests (every opening is a new store; the
    /// name only labels it).
    Memory(String),
    /// A directory-like root in a remote store and a `/`-separated key prefix under it:
    /// `s3://`, `gs://`, `az://`, `abfs[s]://` or `hdfs://`.
    Object {
        /// Which service, and how the URL spelt it.
        service: ObjectService,
        /// The bucket (S3, GCS), the container (Azure) or the NameNode authority `host[:port]`
        /// or HA nameservice (HDFS; empty for the default file system of the Hadoop
        /// configuration).
        bucket: String,
        /// Key prefix inside the bucket (for HDFS: the directory path), without a leading or
        /// trailing `/`; may be empty except for HDFS.
        prefix: String,
    },
}

/// The remote services a [`StoreUrl::Object`] can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectService {
    /// `s3://`: AWS S3 or an S3-compatible server.
    S3,
    /// `gs://`: Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage: `az://container/…` (the account from the environment) or
    /// `abfs[s]://container@account.dfs.core.windows.net/…` (the account in the URL).
    Azure {
        /// The storage account named in an `abfs://` URL.
        account: Option<String>,
        /// `abfss://` rather than `abfs://` (both connect with TLS; kept to print the URL back).
        abfss: bool,
    },
    /// `hdfs://`: a Hadoop file system.
    Hdfs,
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
        if scheme == "file" {
            let path = slashed.unwrap_or(rest);
            if path.is_empty() {
                return Err(invalid(format!("{url:?} has no directory path")));
            }
            return Ok(StoreUrl::File(PathBuf::from(path)));
        }
        let Some(rest) = slashed else {
            return Err(invalid(format!(
                "{url:?} is not a URL (it has no `scheme://`)"
            )));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = path.trim_matches('/').to_owned();
        let object = |service: ObjectService, bucket: &str, what: &str| {
            if bucket.is_empty() {
                return Err(invalid(format!("{url:?} has no {what} name")));
            }
            Ok(StoreUrl::Object {
                service,
                bucket: bucket.to_owned(),
                prefix: prefix.clone(),
            })
        };
        match scheme {
            "memory" => Ok(StoreUrl::Memory(rest.to_owned())),
            "s3" => object(ObjectService::S3, authority, "bucket"),
            "gs" => object(ObjectService::Gcs, authority, "bucket"),
            "az" => object(
                ObjectService::Azure {
                    account: None,
                    abfss: false,
                },
                authority,
                "container",
            ),
            "abfs" | "abfss" => {
                let account = authority
                    .split_once('@')
                    .and_then(|(_, host)| host.strip_suffix(AZURE_DFS_SUFFIX))
                    .filter(|account| !account.is_empty() && !account.contains('.'));
                let (Some((container, _)), Some(account)) = (authority.split_once('@'), account)
                else {
                    return Err(invalid(format!(
                        "{url:?} does not name `<container>@<account>{AZURE_DFS_SUFFIX}` \
                         after `{scheme}://`"
                    )));
                };
                let service = ObjectService::Azure {
                    account: Some(account.to_owned()),
                    abfss: scheme == "abfss",
                };
                object(service, container, "container")
            }
            "hdfs" => {
                if let Some(problem) = hdfs_authority_problem(authority) {
                    return Err(invalid(format!("{url:?}: {problem}")));
                }
                if prefix.is_empty() {
                    return Err(invalid(format!(
                        "{url:?} has no directory path (write e.g. `hdfs://{authority}/cairn/jobs`)"
                    )));
                }
                Ok(StoreUrl::Object {
                    service: ObjectService::Hdfs,
                    bucket: authority.to_owned(),
                    prefix,
                })
            }
            _ => Err(invalid(format!(
                "{url:?} uses the scheme `{scheme}`, which is not one of `file`, `s3`, `gs`, \
                 `az`, `abfs`, `abfss`, `hdfs`, `memory`"
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

    /// Whether a job on Kubernetes can use it: a bucket or container with a name its service
    /// accepts, an HDFS directory, or an absolute path. What [`CLUSTER_PATTERN`] checks, for
    /// URLs in the `scheme://` form.
    pub fn is_cluster_usable(&self) -> bool {
        match self {
            // `/` alone is no store directory (and the pattern wants a path after `file:///`).
            StoreUrl::File(path) => path.is_absolute() && path.as_os_str().len() > 1,
            StoreUrl::Memory(_) => false,
            StoreUrl::Object {
                service, bucket, ..
            } => match service {
                // 3 to 63 lowercase letters, digits and the service's punctuation, starting and
                // ending with a letter or digit.
                ObjectService::S3 => bucket_name_ok(bucket, b".-"),
                ObjectService::Gcs => bucket_name_ok(bucket, b"._-"),
                ObjectService::Azure { account, .. } => {
                    bucket_name_ok(bucket, b"-")
                        && account.as_deref().is_none_or(|a| {
                            (3..=24).contains(&a.len()) && a.bytes().all(lower_alnum)
                        })
                }
                ObjectService::Hdfs => true,
            },
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

fn lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// 3 to 63 lowercase letters, digits and `punctuation`, starting and ending with a letter or
/// digit.
fn bucket_name_ok(name: &str, punctuation: &[u8]) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.first().copied().is_some_and(lower_alnum)
        && b.last().copied().is_some_and(lower_alnum)
        && b.iter().all(|c| lower_alnum(*c) || punctuation.contains(c))
}

/// What is wrong with the authority of an `hdfs://` URL: `host[:port]`, a nameservice, or empty
/// (the default file system). `None` when it is fine.
fn hdfs_authority_problem(authority: &str) -> Option<String> {
    if authority.is_empty() {
        return None;
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = host
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-');
    if !host_ok {
        return Some(format!(
            "{authority:?} is not a NameNode host name, `host:port` or nameservice"
        ));
    }
    match port {
        Some(port)
            if !(1..=5).contains(&port.len())
                || !port.bytes().all(|c| c.is_ascii_digit())
                || !port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)) =>
        {
            Some(format!("{port:?} is not a port number (1 to 65535)"))
        }
        _ => None,
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
            StoreUrl::Object {
                service,
                bucket,
                prefix,
            } => {
                match service {
                    ObjectService::S3 => write!(f, "s3://{bucket}")?,
                    ObjectService::Gcs => write!(f, "gs://{bucket}")?,
                    ObjectService::Azure { account: None, .. } => write!(f, "az://{bucket}")?,
                    ObjectService::Azure {
                        account: Some(account),
                        abfss,
                    } => {
                        let s = if *abfss { "s" } else { "" };
                        write!(f, "abfs{s}://{bucket}@{account}{AZURE_DFS_SUFFIX}")?
                    }
                    ObjectService::Hdfs => write!(f, "hdfs://{bucket}")?,
                }
                if prefix.is_empty() {
                    Ok(())
                } else {
                    write!(f, "/{prefix}")
                }
            }
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
            Ok(object(ObjectService::S3, "bucket", "jobs/wc"))
        );
        assert_eq!(
            StoreUrl::parse("s3://bucket"),
            Ok(object(ObjectService::S3, "bucket", ""))
        );
        assert_eq!(
            StoreUrl::parse("gs://bucket/jobs/wc"),
            Ok(object(ObjectService::Gcs, "bucket", "jobs/wc"))
        );
        let az = ObjectService::Azure {
            account: None,
            abfss: false,
        };
        assert_eq!(
            StoreUrl::parse("az://ckpt/jobs/wc"),
            Ok(object(az, "ckpt", "jobs/wc"))
        );
        let abfss = ObjectService::Azure {
            account: Some("acct".to_owned()),
            abfss: true,
        };
        assert_eq!(
            StoreUrl::parse("abfss://ckpt@acct.dfs.core.windows.net/jobs"),
            Ok(object(abfss, "ckpt", "jobs"))
        );
        assert_eq!(
            StoreUrl::parse("hdfs://nn.example:8020/cairn/wc/"),
            Ok(object(ObjectService::Hdfs, "nn.example:8020", "cairn/wc"))
        );
        assert_eq!(
            StoreUrl::parse("hdfs:///cairn/wc"),
            Ok(object(ObjectService::Hdfs, "", "cairn/wc"))
        );
    }

    fn object(service: ObjectService, bucket: &str, prefix: &str) -> StoreUrl {
        StoreUrl::Object {
            service,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    /// Every form prints back as it was written (after normalising slashes).
    #[test]
    fn urls_print_back() {
        for url in [
            "s3://b/p/q",
            "gs://b",
            "az://c/p",
            "abfs://c@acct.dfs.core.windows.net/p",
            "abfss://c@acct.dfs.core.windows.net",
            "hdfs://nn:8020/cairn",
            "hdfs:///cairn/jobs",
            "memory://t",
        ] {
            assert_eq!(StoreUrl::parse(url).unwrap().to_url(), url);
        }
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
                "ftp://nn/ckpt",
                "\"ftp://nn/ckpt\" uses the scheme `ftp`, which is not one of `file`, `s3`, \
                 `gs`, `az`, `abfs`, `abfss`, `hdfs`, `memory`",
            ),
            ("gs://", "\"gs://\" has no bucket name"),
            ("az:///p", "\"az:///p\" has no container name"),
            (
                "abfs://c@acct.blob.core.windows.net/p",
                "\"abfs://c@acct.blob.core.windows.net/p\" does not name \
                 `<container>@<account>.dfs.core.windows.net` after `abfs://`",
            ),
            (
                "hdfs://nn:8020/",
                "\"hdfs://nn:8020/\" has no directory path (write e.g. \
                 `hdfs://nn:8020/cairn/jobs`)",
            ),
            (
                "hdfs://nn:99999/x",
                "\"hdfs://nn:99999/x\": \"99999\" is not a port number (1 to 65535)",
            ),
            (
                "hdfs://n_n/x",
                "\"hdfs://n_n/x\": \"n_n\" is not a NameNode host name, `host:port` or \
                 nameservice",
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
        let s3 = |bucket: &str, prefix: &str| object(ObjectService::S3, bucket, prefix);
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
            "hdfs://nn/",
            "hdfs:nn/x",
            "gs:b",
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
            "gs://bucket/p",
            "gs://my_bucket.x",
            "gs://Bucket",
            "gs://b",
            "az://container/p",
            "az://con_tainer/p",
            "az://c",
            "abfs://ckpt@acct.dfs.core.windows.net/p",
            "abfss://ckpt@acct.dfs.core.windows.net",
            "abfss://ckpt@ACCT.dfs.core.windows.net",
            "abfss://ckpt@a.dfs.core.windows.net",
            "abfss://ckpt@acct.blob.core.windows.net",
            "hdfs://nn:8020/cairn",
            "hdfs://nameservice1/cairn/jobs",
            "hdfs:///cairn",
            "hdfs://nn:8020/",
            "hdfs://nn//x",
            "hdfs://-nn/x",
        ] {
            let grammar = StoreUrl::parse(url).is_ok_and(|s| s.is_cluster_usable());
            assert_eq!(pattern.is_match(url), grammar, "{url}");
        }
    }
}
