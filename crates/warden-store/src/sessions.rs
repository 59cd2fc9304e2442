//! The embedded session store: memory first, redb behind.
//!
//! Durability: every decision updates the in-memory map only (no disk I/O on the hot path) and
//! marks the session dirty. A [`Flusher`] thread writes all dirty sessions in one redb
//! transaction every flush interval, committed with `Durability::Immediate` (fsync), and once
//! more on shutdown. A crash (not a clean stop) loses at most the last interval's changes.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use parking_lot::Mutex;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use warden_core::session::HistoryEntry;
use warden_core::{SessionState, SessionStore, StateChange, StoreError};

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
        }
    }
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
    db: Option<Database>,
    ttl: Option<Duration>,
}

impl std::fmt::Debug for EmbeddedSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedSessionStore")
            .field("sessions", &self.sessions.len())
            .field("persistent", &self.db.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl EmbeddedSessionStore {
    /// A store that keeps sessions in memory only.
    pub fn memory(ttl: Option<Duration>) -> Self {
        Self {
            sessions: DashMap::new(),
            dirty: Mutex::new(HashSet::new()),
            db: None,
            ttl,
        }
    }

    /// Opens (or creates) the redb file at `path` and loads its sessions, dropping those idle
    /// longer than `ttl`.
    pub fn open(path: &Path, ttl: Option<Duration>) -> Result<Self, SessionDbError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(db_error)?;
        }
        let db = Database::create(path).map_err(db_error)?;
        {
            let tx = db.begin_write().map_err(db_error)?;
            tx.open_table(SESSIONS).map_err(db_error)?;
            tx.commit().map_err(db_error)?;
        }
        let store = Self {
            sessions: DashMap::new(),
            dirty: Mutex::new(HashSet::new()),
            db: None,
            ttl,
        };
        let now = now_secs();
        {
            let tx = db.begin_read().map_err(db_error)?;
            let table = tx.open_table(SESSIONS).map_err(db_error)?;
            for row in table.iter().map_err(db_error)? {
                let (key, value) = row.map_err(db_error)?;
                let Ok(stored) = serde_json::from_slice::<Stored>(value.value()) else {
                    // An unreadable row is dropped (and deleted at the next flush), not fatal.
                    store.dirty.lock().insert(key.value().into());
                    continue;
                };
                let slot = stored.into_slot();
                if store.expired(slot.last_seen, now) {
                    store.dirty.lock().insert(key.value().into());
                } else {
                    store.sessions.insert(key.value().into(), slot);
                }
            }
        }
        Ok(Self {
            db: Some(db),
            ..store
        })
    }

    /// True when this store writes to a file.
    pub fn is_persistent(&self) -> bool {
        self.db.is_some()
    }

    fn expired(&self, last_seen: u64, now: u64) -> bool {
        self.ttl
            .is_some_and(|ttl| last_seen.saturating_add(ttl.as_secs()) < now)
    }

    /// Forgets sessions idle longer than the TTL (and sessions left empty); returns how many.
    pub fn sweep(&self) -> usize {
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
        if self.db.is_some() && n > 0 {
            self.dirty.lock().extend(removed);
        }
        n
    }

    /// Writes every session changed since the last flush in one transaction (fsync'd); returns
    /// how many rows were written or deleted. A no-op for a memory store.
    pub fn flush(&self) -> Result<usize, SessionDbError> {
        let Some(db) = &self.db else {
            return Ok(0);
        };
        let keys = std::mem::take(&mut *self.dirty.lock());
        if keys.is_empty() {
            return Ok(0);
        }
        let result = (|| {
            let mut tx = db.begin_write().map_err(db_error)?;
            tx.set_durability(Durability::Immediate).map_err(db_error)?;
            {
                let mut table = tx.open_table(SESSIONS).map_err(db_error)?;
                for key in &keys {
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
        })();
        if result.is_err() {
            // Keep them dirty so the next flush retries.
            self.dirty.lock().extend(keys);
        }
        result
    }

    /// Number of sessions changed and not yet flushed.
    pub fn pending(&self) -> usize {
        self.dirty.lock().len()
    }

    /// Starts a thread that sweeps and flushes every `interval` until the returned handle is
    /// stopped (which flushes a last time).
    pub fn spawn_flusher(self: &Arc<Self>, interval: Duration) -> Flusher {
        let (stop, stopped) = mpsc::channel::<()>();
        let store = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("warden-session-flush".into())
            .spawn(move || {
                let mut sweep_due = 0u32;
                loop {
                    let done = !matches!(
                        stopped.recv_timeout(interval),
                        Err(mpsc::RecvTimeoutError::Timeout)
                    );
                    sweep_due = sweep_due.wrapping_add(1);
                    if done || sweep_due.is_multiple_of(10) {
                        store.sweep();
                    }
                    let _ = store.flush();
                    if done {
                        break;
                    }
                }
            })
            .ok();
        Flusher {
            stop: Some(stop),
            thread,
        }
    }
}

/// The background flush thread; [`Flusher::stop`] (or dropping it) flushes a last time.
#[derive(Debug)]
pub struct Flusher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Stops the thread after a final sweep and flush, and waits for it.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop();
    }
}

impl SessionStore for EmbeddedSessionStore {
    fn transact(
        &self,
        session: &str,
        decide: &mut dyn FnMut(&SessionState) -> Option<StateChange>,
    ) -> Result<(), StoreError> {
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
        } else {
            match self.sessions.entry(session.into()) {
                dashmap::Entry::Occupied(mut occupied) => {
                    let slot = occupied.get_mut();
                    slot.last_seen = now;
                    if let Some(change) = decide(&slot.state)
                        && !change.is_noop()
                    {
                        slot.state.apply(&change);
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
                        });
                        changed = true;
                    }
                }
            }
        }
        if changed && self.db.is_some() {
            // A busy session is usually marked already: no key copy then.
            let mut dirty = self.dirty.lock();
            if !dirty.contains(session) {
                dirty.insert(session.into());
            }
        }
        Ok(())
    }

    fn get(&self, session: &str) -> Result<Option<SessionState>, StoreError> {
        let now = now_secs();
        Ok(self
            .sessions
            .get(session)
            .filter(|slot| !self.expired(slot.last_seen, now))
            .map(|slot| slot.state.clone()))
    }

    fn remove(&self, session: &str) -> Result<(), StoreError> {
        self.sessions.remove(session);
        if self.db.is_some() {
            self.dirty.lock().insert(session.into());
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.sessions.len()
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
