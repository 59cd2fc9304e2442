//! Tool pinning: the first definition seen of each tool (name, description, input schema) is
//! pinned per upstream; a later, different definition is held back until a human approves it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A pin store failed (I/O or a corrupt file). Callers fail closed.
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

/// Pins, per upstream and tool. Implementations must make `observe` atomic per tool.
pub trait PinStore: Send + Sync {
    /// Compares `hash` with the pin of `tool` on `upstream`, pinning it when new and
    /// recording it as pending when it differs.
    fn observe(&self, upstream: &str, tool: &str, hash: &str) -> Result<PinStatus, PinError>;
    /// Whether calls to `tool` are held back (a changed definition is pending approval).
    fn is_held(&self, upstream: &str, tool: &str) -> Result<bool, PinError>;
    /// Approves the pending definition of `tool`: it becomes the pin. Returns false when
    /// nothing was pending.
    fn approve(&self, upstream: &str, tool: &str) -> Result<bool, PinError>;
    /// Every pin, by upstream then tool.
    fn list(&self) -> Result<Pins, PinError>;
}

/// Pins by upstream, then tool.
pub type Pins = BTreeMap<String, BTreeMap<String, Pin>>;

/// `sha256:` + hex SHA-256 of the RFC 8785 canonical form of `{name, description, inputSchema}`.
pub fn definition_hash(tool: &Value) -> String {
    let subset = json!({
        "name": tool.get("name").cloned().unwrap_or(Value::Null),
        "description": tool.get("description").cloned().unwrap_or(Value::Null),
        "inputSchema": tool.get("inputSchema").cloned().unwrap_or(Value::Null),
    });
    let canonical = serde_json_canonicalizer::to_vec(&subset).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&canonical)))
}

fn observe_in(pins: &mut Pins, upstream: &str, tool: &str, hash: &str) -> (PinStatus, bool) {
    let tools = pins.entry(upstream.to_owned()).or_default();
    match tools.get_mut(tool) {
        None => {
            tools.insert(
                tool.to_owned(),
                Pin {
                    hash: hash.to_owned(),
                    pending: None,
                },
            );
            (PinStatus::New, true)
        }
        Some(pin) if pin.hash == hash => {
            // The definition went back to the approved one: nothing is pending any more.
            let changed = pin.pending.take().is_some();
            (PinStatus::Same, changed)
        }
        Some(pin) => {
            let first = pin.pending.as_deref() != Some(hash);
            pin.pending = Some(hash.to_owned());
            (PinStatus::Changed { first }, first)
        }
    }
}

fn held_in(pins: &Pins, upstream: &str, tool: &str) -> bool {
    pins.get(upstream)
        .and_then(|tools| tools.get(tool))
        .is_some_and(|pin| pin.pending.is_some())
}

fn approve_in(pins: &mut Pins, upstream: &str, tool: &str) -> bool {
    let Some(pin) = pins.get_mut(upstream).and_then(|tools| tools.get_mut(tool)) else {
        return false;
    };
    match pin.pending.take() {
        Some(hash) => {
            pin.hash = hash;
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
    fn observe(&self, upstream: &str, tool: &str, hash: &str) -> Result<PinStatus, PinError> {
        Ok(observe_in(&mut self.pins.lock(), upstream, tool, hash).0)
    }

    fn is_held(&self, upstream: &str, tool: &str) -> Result<bool, PinError> {
        Ok(held_in(&self.pins.lock(), upstream, tool))
    }

    fn approve(&self, upstream: &str, tool: &str) -> Result<bool, PinError> {
        Ok(approve_in(&mut self.pins.lock(), upstream, tool))
    }

    fn list(&self) -> Result<Pins, PinError> {
        Ok(self.pins.lock().clone())
    }
}

/// Pins in a JSON file shared between the proxy and `warden mcp approve`: the file is re-read
/// when its modification time changes and written atomically (temporary file + rename).
#[derive(Debug)]
pub struct FilePinStore {
    path: PathBuf,
    cache: Mutex<(Option<FileVersion>, Pins)>,
}

/// What identifies one written version of the pin file. The modification time alone is not
/// enough: two writes within one filesystem timestamp tick (milliseconds on ext4) share it, so
/// the file's inode (each write is a rename of a new file), length and change time count too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
    #[cfg(unix)]
    changed_ns: i64,
}

impl FilePinStore {
    /// Opens (or, on first write, creates) the pin file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, PinError> {
        let store = Self {
            path: path.as_ref().to_owned(),
            cache: Mutex::new((None, Pins::new())),
        };
        store.with(|_| ((), false))?;
        Ok(store)
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> PinError {
        PinError {
            message: format!("cannot {what} `{}`: {e}", self.path.display()),
        }
    }

    fn modified(&self) -> Option<FileVersion> {
        let meta = std::fs::metadata(&self.path).ok()?;
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Some(FileVersion {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            inode: meta.ino(),
            #[cfg(unix)]
            changed_ns: meta
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec()),
        })
    }

    /// Runs `f` over fresh pins; writes the file when `f` says it changed something.
    fn with<T>(&self, f: impl FnOnce(&mut Pins) -> (T, bool)) -> Result<T, PinError> {
        let mut cache = self.cache.lock();
        let modified = self.modified();
        if modified != cache.0 || modified.is_none() {
            let pins = match std::fs::read(&self.path) {
                Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Pins::new(),
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.fail("parse", e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Pins::new(),
                Err(e) => return Err(self.fail("read", e)),
            };
            *cache = (modified, pins);
        }
        let (out, changed) = f(&mut cache.1);
        if changed {
            let bytes = serde_json::to_vec_pretty(&cache.1).map_err(|e| self.fail("encode", e))?;
            let mut tmp = self.path.clone().into_os_string();
            tmp.push(format!(".tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes).map_err(|e| self.fail("write", e))?;
            std::fs::rename(&tmp, &self.path).map_err(|e| self.fail("replace", e))?;
            cache.0 = self.modified();
        }
        Ok(out)
    }
}

impl PinStore for FilePinStore {
    fn observe(&self, upstream: &str, tool: &str, hash: &str) -> Result<PinStatus, PinError> {
        self.with(|pins| observe_in(pins, upstream, tool, hash))
    }

    fn is_held(&self, upstream: &str, tool: &str) -> Result<bool, PinError> {
        self.with(|pins| (held_in(pins, upstream, tool), false))
    }

    fn approve(&self, upstream: &str, tool: &str) -> Result<bool, PinError> {
        self.with(|pins| {
            let approved = approve_in(pins, upstream, tool);
            (approved, approved)
        })
    }

    fn list(&self) -> Result<Pins, PinError> {
        self.with(|pins| (pins.clone(), false))
    }
}
