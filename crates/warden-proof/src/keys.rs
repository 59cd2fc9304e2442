//! Key material behind the [`KeyProvider`] trait, with a software Ed25519 / HMAC implementation.
//!
//! Private keys live in `ed25519_dalek::SigningKey` (zeroized on drop) or `secrecy` boxes, and no
//! type here prints them: `Debug` shows the key id only, and errors never carry key bytes.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use parking_lot::RwLock;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;
/// Minimum length of an HMAC key in bytes.
pub const MIN_MAC_KEY_LEN: usize = 32;

/// A key operation failed. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The PEM text is not a PKCS#8 Ed25519 private key.
    #[error("invalid signing key: not a PKCS#8 PEM Ed25519 private key")]
    InvalidSigningKey,
    /// The MAC key is too short or badly encoded.
    #[error("invalid audit key: {0}")]
    InvalidMacKey(&'static str),
    /// No signing key is configured.
    #[error("no signing key configured")]
    NoSigningKey,
    /// No MAC key is configured.
    #[error("no audit (MAC) key configured")]
    NoMacKey,
    /// The key id is not known (or its key has been retired).
    #[error("unknown key id `{0}`")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The operating system's random source failed.
    #[error("random source unavailable")]
    Random,
    /// Encoding a key failed.
    #[error("cannot encode key")]
    Encode,
}

/// `len` random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|_| KeyError::Random)?;
    Ok(buf)
}

/// An Ed25519 private key with its key id (the RFC 7638 JWK thumbprint of the public key).
pub struct Ed25519Key {
    signing: SigningKey,
    kid: String,
}

impl fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Key")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Ed25519Key {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let seed = Zeroizing::new(random_bytes::<32>()?);
        Ok(Self::from_signing(SigningKey::from_bytes(&seed)))
    }

    /// Parses a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) Ed25519 key, v1 (RFC 5208, the
    /// private key alone, as OpenSSL writes it) or v2 (RFC 5958, with the public key, which must
    /// match).
    pub fn from_pkcs8_pem(pem: &SecretString) -> Result<Self, KeyError> {
        let signing = SigningKey::from_pkcs8_pem(pem.expose_secret().trim())
            .map_err(|_| KeyError::InvalidSigningKey)?;
        Ok(Self::from_signing(signing))
    }

    /// The key as PKCS#8 v1 PEM (RFC 5208: the private key alone; LF line endings), the form
    /// OpenSSL 3 and Python `cryptography` read (neither reads v2, which `ed25519-dalek` would
    /// write with the public key included).
    pub fn to_pkcs8_pem(&self) -> Result<SecretString, KeyError> {
        // `KeypairBytes` zeroizes its secret on drop.
        let pair = KeypairBytes {
            secret_key: self.signing.to_bytes(),
            public_key: None,
        };
        let pem = pair
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| KeyError::Encode)?;
        Ok(SecretString::from(pem.as_str()))
    }

    fn from_signing(signing: SigningKey) -> Self {
        let kid = thumbprint(&signing.verifying_key());
        Self { signing, kid }
    }

    /// The key id: base64url RFC 7638 thumbprint of the public JWK.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK.
    pub fn public_jwk(&self) -> Jwk {
        Jwk::from_verifying(&self.signing.verifying_key(), self.kid.clone())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(message).to_bytes()
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key (RFC 8037 section 2 member order).
fn thumbprint(key: &VerifyingKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
    let json = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes()))
}

/// A public key as a JSON Web Key (RFC 8037: `kty: OKP`, `crv: Ed25519`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `OKP`.
    pub kty: String,
    /// Always `Ed25519`.
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    /// The key id tokens name in their header.
    pub kid: String,
    /// `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// `sig`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    fn from_verifying(key: &VerifyingKey, kid: String) -> Self {
        Self {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(key.as_bytes()),
            kid,
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
        }
    }

    /// The Ed25519 public key, if this JWK is a well-formed one.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        if self.kty != "OKP" || self.crv != "Ed25519" {
            return None;
        }
        if self.alg.as_deref().is_some_and(|a| a != "EdDSA") {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(self.x.as_bytes()).ok()?;
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok()
    }
}

/// A JSON Web Key Set (`{"keys": [...]}`), as served at `/.well-known/jwks.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys, current signing key first.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWKS document.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Verifies an Ed25519 signature with the key named `kid` (strict verification: no malleable
    /// or small-order signatures).
    pub fn verify(&self, kid: &str, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let jwk = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| KeyError::UnknownKey(kid.to_owned()))?;
        let key = jwk
            .verifying_key()
            .ok_or_else(|| KeyError::UnknownKey(kid.to_owned()))?;
        verify_with(&key, message, signature)
    }
}

fn verify_with(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
    let sig = Signature::from_slice(signature).map_err(|_| KeyError::BadSignature)?;
    key.verify_strict(message, &sig)
        .map_err(|_| KeyError::BadSignature)
}

/// An HMAC-SHA256 key (for audit entries). At least 32 bytes.
pub struct MacKey(SecretBox<[u8]>);

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey([redacted])")
    }
}

impl MacKey {
    /// A key from raw bytes (at least [`MIN_MAC_KEY_LEN`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < MIN_MAC_KEY_LEN {
            return Err(KeyError::InvalidMacKey("shorter than 32 bytes"));
        }
        Ok(Self(SecretBox::new(bytes.as_slice().into())))
    }

    /// A key from hex text (surrounding whitespace ignored), as `warden keys` writes it.
    pub fn from_hex(text: &SecretString) -> Result<Self, KeyError> {
        let bytes = hex::decode(text.expose_secret().trim())
            .map_err(|_| KeyError::InvalidMacKey("not hex"))?;
        Self::from_bytes(bytes)
    }

    /// A fresh random 32-byte key.
    pub fn generate() -> Result<Self, KeyError> {
        Self::from_bytes(random_bytes::<32>()?.to_vec())
    }

    /// The key as hex text (for writing a key file).
    pub fn to_hex(&self) -> SecretString {
        SecretString::from(hex::encode(self.0.expose_secret()))
    }

    fn mac(&self) -> Result<Hmac<Sha256>, KeyError> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose_secret())
            .map_err(|_| KeyError::InvalidMacKey("rejected by HMAC"))
    }

    /// HMAC-SHA256 of `message`.
    pub fn tag(&self, message: &[u8]) -> Result<[u8; 32], KeyError> {
        let mut m = self.mac()?;
        m.update(message);
        Ok(m.finalize().into_bytes().into())
    }

    /// Constant-time check of an HMAC-SHA256 tag.
    pub fn check(&self, message: &[u8], tag: &[u8]) -> Result<bool, KeyError> {
        let mut m = self.mac()?;
        m.update(message);
        Ok(m.verify_slice(tag).is_ok())
    }
}

/// A signature with the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySignature {
    /// The signing key's id.
    pub kid: String,
    /// The Ed25519 signature.
    pub signature: [u8; SIGNATURE_LEN],
}

/// Where signing, verification and MAC keys live. The software implementation is
/// [`SoftwareKeyProvider`]; an HSM or KMS backed one implements the same trait.
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// The id of the key [`KeyProvider::sign`] uses now.
    fn signing_kid(&self) -> Result<String, KeyError>;
    /// Signs `message` with the current signing key.
    fn sign(&self, message: &[u8]) -> Result<KeySignature, KeyError>;
    /// Verifies a signature made by one of the published keys.
    fn verify(&self, kid: &str, message: &[u8], signature: &[u8]) -> Result<(), KeyError>;
    /// HMAC-SHA256 of `message` with the audit key.
    fn mac(&self, message: &[u8]) -> Result<[u8; 32], KeyError>;
    /// Constant-time check of a MAC made by [`KeyProvider::mac`].
    fn verify_mac(&self, message: &[u8], tag: &[u8]) -> Result<bool, KeyError>;
    /// The public keys to publish at `now` (unix seconds): the current key and every retired key
    /// whose last token may still be valid.
    fn jwks(&self, now: u64) -> Jwks;
}

struct Retired {
    jwk: Jwk,
    key: VerifyingKey,
    published_until: u64,
}

struct Keys {
    current: Option<Ed25519Key>,
    retired: Vec<Retired>,
}

/// Keys held in process memory: an optional Ed25519 signing key (rotatable) and an optional HMAC
/// key. Cheap to share behind an `Arc`; rotation takes `&self`.
pub struct SoftwareKeyProvider {
    keys: RwLock<Keys>,
    mac: Option<MacKey>,
}

impl fmt::Debug for SoftwareKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys.read();
        f.debug_struct("SoftwareKeyProvider")
            .field("signing_kid", &keys.current.as_ref().map(Ed25519Key::kid))
            .field(
                "retired",
                &keys
                    .retired
                    .iter()
                    .map(|r| r.jwk.kid.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("mac", &self.mac.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl SoftwareKeyProvider {
    /// A provider with a signing key and no MAC key.
    pub fn new(signing: Ed25519Key) -> Self {
        Self {
            keys: RwLock::new(Keys {
                current: Some(signing),
                retired: Vec::new(),
            }),
            mac: None,
        }
    }

    /// A provider with only a MAC key (for the audit log).
    pub fn mac_only(mac: MacKey) -> Self {
        Self {
            keys: RwLock::new(Keys {
                current: None,
                retired: Vec::new(),
            }),
            mac: Some(mac),
        }
    }

    /// Adds (or replaces) the MAC key.
    #[must_use]
    pub fn with_mac_key(mut self, mac: MacKey) -> Self {
        self.mac = Some(mac);
        self
    }

    /// Makes `new` the signing key. The previous key's public half stays published (and keeps
    /// verifying) until `published_until` (unix seconds): pass the expiry of the last token it
    /// signed, i.e. `now + token ttl + leeway` ([`crate::TokenIssuer::rotate`] does this).
    pub fn rotate(&self, new: Ed25519Key, published_until: u64) {
        let mut keys = self.keys.write();
        // A key that becomes current again is no longer "retired": drop its old entry so the
        // JWKS never lists one kid twice.
        let new_kid = new.kid().to_owned();
        keys.retired.retain(|r| r.jwk.kid != new_kid);
        if let Some(old) = keys.current.replace(new) {
            if old.kid() == new_kid {
                return;
            }
            let jwk = old.public_jwk();
            let key = old.signing.verifying_key();
            // Rotating away from a key twice keeps only its latest window.
            keys.retired.retain(|r| r.jwk.kid != jwk.kid);
            keys.retired.push(Retired {
                jwk,
                key,
                published_until,
            });
        }
    }

    /// Forgets retired keys whose publication window has ended.
    pub fn prune(&self, now: u64) {
        self.keys
            .write()
            .retired
            .retain(|r| r.published_until > now);
    }
}

impl KeyProvider for SoftwareKeyProvider {
    fn signing_kid(&self) -> Result<String, KeyError> {
        let keys = self.keys.read();
        Ok(keys
            .current
            .as_ref()
            .ok_or(KeyError::NoSigningKey)?
            .kid
            .clone())
    }

    fn sign(&self, message: &[u8]) -> Result<KeySignature, KeyError> {
        let keys = self.keys.read();
        let key = keys.current.as_ref().ok_or(KeyError::NoSigningKey)?;
        Ok(KeySignature {
            kid: key.kid.clone(),
            signature: key.sign(message),
        })
    }

    fn verify(&self, kid: &str, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let keys = self.keys.read();
        if let Some(cur) = keys.current.as_ref().filter(|k| k.kid == kid) {
            return verify_with(&cur.signing.verifying_key(), message, signature);
        }
        let retired = keys
            .retired
            .iter()
            .find(|r| r.jwk.kid == kid)
            .ok_or_else(|| KeyError::UnknownKey(kid.to_owned()))?;
        verify_with(&retired.key, message, signature)
    }

    fn mac(&self, message: &[u8]) -> Result<[u8; 32], KeyError> {
        self.mac.as_ref().ok_or(KeyError::NoMacKey)?.tag(message)
    }

    fn verify_mac(&self, message: &[u8], tag: &[u8]) -> Result<bool, KeyError> {
        self.mac
            .as_ref()
            .ok_or(KeyError::NoMacKey)?
            .check(message, tag)
    }

    fn jwks(&self, now: u64) -> Jwks {
        let keys = self.keys.read();
        let mut out: Vec<Jwk> = keys.current.iter().map(Ed25519Key::public_jwk).collect();
        out.extend(
            keys.retired
                .iter()
                .filter(|r| r.published_until > now)
                .map(|r| r.jwk.clone()),
        );
        Jwks { keys: out }
    }
}

impl<T: KeyProvider + ?Sized> KeyProvider for Arc<T> {
    fn signing_kid(&self) -> Result<String, KeyError> {
        (**self).signing_kid()
    }
    fn sign(&self, message: &[u8]) -> Result<KeySignature, KeyError> {
        (**self).sign(message)
    }
    fn verify(&self, kid: &str, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        (**self).verify(kid, message, signature)
    }
    fn mac(&self, message: &[u8]) -> Result<[u8; 32], KeyError> {
        (**self).mac(message)
    }
    fn verify_mac(&self, message: &[u8], tag: &[u8]) -> Result<bool, KeyError> {
        (**self).verify_mac(message, tag)
    }
    fn jwks(&self, now: u64) -> Jwks {
        (**self).jwks(now)
    }
}
