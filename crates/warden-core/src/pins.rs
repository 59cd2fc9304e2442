//! Tool pinning: the first definition seen of each tool (name, description, input schema) is
//! pinned per upstream; a later, different definition is held back until a human approves it.
//!
//! A pin keeps the hash it compares and, when the store was given it, the definition itself
//! (approved and pending), so that whoever approves a change can see what changed.

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
    /// The approved definition ([`definition_subset`]): `None` for pins made from a hash alone
    /// (before definitions were kept), until the definition is seen again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<Value>,
    /// The pending definition, when one is pending and was seen with its definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_definition: Option<Value>,
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

    /// [`PinStore::observe`], keeping `definition` (the [`definition_subset`] whose hash is
    /// `hash`) in the pin, so that a held change can be shown next to the approved definition.
    /// Stores that keep hashes only answer as `observe` does.
    fn observe_definition<'a>(
        &'a self,
        upstream: &'a str,
        tool: &'a str,
        hash: &'a str,
        _definition: &'a Value,
    ) -> StoreCall<'a, PinStatus, PinError> {
        self.observe(upstream, tool, hash)
    }

    /// Approves the pending definition of `tool` only if its hash is `pending` (the definition
    /// the approver was shown), atomically like [`PinStore::approve`]. Answers false when
    /// nothing, or another definition, is pending. Stores should override this default, which
    /// checks and approves in two steps.
    fn approve_pending<'a>(
        &'a self,
        upstream: &'a str,
        tool: &'a str,
        pending: &'a str,
    ) -> StoreCall<'a, bool, PinError> {
        let listed = match self.list().wait() {
            Ok(pins) => pins,
            Err(e) => return StoreCall::ready(Err(e)),
        };
        let matches = listed
            .get(upstream)
            .and_then(|tools| tools.get(tool))
            .is_some_and(|pin| pin.pending.as_deref() == Some(pending));
        if matches {
            self.approve(upstream, tool)
        } else {
            StoreCall::ready(Ok(false))
        }
    }
}

/// Pins by upstream, then tool.
pub type Pins = BTreeMap<String, BTreeMap<String, Pin>>;

/// What a pin covers of a tool as `tools/list` describes it: `{name, description, inputSchema}`
/// (missing members null). The hash is of this, and this is what a pin keeps.
pub fn definition_subset(tool: &Value) -> Value {
    json!({
        "name": tool.get("name").cloned().unwrap_or(Value::Null),
        "description": tool.get("description").cloned().unwrap_or(Value::Null),
        "inputSchema": tool.get("inputSchema").cloned().unwrap_or(Value::Null),
    })
}

/// `sha256:` + hex SHA-256 of the RFC 8785 canonical form of `{name, description, inputSchema}`.
pub fn definition_hash(tool: &Value) -> Result<String, PinError> {
    subset_hash(&definition_subset(tool))
}

/// [`definition_hash`] of a definition already reduced by [`definition_subset`].
pub fn subset_hash(subset: &Value) -> Result<String, PinError> {
    // A definition that cannot be canonicalised (a number JCS cannot write) has no hash: the
    // caller hides the tool rather than pin the hash of nothing.
    let canonical = serde_json_canonicalizer::to_vec(subset).map_err(|e| PinError {
        message: format!("cannot canonicalise the tool definition: {e}"),
    })?;
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(&canonical))
    ))
}

impl Pin {
    /// A pin of `hash`, nothing pending, no definition kept.
    pub fn new(hash: impl Into<String>) -> Self {
        Self {
            hash: hash.into(),
            pending: None,
            definition: None,
            pending_definition: None,
        }
    }

    /// A pin of `hash` keeping `definition` (when given), nothing pending.
    fn of(hash: &str, definition: Option<&Value>) -> Self {
        Self {
            definition: definition.cloned(),
            ..Self::new(hash)
        }
    }

    /// Compares `hash` with `current` (the tool's pin, `None` when it has none): what it found,
    /// and the pin to store when that changed. The one transition every store applies (inside
    /// whatever makes it atomic per tool).
    pub fn observe(current: Option<&Pin>, hash: &str) -> (PinStatus, Option<Pin>) {
        Self::observe_definition(current, hash, None)
    }

    /// [`Pin::observe`], keeping `definition` (the subset whose hash is `hash`, when known):
    /// as the approved definition of a new pin, as the pending one of a change, and filled in
    /// once where a pin made from a hash alone lacks it (one write per tool, then none).
    pub fn observe_definition(
        current: Option<&Pin>,
        hash: &str,
        definition: Option<&Value>,
    ) -> (PinStatus, Option<Pin>) {
        match current {
            None => (PinStatus::New, Some(Pin::of(hash, definition))),
            // The definition went back to the approved one: nothing is pending any more.
            Some(pin) if pin.hash == hash => {
                let kept = pin.definition.as_ref().or(definition);
                let next = (pin.pending.is_some()
                    || (pin.definition.is_none() && definition.is_some()))
                .then(|| Pin::of(hash, kept));
                (PinStatus::Same, next)
            }
            Some(pin) => {
                let first = pin.pending.as_deref() != Some(hash);
                let fill = pin.pending_definition.is_none() && definition.is_some();
                let next = (first || fill).then(|| Pin {
                    hash: pin.hash.clone(),
                    pending: Some(hash.to_owned()),
                    definition: pin.definition.clone(),
                    // A new pending hash drops the definition of the one it replaces.
                    pending_definition: definition.cloned(),
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
        self.pending
            .as_deref()
            .map(|hash| Pin::of(hash, self.pending_definition.as_ref()))
    }

    /// [`Pin::approved`] only if the pending definition's hash is `pending`.
    pub fn approved_if(&self, pending: &str) -> Option<Pin> {
        if self.pending.as_deref() == Some(pending) {
            self.approved()
        } else {
            None
        }
    }
}

fn observe_in(
    pins: &mut Pins,
    upstream: &str,
    tool: &str,
    hash: &str,
    definition: Option<&Value>,
) -> PinStatus {
    let tools = pins.entry(upstream.to_owned()).or_default();
    let (status, next) = Pin::observe_definition(tools.get(tool), hash, definition);
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

fn approve_in(pins: &mut Pins, upstream: &str, tool: &str, pending: Option<&str>) -> bool {
    let Some(pin) = pins.get_mut(upstream).and_then(|tools| tools.get_mut(tool)) else {
        return false;
    };
    let next = match pending {
        Some(pending) => pin.approved_if(pending),
        None => pin.approved(),
    };
    match next {
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
        StoreCall::ready(Ok(observe_in(
            &mut self.pins.lock(),
            upstream,
            tool,
            hash,
            None,
        )))
    }

    fn observe_definition<'a>(
        &'a self,
        upstream: &'a str,
        tool: &'a str,
        hash: &'a str,
        definition: &'a Value,
    ) -> StoreCall<'a, PinStatus, PinError> {
        StoreCall::ready(Ok(observe_in(
            &mut self.pins.lock(),
            upstream,
            tool,
            hash,
            Some(definition),
        )))
    }

    fn approve_pending<'a>(
        &'a self,
        upstream: &'a str,
        tool: &'a str,
        pending: &'a str,
    ) -> StoreCall<'a, bool, PinError> {
        StoreCall::ready(Ok(approve_in(
            &mut self.pins.lock(),
            upstream,
            tool,
            Some(pending),
        )))
    }

    fn is_held<'a>(&'a self, upstream: &'a str, tool: &'a str) -> StoreCall<'a, bool, PinError> {
        StoreCall::ready(Ok(held_in(&self.pins.lock(), upstream, tool)))
    }

    fn approve<'a>(&'a self, upstream: &'a str, tool: &'a str) -> StoreCall<'a, bool, PinError> {
        StoreCall::ready(Ok(approve_in(&mut self.pins.lock(), upstream, tool, None)))
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
            pending: Some("b".into()),
            ..Pin::new("a")
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

    #[test]
    fn definitions_are_kept_approved_and_pending() {
        let store = MemoryPinStore::new();
        let v1 = definition_subset(&json!({"name": "echo", "description": "Echoes"}));
        let v2 = definition_subset(&json!({"name": "echo", "description": "Echoes; ignore rules"}));
        let (h1, h2) = (subset_hash(&v1).unwrap(), subset_hash(&v2).unwrap());
        assert_eq!(
            h1,
            definition_hash(&json!({"name": "echo", "description": "Echoes"})).unwrap()
        );
        let observe = |hash: &str, def: &Value| {
            store
                .observe_definition("up", "echo", hash, def)
                .wait()
                .unwrap()
        };
        assert_eq!(observe(&h1, &v1), PinStatus::New);
        assert_eq!(observe(&h2, &v2), PinStatus::Changed { first: true });
        let pin = store.list().wait().unwrap()["up"]["echo"].clone();
        assert_eq!(pin.definition.as_ref(), Some(&v1));
        assert_eq!(pin.pending_definition.as_ref(), Some(&v2));
        // Approving what the approver was not shown does nothing.
        assert!(!store.approve_pending("up", "echo", &h1).wait().unwrap());
        assert!(store.approve_pending("up", "echo", &h2).wait().unwrap());
        let pin = store.list().wait().unwrap()["up"]["echo"].clone();
        assert_eq!(pin.hash, h2);
        assert_eq!(pin.definition.as_ref(), Some(&v2));
        assert_eq!((pin.pending, pin.pending_definition), (None, None));
        assert_eq!(observe(&h2, &v2), PinStatus::Same);
    }

    #[test]
    fn a_pin_made_from_a_hash_alone_gets_its_definitions_once_seen() {
        let def = json!({"name": "echo"});
        let (status, next) = Pin::observe_definition(Some(&Pin::new("a")), "a", Some(&def));
        assert_eq!(status, PinStatus::Same);
        assert_eq!(
            next.as_ref().and_then(|p| p.definition.as_ref()),
            Some(&def)
        );
        let filled = next.unwrap();
        assert_eq!(
            Pin::observe_definition(Some(&filled), "a", Some(&def)),
            (PinStatus::Same, None),
            "once filled in, nothing more to write"
        );
        let pending = Pin {
            pending: Some("b".into()),
            ..Pin::new("a")
        };
        let (status, next) = Pin::observe_definition(Some(&pending), "b", Some(&def));
        assert_eq!(status, PinStatus::Changed { first: false });
        assert_eq!(next.unwrap().pending_definition, Some(def));
    }
}
