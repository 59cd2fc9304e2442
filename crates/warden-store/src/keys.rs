//! API keys: only their SHA-256 hashes are stored, each with its tenant and policy.
//!
//! A key reads `wdn_` + 64 hex digits (256 random bits). Its id is the first 12 hex digits of
//! its hash: verification looks the id up, then compares the whole hash in constant time
//! ([`subtle`]), so neither a lookup nor a comparison reveals how much of a guess was right.
//!
//! [`FileKeyStore`] keeps the records in a JSON file (`{"keys": [{"id", "tenant", "policy",
//! "sha256", "created", "role"}]}`, `role` only for `admin` keys), written atomically (temporary file + rename) with mode 0600; a change
//! is a read-modify-write under an exclusive lock of a sidecar file (`FILE.lock`), so two
//! `warden keys create` at once both land.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warden_core::state::{KeyStore, StoreCall, StoreError};

/// Prefix of every key.
pub const KEY_PREFIX: &str = "wdn_";

pub use warden_core::state::{KeyRecord, KeyRole};

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<KeyRecord>,
}

/// A key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("{path}: {message}")]
    Io {
        /// The key file.
        path: String,
        /// The operating system's reason.
        message: String,
    },
    /// The file is not a valid key file.
    #[error("{path}: invalid key file: {message}")]
    Invalid {
        /// The key file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The random source failed.
    #[error("cannot generate a key: {0}")]
    Random(String),
    /// The key store failed.
    #[error("{0}")]
    Store(String),
}

impl From<StoreError> for KeyError {
    fn from(e: StoreError) -> Self {
        Self::Store(e.message)
    }
}

impl From<KeyError> for StoreError {
    fn from(e: KeyError) -> Self {
        StoreError::new(e.to_string())
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn read_file(path: &Path) -> Result<KeyFile, KeyError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| KeyError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
        Err(e) => Err(io_error(path, e)),
    }
}

fn write_file(path: &Path, file: &KeyFile) -> Result<(), KeyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| io_error(path, e))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut bytes = serde_json::to_vec_pretty(file).map_err(|e| io_error(path, e))?;
    bytes.push(b'\n');
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_error(&tmp, e))?;
    // `mode` applies only to a file it creates: a temporary file left behind by a crash keeps
    // its own mode, so set it.
    {
        use std::os::unix::fs::PermissionsExt as _;
        out.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error(&tmp, e))?;
    }
    out.write_all(&bytes).map_err(|e| io_error(&tmp, e))?;
    out.sync_all().map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}

/// The index key of a hash: its first 6 bytes (the record's 12-hex-digit `id`).
fn id_of(digest: &[u8; 32]) -> [u8; 6] {
    let [a, b, c, d, e, f, ..] = *digest;
    [a, b, c, d, e, f]
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// API key records in a JSON file (see the module docs); every handle on the same file sees the
/// others' changes.
#[derive(Debug, Clone)]
pub struct FileKeyStore {
    path: std::path::PathBuf,
}

impl FileKeyStore {
    /// The store in the file at `path` (created on the first insert).
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `change` on the file's records under the exclusive lock of `FILE.lock`, writing them
    /// back when it answers `true` in its first element.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Vec<KeyRecord>) -> (bool, T),
    ) -> Result<T, KeyError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        if let Some(parent) = self.path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| io_error(&self.path, e))?;
        }
        let lock_path = self.path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, e))?;
        // Held until `lock` is dropped (closing the file releases it).
        lock.lock().map_err(|e| io_error(&lock_path, e))?;
        let mut file = read_file(&self.path)?;
        let (changed, answer) = change(&mut file.keys);
        if changed {
            write_file(&self.path, &file)?;
        }
        Ok(answer)
    }
}

impl KeyStore for FileKeyStore {
    fn list(&self) -> StoreCall<'_, Vec<KeyRecord>> {
        StoreCall::ready(read_file(&self.path).map(|f| f.keys).map_err(Into::into))
    }

    fn insert<'a>(&'a self, record: &'a KeyRecord) -> StoreCall<'a, bool> {
        StoreCall::ready(
            self.update(|keys| {
                if keys.iter().any(|k| k.id == record.id) {
                    return (false, false);
                }
                keys.push(record.clone());
                (true, true)
            })
            .map_err(Into::into),
        )
    }

    fn revoke<'a>(&'a self, id: &'a str) -> StoreCall<'a, bool> {
        StoreCall::ready(
            self.update(|keys| {
                let before = keys.len();
                keys.retain(|k| k.id != id);
                let removed = keys.len() != before;
                (removed, removed)
            })
            .map_err(Into::into),
        )
    }
}

/// Creates a key for `tenant` (decided by `policy`, or the policy named like the tenant), stores
/// its record in `store` and returns the key (shown once) and its record. Waits for the store on
/// this thread (a command-line call).
pub fn create_key(
    store: &dyn KeyStore,
    tenant: &str,
    policy: Option<&str>,
) -> Result<(String, KeyRecord), KeyError> {
    create_key_with_role(store, tenant, policy, KeyRole::Agent)
}

/// [`create_key`] for a key with `role` (an `admin` key also answers approvals).
pub fn create_key_with_role(
    store: &dyn KeyStore,
    tenant: &str,
    policy: Option<&str>,
    role: KeyRole,
) -> Result<(String, KeyRecord), KeyError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = format!("{KEY_PREFIX}{}", hex::encode(secret));
    let digest = hex::encode(hash(&key));
    let record = KeyRecord {
        id: digest.get(..12).unwrap_or_default().to_owned(),
        tenant: tenant.to_owned(),
        policy: policy.map(str::to_owned),
        sha256: digest,
        created: now_secs(),
        role,
    };
    if !store.insert(&record).wait()? {
        // 48 random bits of id colliding: not a key to hand out twice.
        return Err(KeyError::Random(
            "a key with the same id exists; try again".to_owned(),
        ));
    }
    Ok((key, record))
}

/// Keys indexed for verification, by the first 6 bytes of their hash (the id).
#[derive(Debug, Default, Clone)]
pub struct KeyIndex {
    by_id: HashMap<[u8; 6], VerifiedKey>,
}

/// A stored key as verification returns it: the record, and its tenant and policy names as
/// shared strings, built once at load so that a request keeping them allocates nothing.
#[derive(Debug, Clone)]
pub struct VerifiedKey {
    /// The stored record.
    pub record: KeyRecord,
    /// `record.tenant`.
    pub tenant: Arc<str>,
    /// `record.policy_name()`.
    pub policy: Arc<str>,
    /// `record.id`.
    pub id: Arc<str>,
    digest: [u8; 32],
}

impl KeyIndex {
    /// Indexes every record of `store` (waiting for it on this thread).
    pub fn load(store: &dyn KeyStore) -> Result<Self, KeyError> {
        Self::from_records(store.list().wait()?).map_err(KeyError::Store)
    }

    /// Indexes records; an error names a record whose hash is not 64 hex digits.
    pub fn from_records(records: Vec<KeyRecord>) -> Result<Self, String> {
        let mut by_id = HashMap::new();
        for record in records {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&record.sha256, &mut digest)
                .map_err(|_| format!("key `{}`: `sha256` is not 64 hex digits", record.id))?;
            let key = VerifiedKey {
                tenant: Arc::from(record.tenant.as_str()),
                policy: Arc::from(record.policy_name()),
                id: Arc::from(record.id.as_str()),
                record,
                digest,
            };
            by_id.insert(id_of(&digest), key);
        }
        Ok(Self { by_id })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The stored key whose id is `id` (12 hex digits), if it is still there: a session that
    /// began with a key (the console's) ends once the key is revoked.
    pub fn get(&self, id: &str) -> Option<&VerifiedKey> {
        let mut prefix = [0u8; 6];
        hex::decode_to_slice(id, &mut prefix).ok()?;
        self.by_id.get(&prefix).filter(|key| &*key.id == id)
    }

    /// The stored key matching a presented key, when it is valid.
    pub fn verify(&self, presented: &str) -> Option<&VerifiedKey> {
        let digest = hash(presented);
        let key = self.by_id.get(&id_of(&digest))?;
        bool::from(key.digest.ct_eq(&digest)).then_some(key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn create_verify_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let store = FileKeyStore::new(&path);
        let (key, record) = create_key(&store, "acme", Some("support-agent")).unwrap();
        assert!(key.starts_with(KEY_PREFIX));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&key), "the key itself is never stored");
        assert!(text.contains(&record.sha256));
        let index = KeyIndex::load(&store).unwrap();
        assert_eq!(
            index.verify(&key).map(|k| k.record.tenant.as_str()),
            Some("acme")
        );
        assert_eq!(
            index.verify(&key).map(|k| k.record.policy_name()),
            Some("support-agent")
        );
        assert!(index.verify("wdn_0000").is_none());
        assert!(index.verify(&key[..key.len() - 1]).is_none());
        assert!(store.revoke(&record.id).wait().unwrap());
        assert!(!store.revoke(&record.id).wait().unwrap());
        assert!(KeyIndex::load(&store).unwrap().verify(&key).is_none());
    }

    #[test]
    fn a_role_is_stored_with_the_key_and_agent_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let store = FileKeyStore::new(&path);
        let (agent, _) = create_key(&store, "acme", None).unwrap();
        let (admin, _) = create_key_with_role(&store, "ops", None, KeyRole::Admin).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("\"role\"").count(), 1, "{text}");
        let index = KeyIndex::load(&store).unwrap();
        assert_eq!(index.verify(&agent).unwrap().record.role, KeyRole::Agent);
        assert_eq!(index.verify(&admin).unwrap().record.role, KeyRole::Admin);
    }
}
