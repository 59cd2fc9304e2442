//! Verification of a chain of audit files, and recovery of a truncated last line.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use std::borrow::Cow;

use serde_json::Value;
use warden_proof::{KeyProvider, sha256_prefixed};

use crate::entry::Anchor;

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
            let mut files = crate::files::log_files(p).map_err(|source| ReadError {
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
    verify_checkpoint(paths, key, anchor, None)
}

/// [`verify_from`], and with `checkpoint` (an entry known to have been in the log: a
/// [`crate::Checkpoint`]'s anchor) the log must hold that entry with that hash: a log that ends
/// before it was truncated, one with another hash there was rewritten. Both are breaks.
pub fn verify_checkpoint(
    paths: &[PathBuf],
    key: Option<&dyn KeyProvider>,
    anchor: Anchor,
    checkpoint: Option<&Anchor>,
) -> Result<Report, ReadError> {
    let mut report = verify_chain(paths, key, anchor, checkpoint)?;
    if let Some(cp) = checkpoint
        && report.is_intact()
        && report.head.seq < cp.seq
    {
        report.first_broken_seq = Some(report.head.seq + 1);
        report.reason = Some(format!(
            "truncated: the log ends at sequence {} but the checkpoint records sequence {} \
             (hash {}); entries {}..={} were removed",
            report.head.seq,
            cp.seq,
            cp.hash,
            report.head.seq + 1,
            cp.seq
        ));
    }
    Ok(report)
}

fn verify_chain(
    paths: &[PathBuf],
    key: Option<&dyn KeyProvider>,
    anchor: Anchor,
    checkpoint: Option<&Anchor>,
) -> Result<Report, ReadError> {
    if let Some(cp) = checkpoint
        && cp.seq == anchor.seq
        && cp.hash != anchor.hash
    {
        return Ok(Report {
            entries: 0,
            first_broken_seq: Some(anchor.seq),
            reason: Some(format!(
                "entry {} has hash {} but the checkpoint records {}",
                anchor.seq, anchor.hash, cp.hash
            )),
            files: 0,
            head: anchor,
            macs_checked: key.is_some(),
        });
    }
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
                    if let Some(cp) = checkpoint
                        && cp.seq == seq
                        && cp.hash != hash
                    {
                        report.first_broken_seq = Some(seq);
                        report.reason = Some(format!(
                            "{}:{lineno}: entry {seq} has hash {hash} but the checkpoint \
                             records {}: the log was rewritten",
                            path.display(),
                            cp.hash
                        ));
                        return Ok(report);
                    }
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

/// An entry as written: every field typed, nothing else allowed (so no nested objects and no
/// duplicate keys can hide a second `hash` or `mac` member).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    seq: u64,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(borrow)]
    hash: Cow<'a, str>,
    #[serde(default, borrow)]
    mac: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    audited: Vec<Cow<'a, str>>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cost_micro_usd: Option<u64>,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    tenant: Option<Cow<'a, str>>,
    #[serde(borrow)]
    principal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    session: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    tool: Option<Cow<'a, str>>,
    #[serde(borrow)]
    args_hash: Option<Cow<'a, str>>,
    #[serde(borrow)]
    decision: Cow<'a, str>,
    #[serde(borrow)]
    rule: Option<Cow<'a, str>>,
    #[serde(borrow)]
    findings: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    policy: Cow<'a, str>,
    latency_us: u64,
}

/// Removes the member `,"name":"value"` from a canonical line. In JSON text the two bytes `,"`
/// cannot occur inside a string (an unescaped quote ends it), and the schema allows no nested
/// objects, so the first match is the top-level member.
fn without_member(line: &[u8], name: &str, value: &str) -> Option<Vec<u8>> {
    let member = format!(",\"{name}\":\"{value}\"");
    let m = member.as_bytes();
    let pos = line.windows(m.len()).position(|w| w == m)?;
    let mut out = Vec::with_capacity(line.len() - m.len());
    out.extend_from_slice(line.get(..pos)?);
    out.extend_from_slice(line.get(pos + m.len()..)?);
    Some(out)
}

/// Checks one line against the previous entry; returns its sequence number and hash.
///
/// The hash is checked over the line's own bytes with the `hash` member removed, which for a
/// line the writer produced is exactly the RFC 8785 form of the entry without `hash`; any other
/// byte sequence (altered, re-spaced, re-escaped) fails, so no re-canonicalisation is needed.
fn check_line(
    raw: &[u8],
    head: &Anchor,
    key: Option<&dyn KeyProvider>,
) -> Result<(u64, String), String> {
    let Some(body) = raw.strip_suffix(b"\n") else {
        return Err("truncated line (no final newline)".into());
    };
    let line: Line<'_> =
        serde_json::from_slice(body).map_err(|e| format!("not a valid audit entry: {e}"))?;
    check_canonical(&line, body)?;
    let want_seq = head.seq + 1;
    if line.seq != want_seq {
        return Err(format!(
            "sequence {} where {want_seq} was expected",
            line.seq
        ));
    }
    if line.prev != head.hash {
        return Err("`prev` does not match the previous entry's hash".into());
    }
    // The hash covers everything but `hash` (the MAC included).
    let hashed =
        without_member(body, "hash", &line.hash).ok_or("`hash` member is not in canonical form")?;
    if sha256_prefixed(&hashed) != line.hash {
        return Err("`hash` does not match the entry".into());
    }
    if let Some(key) = key {
        let mac = line.mac.as_deref().ok_or("missing `mac`")?;
        let body =
            without_member(&hashed, "mac", mac).ok_or("`mac` member is not in canonical form")?;
        let tag = hex::decode(mac).map_err(|_| "`mac` is not hex".to_owned())?;
        if !key.verify_mac(&body, &tag).map_err(|e| e.to_string())? {
            return Err("`mac` does not verify".into());
        }
    }
    Ok((line.seq, line.hash.into_owned()))
}

/// Accepts only the one byte sequence the writer produces for `line`: members in RFC 8785
/// order (a moved `hash` or `mac` member fails), RFC 8785 string and number spelling, and
/// `hash`, `prev` and `mac` in lowercase hex (an upper-case MAC would otherwise decode to the
/// same tag and verify).
fn check_canonical(line: &Line<'_>, body: &[u8]) -> Result<(), String> {
    if !crate::entry::is_hash(&line.hash) {
        return Err("`hash` is not `sha256:` and 64 lowercase hex digits".into());
    }
    if !crate::entry::is_hash(&line.prev) {
        return Err("`prev` is not `sha256:` and 64 lowercase hex digits".into());
    }
    if line
        .mac
        .as_deref()
        .is_some_and(|m| !crate::entry::is_lower_hex(m, 64))
    {
        return Err("`mac` is not 64 lowercase hex digits".into());
    }
    let sealed = crate::entry::Sealed {
        args_hash: line.args_hash.as_deref(),
        audited: &line.audited,
        cost_micro_usd: line.cost_micro_usd,
        decision: &line.decision,
        findings: &line.findings,
        hash: Some(&line.hash),
        input_tokens: line.input_tokens,
        kind: &line.kind,
        latency_us: line.latency_us,
        mac: line.mac.as_deref(),
        model: line.model.as_deref(),
        output_tokens: line.output_tokens,
        policy: &line.policy,
        prev: &line.prev,
        principal: line.principal.as_deref(),
        rule: line.rule.as_deref(),
        seq: line.seq,
        session: line.session.as_deref(),
        tenant: line.tenant.as_deref(),
        time: &line.time,
        tool: line.tool.as_deref(),
    };
    let canonical = sealed.canonical().map_err(|e| e.to_string())?;
    if canonical != body {
        return Err(
            "not in canonical form (member order or spelling differs from the RFC 8785 \
                    form the writer produces)"
                .into(),
        );
    }
    Ok(())
}

/// Where in the log (`files`, in chain order) the entry `seq` is, and its hash; `None` when no
/// file holds it. Reads the first line of files from the newest back, then scans the one file
/// that can hold it.
pub(crate) fn find_entry(files: &[PathBuf], seq: u64) -> std::io::Result<Option<String>> {
    for path in files.iter().rev() {
        let mut reader = BufReader::new(File::open(path)?);
        let mut first = Vec::new();
        if reader.read_until(b'\n', &mut first)? == 0 {
            continue;
        }
        let Some(first_seq) = entry_seq_hash(&first).map(|(s, _)| s) else {
            continue;
        };
        if first_seq > seq {
            continue;
        }
        let mut line = first;
        loop {
            if let Some((s, h)) = entry_seq_hash(&line)
                && s == seq
            {
                return Ok(Some(h));
            }
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(None);
            }
        }
    }
    Ok(None)
}

fn entry_seq_hash(line: &[u8]) -> Option<(u64, String)> {
    let v: Value = serde_json::from_slice(line.strip_suffix(b"\n").unwrap_or(line)).ok()?;
    Some((v.get("seq")?.as_u64()?, v.get("hash")?.as_str()?.to_owned()))
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

/// What [`recover_truncated_tail`] did to a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes removed from the end (a partial line); 0 when none.
    pub removed_bytes: u64,
    /// Where the removed bytes started (the new length of the file).
    pub offset: u64,
    /// `sha256:` hex of the removed bytes (to match them with a copy; never the bytes
    /// themselves, which may hold identifiers).
    pub removed_sha256: Option<String>,
    /// A complete entry that lacked only its final newline got one.
    pub newline_added: bool,
}

impl Recovery {
    /// True when the file was changed.
    pub fn changed(&self) -> bool {
        self.removed_bytes > 0 || self.newline_added
    }
}

/// Recovery for a crash mid-write: when `path` does not end in a newline, either completes or
/// cuts its last line, and says which.
///
/// - The last line is a complete audit entry (it parses as one) that lacks only its newline:
///   the newline is added. A complete entry is never dropped, whatever became of its newline.
/// - Otherwise the partial line is cut, back to the end of the last complete line. The writer
///   acknowledges an entry (under `fsync: always`) only after the whole line, newline included,
///   is on disk, so a partial line was never acknowledged.
///
/// Complete lines are never touched; a damaged complete line is for `verify` to report.
pub fn recover_truncated_tail(path: &Path) -> std::io::Result<Recovery> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Recovery::default());
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
        return Ok(Recovery::default());
    }
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(keep))?;
    file.read_to_end(&mut tail)?;
    if serde_json::from_slice::<Line<'_>>(&tail).is_ok() {
        file.seek(SeekFrom::End(0))?;
        std::io::Write::write_all(&mut file, b"\n")?;
        file.sync_all()?;
        return Ok(Recovery {
            newline_added: true,
            offset: len,
            ..Recovery::default()
        });
    }
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(Recovery {
        removed_bytes: len - keep,
        offset: keep,
        removed_sha256: Some(sha256_prefixed(&tail)),
        newline_added: false,
    })
}
