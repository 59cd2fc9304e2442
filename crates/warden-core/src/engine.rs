//! The engine: the current policy snapshot plus session state, shared by every thread.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::decision::Decision;
use crate::eval::evaluate;
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
            return Ok(evaluate(&policy, request, &SessionState::default()).decision);
        };
        let mut decision = None;
        self.sessions.transact(session, &mut |state| {
            let evaluation = evaluate(&policy, request, state);
            decision = Some(evaluation.decision);
            evaluation.change
        })?;
        decision.ok_or_else(|| {
            DecideError::Store(StoreError {
                message: "the store did not run the decision".to_owned(),
            })
        })
    }
}
