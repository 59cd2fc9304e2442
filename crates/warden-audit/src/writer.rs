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

use crate::checkpoint::Checkpoint;
use crate::entry::Anchor;
use crate::entry::{AuditRecord, seal};
use crate::files::{file_index, file_name, log_files};
use crate::verify::{Recovery, find_entry, last_entry, recover_truncated_tail};
use crate::{AuditError, GENESIS_HASH};

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
    /// Batch mode: longest time an entry waits for its fsync while entries keep arriving (a
    /// writer that finds its queue empty syncs at once).
    pub batch_window: Duration,
    /// Batch mode: sync once this many entries are pending, whatever the window.
    pub batch_max_entries: usize,
    /// Queue capacity (entries).
    pub queue_capacity: usize,
    /// What to do when the queue is full.
    pub full: FullPolicy,
    /// How often the writer writes a checkpoint ([`crate::CHECKPOINT_FILE`]) when the log has
    /// grown since the last one; `None`: only on request and at close.
    pub checkpoint_interval: Option<Duration>,
    /// Signs checkpoints (Ed25519, the decision token key) in addition to the MAC.
    pub checkpoint_signer: Option<Arc<dyn KeyProvider>>,
}

impl AuditConfig {
    /// Defaults: 64 MiB files, `batch` with a 10 ms window / 1024 entries, a 65,536-entry queue
    /// that blocks when full, a checkpoint every 60 s (when the log grew), not signed.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_file_bytes: 64 * 1024 * 1024,
            fsync: FsyncPolicy::Batch,
            batch_window: Duration::from_millis(10),
            batch_max_entries: 1024,
            queue_capacity: 65_536,
            full: FullPolicy::Block,
            checkpoint_interval: Some(Duration::from_secs(60)),
            checkpoint_signer: None,
        }
    }
}

/// Called once an entry is durable per the fsync policy (or failed).
pub type AckFn = Box<dyn FnOnce(Result<u64, AuditError>) + Send>;

enum Msg {
    Append(Box<AuditRecord>, Option<AckFn>),
    Group(Vec<AuditRecord>, AckFn),
    Flush(SyncSender<Result<Anchor, AuditError>>),
    Checkpoint(SyncSender<Result<Checkpoint, AuditError>>),
}

struct Shared {
    head: Anchor,
    /// The last checkpoint written (or found valid at open).
    checkpoint: Option<Checkpoint>,
    failed: Option<String>,
    /// Entries queued and not yet written.
    queued: u64,
}

/// The lock file in an audit directory: held (an exclusive OS file lock, `flock(2)` on Unix)
/// by the one writer of the log for as long as its [`AuditLog`] lives.
pub const LOCK_FILE: &str = "audit.lock";

/// A running audit log. Cloning the handle is not supported; share it in an `Arc`.
pub struct AuditLog {
    tx: Option<SyncSender<Msg>>,
    full: FullPolicy,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
    /// What the tail recovery at open did to the newest file, when it changed it.
    recovered: Option<(PathBuf, Recovery)>,
    /// Holds the directory's exclusive lock; released when the log is dropped (after the writer
    /// thread has stopped) or the process exits.
    _lock: File,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("head", &self.shared.lock().head)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `config.dir` and starts the writer thread. An existing log
    /// is continued from its last entry; a truncated last line (a crash mid-write) is first
    /// trimmed by [`recover_truncated_tail`]. `mac`, when given, MACs every entry.
    pub fn open(
        config: AuditConfig,
        mac: Option<Arc<dyn KeyProvider>>,
    ) -> Result<Self, AuditError> {
        create_private_dir(&config.dir)?;
        // Before anything is read or written: a second writer would interleave sequence numbers
        // and break the chain.
        let lock = lock_dir(&config.dir)?;
        let mut files = log_files(&config.dir).map_err(AuditError::io)?;
        files.sort();
        let mut recovered = None;
        let (index, head) = match files.last() {
            Some(last) => {
                let recovery = recover_truncated_tail(last).map_err(AuditError::io)?;
                if recovery.changed() {
                    recovered = Some((last.clone(), recovery));
                }
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
        let checkpoint = Checkpoint::read(&config.dir).map_err(AuditError::Checkpoint)?;
        if let Some(cp) = &checkpoint {
            check_checkpoint(cp, &files, &head, mac.as_deref())?;
        }
        let path = config.dir.join(file_name(index));
        let file = open_append(&path)?;
        let size = file.metadata().map_err(AuditError::io)?.len();
        let shared = Arc::new(Mutex::new(Shared {
            head: head.clone(),
            checkpoint,
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
            synced: size,
            head,
            shared: shared.clone(),
            pending_acks: Vec::new(),
            dirty_since: None,
            next_checkpoint: None,
        };
        writer.schedule_checkpoint();
        let thread = std::thread::Builder::new()
            .name("warden-audit".into())
            .spawn(move || writer.run(&rx))
            .map_err(AuditError::io)?;
        Ok(Self {
            tx: Some(tx),
            full,
            shared,
            thread: Some(thread),
            recovered,
            _lock: lock,
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

    /// Queues `records` as one group (one queue slot): the writer appends them as consecutive
    /// entries of one file in one write, and `ack` runs once for all of them with the sequence
    /// number of the last. A group is all or nothing: when any of its entries cannot be sealed or
    /// written, none of them is left in the log (a failed write is cut back off the file, best
    /// effort) and `ack` gets the error. A batch of decisions that must be delivered whole is
    /// audited this way.
    pub fn append_group_then(
        &self,
        records: Vec<AuditRecord>,
        ack: AckFn,
    ) -> Result<(), AuditError> {
        if records.is_empty() {
            ack(Ok(self.head().seq));
            return Ok(());
        }
        self.send(Msg::Group(records, ack))
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

    /// Syncs what is written and writes a checkpoint of the head when the log grew since the
    /// last one; returns the latest checkpoint. Blocks until the writer has done it.
    pub fn checkpoint(&self) -> Result<Checkpoint, AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let sender = self.tx.as_ref().ok_or(AuditError::Closed)?;
        sender
            .send(Msg::Checkpoint(tx))
            .map_err(|_| AuditError::Closed)?;
        rx.recv().map_err(|_| AuditError::Closed)?
    }

    /// The last checkpoint written (or the valid one found at open), without waiting.
    pub fn last_checkpoint(&self) -> Option<Checkpoint> {
        self.shared.lock().checkpoint.clone()
    }

    /// What the tail recovery at open did (the file and the change), when it changed anything.
    pub fn recovered(&self) -> Option<&(PathBuf, Recovery)> {
        self.recovered.as_ref()
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
        let is_append = matches!(msg, Msg::Append(..) | Msg::Group(..));
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

/// Creates `dir` (and its parents) readable by the owner only when it does not exist.
fn create_private_dir(dir: &Path) -> Result<(), AuditError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(AuditError::io)
}

/// Takes the exclusive lock of an audit directory, or fails with [`AuditError::Locked`] when
/// another writer (in this or another process) holds it. std's `File::try_lock` is `flock(2)`
/// on Unix and `LockFileEx` on Windows: released by the OS when the holder exits, even on
/// SIGKILL, so a crash never leaves a stale lock.
fn lock_dir(dir: &Path) -> Result<File, AuditError> {
    let path = dir.join(LOCK_FILE);
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let file = opts.open(&path).map_err(AuditError::io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(AuditError::Locked(dir.display().to_string())),
        Err(fs::TryLockError::Error(e)) => Err(AuditError::Io(format!(
            "cannot lock `{}`: {e}",
            path.display()
        ))),
    }
}

/// [`recover_truncated_tail`] on `file` while holding its directory's lock, so that a running
/// writer's line in progress is never taken for a torn one: fails with [`AuditError::Locked`]
/// while a writer has the log open (it recovers the tail itself when it starts).
pub fn recover_tail(file: &Path) -> Result<Recovery, AuditError> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let _lock = lock_dir(dir)?;
    recover_truncated_tail(file).map_err(|e| AuditError::Io(format!("`{}`: {e}", file.display())))
}

/// Opens a log file for appending, creating it readable and writable by the owner only.
fn open_append(path: &Path) -> Result<File, AuditError> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path).map_err(AuditError::io)
}

struct Writer {
    config: AuditConfig,
    mac: Option<Arc<dyn KeyProvider>>,
    index: u64,
    file: File,
    size: u64,
    /// The size of `file` at its last successful sync: where a failed sync cuts it back to.
    synced: u64,
    head: Anchor,
    shared: Arc<Mutex<Shared>>,
    /// Written but not yet synced (batch mode): acknowledgements waiting for the fsync.
    pending_acks: Vec<(u64, Option<AckFn>)>,
    dirty_since: Option<Instant>,
    /// When the next scheduled checkpoint is due.
    next_checkpoint: Option<Instant>,
}

/// Refuses to continue a log that does not hold the entry its checkpoint records: entries (or
/// files, or the whole log) were removed after the checkpoint, or rewritten. With a key the
/// checkpoint's MAC must verify first, so a forged checkpoint cannot vouch for a cut log.
fn check_checkpoint(
    cp: &Checkpoint,
    files: &[PathBuf],
    head: &Anchor,
    mac: Option<&dyn KeyProvider>,
) -> Result<(), AuditError> {
    if let Some(key) = mac {
        cp.verify_mac(key).map_err(AuditError::Checkpoint)?;
    }
    let found = if cp.seq == head.seq {
        Some(head.hash.clone())
    } else if cp.seq == 0 {
        Some(GENESIS_HASH.to_owned())
    } else if cp.seq < head.seq {
        find_entry(files, cp.seq).map_err(AuditError::io)?
    } else {
        return Err(AuditError::Truncated(format!(
            "the log ends at sequence {} but its checkpoint records sequence {} (hash {}): \
             entries {}..={} were removed",
            head.seq,
            cp.seq,
            cp.head,
            head.seq + 1,
            cp.seq
        )));
    };
    match found {
        Some(hash) if hash == cp.head => Ok(()),
        Some(hash) => Err(AuditError::Truncated(format!(
            "entry {} has hash {hash} but the checkpoint records {}: the log was rewritten",
            cp.seq, cp.head
        ))),
        None => Err(AuditError::Truncated(format!(
            "entry {} recorded by the checkpoint is not in the log",
            cp.seq
        ))),
    }
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Writer {
    fn run(&mut self, rx: &Receiver<Msg>) {
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            // Wait for work; in batch mode with unsynced entries, no longer than the window; no
            // longer than the next scheduled checkpoint.
            let deadline = [
                self.dirty_since.map(|t| t + self.config.batch_window),
                self.next_checkpoint,
            ]
            .into_iter()
            .flatten()
            .min();
            let first = match deadline {
                Some(t) => {
                    let left = t.saturating_duration_since(Instant::now());
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
            let mut checkpoints = Vec::new();
            let mut acks = Vec::new();
            // Whether the queue was found empty after taking what was there: then nobody
            // else is about to write, and waiting out the batch window only delays the
            // entries taken (group commit batches what arrives while a sync runs).
            let mut drained = true;
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
                        Msg::Group(records, ack) => {
                            {
                                let mut sh = self.shared.lock();
                                sh.queued = sh.queued.saturating_sub(1);
                            }
                            if let Err(e) = self.write_group(&records, &mut buf) {
                                self.fail(&e, Some(ack));
                            } else {
                                acks.push((self.head.seq, Some(ack)));
                            }
                        }
                        Msg::Flush(tx) => flushes.push(tx),
                        Msg::Checkpoint(tx) => checkpoints.push(tx),
                    }
                    taken += 1;
                    if taken < 4096 {
                        next = rx.try_recv().ok();
                    } else {
                        drained = false;
                    }
                }
            }
            if let Err(e) = self.write_buf(&mut buf) {
                for (_, ack) in acks.drain(..) {
                    self.fail(&e, ack);
                }
            }
            self.after_write(
                acks,
                !flushes.is_empty() || !checkpoints.is_empty(),
                drained,
            );
            for tx in flushes {
                let r = match &self.shared.lock().failed {
                    Some(e) => Err(AuditError::Writer(e.clone())),
                    None => Ok(self.head.clone()),
                };
                // The caller may have given up waiting; nothing to write either way.
                let _ = tx.send(r);
            }
            let due = self.next_checkpoint.is_some_and(|t| Instant::now() >= t);
            if !checkpoints.is_empty() || due {
                let r = self.checkpoint();
                for tx in checkpoints {
                    // As above: a caller that stopped waiting needs no answer.
                    let _ = tx.send(r.clone());
                }
                if due {
                    self.schedule_checkpoint();
                }
            }
        }
        // Shutting down: write and sync everything, then record where the log ends.
        if let Err(e) = self.write_buf(&mut buf) {
            self.fail(&e, None);
        }
        self.after_write(Vec::new(), true, false);
        if let Err(e) = self.checkpoint() {
            self.fail(&e, None);
        }
    }

    fn schedule_checkpoint(&mut self) {
        self.next_checkpoint = self
            .config
            .checkpoint_interval
            .map(|d| Instant::now() + d.max(Duration::from_millis(1)));
    }

    /// Writes a checkpoint of the head when it moved since the last one; returns the latest.
    /// Only synced entries are checkpointed (under `fsync: never` the file is synced here), so
    /// a crash cannot leave a checkpoint ahead of the log. A failure stops the writer like any
    /// other write error: the log can no longer vouch for its tail.
    fn checkpoint(&mut self) -> Result<Checkpoint, AuditError> {
        if let Some(e) = &self.shared.lock().failed {
            return Err(AuditError::Writer(e.clone()));
        }
        let last = self.shared.lock().checkpoint.clone();
        if let Some(cp) = last
            && cp.seq == self.head.seq
            && cp.head == self.head.hash
        {
            return Ok(cp);
        }
        let synced = self.file.sync_data().map_err(AuditError::io);
        if synced.is_ok() {
            self.synced = self.size;
        }
        let written = synced
            .and_then(|()| {
                Checkpoint::new(
                    &self.head,
                    unix_now_ms(),
                    self.mac.as_deref(),
                    self.config.checkpoint_signer.as_deref(),
                )
            })
            .and_then(|cp| cp.write(&self.config.dir).map(|()| cp));
        match written {
            Ok(cp) => {
                self.shared.lock().checkpoint = Some(cp.clone());
                Ok(cp)
            }
            Err(e) => {
                self.fail(&e, None);
                Err(e)
            }
        }
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

    /// Seals every record of a group into `buf`, after rotating when the group would overflow
    /// the current file (a group is never split across files, so that cutting a failed write
    /// back removes all of it). A record that cannot be sealed leaves nothing of the group.
    fn write_group(
        &mut self,
        records: &[AuditRecord],
        buf: &mut Vec<u8>,
    ) -> Result<(), AuditError> {
        if let Some(e) = &self.shared.lock().failed {
            return Err(AuditError::Writer(e.clone()));
        }
        let mut head = self.head.clone();
        let mut lines = Vec::with_capacity(records.len() * 640);
        for rec in records {
            let seq = head.seq + 1;
            let (line, hash) = seal(rec, seq, &head.hash, self.mac.as_deref())?;
            lines.extend_from_slice(&line);
            head = Anchor { seq, hash };
        }
        let used = self.size + buf.len() as u64;
        if used > 0 && used + lines.len() as u64 > self.config.max_file_bytes {
            self.write_buf(buf)?;
            self.rotate()?;
        }
        buf.extend_from_slice(&lines);
        self.head = head;
        Ok(())
    }

    fn write_buf(&mut self, buf: &mut Vec<u8>) -> Result<(), AuditError> {
        if buf.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(buf).map_err(AuditError::io);
        let len = buf.len() as u64;
        buf.clear();
        if let Err(e) = written {
            // Part of the buffer may be on disk: entries nobody will be told were written.
            // Cut it off, so the log holds only acknowledged entries and whole groups.
            self.cut_back_to(self.size);
            return Err(e);
        }
        self.size += len;
        if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
        self.shared.lock().head = self.head.clone();
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        // The finished file is synced whatever the policy (even `never`: a checkpoint syncs only
        // the current file, and must never run ahead of the disk), so rotation never leaves a
        // gap. Once per file, so cheap.
        self.file.sync_data().map_err(AuditError::io)?;
        self.index += 1;
        self.file = open_append(&self.config.dir.join(file_name(self.index)))?;
        self.size = 0;
        self.synced = 0;
        // Make the new file's directory entry durable too.
        if self.config.fsync != FsyncPolicy::Never
            && let Ok(d) = File::open(&self.config.dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Syncs per policy and runs acknowledgements that became durable. `drained`: no other
    /// entry is queued (in batch mode the pending entries are synced at once).
    fn after_write(&mut self, acks: Vec<(u64, Option<AckFn>)>, force_sync: bool, drained: bool) {
        self.pending_acks.extend(acks);
        let durable = match self.config.fsync {
            FsyncPolicy::Never => {
                self.dirty_since = None;
                true
            }
            FsyncPolicy::Always => self.sync(),
            FsyncPolicy::Batch => {
                let due = force_sync
                    || (drained && !self.pending_acks.is_empty())
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
                self.synced = self.size;
                true
            }
            Err(e) => {
                let e = AuditError::io(e);
                // The entries written since the last sync are reported as failed: they must
                // not stay in the log either.
                self.cut_back_to(self.synced);
                for (_, ack) in std::mem::take(&mut self.pending_acks) {
                    self.fail(&e, ack);
                }
                false
            }
        }
    }

    /// Truncates the current file to `size` bytes after a failed write or sync (best effort:
    /// the writer stops either way; what could not be cut is logged, and the tail recovery at
    /// the next start trims a torn line).
    fn cut_back_to(&mut self, size: u64) {
        let cut = self.file.set_len(size).and_then(|()| self.file.sync_data());
        if let Err(e) = cut {
            tracing::error!(
                error = %e,
                "audit write failed and the unacknowledged tail could not be cut off"
            );
        }
        self.size = size;
    }

    fn fail(&self, e: &AuditError, ack: Option<AckFn>) {
        let msg = e.to_string();
        self.shared.lock().failed.get_or_insert(msg.clone());
        if let Some(ack) = ack {
            ack(Err(AuditError::Writer(msg)));
        }
    }
}
