//! The `envoy:` section of `warden serve`'s configuration: where the ext_proc / ext_authz
//! listener binds, how a request names its route, each route's `request` and `response`
//! chains, and the limits. [`EnvoyConfig::compile`] checks it all at load and names the field
//! at fault; nothing here is looked at again while serving.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// Policy agents by name: processes on this host offering policies over a Unix socket
    /// (README.md, "Policy agents"). A step names one of their policies as `AGENT/POLICY`.
    pub agents: BTreeMap<String, AgentConfig>,
}

/// One policy agent: where it listens and how long and how often it is asked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Its Unix socket: a socket owned by the daemon's user with mode 0600 (no group or other
    /// access), else refused, since whoever can write to it answers for the policies.
    pub socket: std::path::PathBuf,
    /// Longest one call (connect, ask, answer) may take, in milliseconds.
    #[serde(default = "default_agent_timeout")]
    pub timeout_ms: u64,
    /// Further attempts after a call that could not connect or timed out (never after an
    /// answer, even a `fail`).
    #[serde(default = "default_agent_retries")]
    pub retries: u32,
    /// How often it is asked whether it is healthy, in milliseconds; while it is not, its steps
    /// fail at once, with the route's fail mode.
    #[serde(default = "default_health_interval")]
    pub health_interval_ms: u64,
}

fn default_agent_timeout() -> u64 {
    200
}

fn default_agent_retries() -> u32 {
    1
}

fn default_health_interval() -> u64 {
    2_000
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
            agents: BTreeMap::new(),
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
    /// `rateLimit`, `responseBodyTransform`, `roleCheck`, `auditLog`; or `AGENT/POLICY`, a
    /// policy of one of the configured `agents`.
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

impl EnvoyConfig {
    /// Each route with the field naming it (`envoy.routes.NAME`, `envoy.default`).
    fn routes_by_field(&self) -> impl Iterator<Item = (String, &RouteConfig)> {
        self.routes
            .iter()
            .map(|(name, r)| (format!("envoy.routes.{name}"), r))
            .chain(self.default.iter().map(|r| ("envoy.default".to_owned(), r)))
    }

    /// The policies `decide` steps name, each with the field naming it, for the daemon to
    /// check against its loaded policies (a step naming none decides by the caller's).
    pub fn decide_policies(&self) -> Vec<(String, String)> {
        let routes = self.routes_by_field();
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

    /// Where steps of built-in policy `policy` stand (`envoy.routes.a.response[0]`), for the
    /// daemon to check what they need (`auditLog` an audit log).
    pub fn steps_of(&self, policy: &str) -> Vec<String> {
        let routes = self.routes_by_field();
        let mut out = Vec::new();
        for (at, route) in routes {
            for (chain, steps) in [("request", &route.request), ("response", &route.response)] {
                for (i, step) in steps.iter().enumerate() {
                    if step.policy == policy {
                        out.push(format!("{at}.{chain}[{i}]"));
                    }
                }
            }
        }
        out
    }
}

/// Largest `max_body_bytes` accepted (the gRPC message holding it must stay decodable).
pub const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;
