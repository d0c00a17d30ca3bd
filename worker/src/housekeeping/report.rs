//! How a housekeeping command fails: one line saying what is wrong and how to fix it, written to
//! the termination log (the pod's termination message, which the operator shows in the
//! StreamJob's status and events) and to stderr.
//!
//! The line is built from store errors, URLs and documents that the command did not write, so
//! it is made safe before anyone sees it: one line (control characters become spaces), at most
//! [`MAX_LINE`] bytes, and with every credential this process holds replaced by `<redacted>`
//! (an S3 server's error may echo a request's headers, and a session token is one of them).

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest line written, in bytes: Kubernetes keeps at most 4096 bytes of a termination
/// message. A `dispose` of many URLs names each refused one with its reason, which needs room.
pub const MAX_LINE: usize = 4000;

/// What replaces a credential in a line.
const REDACTED: &str = "<redacted>";

/// Credentials shorter than this are not searched for: a two-character "secret" would blank
/// out ordinary words, and no real key is that short.
const MIN_SECRET_LEN: usize = 8;

/// Largest credential file read for redaction.
const MAX_SECRET_FILE: u64 = 64 << 10;

/// The variables (and, under `CAIRN_S3_CREDENTIALS_DIR`, files) whose values are secrets.
const SECRET_VARS: &[&str] = &["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

/// A failed housekeeping command: its one line, already made safe (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(String);

impl Failure {
    /// A failure with `line`, made safe with this process's credentials.
    pub fn new(line: impl AsRef<str>) -> Self {
        Failure(safe_line(line.as_ref(), &process_secrets()))
    }

    /// The line.
    pub fn line(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// Writes the failure's line to `path` (created or truncated). Failing to write it is ignored:
/// the line still reaches stderr, and a missing log must not hide the command's own failure.
pub fn write_termination_log(path: Option<&Path>, failure: &Failure) {
    if let Some(path) = path {
        if let Err(e) = std::fs::write(path, format!("{}\n", failure.line())) {
            tracing::warn!(path = %path.display(), error = %e, "could not write the termination log");
        }
    }
}

/// `line` as one line of at most [`MAX_LINE`] bytes with each of `secrets` replaced.
pub fn safe_line(line: &str, secrets: &[String]) -> String {
    let mut out = line.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= MIN_SECRET_LEN) {
        out = out.replace(secret.as_str(), REDACTED);
    }
    let mut one = String::with_capacity(out.len());
    let mut last_space = false;
    for c in out.trim().chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        one.push(c);
    }
    truncate(one, MAX_LINE)
}

/// `s` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    const MARK: &str = "…";
    let mut end = max - MARK.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(MARK);
    s
}

/// The credentials this process can use: the secret variables, and the same names as files in
/// `CAIRN_S3_CREDENTIALS_DIR` (how the operator mounts a Secret).
fn process_secrets() -> Vec<String> {
    let mut secrets: Vec<String> = SECRET_VARS
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .collect();
    if let Some(dir) = std::env::var_os(crate::storage::ENV_CREDENTIALS_DIR) {
        let dir = PathBuf::from(dir);
        secrets.extend(
            SECRET_VARS
                .iter()
                .filter_map(|name| read_small(&dir.join(name))),
        );
    }
    secrets.iter().map(|s| s.trim().to_owned()).collect()
}

fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_SECRET_FILE)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_single_bounded_and_without_secrets() {
        let secrets = vec!["s3cr3t-value-123".to_owned(), "short".to_owned()];
        assert_eq!(
            safe_line(
                "  denied:\n\tkey s3cr3t-value-123 in\r\nrequest  (short)  ",
                &secrets
            ),
            "denied: key <redacted> in request (short)"
        );
        let long = "é".repeat(MAX_LINE);
        let cut = safe_line(&long, &[]);
        assert!(cut.len() <= MAX_LINE && cut.ends_with('…'), "{}", cut.len());
        assert_eq!(safe_line("fine", &[]), "fine");
    }

    #[test]
    fn the_termination_log_gets_the_line_and_a_missing_directory_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("termination-log");
        std::fs::write(&log, "an older, longer message\nwith two lines\n").unwrap();
        let failure = Failure::new("what is wrong; how to fix it");
        write_termination_log(Some(&log), &failure);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "what is wrong; how to fix it\n"
        );
        write_termination_log(Some(&tmp.path().join("missing/log")), &failure);
        write_termination_log(None, &failure);
    }
}
