//! The engine: the current policy snapshot plus session state, shared by every thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::decision::Decision;
use crate::eval::{Evaluation, Failure, evaluate};
use crate::policy::CompiledPolicy;
use crate::request::Request;
use crate::session::{MemorySessionStore, SessionState, SessionStore, StoreError};

/// Why a decision could not be made. Callers must treat this as deny (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// The session store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Decides requests against an atomically swappable policy snapshot. `Send + Sync`; share it
/// behind an `Arc` (or by reference) across threads.
pub struct Engine {
    policy: ArcSwap<CompiledPolicy>,
    sessions: Arc<dyn SessionStore>,
    rego_limit_exceeded: AtomicU64,
    rego_errors: AtomicU64,
    on_failure: Option<FailureHook>,
}

/// Called with every decision that failed closed (besides the engine's own count and log line),
/// e.g. to count it in a metrics registry.
pub type FailureHook = Arc<dyn Fn(Failure) + Send + Sync>;

/// Counts of decisions that failed closed, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Decisions denied because a Rego query exceeded its limits.
    pub rego_limit_exceeded: u64,
    /// Decisions denied because a Rego query failed to evaluate.
    pub rego_errors: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policy", &self.policy.load().info)
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl Engine {
    /// An engine with in-memory sessions.
    pub fn new(policy: CompiledPolicy) -> Self {
        Self::with_store(policy, Arc::new(MemorySessionStore::new()))
    }

    /// An engine over the given session store.
    pub fn with_store(policy: CompiledPolicy, sessions: Arc<dyn SessionStore>) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            sessions,
            rego_limit_exceeded: AtomicU64::new(0),
            rego_errors: AtomicU64::new(0),
            on_failure: None,
        }
    }

    /// Also reports every decision that fails closed to `hook`.
    pub fn with_failure_hook(mut self, hook: FailureHook) -> Self {
        self.on_failure = Some(hook);
        self
    }

    /// Counts of decisions that failed closed since the engine was built.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            rego_limit_exceeded: self.rego_limit_exceeded.load(Ordering::Relaxed),
            rego_errors: self.rego_errors.load(Ordering::Relaxed),
        }
    }

    /// Counts and logs a failed-closed decision (the rule and policy, never request content).
    fn record(&self, evaluation: &Evaluation) {
        let Some(failure) = evaluation.failure else {
            return;
        };
        let counter = match failure {
            Failure::RegoLimitExceeded => &self.rego_limit_exceeded,
            Failure::RegoError => &self.rego_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        crate::eval::log_failure(evaluation);
        if let Some(hook) = &self.on_failure {
            hook(failure);
        }
    }

    /// The current policy snapshot.
    pub fn policy(&self) -> Arc<CompiledPolicy> {
        self.policy.load_full()
    }

    /// Replaces the policy atomically: every decision uses either the old or the new snapshot
    /// whole, and every decision that starts after this returns uses the new one.
    pub fn swap_policy(&self, policy: CompiledPolicy) {
        self.policy.store(Arc::new(policy));
    }

    /// The session store.
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// Decides one request. With a session, the read-decide-update of that session's state is
    /// atomic; without one, no state is read or written.
    pub fn decide(&self, request: &Request) -> Result<Decision, DecideError> {
        let policy = self.policy.load();
        let Some(session) = request.session.as_deref() else {
            let evaluation = evaluate(&policy, request, &SessionState::default());
            self.record(&evaluation);
            return Ok(evaluation.decision);
        };
        let mut outcome = None;
        self.sessions.transact(session, &mut |state| {
            let mut evaluation = evaluate(&policy, request, state);
            let change = evaluation.change.take();
            outcome = Some(evaluation);
            change
        })?;
        if let Some(evaluation) = &outcome {
            self.record(evaluation);
        }
        outcome.map(|e| e.decision).ok_or_else(|| {
            DecideError::Store(StoreError {
                message: "the store did not run the decision".to_owned(),
            })
        })
    }
}
