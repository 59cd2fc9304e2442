#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! End-to-end tests of `warden serve`: the real binary on an ephemeral port, over HTTP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::serve::Server;
use common::{SUPPORT_AGENT, WARDEN};

const AUTHZ_REGO: &str = r#"package authz

import rego.v1

default allow := false

allow if input.user in data.admins
"#;

/// A directory with a policy folder, a key file and a config file.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("support-agent.yaml"), SUPPORT_AGENT).unwrap();
        std::fs::write(policies.join("authz.rego"), AUTHZ_REGO).unwrap();
        std::fs::write(policies.join("authz-data.json"), r#"{"admins": ["alice"]}"#).unwrap();
        let base = "policies: policies\nkeys_file: keys.json\nstate_file: state/sessions.redb\n";
        std::fs::write(dir.path().join("warden.yaml"), format!("{base}{config}")).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> String {
        self.path("warden.yaml").display().to_string()
    }

    /// `warden keys create`; returns the key and its id.
    fn create_key(&self, tenant: &str, policy: &str) -> (String, String) {
        let out = Command::new(WARDEN)
            .args(["keys", "create", "--tenant", tenant, "--policy", policy])
            .args(["--config", &self.config()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let id = stderr.split('`').nth(1).unwrap().to_owned();
        (key, id)
    }

    fn start(&self, extra: &[&str]) -> Server {
        let log = self.path(&format!("log-{}.txt", now_nanos()));
        let config = self.config();
        let base = ["--config", config.as_str(), "--listen", "127.0.0.1:0"];
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        Server::spawn(&args, &self.path("port"), &log)
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// One raw HTTP/1.1 exchange; write errors are ignored (the server may answer before reading
/// the whole body and close).
fn raw(addr: &str, head: &str, body: &[u8]) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}}") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const NO_LIMIT: &str = "rate_limit: { per_second: 0 }\n";

#[test]
fn decide_auth_and_errors() {
    let site = Site::new(NO_LIMIT);
    let (key, key_id) = site.create_key("acme", "support-agent");
    let (other_key, _) = site.create_key("globex", "support-agent");
    assert!(
        !std::fs::read_to_string(site.path("keys.json"))
            .unwrap()
            .contains(&key)
    );
    let server = site.start(&[]);

    // Decide: taint, then the exfiltration is refused; the key works as a Bearer token too.
    let read = server.post_json(
        "/v1/decide",
        Some(&key),
        &json!({"session": "s1", "tool": "crm.read_customer", "args": {"id": "secret-arg-7"}}),
    );
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.body["decision"], "allow");
    assert_eq!(read.body["taints"], json!(["pii"]));
    assert_eq!(read.body["policy"]["name"], "support-agent");
    assert!(read.header("x-request-id").is_some());
    let send = server.request(
        "POST",
        "/v1/decide",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {key}")),
        ],
        Some(br#"{"session":"s1","tool":"send_email"}"#),
    );
    assert_eq!(send.status, 200);
    assert_eq!(send.body["decision"], "deny");
    assert_eq!(send.body["rule"], "no-exfil");
    // Sessions are per tenant: globex's `s1` is clean.
    let other = server.post_json(
        "/v1/decide",
        Some(&other_key),
        &json!({"session": "s1", "tool": "send_email"}),
    );
    assert_eq!(other.body["decision"], "allow");

    // Batch: in order, one snapshot, state carried between items.
    let batch = server.post_json(
        "/v1/decide/batch",
        Some(&key),
        &json!([
            {"session": "b", "tool": "crm.read_customer"},
            {"session": "b", "tool": "send_email"},
            {"session": "b", "tool": "human_approve"},
            {"session": "b", "tool": "send_email"}
        ]),
    );
    assert_eq!(batch.status, 200, "{}", batch.text);
    let verdicts: Vec<&str> = batch
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["allow", "deny", "allow", "allow"]);
    let bad_batch = server.post_json(
        "/v1/decide/batch",
        Some(&key),
        &json!([{"tool": "x"}, {"tool": 3}]),
    );
    assert_eq!(bad_batch.status, 400);
    assert!(
        bad_batch.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`[1].tool`")
    );

    // 401: one message for every failure.
    let none = server.post_json("/v1/decide", None, &json!({"tool": "x"}));
    let wrong = server.post_json("/v1/decide", Some("wdn_0123"), &json!({"tool": "x"}));
    let bearer_wrong = server.request(
        "POST",
        "/v1/decide",
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer nope"),
        ],
        Some(b"{}"),
    );
    for r in [&none, &wrong, &bearer_wrong] {
        assert_eq!(r.status, 401);
        assert_eq!(r.body, none.body);
    }
    assert_eq!(none.code(), "unauthorized");
    assert_eq!(server.metric("warden_auth_failures_total"), 3.0);

    // 400 naming the field; 415; 413; 404; 405.
    let bad = server.post_json("/v1/decide", Some(&key), &json!({"tool": "x", "bogus": 1}));
    assert_eq!(bad.status, 400);
    assert_eq!(bad.code(), "invalid_request");
    assert!(
        bad.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`bogus`")
    );
    let bad = server.post_json("/v1/decide", Some(&key), &json!({"http": {"verb": "GET"}}));
    assert!(
        bad.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`http.verb`")
    );
    let not_json = server.request(
        "POST",
        "/v1/decide",
        &[("content-type", "application/json"), ("x-api-key", &key)],
        Some(b"{nope"),
    );
    assert_eq!(not_json.status, 400);
    let text = server.request(
        "POST",
        "/v1/decide",
        &[("content-type", "text/plain"), ("x-api-key", &key)],
        Some(b"{}"),
    );
    assert_eq!(text.status, 415);
    assert_eq!(text.code(), "unsupported_media_type");
    // 413, declared up front or found while streaming a chunked body.
    let head = format!(
        "POST /v1/decide HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-api-key: {key}\r\n"
    );
    let declared = raw(
        &server.addr,
        &format!("{head}content-length: {}\r\n\r\n", 3 << 20),
        b"",
    );
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    assert!(declared.contains("payload_too_large"));
    let mut chunked = Vec::new();
    for _ in 0..48 {
        chunked.extend_from_slice(format!("{:x}\r\n", 1 << 16).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 1 << 16));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let streamed = raw(
        &server.addr,
        &format!("{head}transfer-encoding: chunked\r\n\r\n"),
        &chunked,
    );
    assert!(streamed.starts_with("HTTP/1.1 413"), "{streamed}");
    let missing = server.get("/v2/nothing");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), "not_found");
    let wrong_method = server.get("/v1/decide");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.code(), "method_not_allowed");

    // Policies, health.
    let policies = server.request("GET", "/v1/policies", &[("x-api-key", &key)], None);
    assert_eq!(policies.status, 200);
    let p = &policies.body["policies"][0];
    assert_eq!(p["name"], "support-agent");
    assert_eq!(p["version"], "1.0.0");
    assert!(p["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(p["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(server.get("/health/live").status, 200);
    let ready = server.get("/health/ready");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["status"], "ready");

    // Metrics.
    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    for needle in [
        r#"warden_decisions_total{policy="support-agent",decision="allow"}"#,
        r#"warden_decisions_total{policy="support-agent",decision="deny"}"#,
        "warden_decision_duration_seconds_bucket{le=",
        "warden_decision_duration_seconds_count",
        r#"warden_http_requests_total{route="/v1/decide",status="200"}"#,
        r#"warden_http_requests_total{route="/v1/decide",status="401"}"#,
        r#"warden_http_requests_total{route="unmatched",status="404"}"#,
        "warden_auth_failures_total 3",
        r#"warden_reload_total{result="error"} 0"#,
        // acme:s1 holds `pii`; the batch left acme:b empty (human_approve removed its taint) and
        // globex:s1 holds nothing: empty sessions are not kept.
        "warden_sessions 1",
    ] {
        assert!(
            metrics.text.contains(needle),
            "missing {needle} in\n{}",
            metrics.text
        );
    }
    assert!(!metrics.text.contains(&key));

    // Revoking the key locks it out once the daemon reloads.
    let out = Command::new(WARDEN)
        .args(["keys", "revoke", &key_id, "--config", &site.config()])
        .output()
        .unwrap();
    assert!(out.status.success());
    server.signal("HUP");
    server.wait_for("the revoked key to be refused", |s| {
        s.post_json("/v1/decide", Some(&key), &json!({"tool": "x"}))
            .status
            == 401
    });

    // One JSON line per decision, without args, text or keys.
    let log = server.stop();
    let decisions: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "warden::decision")
        .collect();
    assert!(
        decisions.len() >= 7,
        "{} decision lines in\n{log}",
        decisions.len()
    );
    let first = &decisions[0];
    for field in [
        "request_id",
        "tenant",
        "policy",
        "digest",
        "decision",
        "latency_us",
    ] {
        assert!(!first[field].is_null(), "{field} missing in {first}");
    }
    assert_eq!(first["tenant"], "acme");
    assert!(decisions.iter().any(|d| d["rule"] == "no-exfil"));
    assert!(!log.contains(&key), "a key was logged");
    assert!(!log.contains("secret-arg-7"), "arguments were logged");
    assert!(log.contains("authentication failed"));
}

#[test]
fn opa_data_api() {
    let site = Site::new(NO_LIMIT);
    let (rego_key, _) = site.create_key("opa-user", "authz");
    let (warden_key, _) = site.create_key("acme", "support-agent");
    let server = site.start(&["--state", "memory"]);

    let allow = server.post_json(
        "/v1/data/authz/allow",
        Some(&rego_key),
        &json!({"input": {"user": "alice"}}),
    );
    assert_eq!(allow.status, 200, "{}", allow.text);
    assert_eq!(allow.body, json!({"result": true}));
    let deny = server.post_json(
        "/v1/data/authz/allow",
        Some(&rego_key),
        &json!({"input": {"user": "bob"}}),
    );
    assert_eq!(deny.body, json!({"result": false}));
    let undefined = server.post_json(
        "/v1/data/authz/nothing_here",
        Some(&rego_key),
        &json!({"input": {}}),
    );
    assert_eq!(undefined.status, 200);
    assert_eq!(undefined.body, json!({}), "undefined: no `result`");
    let package = server.post_json(
        "/v1/data/authz",
        Some(&rego_key),
        &json!({"input": {"user": "alice"}}),
    );
    assert_eq!(package.body["result"]["allow"], true);
    // OPA clients often send no content type, or curl's form default.
    let bare = server.request(
        "POST",
        "/v1/data/authz/allow",
        &[
            ("x-api-key", &rego_key),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Some(br#"{"input":{"user":"alice"}}"#),
    );
    assert_eq!(bare.body, json!({"result": true}));
    let no_input = server.request(
        "POST",
        "/v1/data/authz/allow",
        &[("x-api-key", &rego_key)],
        Some(b""),
    );
    // As OPA does: evaluated without input, with a warning saying so.
    assert_eq!(no_input.body["result"], false);
    assert_eq!(no_input.body["warning"]["code"], "api_usage_warning");
    // A Rego tenant cannot use /v1/decide.
    let decide = server.post_json("/v1/decide", Some(&rego_key), &json!({"tool": "x"}));
    assert_eq!(decide.status, 400);

    // A Warden policy through the Data API: `.../allow` is a boolean, other paths the decision.
    let read = server.post_json(
        "/v1/data/warden/allow",
        Some(&warden_key),
        &json!({"input": {"session": "d", "tool": "crm.read_customer"}}),
    );
    assert_eq!(read.body, json!({"result": true}));
    let send = server.post_json(
        "/v1/data/warden/decision",
        Some(&warden_key),
        &json!({"input": {"session": "d", "tool": "send_email"}}),
    );
    assert_eq!(send.body["result"]["decision"], "deny");
    assert_eq!(send.body["result"]["rule"], "no-exfil");
    let missing = server.post_json("/v1/data/warden/allow", Some(&warden_key), &json!({}));
    assert_eq!(missing.status, 400);
    assert!(missing.message().contains("`input`"), "{}", missing.text);
    let bad = server.post_json(
        "/v1/data/warden/allow",
        Some(&warden_key),
        &json!({"input": {"tool": 1}}),
    );
    assert!(bad.message().contains("`input.tool`"), "{}", bad.text);
    let unauthenticated = server.post_json("/v1/data/authz/allow", None, &json!({"input": {}}));
    assert_eq!(unauthenticated.status, 401);
}

#[test]
fn per_key_rate_limit_answers_429_with_retry_after() {
    let site = Site::new("rate_limit: { per_second: 1, burst: 2 }\n");
    let (key, _) = site.create_key("acme", "support-agent");
    let (other, _) = site.create_key("globex", "support-agent");
    let server = site.start(&["--state", "memory"]);
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            server
                .post_json("/v1/decide", Some(&key), &json!({"tool": "x"}))
                .status
        })
        .collect();
    assert_eq!(&statuses[..2], [200, 200]);
    let limited = server.post_json("/v1/decide", Some(&key), &json!({"tool": "x"}));
    assert_eq!(limited.status, 429);
    assert_eq!(limited.code(), "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    // Another key has its own bucket.
    assert_eq!(
        server
            .post_json("/v1/decide", Some(&other), &json!({"tool": "x"}))
            .status,
        200
    );
}

#[test]
fn anonymous_access_needs_an_anonymous_policy() {
    let site = Site::new(NO_LIMIT);
    let server = site.start(&["--state", "memory"]);
    assert_eq!(
        server
            .post_json("/v1/decide", None, &json!({"tool": "x"}))
            .status,
        401
    );
    drop(server);
    let server = site.start(&["--state", "memory", "--anonymous-policy", "support-agent"]);
    let d = server.post_json("/v1/decide", None, &json!({"tool": "crm.read_x"}));
    assert_eq!(d.status, 200);
    assert_eq!(d.body["decision"], "allow");
}

#[test]
fn not_ready_without_policies() {
    let site = Site::new(NO_LIMIT);
    for f in ["support-agent.yaml", "authz.rego", "authz-data.json"] {
        std::fs::remove_file(site.path("policies").join(f)).unwrap();
    }
    let server = site.start(&["--state", "memory", "--anonymous-policy", "support-agent"]);
    assert_eq!(server.get("/health/live").status, 200);
    let ready = server.get("/health/ready");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.code(), "not_ready");
    let decide = server.post_json("/v1/decide", None, &json!({"tool": "x"}));
    assert_eq!(decide.status, 503);
    assert!(decide.header("retry-after").is_some());
    // A policy appearing in the watched directory makes it ready.
    std::fs::write(
        site.path("policies").join("support-agent.yaml"),
        SUPPORT_AGENT,
    )
    .unwrap();
    server.wait_for("readiness after the watcher's reload", |s| {
        s.get("/health/ready").status == 200
    });
}

#[test]
fn worker_threads_come_from_the_flag_or_the_config_and_are_bounded() {
    // The flag.
    let site = Site::new(NO_LIMIT);
    let key = site.create_key("acme", "support-agent").0;
    let server = site.start(&["--state", "memory", "--workers", "3"]);
    assert_eq!(server.metric("warden_runtime_workers "), 3.0);
    let decide = server.post_json("/v1/decide", Some(&key), &json!({"tool": "crm.read_x"}));
    assert_eq!(decide.status, 200, "{}", decide.text);
    drop(server);
    // The configuration file, and 0 (the default): one per CPU core.
    let site = Site::new(&format!("{NO_LIMIT}workers: 1\n"));
    let server = site.start(&["--state", "memory"]);
    assert_eq!(server.metric("warden_runtime_workers "), 1.0);
    drop(server);
    let server = Site::new(NO_LIMIT).start(&["--state", "memory", "--workers", "0"]);
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    let expected = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cores);
    assert_eq!(server.metric("warden_runtime_workers "), expected);
    drop(server);
    // Too many: exit 2 naming the field, before listening.
    let site = Site::new(NO_LIMIT);
    let out = Command::new(WARDEN)
        .args([
            "serve",
            "--config",
            &site.config(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--workers", "5000", "--port-file"])
        .arg(site.path("port"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`workers` must be at most 1024"),
        "{stderr}"
    );
    assert!(!site.path("port").exists(), "nothing listened");
}

#[test]
fn signals_sent_as_soon_as_the_port_file_appears_are_handled() {
    // The port file is the "up" signal for scripts: SIGHUP or SIGTERM right after it must reload
    // or stop gracefully, never meet the default action (which kills the process). The harness
    // polls every 20 ms; this watches the file without sleeping to signal at once.
    let site = Site::new(NO_LIMIT);
    let port = site.path("port");
    for round in 0..20 {
        let _ = std::fs::remove_file(&port);
        let mut child = Command::new(WARDEN)
            .args([
                "serve",
                "--config",
                &site.config(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--state", "memory", "--port-file"])
            .arg(&port)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::metadata(&port).is_ok_and(|m| m.len() > 0) {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::yield_now();
        }
        let pid = child.id().to_string();
        let signal = if round % 2 == 0 { "-HUP" } else { "-TERM" };
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
        if signal == "-HUP" {
            assert!(
                Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "round {round} ({signal}): exit status {status}"
        );
    }
}

#[test]
fn sessions_persist_across_restarts_and_memory_state_does_not() {
    let site = Site::new(NO_LIMIT);
    let (key, _) = site.create_key("acme", "support-agent");
    let server = site.start(&[]);
    let read = server.post_json(
        "/v1/decide",
        Some(&key),
        &json!({"session": "p", "tool": "crm.read_customer"}),
    );
    assert_eq!(read.body["taints"], json!(["pii"]));
    let log = server.stop();
    assert!(log.contains("\"stopped\""), "{log}");

    let server = site.start(&[]);
    assert_eq!(server.metric("warden_sessions"), 1.0);
    let send = server.post_json(
        "/v1/decide",
        Some(&key),
        &json!({"session": "p", "tool": "send_email"}),
    );
    assert_eq!(send.body["decision"], "deny", "{}", send.text);
    assert_eq!(send.body["rule"], "no-exfil");
    assert_eq!(send.body["taints"], json!(["pii"]));
    server.stop();

    // `--state memory`: nothing survives.
    let server = site.start(&["--state", "memory"]);
    server.post_json(
        "/v1/decide",
        Some(&key),
        &json!({"session": "m", "tool": "crm.read_customer"}),
    );
    server.stop();
    let server = site.start(&["--state", "memory"]);
    let send = server.post_json(
        "/v1/decide",
        Some(&key),
        &json!({"session": "m", "tool": "send_email"}),
    );
    assert_eq!(send.body["decision"], "allow");
}

#[test]
fn invalid_reload_keeps_the_old_set() {
    let site = Site::new(NO_LIMIT);
    let (key, _) = site.create_key("acme", "support-agent");
    let server = site.start(&["--state", "memory"]);
    let before = server.post_json("/v1/decide", Some(&key), &json!({"tool": "send_email"}));
    let digest = before.body["policy"]["digest"].clone();
    std::fs::write(
        site.path("policies").join("support-agent.yaml"),
        SUPPORT_AGENT.replace("effect: deny", "effect: maybe"),
    )
    .unwrap();
    server.signal("HUP");
    server.wait_for("a failed reload", |s| {
        s.metric(r#"warden_reload_total{result="error"}"#) >= 1.0
    });
    let after = server.post_json("/v1/decide", Some(&key), &json!({"tool": "send_email"}));
    assert_eq!(after.status, 200);
    assert_eq!(after.body["policy"]["digest"], digest);
    server.wait_for("the failure in the log", |s| {
        s.log_text().contains("reload failed")
    });
    // A valid change is picked up by the watcher.
    std::fs::write(
        site.path("policies").join("support-agent.yaml"),
        SUPPORT_AGENT.replace("1.0.0", "1.0.1"),
    )
    .unwrap();
    server.wait_for("the new version", |s| {
        s.post_json("/v1/decide", Some(&key), &json!({"tool": "x"}))
            .body["policy"]["version"]
            == "1.0.1"
    });
}

fn versioned(version: u32) -> String {
    format!(
        "warden: 1\nname: flip\nversion: \"{version}\"\ndefault: allow\nrules:\n  - {{ id: rule-v{version}, effect: deny, tools: [t] }}\n"
    )
}

/// 100 reloads while four clients decide: no request fails and every decision is from one
/// whole snapshot (its version and its rule agree).
#[test]
fn hundred_reloads_under_concurrent_load() {
    let site = Site::new("rate_limit: { per_second: 0 }\nwatch: false\nanonymous_policy: flip\n");
    let policies = site.path("policies");
    for f in ["support-agent.yaml", "authz.rego", "authz-data.json"] {
        std::fs::remove_file(policies.join(f)).unwrap();
    }
    std::fs::write(policies.join("flip.yaml"), versioned(0)).unwrap();
    let server = Arc::new(site.start(&["--state", "memory", "--no-decision-log"]));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (server, stop, ok) = (Arc::clone(&server), Arc::clone(&stop), Arc::clone(&ok));
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = server.post_json("/v1/decide", None, &json!({"tool": "t"}));
                    let version = r.body["policy"]["version"]
                        .as_str()
                        .unwrap_or("?")
                        .to_owned();
                    let rule = r.body["rule"].as_str().unwrap_or("?").to_owned();
                    if r.status != 200 || rule != format!("rule-v{version}") {
                        failures.push(format!("{} {}", r.status, r.text));
                    } else {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
                failures
            })
        })
        .collect();
    for i in 1..=100u32 {
        std::fs::write(policies.join("flip.yaml"), versioned(i)).unwrap();
        server.signal("HUP");
        server.wait_for("the reload", |s| {
            s.metric(r#"warden_reload_total{result="ok"}"#) >= f64::from(i)
        });
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
    let last = server.post_json("/v1/decide", None, &json!({"tool": "t"}));
    assert_eq!(last.body["rule"], "rule-v100");
    assert_eq!(server.metric(r#"warden_reload_total{result="error"}"#), 0.0);
}

/// SIGTERM while a long batch is being decided: the batch completes (200, every decision), and
/// new connections are refused afterwards.
#[test]
fn shutdown_finishes_in_flight_requests() {
    // A batch long enough to be under way when the signal comes.
    let site = Site::new("rate_limit: { per_second: 0 }\nmax_batch_items: 20000\n");
    let server = Arc::new(site.start(&[
        "--state",
        "memory",
        "--anonymous-policy",
        "support-agent",
        "--no-decision-log",
    ]));
    let n = 20_000;
    let batch: Vec<Value> = (0..n)
        .map(|i| json!({"session": format!("s{i}"), "tool": "crm.read_customer"}))
        .collect();
    let in_flight = {
        let server = Arc::clone(&server);
        std::thread::spawn(move || server.post_json("/v1/decide/batch", None, &Value::Array(batch)))
    };
    server.wait_for("the batch to be under way", |s| {
        s.metric(r#"warden_decisions_total{policy="support-agent",decision="allow"}"#) > 0.0
    });
    server.signal("TERM");
    let reply = in_flight.join().unwrap();
    assert_eq!(
        reply.status,
        200,
        "{}",
        &reply.text[..reply.text.len().min(300)]
    );
    assert_eq!(reply.body.as_array().unwrap().len(), n);
    let server = Arc::into_inner(server).unwrap();
    let addr = server.addr.clone();
    let log = server.stop();
    assert!(log.contains("shutting down"));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after exit"
    );
}

#[test]
fn graceful_shutdown_finishes_and_flushes() {
    let site = Site::new(NO_LIMIT);
    let server = site.start(&["--anonymous-policy", "support-agent"]);
    let d = server.post_json(
        "/v1/decide",
        None,
        &json!({"session": "g", "tool": "crm.read_x"}),
    );
    assert_eq!(d.status, 200);
    let log = server.stop();
    assert!(log.contains("shutting down"), "{log}");
    assert!(Path::new(&site.path("state/sessions.redb")).exists());
}

const SLOW_REGO_POLICY: &str = "warden: 1\nname: slow\ndefault: allow\nrego:\n  modules:\n    slow.rego: |\n      package slow\n      import rego.v1\n      spin if {\n        some a in numbers.range(1, 20000)\n        some b in numbers.range(1, 20000)\n        a * b == -1\n      }\nrules:\n  - { id: taint, effect: allow, tools: [t], add_taints: [touched] }\n  - { id: slow, effect: allow, tools: [t], rego: data.slow.spin }\n";

/// A Warden policy whose Rego rule runs past its limit denies (fail closed) on `/v1/decide` and
/// on every item of `/v1/decide/batch`, and each such decision is counted
/// (`warden_decisions_failed_closed_total{failure="rego_limit_exceeded"}`) and logged, as the
/// library engine does.
#[test]
fn rego_failures_are_denied_counted_and_logged_by_the_daemon() {
    let site = Site::new("watch: false\nanonymous_policy: slow\nrate_limit: { per_second: 0 }\n");
    std::fs::write(site.path("policies/slow.yaml"), SLOW_REGO_POLICY).unwrap();
    let server = site.start(&[]);
    let metric = "warden_decisions_failed_closed_total{failure=\"rego_limit_exceeded\"} ";
    assert_eq!(server.metric(metric), 0.0);
    let d = server.post_json("/v1/decide", None, &json!({"session": "s", "tool": "t"}));
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body["decision"], "deny");
    assert_eq!(d.body["rule"], "rego:error");
    let b = server.post_json(
        "/v1/decide/batch",
        None,
        &json!([{"session": "s", "tool": "t"}, {"tool": "t"}]),
    );
    assert_eq!(b.status, 200, "{}", b.text);
    assert!(
        b.body
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["decision"] == "deny"),
        "{}",
        b.text
    );
    assert_eq!(server.metric(metric), 3.0);
    server.wait_for("the log lines", |s| {
        s.log_text().matches("decision failed closed").count() == 3
    });
}

/// HTTP/2 with prior knowledge (h2c) beside HTTP/1.1 on the same listener: several decisions
/// at once on one connection, each through the same guard (a request without a key is a 401).
#[test]
fn http2_with_prior_knowledge_serves_decisions_on_one_connection() {
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let site = Site::new("anonymous_policy: support-agent\n");
    let server = site.start(&[]);
    let addr = server.addr.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let ask = |session: String, key: Option<&'static str>| {
            let mut sender = sender.clone();
            let addr = addr.clone();
            async move {
                let body = json!({"kind": "tool_call", "tool": "crm.read_customer", "session": session, "args": {}});
                let mut request = hyper::Request::post(format!("http://{addr}/v1/decide"))
                    .header("content-type", "application/json");
                if let Some(key) = key {
                    request = request.header("x-api-key", key);
                }
                let request = request
                    .body(Full::new(hyper::body::Bytes::from(body.to_string())))
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                let (version, status) = (response.version(), response.status().as_u16());
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                (version, status, serde_json::from_slice::<Value>(&bytes).unwrap())
            }
        };
        // Eight requests in flight at once, as eight streams of the one connection.
        let tasks: Vec<_> = (0..8)
            .map(|i| tokio::spawn(ask(format!("h2-{i}"), None)))
            .collect();
        for task in tasks {
            let (version, status, body) = task.await.unwrap();
            assert_eq!(version, hyper::Version::HTTP_2);
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["decision"], "allow", "{body}");
        }
        let (_, status, body) = ask("h2-key".into(), Some("wdn_not_a_key")).await;
        assert_eq!(status, 401, "{body}");
    });
    // HTTP/1.1 on the same listener, as before.
    let reply = server.post_json(
        "/v1/decide",
        None,
        &json!({"tool": "send_email", "session": "h1"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
}
