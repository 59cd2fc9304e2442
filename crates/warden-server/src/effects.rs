//! What a decision leaves behind in the daemon, the [`Effects`] of its [`Pipeline`]: the token
//! (minted when signing is on), the audit entry (waited for per `fsync`), the decision log line
//! and the metrics.
//!
//! [`Pipeline`]: warden_core::Pipeline

use std::sync::Arc;
use std::time::Duration;

use warden::{CompiledPolicy, Decision, Request};
use warden_core::eval::Evaluation;
use warden_core::pipeline::{ApprovalEvent, AuditReceipt, BoxFuture, Caller, Decided, Effects};
use warden_core::state::Approval;

use crate::audit::Audit;
use crate::error::ApiError;
use crate::metrics::{DecisionLabels, Metrics};
use crate::signing::Signing;

/// The daemon's effects: its metrics, its signing key and its audit log.
pub(crate) struct ServerEffects {
    /// The daemon's metrics.
    pub(crate) metrics: Metrics,
    /// Token minting, when `signing_key` is set.
    pub(crate) signing: Option<Signing>,
    /// The audit log, when `audit` is set.
    pub(crate) audit: Option<Audit>,
    /// Whether each decision is logged (`decision_log`).
    pub(crate) decision_log: bool,
    /// Trace spans, when `telemetry.otlp_endpoint` is set.
    pub(crate) telemetry: Option<crate::telemetry::Telemetry>,
    /// The capture for `warden replay`, when `capture` is set.
    pub(crate) capture: Option<crate::capture::Capture>,
    /// The console's live stream, unless the console is disabled.
    pub(crate) live: Option<crate::console::Live>,
}

impl Effects for ServerEffects {
    type Error = ApiError;

    fn seal(
        &self,
        caller: &Caller<'_>,
        request: &Request,
        decision: &mut Decision,
    ) -> Result<(), ApiError> {
        if !caller.tokens {
            return Ok(());
        }
        crate::signing::mint(
            self.signing.as_ref(),
            caller.tenant.unwrap_or(""),
            caller.policy.unwrap_or(""),
            request,
            decision,
        )
    }

    fn audit<'a>(
        &'a self,
        caller: &'a Caller<'a>,
        decided: &'a [Decided<'a>],
    ) -> BoxFuture<'a, Result<Option<AuditReceipt>, ApiError>> {
        Box::pin(async move {
            let tenant = caller.tenant.unwrap_or("");
            if let Some(capture) = &self.capture {
                for one in decided {
                    capture.record(tenant, one.request, one.decision);
                }
            }
            match decided {
                // One decision: appended alone (under `fsync: never` answered once queued).
                [one] => {
                    let ack = crate::audit::audit(
                        self.audit.as_ref(),
                        tenant,
                        one.request,
                        one.decision,
                        one.latency,
                    )?;
                    crate::audit::audit_wait(vec![ack]).await?;
                    Ok(None)
                }
                many => crate::audit::audit_group(self.audit.as_ref(), tenant, many).await,
            }
        })
    }

    fn void<'a>(
        &'a self,
        caller: &'a Caller<'a>,
        policy: &'a CompiledPolicy,
        receipt: AuditReceipt,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(crate::audit::audit_void(
            self.audit.as_ref(),
            caller.tenant.unwrap_or(""),
            policy,
            receipt,
        ))
    }

    fn approval<'a>(
        &'a self,
        event: ApprovalEvent,
        approval: &'a Approval,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        self.metrics
            .approvals
            .get_or_create(&crate::metrics::ApprovalLabels {
                event: event.as_str(),
            })
            .inc();
        tracing::info!(
            approval = %approval.id,
            event = event.as_str(),
            tenant = approval.binding.tenant.as_deref().unwrap_or_default(),
            rule = %approval.rule,
            approver = approval.approver.as_deref().unwrap_or_default(),
            "approval"
        );
        Box::pin(crate::audit::audit_approval(
            self.audit.as_ref(),
            event,
            approval,
        ))
    }

    fn delivered(
        &self,
        caller: &Caller<'_>,
        request: &Request,
        decision: &Decision,
        latency: Duration,
    ) {
        record(self, caller, decision, latency);
        if let Some(live) = &self.live {
            live.publish(caller, request, decision, latency);
        }
    }

    fn state_failed(&self, _error: &warden::StoreError, decided: bool) {
        self.metrics.count_state_failure(decided);
    }

    fn failed_closed(&self, evaluation: &Evaluation) {
        if let Some(failure) = evaluation.failure {
            self.metrics.count_failure(failure);
        }
    }
}

/// Counts a delivered decision and writes its log line.
fn record(effects: &ServerEffects, caller: &Caller<'_>, decision: &Decision, elapsed: Duration) {
    let request_id = caller.request_id;
    let tenant = caller.tenant.unwrap_or("");
    let verdict = decision.verdict.as_str();
    let metrics = &effects.metrics;
    metrics.decision_duration.observe(elapsed.as_secs_f64());
    metrics
        .decisions
        .get_or_create(&DecisionLabels {
            policy: Arc::clone(&decision.policy.name),
            decision: verdict,
        })
        .inc();
    if let Some(telemetry) = &effects.telemetry {
        telemetry.decision(
            crate::telemetry::DecisionAttributes {
                tenant,
                policy: &decision.policy.name,
                version: decision.policy.version.as_deref(),
                digest: &decision.policy.digest,
                verdict,
                rule: decision.rule.as_deref(),
                request_id,
            },
            elapsed,
        );
    }
    if effects.decision_log && tracing::enabled!(target: "warden::decision", tracing::Level::INFO) {
        let latency_us = elapsed.as_micros() as u64;
        // The same line tracing's JSON formatter writes, built directly (half the cost).
        let line = DecisionLine {
            timestamp: crate::snapshot::rfc3339_micros_now(),
            level: "INFO",
            message: "decision",
            request_id,
            tenant,
            policy: &decision.policy.name,
            digest: &decision.policy.digest,
            decision: verdict,
            rule: decision.rule.as_deref(),
            latency_us,
            target: "warden::decision",
        };
        if !crate::logbuf::write_json_line(&line) {
            tracing::info!(
                target: "warden::decision",
                request_id = request_id.unwrap_or_default(),
                tenant = %tenant,
                policy = %decision.policy.name,
                digest = %decision.policy.digest,
                decision = verdict,
                rule = decision.rule.as_deref(),
                latency_us,
                "decision"
            );
        }
    }
}

/// One decision log line: ids, names and outcome only; never arguments, text or keys.
#[derive(serde::Serialize)]
struct DecisionLine<'a> {
    timestamp: String,
    level: &'static str,
    message: &'static str,
    /// Absent for decisions of the MCP mounts (one HTTP request may carry several).
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    tenant: &'a str,
    policy: &'a str,
    digest: &'a str,
    decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    latency_us: u64,
    target: &'static str,
}
