#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The MCP proxy mounted in the daemon's router, against an in-process upstream that records
//! what reached it: Warden's credentials are not forwarded, the principal is the key's tenant
//! (a client cannot claim one with the internal headers), other headers pass.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt as _;
use parking_lot::Mutex;
use serde_json::Value;
use tower::ServiceExt as _;
use warden_server::mcp::UpstreamConfig;
use warden_server::{AppState, ServeConfig, StateMode, router};

const POLICY: &str = r#"
warden: 1
name: mcp
tools: { echo: [internal] }
rules:
  - { id: internal, effect: allow, classes: [internal] }
  - { id: results, effect: allow, kinds: [tool_result] }
  - { id: no-mallory, effect: deny, tools: [echo], principals: [mallory], reason: "not for mallory" }
"#;

const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}"#;

/// Echo may be called once per Warden session (the session sources' tests).
const ONCE: &str = r#"
warden: 1
name: mcp
tools: { echo: [internal] }
rules:
  - { id: internal, effect: allow, classes: [internal], add_taints: [used] }
  - { id: results, effect: allow, kinds: [tool_result] }
  - { id: once, effect: deny, kinds: [tool_call], tools: [echo], if: "taint:used", reason: "once per session" }
"#;

type Seen = Arc<Mutex<Vec<HeaderMap>>>;

async fn upstream() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let recorder = Arc::clone(&seen);
    let app = Router::new().route(
        "/mcp",
        post(move |headers: HeaderMap| {
            let recorder = Arc::clone(&recorder);
            async move {
                recorder.lock().push(headers);
                (
                    [("content-type", "application/json")],
                    r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"Echo: hi"}]}}"#,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/mcp"), seen)
}

fn config(dir: &Path, url: &str) -> ServeConfig {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("mcp.yaml"), POLICY).unwrap();
    ServeConfig {
        policies,
        keys_file: dir.join("keys.json"),
        state: StateMode::Memory,
        decision_log: false,
        mcp_upstreams: vec![UpstreamConfig {
            name: "up".into(),
            url: url.into(),
            policy: "mcp".into(),
            session: None,
            session_header: None,
            session_meta: None,
            session_jwt: None,
            ca_file: None,
        }],
        ..ServeConfig::default()
    }
}

async fn call(app: &Router, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    call_with(app, headers, CALL).await
}

async fn call_with(app: &Router, headers: &[(&str, &str)], body: &str) -> (StatusCode, Value) {
    let mut builder = Request::builder()
        .method("POST")
        .uri("/mcp/up")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(builder.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_stripped_and_the_principal_is_the_tenant() {
    let (url, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &url);
    let (acme, _) = warden_store::keys::create_key(
        &warden_store::FileKeyStore::new(&config.keys_file),
        "acme",
        Some("mcp"),
    )
    .unwrap();
    let (mallory, _) = warden_store::keys::create_key(
        &warden_store::FileKeyStore::new(&config.keys_file),
        "mallory",
        Some("mcp"),
    )
    .unwrap();
    warden_server::mcp::check(&AppState::new(config.clone(), None).unwrap()).unwrap();
    let app = router(AppState::new(config, None).unwrap());

    // No key, no anonymous policy: 401, nothing forwarded.
    let (status, _) = call(&app, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(seen.lock().is_empty());

    // A client claiming to be mallory through the internal headers (the tenant's, and the
    // principal's that a verified client certificate makes) is still acme.
    let bearer = format!("Bearer {acme}");
    let (status, reply) = call(
        &app,
        &[
            ("authorization", &bearer),
            ("x-warden-internal-tenant", "mallory"),
            ("x-warden-internal-principal", "mallory"),
            ("x-custom", "kept"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["result"]["content"][0]["text"], "Echo: hi", "{reply}");
    {
        let seen = seen.lock();
        assert_eq!(seen.len(), 1);
        let headers = &seen[0];
        assert!(headers.get("authorization").is_none());
        assert!(headers.get("x-api-key").is_none());
        assert!(headers.get("x-warden-internal-tenant").is_none());
        assert!(headers.get("x-warden-internal-principal").is_none());
        assert_eq!(headers.get("x-custom").unwrap(), "kept");
    }

    // mallory's own key: denied by the principal rule, on HTTP 200, never forwarded.
    let (status, reply) = call(&app, &[("x-api-key", &mallory)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["error"]["code"], -32060, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not for mallory")
    );
    assert_eq!(seen.lock().len(), 1);
}

#[test]
fn invalid_upstreams_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (name, url, policy, expected) in [
        (
            "up",
            "http://127.0.0.1:9/mcp",
            "nope",
            "policy `nope` is not loaded",
        ),
        ("a/b", "http://127.0.0.1:9/mcp", "mcp", "invalid name"),
        ("up", "ftp://example.org/mcp", "mcp", "must be http://"),
    ] {
        let mut config = config(dir.path(), url);
        config.mcp_upstreams[0].name = name.into();
        config.mcp_upstreams[0].policy = policy.into();
        let error = warden_server::mcp::check(&AppState::new(config, None).unwrap()).unwrap_err();
        assert!(error.contains(expected), "{error}");
    }
    // A bundle for a plain upstream is a mistake, not ignored.
    let mut plain_with_ca = config(dir.path(), "http://127.0.0.1:9/mcp");
    plain_with_ca.mcp_upstreams[0].ca_file = Some(dir.path().join("ca.pem"));
    let error =
        warden_server::mcp::check(&AppState::new(plain_with_ca, None).unwrap()).unwrap_err();
    assert!(error.contains("applies to an https:// url only"), "{error}");
    for (session, header, expected) in [
        (Some("s"), Some("x-agent-session"), "exclude each other"),
        (None, Some("bad header"), "is not a header name"),
    ] {
        let mut config = config(dir.path(), "http://127.0.0.1:9/mcp");
        config.mcp_upstreams[0].session = session.map(str::to_owned);
        config.mcp_upstreams[0].session_header = header.map(str::to_owned);
        let error = warden_server::mcp::check(&AppState::new(config, None).unwrap()).unwrap_err();
        assert!(error.contains(expected), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_decisions_are_audited() {
    let (url, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let mut config = config(dir.path(), &url);
    config.audit = Some(warden_server::config::AuditSettings {
        dir: audit_dir.clone(),
        fsync: warden_server::config::AuditFsync::Always,
        ..Default::default()
    });
    let (acme, _) = warden_store::keys::create_key(
        &warden_store::FileKeyStore::new(&config.keys_file),
        "acme",
        Some("mcp"),
    )
    .unwrap();
    let (mallory, _) = warden_store::keys::create_key(
        &warden_store::FileKeyStore::new(&config.keys_file),
        "mallory",
        Some("mcp"),
    )
    .unwrap();
    let app = router(AppState::new(config, None).unwrap());

    let bearer = format!("Bearer {acme}");
    let (status, reply) = call(
        &app,
        &[("authorization", &bearer), ("mcp-session-id", "s1")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["result"]["content"][0]["text"], "Echo: hi", "{reply}");
    let (status, reply) = call(&app, &[("x-api-key", &mallory)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["error"]["code"], -32060, "{reply}");
    assert_eq!(seen.lock().len(), 1);

    // Each answer waited for its entries (`fsync: always`): they are on disk now.
    let mut entries: Vec<Value> = Vec::new();
    for file in warden_audit::expand_paths(std::slice::from_ref(&audit_dir)).unwrap() {
        let text = std::fs::read_to_string(file).unwrap();
        entries.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    let summary: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["decision"].as_str().unwrap(),
                e["tenant"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("tool_call", "allow", "acme"),
            ("tool_result", "allow", "acme"),
            ("tool_call", "deny", "mallory"),
        ],
        "{entries:?}"
    );
    assert_eq!(entries[0]["tool"], "echo");
    assert_eq!(entries[0]["principal"], "acme");
    assert_eq!(
        entries[0]["session"], "mcp",
        "the key's own MCP session (never the client's Mcp-Session-Id), without the store's tenant prefix"
    );
    assert_eq!(entries[2]["rule"], "no-mallory");

    let report = warden_audit::verify(&[audit_dir], None).unwrap();
    assert_eq!(report.entries, 3);
    assert_eq!(report.first_broken_seq, None, "{:?}", report.reason);
}

/// `session_header`: the Warden session comes from a request header (clients of the stateless
/// protocol, many agent sessions under one key): a taint in one agent's session does not reach
/// another's, the same header value under another key is another session, and a request
/// without the header is refused before anything is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_can_come_from_a_header() {
    let (url, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &url);
    std::fs::write(config.policies.join("mcp.yaml"), ONCE).unwrap();
    config.mcp_upstreams[0].session_header = Some("x-agent-session".into());
    let keys = warden_store::FileKeyStore::new(&config.keys_file);
    let (acme, _) = warden_store::keys::create_key(&keys, "acme", Some("mcp")).unwrap();
    let (other, _) = warden_store::keys::create_key(&keys, "other", Some("mcp")).unwrap();
    let app = router(AppState::new(config, None).unwrap());
    let verdict = |reply: &Value| {
        if reply["result"].is_object() {
            "allow"
        } else {
            assert_eq!(reply["error"]["code"], -32060, "{reply}");
            "deny"
        }
    };
    for (key, agent, expected) in [
        (&acme, "agent-1", "allow"),
        (&acme, "agent-1", "deny"),
        (&acme, "agent-2", "allow"),
        (&other, "agent-1", "allow"),
    ] {
        let (status, reply) = call(&app, &[("x-api-key", key), ("x-agent-session", agent)]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(verdict(&reply), expected, "{agent}: {reply}");
    }
    let forwarded = seen.lock().len();
    assert_eq!(forwarded, 3);
    let (status, reply) = call(&app, &[("x-api-key", &acme)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("x-agent-session")),
        "{reply}"
    );
    let long = "a".repeat(300);
    let (status, _) = call(&app, &[("x-api-key", &acme), ("x-agent-session", &long)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        seen.lock().len(),
        forwarded,
        "a refused request was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_can_come_from_the_message_meta() {
    let (url, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &url);
    std::fs::write(config.policies.join("mcp.yaml"), ONCE).unwrap();
    config.mcp_upstreams[0].session_meta = Some("io.warden/session".into());
    let keys = warden_store::FileKeyStore::new(&config.keys_file);
    let (acme, _) = warden_store::keys::create_key(&keys, "acme", Some("mcp")).unwrap();
    let app = router(AppState::new(config, None).unwrap());
    let body = |meta: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"hi"}},"_meta":{meta}}}}}"#
        )
    };
    let verdict = |reply: &Value| {
        if reply["result"].is_object() {
            "allow"
        } else {
            assert_eq!(reply["error"]["code"], -32060, "{reply}");
            "deny"
        }
    };
    let auth = [("x-api-key", acme.as_str())];
    for (agent, expected) in [("a-1", "allow"), ("a-1", "deny"), ("a-2", "allow")] {
        let meta = format!(r#"{{"io.warden/session":"{agent}"}}"#);
        let (status, reply) = call_with(&app, &auth, &body(&meta)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(verdict(&reply), expected, "{agent}: {reply}");
    }
    let forwarded = seen.lock().len();
    assert_eq!(forwarded, 2);
    // A tools/call that names no session, or not as a bounded string, is refused unforwarded.
    let long = format!(r#"{{"io.warden/session":"{}"}}"#, "a".repeat(300));
    for meta in [
        "{}",
        r#"{"io.warden/session":7}"#,
        r#"{"io.warden/session":""}"#,
        &long,
    ] {
        let (status, reply) = call_with(&app, &auth, &body(meta)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{meta}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("io.warden/session")),
            "{reply}"
        );
    }
    let (status, _) = call(&app, &auth).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no _meta at all");
    assert_eq!(
        seen.lock().len(),
        forwarded,
        "a refused request was forwarded"
    );
}

#[test]
fn only_one_session_source_may_be_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), "http://127.0.0.1:9/mcp");
    config.mcp_upstreams[0].session_header = Some("x-agent-session".into());
    config.mcp_upstreams[0].session_meta = Some("io.warden/session".into());
    let error = warden_server::mcp::check(&AppState::new(config, None).unwrap()).unwrap_err();
    assert!(error.contains("exclude each other"), "{error}");
}

/// The JWKS endpoint and token minter of the Envoy tests (PyJWT, ES256; scripts/test installs
/// PyJWT and cryptography into .ci/.pydeps), killed on drop.
struct Jwks {
    child: std::process::Child,
    port: u16,
}

impl Drop for Jwks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Jwks {
    fn start() -> Self {
        use std::io::BufRead as _;
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../warden-cli/tests/envoy/jwks.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is required");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .expect("jwks.py's port (PyJWT missing? run scripts/test)");
        Self { child, port }
    }

    /// A token signed by key `kid` (`k1` is published) with `claims`.
    fn mint(&self, kid: &str, claims: &Value) -> String {
        use std::io::{Read as _, Write as _};
        let body = serde_json::json!({"kid": kid, "claims": claims}).to_string();
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "POST /mint HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (_, json) = answer.split_once("\r\n\r\n").unwrap();
        let json: Value = serde_json::from_str(json).unwrap();
        json["token"].as_str().unwrap().to_owned()
    }
}

/// The session from a claim of a JWT verified against a JWKS (`session_jwt`), for stateless
/// clients whose identity provider names the agent session: one token's session keeps its
/// taint, another token's session is fresh, and a missing, forged, expired or claimless token
/// is refused (401, nothing forwarded); the token never reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_can_come_from_a_verified_jwt_claim() {
    let jwks = Jwks::start();
    let (url, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &url);
    std::fs::write(config.policies.join("mcp.yaml"), ONCE).unwrap();
    config.mcp_upstreams[0].session_jwt = Some(
        serde_json::from_value(serde_json::json!({
            "header": "x-agent-token",
            "jwks_url": format!("http://127.0.0.1:{}/jwks.json", jwks.port),
            "issuer": "https://idp.test",
            "algorithms": ["ES256"],
        }))
        .unwrap(),
    );
    let keys = warden_store::FileKeyStore::new(&config.keys_file);
    let (acme, _) = warden_store::keys::create_key(&keys, "acme", Some("mcp")).unwrap();
    let app = router(AppState::new(config, None).unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |kid: &str, claims: Value| jwks.mint(kid, &claims);
    let session = |sid: &str| {
        token(
            "k1",
            serde_json::json!({"iss": "https://idp.test", "sid": sid, "exp": now + 600}),
        )
    };
    let verdict = |reply: &Value| {
        if reply["result"].is_object() {
            "allow"
        } else {
            assert_eq!(reply["error"]["code"], -32060, "{reply}");
            "deny"
        }
    };
    let agent_1 = session("agent-1");
    for (token, expected) in [
        (&agent_1, "allow"),
        (&agent_1, "deny"),
        (&session("agent-1"), "deny"),
        (&session("agent-2"), "allow"),
    ] {
        let bearer = format!("Bearer {token}");
        let (status, reply) = call(&app, &[("x-api-key", &acme), ("x-agent-token", &bearer)]).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(verdict(&reply), expected, "{reply}");
    }
    {
        let seen = seen.lock();
        assert_eq!(seen.len(), 2);
        assert!(
            seen.iter().all(|h| h.get("x-agent-token").is_none()
                && h.get("x-warden-internal-session").is_none())
        );
    }
    // A client naming another session through the internal header gets nothing from it: the
    // token's session (tainted) decides.
    let bearer = format!("Bearer {agent_1}");
    let (status, reply) = call(
        &app,
        &[
            ("x-api-key", &acme),
            ("x-agent-token", &bearer),
            ("x-warden-internal-session", "agent-9"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verdict(&reply), "deny", "{reply}");
    let (status, _) = call(
        &app,
        &[
            ("x-api-key", &acme),
            ("x-warden-internal-session", "agent-3"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let unknown_key = token(
        "rogue",
        serde_json::json!({"iss": "https://idp.test", "sid": "agent-3", "exp": now + 600}),
    );
    let expired = token(
        "k1",
        serde_json::json!({"iss": "https://idp.test", "sid": "agent-3", "exp": now - 3600}),
    );
    let other_issuer = token(
        "k1",
        serde_json::json!({"iss": "https://evil.test", "sid": "agent-3", "exp": now + 600}),
    );
    let no_claim = token(
        "k1",
        serde_json::json!({"iss": "https://idp.test", "sub": "agent-3", "exp": now + 600}),
    );
    for bad in [
        unknown_key,
        expired,
        other_issuer,
        no_claim,
        "not-a-jwt".to_owned(),
    ] {
        let (status, reply) = call(&app, &[("x-api-key", &acme), ("x-agent-token", &bad)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("x-agent-token")),
            "{reply}"
        );
    }
    assert_eq!(seen.lock().len(), 2, "a refused request was forwarded");
}
