//! The served set: every policy, the API keys and the anonymous policy, loaded and validated
//! whole, then swapped in atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use warden::CompiledPolicy;
use warden::rego::{RegoLimits, RegoModule, RegoPolicy};
use warden::state::KeyStore;
use warden_store::{KeyIndex, PolicyFormat, StoredPolicy, Tenant};

use crate::config::ServeConfig;
use crate::overlay::{Overlays, RegoSources};

/// What decides a tenant's requests.
#[derive(Debug)]
pub enum PolicyKind {
    /// A Warden policy (YAML/JSON).
    Warden(Arc<CompiledPolicy>),
    /// A Rego-only policy (a `.rego` file, or modules added through OPA's policy API), served
    /// through the OPA Data API, with the sources it was compiled from.
    Rego(RegoPolicy, Arc<RegoSources>),
}

/// The displayable fields of the policies in force, by policy digest (a decision names the
/// exact policy that made it), for the console.
pub(crate) type Displays = HashMap<Arc<str>, Arc<[Box<str>]>>;

/// One loaded policy.
#[derive(Debug)]
pub struct LoadedPolicy {
    /// Its name (Warden: the `name` field; Rego: the file stem).
    pub name: Arc<str>,
    /// Its version, when it has one.
    pub version: Option<Arc<str>>,
    /// `sha256:` + hex digest (Warden: of the canonical JSON; Rego: of the source).
    pub digest: Arc<str>,
    /// When this content was first loaded (RFC 3339, UTC).
    pub loaded_at: Arc<str>,
    /// The file it came from.
    pub file: PathBuf,
    /// The compiled policy.
    pub kind: PolicyKind,
}

/// An immutable set of policies and keys; requests hold one for their whole life.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Policies by name.
    pub policies: HashMap<Arc<str>, Arc<LoadedPolicy>>,
    /// API keys.
    pub keys: KeyIndex,
    /// The policy for requests without a key.
    pub anonymous: Option<Arc<str>>,
    /// Each tenant's own MCP upstream (`/mcp`), from the database.
    pub tenant_upstreams: HashMap<Arc<str>, Arc<str>>,
}

/// What a snapshot takes from the database (nothing without one).
#[derive(Debug, Default)]
pub struct Stored {
    /// The active version of each policy kept there.
    pub policies: Vec<StoredPolicy>,
    /// The tenants.
    pub tenants: Vec<Tenant>,
}

/// Why a new set was rejected (the old one stays).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SnapshotError(pub String);

fn is_policy_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json" | "rego")
    )
}

impl Snapshot {
    /// This set with `policy` in place of the policy of the same name.
    pub(crate) fn with_policy(&self, policy: Arc<LoadedPolicy>) -> Snapshot {
        let mut policies = self.policies.clone();
        policies.insert(Arc::clone(&policy.name), policy);
        Snapshot {
            policies,
            keys: self.keys.clone(),
            anonymous: self.anonymous.clone(),
            tenant_upstreams: self.tenant_upstreams.clone(),
        }
    }

    /// The Warden policies of the snapshot by name, for the decision pipeline (Rego-only
    /// policies answer the Data API and are not in it).
    pub fn policy_set(&self) -> warden_core::PolicySet {
        self.policies
            .iter()
            .filter_map(|(name, loaded)| match &loaded.kind {
                PolicyKind::Warden(policy) => Some((Arc::clone(name), Arc::clone(policy))),
                PolicyKind::Rego(..) => None,
            })
            .fold(warden_core::PolicySet::default(), |set, (name, policy)| {
                set.with(name, policy)
            })
    }

    /// The fields each Warden policy marks as displayable (`display:`), by digest, for the
    /// console.
    pub(crate) fn displays(&self) -> Displays {
        self.policies
            .values()
            .filter_map(|loaded| match &loaded.kind {
                PolicyKind::Warden(policy) if !policy.display.is_empty() => Some((
                    Arc::clone(&policy.info.digest),
                    Arc::from(policy.display.clone()),
                )),
                _ => None,
            })
            .collect()
    }

    /// Loads every policy file in `config.policies` (not recursing), then the policies `stored`
    /// in the database (a stored policy replaces a file of the same name), and the keys from
    /// `keys`. Any file that does not load as a policy (other than a Rego policy's data
    /// document), two files with one policy name, a stored policy that does not compile or no
    /// longer matches its hash, or an `anonymous_policy` naming none of the loaded policies
    /// fails the whole load. The changes made through OPA's policy API (`overlays`) are applied
    /// to the Rego policies they were made to; one that no longer compiles fails the load.
    /// `previous` keeps `loaded_at` for unchanged policies.
    pub fn load(
        config: &ServeConfig,
        keys: &dyn KeyStore,
        stored: &Stored,
        overlays: &Overlays,
        previous: Option<&Snapshot>,
    ) -> Result<Self, SnapshotError> {
        let dir = &config.policies;
        let entries = std::fs::read_dir(dir)
            .map_err(|e| SnapshotError(format!("{}: cannot read: {e}", dir.display())))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_policy_file(p))
            .collect();
        files.sort();
        let now = rfc3339_now();
        let mut policies: HashMap<Arc<str>, Arc<LoadedPolicy>> = HashMap::new();
        for file in files {
            if is_rego_data(&file) {
                continue;
            }
            let mut loaded = load_one(&file)?;
            if let Some(old) = previous.and_then(|p| p.policies.get(&loaded.name))
                && old.digest == loaded.digest
            {
                loaded.loaded_at = Arc::clone(&old.loaded_at);
            } else {
                loaded.loaded_at = Arc::clone(&now);
            }
            if let Some(other) = policies.get(&loaded.name) {
                return Err(SnapshotError(format!(
                    "{}: policy name `{}` is also used by {}",
                    file.display(),
                    loaded.name,
                    other.file.display()
                )));
            }
            policies.insert(Arc::clone(&loaded.name), Arc::new(loaded));
        }
        for stored in &stored.policies {
            let mut loaded = load_stored(stored)?;
            loaded.loaded_at = match previous.and_then(|p| p.policies.get(&loaded.name)) {
                Some(old) if old.digest == loaded.digest => Arc::clone(&old.loaded_at),
                _ => Arc::clone(&now),
            };
            policies.insert(Arc::clone(&loaded.name), Arc::new(loaded));
        }
        for (name, overlay) in overlays {
            let Some(loaded) = policies.get_mut(name) else {
                continue;
            };
            if let Some(changed) = loaded.with_overlay(overlay)? {
                *loaded = Arc::new(changed);
            }
        }
        let keys = KeyIndex::load(keys).map_err(|e| SnapshotError(e.to_string()))?;
        let anonymous = match config.anonymous_policy.as_deref() {
            None => None,
            Some("*") => (policies.len() == 1)
                .then(|| policies.keys().next().cloned())
                .flatten(),
            Some(name) => match policies.get_key_value(name) {
                Some((name, _)) => Some(Arc::clone(name)),
                // No policy at all: not ready (503), nothing is decided; the name is checked
                // once policies appear.
                None if policies.is_empty() => Some(Arc::from(name)),
                None => {
                    return Err(SnapshotError(format!(
                        "anonymous_policy `{name}` is not a loaded policy (loaded: {})",
                        loaded_names(&policies)
                    )));
                }
            },
        };
        let tenant_upstreams = stored
            .tenants
            .iter()
            .filter_map(|t| {
                let url = t.mcp_upstream.as_deref()?;
                Some((Arc::from(t.name.as_str()), Arc::from(url)))
            })
            .collect();
        Ok(Self {
            policies,
            keys,
            anonymous,
            tenant_upstreams,
        })
    }
}

/// Whether `file` is a Rego policy's data document: `NAME-data.json` or `NAME.data.json` next to
/// `NAME.rego`. Every other policy-like file must load as a policy: one that does not (empty, a
/// misspelt `warden` key) fails the load rather than being skipped, since skipping it would
/// silently drop a policy a tenant may be using.
fn is_rego_data(file: &Path) -> bool {
    let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    ["-data.json", ".data.json"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|stem| {
            !stem.is_empty() && file.with_file_name(format!("{stem}.rego")).is_file()
        })
    })
}

/// The loaded policy names, sorted, for error messages.
fn loaded_names(policies: &HashMap<Arc<str>, Arc<LoadedPolicy>>) -> String {
    let mut names: Vec<&str> = policies.keys().map(|n| &**n).collect();
    names.sort_unstable();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// A Rego policy's base data: `NAME-data.json` or `NAME.data.json` next to `NAME.rego`.
fn rego_data(file: &Path, stem: &str) -> Result<Option<serde_json::Value>, SnapshotError> {
    for candidate in [format!("{stem}-data.json"), format!("{stem}.data.json")] {
        let path = file.with_file_name(candidate);
        if path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| SnapshotError(format!("{}: cannot read: {e}", path.display())))?;
            let value = serde_json::from_str(&text)
                .map_err(|e| SnapshotError(format!("{}: invalid JSON: {e}", path.display())))?;
            return Ok(Some(value));
        }
    }
    Ok(None)
}

fn load_one(file: &Path) -> Result<LoadedPolicy, SnapshotError> {
    let is_rego = file.extension().is_some_and(|e| e == "rego");
    if !is_rego {
        let policy = warden::load_policy_file(file).map_err(|e| SnapshotError(e.to_string()))?;
        let info = policy.info.clone();
        return Ok(LoadedPolicy {
            name: info.name,
            version: info.version,
            digest: info.digest,
            loaded_at: Arc::from(""),
            file: file.to_owned(),
            kind: PolicyKind::Warden(Arc::new(policy)),
        });
    }
    let source = std::fs::read_to_string(file)
        .map_err(|e| SnapshotError(format!("{}: cannot read: {e}", file.display())))?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("rego")
        .to_owned();
    let data = rego_data(file, &name)?;
    let file_name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("policy.rego");
    let sources = RegoSources {
        modules: vec![RegoModule::new(file_name, source)],
        data: data.unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new())),
    };
    let (policy, digest) =
        compile_rego(&sources).map_err(|e| SnapshotError(format!("{}: {e}", file.display())))?;
    Ok(LoadedPolicy {
        name: Arc::from(name),
        version: None,
        digest,
        loaded_at: Arc::from(""),
        file: file.to_owned(),
        kind: PolicyKind::Rego(policy, Arc::new(sources)),
    })
}

/// Compiles Rego sources; the digest is `sha256:` over the modules' sources (each after the
/// first with its id and length before it) and the data document, so that a one-module policy
/// keeps the digest of its file and data.
pub(crate) fn compile_rego(
    sources: &RegoSources,
) -> Result<(RegoPolicy, Arc<str>), warden::rego::RegoError> {
    let mut hasher = Sha256::new();
    for (i, module) in sources.modules.iter().enumerate() {
        if i > 0 {
            hasher.update(format!("\0{}\0{}\0", module.name, module.source.len()).as_bytes());
        }
        hasher.update(module.source.as_bytes());
    }
    let empty = sources
        .data
        .as_object()
        .is_some_and(serde_json::Map::is_empty);
    if !empty {
        hasher.update(sources.data.to_string().as_bytes());
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let data = (!empty).then(|| sources.data.clone());
    let (policy, _) =
        RegoPolicy::compile(sources.modules.clone(), data, &[], RegoLimits::default())?;
    Ok((policy, Arc::from(digest)))
}

impl LoadedPolicy {
    /// This policy with `overlay` applied (`None` when the overlay changes nothing). Only a
    /// Rego policy can carry API changes; for a policy that is no longer Rego they are set
    /// aside (logged) until it is again.
    fn with_overlay(
        &self,
        overlay: &crate::overlay::Overlay,
    ) -> Result<Option<LoadedPolicy>, SnapshotError> {
        if overlay.is_empty() {
            return Ok(None);
        }
        let PolicyKind::Rego(_, sources) = &self.kind else {
            tracing::warn!(policy = %self.name, "the policy is no longer Rego: the changes made to it through the API are not applied");
            return Ok(None);
        };
        let mut sources = RegoSources::clone(sources);
        overlay
            .apply(&mut sources)
            .map_err(|e| SnapshotError(format!("policy `{}`: {e}", self.name)))?;
        let (policy, digest) = compile_rego(&sources).map_err(|e| {
            SnapshotError(format!(
                "policy `{}` with the changes made through the API: {e}",
                self.name
            ))
        })?;
        Ok(Some(self.with_rego(policy, digest, sources)))
    }

    /// This policy compiled anew from `sources`.
    pub(crate) fn with_rego(
        &self,
        policy: RegoPolicy,
        digest: Arc<str>,
        sources: RegoSources,
    ) -> LoadedPolicy {
        LoadedPolicy {
            name: Arc::clone(&self.name),
            version: self.version.clone(),
            loaded_at: if digest == self.digest {
                Arc::clone(&self.loaded_at)
            } else {
                rfc3339_now()
            },
            digest,
            file: self.file.clone(),
            kind: PolicyKind::Rego(policy, Arc::new(sources)),
        }
    }
}

/// Compiles a policy kept in the database. Its hash is checked first: a row changed behind
/// Warden's back (not through `warden policy push`) fails the load, and the daemon keeps the
/// policies it has.
fn load_stored(stored: &StoredPolicy) -> Result<LoadedPolicy, SnapshotError> {
    let origin = format!("postgres:{}@v{}", stored.name, stored.version);
    if !stored.intact() {
        return Err(SnapshotError(format!(
            "{origin}: the stored source does not match its SHA-256; refusing it"
        )));
    }
    let (version, digest, kind) = match stored.format {
        PolicyFormat::Warden => {
            let policy = warden::load_policy_str(&origin, &stored.source)
                .map_err(|e| SnapshotError(e.to_string()))?;
            if *policy.info.name != *stored.name {
                return Err(SnapshotError(format!(
                    "{origin}: the policy inside is named `{}`",
                    policy.info.name
                )));
            }
            let info = policy.info.clone();
            (
                info.version,
                info.digest,
                PolicyKind::Warden(Arc::new(policy)),
            )
        }
        PolicyFormat::Rego => {
            let sources = RegoSources {
                modules: vec![RegoModule::new(
                    format!("{}.rego", stored.name),
                    stored.source.clone(),
                )],
                data: serde_json::Value::Object(serde_json::Map::new()),
            };
            let (policy, _) =
                compile_rego(&sources).map_err(|e| SnapshotError(format!("{origin}: {e}")))?;
            (
                None,
                Arc::from(format!("sha256:{}", stored.sha256)),
                PolicyKind::Rego(policy, Arc::new(sources)),
            )
        }
    };
    Ok(LoadedPolicy {
        name: Arc::from(stored.name.as_str()),
        version: version.or_else(|| Some(Arc::from(format!("v{}", stored.version)))),
        digest,
        loaded_at: Arc::from(""),
        file: PathBuf::from(origin),
        kind,
    })
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn rfc3339_now() -> Arc<str> {
    Arc::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The current time as RFC 3339 (UTC, microseconds), as tracing's JSON logs write it.
pub fn rfc3339_micros_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// `shape` with `9` for any digit.
    fn has_shape(text: &str, shape: &str) -> bool {
        text.len() == shape.len()
            && text.bytes().zip(shape.bytes()).all(|(t, s)| {
                if s == b'9' {
                    t.is_ascii_digit()
                } else {
                    t == s
                }
            })
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        let seconds = super::rfc3339_now();
        assert!(has_shape(&seconds, "9999-99-99T99:99:99Z"), "{seconds}");
        let micros = super::rfc3339_micros_now();
        assert!(
            has_shape(&micros, "9999-99-99T99:99:99.999999Z"),
            "{micros}"
        );
        assert!(micros.get(..19).unwrap() >= seconds.get(..19).unwrap());
    }
}
