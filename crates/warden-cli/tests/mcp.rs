#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! End to end through real MCP peers: the official TypeScript SDK client (`tests/mcp/client.cjs`)
//! talks to `@modelcontextprotocol/server-everything` through `warden mcp wrap` (stdio) and
//! `warden mcp proxy` (Streamable HTTP); for the stateless 2026-07-28 revision, the v2 SDK client
//! talks to a v2 SDK server (`tests/mcp/server-v2.cjs`). The npm packages come from `.ci/run`'s
//! install step.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::WARDEN;
use common::mcp::{
    CONTACT, DENIED, HELD, OTHER_HASH, Proc, WITHHELD, approve, assert_success, denied, free_port,
    root, rpc_error, seed_changed_pins, server_everything, start_everything_http,
    start_http_server, text, wait_until,
};
use serde_json::{Value, json};

const POLICY: &str = r#"
warden: 1
name: mcp-e2e
default: deny
tools:
  get-sum: [web]            # stands in for a web fetch: what it returns is untrusted
  echo: [internal]
  get-env: [internal]
  get-tiny-image: [internal]
  trigger-long-running-operation: [internal]
rules:
  - { id: internal, effect: allow, classes: [internal] }
  - { id: fetch, effect: allow, classes: [web], add_taints: [untrusted] }
  - { id: results, effect: allow, kinds: [tool_result] }
  - { id: no-echo-after-untrusted, effect: deny, kinds: [tool_call], tools: [echo], if: "taint:untrusted", reason: "echo after untrusted content" }
  - { id: no-images, effect: deny, tools: [get-tiny-image], reason: "images are not allowed" }
content:
  detectors: [email]
  input: redact
  output: redact
"#;

/// The npm packages these tests drive: server-everything and the v1 SDK (`client.cjs`), and the v2
/// SDK's server and client for the 2026-07-28 revision.
const PACKAGES: [&str; 4] = ["server-everything", "sdk", "server", "client"];

/// The npm directory, or a failure that says how to install it.
fn npm_dir() -> PathBuf {
    common::mcp::npm_dir(&PACKAGES)
}

/// Runs the SDK client with `spec`; returns its output lines as JSON.
fn run_client(spec: &Value) -> Vec<Value> {
    common::mcp::run_client(&npm_dir(), spec)
}

fn steps() -> Value {
    json!([
        {"op": "list"},
        {"op": "call", "tool": "echo", "args": {"message": "write to bob@example.com"}},
        {"op": "call", "tool": "get-tiny-image"},
        {"op": "call", "tool": "get-env"},
        {"op": "call", "tool": "get-sum", "args": {"a": 1, "b": 2}},
        {"op": "call", "tool": "echo", "args": {"message": "after the fetch"}},
        {"client": 1, "op": "call", "tool": "echo", "args": {"message": "other session"}},
        {"client": 1, "op": "call", "tool": "trigger-long-running-operation", "args": {"duration": 2, "steps": 4}, "progress": true},
    ])
}

/// The assertions shared by both transports, over the output of [`steps`]. `one_identity`: both
/// clients are one Warden session (the HTTP proxy's identity), so the taint follows the second
/// client too; otherwise (one `warden mcp wrap` per client) it does not.
fn check(lines: &[Value], one_identity: bool) {
    // tools/list: only tools the principal could ever call (default deny, get-tiny-image denied).
    assert_eq!(
        lines[0],
        json!({"ok": {"tools": ["echo", "get-env", "get-sum", "trigger-long-running-operation"]}})
    );
    // An allowed call returns the server's result; the arguments were redacted before it.
    assert_eq!(text(&lines[1]), "Echo: write to [REDACTED:email]");
    // A denied call is a JSON-RPC error in the client, with the rule's reason.
    denied(&lines[2], "denied by policy: images are not allowed");
    // The result is redacted on its way back.
    let env = text(&lines[3]);
    assert!(
        env.contains("WARDEN_E2E_CONTACT") && env.contains("[REDACTED:email]"),
        "not redacted"
    );
    assert!(
        !env.contains(CONTACT),
        "the server's result leaked the address"
    );
    // A web fetch taints the session: a later echo in the same session is denied ...
    assert_eq!(text(&lines[4]), "The sum of 1 and 2 is 3.");
    denied(&lines[5], "echo after untrusted content");
    // ... and in another MCP session of the same identity (a new `Mcp-Session-Id` does not
    // clear taints), but not in another Warden session.
    if one_identity {
        denied(&lines[6], "echo after untrusted content");
    } else {
        assert_eq!(text(&lines[6]), "Echo: other session");
    }
    // Progress notifications are forwarded as they arrive, not held until the result.
    assert!(text(&lines[7]).starts_with("Long running operation completed"));
    let first = lines[7]["progress_ms"][0].as_u64().unwrap();
    let done = lines[7]["done_ms"].as_u64().unwrap();
    // The SDK may drop the last notification when the result lands in the same read.
    let progress = lines[7]["progress_ms"].as_array().unwrap().len();
    assert!(progress >= 2, "{}", lines[7]);
    assert!(
        first + 1000 < done,
        "first progress at {first} ms, result at {done} ms: buffered"
    );
}

fn write_policy(dir: &Path) -> PathBuf {
    let path = dir.join("policy.yaml");
    std::fs::write(&path, POLICY).unwrap();
    path
}

fn wrap_spec(policy: &Path, pins: &Path, steps: Value, clients: usize) -> Value {
    json!({
        "transport": "stdio",
        "command": WARDEN,
        "args": ["mcp", "wrap", "--policy", policy, "--pins", pins, "--upstream", "everything",
                 "--", "node", server_everything(&npm_dir()), "stdio"],
        "clients": clients,
        "steps": steps,
    })
}

#[test]
fn stdio_wrap_enforces_with_real_sdk_client_and_server() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(dir.path());
    let lines = run_client(&wrap_spec(
        &policy,
        &dir.path().join("pins.redb"),
        steps(),
        2,
    ));
    check(&lines, false);
}

/// Pins `echo` on `upstream` to a definition the server does not have, as if it changed since,
/// in the JSON pin file of earlier versions beside `pins` (imported once).
fn seed_changed_legacy_pin(pins: &Path, upstream: &str) {
    let seeded = json!({upstream: {"echo": {"hash": OTHER_HASH}}});
    std::fs::write(pins.with_extension("json"), seeded.to_string()).unwrap();
}

fn check_changed(lines: &[Value]) {
    assert_eq!(
        lines[0],
        json!({"ok": {"tools": ["get-env", "get-sum", "trigger-long-running-operation"]}}),
        "a changed echo is hidden"
    );
    rpc_error(&lines[1], HELD, "warden mcp approve");
}

fn check_approved(lines: &[Value]) {
    assert_eq!(
        lines[0],
        json!({"ok": {"tools": ["echo", "get-env", "get-sum", "trigger-long-running-operation"]}})
    );
    assert_eq!(text(&lines[1]), "Echo: hi");
}

#[test]
fn stdio_changed_tool_definition_is_caught_until_approved() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(dir.path());
    let pins = dir.path().join("pins.redb");
    // Seeded through the JSON pin file of earlier versions: imported into the database.
    seed_changed_legacy_pin(&pins, "everything");
    let steps = json!([{"op": "list"}, {"op": "call", "tool": "echo", "args": {"message": "hi"}}]);
    check_changed(&run_client(&wrap_spec(&policy, &pins, steps.clone(), 1)));
    // Still held in the next run (the pin persisted; the JSON file is not imported again).
    check_changed(&run_client(&wrap_spec(&policy, &pins, steps.clone(), 1)));
    assert_success(&approve(&pins, "everything", "echo"));
    check_approved(&run_client(&wrap_spec(&policy, &pins, steps.clone(), 1)));
    check_approved(&run_client(&wrap_spec(&policy, &pins, steps, 1)));
}

/// server-everything over Streamable HTTP, and `warden mcp proxy` in front of it.
struct HttpSetup {
    _server: Proc,
    _proxy: Proc,
    url: String,
}

/// `warden mcp proxy` in front of `upstream`, with extra flags.
fn start_proxy(
    dir: &Path,
    policy: &Path,
    pins: &Path,
    upstream: &str,
    extra: &[&str],
) -> (Proc, String) {
    let port_file = dir.join(format!("proxy-{}.port", free_port()));
    let proxy = Proc(
        Command::new(WARDEN)
            .args(["mcp", "proxy", "--policy"])
            .arg(policy)
            .arg("--pins")
            .arg(pins)
            .arg("--sessions")
            .arg(dir.join("sessions"))
            .args([
                "--name",
                "everything",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                upstream,
            ])
            .args(extra)
            .arg("--port-file")
            .arg(&port_file)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut addr = String::new();
    wait_until("the proxy to start", || {
        addr = std::fs::read_to_string(&port_file).unwrap_or_default();
        !addr.is_empty()
    });
    (proxy, format!("http://{addr}/mcp"))
}

fn http_setup(dir: &Path, pins: &Path) -> HttpSetup {
    let (server, upstream) = start_everything_http(&npm_dir());
    let (proxy, url) = start_proxy(dir, &write_policy(dir), pins, &upstream, &[]);
    HttpSetup {
        _server: server,
        _proxy: proxy,
        url,
    }
}

fn http_spec(url: &str, steps: Value, clients: usize) -> Value {
    json!({"transport": "http", "url": url, "clients": clients, "steps": steps})
}

#[test]
fn http_proxy_enforces_with_real_sdk_client_and_server() {
    let _ = npm_dir();
    let dir = tempfile::tempdir().unwrap();
    let setup = http_setup(dir.path(), &dir.path().join("pins.redb"));
    let lines = run_client(&http_spec(&setup.url, steps(), 2));
    check(&lines, true);
    // Two clients, two MCP sessions, both ended with DELETE through the proxy.
    let sessions = lines.last().unwrap()["sessions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(sessions.len(), 2);
    assert!(sessions[0].is_string() && sessions[0] != sessions[1]);

    // A `Mcp-Name` header that does not match the body's tool is rejected.
    let agent = common::agent();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}}"#;
    let mut response = agent
        .post(&setup.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "get-env")
        .send(body)
        .unwrap();
    assert_eq!(response.status(), 400);
    let reply: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Mcp-Name"),
        "{reply}"
    );
}

#[test]
fn http_changed_tool_definition_is_caught_until_approved() {
    let _ = npm_dir();
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("pins.redb");
    seed_changed_pins(&pins, "everything", &["echo"]);
    let setup = http_setup(dir.path(), &pins);
    let steps = json!([{"op": "list"}, {"op": "call", "tool": "echo", "args": {"message": "hi"}}]);
    check_changed(&run_client(&http_spec(&setup.url, steps.clone(), 1)));
    // Approved while the proxy runs, which holds the pin database open: it sees the approval.
    assert_success(&approve(&pins, "everything", "echo"));
    check_approved(&run_client(&http_spec(&setup.url, steps, 1)));
    // Nothing pending any more: approving again says so (exit 1).
    let again = approve(&pins, "everything", "echo");
    assert_eq!(again.status.code(), Some(1));
}

const POLICY_V2: &str = r#"
warden: 1
name: mcp-e2e-2026
default: deny
tools: { echo: [internal], fetch: [web] }
rules:
  - { id: internal, effect: allow, classes: [internal] }
  - { id: web, effect: allow, classes: [web], add_taints: [untrusted] }
  - { id: results, effect: allow, kinds: [tool_result] }
  - { id: no-echo-after-untrusted, effect: deny, kinds: [tool_call], tools: [echo], if: "taint:untrusted", reason: "echo after untrusted content" }
content: { detectors: [email], input: redact, output: redact }
"#;

/// Protocol 2026-07-28: stateless requests (no initialize, no `Mcp-Session-Id`), `server/discover`,
/// per-request `_meta` and the `Mcp-Method` / `Mcp-Name` headers, through the proxy with the v2
/// SDK at both ends. With no MCP session, a configured client identity is the Warden session.
#[test]
fn http_proxy_stateless_2026_07_28_with_sdk_v2() {
    let npm = npm_dir();
    let dir = tempfile::tempdir().unwrap();
    let mut node = Command::new("node");
    node.arg(root().join("crates/warden-cli/tests/mcp/server-v2.cjs"))
        .arg(&npm);
    let (server, upstream) = start_http_server(node);
    let policy = dir.path().join("policy-v2.yaml");
    std::fs::write(&policy, POLICY_V2).unwrap();
    let pins = dir.path().join("pins.redb");
    let (_with_identity, url) = start_proxy(
        dir.path(),
        &policy,
        &pins,
        &upstream,
        &["--session", "agent-1"],
    );
    let steps = json!([
        {"op": "list"},
        {"op": "call", "tool": "echo", "args": {"message": "write to bob@example.com"}},
        {"op": "call", "tool": "secret"},
        {"op": "call", "tool": "fetch", "args": {"url": "https://example.test"}},
        {"op": "call", "tool": "echo", "args": {"message": "after the fetch"}},
        {"client": 1, "op": "call", "tool": "echo", "args": {"message": "another connection, same identity"}},
    ]);
    let lines = run_client(
        &json!({"transport": "http", "protocol": "2026-07-28", "url": url, "clients": 2, "steps": steps}),
    );
    assert_eq!(
        lines[0],
        json!({"ok": {"tools": ["echo", "fetch"]}}),
        "secret is never callable"
    );
    assert_eq!(text(&lines[1]), "Echo: write to [REDACTED:email]");
    assert_eq!(lines[2]["error"]["code"], DENIED, "{}", lines[2]);
    assert_eq!(
        text(&lines[3]),
        "page https://example.test: contact [REDACTED:email]"
    );
    denied(&lines[4], "echo after untrusted content");
    denied(&lines[5], "echo after untrusted content");
    assert_eq!(
        lines[6],
        json!({"era": "modern", "version": "2026-07-28"}),
        "negotiated through server/discover"
    );

    // Without a configured identity, the proxy's own (`mcp-proxy:NAME`) holds the taints:
    // stateless requests cannot shed them.
    let (_without, url) = start_proxy(dir.path(), &policy, &pins, &upstream, &[]);
    let steps = json!([
        {"op": "call", "tool": "fetch", "args": {"url": "https://example.test"}},
        {"op": "call", "tool": "echo", "args": {"message": "after the fetch"}},
    ]);
    let lines = run_client(
        &json!({"transport": "http", "protocol": "2026-07-28", "url": url, "clients": 1, "steps": steps}),
    );
    denied(&lines[1], "echo after untrusted content");
    drop(server);
}

/// `warden mcp wrap` exits with the server's code, and kills a server that ignores the end of
/// its input once the grace period is over.
#[test]
fn stdio_wrap_exit_code_and_grace() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(dir.path());
    let wrap = |script: &str| {
        let start = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["mcp", "wrap", "--memory-pins", "--policy"])
            .arg(&policy)
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        (status.code(), start.elapsed())
    };
    assert_eq!(wrap("exit 3").0, Some(3));
    let (code, took) = wrap("trap '' TERM; sleep 60");
    assert_eq!(code, Some(1), "killed by a signal");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

const POLICY_TASKS: &str = r#"
warden: 1
name: mcp-e2e-tasks
default: allow
rules:
  - { id: withhold, effect: deny, kinds: [tool_result], tools: [simulate-research-query], if: "taint:secret", reason: "research reports are withheld" }
  - { id: mark, effect: allow, tools: [echo], add_taints: [secret] }
"#;

fn check_tasks(lines: &[Value]) {
    // The task's result, fetched with tasks/result, is the tool's result and is inspected: it
    // goes through before the session is tainted and is withheld after.
    let report = text(&lines[1]);
    assert!(report.starts_with("# Research Report: owls"), "{report}");
    assert_eq!(lines[1]["stream"][0], "taskCreated", "{}", lines[1]);
    assert_eq!(text(&lines[2]), "Echo: x");
    rpc_error(&lines[3], WITHHELD, "research reports are withheld");
    assert_eq!(lines[3]["stream"][0], "taskCreated", "{}", lines[3]);
}

/// Task-augmented calls (2025-11-25) with server-everything's task tool, over both transports.
#[test]
fn task_augmented_calls_are_inspected_over_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("tasks.yaml");
    std::fs::write(&policy, POLICY_TASKS).unwrap();
    let pins = dir.path().join("pins.redb");
    let steps = json!([
        {"op": "list"},
        {"op": "task", "tool": "simulate-research-query", "args": {"topic": "owls"}},
        {"op": "call", "tool": "echo", "args": {"message": "x"}},
        {"op": "task", "tool": "simulate-research-query", "args": {"topic": "owls"}},
    ]);
    check_tasks(&run_client(&wrap_spec(&policy, &pins, steps.clone(), 1)));

    let (_server, upstream) = start_everything_http(&npm_dir());
    let (_proxy, url) = start_proxy(dir.path(), &policy, &pins, &upstream, &[]);
    check_tasks(&run_client(&http_spec(&url, steps, 1)));
}

/// SIGTERM to `warden mcp wrap` (what an MCP client sends when it closes) kills the server too.
#[test]
fn stdio_wrap_sigterm_kills_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(dir.path());
    let pid_file = dir.path().join("server.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let mut wrap = Proc(
        Command::new(WARDEN)
            .args(["mcp", "wrap", "--memory-pins", "--policy"])
            .arg(&policy)
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut server = String::new();
    wait_until("the server to start", || {
        server = std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .trim()
            .to_owned();
        !server.is_empty()
    });
    let alive = |pid: &str| {
        Command::new("kill")
            .args(["-0", pid])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(alive(&server));
    let status = Command::new("kill")
        .args(["-TERM", &wrap.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(wrap.0.wait().unwrap().code(), Some(143));
    wait_until("the server to die with warden", || !alive(&server));
}
