//! The state layer: one family of traits for every piece of state a decision shares with other
//! decisions, other requests and other instances.
//!
//! | trait | holds | in this crate | elsewhere |
//! |---|---|---|---|
//! | [`SessionStore`] | sessions: taints, history, sequence markers | [`MemorySessionStore`] | `warden_store::EmbeddedSessionStore` |
//! | [`NonceStore`] | single-use ids (decision tokens' `jti`) until they expire | [`MemoryNonceStore`] | |
//! | [`CounterStore`] | counters per fixed window (rate limits, usage and budgets) | [`MemoryCounterStore`] | |
//! | [`crate::pins::PinStore`] | tool definition pins per upstream | [`crate::pins::MemoryPinStore`] | `warden_store::RedbPinStore` |
//! | [`KeyStore`] | API key records (hashes, tenants, policies, roles) | [`MemoryKeyStore`] | `warden_store::FileKeyStore` |
//! | [`ApprovalStore`] | approvals of calls `ask` rules hold | [`MemoryApprovalStore`] | |
//!
//! Every call is asynchronous so that a store behind a network implements the same traits, and
//! none holds a lock across a call: a decision reads a session with its version, decides, and
//! commits only if the version is unchanged ([`SessionStore::load`], [`SessionStore::commit`],
//! retried by [`optimistic_transact`]). An in-process store answers at once with
//! [`StoreCall::Ready`], which neither allocates nor suspends, so the library's synchronous
//! engine pays nothing for the asynchrony ([`wait`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::session::{SessionState, StateChange, Versioned};

mod approvals;
pub use approvals::{
    APPROVAL_RETENTION_MS, Approval, ApprovalBinding, ApprovalStatus, ApprovalStore, Ask, Asked,
    BindingError, DEFAULT_APPROVAL_TTL_MS, DEFAULT_MAX_PENDING_PER_TENANT,
    MAX_APPROVAL_REASON_BYTES, MemoryApprovalStore, Resolution, Resolved, args_sha256,
    ask_transition, resolve_transition,
};
mod memory;
pub use memory::{MemoryCounterStore, MemoryKeyStore, MemoryNonceStore, MemorySessionStore};

/// A boxed future, as a store behind a network returns them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Times [`optimistic_transact`] reads, decides and tries to commit before it gives up.
pub const TRANSACT_ATTEMPTS: usize = 32;

/// A failure of a state store (a shared store may be unreachable; the in-memory ones never fail).
/// Callers fail closed: a decision that needs the store is an error, never an allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state store: {message}")]
pub struct StoreError {
    /// What went wrong, without any state content.
    pub message: String,
}

impl StoreError {
    /// An error saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// The answer of a store call: ready at once (an in-process store: no allocation, no
/// suspension) or a future to await (a store behind a network).
pub enum StoreCall<'a, T, E = StoreError> {
    /// The answer (taken by the first poll that finds it).
    Ready(Option<Result<T, E>>),
    /// The answer, once the future resolves.
    Pending(BoxFuture<'a, Result<T, E>>),
}

impl<'a, T, E> StoreCall<'a, T, E> {
    /// An answer already known.
    pub fn ready(result: Result<T, E>) -> Self {
        Self::Ready(Some(result))
    }

    /// An answer that `future` gives.
    pub fn pending(future: impl Future<Output = Result<T, E>> + Send + 'a) -> Self {
        Self::Pending(Box::pin(future))
    }

    /// The answer, waiting on this thread if the store must (see [`wait`]). A ready answer is
    /// taken as it is, without polling.
    pub fn wait(self) -> Result<T, E> {
        match self {
            Self::Ready(Some(answer)) => answer,
            other => wait(other),
        }
    }
}

impl<T, E> std::fmt::Debug for StoreCall<'_, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ready(_) => "StoreCall::Ready",
            Self::Pending(_) => "StoreCall::Pending",
        })
    }
}

// Nothing is ever pinned inside a `StoreCall`: the ready answer is moved out, the pending one is
// boxed.
impl<T, E> Unpin for StoreCall<'_, T, E> {}

impl<T, E> Future for StoreCall<'_, T, E> {
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Ready(answer) => match answer.take() {
                Some(answer) => Poll::Ready(answer),
                // Polled again after it answered (a caller bug): it stays pending, as a fused
                // future does, rather than panic.
                None => Poll::Pending,
            },
            Self::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

/// Runs `future` to completion on this thread, for synchronous callers (the library's engine,
/// the MCP enforcer). A future that completes on its first poll (every in-process store's) costs
/// one poll; one that must wait parks the thread until its waker is called. Never call it from
/// an asynchronous task: await there instead.
pub fn wait<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    if let Poll::Ready(output) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return output;
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// Unparks the thread that waits in [`wait`]. (`futures::executor::block_on` does the same; the
/// core keeps to the standard library for these few lines.)
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// One session in a [`SessionStore::commit`]: its new state, or only a check that it is unchanged
/// (a session the caller read and decided on without changing it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionWrite {
    /// The session.
    pub session: String,
    /// The version [`SessionStore::load`] returned: the write applies only if it is still current.
    pub expected: u64,
    /// The state that replaces the session's; `None`: the session is only checked.
    pub state: Option<SessionState>,
}

/// What a decision does with its session's state: returns the change to apply (`None` or a
/// no-op: nothing). A store may call it more than once (a retry after a conflict), so it must
/// have no effect but its return value and the last value it leaves in its captures.
pub type Decide<'a> = dyn FnMut(&SessionState) -> Option<StateChange> + Send + 'a;

/// The right to run a session's read-decide-commit ([`SessionStore::transact`], `load`,
/// `commit`): only this crate's decision pipeline can make one, so no front door can decide
/// around the pipeline (and its effects) by calling a store itself. A store implemented
/// elsewhere receives it and needs nothing from it. The state layer's contract tests get one
/// with the `store-tests` feature, which no front door enables.
///
/// Outside this crate it cannot be made, neither by its constructor:
///
/// ```compile_fail,E0624
/// let access = warden_core::StoreAccess::new();
/// ```
///
/// nor by its fields:
///
/// ```compile_fail,E0423
/// let access = warden_core::StoreAccess(());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct StoreAccess(());

impl StoreAccess {
    /// The pipeline's own.
    pub(crate) const fn new() -> Self {
        Self(())
    }

    /// For tests of a store's contract (feature `store-tests`, a dev-dependency only).
    #[cfg(feature = "store-tests")]
    pub const fn for_store_tests() -> Self {
        Self(())
    }
}

/// Where sessions live.
pub trait SessionStore: Send + Sync {
    /// Calls `decide` with the session's current state (empty when unknown) and applies the
    /// change it returns, atomically with respect to every other `transact` and `commit` on the
    /// same session. The default reads, decides and commits optimistically
    /// ([`optimistic_transact`]); an in-process store overrides it with its own lock.
    fn transact<'a>(
        &'a self,
        access: StoreAccess,
        session: &'a str,
        decide: &'a mut Decide<'_>,
    ) -> StoreCall<'a, ()> {
        StoreCall::pending(optimistic_transact(self, access, session, decide))
    }

    /// The session's state and its version, for [`SessionStore::commit`].
    fn load<'a>(&'a self, access: StoreAccess, session: &'a str) -> StoreCall<'a, Versioned>;

    /// Replaces the state of every session in `writes` that carries one, if none of the sessions
    /// in `writes` changed since it was loaded (each still has its `expected` version),
    /// atomically with respect to every other `transact` and `commit`; answers `false` and
    /// changes nothing otherwise (the caller loads and decides again). A session may appear once.
    fn commit<'a>(&'a self, access: StoreAccess, writes: &'a [SessionWrite])
    -> StoreCall<'a, bool>;

    /// A copy of the session's state, `None` when the session is unknown.
    fn get<'a>(&'a self, session: &'a str) -> StoreCall<'a, Option<SessionState>>;

    /// Forgets a session.
    fn remove<'a>(&'a self, session: &'a str) -> StoreCall<'a, ()>;

    /// Number of sessions this instance holds (for metrics; a shared store may answer with what
    /// it knows locally).
    fn len(&self) -> usize;

    /// True when no session is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// [`SessionStore::transact`] by optimistic concurrency: load the state and its version, decide,
/// commit the new state if the version is unchanged, and start again if not, at most
/// [`TRANSACT_ATTEMPTS`] times. No lock is held while deciding, so a store behind a network
/// needs only a versioned compare-and-set.
pub async fn optimistic_transact<S: SessionStore + ?Sized>(
    store: &S,
    access: StoreAccess,
    session: &str,
    decide: &mut Decide<'_>,
) -> Result<(), StoreError> {
    for _ in 0..TRANSACT_ATTEMPTS {
        let loaded = store.load(access, session).await?;
        let Some(change) = decide(&loaded.state).filter(|c| !c.is_noop()) else {
            return Ok(());
        };
        let mut state = loaded.state;
        state.apply(&change);
        let write = [SessionWrite {
            session: session.to_owned(),
            expected: loaded.version,
            state: Some(state),
        }];
        if store.commit(access, &write).await? {
            return Ok(());
        }
    }
    Err(StoreError::new(format!(
        "the session kept changing ({TRANSACT_ATTEMPTS} attempts)"
    )))
}

/// Single-use ids: a decision token's `jti` is consumed once, until the token expires.
pub trait NonceStore: Send + Sync {
    /// Records `nonce` as used until `expires` (unix seconds); answers `true` the first time,
    /// `false` when it was already used and has not expired by `now`. Atomic: of two racing
    /// calls with the same nonce, exactly one gets `true`.
    fn consume<'a>(&'a self, nonce: &'a str, expires: u64, now: u64) -> StoreCall<'a, bool>;
}

/// Counters per fixed time window: rate limits (calls per window) and usage or budgets (tokens,
/// cost). A window is named by the caller (e.g. its start), so every instance sharing a store
/// counts into the same one.
pub trait CounterStore: Send + Sync {
    /// Adds `amount` to the counter `key` in `window` and answers the new total, atomically (of
    /// `n` racing calls adding 1 to a fresh counter, each sees a different total, 1 to `n`). The
    /// counter may be forgotten after `expires` (unix seconds).
    fn add<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        amount: u64,
        expires: u64,
    ) -> StoreCall<'a, u64>;

    /// The counter's total in `window` (0 when it has none).
    fn get<'a>(&'a self, key: &'a str, window: u64) -> StoreCall<'a, u64>;

    /// Adds every `amount` to its counter if each total stays within its `limit`, atomically
    /// and all or none (a reservation against budgets shared by many instances). Answers
    /// `None` when all were added, else the index of the first counter that would pass its
    /// limit (and nothing was added). All the counters of one call share one `group`.
    fn reserve<'a>(&'a self, counters: &'a [Reserve]) -> StoreCall<'a, Option<usize>>;

    /// Changes reserved counters by `delta` each (a total never goes below 0): a reservation
    /// settled on what was spent, or given back.
    fn adjust<'a>(&'a self, changes: &'a [(CounterId, i64)]) -> StoreCall<'a, ()>;

    /// A reserved counter's total (0 when it has none).
    fn reserved<'a>(&'a self, id: &'a CounterId) -> StoreCall<'a, u64>;
}

/// A counter of [`CounterStore::reserve`]: `key` in `window`, within `group` (the counters one
/// reservation touches together; a shared store keeps a group in one place, e.g. one Redis
/// Cluster slot).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterId {
    /// The counters reserved together (e.g. a policy and a tenant).
    pub group: String,
    /// The counter within the group (e.g. a budget and its scope).
    pub key: String,
    /// The window the counter counts (e.g. its start, unix seconds).
    pub window: u64,
}

/// One counter's share of a [`CounterStore::reserve`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserve {
    /// The counter.
    pub id: CounterId,
    /// What to add.
    pub amount: u64,
    /// The most the total may reach.
    pub limit: u64,
    /// When the counter may be forgotten (unix seconds).
    pub expires: u64,
}

/// One stored API key: never the key itself, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRecord {
    /// Public id (the first 12 hex digits of the hash); used to revoke.
    pub id: String,
    /// The tenant the key belongs to.
    pub tenant: String,
    /// The policy the tenant's requests are decided by; the tenant's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// Seconds since the Unix epoch when the key was created.
    #[serde(default)]
    pub created: u64,
    /// What the key may do (`agent` when absent: records written before roles existed).
    #[serde(default, skip_serializing_if = "KeyRole::is_agent")]
    pub role: KeyRole,
}

/// What an API key may do.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    /// Ask for decisions (every key).
    #[default]
    Agent,
    /// Also administer the daemon: answer approvals (and the admin routes that follow).
    Admin,
}

impl KeyRole {
    /// `agent` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Admin => "admin",
        }
    }

    /// The role called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "agent" => Some(Self::Agent),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// True for the default role (not written to key files).
    pub fn is_agent(&self) -> bool {
        *self == Self::Agent
    }
}

impl KeyRecord {
    /// The policy this key's requests use.
    pub fn policy_name(&self) -> &str {
        self.policy.as_deref().unwrap_or(&self.tenant)
    }
}

/// API keys: the records of the keys that may call the daemon. The daemon indexes them for
/// verification when it loads (and reloads) its configuration.
pub trait KeyStore: Send + Sync {
    /// Every record, in the order they were added.
    fn list(&self) -> StoreCall<'_, Vec<KeyRecord>>;

    /// Adds `record`; answers `false` and adds nothing when a record with its id is stored.
    /// Atomic: of racing inserts from every handle on the store, none is lost.
    fn insert<'a>(&'a self, record: &'a KeyRecord) -> StoreCall<'a, bool>;

    /// Removes the record with `id`; answers whether it was there (of racing revocations of one
    /// id, exactly one answers `true`).
    fn revoke<'a>(&'a self, id: &'a str) -> StoreCall<'a, bool>;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use parking_lot::Mutex;

    /// A future that is pending until a thread, started by its first poll, marks it done and
    /// wakes the waker of its latest poll.
    #[derive(Default)]
    struct Later {
        shared: Arc<Mutex<(bool, Option<Waker>)>>,
        started: bool,
    }

    impl Future for Later {
        type Output = u32;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            let mut shared = self.shared.lock();
            if shared.0 {
                return Poll::Ready(41);
            }
            shared.1 = Some(cx.waker().clone());
            drop(shared);
            if !self.started {
                self.started = true;
                let shared = Arc::clone(&self.shared);
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    let mut shared = shared.lock();
                    shared.0 = true;
                    if let Some(waker) = shared.1.take() {
                        waker.wake();
                    }
                });
            }
            Poll::Pending
        }
    }

    #[test]
    fn wait_returns_a_ready_answer_and_parks_for_a_pending_one() {
        assert_eq!(wait(StoreCall::<u8>::ready(Ok(7))).unwrap(), 7);
        assert_eq!(wait(Later::default()), 41);
    }
}
