//! The embedded session store: memory first, redb behind.
//!
//! Durability: every decision updates the in-memory map only (no disk I/O on the hot path) and
//! marks the session dirty. A [`Flusher`] thread writes all dirty sessions in one redb
//! transaction every flush interval, committed with `Durability::Immediate` (fsync), and once
//! more on shutdown. A crash (not a clean stop) loses at most the last interval's changes.
//!
//! A failed flush is never dropped: it is logged, counted ([`EmbeddedSessionStore::flush_failures`]),
//! reported by [`EmbeddedSessionStore::flush_failing`] until a flush succeeds, and its sessions
//! stay marked for the next attempt, which first reopens the database (redb refuses further
//! writes after an I/O error). [`Flusher::stop`] retries a few times and returns what it could
//! not write.
//!
//! The number of sessions can be bounded ([`EmbeddedSessionStore::with_max_sessions`]): a new
//! session beyond the bound evicts the sessions idle the longest first (counted in
//! [`EmbeddedSessionStore::evicted`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use warden_core::session::{HistoryEntry, Versioned};
use warden_core::state::{Decide, StoreAccess, StoreCall};
use warden_core::{SessionState, SessionStore, SessionWrite, StoreError};

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");

/// The session database could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[error("session database: {message}")]
pub struct SessionDbError {
    /// What went wrong (never session content).
    pub message: String,
}

fn db_error(e: impl std::fmt::Display) -> SessionDbError {
    SessionDbError {
        message: e.to_string(),
    }
}

#[derive(Debug, Clone)]
struct Slot {
    state: SessionState,
    /// Seconds since the Unix epoch of the last access.
    last_seen: u64,
    /// See [`Versioned::version`].
    version: u64,
}

/// The on-disk form of one session.
#[derive(Serialize, Deserialize)]
struct Stored {
    taints: Vec<String>,
    history: Vec<(String, Vec<String>)>,
    last_seen: u64,
    /// Sequence markers; absent in records written before markers existed.
    #[serde(default)]
    seen: Vec<String>,
}

impl Stored {
    fn from_slot(slot: &Slot) -> Self {
        Self {
            taints: slot.state.taints.iter().map(|t| t.to_string()).collect(),
            history: slot
                .state
                .history
                .iter()
                .map(|h| {
                    (
                        h.tool.to_string(),
                        h.classes.iter().map(|c| c.to_string()).collect(),
                    )
                })
                .collect(),
            last_seen: slot.last_seen,
            seen: slot.state.seen.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn into_slot(self) -> Slot {
        let state = SessionState {
            taints: self.taints.into_iter().map(Arc::from).collect(),
            history: self
                .history
                .into_iter()
                .map(|(tool, classes)| HistoryEntry {
                    tool: tool.into(),
                    classes: classes.into_iter().map(Arc::from).collect(),
                })
                .collect(),
            seen: self.seen.into_iter().map(Arc::from).collect(),
        };
        Slot {
            state,
            last_seen: self.last_seen,
            version: 0,
        }
    }
}

/// A session's state in the stored record format (JSON; the same record the redb file holds),
/// for stores that keep it elsewhere.
pub(crate) fn encode_state(state: &SessionState) -> Result<Vec<u8>, StoreError> {
    let slot = Slot {
        state: state.clone(),
        last_seen: 0,
        version: 0,
    };
    serde_json::to_vec(&Stored::from_slot(&slot))
        .map_err(|e| StoreError::new(format!("cannot encode a session: {e}")))
}

/// The state [`encode_state`] wrote; an unreadable record is an error (fail closed), never an
/// empty session.
pub(crate) fn decode_state(bytes: &[u8]) -> Result<SessionState, StoreError> {
    serde_json::from_slice::<Stored>(bytes)
        .map(|stored| stored.into_slot().state)
        .map_err(|e| StoreError::new(format!("unreadable session record: {e}")))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sessions in a sharded in-memory map, optionally persisted to a redb file by write-behind,
/// with an optional idle TTL. See the module docs for the durability given.
pub struct EmbeddedSessionStore {
    sessions: DashMap<Box<str>, Slot>,
    dirty: Mutex<HashSet<Box<str>>>,
    /// The database; `None` for a memory store, or while it must be reopened after a failure.
    db: Mutex<Option<Database>>,
    /// The database file, for a persistent store.
    path: Option<PathBuf>,
    ttl: Option<Duration>,
    /// Most sessions kept (`usize::MAX`: no bound).
    max_sessions: usize,
    /// Held by the one thread evicting at a time.
    evicting: Mutex<()>,
    evicted: AtomicU64,
    flush_failures: AtomicU64,
    /// Failures since the last successful flush (logging is thinned out as it grows).
    failing_streak: AtomicU64,
    flush_failing: AtomicBool,
    /// Sessions taken out of `dirty` by the flush under way (still not persisted).
    flushing: AtomicUsize,
    /// The last version given to a write (never reused, see [`Versioned::version`]).
    versions: AtomicU64,
    /// Taken shared by everything that changes a session and exclusively by
    /// [`SessionStore::commit`], which so checks and writes all its sessions with no change in
    /// between.
    gate: RwLock<()>,
}

impl std::fmt::Debug for EmbeddedSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedSessionStore")
            .field("sessions", &self.sessions.len())
            .field("persistent", &self.path.is_some())
            .field("ttl", &self.ttl)
            .field("max_sessions", &self.max_sessions)
            .finish_non_exhaustive()
    }
}

/// Sessions evicted at once when the bound is reached, as a share of the bound (1/N): one scan
/// of the map then makes room for many new sessions, not one.
const EVICT_BATCH_DIVISOR: usize = 100;

/// Longest wait between two attempts while flushes fail.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// Attempts of the final flush at shutdown.
const FINAL_FLUSH_ATTEMPTS: u32 = 3;

/// Creates the database file readable and writable by its owner only (sessions hold taints
/// and tool history); an existing file is narrowed to that too.
fn create_private(path: &Path) -> Result<(), SessionDbError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let file = options.open(path).map_err(db_error)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(db_error)?;
    }
    #[cfg(not(unix))]
    options.open(path).map_err(db_error)?;
    Ok(())
}

fn open_db(path: &Path) -> Result<Database, SessionDbError> {
    create_private(path)?;
    let db = Database::create(path).map_err(db_error)?;
    let tx = db.begin_write().map_err(db_error)?;
    tx.open_table(SESSIONS).map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    Ok(db)
}

impl EmbeddedSessionStore {
    fn empty(path: Option<PathBuf>, ttl: Option<Duration>) -> Self {
        Self {
            sessions: DashMap::new(),
            dirty: Mutex::new(HashSet::new()),
            db: Mutex::new(None),
            path,
            ttl,
            max_sessions: usize::MAX,
            evicting: Mutex::new(()),
            evicted: AtomicU64::new(0),
            flush_failures: AtomicU64::new(0),
            failing_streak: AtomicU64::new(0),
            flush_failing: AtomicBool::new(false),
            flushing: AtomicUsize::new(0),
            versions: AtomicU64::new(0),
            gate: RwLock::new(()),
        }
    }

    /// A store that keeps sessions in memory only.
    pub fn memory(ttl: Option<Duration>) -> Self {
        Self::empty(None, ttl)
    }

    /// Keeps at most `max` sessions (at least 1): a new session beyond that evicts the
    /// sessions idle the longest first (about 1% of `max` at once), counted in
    /// [`Self::evicted`]. Sessions loaded from the file beyond `max` are evicted at open the
    /// same way. An evicted session starts again empty: its taints and history are gone.
    #[must_use]
    pub fn with_max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max.max(1);
        if self.sessions.len() > self.max_sessions {
            let excess = self.sessions.len() - self.max_sessions;
            self.evict(excess);
        }
        self
    }

    /// Opens (or creates, mode 0600) the redb file at `path` and loads its sessions, dropping
    /// those idle longer than `ttl`.
    pub fn open(path: &Path, ttl: Option<Duration>) -> Result<Self, SessionDbError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(db_error)?;
        }
        let db = open_db(path)?;
        let store = Self::empty(Some(path.to_owned()), ttl);
        let now = now_secs();
        let mut unreadable = 0usize;
        {
            let tx = db.begin_read().map_err(db_error)?;
            let table = tx.open_table(SESSIONS).map_err(db_error)?;
            for row in table.iter().map_err(db_error)? {
                let (key, value) = row.map_err(db_error)?;
                let Ok(stored) = serde_json::from_slice::<Stored>(value.value()) else {
                    unreadable += 1;
                    continue;
                };
                let mut slot = stored.into_slot();
                slot.version = store.next_version();
                if store.expired(slot.last_seen, now) {
                    store.dirty.lock().insert(key.value().into());
                } else {
                    store.sessions.insert(key.value().into(), slot);
                }
            }
        }
        // Dropping a session that cannot be read would forget its taints: a call they deny
        // would then be allowed. The operator decides (the message says how).
        if unreadable > 0 {
            return Err(db_error(format!(
                "`{}`: {unreadable} session record(s) cannot be read; refusing to start \
                 without their taints (move the file away to start with no sessions)",
                path.display()
            )));
        }
        *store.db.lock() = Some(db);
        Ok(store)
    }

    fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn mark_dirty(&self, session: &str) {
        if self.is_persistent() {
            // A busy session is usually marked already: no key copy then.
            let mut dirty = self.dirty.lock();
            if !dirty.contains(session) {
                dirty.insert(session.into());
            }
        }
    }

    /// Checks that the store can be used, for a readiness probe: its last flush succeeded and,
    /// for a persistent store, its database answers a read (it stays closed after a failed
    /// write until a flush reopens it). A flush under way counts as an answer.
    pub fn probe(&self) -> Result<(), SessionDbError> {
        if self.flush_failing() {
            return Err(db_error("the last flush failed"));
        }
        if self.path.is_none() {
            return Ok(());
        }
        let Some(db) = self.db.try_lock() else {
            return Ok(());
        };
        let Some(db) = db.as_ref() else {
            return Err(db_error("the database is closed"));
        };
        let tx = db.begin_read().map_err(db_error)?;
        tx.open_table(SESSIONS).map_err(db_error)?;
        Ok(())
    }

    /// True when this store writes to a file.
    pub fn is_persistent(&self) -> bool {
        self.path.is_some()
    }

    /// Flushes that failed since the store was opened.
    pub fn flush_failures(&self) -> u64 {
        self.flush_failures.load(Ordering::Relaxed)
    }

    /// True while the last flush failed (its sessions wait for the next attempt).
    pub fn flush_failing(&self) -> bool {
        self.flush_failing.load(Ordering::Acquire)
    }

    /// Sessions evicted to stay within the bound since the store was opened.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Evicts at least `at_least` sessions (the least recently seen first) unless another
    /// thread is evicting already.
    fn evict(&self, at_least: usize) {
        let Some(_evicting) = self.evicting.try_lock() else {
            return;
        };
        let want = at_least.max(self.max_sessions / EVICT_BATCH_DIVISOR).max(1);
        // The `want` oldest: a max-heap of (last_seen, key) holding the oldest seen so far.
        let mut oldest: std::collections::BinaryHeap<(u64, Box<str>)> =
            std::collections::BinaryHeap::with_capacity(want + 1);
        for entry in &self.sessions {
            let last_seen = entry.value().last_seen;
            if oldest.len() < want {
                oldest.push((last_seen, entry.key().clone()));
            } else if oldest.peek().is_some_and(|(newest, _)| last_seen < *newest) {
                oldest.pop();
                oldest.push((last_seen, entry.key().clone()));
            }
        }
        let mut removed = 0u64;
        let persistent = self.is_persistent();
        let mut dirty = Vec::new();
        for (_, key) in oldest {
            if self.sessions.remove(&key).is_some() {
                removed += 1;
                if persistent {
                    dirty.push(key);
                }
            }
        }
        if !dirty.is_empty() {
            self.dirty.lock().extend(dirty);
        }
        self.evicted.fetch_add(removed, Ordering::Relaxed);
        tracing::warn!(
            evicted = removed,
            max_sessions = self.max_sessions,
            "session limit reached; evicted the sessions idle the longest"
        );
    }

    fn expired(&self, last_seen: u64, now: u64) -> bool {
        self.ttl
            .is_some_and(|ttl| last_seen.saturating_add(ttl.as_secs()) < now)
    }

    /// Forgets sessions idle longer than the TTL (and sessions left empty); returns how many.
    pub fn sweep(&self) -> usize {
        let _gate = self.gate.read();
        let now = now_secs();
        let mut removed = Vec::new();
        self.sessions.retain(|key, slot| {
            let empty = slot.state.is_empty();
            let keep = !empty && !self.expired(slot.last_seen, now);
            if !keep {
                removed.push(key.clone());
            }
            keep
        });
        let n = removed.len();
        if self.is_persistent() && n > 0 {
            self.dirty.lock().extend(removed);
        }
        n
    }

    /// Writes every session changed since the last flush in one transaction (fsync'd); returns
    /// how many rows were written or deleted. A no-op for a memory store.
    ///
    /// On failure the sessions stay marked for the next flush, the failure is logged and
    /// counted, [`Self::flush_failing`] holds until a flush succeeds, and the next flush first
    /// reopens the database.
    pub fn flush(&self) -> Result<usize, SessionDbError> {
        let Some(path) = &self.path else {
            return Ok(0);
        };
        let mut db = self.db.lock();
        let keys = {
            let mut dirty = self.dirty.lock();
            self.flushing.store(dirty.len(), Ordering::Release);
            std::mem::take(&mut *dirty)
        };
        if keys.is_empty() && !self.flush_failing() {
            return Ok(0);
        }
        let result = (|| {
            if db.is_none() {
                *db = Some(open_db(path)?);
                tracing::debug!("session database reopened after a failed flush");
            }
            let Some(open) = db.as_ref() else {
                return Err(db_error("no database"));
            };
            self.write(open, &keys)
        })();
        match &result {
            Ok(_) => {
                self.flushing.store(0, Ordering::Release);
                self.failing_streak.store(0, Ordering::Relaxed);
                if self.flush_failing.swap(false, Ordering::AcqRel) {
                    tracing::info!("session flush succeeded again; every session is persisted");
                }
            }
            Err(e) => {
                // Keep them dirty so the next flush retries, on a reopened database: redb
                // refuses writes after an I/O error.
                {
                    let mut dirty = self.dirty.lock();
                    dirty.extend(keys);
                    self.flushing.store(0, Ordering::Release);
                }
                *db = None;
                self.flush_failures.fetch_add(1, Ordering::Relaxed);
                self.flush_failing.store(true, Ordering::Release);
                let streak = self.failing_streak.fetch_add(1, Ordering::Relaxed) + 1;
                // The first failure, then the 2nd, 4th, 8th...: a lasting failure keeps being
                // reported without flooding the log.
                if streak.is_power_of_two() {
                    tracing::error!(
                        error = %e,
                        sessions_not_persisted = self.pending(),
                        failures_in_a_row = streak,
                        "session flush failed; will retry"
                    );
                }
            }
        }
        result
    }

    fn write(&self, db: &Database, keys: &HashSet<Box<str>>) -> Result<usize, SessionDbError> {
        let mut tx = db.begin_write().map_err(db_error)?;
        tx.set_durability(Durability::Immediate).map_err(db_error)?;
        {
            let mut table = tx.open_table(SESSIONS).map_err(db_error)?;
            for key in keys {
                let stored = self.sessions.get(key).map(|slot| Stored::from_slot(&slot));
                match stored {
                    Some(stored) => {
                        let bytes = serde_json::to_vec(&stored).map_err(db_error)?;
                        table.insert(&**key, bytes.as_slice()).map_err(db_error)?;
                    }
                    None => {
                        table.remove(&**key).map_err(db_error)?;
                    }
                }
            }
        }
        tx.commit().map_err(db_error)?;
        Ok(keys.len())
    }

    /// Number of sessions changed and not yet flushed.
    pub fn pending(&self) -> usize {
        let dirty = self.dirty.lock();
        dirty.len() + self.flushing.load(Ordering::Acquire)
    }

    /// Starts a thread that sweeps and flushes every `interval` until the returned handle is
    /// stopped (which flushes a last time, retrying a failure). A failed flush is logged and
    /// counted by [`Self::flush`] and retried at the next interval.
    ///
    /// # Errors
    /// The thread could not be started (then nothing would ever be written).
    pub fn spawn_flusher(self: &Arc<Self>, interval: Duration) -> Result<Flusher, SessionDbError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let store = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("warden-session-flush".into())
            .spawn(move || {
                let mut sweep_due = 0u32;
                let mut wait = interval;
                loop {
                    let done = !matches!(
                        stopped.recv_timeout(wait),
                        Err(mpsc::RecvTimeoutError::Timeout)
                    );
                    sweep_due = sweep_due.wrapping_add(1);
                    if done || sweep_due.is_multiple_of(10) {
                        store.sweep();
                    }
                    if done {
                        break;
                    }
                    // `flush` logs and counts a failure and keeps its sessions; retries back
                    // off (a reopen after a failure may have to repair the file).
                    wait = match store.flush() {
                        Ok(_) => interval,
                        Err(_) => (wait * 2).min(MAX_RETRY_WAIT.max(interval)),
                    };
                }
                for attempt in 1..=FINAL_FLUSH_ATTEMPTS {
                    if store.flush().is_ok() {
                        break;
                    }
                    if attempt < FINAL_FLUSH_ATTEMPTS {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
            .map_err(|e| db_error(format!("cannot start the flush thread: {e}")))?;
        Ok(Flusher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The background flush thread; [`Flusher::stop`] (or dropping it) flushes a last time.
#[derive(Debug)]
pub struct Flusher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Stops the thread after a final sweep and flush (tried a few times), and waits for it.
    /// The caller reads [`EmbeddedSessionStore::flush_failing`] and
    /// [`EmbeddedSessionStore::pending`] to learn what could not be persisted.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // A send error means the thread is gone already; the join below reports it.
            stop.send(()).ok();
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the session flush thread panicked");
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The store's calls, all in memory (the file is written behind): they answer at once.
impl EmbeddedSessionStore {
    fn transact_now(&self, session: &str, decide: &mut Decide<'_>) -> Result<(), StoreError> {
        let _gate = self.gate.read();
        let now = now_secs();
        let mut changed = false;
        if let Some(mut slot) = self.sessions.get_mut(session) {
            if self.expired(slot.last_seen, now) {
                slot.state = SessionState::default();
                changed = true;
            }
            slot.last_seen = now;
            if let Some(change) = decide(&slot.state)
                && !change.is_noop()
            {
                slot.state.apply(&change);
                changed = true;
            }
            if changed {
                slot.version = self.next_version();
            }
        } else {
            if self.max_sessions != usize::MAX && self.sessions.len() >= self.max_sessions {
                // At the bound, room is made only for a request that creates a session (one
                // that changes nothing must not evict anyone); `decide` may run twice (the
                // trait allows it). Before taking the entry: evicting locks the map's shards.
                let creates = decide(&SessionState::default()).is_some_and(|c| !c.is_noop());
                if creates {
                    self.evict(self.sessions.len() + 1 - self.max_sessions);
                }
            }
            match self.sessions.entry(session.into()) {
                dashmap::Entry::Occupied(mut occupied) => {
                    let version = self.next_version();
                    let slot = occupied.get_mut();
                    slot.last_seen = now;
                    if let Some(change) = decide(&slot.state)
                        && !change.is_noop()
                    {
                        slot.state.apply(&change);
                        slot.version = version;
                        changed = true;
                    }
                }
                dashmap::Entry::Vacant(vacant) => {
                    let mut state = SessionState::default();
                    if let Some(change) = decide(&state)
                        && !change.is_noop()
                    {
                        state.apply(&change);
                        vacant.insert(Slot {
                            state,
                            last_seen: now,
                            version: self.next_version(),
                        });
                        changed = true;
                    }
                }
            }
        }
        if changed {
            self.mark_dirty(session);
        }
        Ok(())
    }

    fn load_now(&self, session: &str) -> Result<Versioned, StoreError> {
        let now = now_secs();
        Ok(match self.sessions.get(session) {
            // Expired: empty, but at the slot's version (a write replaces it).
            Some(slot) if self.expired(slot.last_seen, now) => Versioned {
                state: SessionState::default(),
                version: slot.version,
            },
            Some(slot) => Versioned {
                state: slot.state.clone(),
                version: slot.version,
            },
            None => Versioned::default(),
        })
    }

    fn commit_now(&self, writes: &[SessionWrite]) -> Result<bool, StoreError> {
        let _gate = self.gate.write();
        let current = |session: &str| self.sessions.get(session).map(|slot| slot.version);
        let mut created = 0usize;
        for w in writes {
            match current(&w.session) {
                Some(version) if version == w.expected => {}
                None if w.expected == 0 => {
                    if w.state.as_ref().is_some_and(|s| !s.is_empty()) {
                        created += 1;
                    }
                }
                _ => return Ok(false),
            }
        }
        if created > 0
            && self.max_sessions != usize::MAX
            && self.sessions.len() + created > self.max_sessions
        {
            self.evict(self.sessions.len() + created - self.max_sessions);
        }
        let now = now_secs();
        for w in writes {
            let Some(state) = &w.state else {
                continue;
            };
            if w.expected == 0 && state.is_empty() {
                continue;
            }
            let slot = Slot {
                state: state.clone(),
                last_seen: now,
                version: self.next_version(),
            };
            self.sessions.insert(w.session.as_str().into(), slot);
            self.mark_dirty(&w.session);
        }
        Ok(true)
    }

    fn get_now(&self, session: &str) -> Result<Option<SessionState>, StoreError> {
        let now = now_secs();
        Ok(self
            .sessions
            .get(session)
            .filter(|slot| !self.expired(slot.last_seen, now))
            .map(|slot| slot.state.clone()))
    }

    fn remove_now(&self, session: &str) -> Result<(), StoreError> {
        let _gate = self.gate.read();
        self.sessions.remove(session);
        if self.is_persistent() {
            self.dirty.lock().insert(session.into());
        }
        Ok(())
    }
}

impl SessionStore for EmbeddedSessionStore {
    fn transact<'a>(
        &'a self,
        _: StoreAccess,
        session: &'a str,
        decide: &'a mut Decide<'_>,
    ) -> StoreCall<'a, ()> {
        StoreCall::ready(self.transact_now(session, decide))
    }

    fn load<'a>(&'a self, _: StoreAccess, session: &'a str) -> StoreCall<'a, Versioned> {
        StoreCall::ready(self.load_now(session))
    }

    fn commit<'a>(&'a self, _: StoreAccess, writes: &'a [SessionWrite]) -> StoreCall<'a, bool> {
        StoreCall::ready(self.commit_now(writes))
    }

    fn get<'a>(&'a self, session: &'a str) -> StoreCall<'a, Option<SessionState>> {
        StoreCall::ready(self.get_now(session))
    }

    fn remove<'a>(&'a self, session: &'a str) -> StoreCall<'a, ()> {
        StoreCall::ready(self.remove_now(session))
    }

    fn len(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use warden_core::StateChange;

    const ACCESS: StoreAccess = StoreAccess::for_store_tests();

    fn taint() -> StateChange {
        StateChange {
            add: vec!["pii".into()],
            ..StateChange::default()
        }
    }

    #[test]
    fn the_sessions_seen_longest_ago_are_evicted_first_and_counted() {
        let store = EmbeddedSessionStore::memory(None).with_max_sessions(3);
        for (i, session) in ["a", "b", "c"].into_iter().enumerate() {
            store
                .transact(ACCESS, session, &mut |_| Some(taint()))
                .wait()
                .unwrap();
            // Seen at distinct times without sleeping: `last_seen` is in seconds.
            store.sessions.get_mut(session).unwrap().last_seen = 100 + i as u64;
        }
        store.sessions.get_mut("a").unwrap().last_seen = 200;
        store
            .transact(ACCESS, "d", &mut |_| Some(taint()))
            .wait()
            .unwrap();
        assert_eq!(store.len(), 3);
        assert_eq!(store.evicted(), 1);
        assert!(
            store.get("b").wait().unwrap().is_none(),
            "b was idle the longest"
        );
        for kept in ["a", "c", "d"] {
            assert!(store.get(kept).wait().unwrap().is_some(), "{kept}");
        }
        // A request that changes nothing creates no session and evicts nothing more.
        store.transact(ACCESS, "e", &mut |_| None).wait().unwrap();
        assert_eq!((store.len(), store.evicted()), (3, 1));
    }

    #[test]
    fn sessions_loaded_beyond_the_bound_are_evicted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = EmbeddedSessionStore::open(&path, None).unwrap();
            for s in ["a", "b", "c", "d"] {
                store
                    .transact(ACCESS, s, &mut |_| Some(taint()))
                    .wait()
                    .unwrap();
            }
            store.flush().unwrap();
        }
        let store = EmbeddedSessionStore::open(&path, None)
            .unwrap()
            .with_max_sessions(2);
        assert_eq!(store.len(), 2);
        assert_eq!(store.evicted(), 2);
        assert!(!store.flush_failing());
        assert_eq!(store.flush().unwrap(), 2, "the evicted rows are deleted");
    }
}

#[cfg(test)]
mod format_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Records written before sequence markers existed still load; markers round-trip.
    #[test]
    fn stored_sessions_without_markers_load_and_markers_round_trip() {
        let old =
            br#"{"taints":["pii"],"history":[["crm.read",["sensitive_read"]]],"last_seen":7}"#;
        let slot = serde_json::from_slice::<Stored>(old).unwrap().into_slot();
        assert_eq!(slot.state.taints.len(), 1);
        assert_eq!(slot.state.history.len(), 1);
        assert!(slot.state.seen.is_empty());

        let mut state = SessionState::default();
        state.seen.insert("after:0123".into());
        let bytes = serde_json::to_vec(&Stored::from_slot(&Slot {
            state: state.clone(),
            last_seen: 1,
            version: 1,
        }))
        .unwrap();
        let back = serde_json::from_slice::<Stored>(&bytes)
            .unwrap()
            .into_slot();
        assert_eq!(back.state, state);
        assert!(
            !back.state.is_empty(),
            "a session holding only a marker is kept"
        );
    }
}
