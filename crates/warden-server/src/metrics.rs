//! One Prometheus registry with typed label sets.

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `warden_decisions_total`. Shared and static strings: building the label set on
/// every decision allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Policy name.
    pub policy: Arc<str>,
    /// `allow`, `deny` or `pending`.
    pub decision: &'static str,
}

/// Labels of `warden_llm_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LlmRequestLabels {
    /// The mount (`llm_upstreams` name).
    pub mount: Arc<str>,
    /// The caller's tenant.
    pub tenant: Arc<str>,
    /// The model, when it is in `llm_prices`; else `unpriced` (a client names any model, and
    /// every name would be a series of its own).
    pub model: Arc<str>,
    /// `forwarded`, or the refusal's code (`policy_denied`, `budget_exhausted`, ...); a stream
    /// cut after it was forwarded is counted again under its cause (`content_blocked`, ...).
    pub outcome: &'static str,
}

/// Labels of `warden_llm_tokens_total` and `warden_llm_cost_micro_usd_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LlmUsageLabels {
    /// The mount.
    pub mount: Arc<str>,
    /// The caller's tenant.
    pub tenant: Arc<str>,
    /// The model (as in [`LlmRequestLabels::model`]).
    pub model: Arc<str>,
    /// `input` or `output` tokens (`total` for cost).
    pub direction: &'static str,
}

/// Labels of `warden_approvals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApprovalLabels {
    /// `requested`, `approved`, `denied`, `expired` or `consumed`.
    pub event: &'static str,
}

/// Labels of `warden_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route template (`unmatched` for 404s), never the raw path; borrowed for the
    /// fixed routes so that counting a response allocates nothing.
    pub route: Cow<'static, str>,
    /// Response status code.
    pub status: u16,
}

/// Labels of `warden_connection_timeouts_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    /// `header_read` or `idle`.
    pub kind: &'static str,
}

/// Labels of `warden_decisions_failed_closed_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `rego_limit_exceeded` or `rego_error`.
    pub failure: &'static str,
}

/// Labels of `warden_state_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateFailureLabels {
    /// `closed` (the request was refused) or `open` (decided without the session or uncounted).
    pub mode: &'static str,
}

/// Labels of `warden_audit_head` and `warden_audit_checkpoint`: the entry's hash.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HashLabels {
    /// `sha256:` + hex.
    pub hash: String,
}

/// Labels of `warden_reload_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub result: String,
}

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Decisions by policy and outcome.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Time to decide one request (policy evaluation and session update).
    pub decision_duration: Histogram,
    /// HTTP responses by route and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Requests rejected for a missing, unknown or revoked key.
    pub auth_failures: Counter,
    /// Requests refused because their address is locked out after failed authentications.
    pub auth_lockouts: Counter,
    /// Authentication events that could not be stored (queue full or database failing).
    pub auth_events_dropped: Counter,
    /// Captured requests dropped (the capture queue full).
    pub capture_dropped: Counter,
    /// Live decisions a console viewer missed (it fell more than the stream's buffer behind).
    pub console_dropped: Counter,
    /// Reloads by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Live sessions.
    pub sessions: Gauge,
    /// Tokio worker threads serving requests.
    pub workers: Gauge,
    /// Audit entries queued for the writer (0 without an audit log).
    pub audit_queue: Gauge,
    /// Entries the audit log could not take after their effect could no longer be refused (a
    /// streamed answer's usage, recorded once the answer was sent).
    pub audit_failures: Counter,
    /// Sequence number of the last audit entry written (0 without an audit log).
    pub audit_seq: Gauge,
    /// The audit log's last entry: one series labelled with its hash, valued with its sequence
    /// number.
    pub audit_head: Family<HashLabels, Gauge>,
    /// The audit log's last checkpoint, likewise.
    pub audit_checkpoint: Family<HashLabels, Gauge>,
    /// The MCP proxy's counters (`warden_mcp_events_total`).
    pub mcp: std::sync::Arc<McpMetrics>,
    /// The Envoy processor's counters (`warden_envoy_*`).
    pub envoy: std::sync::Arc<warden_envoy::Metrics>,
    /// Open client connections.
    pub connections: Gauge,
    /// Connections closed at once because `max_connections` were open.
    pub connections_rejected: Counter,
    /// Connections closed for waiting too long for a request, by kind.
    pub connection_timeouts: Family<TimeoutLabels, Counter>,
    /// Decisions denied because the policy could not be evaluated, by failure, on every front
    /// door (`/v1/decide*`, the Data API, the MCP mounts).
    pub failed_closed: Family<FailureLabels, Counter>,
    /// Requests whose state store (sessions, rate-limit counters) failed, by what was done.
    pub state_failures: Family<StateFailureLabels, Counter>,
    /// Steps of approvals, by event.
    pub approvals: Family<ApprovalLabels, Counter>,
    /// LLM exchanges by mount, tenant, model and outcome.
    pub llm_requests: Family<LlmRequestLabels, Counter>,
    /// Tokens the LLM upstreams reported, by mount, tenant, model and direction.
    pub llm_tokens: Family<LlmUsageLabels, Counter>,
    /// What those tokens cost by `llm_prices`, in micro-dollars.
    pub llm_cost: Family<LlmUsageLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        let decision_duration = Histogram::new(exponential_buckets(1e-6, 2.0, 20));
        let http_requests = Family::<HttpLabels, Counter>::default();
        let auth_failures = Counter::default();
        let auth_lockouts = Counter::default();
        let auth_events_dropped = Counter::default();
        let capture_dropped = Counter::default();
        let console_dropped = Counter::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let sessions = Gauge::default();
        let workers = Gauge::default();
        let audit_failures = Counter::default();
        registry.register(
            "warden_audit_failures",
            "Audit entries lost after their effect could no longer be refused (a streamed answer's usage)",
            audit_failures.clone(),
        );
        let audit_queue = Gauge::default();
        let audit_seq = Gauge::default();
        registry.register(
            "warden_audit_queue",
            "Audit entries waiting for the writer",
            audit_queue.clone(),
        );
        registry.register(
            "warden_audit_seq",
            "Sequence number of the last audit entry written",
            audit_seq.clone(),
        );
        registry.register(
            "warden_decisions",
            "Decisions by policy and outcome",
            decisions.clone(),
        );
        registry.register(
            "warden_decision_duration_seconds",
            "Time to decide one request",
            decision_duration.clone(),
        );
        registry.register(
            "warden_http_requests",
            "HTTP responses by route and status",
            http_requests.clone(),
        );
        registry.register(
            "warden_auth_failures",
            "Requests rejected by authentication",
            auth_failures.clone(),
        );
        registry.register(
            "warden_auth_lockouts",
            "Requests refused (429) from addresses locked out after failed authentications",
            auth_lockouts.clone(),
        );
        registry.register(
            "warden_auth_events_dropped",
            "Authentication events not stored in the database (queue full or database failing)",
            auth_events_dropped.clone(),
        );
        registry.register(
            "warden_capture_dropped",
            "Decided requests not captured (the capture queue full)",
            capture_dropped.clone(),
        );
        registry.register(
            "warden_console_events_dropped",
            "Live decisions a console viewer missed (it fell behind the stream's buffer)",
            console_dropped.clone(),
        );
        registry.register(
            "warden_reload",
            "Policy set reloads by result",
            reloads.clone(),
        );
        registry.register("warden_sessions", "Live sessions", sessions.clone());
        registry.register(
            "warden_runtime_workers",
            "Worker threads serving requests",
            workers.clone(),
        );
        let connections = Gauge::default();
        let connections_rejected = Counter::default();
        let connection_timeouts = Family::<TimeoutLabels, Counter>::default();
        registry.register(
            "warden_connections",
            "Open client connections",
            connections.clone(),
        );
        registry.register(
            "warden_connections_rejected",
            "Connections closed at once because max_connections were open",
            connections_rejected.clone(),
        );
        registry.register(
            "warden_connection_timeouts",
            "Connections closed for waiting too long for a request (header_read, idle)",
            connection_timeouts.clone(),
        );
        for kind in ["header_read", "idle"] {
            let _ = connection_timeouts.get_or_create(&TimeoutLabels { kind });
        }
        let failed_closed = Family::<FailureLabels, Counter>::default();
        registry.register(
            "warden_decisions_failed_closed",
            "Decisions denied because the policy could not be evaluated (rego_limit_exceeded, rego_error)",
            failed_closed.clone(),
        );
        for failure in [
            warden_core::eval::Failure::RegoLimitExceeded,
            warden_core::eval::Failure::RegoError,
        ] {
            let _ = failed_closed.get_or_create(&FailureLabels {
                failure: failure.as_str(),
            });
        }
        let state_failures = Family::<StateFailureLabels, Counter>::default();
        registry.register(
            "warden_state_failures",
            "Requests whose state store failed: refused (closed) or decided without it (open)",
            state_failures.clone(),
        );
        for mode in ["closed", "open"] {
            let _ = state_failures.get_or_create(&StateFailureLabels { mode });
        }
        let approvals = Family::<ApprovalLabels, Counter>::default();
        registry.register(
            "warden_approvals",
            "Steps of approvals of held calls (requested, approved, denied, expired, consumed)",
            approvals.clone(),
        );
        for event in ["requested", "approved", "denied", "expired", "consumed"] {
            let _ = approvals.get_or_create(&ApprovalLabels { event });
        }
        let audit_head = Family::<HashLabels, Gauge>::default();
        let audit_checkpoint = Family::<HashLabels, Gauge>::default();
        registry.register(
            "warden_audit_head",
            "The last audit entry: its hash as a label, its sequence number as the value",
            audit_head.clone(),
        );
        registry.register(
            "warden_audit_checkpoint",
            "The last audit checkpoint: the head hash it records as a label, its sequence number as the value",
            audit_checkpoint.clone(),
        );
        let llm_requests = Family::<LlmRequestLabels, Counter>::default();
        let llm_tokens = Family::<LlmUsageLabels, Counter>::default();
        let llm_cost = Family::<LlmUsageLabels, Counter>::default();
        registry.register(
            "warden_llm_requests",
            "LLM exchanges by mount, tenant, model and outcome",
            llm_requests.clone(),
        );
        registry.register(
            "warden_llm_tokens",
            "Tokens the LLM upstreams reported, by mount, tenant, model and direction",
            llm_tokens.clone(),
        );
        registry.register(
            "warden_llm_cost_micro_usd",
            "Cost of the reported tokens by llm_prices, in millionths of a US dollar",
            llm_cost.clone(),
        );
        let mcp = std::sync::Arc::new(McpMetrics::default());
        registry.register_collector(Box::new(std::sync::Arc::clone(&mcp)));
        let envoy = std::sync::Arc::new(warden_envoy::Metrics::default());
        envoy.register(&mut registry);
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ReloadLabels {
                result: result.to_owned(),
            });
        }
        Self {
            approvals,
            llm_requests,
            llm_tokens,
            llm_cost,
            registry,
            decisions,
            decision_duration,
            http_requests,
            auth_failures,
            auth_lockouts,
            auth_events_dropped,
            capture_dropped,
            console_dropped,
            reloads,
            sessions,
            workers,
            audit_queue,
            audit_failures,
            audit_seq,
            audit_head,
            audit_checkpoint,
            mcp,
            envoy,
            connections,
            connections_rejected,
            connection_timeouts,
            failed_closed,
            state_failures,
        }
    }

    /// Counts a request whose state store failed; `open`: it went on without it.
    pub fn count_state_failure(&self, open: bool) {
        let mode = if open { "open" } else { "closed" };
        self.state_failures
            .get_or_create(&StateFailureLabels { mode })
            .inc();
    }

    /// Counts a decision that failed closed.
    pub fn count_failure(&self, failure: warden_core::eval::Failure) {
        self.failed_closed
            .get_or_create(&FailureLabels {
                failure: failure.as_str(),
            })
            .inc();
    }

    /// Sets `warden_audit_head` to one series: `hash`, valued `seq`.
    pub fn set_audit_head(&self, hash: &str, seq: u64) {
        set_hash_gauge(&self.audit_head, hash, seq);
    }

    /// Sets `warden_audit_checkpoint` to one series: `hash`, valued `seq`.
    pub fn set_audit_checkpoint(&self, hash: &str, seq: u64) {
        set_hash_gauge(&self.audit_checkpoint, hash, seq);
    }

    /// Counts a reload.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                result: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }

    /// Adds the session store's counters, read at each scrape:
    /// `warden_session_flush_failures_total`, `warden_session_flush_failing` (1 while the last
    /// flush failed), `warden_sessions_unflushed` and `warden_sessions_evicted_total`.
    pub fn register_store(&mut self, store: Arc<warden_store::EmbeddedSessionStore>) {
        self.registry
            .register_collector(Box::new(StoreMetrics(store)));
    }

    /// The registry in the text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The session store's own counters, encoded at scrape time.
#[derive(Debug)]
struct StoreMetrics(Arc<warden_store::EmbeddedSessionStore>);

impl prometheus_client::collector::Collector for StoreMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let store = &self.0;
        let counters = [
            (
                "warden_session_flush_failures",
                "Session store flushes that failed (their sessions are retried)",
                store.flush_failures(),
            ),
            (
                "warden_sessions_evicted",
                "Sessions evicted to stay within max_sessions (idle the longest first)",
                store.evicted(),
            ),
        ];
        for (name, help, value) in counters {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        let gauges = [
            (
                "warden_session_flush_failing",
                "1 while the last session store flush failed",
                i64::from(store.flush_failing()),
            ),
            (
                "warden_sessions_unflushed",
                "Sessions changed and not yet written to the session database",
                i64::try_from(store.pending()).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, value) in gauges {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)?;
        }
        Ok(())
    }
}

/// Replaces the one series of a hash-labelled gauge (a scrape never sees two heads).
fn set_hash_gauge(family: &Family<HashLabels, Gauge>, hash: &str, seq: u64) {
    let labels = HashLabels {
        hash: hash.to_owned(),
    };
    if family.get(&labels).is_none() {
        family.clear();
    }
    family
        .get_or_create(&labels)
        .set(i64::try_from(seq).unwrap_or(i64::MAX));
}

/// The enforcer counters of the mounted upstreams, exported on `/metrics` as
/// `warden_mcp_events_total{upstream, event}`.
#[derive(Debug, Default)]
pub struct McpMetrics {
    upstreams: parking_lot::RwLock<Vec<(String, Arc<warden_mcp::Enforcer>)>>,
}

impl McpMetrics {
    /// Replaces the exported upstreams.
    pub(crate) fn set(&self, upstreams: Vec<(String, Arc<warden_mcp::Enforcer>)>) {
        *self.upstreams.write() = upstreams;
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    upstream: String,
    event: String,
}

impl Collector for McpMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let upstreams = self.upstreams.read();
        if upstreams.is_empty() {
            return Ok(());
        }
        let mut metric = encoder.encode_descriptor(
            "warden_mcp_events",
            "MCP proxy events by upstream: calls allowed/denied/held (changed tool), redactions, blocked results, hidden tools, tool definition changes, failures",
            None,
            MetricType::Counter,
        )?;
        for (name, enforcer) in upstreams.iter() {
            let c = enforcer.counters();
            for (event, value) in [
                ("call_allowed", &c.calls_allowed),
                ("call_denied", &c.calls_denied),
                ("call_held", &c.calls_held),
                ("call_pending", &c.calls_pending),
                ("args_redacted", &c.args_redacted),
                ("result_blocked", &c.results_blocked),
                ("result_redacted", &c.results_redacted),
                ("tool_hidden", &c.tools_hidden),
                ("pin_change", &c.pin_changes),
                ("failure", &c.failures),
                ("message_refused", &c.refused),
                ("answer_unmatched", &c.unmatched),
            ] {
                let labels = EventLabels {
                    upstream: name.clone(),
                    event: event.to_owned(),
                };
                ConstCounter::new(value.load(Relaxed)).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
