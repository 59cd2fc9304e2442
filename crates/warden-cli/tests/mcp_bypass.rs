#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The MCP bypass corpus: each technique an attacker used against the proxy, through the real
//! binary, against upstreams that behave like the real servers it fooled:
//!
//! - `tests/mcp/py_sdk_server.py`: the official Python SDK over stdio (universal newlines),
//! - `tests/mcp/go_style_server.py`: a server decoding JSON like Go's `encoding/json`
//!   (case-insensitive, Unicode-folded keys),
//! - `tests/mcp/http_upstream.py`: HTTP upstreams that decode UTF-7, answer with a string id,
//!   start their event stream with a byte-order mark, replay events on `Last-Event-ID`, or slip
//!   in an answer to an id never sent.
//!
//! Each test first shows the attack working against the upstream directly (the control: a
//! denied tool leaves a mark file, or an e-mail address arrives in clear), then that through
//! Warden the denied call never runs and no uninspected result reaches the client.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::WARDEN;
use common::mcp::{CONTACT, Proc, root, wait_until};
use serde_json::{Value, json};

const POLICY: &str = r#"
warden: 1
name: bypass
default: deny
rules:
  - { id: tools, effect: allow, tools: [echo] }
  - { id: fetch, effect: allow, tools: [fetch], add_taints: [untrusted] }
  - { id: no-echo-after-untrusted, effect: deny, tools: [echo], if: "taint:untrusted", reason: "echo after untrusted content" }
  - { id: no-env, effect: deny, tools: [get-env], reason: "no environment" }
  - { id: results, effect: allow, kinds: [tool_result] }
content:
  detectors: [email]
  output: redact
"#;

fn script(name: &str) -> PathBuf {
    root().join("crates/warden-cli/tests/mcp").join(name)
}

/// The Python test peers (the MCP SDK) are installed by `scripts/test` into `.ci/.pydeps`: a
/// missing peer fails the test rather than skipping it.
fn python() -> Command {
    let deps = root().join(".ci/.pydeps");
    assert!(
        deps.join("mcp").is_dir(),
        "the MCP Python SDK is not installed: run scripts/test (it installs tests/peers/requirements.txt into .ci/.pydeps)"
    );
    let mut python = Command::new("python3");
    python.env("PYTHONPATH", deps);
    python
}

struct Setup {
    dir: tempfile::TempDir,
    policy: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, POLICY).unwrap();
        std::fs::create_dir(dir.path().join("marks")).unwrap();
        Self { dir, policy }
    }

    fn marks(&self) -> PathBuf {
        self.dir.path().join("marks")
    }

    /// Whether `tool` ran on the upstream.
    fn ran(&self, tool: &str) -> bool {
        self.marks().join(tool).exists()
    }

    fn clear_marks(&self) {
        for entry in std::fs::read_dir(self.marks()).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
    }
}

/// A stdio peer: lines written to its stdin, lines read from its stdout (by a thread).
struct Stdio_ {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Stdio_ {
    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Lines received until one answers `id` (that one included).
    fn until(&mut self, id: &Value) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no answer to {id}; saw {seen:?}"));
            let message: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            let done = message.get("id") == Some(id);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }

    fn initialize(&mut self) {
        self.send(br#"{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bypass","version":"1"}}}"#);
        self.until(&json!("init"));
        self.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    }

    /// Calls `echo` and waits for its answer: every earlier message has been handled.
    fn barrier(&mut self) -> Vec<Value> {
        self.send(br#"{"jsonrpc":"2.0","id":"barrier","method":"tools/call","params":{"name":"echo","arguments":{"message":"barrier"}}}"#);
        self.until(&json!("barrier"))
    }
}

impl Drop for Stdio_ {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn direct(setup: &Setup, server: &str) -> Stdio_ {
    let mut command = python();
    command
        .arg(script(server))
        .env("WARDEN_MARKS", setup.marks());
    Stdio_::start(command)
}

fn wrapped(setup: &Setup, server: &str, extra: &[&str]) -> Stdio_ {
    let mut command = Command::new(WARDEN);
    command
        .args(["mcp", "wrap", "--memory-pins", "--policy"])
        .arg(&setup.policy)
        .arg("--sessions")
        .arg(setup.dir.path().join("sessions"))
        .args(extra)
        .arg("--")
        .arg("python3")
        .arg(script(server))
        .env("PYTHONPATH", root().join(".ci/.pydeps"))
        .env("WARDEN_MARKS", setup.marks());
    Stdio_::start(command)
}

fn refused(lines: &[Value]) -> usize {
    lines
        .iter()
        .filter(|l| {
            l["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("refused by warden") || m.contains("must"))
        })
        .count()
}

/// A raw CR hides a `tools/call` inside a `ping` for a reader that splits lines on CR (the
/// Python SDK): Warden refuses the line.
#[test]
fn carriage_return_smuggling_against_the_python_sdk() {
    let setup = Setup::new();
    let smuggled = b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\",\"params\":{\"a\":\r{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"get-env\",\"arguments\":{}}}\r}}";

    let mut server = direct(&setup, "py_sdk_server.py");
    server.initialize();
    server.send(smuggled);
    server.barrier();
    assert!(
        setup.ran("get-env"),
        "control: the Python SDK runs the hidden call"
    );
    drop(server);
    setup.clear_marks();

    let mut proxy = wrapped(&setup, "py_sdk_server.py", &[]);
    proxy.initialize();
    proxy.send(smuggled);
    let lines = proxy.barrier();
    assert!(!setup.ran("get-env"), "the hidden call ran through warden");
    assert_eq!(refused(&lines), 1, "{lines:?}");
}

/// Keys that a Go-style decoder folds onto protocol members (`Method`, `NAME`, `paramſ`,
/// duplicates in another case) are refused, so the server never reads a call Warden did not.
#[test]
fn case_folded_keys_against_a_go_style_decoder() {
    let attacks: [&str; 5] = [
        r#"{"jsonrpc":"2.0","id":11,"method":"ping","Method":"tools/call","params":{"name":"get-env"}}"#,
        r#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"echo","NAME":"get-env"}}"#,
        r#"{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"echo","Name":"get-env","arguments":{}}}"#,
        r#"{"jsonrpc":"2.0","id":14,"method":"tools/call","paramſ":{"name":"get-env"}}"#,
        r#"{"jsonrpc":"2.0","id":15,"METHOD":"tools/call","params":{"name":"get-env"}}"#,
    ];
    let setup = Setup::new();
    for attack in attacks {
        let mut server = direct(&setup, "go_style_server.py");
        server.initialize();
        server.send(attack.as_bytes());
        server.barrier();
        assert!(setup.ran("get-env"), "control: {attack} runs get-env");
        drop(server);
        setup.clear_marks();
    }

    let mut proxy = wrapped(&setup, "go_style_server.py", &[]);
    proxy.initialize();
    for attack in attacks {
        proxy.send(attack.as_bytes());
    }
    let lines = proxy.barrier();
    assert!(!setup.ran("get-env"), "a folded key ran get-env: {lines:?}");
    assert_eq!(
        lines.iter().filter(|l| l.get("error").is_some()).count(),
        attacks.len(),
        "{lines:?}"
    );
}

/// Ids: `-0` is `0` (its answer is the tool result, inspected), and an id in flight (a ping's)
/// cannot be reused by a tool call whose result would then pass as the ping's answer.
#[test]
fn id_tricks_over_stdio_never_pass_a_result_uninspected() {
    let setup = Setup::new();
    let mut proxy = wrapped(&setup, "py_sdk_server.py", &[]);
    proxy.initialize();
    let call = |id: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"write to {CONTACT}"}}}}}}"#
        )
    };
    proxy.send(call("-0").as_bytes());
    let lines = proxy.until(&json!(0));
    let answer = lines.last().unwrap();
    assert_eq!(
        answer["result"]["content"][0]["text"], "Echo: write to [REDACTED:email]",
        "{answer}"
    );
    proxy.send(br#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#);
    proxy.send(call("7").as_bytes());
    let mut lines = proxy.barrier();
    lines.extend(proxy.barrier());
    let all = serde_json::to_string(&lines).unwrap();
    assert!(!all.contains(CONTACT), "an address passed in clear: {all}");
    assert!(
        lines
            .iter()
            .any(|l| l["id"] == 7 && l["error"]["code"] == -32600),
        "the reused id was not refused: {lines:?}"
    );
}

/// Taints kept for a named session survive a restart of `warden mcp wrap`.
#[test]
fn wrap_keeps_a_named_sessions_taints_across_restarts() {
    let setup = Setup::new();
    let session = ["--session", "agent-7"];
    let mut proxy = wrapped(&setup, "py_sdk_server.py", &session);
    proxy.initialize();
    proxy.send(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"fetch","arguments":{"url":"https://example.test"}}}"#);
    proxy.until(&json!(1));
    drop(proxy);
    // The file holding the session's state is the owner's alone.
    let files: Vec<_> = std::fs::read_dir(setup.dir.path().join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let mut proxy = wrapped(&setup, "py_sdk_server.py", &session);
    proxy.initialize();
    proxy.send(br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}"#);
    let lines = proxy.until(&json!(2));
    assert_eq!(
        lines.last().unwrap()["error"]["message"],
        "denied by policy: echo after untrusted content",
        "{lines:?}"
    );
    // Another session is not tainted.
    let mut other = wrapped(&setup, "py_sdk_server.py", &["--session", "agent-8"]);
    other.initialize();
    let lines = other.barrier();
    assert_eq!(
        lines.last().unwrap()["result"]["content"][0]["text"],
        "Echo: barrier"
    );
}

/// An HTTP upstream from `tests/mcp/http_upstream.py` in `mode`; returns it and its URL.
fn http_upstream(setup: &Setup, mode: &str) -> (Proc, String) {
    let mut child = python()
        .arg(script("http_upstream.py"))
        .arg(mode)
        .env("WARDEN_MARKS", setup.marks())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut port).unwrap();
    (Proc(child), format!("http://127.0.0.1:{}/mcp", port.trim()))
}

/// `warden mcp proxy` in front of `upstream`; returns it and its URL.
fn http_proxy(setup: &Setup, upstream: &str) -> (Proc, String) {
    http_proxy_with(setup, upstream, &[])
}

fn http_proxy_with(setup: &Setup, upstream: &str, extra: &[&str]) -> (Proc, String) {
    let port_file = setup
        .dir
        .path()
        .join(format!("proxy-{}.port", common::mcp::free_port()));
    let proxy = Proc(
        Command::new(WARDEN)
            .args(["mcp", "proxy", "--memory-pins", "--policy"])
            .arg(&setup.policy)
            .arg("--sessions")
            .arg(setup.dir.path().join("sessions"))
            .args(extra)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                upstream,
                "--port-file",
            ])
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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

/// POSTs `body` with `content_type`; returns the status and the body.
fn post(url: &str, content_type: &str, body: &str) -> (u16, String) {
    let mut response = common::agent()
        .post(url)
        .header("content-type", content_type)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", "s-1")
        .send(body)
        .unwrap();
    let status = response.status().as_u16();
    let mut text = String::new();
    response
        .body_mut()
        .as_reader()
        .read_to_string(&mut text)
        .unwrap();
    (status, text)
}

fn echo_call(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"hi"}}}}}}"#
    )
}

/// UTF-7: a body whose UTF-8 reading is an `echo` and whose UTF-7 reading is a `get-env`
/// (`+ACI-` is a quote in UTF-7). The proxy refuses any charset but UTF-8.
#[test]
fn utf7_body_against_a_charset_honouring_server() {
    // `"}},"method":"tools/call","params":{"name":"get-env","arguments":{}},"x":{"y":{"z":"` in
    // UTF-7 (UTF-16BE, modified base64, between `+` and `-`).
    const HIDDEN: &str = "+ACIAfQB9ACwAIgBtAGUAdABoAG8AZAAiADoAIgB0AG8AbwBsAHMALwBjAGEAbABsACIALAAiAHAAYQByAGEAbQBzACIAOgB7ACIAbgBhAG0AZQAiADoAIgBnAGUAdAAtAGUAbgB2ACIALAAiAGEAcgBnAHUAbQBlAG4AdABzACIAOgB7AH0AfQAsACIAeAAiADoAewAiAHkAIgA6AHsAIgB6ACIAOgAi-";
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{HIDDEN}"}}}}}}"#
    );
    let setup = Setup::new();
    let (_server, upstream) = http_upstream(&setup, "utf7");
    let utf7 = "application/json; charset=utf-7";
    post(&upstream, utf7, &body);
    assert!(setup.ran("get-env"), "control: the server decodes UTF-7");
    setup.clear_marks();

    let (_proxy, url) = http_proxy(&setup, &upstream);
    let (status, text) = post(&url, utf7, &body);
    assert_eq!(status, 415, "{text}");
    assert!(text.contains("charset"), "{text}");
    let (status, _) = post(&url, "application/json; charset=\"UTF-8\"", &echo_call(2));
    assert_eq!(status, 200);
    assert!(!setup.ran("get-env"));
    assert!(setup.ran("echo"));
}

/// Malicious upstreams: every answer that reaches the client was inspected (the address
/// redacted), whatever the server does to slip one past.
#[test]
fn malicious_http_upstreams_never_pass_a_result_uninspected() {
    let setup = Setup::new();
    for mode in ["string-id", "bom-sse", "replay", "stray"] {
        let (_server, upstream) = http_upstream(&setup, mode);
        // Control: directly, the address arrives in clear.
        let (_, direct) = post(&upstream, "application/json", &echo_call(5));
        assert!(direct.contains(CONTACT), "control {mode}: {direct}");

        let (_proxy, url) = http_proxy(&setup, &upstream);
        let (status, text) = post(&url, "application/json", &echo_call(5));
        assert!(!text.contains(CONTACT), "{mode}: {text}");
        match mode {
            // An answer with id "5" is no answer to request 5: dropped, and with it the
            // response (502).
            "string-id" => assert_eq!(status, 502, "{text}"),
            // The stream's byte-order mark is removed and the event inspected.
            "bom-sse" => {
                assert!(!text.starts_with('\u{feff}'), "{text:?}");
                assert!(text.contains("[REDACTED:email]"), "{text}");
            }
            // Only the answer to the request sent arrives (the stray one is dropped).
            "stray" => {
                assert_eq!(text.matches("data: ").count(), 1, "{text}");
                assert!(text.contains("[REDACTED:email]"), "{text}");
            }
            // A resumed stream replays the result: inspected again, not passed in clear.
            "replay" => {
                assert!(text.contains("[REDACTED:email]"), "{text}");
                let mut response = common::agent()
                    .get(&url)
                    .header("accept", "text/event-stream")
                    .header("mcp-session-id", "s-1")
                    .header("last-event-id", "0")
                    .call()
                    .unwrap();
                let mut replayed = String::new();
                response
                    .body_mut()
                    .as_reader()
                    .read_to_string(&mut replayed)
                    .unwrap();
                assert!(!replayed.contains(CONTACT), "replayed in clear: {replayed}");
                assert!(replayed.contains("[REDACTED:email]"), "{replayed}");
            }
            _ => unreachable!(),
        }
    }
}

/// Streamable HTTP is POST, GET and DELETE: a body sent with PUT or PATCH is refused (405), not
/// forwarded uninspected.
#[test]
fn other_http_methods_are_refused() {
    let setup = Setup::new();
    let (_server, upstream) = http_upstream(&setup, "utf7");
    let (_proxy, url) = http_proxy(&setup, &upstream);
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get-env"}}"#;
    for method in ["PUT", "PATCH"] {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let response = common::agent().run(request).unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(
            response.headers().get("allow").unwrap(),
            "GET, POST, DELETE"
        );
    }
    assert!(!setup.ran("get-env"));
}

/// The proxy's listener has the daemon's limits: a connection cap, and a header read timeout
/// that closes a client sending its request head too slowly.
#[test]
fn the_proxy_listener_caps_connections_and_times_out_slow_heads() {
    use std::net::TcpStream;
    let setup = Setup::new();
    let (_server, upstream) = http_upstream(&setup, "utf7");
    let (_proxy, url) = http_proxy_with(
        &setup,
        &upstream,
        &["--max-connections", "2", "--header-read-timeout-ms", "300"],
    );
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let closed = |stream: &mut TcpStream| {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 64];
        // Closed: end of stream or a reset; a read timing out means the connection is open.
        match stream.read(&mut buf) {
            Ok(0) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            Ok(_) => false,
        }
    };
    // Two slow clients hold the two places: a third is closed at once.
    let mut a = TcpStream::connect(&addr).unwrap();
    let mut b = TcpStream::connect(&addr).unwrap();
    a.write_all(b"POST /mcp HTTP/1.1\r\nHost: x\r\n").unwrap();
    b.write_all(b"POST /mcp HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut c = TcpStream::connect(&addr).unwrap();
    assert!(closed(&mut c), "a connection beyond the cap was served");
    // The slow heads are cut by the timeout, freeing the places.
    assert!(
        closed(&mut a) && closed(&mut b),
        "slow heads were not timed out"
    );
    let (status, _) = post(&url, "application/json", &echo_call(1));
    assert_eq!(status, 200);
}
