//! MCP tool pins in a redb file, shared by every process that uses them: the daemon (or
//! `warden mcp wrap` / `proxy`) observes definitions and checks held tools while
//! `warden mcp approve` approves them from another process.
//!
//! # Design
//!
//! - **Its own file, opened in `ConcurrencyMode::MultiWriter`.** The session database is opened
//!   exclusively by the daemon for its lifetime, so a second process cannot open it. The pins live
//!   in a file of their own (`mcp-pins.redb` next to `state_file`), which every process opens in
//!   redb's multi-writer mode: any number of processes keep it open at once and redb serializes
//!   their write transactions with byte-range locks (open file description locks on Linux, so two
//!   handles in one process exclude each other like two processes do). This is preferred to
//!   opening the default (exclusive) database for one transaction at a time: no open, repair
//!   check and close (each an fsync) per transaction, and no window in which an approve is
//!   refused because the daemon happens to hold the file.
//! - **Bounded waits.** A write transaction is begun with `try_begin_write` and retried with
//!   backoff until [`RedbPinStore::with_lock_timeout`] (default [`DEFAULT_LOCK_TIMEOUT`]): a
//!   peer stuck in a write transaction makes `observe`/`approve` fail (closed) with a
//!   [`PinError`] instead of hanging the proxy. An open refused with `DatabaseAlreadyOpen` (a
//!   process that opened the file exclusively, e.g. an inspection tool) is retried the same way.
//!   Opening a handle and beginning a read wait (unbounded, in redb) only for a peer's commit in
//!   progress; every write transaction here is one read-compare-write and a commit.
//! - **Atomic per tool.** `observe` and `approve` read the pin, apply [`Pin::observe`] /
//!   [`Pin::approved`] and write the result inside one write transaction.
//! - **Hot paths read memory.** `is_held` (every `tools/call`) and the no-change case of
//!   `observe` (every tool of every `tools/list`) answer from an in-memory copy of the pins,
//!   refreshed with one read transaction when the file's metadata (length, inode, modification
//!   and change times) differs from the copy's. Timestamps have a granularity (a few
//!   milliseconds on ext4, up to 2 s elsewhere), so two commits within one tick can leave equal
//!   metadata: as git does for its index, a copy read less than [`RACY_WINDOW`] after the file's
//!   modification time is not trusted, and the file is read again until the copy is older than
//!   that. Only a `stat` is paid otherwise.
//! - **Fail closed.** Every I/O, lock or decoding failure is a [`PinError`]; the enforcer then
//!   hides the tool and denies its calls.
//! - **Migration.** The JSON pin file of earlier versions is imported once by
//!   [`RedbPinStore::import_json`] (pins already in the database win; the JSON file is left
//!   alone), recorded by a marker in the same transaction so that it is never imported again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use redb::{
    Builder, ConcurrencyMode, Database, DatabaseError, ReadableDatabase, ReadableTable,
    TableDefinition, TableError, TransactionError, WriteTransaction,
};
use serde_json::Value;
use warden_core::pins::{Pin, PinError, PinStatus, PinStore, Pins};
use warden_core::state::StoreCall;

/// Pins by (upstream, tool), as JSON-encoded [`Pin`]s.
const PINS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("mcp_pins");
/// Markers: `json_imported` once a JSON pin file was imported.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("mcp_pins_meta");
const JSON_IMPORTED: &str = "json_imported";

/// How long `observe`/`approve` (and opening) wait for another process's write transaction
/// before failing closed.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// A cached copy of the pins read less than this long after the file's modification time is
/// re-read on the next use (timestamp granularity; see the module docs).
pub const RACY_WINDOW: Duration = Duration::from_secs(3);
/// redb's page cache for this small file (its default is 1 GiB).
const CACHE_BYTES: usize = 4 << 20;

/// What identifies one version of the file's contents, short of reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
    #[cfg(unix)]
    changed_ns: i64,
}

#[derive(Debug, Default)]
struct Cache {
    /// The file's version when `pins` was read (`None`: nothing cached).
    version: Option<FileVersion>,
    /// Whether `version` can be trusted to change with the next commit (see [`RACY_WINDOW`]).
    trusted: bool,
    pins: Pins,
}

/// Tool pins in a redb file shared between processes. See the module docs.
pub struct RedbPinStore {
    path: PathBuf,
    db: Database,
    lock_timeout: Duration,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for RedbPinStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbPinStore")
            .field("path", &self.path)
            .field("lock_timeout", &self.lock_timeout)
            .finish_non_exhaustive()
    }
}

fn fail(path: &Path, what: &str, e: impl std::fmt::Display) -> PinError {
    PinError {
        message: format!("cannot {what} `{}`: {e}", path.display()),
    }
}

/// Sleeps before the next attempt: 1 ms doubling to 50 ms, never past `deadline`. False when
/// the deadline has passed.
fn backoff(attempt: &mut u32, deadline: Instant) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    let wait = Duration::from_millis(1u64 << (*attempt).min(6)).min(Duration::from_millis(50));
    *attempt = attempt.saturating_add(1);
    std::thread::sleep(wait.min(deadline - now));
    true
}

fn version(path: &Path) -> Option<FileVersion> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    use std::os::unix::fs::MetadataExt;
    Some(FileVersion {
        modified: meta.modified().ok(),
        len: meta.len(),
        #[cfg(unix)]
        inode: meta.ino(),
        #[cfg(unix)]
        changed_ns: meta
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.ctime_nsec()),
    })
}

impl RedbPinStore {
    /// Opens (or creates) the pin database at `path`, creating its directory, waiting at most
    /// [`DEFAULT_LOCK_TIMEOUT`] for a process that holds it exclusively.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, PinError> {
        Self::open_with_timeout(path, DEFAULT_LOCK_TIMEOUT)
    }

    /// [`Self::open`], waiting for locks (now and in later transactions) at most `lock_timeout`.
    pub fn open_with_timeout(
        path: impl AsRef<Path>,
        lock_timeout: Duration,
    ) -> Result<Self, PinError> {
        let path = path.as_ref().to_owned();
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| fail(&path, "create the directory of", e))?;
        }
        let deadline = Instant::now() + lock_timeout;
        let mut attempt = 0;
        let db = loop {
            match Builder::new()
                .set_concurrency_mode(ConcurrencyMode::MultiWriter)
                .set_cache_size(CACHE_BYTES)
                .create(&path)
            {
                Ok(db) => break db,
                Err(DatabaseError::DatabaseAlreadyOpen) if backoff(&mut attempt, deadline) => {}
                Err(e) => return Err(fail(&path, "open the pin database", e)),
            }
        };
        Ok(Self {
            path,
            db,
            lock_timeout,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Imports the JSON pin file of earlier versions (`{upstream: {tool: {hash, pending?}}}`)
    /// once: nothing when it does not exist or an import was already recorded; pins already in
    /// the database are kept. Returns how many pins were imported. The JSON file is not
    /// changed or removed. A file that cannot be read or parsed is an error (fail closed).
    pub fn import_json(&self, json: impl AsRef<Path>) -> Result<usize, PinError> {
        let json = json.as_ref();
        if self.imported()? {
            return Ok(0);
        }
        let pins: Pins = match std::fs::read(json) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Pins::new(),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| fail(json, "parse", e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(fail(json, "read", e)),
        };
        let imported = self.write(|tx| {
            let mut meta = tx.open_table(META)?;
            if meta.get(JSON_IMPORTED)?.is_some() {
                return Ok(0);
            }
            meta.insert(JSON_IMPORTED, json.display().to_string().as_bytes())?;
            let mut table = tx.open_table(PINS)?;
            let mut imported = 0;
            for (upstream, tools) in &pins {
                for (tool, pin) in tools {
                    if table.get((upstream.as_str(), tool.as_str()))?.is_none() {
                        let bytes = serde_json::to_vec(pin).map_err(json_error)?;
                        table.insert((upstream.as_str(), tool.as_str()), bytes.as_slice())?;
                        imported += 1;
                    }
                }
            }
            Ok(imported)
        })?;
        if imported > 0 {
            tracing::info!(from = %json.display(), to = %self.path.display(), imported, "imported the JSON tool pins");
        }
        Ok(imported)
    }

    fn imported(&self) -> Result<bool, PinError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| fail(&self.path, "read", e))?;
        match tx.open_table(META) {
            Ok(meta) => Ok(meta
                .get(JSON_IMPORTED)
                .map_err(|e| fail(&self.path, "read", e))?
                .is_some()),
            Err(TableError::TableDoesNotExist(_)) => Ok(false),
            Err(e) => Err(fail(&self.path, "read", e)),
        }
    }

    /// Every pin, read from the file in one read transaction.
    fn read_all(&self) -> Result<Pins, PinError> {
        let err = |e: &dyn std::fmt::Display| fail(&self.path, "read", e);
        let tx = self.db.begin_read().map_err(|e| err(&e))?;
        let table = match tx.open_table(PINS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Pins::new()),
            Err(e) => return Err(err(&e)),
        };
        let mut pins = Pins::new();
        for entry in table.iter().map_err(|e| err(&e))? {
            let (key, value) = entry.map_err(|e| err(&e))?;
            let (upstream, tool) = key.value();
            let pin: Pin = serde_json::from_slice(value.value())
                .map_err(|e| fail(&self.path, "decode a pin of", e))?;
            pins.entry(upstream.to_owned())
                .or_default()
                .insert(tool.to_owned(), pin);
        }
        Ok(pins)
    }

    /// Runs `f` over the pins as the file has them now (the cached copy when the file did not
    /// change since it was read).
    fn with_fresh<T>(&self, f: impl FnOnce(&Pins) -> T) -> Result<T, PinError> {
        let mut cache = self.cache.lock();
        let current = version(&self.path);
        if current.is_none() || current != cache.version || !cache.trusted {
            // The clock is read before the file, so that `trusted` errs on the side of reading
            // again; a commit between the stat and the read only makes the copy newer than
            // its version, which the next stat then reads again.
            let now = SystemTime::now();
            let pins = self.read_all()?;
            let trusted = current
                .and_then(|v| v.modified)
                .and_then(|m| m.checked_add(RACY_WINDOW))
                .is_some_and(|m| m <= now);
            *cache = Cache {
                version: current,
                trusted,
                pins,
            };
        }
        Ok(f(&cache.pins))
    }

    /// Runs `f` in one write transaction, committed (fsync) when it returns `Ok`. Another
    /// write transaction (of this or another process) is waited for at most the lock timeout.
    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, PinError> {
        let deadline = Instant::now() + self.lock_timeout;
        let mut attempt = 0;
        let tx = loop {
            match self.db.try_begin_write() {
                Ok(tx) => break tx,
                Err(TransactionError::WouldBlock) => {
                    if !backoff(&mut attempt, deadline) {
                        return Err(fail(
                            &self.path,
                            "write",
                            format_args!(
                                "another writer held the pin database for more than {:?}",
                                self.lock_timeout
                            ),
                        ));
                    }
                }
                Err(e) => return Err(fail(&self.path, "write", e)),
            }
        };
        let out = f(&tx).map_err(|e| fail(&self.path, "write", e))?;
        tx.commit().map_err(|e| fail(&self.path, "commit to", e))?;
        // Our own commit changed the file: the next read refreshes the copy.
        self.cache.lock().version = None;
        Ok(out)
    }

    /// Reads the pin of (`upstream`, `tool`) in `tx`, applies `next` and stores its result.
    fn update<T>(
        &self,
        upstream: &str,
        tool: &str,
        next: impl FnOnce(Option<&Pin>) -> (T, Option<Pin>),
    ) -> Result<T, PinError> {
        self.write(|tx| {
            let mut table = tx.open_table(PINS)?;
            let current: Option<Pin> = match table.get((upstream, tool))? {
                Some(value) => Some(serde_json::from_slice(value.value()).map_err(json_error)?),
                None => None,
            };
            let (out, pin) = next(current.as_ref());
            if let Some(pin) = pin {
                let bytes = serde_json::to_vec(&pin).map_err(json_error)?;
                table.insert((upstream, tool), bytes.as_slice())?;
            }
            Ok(out)
        })
    }
}

/// A pin that does not (de)serialize, as an error of the transaction it happened in.
fn json_error(e: serde_json::Error) -> redb::Error {
    redb::Error::Corrupted(format!("pin encoding: {e}"))
}

/// The store's calls: redb transactions on this thread (a write may wait for another process's
/// writer, bounded by the open timeout).
impl RedbPinStore {
    fn observe_now(
        &self,
        upstream: &str,
        tool: &str,
        hash: &str,
        definition: Option<&Value>,
    ) -> Result<PinStatus, PinError> {
        // Most observations change nothing (the definition is the pinned one, or a change
        // already pending): answered from memory without a write transaction.
        let (status, next) = self.with_fresh(|pins| {
            Pin::observe_definition(
                pins.get(upstream).and_then(|t| t.get(tool)),
                hash,
                definition,
            )
        })?;
        if next.is_none() {
            return Ok(status);
        }
        // Something to write: compare again inside the write transaction, where no other
        // process can change the pin in between.
        self.update(upstream, tool, |current| {
            Pin::observe_definition(current, hash, definition)
        })
    }

    fn is_held_now(&self, upstream: &str, tool: &str) -> Result<bool, PinError> {
        self.with_fresh(|pins| {
            pins.get(upstream)
                .and_then(|tools| tools.get(tool))
                .is_some_and(Pin::is_held)
        })
    }

    fn approve_now(
        &self,
        upstream: &str,
        tool: &str,
        pending: Option<&str>,
    ) -> Result<bool, PinError> {
        self.update(upstream, tool, |current| {
            let next = match pending {
                Some(pending) => current.and_then(|pin| pin.approved_if(pending)),
                None => current.and_then(Pin::approved),
            };
            match next {
                Some(next) => (true, Some(next)),
                None => (false, None),
            }
        })
    }

    fn list_now(&self) -> Result<Pins, PinError> {
        self.with_fresh(Pins::clone)
    }
}

impl PinStore for RedbPinStore {
    fn observe<'a>(
        &'a self,
        upstream: &'a str,
        tool: &'a str,
        hash: &'a str,
    ) -> StoreCall<'a, PinStatus, PinError> {
        StoreCall::ready(self.observe_now(upstream, tool, hash, None))
    }

    fn observe_definition<'a>(
        &'a self,
        upstream: &'a str,
        tool: &'a str,
        hash: &'a str,
        definition: &'a Value,
    ) -> StoreCall<'a, PinStatus, PinError> {
        StoreCall::ready(self.observe_now(upstream, tool, hash, Some(definition)))
    }

    fn approve_pending<'a>(
        &'a self,
        upstream: &'a str,
        tool: &'a str,
        pending: &'a str,
    ) -> StoreCall<'a, bool, PinError> {
        StoreCall::ready(self.approve_now(upstream, tool, Some(pending)))
    }

    fn is_held<'a>(&'a self, upstream: &'a str, tool: &'a str) -> StoreCall<'a, bool, PinError> {
        StoreCall::ready(self.is_held_now(upstream, tool))
    }

    fn approve<'a>(&'a self, upstream: &'a str, tool: &'a str) -> StoreCall<'a, bool, PinError> {
        StoreCall::ready(self.approve_now(upstream, tool, None))
    }

    fn list(&self) -> StoreCall<'_, Pins, PinError> {
        StoreCall::ready(self.list_now())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn store(dir: &tempfile::TempDir) -> RedbPinStore {
        RedbPinStore::open(dir.path().join("pins.redb")).unwrap()
    }

    #[test]
    fn new_same_changed_approve() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        assert_eq!(s.observe("up", "echo", "a").wait().unwrap(), PinStatus::New);
        assert_eq!(
            s.observe("up", "echo", "a").wait().unwrap(),
            PinStatus::Same
        );
        assert!(!s.is_held("up", "echo").wait().unwrap());
        assert_eq!(
            s.observe("up", "echo", "b").wait().unwrap(),
            PinStatus::Changed { first: true }
        );
        assert_eq!(
            s.observe("up", "echo", "b").wait().unwrap(),
            PinStatus::Changed { first: false }
        );
        assert!(s.is_held("up", "echo").wait().unwrap());
        assert!(!s.is_held("other", "echo").wait().unwrap());
        assert!(s.approve("up", "echo").wait().unwrap());
        assert!(!s.approve("up", "echo").wait().unwrap());
        assert!(!s.approve("up", "never-seen").wait().unwrap());
        assert!(!s.is_held("up", "echo").wait().unwrap());
        assert_eq!(
            s.observe("up", "echo", "b").wait().unwrap(),
            PinStatus::Same
        );
        // Back to the pinned definition after a change: nothing pending any more.
        assert_eq!(
            s.observe("up", "echo", "c").wait().unwrap(),
            PinStatus::Changed { first: true }
        );
        assert_eq!(
            s.observe("up", "echo", "b").wait().unwrap(),
            PinStatus::Same
        );
        assert!(!s.is_held("up", "echo").wait().unwrap());
        assert_eq!(s.list().wait().unwrap()["up"]["echo"], Pin::new("b"));
    }

    #[test]
    fn pins_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = store(&dir);
            s.observe("up", "echo", "a").wait().unwrap();
            s.observe("up", "echo", "b").wait().unwrap();
            s.observe("up", "sum", "x").wait().unwrap();
            s.observe("up", "sum", "y").wait().unwrap();
            assert!(s.approve("up", "sum").wait().unwrap());
        }
        let s = store(&dir);
        assert!(
            s.is_held("up", "echo").wait().unwrap(),
            "a change stays held"
        );
        assert!(!s.is_held("up", "sum").wait().unwrap(), "an approval stays");
        assert_eq!(s.observe("up", "sum", "y").wait().unwrap(), PinStatus::Same);
        assert_eq!(
            s.observe("up", "echo", "b").wait().unwrap(),
            PinStatus::Changed { first: false }
        );
        let pins = s.list().wait().unwrap();
        assert_eq!(
            pins["up"]["echo"],
            Pin {
                pending: Some("b".into()),
                ..Pin::new("a")
            }
        );
    }

    /// Definitions (approved and pending) are kept in the file, seen by another handle, and
    /// approving a pending hash that is no longer the pending one changes nothing.
    #[test]
    fn definitions_persist_and_a_stale_approval_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (v1, v2) = (
            serde_json::json!({"name": "echo", "description": "one"}),
            serde_json::json!({"name": "echo", "description": "two"}),
        );
        {
            let s = store(&dir);
            assert_eq!(
                s.observe_definition("up", "echo", "a", &v1).wait().unwrap(),
                PinStatus::New
            );
            assert_eq!(
                s.observe_definition("up", "echo", "b", &v2).wait().unwrap(),
                PinStatus::Changed { first: true }
            );
        }
        let s = store(&dir);
        let pin = s.list().wait().unwrap()["up"]["echo"].clone();
        assert_eq!(pin.definition, Some(v1));
        assert_eq!(pin.pending_definition, Some(v2.clone()));
        assert!(!s.approve_pending("up", "echo", "a").wait().unwrap());
        assert!(s.is_held("up", "echo").wait().unwrap());
        assert!(s.approve_pending("up", "echo", "b").wait().unwrap());
        let pin = s.list().wait().unwrap()["up"]["echo"].clone();
        assert_eq!((pin.hash.as_str(), pin.definition), ("b", Some(v2)));
    }

    /// Two handles on one file in one process exclude and see each other as two processes do
    /// (redb's locks are per open file description).
    #[test]
    fn a_second_handle_approves_and_the_first_sees_it_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let proxy = store(&dir);
        let cli = store(&dir);
        assert_eq!(
            proxy.observe("up", "echo", "a").wait().unwrap(),
            PinStatus::New
        );
        assert_eq!(
            proxy.observe("up", "echo", "b").wait().unwrap(),
            PinStatus::Changed { first: true }
        );
        assert!(proxy.is_held("up", "echo").wait().unwrap());
        assert!(cli.is_held("up", "echo").wait().unwrap());
        // Many times, each right after the other handle's commit (within one timestamp tick):
        // the cached copy never hides a commit.
        for round in 0..20 {
            let next = format!("h{round}");
            assert!(cli.approve("up", "echo").wait().unwrap());
            assert!(
                !proxy.is_held("up", "echo").wait().unwrap(),
                "round {round}"
            );
            assert_eq!(
                proxy.observe("up", "echo", &next).wait().unwrap(),
                PinStatus::Changed { first: true }
            );
            assert!(cli.is_held("up", "echo").wait().unwrap(), "round {round}");
        }
        // A pin made by one handle is seen by the other, which does not pin it again.
        assert_eq!(
            cli.observe("up", "sum", "x").wait().unwrap(),
            PinStatus::New
        );
        assert_eq!(
            proxy.observe("up", "sum", "x").wait().unwrap(),
            PinStatus::Same
        );
        assert_eq!(proxy.list().wait().unwrap(), cli.list().wait().unwrap());
    }

    /// The read-compare-write of `observe` is one write transaction: of several handles seeing
    /// the same new tool (or the same change) at once, exactly one pins it (or counts it).
    #[test]
    fn observe_is_atomic_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let handles: Vec<Arc<RedbPinStore>> = (0..4).map(|_| Arc::new(store(&dir))).collect();
        for (hash, expect) in [
            ("a", PinStatus::New),
            ("b", PinStatus::Changed { first: true }),
        ] {
            let barrier = Arc::new(Barrier::new(handles.len()));
            let threads: Vec<_> = handles
                .iter()
                .map(|s| {
                    let (s, barrier) = (Arc::clone(s), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        s.observe("up", "echo", hash).wait().unwrap()
                    })
                })
                .collect();
            let statuses: Vec<PinStatus> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            assert_eq!(
                statuses.iter().filter(|s| **s == expect).count(),
                1,
                "{statuses:?}"
            );
        }
    }

    #[test]
    fn a_held_write_lock_is_waited_for_then_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.redb");
        let holder = store(&dir);
        holder.observe("up", "echo", "a").wait().unwrap();
        holder.observe("up", "echo", "b").wait().unwrap();
        let impatient = RedbPinStore::open_with_timeout(&path, Duration::from_millis(150)).unwrap();
        // Opened before the write transaction below: an open waits for the writer (not bounded by
        // the timeout; write transactions here are one read-compare-write and a commit).
        let patient = Arc::new(store(&dir));

        // Another handle (another process) is inside a write transaction.
        let tx = holder.db.try_begin_write().unwrap();
        let started = Instant::now();
        let err = impatient.approve("up", "echo").wait().unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(err.message.contains("another writer"), "{err}");
        // Reads do not wait for writers.
        assert!(impatient.is_held("up", "echo").wait().unwrap());

        // Released while a patient handle retries: it goes through.
        let approving = {
            let patient = Arc::clone(&patient);
            std::thread::spawn(move || patient.approve("up", "echo").wait())
        };
        std::thread::sleep(Duration::from_millis(100));
        drop(tx);
        assert!(approving.join().unwrap().unwrap());
        assert!(!impatient.is_held("up", "echo").wait().unwrap());
    }

    #[test]
    fn an_exclusive_open_elsewhere_is_retried_until_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.redb");
        drop(store(&dir));
        let exclusive = Database::create(&path).unwrap();
        let err = RedbPinStore::open_with_timeout(&path, Duration::from_millis(100)).unwrap_err();
        assert!(err.message.contains("open the pin database"), "{err}");
        let opening = {
            let path = path.clone();
            std::thread::spawn(move || RedbPinStore::open(path))
        };
        std::thread::sleep(Duration::from_millis(100));
        drop(exclusive);
        let s = opening.join().unwrap().unwrap();
        assert_eq!(s.observe("up", "echo", "a").wait().unwrap(), PinStatus::New);
    }

    #[test]
    fn the_json_pin_file_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("mcp-pins.json");
        let s = store(&dir);
        // Nothing to import: nothing happens (and nothing is recorded).
        assert_eq!(s.import_json(&json).unwrap(), 0);
        s.observe("up", "kept", "mine").wait().unwrap();
        std::fs::write(
            &json,
            r#"{"up": {"echo": {"hash": "a", "pending": "b"}, "sum": {"hash": "x"},
                       "kept": {"hash": "theirs"}}}"#,
        )
        .unwrap();
        assert_eq!(s.import_json(&json).unwrap(), 2);
        assert!(s.is_held("up", "echo").wait().unwrap());
        assert_eq!(s.observe("up", "sum", "x").wait().unwrap(), PinStatus::Same);
        assert_eq!(s.list().wait().unwrap()["up"]["kept"], Pin::new("mine"));
        // Once: a later change to the JSON file is not imported, by this or another handle.
        std::fs::write(&json, r#"{"up": {"late": {"hash": "z"}}}"#).unwrap();
        assert_eq!(s.import_json(&json).unwrap(), 0);
        assert_eq!(store(&dir).import_json(&json).unwrap(), 0);
        assert!(!s.list().wait().unwrap()["up"].contains_key("late"));
        assert!(json.exists(), "the JSON file is left alone");
    }

    #[test]
    fn a_corrupt_json_pin_file_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("mcp-pins.json");
        std::fs::write(&json, "{not json").unwrap();
        let err = store(&dir).import_json(&json).unwrap_err();
        assert!(err.message.contains("parse"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_database_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.redb");
        std::fs::write(&path, r#"{"up": {}}"#).unwrap();
        assert!(RedbPinStore::open_with_timeout(&path, Duration::from_millis(50)).is_err());
    }
}
