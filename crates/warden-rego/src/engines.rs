//! Per-thread evaluation engines.
//!
//! regorus evaluates through `&mut Engine`. Rather than a lock around one engine, every thread
//! keeps its own clone of the compiled prototype (a clone shares the parsed modules, the
//! schedule and the base data through `Arc`, so it is cheap). Engines are keyed by the
//! policy's unique id: a reloaded policy has a new id, so the first evaluation of the new
//! snapshot on a thread clones its prototype, and no thread evaluates an old snapshot for a
//! new policy object.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use regorus::Engine;

/// Engines kept per thread (most recently used first). A policy reload touches one new entry;
/// a few entries let tests and multi-tenant callers alternate between snapshots cheaply.
pub(crate) const ENGINES_PER_THREAD: usize = 4;

/// What a thread needs to build its engine for one policy.
pub(crate) struct Prototype {
    /// Unique for the life of the process (from a global counter).
    pub(crate) id: u64,
    /// Prepared engine (modules analysed, data loaded, limits set); only ever cloned.
    pub(crate) engine: Engine,
}

struct Slot {
    id: u64,
    /// Lets a thread drop engines whose policy is gone at its next miss.
    owner: Weak<Prototype>,
    /// `None` while checked out by an evaluation on this thread.
    engine: Option<Box<Engine>>,
}

thread_local! {
    // INVARIANT: at most ENGINES_PER_THREAD slots, ids unique, most recently used first.
    static ENGINES: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's engine for `proto`, creating it on first use.
///
/// The engine is checked out of the thread cache for the duration of `f` (so a re-entrant
/// call, or a call during thread teardown, just uses a fresh clone), and checked back in
/// afterwards. If `f` panics the engine is not returned and the next call starts afresh.
pub(crate) fn with_engine<R>(proto: &Arc<Prototype>, f: impl FnOnce(&mut Engine) -> R) -> R {
    let mut engine = checkout(proto).unwrap_or_else(|| Box::new(proto.engine.clone()));
    let result = f(&mut engine);
    checkin(proto.id, engine);
    result
}

fn checkout(proto: &Arc<Prototype>) -> Option<Box<Engine>> {
    ENGINES
        .try_with(|cell| {
            let mut slots = cell.try_borrow_mut().ok()?;
            match slots.iter().position(|s| s.id == proto.id) {
                Some(0) => {}
                Some(i) => {
                    let slot = slots.remove(i);
                    slots.insert(0, slot);
                }
                None => {
                    slots.retain(|s| s.owner.strong_count() > 0);
                    slots.truncate(ENGINES_PER_THREAD.saturating_sub(1));
                    slots.insert(
                        0,
                        Slot {
                            id: proto.id,
                            owner: Arc::downgrade(proto),
                            engine: Some(Box::new(proto.engine.clone())),
                        },
                    );
                }
            }
            slots.first_mut().and_then(|s| s.engine.take())
        })
        .ok()
        .flatten()
}

fn checkin(id: u64, engine: Box<Engine>) {
    // Ignored when the thread is tearing down: the engine is simply dropped.
    let _ = ENGINES.try_with(|cell| {
        if let Ok(mut slots) = cell.try_borrow_mut()
            && let Some(slot) = slots.iter_mut().find(|s| s.id == id)
            && slot.engine.is_none()
        {
            slot.engine = Some(engine);
        }
    });
}

/// Number of engines cached on the calling thread (for tests).
#[cfg(test)]
pub(crate) fn cached_engines() -> usize {
    ENGINES
        .try_with(|cell| cell.try_borrow().map(|s| s.len()).unwrap_or(0))
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "engines_tests.rs"]
mod tests;
