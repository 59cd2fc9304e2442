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
    let Some(audit) = audit else {
        return Ok(());
    };
    let principal = match (event, &approval.approver) {
        (ApprovalEvent::Approved | ApprovalEvent::Denied, Some(approver)) => {
            Some(format!("key:{approver}"))
        }
        _ => approval.binding.principal.clone(),
    };
    let record = AuditRecord {
        time_ms: unix_now_ms(),
        tenant: approval.binding.tenant.clone(),
        principal,
        session: approval.binding.session.clone(),
        kind: APPROVAL_KIND.to_owned(),
        tool: Some(approval.binding.tool.clone()),
        args_hash: Some(approval.binding.args_sha256.clone()),
        decision: event.as_str().to_owned(),
        rule: Some(format!("{} {}", approval.id, approval.rule)),
        findings: Vec::new(),
        policy: approval.policy_digest.clone(),
        latency_us: 0,
        model: None,
        audited: Vec::new(),
        input_tokens: None,
        output_tokens: None,
        cost_micro_usd: None,
    };
    let ack = queue(audit, record)?;
    audit_wait(vec![ack]).await
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
    let Some(audit) = audit else {
        return Ok(());
    };
    let record = AuditRecord {
        time_ms: unix_now_ms(),
        tenant: Some(tenant.to_owned()),
        principal: Some(format!("key:{admin_key}")),
        session: None,
        kind: POLICY_CHANGE_KIND.to_owned(),
        tool: None,
        args_hash: Some(
            warden_proof::args_hash(content)
                .map_err(|e| audit_error(AuditError::Encode(e.to_string())))?,
        ),
        decision: action.to_owned(),
        rule: Some(target),
        findings: Vec::new(),
        policy: digest.to_owned(),
        latency_us: 0,
        model: None,
        audited: Vec::new(),
        input_tokens: None,
        output_tokens: None,
        cost_micro_usd: None,
    };
    let ack = queue(audit, record)?;
    audit_wait(vec![ack]).await
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
    let Some(audit) = audit else {
        return Ok(());
    };
    let content = serde_json::json!({ "taint": taint, "reason": reason });
    let record = AuditRecord {
        time_ms: unix_now_ms(),
        tenant: Some(tenant.to_owned()),
        principal: Some(format!("key:{admin_key}")),
        session: Some(session.to_owned()),
        kind: SESSION_CHANGE_KIND.to_owned(),
        tool: None,
        args_hash: Some(
            warden_proof::args_hash(&content)
                .map_err(|e| audit_error(AuditError::Encode(e.to_string())))?,
        ),
        decision: "clear_taint".to_owned(),
        rule: Some(taint.to_owned()),
        findings: Vec::new(),
        policy: String::new(),
        latency_us: 0,
        model: None,
        audited: Vec::new(),
        input_tokens: None,
        output_tokens: None,
        cost_micro_usd: None,
    };
    let ack = queue(audit, record)?;
    audit_wait(vec![ack]).await
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
    let Some(audit) = audit else {
        return Ok(());
    };
    let content = serde_json::json!({
        "upstream": upstream,
        "tool": tool,
        "before": approved_before,
        "approved": approved_now,
        "reason": reason,
    });
    let record = AuditRecord {
        time_ms: unix_now_ms(),
        tenant: None,
        principal: Some(format!("key:{admin_key}")),
        session: None,
        kind: PIN_CHANGE_KIND.to_owned(),
        tool: Some(tool.to_owned()),
        args_hash: Some(
            warden_proof::args_hash(&content)
                .map_err(|e| audit_error(AuditError::Encode(e.to_string())))?,
        ),
        decision: "approve_pin".to_owned(),
        rule: Some(upstream.to_owned()),
        findings: Vec::new(),
        policy: approved_now.to_owned(),
        latency_us: 0,
        model: None,
        audited: Vec::new(),
        input_tokens: None,
        output_tokens: None,
        cost_micro_usd: None,
    };
    let ack = queue(audit, record)?;
    audit_wait(vec![ack]).await
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
    let record = AuditRecord {
        time_ms: unix_now_ms(),
        tenant: Some(caller.tenant.to_string()),
        principal: None,
        session: None,
        kind: DATA_QUERY_KIND.to_owned(),
        tool: None,
        args_hash: input
            .map(warden_proof::args_hash)
            .transpose()
            .map_err(|e| audit_error(AuditError::Encode(e.to_string())))?,
        decision: outcome.to_owned(),
        rule: Some(query.to_owned()),
        findings: Vec::new(),
        policy: policy_digest.to_owned(),
        latency_us,
        model: None,
        audited: Vec::new(),
        input_tokens: None,
        output_tokens: None,
        cost_micro_usd: None,
    };
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
