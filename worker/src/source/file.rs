//! The `file` source: a directory with one append-only, newline-delimited file per partition
//! (`partition-0`, `partition-1`, …). A line is `key<TAB>value`, or just `key`. Offsets are
//! byte positions of the next line to read, so a restore seeks to the exact byte. Only whole
//! lines are consumed: a line still being written (no newline yet) waits for its newline,
//! except at the end of a file that is not followed.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use cairn_spec::FileInput;

use super::{Poll, RecordBatch, Source, SourceError};

const READ_CHUNK: usize = 256 * 1024;

/// One partition file.
pub struct FileSource {
    path: PathBuf,
    follow: bool,
    file: Option<File>,
    /// Byte offset of `buf[0]` in the file.
    buf_offset: u64,
    buf: Vec<u8>,
    /// Consumed bytes at the front of `buf`.
    consumed: usize,
}

impl FileSource {
    /// Partition `p` of `spec`, at offset 0.
    pub fn new(spec: &FileInput, partition: u32) -> Self {
        FileSource {
            path: spec.path.join(format!("partition-{partition}")),
            follow: spec.follow,
            file: None,
            buf_offset: 0,
            buf: Vec::new(),
            consumed: 0,
        }
    }

    fn io(&self, source: std::io::Error) -> SourceError {
        SourceError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Opens the file if it exists; `Ok(false)` if it does not exist yet.
    fn ensure_open(&mut self) -> Result<bool, SourceError> {
        if self.file.is_some() {
            return Ok(true);
        }
        match File::open(&self.path) {
            Ok(mut f) => {
                f.seek(SeekFrom::Start(self.buf_offset + self.consumed as u64))
                    .map_err(|e| self.io(e))?;
                self.buf_offset += self.consumed as u64;
                self.buf.clear();
                self.consumed = 0;
                self.file = Some(f);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Reads more bytes into the buffer; returns how many were read.
    fn fill(&mut self) -> Result<usize, SourceError> {
        if self.consumed > 0 && self.consumed * 2 >= self.buf.len() {
            self.buf.drain(..self.consumed);
            self.buf_offset += self.consumed as u64;
            self.consumed = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let file = self.file.as_mut().expect("opened");
        let n = match file.read(&mut self.buf[old..]) {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(old);
                return Err(self.io(e));
            }
        };
        self.buf.truncate(old + n);
        Ok(n)
    }

    fn push_line(batch: &mut RecordBatch, offset: u64, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.iter().position(|b| *b == b'\t') {
            Some(tab) => batch.push(offset, &line[..tab], &line[tab + 1..]),
            None => batch.push(offset, line, b""),
        }
    }
}

impl Source for FileSource {
    fn poll(&mut self, batch: &mut RecordBatch, max: usize) -> Result<Poll, SourceError> {
        if !self.ensure_open()? {
            return Ok(if self.follow { Poll::Idle } else { Poll::End });
        }
        let mut produced = 0;
        loop {
            while produced < max {
                let rest = &self.buf[self.consumed..];
                let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
                    break;
                };
                let offset = self.buf_offset + self.consumed as u64;
                Self::push_line(batch, offset, &rest[..nl]);
                self.consumed += nl + 1;
                produced += 1;
            }
            if produced >= max {
                return Ok(Poll::Records);
            }
            if self.fill()? == 0 {
                break;
            }
        }
        if produced > 0 {
            return Ok(Poll::Records);
        }
        if self.follow {
            return Ok(Poll::Idle);
        }
        // Not followed: a last line without a newline is still a record.
        if self.consumed < self.buf.len() {
            let offset = self.buf_offset + self.consumed as u64;
            let line = self.buf[self.consumed..].to_vec();
            Self::push_line(batch, offset, &line);
            self.consumed = self.buf.len();
            return Ok(Poll::Records);
        }
        Ok(Poll::End)
    }

    fn position(&self) -> u64 {
        self.buf_offset + self.consumed as u64
    }

    fn seek(&mut self, offset: u64) -> Result<(), SourceError> {
        let len = match std::fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(self.io(e)),
        };
        if offset > len {
            return Err(SourceError::OffsetOutOfRange {
                what: self.path.display().to_string(),
                offset,
                end: len,
            });
        }
        self.file = None;
        self.buf.clear();
        self.consumed = 0;
        self.buf_offset = offset;
        Ok(())
    }

    fn lag(&self) -> Option<u64> {
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        Some(size.saturating_sub(self.position()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(src: &mut FileSource) -> Vec<(u64, String, String)> {
        let mut out = Vec::new();
        loop {
            let mut b = RecordBatch::default();
            b.clear(0);
            match src.poll(&mut b, 2).unwrap() {
                Poll::Records => {}
                _ => return out,
            }
            for i in 0..b.len() {
                let r = b.get(i);
                out.push((
                    r.offset,
                    String::from_utf8_lossy(r.key).into(),
                    String::from_utf8_lossy(r.value).into(),
                ));
            }
        }
    }

    #[test]
    fn reads_whole_lines_follows_growth_and_seeks_by_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("partition-0");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"a\t1\nbb\t2\nccc").unwrap();
        let spec = FileInput {
            partitions: 1,
            path: tmp.path().into(),
            follow: true,
        };
        let mut src = FileSource::new(&spec, 0);
        assert_eq!(
            read_all(&mut src),
            vec![(0, "a".into(), "1".into()), (4, "bb".into(), "2".into())]
        );
        assert_eq!(src.position(), 9);
        f.write_all(b"\nd\n").unwrap();
        assert_eq!(
            read_all(&mut src),
            vec![(9, "ccc".into(), "".into()), (13, "d".into(), "".into())]
        );
        src.seek(4).unwrap();
        assert_eq!(read_all(&mut src).len(), 3);
        assert!(src
            .seek(100)
            .unwrap_err()
            .to_string()
            .contains("beyond the end"));
    }

    #[test]
    fn unfollowed_file_ends_and_keeps_last_partial_line() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("partition-1"), b"x\ny").unwrap();
        let spec = FileInput {
            partitions: 2,
            path: tmp.path().into(),
            follow: false,
        };
        let mut src = FileSource::new(&spec, 1);
        assert_eq!(
            read_all(&mut src),
            vec![(0, "x".into(), "".into()), (2, "y".into(), "".into())]
        );
        let mut b = RecordBatch::default();
        assert_eq!(src.poll(&mut b, 10).unwrap(), Poll::End);
        // A missing partition file is simply empty when not followed.
        let mut missing = FileSource::new(&spec, 0);
        assert_eq!(missing.poll(&mut b, 10).unwrap(), Poll::End);
    }
}
