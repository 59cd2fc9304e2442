//! The `envoy:` section of `warden serve`'s configuration: where the ext_proc / ext_authz
//! listener binds, how a request names its route, each route's `request` and `response`
//! chains, and the limits. [`EnvoyConfig::compile`] checks it all at load and names the field
//! at fault; nothing here is looked at again while serving.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::steps::Step;

/// The `envoy` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvoyConfig {
    /// Address of the gRPC listener serving ext_proc and ext_authz (its own port, plaintext
    /// HTTP/2: keep it on loopback or a private network, as Envoy's sidecar cluster).
    pub listen: SocketAddr,
    /// Where a request's route name is read: a request header (the default, `x-warden-route`,
    /// which Envoy's route configuration sets with `request_headers_to_add`, so a client cannot
    /// choose it), `attribute:NAME` (an ext_proc attribute or ext_authz context extension) or
    /// `metadata:NAMESPACE:KEY` (filter metadata Envoy sends).
    pub route_from: String,
    /// A request naming no configured route (or none) is answered 404 without reaching the
    /// upstream when true; when false it takes `default` (or, without one, passes unchanged).
    pub fail_on_unknown_route: bool,
    /// The chains of a request whose route is not configured (when `fail_on_unknown_route` is
    /// false).
    pub default: Option<RouteConfig>,
    /// Routes by name.
    pub routes: BTreeMap<String, RouteConfig>,
    /// Limits.
    pub limits: Limits,
}

impl Default for EnvoyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9191)),
            route_from: "x-warden-route".to_owned(),
            fail_on_unknown_route: true,
            default: None,
            routes: BTreeMap::new(),
            limits: Limits::default(),
        }
    }
}

/// Explicit limits of one request through the processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request or response body a chain reads, in bytes; a larger one is answered 413
    /// (request) or 502 (response) rather than forwarded uninspected.
    pub max_body_bytes: usize,
    /// Largest state kept per request between its phases (its headers, route, caller), in
    /// bytes; more is answered 431.
    pub max_state_bytes: usize,
    /// Longest a chain may take on one phase, in milliseconds; a slower one is an internal
    /// error (fail closed unless the route is `fail_open`).
    pub step_timeout_ms: u64,
    /// Most ext_proc streams served at once; more are refused `RESOURCE_EXHAUSTED`.
    pub max_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_state_bytes: 64 * 1024,
            step_timeout_ms: 2_000,
            max_streams: 10_000,
        }
    }
}

/// One route: the chains run on its requests and responses.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Steps run on the request, in order, before it reaches the upstream.
    pub request: Vec<StepConfig>,
    /// Steps run on the upstream's response, in order, before the client sees it.
    pub response: Vec<StepConfig>,
    /// On an internal error (a store down, a step timing out), let the request through as it
    /// is instead of answering 500. A step's deny is still a deny.
    pub fail_open: bool,
}

/// One step of a chain as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// The built-in policy: `allowAll`, `apiKeyAuth`, `decide`, `addSecurityHeaders`,
    /// `rateLimit`, `responseBodyTransform`, `roleCheck`, `auditLog`.
    pub policy: String,
    /// What the step's failure does: `deny` (answer its response), `continue` (ignore it), or
    /// `skip_remaining` (forward without running the rest of the chain).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The policy's settings (each policy rejects fields it does not know).
    #[serde(default)]
    pub config: Value,
}

/// See [`StepConfig::on_failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The step's answer (401, 403, 429, ...) is sent to the client.
    #[default]
    Deny,
    /// The failure is ignored; the next step runs.
    Continue,
    /// The request goes on as it is now, without the remaining steps.
    SkipRemaining,
}

/// The configuration is invalid: names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct EnvoyConfigError {
    /// Dotted path of the field (`envoy.routes.orders.request[1].config.per_second`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl EnvoyConfigError {
    /// An error at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Where a request's route name comes from (compiled [`EnvoyConfig::route_from`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteSource {
    /// A request header (lowercase name).
    Header(String),
    /// An ext_proc attribute / ext_authz context extension.
    Attribute(String),
    /// Filter metadata: namespace and key.
    Metadata(String, String),
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Its name (`default` for the default chains), for logs and metrics.
    pub name: Arc<str>,
    /// Request steps.
    pub request: Vec<(Step, OnFailure)>,
    /// Response steps.
    pub response: Vec<(Step, OnFailure)>,
    /// See [`RouteConfig::fail_open`].
    pub fail_open: bool,
}

impl Route {
    /// Whether a step of the request chain reads the request body.
    pub fn request_needs_body(&self) -> bool {
        self.request.iter().any(|(s, _)| s.needs_body())
    }

    /// Whether a step of the response chain reads the response body.
    pub fn response_needs_body(&self) -> bool {
        self.response.iter().any(|(s, _)| s.needs_body())
    }
}

/// The compiled configuration, swapped whole on reload.
#[derive(Debug)]
pub struct Chains {
    /// Where the route name is read.
    pub route_from: RouteSource,
    /// See [`EnvoyConfig::fail_on_unknown_route`].
    pub fail_on_unknown_route: bool,
    /// See [`EnvoyConfig::default`].
    pub default: Option<Arc<Route>>,
    /// Routes by name.
    pub routes: BTreeMap<String, Arc<Route>>,
    /// Limits.
    pub limits: Limits,
}

impl Chains {
    /// The route named `name` (none given: `None`), or the default per
    /// `fail_on_unknown_route`. `Err(())`: the request is refused as naming no route.
    #[expect(
        clippy::result_unit_err,
        reason = "the one failure has no detail to carry"
    )]
    pub fn route(&self, name: Option<&str>) -> Result<Option<Arc<Route>>, ()> {
        if let Some(route) = name.and_then(|n| self.routes.get(n)) {
            return Ok(Some(Arc::clone(route)));
        }
        if self.fail_on_unknown_route {
            return Err(());
        }
        Ok(self.default.clone())
    }
}

impl EnvoyConfig {
    /// Checks every field and compiles the chains; the error names the field (under
    /// `envoy.`).
    pub fn compile(&self) -> Result<Chains, EnvoyConfigError> {
        let route_from = parse_route_source(&self.route_from)?;
        let l = &self.limits;
        for (name, value) in [
            ("max_body_bytes", l.max_body_bytes as u64),
            ("max_state_bytes", l.max_state_bytes as u64),
            ("step_timeout_ms", l.step_timeout_ms),
            ("max_streams", l.max_streams as u64),
        ] {
            if value == 0 {
                return Err(EnvoyConfigError::new(
                    format!("envoy.limits.{name}"),
                    "must be at least 1",
                ));
            }
        }
        // gRPC messages carry the body; tonic's default cap is 4 MiB.
        if l.max_body_bytes > MAX_BODY_LIMIT {
            return Err(EnvoyConfigError::new(
                "envoy.limits.max_body_bytes",
                format!("at most {MAX_BODY_LIMIT}"),
            ));
        }
        let mut routes = BTreeMap::new();
        for (name, route) in &self.routes {
            if name.is_empty() || name.len() > 128 {
                return Err(EnvoyConfigError::new(
                    "envoy.routes",
                    "a route name is 1 to 128 bytes",
                ));
            }
            routes.insert(
                name.clone(),
                Arc::new(compile_route(name, &format!("envoy.routes.{name}"), route)?),
            );
        }
        let default = match &self.default {
            Some(route) => Some(Arc::new(compile_route("default", "envoy.default", route)?)),
            None => None,
        };
        Ok(Chains {
            route_from,
            fail_on_unknown_route: self.fail_on_unknown_route,
            default,
            routes,
            limits: self.limits,
        })
    }
}

impl EnvoyConfig {
    /// The policies `decide` steps name, each with the field naming it, for the daemon to
    /// check against its loaded policies (a step naming none decides by the caller's).
    pub fn decide_policies(&self) -> Vec<(String, String)> {
        let routes = self
            .routes
            .iter()
            .map(|(name, r)| (format!("envoy.routes.{name}"), r))
            .chain(self.default.iter().map(|r| ("envoy.default".to_owned(), r)));
        let mut out = Vec::new();
        for (at, route) in routes {
            for (i, step) in route.request.iter().enumerate() {
                if step.policy == "decide"
                    && let Some(policy) = step.config.get("policy").and_then(Value::as_str)
                {
                    out.push((
                        format!("{at}.request[{i}].config.policy"),
                        policy.to_owned(),
                    ));
                }
            }
        }
        out
    }
}

/// Largest `max_body_bytes` accepted (the gRPC message holding it must stay decodable).
pub const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;

fn parse_route_source(text: &str) -> Result<RouteSource, EnvoyConfigError> {
    let bad = |m: &str| EnvoyConfigError::new("envoy.route_from", m.to_owned());
    if let Some(name) = text.strip_prefix("attribute:") {
        if name.is_empty() {
            return Err(bad("`attribute:` needs a name"));
        }
        return Ok(RouteSource::Attribute(name.to_owned()));
    }
    if let Some(rest) = text.strip_prefix("metadata:") {
        return match rest.split_once(':') {
            Some((ns, key)) if !ns.is_empty() && !key.is_empty() => {
                Ok(RouteSource::Metadata(ns.to_owned(), key.to_owned()))
            }
            _ => Err(bad("write `metadata:NAMESPACE:KEY`")),
        };
    }
    let valid = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(bad(
            "a header name (letters, digits, `-`, `_`), `attribute:NAME` or `metadata:NAMESPACE:KEY`",
        ));
    }
    Ok(RouteSource::Header(text.to_ascii_lowercase()))
}

fn compile_route(name: &str, at: &str, route: &RouteConfig) -> Result<Route, EnvoyConfigError> {
    let compile = |phase: &str, steps: &[StepConfig]| {
        steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let field = format!("{at}.{phase}[{i}]");
                Step::compile(&s.policy, &s.config, &field, phase == "response")
                    .map(|step| (step, s.on_failure))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Route {
        name: Arc::from(name),
        request: compile("request", &route.request)?,
        response: compile("response", &route.response)?,
        fail_open: route.fail_open,
    })
}
