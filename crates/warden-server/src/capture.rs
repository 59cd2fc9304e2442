//! Capture (`capture:`): every request the daemon decides, with its tenant and outcome, written
//! as JSON Lines for `warden replay`, which re-decides the traffic with another policy and
//! reports what flips.
//!
//! The content of each request (`args`, `text`, `result`, `http`, `context`) is scrubbed before
//! it is queued: what the deciding policy's detectors found (its custom ones included) and every
//! string any built-in secret or PII detector matches is redacted (the policy's own redaction
//! form, `[REDACTED:email]`), so a capture holds no more than an audit log would let one infer; identifiers (`kind`, `tool`, `principal`, `session`) are kept, as
//! replay needs them. Records go through a bounded queue to one writer thread (a full queue drops
//! the record and counts it: capture never slows or fails a decision), into files created 0600,
//! rotated at `max_file_bytes` (`capture.jsonl` -> `capture.jsonl.1` ...), `max_files` kept.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use serde_json::{Map, Value, json};
use warden::content::{Action, ContentPolicy, ContentSpec, KNOWN_DETECTORS, Part, ScanRequest};
use warden::{Decision, Request};

use crate::config::CaptureSettings;

/// The current capture file's name in its directory.
pub const CAPTURE_FILE: &str = "capture.jsonl";

/// The request members whose content is scrubbed.
const CONTENT: &[&str] = &["args", "text", "result", "http", "context"];

/// The capture writer.
pub(crate) struct Capture {
    queue: SyncSender<String>,
    scrubber: ContentPolicy,
    dropped: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").finish_non_exhaustive()
    }
}

impl Capture {
    /// Creates the directory (0700) and starts the writer thread.
    pub(crate) fn start(
        settings: &CaptureSettings,
        dropped: prometheus_client::metrics::counter::Counter,
    ) -> Result<Self, String> {
        settings.check()?;
        create_private_dir(&settings.dir)?;
        let spec = ContentSpec {
            detectors: KNOWN_DETECTORS.iter().map(|d| (*d).to_owned()).collect(),
            input: Some(Action::Redact),
            ..ContentSpec::default()
        };
        let scrubber = ContentPolicy::compile(&spec).map_err(|e| e.to_string())?;
        let (queue, records) = std::sync::mpsc::sync_channel(settings.max_queue);
        let writer = Writer::open(settings)?;
        std::thread::Builder::new()
            .name("warden-capture".to_owned())
            .spawn(move || writer.run(&records))
            .map_err(|e| format!("capture: cannot start its writer: {e}"))?;
        Ok(Self {
            queue,
            scrubber,
            dropped,
        })
    }

    /// Queues one decided request (scrubbed); dropped and counted when the queue is full.
    pub(crate) fn record(&self, tenant: &str, request: &Request, decision: &Decision) {
        let Ok(Value::Object(mut fields)) = serde_json::to_value(request) else {
            self.dropped.inc();
            return;
        };
        // The policy's own findings first (its custom detectors included), at the offsets they
        // were found at; then every built-in detector over what is left.
        redact_findings(&mut fields, &decision.findings);
        for name in CONTENT {
            if let Some(value) = fields.get_mut(*name) {
                self.scrub(name, value);
            }
        }
        fields.retain(|_, v| !v.is_null());
        let line = json!({
            "time_ms": crate::audit::unix_now_ms(),
            "tenant": tenant,
            "request": Value::Object(fields),
            "decision": decision.verdict.as_str(),
            "rule": decision.rule,
            "policy": decision.policy.name,
            "digest": decision.policy.digest,
        })
        .to_string();
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(line)
        {
            self.dropped.inc();
        }
    }

    /// Replaces what the detectors find in `value` by its redacted form.
    fn scrub(&self, name: &str, value: &mut Value) {
        let pointer = format!("/{name}");
        let outcome = {
            let part = match &*value {
                Value::String(text) => Part::Text(text),
                other => Part::Value(other),
            };
            self.scrubber.scan(&ScanRequest {
                input: vec![(pointer.as_str(), part)],
                output: Vec::new(),
                injection: Vec::new(),
                redact_target: Some(pointer.as_str()),
            })
        };
        if let Some(redacted) = outcome.redacted {
            *value = redacted;
        }
    }
}

/// Redacts what the decision's findings point at (injection findings mark no secret and are
/// left): a string's found characters become `[REDACTED:<detector>]`, a number found whole; a
/// finding in an object key, or at a path that no longer resolves (it runs through a key the
/// scan renamed), redacts the whole request member it is in (`args`, `text`, ...).
fn redact_findings(fields: &mut Map<String, Value>, findings: &[warden::Finding]) {
    let mut by_path: Vec<&warden::Finding> = findings
        .iter()
        .filter(|f| f.detector != "injection")
        .collect();
    // Later offsets first, so that earlier ones stay valid within one string.
    by_path.sort_by(|a, b| a.path.cmp(&b.path).then(b.start.cmp(&a.start)));
    let mut request = Value::Object(std::mem::take(fields));
    for finding in by_path {
        let mark = format!("[REDACTED:{}]", finding.detector);
        let target = if finding.key {
            None
        } else {
            request.pointer_mut(&finding.path)
        };
        match target {
            Some(Value::String(text)) => {
                let chars: Vec<char> = text.chars().collect();
                if finding.start <= finding.end && finding.end <= chars.len() {
                    let mut out: String = chars.iter().take(finding.start).collect();
                    out.push_str(&mark);
                    out.extend(chars.iter().skip(finding.end));
                    *text = out;
                } else {
                    *text = mark;
                }
            }
            Some(value) => *value = Value::String(mark),
            None => {
                let member = finding
                    .path
                    .trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                if let Some(value) = request.get_mut(&member) {
                    *value = Value::String(mark);
                }
            }
        }
    }
    if let Value::Object(map) = request {
        *fields = map;
    }
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("capture.dir `{}`: {e}", dir.display()))
}

fn open_private(path: &Path) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("capture: cannot open `{}`: {e}", path.display()))
}

/// The writer thread's state: the open file and its size.
struct Writer {
    dir: PathBuf,
    file: File,
    size: u64,
    max_file_bytes: u64,
    max_files: usize,
}

impl Writer {
    fn open(settings: &CaptureSettings) -> Result<Self, String> {
        let path = settings.dir.join(CAPTURE_FILE);
        let file = open_private(&path)?;
        let size = file
            .metadata()
            .map_err(|e| format!("capture: `{}`: {e}", path.display()))?
            .len();
        Ok(Self {
            dir: settings.dir.clone(),
            file,
            size,
            max_file_bytes: settings.max_file_bytes,
            max_files: settings.max_files,
        })
    }

    fn run(mut self, records: &Receiver<String>) {
        while let Ok(mut line) = records.recv() {
            line.push('\n');
            if let Err(e) = self.write(line.as_bytes()) {
                tracing::error!(error = %e, "capture: a record could not be written");
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self.size > 0 && self.size + bytes.len() as u64 > self.max_file_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(bytes)
            .map_err(|e| format!("capture: {e}"))?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// `capture.jsonl.N-1` -> `.N` (the oldest beyond `max_files` removed), the current file
    /// -> `.1`, and a new current file.
    fn rotate(&mut self) -> Result<(), String> {
        let name = |n: usize| self.dir.join(format!("{CAPTURE_FILE}.{n}"));
        let oldest = name(self.max_files);
        if oldest.exists() {
            std::fs::remove_file(&oldest)
                .map_err(|e| format!("capture: cannot remove `{}`: {e}", oldest.display()))?;
        }
        for n in (1..self.max_files).rev() {
            let from = name(n);
            if from.exists() {
                std::fs::rename(&from, name(n + 1))
                    .map_err(|e| format!("capture: cannot rotate `{}`: {e}", from.display()))?;
            }
        }
        let current = self.dir.join(CAPTURE_FILE);
        std::fs::rename(&current, name(1))
            .map_err(|e| format!("capture: cannot rotate `{}`: {e}", current.display()))?;
        self.file = open_private(&current)?;
        self.size = 0;
        Ok(())
    }
}

/// The capture files in `dir`, oldest first (`capture.jsonl.N` ... `.1`, then `capture.jsonl`).
pub fn files_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("{}: cannot read: {e}", dir.display()))?;
    let mut rotated: Vec<(usize, PathBuf)> = Vec::new();
    let mut current = None;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("{}: cannot read: {e}", dir.display()))?
            .path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name == CAPTURE_FILE {
            current = Some(path.clone());
        } else if let Some(n) = name
            .strip_prefix(CAPTURE_FILE)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|n| n.parse::<usize>().ok())
        {
            rotated.push((n, path.clone()));
        }
    }
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    Ok(rotated.into_iter().map(|(_, p)| p).chain(current).collect())
}

/// One captured record as `warden replay` reads it.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The caller's tenant.
    pub tenant: String,
    /// The request (content scrubbed).
    pub request: Request,
    /// The verdict it got (`allow`, `deny`, `pending`).
    pub decision: String,
    /// The deciding rule, if any.
    pub rule: Option<String>,
}

impl Captured {
    /// Parses one capture line.
    pub fn parse(line: &str) -> Result<Self, String> {
        let value: Map<String, Value> =
            serde_json::from_str(line).map_err(|e| format!("not a capture record: {e}"))?;
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let request = value
            .get("request")
            .cloned()
            .ok_or_else(|| "a capture record without `request`".to_owned())?;
        let request =
            Request::from_value(request).map_err(|e| format!("`request`: {}", e.message))?;
        Ok(Self {
            tenant: text("tenant").unwrap_or_default(),
            request,
            decision: text("decision")
                .ok_or_else(|| "a capture record without `decision`".to_owned())?,
            rule: text("rule"),
        })
    }
}
