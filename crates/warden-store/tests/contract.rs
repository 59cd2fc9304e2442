#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The state layer's contract, written once and run against every implementation: sessions on
//! the in-memory store of the core, the embedded store in memory and on disk, and a store that
//! answers every call later (as one behind a network does) with the trait's optimistic
//! `transact`; tool pins in memory and in redb (two handles on one file); API keys in memory and
//! in the key file (two handles on one file); nonces; counters. Redis (sessions, nonces,
//! counters) runs the same contract against the machine's server (`WARDEN_TEST_REDIS_URL`,
//! default `redis://127.0.0.1:6379`), each store under a key prefix of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use warden_core::SessionWrite;
use warden_core::StoreAccess;
use warden_core::pins::{MemoryPinStore, PinStatus, PinStore};
use warden_core::session::Versioned;
use warden_core::state::{
    CounterId, CounterStore, KeyRecord, KeyStore, MemoryCounterStore, MemoryKeyStore,
    MemoryNonceStore, NonceStore, Reserve, StoreCall,
};
use warden_core::{MemorySessionStore, SessionState, SessionStore, StateChange};
use warden_store::{
    Database, EmbeddedSessionStore, FileKeyStore, PolicyFormat, RedbPinStore, RedisOptions,
    RedisState,
};

/// Tests drive the stores directly (feature `store-tests`).
const ACCESS: StoreAccess = StoreAccess::for_store_tests();

/// The runtime the Redis stores run their calls on, for the whole test binary.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A Redis store under a fresh key prefix (its keys expire within the hour, unless `ttl`).
fn redis(ttl: Option<std::time::Duration>) -> Arc<RedisState> {
    redis_on(&fresh_prefix(), ttl)
}

fn fresh_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "warden-test:{}:{nanos}:{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The machine's PostgreSQL (`WARDEN_TEST_DATABASE_URL`, default
/// `postgres://root@127.0.0.1:5432/test`) in a schema of its own, as the URL that selects it.
fn fresh_database() -> String {
    let base = std::env::var("WARDEN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
    let schema = fresh_prefix().replace([':', '-'], "_");
    runtime().block_on(async {
        let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {base}: {e} (scripts/test starts one)"));
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .await
            .unwrap();
    });
    let join = if base.contains('?') { '&' } else { '?' };
    format!("{base}{join}options=-csearch_path%3D{schema}")
}

/// Two connections on one fresh, migrated database: two instances.
fn postgres() -> (Arc<Database>, Arc<Database>) {
    let url = fresh_database();
    let one = runtime().block_on(Database::connect(&url)).unwrap();
    let two = runtime().block_on(Database::connect(&url)).unwrap();
    assert_eq!(one.migrate().wait().unwrap(), [1, 2, 3, 4, 5]);
    assert!(
        two.migrate().wait().unwrap().is_empty(),
        "a migration ran twice"
    );
    (Arc::new(one), Arc::new(two))
}

/// A Redis store on `prefix`: two of them on one prefix are two instances of one deployment.
fn redis_on(prefix: &str, ttl: Option<std::time::Duration>) -> Arc<RedisState> {
    let url = std::env::var("WARDEN_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let options = RedisOptions {
        prefix: prefix.to_owned(),
        session_ttl: Some(ttl.unwrap_or(std::time::Duration::from_secs(3600))),
        ..RedisOptions::default()
    };
    let state = runtime()
        .block_on(RedisState::connect(&url, options))
        .unwrap_or_else(|e| panic!("Redis at {url}: {e} (scripts/test starts one)"));
    Arc::new(state)
}

/// Pending once, then ready: a call that really suspends, as a network round trip does.
#[derive(Default)]
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A store behind a "network": every call suspends once before the inner store answers, and
/// `transact` is the trait's default (load, decide, versioned commit, retry), so this runs the
/// contract the way a Redis or PostgreSQL store must meet it.
struct Remote(MemorySessionStore);

impl SessionStore for Remote {
    fn load<'a>(&'a self, _: StoreAccess, session: &'a str) -> StoreCall<'a, Versioned> {
        StoreCall::pending(async move {
            YieldOnce::default().await;
            self.0.load(ACCESS, session).await
        })
    }
    fn commit<'a>(&'a self, _: StoreAccess, writes: &'a [SessionWrite]) -> StoreCall<'a, bool> {
        StoreCall::pending(async move {
            YieldOnce::default().await;
            self.0.commit(ACCESS, writes).await
        })
    }
    fn get<'a>(&'a self, session: &'a str) -> StoreCall<'a, Option<SessionState>> {
        StoreCall::pending(async move {
            YieldOnce::default().await;
            self.0.get(session).await
        })
    }
    fn remove<'a>(&'a self, session: &'a str) -> StoreCall<'a, ()> {
        StoreCall::pending(async move {
            YieldOnce::default().await;
            self.0.remove(session).await
        })
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

fn tainted(names: &[&str]) -> SessionState {
    let mut state = SessionState::default();
    state
        .taints
        .extend(names.iter().map(|n| Arc::<str>::from(*n)));
    state
}

fn taint(name: &str) -> StateChange {
    StateChange {
        add: vec![name.into()],
        history_limit: 10,
        ..StateChange::default()
    }
}

fn write(session: &str, loaded: &Versioned, state: SessionState) -> SessionWrite {
    SessionWrite {
        session: session.to_owned(),
        expected: loaded.version,
        state: Some(state),
    }
}

/// Every implementation, each fresh, with what keeps it alive (a temporary directory).
fn stores() -> Vec<(
    &'static str,
    Arc<dyn SessionStore>,
    Option<tempfile::TempDir>,
)> {
    let dir = tempfile::tempdir().unwrap();
    let file = EmbeddedSessionStore::open(&dir.path().join("s.redb"), None).unwrap();
    vec![
        ("core memory", Arc::new(MemorySessionStore::new()), None),
        (
            "embedded memory",
            Arc::new(EmbeddedSessionStore::memory(None)),
            None,
        ),
        ("embedded redb", Arc::new(file), Some(dir)),
        (
            "remote (optimistic transact)",
            Arc::new(Remote(MemorySessionStore::new())),
            None,
        ),
        ("redis", redis(None), None),
    ]
}

#[test]
fn unknown_sessions_load_empty_at_version_zero() {
    for (name, store, _dir) in stores() {
        assert_eq!(
            store.load(ACCESS, "nobody").wait().unwrap(),
            Versioned::default(),
            "{name}"
        );
    }
}

#[test]
fn commit_applies_every_write_or_none() {
    for (name, store, _dir) in stores() {
        store
            .transact(ACCESS, "b", &mut |_| Some(taint("old")))
            .wait()
            .unwrap();
        let a = store.load(ACCESS, "a").wait().unwrap();
        let b = store.load(ACCESS, "b").wait().unwrap();
        assert_ne!(b.version, 0, "{name}");
        // Another writer moves `b` after it was loaded: the commit changes neither session.
        store
            .transact(ACCESS, "b", &mut |_| Some(taint("other")))
            .wait()
            .unwrap();
        let stale = [
            write("a", &a, tainted(&["x"])),
            write("b", &b, tainted(&["old", "y"])),
        ];
        assert!(
            !store.commit(ACCESS, &stale).wait().unwrap(),
            "{name}: stale commit applied"
        );
        assert!(
            store.get("a").wait().unwrap().is_none(),
            "{name}: `a` was written"
        );
        assert_eq!(
            store.get("b").wait().unwrap().unwrap(),
            tainted(&["old", "other"]),
            "{name}"
        );
        // Loaded again, the same commit goes through, whole.
        let a = store.load(ACCESS, "a").wait().unwrap();
        let b = store.load(ACCESS, "b").wait().unwrap();
        let fresh = [
            write("a", &a, tainted(&["x"])),
            write("b", &b, tainted(&["old", "other", "y"])),
        ];
        assert!(store.commit(ACCESS, &fresh).wait().unwrap(), "{name}");
        assert_eq!(
            store.get("a").wait().unwrap().unwrap(),
            tainted(&["x"]),
            "{name}"
        );
        assert_eq!(
            store.get("b").wait().unwrap().unwrap(),
            tainted(&["old", "other", "y"]),
            "{name}"
        );
        // Each write moved the version: the same versions do not commit twice.
        assert!(
            !store.commit(ACCESS, &fresh).wait().unwrap(),
            "{name}: commit replayed"
        );
    }
}

#[test]
fn versions_are_not_reused_after_a_session_is_removed() {
    for (name, store, _dir) in stores() {
        store
            .transact(ACCESS, "s", &mut |_| Some(taint("a")))
            .wait()
            .unwrap();
        let loaded = store.load(ACCESS, "s").wait().unwrap();
        store.remove("s").wait().unwrap();
        store
            .transact(ACCESS, "s", &mut |_| Some(taint("b")))
            .wait()
            .unwrap();
        assert_ne!(
            store.load(ACCESS, "s").wait().unwrap().version,
            loaded.version,
            "{name}"
        );
        assert!(
            !store
                .commit(ACCESS, &[write("s", &loaded, tainted(&["c"]))])
                .wait()
                .unwrap(),
            "{name}: a write against the removed session's version went through"
        );
        // A session that did not exist when loaded conflicts once someone created it.
        let absent = store.load(ACCESS, "t").wait().unwrap();
        store
            .transact(ACCESS, "t", &mut |_| Some(taint("a")))
            .wait()
            .unwrap();
        assert!(
            !store
                .commit(ACCESS, &[write("t", &absent, tainted(&["c"]))])
                .wait()
                .unwrap(),
            "{name}"
        );
    }
}

#[test]
fn a_transaction_that_changes_nothing_keeps_the_version() {
    for (name, store, _dir) in stores() {
        store
            .transact(ACCESS, "s", &mut |_| Some(taint("a")))
            .wait()
            .unwrap();
        let loaded = store.load(ACCESS, "s").wait().unwrap();
        store.transact(ACCESS, "s", &mut |_| None).wait().unwrap();
        store
            .transact(ACCESS, "s", &mut |_| Some(StateChange::default()))
            .wait()
            .unwrap();
        assert!(
            store
                .commit(ACCESS, &[write("s", &loaded, tainted(&["a", "b"]))])
                .wait()
                .unwrap(),
            "{name}: a read-only decision conflicted"
        );
    }
}

/// Many threads run the optimistic loop (load, decide, commit, retry on conflict) on one session
/// with a check-and-set rule: only a session without the taint may take it. Exactly one wins,
/// also while plain transactions race on the same session.
#[test]
fn racing_optimistic_commits_let_exactly_one_check_and_set_pass() {
    const CALLS: usize = 1000;
    for (name, store, _dir) in stores() {
        let passed = AtomicUsize::new(0);
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    while next.fetch_add(1, Ordering::Relaxed) < CALLS {
                        loop {
                            let loaded = store.load(ACCESS, "s").wait().unwrap();
                            if loaded.state.taints.contains("once") {
                                break;
                            }
                            let mut state = loaded.state.clone();
                            state.taints.insert("once".into());
                            if store
                                .commit(ACCESS, &[write("s", &loaded, state)])
                                .wait()
                                .unwrap()
                            {
                                passed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                });
            }
            // Plain transactions on the same session at the same time.
            scope.spawn(|| {
                for i in 0..200 {
                    let tag = format!("t{}", i % 7);
                    store
                        .transact(ACCESS, "s", &mut |_| Some(taint(&tag)))
                        .wait()
                        .unwrap();
                }
            });
        });
        assert_eq!(passed.load(Ordering::Relaxed), 1, "{name}");
        let state = store.get("s").wait().unwrap().unwrap();
        assert!(state.taints.contains("once"), "{name}");
        assert_eq!(
            state.taints.len(),
            8,
            "{name}: a transaction's taint was lost"
        );
    }
}

#[test]
fn committed_sessions_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let store = EmbeddedSessionStore::open(&path, None).unwrap();
        let loaded = store.load(ACCESS, "s").wait().unwrap();
        assert!(
            store
                .commit(ACCESS, &[write("s", &loaded, tainted(&["pii"]))])
                .wait()
                .unwrap()
        );
        store.flush().unwrap();
    }
    let store = EmbeddedSessionStore::open(&path, None).unwrap();
    assert_eq!(store.get("s").wait().unwrap().unwrap(), tainted(&["pii"]));
    assert_ne!(store.load(ACCESS, "s").wait().unwrap().version, 0);
}

#[test]
fn commits_respect_the_session_bound() {
    let store = EmbeddedSessionStore::memory(None).with_max_sessions(100);
    for i in 0..100 {
        store
            .transact(ACCESS, &format!("old{i}"), &mut |_| Some(taint("a")))
            .wait()
            .unwrap();
    }
    let writes: Vec<_> = (0..3)
        .map(|i| {
            let s = format!("new{i}");
            let loaded = store.load(ACCESS, &s).wait().unwrap();
            write(&s, &loaded, tainted(&["b"]))
        })
        .collect();
    assert!(store.commit(ACCESS, &writes).wait().unwrap());
    assert!(store.len() <= 100, "{} sessions", store.len());
    assert!(store.evicted() >= 3);
    for i in 0..3 {
        assert!(store.get(&format!("new{i}")).wait().unwrap().is_some());
    }
}

/// A session only read (no new state) is checked like one written: a commit whose read session
/// changed meanwhile applies nothing.
#[test]
fn sessions_only_read_are_checked_too() {
    for (name, store, _dir) in stores() {
        store
            .transact(ACCESS, "read", &mut |_| Some(taint("a")))
            .wait()
            .unwrap();
        let read = store.load(ACCESS, "read").wait().unwrap();
        let written = store.load(ACCESS, "written").wait().unwrap();
        let check = SessionWrite {
            session: "read".to_owned(),
            expected: read.version,
            state: None,
        };
        store
            .transact(ACCESS, "read", &mut |_| Some(taint("b")))
            .wait()
            .unwrap();
        let writes = [check.clone(), write("written", &written, tainted(&["x"]))];
        assert!(!store.commit(ACCESS, &writes).wait().unwrap(), "{name}");
        assert!(store.get("written").wait().unwrap().is_none(), "{name}");
        // Unchanged, the check passes and leaves the read session as it is.
        let read = store.load(ACCESS, "read").wait().unwrap();
        let check = SessionWrite {
            expected: read.version,
            ..check
        };
        assert!(
            store
                .commit(
                    ACCESS,
                    &[check, write("written", &written, tainted(&["x"]))]
                )
                .wait()
                .unwrap(),
            "{name}"
        );
        assert_eq!(store.load(ACCESS, "read").wait().unwrap(), read, "{name}");
    }
}

/// A session keeps at most the history its policy needs, on every store.
#[test]
fn history_is_bounded() {
    for (name, store, _dir) in stores() {
        for i in 0..10 {
            let change = StateChange {
                push: Some(warden_core::session::HistoryEntry {
                    tool: format!("t{i}").into(),
                    classes: Arc::from(Vec::new()),
                }),
                history_limit: 3,
                ..StateChange::default()
            };
            store
                .transact(ACCESS, "s", &mut |_| Some(change.clone()))
                .wait()
                .unwrap();
        }
        let state = store.get("s").wait().unwrap().unwrap();
        let tools: Vec<&str> = state.history.iter().map(|h| &*h.tool).collect();
        assert_eq!(tools, ["t7", "t8", "t9"], "{name}");
    }
}

/// An idle session expires after the TTL: its taints no longer apply, and a batch that loads
/// it sees it empty (at its version, so a write still conflicts with one made meanwhile).
#[test]
fn idle_sessions_expire_after_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Some(std::time::Duration::from_secs(1));
    let stores: Vec<(&str, Arc<dyn SessionStore>)> = vec![
        (
            "embedded memory",
            Arc::new(EmbeddedSessionStore::memory(ttl)),
        ),
        (
            "embedded redb",
            Arc::new(EmbeddedSessionStore::open(&dir.path().join("t.redb"), ttl).unwrap()),
        ),
        ("redis", redis(ttl)),
    ];
    for (_, store) in &stores {
        store
            .transact(ACCESS, "s", &mut |_| Some(taint("pii")))
            .wait()
            .unwrap();
    }
    // Seconds are the TTL's unit: more than two of them make the session idle too long.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    for (name, store) in &stores {
        assert!(store.get("s").wait().unwrap().is_none(), "{name}");
        let loaded = store.load(ACCESS, "s").wait().unwrap();
        assert!(loaded.state.is_empty(), "{name}");
        let mut seen = None;
        store
            .transact(ACCESS, "s", &mut |state| {
                seen = Some(state.clone());
                None
            })
            .wait()
            .unwrap();
        assert!(seen.unwrap().is_empty(), "{name}: an expired taint applied");
    }
}

/// The pipeline's path: 1,000 racing `transact` calls on one session with a check-and-set rule
/// (take the taint only if the session has none). Exactly one passes, on every store, the
/// optimistic one included.
#[test]
fn racing_transactions_let_exactly_one_check_and_set_pass() {
    const CALLS: usize = 1000;
    for (name, store, _dir) in stores() {
        let passed = AtomicUsize::new(0);
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    while next.fetch_add(1, Ordering::Relaxed) < CALLS {
                        // Set on every run of the rule; the last run is the one applied.
                        let mut won = false;
                        store
                            .transact(ACCESS, "s", &mut |state| {
                                won = !state.taints.contains("once");
                                won.then(|| taint("once"))
                            })
                            .wait()
                            .unwrap();
                        if won {
                            passed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(passed.load(Ordering::Relaxed), 1, "{name}");
    }
}

/// A decision in progress on one session does not stop decisions on others: no store holds one
/// lock for everything. (A sharded store may hold back the few sessions that share the busy
/// one's shard, so most, not all, must finish.)
#[test]
fn other_sessions_progress_while_one_is_busy() {
    const OTHERS: usize = 64;
    for (name, store, _dir) in stores() {
        let (busy_tx, busy_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = parking_lot::Mutex::new(release_rx);
        let finished = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                store
                    .transact(ACCESS, "busy", &mut |_| {
                        let _ = busy_tx.send(());
                        // Held until the others had their chance (or 10 s).
                        let _ = release_rx
                            .lock()
                            .recv_timeout(std::time::Duration::from_secs(10));
                        Some(taint("a"))
                    })
                    .wait()
                    .unwrap();
            });
            busy_rx.recv().unwrap();
            for i in 0..OTHERS {
                let (store, finished) = (&store, &finished);
                scope.spawn(move || {
                    store
                        .transact(ACCESS, &format!("other{i}"), &mut |_| Some(taint("b")))
                        .wait()
                        .unwrap();
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while finished.load(Ordering::SeqCst) < OTHERS / 2
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let done = finished.load(Ordering::SeqCst);
            release_tx.send(()).unwrap();
            assert!(
                done >= OTHERS / 2,
                "{name}: only {done} of {OTHERS} other sessions finished while one was busy"
            );
        });
    }
}

/// A pin store's name, two handles on it, and what keeps them alive.
type PinHandles = (
    &'static str,
    Arc<dyn PinStore>,
    Arc<dyn PinStore>,
    Option<tempfile::TempDir>,
);

/// Every pin store, as two handles on the same pins (two processes: the proxy and
/// `warden mcp approve`), with what keeps them alive.
fn pin_stores() -> Vec<PinHandles> {
    let memory: Arc<dyn PinStore> = Arc::new(MemoryPinStore::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pins.redb");
    let first: Arc<dyn PinStore> = Arc::new(RedbPinStore::open(&path).unwrap());
    let second: Arc<dyn PinStore> = Arc::new(RedbPinStore::open(&path).unwrap());
    vec![
        ("memory", Arc::clone(&memory), memory, None),
        ("redb, two handles", first, second, Some(dir)),
    ]
}

/// Observing and approving are atomic per tool across handles: of many racing observations of
/// a new tool exactly one pins it, of a changed definition exactly one reports it first, and of
/// racing approvals exactly one approves.
#[test]
fn pins_observe_and_approve_are_atomic_across_two_handles() {
    for (name, one, two, _dir) in pin_stores() {
        let handles = [&one, &two];
        let race = |f: &(dyn Fn(&dyn PinStore) -> PinStatus + Sync)| -> Vec<PinStatus> {
            std::thread::scope(|scope| {
                let threads: Vec<_> = (0..8)
                    .map(|i| {
                        let store = handles[i % 2];
                        scope.spawn(move || f(&**store))
                    })
                    .collect();
                threads.into_iter().map(|t| t.join().unwrap()).collect()
            })
        };
        let seen = race(&|s| s.observe("up", "echo", "a").wait().unwrap());
        assert_eq!(
            seen.iter().filter(|s| **s == PinStatus::New).count(),
            1,
            "{name}: {seen:?}"
        );
        let seen = race(&|s| s.observe("up", "echo", "b").wait().unwrap());
        assert_eq!(
            seen.iter()
                .filter(|s| **s == PinStatus::Changed { first: true })
                .count(),
            1,
            "{name}: {seen:?}"
        );
        assert!(one.is_held("up", "echo").wait().unwrap(), "{name}");
        assert!(two.is_held("up", "echo").wait().unwrap(), "{name}");
        let approved = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for i in 0..8 {
                let (store, approved) = (handles[i % 2], &approved);
                scope.spawn(move || {
                    if store.approve("up", "echo").wait().unwrap() {
                        approved.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(approved.load(Ordering::SeqCst), 1, "{name}");
        assert!(!one.is_held("up", "echo").wait().unwrap(), "{name}");
        assert_eq!(
            two.observe("up", "echo", "b").wait().unwrap(),
            PinStatus::Same,
            "{name}"
        );
        assert_eq!(
            one.list().wait().unwrap(),
            two.list().wait().unwrap(),
            "{name}"
        );
    }
}

/// Every pin store keeps the definitions with the hashes (seen by the other handle), and an
/// approval bound to a pending hash approves that definition only: of racing approvals of the
/// pending hash exactly one approves, and one naming another hash never does.
#[test]
fn pins_keep_definitions_and_approve_the_pending_hash_shown() {
    let (v1, v2) = (
        serde_json::json!({"name": "echo", "description": "one"}),
        serde_json::json!({"name": "echo", "description": "two"}),
    );
    for (name, one, two, _dir) in pin_stores() {
        assert_eq!(
            one.observe_definition("up", "echo", "a", &v1)
                .wait()
                .unwrap(),
            PinStatus::New,
            "{name}"
        );
        assert_eq!(
            two.observe_definition("up", "echo", "b", &v2)
                .wait()
                .unwrap(),
            PinStatus::Changed { first: true },
            "{name}"
        );
        let pin = one.list().wait().unwrap()["up"]["echo"].clone();
        assert_eq!(pin.definition.as_ref(), Some(&v1), "{name}");
        assert_eq!(pin.pending_definition.as_ref(), Some(&v2), "{name}");
        assert!(
            !two.approve_pending("up", "echo", "a").wait().unwrap(),
            "{name}"
        );
        let handles = [&one, &two];
        let approved = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for i in 0..8 {
                let (store, approved) = (handles[i % 2], &approved);
                scope.spawn(move || {
                    if store.approve_pending("up", "echo", "b").wait().unwrap() {
                        approved.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(approved.load(Ordering::SeqCst), 1, "{name}");
        let pin = two.list().wait().unwrap()["up"]["echo"].clone();
        assert_eq!(
            (pin.hash.as_str(), pin.definition.as_ref()),
            ("b", Some(&v2)),
            "{name}"
        );
        assert!(!one.is_held("up", "echo").wait().unwrap(), "{name}");
    }
}

/// A nonce is used once: of 1,000 racing uses of one nonce exactly one succeeds; other nonces
/// are unaffected; once it expired it may be used again.
#[test]
fn a_nonce_is_used_once() {
    let stores: Vec<(&str, Arc<dyn NonceStore>)> = vec![
        ("memory", Arc::new(MemoryNonceStore::default())),
        ("redis", redis(None)),
    ];
    for (name, store) in stores {
        let first = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..125 {
                        if store.consume("jti-1", 1_000, 10).wait().unwrap() {
                            first.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(first.load(Ordering::SeqCst), 1, "{name}");
        assert!(store.consume("jti-2", 1_000, 10).wait().unwrap(), "{name}");
        assert!(
            !store.consume("jti-1", 1_000, 999).wait().unwrap(),
            "{name}"
        );
        assert!(
            store.consume("jti-1", 2_000, 1_001).wait().unwrap(),
            "{name}"
        );
    }
}

/// Counters add atomically: 1,000 racing increments of one counter see every total from 1 to
/// 1,000 exactly once; windows and keys are apart.
#[test]
fn counters_add_atomically_per_window() {
    let stores: Vec<(&str, Arc<dyn CounterStore>)> = vec![
        ("memory", Arc::new(MemoryCounterStore::default())),
        ("redis", redis(None)),
    ];
    for (name, store) in stores {
        let totals = parking_lot::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..125 {
                        let total = store.add("key", 7, 1, u64::MAX).wait().unwrap();
                        totals.lock().push(total);
                    }
                });
            }
        });
        let mut totals = totals.into_inner();
        totals.sort_unstable();
        assert_eq!(totals, (1..=1000).collect::<Vec<u64>>(), "{name}");
        assert_eq!(store.get("key", 7).wait().unwrap(), 1000, "{name}");
        assert_eq!(store.get("key", 8).wait().unwrap(), 0, "{name}");
        assert_eq!(
            store.add("other", 7, 5, u64::MAX).wait().unwrap(),
            5,
            "{name}"
        );
    }
}

/// Reservations are all or none and never pass a limit: of 1,000 racing reservations of two
/// counters (limits 300 and 1,000, amounts 1 and 2), exactly as many as the tighter counter
/// holds get through, from two handles on one store; a refusal names the counter and adds
/// nothing; adjustments never take a total below 0.
#[test]
fn reservations_are_all_or_none_and_never_pass_a_limit() {
    let prefix = fresh_prefix();
    let redis_a: Arc<dyn CounterStore> = redis_on(&prefix, None);
    let redis_b: Arc<dyn CounterStore> = redis_on(&prefix, None);
    let memory: Arc<dyn CounterStore> = Arc::new(MemoryCounterStore::default());
    type Handles = (Arc<dyn CounterStore>, Arc<dyn CounterStore>);
    let stores: Vec<(&str, Handles)> = vec![
        ("memory", (Arc::clone(&memory), memory)),
        ("redis", (redis_a, redis_b)),
    ];
    let id = |key: &str| CounterId {
        group: "policy\u{1f}tenant".to_owned(),
        key: key.to_owned(),
        window: 42,
    };
    let wanted = [
        Reserve {
            id: id("requests"),
            amount: 1,
            limit: 300,
            expires: u64::MAX,
        },
        Reserve {
            id: id("tokens"),
            amount: 2,
            limit: 1_000,
            expires: u64::MAX,
        },
    ];
    for (name, (a, b)) in stores {
        let admitted = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for t in 0..8 {
                let store = if t % 2 == 0 { &a } else { &b };
                let (admitted, wanted) = (&admitted, &wanted);
                scope.spawn(move || {
                    for _ in 0..125 {
                        if store.reserve(wanted).wait().unwrap().is_none() {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::SeqCst), 300, "{name}");
        assert_eq!(a.reserved(&id("requests")).wait().unwrap(), 300, "{name}");
        assert_eq!(b.reserved(&id("tokens")).wait().unwrap(), 600, "{name}");
        // The first counter that would pass its limit is named; nothing was added.
        assert_eq!(a.reserve(&wanted).wait().unwrap(), Some(0), "{name}");
        let tight = [
            Reserve {
                amount: 0,
                ..wanted[0].clone()
            },
            Reserve {
                amount: 401,
                ..wanted[1].clone()
            },
        ];
        assert_eq!(a.reserve(&tight).wait().unwrap(), Some(1), "{name}");
        assert_eq!(a.reserved(&id("tokens")).wait().unwrap(), 600, "{name}");
        // Settling: a counter moves by its change, never below 0; unknown counters stay absent.
        b.adjust(&[
            (id("tokens"), -100),
            (id("requests"), -1_000),
            (id("never"), 5),
        ])
        .wait()
        .unwrap();
        assert_eq!(a.reserved(&id("tokens")).wait().unwrap(), 500, "{name}");
        assert_eq!(a.reserved(&id("requests")).wait().unwrap(), 0, "{name}");
        assert_eq!(a.reserved(&id("never")).wait().unwrap(), 0, "{name}");
        // Another window is another counter.
        let next = CounterId {
            window: 43,
            ..id("requests")
        };
        assert_eq!(a.reserved(&next).wait().unwrap(), 0, "{name}");
    }
}

fn key_record(id: String) -> KeyRecord {
    KeyRecord {
        sha256: format!("{id:0>64}"),
        id,
        tenant: "acme".to_owned(),
        policy: None,
        created: 0,
        role: warden_core::state::KeyRole::Agent,
    }
}

/// API key records: racing inserts from two handles (two `warden keys create` at once) all
/// land, a second insert of one id is refused, and of racing revocations of one id exactly one
/// removes it.
#[test]
fn keys_inserted_from_two_handles_all_land_and_revoke_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let memory: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    type Handles = (&'static str, Arc<dyn KeyStore>, Arc<dyn KeyStore>);
    let stores: Vec<Handles> = vec![
        ("memory", Arc::clone(&memory), memory),
        (
            "key file, two handles",
            Arc::new(FileKeyStore::new(&path)),
            Arc::new(FileKeyStore::new(&path)),
        ),
        {
            let (one, two) = postgres();
            ("postgres, two connections", one, two)
        },
    ];
    for (name, one, two) in stores {
        let handles = [&one, &two];
        std::thread::scope(|scope| {
            for t in 0..8 {
                let store = handles[t % 2];
                scope.spawn(move || {
                    for i in 0..10 {
                        let record = key_record(format!("k{t}x{i}"));
                        assert!(store.insert(&record).wait().unwrap());
                    }
                });
            }
        });
        assert_eq!(
            one.list().wait().unwrap().len(),
            80,
            "{name}: an insert was lost"
        );
        assert_eq!(
            two.list().wait().unwrap(),
            one.list().wait().unwrap(),
            "{name}"
        );
        assert!(
            !two.insert(&key_record("k0x0".to_owned())).wait().unwrap(),
            "{name}: the same id twice"
        );
        let revoked = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for t in 0..8 {
                let (store, revoked) = (handles[t % 2], &revoked);
                scope.spawn(move || {
                    if store.revoke("k3x3").wait().unwrap() {
                        revoked.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(revoked.load(Ordering::SeqCst), 1, "{name}");
        let left = one.list().wait().unwrap();
        assert_eq!(left.len(), 79, "{name}");
        assert!(left.iter().all(|r| r.id != "k3x3"), "{name}");
    }
}

/// Two instances on one Redis (each with its own cache of the sessions it saw): each decides on
/// what the other wrote, never on what it saw last, and 1,000 racing check-and-set decisions
/// spread over both let exactly one pass.
#[test]
fn redis_instances_decide_on_each_others_changes() {
    let prefix = fresh_prefix();
    let (a, b) = (redis_on(&prefix, None), redis_on(&prefix, None));
    let seen = |store: &RedisState| {
        let mut taints = Vec::new();
        store
            .transact(ACCESS, "s", &mut |state| {
                taints = state.taints.iter().map(ToString::to_string).collect();
                None
            })
            .wait()
            .unwrap();
        taints
    };
    a.transact(ACCESS, "s", &mut |_| Some(taint("x")))
        .wait()
        .unwrap();
    assert_eq!(seen(&a), ["x"]);
    assert_eq!(seen(&b), ["x"], "b did not see a's write");
    b.transact(ACCESS, "s", &mut |_| Some(taint("y")))
        .wait()
        .unwrap();
    assert_eq!(seen(&a), ["x", "y"], "a decided on what it saw last");
    let passed = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (store, passed, next) = (if t % 2 == 0 { &a } else { &b }, &passed, &next);
            scope.spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < 1000 {
                    let mut won = false;
                    store
                        .transact(ACCESS, "race", &mut |state| {
                            won = !state.taints.contains("once");
                            won.then(|| taint("once"))
                        })
                        .wait()
                        .unwrap();
                    if won {
                        passed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(passed.load(Ordering::Relaxed), 1);
}

/// The schema: a database that lacks it is refused until `warden migrate` applied it; migrating
/// again, or from two instances at once, applies nothing twice.
#[test]
fn a_database_is_used_only_once_migrated() {
    let url = fresh_database();
    let db = runtime().block_on(Database::connect(&url)).unwrap();
    let error = db.check_schema().wait().unwrap_err();
    assert!(
        error.to_string().contains("run `warden migrate`"),
        "{error}"
    );
    let other = runtime().block_on(Database::connect(&url)).unwrap();
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| db.migrate().wait().unwrap());
        let b = scope.spawn(|| other.migrate().wait().unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut applied = [a, b].concat();
    applied.sort_unstable();
    assert_eq!(applied, [1, 2, 3, 4, 5], "each migration once");
    db.check_schema().wait().unwrap();
    assert!(db.migrate().wait().unwrap().is_empty());
}

#[test]
fn pushed_policies_keep_every_version_and_one_active() {
    let (one, two) = postgres();
    let v1 = "warden: 1\nname: p\ndefault: deny\nrules: []\n";
    let v2 = "warden: 1\nname: p\ndefault: allow\nrules: []\n";
    assert_eq!(
        one.push_policy("p", PolicyFormat::Warden, v1)
            .wait()
            .unwrap(),
        1
    );
    assert_eq!(
        two.push_policy("p", PolicyFormat::Warden, v2)
            .wait()
            .unwrap(),
        2
    );
    let active = one.active_policies().wait().unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!((active[0].version, active[0].source.as_str()), (2, v2));
    assert!(active[0].active && active[0].intact());

    // A rollback: version 1 in force again, version 2 kept.
    assert!(two.activate_policy("p", 1).wait().unwrap());
    assert!(!two.activate_policy("p", 9).wait().unwrap());
    let active = one.active_policies().wait().unwrap();
    assert_eq!((active[0].version, active[0].source.as_str()), (1, v1));
    let history = one.policy_history("p").wait().unwrap();
    let versions: Vec<(i32, bool)> = history.iter().map(|p| (p.version, p.active)).collect();
    assert_eq!(versions, [(1, true), (2, false)]);
    assert!(one.policy_history("none").wait().unwrap().is_empty());
}

#[test]
fn racing_pushes_of_one_policy_get_distinct_versions() {
    let (one, two) = postgres();
    let mut versions: Vec<i32> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let db = if i % 2 == 0 { &one } else { &two };
                scope.spawn(move || {
                    db.push_policy("p", PolicyFormat::Rego, &format!("package p{i}"))
                        .wait()
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    let active = one.active_policies().wait().unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].format, PolicyFormat::Rego);
}

#[test]
fn with_an_integrity_key_only_sealed_rows_are_read() {
    use warden_core::state::KeyStore as _;
    let url = fresh_database();
    let key = || warden_proof::MacKey::from_bytes(vec![7; 32]).unwrap();
    let sealed = runtime()
        .block_on(Database::connect(&url))
        .unwrap()
        .with_integrity_key(key());
    let plain = runtime().block_on(Database::connect(&url)).unwrap();
    let other_key = runtime()
        .block_on(Database::connect(&url))
        .unwrap()
        .with_integrity_key(warden_proof::MacKey::from_bytes(vec![8; 32]).unwrap());
    sealed.migrate().wait().unwrap();
    let (_, good) = warden_store::keys::create_key(&sealed, "acme", None).unwrap();
    let (_, unsealed) = warden_store::keys::create_key(&plain, "acme", None).unwrap();
    let ids = |db: &Database| -> Vec<String> {
        db.list()
            .wait()
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(ids(&sealed), std::slice::from_ref(&good.id));
    assert_eq!(
        ids(&plain),
        [good.id.clone(), unsealed.id],
        "no key: no check"
    );
    assert!(ids(&other_key).is_empty(), "another key verifies nothing");

    let v1 = "warden: 1\nname: p\ndefault: deny\nrules: []\n";
    sealed
        .push_policy("p", PolicyFormat::Warden, v1)
        .wait()
        .unwrap();
    assert_eq!(sealed.active_policies().wait().unwrap().len(), 1);
    plain
        .push_policy("p", PolicyFormat::Warden, v1)
        .wait()
        .unwrap();
    let error = sealed.active_policies().wait().unwrap_err();
    assert!(
        error.to_string().contains("policy `p` version 2"),
        "{error}"
    );
    assert!(sealed.activate_policy("p", 1).wait().unwrap());
    assert_eq!(sealed.active_policies().wait().unwrap()[0].version, 1);
}

fn approval_ask(args: &serde_json::Value, now_ms: u64) -> warden_core::state::Ask {
    warden_core::state::Ask {
        binding: warden_core::state::ApprovalBinding {
            tenant: Some("acme".into()),
            principal: Some("bot".into()),
            session: Some("s1".into()),
            tool: "pay".into(),
            args_sha256: warden_core::state::args_sha256(Some(args)).unwrap(),
        },
        policy: "p".into(),
        policy_digest: "sha256:00".into(),
        rule: "ask".into(),
        now_ms,
        ttl_ms: 60_000,
        max_pending: 10,
    }
}

/// Approvals: of racing calls with one binding exactly one asks (the others see it pending); an
/// answer is given once; of racing retries after approval exactly one is granted, and the
/// others ask anew; another binding is apart. Memory and Redis alike.
#[test]
fn approvals_are_asked_answered_and_used_once() {
    use warden_core::state::{
        ApprovalStatus, ApprovalStore, Asked, MemoryApprovalStore, Resolution, Resolved,
    };
    let stores: Vec<(&str, Arc<dyn ApprovalStore>)> = vec![
        ("memory", Arc::new(MemoryApprovalStore::new())),
        ("redis", redis(None)),
    ];
    let args = serde_json::json!({"amount": 5});
    for (name, store) in stores {
        let now = 1_000;
        let requested = AtomicUsize::new(0);
        let ids = parking_lot::Mutex::new(std::collections::BTreeSet::new());
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..5 {
                        match store.ask(ACCESS, &approval_ask(&args, now)).wait().unwrap() {
                            Asked::Requested(a) => {
                                requested.fetch_add(1, Ordering::SeqCst);
                                ids.lock().insert(a.id);
                            }
                            Asked::Pending(a) => {
                                ids.lock().insert(a.id);
                            }
                            other => panic!("{name}: {other:?}"),
                        }
                    }
                });
            }
        });
        assert_eq!(requested.load(Ordering::SeqCst), 1, "{name}");
        let ids = ids.into_inner();
        assert_eq!(ids.len(), 1, "{name}");
        let id = ids.into_iter().next().unwrap();
        let listed = store.list(Some("acme"), true, now, 10).wait().unwrap();
        assert_eq!(listed.len(), 1, "{name}");
        assert_eq!(
            listed[0].binding.args_sha256,
            approval_ask(&args, now).binding.args_sha256
        );
        let answer = |approve| Resolution {
            approve,
            approver: "k1".into(),
            reason: "fine".into(),
            now_ms: now + 1,
            ttl_ms: 60_000,
        };
        let Resolved::Done(done) = store.resolve(&id, &answer(true)).wait().unwrap() else {
            panic!("{name}: not answered")
        };
        assert_eq!(done.status, ApprovalStatus::Approved, "{name}");
        assert!(
            matches!(
                store.resolve(&id, &answer(false)).wait().unwrap(),
                Resolved::Settled(_)
            ),
            "{name}"
        );
        assert!(
            matches!(
                store.resolve("apr_none", &answer(false)).wait().unwrap(),
                Resolved::NotFound
            ),
            "{name}"
        );
        let granted = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    if let Asked::Granted(_) = store
                        .ask(ACCESS, &approval_ask(&args, now + 2))
                        .wait()
                        .unwrap()
                    {
                        granted.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(granted.load(Ordering::SeqCst), 1, "{name}");
        assert_eq!(
            store.get(&id, now + 3).wait().unwrap().unwrap().status,
            ApprovalStatus::Consumed,
            "{name}"
        );
        let other = serde_json::json!({"amount": 6});
        assert!(
            matches!(
                store
                    .ask(ACCESS, &approval_ask(&other, now))
                    .wait()
                    .unwrap(),
                Asked::Requested(_)
            ),
            "{name}"
        );
    }
}
