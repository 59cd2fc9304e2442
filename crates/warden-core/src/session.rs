//! Per-session state (taints, history, sequence markers) and the change a decision makes to it.
//!
//! A decision reads a session's taints and history, decides, and writes the change back; the
//! stores that keep sessions, and make that read-decide-update atomic per session, are in
//! [`crate::state`].

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

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

/// A session's state as [`SessionStore::load`] read it, with the version it had then.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versioned {
    /// The state (empty when the session is unknown or expired).
    pub state: SessionState,
    /// Changes on every write of the session and is never reused by the store, also after the
    /// session is removed and created again; 0 when the session does not exist.
    pub version: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

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
