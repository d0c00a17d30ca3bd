//! The `file` source: a directory with one append-only, newline-delimited file per partition
//! (`partition-0`, `partition-1`, …). A line is `key<TAB>value`, or just `key`. Offsets are
//! byte positions of the next line to read, so a restore seeks to the exact byte. Only whole
//! lines are consumed: a line still being written (no newline yet) waits for its newline,
//! except at the end of a file that is not followed.
//!
//! A line longer than [`MAX_LINE_LEN`] is a bad record: it is skipped up to its newline without
//! being held in memory, and counted in `cairn_bad_records_total`. The newline search
//! remembers where it stopped, so a long line costs time linear in its length however many
//! reads it takes to arrive.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Instant;

use cairn_contract::FileInput;
use prometheus::IntCounter;

use super::{Poll, RecordBatch, Source, SourceError};

const READ_CHUNK: usize = 256 * 1024;

/// Longest line read as a record (16 MiB, without its newline); longer lines are skipped and
/// counted as bad records.
pub const MAX_LINE_LEN: usize = 16 << 20;

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
    /// Where the next newline search starts in `buf`: `buf[consumed..scan_from]` is known to
    /// hold no newline.
    scan_from: usize,
    /// Lines longer than this are skipped as bad records.
    max_line: usize,
    /// File offset of the over-long line being skipped, whose newline has not been read yet.
    /// Its bytes are dropped as they arrive; the position stays at its start until it ends.
    skipping: Option<u64>,
    /// Bytes examined by the newline search, to check in tests that it is linear.
    bytes_scanned: u64,
    /// Over-long lines skipped.
    bad_records: u64,
    bad_counter: Option<IntCounter>,
    last_bad_log: Option<Instant>,
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
            scan_from: 0,
            max_line: MAX_LINE_LEN,
            skipping: None,
            bytes_scanned: 0,
            bad_records: 0,
            bad_counter: None,
            last_bad_log: None,
        }
    }

    /// Also counts skipped lines in `counter` (the task's `cairn_bad_records_total`).
    pub fn with_bad_record_counter(mut self, counter: IntCounter) -> Self {
        self.bad_counter = Some(counter);
        self
    }

    /// Lines skipped as bad records so far (longer than [`MAX_LINE_LEN`]).
    pub fn bad_records(&self) -> u64 {
        self.bad_records
    }

    /// Bytes the newline search has examined so far: each byte once, however the lines arrive.
    pub fn bytes_scanned(&self) -> u64 {
        self.bytes_scanned
    }

    /// The same source with another line limit (tests use small ones).
    #[cfg(test)]
    fn with_max_line(mut self, max_line: usize) -> Self {
        self.max_line = max_line;
        self
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
                self.scan_from = 0;
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
            self.scan_from -= self.consumed;
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

    /// The next complete line in the buffer (its range in `buf`, without the newline), marked
    /// consumed; `None` when the buffer holds no complete line yet. Lines longer than
    /// `max_line` are skipped and counted on the way.
    fn next_line(&mut self) -> Option<(usize, usize)> {
        loop {
            let unscanned = &self.buf[self.scan_from..];
            let found = unscanned.iter().position(|b| *b == b'\n');
            self.bytes_scanned += found.map_or(unscanned.len(), |at| at + 1) as u64;
            let Some(at) = found else {
                self.scan_from = self.buf.len();
                self.drop_long_line();
                return None;
            };
            let end = self.scan_from + at;
            let start = self.consumed;
            self.consumed = end + 1;
            self.scan_from = self.consumed;
            let line_offset = self
                .skipping
                .take()
                .unwrap_or(self.buf_offset + start as u64);
            let line_len = self.buf_offset + end as u64 - line_offset;
            if line_len > self.max_line as u64 {
                self.skipped(line_offset, line_len);
                continue;
            }
            return Some((start, end));
        }
    }

    /// Once the unfinished line at the end of the buffer is longer than `max_line`, it is
    /// skipped: its buffered bytes are dropped now (and later ones as they arrive), so memory
    /// stays bounded by the longest line kept.
    fn drop_long_line(&mut self) {
        if self.skipping.is_none() && self.buf.len() - self.consumed > self.max_line {
            self.skipping = Some(self.buf_offset + self.consumed as u64);
        }
        if self.skipping.is_some() {
            self.buf_offset += self.buf.len() as u64;
            self.buf.clear();
            self.consumed = 0;
            self.scan_from = 0;
        }
    }

    /// Counts the over-long line of `len` bytes at `offset` as a bad record, and says so in the
    /// log at most once a second (a file of such lines must not flood it).
    fn skipped(&mut self, offset: u64, len: u64) {
        self.bad_records += 1;
        if let Some(counter) = &self.bad_counter {
            counter.inc();
        }
        if self.last_bad_log.is_none_or(|t| t.elapsed().as_secs() >= 1) {
            self.last_bad_log = Some(Instant::now());
            tracing::warn!(
                path = %self.path.display(),
                offset,
                bytes = len,
                max = self.max_line,
                "skipping bad record: the line is longer than the maximum record size (counted in cairn_bad_records_total)"
            );
        }
    }

    fn push_line(batch: &mut RecordBatch, offset: u64, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.iter().position(|b| *b == b'\t') {
            Some(tab) => batch.push(offset, &line[..tab], &line[tab + 1..]),
            None => batch.push(offset, line, b""),
        }
    }

    /// Not followed, at the end of the file: the last line, which has no newline, is still a
    /// record (or a bad one, if too long). `true` if it became a record.
    fn finish_last_line(&mut self, batch: &mut RecordBatch) -> bool {
        let offset = self
            .skipping
            .take()
            .unwrap_or(self.buf_offset + self.consumed as u64);
        let end = self.buf_offset + self.buf.len() as u64;
        if end == offset {
            return false;
        }
        let len = end - offset;
        let kept = len <= self.max_line as u64;
        if kept {
            Self::push_line(batch, offset, &self.buf[self.consumed..]);
        } else {
            self.skipped(offset, len);
        }
        self.consumed = self.buf.len();
        self.scan_from = self.consumed;
        kept
    }
}

impl Source for FileSource {
    fn poll(&mut self, batch: &mut RecordBatch, max: usize) -> Result<Poll, SourceError> {
        if !self.ensure_open()? {
            return Ok(if self.follow { Poll::Idle } else { Poll::End });
        }
        let mut produced = 0;
        loop {
            while produced < max && !batch.is_full() {
                let Some((start, end)) = self.next_line() else {
                    break;
                };
                let offset = self.buf_offset + start as u64;
                Self::push_line(batch, offset, &self.buf[start..end]);
                produced += 1;
            }
            if produced >= max || batch.is_full() {
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
        if self.finish_last_line(batch) {
            return Ok(Poll::Records);
        }
        Ok(Poll::End)
    }

    fn position(&self) -> u64 {
        self.skipping
            .unwrap_or(self.buf_offset + self.consumed as u64)
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
        self.scan_from = 0;
        self.skipping = None;
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

    fn source(dir: &std::path::Path, follow: bool) -> FileSource {
        let spec = FileInput {
            partitions: 1,
            path: dir.into(),
            follow,
        };
        FileSource::new(&spec, 0)
    }

    fn owned(records: &[(u64, &str, &str)]) -> Vec<(u64, String, String)> {
        records
            .iter()
            .map(|(o, k, v)| (*o, k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn lines_over_the_limit_are_skipped_and_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let long = "x".repeat(50);
        let just_over = "y".repeat(11);
        let just_fits = format!("{}\t{}", "c".repeat(4), "5".repeat(5));
        let text = format!("a\t1\n{long}\nb\t2\n{just_over}\n{just_fits}\nd\r\n{long}");
        std::fs::write(tmp.path().join("partition-0"), &text).unwrap();
        let mut src = source(tmp.path(), false).with_max_line(10);
        let fits_at = 4 + 51 + 4 + 12;
        assert_eq!(
            read_all(&mut src),
            owned(&[
                (0, "a", "1"),
                (55, "b", "2"),
                (fits_at, "cccc", "55555"),
                (fits_at + 11, "d", ""),
            ])
        );
        assert_eq!(
            src.bad_records(),
            3,
            "the 50- and 11-byte lines and the last one"
        );
        assert_eq!(src.position(), text.len() as u64);
    }

    /// A line over the limit that arrives in pieces is dropped as it arrives; until its newline
    /// the position stays at its start, so a checkpoint taken meanwhile resumes by skipping it
    /// again rather than reading its tail as a line.
    #[test]
    fn a_growing_long_line_keeps_the_position_at_its_start() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("partition-0");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"a\t1\n").unwrap();
        let mut src = source(tmp.path(), true).with_max_line(100);
        assert_eq!(read_all(&mut src), owned(&[(0, "a", "1")]));
        for _ in 0..10 {
            f.write_all(&[b'z'; 40]).unwrap();
            assert_eq!(read_all(&mut src), []);
            assert_eq!(src.position(), 4);
        }
        assert!(src.buf.len() <= 100, "{} bytes held", src.buf.len());
        f.write_all(b"\nb\t2\n").unwrap();
        assert_eq!(read_all(&mut src), owned(&[(405, "b", "2")]));
        assert_eq!(src.bad_records(), 1);
        assert_eq!(src.position(), 409);
        // A restore at the checkpointed start of the long line skips it again.
        src.seek(4).unwrap();
        assert_eq!(read_all(&mut src), owned(&[(405, "b", "2")]));
        assert_eq!(src.bad_records(), 2);
    }

    #[test]
    fn a_line_over_16mib_is_a_bad_record_between_exact_records() {
        let tmp = tempfile::tempdir().unwrap();
        let mut text = b"a\t1\nb\t2\n".to_vec();
        text.extend(std::iter::repeat_n(b'k', MAX_LINE_LEN + 1));
        text.extend_from_slice(b"\tv\nc\t3\n");
        text.extend(std::iter::repeat_n(b'k', MAX_LINE_LEN - 2));
        text.extend_from_slice(b"\tv\nd\t4\n");
        std::fs::write(tmp.path().join("partition-0"), &text).unwrap();
        let mut src = source(tmp.path(), false);
        let mut records = Vec::new();
        loop {
            let mut b = RecordBatch::default();
            b.clear(0);
            if src.poll(&mut b, 1024).unwrap() != Poll::Records {
                break;
            }
            for i in 0..b.len() {
                let r = b.get(i);
                records.push((
                    r.offset,
                    r.key.len(),
                    String::from_utf8_lossy(r.value).into_owned(),
                ));
            }
        }
        let c_at = 8 + MAX_LINE_LEN as u64 + 4;
        let fits_at = c_at + 4;
        let d_at = fits_at + MAX_LINE_LEN as u64 + 1;
        assert_eq!(
            records,
            [
                (0, 1, "1".to_owned()),
                (4, 1, "2".to_owned()),
                (c_at, 1, "3".to_owned()),
                (fits_at, MAX_LINE_LEN - 2, "v".to_owned()),
                (d_at, 1, "4".to_owned()),
            ]
        );
        assert_eq!(src.bad_records(), 1);
        assert_eq!(src.position(), text.len() as u64);
    }

    /// The newline search examines every byte exactly once, however many reads a long line
    /// takes to arrive (it used to start again from the line's start after every read).
    #[test]
    fn the_newline_search_is_linear() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("partition-0");
        let mut text = vec![b'k'; 20 * READ_CHUNK];
        text.extend_from_slice(b"\tv\nb\t2\n");
        std::fs::write(&path, &text).unwrap();
        let mut src = source(tmp.path(), false);
        let records = read_all(&mut src);
        assert_eq!(records.len(), 2);
        assert_eq!(src.bytes_scanned(), text.len() as u64);

        // Followed, the same line arriving in small appends between polls.
        let mut f = File::create(&path).unwrap();
        let mut src = source(tmp.path(), true);
        for _ in 0..200 {
            f.write_all(&[b'k'; 1000]).unwrap();
            assert_eq!(read_all(&mut src), []);
        }
        f.write_all(b"\n").unwrap();
        assert_eq!(read_all(&mut src).len(), 1);
        assert_eq!(src.bytes_scanned(), 200_001);
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
