//! One Prometheus registry with typed label sets.

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
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
    /// `allow` or `deny`.
    pub decision: &'static str,
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
    /// Reloads by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Live sessions.
    pub sessions: Gauge,
    /// Tokio worker threads serving requests.
    pub workers: Gauge,
    /// Audit entries queued for the writer (0 without an audit log).
    pub audit_queue: Gauge,
    /// Sequence number of the last audit entry written (0 without an audit log).
    pub audit_seq: Gauge,
    /// The audit log's last entry: one series labelled with its hash, valued with its sequence
    /// number.
    pub audit_head: Family<HashLabels, Gauge>,
    /// The audit log's last checkpoint, likewise.
    pub audit_checkpoint: Family<HashLabels, Gauge>,
    /// The MCP proxy's counters (`warden_mcp_events_total`).
    pub mcp: std::sync::Arc<crate::mcp::McpMetrics>,
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
        let reloads = Family::<ReloadLabels, Counter>::default();
        let sessions = Gauge::default();
        let workers = Gauge::default();
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
        let mcp = std::sync::Arc::new(crate::mcp::McpMetrics::default());
        registry.register_collector(Box::new(std::sync::Arc::clone(&mcp)));
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ReloadLabels {
                result: result.to_owned(),
            });
        }
        Self {
            registry,
            decisions,
            decision_duration,
            http_requests,
            auth_failures,
            reloads,
            sessions,
            workers,
            audit_queue,
            audit_seq,
            audit_head,
            audit_checkpoint,
            mcp,
        }
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

    /// The registry in the text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
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
