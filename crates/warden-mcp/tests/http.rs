#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! HTTP transport edge cases against an in-process upstream that records what reached it
//! (the end-to-end tests with real MCP peers are in `crates/warden-cli/tests/mcp.rs`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tower::ServiceExt;
use warden_core::{CompileOptions, CompiledPolicy, Engine};
use warden_mcp::http::{Identity, ProxyConfig, ProxyState, router};
use warden_mcp::{Enforcer, MemoryPinStore};

const POLICY: &str = r#"
warden: 1
name: http-test
default: allow
rules:
  - { id: no-env, effect: deny, tools: [get-env], reason: "no env" }
"#;

type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// An upstream answering every POST with `reply` (content type `ctype`, extra headers).
async fn upstream(
    reply: &'static str,
    ctype: &'static str,
    extra: &'static [(&'static str, &'static str)],
) -> (String, Seen) {
    upstream_status(StatusCode::OK, reply, ctype, extra).await
}

/// [`upstream`] answering with `status`.
async fn upstream_status(
    status: StatusCode,
    reply: &'static str,
    ctype: &'static str,
    extra: &'static [(&'static str, &'static str)],
) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::any(move |request: Request<Body>| {
            let log = log.clone();
            async move {
                let headers = request
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                let method = request.method().to_string();
                let body = request.into_body().collect().await.unwrap().to_bytes();
                log.lock().push((
                    format!("{method} {}", String::from_utf8_lossy(&body)),
                    headers,
                ));
                let mut response = axum::http::Response::builder()
                    .status(status)
                    .header("content-type", ctype)
                    .header("mcp-session-id", "up-1");
                for (k, v) in extra {
                    response = response.header(*k, *v);
                }
                response.body(Body::from(reply)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn proxy(url: &str, strip: &[&str]) -> axum::Router {
    let policy = CompiledPolicy::compile("t", POLICY, CompileOptions::default()).unwrap();
    let enforcer = Arc::new(Enforcer::new(
        Arc::new(Engine::new(policy)),
        Arc::new(MemoryPinStore::new()),
        "up",
    ));
    let mut config = ProxyConfig::new(url.parse().unwrap(), Identity::default());
    config.strip_headers = strip.iter().map(|h| h.parse().unwrap()).collect();
    router(ProxyState::new(enforcer, config), "/mcp")
}

fn post() -> axum::http::request::Builder {
    Request::post("/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", "up-1")
}

async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

const CALL_ENV: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get-env","arguments":{}}}"#;
const CALL_ECHO: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}}"#;

#[tokio::test]
async fn denied_call_is_a_json_rpc_error_on_200_and_never_reaches_upstream() {
    let (url, seen) = upstream("{}", "application/json", &[]).await;
    let app = proxy(&url, &[]);
    let (status, body) = send(&app, post().body(Body::from(CALL_ENV)).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["error"]["message"], "denied by policy: no env");
    assert!(seen.lock().is_empty());
}

#[tokio::test]
async fn allowed_call_is_forwarded_with_headers_but_without_warden_credentials_or_compression() {
    let reply =
        r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"Echo: x"}]}}"#;
    let (url, seen) = upstream(reply, "application/json", &[]).await;
    let app = proxy(&url, &["x-warden-key"]);
    let request = post()
        .header("x-warden-key", "secret")
        .header("mcp-protocol-version", "2025-11-25")
        .header("accept-encoding", "gzip")
        .body(Body::from(CALL_ECHO))
        .unwrap();
    let (status, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"]["content"][0]["text"], "Echo: x");
    let seen = seen.lock();
    let (line, headers) = &seen[0];
    assert_eq!(
        line,
        &format!("POST {CALL_ECHO}"),
        "forwarded as Warden writes it (CALL_ECHO is in that form already)"
    );
    let has = |name: &str| headers.iter().any(|(k, _)| k == name);
    assert!(has("mcp-protocol-version") && has("mcp-session-id"));
    assert!(!has("x-warden-key") && !has("accept-encoding"));
}

#[tokio::test]
async fn compressed_bodies_are_refused_both_ways() {
    let (url, seen) = upstream("{}", "application/json", &[("content-encoding", "gzip")]).await;
    let app = proxy(&url, &[]);
    let request = post()
        .header("content-encoding", "gzip")
        .body(Body::from(CALL_ECHO))
        .unwrap();
    let (status, _) = send(&app, request).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(seen.lock().is_empty());
    let (status, _) = send(&app, post().body(Body::from(CALL_ECHO)).unwrap()).await;
    assert_eq!(
        status,
        StatusCode::BAD_GATEWAY,
        "a compressed response cannot be inspected"
    );
}

#[tokio::test]
async fn sse_results_are_inspected_and_other_events_pass_unchanged() {
    let reply = "event: message\nid: 7\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\nevent: message\nid: 8\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"content\":[]}}\n\n";
    let (url, _) = upstream(reply, "text/event-stream", &[]).await;
    let app = proxy(&url, &[]);
    let response = app
        .clone()
        .oneshot(post().body(Body::from(CALL_ECHO)).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["mcp-session-id"], "up-1");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(std::str::from_utf8(&bytes).unwrap(), reply);
}

#[tokio::test]
async fn delete_and_get_are_forwarded_and_unreachable_upstream_is_502() {
    let (url, seen) = upstream("", "text/plain", &[]).await;
    let app = proxy(&url, &[]);
    let request = Request::delete("/mcp")
        .header("mcp-session-id", "up-1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );
    let request = Request::get("/mcp")
        .header("mcp-session-id", "up-1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        seen.lock()
            .iter()
            .map(|(l, _)| l.trim().to_owned())
            .collect::<Vec<_>>(),
        ["DELETE", "GET"]
    );

    let dead = proxy("http://127.0.0.1:9/mcp", &[]);
    let (status, body) = send(&dead, post().body(Body::from(CALL_ECHO)).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable")
    );
}

#[tokio::test]
async fn mismatching_routing_headers_are_rejected() {
    let (url, seen) = upstream("{}", "application/json", &[]).await;
    let app = proxy(&url, &[]);
    let request = post()
        .header("mcp-method", "tools/call")
        .header("mcp-name", "get-env")
        .body(Body::from(CALL_ECHO))
        .unwrap();
    let (status, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], json!(-32600));
    assert!(seen.lock().is_empty());
}

#[test]
fn upstream_config_reads_and_rejects_unknown_fields() {
    let config: warden_mcp::http::UpstreamConfig =
        serde_json::from_value(json!({"name": "everything", "url": "http://127.0.0.1:3001/mcp", "policy": "support-agent"})).unwrap();
    assert_eq!(config.name, "everything");
    assert!(
        serde_json::from_value::<warden_mcp::http::UpstreamConfig>(
            json!({"name": "x", "url": "u", "policy": "p", "tls": true})
        )
        .is_err()
    );
}

#[tokio::test]
async fn unreadable_sse_events_are_not_forwarded_while_a_result_is_awaited() {
    let reply = "id: 1\ndata: \n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"id\":3,\"result\":{}}\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"content\":[]}}\n\n";
    let (url, _) = upstream(reply, "text/event-stream", &[]).await;
    let app = proxy(&url, &[]);
    let response = app
        .clone()
        .oneshot(post().body(Body::from(CALL_ECHO)).unwrap())
        .await
        .unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        "id: 1\ndata: \n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"content\":[]}}\n\n",
        "the priming event passes, the ambiguous one is dropped"
    );
}

#[tokio::test]
async fn the_upstream_receives_the_message_warden_wrote_not_the_bytes_sent() {
    let reply = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[]}}"#;
    let (url, seen) = upstream(reply, "application/json", &[]).await;
    let app = proxy(&url, &[]);
    let sent = "{ \"jsonrpc\": \"2.0\",\r\n \"id\": 2, \"method\": \"tools/call\", \"extra\": {\"method\": \"x\"}, \"params\": {\"name\": \"echo\", \"arguments\": {\"message\": \"a\\u2028b\"}} }";
    let request = post()
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from(sent))
        .unwrap();
    let (status, _) = send(&app, request).await;
    assert_eq!(status, StatusCode::OK);
    let seen = seen.lock();
    assert_eq!(
        seen[0].0,
        r#"POST {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"a\u2028b"}}}"#
    );
}

/// A notification is answered 202 Accepted with no body (the Python SDK adds a JSON content type
/// to it): the client gets the 202, and no body an upstream put in a 202 reaches it uninspected.
#[tokio::test]
async fn accepted_answers_pass_without_a_body() {
    const NOTIFY: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    for (reply, ctype) in [
        ("", "application/json"),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"x"}]}}"#,
            "application/json",
        ),
        ("id: 1\ndata: {}\n\n", "text/event-stream"),
        ("anything", "text/plain"),
    ] {
        let (url, _) = upstream_status(StatusCode::ACCEPTED, reply, ctype, &[]).await;
        let app = proxy(&url, &[]);
        let response = app
            .clone()
            .oneshot(post().body(Body::from(NOTIFY)).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{ctype}: {reply}");
        assert!(response.headers().get("content-type").is_none(), "{ctype}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert!(bytes.is_empty(), "{ctype}: {bytes:?}");
    }
}
