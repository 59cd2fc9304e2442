//! Chain semantics without Envoy: `on_failure`, `fail_open`, the built-in steps on an
//! exchange, and configuration errors naming the field. (Through a real Envoy:
//! crates/warden-cli/tests/envoy.rs.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warden_core::state::{CounterId, Reserve, StoreCall, StoreError};
use warden_core::{CounterStore, Decision, MemoryCounterStore, Request};

use crate::chain::{Phase, Verdict};
use crate::config::EnvoyConfig;
use crate::exchange::{Exchange, ExchangeRecord, Identity};
use crate::host::{BoxFuture, Host};
use crate::metrics::Metrics;

/// A host with one key (`good`), no policies, working or failing counters, and an audit log
/// kept in memory (None: one that cannot take entries).
pub(crate) struct Fake {
    counters: Arc<dyn CounterStore>,
    audited: Option<std::sync::Mutex<Vec<ExchangeRecord>>>,
}

struct Broken;

impl CounterStore for Broken {
    fn add<'a>(&'a self, _: &'a str, _: u64, _: u64, _: u64) -> StoreCall<'a, u64> {
        StoreCall::ready(Err(StoreError::new("down")))
    }
    fn get<'a>(&'a self, _: &'a str, _: u64) -> StoreCall<'a, u64> {
        StoreCall::ready(Err(StoreError::new("down")))
    }
    fn reserve<'a>(&'a self, _: &'a [Reserve]) -> StoreCall<'a, Option<usize>> {
        StoreCall::ready(Err(StoreError::new("down")))
    }
    fn adjust<'a>(&'a self, _: &'a [(CounterId, i64)]) -> StoreCall<'a, ()> {
        StoreCall::ready(Err(StoreError::new("down")))
    }
    fn reserved<'a>(&'a self, _: &'a CounterId) -> StoreCall<'a, u64> {
        StoreCall::ready(Err(StoreError::new("down")))
    }
}

impl Host for Fake {
    fn verify_key(&self, key: &str) -> Option<Identity> {
        (key == "good").then(|| Identity {
            id: "k1".to_owned(),
            tenant: "acme".to_owned(),
            policy: "p".to_owned(),
            roles: Vec::new(),
        })
    }
    fn decide<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Request,
    ) -> BoxFuture<'a, Result<Decision, String>> {
        Box::pin(async { Err("no policies here".to_owned()) })
    }
    fn counters(&self) -> Arc<dyn CounterStore> {
        Arc::clone(&self.counters)
    }
    fn audit(&self, record: ExchangeRecord) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let Some(log) = &self.audited else {
                return Err("the audit log is full".to_owned());
            };
            log.lock().unwrap().push(record);
            Ok(())
        })
    }
}

fn route(yaml: &str) -> Arc<crate::route::Route> {
    let config: EnvoyConfig = serde_json::from_value(json!({
        "routes": { "r": serde_saphyr::from_str::<serde_json::Value>(yaml).unwrap() }
    }))
    .unwrap();
    Arc::clone(&config.compile().unwrap().routes["r"])
}

fn exchange(
    route: Arc<crate::route::Route>,
    headers: &[(&str, &str)],
) -> (Arc<crate::route::Route>, Exchange) {
    let headers = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let ex = Exchange::new(
        Arc::clone(&route.name),
        "GET".to_owned(),
        "/x?a=1".to_owned(),
        headers,
    );
    (route, ex)
}

async fn request(host: &Fake, (route, ex): &mut (Arc<crate::route::Route>, Exchange)) -> Verdict {
    run(host, route, ex, Phase::Request).await
}

async fn run(host: &Fake, route: &crate::route::Route, ex: &mut Exchange, phase: Phase) -> Verdict {
    crate::chain::run(
        host,
        &Metrics::default(),
        route,
        ex,
        phase,
        Duration::from_secs(1),
    )
    .await
}

pub(crate) fn fake() -> Fake {
    Fake {
        counters: Arc::new(MemoryCounterStore::new(100)),
        audited: Some(std::sync::Mutex::default()),
    }
}

pub(crate) fn status(v: &Verdict) -> u16 {
    match v {
        Verdict::Reply(r) => r.status,
        Verdict::Forward(_) => 0,
    }
}

#[tokio::test]
async fn deny_answers_the_steps_reply_and_continue_ignores_it() {
    let host = fake();
    let r = route("request: [{policy: apiKeyAuth}, {policy: allowAll}]");
    let v = request(&host, &mut exchange(Arc::clone(&r), &[])).await;
    assert_eq!(status(&v), 401);
    let r = route(
        "request: [{policy: apiKeyAuth, on_failure: continue}, {policy: roleCheck, config: {any_of: [x]}}]",
    );
    let v = request(&host, &mut exchange(r, &[("x-warden-caller", "forged")])).await;
    // The next step ran (and refused: no caller, no role).
    assert_eq!(status(&v), 403);
}

#[tokio::test]
async fn skip_remaining_forwards_without_the_rest() {
    let host = fake();
    let r = route(
        "request: [{policy: apiKeyAuth, on_failure: skip_remaining}, {policy: roleCheck, config: {any_of: [x]}}]",
    );
    let mut ex = exchange(r, &[("x-warden-caller", "forged")]);
    let Verdict::Forward(m) = request(&host, &mut ex).await else {
        panic!("not forwarded");
    };
    // The forged identity header is removed even though the step failed.
    assert!(m.remove.contains(&"x-warden-caller".to_owned()), "{m:?}");
    assert!(ex.1.header("x-warden-caller").is_none());
}

#[tokio::test]
async fn an_internal_error_fails_closed_unless_the_route_is_fail_open() {
    let host = Fake {
        counters: Arc::new(Broken),
        audited: Some(std::sync::Mutex::default()),
    };
    let closed = route("request: [{policy: rateLimit, config: {requests: 5, by: route}}]");
    let v = request(&host, &mut exchange(closed, &[])).await;
    assert_eq!(status(&v), 500);
    // Even `on_failure: continue` does not turn an internal error into a pass.
    let cont = route(
        "request: [{policy: rateLimit, on_failure: continue, config: {requests: 5, by: route}}]",
    );
    assert_eq!(status(&request(&host, &mut exchange(cont, &[])).await), 500);
    let open =
        route("fail_open: true\nrequest: [{policy: rateLimit, config: {requests: 5, by: route}}]");
    assert_eq!(status(&request(&host, &mut exchange(open, &[])).await), 0);
    // A decision that cannot be made is an internal error too, never an allow.
    let decide = route("request: [{policy: decide, config: {policy: p}}]");
    assert_eq!(
        status(&request(&fake(), &mut exchange(decide, &[])).await),
        500
    );
}

#[tokio::test]
async fn api_key_auth_sets_the_caller_and_removes_the_key() {
    let host = fake();
    let r = route(
        "request: [{policy: apiKeyAuth, config: {roles: {acme: [reader]}}}, {policy: roleCheck, config: {any_of: [reader]}}]",
    );
    let mut ex = exchange(
        r,
        &[
            ("authorization", "Bearer good"),
            ("x-warden-tenant", "evil"),
        ],
    );
    let Verdict::Forward(m) = request(&host, &mut ex).await else {
        panic!("refused");
    };
    assert!(
        m.set
            .contains(&("x-warden-caller".to_owned(), "k1".to_owned()))
    );
    assert!(
        m.set
            .contains(&("x-warden-tenant".to_owned(), "acme".to_owned()))
    );
    assert!(m.remove.contains(&"authorization".to_owned()));
}

#[tokio::test]
async fn rate_limit_counts_per_key() {
    let host = fake();
    let r = route(
        "request: [{policy: apiKeyAuth}, {policy: rateLimit, config: {requests: 2, window_secs: 60}}]",
    );
    for expected in [0, 0, 429] {
        let v = request(
            &host,
            &mut exchange(Arc::clone(&r), &[("x-api-key", "good")]),
        )
        .await;
        assert_eq!(status(&v), expected);
    }
}

#[tokio::test]
async fn response_body_transform_removes_and_masks() {
    let host = fake();
    let r = route(
        "response: [{policy: responseBodyTransform, config: {remove: [/a/b, /list/*/secret], mask: [/c, /list/0/name]}}]",
    );
    let (r, mut ex) = exchange(r, &[]);
    ex.response_body = Some(
        br#"{"a":{"b":1,"k":2},"c":"x","list":[{"secret":1,"name":"n"},{"secret":2}]}"#.to_vec(),
    );
    let v = run(&host, &r, &mut ex, Phase::Response).await;
    let Verdict::Forward(m) = v else {
        panic!("refused")
    };
    let body: serde_json::Value = serde_json::from_slice(&m.body.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"a":{"k":2},"c":"***","list":[{"name":"***"},{}]})
    );
    // Not JSON: passed unchanged.
    ex.response_body = Some(b"plain".to_vec());
    let v = run(&host, &r, &mut ex, Phase::Response).await;
    assert_eq!(v, Verdict::Forward(crate::exchange::Mutations::default()));
}

#[test]
fn configuration_errors_name_the_field() {
    for (yaml, field) in [
        (
            "request: [{policy: rateLimit, config: {requests: 1, by: nope}}]",
            "envoy.routes.r.request[0].config.by",
        ),
        (
            "request: [{policy: rateLimit, config: {requests: 1, window_secs: 0}}]",
            "envoy.routes.r.request[0].config.window_secs",
        ),
        (
            "response: [{policy: apiKeyAuth}]",
            "envoy.routes.r.response[0].policy",
        ),
        (
            "response: [{policy: responseBodyTransform, config: {remove: [a]}}]",
            "envoy.routes.r.response[0].config.remove",
        ),
        (
            "response: [{policy: addSecurityHeaders, config: {set: {\"bad name\": x}}}]",
            "envoy.routes.r.response[0].config.set.bad name",
        ),
        (
            "request: [{policy: roleCheck}]",
            "envoy.routes.r.request[0].config.any_of",
        ),
        (
            "request: [{policy: allowAll, config: {x: 1}}]",
            "envoy.routes.r.request[0].config.x",
        ),
    ] {
        let config: EnvoyConfig = serde_json::from_value(json!({
            "routes": { "r": serde_saphyr::from_str::<serde_json::Value>(yaml).unwrap() }
        }))
        .unwrap();
        let e = config.compile().unwrap_err();
        assert_eq!(e.field, field, "{yaml}: {e}");
    }
}

#[test]
fn jwt_validation_refuses_what_a_jwks_cannot_verify_at_load() {
    use crate::steps::Step;
    let compile = |config: serde_json::Value| {
        Step::compile("jwtValidation", &config, "routes.r.request[0]", false)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let url = "https://idp.example/.well-known/jwks.json";
    assert!(compile(serde_json::json!({"jwks_url": url})).is_ok());
    for (config, needle) in [
        (
            serde_json::json!({"jwks_url": url, "algorithms": ["HS256"]}),
            "shared secret",
        ),
        (
            serde_json::json!({"jwks_url": url, "algorithms": ["none"]}),
            "unknown algorithm",
        ),
        (
            serde_json::json!({"jwks_url": url, "algorithms": []}),
            "at least one",
        ),
        (
            serde_json::json!({"jwks_url": "ftp://idp.example/jwks"}),
            "http:// or https://",
        ),
        (serde_json::json!({}), "jwks_url"),
        (
            serde_json::json!({"jwks_url": url, "caller_header": "bad header"}),
            "caller_header",
        ),
        (
            serde_json::json!({"jwks_url": url, "algorithm": ["RS256"]}),
            "unknown field",
        ),
    ] {
        let error = compile(config.clone()).expect_err(&config.to_string());
        assert!(error.contains(needle), "{config}: {error}");
    }
    let response = Step::compile(
        "jwtValidation",
        &serde_json::json!({"jwks_url": url}),
        "f",
        true,
    );
    assert!(response.is_err());
}

#[tokio::test]
async fn audit_log_records_the_exchange_where_it_stands_and_fails_closed() {
    let host = fake();
    let r = route(
        "request: [{policy: auditLog}, {policy: apiKeyAuth}, {policy: auditLog}]\nresponse: [{policy: auditLog}]",
    );
    let mut ex = exchange(Arc::clone(&r), &[("x-api-key", "good")]);
    assert!(matches!(request(&host, &mut ex).await, Verdict::Forward(_)));
    ex.1.status = Some(404);
    assert!(matches!(
        run(&host, &r, &mut ex.1, Phase::Response).await,
        Verdict::Forward(_)
    ));
    let audited = host.audited.as_ref().unwrap().lock().unwrap().clone();
    assert_eq!(audited.len(), 3, "{audited:?}");
    // Before authentication: no caller; after it: the key's id and tenant.
    assert_eq!(
        (audited[0].principal.as_deref(), audited[0].phase),
        (None, Phase::Request)
    );
    assert_eq!(audited[1].principal.as_deref(), Some("k1"));
    assert_eq!(audited[1].tenant.as_deref(), Some("acme"));
    assert_eq!(
        (&*audited[1].method, &*audited[1].target),
        ("GET", "/x?a=1")
    );
    assert_eq!(audited[1].status, None);
    assert_eq!(
        (audited[2].phase, audited[2].status),
        (Phase::Response, Some(404))
    );
    assert_eq!(audited[2].route, "r");

    // A log that cannot take the entry: the request is refused (500), not forwarded unrecorded.
    let full = Fake {
        counters: Arc::new(MemoryCounterStore::new(100)),
        audited: None,
    };
    let v = request(
        &full,
        &mut exchange(Arc::clone(&r), &[("x-api-key", "good")]),
    )
    .await;
    assert_eq!(status(&v), 500);
    let open = route("fail_open: true\nrequest: [{policy: auditLog}]");
    let v = request(&full, &mut exchange(open, &[])).await;
    assert!(matches!(v, Verdict::Forward(_)), "fail_open forwards");
}
