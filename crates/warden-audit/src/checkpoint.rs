//! Checkpoints: a signed or MACed statement "this log had entry `seq` with hash `head` at
//! `time`", written by the writer into the audit directory and published by the daemon, so that
//! deleting the newest entries (or files, or the whole log) is detected by comparing the log
//! with a checkpoint kept elsewhere, and refused by the writer on restart.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use warden_proof::{Jwks, KeyProvider, canonicalize_serialize};

use crate::AuditError;
use crate::entry::{Anchor, is_hash, is_lower_hex};

/// The checkpoint file in an audit directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";

/// Prefix of the bytes a checkpoint's MAC and signature cover, so that neither can be taken for
/// the MAC of an audit entry or the signature of a decision token made with the same key.
const CONTEXT: &[u8] = b"warden audit checkpoint v1\n";

/// Largest checkpoint document accepted (a real one is about 400 bytes).
const MAX_CHECKPOINT_BYTES: u64 = 64 * 1024;

/// A checkpoint: the log's head at a point in time, MACed with the audit key and/or signed with
/// the token signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version (1).
    pub v: u32,
    /// Sequence number of the last entry (0: an empty log).
    pub seq: u64,
    /// That entry's `hash` (the genesis hash for an empty log).
    pub head: String,
    /// When the checkpoint was made, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Lowercase hex HMAC-SHA256 with the audit key of the signed bytes, when the log has a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Key id of the Ed25519 key that made `sig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// base64url Ed25519 signature of the signed bytes, when a signing key is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

/// The signed part, in RFC 8785 member order.
#[derive(Serialize)]
struct Signed<'a> {
    head: &'a str,
    seq: u64,
    time: &'a str,
    v: u32,
}

impl Checkpoint {
    /// A checkpoint of `head` at `time_ms`, MACed with `mac` and signed with `signer` when given.
    pub fn new(
        head: &Anchor,
        time_ms: u64,
        mac: Option<&dyn KeyProvider>,
        signer: Option<&dyn KeyProvider>,
    ) -> Result<Self, AuditError> {
        let mut cp = Self {
            v: 1,
            seq: head.seq,
            head: head.hash.clone(),
            time: crate::entry::rfc3339_ms(time_ms),
            mac: None,
            kid: None,
            sig: None,
        };
        let bytes = cp.signed_bytes()?;
        if let Some(k) = mac {
            cp.mac = Some(hex::encode(
                k.mac(&bytes).map_err(|e| AuditError::Key(e.to_string()))?,
            ));
        }
        if let Some(k) = signer {
            let sig = k.sign(&bytes).map_err(|e| AuditError::Key(e.to_string()))?;
            cp.kid = Some(sig.kid);
            cp.sig = Some(URL_SAFE_NO_PAD.encode(sig.signature));
        }
        Ok(cp)
    }

    /// The bytes the MAC and the signature cover: a context string, then the RFC 8785 form of
    /// `{head, seq, time, v}`.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, AuditError> {
        let body = canonicalize_serialize(&Signed {
            head: &self.head,
            seq: self.seq,
            time: &self.time,
            v: self.v,
        })
        .map_err(|e| AuditError::Encode(e.to_string()))?;
        let mut out = CONTEXT.to_vec();
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The anchor the checkpoint records.
    pub fn anchor(&self) -> Anchor {
        Anchor {
            seq: self.seq,
            hash: self.head.clone(),
        }
    }

    /// Parses a checkpoint document and checks its form (version, hash and MAC spelling).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let cp: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("not a checkpoint: {e}"))?;
        if cp.v != 1 {
            return Err(format!("unsupported checkpoint version {}", cp.v));
        }
        if !is_hash(&cp.head) {
            return Err("`head` is not `sha256:` and 64 lowercase hex digits".into());
        }
        if cp.mac.as_deref().is_some_and(|m| !is_lower_hex(m, 64)) {
            return Err("`mac` is not 64 lowercase hex digits".into());
        }
        if cp.kid.is_some() != cp.sig.is_some() {
            return Err("`kid` and `sig` must come together".into());
        }
        Ok(cp)
    }

    /// The document as written (one line of JSON).
    pub fn to_json(&self) -> Result<Vec<u8>, AuditError> {
        let mut out = serde_json::to_vec(self).map_err(|e| AuditError::Encode(e.to_string()))?;
        out.push(b'\n');
        Ok(out)
    }

    /// Checks the MAC with the audit key; a checkpoint without one fails (a keyed log's
    /// checkpoints are always MACed, so a missing MAC is a forged or downgraded checkpoint).
    pub fn verify_mac(&self, key: &dyn KeyProvider) -> Result<(), String> {
        let mac = self
            .mac
            .as_deref()
            .ok_or("the checkpoint has no `mac` (the log has an audit key)")?;
        let tag = hex::decode(mac).map_err(|_| "`mac` is not hex".to_owned())?;
        let bytes = self.signed_bytes().map_err(|e| e.to_string())?;
        match key.verify_mac(&bytes, &tag) {
            Ok(true) => Ok(()),
            Ok(false) => Err("the checkpoint's `mac` does not verify with the audit key".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Checks the Ed25519 signature against a key set (the daemon's JWKS).
    pub fn verify_signature(&self, jwks: &Jwks) -> Result<(), String> {
        let (Some(kid), Some(sig)) = (self.kid.as_deref(), self.sig.as_deref()) else {
            return Err("the checkpoint is not signed (no `kid`/`sig`)".into());
        };
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| "`sig` is not base64url".to_owned())?;
        let bytes = self.signed_bytes().map_err(|e| e.to_string())?;
        jwks.verify(kid, &bytes, &sig)
            .map_err(|e| format!("the checkpoint's signature does not verify: {e}"))
    }

    /// Reads the checkpoint file of `dir`; `None` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Self>, String> {
        let path = dir.join(CHECKPOINT_FILE);
        let bytes = match File::open(&path) {
            Ok(f) => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(f, MAX_CHECKPOINT_BYTES),
                    &mut bytes,
                )
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
        };
        Self::from_json(&bytes)
            .map(Some)
            .map_err(|e| format!("`{}`: {e}", path.display()))
    }

    /// Writes the checkpoint file of `dir` atomically (a synced temporary file, mode 0600,
    /// renamed over the old one, then the directory synced).
    pub fn write(&self, dir: &Path) -> Result<(), AuditError> {
        let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(AuditError::io)?;
        f.write_all(&self.to_json()?).map_err(AuditError::io)?;
        f.sync_all().map_err(AuditError::io)?;
        drop(f);
        std::fs::rename(&tmp, dir.join(CHECKPOINT_FILE)).map_err(AuditError::io)?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(AuditError::io)
    }
}
