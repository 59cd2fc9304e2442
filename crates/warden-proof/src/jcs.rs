//! RFC 8785 (JSON Canonicalization Scheme) and the hashes built on it.
//!
//! Canonicalisation is `serde_json_canonicalizer`'s: it passes every reference vector of the RFC's
//! reference implementation and all 30,000 ECMAScript number serialisations in
//! `tests/data/jcs-rfc8785` (see `tests/jcs.rs`), so it is used as it is. Integers beyond 2^53 are
//! serialised as the nearest double, as RFC 8785 (section 3.2.2.3) requires, so two integers
//! beyond 2^53 can share one canonical form: [`check_exact_numbers`] refuses them where a hash
//! binds arguments (decision tokens).

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

/// Largest integer magnitude every JSON implementation reads exactly: 2^53 - 1
/// (`Number.MAX_SAFE_INTEGER`, the bound Python's `rfc8785` enforces).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A number in arguments beyond +/-(2^53 - 1): RFC 8785 writes it as the nearest double, so
/// another number would hash the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "argument `{path}` holds a number beyond +/-(2^53 - 1) (9007199254740991); RFC 8785 writes \
     it as the nearest double, so another number would hash the same and a token could not bind \
     it: send it as a string"
)]
pub struct UnsafeNumber {
    /// JSON Pointer (RFC 6901) to the number.
    pub path: String,
}

/// Checks that every number in `value` is canonicalised exactly: integers within
/// +/-[`MAX_SAFE_INTEGER`] and no other number of a larger magnitude (a float beyond 2^53 is an
/// integer whose decimal text may have named a different one).
pub fn check_exact_numbers(value: &Value) -> Result<(), UnsafeNumber> {
    fn walk(value: &Value, path: &mut String) -> Result<(), UnsafeNumber> {
        match value {
            Value::Number(n) => {
                let exact = if let Some(u) = n.as_u64() {
                    u <= MAX_SAFE_INTEGER
                } else if let Some(i) = n.as_i64() {
                    i.unsigned_abs() <= MAX_SAFE_INTEGER
                } else {
                    n.as_f64()
                        .is_some_and(|f| f.abs() <= MAX_SAFE_INTEGER as f64)
                };
                if exact {
                    Ok(())
                } else {
                    Err(UnsafeNumber {
                        path: if path.is_empty() {
                            "/".to_owned()
                        } else {
                            path.clone()
                        },
                    })
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&i.to_string());
                    walk(item, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::Object(map) => {
                for (k, v) in map {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    walk(v, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(value, &mut String::new())
}
