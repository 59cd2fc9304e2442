//! The decision pipeline: policy set, batch all or nothing, the order of effects, voiding on a
//! conflict, tenant namespacing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use warden_core::pipeline::{
    AuditReceipt, BATCH_ATTEMPTS, BoxFuture, Caller, Decided, Effects, NoEffects, Pipeline,
    PipelineError, PolicySet,
};
use warden_core::{
    CompileOptions, CompiledPolicy, Decision, MemorySessionStore, Request, SessionStore,
    StateChange, StoreCall, StoreError, Verdict,
};
use warden_core::{OnStoreFailure, StoreAccess};

/// Tests drive the stores directly (feature `store-tests`).
const ACCESS: StoreAccess = StoreAccess::for_store_tests();

const POLICY: &str = "warden: 1\nname: support\ndefault: deny\ntools:\n  crm.read: [sensitive_read]\n  send_email: [external_write]\nrules:\n  - { id: reads, effect: allow, classes: [sensitive_read], add_taints: [pii] }\n  - { id: writes, effect: allow, classes: [external_write] }\n  - { id: no-exfil, effect: deny, classes: [external_write], if: \"taint:pii\" }\n";

const OPEN: &str = "warden: 1\nname: open\ndefault: allow\nrules: []\n";

fn policy(text: &str) -> Arc<CompiledPolicy> {
    Arc::new(CompiledPolicy::compile("p.yaml", text, CompileOptions::default()).unwrap())
}

fn request(session: &str, tool: &str) -> Request {
    Request::from_json(format!(r#"{{"session":"{session}","tool":"{tool}"}}"#).as_bytes()).unwrap()
}

/// Runs a future that never waits (every effect here is ready at once).
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the future waited"),
    }
}

fn pipeline<E: Effects>(effects: E) -> Pipeline<E> {
    Pipeline::new(
        PolicySet::single(policy(POLICY)).with("open", policy(OPEN)),
        Arc::new(MemorySessionStore::new()),
        effects,
    )
}

fn verdicts(decisions: &[Decision]) -> Vec<Verdict> {
    decisions.iter().map(|d| d.verdict).collect()
}

#[test]
fn callers_pick_a_policy_by_name_or_get_the_default() {
    let p = pipeline(NoEffects);
    let send = request("s", "send_email");
    let default = ready(p.decide(&Caller::default(), &send)).unwrap();
    assert_eq!(&*default.policy.name, "support");
    let open = Caller {
        policy: Some("open"),
        ..Caller::default()
    };
    assert_eq!(&*ready(p.decide(&open, &send)).unwrap().policy.name, "open");
    let missing = Caller {
        policy: Some("nope"),
        ..Caller::default()
    };
    assert_eq!(
        ready(p.decide(&missing, &send)).unwrap_err(),
        PipelineError::UnknownPolicy("nope".to_owned())
    );
    // The whole set is swapped at once.
    p.swap_policies(PolicySet::default().with("open", policy(OPEN)));
    assert!(matches!(
        ready(p.decide(&Caller::default(), &send)),
        Err(PipelineError::UnknownPolicy(_))
    ));
}

#[test]
fn tenants_never_share_a_session() {
    let p = pipeline(NoEffects);
    let a = Caller {
        tenant: Some("a"),
        ..Caller::default()
    };
    let b = Caller {
        tenant: Some("b"),
        ..Caller::default()
    };
    ready(p.decide(&a, &request("s", "crm.read"))).unwrap();
    let deny = ready(p.decide(&a, &request("s", "send_email"))).unwrap();
    assert_eq!(deny.verdict, Verdict::Deny);
    let allow = ready(p.decide(&b, &request("s", "send_email"))).unwrap();
    assert_eq!(allow.verdict, Verdict::Allow);
    assert!(p.sessions().get("a\u{1f}s").wait().unwrap().is_some());
    assert!(p.sessions().get("s").wait().unwrap().is_none());
}

/// The library's engine with a tenant keys its sessions as the daemon keys that tenant's, so
/// both share them over one store; an engine without a tenant or with another sees none.
#[test]
fn an_engine_with_a_tenant_uses_that_tenants_sessions() {
    let store: Arc<dyn SessionStore> = Arc::new(MemorySessionStore::new());
    let compiled = || CompiledPolicy::compile("p.yaml", POLICY, CompileOptions::default()).unwrap();
    let acme = warden_core::Engine::with_store(compiled(), Arc::clone(&store)).with_tenant("acme");
    let bare = warden_core::Engine::with_store(compiled(), Arc::clone(&store));
    let globex =
        warden_core::Engine::with_store(compiled(), Arc::clone(&store)).with_tenant("globex");
    acme.decide(&request("s", "crm.read")).unwrap();
    assert!(store.get("acme\u{1f}s").wait().unwrap().is_some());
    assert!(store.get("s").wait().unwrap().is_none());
    // The daemon's pipeline deciding for acme sees the taint the engine set.
    let daemon = Pipeline::new(PolicySet::single(policy(POLICY)), store, NoEffects);
    let as_acme = Caller {
        tenant: Some("acme"),
        ..Caller::default()
    };
    let deny = ready(daemon.decide(&as_acme, &request("s", "send_email"))).unwrap();
    assert_eq!(deny.verdict, Verdict::Deny);
    assert_eq!(
        acme.decide(&request("s", "send_email")).unwrap().verdict,
        Verdict::Deny
    );
    for other in [&bare, &globex] {
        assert_eq!(
            other.decide(&request("s", "send_email")).unwrap().verdict,
            Verdict::Allow
        );
    }
}

#[test]
fn a_batch_sees_its_own_changes_and_commits_them_together() {
    let p = pipeline(NoEffects);
    let batch = [
        request("s", "send_email"),
        request("s", "crm.read"),
        request("s", "send_email"),
        request("t", "send_email"),
    ];
    let decisions = ready(p.decide_batch(&Caller::default(), &batch, &|| false)).unwrap();
    assert_eq!(
        verdicts(&decisions),
        [
            Verdict::Allow,
            Verdict::Allow,
            Verdict::Deny,
            Verdict::Allow
        ]
    );
    assert!(
        p.sessions()
            .get("s")
            .wait()
            .unwrap()
            .unwrap()
            .taints
            .contains("pii")
    );
}

/// Records every effect in order; fails the ones it is told to.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<String>>,
    fail_seal_at: Option<usize>,
    fail_audit: bool,
    seals: AtomicUsize,
    /// A request made "concurrently" while the batch's audit is written, this many times.
    interfere: AtomicUsize,
    store: Option<Arc<dyn SessionStore>>,
}

impl Effects for Recorder {
    type Error = String;

    fn seal(
        &self,
        _caller: &Caller<'_>,
        _request: &Request,
        _decision: &mut Decision,
    ) -> Result<(), String> {
        let n = self.seals.fetch_add(1, Ordering::SeqCst);
        if self.fail_seal_at == Some(n) {
            return Err("signing failed".to_owned());
        }
        Ok(())
    }

    fn audit<'a>(
        &'a self,
        _caller: &'a Caller<'a>,
        decided: &'a [Decided<'a>],
    ) -> BoxFuture<'a, Result<Option<AuditReceipt>, String>> {
        Box::pin(async move {
            if self.fail_audit {
                return Err("disk full".to_owned());
            }
            let mut log = self.log.lock();
            let first = log.len() as u64 + 1;
            for d in decided {
                log.push(format!("{:?}", d.decision.verdict));
            }
            let last = log.len() as u64;
            if self.interfere.load(Ordering::SeqCst) > 0 {
                self.interfere.fetch_sub(1, Ordering::SeqCst);
                let change = StateChange {
                    add: vec!["pii".into()],
                    history_limit: 10,
                    ..StateChange::default()
                };
                let store = self.store.as_ref().unwrap();
                store
                    .transact(ACCESS, "s", &mut |_| Some(change.clone()))
                    .wait()
                    .unwrap();
            }
            Ok(Some(AuditReceipt { first, last }))
        })
    }

    fn void<'a>(
        &'a self,
        _caller: &'a Caller<'a>,
        _policy: &'a CompiledPolicy,
        receipt: AuditReceipt,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.log
                .lock()
                .push(format!("void {}..={}", receipt.first, receipt.last));
            Ok(())
        })
    }

    fn delivered(
        &self,
        _caller: &Caller<'_>,
        _request: &Request,
        decision: &Decision,
        _latency: std::time::Duration,
    ) {
        self.log
            .lock()
            .push(format!("delivered {:?}", decision.verdict));
    }

    fn state_failed(&self, _error: &StoreError, decided: bool) {
        self.log
            .lock()
            .push(format!("state failed, decided {decided}"));
    }
}

fn batch() -> [Request; 2] {
    [request("s", "crm.read"), request("s", "send_email")]
}

#[test]
fn a_batch_whose_token_or_audit_fails_changes_no_session() {
    for effects in [
        Recorder {
            fail_seal_at: Some(1),
            ..Recorder::default()
        },
        Recorder {
            fail_audit: true,
            ..Recorder::default()
        },
    ] {
        let p = pipeline(effects);
        let err = ready(p.decide_batch(&Caller::default(), &batch(), &|| false)).unwrap_err();
        assert!(matches!(err, PipelineError::Effect(_)), "{err:?}");
        assert!(
            p.sessions().get("s").wait().unwrap().is_none(),
            "a session changed"
        );
        assert!(p.effects().log.lock().is_empty(), "something was recorded");
    }
}

#[test]
fn a_batch_abandoned_by_its_caller_is_voided_and_changes_nothing() {
    let p = pipeline(Recorder::default());
    let err = ready(p.decide_batch(&Caller::default(), &batch(), &|| true)).unwrap_err();
    assert_eq!(err, PipelineError::Abandoned);
    assert!(p.sessions().get("s").wait().unwrap().is_none());
    assert_eq!(*p.effects().log.lock(), ["Allow", "Deny", "void 1..=2"]);
}

/// Another request taints the session while the batch's audit is written: the batch's group is
/// voided and the batch decided again from the new state (now denied), then delivered.
#[test]
fn a_batch_whose_session_changed_meanwhile_is_voided_and_decided_again() {
    let store: Arc<dyn SessionStore> = Arc::new(MemorySessionStore::new());
    let effects = Recorder {
        interfere: AtomicUsize::new(1),
        store: Some(Arc::clone(&store)),
        ..Recorder::default()
    };
    let p = Pipeline::new(PolicySet::single(policy(POLICY)), store, effects);
    let send = [request("s", "send_email")];
    let decisions = ready(p.decide_batch(&Caller::default(), &send, &|| false)).unwrap();
    assert_eq!(verdicts(&decisions), [Verdict::Deny]);
    assert_eq!(
        *p.effects().log.lock(),
        ["Allow", "void 1..=1", "Deny", "delivered Deny"]
    );

    // A session that keeps changing: every attempt voided, then a conflict, nothing applied.
    let store: Arc<dyn SessionStore> = Arc::new(MemorySessionStore::new());
    let effects = Recorder {
        interfere: AtomicUsize::new(usize::MAX),
        store: Some(Arc::clone(&store)),
        ..Recorder::default()
    };
    let p = Pipeline::new(PolicySet::single(policy(POLICY)), store, effects);
    let read = [request("s", "crm.read"), request("t", "crm.read")];
    let err = ready(p.decide_batch(&Caller::default(), &read, &|| false)).unwrap_err();
    assert_eq!(
        err,
        PipelineError::Conflict {
            attempts: BATCH_ATTEMPTS
        }
    );
    let log = p.effects().log.lock();
    assert_eq!(
        log.iter().filter(|l| l.starts_with("void")).count(),
        BATCH_ATTEMPTS
    );
    assert!(!log.iter().any(|l| l.starts_with("delivered")));
    assert!(
        p.sessions().get("t").wait().unwrap().is_none(),
        "the batch's other session changed"
    );
}

#[test]
fn one_decision_is_sealed_delivered_then_audited() {
    let p = pipeline(Recorder::default());
    let d = ready(p.decide(&Caller::default(), &request("s", "crm.read"))).unwrap();
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(*p.effects().log.lock(), ["delivered Allow", "Allow"]);
    assert_eq!(p.effects().seals.load(Ordering::SeqCst), 1);
}

/// A store that fails every call (a network store that went away).
struct Unreachable;

/// Every call is a future that fails, as a network store's would; `transact` is the trait's
/// optimistic default.
impl SessionStore for Unreachable {
    fn load<'a>(
        &'a self,
        _: StoreAccess,
        _session: &'a str,
    ) -> StoreCall<'a, warden_core::session::Versioned> {
        StoreCall::pending(async { Err(StoreError::new("unreachable")) })
    }
    fn commit<'a>(
        &'a self,
        _: StoreAccess,
        _writes: &'a [warden_core::SessionWrite],
    ) -> StoreCall<'a, bool> {
        StoreCall::pending(async { Err(StoreError::new("unreachable")) })
    }
    fn get<'a>(&'a self, _session: &'a str) -> StoreCall<'a, Option<warden_core::SessionState>> {
        StoreCall::pending(async { Err(StoreError::new("unreachable")) })
    }
    fn remove<'a>(&'a self, _session: &'a str) -> StoreCall<'a, ()> {
        StoreCall::pending(async { Err(StoreError::new("unreachable")) })
    }
    fn len(&self) -> usize {
        0
    }
}

/// A failing store is a decision error (the front door answers it as a failure), never an
/// allow, for one request and for a batch; nothing is audited or delivered.
#[test]
fn a_failing_store_is_an_error_never_an_allow() {
    let p = Pipeline::new(
        PolicySet::single(policy(OPEN)),
        Arc::new(Unreachable),
        Recorder::default(),
    );
    let err = ready(p.decide(&Caller::default(), &request("s", "anything"))).unwrap_err();
    assert!(matches!(err, PipelineError::Store(_)), "{err:?}");
    let err = ready(p.decide_batch(&Caller::default(), &batch(), &|| false)).unwrap_err();
    assert!(matches!(err, PipelineError::Store(_)), "{err:?}");
    assert_eq!(
        *p.effects().log.lock(),
        ["state failed, decided false", "state failed, decided false"],
        "reported, nothing audited or delivered"
    );
    // Without a session no state is read: the open policy decides.
    let stateless = Request::from_json(br#"{"tool":"anything"}"#).unwrap();
    assert_eq!(
        ready(p.decide(&Caller::default(), &stateless))
            .unwrap()
            .verdict,
        Verdict::Allow
    );
}

/// Failing open (`OnStoreFailure::DecideWithoutSession`): a store that fails every call still
/// gets decisions, each against an empty session (a taint set before does not apply), audited,
/// delivered and reported; a batch too, its requests each against an empty session.
#[test]
fn failing_open_decides_without_the_session() {
    let p = Pipeline::new(
        PolicySet::single(policy(POLICY)),
        Arc::new(Unreachable),
        Recorder::default(),
    )
    .with_store_failure(OnStoreFailure::DecideWithoutSession);
    let d = ready(p.decide(&Caller::default(), &request("s", "send_email"))).unwrap();
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(
        *p.effects().log.lock(),
        ["state failed, decided true", "delivered Allow", "Allow"]
    );
    p.effects().log.lock().clear();
    // Within a batch the session's changes still carry from one request to the next: the read
    // taints the staged copy, so the send after it is denied, and nothing is written.
    let decisions = ready(p.decide_batch(&Caller::default(), &batch(), &|| false)).unwrap();
    let verdicts: Vec<Verdict> = decisions.iter().map(|d| d.verdict).collect();
    assert_eq!(verdicts, [Verdict::Allow, Verdict::Deny]);
    assert_eq!(
        p.effects().log.lock().first().map(String::as_str),
        Some("state failed, decided true")
    );
}

/// Records the approval steps the pipeline reports.
#[derive(Default)]
struct Steps(Mutex<Vec<(&'static str, String)>>);

impl Effects for Steps {
    type Error = std::convert::Infallible;

    fn approval<'a>(
        &'a self,
        event: warden_core::pipeline::ApprovalEvent,
        approval: &'a warden_core::state::Approval,
    ) -> BoxFuture<'a, Result<(), Self::Error>> {
        self.0.lock().push((event.as_str(), approval.id.clone()));
        Box::pin(async { Ok(()) })
    }
}

const ASK: &str = "warden: 1\nname: ask\ndefault: deny\nrules:\n  - { id: pay, effect: ask, tools: [pay], add_taints: [paid], reason: \"needs a person\" }\n  - { id: read, effect: allow, tools: [read] }\n";

fn pay(amount: u32) -> Request {
    Request::from_json(
        format!(r#"{{"session":"s","principal":"bot","tool":"pay","args":{{"amount":{amount}}}}}"#)
            .as_bytes(),
    )
    .unwrap()
}

/// A held call: pending with an approval (asked once); approved, the same call goes through
/// once with the ask rule's taints, other arguments and the next call ask again; denied, the
/// retry is denied; every step reported; tenants do not share approvals; a batch never asks.
#[test]
fn a_held_call_is_pending_until_approved_and_goes_through_once() {
    let pipeline = Pipeline::new(
        PolicySet::single(policy(ASK)),
        Arc::new(MemorySessionStore::new()),
        Steps::default(),
    );
    let acme = Caller {
        tenant: Some("acme"),
        ..Caller::default()
    };
    let first = ready(pipeline.decide(&acme, &pay(5))).unwrap();
    assert_eq!(first.verdict, Verdict::Pending);
    assert_eq!(first.rule.as_deref(), Some("pay"));
    assert!(first.taints.is_empty());
    let id = first.approval.as_ref().unwrap().id.clone();
    let again = ready(pipeline.decide(&acme, &pay(5))).unwrap();
    assert_eq!(again.approval.as_ref().unwrap().id, id);
    // Another tenant's identical call is its own.
    let globex = Caller {
        tenant: Some("globex"),
        ..Caller::default()
    };
    let theirs = ready(pipeline.decide(&globex, &pay(5))).unwrap();
    assert_ne!(theirs.approval.as_ref().unwrap().id, id);

    let resolved = ready(pipeline.resolve_approval(&id, true, "k1", "ok")).unwrap();
    assert!(matches!(resolved, warden_core::state::Resolved::Done(_)));
    assert_eq!(
        ready(pipeline.decide(&acme, &pay(6))).unwrap().verdict,
        Verdict::Pending
    );
    let granted = ready(pipeline.decide(&acme, &pay(5))).unwrap();
    assert_eq!(granted.verdict, Verdict::Allow);
    assert_eq!(granted.taints, [Arc::from("paid")]);
    let used = ready(pipeline.decide(&acme, &pay(5))).unwrap();
    assert_eq!(used.verdict, Verdict::Pending);
    let next = used.approval.as_ref().unwrap().id.clone();
    assert_ne!(next, id);

    ready(pipeline.resolve_approval(&next, false, "k1", "no")).unwrap();
    let denied = ready(pipeline.decide(&acme, &pay(5))).unwrap();
    assert_eq!(denied.verdict, Verdict::Deny);
    assert_eq!(denied.reasons, [Arc::from("approval denied")]);

    let batch = ready(pipeline.decide_batch(&acme, &[pay(9)], &|| false)).unwrap();
    assert_eq!(batch[0].verdict, Verdict::Pending);
    assert!(batch[0].approval.is_none(), "a batch never asks");

    let steps = pipeline.effects().0.lock().clone();
    let events: Vec<&str> = steps.iter().map(|(e, _)| *e).collect();
    assert_eq!(
        events,
        [
            "requested",
            "requested",
            "approved",
            "requested",
            "consumed",
            "requested",
            "denied"
        ]
    );
    assert_eq!(steps[2].1, id);
    assert_eq!(steps[4].1, id);
}
