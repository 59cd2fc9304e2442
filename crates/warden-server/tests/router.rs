#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Router-level tests through `tower::ServiceExt::oneshot`: no socket, every layer.

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;
use warden_server::{API_ROUTES, AppState, RateLimit, ServeConfig, StateMode, router, router_with};

const POLICY: &str = r#"
warden: 1
name: support-agent
version: "1.0.0"
tools: { "crm.read_*": [sensitive_read], send_email: [external_write] }
rules:
  - { id: reads, effect: allow, classes: [sensitive_read], add_taints: [pii] }
  - { id: writes, effect: allow, classes: [external_write] }
  - { id: no-exfil, effect: deny, classes: [external_write], if: "taint:pii" }
"#;

fn config(dir: &Path) -> ServeConfig {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("support-agent.yaml"), POLICY).unwrap();
    ServeConfig {
        policies,
        keys_file: dir.join("keys.json"),
        anonymous_policy: Some("support-agent".into()),
        state: StateMode::Memory,
        decision_log: false,
        ..ServeConfig::default()
    }
}

async fn call(app: &Router, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
    let mut builder = Request::builder().method(method).uri(uri);
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

#[tokio::test]
async fn decides_and_keeps_session_state() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(AppState::new(config(dir.path()), None).unwrap());
    let (status, d) = call(
        &app,
        "POST",
        "/v1/decide",
        Some(r#"{"session":"s","tool":"crm.read_x"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["taints"][0], "pii");
    let (_, d) = call(
        &app,
        "POST",
        "/v1/decide",
        Some(r#"{"session":"s","tool":"send_email"}"#),
    )
    .await;
    assert_eq!(d["decision"], "deny");
    assert_eq!(d["rule"], "no-exfil");
}

#[tokio::test]
async fn errors_are_json_with_codes() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(AppState::new(config(dir.path()), None).unwrap());
    let (status, e) = call(&app, "GET", "/nowhere", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(e["error"]["code"], "not_found");
    let (status, e) = call(&app, "GET", "/v1/decide", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(e["error"]["code"], "method_not_allowed");
    let (status, e) = call(&app, "POST", "/v1/decide", Some(r#"{"tool": 5}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(e["error"]["message"].as_str().unwrap().contains("`tool`"));
    let (status, e) = call(
        &app,
        "POST",
        "/v1/decide/batch",
        Some(r#"[{"tool":"a"},{"tool":"b","oops":1}]"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`[1].oops`"),
        "{e}"
    );
    // Nesting beyond the core's depth limit is a 400, not a crash.
    let deep = format!(
        r#"{{"args":{{"a":{}1{}}}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let (status, _) = call(&app, "POST", "/v1/decide", Some(&deep)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_and_the_router_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::new(config(dir.path()), None).unwrap();
    let extra = Router::new().route(
        "/v1/boom",
        post(|| async {
            if true {
                panic!("boom");
            }
            ""
        }),
    );
    let app = router_with(state, extra);
    let (status, e) = call(&app, "POST", "/v1/boom", Some("{}")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(e["error"]["code"], "internal");
    assert!(!e.to_string().contains("boom"), "no panic detail leaks");
    let (status, _) = call(&app, "POST", "/v1/decide", Some(r#"{"tool":"x"}"#)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn slow_requests_time_out_and_excess_concurrency_is_shed() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        request_timeout_ms: 50,
        max_concurrency: 1,
        rate_limit: RateLimit {
            per_second: 0,
            burst: 0,
        },
        ..config(dir.path())
    };
    let state = AppState::new(config, None).unwrap();
    let extra = Router::new().route(
        "/v1/slow",
        post(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "late"
        }),
    );
    let app = router_with(state, extra);
    let slow = {
        let app = app.clone();
        tokio::spawn(async move { call(&app, "POST", "/v1/slow", Some("{}")).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (status, e) = call(&app, "POST", "/v1/decide", Some(r#"{"tool":"x"}"#)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(e["error"]["code"], "overloaded");
    let (status, e) = slow.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(e["error"]["code"], "timeout");
}

#[tokio::test]
async fn without_policies_the_server_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    std::fs::remove_file(config.policies.join("support-agent.yaml")).unwrap();
    config.anonymous_policy = None;
    let app = router(AppState::new(config, None).unwrap());
    let (status, _) = call(&app, "GET", "/health/live", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, e) = call(&app, "GET", "/health/ready", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(e["error"]["code"], "not_ready");
    let (status, _) = call(&app, "POST", "/v1/decide", Some("{}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// A request: method, path, headers, body.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);

/// One exchange, with the parts a client sees: status, request id, content type and JSON body.
async fn exchange<S>(
    service: S,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, Option<String>, Option<String>, Value)
where
    S: tower::Service<
            Request<Body>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        >,
{
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = service
        .oneshot(builder.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (id, content_type) = (header("x-request-id"), header("content-type"));
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        id,
        content_type,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_decide_fast_path_answers_exactly_like_the_router() {
    // Two daemons with the same configuration (sessions are per daemon): one served by the
    // router alone, one by `App`, which serves `POST /v1/decide` before the router.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.anonymous_policy = None;
    cfg.body_limit_bytes = 256;
    let key = warden_store::keys::create_key(
        &warden_store::FileKeyStore::new(&cfg.keys_file),
        "acme",
        Some("support-agent"),
    )
    .unwrap()
    .0;
    let via_router = router(AppState::new(cfg.clone(), None).unwrap());
    let state = AppState::new(cfg, None).unwrap();
    let fast = warden_server::App::new(state.clone());

    let json = ("content-type", "application/json");
    let bearer = format!("Bearer {key}");
    let api_key = ("x-api-key", key.as_str());
    let big = format!(
        r#"{{"tool":"kb.search","args":{{"q":"{}"}}}}"#,
        "x".repeat(300)
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/decide",
            vec![json, api_key],
            r#"{"session":"s","tool":"crm.read_x"}"#,
        ),
        (
            "POST",
            "/v1/decide",
            vec![json, api_key],
            r#"{"session":"s","tool":"send_email"}"#,
        ),
        ("POST", "/v1/decide", vec![json, api_key], r#"{"tool": 5}"#),
        ("POST", "/v1/decide", vec![json, api_key], "not json"),
        ("POST", "/v1/decide", vec![json, api_key], &big),
        (
            "POST",
            "/v1/decide",
            vec![("content-type", "text/plain"), api_key],
            "{}",
        ),
        ("POST", "/v1/decide", vec![json], r#"{"tool":"kb.search"}"#),
        (
            "POST",
            "/v1/decide",
            vec![json, ("x-api-key", "wdn_wrong")],
            r#"{"tool":"kb.search"}"#,
        ),
        (
            "POST",
            "/v1/decide",
            vec![
                json,
                ("authorization", bearer.as_str()),
                ("x-request-id", "client-id-1"),
            ],
            r#"{"tool":"kb.search"}"#,
        ),
        ("GET", "/v1/decide", vec![api_key], ""),
        (
            "POST",
            "/v1/decide/",
            vec![json, api_key],
            r#"{"tool":"kb.search"}"#,
        ),
        (
            "POST",
            "/v1/decide/batch",
            vec![json, api_key],
            r#"[{"tool":"kb.search"}]"#,
        ),
    ];
    for (method, uri, headers, body) in &cases {
        let expected = exchange(via_router.clone(), method, uri, headers, body).await;
        let got = exchange(fast.clone(), method, uri, headers, body).await;
        let what = format!("{method} {uri} {headers:?} {body}");
        assert_eq!(got.0, expected.0, "status of {what}");
        assert_eq!(got.2, expected.2, "content type of {what}");
        assert_eq!(got.3, expected.3, "body of {what}");
        assert!(got.1.is_some(), "request id of {what}");
        if headers.iter().any(|(name, _)| *name == "x-request-id") {
            assert_eq!(got.1.as_deref(), Some("client-id-1"), "{what}");
        }
    }

    // Counted under the same route label as the router's.
    let metrics = exchange(fast, "GET", "/metrics", &[], "").await;
    assert_eq!(metrics.0, StatusCode::OK);
    let text = state.metrics().encode();
    for line in [
        r#"warden_http_requests_total{route="/v1/decide",status="200"} 3"#,
        r#"warden_http_requests_total{route="/v1/decide",status="401"} 2"#,
        r#"warden_http_requests_total{route="/v1/decide",status="413"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[tokio::test]
async fn json_content_types_are_matched_without_case_and_with_suffixes() {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::new(config(dir.path()), None).unwrap();
    let app = warden_server::App::new(state.clone());
    let via_router = router(state);
    let body = r#"{"tool":"kb.search"}"#;
    for (content_type, expected) in [
        ("application/json", StatusCode::OK),
        ("Application/JSON; charset=utf-8", StatusCode::OK),
        ("  application/json  ;charset=utf-8", StatusCode::OK),
        ("application/vnd.warden+json", StatusCode::OK),
        ("application/VND.WARDEN+JSON", StatusCode::OK),
        ("+json", StatusCode::OK),
        ("json", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("text/plain", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("application/jsonx", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("application/json-patch", StatusCode::UNSUPPORTED_MEDIA_TYPE),
    ] {
        let headers = [("content-type", content_type)];
        for (via, status) in [
            (
                "App",
                exchange(app.clone(), "POST", "/v1/decide", &headers, body)
                    .await
                    .0,
            ),
            (
                "router",
                exchange(via_router.clone(), "POST", "/v1/decide", &headers, body)
                    .await
                    .0,
            ),
        ] {
            assert_eq!(status, expected, "{content_type:?} through {via}");
        }
    }
}

/// Every API route is behind the guard, on the router and on the fast path alike: without a key
/// (and no anonymous policy) each answers 401 `unauthorized`, and while the daemon is not ready
/// each answers 503 `not_ready`, before its handler runs. The routes come from the table the
/// router is built from, so a new route cannot miss the test.
#[tokio::test]
async fn every_api_route_is_behind_the_guard() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.anonymous_policy = None;
    let state = AppState::new(cfg, None).unwrap();
    let app = warden_server::App::new(state.clone());
    assert!(API_ROUTES.len() >= 6, "{API_ROUTES:?}");
    // Every route without a key, then every route while not ready: each refused with `code`.
    let refused_everywhere = |status: StatusCode, code: &'static str| {
        let app = app.clone();
        async move {
            for (method, path) in API_ROUTES {
                let uri = path
                    .replace("{*path}", "support/decision")
                    .replace("{*id}", "authz.rego")
                    .replace("{id}", "apr_0");
                let json = [("content-type", "application/json")];
                let e = exchange(app.clone(), method, &uri, &json, "{}").await;
                assert_eq!(e.0, status, "{method} {uri}: {e:?}");
                // OPA's routes answer OPA's error body, with OPA's code names.
                let opa = uri == "/"
                    || uri.starts_with("/v1/data")
                    || uri.starts_with("/v1/query")
                    || uri == "/v1/config"
                    || uri == "/v1/status"
                    || uri == "/v1/compile"
                    || uri.starts_with("/v1/policies")
                    || uri.starts_with("/v1/batch");
                if opa {
                    let opa_code = if code == "unauthorized" {
                        code
                    } else {
                        "internal_error"
                    };
                    assert_eq!(e.3["code"], opa_code, "{method} {uri}: {e:?}");
                } else {
                    assert_eq!(e.3["error"]["code"], code, "{method} {uri}");
                }
            }
        }
    };
    refused_everywhere(StatusCode::UNAUTHORIZED, "unauthorized").await;
    state.set_ready(false);
    refused_everywhere(StatusCode::SERVICE_UNAVAILABLE, "not_ready").await;
}

/// A 401 names the scheme that would authenticate (RFC 9110), on the fast path, the router and
/// OPA's routes alike.
#[tokio::test]
async fn a_401_carries_www_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.anonymous_policy = None;
    let app = warden_server::App::new(AppState::new(cfg, None).unwrap());
    for (method, uri) in [
        ("POST", "/v1/decide"),
        ("POST", "/v1/decide/batch"),
        ("GET", "/v1/data/a/b"),
        ("POST", "/access/v1/evaluation"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {uri}"
        );
        assert_eq!(
            response.headers().get("www-authenticate").unwrap(),
            "Bearer realm=\"warden\"",
            "{method} {uri}"
        );
    }
}
