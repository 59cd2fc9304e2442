//! The library's engine: a [`Pipeline`] of one policy with no effects but counting the decisions
//! that failed closed. What the daemon and the proxies call with their own effects is the same
//! pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::decision::Decision;
use crate::eval::{Evaluation, Failure};
use crate::pipeline::{Caller, Effects, Pipeline, PipelineError, PolicySet};
use crate::policy::CompiledPolicy;
use crate::request::Request;
use crate::state::{MemorySessionStore, SessionStore, StoreError};

/// Why a decision could not be made. Callers must treat this as deny (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// The session store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Called with every decision that failed closed (besides the engine's own count and log line),
/// e.g. to count it in a metrics registry.
pub type FailureHook = Arc<dyn Fn(Failure) + Send + Sync>;

/// Decides requests against an atomically swappable policy snapshot. `Send + Sync`; share it
/// behind an `Arc` (or by reference) across threads.
pub struct Engine {
    pipeline: Pipeline<Counting>,
    /// The policy last swapped in (the pipeline's set holds it as its default).
    current: ArcSwap<CompiledPolicy>,
    /// The tenant whose sessions this engine uses (see [`Engine::with_tenant`]).
    tenant: Option<Arc<str>>,
}

/// The engine's one effect: counting (and reporting to a hook) the decisions that failed closed.
#[derive(Default)]
struct Counting {
    rego_limit_exceeded: AtomicU64,
    rego_errors: AtomicU64,
    on_failure: Option<FailureHook>,
}

impl Effects for Counting {
    type Error = std::convert::Infallible;

    fn failed_closed(&self, evaluation: &Evaluation) {
        let Some(failure) = evaluation.failure else {
            return;
        };
        let counter = match failure {
            Failure::RegoLimitExceeded => &self.rego_limit_exceeded,
            Failure::RegoError => &self.rego_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = &self.on_failure {
            hook(failure);
        }
    }

    fn delivered(
        &self,
        _caller: &Caller<'_>,
        _request: &Request,
        _decision: &Decision,
        _latency: Duration,
    ) {
    }
}

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
            .field("policy", &self.policy().info)
            .field("sessions", &self.sessions().len())
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
        let policy = Arc::new(policy);
        Self {
            pipeline: Pipeline::new(
                PolicySet::single(Arc::clone(&policy)),
                sessions,
                Counting::default(),
            ),
            current: ArcSwap::new(policy),
            tenant: None,
        }
    }

    /// Namespaces the sessions this engine reads and writes by `tenant`, as the daemon does for
    /// the tenant of an API key: over a shared store (Redis), an engine with tenant `acme` and a
    /// `warden serve` deciding for `acme`'s key share their sessions. Without a tenant the
    /// request's session id is the store key.
    #[must_use]
    pub fn with_tenant(mut self, tenant: impl Into<Arc<str>>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Also reports every decision that fails closed to `hook`.
    pub fn with_failure_hook(self, hook: FailureHook) -> Self {
        let policies = (*self.pipeline.policies()).clone();
        let sessions = Arc::clone(self.pipeline.sessions());
        let effects = Counting {
            on_failure: Some(hook),
            ..Counting::default()
        };
        Self {
            pipeline: Pipeline::new(policies, sessions, effects),
            current: self.current,
            tenant: self.tenant,
        }
    }

    /// Counts of decisions that failed closed since the engine was built.
    pub fn stats(&self) -> EngineStats {
        let effects = self.pipeline.effects();
        EngineStats {
            rego_limit_exceeded: effects.rego_limit_exceeded.load(Ordering::Relaxed),
            rego_errors: effects.rego_errors.load(Ordering::Relaxed),
        }
    }

    /// The current policy snapshot.
    pub fn policy(&self) -> Arc<CompiledPolicy> {
        self.current.load_full()
    }

    /// Replaces the policy atomically: every decision uses either the old or the new snapshot
    /// whole, and every decision that starts after this returns uses the new one.
    pub fn swap_policy(&self, policy: CompiledPolicy) {
        let policy = Arc::new(policy);
        self.pipeline
            .swap_policies(PolicySet::single(Arc::clone(&policy)));
        self.current.store(policy);
    }

    /// The session store.
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        self.pipeline.sessions()
    }

    /// Decides one request. With a session, the read-decide-update of that session's state is
    /// atomic; without one, no state is read or written.
    pub fn decide(&self, request: &Request) -> Result<Decision, DecideError> {
        let caller = Caller {
            tenant: self.tenant.as_deref(),
            ..Caller::default()
        };
        match self.pipeline.decide_untimed(&caller, request) {
            Ok(decision) => Ok(decision),
            Err(PipelineError::Store(e)) => Err(DecideError::Store(e)),
            Err(other) => Err(DecideError::Store(StoreError {
                message: other.to_string(),
            })),
        }
    }
}
