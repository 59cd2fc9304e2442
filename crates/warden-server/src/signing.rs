//! Decision tokens in the daemon: minted with the configured Ed25519 key for allowed tool calls,
//! the JWKS that verifies them, and `POST /v1/tokens/verify` with a per-tenant replay guard
//! (`docs/serve.md`, "Proof").
//!
//! Off unless configured: no `signing_key`, no tokens (`/.well-known/jwks.json` and
//! `/v1/tokens/verify` answer 404 `signing_disabled`). The key file is read at startup and again
//! on every reload: a new key rotates (the old public key stays in the JWKS until its last token
//! has expired). Key material is never logged: only the key's `kid` (public).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use warden::state::NonceStore;
use warden::{Decision, Request as DecisionRequest, Verdict};
use warden_proof::{
    Ed25519Key, Grant, KeyProvider, SecretString, SoftwareKeyProvider, TokenIssuer, TokenVerifier,
    VerifyError, audience,
};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};

use crate::keyfile::read_secret_file;

/// The issuer (`iss`) of the daemon's tokens.
pub const TOKEN_ISSUER: &str = "warden";

/// Token minting and verification state.
pub(crate) struct Signing {
    issuer: TokenIssuer,
    provider: Arc<SoftwareKeyProvider>,
    /// Token ids consumed by `POST /v1/tokens/verify` (`consume: true`), per tenant.
    nonces: Arc<dyn NonceStore>,
    path: PathBuf,
}

/// Reads one signing key file (PKCS#8 PEM). Errors name the file, never its content.
fn read_signing_key(path: &Path) -> Result<Ed25519Key, String> {
    let text = read_secret_file("signing_key", path)?;
    Ed25519Key::from_pkcs8_pem(&SecretString::from(text))
        .map_err(|e| format!("signing_key `{}`: {e}", path.display()))
}

/// Reads the signing key (PKCS#8 PEM). Errors name the file, never its content.
pub(crate) fn load_signing(
    path: &Path,
    ttl_secs: u64,
    nonces: Arc<dyn NonceStore>,
) -> Result<Signing, String> {
    let key = read_signing_key(path)?;
    let kid = key.kid().to_owned();
    let provider = Arc::new(SoftwareKeyProvider::new(key));
    let dyn_provider: Arc<dyn KeyProvider> = Arc::clone(&provider) as Arc<dyn KeyProvider>;
    let issuer = TokenIssuer::new(dyn_provider, TOKEN_ISSUER).with_ttl_secs(ttl_secs);
    tracing::info!(kid = %kid, ttl_secs, "decision tokens enabled");
    Ok(Signing {
        issuer,
        provider,
        nonces,
        path: path.to_owned(),
    })
}

impl Signing {
    /// The key provider: the audit log signs its checkpoints with it.
    pub(crate) fn provider(&self) -> Arc<dyn KeyProvider> {
        Arc::clone(&self.provider) as Arc<dyn KeyProvider>
    }

    /// Re-reads the signing key file (on reload). Errors name the file, never its content.
    pub(crate) fn read_key(&self) -> Result<Ed25519Key, String> {
        read_signing_key(&self.path)
    }

    /// Makes `key` the signing key when its `kid` differs from the current one; the old public
    /// key stays in the JWKS (and keeps verifying) until `now + ttl + leeway`. Also forgets
    /// retired keys whose window has ended.
    pub(crate) fn rotate_to(&self, key: Ed25519Key, now: u64) {
        self.provider.prune(now);
        let old = self.provider.signing_kid().ok();
        if old.as_deref() == Some(key.kid()) {
            return;
        }
        let kid = key.kid().to_owned();
        self.issuer.rotate(&self.provider, key, now);
        tracing::info!(
            kid = %kid,
            old_kid = old.as_deref().unwrap_or(""),
            old_published_until = now
                .saturating_add(self.issuer.ttl_secs())
                .saturating_add(warden_proof::DEFAULT_LEEWAY_SECS),
            "signing key rotated"
        );
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Refuses, before anything is decided (so no session changes), a tool call that could not get
/// a decision token when signing is on: arguments holding a number beyond +/-(2^53 - 1) (a hash
/// cannot bind it exactly), or identifiers so long that the token would exceed
/// [`warden_proof::MAX_TOKEN_LEN`]. A 400 naming the problem.
pub(crate) fn check_mintable(
    state: &AppState,
    caller: &Caller,
    request: &DecisionRequest,
) -> Result<(), ApiError> {
    let Some(signing) = &state.effects().signing else {
        return Ok(());
    };
    let Some(tool) = request.tool.as_deref() else {
        return Ok(());
    };
    if request.kind != warden::Kind::ToolCall {
        return Ok(());
    }
    let empty = Value::Object(serde_json::Map::new());
    // The longest digest a policy has (`sha256:` + 64 hex digits).
    let digest = format!("sha256:{}", "0".repeat(64));
    let grant = Grant {
        principal: request.principal.as_deref(),
        session: request.session.as_deref(),
        tool,
        args: request.args.as_ref().unwrap_or(&empty),
        policy_digest: &digest,
    };
    let aud = audience(&caller.tenant, &caller.policy);
    match signing
        .issuer
        .check_mintable(&grant, Some(&aud), unix_now())
    {
        Ok(()) => Ok(()),
        Err(e @ warden_proof::MintError::UnsafeNumber(_)) => {
            Err(ApiError::bad_request(format!("field `args`: {e}")))
        }
        Err(e @ warden_proof::MintError::TooLong { .. }) => {
            Err(ApiError::bad_request(e.to_string()))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot mint a decision token; answering 500");
            Err(ApiError::internal())
        }
    }
}

/// Adds a token to an allowed `tool_call` decision when signing is on, bound to the caller's
/// tenant and policy (`aud`). Requests are checked first with [`check_mintable`]; a failure here
/// is a 500 (an allow without its token would be refused by the tool side anyway).
pub(crate) fn mint(
    signing: Option<&Signing>,
    tenant: &str,
    policy: &str,
    request: &DecisionRequest,
    decision: &mut Decision,
) -> Result<(), ApiError> {
    let Some(signing) = signing else {
        return Ok(());
    };
    let Some(tool) = request.tool.as_deref() else {
        return Ok(());
    };
    if request.kind != warden::Kind::ToolCall || decision.verdict != Verdict::Allow {
        return Ok(());
    }
    let empty = Value::Object(serde_json::Map::new());
    let grant = Grant {
        principal: request.principal.as_deref(),
        session: request.session.as_deref(),
        tool,
        args: request.args.as_ref().unwrap_or(&empty),
        policy_digest: &decision.policy.digest,
    };
    let aud = audience(tenant, policy);
    let token = signing
        .issuer
        .mint_for(&grant, Some(&aud), unix_now())
        .map_err(|e| {
            tracing::error!(error = %e, "cannot mint a decision token; answering 500");
            ApiError::internal()
        })?;
    decision.token = Some(token);
    Ok(())
}

fn signing_disabled() -> ApiError {
    ApiError::new(
        ErrorCode::SigningDisabled,
        "decision tokens are not enabled (no signing_key configured)",
    )
}

/// `GET /.well-known/jwks.json`: the public keys verifying the daemon's tokens.
pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
    let Some(signing) = &state.effects().signing else {
        return signing_disabled().into_response();
    };
    (
        [(header::CACHE_CONTROL, "public, max-age=5")],
        Json(signing.provider.jwks(unix_now())),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    token: String,
    tool: String,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    consume: bool,
}

/// The nonce of a token id for one tenant: each tenant's consumed tokens are its own.
fn tenant_nonce(tenant: &str, jti: &str) -> String {
    let mut key = String::with_capacity(tenant.len() + 1 + jti.len());
    key.push_str(tenant);
    key.push('\u{1f}');
    key.push_str(jti);
    key
}

/// Verifies the token and, when asked, records its `jti` as used (refusing a second use).
async fn verify_token(
    signing: &Signing,
    verifier: &TokenVerifier,
    tenant: &str,
    body: &VerifyBody,
    args: &Value,
    now: u64,
) -> Result<warden_proof::Claims, VerifyError> {
    let claims = verifier.verify(&body.token, &body.tool, args, now)?;
    if body.consume {
        let nonce = tenant_nonce(tenant, &claims.jti);
        let until = verifier.single_use_until(&claims);
        match signing.nonces.consume(&nonce, until, now).await {
            Ok(true) => {}
            Ok(false) => return Err(VerifyError::Replayed),
            Err(e) => return Err(VerifyError::ReplayGuard(e.message)),
        }
    }
    Ok(claims)
}

/// Stable code of a rejection.
fn reason_code(e: &VerifyError) -> &'static str {
    match e {
        VerifyError::Malformed(_) | VerifyError::UnsupportedHeader(_) => "malformed",
        VerifyError::UnknownKey(_) => "unknown_key",
        VerifyError::BadSignature => "bad_signature",
        VerifyError::Expired { .. } => "expired",
        VerifyError::NotYetValid { .. } => "not_yet_valid",
        VerifyError::Issuer(_) => "issuer",
        VerifyError::Tool { .. } => "tool_mismatch",
        VerifyError::Args => "args_mismatch",
        VerifyError::UnsafeNumber(_) => "unsafe_number",
        VerifyError::Audience { .. } => "audience",
        VerifyError::Replayed => "replayed",
        VerifyError::ReplayGuard(_) => "replay_guard",
    }
}

/// `POST /v1/tokens/verify` `{"token", "tool", "args", "consume"}`: 200 with
/// `{"valid": true, "claims": {...}}` or `{"valid": false, "code", "reason"}`; 400 when the body
/// is not such an object. A token is valid only for the tenant and policy it was minted for
/// (`aud`), and each tenant's consumed tokens are its own.
pub(crate) async fn verify(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    req: Request,
) -> Response {
    let Some(signing) = &state.effects().signing else {
        return signing_disabled().into_response();
    };
    // Any content type, as before; the body limit and its 413 are the JSON ones of every route.
    let body = match crate::body::json_body(&state, req, true).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let mut body: VerifyBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request(format!(
                "expected {{\"token\", \"tool\", \"args\", \"consume\"}}: {e}"
            ))
            .into_response();
        }
    };
    let now = unix_now();
    let verifier = TokenVerifier::new(signing.provider.jwks(now))
        .with_issuer(TOKEN_ISSUER)
        .with_audience(audience(&caller.tenant, &caller.policy));
    let args = body
        .args
        .take()
        .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    match verify_token(signing, &verifier, &caller.tenant, &body, &args, now).await {
        Ok(claims) => Json(json!({"valid": true, "claims": claims})).into_response(),
        Err(e) => Json(json!({"valid": false, "code": reason_code(&e), "reason": e.to_string()}))
            .into_response(),
    }
}
