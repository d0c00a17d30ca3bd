//! Which keys of a store are Cairn's, and which URLs name a savepoint directory.
//!
//! A job's store holds `checkpoints/`, `tasks/`, `generations/` and `savepoints/sp-<id>/`
//! (docs/checkpoints.md, docs/savepoints.md); a stateless restart moves the job to
//! `<store>/epoch-<n>/`, the same layout one level down. Housekeeping deletes only keys this
//! module recognises, so whatever else shares a bucket or a directory is never touched.

use std::path::{Component, Path, PathBuf};

use cairn_contract::StoreUrl;

/// Directory of savepoints in a job's store (without its `/`).
pub const SAVEPOINTS_DIR: &str = "savepoints";

/// Longest savepoint or store URL accepted, in bytes (S3 keys are at most 1024 bytes).
pub const MAX_URL_LEN: usize = 2048;

/// What a key of a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// Under `checkpoints/`: manifests, small files and commit records.
    Checkpoints,
    /// Under `tasks/`: the immutable SST files.
    Tasks,
    /// Under `generations/`: process generation claims.
    Generations,
    /// A file of a savepoint directory; `dir` is its prefix, e.g.
    /// `epoch-1/savepoints/sp-000000000042/`.
    Savepoint {
        /// The directory's prefix, ending in `/`.
        dir: &'a str,
    },
    /// Anything else: not Cairn's, never deleted.
    Foreign,
}

/// Classifies a store key (see [`Kind`]); `epoch-<n>/` at the top is looked through once.
pub fn classify(key: &str) -> Kind<'_> {
    let (first, rest) = key.split_once('/').unwrap_or((key, ""));
    if is_numbered(first, "epoch-") && !rest.is_empty() {
        return classify_job(rest, first.len() + 1, key);
    }
    classify_job(key, 0, key)
}

/// Classifies `rest`, the part of `key` from byte `offset` on, as a key of one job's layout.
fn classify_job<'a>(rest: &str, offset: usize, key: &'a str) -> Kind<'a> {
    let mut segments = rest.splitn(3, '/');
    let (top, second, third) = (segments.next(), segments.next(), segments.next());
    match (top, second, third) {
        (Some("checkpoints"), Some(_), _) => Kind::Checkpoints,
        (Some("tasks"), Some(_), _) => Kind::Tasks,
        (Some("generations"), Some(_), _) => Kind::Generations,
        (Some(SAVEPOINTS_DIR), Some(dir), Some(_)) if is_savepoint_name(dir) => {
            let end = offset + SAVEPOINTS_DIR.len() + 1 + dir.len() + 1;
            Kind::Savepoint { dir: &key[..end] }
        }
        _ => Kind::Foreign,
    }
}

/// `sp-<digits>`: the name Cairn gives a savepoint directory (`savepoint::name_for`).
pub fn is_savepoint_name(name: &str) -> bool {
    is_numbered(name, "sp-")
}

/// `<prefix><1 to 20 digits that fit a u64>`.
fn is_numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|digits| {
        !digits.is_empty()
            && digits.len() <= 20
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.parse::<u64>().is_ok()
    })
}

/// A savepoint directory named by a URL: the job store holding its `savepoints/` directory,
/// and its prefix in that store. Deleting through the job store (rather than opening the
/// savepoint directory as a store of its own) lets a `file://` store remove the directory
/// itself once it is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavepointDir {
    /// The URL as given.
    pub url: String,
    /// The store holding it, e.g. `file:///data/job` or `s3://bucket/job/epoch-1`.
    pub store: StoreUrl,
    /// `savepoints/sp-<id>/`.
    pub prefix: String,
}

impl SavepointDir {
    /// Parses a savepoint URL, refusing anything that is not a Cairn savepoint directory: the
    /// last path segment must be `sp-<digits>` inside a `savepoints` segment, with no `..`,
    /// `.` (other than a leading `./`) or empty segment anywhere (where such a path leads
    /// cannot be told from the URL). The error says why, for a person.
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.len() > MAX_URL_LEN {
            return Err(format!(
                "the URL is {} bytes long, more than the {MAX_URL_LEN} a savepoint URL may have",
                url.len()
            ));
        }
        let store =
            match StoreUrl::parse(url) {
                Ok(StoreUrl::File(path)) => {
                    let path = path.to_str().unwrap_or_default();
                    let absolute = path.starts_with('/');
                    let segments = segments(path.trim_start_matches('/'), true)?;
                    let parent = savepoint_parent(&segments)?;
                    let dir = parent.join("/");
                    StoreUrl::File(PathBuf::from(match (absolute, dir.as_str()) {
                        (true, dir) => format!("/{dir}"),
                        (false, "") => ".".to_owned(),
                        (false, dir) => dir.to_owned(),
                    }))
                }
                Ok(StoreUrl::Object {
                    service,
                    bucket,
                    prefix,
                }) => {
                    let segments = segments(&prefix, false)?;
                    let parent = savepoint_parent(&segments)?;
                    StoreUrl::Object {
                        service,
                        bucket,
                        prefix: parent.join("/"),
                    }
                }
                Ok(StoreUrl::Memory(_)) => {
                    return Err(
                        "a memory:// store lives inside one process; there is nothing to delete"
                            .to_owned(),
                    )
                }
                Err(_) => return Err(
                    "it is not a store URL (file:///…, s3://bucket/…, hdfs://…; see docs/savepoints.md)"
                        .to_owned(),
                ),
            };
        let name = url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        Ok(SavepointDir {
            url: url.to_owned(),
            store,
            prefix: format!("{SAVEPOINTS_DIR}/{name}/"),
        })
    }

    /// The URL of the store holding it.
    pub fn store_url(&self) -> String {
        self.store.to_url()
    }
}

/// The `/`-separated segments of a path (one trailing `/` allowed), refusing `..`, `.` (but a
/// leading one when `leading_dot` is allowed) and empty segments.
fn segments(path: &str, leading_dot: bool) -> Result<Vec<&str>, String> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let mut out = Vec::new();
    if path.is_empty() {
        return Ok(out); // the root of a bucket or filesystem
    }
    for (i, segment) in path.split('/').enumerate() {
        match segment {
            ".." => return Err("it has a `..` segment; give the savepoint's own path".to_owned()),
            "." if i == 0 && leading_dot => continue,
            "." => return Err("it has a `.` segment; give the savepoint's own path".to_owned()),
            "" => {
                return Err(
                    "it has an empty path segment (`//`); give the savepoint's own path".to_owned(),
                )
            }
            s => out.push(s),
        }
    }
    Ok(out)
}

/// The segments of the job store holding a savepoint whose path has `segments`.
fn savepoint_parent<'a>(segments: &'a [&'a str]) -> Result<&'a [&'a str], String> {
    match segments {
        [parent @ .., SAVEPOINTS_DIR, name] if is_savepoint_name(name) => Ok(parent),
        [.., name] if is_savepoint_name(name) => Err(format!(
            "`{name}` is not inside a `{SAVEPOINTS_DIR}` directory; Cairn keeps savepoints in \
             <store>/{SAVEPOINTS_DIR}/sp-<id>"
        )),
        _ => Err(format!(
            "it is not a savepoint directory: its last segment must be sp-<digits> inside \
             <store>/{SAVEPOINTS_DIR}/ (e.g. file:///data/job/{SAVEPOINTS_DIR}/sp-000000000042)"
        )),
    }
}

/// Refuses to work in a `file://` store through a symbolic link below its root: Cairn never
/// creates one, and deleting through one would delete outside the store. `relative` is a
/// directory key such as `savepoints/sp-000000000042`; each of its directories that exists
/// must be a real directory. The root itself may be a link (a mount).
pub fn check_no_links(root: &Path, relative: &str) -> Result<(), String> {
    let mut path = root.to_path_buf();
    for component in Path::new(relative).components() {
        let Component::Normal(name) = component else {
            return Err(format!("{relative:?} is not a plain relative path"));
        };
        path.push(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symbolic link; Cairn never creates one in a store, so nothing is \
                     deleted through it: remove the link, or delete by hand",
                    path.display()
                ))
            }
            Ok(_) => {}
            Err(_) => return Ok(()), // missing from here down: nothing to follow
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_classified_by_the_job_layout_and_one_epoch_level() {
        assert_eq!(
            classify("checkpoints/000000000001/_COMMIT.json"),
            Kind::Checkpoints
        );
        assert_eq!(classify("tasks/task-0000/db-1/000001.sst"), Kind::Tasks);
        assert_eq!(classify("generations/0000000001"), Kind::Generations);
        assert_eq!(
            classify("savepoints/sp-000000000042/task-0000/000001.sst"),
            Kind::Savepoint {
                dir: "savepoints/sp-000000000042/"
            }
        );
        assert_eq!(
            classify("epoch-1/savepoints/sp-7/_SAVEPOINT.json"),
            Kind::Savepoint {
                dir: "epoch-1/savepoints/sp-7/"
            }
        );
        assert_eq!(classify("epoch-12/tasks/x/y"), Kind::Tasks);
        assert_eq!(
            classify("epoch-2/generations/0000000001"),
            Kind::Generations
        );
        for foreign in [
            "notes.txt",
            "checkpoints",
            "savepoints/sp-1",
            "savepoints/mine/x",
            "savepoints/sp-1x/x",
            "savepoints/sp-/x",
            "epoch-1/epoch-2/tasks/x",
            "epoch-x/tasks/x",
            "epoch-1",
            "epoch-1/notes.txt",
            "other/checkpoints/1/x",
            "savepoints/sp-123456789012345678901/x",
        ] {
            assert_eq!(classify(foreign), Kind::Foreign, "{foreign}");
        }
    }

    #[test]
    fn savepoint_urls_split_into_their_store_and_prefix() {
        let sp = SavepointDir::parse("file:///data/job/savepoints/sp-000000000042").unwrap();
        assert_eq!(sp.store, StoreUrl::File("/data/job".into()));
        assert_eq!(sp.store_url(), "file:///data/job");
        assert_eq!(sp.prefix, "savepoints/sp-000000000042/");
        let sp = SavepointDir::parse("file:///data/job/epoch-1/savepoints/sp-3/").unwrap();
        assert_eq!(sp.store, StoreUrl::File("/data/job/epoch-1".into()));
        assert_eq!(sp.prefix, "savepoints/sp-3/");
        let sp = SavepointDir::parse("file://./.cairn/checkpoints/savepoints/sp-1").unwrap();
        assert_eq!(sp.store, StoreUrl::File(".cairn/checkpoints".into()));
        let sp = SavepointDir::parse("file://savepoints/sp-1").unwrap();
        assert_eq!(sp.store, StoreUrl::File(".".into()));
        let sp = SavepointDir::parse("s3://bucket/jobs/wc/savepoints/sp-9").unwrap();
        assert_eq!(
            sp.store,
            StoreUrl::Object {
                service: cairn_contract::ObjectService::S3,
                bucket: "bucket".into(),
                prefix: "jobs/wc".into()
            }
        );
        assert_eq!(sp.store_url(), "s3://bucket/jobs/wc");
        let sp = SavepointDir::parse("s3://bucket/savepoints/sp-9").unwrap();
        assert_eq!(sp.store_url(), "s3://bucket");
        let sp = SavepointDir::parse("hdfs://nn:8020/cairn/wc/savepoints/sp-9").unwrap();
        assert_eq!(sp.store_url(), "hdfs://nn:8020/cairn/wc");
        let sp = SavepointDir::parse("abfss://c@acct.dfs.core.windows.net/wc/savepoints/sp-9");
        assert_eq!(
            sp.unwrap().store_url(),
            "abfss://c@acct.dfs.core.windows.net/wc"
        );
    }

    #[test]
    fn urls_that_are_not_savepoint_directories_are_refused_saying_why() {
        let cases = [
            ("file:///data/job", "last segment must be sp-<digits>"),
            (
                "file:///data/job/checkpoints",
                "last segment must be sp-<digits>",
            ),
            (
                "file:///data/job/checkpoints/sp-1",
                "not inside a `savepoints`",
            ),
            ("file:///data/job/foreign/sp-1", "not inside a `savepoints`"),
            (
                "file:///data/job/savepoints/mine",
                "last segment must be sp-<digits>",
            ),
            (
                "file:///data/job/savepoints/sp-1x",
                "last segment must be sp-<digits>",
            ),
            (
                "file:///data/job/savepoints",
                "last segment must be sp-<digits>",
            ),
            ("file:///data/../etc/savepoints/sp-1", "`..` segment"),
            ("file:///data/job/savepoints/sp-1/..", "`..` segment"),
            ("file:///data/job/savepoints/./sp-1", "`.` segment"),
            ("file:///data//savepoints/sp-1", "empty path segment"),
            ("s3://bucket", "last segment must be sp-<digits>"),
            ("s3://bucket/a/../savepoints/sp-1", "`..` segment"),
            ("memory://x/savepoints/sp-1", "memory://"),
            ("/data/job/savepoints/sp-1", "not a store URL"),
            ("ftp://h/savepoints/sp-1", "not a store URL"),
        ];
        for (url, why) in cases {
            let err = SavepointDir::parse(url).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
        }
        let long = format!("file:///{}/savepoints/sp-1", "a".repeat(MAX_URL_LEN));
        assert!(SavepointDir::parse(&long)
            .unwrap_err()
            .contains("bytes long"));
    }

    #[test]
    fn links_below_the_root_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        std::fs::create_dir_all(root.join("savepoints")).unwrap();
        std::fs::create_dir_all(tmp.path().join("elsewhere")).unwrap();
        check_no_links(&root, "savepoints/sp-1").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), root.join("savepoints/sp-1"))
            .unwrap();
        let err = check_no_links(&root, "savepoints/sp-1").unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        // The root itself may be a link (a mount point).
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        check_no_links(&link, "savepoints").unwrap();
    }
}
