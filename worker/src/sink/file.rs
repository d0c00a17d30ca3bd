//! The exactly-once `file` sink.
//!
//! Layout under the output path, per task:
//! ```text
//! task-0003/000000000007.out          published output of the epoch that ended at checkpoint 7
//! task-0003/.pending/open.part        output being written now
//! task-0003/.pending/000000000008.part sealed at checkpoint 8, waiting for its commit
//! task-0003/.superseded/…             published files newer than a checkpoint restored later
//! ```
//! A part is sealed by a rename at the checkpoint's synchronous phase, made durable in the
//! asynchronous phase before the task acknowledges, and published (renamed to `.out`) when the
//! job commits. On restart from checkpoint `c`, parts up to `c` are published (the commit
//! happened, the process died before publishing), later parts and the open part are deleted
//! (their records will be produced again), and any published file newer than `c` — possible
//! only when restore had to fall back past a corrupt checkpoint — is moved to `.superseded/`,
//! so the visible output is exactly the output of the restored lineage. Epochs in which the
//! task emitted nothing leave no file.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Sealed, Sink, SinkError};

const OPEN: &str = "open.part";

/// One task's file output.
pub struct FileSink {
    dir: PathBuf,
    pending: PathBuf,
    out: Option<BufWriter<File>>,
    line: Vec<u8>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn part_name(id: u64) -> String {
    format!("{id:012}.part")
}

fn out_name(id: u64) -> String {
    format!("{id:012}.out")
}

/// The checkpoint id in a `<id>.part` / `<id>.out` file name.
fn id_of(name: &str, suffix: &str) -> Option<u64> {
    name.strip_suffix(suffix)?.parse().ok()
}

impl FileSink {
    /// Opens task `task`'s output under `root`, recovering as described in the module docs.
    pub fn open(root: &Path, task: u32, restored: Option<u64>) -> Result<Self, SinkError> {
        let dir = root.join(format!("task-{task:04}"));
        let pending = dir.join(".pending");
        fs::create_dir_all(&pending).map_err(io(&pending))?;
        let sink = FileSink {
            dir,
            pending,
            out: None,
            line: Vec::with_capacity(256),
        };
        sink.recover(restored.unwrap_or(0))?;
        Ok(sink)
    }

    fn recover(&self, restored: u64) -> Result<(), SinkError> {
        for entry in fs::read_dir(&self.pending).map_err(io(&self.pending))? {
            let entry = entry.map_err(io(&self.pending))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match id_of(&name, ".part") {
                Some(id) if id <= restored => self.publish_one(id)?,
                _ => fs::remove_file(entry.path()).map_err(io(&entry.path()))?,
            }
        }
        let mut superseded = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if id_of(&name, ".out").is_some_and(|id| id > restored) {
                superseded.push(name);
            }
        }
        if !superseded.is_empty() {
            let target = self.dir.join(".superseded");
            fs::create_dir_all(&target).map_err(io(&target))?;
            for name in superseded {
                tracing::warn!(file = %self.dir.join(&name).display(), restored, "output newer than the restored checkpoint moved to .superseded/");
                fs::rename(self.dir.join(&name), target.join(&name)).map_err(io(&target))?;
            }
        }
        sync_dir(&self.dir)?;
        sync_dir(&self.pending)
    }

    fn publish_one(&self, id: u64) -> Result<(), SinkError> {
        let from = self.pending.join(part_name(id));
        let to = self.dir.join(out_name(id));
        fs::rename(&from, &to).map_err(io(&from))
    }
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))
}

impl Sink for FileSink {
    fn write(&mut self, key: &[u8], value: &[u8]) -> Result<(), SinkError> {
        if self.out.is_none() {
            let path = self.pending.join(OPEN);
            let file = File::create(&path).map_err(io(&path))?;
            self.out = Some(BufWriter::with_capacity(1 << 20, file));
        }
        self.line.clear();
        self.line.extend_from_slice(key);
        self.line.push(b'\t');
        self.line.extend_from_slice(value);
        self.line.push(b'\n');
        let out = self.out.as_mut().expect("opened above");
        out.write_all(&self.line).map_err(io(&self.pending))
    }

    fn seal(&mut self, id: u64) -> Result<Sealed, SinkError> {
        let Some(out) = self.out.take() else {
            return Ok(Sealed::default());
        };
        let open = self.pending.join(OPEN);
        out.into_inner().map_err(|e| SinkError::Io {
            path: open.clone(),
            source: e.into_error(),
        })?;
        let sealed = self.pending.join(part_name(id));
        fs::rename(&open, &sealed).map_err(io(&open))?;
        Ok(Sealed {
            files: vec![sealed],
            dirs: vec![self.pending.clone()],
            waits: Vec::new(),
        })
    }

    fn publish(&mut self, id: u64) -> Result<(), SinkError> {
        let mut published = false;
        for entry in fs::read_dir(&self.pending).map_err(io(&self.pending))? {
            let entry = entry.map_err(io(&self.pending))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(part) = id_of(&name, ".part").filter(|p| *p <= id) {
                self.publish_one(part)?;
                published = true;
            }
        }
        if published {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(root: &Path) -> Vec<String> {
        let dir = root.join("task-0000");
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".out"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| fs::read_to_string(dir.join(n)).unwrap())
            .collect()
    }

    #[test]
    fn output_is_published_only_at_commit_and_recovered_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = FileSink::open(tmp.path(), 0, None).unwrap();
        s.write(b"a", b"1").unwrap();
        s.seal(1).unwrap().make_durable().unwrap();
        s.write(b"b", b"2").unwrap();
        s.seal(2).unwrap();
        s.write(b"c", b"3").unwrap(); // open, never sealed
        assert!(published(tmp.path()).is_empty());
        s.publish(1).unwrap();
        assert_eq!(published(tmp.path()), vec!["a\t1\n"]);
        drop(s);
        // Crash; checkpoint 2 had committed but was not published yet.
        let mut s = FileSink::open(tmp.path(), 0, Some(2)).unwrap();
        assert_eq!(published(tmp.path()), vec!["a\t1\n", "b\t2\n"]);
        // An empty epoch leaves no file.
        assert!(s.seal(3).unwrap().files.is_empty());
        s.write(b"d", b"4").unwrap();
        s.seal(4).unwrap();
        drop(s);
        // Crash before 4 committed: its part is discarded.
        FileSink::open(tmp.path(), 0, Some(3)).unwrap();
        assert_eq!(published(tmp.path()), vec!["a\t1\n", "b\t2\n"]);
        // Falling back past a published epoch moves it aside.
        FileSink::open(tmp.path(), 0, Some(1)).unwrap();
        assert_eq!(published(tmp.path()), vec!["a\t1\n"]);
        assert!(tmp
            .path()
            .join("task-0000/.superseded/000000000002.out")
            .exists());
    }
}
