//! Changes made to Rego policies through OPA's management API (`PUT`/`DELETE /v1/policies/{id}`,
//! `PUT`/`PATCH`/`DELETE /v1/data/{path}`), kept as an overlay over what the policy files and
//! the database hold, so that a reload re-applies them to the new sources instead of losing
//! them. Pure: no I/O, no compilation (the caller compiles what [`Overlay::apply`] gives).
//!
//! Changes live in the daemon's memory, as OPA keeps policies pushed through its API: they are
//! gone at restart, and each instance has its own. `warden policy push` is the durable, shared
//! way.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use warden::rego::RegoModule;

/// Most changes an overlay keeps for one policy (after folding: a write replaces the earlier
/// writes it overrides).
pub const MAX_CHANGES: usize = 10_000;

/// Most modules one Rego policy may have.
pub const MAX_MODULES: usize = 1_000;

/// Longest module id, in bytes.
pub const MAX_MODULE_ID_BYTES: usize = 256;

/// What a Rego policy is compiled from: its modules (their name is their id in OPA's policy
/// API) and its base data document (an object).
#[derive(Clone, Debug, PartialEq)]
pub struct RegoSources {
    /// The modules, in the order they were loaded, then the order they were added.
    pub modules: Vec<RegoModule>,
    /// The base document (`data`), always an object.
    pub data: Value,
}

impl Default for RegoSources {
    fn default() -> Self {
        Self {
            modules: Vec::new(),
            data: Value::Object(Map::new()),
        }
    }
}

/// One change to a Rego policy.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Adds the module `id`, or replaces it.
    PutModule {
        /// The module's id.
        id: String,
        /// Its Rego source.
        source: String,
    },
    /// Removes the module `id`.
    DeleteModule {
        /// The module's id.
        id: String,
    },
    /// Creates or replaces the document at `path` (parents created as objects).
    SetData {
        /// Object keys (or array indexes) from the root; empty is the root.
        path: Vec<String>,
        /// The new document (an object at the root).
        value: Value,
    },
    /// Removes the document at `path` (the root becomes `{}`).
    RemoveData {
        /// Object keys (or array indexes) from the root.
        path: Vec<String>,
    },
}

/// Why a change to a policy was refused (the policy set is unchanged).
#[derive(Debug, thiserror::Error)]
pub enum ChangeFailure {
    /// The caller's policy is not loaded.
    #[error("the policy `{0}` is not loaded")]
    NoPolicy(String),
    /// The caller's policy is a Warden policy, not Rego.
    #[error(
        "the policy `{0}` is a Warden policy: OPA's policy and data API changes Rego policies \
         (push Warden policies with `warden policy push`)"
    )]
    NotRego(String),
    /// The change cannot be applied.
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// The policy does not compile with the change.
    #[error(transparent)]
    Compile(#[from] warden::rego::RegoError),
}

/// Why a change cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The module or document the change names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change itself is invalid (an id, a path through a value, a limit).
    #[error("{0}")]
    Invalid(String),
}

impl Change {
    /// Applies the change to `sources`. Strict: removing what is not there is
    /// [`ChangeError::NotFound`].
    pub fn apply(&self, sources: &mut RegoSources) -> Result<(), ChangeError> {
        match self {
            Change::PutModule { id, source } => {
                check_module_id(id)?;
                let count = sources.modules.len();
                match sources.modules.iter_mut().find(|m| m.name == *id) {
                    Some(module) => module.source.clone_from(source),
                    None if count >= MAX_MODULES => {
                        return Err(ChangeError::Invalid(format!(
                            "a policy has at most {MAX_MODULES} modules"
                        )));
                    }
                    None => sources.modules.push(RegoModule::new(id, source.as_str())),
                }
                Ok(())
            }
            Change::DeleteModule { id } => {
                let before = sources.modules.len();
                sources.modules.retain(|m| m.name != *id);
                if sources.modules.len() == before {
                    return Err(ChangeError::NotFound(format!("no policy module `{id}`")));
                }
                Ok(())
            }
            Change::SetData { path, value } => set(&mut sources.data, path, value.clone()),
            Change::RemoveData { path } => remove(&mut sources.data, path),
        }
    }

    fn module_id(&self) -> Option<&str> {
        match self {
            Change::PutModule { id, .. } | Change::DeleteModule { id } => Some(id),
            Change::SetData { .. } | Change::RemoveData { .. } => None,
        }
    }

    fn data_path(&self) -> Option<&[String]> {
        match self {
            Change::SetData { path, .. } | Change::RemoveData { path } => Some(path),
            Change::PutModule { .. } | Change::DeleteModule { .. } => None,
        }
    }
}

/// A module id: 1 to [`MAX_MODULE_ID_BYTES`] bytes, no control characters.
pub fn check_module_id(id: &str) -> Result<(), ChangeError> {
    if id.is_empty() || id.len() > MAX_MODULE_ID_BYTES || id.chars().any(char::is_control) {
        return Err(ChangeError::Invalid(format!(
            "a policy module id is 1 to {MAX_MODULE_ID_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

/// The changes made to one policy, in order, folded: a change replaces the earlier ones it
/// overrides (the same module; the same data path or one below it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overlay {
    changes: Vec<Change>,
}

impl Overlay {
    /// Records `change` (already applied successfully to the policy's current sources).
    pub fn record(&mut self, change: Change) -> Result<(), ChangeError> {
        if let Some(id) = change.module_id() {
            self.changes.retain(|c| c.module_id() != Some(id));
        }
        if let Some(path) = change.data_path() {
            self.changes
                .retain(|c| c.data_path().is_none_or(|p| !p.starts_with(path)));
        }
        if self.changes.len() >= MAX_CHANGES {
            return Err(ChangeError::Invalid(format!(
                "more than {MAX_CHANGES} changes kept for this policy; put them in its files or \
                 push it with `warden policy push`"
            )));
        }
        self.changes.push(change);
        Ok(())
    }

    /// Applies every change to `sources` (a policy as its files or the database have it now).
    /// Removing what is no longer there is skipped (the outcome the change wanted holds); any
    /// other failure names the change.
    pub fn apply(&self, sources: &mut RegoSources) -> Result<(), ChangeError> {
        for change in &self.changes {
            match change.apply(sources) {
                Ok(()) | Err(ChangeError::NotFound(_)) => {}
                Err(ChangeError::Invalid(message)) => {
                    return Err(ChangeError::Invalid(format!(
                        "a change made through the API no longer applies: {message}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// The overlays of every policy, by policy name.
pub type Overlays = HashMap<Arc<str>, Overlay>;

fn describe(path: &[String]) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        path.iter().map(|s| format!("/{s}")).collect()
    }
}

/// The document at `path`, if there is one.
pub fn get<'a>(data: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(data, |node, segment| match node {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Writes `value` at `path`, creating missing parents as objects; an array element is
/// addressed by its index and must exist.
fn set(data: &mut Value, path: &[String], value: Value) -> Result<(), ChangeError> {
    let Some((last, parents)) = path.split_last() else {
        if !value.is_object() {
            return Err(ChangeError::Invalid(
                "the root data document must be an object".to_owned(),
            ));
        }
        *data = value;
        return Ok(());
    };
    let mut node = data;
    for (depth, segment) in parents.iter().enumerate() {
        node = match node {
            Value::Object(map) => map
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => index_of(items, segment)
                .and_then(|i| items.get_mut(i))
                .ok_or_else(|| no_element(path, depth))?,
            _ => return Err(not_a_container(path, depth)),
        };
    }
    match node {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let slot = index_of(items, last)
                .and_then(|i| items.get_mut(i))
                .ok_or_else(|| no_element(path, parents.len()))?;
            *slot = value;
            Ok(())
        }
        _ => Err(not_a_container(path, parents.len())),
    }
}

/// Removes the document at `path`; the root becomes `{}`.
fn remove(data: &mut Value, path: &[String]) -> Result<(), ChangeError> {
    let missing = || ChangeError::NotFound(format!("no data document at {}", describe(path)));
    let Some((last, parents)) = path.split_last() else {
        *data = Value::Object(Map::new());
        return Ok(());
    };
    let mut node = data;
    for segment in parents {
        node = match node {
            Value::Object(map) => map.get_mut(segment).ok_or_else(missing)?,
            Value::Array(items) => index_of(items, segment)
                .and_then(|i| items.get_mut(i))
                .ok_or_else(missing)?,
            _ => return Err(missing()),
        };
    }
    match node {
        Value::Object(map) => map.remove(last).map(drop).ok_or_else(missing),
        Value::Array(items) => {
            let index = index_of(items, last).ok_or_else(missing)?;
            items.remove(index);
            Ok(())
        }
        _ => Err(missing()),
    }
}

fn index_of(items: &[Value], segment: &str) -> Option<usize> {
    segment.parse::<usize>().ok().filter(|i| *i < items.len())
}

fn no_element(path: &[String], depth: usize) -> ChangeError {
    ChangeError::NotFound(format!(
        "no array element at {}",
        describe(path.get(..=depth).unwrap_or(path))
    ))
}

fn not_a_container(path: &[String], depth: usize) -> ChangeError {
    ChangeError::Invalid(format!(
        "{} is neither an object nor an array",
        describe(path.get(..depth).unwrap_or(path))
    ))
}

/// The change a JSON Patch (RFC 6902) of the document at `path` makes: the patched document,
/// written back whole. The patch is all or nothing.
pub fn patch(data: &Value, path: &[String], patch: Value) -> Result<Change, ChangeError> {
    let mut target = get(data, path)
        .cloned()
        .ok_or_else(|| ChangeError::NotFound(format!("no data document at {}", describe(path))))?;
    let patch: json_patch::Patch = serde_json::from_value(patch)
        .map_err(|e| ChangeError::Invalid(format!("not a JSON Patch document: {e}")))?;
    json_patch::patch(&mut target, &patch)
        .map_err(|e| ChangeError::Invalid(format!("the patch does not apply: {e}")))?;
    Ok(Change::SetData {
        path: path.to_vec(),
        value: target,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn sources(data: Value) -> RegoSources {
        RegoSources {
            modules: vec![RegoModule::new("a.rego", "package a\n")],
            data,
        }
    }

    #[test]
    fn data_writes_create_parents_replace_and_remove() {
        let mut s = sources(json!({"users": [{"name": "al"}]}));
        Change::SetData {
            path: path("limits/max"),
            value: json!(3),
        }
        .apply(&mut s)
        .unwrap();
        Change::SetData {
            path: path("users/0/name"),
            value: json!("bo"),
        }
        .apply(&mut s)
        .unwrap();
        assert_eq!(
            s.data,
            json!({"users": [{"name": "bo"}], "limits": {"max": 3}})
        );
        Change::RemoveData {
            path: path("users/0"),
        }
        .apply(&mut s)
        .unwrap();
        assert_eq!(s.data, json!({"users": [], "limits": {"max": 3}}));
        let missing = Change::RemoveData {
            path: path("nope/x"),
        }
        .apply(&mut s);
        assert!(matches!(missing, Err(ChangeError::NotFound(_))));
        let through_scalar = Change::SetData {
            path: path("limits/max/x"),
            value: json!(1),
        }
        .apply(&mut s);
        assert_eq!(
            through_scalar,
            Err(ChangeError::Invalid(
                "/limits/max is neither an object nor an array".into()
            ))
        );
        let root_scalar = Change::SetData {
            path: vec![],
            value: json!(1),
        }
        .apply(&mut s);
        assert!(matches!(root_scalar, Err(ChangeError::Invalid(_))));
    }

    #[test]
    fn a_patch_is_all_or_nothing_and_becomes_one_write() {
        let data = json!({"team": {"members": ["a"], "lead": "a"}});
        let change = patch(
            &data,
            &path("team"),
            json!([{"op": "add", "path": "/members/-", "value": "b"},
                   {"op": "replace", "path": "/lead", "value": "b"}]),
        )
        .unwrap();
        assert_eq!(
            change,
            Change::SetData {
                path: path("team"),
                value: json!({"members": ["a", "b"], "lead": "b"})
            }
        );
        let failing = patch(
            &data,
            &path("team"),
            json!([{"op": "add", "path": "/members/-", "value": "b"},
                   {"op": "remove", "path": "/nope"}]),
        );
        assert!(matches!(failing, Err(ChangeError::Invalid(_))));
        assert!(matches!(
            patch(&data, &path("other"), json!([])),
            Err(ChangeError::NotFound(_))
        ));
        assert!(matches!(
            patch(&data, &path("team"), json!({"op": "add"})),
            Err(ChangeError::Invalid(_))
        ));
    }

    #[test]
    fn an_overlay_folds_what_a_later_change_overrides_and_replays_onto_new_sources() {
        let mut overlay = Overlay::default();
        for change in [
            Change::SetData {
                path: path("a/b"),
                value: json!(1),
            },
            Change::PutModule {
                id: "x.rego".into(),
                source: "package x\n".into(),
            },
            Change::SetData {
                path: path("a"),
                value: json!({"c": 2}),
            },
            Change::PutModule {
                id: "x.rego".into(),
                source: "package x2\n".into(),
            },
            Change::DeleteModule {
                id: "a.rego".into(),
            },
        ] {
            overlay.record(change).unwrap();
        }
        assert_eq!(overlay.changes.len(), 3);
        // The files changed meanwhile: the overlay applies over what they hold now.
        let mut s = sources(json!({"a": {"old": true}, "keep": 1}));
        overlay.apply(&mut s).unwrap();
        assert_eq!(s.data, json!({"a": {"c": 2}, "keep": 1}));
        assert_eq!(s.modules, vec![RegoModule::new("x.rego", "package x2\n")]);
        // A module deleted through the API that the files no longer have: nothing to do.
        let mut without = RegoSources::default();
        overlay.apply(&mut without).unwrap();
        assert_eq!(without.modules.len(), 1);
    }

    #[test]
    fn module_ids_and_counts_are_bounded() {
        let mut s = RegoSources::default();
        for bad in ["", "a\nb", &"x".repeat(MAX_MODULE_ID_BYTES + 1)] {
            let change = Change::PutModule {
                id: bad.to_owned(),
                source: String::new(),
            };
            assert!(matches!(change.apply(&mut s), Err(ChangeError::Invalid(_))));
        }
        for i in 0..MAX_MODULES {
            Change::PutModule {
                id: format!("m{i}"),
                source: String::new(),
            }
            .apply(&mut s)
            .unwrap();
        }
        let one_more = Change::PutModule {
            id: "last".into(),
            source: String::new(),
        };
        assert!(matches!(
            one_more.apply(&mut s),
            Err(ChangeError::Invalid(_))
        ));
        let mut overlay = Overlay::default();
        for i in 0..MAX_CHANGES {
            overlay
                .record(Change::SetData {
                    path: vec![format!("k{i}")],
                    value: json!(i),
                })
                .unwrap();
        }
        assert!(
            overlay
                .record(Change::RemoveData {
                    path: vec!["z".into()]
                })
                .is_err()
        );
    }
}
