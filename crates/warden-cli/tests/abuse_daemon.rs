#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The abuse suite, daemon and operator side (issue 22): each test drives the real `warden`
//! binary the way the attacker or the unlucky operator did, and fails without its fix.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
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

/// A directory with a policy folder and a config file (`extra` appended to it).
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("support-agent.yaml"), SUPPORT_AGENT).unwrap();
        std::fs::write(policies.join("authz.rego"), AUTHZ_REGO).unwrap();
        std::fs::write(policies.join("authz-data.json"), r#"{"admins": ["alice"]}"#).unwrap();
        let base = "policies: policies\nkeys_file: keys.json\nstate_file: state/sessions.redb\n\
                    watch: false\ndecision_log: false\nanonymous_policy: support-agent\n";
        let limit = if extra.contains("rate_limit") {
            ""
        } else {
            "rate_limit: { per_second: 0 }\n"
        };
        std::fs::write(
            dir.path().join("warden.yaml"),
            format!("{base}{limit}{extra}"),
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> String {
        self.path("warden.yaml").display().to_string()
    }

    fn args<'a>(&'a self, config: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let base = ["--config", config, "--listen", "127.0.0.1:0"];
        base.iter().chain(extra).copied().collect()
    }

    /// Starts the daemon (`support-agent` answers requests without a key).
    fn start(&self, extra: &[&str]) -> Server {
        let log = self.path(&format!("log-{}.txt", now_nanos()));
        let config = self.config();
        let args = self.args(&config, extra);
        Server::spawn(&args, &self.path("port"), &log)
    }

    /// Runs `warden serve` expecting it to exit before listening.
    fn fail_to_start(&self, extra: &[&str]) -> Output {
        let config = self.config();
        let args = self.args(&config, extra);
        let mut child = Command::new(WARDEN)
            .arg("serve")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("warden serve {args:?} kept running");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Sets the daemon's file size limit (`prlimit`): `soft` bytes, the hard limit left unlimited
/// so that the test can lift it again.
fn file_size_limit(server: &Server, soft: &str) {
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", server.child.id()))
        .arg(format!("--fsize={soft}:unlimited"))
        .status()
        .unwrap();
    assert!(status.success());
}

/// A batch of `n` requests reading the CRM (which taints the session with `pii`), one per
/// session `{prefix}{i}` padded to 200 bytes.
fn tainting_batch(prefix: &str, n: usize) -> Value {
    (0..n)
        .map(|i| json!({"session": session_id(prefix, i), "tool": "crm.read_contact"}))
        .collect()
}

fn session_id(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:05}-{}", "x".repeat(190))
}

/// Waits for the daemon to exit after a signal; returns its status.
fn wait_exit(server: &mut Server) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Item 1: a session flush that fails (here: the state file would grow beyond the process's
/// file size limit) is logged and counted, makes `/health/ready` 503 and is retried until it
/// succeeds; a shutdown that cannot persist every session says how many and exits non-zero.
/// Nothing written before is lost.
#[test]
fn session_flush_failures_are_reported_retried_and_fail_the_shutdown() {
    let site = Site::new("flush_interval_ms: 20\n");
    let mut server = site.start(&[]);
    let state = site.path("state/sessions.redb");
    let early = server.post_json(
        "/v1/decide",
        None,
        &json!({"session": "early", "tool": "crm.read_contact"}),
    );
    assert_eq!(early.status, 200, "{}", early.text);
    server.wait_for("the first flush", |s| {
        s.metric("warden_sessions_unflushed ") == 0.0
    });

    // The database may not grow any more.
    let size = std::fs::metadata(&state).unwrap().len().to_string();
    file_size_limit(&server, &size);
    for b in 0..4 {
        let r = server.post_json(
            "/v1/decide/batch",
            None,
            &tainting_batch(&format!("a{b}-"), 1000),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
    server.wait_for("a counted flush failure", |s| {
        s.metric("warden_session_flush_failures_total ") >= 1.0
    });
    let ready = server.get("/health/ready");
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.code(), "not_ready");
    assert_eq!(server.metric("warden_session_flush_failing "), 1.0);
    assert!(server.metric("warden_sessions_unflushed ") > 0.0);
    server.wait_for("the failure's log line", |s| {
        let log = s.log_text();
        log.contains("session flush failed; will retry") && log.contains("File too large")
    });
    assert_eq!(
        server.get("/health/live").status,
        200,
        "the daemon lives on"
    );

    // The cause goes away: a retry writes everything and the daemon is ready again.
    file_size_limit(&server, "unlimited");
    server.wait_for("readiness after a successful retry", |s| {
        s.get("/health/ready").status == 200
    });
    assert_eq!(server.metric("warden_session_flush_failing "), 0.0);
    // The retry that cleared the failure may still be writing the last sessions.
    server.wait_for("every session written", |s| {
        s.metric("warden_sessions_unflushed ") == 0.0
    });

    // It comes back and lasts until shutdown: the exit says what was not persisted.
    let size = std::fs::metadata(&state).unwrap().len().to_string();
    file_size_limit(&server, &size);
    // redb may still have free pages inside the file from the first phase: write until it must
    // grow the file (and fails), rather than a fixed amount.
    for b in 0..40 {
        let r = server.post_json(
            "/v1/decide/batch",
            None,
            &tainting_batch(&format!("b{b}-"), 1000),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        std::thread::sleep(Duration::from_millis(50));
        if server.metric("warden_session_flush_failing ") == 1.0 {
            break;
        }
    }
    server.wait_for("the second failure", |s| {
        s.metric("warden_session_flush_failing ") == 1.0
    });
    server.signal("TERM");
    let status = wait_exit(&mut server);
    assert!(
        !status.success(),
        "exit {status} with sessions not persisted"
    );
    let log = server.log_text();
    assert!(
        log.contains("stopping with sessions not persisted"),
        "{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("stopping with sessions not persisted"))
        .unwrap();
    let line: Value = serde_json::from_str(line).unwrap();
    assert!(
        line["sessions_not_persisted"].as_u64().unwrap() > 0,
        "{line}"
    );
    drop(server);

    // What was written before the failures is still there: those sessions still refuse
    // the external write that PII forbids.
    let server = site.start(&[]);
    for session in ["early".to_owned(), session_id("a3-", 999)] {
        let d = server.post_json(
            "/v1/decide",
            None,
            &json!({"session": session, "tool": "send_email"}),
        );
        assert_eq!(d.body["decision"], "deny", "{}", d.text);
        assert_eq!(d.body["rule"], "no-exfil");
    }
}

/// Item 7: a file in the policy directory that does not load (empty, `Warden:` instead of
/// `warden:`) is a reload error that keeps the old set, not a skipped file; an
/// `--anonymous-policy` naming no loaded policy is a startup error (exit 2) and a reload
/// error.
#[test]
fn a_policy_file_that_does_not_load_fails_the_reload_and_a_missing_anonymous_policy_the_start() {
    let site = Site::new("");
    let server = site.start(&["--state", "memory"]);
    let decide = |server: &Server| {
        server
            .post_json("/v1/decide", None, &json!({"tool": "crm.read_x"}))
            .status
    };
    assert_eq!(decide(&server), 200);
    let bad = site.path("policies/other.yaml");
    let errors = |s: &Server| s.metric("warden_reload_total{result=\"error\"}");
    for (n, text) in [
        "",
        "Warden: 1\nname: other\nrules: []\n",
        "# only a comment\n",
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(&bad, text).unwrap();
        server.signal("HUP");
        server.wait_for("the reload error", |s| errors(s) == (n + 1) as f64);
        assert_eq!(decide(&server), 200, "the old set stays");
    }
    assert_eq!(server.metric("warden_reload_total{result=\"ok\"}"), 0.0);
    server.wait_for("the file named in the log", |s| {
        s.log_text().contains("other.yaml")
    });
    // The data document of a Rego policy is not a policy, and loads.
    std::fs::remove_file(&bad).unwrap();
    server.signal("HUP");
    server.wait_for("a good reload", |s| {
        s.metric("warden_reload_total{result=\"ok\"}") == 1.0
    });
    // A reload that drops the anonymous policy fails too.
    std::fs::rename(
        site.path("policies/support-agent.yaml"),
        site.path("support-agent.yaml.off"),
    )
    .unwrap();
    server.signal("HUP");
    server.wait_for("the reload error", |s| errors(s) == 4.0);
    assert_eq!(decide(&server), 200);
    // Log lines are written in batches: wait for this one.
    server.wait_for("the reload error's log line", |s| {
        s.log_text()
            .contains("anonymous_policy `support-agent` is not a loaded policy")
    });
    drop(server);

    let out = site.fail_to_start(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`support-agent`"), "{stderr}");
    std::fs::rename(
        site.path("support-agent.yaml.off"),
        site.path("policies/support-agent.yaml"),
    )
    .unwrap();
    let out = site.fail_to_start(&["--anonymous-policy", "suport-agent"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`suport-agent` is not a loaded policy"),
        "{stderr}"
    );
    std::fs::write(site.path("policies/empty.json"), "").unwrap();
    let out = site.fail_to_start(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("empty.json"), "{stderr}");
    std::fs::remove_file(site.path("policies/empty.json")).unwrap();

    // An anonymous policy given on the command line outlives reloads of a configuration file
    // that names none (a reload used to drop it: every anonymous request then got 401).
    let config = std::fs::read_to_string(site.path("warden.yaml")).unwrap();
    std::fs::write(
        site.path("warden.yaml"),
        config.replace("anonymous_policy: support-agent\n", ""),
    )
    .unwrap();
    let server = site.start(&["--state", "memory", "--anonymous-policy", "support-agent"]);
    assert_eq!(decide(&server), 200);
    server.signal("HUP");
    server.wait_for("the reload", |s| {
        s.metric("warden_reload_total{result=\"ok\"}") == 1.0
    });
    assert_eq!(
        decide(&server),
        200,
        "the reload dropped the anonymous policy"
    );
}

/// Item 8 (daemon): 413 on `/v1/tokens/verify` is the JSON error; Rego Data API input nested
/// past the evaluation depth limit is a 400 naming the limit (was 500); the session database
/// is created 0600.
#[test]
fn token_verify_413_is_json_deep_rego_input_is_400_and_the_state_file_is_private() {
    let site = Site::new("signing_key: signing.pem\nbody_limit_bytes: 4096\n");
    let out = Command::new(WARDEN)
        .args(["keys", "gen-signing", "--out"])
        .arg(site.path("signing.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (key, _) = create_key(&site, "acme", "authz");
    let server = site.start(&[]);

    let big = json!({"token": "x".repeat(8000), "tool": "t"});
    let r = server.post_json("/v1/tokens/verify", None, &big);
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.code(), "payload_too_large", "{}", r.text);
    assert!(
        r.header("content-type")
            .unwrap()
            .contains("application/json")
    );

    let nested = |depth: usize| {
        let mut input = json!("alice");
        for _ in 0..depth {
            input = json!([input]);
        }
        json!({"input": {"user": input}})
    };
    for depth in [50, 98] {
        let r = server.post_json("/v1/data/authz/allow", Some(&key), &nested(depth));
        assert_eq!(r.status, 200, "depth {depth}: {}", r.text);
    }
    for depth in [100, 110, 120] {
        let r = server.post_json("/v1/data/authz/allow", Some(&key), &nested(depth));
        assert_eq!(r.status, 400, "depth {depth}: {}", r.text);
        assert_eq!(r.code(), "invalid_parameter", "OPA's code on OPA's route");
        assert!(r.message().contains("100"), "{}", r.text);
    }

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(site.path("state/sessions.redb"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
}

/// `warden keys create`; returns the key and its id.
fn create_key(site: &Site, tenant: &str, policy: &str) -> (String, String) {
    let out = Command::new(WARDEN)
        .args(["keys", "create", "--tenant", tenant, "--policy", policy])
        .args(["--config", &site.config()])
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

/// Item 11: `warden eval ... | head` ends quietly with exit 0 when the reader goes away.
#[test]
fn eval_into_a_closed_pipe_exits_quietly() {
    let site = Site::new("");
    let policy = site.path("policies/support-agent.yaml");
    let mut child = Command::new(WARDEN)
        .args(["eval", "--policy"])
        .arg(&policy)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Far more output than a pipe holds, so the reader's going away is met mid-stream.
    let writer = std::thread::spawn(move || {
        for i in 0..50_000 {
            let line = format!("{{\"session\": \"s{i}\", \"tool\": \"crm.read_contact\"}}\n");
            if stdin.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"allow\""), "{first}");
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    writer.join().unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    assert_eq!(stderr, "", "nothing on stderr");
}

/// The decision on `send_email` in `session`: `deny` while the session holds `pii`.
fn send_email(server: &Server, session: &str) -> String {
    let d = server.post_json(
        "/v1/decide",
        None,
        &json!({"session": session, "tool": "send_email"}),
    );
    assert_eq!(d.status, 200, "{}", d.text);
    d.body["decision"].as_str().unwrap().to_owned()
}

fn error_message(reply: &common::serve::Reply) -> &str {
    reply.message()
}

/// Item 2: every identifier has a limit (256 bytes by default, `max_identifier_bytes`), over
/// which the request is a 400 naming the field on every decision route, with no state kept;
/// the number of sessions is bounded (`max_sessions`), the sessions idle the longest evicted
/// first and counted.
#[test]
fn identifiers_are_bounded_and_so_is_the_number_of_sessions() {
    let site = Site::new("max_sessions: 100\n");
    let server = site.start(&[]);
    let long = "s".repeat(257);
    let at_limit = "s".repeat(256);
    for (request, field) in [
        (json!({"session": long, "tool": "crm.read_x"}), "session"),
        (json!({"tool": long}), "tool"),
        (
            json!({"principal": long, "tool": "crm.read_x"}),
            "principal",
        ),
        (
            json!({"kind": "http", "http": {"method": long, "path": "/"}}),
            "http.method",
        ),
        (
            json!({"kind": "http", "http": {"headers": {long.clone(): "v"}}}),
            "http.headers",
        ),
        (
            json!({"tool": "t", "context": {long.clone(): 1}}),
            "context",
        ),
    ] {
        let r = server.post_json("/v1/decide", None, &request);
        assert_eq!(r.status, 400, "{field}: {}", r.text);
        assert!(
            error_message(&r).contains(&format!("`{field}`: longer than 256 bytes")),
            "{}",
            r.text
        );
        let r = server.post_json(
            "/v1/data/support/decision",
            None,
            &json!({"input": request}),
        );
        assert_eq!(r.status, 400, "{field}: {}", r.text);
        assert!(
            error_message(&r).contains(&format!("`input.{field}`")),
            "{}",
            r.text
        );
    }
    // In a batch the first item would taint its session: nothing is decided.
    let batch = json!([
        {"session": "b0", "tool": "crm.read_x"},
        {"session": long, "tool": "crm.read_x"},
    ]);
    let r = server.post_json("/v1/decide/batch", None, &batch);
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(error_message(&r).contains("`[1].session`"), "{}", r.text);
    assert_eq!(send_email(&server, "b0"), "allow");
    // The attack of the report: a session id of almost 2 MB.
    let huge = json!({"session": "x".repeat(1_900_000), "tool": "crm.read_x"});
    let r = server.post_json("/v1/decide", None, &huge);
    assert_eq!(r.status, 400, "{}", r.text);
    let ok = server.post_json(
        "/v1/decide",
        None,
        &json!({"session": at_limit, "tool": "crm.read_x"}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text);

    // Sessions 0..99 are tainted, then 0 is used again; 50 new sessions evict 50 of the
    // others, never 0, which was seen last.
    let sessions: Vec<Value> = (0..100)
        .map(|i| json!({"session": format!("e{i}"), "tool": "crm.read_x"}))
        .collect();
    assert_eq!(
        server
            .post_json("/v1/decide/batch", None, &Value::Array(sessions))
            .status,
        200
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(send_email(&server, "e0"), "deny");
    std::thread::sleep(Duration::from_millis(1100));
    let newer: Vec<Value> = (0..50)
        .map(|i| json!({"session": format!("n{i}"), "tool": "crm.read_x"}))
        .collect();
    assert_eq!(
        server
            .post_json("/v1/decide/batch", None, &Value::Array(newer))
            .status,
        200
    );
    assert!(server.metric("warden_sessions ") <= 100.0);
    assert!(server.metric("warden_sessions_evicted_total ") >= 50.0);
    assert_eq!(
        send_email(&server, "e0"),
        "deny",
        "the session used last stays"
    );
    assert_eq!(
        send_email(&server, "n49"),
        "deny",
        "the newest sessions stay"
    );
    server.wait_for("the eviction's log line", |s| {
        s.log_text().contains("session limit reached")
    });
    drop(server);

    // The limit is the operator's to choose.
    let site = Site::new("max_identifier_bytes: 1000\n");
    let server = site.start(&[]);
    let r = server.post_json(
        "/v1/decide",
        None,
        &json!({"session": "s".repeat(1000), "tool": "crm.read_x"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = server.post_json(
        "/v1/decide",
        None,
        &json!({"session": "s".repeat(1001), "tool": "crm.read_x"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        error_message(&r).contains("longer than 1000 bytes"),
        "{}",
        r.text
    );
}

/// The audit entries written so far in `dir`.
fn audit_entries(dir: &std::path::Path) -> usize {
    let Ok(files) = std::fs::read_dir(dir) else {
        return 0;
    };
    files
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .map(|text| text.lines().count())
        .sum()
}

/// Item 6: a batch is all or nothing. Its size is bounded; rate limits count its decisions,
/// not the request; its entries go to the audit log as one group (a batch larger than the
/// audit queue still fits: the group takes one place in it).
#[test]
fn a_refused_batch_changes_nothing_and_rate_limits_count_decisions() {
    let tainting = |prefix: &str, n: usize| -> Value {
        (0..n)
            .map(|i| json!({"session": format!("{prefix}{i}"), "tool": "crm.read_x"}))
            .collect()
    };
    let site = Site::new("max_batch_items: 10\naudit: { dir: audit, queue: 5, on_full: deny }\n");
    let server = site.start(&[]);
    let audit = site.path("audit");
    let r = server.post_json("/v1/decide/batch", None, &tainting("big", 11));
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(error_message(&r).contains("max_batch_items"), "{}", r.text);
    assert_eq!(audit_entries(&audit), 0, "nothing audited");
    for i in 0..11 {
        assert_eq!(
            send_email(&server, &format!("big{i}")),
            "allow",
            "session changed"
        );
    }
    let before = audit_entries(&audit);
    let r = server.post_json("/v1/decide/batch", None, &tainting("five", 5));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(audit_entries(&audit), before + 5);
    assert_eq!(send_email(&server, "five4"), "deny");
    drop(server);

    // A bucket of 20 decisions: two batches of 10 fit, a third is refused whole.
    let site = Site::new("rate_limit: { per_second: 1, burst: 20 }\n");
    let server = site.start(&[]);
    for round in 0..2 {
        let r = server.post_json(
            "/v1/decide/batch",
            None,
            &tainting(&format!("r{round}-"), 10),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = server.post_json("/v1/decide/batch", None, &tainting("r2-", 10));
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.code(), "rate_limited");
    // A batch larger than the bucket can never pass.
    let r = server.post_json("/v1/decide/batch", None, &tainting("r3-", 25));
    assert_eq!(r.status, 429, "{}", r.text);
    drop(server);
    let server = site.start(&[]);
    assert_eq!(
        send_email(&server, "r2-0"),
        "allow",
        "a refused batch changed a session"
    );
}

/// The newest audit file of `dir`.
fn newest_audit_file(dir: &std::path::Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files.pop().unwrap()
}

/// Item 6, the failures after deciding: an audit write that fails half way through a batch
/// (here: the log may not grow beyond the process's file size limit) answers 500, leaves none of
/// the batch's entries in the log (the torn write is cut off: the log verifies, with exactly the
/// entries from before) and changes none of its sessions (checked after a restart, from the state
/// file).
#[test]
fn a_batch_whose_audit_write_fails_leaves_no_entry_and_changes_no_session() {
    let site = Site::new("flush_interval_ms: 20\naudit: { dir: audit, fsync: always }\n");
    let mut server = site.start(&[]);
    let audit = site.path("audit");
    let r = server.post_json(
        "/v1/decide",
        None,
        &json!({"session": "before", "tool": "crm.read_contact"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    server.wait_for("the session flush", |s| {
        s.metric("warden_sessions_unflushed ") == 0.0
    });
    let file = newest_audit_file(&audit);
    let size = std::fs::metadata(&file).unwrap().len();
    // Room for about two of the batch's ten entries.
    file_size_limit(&server, &(size + 1200).to_string());
    let r = server.post_json("/v1/decide/batch", None, &tainting_batch("b-", 10));
    assert_eq!(r.status, 500, "{}", r.text);
    assert_eq!(r.code(), "internal");
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        size,
        "the torn write was not cut off"
    );
    assert_eq!(server.get("/health/ready").status, 503);
    file_size_limit(&server, "unlimited");
    server.signal("TERM");
    wait_exit(&mut server);
    drop(server);

    let verify = Command::new(WARDEN)
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{report}");
    assert!(report.contains("verified 1 entries"), "{report}");

    let server = site.start(&[]);
    assert_eq!(send_email(&server, "before"), "deny");
    for i in [0, 1, 9] {
        assert_eq!(
            send_email(&server, &session_id("b-", i)),
            "allow",
            "the failed batch changed session {i}"
        );
    }
}

const ONCE: &str = r#"warden: 1
name: once
version: "1"
default: deny
tools: { redeem: [redeem] }
rules:
  - { id: redeem, effect: allow, tools: [redeem], add_taints: [redeemed] }
  - { id: only-once, effect: deny, tools: [redeem], if: "taint:redeemed" }
"#;

/// Item 6 under contention: batches and single requests race on one session whose rule lets a
/// call through once. Exactly one call is allowed in all; a batch whose session changed while
/// it was being audited is decided again, its first entries marked void, so that the entries
/// not voided are exactly the decisions delivered.
#[test]
fn racing_batches_and_single_calls_deliver_exactly_what_the_audit_log_holds() {
    let site = Site::new("audit: { dir: audit, fsync: always }\n");
    std::fs::write(site.path("policies/once.yaml"), ONCE).unwrap();
    let server = site.start(&["--anonymous-policy", "once"]);
    let redeem = json!({"session": "coupon", "tool": "redeem"});
    let delivered = std::sync::atomic::AtomicUsize::new(0);
    let allowed = std::sync::atomic::AtomicUsize::new(0);
    let count = |decisions: &[Value]| {
        for d in decisions {
            delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if d["decision"] == "allow" {
                allowed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..40 {
                    let batch = json!([redeem, {"session": "other", "tool": "redeem"}, redeem]);
                    let r = server.post_json("/v1/decide/batch", None, &batch);
                    match r.status {
                        200 => count(r.body.as_array().unwrap()),
                        409 => assert_eq!(r.code(), "batch_conflict"),
                        other => panic!("{other}: {}", r.text),
                    }
                }
            });
        }
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..100 {
                    let r = server.post_json("/v1/decide", None, &redeem);
                    assert_eq!(r.status, 200, "{}", r.text);
                    count(std::slice::from_ref(&r.body));
                }
            });
        }
    });
    // One allow on `coupon`, one on `other` (through a batch).
    assert_eq!(allowed.load(std::sync::atomic::Ordering::Relaxed), 2);
    drop(server);

    let entries = common::audit_entries(&site.path("audit"));
    let mut voided = std::collections::HashSet::new();
    for e in entries.iter().filter(|e| e["kind"] == "void") {
        let range = e["rule"].as_str().unwrap().strip_prefix("seq ").unwrap();
        let (first, last) = range.split_once("..=").unwrap();
        let (first, last): (u64, u64) = (first.parse().unwrap(), last.parse().unwrap());
        assert!(first <= last && last < e["seq"].as_u64().unwrap(), "{e}");
        voided.extend(first..=last);
    }
    let standing: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] != "void" && !voided.contains(&e["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        standing.len(),
        delivered.load(std::sync::atomic::Ordering::Relaxed),
        "{} void entries",
        entries.len() - standing.len()
    );
    assert_eq!(
        standing.iter().filter(|e| e["decision"] == "allow").count(),
        2
    );
    eprintln!("{} entries voided", voided.len());
}

/// Item 9 (last point): a request with a repeated key is refused the same way on every front
/// door, at any depth: `/v1/decide`, `/v1/decide/batch`, the Data API (Warden and Rego
/// policies) answer 400 naming the key, and `warden eval` exits 2 naming it (it used to decide
/// the last value).
#[test]
fn duplicate_keys_are_refused_on_every_front_door() {
    let site = Site::new("");
    let (key, _) = create_key(&site, "acme", "authz");
    let server = site.start(&["--state", "memory"]);
    let top = r#"{"session": "d", "tool": "crm.read_x", "tool": "send_email"}"#;
    let nested = r#"{"tool": "send_email", "args": {"to": "a@corp.test", "to": "b@evil.test"}}"#;
    for (path, body, field) in [
        ("/v1/decide", top.to_owned(), "tool"),
        ("/v1/decide", nested.to_owned(), "args.to"),
        (
            "/v1/decide/batch",
            format!("[{{\"tool\": \"t\"}}, {top}]"),
            "[1].tool",
        ),
        ("/v1/decide/batch", format!("[{nested}]"), "[0].args.to"),
        (
            "/v1/data/support/decision",
            format!("{{\"input\": {top}}}"),
            "input.tool",
        ),
        (
            "/v1/data/support/allow",
            format!("{{\"input\": {nested}}}"),
            "input.args.to",
        ),
    ] {
        let r = server.post_raw(path, &body);
        assert_eq!(r.status, 400, "{path} {body}: {}", r.text);
        assert!(
            error_message(&r).contains(&format!("field `{field}`: duplicate key")),
            "{path} {body}: {}",
            r.text
        );
    }
    let rego = server.request(
        "POST",
        "/v1/data/authz/allow",
        &[("content-type", "application/json"), ("x-api-key", &key)],
        Some(br#"{"input": {"user": "bob", "user": "alice"}}"#),
    );
    assert_eq!(rego.status, 400, "{}", rego.text);
    assert!(
        error_message(&rego).contains("`input.user`"),
        "{}",
        rego.text
    );
    assert_eq!(send_email(&server, "d"), "allow", "nothing was decided");

    let policy = site.path("policies/support-agent.yaml");
    for (input, field) in [(top, "tool"), (nested, "args.to")] {
        let mut child = Command::new(WARDEN)
            .args(["eval", "--policy"])
            .arg(&policy)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{input}").unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(out.stdout.is_empty(), "nothing decided");
        assert!(
            stderr.contains(&format!("<stdin>:1: field `{field}`: duplicate key")),
            "{stderr}"
        );
    }
}

/// Reads from `stream` until the server closes it (EOF or reset); panics if it stays open for
/// `within`. Returns what was read.
fn read_until_closed(stream: &mut std::net::TcpStream, within: Duration) -> String {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                break;
            }
            Err(e) => panic!(
                "the connection stayed open ({e}); read so far: {}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Item 3: a header read timeout, an idle keep-alive timeout and a connection cap, each
/// configurable, counted and logged, on the daemon's listener: half-sent and idle connections
/// no longer pile up until the file descriptors run out.
#[test]
fn slow_idle_and_excess_connections_are_closed_and_counted() {
    let site = Site::new("header_read_timeout_ms: 300\nidle_timeout_ms: 600\n");
    let server = site.start(&["--state", "memory"]);
    let connect = || std::net::TcpStream::connect(&server.addr).unwrap();

    // Slowloris: a request head that never ends, and a connection that never sends a byte.
    let mut half = connect();
    half.write_all(b"POST /v1/decide HTTP/1.1\r\nHost: warden\r\nX-Slow: ")
        .unwrap();
    let mut silent = connect();
    read_until_closed(&mut half, Duration::from_secs(10));
    read_until_closed(&mut silent, Duration::from_secs(10));
    server.wait_for("the header read timeouts counted", |s| {
        s.metric("warden_connection_timeouts_total{kind=\"header_read\"}") >= 2.0
    });

    // A keep-alive connection that got its answer and then idles.
    let mut idle = connect();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: warden\r\n\r\n")
        .unwrap();
    let answer = read_until_closed(&mut idle, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.wait_for("the idle timeout counted", |s| {
        s.metric("warden_connection_timeouts_total{kind=\"idle\"}") >= 1.0
    });
    server.wait_for("the timeouts logged", |s| {
        s.log_text()
            .contains("closed connections that waited too long for a request")
    });

    // A head sent in pieces, each within the limit, is served.
    let mut slow = connect();
    slow.write_all(b"GET /health/live HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    slow.write_all(b"Host: warden\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer = read_until_closed(&mut slow, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(server);

    // The cap: five connections held open, the sixth is closed at once.
    let site = Site::new("max_connections: 5\n");
    let server = site.start(&["--state", "memory"]);
    let held: Vec<_> = (0..5)
        .map(|_| std::net::TcpStream::connect(&server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = std::net::TcpStream::connect(&server.addr).unwrap();
    // Written before the server closes it, or refused: either way no answer comes.
    let _ = extra.write_all(b"GET /health/live HTTP/1.1\r\nHost: warden\r\n\r\n");
    let answer = read_until_closed(&mut extra, Duration::from_secs(10));
    assert_eq!(answer, "", "a connection beyond the cap was served");
    drop(held);
    // Until the server has seen the held connections close, a new one is still refused (reset):
    // asked over a raw connection, so that a refusal is a "not yet", not a failure.
    server.wait_for("room again", |s| {
        let Ok(mut probe) = std::net::TcpStream::connect(&s.addr) else {
            return false;
        };
        let asked = probe
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: warden\r\nConnection: close\r\n\r\n");
        asked.is_ok()
            && read_until_closed(&mut probe, Duration::from_secs(5)).starts_with("HTTP/1.1 200")
    });
    assert!(server.metric("warden_connections_rejected_total ") >= 1.0);
    server.wait_for("the cap logged", |s| {
        s.log_text().contains("connection limit reached")
    });
    drop(server);

    // A limit of 0 is a mistake said before listening.
    for limit in [
        "max_connections",
        "header_read_timeout_ms",
        "idle_timeout_ms",
        "max_batch_items",
        "max_sessions",
        "max_identifier_bytes",
    ] {
        let site = Site::new(&format!("{limit}: 0\n"));
        let out = site.fail_to_start(&[]);
        assert_eq!(out.status.code(), Some(2), "{limit}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("`{limit}` must be at least 1")),
            "{stderr}"
        );
    }
}

/// A decision asked with `key` from the client address `from` (through `X-Forwarded-For`).
fn decide_as(server: &Server, key: &str, from: &str) -> common::serve::Reply {
    let body =
        json!({"kind": "tool_call", "tool": "crm.read_customer", "session": "s", "args": {}});
    let body = serde_json::to_vec(&body).unwrap();
    server.request(
        "POST",
        "/v1/decide",
        &[
            ("content-type", "application/json"),
            ("x-api-key", key),
            ("x-forwarded-for", from),
            ("user-agent", "guesser/1.0"),
        ],
        Some(&body),
    )
}

#[test]
fn an_address_that_keeps_guessing_keys_is_locked_out_even_with_a_good_key() {
    let site = Site::new(
        "auth_failures: { max_failures: 3, window_secs: 60 }\n\
         client_address_header: x-forwarded-for\n",
    );
    let (key, _) = create_key(&site, "acme", "support-agent");
    let server = site.start(&[]);
    // The proxy in front appends the real address last; what the client wrote comes before.
    let attacker = "203.0.113.9, 198.51.100.7";
    assert_eq!(decide_as(&server, &key, attacker).status, 200);
    for _ in 0..3 {
        let reply = decide_as(&server, "wdn_guess", attacker);
        assert_eq!(reply.status, 401, "{}", reply.text);
    }
    // Locked out: the right key does not help, and nothing is decided.
    let locked = decide_as(&server, &key, attacker);
    assert_eq!(locked.status, 429, "{}", locked.text);
    assert_eq!(locked.code(), "rate_limited");
    assert_eq!(locked.header("retry-after"), Some("60"));
    assert!(
        locked.text.contains("failed authentications"),
        "{}",
        locked.text
    );
    // Another address (even one the attacker writes first in the header) is not.
    assert_eq!(decide_as(&server, &key, "198.51.100.8").status, 200);
    assert_eq!(
        decide_as(&server, &key, "198.51.100.7, 198.51.100.8").status,
        200
    );
    assert_eq!(server.metric("warden_auth_lockouts_total"), 1.0);
    assert_eq!(server.metric("warden_auth_failures_total"), 3.0);
    server.wait_for("the lockout logged", |s| {
        s.log_text()
            .contains("address locked out after failed authentications")
    });
    let log = server.log_text();
    assert!(
        !log.contains("198.51.100.7"),
        "addresses stay out of the log: {log}"
    );
}

#[test]
fn without_a_proxy_header_the_connection_address_is_locked_out() {
    let site = Site::new("auth_failures: { max_failures: 2, window_secs: 60 }\n");
    let (key, _) = create_key(&site, "acme", "support-agent");
    let server = site.start(&[]);
    for _ in 0..2 {
        assert_eq!(decide_as(&server, "wdn_guess", "10.0.0.1").status, 401);
    }
    // The header is not trusted here: the peer (127.0.0.1) is what was locked out.
    assert_eq!(decide_as(&server, &key, "10.0.0.2").status, 429);
}
