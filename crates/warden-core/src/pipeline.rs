//! The one decision path every front door takes: a [`Pipeline`] owns the policy set, the state
//! layer and the effects of a decision, and turns a caller and a request into a decision with
//! every effect done.
//!
//! The core stays free of I/O: what a decision leaves behind (a token, an audit entry, a log
//! line, metrics) is done by an [`Effects`] implementation the front door's host provides (the
//! daemon's writes the audit log and mints tokens; [`NoEffects`] only logs failures). The order
//! is fixed here, once:
//!
//! - one request ([`Pipeline::decide`]): the session's read-decide-update in one store
//!   transaction, then [`Effects::seal`] (token), [`Effects::delivered`] (log, metrics) and
//!   [`Effects::audit`], awaited before the decision is returned;
//! - a batch ([`Pipeline::decide_batch`]), all or nothing: every request decided against copies of
//!   its sessions, sealed, audited as one group, and only then the sessions written back in one
//!   versioned commit; if another request changed one of them meanwhile, the group is voided
//!   ([`Effects::void`]) and the batch decided again (at most [`BATCH_ATTEMPTS`] times).
//!
//! Every decision that failed closed (a Rego rule that could not be evaluated) is reported to
//! [`Effects::failed_closed`].
//!
//! A single decision that an `ask` rule holds (`pending`) is settled against the approval store
//! ([`crate::state::ApprovalStore::ask`]): a new or still pending approval keeps it pending, an
//! approved one is consumed and the call decided again with the ask rules granted, a denied or
//! expired one denies it. Each step is reported to [`Effects::approval`] (the audit log). A batch
//! neither asks for nor uses approvals: a call there that needs one is `pending` without an
//! approval (send it alone), so that a voided batch never spends one.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::decision::{ApprovalRef, Decision, Verdict};
use crate::eval::{Evaluation, evaluate, evaluate_granted, log_failure};
use crate::policy::CompiledPolicy;
use crate::request::Request;
use crate::session::{SessionState, Versioned};
pub use crate::state::BoxFuture;
use crate::state::{
    Approval, ApprovalBinding, ApprovalStore, Ask, Asked, DEFAULT_APPROVAL_TTL_MS,
    DEFAULT_MAX_PENDING_PER_TENANT, MemoryApprovalStore, Resolution, Resolved, SessionStore,
    SessionWrite, StoreAccess, StoreError,
};

/// Times a batch is decided again when other requests change its sessions meanwhile.
pub const BATCH_ATTEMPTS: usize = 5;

/// Named policies and the one used when a caller names none, swapped as a whole.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: HashMap<Arc<str>, Arc<CompiledPolicy>>,
    default: Option<Arc<str>>,
    /// The default's policy, resolved once (the library's engine asks for it on every decision).
    default_policy: Option<Arc<CompiledPolicy>>,
}

impl PolicySet {
    /// A set of one policy, which is also the default (named after the policy).
    pub fn single(policy: Arc<CompiledPolicy>) -> Self {
        let name = Arc::clone(&policy.info.name);
        Self::default()
            .with(Arc::clone(&name), policy)
            .with_default(name)
    }

    /// Adds (or replaces) the policy called `name`.
    pub fn with(mut self, name: impl Into<Arc<str>>, policy: Arc<CompiledPolicy>) -> Self {
        self.policies.insert(name.into(), policy);
        self.resolve_default();
        self
    }

    /// Makes `name` the policy of callers that name none.
    pub fn with_default(mut self, name: impl Into<Arc<str>>) -> Self {
        self.default = Some(name.into());
        self.resolve_default();
        self
    }

    fn resolve_default(&mut self) {
        self.default_policy = self
            .default
            .as_deref()
            .and_then(|name| self.policies.get(name))
            .cloned();
    }

    /// The policy called `name`, or the default one for `None`.
    pub fn get(&self, name: Option<&str>) -> Option<&Arc<CompiledPolicy>> {
        match name {
            Some(name) => self.policies.get(name),
            None => self.default_policy.as_ref(),
        }
    }

    /// The names of the policies held.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(|k| &**k)
    }

    /// Number of policies held.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// True when no policy is held.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

/// Who asks: the tenant whose sessions the request uses, and which policy decides.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The tenant. `Some`: sessions are namespaced by it (`tenant` U+001F `session`), so two
    /// tenants never share one; `None`: the request's session id is the store key.
    pub tenant: Option<&'a str>,
    /// The policy's name in the set; `None`: the set's default.
    pub policy: Option<&'a str>,
    /// The id of the request that asks, for the effects' log lines.
    pub request_id: Option<&'a str>,
    /// Whether an allowed tool call gets a decision token when the host signs them (the OPA
    /// Data API answers in OPA's shape, without one).
    pub tokens: bool,
}

impl Caller<'_> {
    /// The store key of `session` for this caller (borrowed when there is no tenant: no
    /// allocation on the library's path).
    pub fn session_key<'s>(&self, session: &'s str) -> Cow<'s, str> {
        match self.tenant {
            Some(tenant) => {
                let mut key = String::with_capacity(tenant.len() + 1 + session.len());
                key.push_str(tenant);
                key.push('\u{1f}');
                key.push_str(session);
                Cow::Owned(key)
            }
            None => Cow::Borrowed(session),
        }
    }
}

/// One decision made, for [`Effects::audit`].
#[derive(Debug, Clone, Copy)]
pub struct Decided<'a> {
    /// The request.
    pub request: &'a Request,
    /// Its decision.
    pub decision: &'a Decision,
    /// How long deciding it took.
    pub latency: Duration,
}

/// Where an audited group of decisions landed (sequence numbers of its first and last entry),
/// so that it can be voided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditReceipt {
    /// The first entry.
    pub first: u64,
    /// The last entry.
    pub last: u64,
}

/// What a decision leaves behind, done by the host of the pipeline. Every method has a default
/// that does nothing (failures are still logged), so an implementation overrides what it has.
pub trait Effects: Send + Sync {
    /// The error an effect fails with; the pipeline hands it back unchanged
    /// ([`PipelineError::Effect`]).
    type Error: Send;

    /// Completes a decision before anything about it is recorded (mints its token). A failure
    /// stops the decision: the caller gets no decision.
    fn seal(
        &self,
        _caller: &Caller<'_>,
        _request: &Request,
        _decision: &mut Decision,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Records the decisions durably (the audit log), all of them or none; resolves once they
    /// are recorded. `None`: nothing to void later (no log).
    fn audit<'a>(
        &'a self,
        _caller: &'a Caller<'a>,
        _decided: &'a [Decided<'a>],
    ) -> BoxFuture<'a, Result<Option<AuditReceipt>, Self::Error>> {
        Box::pin(async { Ok(None) })
    }

    /// Records that the audited group `receipt` was not delivered and changed nothing.
    fn void<'a>(
        &'a self,
        _caller: &'a Caller<'a>,
        _policy: &'a CompiledPolicy,
        _receipt: AuditReceipt,
    ) -> BoxFuture<'a, Result<(), Self::Error>> {
        Box::pin(async { Ok(()) })
    }

    /// A decision about `request` is being delivered: log it, count it.
    fn delivered(
        &self,
        _caller: &Caller<'_>,
        _request: &Request,
        _decision: &Decision,
        _latency: Duration,
    ) {
    }

    /// A step of an approval (see [`ApprovalEvent`]): record it durably (the audit log). The
    /// approval carries the arguments' hash, never their values.
    fn approval<'a>(
        &'a self,
        _event: ApprovalEvent,
        _approval: &'a Approval,
    ) -> BoxFuture<'a, Result<(), Self::Error>> {
        Box::pin(async { Ok(()) })
    }

    /// A decision failed closed (already logged by the pipeline): count it.
    fn failed_closed(&self, _evaluation: &Evaluation) {}

    /// The state layer failed for a decision (already logged by the pipeline); `decided`: it
    /// was decided without the session anyway ([`OnStoreFailure::DecideWithoutSession`]).
    fn state_failed(&self, _error: &StoreError, _decided: bool) {}
}

/// A step in an approval's life, for [`Effects::approval`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalEvent {
    /// An `ask` rule held a call and a new approval was asked for.
    Requested,
    /// A person approved it.
    Approved,
    /// A person denied it.
    Denied,
    /// It expired (seen by the call that came too late, or by an answer that did).
    Expired,
    /// The approved call came and used it.
    Consumed,
}

impl ApprovalEvent {
    /// The event's name in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Consumed => "consumed",
        }
    }
}

/// How approvals behave: explicit limits, with defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalSettings {
    /// How long an approval waits for a person, and an approved one for its call (ms).
    pub ttl_ms: u64,
    /// How many approvals may be pending at once per tenant; a call beyond is denied.
    pub max_pending_per_tenant: usize,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            ttl_ms: DEFAULT_APPROVAL_TTL_MS,
            max_pending_per_tenant: DEFAULT_MAX_PENDING_PER_TENANT,
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it: every approval then expires).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn approval_ref(approval: &Approval) -> ApprovalRef {
    ApprovalRef {
        id: approval.id.clone(),
        status: approval.status,
        expires_ms: approval.expires_ms,
    }
}

/// A held call that is refused instead: deny, the ask rule still named, `reason` given.
fn refused(mut decision: Decision, reason: &str) -> Decision {
    decision.verdict = Verdict::Deny;
    decision.reasons = vec![Arc::from(reason)];
    decision.warnings.clear();
    decision.redacted = None;
    decision
}

/// What a decision does when the state layer fails (a shared store unreachable or too slow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnStoreFailure {
    /// No decision: the caller refuses the request (fail closed; the default).
    #[default]
    Refuse,
    /// Decide against an empty session and change no state (fail open on a partition: taints
    /// and sequences set before do not apply meanwhile).
    DecideWithoutSession,
}

/// No effects: decisions are only computed and their sessions updated (the library's
/// [`crate::Engine`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEffects;

impl Effects for NoEffects {
    type Error = std::convert::Infallible;
}

/// Why the pipeline gave no decision. Callers must treat every one as deny (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError<E> {
    /// The caller's policy is not in the set.
    #[error("no policy `{0}` is loaded")]
    UnknownPolicy(String),
    /// The state layer failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An effect failed (token, audit).
    #[error("a decision effect failed")]
    Effect(E),
    /// Other requests kept changing a batch's sessions; nothing was applied.
    #[error("other requests kept changing the batch's sessions ({attempts} attempts)")]
    Conflict {
        /// How many times the batch was decided.
        attempts: usize,
    },
    /// The caller stopped waiting before the batch's sessions changed; nothing was applied.
    #[error("the caller stopped waiting; nothing was applied")]
    Abandoned,
}

fn unknown_policy<E>(caller: &Caller<'_>) -> PipelineError<E> {
    PipelineError::UnknownPolicy(caller.policy.unwrap_or("(default)").to_owned())
}

/// The store transaction's rule: evaluate against the session's state, keep the evaluation in
/// `outcome` (the last run's, should the store run it again) and hand back its change.
fn decide_into<'a>(
    policy: &'a CompiledPolicy,
    request: &'a Request,
    outcome: &'a mut Option<Evaluation>,
) -> impl FnMut(&SessionState) -> Option<crate::session::StateChange> + Send + 'a {
    move |state| {
        let mut evaluation = evaluate(policy, request, state);
        let change = evaluation.change.take();
        *outcome = Some(evaluation);
        change
    }
}

/// The decision path: a policy set, a state layer and the effects. `Send + Sync`; share it.
pub struct Pipeline<E> {
    policies: ArcSwap<PolicySet>,
    sessions: Arc<dyn SessionStore>,
    approvals: Arc<dyn ApprovalStore>,
    approval_settings: ApprovalSettings,
    effects: E,
    on_store_failure: OnStoreFailure,
}

impl<E> std::fmt::Debug for Pipeline<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("policies", &self.policies.load().len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// A request decided against a staged session copy.
struct Staged {
    decisions: Vec<(Decision, Duration)>,
    writes: Vec<SessionWrite>,
}

impl<E: Effects> Pipeline<E> {
    /// A pipeline over `sessions` with `effects`.
    pub fn new(policies: PolicySet, sessions: Arc<dyn SessionStore>, effects: E) -> Self {
        Self {
            policies: ArcSwap::from_pointee(policies),
            sessions,
            approvals: Arc::new(MemoryApprovalStore::new()),
            approval_settings: ApprovalSettings::default(),
            effects,
            on_store_failure: OnStoreFailure::default(),
        }
    }

    /// Keeps approvals in `store` (default: this process's memory) with `settings`.
    #[must_use]
    pub fn with_approvals(
        mut self,
        store: Arc<dyn ApprovalStore>,
        settings: ApprovalSettings,
    ) -> Self {
        self.approvals = store;
        self.approval_settings = settings;
        self
    }

    /// The approval store (for reading: listing and showing approvals).
    pub fn approvals(&self) -> &Arc<dyn ApprovalStore> {
        &self.approvals
    }

    /// How approvals behave.
    pub fn approval_settings(&self) -> ApprovalSettings {
        self.approval_settings
    }

    /// A person's answer to the pending approval `id` (`approver`: who, e.g. an admin key's id;
    /// `reason`: why, checked by the caller against
    /// [`crate::state::MAX_APPROVAL_REASON_BYTES`]), recorded by [`Effects::approval`].
    pub async fn resolve_approval(
        &self,
        id: &str,
        approve: bool,
        approver: &str,
        reason: &str,
    ) -> Result<Resolved, PipelineError<E::Error>> {
        let resolution = Resolution {
            approve,
            approver: approver.to_owned(),
            reason: reason.to_owned(),
            now_ms: now_ms(),
            ttl_ms: self.approval_settings.ttl_ms,
        };
        let resolved = self.approvals.resolve(id, &resolution).await?;
        let event = match &resolved {
            Resolved::Done(approval) if approve => Some((ApprovalEvent::Approved, approval)),
            Resolved::Done(approval) => Some((ApprovalEvent::Denied, approval)),
            Resolved::Expired(approval) => Some((ApprovalEvent::Expired, approval)),
            Resolved::Settled(_) | Resolved::NotFound => None,
        };
        if let Some((event, approval)) = event {
            self.effects
                .approval(event, approval)
                .await
                .map_err(PipelineError::Effect)?;
        }
        Ok(resolved)
    }

    /// Settles a `pending` decision against the approval store (see the module docs).
    async fn settle(
        &self,
        caller: &Caller<'_>,
        policy: &CompiledPolicy,
        request: &Request,
        decision: Decision,
    ) -> Result<Decision, PipelineError<E::Error>> {
        let binding = match ApprovalBinding::of(caller.tenant, request) {
            Ok(binding) => binding,
            Err(e) => return Ok(refused(decision, &e.to_string())),
        };
        let ask = Ask {
            binding,
            policy: policy.info.name.to_string(),
            policy_digest: policy.info.digest.to_string(),
            rule: decision.rule.as_deref().unwrap_or_default().to_owned(),
            now_ms: now_ms(),
            ttl_ms: self.approval_settings.ttl_ms,
            max_pending: self.approval_settings.max_pending_per_tenant,
        };
        let asked = match self.approvals.ask(StoreAccess::new(), &ask).await {
            Ok(asked) => asked,
            Err(e) => {
                // Failing open decides without the session; a held call is still never allowed.
                self.store_failed(e)?;
                return Ok(refused(decision, "approvals are unavailable"));
            }
        };
        let (event, approval, mut decision) = match asked {
            Asked::Requested(approval) => (Some(ApprovalEvent::Requested), approval, decision),
            Asked::Pending(approval) => (None, approval, decision),
            Asked::Granted(approval) => {
                let granted = self.decide_granted(caller, policy, request).await?;
                (Some(ApprovalEvent::Consumed), approval, granted)
            }
            Asked::Denied(approval) => (None, approval, refused(decision, "approval denied")),
            Asked::Expired(approval) => (
                Some(ApprovalEvent::Expired),
                approval,
                refused(decision, "approval expired"),
            ),
            Asked::Full => {
                return Ok(refused(
                    decision,
                    "too many approvals are pending for this tenant",
                ));
            }
        };
        if let Some(event) = event {
            self.effects
                .approval(event, &approval)
                .await
                .map_err(PipelineError::Effect)?;
        }
        decision.approval = Some(approval_ref(&approval));
        Ok(decision)
    }

    /// Decides an approved call again, its ask rules granted (the approval is consumed).
    async fn decide_granted(
        &self,
        caller: &Caller<'_>,
        policy: &CompiledPolicy,
        request: &Request,
    ) -> Result<Decision, PipelineError<E::Error>> {
        let Some(session) = request.session.as_deref() else {
            let evaluation = evaluate_granted(policy, request, &SessionState::default());
            self.check_failure(&evaluation);
            return Ok(evaluation.decision);
        };
        let key = caller.session_key(session);
        let mut outcome = None;
        let mut decide = |state: &SessionState| {
            let mut evaluation = evaluate_granted(policy, request, state);
            let change = evaluation.change.take();
            outcome = Some(evaluation);
            change
        };
        match self
            .sessions
            .transact(StoreAccess::new(), &key, &mut decide)
            .await
        {
            Ok(()) => self.finish(outcome),
            Err(e) => self.store_failed(e).map(|()| {
                let evaluation = evaluate_granted(policy, request, &SessionState::default());
                self.check_failure(&evaluation);
                evaluation.decision
            }),
        }
    }

    /// Removes `taint` from the caller's `session` (a person's decision, e.g. from the console),
    /// atomically with the decisions on that session; the history is kept. Answers whether the
    /// session had the taint (`false`: nothing changed). The caller records who and why.
    pub async fn clear_taint(
        &self,
        caller: &Caller<'_>,
        session: &str,
        taint: &str,
    ) -> Result<bool, PipelineError<E::Error>> {
        let key = caller.session_key(session);
        let mut had = false;
        let mut decide = |state: &SessionState| {
            had = state.taints.contains(taint);
            had.then(|| crate::session::StateChange {
                remove: vec![Arc::from(taint)],
                // Nothing pushed: every entry stays.
                history_limit: usize::MAX,
                ..crate::session::StateChange::default()
            })
        };
        self.sessions
            .transact(StoreAccess::new(), &key, &mut decide)
            .await?;
        Ok(had)
    }

    /// What decisions do when the state layer fails (default: refuse).
    #[must_use]
    pub fn with_store_failure(mut self, mode: OnStoreFailure) -> Self {
        self.on_store_failure = mode;
        self
    }

    /// The state layer failed for a decision: logged and reported; `Ok` when the decision goes
    /// on without the session ([`OnStoreFailure::DecideWithoutSession`]).
    fn store_failed(&self, error: StoreError) -> Result<(), PipelineError<E::Error>> {
        let decide = self.on_store_failure == OnStoreFailure::DecideWithoutSession;
        if decide {
            tracing::warn!(error = %error, "state store failed; deciding without the session (fail open)");
        } else {
            tracing::error!(error = %error, "state store failed; no decision (fail closed)");
        }
        self.effects.state_failed(&error, decide);
        if decide { Ok(()) } else { Err(error.into()) }
    }

    /// The current policy set.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.policies.load_full()
    }

    /// Replaces the whole policy set atomically: a decision uses the old or the new set whole.
    pub fn swap_policies(&self, policies: PolicySet) {
        self.policies.store(Arc::new(policies));
    }

    /// The state layer (for reading, e.g. tests and metrics; decisions go through the pipeline).
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// The effects.
    pub fn effects(&self) -> &E {
        &self.effects
    }

    fn policy(&self, caller: &Caller<'_>) -> Result<Arc<CompiledPolicy>, PipelineError<E::Error>> {
        let set = self.policies.load();
        set.get(caller.policy)
            .cloned()
            .ok_or_else(|| unknown_policy(caller))
    }

    /// Reports a failed-closed evaluation: logged here, counted by the effects.
    fn check_failure(&self, evaluation: &Evaluation) {
        if evaluation.failure.is_some() {
            log_failure(evaluation);
            self.effects.failed_closed(evaluation);
        }
    }

    /// Decides `request` and updates its session, with no other effect: the read-decide-update
    /// is one store transaction. Returns the decision and how long it took.
    pub async fn decide_now(
        &self,
        caller: &Caller<'_>,
        request: &Request,
    ) -> Result<(Decision, Duration), PipelineError<E::Error>> {
        let started = Instant::now();
        let decision = self.decide_session(caller, request).await?;
        Ok((decision, started.elapsed()))
    }

    /// [`Self::decide_now`] for a synchronous caller, without measuring how long it took (the
    /// library's engine, which reports no latency: two clock reads are a tenth of a simple
    /// decision). An in-process store answers at once; a store behind a network parks this
    /// thread until it answers ([`crate::state::StoreCall::wait`]), so async callers use `decide_now`.
    ///
    /// Written apart from [`Self::decide_now`] (the same steps, no future): driving an async
    /// decision to completion on this thread cost a tenth of a simple decision (BENCHMARKS.md).
    pub fn decide_untimed(
        &self,
        caller: &Caller<'_>,
        request: &Request,
    ) -> Result<Decision, PipelineError<E::Error>> {
        let set = self.policies.load();
        let policy = set
            .get(caller.policy)
            .ok_or_else(|| unknown_policy(caller))?;
        let decision = match request.session.as_deref() {
            None => self.decide_stateless(policy, request),
            Some(session) => {
                let key = caller.session_key(session);
                let mut outcome = None;
                let done = self
                    .sessions
                    .transact(
                        StoreAccess::new(),
                        &key,
                        &mut decide_into(policy, request, &mut outcome),
                    )
                    .wait();
                match done {
                    Ok(()) => self.finish(outcome)?,
                    Err(e) => self
                        .store_failed(e)
                        .map(|()| self.decide_stateless(policy, request))?,
                }
            }
        };
        if decision.verdict == Verdict::Pending {
            return crate::state::wait(self.settle(caller, policy, request, decision));
        }
        Ok(decision)
    }

    async fn decide_session(
        &self,
        caller: &Caller<'_>,
        request: &Request,
    ) -> Result<Decision, PipelineError<E::Error>> {
        // The set is held (not its policy cloned) for the decision: no reference count touched.
        let set = self.policies.load();
        let policy = set
            .get(caller.policy)
            .ok_or_else(|| unknown_policy(caller))?;
        let decision = match request.session.as_deref() {
            None => self.decide_stateless(policy, request),
            Some(session) => {
                let key = caller.session_key(session);
                let mut outcome = None;
                let done = self
                    .sessions
                    .transact(
                        StoreAccess::new(),
                        &key,
                        &mut decide_into(policy, request, &mut outcome),
                    )
                    .await;
                match done {
                    Ok(()) => self.finish(outcome)?,
                    Err(e) => self
                        .store_failed(e)
                        .map(|()| self.decide_stateless(policy, request))?,
                }
            }
        };
        if decision.verdict == Verdict::Pending {
            return self.settle(caller, policy, request, decision).await;
        }
        Ok(decision)
    }

    /// A request without a session: decided against an empty state, nothing stored.
    fn decide_stateless(&self, policy: &CompiledPolicy, request: &Request) -> Decision {
        let evaluation = evaluate(policy, request, &SessionState::default());
        self.check_failure(&evaluation);
        evaluation.decision
    }

    /// The decision a store transaction left in `outcome`, its failure reported.
    fn finish(&self, outcome: Option<Evaluation>) -> Result<Decision, PipelineError<E::Error>> {
        let evaluation =
            outcome.ok_or_else(|| StoreError::new("the store did not run the decision"))?;
        self.check_failure(&evaluation);
        Ok(evaluation.decision)
    }

    /// Decides one request with every effect done: session updated, token minted, logged and
    /// counted, audited (awaited).
    pub async fn decide(
        &self,
        caller: &Caller<'_>,
        request: &Request,
    ) -> Result<Decision, PipelineError<E::Error>> {
        let (mut decision, latency) = self.decide_now(caller, request).await?;
        self.effects
            .seal(caller, request, &mut decision)
            .map_err(PipelineError::Effect)?;
        self.effects.delivered(caller, request, &decision, latency);
        let decided = [Decided {
            request,
            decision: &decision,
            latency,
        }];
        self.effects
            .audit(caller, &decided)
            .await
            .map_err(PipelineError::Effect)?;
        Ok(decision)
    }

    /// Decides a batch, all or nothing (see the module docs). `abandoned` tells whether the
    /// caller still waits; it is asked after the audit, before any session changes.
    pub async fn decide_batch(
        &self,
        caller: &Caller<'_>,
        requests: &[Request],
        abandoned: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<Decision>, PipelineError<E::Error>> {
        // One policy for the whole batch, even if the set is swapped meanwhile.
        let policy = self.policy(caller)?;
        for _ in 0..BATCH_ATTEMPTS {
            let Staged {
                mut decisions,
                writes,
            } = self.stage(&policy, caller, requests).await?;
            for (request, (decision, _)) in requests.iter().zip(decisions.iter_mut()) {
                self.effects
                    .seal(caller, request, decision)
                    .map_err(PipelineError::Effect)?;
            }
            let decided: Vec<Decided<'_>> = requests
                .iter()
                .zip(&decisions)
                .map(|(request, (decision, latency))| Decided {
                    request,
                    decision,
                    latency: *latency,
                })
                .collect();
            let receipt = self
                .effects
                .audit(caller, &decided)
                .await
                .map_err(PipelineError::Effect)?;
            drop(decided);
            if abandoned() {
                self.void(caller, &policy, receipt).await?;
                return Err(PipelineError::Abandoned);
            }
            let committed = match self.sessions.commit(StoreAccess::new(), &writes).await {
                Ok(committed) => committed,
                Err(e) => match self.store_failed(e) {
                    // Failing open: decided and audited, delivered as they are, the sessions
                    // unchanged.
                    Ok(()) => true,
                    Err(refused) => {
                        self.void(caller, &policy, receipt).await?;
                        return Err(refused);
                    }
                },
            };
            if committed {
                for (request, (decision, latency)) in requests.iter().zip(&decisions) {
                    self.effects.delivered(caller, request, decision, *latency);
                }
                return Ok(decisions.into_iter().map(|(d, _)| d).collect());
            }
            self.void(caller, &policy, receipt).await?;
            tracing::debug!("batch sessions changed meanwhile; deciding again");
        }
        Err(PipelineError::Conflict {
            attempts: BATCH_ATTEMPTS,
        })
    }

    async fn void(
        &self,
        caller: &Caller<'_>,
        policy: &CompiledPolicy,
        receipt: Option<AuditReceipt>,
    ) -> Result<(), PipelineError<E::Error>> {
        match receipt {
            Some(receipt) => self
                .effects
                .void(caller, policy, receipt)
                .await
                .map_err(PipelineError::Effect),
            None => Ok(()),
        }
    }

    /// Decides every request in order against copies of its sessions (a session's requests see
    /// the changes of the ones before); changes nothing in the store.
    async fn stage(
        &self,
        policy: &CompiledPolicy,
        caller: &Caller<'_>,
        requests: &[Request],
    ) -> Result<Staged, PipelineError<E::Error>> {
        // Session key -> (state and version loaded, working copy changed), in first-use order;
        // a session the store could not load (failing open) is decided empty and not written.
        let mut sessions: Vec<(String, Versioned, bool)> = Vec::new();
        let mut unavailable: Vec<String> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut decisions = Vec::with_capacity(requests.len());
        for request in requests {
            let started = Instant::now();
            let Some(session) = request.session.as_deref() else {
                let evaluation = evaluate(policy, request, &SessionState::default());
                self.check_failure(&evaluation);
                decisions.push((evaluation.decision, started.elapsed()));
                continue;
            };
            let key = caller.session_key(session).into_owned();
            let slot = match index.get(&key) {
                Some(&i) => i,
                None => {
                    let loaded = match self.sessions.load(StoreAccess::new(), &key).await {
                        Ok(loaded) => loaded,
                        Err(e) => {
                            self.store_failed(e)?;
                            unavailable.push(key.clone());
                            Versioned::default()
                        }
                    };
                    index.insert(key.clone(), sessions.len());
                    sessions.push((key, loaded, false));
                    sessions.len() - 1
                }
            };
            let Some((_, copy, changed)) = sessions.get_mut(slot) else {
                return Err(StoreError::new("a staged session went missing").into());
            };
            let evaluation = evaluate(policy, request, &copy.state);
            self.check_failure(&evaluation);
            if let Some(change) = evaluation.change.filter(|c| !c.is_noop()) {
                copy.state.apply(&change);
                *changed = true;
            }
            decisions.push((evaluation.decision, started.elapsed()));
        }
        // Every session read goes into the commit: one only read is checked unchanged, so that
        // no decision stands on a state that another request changed before it was delivered.
        let writes = sessions
            .into_iter()
            .filter(|(session, _, _)| !unavailable.contains(session))
            .map(|(session, copy, changed)| SessionWrite {
                session,
                expected: copy.version,
                state: changed.then_some(copy.state),
            })
            .collect();
        Ok(Staged { decisions, writes })
    }
}
