//! The built-in chain policies. Each is compiled from its `config` at load (unknown fields and
//! bad values are errors naming the field) and run against an [`Exchange`]: it passes (having
//! perhaps changed headers or the body) or fails with the answer the client would get.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use warden_core::{HttpRequest, Kind, Request, Verdict};

use crate::error::EnvoyConfigError;
use crate::exchange::{Exchange, ExchangeRecord, Mutations, Reply, header_name};
use crate::host::Host;

/// A compiled step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Lets everything through.
    AllowAll,
    /// An API key from the daemon's key store.
    ApiKeyAuth(ApiKeyAuth),
    /// A Warden policy decides the HTTP request.
    Decide(Decide),
    /// Security headers on the response.
    AddSecurityHeaders(SecurityHeaders),
    /// A fixed-window request count per key, client address, route or header.
    RateLimit(RateLimit),
    /// JSON fields removed or masked in the response body.
    ResponseBodyTransform(BodyTransform),
    /// The caller must hold one of the roles.
    RoleCheck(RoleCheck),
    /// A bearer JWT verified against a JWKS.
    JwtValidation(Box<crate::jwt::JwtValidation>),
    /// The exchange into the daemon's audit log.
    AuditLog,
    /// A policy of an out-of-process agent (`AGENT/POLICY`).
    Agent(crate::agent::AgentStep),
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// It holds; the chain goes on.
    Pass,
    /// It does not hold: this would be the answer.
    Fail(Reply),
}

fn parse<T: for<'de> Deserialize<'de> + Default>(
    config: &Value,
    field: &str,
) -> Result<T, EnvoyConfigError> {
    if config.is_null() {
        return Ok(T::default());
    }
    serde_path_to_error::deserialize(config.clone()).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            format!("{field}.config")
        } else {
            format!("{field}.config.{path}")
        };
        EnvoyConfigError::new(at, e.into_inner().to_string())
    })
}

impl Step {
    /// Compiles `policy` with `config`; `field` names the step in errors, `response` says which
    /// chain it is in.
    pub fn compile(
        policy: &str,
        config: &Value,
        field: &str,
        response: bool,
    ) -> Result<Self, EnvoyConfigError> {
        let only = |want_response: bool| {
            if response == want_response {
                Ok(())
            } else {
                Err(EnvoyConfigError::new(
                    format!("{field}.policy"),
                    format!(
                        "`{policy}` runs in the {} chain only",
                        if want_response { "response" } else { "request" }
                    ),
                ))
            }
        };
        let step = match policy {
            "allowAll" => {
                parse::<Empty>(config, field)?;
                Step::AllowAll
            }
            "auditLog" => {
                parse::<Empty>(config, field)?;
                Step::AuditLog
            }
            "apiKeyAuth" => {
                only(false)?;
                Step::ApiKeyAuth(ApiKeyAuth::compile(parse(config, field)?, field)?)
            }
            "decide" => {
                only(false)?;
                Step::Decide(parse(config, field)?)
            }
            "jwtValidation" => {
                only(false)?;
                Step::JwtValidation(Box::new(crate::jwt::JwtValidation::compile(
                    parse(config, field)?,
                    field,
                )?))
            }
            "addSecurityHeaders" => {
                only(true)?;
                Step::AddSecurityHeaders(SecurityHeaders::compile(parse(config, field)?, field)?)
            }
            "rateLimit" => {
                only(false)?;
                Step::RateLimit(RateLimit::compile(parse(config, field)?, field)?)
            }
            "responseBodyTransform" => {
                only(true)?;
                Step::ResponseBodyTransform(BodyTransform::compile(parse(config, field)?, field)?)
            }
            "roleCheck" => {
                only(false)?;
                let check: RoleCheck = parse(config, field)?;
                if check.any_of.is_empty() {
                    return Err(EnvoyConfigError::new(
                        format!("{field}.config.any_of"),
                        "name at least one role",
                    ));
                }
                Step::RoleCheck(check)
            }
            other => {
                return Err(EnvoyConfigError::new(
                    format!("{field}.policy"),
                    format!(
                        "unknown policy `{other}` (allowAll, apiKeyAuth, auditLog, jwtValidation, \
                         decide, addSecurityHeaders, rateLimit, responseBodyTransform, roleCheck)"
                    ),
                ));
            }
        };
        Ok(step)
    }

    /// The policy's name as written.
    pub fn name(&self) -> &str {
        match self {
            Step::Agent(a) => &a.name,
            Step::AllowAll => "allowAll",
            Step::ApiKeyAuth(_) => "apiKeyAuth",
            Step::Decide(_) => "decide",
            Step::AddSecurityHeaders(_) => "addSecurityHeaders",
            Step::RateLimit(_) => "rateLimit",
            Step::ResponseBodyTransform(_) => "responseBodyTransform",
            Step::RoleCheck(_) => "roleCheck",
            Step::JwtValidation(_) => "jwtValidation",
            Step::AuditLog => "auditLog",
        }
    }

    /// Whether the step reads the body of its phase: the chain then waits for the whole
    /// body before running (and refuses to run on a body it was not sent).
    pub fn needs_body(&self) -> bool {
        match self {
            Step::Decide(d) => d.read_body,
            Step::ResponseBodyTransform(_) => true,
            _ => false,
        }
    }

    /// Runs the step on `ex` (request phase unless `response`), recording changes in `m`.
    pub async fn run(
        &self,
        host: &dyn Host,
        ex: &mut Exchange,
        m: &mut Mutations,
        response: bool,
    ) -> Result<StepOutcome, String> {
        match self {
            Step::AllowAll => Ok(StepOutcome::Pass),
            Step::AuditLog => {
                host.audit(ExchangeRecord::of(ex, response)).await?;
                Ok(StepOutcome::Pass)
            }
            Step::ApiKeyAuth(a) => Ok(a.run(host, ex, m)),
            Step::Decide(d) => d.run(host, ex, m).await,
            Step::AddSecurityHeaders(s) => {
                let headers = if response {
                    &mut ex.response_headers
                } else {
                    &mut ex.headers
                };
                for name in &s.remove {
                    m.remove_header(headers, name);
                }
                for (name, value) in &s.set {
                    m.set_header(headers, name, value.clone());
                }
                Ok(StepOutcome::Pass)
            }
            Step::RateLimit(r) => r.run(host, ex).await,
            Step::ResponseBodyTransform(t) => Ok(t.run(ex, m)),
            Step::RoleCheck(r) => Ok(r.run(ex)),
            Step::JwtValidation(j) => Ok(match j.run(ex, m).await {
                Ok(()) => StepOutcome::Pass,
                Err(reply) => StepOutcome::Fail(reply),
            }),
            Step::Agent(a) => Ok(match a.run(ex, m, response).await? {
                None => StepOutcome::Pass,
                Some(reply) => StepOutcome::Fail(reply),
            }),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// `apiKeyAuth`: the key from `header` (default: `x-api-key`, else `Authorization: Bearer`),
/// checked against the daemon's key store in constant time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeyAuth {
    /// The header carrying the key; none: `x-api-key`, or `authorization` with `Bearer`.
    pub header: Option<String>,
    /// The header the caller's key id is forwarded in (any value the client sent in it is
    /// removed first, so the upstream can trust it).
    pub caller_header: String,
    /// The header the caller's tenant is forwarded in (removed from the client's request too).
    pub tenant_header: String,
    /// Forward the key itself to the upstream (default: removed).
    pub forward_key: bool,
    /// The realm in `WWW-Authenticate`.
    pub realm: String,
    /// Roles granted per tenant (for `roleCheck`).
    pub roles: BTreeMap<String, Vec<String>>,
}

impl Default for ApiKeyAuth {
    fn default() -> Self {
        Self {
            header: None,
            caller_header: "x-warden-caller".to_owned(),
            tenant_header: "x-warden-tenant".to_owned(),
            forward_key: false,
            realm: "warden".to_owned(),
            roles: BTreeMap::new(),
        }
    }
}

fn header_value(value: &str, field: &str) -> Result<(), EnvoyConfigError> {
    if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(EnvoyConfigError::new(
            field,
            "a header value may not hold control characters",
        ));
    }
    Ok(())
}

impl ApiKeyAuth {
    fn compile(mut self, field: &str) -> Result<Self, EnvoyConfigError> {
        if let Some(h) = &self.header {
            self.header = Some(header_name(h, &format!("{field}.config.header"))?);
        }
        self.caller_header = header_name(
            &self.caller_header,
            &format!("{field}.config.caller_header"),
        )?;
        self.tenant_header = header_name(
            &self.tenant_header,
            &format!("{field}.config.tenant_header"),
        )?;
        if self.realm.contains('"') || self.realm.contains('\\') {
            return Err(EnvoyConfigError::new(
                format!("{field}.config.realm"),
                "may not hold `\"` or `\\`",
            ));
        }
        header_value(&self.realm, &format!("{field}.config.realm"))?;
        Ok(self)
    }

    fn run(&self, host: &dyn Host, ex: &mut Exchange, m: &mut Mutations) -> StepOutcome {
        // Whatever happens next, the client's own values of the identity headers never reach
        // the upstream: only this step writes them.
        m.remove_header(&mut ex.headers, &self.caller_header);
        m.remove_header(&mut ex.headers, &self.tenant_header);
        let (presented, from) = match &self.header {
            Some(h) => (ex.header(h).map(str::to_owned), h.clone()),
            None => match ex.header("x-api-key") {
                Some(k) => (Some(k.to_owned()), "x-api-key".to_owned()),
                None => (
                    ex.header("authorization").and_then(|v| {
                        v.strip_prefix("Bearer ")
                            .or_else(|| v.strip_prefix("bearer "))
                            .map(str::to_owned)
                    }),
                    "authorization".to_owned(),
                ),
            },
        };
        let identity = presented.as_deref().and_then(|k| host.verify_key(k));
        let Some(mut identity) = identity else {
            let scheme = if from == "authorization" {
                "Bearer"
            } else {
                "ApiKey"
            };
            let message = if presented.is_some() {
                "unknown or revoked API key"
            } else {
                "an API key is required"
            };
            return StepOutcome::Fail(Reply::error(401, "unauthorized", message).with_header(
                "www-authenticate",
                format!("{scheme} realm=\"{}\"", self.realm),
            ));
        };
        if !self.forward_key {
            m.remove_header(&mut ex.headers, &from);
        }
        if let Some(roles) = self.roles.get(&identity.tenant) {
            identity.roles.extend(roles.iter().cloned());
        }
        m.set_header(&mut ex.headers, &self.caller_header, identity.id.clone());
        m.set_header(
            &mut ex.headers,
            &self.tenant_header,
            identity.tenant.clone(),
        );
        ex.caller = Some(identity);
        StepOutcome::Pass
    }
}

/// `decide`: the HTTP request (method, path, headers, query, body) as a Warden request of
/// kind `http`, decided by a policy through the daemon's pipeline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Decide {
    /// The policy; none: the authenticated caller's (a step before must authenticate).
    pub policy: Option<String>,
    /// Give the policy the body (the chain then waits for it).
    pub read_body: bool,
    /// Headers never handed to the policy (credentials: they would end up in the audit log).
    pub exclude_headers: Vec<String>,
    /// Forward the policy's redacted form of the body when it redacts.
    pub apply_redaction: bool,
}

impl Default for Decide {
    fn default() -> Self {
        Self {
            policy: None,
            read_body: true,
            exclude_headers: [
                "authorization",
                "cookie",
                "x-api-key",
                "proxy-authorization",
            ]
            .map(str::to_owned)
            .to_vec(),
            apply_redaction: true,
        }
    }
}

impl Decide {
    async fn run(
        &self,
        host: &dyn Host,
        ex: &mut Exchange,
        m: &mut Mutations,
    ) -> Result<StepOutcome, String> {
        let (tenant, policy) = match (&self.policy, &ex.caller) {
            (Some(p), caller) => (
                caller
                    .as_ref()
                    .map_or("envoy", |c| c.tenant.as_str())
                    .to_owned(),
                p.clone(),
            ),
            (None, Some(c)) => (c.tenant.clone(), c.policy.clone()),
            (None, None) => {
                return Ok(StepOutcome::Fail(Reply::error(
                    403,
                    "forbidden",
                    "no policy decides an unauthenticated request on this route",
                )));
            }
        };
        let target = match crate::target::read(&ex.path) {
            Ok(target) => target,
            Err(crate::target::Ambiguous(why)) => {
                return Ok(StepOutcome::Fail(Reply::error(
                    400,
                    "ambiguous_target",
                    why,
                )));
            }
        };
        let mut headers = BTreeMap::new();
        for (k, v) in &ex.headers {
            if self
                .exclude_headers
                .iter()
                .any(|x| x.eq_ignore_ascii_case(k))
            {
                continue;
            }
            headers
                .entry(k.clone())
                .and_modify(|e: &mut String| {
                    e.push_str(", ");
                    e.push_str(v);
                })
                .or_insert_with(|| v.clone());
        }
        let body = match (&ex.body, self.read_body) {
            (Some(b), true) if !b.is_empty() => match std::str::from_utf8(b) {
                Ok(s) => Some(s.to_owned()),
                Err(_) => {
                    return Ok(StepOutcome::Fail(Reply::error(
                        415,
                        "unsupported_body",
                        "the policy reads bodies as UTF-8 text",
                    )));
                }
            },
            _ => None,
        };
        let request = Request {
            principal: ex.caller.as_ref().map(|c| c.id.clone()),
            kind: Kind::Http,
            http: Some(HttpRequest {
                method: Some(ex.method.clone()),
                path: Some(target.path),
                headers,
                query: target.query,
                body,
            }),
            ..Request::default()
        };
        let decision = host.decide(&tenant, &policy, request).await?;
        // Only an allow goes through: a pending decision (a held call) is refused like a deny.
        if decision.verdict != Verdict::Allow {
            let body = serde_json::json!({
                "error": "forbidden",
                "message": "denied by policy",
                "rule": decision.rule,
                "reasons": decision.reasons,
            });
            return Ok(StepOutcome::Fail(Reply {
                status: 403,
                headers: vec![("content-type".to_owned(), "application/json".to_owned())],
                body: body.to_string().into_bytes(),
            }));
        }
        if self.apply_redaction
            && let Some(redacted) = &decision.redacted
            && let Some(body) = redacted.get("body").and_then(Value::as_str)
        {
            let body = body.as_bytes().to_vec();
            ex.body = Some(body.clone());
            m.body = Some(body);
        }
        Ok(StepOutcome::Pass)
    }
}

/// `addSecurityHeaders`: the usual response hardening headers, overridable.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHeaders {
    /// Headers set (merged over the defaults; an empty value drops a default).
    pub set: BTreeMap<String, String>,
    /// Headers removed (default: `server`, `x-powered-by`).
    pub remove: Vec<String>,
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        Self {
            set: BTreeMap::new(),
            remove: vec!["server".to_owned(), "x-powered-by".to_owned()],
        }
    }
}

/// The defaults of `addSecurityHeaders`.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("cache-control", "no-store"),
];

impl SecurityHeaders {
    fn compile(self, field: &str) -> Result<Self, EnvoyConfigError> {
        let mut set: BTreeMap<String, String> = SECURITY_HEADERS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (k, v) in self.set {
            let at = format!("{field}.config.set.{k}");
            let k = header_name(&k, &at)?;
            header_value(&v, &at)?;
            if v.is_empty() {
                set.remove(&k);
            } else {
                set.insert(k, v);
            }
        }
        let remove = self
            .remove
            .iter()
            .map(|r| header_name(r, &format!("{field}.config.remove")))
            .collect::<Result<_, _>>()?;
        Ok(Self { set, remove })
    }
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The authenticated caller's id (unauthenticated requests share one bucket).
    ApiKey,
    /// The client's address (Envoy must send `source.address`).
    ClientAddress,
    /// The route: every request of it.
    Route,
    /// A request header's value (unset: one shared bucket).
    Header(String),
}

/// `rateLimit`: at most `requests` per `window_secs` per key, counted in the daemon's counters
/// (across every instance with shared state).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub requests: u64,
    /// The window, in seconds.
    pub window_secs: u64,
    /// `api_key`, `client_address`, `route` or `header:NAME`.
    pub by: String,
    #[serde(skip)]
    key: Option<RateKey>,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            requests: 0,
            window_secs: 1,
            by: "api_key".to_owned(),
            key: None,
        }
    }
}

impl RateLimit {
    fn compile(mut self, field: &str) -> Result<Self, EnvoyConfigError> {
        if self.requests == 0 {
            return Err(EnvoyConfigError::new(
                format!("{field}.config.requests"),
                "must be at least 1",
            ));
        }
        if self.window_secs == 0 || self.window_secs > 86_400 {
            return Err(EnvoyConfigError::new(
                format!("{field}.config.window_secs"),
                "1 to 86400 seconds",
            ));
        }
        self.key = Some(match self.by.as_str() {
            "api_key" => RateKey::ApiKey,
            "client_address" => RateKey::ClientAddress,
            "route" => RateKey::Route,
            other => match other.strip_prefix("header:") {
                Some(h) => RateKey::Header(header_name(h, &format!("{field}.config.by"))?),
                None => {
                    return Err(EnvoyConfigError::new(
                        format!("{field}.config.by"),
                        "`api_key`, `client_address`, `route` or `header:NAME`",
                    ));
                }
            },
        });
        Ok(self)
    }

    async fn run(&self, host: &dyn Host, ex: &Exchange) -> Result<StepOutcome, String> {
        let who = match &self.key {
            Some(RateKey::ApiKey) | None => ex
                .caller
                .as_ref()
                .map_or_else(|| "-".to_owned(), |c| c.id.clone()),
            Some(RateKey::ClientAddress) => match ex.client {
                Some(addr) => addr.to_string(),
                None => {
                    return Err(
                        "rateLimit by client_address: Envoy sent no source.address".to_owned()
                    );
                }
            },
            Some(RateKey::Route) => String::new(),
            // Hashed: a header value may be anything, and counter keys end up in a shared store.
            Some(RateKey::Header(h)) => ex.header(h).map_or_else(|| "-".to_owned(), digest),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let window = now / self.window_secs;
        let key = format!(
            "envoy:{}:{}:{}:{who}",
            ex.route, self.window_secs, self.requests
        );
        let expires = (window + 1) * self.window_secs + 1;
        let counters = host.counters();
        let total = counters
            .add(&key, window, 1, expires)
            .await
            .map_err(|e| format!("rate limit counter: {e}"))?;
        if total > self.requests {
            let retry = ((window + 1) * self.window_secs).saturating_sub(now).max(1);
            return Ok(StepOutcome::Fail(
                Reply::error(429, "rate_limited", "too many requests")
                    .with_header("retry-after", retry.to_string()),
            ));
        }
        Ok(StepOutcome::Pass)
    }
}

fn digest(s: &str) -> String {
    // Not a secret-keeping hash: a short stable name for a bucket (FNV-1a, 64 bits).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `responseBodyTransform`: JSON members removed or masked (by JSON Pointer) in the response
/// body. A body that is not JSON is left as it is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BodyTransform {
    /// Pointers removed. `*` as a segment stands for every element of an array.
    pub remove: Vec<String>,
    /// Pointers whose value is replaced by `mask_with`.
    pub mask: Vec<String>,
    /// The masked value.
    pub mask_with: String,
}

impl Default for BodyTransform {
    fn default() -> Self {
        Self {
            remove: Vec::new(),
            mask: Vec::new(),
            mask_with: "***".to_owned(),
        }
    }
}

impl BodyTransform {
    fn compile(self, field: &str) -> Result<Self, EnvoyConfigError> {
        for (name, list) in [("remove", &self.remove), ("mask", &self.mask)] {
            for p in list {
                if !p.starts_with('/') {
                    return Err(EnvoyConfigError::new(
                        format!("{field}.config.{name}"),
                        format!("`{p}` is not a JSON Pointer (it starts with `/`)"),
                    ));
                }
            }
        }
        if self.remove.is_empty() && self.mask.is_empty() {
            return Err(EnvoyConfigError::new(
                format!("{field}.config"),
                "name at least one pointer in `remove` or `mask`",
            ));
        }
        Ok(self)
    }

    fn run(&self, ex: &mut Exchange, m: &mut Mutations) -> StepOutcome {
        let Some(body) = &ex.response_body else {
            return StepOutcome::Pass;
        };
        let Ok(mut json) = serde_json::from_slice::<Value>(body) else {
            return StepOutcome::Pass;
        };
        let mut changed = false;
        for p in &self.remove {
            changed |= edit(&mut json, &segments(p), &mut |parent, key| match parent {
                Value::Object(o) => o.shift_remove(key).is_some(),
                _ => false,
            });
        }
        for p in &self.mask {
            let with = Value::String(self.mask_with.clone());
            changed |= edit(&mut json, &segments(p), &mut |parent, key| match parent {
                Value::Object(o) => match o.get_mut(key) {
                    Some(v) => {
                        *v = with.clone();
                        true
                    }
                    None => false,
                },
                Value::Array(a) => match key.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    Some(v) => {
                        *v = with.clone();
                        true
                    }
                    None => false,
                },
                _ => false,
            });
        }
        if changed {
            let body = json.to_string().into_bytes();
            ex.response_body = Some(body.clone());
            m.body = Some(body);
        }
        StepOutcome::Pass
    }
}

fn segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Applies `apply(parent, last)` at every place `path` names (`*` fans out over arrays and
/// objects); answers whether anything changed.
fn edit(
    value: &mut Value,
    path: &[String],
    apply: &mut dyn FnMut(&mut Value, &str) -> bool,
) -> bool {
    let Some((head, rest)) = path.split_first() else {
        return false;
    };
    if rest.is_empty() {
        if head == "*" {
            return false;
        }
        return apply(value, head);
    }
    match (head.as_str(), value) {
        ("*", Value::Array(a)) => a.iter_mut().fold(false, |c, v| edit(v, rest, apply) | c),
        ("*", Value::Object(o)) => o.values_mut().fold(false, |c, v| edit(v, rest, apply) | c),
        (k, Value::Object(o)) => o.get_mut(k).is_some_and(|v| edit(v, rest, apply)),
        (k, Value::Array(a)) => k
            .parse::<usize>()
            .ok()
            .and_then(|i| a.get_mut(i))
            .is_some_and(|v| edit(v, rest, apply)),
        _ => false,
    }
}

/// `roleCheck`: the authenticated caller must hold one of `any_of`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleCheck {
    /// Roles any one of which lets the request through.
    pub any_of: Vec<String>,
}

impl RoleCheck {
    fn run(&self, ex: &Exchange) -> StepOutcome {
        let holds = ex
            .caller
            .as_ref()
            .is_some_and(|c| c.roles.iter().any(|r| self.any_of.contains(r)));
        if holds {
            StepOutcome::Pass
        } else {
            StepOutcome::Fail(Reply::error(
                403,
                "forbidden",
                "the caller lacks a required role",
            ))
        }
    }
}
