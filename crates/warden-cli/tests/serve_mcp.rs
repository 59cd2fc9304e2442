#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The MCP proxy mounted in the daemon: the real `warden serve` binary with an `mcp_upstreams`
//! entry naming `@modelcontextprotocol/server-everything` (Streamable HTTP, ephemeral port),
//! driven by the official TypeScript SDK client (`tests/mcp/client.cjs`) through
//! `http://addr/mcp/everything` with an API key. The npm packages come from `.ci/run`'s install
//! step (see `tests/mcp.rs`).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::WARDEN;
use common::mcp::{
    CONTACT, HELD, OTHER_HASH, Proc, approve, assert_success, denied, rpc_error, seed_changed_pins,
    start_everything_http, text, wait_until,
};
use serde_json::{Value, json};

const POLICY: &str = r#"
warden: 1
name: mcp-serve
default: deny
tools:
  get-sum: [web]            # stands in for a web fetch: what it returns is untrusted
  echo: [internal]
  get-env: [internal]
  get-tiny-image: [internal]
rules:
  - { id: internal, effect: allow, classes: [internal] }
  - { id: fetch, effect: allow, classes: [web], add_taints: [untrusted] }
  - { id: results, effect: allow, kinds: [tool_result] }
  - { id: no-echo-after-untrusted, effect: deny, kinds: [tool_call], tools: [echo], if: "taint:untrusted", reason: "echo after untrusted content" }
  - { id: no-images, effect: deny, tools: [get-tiny-image], reason: "images are not allowed" }
  - { id: globex-no-env, effect: deny, tools: [get-env], principals: [globex], reason: "not for globex" }
content:
  detectors: [email]
  input: redact
  output: redact
"#;

/// The npm packages these tests drive: server-everything and the v1 SDK (`client.cjs`).
const PACKAGES: [&str; 2] = ["server-everything", "sdk"];

/// The npm directory, or a failure that says how to install it.
fn npm_dir() -> PathBuf {
    common::mcp::npm_dir(&PACKAGES)
}

/// Runs the SDK client with `spec`; returns its output lines as JSON.
fn run_client(spec: &Value) -> Vec<Value> {
    common::mcp::run_client(&npm_dir(), spec)
}

/// server-everything, and `warden serve` with it as the upstream `everything`.
struct Setup {
    dir: tempfile::TempDir,
    _upstream: Proc,
    serve: Proc,
    addr: String,
    log: PathBuf,
}

/// `warden serve --config DIR/warden.yaml`, logging to `log`; returns it with its address.
fn spawn_serve(dir: &Path, log: &Path) -> (Proc, String) {
    let config = dir.join("warden.yaml");
    let args: [&OsStr; 4] = [
        "--config".as_ref(),
        config.as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ];
    let (serve, addr) = common::spawn_serve(&args, &dir.join("port"), log);
    (Proc(serve), addr)
}

/// `warden keys create` against the configuration in `dir`; returns the key.
fn create_key(dir: &Path, tenant: &str) -> String {
    let out = Command::new(WARDEN)
        .args([
            "keys",
            "create",
            "--tenant",
            tenant,
            "--policy",
            "mcp-serve",
        ])
        .arg("--config")
        .arg(dir.join("warden.yaml"))
        .output()
        .unwrap();
    assert_success(&out);
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Setup {
    fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Starts the upstream, writes the configuration, runs `prepare` with the directory, then
    /// starts the daemon.
    fn start_with(prepare: impl FnOnce(&Path)) -> Self {
        let (upstream, url) = start_everything_http(&npm_dir());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/mcp-serve.yaml"), POLICY).unwrap();
        let config = format!(
            "policies: policies\nkeys_file: keys.json\nstate_file: state/sessions.redb\n\
             watch: false\nmcp_upstreams:\n  - name: everything\n    \
             url: {url}\n    policy: mcp-serve\n"
        );
        std::fs::write(dir.path().join("warden.yaml"), config).unwrap();
        prepare(dir.path());
        let log = dir.path().join("serve.log");
        let (serve, addr) = spawn_serve(dir.path(), &log);
        Self {
            dir,
            _upstream: upstream,
            serve,
            addr,
            log,
        }
    }

    /// Stops the daemon (SIGKILL: nothing is flushed on the way out) and starts it again.
    fn restart(&mut self) {
        let _ = self.serve.0.kill();
        let _ = self.serve.0.wait();
        let (serve, addr) = spawn_serve(self.dir.path(), &self.log);
        self.serve = serve;
        self.addr = addr;
    }

    /// `warden keys create`; returns the key.
    fn key(&self, tenant: &str) -> String {
        create_key(self.dir.path(), tenant)
    }

    fn url(&self) -> String {
        format!("http://{}/mcp/everything", self.addr)
    }

    fn spec(&self, key: &str, steps: Value, clients: usize) -> Value {
        json!({
            "transport": "http",
            "url": self.url(),
            "headers": {"x-api-key": key},
            "clients": clients,
            "steps": steps,
        })
    }

    fn metrics(&self) -> String {
        common::agent()
            .get(format!("http://{}/metrics", self.addr))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    /// Reloads the daemon (SIGHUP) and waits until `/metrics` counts `count` successful reloads.
    fn reload(&self, count: u32) {
        let status = Command::new("kill")
            .args(["-HUP", &self.serve.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_until(&format!("reload {count}"), || {
            self.metrics()
                .contains(&format!("warden_reload_total{{result=\"ok\"}} {count}"))
        });
    }
}

#[test]
fn serve_mounts_the_mcp_proxy_for_configured_upstreams() {
    let setup = Setup::start();
    let acme = setup.key("acme");
    let globex = setup.key("globex");
    // Keys are loaded at start and on reload.
    setup.reload(1);

    let lines = run_client(&setup.spec(
        &acme,
        json!([
            {"op": "list"},
            {"op": "call", "tool": "echo", "args": {"message": "write to bob@example.com"}},
            {"op": "call", "tool": "get-tiny-image"},
            {"op": "call", "tool": "get-env"},
            {"op": "call", "tool": "get-sum", "args": {"a": 1, "b": 2}},
            {"op": "call", "tool": "echo", "args": {"message": "after the fetch"}},
            {"client": 1, "op": "call", "tool": "echo", "args": {"message": "other session"}},
        ]),
        2,
    ));
    // tools/list: only what this principal could ever call.
    assert_eq!(
        lines[0],
        json!({"ok": {"tools": ["echo", "get-env", "get-sum"]}})
    );
    // Allowed: the server's result (arguments redacted on the way).
    assert_eq!(text(&lines[1]), "Echo: write to [REDACTED:email]");
    // Denied: a JSON-RPC error in the client with the rule's reason.
    denied(&lines[2], "denied by policy: images are not allowed");
    // The result is redacted on its way back.
    let env = text(&lines[3]);
    assert!(env.contains("[REDACTED:email]") && !env.contains(CONTACT));
    // A taint follows the key's identity: it blocks a later call in the same MCP session and in
    // another one (a new `Mcp-Session-Id` does not clear it) ...
    assert_eq!(text(&lines[4]), "The sum of 1 and 2 is 3.");
    denied(&lines[5], "echo after untrusted content");
    denied(&lines[6], "echo after untrusted content");
    let sessions = lines.last().unwrap()["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);

    // The principal is the key's tenant.
    let lines = run_client(&setup.spec(
        &globex,
        json!([
            {"op": "list"},
            {"op": "call", "tool": "get-env"},
            {"op": "call", "tool": "echo", "args": {"message": "other key"}},
        ]),
        1,
    ));
    assert_eq!(lines[0], json!({"ok": {"tools": ["echo", "get-sum"]}}));
    denied(&lines[1], "not for globex");
    // ... and not another key's.
    assert_eq!(text(&lines[2]), "Echo: other key");

    // Without a key (and no anonymous policy): 401, nothing forwarded.
    let response = common::agent()
        .post(setup.url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .unwrap();
    assert_eq!(response.status(), 401);

    // Hot reload: a policy change applies to the MCP upstream without a restart.
    std::fs::write(
        setup.dir.path().join("policies/mcp-serve.yaml"),
        POLICY.replace(
            "  - { id: internal,",
            "  - { id: no-echo, effect: deny, tools: [echo], reason: \"echo switched off\" }\n  - { id: internal,",
        ),
    )
    .unwrap();
    setup.reload(2);
    let lines = run_client(&setup.spec(
        &acme,
        json!([
            {"op": "list"},
            {"op": "call", "tool": "echo", "args": {"message": "hi"}},
        ]),
        1,
    ));
    assert_eq!(lines[0], json!({"ok": {"tools": ["get-env", "get-sum"]}}));
    denied(&lines[1], "echo switched off");

    // The enforcer's counters are exported on /metrics.
    let metrics = setup.metrics();
    // The value of the series `prefix` (name and labels, then a space).
    let value = |prefix: String| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}in {metrics}"))
            .parse()
            .unwrap()
    };
    let count = |event: &str| -> f64 {
        value(format!(
            "warden_mcp_events_total{{upstream=\"everything\",event=\"{event}\"}} "
        ))
    };
    assert_eq!(count("call_denied"), 5.0, "{metrics}");
    assert_eq!(count("call_allowed"), 4.0, "{metrics}");
    assert!(count("tool_hidden") >= 3.0, "{metrics}");
    // They are decisions of the daemon's one pipeline: counted like `/v1/decide`'s (the calls
    // and the results decided: at least the calls above).
    let decisions = |verdict: &str| -> f64 {
        value(format!(
            "warden_decisions_total{{policy=\"mcp-serve\",decision=\"{verdict}\"}} "
        ))
    };
    assert!(decisions("deny") >= 5.0, "{metrics}");
    assert!(decisions("allow") >= 4.0, "{metrics}");

    let log = std::fs::read_to_string(&setup.log).unwrap();
    assert!(log.contains("MCP upstream mounted"), "{log}");
}

#[test]
fn serve_refuses_an_upstream_whose_policy_is_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/mcp-serve.yaml"), POLICY).unwrap();
    std::fs::write(
        dir.path().join("warden.yaml"),
        "policies: policies\nkeys_file: keys.json\nstate: memory\nmcp_upstreams:\n  \
         - { name: everything, url: \"http://127.0.0.1:9/mcp\", policy: nope }\n",
    )
    .unwrap();
    let out = Command::new(WARDEN)
        .args(["serve", "--config"])
        .arg(dir.path().join("warden.yaml"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("policy `nope` is not loaded"), "{stderr}");
}

/// Asserts that `line` is a call held back until its changed tool is approved.
fn held(line: &Value) {
    rpc_error(line, HELD, "warden mcp approve everything");
}

/// Tool pins live in the daemon's pin database (`mcp-pins.redb` next to `state_file`):
/// `warden mcp approve` works on it while the daemon runs, and after a restart a changed
/// definition is still held and an approved one stays approved.
#[test]
fn serve_tool_pins_are_approved_while_running_and_kept_across_restarts() {
    let mut key = String::new();
    let mut setup = Setup::start_with(|dir| {
        // Pinned earlier to definitions the server no longer has.
        seed_changed_pins(
            &dir.join("state/mcp-pins.redb"),
            "everything",
            &["echo", "get-env"],
        );
        key = create_key(dir, "acme");
    });
    let pins = setup.dir.path().join("state/mcp-pins.redb");
    let steps = json!([
        {"op": "list"},
        {"op": "call", "tool": "echo", "args": {"message": "hi"}},
        {"op": "call", "tool": "get-env"},
    ]);
    let lines = run_client(&setup.spec(&key, steps.clone(), 1));
    assert_eq!(lines[0], json!({"ok": {"tools": ["get-sum"]}}));
    held(&lines[1]);
    held(&lines[2]);

    // Approved while the daemon runs (and holds the pin database open).
    assert_success(&approve(&pins, "everything", "echo"));
    let after_approval = |setup: &Setup| {
        let lines = run_client(&setup.spec(&key, steps.clone(), 1));
        assert_eq!(lines[0], json!({"ok": {"tools": ["echo", "get-sum"]}}));
        assert_eq!(text(&lines[1]), "Echo: hi");
        held(&lines[2]);
    };
    after_approval(&setup);

    setup.restart();
    after_approval(&setup);
    let out = Command::new(WARDEN)
        .args(["mcp", "pins", "--pins"])
        .arg(&pins)
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let everything = &listed["everything"];
    assert!(everything["echo"]["pending"].is_null(), "{listed}");
    assert_ne!(everything["echo"]["hash"], OTHER_HASH, "{listed}");
    assert_eq!(everything["get-env"]["hash"], OTHER_HASH, "{listed}");
    assert!(everything["get-env"]["pending"].is_string(), "{listed}");
    // The restarted daemon counted the call it held back.
    let metrics = setup.metrics();
    assert!(
        metrics
            .contains("warden_mcp_events_total{upstream=\"everything\",event=\"call_held\"} 1\n"),
        "{metrics}"
    );
}
