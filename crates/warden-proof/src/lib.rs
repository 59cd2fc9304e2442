//! Proof for Warden decisions: RFC 8785 canonicalisation and argument hashes, key material behind
//! a [`KeyProvider`], signed decision tokens (EdDSA JWTs bound to tool and arguments), JWKS with
//! rotation. (Single use of a token is recorded by the caller, in a nonce store.)
//!
//! Pure: no files, sockets or clocks. Callers pass `now` (unix seconds) and key bytes in; the only
//! system call is the operating system's random source (key generation and `jti`).

#![forbid(unsafe_code)]

mod jcs;
mod jwt;
mod keys;

pub use jcs::{
    CanonicalError, MAX_SAFE_INTEGER, UnsafeNumber, args_hash, canonicalize,
    canonicalize_serialize, check_exact_numbers, sha256_prefixed,
};
pub use jwt::{
    Claims, DEFAULT_LEEWAY_SECS, DEFAULT_TTL_SECS, Grant, MAX_TOKEN_LEN, MintError, TokenIssuer,
    TokenVerifier, VerifyError, audience, verify,
};
pub use keys::{
    Ed25519Key, Jwk, Jwks, KeyError, KeyProvider, KeySignature, MIN_MAC_KEY_LEN, MacKey,
    SIGNATURE_LEN, SoftwareKeyProvider,
};
pub use secrecy::{ExposeSecret, SecretString};
