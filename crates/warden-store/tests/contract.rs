#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The session store contract, written once and run against every implementation: the
//! in-memory store of the core, and the embedded store in memory and on disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use warden_core::session::{SessionWrite, Versioned};
use warden_core::{MemorySessionStore, SessionState, SessionStore, StateChange};
use warden_store::EmbeddedSessionStore;

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
    ]
}

#[test]
fn unknown_sessions_load_empty_at_version_zero() {
    for (name, store, _dir) in stores() {
        assert_eq!(
            store.load("nobody").unwrap(),
            Versioned::default(),
            "{name}"
        );
    }
}

#[test]
fn commit_applies_every_write_or_none() {
    for (name, store, _dir) in stores() {
        store.transact("b", &mut |_| Some(taint("old"))).unwrap();
        let a = store.load("a").unwrap();
        let b = store.load("b").unwrap();
        assert_ne!(b.version, 0, "{name}");
        // Another writer moves `b` after it was loaded: the commit changes neither session.
        store.transact("b", &mut |_| Some(taint("other"))).unwrap();
        let stale = [
            write("a", &a, tainted(&["x"])),
            write("b", &b, tainted(&["old", "y"])),
        ];
        assert!(
            !store.commit(&stale).unwrap(),
            "{name}: stale commit applied"
        );
        assert!(store.get("a").unwrap().is_none(), "{name}: `a` was written");
        assert_eq!(
            store.get("b").unwrap().unwrap(),
            tainted(&["old", "other"]),
            "{name}"
        );
        // Loaded again, the same commit goes through, whole.
        let a = store.load("a").unwrap();
        let b = store.load("b").unwrap();
        let fresh = [
            write("a", &a, tainted(&["x"])),
            write("b", &b, tainted(&["old", "other", "y"])),
        ];
        assert!(store.commit(&fresh).unwrap(), "{name}");
        assert_eq!(store.get("a").unwrap().unwrap(), tainted(&["x"]), "{name}");
        assert_eq!(
            store.get("b").unwrap().unwrap(),
            tainted(&["old", "other", "y"]),
            "{name}"
        );
        // Each write moved the version: the same versions do not commit twice.
        assert!(!store.commit(&fresh).unwrap(), "{name}: commit replayed");
    }
}

#[test]
fn versions_are_not_reused_after_a_session_is_removed() {
    for (name, store, _dir) in stores() {
        store.transact("s", &mut |_| Some(taint("a"))).unwrap();
        let loaded = store.load("s").unwrap();
        store.remove("s").unwrap();
        store.transact("s", &mut |_| Some(taint("b"))).unwrap();
        assert_ne!(store.load("s").unwrap().version, loaded.version, "{name}");
        assert!(
            !store
                .commit(&[write("s", &loaded, tainted(&["c"]))])
                .unwrap(),
            "{name}: a write against the removed session's version went through"
        );
        // A session that did not exist when loaded conflicts once someone created it.
        let absent = store.load("t").unwrap();
        store.transact("t", &mut |_| Some(taint("a"))).unwrap();
        assert!(
            !store
                .commit(&[write("t", &absent, tainted(&["c"]))])
                .unwrap(),
            "{name}"
        );
    }
}

#[test]
fn a_transaction_that_changes_nothing_keeps_the_version() {
    for (name, store, _dir) in stores() {
        store.transact("s", &mut |_| Some(taint("a"))).unwrap();
        let loaded = store.load("s").unwrap();
        store.transact("s", &mut |_| None).unwrap();
        store
            .transact("s", &mut |_| Some(StateChange::default()))
            .unwrap();
        assert!(
            store
                .commit(&[write("s", &loaded, tainted(&["a", "b"]))])
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
                            let loaded = store.load("s").unwrap();
                            if loaded.state.taints.contains("once") {
                                break;
                            }
                            let mut state = loaded.state.clone();
                            state.taints.insert("once".into());
                            if store.commit(&[write("s", &loaded, state)]).unwrap() {
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
                    store.transact("s", &mut |_| Some(taint(&tag))).unwrap();
                }
            });
        });
        assert_eq!(passed.load(Ordering::Relaxed), 1, "{name}");
        let state = store.get("s").unwrap().unwrap();
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
        let loaded = store.load("s").unwrap();
        assert!(
            store
                .commit(&[write("s", &loaded, tainted(&["pii"]))])
                .unwrap()
        );
        store.flush().unwrap();
    }
    let store = EmbeddedSessionStore::open(&path, None).unwrap();
    assert_eq!(store.get("s").unwrap().unwrap(), tainted(&["pii"]));
    assert_ne!(store.load("s").unwrap().version, 0);
}

#[test]
fn commits_respect_the_session_bound() {
    let store = EmbeddedSessionStore::memory(None).with_max_sessions(100);
    for i in 0..100 {
        store
            .transact(&format!("old{i}"), &mut |_| Some(taint("a")))
            .unwrap();
    }
    let writes: Vec<_> = (0..3)
        .map(|i| {
            let s = format!("new{i}");
            let loaded = store.load(&s).unwrap();
            write(&s, &loaded, tainted(&["b"]))
        })
        .collect();
    assert!(store.commit(&writes).unwrap());
    assert!(store.len() <= 100, "{} sessions", store.len());
    assert!(store.evicted() >= 3);
    for i in 0..3 {
        assert!(store.get(&format!("new{i}")).unwrap().is_some());
    }
}

/// A session only read (no new state) is checked like one written: a commit whose read session
/// changed meanwhile applies nothing.
#[test]
fn sessions_only_read_are_checked_too() {
    for (name, store, _dir) in stores() {
        store.transact("read", &mut |_| Some(taint("a"))).unwrap();
        let read = store.load("read").unwrap();
        let written = store.load("written").unwrap();
        let check = SessionWrite {
            session: "read".to_owned(),
            expected: read.version,
            state: None,
        };
        store.transact("read", &mut |_| Some(taint("b"))).unwrap();
        let writes = [check.clone(), write("written", &written, tainted(&["x"]))];
        assert!(!store.commit(&writes).unwrap(), "{name}");
        assert!(store.get("written").unwrap().is_none(), "{name}");
        // Unchanged, the check passes and leaves the read session as it is.
        let read = store.load("read").unwrap();
        let check = SessionWrite {
            expected: read.version,
            ..check
        };
        assert!(
            store
                .commit(&[check, write("written", &written, tainted(&["x"]))])
                .unwrap(),
            "{name}"
        );
        assert_eq!(store.load("read").unwrap(), read, "{name}");
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
            store.transact("s", &mut |_| Some(change.clone())).unwrap();
        }
        let state = store.get("s").unwrap().unwrap();
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
    let stores: Vec<(&str, EmbeddedSessionStore)> = vec![
        ("embedded memory", EmbeddedSessionStore::memory(ttl)),
        (
            "embedded redb",
            EmbeddedSessionStore::open(&dir.path().join("t.redb"), ttl).unwrap(),
        ),
    ];
    for (_, store) in &stores {
        store.transact("s", &mut |_| Some(taint("pii"))).unwrap();
    }
    // Seconds are the TTL's unit: more than two of them make the session idle too long.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    for (name, store) in &stores {
        assert!(store.get("s").unwrap().is_none(), "{name}");
        let loaded = store.load("s").unwrap();
        assert!(loaded.state.is_empty(), "{name}");
        let mut seen = None;
        store
            .transact("s", &mut |state| {
                seen = Some(state.clone());
                None
            })
            .unwrap();
        assert!(seen.unwrap().is_empty(), "{name}: an expired taint applied");
    }
}
