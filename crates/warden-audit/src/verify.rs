//! Verification of a chain of audit files, and recovery of a truncated last line.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;
use warden_proof::{KeyProvider, canonicalize, sha256_prefixed};

use crate::GENESIS_HASH;

/// Where a chain is expected to start: the genesis by default, or a known entry after old
/// files were deleted by retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The sequence number of the entry before the first one given.
    pub seq: u64,
    /// That entry's hash.
    pub hash: String,
}

impl Default for Anchor {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Entries verified before the first break (all of them when intact).
    pub entries: u64,
    /// The sequence number where the chain first breaks: the entry expected at that position.
    pub first_broken_seq: Option<u64>,
    /// Why it broke, with file and line.
    pub reason: Option<String>,
    /// Files read.
    pub files: usize,
    /// The last verified entry's sequence number and hash.
    pub head: Anchor,
    /// Whether MACs were checked (a key was given).
    pub macs_checked: bool,
}

impl Report {
    /// True when nothing is broken.
    pub fn is_intact(&self) -> bool {
        self.first_broken_seq.is_none()
    }
}

/// A file could not be read (distinct from a broken chain).
#[derive(Debug, thiserror::Error)]
#[error("cannot read `{path}`: {source}")]
pub struct ReadError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// Expands directories into their `audit-*.jsonl` files, in name order; files are kept in the
/// order given.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ReadError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files = crate::writer::log_files(p).map_err(|source| ReadError {
                path: p.clone(),
                source,
            })?;
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Verifies the chain across `paths` (files in chain order, or directories), starting from the
/// genesis. With `key`, every entry must carry a valid MAC.
pub fn verify(paths: &[PathBuf], key: Option<&dyn KeyProvider>) -> Result<Report, ReadError> {
    verify_from(paths, key, Anchor::default())
}

/// [`verify`] starting after `anchor` (for logs whose oldest files were deleted by retention).
pub fn verify_from(
    paths: &[PathBuf],
    key: Option<&dyn KeyProvider>,
    anchor: Anchor,
) -> Result<Report, ReadError> {
    let files = expand_paths(paths)?;
    let mut report = Report {
        entries: 0,
        first_broken_seq: None,
        reason: None,
        files: files.len(),
        head: anchor,
        macs_checked: key.is_some(),
    };
    for path in &files {
        let file = File::open(path).map_err(|source| ReadError {
            path: path.clone(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        let mut lineno = 0u64;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|source| ReadError {
                    path: path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            lineno += 1;
            match check_line(&line, &report.head, key) {
                Ok((seq, hash)) => {
                    report.head = Anchor { seq, hash };
                    report.entries += 1;
                }
                Err(why) => {
                    report.first_broken_seq = Some(report.head.seq + 1);
                    report.reason = Some(format!("{}:{lineno}: {why}", path.display()));
                    return Ok(report);
                }
            }
        }
    }
    Ok(report)
}

/// Checks one line against the previous entry; on success advances `head`.
fn check_line(
    raw: &[u8],
    head: &Anchor,
    key: Option<&dyn KeyProvider>,
) -> Result<(u64, String), String> {
    let Some(body) = raw.strip_suffix(b"\n") else {
        return Err("truncated line (no final newline)".into());
    };
    let value: Value =
        serde_json::from_slice(body).map_err(|_| "line is not valid JSON".to_owned())?;
    // The line must be exactly its own canonical form: any other byte sequence was altered.
    let canonical = canonicalize(&value).map_err(|e| e.to_string())?;
    if canonical != body {
        return Err("line is not in canonical form".into());
    }
    let Value::Object(mut m) = value else {
        return Err("line is not a JSON object".into());
    };
    let hash = take_str(&mut m, "hash")?;
    let seq = m
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or("missing `seq`")?;
    let prev = m
        .get("prev")
        .and_then(Value::as_str)
        .ok_or("missing `prev`")?;
    let want_seq = head.seq + 1;
    if seq != want_seq {
        return Err(format!("sequence {seq} where {want_seq} was expected"));
    }
    if prev != head.hash {
        return Err("`prev` does not match the previous entry's hash".into());
    }
    // The hash covers everything but `hash` (the MAC included).
    let hashed = canonicalize(&Value::Object(m.clone())).map_err(|e| e.to_string())?;
    if sha256_prefixed(&hashed) != hash {
        return Err("`hash` does not match the entry".into());
    }
    if let Some(key) = key {
        let mac = match m.remove("mac") {
            Some(Value::String(s)) => s,
            Some(_) => return Err("`mac` is not a string".into()),
            None => return Err("missing `mac`".into()),
        };
        let body = canonicalize(&Value::Object(m)).map_err(|e| e.to_string())?;
        let tag = hex::decode(mac).map_err(|_| "`mac` is not hex".to_owned())?;
        if !key.verify_mac(&body, &tag).map_err(|e| e.to_string())? {
            return Err("`mac` does not verify".into());
        }
    }
    Ok((seq, hash))
}

fn take_str(m: &mut serde_json::Map<String, Value>, k: &str) -> Result<String, String> {
    match m.remove(k) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(format!("missing `{k}`")),
    }
}

/// Reads the last complete entry of `path` (its sequence number and hash), if any.
pub(crate) fn last_entry(path: &Path) -> std::io::Result<Option<Anchor>> {
    let mut text = String::new();
    File::open(path)?.read_to_string(&mut text)?;
    let Some(last) = text.lines().rev().find(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let v: Value = serde_json::from_str(last)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let seq = v.get("seq").and_then(Value::as_u64);
    let hash = v.get("hash").and_then(Value::as_str);
    match (seq, hash) {
        (Some(seq), Some(hash)) => Ok(Some(Anchor {
            seq,
            hash: hash.to_owned(),
        })),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "last audit entry lacks seq or hash",
        )),
    }
}

/// Recovery for a crash mid-write: if `path` ends in an incomplete line (no final newline),
/// truncates the file to the end of its last complete line and returns the bytes removed.
///
/// Only a line without its newline is removed: the writer acknowledges an entry (under
/// `fsync: always`) only after the whole line, newline included, is on disk, so a partial line
/// was never acknowledged. Complete lines are never touched; a damaged complete line is for
/// `verify` to report.
pub fn recover_truncated_tail(path: &Path) -> std::io::Result<u64> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // Scan back from the end for the last newline, in blocks.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    let mut keep = 0u64;
    'outer: while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = usize::try_from(end - start).unwrap_or(0);
        let chunk = buf
            .get_mut(..n)
            .ok_or_else(|| std::io::Error::other("block size"))?;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            break 'outer;
        }
        end = start;
    }
    if keep == len {
        return Ok(0);
    }
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(len - keep)
}
