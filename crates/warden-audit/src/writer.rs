//! The writer: a bounded queue in front of one thread that seals, writes, rotates and syncs.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use warden_proof::KeyProvider;

use crate::AuditError;
use crate::entry::{AuditRecord, seal};
use crate::verify::{Anchor, last_entry, recover_truncated_tail};

/// When the writer calls `fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// After every write, before any entry in it is acknowledged.
    Always,
    /// At most `window` after an entry was written (or once `max_entries` are pending);
    /// acknowledgements wait for that sync.
    #[default]
    Batch,
    /// Never: the operating system decides. Entries are acknowledged once written.
    Never,
}

/// What `append` does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullPolicy {
    /// Wait for room (the caller's thread blocks; the request path should use `Deny` or an
    /// async wrapper).
    #[default]
    Block,
    /// Return [`AuditError::QueueFull`] at once, so the caller can deny the request.
    Deny,
}

/// Audit log settings.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Directory holding `audit-NNNNNN.jsonl` files.
    pub dir: PathBuf,
    /// Rotate when a file would grow beyond this many bytes (one entry per file at least).
    pub max_file_bytes: u64,
    /// When to fsync.
    pub fsync: FsyncPolicy,
    /// Batch mode: longest time an entry waits for its fsync.
    pub batch_window: Duration,
    /// Batch mode: sync once this many entries are pending, whatever the window.
    pub batch_max_entries: usize,
    /// Queue capacity (entries).
    pub queue_capacity: usize,
    /// What to do when the queue is full.
    pub full: FullPolicy,
}

impl AuditConfig {
    /// Defaults: 64 MiB files, `batch` with a 10 ms window / 1024 entries, a 65,536-entry queue
    /// that blocks when full.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_file_bytes: 64 * 1024 * 1024,
            fsync: FsyncPolicy::Batch,
            batch_window: Duration::from_millis(10),
            batch_max_entries: 1024,
            queue_capacity: 65_536,
            full: FullPolicy::Block,
        }
    }
}

/// Called once an entry is durable per the fsync policy (or failed).
pub type AckFn = Box<dyn FnOnce(Result<u64, AuditError>) + Send>;

enum Msg {
    Append(Box<AuditRecord>, Option<AckFn>),
    Flush(SyncSender<Result<Anchor, AuditError>>),
}

struct Shared {
    head: Anchor,
    failed: Option<String>,
    /// Entries queued and not yet written.
    queued: u64,
}

/// A running audit log. Cloning the handle is not supported; share it in an `Arc`.
pub struct AuditLog {
    tx: Option<SyncSender<Msg>>,
    full: FullPolicy,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("head", &self.shared.lock().head)
            .finish_non_exhaustive()
    }
}

/// The files of an audit directory (unsorted).
pub(crate) fn log_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if file_index(&p).is_some() {
            out.push(p);
        }
    }
    Ok(out)
}

fn file_index(p: &Path) -> Option<u64> {
    let name = p.file_name()?.to_str()?;
    name.strip_prefix("audit-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

fn file_name(index: u64) -> String {
    format!("audit-{index:06}.jsonl")
}

impl AuditLog {
    /// Opens (or creates) the log in `config.dir` and starts the writer thread. An existing log
    /// is continued from its last entry; a truncated last line (a crash mid-write) is first
    /// trimmed by [`recover_truncated_tail`]. `mac`, when given, MACs every entry.
    pub fn open(
        config: AuditConfig,
        mac: Option<Arc<dyn KeyProvider>>,
    ) -> Result<Self, AuditError> {
        fs::create_dir_all(&config.dir).map_err(AuditError::io)?;
        let mut files = log_files(&config.dir).map_err(AuditError::io)?;
        files.sort();
        let (index, head) = match files.last() {
            Some(last) => {
                recover_truncated_tail(last).map_err(AuditError::io)?;
                let index = file_index(last).unwrap_or(1);
                // An empty last file continues from the one before it.
                let mut head = None;
                for f in files.iter().rev() {
                    if let Some(a) = last_entry(f).map_err(AuditError::io)? {
                        head = Some(a);
                        break;
                    }
                }
                (index, head.unwrap_or_default())
            }
            None => (1, Anchor::default()),
        };
        if let Some(key) = &mac {
            // Fail at startup, not on the first entry, when the key cannot MAC.
            key.mac(b"probe")
                .map_err(|e| AuditError::Key(e.to_string()))?;
        }
        let path = config.dir.join(file_name(index));
        let file = open_append(&path)?;
        let size = file.metadata().map_err(AuditError::io)?.len();
        let shared = Arc::new(Mutex::new(Shared {
            head: head.clone(),
            failed: None,
            queued: 0,
        }));
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.max(1));
        let full = config.full;
        let mut writer = Writer {
            config,
            mac,
            index,
            file,
            size,
            head,
            shared: shared.clone(),
            pending_acks: Vec::new(),
            dirty_since: None,
        };
        let thread = std::thread::Builder::new()
            .name("warden-audit".into())
            .spawn(move || writer.run(&rx))
            .map_err(AuditError::io)?;
        Ok(Self {
            tx: Some(tx),
            full,
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `record`. Returns once it is queued (not yet written): use
    /// [`AuditLog::append_then`] or [`AuditLog::append_wait`] to learn when it is durable.
    pub fn append(&self, record: AuditRecord) -> Result<(), AuditError> {
        self.send(Msg::Append(Box::new(record), None))
    }

    /// Queues `record`; `ack` runs on the writer thread with the entry's sequence number once it
    /// is durable per the fsync policy, or with the error that stopped it. An async caller
    /// passes a closure that completes a oneshot channel.
    pub fn append_then(&self, record: AuditRecord, ack: AckFn) -> Result<(), AuditError> {
        self.send(Msg::Append(Box::new(record), Some(ack)))
    }

    /// Queues `record` and blocks until it is durable per the fsync policy; returns its sequence
    /// number.
    pub fn append_wait(&self, record: AuditRecord) -> Result<u64, AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.append_then(
            record,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.recv().map_err(|_| AuditError::Closed)?
    }

    /// Writes and syncs everything queued so far; returns the head (last sequence number and
    /// hash), which a deployment may publish as an external anchor.
    pub fn flush(&self) -> Result<Anchor, AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let sender = self.tx.as_ref().ok_or(AuditError::Closed)?;
        sender
            .send(Msg::Flush(tx))
            .map_err(|_| AuditError::Closed)?;
        rx.recv().map_err(|_| AuditError::Closed)?
    }

    /// The last entry written (sequence number and hash).
    pub fn head(&self) -> Anchor {
        self.shared.lock().head.clone()
    }

    /// Entries queued and not yet written (for a queue-depth gauge).
    pub fn queued(&self) -> u64 {
        self.shared.lock().queued
    }

    /// The error that stopped the writer, if any (every later append fails with it).
    pub fn failure(&self) -> Option<AuditError> {
        self.shared
            .lock()
            .failed
            .as_ref()
            .map(|e| AuditError::Writer(e.clone()))
    }

    /// Flushes, syncs and stops the writer.
    pub fn close(mut self) -> Result<(), AuditError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), AuditError> {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| AuditError::Writer("writer thread panicked".into()))?;
        }
        match &self.shared.lock().failed {
            Some(e) => Err(AuditError::Writer(e.clone())),
            None => Ok(()),
        }
    }

    fn send(&self, msg: Msg) -> Result<(), AuditError> {
        if let Some(e) = &self.shared.lock().failed {
            return Err(AuditError::Writer(e.clone()));
        }
        let tx = self.tx.as_ref().ok_or(AuditError::Closed)?;
        let is_append = matches!(msg, Msg::Append(..));
        // Counted before sending so the writer's decrement can never come first.
        if is_append {
            self.shared.lock().queued += 1;
        }
        let sent = match self.full {
            FullPolicy::Block => tx.send(msg).map_err(|_| AuditError::Closed),
            FullPolicy::Deny => tx.try_send(msg).map_err(|e| match e {
                TrySendError::Full(_) => AuditError::QueueFull,
                TrySendError::Disconnected(_) => AuditError::Closed,
            }),
        };
        if sent.is_err() && is_append {
            let mut sh = self.shared.lock();
            sh.queued = sh.queued.saturating_sub(1);
        }
        sent
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(AuditError::io)
}

struct Writer {
    config: AuditConfig,
    mac: Option<Arc<dyn KeyProvider>>,
    index: u64,
    file: File,
    size: u64,
    head: Anchor,
    shared: Arc<Mutex<Shared>>,
    /// Written but not yet synced (batch mode): acknowledgements waiting for the fsync.
    pending_acks: Vec<(u64, Option<AckFn>)>,
    dirty_since: Option<Instant>,
}

impl Writer {
    fn run(&mut self, rx: &Receiver<Msg>) {
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            // Wait for work; in batch mode with unsynced entries, no longer than the window.
            let first = match self.dirty_since {
                Some(t) => {
                    let left = self.config.batch_window.saturating_sub(t.elapsed());
                    match rx.recv_timeout(left) {
                        Ok(m) => Some(m),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                },
            };
            let mut flushes = Vec::new();
            let mut acks = Vec::new();
            if let Some(m) = first {
                // Group commit: take what is already queued, up to a bound.
                let mut next = Some(m);
                let mut taken = 0usize;
                while let Some(m) = next.take() {
                    match m {
                        Msg::Append(rec, ack) => {
                            {
                                let mut sh = self.shared.lock();
                                sh.queued = sh.queued.saturating_sub(1);
                            }
                            if let Err(e) = self.write_one(&rec, &mut buf) {
                                self.fail(&e, ack);
                            } else {
                                acks.push((self.head.seq, ack));
                            }
                        }
                        Msg::Flush(tx) => flushes.push(tx),
                    }
                    taken += 1;
                    if taken < 4096 {
                        next = rx.try_recv().ok();
                    }
                }
            }
            if let Err(e) = self.write_buf(&mut buf) {
                for (_, ack) in acks.drain(..) {
                    self.fail(&e, ack);
                }
            }
            self.after_write(acks, !flushes.is_empty());
            for tx in flushes {
                let r = match &self.shared.lock().failed {
                    Some(e) => Err(AuditError::Writer(e.clone())),
                    None => Ok(self.head.clone()),
                };
                let _ = tx.send(r);
            }
        }
        // Shutting down: write and sync everything.
        let _ = self.write_buf(&mut buf);
        self.after_write(Vec::new(), true);
    }

    /// Seals `rec` into `buf`, rotating first when the line would overflow the current file.
    fn write_one(&mut self, rec: &AuditRecord, buf: &mut Vec<u8>) -> Result<(), AuditError> {
        // After a failure nothing more is written: the chain on disk would have a gap.
        if let Some(e) = &self.shared.lock().failed {
            return Err(AuditError::Writer(e.clone()));
        }
        let seq = self.head.seq + 1;
        let (line, hash) = seal(rec, seq, &self.head.hash, self.mac.as_deref())?;
        let line_len = line.len() as u64;
        let used = self.size + buf.len() as u64;
        if used > 0 && used + line_len > self.config.max_file_bytes {
            self.write_buf(buf)?;
            self.rotate()?;
        }
        buf.extend_from_slice(&line);
        self.head = Anchor { seq, hash };
        Ok(())
    }

    fn write_buf(&mut self, buf: &mut Vec<u8>) -> Result<(), AuditError> {
        if buf.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(buf).map_err(AuditError::io);
        self.size += buf.len() as u64;
        buf.clear();
        r?;
        if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
        self.shared.lock().head = self.head.clone();
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        // The finished file is synced whatever the policy, so rotation never leaves a gap.
        if self.config.fsync != FsyncPolicy::Never {
            self.file.sync_data().map_err(AuditError::io)?;
        }
        self.index += 1;
        self.file = open_append(&self.config.dir.join(file_name(self.index)))?;
        self.size = 0;
        // Make the new file's directory entry durable too.
        if self.config.fsync != FsyncPolicy::Never
            && let Ok(d) = File::open(&self.config.dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Syncs per policy and runs acknowledgements that became durable.
    fn after_write(&mut self, acks: Vec<(u64, Option<AckFn>)>, force_sync: bool) {
        self.pending_acks.extend(acks);
        let durable = match self.config.fsync {
            FsyncPolicy::Never => {
                self.dirty_since = None;
                true
            }
            FsyncPolicy::Always => self.sync(),
            FsyncPolicy::Batch => {
                let due = force_sync
                    || self.pending_acks.len() >= self.config.batch_max_entries
                    || self
                        .dirty_since
                        .is_some_and(|t| t.elapsed() >= self.config.batch_window);
                due && self.sync()
            }
        };
        if durable {
            for (seq, ack) in std::mem::take(&mut self.pending_acks) {
                if let Some(ack) = ack {
                    ack(Ok(seq));
                }
            }
        }
    }

    /// fsyncs written data; on failure fails every pending acknowledgement.
    fn sync(&mut self) -> bool {
        if self.dirty_since.is_none() {
            return true;
        }
        match self.file.sync_data() {
            Ok(()) => {
                self.dirty_since = None;
                true
            }
            Err(e) => {
                let e = AuditError::io(e);
                for (_, ack) in std::mem::take(&mut self.pending_acks) {
                    self.fail(&e, ack);
                }
                false
            }
        }
    }

    fn fail(&self, e: &AuditError, ack: Option<AckFn>) {
        let msg = e.to_string();
        self.shared.lock().failed.get_or_insert(msg.clone());
        if let Some(ack) = ack {
            ack(Err(AuditError::Writer(msg)));
        }
    }
}
