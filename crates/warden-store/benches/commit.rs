//! Why sessions are written behind: the cost of one session update in memory (what a decision
//! pays) against one redb commit per update, fsync'd or not.
//!
//! `cargo bench -p warden-store --bench commit` (plain timing loop, no criterion: the three
//! figures differ by orders of magnitude).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use redb::{Database, Durability, TableDefinition};
use warden_core::StoreAccess;
use warden_core::session::HistoryEntry;
use warden_core::{SessionStore, StateChange};
use warden_store::EmbeddedSessionStore;

/// Tests drive the stores directly (feature `store-tests`).
const ACCESS: StoreAccess = StoreAccess::for_store_tests();

const T: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");

fn change() -> StateChange {
    StateChange {
        add: vec!["pii".into()],
        push: Some(HistoryEntry {
            tool: "crm.read_customer".into(),
            classes: Arc::from(vec![Arc::<str>::from("sensitive_read")]),
        }),
        history_limit: 16,
        ..StateChange::default()
    }
}

fn per_op(label: &str, n: u32, f: impl FnMut(u32)) {
    let mut f = f;
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    let each = start.elapsed() / n;
    println!("{label:<48} {:>10.2} µs/update", each.as_secs_f64() * 1e6);
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedSessionStore::open(&dir.path().join("wb.redb"), None).unwrap();
    per_op("write-behind (memory + dirty mark)", 200_000, |i| {
        let key = format!("s{}", i % 10_000);
        store
            .transact(ACCESS, &key, &mut |_| Some(change()))
            .wait()
            .unwrap();
    });
    let start = Instant::now();
    let rows = store.flush().unwrap();
    println!(
        "{:<48} {:>10.2} ms for {rows} sessions",
        "  one flush of the dirty sessions",
        start.elapsed().as_secs_f64() * 1e3
    );
    for (label, durability, n) in [
        (
            "redb commit per update, Durability::Immediate",
            Durability::Immediate,
            300,
        ),
        (
            "redb commit per update, Durability::None",
            Durability::None,
            20_000,
        ),
    ] {
        let db = Database::create(dir.path().join(format!("{n}.redb"))).unwrap();
        let value = vec![b'x'; 200];
        per_op(label, n, |i| {
            let mut tx = db.begin_write().unwrap();
            tx.set_durability(durability).unwrap();
            {
                let mut t = tx.open_table(T).unwrap();
                t.insert(format!("s{}", i % 10_000).as_str(), value.as_slice())
                    .unwrap();
            }
            tx.commit().unwrap();
        });
    }
}
