#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Approvals end to end (issue 19): `effect: ask` holds a call in the real `warden serve`; an
//! admin answers through the HTTP API and `warden approvals`; the agent's retry with the same
//! arguments goes through once. Over HTTP (`/v1/decide`), and over MCP with the official Python
//! SDK as the agent (`tests/mcp/approval_client.py`) in front of a Python SDK server.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::WARDEN;
use common::serve::Server;

const POLICY: &str = r#"
warden: 1
name: pay
default: deny
tools: { "pay.*": [payment], "kb.*": [read] }
rules:
  - { id: reads, effect: allow, classes: [read] }
  - { id: payments, effect: ask, classes: [payment], reason: "payments need a person's approval", add_taints: [paid] }
  - { id: no-refunds, effect: deny, tools: [pay.refund] }
  - { id: results, effect: allow, kinds: [tool_result] }
"#;

/// An argument value that must never appear in a log, an audit entry or an approval.
const SECRET: &str = "acct-DE89370400440532013000";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/pay.yaml"), POLICY).unwrap();
        let base = "policies: policies\nkeys_file: keys.json\nstate: memory\nwatch: false\n";
        std::fs::write(dir.path().join("warden.yaml"), format!("{base}{config}")).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn warden(&self, args: &[&str], key: Option<&str>, url: Option<&str>) -> Output {
        let mut command = Command::new(WARDEN);
        command
            .args(args)
            .env_remove("WARDEN_API_KEY")
            .env_remove("WARDEN_URL");
        if let Some(key) = key {
            command.env("WARDEN_API_KEY", key);
        }
        if let Some(url) = url {
            command.env("WARDEN_URL", url);
        }
        command.output().unwrap()
    }

    /// `warden keys create --tenant T --policy pay [--role R]`; returns the key.
    fn key(&self, tenant: &str, role: Option<&str>) -> String {
        let config = self.path("warden.yaml").display().to_string();
        let mut args = vec![
            "keys", "create", "--tenant", tenant, "--policy", "pay", "--config", &config,
        ];
        if let Some(role) = role {
            args.extend(["--role", role]);
        }
        let out = self.warden(&args, None, None);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn serve(&self) -> Server {
        let config = self.path("warden.yaml");
        let args: [&std::ffi::OsStr; 4] = [
            "--config".as_ref(),
            config.as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ];
        Server::spawn(&args, &self.path("port"), &self.path("serve.log"))
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn call(amount: Value) -> Value {
    json!({"session": "s1", "principal": "bot", "tool": "pay.send",
           "args": {"amount": amount, "to": SECRET}})
}

fn get(server: &Server, path: &str, key: Option<&str>) -> common::serve::Reply {
    let headers: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
    server.request("GET", path, &headers, None)
}

/// The whole life of approvals over HTTP and the CLI: pending, the same id on a retry, the
/// admin guard (401, 403), list and approve through `warden approvals`, the approved retry
/// allowed once (other arguments not covered), deny, bad input; every step audited, no
/// argument value anywhere.
#[test]
fn an_approved_call_goes_through_once_and_a_denied_one_is_denied() {
    let site = Site::new("audit: { dir: audit, fsync: always }\n");
    let agent = site.key("acme", None);
    let admin = site.key("ops", Some("admin"));
    let server = site.serve();
    let url = server.url("");

    let first = server.post_json("/v1/decide", Some(&agent), &call(json!(5)));
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["decision"], "pending", "{}", first.text);
    assert_eq!(first.body["rule"], "payments");
    assert_eq!(
        first.body["reasons"],
        json!(["payments need a person's approval"])
    );
    assert_eq!(
        first.body["taints"],
        json!([]),
        "a held call changes no state"
    );
    let id = first.body["approval"]["id"].as_str().unwrap().to_owned();
    assert_eq!(first.body["approval"]["status"], "pending");
    let again = server.post_json("/v1/decide", Some(&agent), &call(json!(5)));
    assert_eq!(again.body["decision"], "pending");
    assert_eq!(
        again.body["approval"]["id"],
        id.as_str(),
        "the same call asks once"
    );
    // The OPA Data API's `allow` of a held call is false.
    let opa = server.post_json(
        "/v1/data/pay/allow",
        Some(&agent),
        &json!({"input": call(json!(5))}),
    );
    assert_eq!(opa.body, json!({"result": false}), "{}", opa.text);

    // Admin routes: 401 without a key, 403 with an agent key.
    assert_eq!(get(&server, "/v1/approvals", None).status, 401);
    let forbidden = get(&server, "/v1/approvals", Some(&agent));
    assert_eq!(forbidden.status, 403, "{}", forbidden.text);
    assert_eq!(forbidden.code(), "forbidden");
    let listed = get(&server, "/v1/approvals", Some(&admin));
    assert_eq!(listed.status, 200, "{}", listed.text);
    let approvals = listed.body["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1, "{}", listed.text);
    assert_eq!(approvals[0]["id"], id.as_str());
    assert_eq!(approvals[0]["tenant"], "acme");
    assert_eq!(approvals[0]["principal"], "bot");
    assert_eq!(approvals[0]["session"], "s1");
    assert_eq!(approvals[0]["tool"], "pay.send");
    assert!(
        approvals[0]["args_sha256"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(!listed.text.contains(SECRET), "{}", listed.text);

    // The CLI: list, then approve (an agent key cannot).
    let out = site.warden(&["approvals", "list"], Some(&admin), Some(&url));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!(
            "{id}\tpending\tacme\tbot\ts1\tpay.send\tpayments\t"
        )),
        "{}",
        stdout(&out)
    );
    let out = site.warden(
        &["approvals", "approve", &id, "--reason", "invoice 7"],
        Some(&agent),
        Some(&url),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    let out = site.warden(
        &["approvals", "approve", &id, "--reason", "invoice 7"],
        Some(&admin),
        Some(&url),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let approved: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["reason"], "invoice 7");
    assert!(
        approved["approver"].as_str().is_some_and(|a| a.len() == 12),
        "{approved}"
    );
    let out = site.warden(
        &["approvals", "approve", &id, "--reason", "twice"],
        Some(&admin),
        Some(&url),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("approved already"),
        "{}",
        stderr(&out)
    );

    // Other arguments are not covered.
    let other = server.post_json("/v1/decide", Some(&agent), &call(json!(6)));
    assert_eq!(other.body["decision"], "pending");
    let other_id = other.body["approval"]["id"].as_str().unwrap().to_owned();
    assert_ne!(other_id, id);
    // The approved call, its arguments written differently (same canonical form): once.
    let retry = server.post_raw(
        "/v1/decide",
        &format!(r#"{{"tool":"pay.send","principal":"bot","args":{{"to":"{SECRET}","amount":5.0}},"session":"s1"}}"#),
    );
    assert_eq!(retry.status, 401, "no key: anonymous is off");
    let retry = server.request(
        "POST",
        "/v1/decide",
        &[("content-type", "application/json"), ("x-api-key", &agent)],
        Some(format!(r#"{{"tool":"pay.send","principal":"bot","args":{{"to":"{SECRET}","amount":5.0}},"session":"s1"}}"#).as_bytes()),
    );
    assert_eq!(retry.body["decision"], "allow", "{}", retry.text);
    assert_eq!(retry.body["approval"]["id"], id.as_str());
    assert_eq!(retry.body["approval"]["status"], "consumed");
    assert_eq!(
        retry.body["taints"],
        json!(["paid"]),
        "the ask rule's taints apply"
    );
    let after = server.post_json("/v1/decide", Some(&agent), &call(json!(5)));
    assert_eq!(
        after.body["decision"], "pending",
        "used once: {}",
        after.text
    );
    assert_ne!(after.body["approval"]["id"], id.as_str());

    // Deny over HTTP: the retry is denied.
    let deny = server.request(
        "POST",
        &format!("/v1/approvals/{other_id}/deny"),
        &[("content-type", "application/json"), ("x-api-key", &admin)],
        Some(br#"{"reason": "not this one"}"#),
    );
    assert_eq!(deny.status, 200, "{}", deny.text);
    assert_eq!(deny.body["status"], "denied");
    let denied = server.post_json("/v1/decide", Some(&agent), &call(json!(6)));
    assert_eq!(denied.body["decision"], "deny", "{}", denied.text);
    assert_eq!(denied.body["rule"], "payments");
    assert_eq!(denied.body["reasons"], json!(["approval denied"]));
    assert_eq!(denied.body["approval"]["status"], "denied");

    // Bad input: 4xx naming the problem, nothing changed.
    let answer = |path: &str, body: &str| {
        server.request(
            "POST",
            path,
            &[("content-type", "application/json"), ("x-api-key", &admin)],
            Some(body.as_bytes()),
        )
    };
    let pending_id = after.body["approval"]["id"].as_str().unwrap().to_owned();
    let blank = answer(
        &format!("/v1/approvals/{pending_id}/approve"),
        r#"{"reason": "  "}"#,
    );
    assert_eq!(
        (blank.status, blank.code()),
        (400, "invalid_request"),
        "{}",
        blank.text
    );
    let long = "x".repeat(1025);
    let too_long = answer(
        &format!("/v1/approvals/{pending_id}/approve"),
        &json!({"reason": long}).to_string(),
    );
    assert_eq!(too_long.status, 400, "{}", too_long.text);
    let unknown_field = answer(
        &format!("/v1/approvals/{pending_id}/approve"),
        r#"{"reason": "a", "by": "me"}"#,
    );
    assert_eq!(unknown_field.status, 400, "{}", unknown_field.text);
    let missing = answer("/v1/approvals/apr_0000/approve", r#"{"reason": "a"}"#);
    assert_eq!(
        (missing.status, missing.code()),
        (404, "approval_not_found")
    );
    assert_eq!(
        get(&server, "/v1/approvals/bad%20id", Some(&admin)).status,
        400
    );
    assert_eq!(
        get(&server, "/v1/approvals?status=maybe", Some(&admin)).status,
        400
    );
    let shown = get(
        &server,
        &format!("/v1/approvals/{pending_id}"),
        Some(&admin),
    );
    assert_eq!(shown.body["status"], "pending", "{}", shown.text);
    let out = site.warden(&["approvals", "show", "apr_0000"], Some(&admin), Some(&url));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("approval_not_found") || stderr(&out).contains("no approval"),
        "{}",
        stderr(&out)
    );

    assert_eq!(
        server.metric("warden_approvals_total{event=\"consumed\"}"),
        1.0
    );
    let log = server.stop();
    assert!(!log.contains(SECRET), "an argument value in the log");
    // Every step is in the audit log, none with an argument value.
    let mut steps = Vec::new();
    for entry in std::fs::read_dir(site.path("audit")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(!text.contains(SECRET), "an argument value in the audit log");
            for line in text.lines() {
                let entry: Value = serde_json::from_str(line).unwrap();
                if entry["kind"] == "approval" {
                    steps.push((
                        entry["decision"].as_str().unwrap().to_owned(),
                        entry["rule"].as_str().unwrap().to_owned(),
                    ));
                } else if entry["kind"] == "tool_call" && entry["decision"] == "pending" {
                    steps.push(("pending decision".to_owned(), String::new()));
                }
            }
        }
    }
    let of = |event: &str, approval: &str| {
        steps
            .iter()
            .filter(|(e, r)| e == event && r.starts_with(approval))
            .count()
    };
    assert_eq!(of("requested", &id), 1, "{steps:?}");
    assert_eq!(of("approved", &id), 1, "{steps:?}");
    assert_eq!(of("consumed", &id), 1, "{steps:?}");
    assert_eq!(of("requested", &other_id), 1, "{steps:?}");
    assert_eq!(of("denied", &other_id), 1, "{steps:?}");
    assert!(of("pending decision", "") >= 4, "{steps:?}");
    // The log still verifies.
    let out = site.warden(
        &["audit", "verify", site.path("audit").to_str().unwrap()],
        None,
        None,
    );
    assert!(out.status.success(), "{} {}", stdout(&out), stderr(&out));
}

/// An approval unanswered past `approvals.ttl_ms` expires: an answer comes too late (409), the
/// late retry is denied, the next call asks again. Pending approvals per tenant are bounded.
#[test]
fn approvals_expire_and_are_bounded_per_tenant() {
    let site = Site::new("approvals: { ttl_ms: 400, max_pending_per_tenant: 2 }\n");
    let agent = site.key("acme", None);
    let admin = site.key("ops", Some("admin"));
    let server = site.serve();
    let first = server.post_json("/v1/decide", Some(&agent), &call(json!(1)));
    let id = first.body["approval"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        server
            .post_json("/v1/decide", Some(&agent), &call(json!(2)))
            .body["decision"],
        "pending"
    );
    let full = server.post_json("/v1/decide", Some(&agent), &call(json!(3)));
    assert_eq!(full.body["decision"], "deny", "{}", full.text);
    assert_eq!(
        full.body["reasons"],
        json!(["too many approvals are pending for this tenant"])
    );
    std::thread::sleep(Duration::from_millis(600));
    let late = server.request(
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        &[("content-type", "application/json"), ("x-api-key", &admin)],
        Some(br#"{"reason": "late"}"#),
    );
    assert_eq!(
        (late.status, late.code()),
        (409, "approval_expired"),
        "{}",
        late.text
    );
    let retry = server.post_json("/v1/decide", Some(&agent), &call(json!(1)));
    assert_eq!(retry.body["decision"], "deny", "{}", retry.text);
    assert_eq!(retry.body["reasons"], json!(["approval expired"]));
    let anew = server.post_json("/v1/decide", Some(&agent), &call(json!(1)));
    assert_eq!(anew.body["decision"], "pending", "{}", anew.text);
    assert_ne!(anew.body["approval"]["id"], id.as_str());
}

/// A bad `approvals` configuration stops the start with the field named (exit 2).
#[test]
fn a_bad_approvals_configuration_is_refused_at_start() {
    let site = Site::new("approvals: { wait_ms: 9000 }\n");
    let config = site.path("warden.yaml").display().to_string();
    let out = site.warden(
        &["serve", "--config", &config, "--listen", "127.0.0.1:0"],
        None,
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("approvals.wait_ms"),
        "{}",
        stderr(&out)
    );
}

/// The Python test peers (the MCP SDK), installed by `scripts/test` into `.ci/.pydeps`.
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

/// A process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Python SDK's MCP server answering any tool (`called NAME`), and its URL.
fn upstream() -> (Proc, String) {
    let mut child = python()
        .arg(root().join("crates/warden-cli/tests/mcp/any_tool_http_server.py"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the upstream printed its port");
    (Proc(child), format!("http://127.0.0.1:{port}/mcp"))
}

/// The Python SDK agent: the calls through the mount, one JSON line per call.
fn agent_command(server: &Server, key: &str, calls: &Value) -> Command {
    let mut command = python();
    command
        .arg(root().join("crates/warden-cli/tests/mcp/approval_client.py"))
        .arg(server.url("/mcp/pay"))
        .arg(calls.to_string())
        .env("WARDEN_API_KEY", key);
    command
}

fn agent_calls(server: &Server, key: &str, calls: &Value) -> Vec<Value> {
    let out = agent_command(server, key, calls).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn pay(amount: i64) -> Value {
    json!({"tool": "pay.send", "args": {"amount": amount, "to": SECRET}})
}

fn mcp_site(wait_ms: u64) -> (Site, Proc) {
    let (upstream, url) = upstream();
    let site = Site::new(&format!(
        "approvals: {{ wait_ms: {wait_ms} }}\nmcp_upstreams:\n  - {{ name: pay, url: \"{url}\", policy: pay }}\n"
    ));
    (site, upstream)
}

/// Through the MCP mount with the Python SDK as the agent: a held call is answered at once
/// with -32064 naming the approval and how to retry; approved through the CLI, the retry goes
/// through once; other arguments are pending again; a denied one is refused with -32060.
#[test]
fn an_mcp_call_held_for_approval_goes_through_once_approved() {
    let (site, _upstream) = mcp_site(0);
    let agent = site.key("acme", None);
    let admin = site.key("ops", Some("admin"));
    let server = site.serve();
    let url = server.url("");

    let held = agent_calls(
        &server,
        &agent,
        &json!([pay(5), {"tool": "kb.search", "args": {}}]),
    );
    let error = &held[0]["error"];
    assert_eq!(error["code"], -32064, "{held:?}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("pending approval"),
        "{error}"
    );
    assert_eq!(error["data"]["rule"], "payments");
    let id = error["data"]["approval"]["id"].as_str().unwrap().to_owned();
    assert_eq!(error["data"]["approval"]["status"], "pending");
    assert!(error["data"]["retry"].is_string(), "{error}");
    assert_eq!(held[1]["text"], "called kb.search", "{held:?}");

    let out = site.warden(
        &["approvals", "approve", &id, "--reason", "ok"],
        Some(&admin),
        Some(&url),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let retried = agent_calls(&server, &agent, &json!([pay(5), pay(6), pay(5)]));
    assert_eq!(retried[0]["text"], "called pay.send", "{retried:?}");
    assert_eq!(
        retried[1]["error"]["code"], -32064,
        "other arguments: {retried:?}"
    );
    assert_eq!(
        retried[2]["error"]["code"], -32064,
        "used once: {retried:?}"
    );
    let other = retried[1]["error"]["data"]["approval"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(other, id);

    let out = site.warden(
        &["approvals", "deny", &other, "--reason", "no"],
        Some(&admin),
        Some(&url),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let refused = agent_calls(&server, &agent, &json!([pay(6)]));
    assert_eq!(refused[0]["error"]["code"], -32060, "{refused:?}");
    assert!(
        refused[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("approval denied"),
        "{refused:?}"
    );
    assert_eq!(refused[0]["error"]["data"]["approval"]["status"], "denied");
    let log = server.stop();
    assert!(!log.contains(SECRET), "an argument value in the log");
}

/// With `approvals.wait_ms`, a held `tools/call` waits: approved meanwhile, the same call goes
/// through without the agent retrying; unanswered, it is answered -32064 once the wait is over.
#[test]
fn an_mcp_call_waits_for_its_approval_when_configured() {
    let (site, _upstream) = mcp_site(3000);
    let agent = site.key("acme", None);
    let admin = site.key("ops", Some("admin"));
    let server = site.serve();
    let url = server.url("");

    let child = agent_command(&server, &agent, &json!([pay(7)]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let id = loop {
        let out = site.warden(&["approvals", "list"], Some(&admin), Some(&url));
        assert!(out.status.success(), "{}", stderr(&out));
        if let Some(id) = stdout(&out)
            .split('\t')
            .next()
            .filter(|id| id.starts_with("apr_"))
        {
            break id.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the call never asked"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = site.warden(
        &["approvals", "approve", &id, "--reason", "go"],
        Some(&admin),
        Some(&url),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(answer["text"], "called pay.send", "{answer}");

    // Nobody answers: after the wait, pending.
    let started = Instant::now();
    let unanswered = agent_calls(&server, &agent, &json!([pay(8)]));
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "it waited"
    );
    assert_eq!(unanswered[0]["error"]["code"], -32064, "{unanswered:?}");
}
