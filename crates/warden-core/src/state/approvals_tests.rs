#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
use super::*;

fn binding(args: &Value) -> ApprovalBinding {
    ApprovalBinding {
        tenant: Some("acme".into()),
        principal: Some("bot".into()),
        session: Some("s1".into()),
        tool: "pay".into(),
        args_sha256: args_sha256(Some(args)).unwrap(),
    }
}

fn ask(args: &Value, now_ms: u64) -> Ask {
    Ask {
        binding: binding(args),
        policy: "p".into(),
        policy_digest: "sha256:00".into(),
        rule: "r".into(),
        now_ms,
        ttl_ms: 1000,
        max_pending: 2,
    }
}

fn resolution(approve: bool, now_ms: u64) -> Resolution {
    Resolution {
        approve,
        approver: "k1".into(),
        reason: "ok".into(),
        now_ms,
        ttl_ms: 1000,
    }
}

fn run(store: &MemoryApprovalStore, a: &Ask) -> Asked {
    store.ask(StoreAccess::new(), a).wait().unwrap()
}

#[test]
fn the_hash_is_canonical_and_binds_every_field() {
    let a = serde_json::json!({"b": 1, "a": [1.0, "x"]});
    let b: Value = serde_json::from_str(r#"{ "a": [1, "x"], "b": 1.0 }"#).unwrap();
    assert_eq!(args_sha256(Some(&a)), args_sha256(Some(&b)));
    assert_eq!(args_sha256(None), args_sha256(Some(&serde_json::json!({}))));
    assert_eq!(
        args_sha256(Some(&serde_json::json!({"n": 9007199254740993_u64}))),
        Err(BindingError::InexactNumber)
    );
    let base = binding(&a);
    let mut other = base.clone();
    other.session = None;
    assert_ne!(base.key(), other.key());
    let mut split = base.clone();
    split.principal = Some("bots".into());
    split.session = Some("1".into());
    assert_ne!(base.key(), split.key());
}

#[test]
fn pending_then_approved_is_consumed_once() {
    let store = MemoryApprovalStore::new();
    let args = serde_json::json!({"amount": 5});
    let Asked::Requested(first) = run(&store, &ask(&args, 0)) else {
        panic!("not requested")
    };
    assert!(first.id.starts_with("apr_") && first.id.len() == 36);
    assert_eq!(run(&store, &ask(&args, 10)), Asked::Pending(first.clone()));
    let Resolved::Done(done) = store
        .resolve(&first.id, &resolution(true, 20))
        .wait()
        .unwrap()
    else {
        panic!("not resolved")
    };
    assert_eq!(done.status, ApprovalStatus::Approved);
    assert_eq!(done.expires_ms, 1020);
    // Answered once only.
    assert!(matches!(
        store
            .resolve(&first.id, &resolution(false, 30))
            .wait()
            .unwrap(),
        Resolved::Settled(_)
    ));
    // Other arguments are not covered.
    let other = serde_json::json!({"amount": 6});
    assert!(matches!(run(&store, &ask(&other, 40)), Asked::Requested(_)));
    let Asked::Granted(used) = run(&store, &ask(&args, 50)) else {
        panic!("not granted")
    };
    assert_eq!(used.status, ApprovalStatus::Consumed);
    // Used once: the next call asks again.
    assert!(matches!(run(&store, &ask(&args, 60)), Asked::Requested(_)));
}

#[test]
fn denied_and_expired_deny_the_retry_once() {
    let store = MemoryApprovalStore::new();
    let args = serde_json::json!({"amount": 5});
    let Asked::Requested(first) = run(&store, &ask(&args, 0)) else {
        panic!()
    };
    store
        .resolve(&first.id, &resolution(false, 5))
        .wait()
        .unwrap();
    assert!(matches!(run(&store, &ask(&args, 10)), Asked::Denied(_)));
    let Asked::Requested(second) = run(&store, &ask(&args, 20)) else {
        panic!()
    };
    // Unanswered past its expiry: expired, and an answer comes too late.
    assert_eq!(
        store.get(&second.id, 1020).wait().unwrap().unwrap().status,
        ApprovalStatus::Expired
    );
    assert!(matches!(
        store
            .resolve(&second.id, &resolution(true, 1020))
            .wait()
            .unwrap(),
        Resolved::Expired(_)
    ));
    assert!(matches!(run(&store, &ask(&args, 1030)), Asked::Expired(_)));
    // An approval that waits past its expiry for its call expires too.
    let Asked::Requested(third) = run(&store, &ask(&args, 2000)) else {
        panic!()
    };
    store
        .resolve(&third.id, &resolution(true, 2001))
        .wait()
        .unwrap();
    assert!(matches!(run(&store, &ask(&args, 3001)), Asked::Expired(_)));
}

#[test]
fn pending_approvals_per_tenant_are_bounded() {
    let store = MemoryApprovalStore::new();
    for n in 0..2 {
        assert!(matches!(
            run(&store, &ask(&serde_json::json!({ "n": n }), 0)),
            Asked::Requested(_)
        ));
    }
    assert_eq!(
        run(&store, &ask(&serde_json::json!({"n": 9}), 0)),
        Asked::Full
    );
    let mut other_tenant = ask(&serde_json::json!({"n": 9}), 0);
    other_tenant.binding.tenant = Some("other".into());
    assert!(matches!(run(&store, &other_tenant), Asked::Requested(_)));
    assert_eq!(
        store.list(Some("acme"), true, 0, 10).wait().unwrap().len(),
        2
    );
    assert_eq!(store.list(None, true, 0, 1).wait().unwrap().len(), 1);
    // Expired ones no longer count.
    assert!(matches!(
        run(&store, &ask(&serde_json::json!({"n": 9}), 1000)),
        Asked::Requested(_)
    ));
}
