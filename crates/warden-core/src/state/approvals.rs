//! Approvals of calls that an `effect: ask` rule holds: bound to the call (tenant, principal,
//! session, tool and the SHA-256 of the RFC 8785 canonical arguments, never the argument values),
//! answered by a person, and used once.
//!
//! Life of an approval: `pending` (asked) -> `approved` or `denied` (a person) or `expired` (its
//! time ran out). The agent's next call with the same binding spends the answer: an approved one
//! becomes `consumed` and lets that one call through, a denied or expired one denies it; the call
//! after that asks again. Every transition is made by one atomic store call, so of two racing
//! retries exactly one consumes an approval.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{StoreAccess, StoreCall, StoreError};

/// Longest reason an approver may give, in bytes.
pub const MAX_APPROVAL_REASON_BYTES: usize = 1024;

/// Default number of approvals that may be pending at once per tenant.
pub const DEFAULT_MAX_PENDING_PER_TENANT: usize = 100;

/// Default time an approval waits for a person, and an approved one for its call: 5 minutes.
pub const DEFAULT_APPROVAL_TTL_MS: u64 = 5 * 60 * 1000;

/// How long a finished approval (consumed, denied, expired) stays readable after it expired.
pub const APPROVAL_RETENTION_MS: u64 = 60 * 60 * 1000;

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a person.
    Pending,
    /// A person approved it; the next call with its binding goes through.
    Approved,
    /// A person denied it.
    Denied,
    /// Its time ran out before it was answered or used (expiry is a deny).
    Expired,
    /// Approved and used by a call.
    Consumed,
}

impl ApprovalStatus {
    /// The status's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Consumed => "consumed",
        }
    }
}

/// What an approval covers: one call, as exactly as the arguments' canonical hash binds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalBinding {
    /// The caller's tenant (none: the library, or the daemon's anonymous policy).
    pub tenant: Option<String>,
    /// The request's principal.
    pub principal: Option<String>,
    /// The request's session.
    pub session: Option<String>,
    /// The tool.
    pub tool: String,
    /// `sha256:` + hex SHA-256 of the RFC 8785 canonical arguments (`{}` when absent).
    pub args_sha256: String,
}

/// Why a call cannot be bound to an approval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// The request names no tool.
    #[error("a call without a tool cannot be approved")]
    NoTool,
    /// A number that RFC 8785 cannot write exactly: another number would hash the same.
    #[error(
        "the arguments hold a number beyond +/-(2^53 - 1), which an approval cannot bind exactly: send it as a string"
    )]
    InexactNumber,
    /// The arguments could not be canonicalised.
    #[error("the arguments cannot be canonicalised")]
    Canonical,
}

/// Largest integer magnitude RFC 8785 writes exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

fn exact_numbers(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                u <= MAX_SAFE_INTEGER
            } else if let Some(i) = n.as_i64() {
                i.unsigned_abs() <= MAX_SAFE_INTEGER
            } else {
                n.as_f64()
                    .is_some_and(|f| f.abs() <= MAX_SAFE_INTEGER as f64)
            }
        }
        Value::Array(items) => items.iter().all(exact_numbers),
        Value::Object(members) => members.values().all(exact_numbers),
        _ => true,
    }
}

/// `sha256:` + hex SHA-256 of the RFC 8785 canonical form of `args` (`{}` when absent), the same
/// hash a decision token binds.
pub fn args_sha256(args: Option<&Value>) -> Result<String, BindingError> {
    let empty = Value::Object(serde_json::Map::new());
    let args = args.unwrap_or(&empty);
    if !exact_numbers(args) {
        return Err(BindingError::InexactNumber);
    }
    let canonical = serde_json_canonicalizer::to_vec(args).map_err(|_| BindingError::Canonical)?;
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(&canonical))
    ))
}

impl ApprovalBinding {
    /// The binding of `request` for a caller of `tenant`.
    pub fn of(tenant: Option<&str>, request: &crate::Request) -> Result<Self, BindingError> {
        let tool = request.tool.clone().ok_or(BindingError::NoTool)?;
        Ok(Self {
            tenant: tenant.map(str::to_owned),
            principal: request.principal.clone(),
            session: request.session.clone(),
            tool,
            args_sha256: args_sha256(request.args.as_ref())?,
        })
    }

    /// One string naming the binding in a store: hex SHA-256 over the length-prefixed fields,
    /// so that no two bindings share one (`a` + `bc` is not `ab` + `c`).
    pub fn key(&self) -> String {
        let mut hash = Sha256::new();
        for field in [
            self.tenant.as_deref(),
            self.principal.as_deref(),
            self.session.as_deref(),
            Some(self.tool.as_str()),
            Some(self.args_sha256.as_str()),
        ] {
            match field {
                Some(text) => {
                    hash.update([1]);
                    hash.update((text.len() as u64).to_be_bytes());
                    hash.update(text.as_bytes());
                }
                None => hash.update([0]),
            }
        }
        hex::encode(hash.finalize())
    }
}

/// One approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Its id.
    pub id: String,
    /// The call it covers.
    #[serde(flatten)]
    pub binding: ApprovalBinding,
    /// The policy that asked.
    pub policy: String,
    /// That policy's digest (`sha256:...`).
    pub policy_digest: String,
    /// The `ask` rule that asked.
    pub rule: String,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// When it was asked for, in milliseconds since the Unix epoch.
    pub requested_ms: u64,
    /// When it expires (pending: unanswered; approved: unused), in milliseconds since the epoch.
    pub expires_ms: u64,
    /// Who answered it (the admin key's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// The approver's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was answered, in milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_ms: Option<u64>,
    /// Set once a call received its answer: the binding is free to ask again.
    #[serde(default)]
    pub spent: bool,
}

impl Approval {
    /// The status as of `now_ms`: a pending or approved approval past its expiry is expired.
    pub fn status_at(&self, now_ms: u64) -> ApprovalStatus {
        match self.status {
            ApprovalStatus::Pending | ApprovalStatus::Approved if now_ms >= self.expires_ms => {
                ApprovalStatus::Expired
            }
            status => status,
        }
    }

    /// This approval as of `now_ms` (its status updated, see [`Self::status_at`]).
    pub fn at(mut self, now_ms: u64) -> Self {
        self.status = self.status_at(now_ms);
        self
    }
}

/// A call held by an `ask` rule, for [`ApprovalStore::ask`].
#[derive(Debug, Clone)]
pub struct Ask {
    /// The call.
    pub binding: ApprovalBinding,
    /// The policy that asked.
    pub policy: String,
    /// That policy's digest.
    pub policy_digest: String,
    /// The `ask` rule.
    pub rule: String,
    /// Now, in milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// How long a new approval waits.
    pub ttl_ms: u64,
    /// How many approvals of the tenant may be pending at once.
    pub max_pending: usize,
}

/// What [`ApprovalStore::ask`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// A new approval, pending.
    Requested(Approval),
    /// The approval already asked for, still pending.
    Pending(Approval),
    /// It was approved: now consumed, the call goes through.
    Granted(Approval),
    /// It was denied: spent, the call is denied.
    Denied(Approval),
    /// It expired: spent (and recorded as expired), the call is denied.
    Expired(Approval),
    /// The tenant has the most pending approvals it may have: nothing asked, the call is denied.
    Full,
}

/// A person's answer, for [`ApprovalStore::resolve`].
#[derive(Debug, Clone)]
pub struct Resolution {
    /// Approve (`true`) or deny.
    pub approve: bool,
    /// Who answers (an admin key's id).
    pub approver: String,
    /// Why (at most [`MAX_APPROVAL_REASON_BYTES`]).
    pub reason: String,
    /// Now, in milliseconds since the epoch.
    pub now_ms: u64,
    /// How long an approved approval waits for its call.
    pub ttl_ms: u64,
}

/// What [`ApprovalStore::resolve`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Answered: the approval as it now stands.
    Done(Approval),
    /// It had expired (now recorded so): not answered.
    Expired(Approval),
    /// It was answered before (or spent): not answered again.
    Settled(Approval),
    /// No approval has that id.
    NotFound,
}

/// Where approvals live. Implementations: [`MemoryApprovalStore`] here,
/// `warden_store::RedisApprovalStore` for many instances.
pub trait ApprovalStore: Send + Sync {
    /// For a call an `ask` rule holds: the approval that covers its binding, spent when it was
    /// answered, or a new pending one (see [`Asked`]). Atomic per binding: of racing calls, one
    /// creates, one consumes. Only the pipeline asks ([`StoreAccess`]).
    fn ask<'a>(&'a self, access: StoreAccess, ask: &'a Ask) -> StoreCall<'a, Asked>;

    /// The approval with `id`, its status as of `now_ms`.
    fn get<'a>(&'a self, id: &'a str, now_ms: u64) -> StoreCall<'a, Option<Approval>>;

    /// Approvals (of `tenant` when given), oldest first, at most `limit`, statuses as of `now_ms`;
    /// `pending_only`: only those waiting for a person.
    fn list<'a>(
        &'a self,
        tenant: Option<&'a str>,
        pending_only: bool,
        now_ms: u64,
        limit: usize,
    ) -> StoreCall<'a, Vec<Approval>>;

    /// A person's answer to the pending approval `id`. Atomic: of racing answers, one wins.
    fn resolve<'a>(&'a self, id: &'a str, resolution: &'a Resolution) -> StoreCall<'a, Resolved>;
}

/// A fresh approval id: `apr_` and 32 hex digits. Unpredictable enough to be unique across
/// instances (per-process random SipHash keys over a counter, the time and the binding), with
/// no I/O: ids name approvals, they grant nothing (answering one takes an admin key).
pub fn new_approval_id(binding_key: &str, now_ms: u64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hash = Sha256::new();
    for _ in 0..2 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(count);
        hasher.write_u64(now_ms);
        hash.update(hasher.finish().to_be_bytes());
    }
    hash.update(count.to_be_bytes());
    hash.update(now_ms.to_be_bytes());
    hash.update(binding_key.as_bytes());
    let digest = hash.finalize();
    format!("apr_{}", hex::encode(digest.get(..16).unwrap_or_default()))
}

/// The transition of [`ApprovalStore::ask`] on the approval currently bound (if any), shared by
/// every store so that they agree: returns the answer and the record to store (if changed).
pub fn ask_transition(
    current: Option<&Approval>,
    ask: &Ask,
    pending_of_tenant: usize,
) -> (Asked, Option<Approval>) {
    if let Some(current) = current.filter(|a| !a.spent) {
        let now = ask.now_ms;
        return match current.status_at(now) {
            ApprovalStatus::Pending => (Asked::Pending(current.clone()), None),
            ApprovalStatus::Approved => {
                let mut next = current.clone();
                next.status = ApprovalStatus::Consumed;
                next.spent = true;
                (Asked::Granted(next.clone()), Some(next))
            }
            ApprovalStatus::Denied => {
                let mut next = current.clone();
                next.spent = true;
                (Asked::Denied(next.clone()), Some(next))
            }
            ApprovalStatus::Expired | ApprovalStatus::Consumed => {
                let mut next = current.clone();
                next.status = ApprovalStatus::Expired;
                next.spent = true;
                (Asked::Expired(next.clone()), Some(next))
            }
        };
    }
    if pending_of_tenant >= ask.max_pending {
        return (Asked::Full, None);
    }
    let key = ask.binding.key();
    let approval = Approval {
        id: new_approval_id(&key, ask.now_ms),
        binding: ask.binding.clone(),
        policy: ask.policy.clone(),
        policy_digest: ask.policy_digest.clone(),
        rule: ask.rule.clone(),
        status: ApprovalStatus::Pending,
        requested_ms: ask.now_ms,
        expires_ms: ask.now_ms.saturating_add(ask.ttl_ms),
        approver: None,
        reason: None,
        decided_ms: None,
        spent: false,
    };
    (Asked::Requested(approval.clone()), Some(approval))
}

/// The transition of [`ApprovalStore::resolve`], shared by every store.
pub fn resolve_transition(
    current: &Approval,
    resolution: &Resolution,
) -> (Resolved, Option<Approval>) {
    match current.status_at(resolution.now_ms) {
        ApprovalStatus::Pending if !current.spent => {
            let mut next = current.clone();
            next.status = if resolution.approve {
                ApprovalStatus::Approved
            } else {
                ApprovalStatus::Denied
            };
            if resolution.approve {
                // The grant waits for its call as long as the request waited for a person.
                next.expires_ms = resolution.now_ms.saturating_add(resolution.ttl_ms);
            }
            next.approver = Some(resolution.approver.clone());
            next.reason = Some(resolution.reason.clone());
            next.decided_ms = Some(resolution.now_ms);
            (Resolved::Done(next.clone()), Some(next))
        }
        ApprovalStatus::Expired if current.status == ApprovalStatus::Pending => {
            let mut next = current.clone();
            next.status = ApprovalStatus::Expired;
            (Resolved::Expired(next.clone()), Some(next))
        }
        _ => (
            Resolved::Settled(current.clone().at(resolution.now_ms)),
            None,
        ),
    }
}

#[derive(Debug, Default)]
struct Approvals {
    by_id: HashMap<String, Approval>,
    /// Binding key -> id of the approval that answers its next call.
    by_binding: HashMap<String, String>,
}

impl Approvals {
    /// Forgets approvals past their retention (finished ones an hour after they expired), and
    /// frees bindings whose approval is gone.
    fn purge(&mut self, now_ms: u64) {
        self.by_id
            .retain(|_, a| a.expires_ms.saturating_add(APPROVAL_RETENTION_MS) > now_ms);
        let by_id = &self.by_id;
        self.by_binding.retain(|_, id| by_id.contains_key(id));
    }

    fn pending_of(&self, tenant: Option<&str>, now_ms: u64) -> usize {
        self.by_id
            .values()
            .filter(|a| {
                a.binding.tenant.as_deref() == tenant
                    && !a.spent
                    && a.status_at(now_ms) == ApprovalStatus::Pending
            })
            .count()
    }
}

/// Approvals in this process's memory (the embedded default; lost on restart, not shared).
#[derive(Debug, Default)]
pub struct MemoryApprovalStore {
    inner: Mutex<Approvals>,
}

impl MemoryApprovalStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ApprovalStore for MemoryApprovalStore {
    fn ask<'a>(&'a self, _access: StoreAccess, ask: &'a Ask) -> StoreCall<'a, Asked> {
        let mut inner = self.inner.lock();
        inner.purge(ask.now_ms);
        let key = ask.binding.key();
        let current = inner
            .by_binding
            .get(&key)
            .and_then(|id| inner.by_id.get(id));
        let pending = inner.pending_of(ask.binding.tenant.as_deref(), ask.now_ms);
        let (asked, write) = ask_transition(current, ask, pending);
        if let Some(write) = write {
            inner.by_binding.insert(key, write.id.clone());
            inner.by_id.insert(write.id.clone(), write);
        }
        StoreCall::ready(Ok(asked))
    }

    fn get<'a>(&'a self, id: &'a str, now_ms: u64) -> StoreCall<'a, Option<Approval>> {
        let inner = self.inner.lock();
        StoreCall::ready(Ok(inner.by_id.get(id).cloned().map(|a| a.at(now_ms))))
    }

    fn list<'a>(
        &'a self,
        tenant: Option<&'a str>,
        pending_only: bool,
        now_ms: u64,
        limit: usize,
    ) -> StoreCall<'a, Vec<Approval>> {
        let inner = self.inner.lock();
        let mut found: Vec<Approval> = inner
            .by_id
            .values()
            .filter(|a| tenant.is_none_or(|t| a.binding.tenant.as_deref() == Some(t)))
            .map(|a| a.clone().at(now_ms))
            .filter(|a| !pending_only || (a.status == ApprovalStatus::Pending && !a.spent))
            .collect();
        found.sort_by(|a, b| (a.requested_ms, &a.id).cmp(&(b.requested_ms, &b.id)));
        found.truncate(limit);
        StoreCall::ready(Ok(found))
    }

    fn resolve<'a>(&'a self, id: &'a str, resolution: &'a Resolution) -> StoreCall<'a, Resolved> {
        let mut inner = self.inner.lock();
        let Some(current) = inner.by_id.get(id) else {
            return StoreCall::ready(Ok(Resolved::NotFound));
        };
        let (resolved, write) = resolve_transition(current, resolution);
        if let Some(write) = write {
            inner.by_id.insert(write.id.clone(), write);
        }
        StoreCall::ready(Ok::<_, StoreError>(resolved))
    }
}

#[cfg(test)]
#[path = "approvals_tests.rs"]
mod tests;
