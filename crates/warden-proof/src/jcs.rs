//! RFC 8785 (JSON Canonicalization Scheme) and the hashes built on it.
//!
//! Canonicalisation is `serde_json_canonicalizer`'s: it passes every reference vector of the RFC's
//! reference implementation and all 30,000 ECMAScript number serialisations in
//! `tests/data/jcs-rfc8785` (see `tests/jcs.rs`), so it is used as it is. Integers beyond 2^53 are
//! serialised as the nearest double, as RFC 8785 (section 3.2.2.3) requires.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A value could not be canonicalised (a non-finite number, or a type JSON cannot express).
#[derive(Debug, thiserror::Error)]
#[error("cannot canonicalise value: {message}")]
pub struct CanonicalError {
    message: String,
}

/// The RFC 8785 canonical form of a JSON value, as UTF-8 bytes.
pub fn canonicalize(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    canonicalize_serialize(value)
}

/// The RFC 8785 canonical form of anything that serialises to JSON.
pub fn canonicalize_serialize<T: Serialize>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    serde_json_canonicalizer::to_vec(value).map_err(|e| CanonicalError {
        message: e.to_string(),
    })
}

/// `sha256:` + lowercase hex SHA-256 of `bytes`.
pub fn sha256_prefixed(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The argument hash a token binds: `sha256:` + hex SHA-256 of the RFC 8785 canonical form of
/// `args`. Two JSON texts that differ only in key order, whitespace or number spelling hash the same.
pub fn args_hash(args: &Value) -> Result<String, CanonicalError> {
    Ok(sha256_prefixed(&canonicalize(args)?))
}
