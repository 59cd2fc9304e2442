//! `jwtValidation`: a bearer JWT verified against a JWKS fetched from a URL: signature (an
//! algorithm allow-list, the key picked by `kid`), `exp` and `nbf` (with a leeway), `iss` and
//! `aud` when configured. The caller is the token's subject.
//!
//! The key set is fetched on first use and cached. Once older than `refresh_secs` it is still
//! used while a background fetch replaces it (stale while revalidate); a token naming a `kid`
//! the set lacks makes one fetch at once (a rotated key), at most once per `min_refetch_secs`,
//! so unknown `kid`s cannot make the daemon hammer the JWKS endpoint. When no set was ever
//! fetched, the step fails with 503 (the token cannot be judged): never a pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::EnvoyConfigError;
use crate::exchange::{Exchange, Identity, Mutations, Reply, header_name};

/// Largest JWKS document read, in bytes.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Longest token read, in bytes.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// `jwtValidation`'s configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Where the key set is (`https://`, or `http://` for a local one).
    pub jwks_url: String,
    /// The `iss` required; none: not checked.
    pub issuer: Option<String>,
    /// One of these must be in `aud`; empty: not checked.
    pub audiences: Vec<String>,
    /// The algorithms accepted (`RS256`, `ES256`, `EdDSA`, ...); `none` and HMAC ones are
    /// refused at load (a public key set cannot verify a shared secret).
    pub algorithms: Vec<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Seconds after which the key set is fetched again (in the background).
    pub refresh_secs: u64,
    /// Fewest seconds between two fetches caused by an unknown `kid`.
    pub min_refetch_secs: u64,
    /// Longest wait for the JWKS endpoint, in milliseconds.
    pub timeout_ms: u64,
    /// PEM bundle the JWKS endpoint's certificate must chain to; none: the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// The claim naming the caller.
    pub subject_claim: String,
    /// The claim holding roles (an array of strings, or one space-separated string).
    pub roles_claim: Option<String>,
    /// The tenant of callers this step admits.
    pub tenant: String,
    /// The policy their requests are decided by (`decide` without its own `policy`).
    pub policy: Option<String>,
    /// The header the caller's id (the subject) is forwarded in.
    pub caller_header: String,
    /// The header the tenant is forwarded in.
    pub tenant_header: String,
    /// Forward the token itself to the upstream (default: removed).
    pub forward_token: bool,
    /// The realm in `WWW-Authenticate`.
    pub realm: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            jwks_url: String::new(),
            issuer: None,
            audiences: Vec::new(),
            algorithms: vec!["RS256".to_owned(), "ES256".to_owned()],
            leeway_secs: 30,
            refresh_secs: 300,
            min_refetch_secs: 10,
            timeout_ms: 2_000,
            ca_file: None,
            subject_claim: "sub".to_owned(),
            roles_claim: None,
            tenant: "jwt".to_owned(),
            policy: None,
            caller_header: "x-warden-caller".to_owned(),
            tenant_header: "x-warden-tenant".to_owned(),
            forward_token: false,
            realm: "warden".to_owned(),
        }
    }
}

/// A compiled `jwtValidation` step with its key set cache.
#[derive(Clone)]
pub struct JwtValidation {
    config: JwtConfig,
    algorithms: Vec<Algorithm>,
    keys: Arc<KeyCache>,
}

impl std::fmt::Debug for JwtValidation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtValidation")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PartialEq for JwtValidation {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

/// One fetched key set.
struct KeySet {
    by_kid: HashMap<String, DecodingKey>,
    /// Keys without a `kid` (tried when the token names none).
    unnamed: Vec<DecodingKey>,
    fetched: Instant,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

struct KeyCache {
    url: hyper::Uri,
    client: HttpsClient,
    timeout: Duration,
    refresh: Duration,
    min_refetch: Duration,
    current: ArcSwapOption<KeySet>,
    /// Serialises fetches; holds when the last one was tried.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    /// A background refresh is under way.
    refreshing: AtomicBool,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The token is bad (401); says why, never what the token holds.
    Token(&'static str),
    /// The key set cannot be had (503): the token cannot be judged.
    Keys,
}

impl JwtValidation {
    /// Compiles the step; `field` names it in errors.
    pub fn compile(mut config: JwtConfig, field: &str) -> Result<Self, EnvoyConfigError> {
        let at = |name: &str| format!("{field}.config.{name}");
        let url: hyper::Uri = config
            .jwks_url
            .parse()
            .map_err(|e| EnvoyConfigError::new(at("jwks_url"), format!("not a URL: {e}")))?;
        if !matches!(url.scheme_str(), Some("https" | "http")) || url.host().is_none() {
            return Err(EnvoyConfigError::new(
                at("jwks_url"),
                "an http:// or https:// URL is required",
            ));
        }
        let mut algorithms = Vec::new();
        for name in &config.algorithms {
            let algorithm: Algorithm = name.parse().map_err(|_| {
                EnvoyConfigError::new(at("algorithms"), format!("unknown algorithm `{name}`"))
            })?;
            if matches!(
                algorithm,
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
            ) {
                return Err(EnvoyConfigError::new(
                    at("algorithms"),
                    format!("`{name}` needs a shared secret; a JWKS holds public keys"),
                ));
            }
            algorithms.push(algorithm);
        }
        if algorithms.is_empty() {
            return Err(EnvoyConfigError::new(
                at("algorithms"),
                "name at least one algorithm",
            ));
        }
        config.caller_header = header_name(&config.caller_header, &at("caller_header"))?;
        config.tenant_header = header_name(&config.tenant_header, &at("tenant_header"))?;
        if config.tenant.is_empty() || config.subject_claim.is_empty() {
            return Err(EnvoyConfigError::new(
                at("tenant"),
                "`tenant` and `subject_claim` may not be empty",
            ));
        }
        if config.realm.contains(['"', '\\']) || config.realm.chars().any(char::is_control) {
            return Err(EnvoyConfigError::new(
                at("realm"),
                "may not hold `\"`, `\\` or control characters",
            ));
        }
        let tls = client_tls(config.ca_file.as_deref())
            .map_err(|e| EnvoyConfigError::new(at("ca_file"), e))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let keys = KeyCache {
            url,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            refresh: Duration::from_secs(config.refresh_secs.max(1)),
            min_refetch: Duration::from_secs(config.min_refetch_secs),
            current: ArcSwapOption::empty(),
            fetching: tokio::sync::Mutex::new(None),
            refreshing: AtomicBool::new(false),
        };
        Ok(Self {
            config,
            algorithms,
            keys: Arc::new(keys),
        })
    }

    /// The policy the admitted callers' requests are decided by.
    pub fn policy(&self) -> &str {
        self.config.policy.as_deref().unwrap_or(&self.config.tenant)
    }

    /// Runs the step: the bearer token from `Authorization`, verified; the caller set. `Err`:
    /// the answer the client gets instead.
    pub async fn run(&self, ex: &mut Exchange, m: &mut Mutations) -> Result<(), Reply> {
        m.remove_header(&mut ex.headers, &self.config.caller_header);
        m.remove_header(&mut ex.headers, &self.config.tenant_header);
        let token = ex.header("authorization").and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .map(str::to_owned)
        });
        let Some(token) = token else {
            return self.unauthorized("a bearer token is required", false);
        };
        let claims = match self.verify(&token).await {
            Ok(claims) => claims,
            Err(Refusal::Token(why)) => return self.unauthorized(why, true),
            Err(Refusal::Keys) => {
                return Err(Reply::error(
                    503,
                    "jwks_unavailable",
                    "the token's keys cannot be fetched now",
                ));
            }
        };
        let Some(subject) = claims
            .get(&self.config.subject_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 1024)
        else {
            return self.unauthorized("the token names no subject", true);
        };
        let roles = self
            .config
            .roles_claim
            .as_ref()
            .and_then(|name| claims.get(name))
            .map(roles_of)
            .unwrap_or_default();
        if !self.config.forward_token {
            m.remove_header(&mut ex.headers, "authorization");
        }
        m.set_header(
            &mut ex.headers,
            &self.config.caller_header,
            subject.to_owned(),
        );
        m.set_header(
            &mut ex.headers,
            &self.config.tenant_header,
            self.config.tenant.clone(),
        );
        ex.caller = Some(Identity {
            id: subject.to_owned(),
            tenant: self.config.tenant.clone(),
            policy: self.policy().to_owned(),
            roles,
        });
        Ok(())
    }

    fn unauthorized(&self, message: &'static str, invalid: bool) -> Result<(), Reply> {
        let mut challenge = format!("Bearer realm=\"{}\"", self.config.realm);
        if invalid {
            challenge.push_str(", error=\"invalid_token\"");
        }
        Err(Reply::error(401, "unauthorized", message).with_header("www-authenticate", challenge))
    }

    /// The claims of `token` once its signature, algorithm, `exp`, `nbf`, `iss` and `aud`
    /// are verified as configured (for another front door using a JWT, e.g. the MCP mounts'
    /// session from a claim).
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::Token("the token is too long"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Token("not a JWT"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(Refusal::Token("the token's algorithm is not accepted"));
        }
        let key = self.keys.key(header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.config.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(issuer) = &self.config.issuer {
            validation.set_issuer(&[issuer]);
        }
        if self.config.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.config.audiences);
        }
        let mut last = Refusal::Token("the token's signature does not verify");
        for key in key {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    let why = match e.kind() {
                        ErrorKind::ExpiredSignature => "the token has expired",
                        ErrorKind::ImmatureSignature => "the token is not valid yet",
                        ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
                        ErrorKind::InvalidAudience => "the token's audience is not accepted",
                        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                        _ => "the token's signature does not verify",
                    };
                    last = Refusal::Token(why);
                }
            }
        }
        Err(last)
    }
}

/// Roles from a claim: an array of strings, or one space-separated string (OAuth `scope`).
fn roles_of(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

impl KeyCache {
    /// The keys that may have signed a token naming `kid`.
    async fn key(self: &Arc<Self>, kid: Option<&str>) -> Result<Vec<DecodingKey>, Refusal> {
        let set = match self.current.load_full() {
            Some(set) => set,
            None => self.fetch(Duration::ZERO).await.ok_or(Refusal::Keys)?,
        };
        if set.fetched.elapsed() >= self.refresh {
            self.refresh_in_background();
        }
        if let Some(found) = pick(&set, kid) {
            return Ok(found);
        }
        // A key the set lacks: perhaps rotated in since it was fetched.
        match self.fetch(self.min_refetch).await {
            Some(fresh) => pick(&fresh, kid).ok_or(Refusal::Token("the token's key is unknown")),
            None => Err(Refusal::Token("the token's key is unknown")),
        }
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // Spaced by the refresh interval: concurrent callers do not fetch twice.
            this.fetch(this.refresh).await;
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// Fetches the set unless a fetch was tried less than `spacing` ago (then the current set),
    /// one fetch at a time. `None`: no set could be had.
    async fn fetch(&self, spacing: Duration) -> Option<Arc<KeySet>> {
        let mut last = self.fetching.lock().await;
        if let Some(at) = *last
            && at.elapsed() < spacing
        {
            return self.current.load_full();
        }
        *last = Some(Instant::now());
        match tokio::time::timeout(self.timeout, self.download()).await {
            Ok(Ok(set)) => {
                let set = Arc::new(set);
                self.current.store(Some(Arc::clone(&set)));
                Some(set)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, url = %self.url, "cannot fetch the JWKS");
                self.current.load_full()
            }
            Err(_) => {
                tracing::warn!(url = %self.url, "the JWKS endpoint did not answer in time");
                self.current.load_full()
            }
        }
    }

    async fn download(&self) -> Result<KeySet, String> {
        let request = hyper::Request::get(self.url.clone())
            .header("accept", "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut by_kid = HashMap::new();
        let mut unnamed = Vec::new();
        for jwk in &set.keys {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    by_kid.insert(kid.clone(), key);
                }
                None => unnamed.push(key),
            }
        }
        Ok(KeySet {
            by_kid,
            unnamed,
            fetched: Instant::now(),
        })
    }
}

fn pick(set: &KeySet, kid: Option<&str>) -> Option<Vec<DecodingKey>> {
    match kid {
        Some(kid) => set.by_kid.get(kid).map(|k| vec![k.clone()]),
        None if !set.unnamed.is_empty() => Some(set.unnamed.clone()),
        None => None,
    }
}

fn client_tls(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            roots.add_parsable_certificates(certs);
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
