//! Signed decision tokens: compact JWS (RFC 7515) JWTs with `alg: EdDSA` (RFC 8037).
//!
//! Hand-rolled over `ed25519-dalek` rather than `jsonwebtoken`: one algorithm, a fixed header and
//! strict parsing (exactly three base64url parts without padding, no unknown header members, so
//! no `crit`, `jku` or `x5u` to honour) fit in a page, and `jsonwebtoken`'s EdDSA support would add
//! RSA and NIST-curve code to the build. Independent libraries (PyJWT, `jose`) verify these
//! tokens in the interoperability tests.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jcs::{CanonicalError, UnsafeNumber, args_hash, check_exact_numbers};
use crate::keys::{Ed25519Key, Jwks, KeyError, KeyProvider, SoftwareKeyProvider};

/// Default token lifetime in seconds.
pub const DEFAULT_TTL_SECS: u64 = 30;
/// Default clock-skew allowance in seconds when verifying `exp` and `iat`.
pub const DEFAULT_LEEWAY_SECS: u64 = 5;
/// Longest token, in bytes: the verifier rejects longer ones and the issuer refuses to mint them
/// ([`MintError::TooLong`]), so every token Warden mints, Warden verifies.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Length of a `jti`: 16 random bytes in base64url.
const JTI_LEN: usize = 22;

/// The claims of a decision token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (the Warden deployment).
    pub iss: String,
    /// Audience: the tenant and policy the token was minted for ([`audience`]); the daemon's
    /// verifier accepts a token only for the same tenant and policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The principal the decision was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The tool the call is allowed to.
    pub tool: String,
    /// `sha256:` + hex SHA-256 of the RFC 8785 form of the allowed arguments.
    pub args_hash: String,
    /// Digest of the policy that allowed the call.
    pub policy: String,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Expires at (unix seconds); the token is invalid from this second on.
    pub exp: u64,
    /// Unique token id: 128 random bits, base64url.
    pub jti: String,
}

/// What one allowed call binds into a token.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// The principal, if the request named one.
    pub principal: Option<&'a str>,
    /// The session, if the request named one.
    pub session: Option<&'a str>,
    /// The tool.
    pub tool: &'a str,
    /// The arguments (hashed, never stored).
    pub args: &'a Value,
    /// The deciding policy's digest.
    pub policy_digest: &'a str,
}

/// The audience (`aud`) of a token minted for `tenant` deciding by `policy`:
/// `tenant/policy`, each part with `%` and `/` percent-encoded so that no two pairs share one.
pub fn audience(tenant: &str, policy: &str) -> String {
    let enc = |s: &str| s.replace('%', "%25").replace('/', "%2F");
    format!("{}/{}", enc(tenant), enc(policy))
}

/// Minting failed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The arguments cannot be canonicalised.
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    /// The arguments hold a number a hash cannot bind exactly.
    #[error(transparent)]
    UnsafeNumber(#[from] UnsafeNumber),
    /// The token would be longer than [`MAX_TOKEN_LEN`] (long identifiers), so no verifier
    /// would accept it.
    #[error(
        "the decision token would be {len} bytes, over the {max}-byte limit tokens are verified with (shorten the session, principal or tool)"
    )]
    TooLong {
        /// The token's length.
        len: usize,
        /// [`MAX_TOKEN_LEN`].
        max: usize,
    },
    /// The key provider failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The claims cannot be serialised.
    #[error("cannot serialise claims")]
    Serialize,
}

/// Why a token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a compact JWS with a valid header and JSON claims.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header asks for something other than `alg: EdDSA`, `typ: JWT`.
    #[error("unsupported token header: {0}")]
    UnsupportedHeader(&'static str),
    /// The header's `kid` is not in the key set.
    #[error("unknown key id `{0}`")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// `iat` lies in the future.
    #[error("token issued in the future (iat {iat}, now {now})")]
    NotYetValid {
        /// The token's `iat`.
        iat: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// The issuer is not the expected one.
    #[error("unexpected issuer `{0}`")]
    Issuer(String),
    /// The token is for another tool.
    #[error("token is for tool `{token}`, not `{called}`")]
    Tool {
        /// The token's `tool`.
        token: String,
        /// The tool being called.
        called: String,
    },
    /// The arguments differ from the ones the token was minted for.
    #[error("arguments do not match the token's args_hash")]
    Args,
    /// The arguments hold a number a hash cannot bind exactly, so no token covers them.
    #[error(transparent)]
    UnsafeNumber(#[from] UnsafeNumber),
    /// The token was minted for another tenant or policy (or for none).
    #[error("token is for audience `{token}`, not `{expected}`")]
    Audience {
        /// The token's `aud` (empty when it has none).
        token: String,
        /// The audience the verifier requires.
        expected: String,
    },
    /// The token was already consumed (reported by the caller that records single use, with
    /// [`TokenVerifier::single_use_until`]).
    #[error("token already used (replay)")]
    Replayed,
    /// The token's use could not be recorded (fail closed; reported like [`Self::Replayed`]).
    #[error("replay guard: {0}")]
    ReplayGuard(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    kid: String,
}

/// Mints decision tokens with a [`KeyProvider`].
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    provider: Arc<dyn KeyProvider>,
    issuer: String,
    ttl_secs: u64,
}

impl TokenIssuer {
    /// An issuer named `issuer` (the `iss` claim), tokens valid [`DEFAULT_TTL_SECS`].
    pub fn new(provider: Arc<dyn KeyProvider>, issuer: impl Into<String>) -> Self {
        Self {
            provider,
            issuer: issuer.into(),
            ttl_secs: DEFAULT_TTL_SECS,
        }
    }

    /// Sets the token lifetime (at least one second).
    #[must_use]
    pub fn with_ttl_secs(mut self, ttl_secs: u64) -> Self {
        self.ttl_secs = ttl_secs.max(1);
        self
    }

    /// The token lifetime in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// The key provider.
    pub fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }

    /// Mints a token for `grant` at `now` (unix seconds), without an audience.
    pub fn mint(&self, grant: &Grant<'_>, now: u64) -> Result<String, MintError> {
        self.mint_for(grant, None, now)
    }

    /// Mints a token for `grant` bound to `audience` ([`audience`]: the tenant and policy) at
    /// `now`. Refuses arguments holding numbers beyond +/-(2^53 - 1) and tokens longer than
    /// [`MAX_TOKEN_LEN`].
    pub fn mint_for(
        &self,
        grant: &Grant<'_>,
        audience: Option<&str>,
        now: u64,
    ) -> Result<String, MintError> {
        let jti = URL_SAFE_NO_PAD.encode(crate::keys::random_bytes::<16>()?);
        let claims = self.claims(grant, audience, now, jti)?;
        let token = self.mint_claims(&claims)?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(MintError::TooLong {
                len: token.len(),
                max: MAX_TOKEN_LEN,
            });
        }
        Ok(token)
    }

    /// Checks, without signing, that [`TokenIssuer::mint_for`] would mint a token for `grant`:
    /// numbers within range, length within [`MAX_TOKEN_LEN`]. For a caller that must refuse a
    /// request before acting on it.
    pub fn check_mintable(
        &self,
        grant: &Grant<'_>,
        audience: Option<&str>,
        now: u64,
    ) -> Result<(), MintError> {
        let claims = self.claims(grant, audience, now, "A".repeat(JTI_LEN))?;
        let payload = serde_json::to_vec(&claims).map_err(|_| MintError::Serialize)?;
        let header = serde_json::to_vec(&Header {
            alg: "EdDSA".into(),
            typ: Some("JWT".into()),
            kid: self.provider.signing_kid()?,
        })
        .map_err(|_| MintError::Serialize)?;
        let b64 = |n: usize| (4 * n).div_ceil(3);
        let len = b64(header.len()) + 1 + b64(payload.len()) + 1 + b64(crate::SIGNATURE_LEN);
        if len > MAX_TOKEN_LEN {
            return Err(MintError::TooLong {
                len,
                max: MAX_TOKEN_LEN,
            });
        }
        Ok(())
    }

    fn claims(
        &self,
        grant: &Grant<'_>,
        audience: Option<&str>,
        now: u64,
        jti: String,
    ) -> Result<Claims, MintError> {
        check_exact_numbers(grant.args)?;
        Ok(Claims {
            iss: self.issuer.clone(),
            aud: audience.map(str::to_owned),
            sub: grant.principal.map(str::to_owned),
            sid: grant.session.map(str::to_owned),
            tool: grant.tool.to_owned(),
            args_hash: args_hash(grant.args)?,
            policy: grant.policy_digest.to_owned(),
            iat: now,
            exp: now.saturating_add(self.ttl_secs),
            jti,
        })
    }

    /// Signs arbitrary claims (for tests and tools; [`TokenIssuer::mint`] is the normal path).
    pub fn mint_claims(&self, claims: &Claims) -> Result<String, MintError> {
        let payload = serde_json::to_vec(claims).map_err(|_| MintError::Serialize)?;
        sign_compact(self.provider.as_ref(), &payload)
    }

    /// Rotates `provider`'s signing key to `new`, keeping the old public key published until
    /// every token it signed has expired (`now + ttl + leeway`).
    pub fn rotate(&self, provider: &SoftwareKeyProvider, new: Ed25519Key, now: u64) {
        provider.rotate(
            new,
            now.saturating_add(self.ttl_secs)
                .saturating_add(DEFAULT_LEEWAY_SECS),
        );
    }
}

/// Signs `payload` as a compact JWS with header `{"alg":"EdDSA","typ":"JWT","kid":...}`.
fn sign_compact(provider: &dyn KeyProvider, payload: &[u8]) -> Result<String, MintError> {
    let payload64 = URL_SAFE_NO_PAD.encode(payload);
    // The header names the key before it signs; a rotation in between would make them differ,
    // so retry (a rotation is rare, two in a row rarer still).
    let mut last = KeyError::NoSigningKey;
    for _ in 0..3 {
        let kid = provider.signing_kid()?;
        let header = serde_json::to_vec(&Header {
            alg: "EdDSA".into(),
            typ: Some("JWT".into()),
            kid: kid.clone(),
        })
        .map_err(|_| MintError::Serialize)?;
        let mut out = URL_SAFE_NO_PAD.encode(header);
        out.push('.');
        out.push_str(&payload64);
        let sig = provider.sign(out.as_bytes())?;
        if sig.kid != kid {
            last = KeyError::UnknownKey(kid);
            continue;
        }
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig.signature));
        return Ok(out);
    }
    Err(MintError::Key(last))
}

/// Verifies decision tokens against a key set.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    jwks: Jwks,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
}

impl TokenVerifier {
    /// A verifier trusting the keys in `jwks`, any issuer, [`DEFAULT_LEEWAY_SECS`] of clock skew.
    pub fn new(jwks: Jwks) -> Self {
        Self {
            jwks,
            issuer: None,
            audience: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }

    /// Requires `iss` to equal `issuer`.
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires `aud` to equal `audience` (a token without one fails).
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Sets the clock-skew allowance.
    #[must_use]
    pub fn with_leeway_secs(mut self, leeway_secs: u64) -> Self {
        self.leeway_secs = leeway_secs;
        self
    }

    /// Checks signature, time, issuer, tool and arguments; returns the claims.
    pub fn verify(
        &self,
        token: &str,
        tool: &str,
        args: &Value,
        now: u64,
    ) -> Result<Claims, VerifyError> {
        let claims = self.verify_signature(token)?;
        if let Some(iss) = &self.issuer
            && &claims.iss != iss
        {
            return Err(VerifyError::Issuer(claims.iss));
        }
        if let Some(aud) = &self.audience
            && claims.aud.as_ref() != Some(aud)
        {
            return Err(VerifyError::Audience {
                token: claims.aud.unwrap_or_default(),
                expected: aud.clone(),
            });
        }
        if now >= claims.exp.saturating_add(self.leeway_secs) {
            return Err(VerifyError::Expired {
                exp: claims.exp,
                now,
            });
        }
        if claims.iat > now.saturating_add(self.leeway_secs) {
            return Err(VerifyError::NotYetValid {
                iat: claims.iat,
                now,
            });
        }
        if claims.tool != tool {
            return Err(VerifyError::Tool {
                token: claims.tool,
                called: tool.to_owned(),
            });
        }
        // Numbers a hash cannot bind exactly are refused, never compared: another number
        // could share the hash.
        check_exact_numbers(args)?;
        let hash = args_hash(args).map_err(|_| VerifyError::Args)?;
        // Not secret, so a plain comparison is fine.
        if hash != claims.args_hash {
            return Err(VerifyError::Args);
        }
        Ok(claims)
    }

    /// Until when a verified token's `jti` must be remembered to make it single-use: its expiry
    /// plus the leeway this verifier allows (unix seconds). The caller records the `jti` in a
    /// nonce store (`warden_core::NonceStore`) and answers [`VerifyError::Replayed`] when it was
    /// already there.
    pub fn single_use_until(&self, claims: &Claims) -> u64 {
        claims.exp.saturating_add(self.leeway_secs)
    }

    /// Checks the structure, header and signature only; returns the (unchecked) claims.
    pub fn verify_signature(&self, token: &str) -> Result<Claims, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::Malformed("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed("expected three dot-separated parts"));
        };
        let header = decode_part(h64, "header")?;
        let header: Header = serde_json::from_slice(&header)
            .map_err(|_| VerifyError::Malformed("header is not the expected JSON object"))?;
        if header.alg != "EdDSA" {
            return Err(VerifyError::UnsupportedHeader("alg must be EdDSA"));
        }
        if header
            .typ
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("JWT"))
        {
            return Err(VerifyError::UnsupportedHeader("typ must be JWT"));
        }
        let sig = decode_part(s64, "signature")?;
        let signing_input_len = h64.len() + 1 + p64.len();
        let signing_input = token
            .get(..signing_input_len)
            .ok_or(VerifyError::Malformed("truncated"))?;
        self.jwks
            .verify(&header.kid, signing_input.as_bytes(), &sig)
            .map_err(|e| match e {
                KeyError::UnknownKey(kid) => VerifyError::UnknownKey(kid),
                _ => VerifyError::BadSignature,
            })?;
        let payload = decode_part(p64, "payload")?;
        serde_json::from_slice(&payload)
            .map_err(|_| VerifyError::Malformed("claims are not the expected JSON object"))
    }
}

fn decode_part(part: &str, what: &'static str) -> Result<Vec<u8>, VerifyError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        VerifyError::Malformed(match what {
            "header" => "header is not base64url",
            "payload" => "payload is not base64url",
            _ => "signature is not base64url",
        })
    })
}

/// Verifies `token` for a call of `tool` with `args` at `now` against `jwks`: the library form of
/// `warden token verify`.
pub fn verify(
    token: &str,
    jwks: &Jwks,
    tool: &str,
    args: &Value,
    now: u64,
) -> Result<Claims, VerifyError> {
    TokenVerifier::new(jwks.clone()).verify(token, tool, args, now)
}
