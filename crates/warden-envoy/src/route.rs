//! The compiled configuration: routes with their compiled steps, swapped whole on reload.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::agent::{Agent, Agents};
use crate::config::{EnvoyConfig, Limits, MAX_BODY_LIMIT, OnFailure, RouteConfig, StepConfig};
use crate::error::EnvoyConfigError;
use crate::steps::Step;

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
    /// The policy agents the chains may call (for their health checks).
    pub agents: Vec<Arc<Agent>>,
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
    /// `envoy.`). With `agents` configured this blocks: each is asked what it offers (within its
    /// timeout), and the steps naming its policies are checked against the answer.
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
        let agents = Agents::discover(&self.agents)?;
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
                Arc::new(compile_route(
                    name,
                    &format!("envoy.routes.{name}"),
                    route,
                    &agents,
                )?),
            );
        }
        let default = match &self.default {
            Some(route) => Some(Arc::new(compile_route(
                "default",
                "envoy.default",
                route,
                &agents,
            )?)),
            None => None,
        };
        Ok(Chains {
            route_from,
            fail_on_unknown_route: self.fail_on_unknown_route,
            default,
            routes,
            limits: self.limits,
            agents: agents.all(),
        })
    }
}

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

fn compile_route(
    name: &str,
    at: &str,
    route: &RouteConfig,
    agents: &Agents,
) -> Result<Route, EnvoyConfigError> {
    let compile = |phase: &str, steps: &[StepConfig]| {
        steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let field = format!("{at}.{phase}[{i}]");
                let response = phase == "response";
                // A policy name with `/` is an agent's: built-in names have none.
                let step = if s.policy.contains('/') {
                    agents
                        .step(&s.policy, &s.config, &field, response)
                        .map(Step::Agent)
                } else {
                    Step::compile(&s.policy, &s.config, &field, response)
                };
                step.map(|step| (step, s.on_failure))
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
