//! The in-process stores: every call answers at once ([`StoreCall::Ready`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

use super::{
    CounterId, CounterStore, Decide, KeyRecord, KeyStore, NonceStore, Reserve, SessionStore,
    SessionWrite, StoreAccess, StoreCall, StoreError,
};
use crate::session::{SessionState, Versioned};

/// Counter totals and expiries, by key and window.
type Counters = HashMap<(Box<str>, u64), (u64, u64)>;

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

    /// [`SessionStore::transact`] under the session's shard lock (never fails).
    fn transact_now(&self, session: &str, decide: &mut Decide<'_>) {
        let _gate = self.gate.read();
        // Fast path without allocating the key: the session exists.
        if let Some(mut slot) = self.sessions.get_mut(session) {
            if let Some(change) = decide(&slot.0)
                && !change.is_noop()
            {
                slot.0.apply(&change);
                slot.1 = self.next_version();
            }
            return;
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
    }

    fn commit_now(&self, writes: &[SessionWrite]) -> bool {
        let _gate = self.gate.write();
        let current = |session: &str| self.sessions.get(session).map_or(0, |slot| slot.1);
        if writes.iter().any(|w| current(&w.session) != w.expected) {
            return false;
        }
        for w in writes {
            if let Some(state) = &w.state {
                let version = self.next_version();
                self.sessions
                    .insert(w.session.as_str().into(), (state.clone(), version));
            }
        }
        true
    }
}

impl SessionStore for MemorySessionStore {
    fn transact<'a>(
        &'a self,
        _: StoreAccess,
        session: &'a str,
        decide: &'a mut Decide<'_>,
    ) -> StoreCall<'a, ()> {
        self.transact_now(session, decide);
        StoreCall::ready(Ok(()))
    }

    fn load<'a>(&'a self, _: StoreAccess, session: &'a str) -> StoreCall<'a, Versioned> {
        StoreCall::ready(Ok(self
            .sessions
            .get(session)
            .map(|slot| Versioned {
                state: slot.0.clone(),
                version: slot.1,
            })
            .unwrap_or_default()))
    }

    fn commit<'a>(&'a self, _: StoreAccess, writes: &'a [SessionWrite]) -> StoreCall<'a, bool> {
        StoreCall::ready(Ok(self.commit_now(writes)))
    }

    fn get<'a>(&'a self, session: &'a str) -> StoreCall<'a, Option<SessionState>> {
        StoreCall::ready(Ok(self.sessions.get(session).map(|s| s.0.clone())))
    }

    fn remove<'a>(&'a self, session: &'a str) -> StoreCall<'a, ()> {
        let _gate = self.gate.read();
        self.sessions.remove(session);
        StoreCall::ready(Ok(()))
    }

    fn len(&self) -> usize {
        self.sessions.len()
    }
}

/// Single-use ids in memory, swept of expired ones when full; refuses (an error, so the caller
/// fails closed) rather than forget an unexpired one.
#[derive(Debug)]
pub struct MemoryNonceStore {
    seen: Mutex<HashMap<Box<str>, u64>>,
    capacity: usize,
}

impl Default for MemoryNonceStore {
    fn default() -> Self {
        Self::new(1_000_000)
    }
}

impl MemoryNonceStore {
    /// A store holding at most `capacity` unexpired ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Ids remembered (expired ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.seen.lock().len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn consume_now(&self, nonce: &str, expires: u64, now: u64) -> Result<bool, StoreError> {
        let mut seen = self.seen.lock();
        if seen.get(nonce).is_some_and(|&until| until >= now) {
            return Ok(false);
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, until| *until >= now);
            if seen.len() >= self.capacity {
                return Err(StoreError::new("the nonce store is full"));
            }
        }
        seen.insert(nonce.into(), expires);
        Ok(true)
    }
}

impl NonceStore for MemoryNonceStore {
    fn consume<'a>(&'a self, nonce: &'a str, expires: u64, now: u64) -> StoreCall<'a, bool> {
        StoreCall::ready(self.consume_now(nonce, expires, now))
    }
}

/// Counters in memory, swept of expired windows when full; refuses a new counter (an error, so
/// the caller fails closed) rather than forget a live one.
#[derive(Debug)]
pub struct MemoryCounterStore {
    counters: Mutex<Counters>,
    capacity: usize,
    clock: fn() -> u64,
}

impl Default for MemoryCounterStore {
    fn default() -> Self {
        Self::new(1_000_000)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl MemoryCounterStore {
    /// A store holding at most `capacity` live counters.
    pub fn new(capacity: usize) -> Self {
        Self {
            counters: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            clock: unix_now,
        }
    }

    fn add_now(
        &self,
        key: &str,
        window: u64,
        amount: u64,
        expires: u64,
    ) -> Result<u64, StoreError> {
        let mut counters = self.counters.lock();
        if let Some((total, _)) = counters.get_mut(&(key.into(), window)) {
            *total = total.saturating_add(amount);
            return Ok(*total);
        }
        if counters.len() >= self.capacity {
            let now = (self.clock)();
            counters.retain(|_, (_, until)| *until >= now);
            if counters.len() >= self.capacity {
                return Err(StoreError::new("the counter store is full"));
            }
        }
        counters.insert((key.into(), window), (amount, expires));
        Ok(amount)
    }
}

impl CounterStore for MemoryCounterStore {
    fn add<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        amount: u64,
        expires: u64,
    ) -> StoreCall<'a, u64> {
        StoreCall::ready(self.add_now(key, window, amount, expires))
    }

    fn get<'a>(&'a self, key: &'a str, window: u64) -> StoreCall<'a, u64> {
        let counters = self.counters.lock();
        StoreCall::ready(Ok(counters
            .get(&(key.into(), window))
            .map_or(0, |(total, _)| *total)))
    }

    fn reserve<'a>(&'a self, wanted: &'a [Reserve]) -> StoreCall<'a, Option<usize>> {
        let mut counters = self.counters.lock();
        for (i, r) in wanted.iter().enumerate() {
            let now = counters
                .get(&(reserved_key(&r.id), r.id.window))
                .map_or(0, |(total, _)| *total);
            if now.saturating_add(r.amount) > r.limit {
                return StoreCall::ready(Ok(Some(i)));
            }
        }
        let fresh = wanted
            .iter()
            .filter(|r| !counters.contains_key(&(reserved_key(&r.id), r.id.window)))
            .count();
        if counters.len() + fresh > self.capacity {
            let now = (self.clock)();
            counters.retain(|_, (_, until)| *until >= now);
            if counters.len() + fresh > self.capacity {
                return StoreCall::ready(Err(StoreError::new("the counter store is full")));
            }
        }
        for r in wanted {
            let entry = counters
                .entry((reserved_key(&r.id), r.id.window))
                .or_insert((0, r.expires));
            entry.0 = entry.0.saturating_add(r.amount);
        }
        StoreCall::ready(Ok(None))
    }

    fn adjust<'a>(&'a self, changes: &'a [(CounterId, i64)]) -> StoreCall<'a, ()> {
        let mut counters = self.counters.lock();
        for (id, delta) in changes {
            if let Some((total, _)) = counters.get_mut(&(reserved_key(id), id.window)) {
                *total = total.saturating_add_signed(*delta);
            }
        }
        StoreCall::ready(Ok(()))
    }

    fn reserved<'a>(&'a self, id: &'a CounterId) -> StoreCall<'a, u64> {
        let counters = self.counters.lock();
        StoreCall::ready(Ok(counters
            .get(&(reserved_key(id), id.window))
            .map_or(0, |(total, _)| *total)))
    }
}

/// A reserved counter's key among the others: group and key, apart from `add`'s keys.
fn reserved_key(id: &CounterId) -> Box<str> {
    format!("\u{1e}{}\u{1f}{}", id.group, id.key).into()
}

/// API key records in memory, for one process (tests, and a library host that mints its own).
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    records: Mutex<Vec<KeyRecord>>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl KeyStore for MemoryKeyStore {
    fn list(&self) -> StoreCall<'_, Vec<KeyRecord>> {
        StoreCall::ready(Ok(self.records.lock().clone()))
    }

    fn insert<'a>(&'a self, record: &'a KeyRecord) -> StoreCall<'a, bool> {
        let mut records = self.records.lock();
        if records.iter().any(|r| r.id == record.id) {
            return StoreCall::ready(Ok(false));
        }
        records.push(record.clone());
        StoreCall::ready(Ok(true))
    }

    fn revoke<'a>(&'a self, id: &'a str) -> StoreCall<'a, bool> {
        let mut records = self.records.lock();
        let before = records.len();
        records.retain(|r| r.id != id);
        StoreCall::ready(Ok(records.len() != before))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::session::StateChange;
    use std::sync::Arc;
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
        // A decision closure is `Send`: the receiver goes in behind a lock.
        let release_rx = parking_lot::Mutex::new(release_rx);
        let holder = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                store.transact_now(&a, &mut |_| {
                    started_tx.send(()).unwrap();
                    // Hold session A's lock until B is done (or give up, failing below).
                    let _ = release_rx.lock().recv_timeout(Duration::from_secs(10));
                    Some(taint("a"))
                });
            })
        };
        started_rx.recv().unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        let other = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                store.transact_now(&b, &mut |_| Some(taint("b")));
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
    fn a_nonce_is_used_once_until_it_expires() {
        let store = MemoryNonceStore::new(2);
        assert!(store.consume("a", 100, 10).wait().unwrap());
        assert!(!store.consume("a", 100, 50).wait().unwrap());
        assert!(store.consume("b", 20, 10).wait().unwrap());
        // Full of unexpired ids: refused, not forgotten.
        assert!(store.consume("c", 100, 10).wait().is_err());
        // Once `b` expired, it is swept and `c` fits.
        assert!(store.consume("c", 100, 30).wait().unwrap());
        assert!(!store.consume("a", 100, 30).wait().unwrap());
    }

    #[test]
    fn counters_add_per_window() {
        let store = MemoryCounterStore::new(10);
        assert_eq!(store.add("k", 1, 2, u64::MAX).wait().unwrap(), 2);
        assert_eq!(store.add("k", 1, 3, u64::MAX).wait().unwrap(), 5);
        assert_eq!(store.add("k", 2, 1, u64::MAX).wait().unwrap(), 1);
        assert_eq!(store.get("k", 1).wait().unwrap(), 5);
        assert_eq!(store.get("other", 1).wait().unwrap(), 0);
    }
}
