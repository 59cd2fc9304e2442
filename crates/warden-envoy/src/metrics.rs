//! Metrics per route and step, registered in the daemon's one registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::exchange::Phase;

/// Labels of `warden_envoy_steps_total`. Route names and policy names come from the
/// configuration, never from a request, so the label sets are bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// The route (`default` for the default chains).
    pub route: String,
    /// `request` or `response`.
    pub phase: String,
    /// The built-in policy.
    pub step: String,
    /// `pass`, `fail` or `error`.
    pub outcome: String,
}

/// Labels of `warden_envoy_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route (`unknown` for a request naming none configured).
    pub route: String,
    /// `ext_proc` or `ext_authz`.
    pub api: String,
    /// `forwarded`, `replied` (a step's or an error's answer) or `error` (a protocol error).
    pub outcome: String,
}

/// Labels of `warden_envoy_agent_calls_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentCallLabels {
    /// The agent's name in the configuration.
    pub agent: String,
    /// `pass`, `fail`, `error` (unreachable, too slow, an unusable answer) or `down` (not
    /// asked: its health check failed).
    pub outcome: String,
}

/// Labels of `warden_envoy_agent_up`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    /// The agent's name in the configuration.
    pub agent: String,
}

/// The Envoy front door's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Steps run, by route, phase, step and outcome.
    pub steps: Family<StepLabels, Counter>,
    /// Requests, by route, API and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Policy agent calls, by agent and outcome.
    pub agent_calls: Family<AgentCallLabels, Counter>,
    /// Policy agents' health: 1 up, 0 down.
    pub agent_up: Family<AgentLabels, Gauge>,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "warden_envoy_steps",
            "Chain steps run by the Envoy processor, by route, phase, step and outcome",
            self.steps.clone(),
        );
        registry.register(
            "warden_envoy_requests",
            "Requests seen by the Envoy processor, by route, API and outcome",
            self.requests.clone(),
        );
        registry.register(
            "warden_envoy_agent_calls",
            "Calls to Envoy policy agents, by agent and outcome",
            self.agent_calls.clone(),
        );
        registry.register(
            "warden_envoy_agent_up",
            "Whether an Envoy policy agent answers its health check (1) or not (0)",
            self.agent_up.clone(),
        );
    }

    /// Counts one call to a policy agent.
    pub fn agent_call(&self, agent: &str, outcome: &str) {
        self.agent_calls
            .get_or_create(&AgentCallLabels {
                agent: agent.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records a policy agent's health.
    pub fn agent_up(&self, agent: &str, up: bool) {
        self.agent_up
            .get_or_create(&AgentLabels {
                agent: agent.to_owned(),
            })
            .set(i64::from(up));
    }

    /// Counts one step.
    pub fn step(&self, route: &str, phase: Phase, step: &str, outcome: &str) {
        self.steps
            .get_or_create(&StepLabels {
                route: route.to_owned(),
                phase: phase.as_str().to_owned(),
                step: step.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one request.
    pub fn request(&self, route: &str, api: &str, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                api: api.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}
