//! Per-session state and the stores that keep it.
//!
//! A decision reads a session's taints and history, decides, and writes the change back. The
//! [`SessionStore::transact`] contract makes that read-decide-update atomic per session, so two
//! concurrent calls cannot both pass a taint check that either would flip.
//!
//! A caller that must decide several requests before changing anything (a batch that is all or
//! nothing) reads with [`SessionStore::load`], decides against its own copies, and writes them
//! back with [`SessionStore::commit`], which applies every write or none: none when any session
//! changed since it was loaded (optimistic concurrency, so a store behind a network holds no
//! lock while the caller decides).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// History entries kept per session for Rego's `input.state.history` unless configured otherwise.
pub const DEFAULT_HISTORY_CAP: usize = 1000;

/// Largest `after.within` a policy may use unless configured otherwise: a session keeps that
/// many history entries, so the bound is a memory bound per session.
pub const DEFAULT_MAX_WITHIN: usize = 10_000;

/// One tool call that went through, with the tool's classes at that time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Tool name.
    pub tool: Arc<str>,
    /// The tool's classes when it was called, sorted.
    pub classes: Arc<[Arc<str>]>,
}

/// A session's taints, call history and sequence markers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Current taints.
    pub taints: BTreeSet<Arc<str>>,
    /// Calls that went through, oldest first, bounded by the policy's longest `within`.
    pub history: VecDeque<HistoryEntry>,
    /// Keys of the unbounded `after` conditions (no `within`) that some call that went through
    /// has met: such a condition holds for the rest of the session, however long, in constant
    /// memory (see `policy::After::key`).
    pub seen: BTreeSet<Arc<str>>,
}

/// The update a decision makes to its session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateChange {
    /// Taints removed (applied before `add`).
    pub remove: Vec<Arc<str>>,
    /// Taints added.
    pub add: Vec<Arc<str>>,
    /// The call to append to history, if it is a tool call.
    pub push: Option<HistoryEntry>,
    /// Sequence markers to set (keys of unbounded `after` conditions the call meets).
    pub mark: Vec<Arc<str>>,
    /// How many history entries to keep at most after the push.
    pub history_limit: usize,
}

impl StateChange {
    /// True when applying the change would leave any state as it is.
    pub fn is_noop(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty() && self.push.is_none() && self.mark.is_empty()
    }
}

impl SessionState {
    /// True when the session holds nothing (no taint, history or marker): it may be forgotten.
    pub fn is_empty(&self) -> bool {
        self.taints.is_empty() && self.history.is_empty() && self.seen.is_empty()
    }

    /// The taint set after `change`, without applying it.
    pub fn taints_after(&self, change: &StateChange) -> BTreeSet<Arc<str>> {
        let mut taints = self.taints.clone();
        for t in &change.remove {
            taints.remove(t);
        }
        taints.extend(change.add.iter().cloned());
        taints
    }

    /// Applies `change`: removes before adds, then the history push and markers, then the
    /// history bound.
    pub fn apply(&mut self, change: &StateChange) {
        for t in &change.remove {
            self.taints.remove(t);
        }
        self.taints.extend(change.add.iter().cloned());
        if let Some(entry) = &change.push {
            self.history.push_back(entry.clone());
        }
        self.seen.extend(change.mark.iter().cloned());
        while self.history.len() > change.history_limit {
            self.history.pop_front();
        }
    }
}

/// A failure of a session store (a shared store may be unreachable; the in-memory one never fails).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session store: {message}")]
pub struct StoreError {
    /// What went wrong, without any session content.
    pub message: String,
}

/// A session's state as [`SessionStore::load`] read it, with the version it had then.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versioned {
    /// The state (empty when the session is unknown or expired).
    pub state: SessionState,
    /// Changes on every write of the session and is never reused by the store, also after the
    /// session is removed and created again; 0 when the session does not exist.
    pub version: u64,
}

/// One session in a [`SessionStore::commit`]: its new state, or only a check that it is unchanged
/// (a session the caller read and decided on without changing it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionWrite {
    /// The session.
    pub session: String,
    /// The version [`SessionStore::load`] returned: the write applies only if it is still current.
    pub expected: u64,
    /// The state that replaces the session's; `None`: the session is only checked.
    pub state: Option<SessionState>,
}

/// Where session state lives.
pub trait SessionStore: Send + Sync {
    /// Calls `decide` with the session's current state (empty when unknown) and applies the
    /// change it returns, atomically with respect to every other `transact` on the same session.
    /// `decide` may be called more than once by stores that retry on conflict, so it must not
    /// have side effects other than its return value and the last value it stores in captures.
    fn transact(
        &self,
        session: &str,
        decide: &mut dyn FnMut(&SessionState) -> Option<StateChange>,
    ) -> Result<(), StoreError>;

    /// The session's state and its version, for [`SessionStore::commit`].
    fn load(&self, session: &str) -> Result<Versioned, StoreError>;

    /// Replaces the state of every session in `writes` that carries one, if none of the sessions
    /// in `writes` changed since it was loaded (each still has its `expected` version),
    /// atomically with respect to every other `transact` and `commit`; returns `false` and
    /// changes nothing otherwise (the caller loads and decides again). A session may appear once.
    fn commit(&self, writes: &[SessionWrite]) -> Result<bool, StoreError>;

    /// A copy of the session's state, `None` when the session is unknown.
    fn get(&self, session: &str) -> Result<Option<SessionState>, StoreError>;

    /// Forgets a session.
    fn remove(&self, session: &str) -> Result<(), StoreError>;

    /// Number of sessions held.
    fn len(&self) -> usize;

    /// True when no session is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// In-memory sessions in a sharded concurrent map: a session's transaction holds only its
/// shard's lock, so different sessions proceed in parallel.
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    sessions: DashMap<Box<str>, (SessionState, u64)>,
    /// The last version given to a write (versions are never reused, see [`Versioned`]).
    versions: AtomicU64,
    /// Taken shared by `transact` and exclusively by `commit`, so that a commit checks and
    /// writes all its sessions with no transaction in between.
    gate: RwLock<()>,
}

impl MemorySessionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl MemorySessionStore {
    fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl SessionStore for MemorySessionStore {
    fn transact(
        &self,
        session: &str,
        decide: &mut dyn FnMut(&SessionState) -> Option<StateChange>,
    ) -> Result<(), StoreError> {
        let _gate = self.gate.read();
        // Fast path without allocating the key: the session exists.
        if let Some(mut slot) = self.sessions.get_mut(session) {
            if let Some(change) = decide(&slot.0)
                && !change.is_noop()
            {
                slot.0.apply(&change);
                slot.1 = self.next_version();
            }
            return Ok(());
        }
        // `entry` re-checks under the shard lock, so a session created meanwhile is seen.
        match self.sessions.entry(session.into()) {
            dashmap::Entry::Occupied(mut occupied) => {
                if let Some(change) = decide(&occupied.get().0)
                    && !change.is_noop()
                {
                    let version = self.next_version();
                    let slot = occupied.get_mut();
                    slot.0.apply(&change);
                    slot.1 = version;
                }
            }
            dashmap::Entry::Vacant(vacant) => {
                let mut state = SessionState::default();
                if let Some(change) = decide(&state)
                    && !change.is_noop()
                {
                    state.apply(&change);
                    vacant.insert((state, self.next_version()));
                }
            }
        }
        Ok(())
    }

    fn load(&self, session: &str) -> Result<Versioned, StoreError> {
        Ok(self
            .sessions
            .get(session)
            .map(|slot| Versioned {
                state: slot.0.clone(),
                version: slot.1,
            })
            .unwrap_or_default())
    }

    fn commit(&self, writes: &[SessionWrite]) -> Result<bool, StoreError> {
        let _gate = self.gate.write();
        let current = |session: &str| self.sessions.get(session).map_or(0, |slot| slot.1);
        if writes.iter().any(|w| current(&w.session) != w.expected) {
            return Ok(false);
        }
        for w in writes {
            if let Some(state) = &w.state {
                let version = self.next_version();
                self.sessions
                    .insert(w.session.as_str().into(), (state.clone(), version));
            }
        }
        Ok(true)
    }

    fn get(&self, session: &str) -> Result<Option<SessionState>, StoreError> {
        Ok(self.sessions.get(session).map(|s| s.0.clone()))
    }

    fn remove(&self, session: &str) -> Result<(), StoreError> {
        let _gate = self.gate.read();
        self.sessions.remove(session);
        Ok(())
    }

    fn len(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn taint(name: &str) -> StateChange {
        StateChange {
            add: vec![name.into()],
            history_limit: 10,
            ..StateChange::default()
        }
    }

    /// While one session's transaction is in progress, another session (in another shard)
    /// completes its own: there is no global lock.
    #[test]
    fn different_sessions_do_not_serialise() {
        let store = Arc::new(MemorySessionStore::new());
        let a = "session-a".to_owned();
        let b = (0..1000)
            .map(|i| format!("session-b{i}"))
            .find(|b| {
                store.sessions.determine_map(b.as_str()) != store.sessions.determine_map(a.as_str())
            })
            .expect("some id lands in another shard");
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let holder = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                store
                    .transact(&a, &mut |_| {
                        started_tx.send(()).unwrap();
                        // Hold session A's lock until B is done (or give up, failing below).
                        let _ = release_rx.recv_timeout(Duration::from_secs(10));
                        Some(taint("a"))
                    })
                    .unwrap();
            })
        };
        started_rx.recv().unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        let other = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                store.transact(&b, &mut |_| Some(taint("b"))).unwrap();
                done_tx.send(()).unwrap();
            })
        };
        let finished = done_rx.recv_timeout(Duration::from_secs(5)).is_ok();
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        other.join().unwrap();
        assert!(finished, "session B waited for session A's transaction");
    }

    #[test]
    fn removes_apply_before_adds_and_history_is_trimmed() {
        let mut state = SessionState::default();
        state.taints.insert("x".into());
        let entry = HistoryEntry {
            tool: "t".into(),
            classes: Arc::from(Vec::new()),
        };
        let change = StateChange {
            remove: vec!["x".into()],
            add: vec!["x".into(), "y".into()],
            push: Some(entry.clone()),
            history_limit: 2,
            ..StateChange::default()
        };
        for _ in 0..5 {
            state.apply(&change);
        }
        assert_eq!(
            state.taints.iter().map(|t| &**t).collect::<Vec<_>>(),
            ["x", "y"]
        );
        assert_eq!(state.history.len(), 2);
    }
}
