//! Tool pinning: the first definition seen of each tool (name, description, input schema) is
//! pinned per upstream; a later, different definition is held back until a human approves it.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::state::StoreCall;

/// A pin store failed (I/O, a corrupt file, a lock held too long). Callers fail closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pin store: {message}")]
pub struct PinError {
    /// What went wrong.
    pub message: String,
}

/// One tool's pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// `sha256:` hash of the approved definition.
    pub hash: String,
    /// Hash of a changed definition seen since, waiting for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// What comparing a definition with its pin found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinStatus {
    /// First time seen: now pinned.
    New,
    /// Same as the pin.
    Same,
    /// Differs from the pin and is not approved; `first` when this definition was not pending
    /// before (a change to log and count).
    Changed {
        /// A definition not seen pending before.
        first: bool,
    },
}

/// Pins, per upstream and tool. Implementations must make `observe` and `approve` atomic per
/// tool, across every process sharing the store (apply [`Pin::observe`] and [`Pin::approved`]
/// inside one transaction). `MemoryPinStore` is the one in this crate; the persistent one,
/// shared by the MCP proxy and `warden mcp approve`, is `warden_store::RedbPinStore`.
///
/// One of the state traits ([`crate::state`]): every call may be answered later by a store
/// behind a network; the in-process ones answer at once.
pub trait PinStore: Send + Sync {
    /// Compares `hash` with the pin of `tool` on `upstream`, pinning it when new and
    /// recording it as pending when it differs.
    fn observe<'a>(
        &'a self,
        upstream: &'a str,
        tool: &'a str,
        hash: &'a str,
    ) -> StoreCall<'a, PinStatus, PinError>;
    /// Whether calls to `tool` are held back (a changed definition is pending approval).
    fn is_held<'a>(&'a self, upstream: &'a str, tool: &'a str) -> StoreCall<'a, bool, PinError>;
    /// Approves the pending definition of `tool`: it becomes the pin. Answers false when
    /// nothing was pending.
    fn approve<'a>(&'a self, upstream: &'a str, tool: &'a str) -> StoreCall<'a, bool, PinError>;
    /// Every pin, by upstream then tool.
    fn list(&self) -> StoreCall<'_, Pins, PinError>;
}

/// Pins by upstream, then tool.
pub type Pins = BTreeMap<String, BTreeMap<String, Pin>>;

/// `sha256:` + hex SHA-256 of the RFC 8785 canonical form of `{name, description, inputSchema}`.
pub fn definition_hash(tool: &Value) -> Result<String, PinError> {
    let subset = json!({
        "name": tool.get("name").cloned().unwrap_or(Value::Null),
        "description": tool.get("description").cloned().unwrap_or(Value::Null),
        "inputSchema": tool.get("inputSchema").cloned().unwrap_or(Value::Null),
    });
    // A definition that cannot be canonicalised (a number JCS cannot write) has no hash: the
    // caller hides the tool rather than pin the hash of nothing.
    let canonical = serde_json_canonicalizer::to_vec(&subset).map_err(|e| PinError {
        message: format!("cannot canonicalise the tool definition: {e}"),
    })?;
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(&canonical))
    ))
}

impl Pin {
    /// A pin of `hash`, nothing pending.
    pub fn new(hash: impl Into<String>) -> Self {
        Self {
            hash: hash.into(),
            pending: None,
        }
    }

    /// Compares `hash` with `current` (the tool's pin, `None` when it has none): what it found,
    /// and the pin to store when that changed. The one transition every store applies (inside
    /// whatever makes it atomic per tool).
    pub fn observe(current: Option<&Pin>, hash: &str) -> (PinStatus, Option<Pin>) {
        match current {
            None => (PinStatus::New, Some(Pin::new(hash))),
            // The definition went back to the approved one: nothing is pending any more.
            Some(pin) if pin.hash == hash => (
                PinStatus::Same,
                pin.pending.is_some().then(|| Pin::new(hash)),
            ),
            Some(pin) => {
                let first = pin.pending.as_deref() != Some(hash);
                let next = first.then(|| Pin {
                    hash: pin.hash.clone(),
                    pending: Some(hash.to_owned()),
                });
                (PinStatus::Changed { first }, next)
            }
        }
    }

    /// Whether calls are held back: a changed definition is pending approval.
    pub fn is_held(&self) -> bool {
        self.pending.is_some()
    }

    /// The pin once its pending definition is approved (`None`: nothing is pending).
    pub fn approved(&self) -> Option<Pin> {
        self.pending.as_ref().map(|hash| Pin::new(hash.clone()))
    }
}

fn observe_in(pins: &mut Pins, upstream: &str, tool: &str, hash: &str) -> PinStatus {
    let tools = pins.entry(upstream.to_owned()).or_default();
    let (status, next) = Pin::observe(tools.get(tool), hash);
    if let Some(next) = next {
        tools.insert(tool.to_owned(), next);
    }
    status
}

fn held_in(pins: &Pins, upstream: &str, tool: &str) -> bool {
    pins.get(upstream)
        .and_then(|tools| tools.get(tool))
        .is_some_and(Pin::is_held)
}

fn approve_in(pins: &mut Pins, upstream: &str, tool: &str) -> bool {
    let Some(pin) = pins.get_mut(upstream).and_then(|tools| tools.get_mut(tool)) else {
        return false;
    };
    match pin.approved() {
        Some(next) => {
            *pin = next;
            true
        }
        None => false,
    }
}

/// Pins in memory, for one process.
#[derive(Debug, Default)]
pub struct MemoryPinStore {
    pins: Mutex<Pins>,
}

impl MemoryPinStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl PinStore for MemoryPinStore {
    fn observe<'a>(
        &'a self,
        upstream: &'a str,
        tool: &'a str,
        hash: &'a str,
    ) -> StoreCall<'a, PinStatus, PinError> {
        StoreCall::ready(Ok(observe_in(&mut self.pins.lock(), upstream, tool, hash)))
    }

    fn is_held<'a>(&'a self, upstream: &'a str, tool: &'a str) -> StoreCall<'a, bool, PinError> {
        StoreCall::ready(Ok(held_in(&self.pins.lock(), upstream, tool)))
    }

    fn approve<'a>(&'a self, upstream: &'a str, tool: &'a str) -> StoreCall<'a, bool, PinError> {
        StoreCall::ready(Ok(approve_in(&mut self.pins.lock(), upstream, tool)))
    }

    fn list(&self) -> StoreCall<'_, Pins, PinError> {
        StoreCall::ready(Ok(self.pins.lock().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_new_same_changed_approve() {
        let store = MemoryPinStore::new();
        assert_eq!(
            store.observe("up", "echo", "a").wait().unwrap(),
            PinStatus::New
        );
        assert_eq!(
            store.observe("up", "echo", "a").wait().unwrap(),
            PinStatus::Same
        );
        assert!(!store.is_held("up", "echo").wait().unwrap());
        assert_eq!(
            store.observe("up", "echo", "b").wait().unwrap(),
            PinStatus::Changed { first: true }
        );
        assert_eq!(
            store.observe("up", "echo", "b").wait().unwrap(),
            PinStatus::Changed { first: false }
        );
        assert!(store.is_held("up", "echo").wait().unwrap());
        // Another upstream's tool of the same name is pinned apart.
        assert_eq!(
            store.observe("other", "echo", "b").wait().unwrap(),
            PinStatus::New
        );
        assert!(store.approve("up", "echo").wait().unwrap());
        assert!(!store.approve("up", "echo").wait().unwrap());
        assert!(!store.approve("up", "missing").wait().unwrap());
        assert_eq!(
            store.observe("up", "echo", "b").wait().unwrap(),
            PinStatus::Same
        );
        assert_eq!(store.list().wait().unwrap()["up"]["echo"], Pin::new("b"));
    }

    #[test]
    fn going_back_to_the_pinned_definition_clears_the_pending_one() {
        let pin = Pin {
            hash: "a".into(),
            pending: Some("b".into()),
        };
        assert_eq!(
            Pin::observe(Some(&pin), "a"),
            (PinStatus::Same, Some(Pin::new("a")))
        );
        assert_eq!(
            Pin::observe(Some(&Pin::new("a")), "a"),
            (PinStatus::Same, None)
        );
        assert_eq!(
            Pin::observe(Some(&pin), "b"),
            (PinStatus::Changed { first: false }, None)
        );
        assert_eq!(pin.approved(), Some(Pin::new("b")));
        assert_eq!(Pin::new("a").approved(), None);
    }
}
