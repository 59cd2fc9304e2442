#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The embedded session store: atomic updates, persistence across reopen, idle TTL.

use std::sync::Arc;
use std::time::Duration;

use warden_core::StoreAccess;
use warden_core::session::HistoryEntry;
use warden_core::{SessionStore, StateChange};
use warden_store::EmbeddedSessionStore;

/// Tests drive the stores directly (feature `store-tests`).
const ACCESS: StoreAccess = StoreAccess::for_store_tests();

fn taint(name: &str) -> StateChange {
    StateChange {
        add: vec![name.into()],
        push: Some(HistoryEntry {
            tool: "crm.read".into(),
            classes: Arc::from(vec![Arc::<str>::from("sensitive_read")]),
        }),
        history_limit: 10,
        ..StateChange::default()
    }
}

#[test]
fn sessions_survive_reopen_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    {
        let store = EmbeddedSessionStore::open(&path, None).unwrap();
        store
            .transact(ACCESS, "s1", &mut |_| Some(taint("pii")))
            .wait()
            .unwrap();
        store
            .transact(ACCESS, "s2", &mut |_| Some(taint("x")))
            .wait()
            .unwrap();
        store.remove("s2").wait().unwrap();
        assert_eq!(store.flush().unwrap(), 2);
    }
    let store = EmbeddedSessionStore::open(&path, None).unwrap();
    let state = store.get("s1").wait().unwrap().unwrap();
    assert_eq!(
        state.taints.iter().map(|t| &**t).collect::<Vec<_>>(),
        ["pii"]
    );
    assert_eq!(state.history.len(), 1);
    assert_eq!(&*state.history[0].classes[0], "sensitive_read");
    assert!(store.get("s2").wait().unwrap().is_none());
    assert_eq!(store.len(), 1);
}

#[test]
fn flusher_writes_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    {
        let store = Arc::new(EmbeddedSessionStore::open(&path, None).unwrap());
        let mut flusher = store.spawn_flusher(Duration::from_secs(3600)).unwrap();
        store
            .transact(ACCESS, "s1", &mut |_| Some(taint("pii")))
            .wait()
            .unwrap();
        flusher.stop();
        assert_eq!(store.pending(), 0);
    }
    let store = EmbeddedSessionStore::open(&path, None).unwrap();
    assert!(store.get("s1").wait().unwrap().is_some());
}

#[test]
fn idle_sessions_expire() {
    let store = EmbeddedSessionStore::memory(Some(Duration::ZERO));
    store
        .transact(ACCESS, "s1", &mut |_| Some(taint("pii")))
        .wait()
        .unwrap();
    assert_eq!(store.len(), 1);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(store.get("s1").wait().unwrap().is_none());
    let mut seen = None;
    store
        .transact(ACCESS, "s1", &mut |s| {
            seen = Some(s.taints.len());
            None
        })
        .wait()
        .unwrap();
    assert_eq!(seen, Some(0), "an expired session starts empty");
    store.sweep();
    assert_eq!(store.len(), 0);
}

#[test]
fn noop_decisions_create_no_session() {
    let store = EmbeddedSessionStore::memory(None);
    store.transact(ACCESS, "s1", &mut |_| None).wait().unwrap();
    assert_eq!(store.len(), 0);
}

/// A session record that cannot be read is not dropped (its taints would be forgotten and a
/// call they deny allowed): the store refuses to open, saying how many and what to do.
#[test]
fn an_unreadable_session_record_refuses_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    {
        let store = EmbeddedSessionStore::open(&path, None).unwrap();
        store
            .transact(ACCESS, "s1", &mut |_| Some(taint("pii")))
            .wait()
            .unwrap();
        store.flush().unwrap();
    }
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("sessions");
            let mut table = tx.open_table(table).unwrap();
            table.insert("s2", b"not json".as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let err = EmbeddedSessionStore::open(&path, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("1 session record(s) cannot be read; refusing to start"),
        "{err}"
    );
}
