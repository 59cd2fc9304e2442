//! The audit log in the daemon: one hash-chained entry per decision (a batch's as one group, a
//! voided group marked), its checkpoint and metrics (`docs/serve.md`, "Proof"). Off unless
//! `audit` is configured. The audit key is never logged.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use warden::{Decision, Request as DecisionRequest};
use warden_audit::{AuditConfig, AuditError, AuditLog, AuditRecord, FsyncPolicy, FullPolicy};
use warden_proof::{KeyProvider, MacKey, SecretString, SoftwareKeyProvider};

use crate::AppState;
use crate::auth::Caller;
use crate::config::{AuditFsync, AuditOnFull, AuditSettings};
use crate::error::{ApiError, ErrorCode};
use warden_core::pipeline::{ApprovalEvent, AuditReceipt, Decided};
use warden_core::state::Approval;

use crate::keyfile::read_secret_file;
use crate::signing::Signing;

/// The running audit log and how decisions wait for it.
pub(crate) struct Audit {
    log: AuditLog,
    fsync: AuditFsync,
    on_full: AuditOnFull,
}

/// Opens the audit log (continuing an existing one): takes the directory's lock, recovers a torn
/// tail (logged), and refuses a log shorter than its checkpoint. Checkpoints are MACed with the
/// audit key and signed with the token signing key when `signing` is configured. Errors never
/// include key material.
pub(crate) fn open_audit(
    settings: &AuditSettings,
    signing: Option<&Signing>,
) -> Result<Audit, String> {
    let mac: Option<Arc<dyn KeyProvider>> = match &settings.key_file {
        Some(path) => {
            let text = read_secret_file("audit.key_file", path)?;
            let key = MacKey::from_hex(&SecretString::from(text))
                .map_err(|e| format!("audit.key_file `{}`: {e}", path.display()))?;
            Some(Arc::new(SoftwareKeyProvider::mac_only(key)))
        }
        None => None,
    };
    let mut config = AuditConfig::new(&settings.dir);
    config.fsync = match settings.fsync {
        AuditFsync::Always => FsyncPolicy::Always,
        AuditFsync::Batch => FsyncPolicy::Batch,
        AuditFsync::Never => FsyncPolicy::Never,
    };
    config.batch_window = std::time::Duration::from_millis(settings.batch_window_ms.max(1));
    config.max_file_bytes = settings.max_file_bytes.max(1);
    config.queue_capacity = settings.queue.max(1);
    config.full = match settings.on_full {
        AuditOnFull::Block => FullPolicy::Block,
        AuditOnFull::Deny => FullPolicy::Deny,
    };
    config.checkpoint_interval = (settings.checkpoint_interval_ms > 0)
        .then(|| std::time::Duration::from_millis(settings.checkpoint_interval_ms));
    config.checkpoint_signer = signing.map(Signing::provider);
    let macs = mac.is_some();
    let log = AuditLog::open(config, mac)
        .map_err(|e| format!("audit.dir `{}`: {e}", settings.dir.display()))?;
    if let Some((file, r)) = log.recovered() {
        if r.newline_added {
            tracing::warn!(
                file = %file.display(),
                offset = r.offset,
                "audit tail recovery: the last entry lacked its final newline; added it \
                 (no entry removed)"
            );
        } else {
            tracing::warn!(
                file = %file.display(),
                offset = r.offset,
                removed_bytes = r.removed_bytes,
                removed_sha256 = r.removed_sha256.as_deref().unwrap_or(""),
                "audit tail recovery: removed a partial last line (a write torn by a crash; \
                 never acknowledged)"
            );
        }
    }
    let head = log.head();
    tracing::info!(
        dir = %settings.dir.display(),
        fsync = match settings.fsync {
            AuditFsync::Always => "always",
            AuditFsync::Batch => "batch",
            AuditFsync::Never => "never",
        },
        mac = macs,
        seq = head.seq,
        hash = %head.hash,
        checkpoint_seq = log.last_checkpoint().map(|c| c.seq),
        "audit log open"
    );
    Ok(Audit {
        log,
        fsync: settings.fsync,
        on_full: settings.on_full,
    })
}

impl Audit {
    /// Queued entries, the last written sequence number, and whether the writer failed.
    pub(crate) fn status(&self) -> (u64, u64, bool) {
        (
            self.log.queued(),
            self.log.head().seq,
            self.log.failure().is_some(),
        )
    }

    /// Writes and syncs everything queued and writes a checkpoint of the head (at shutdown);
    /// returns the head, or `None` when that failed (logged).
    pub(crate) fn flush(&self) -> Option<warden_audit::Anchor> {
        match self.log.checkpoint() {
            Ok(cp) => {
                tracing::info!(seq = cp.seq, hash = %cp.head, "audit log flushed and checkpointed");
                Some(cp.anchor())
            }
            Err(e) => {
                tracing::error!(error = %e, "audit log flush or checkpoint failed");
                None
            }
        }
    }

    /// The head (last entry written) and the last checkpoint, for `/metrics`.
    pub(crate) fn heads(&self) -> (warden_audit::Anchor, Option<warden_audit::Checkpoint>) {
        (self.log.head(), self.log.last_checkpoint())
    }
}

pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A pending audit acknowledgement: resolves once the entry is durable per `fsync`.
pub(crate) type AuditAck = Option<tokio::sync::oneshot::Receiver<Result<u64, AuditError>>>;

/// Queues the audit entry of one decision. Under `fsync: always` and `batch` the caller must
/// await the returned acknowledgement ([`audit_wait`]) before answering.
pub(crate) fn audit(
    audit: Option<&Audit>,
    tenant: &str,
    request: &DecisionRequest,
    decision: &Decision,
    latency: std::time::Duration,
) -> Result<AuditAck, ApiError> {
    let Some(audit) = audit else {
        return Ok(None);
    };
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    let record =
        AuditRecord::from_decision(Some(tenant), request, decision, unix_now_ms(), latency_us)
            .map_err(audit_error)?;
    queue(audit, record)
}

/// Audits a batch's decisions as one group (see [`warden_audit::AuditLog::append_group_then`])
/// and waits until the group is written (and durable per `fsync`): all of its entries are then
/// in the log, or none is and the error is returned (503 `audit_unavailable` for a full queue
/// under `on_full: deny`, else 500). `decided` pairs each request with its decision and the
/// time its evaluation took. Returns the sequence numbers of the group's first and last entry;
/// `None` without an audit log (or for no decision).
pub(crate) async fn audit_group(
    audit: Option<&Audit>,
    tenant: &str,
    decided: &[Decided<'_>],
) -> Result<Option<AuditReceipt>, ApiError> {
    let Some(audit) = audit else {
        return Ok(None);
    };
    let count = u64::try_from(decided.len()).unwrap_or(u64::MAX);
    if count == 0 {
        return Ok(None);
    }
    let now = unix_now_ms();
    let records = decided
        .iter()
        .map(|d| {
            let latency_us = u64::try_from(d.latency.as_micros()).unwrap_or(u64::MAX);
            AuditRecord::from_decision(Some(tenant), d.request, d.decision, now, latency_us)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(audit_error)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let send = || {
        audit.log.append_group_then(
            records,
            Box::new(move |r| {
                // The batch may have been abandoned; then nobody waits for the answer.
                let _ = tx.send(r);
            }),
        )
    };
    let blocking = audit.on_full == AuditOnFull::Block
        && tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let sent = if blocking {
        // A full queue blocks this worker thread, not the runtime's others.
        tokio::task::block_in_place(send)
    } else {
        send()
    };
    sent.map_err(audit_error)?;
    match rx.await {
        Ok(Ok(last)) => Ok(Some(AuditReceipt {
            first: last.saturating_sub(count - 1),
            last,
        })),
        Ok(Err(e)) => Err(audit_error(e)),
        Err(_) => Err(audit_error(AuditError::Closed)),
    }
}

/// `kind` and `decision` of the entry that marks a batch's entries as not delivered.
pub(crate) const VOID_KIND: &str = "void";

/// Records that the entries `first..=last` (a batch's group, see [`audit_group`]) were not
/// delivered and changed nothing: the batch is decided again. The entry's `rule` holds the range
/// (`seq 41..=52`); it is written like any entry and waited for (the retry must not be answered
/// while the log still says the voided decisions stand).
pub(crate) async fn audit_void(
    audit: Option<&Audit>,
    tenant: &str,
    policy: &warden::CompiledPolicy,
    AuditReceipt { first, last }: AuditReceipt,
) -> Result<(), ApiError> {
    let Some(audit) = audit else {
        return Ok(());
    };
    let record = AuditRecord {
        time_ms: unix_now_ms(),
        tenant: Some(tenant.to_owned()),
        kind: VOID_KIND.to_owned(),
        decision: VOID_KIND.to_owned(),
        rule: Some(format!("seq {first}..={last}")),
        policy: policy.info.digest.to_string(),
        ..AuditRecord::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    audit
        .log
        .append_group_then(
            vec![record],
            Box::new(move |r| {
                // As in `audit_group`.
                let _ = tx.send(r);
            }),
        )
        .map_err(audit_error)?;
    match rx.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(audit_error(e)),
        Err(_) => Err(audit_error(AuditError::Closed)),
    }
}

/// An entry that records an event rather than a decision (an approval's step, a change made by
/// a person or by a reload, an exchange an Envoy route logs). Only the members an event has are
/// set; the rest are empty.
#[derive(Default)]
pub(crate) struct AuditEvent<'a> {
    /// The entry's `kind`.
    pub kind: &'static str,
    /// What happened (the entry's `decision`).
    pub action: &'a str,
    /// What it happened to (the entry's `rule`).
    pub target: Option<String>,
    /// The tenant.
    pub tenant: Option<String>,
    /// Who did it.
    pub principal: Option<String>,
    /// The session.
    pub session: Option<String>,
    /// The tool (or what stands in its place).
    pub tool: Option<String>,
    /// What was written or bound, recorded as its hash only (`args_hash`).
    pub content: Option<&'a Value>,
    /// The hash the entry binds, when computed already (instead of `content`).
    pub content_hash: Option<String>,
    /// A policy digest or definition hash.
    pub policy: String,
    /// How long it took.
    pub latency_us: u64,
    /// The model (an LLM exchange's, as forwarded).
    pub model: Option<String>,
    /// Prompt tokens, as the upstream reported them.
    pub input_tokens: Option<u64>,
    /// Answer tokens, as the upstream reported them.
    pub output_tokens: Option<u64>,
    /// Their cost in micro-dollars (priced models).
    pub cost_micro_usd: Option<u64>,
}

impl AuditEvent<'_> {
    fn into_record(self) -> Result<AuditRecord, ApiError> {
        let args_hash = match (self.content_hash, self.content) {
            (Some(hash), _) => Some(hash),
            (None, Some(content)) => Some(
                warden_proof::args_hash(content)
                    .map_err(|e| audit_error(AuditError::Encode(e.to_string())))?,
            ),
            (None, None) => None,
        };
        Ok(AuditRecord {
            time_ms: unix_now_ms(),
            tenant: self.tenant,
            principal: self.principal,
            session: self.session,
            kind: self.kind.to_owned(),
            tool: self.tool,
            args_hash,
            decision: self.action.to_owned(),
            rule: self.target,
            policy: self.policy,
            latency_us: self.latency_us,
            model: self.model,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_micro_usd: self.cost_micro_usd,
            ..AuditRecord::default()
        })
    }
}

/// Appends `event` and waits until it is written (and durable per `fsync`); without an audit log
/// does nothing.
pub(crate) async fn audit_event(
    audit: Option<&Audit>,
    event: AuditEvent<'_>,
) -> Result<(), ApiError> {
    let Some(audit) = audit else {
        return Ok(());
    };
    let ack = queue(audit, event.into_record()?)?;
    audit_wait(vec![ack]).await
}

/// `kind` of the audit entries of an approval's steps.
pub(crate) const APPROVAL_KIND: &str = "approval";

/// Appends the entry of one step of an approval and waits for it (per `fsync`): kind
/// `approval`, `decision` the step (`requested`, `approved`, `denied`, `expired`, `consumed`),
/// `rule` the approval's id and its ask rule (`apr_... ask-rule`), `args_hash` the hash the
/// approval binds (keyed like every entry's when the log has a key; never the arguments), and
/// `principal` the agent's, or for `approved` and `denied` the approver (`key:<id>`). The
/// approver's reason is kept with the approval, not in the log (free text).
pub(crate) async fn audit_approval(
    audit: Option<&Audit>,
    event: ApprovalEvent,
    approval: &Approval,
) -> Result<(), ApiError> {
    let principal = match (event, &approval.approver) {
        (ApprovalEvent::Approved | ApprovalEvent::Denied, Some(approver)) => {
            Some(format!("key:{approver}"))
        }
        _ => approval.binding.principal.clone(),
    };
    let event = AuditEvent {
        kind: APPROVAL_KIND,
        action: event.as_str(),
        target: Some(format!("{} {}", approval.id, approval.rule)),
        tenant: approval.binding.tenant.clone(),
        principal,
        session: approval.binding.session.clone(),
        tool: Some(approval.binding.tool.clone()),
        content_hash: Some(approval.binding.args_sha256.clone()),
        policy: approval.policy_digest.clone(),
        ..AuditEvent::default()
    };
    audit_event(audit, event).await
}

/// `kind` of the audit entry of a change made through OPA's policy and data API.
pub(crate) const POLICY_CHANGE_KIND: &str = "policy_change";

/// Appends the entry of a change made through OPA's policy and data API and waits for it (per
/// `fsync`): kind `policy_change`, `decision` the action (`put_policy`, `delete_policy`,
/// `put_data`, `patch_data`, `delete_data`), `rule` what it changed (a module id, a data path),
/// `principal` the admin key (`key:<id>`), `args_hash` the hash of what was written (never the
/// content), `policy` the digest of the policy as now served.
pub(crate) async fn audit_policy_change(
    audit: Option<&Audit>,
    tenant: &str,
    admin_key: &str,
    action: &str,
    target: String,
    content: &Value,
    digest: &str,
) -> Result<(), ApiError> {
    let event = AuditEvent {
        kind: POLICY_CHANGE_KIND,
        action,
        target: Some(target),
        tenant: Some(tenant.to_owned()),
        principal: Some(format!("key:{admin_key}")),
        content: Some(content),
        policy: digest.to_owned(),
        ..AuditEvent::default()
    };
    audit_event(audit, event).await
}

/// `kind` of the audit entry of a change a person made to a session (the console).
pub(crate) const SESSION_CHANGE_KIND: &str = "session_change";

/// Appends the entry of a taint cleared by a person and waits for it (per `fsync`): kind
/// `session_change`, `decision` `clear_taint`, `rule` the taint, `tenant` and `session` the
/// session's, `principal` the admin key (`key:<id>`), `args_hash` the hash of the taint and the
/// reason (the reason itself is in the daemon's log line, not the audit log).
pub(crate) async fn audit_taint_cleared(
    audit: Option<&Audit>,
    tenant: &str,
    session: &str,
    admin_key: &str,
    taint: &str,
    reason: &str,
) -> Result<(), ApiError> {
    let content = serde_json::json!({ "taint": taint, "reason": reason });
    let event = AuditEvent {
        kind: SESSION_CHANGE_KIND,
        action: "clear_taint",
        target: Some(taint.to_owned()),
        tenant: Some(tenant.to_owned()),
        principal: Some(format!("key:{admin_key}")),
        session: Some(session.to_owned()),
        content: Some(&content),
        ..AuditEvent::default()
    };
    audit_event(audit, event).await
}

/// `kind` of the audit entry of a changed MCP tool definition approved by a person (the console).
pub(crate) const PIN_CHANGE_KIND: &str = "pin_change";

/// Appends the entry of a changed MCP tool definition approved by a person and waits for it (per
/// `fsync`): kind `pin_change`, `decision` `approve_pin`, `tool` the tool, `rule` the mount
/// (upstream name), `principal` the admin key (`key:<id>`), `policy` the approved definition's
/// hash, `args_hash` the hash of the mount, tool, both definition hashes and the reason (the
/// reason itself is in the daemon's log line).
pub(crate) async fn audit_pin_approved(
    audit: Option<&Audit>,
    admin_key: &str,
    upstream: &str,
    tool: &str,
    approved_before: &str,
    approved_now: &str,
    reason: &str,
) -> Result<(), ApiError> {
    let content = serde_json::json!({
        "upstream": upstream,
        "tool": tool,
        "before": approved_before,
        "approved": approved_now,
        "reason": reason,
    });
    let event = AuditEvent {
        kind: PIN_CHANGE_KIND,
        action: "approve_pin",
        target: Some(upstream.to_owned()),
        principal: Some(format!("key:{admin_key}")),
        tool: Some(tool.to_owned()),
        content: Some(&content),
        policy: approved_now.to_owned(),
        ..AuditEvent::default()
    };
    audit_event(audit, event).await
}

/// `kind` of the audit entry an Envoy route's `auditLog` step writes.
pub(crate) const EXCHANGE_KIND: &str = "http_exchange";

/// Appends the entry of an `auditLog` step and waits for it (per `fsync`): kind `http_exchange`,
/// `decision` the chain (`request`, or `response` and the status: `response 404`), `rule` the
/// route, `tool` the method, `principal` and `tenant` the caller's once a step authenticated
/// one, `args_hash` the hash of the method, the target (path and query: never written, as it
/// may carry personal data) and the status. An error fails the step (closed).
pub(crate) async fn audit_exchange(
    audit: Option<&Audit>,
    record: warden_envoy::ExchangeRecord,
) -> Result<(), ApiError> {
    let content = serde_json::json!({
        "method": record.method,
        "target": record.target,
        "status": record.status,
    });
    let action = match record.status {
        Some(status) => format!("{} {status}", record.phase.as_str()),
        None => record.phase.as_str().to_owned(),
    };
    let event = AuditEvent {
        kind: EXCHANGE_KIND,
        action: &action,
        target: Some(record.route),
        tenant: record.tenant,
        principal: record.principal,
        tool: Some(record.method),
        content: Some(&content),
        ..AuditEvent::default()
    };
    if audit.is_none() {
        // Checked at load: a route with an `auditLog` step needs the log.
        return Err(ApiError::internal());
    }
    audit_event(audit, event).await
}

/// `kind` of the audit entry of a streamed LLM answer's usage.
pub(crate) const STREAM_USAGE_KIND: &str = "stream_usage";

/// How a streamed LLM answer ended, for its usage entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// The upstream ended it.
    Ended,
    /// Warden cut it (a finding that blocks, an upstream that stalled or failed).
    Cut,
    /// The client left before its end.
    Left,
}

/// Appends the usage of a streamed LLM answer once it is over, and waits for it (per `fsync`):
/// its text was decided chunk by chunk before the upstream reported what it cost, so this entry
/// carries the cost: kind `stream_usage`, `decision` `ended`, `cut` or `left`, `rule` the mount,
/// `tenant`, `model` (as forwarded), `input_tokens`, `output_tokens` (none when the upstream
/// reported none) and `cost_micro_usd` (priced models).
pub(crate) async fn audit_stream_usage(
    audit: Option<&Audit>,
    mount: &str,
    tenant: &str,
    model: &str,
    usage: Option<(u64, u64, Option<u64>)>,
    end: StreamEnd,
) -> Result<(), ApiError> {
    let event = AuditEvent {
        kind: STREAM_USAGE_KIND,
        action: match end {
            StreamEnd::Ended => "ended",
            StreamEnd::Cut => "cut",
            StreamEnd::Left => "left",
        },
        target: Some(mount.to_owned()),
        tenant: Some(tenant.to_owned()),
        model: Some(model.to_owned()),
        input_tokens: usage.map(|(input, _, _)| input),
        output_tokens: usage.map(|(_, output, _)| output),
        cost_micro_usd: usage.and_then(|(_, _, cost)| cost),
        ..AuditEvent::default()
    };
    audit_event(audit, event).await
}

/// `kind` of the audit entry of a reload that changed what the daemon serves.
pub(crate) const CONFIG_CHANGE_KIND: &str = "config_change";

/// Appends the entry of a reload that changed the policies or the Envoy routes and waits for it
/// (per `fsync`): kind `config_change`, `decision` `reload`, `rule` what changed (`policies
/// a, b; envoy`), `args_hash` the hash of `served` (each policy's digest and the Envoy section
/// as now served). The reload is refused when the entry cannot be written.
pub(crate) async fn audit_config_change(
    audit: Option<&Audit>,
    changed: String,
    served: &Value,
) -> Result<(), ApiError> {
    let event = AuditEvent {
        kind: CONFIG_CHANGE_KIND,
        action: "reload",
        target: Some(changed),
        content: Some(served),
        ..AuditEvent::default()
    };
    audit_event(audit, event).await
}

/// `kind` of the audit entry of a Data API query against a Rego policy.
pub(crate) const DATA_QUERY_KIND: &str = "data_query";

/// The `decision` an audit entry records for a Rego Data API query: `allow` for `true`, `deny`
/// for `false` or undefined, `value` for any other result, `error` when the evaluation failed or
/// ran over a limit (answered 500 `evaluation_error`). The result itself is never recorded.
pub(crate) fn data_query_outcome<E>(result: &Result<Option<Value>, E>) -> &'static str {
    match result {
        Ok(Some(Value::Bool(true))) => "allow",
        Ok(Some(Value::Bool(false)) | None) => "deny",
        Ok(Some(_)) => "value",
        Err(_) => "error",
    }
}

/// Queues the audit entry of one Data API query against a Rego policy (`POST /v1/data/{path}`):
/// kind `data_query`, no tool, `args_hash` of `input` (null without one; the input itself is
/// never recorded), `rule` the query (`data.authz.allow`), `decision` per
/// [`data_query_outcome`], `policy` the Rego policy's digest. Awaited like [`audit`].
pub(crate) fn audit_data_query(
    state: &AppState,
    caller: &Caller,
    policy_digest: &str,
    query: &str,
    input: Option<&Value>,
    outcome: &str,
    started: Instant,
) -> Result<AuditAck, ApiError> {
    let Some(audit) = &state.effects().audit else {
        return Ok(None);
    };
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let record = AuditEvent {
        kind: DATA_QUERY_KIND,
        action: outcome,
        target: Some(query.to_owned()),
        tenant: Some(caller.tenant.to_string()),
        content: input,
        policy: policy_digest.to_owned(),
        latency_us,
        ..AuditEvent::default()
    }
    .into_record()?;
    queue(audit, record)
}

/// Appends `record`; under `fsync: always` and `batch` returns the acknowledgement to await.
fn queue(audit: &Audit, record: AuditRecord) -> Result<AuditAck, ApiError> {
    let send = |record: AuditRecord| -> Result<AuditAck, AuditError> {
        if audit.fsync == AuditFsync::Never {
            audit.log.append(record)?;
            return Ok(None);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        audit.log.append_then(
            record,
            Box::new(move |r| {
                // The request may have timed out or its client gone: nobody waits for the answer
                // (the entry itself is written either way; this only reports it).
                let _ = tx.send(r);
            }),
        )?;
        Ok(Some(rx))
    };
    let blocking = audit.on_full == AuditOnFull::Block
        && tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let result = if blocking {
        // A full queue blocks this worker thread, not the runtime's others.
        tokio::task::block_in_place(|| send(record))
    } else {
        send(record)
    };
    result.map_err(audit_error)
}

/// Waits for the acknowledgements of [`audit`].
pub(crate) async fn audit_wait(acks: Vec<AuditAck>) -> Result<(), ApiError> {
    for ack in acks.into_iter().flatten() {
        match ack.await {
            Ok(Ok(_seq)) => {}
            Ok(Err(e)) => return Err(audit_error(e)),
            Err(_) => return Err(audit_error(AuditError::Closed)),
        }
    }
    Ok(())
}

fn audit_error(e: AuditError) -> ApiError {
    match e {
        AuditError::QueueFull => {
            tracing::warn!("audit queue full; answering 503");
            ApiError::new(
                ErrorCode::AuditUnavailable,
                "the audit log cannot take the decision now",
            )
            .retry_after(1)
        }
        other => {
            tracing::error!(error = %other, "audit log failed; answering 500");
            ApiError::internal()
        }
    }
}

/// Sets the audit head and checkpoint metrics (`warden_audit_head{hash}` and
/// `warden_audit_checkpoint{hash}`, each valued with the sequence number).
pub(crate) fn audit_metrics(state: &AppState) {
    let Some(audit) = &state.effects().audit else {
        return;
    };
    let (head, checkpoint) = audit.heads();
    let metrics = state.metrics();
    metrics.set_audit_head(&head.hash, head.seq);
    if let Some(cp) = checkpoint {
        metrics.set_audit_checkpoint(&cp.head, cp.seq);
    }
}

/// `GET /v1/audit/checkpoint`: syncs the log, writes a checkpoint when it grew since the last
/// one, and answers the latest checkpoint (`{v, seq, head, time, mac?, kid?, sig?}`), for
/// `warden audit verify --checkpoint URL` or an external copy. 404 `audit_disabled` without an
/// audit log.
pub(crate) async fn checkpoint(State(state): State<AppState>) -> Response {
    let Some(audit) = &state.effects().audit else {
        return ApiError::new(
            ErrorCode::AuditDisabled,
            "there is no audit log (no `audit` configured)",
        )
        .into_response();
    };
    let result = if tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
    {
        tokio::task::block_in_place(|| audit.log.checkpoint())
    } else {
        audit.log.checkpoint()
    };
    match result {
        Ok(cp) => Json(cp).into_response(),
        Err(e) => audit_error(e).into_response(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::ServeConfig;
    use crate::signing::load_signing;
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn proof_is_off_by_default_and_audit_fields_default() {
        let config = ServeConfig::default();
        assert!(config.signing_key.is_none());
        assert!(config.audit.is_none());
        assert_eq!(config.token_ttl, 30);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.yaml");
        std::fs::write(
            &path,
            "signing_key: keys/signing.pem\ntoken_ttl: 5\naudit: { dir: audit, fsync: always }\n",
        )
        .unwrap();
        let config = ServeConfig::load(&path).unwrap();
        assert_eq!(
            config.signing_key.as_deref(),
            Some(dir.path().join("keys/signing.pem").as_path())
        );
        assert_eq!(config.token_ttl, 5);
        let audit = config.audit.unwrap();
        assert_eq!(audit.dir, dir.path().join("audit"));
        assert_eq!(audit.fsync, AuditFsync::Always);
        assert_eq!(audit.on_full, AuditOnFull::Deny);
        assert_eq!(audit.batch_window_ms, 10);
        assert_eq!(audit.queue, 65_536);
        assert!(audit.key_file.is_none());

        std::fs::write(&path, "audit: { fsync: sometimes }\n").unwrap();
        assert!(ServeConfig::load(&path).is_err());
        std::fs::write(&path, "audit: { dirr: x }\n").unwrap();
        assert!(ServeConfig::load(&path).is_err());
    }

    #[test]
    fn full_queue_is_503_and_writer_failure_500() {
        let full = audit_error(AuditError::QueueFull);
        assert_eq!(full.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(full.code, crate::error::ErrorCode::AuditUnavailable);
        assert_eq!(full.retry_after, Some(1));
        let failed = audit_error(AuditError::Writer("disk full".into()));
        assert_eq!(failed.status, axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!failed.message.contains("disk"));
    }

    #[test]
    fn data_query_outcomes_classify_without_the_value() {
        let ok = |v: Option<Value>| data_query_outcome::<()>(&Ok(v));
        assert_eq!(ok(Some(json!(true))), "allow");
        assert_eq!(ok(Some(json!(false))), "deny");
        assert_eq!(ok(None), "deny");
        for v in [
            json!({"a": 1}),
            json!([true]),
            json!("true"),
            json!(1),
            Value::Null,
        ] {
            assert_eq!(ok(Some(v)), "value");
        }
        assert_eq!(data_query_outcome::<()>(&Err(())), "error");
    }

    #[test]
    fn key_errors_name_the_file_not_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("bad.pem");
        std::fs::write(
            &pem,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        // Private, so that they are refused for their content, not their mode.
        let private = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        private(&pem);
        let Err(e) = load_signing(
            &pem,
            30,
            Arc::new(warden::state::MemoryNonceStore::default()),
        ) else {
            panic!("a bad key loads")
        };
        assert!(e.contains("bad.pem") && !e.contains("c2VjcmV0"), "{e}");
        let key_file = dir.path().join("audit.key");
        std::fs::write(&key_file, "abcd-secret-abcd").unwrap();
        private(&key_file);
        let settings = AuditSettings {
            dir: dir.path().join("audit"),
            key_file: Some(key_file),
            ..AuditSettings::default()
        };
        let Err(e) = open_audit(&settings, None) else {
            panic!("a bad audit key loads")
        };
        assert!(e.contains("audit.key") && !e.contains("secret"), "{e}");
    }
}
