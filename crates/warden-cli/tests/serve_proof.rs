#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! End-to-end tests of proof in `warden serve` (issue 6): decision tokens, the JWKS endpoint,
//! `/v1/tokens/verify` with replay protection, and the audit log (including SIGKILL under
//! `fsync: always`). The real binary on an ephemeral port, over HTTP.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::serve::Server;
use common::{SUPPORT_AGENT, WARDEN};

/// A Rego-only policy queried through the Data API: a boolean (`allow`), a rule that is
/// undefined unless the user is root (`root`), an object (`profile`, which echoes the input),
/// and a complete rule whose two definitions conflict when both `a` and `b` are set (`pick`).
const AUTHZ_REGO: &str = r#"package authz

import rego.v1

default allow := false

allow if input.user == "alice"

root if input.user == "root"

profile := {"user": input.user, "token": input.api_token, "level": 3}

pick := "a" if input.a
pick := "b" if input.b
"#;

/// A directory with a policy folder and a config file (anonymous access to `support-agent`,
/// sessions in memory, no rate limit) plus `extra` configuration.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("support-agent.yaml"), SUPPORT_AGENT).unwrap();
        let base = "policies: policies\nkeys_file: keys.json\nstate: memory\n\
                    anonymous_policy: support-agent\nrate_limit: { per_second: 0 }\nwatch: false\n";
        std::fs::write(dir.path().join("warden.yaml"), format!("{base}{extra}")).unwrap();
        Self { dir }
    }

    /// Like [`Site::new`], but anonymous requests use the Rego-only policy `authz`
    /// ([`AUTHZ_REGO`]).
    fn rego(extra: &str) -> Self {
        let site = Self::new("");
        std::fs::write(site.path("policies").join("authz.rego"), AUTHZ_REGO).unwrap();
        let base = "policies: policies\nkeys_file: keys.json\nstate: memory\n\
                    anonymous_policy: authz\nrate_limit: { per_second: 0 }\nwatch: false\n";
        std::fs::write(site.path("warden.yaml"), format!("{base}{extra}")).unwrap();
        site
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> String {
        self.path("warden.yaml").display().to_string()
    }

    fn start(&self) -> Server {
        let log = self.path("serve.log");
        let config = self.config();
        let base = ["--config", config.as_str(), "--listen", "127.0.0.1:0"];
        Server::spawn(&base, &self.path("port"), &log)
    }
}

fn warden(args: &[&str]) -> Output {
    Command::new(WARDEN).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The proof endpoints of a [`Server`], each asserting a 200.
trait ProofCalls {
    /// `POST /v1/decide`; returns the decision.
    fn decide(&self, body: &Value) -> Value;
    /// `POST /v1/tokens/verify`; returns the verdict.
    fn verify(&self, token: &str, tool: &str, args: Option<&Value>, consume: bool) -> Value;
}

impl ProofCalls for Server {
    fn decide(&self, body: &Value) -> Value {
        let reply = self.post_json("/v1/decide", None, body);
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body
    }

    fn verify(&self, token: &str, tool: &str, args: Option<&Value>, consume: bool) -> Value {
        let mut body = json!({"token": token, "tool": tool, "consume": consume});
        if let Some(args) = args {
            body["args"] = args.clone();
        }
        let reply = self.post_json("/v1/tokens/verify", None, &body);
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body
    }
}

fn gen_signing(site: &Site) -> String {
    let out = warden(&[
        "keys",
        "gen-signing",
        "--out",
        &site.path("signing.pem").display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out).trim().to_owned()
}

fn gen_audit(site: &Site) {
    let out = warden(&[
        "keys",
        "gen-audit",
        "--out",
        &site.path("audit.key").display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_call(tool: &str, args: &Value, session: &str) -> Value {
    json!({"kind": "tool_call", "tool": tool, "args": args, "session": session, "principal": "alice"})
}

/// Replaces one character in the middle of the token's signature part.
fn tamper_signature(token: &str) -> String {
    let dot = token.rfind('.').unwrap();
    let mut bytes = token.as_bytes().to_vec();
    let i = dot + 10;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn tokens_verify_over_http_and_with_the_cli_and_are_single_use() {
    let site = Site::new("signing_key: signing.pem\n");
    let kid = gen_signing(&site);
    let server = site.start();

    // JWKS: the configured key, cacheable for a few seconds at most.
    let reply = server.get("/.well-known/jwks.json");
    assert_eq!(reply.status, 200, "{}", reply.text);
    let jwks: Value = serde_json::from_str(&reply.text).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    assert!(jwks["keys"][0].get("d").is_none(), "private part published");
    std::fs::write(site.path("jwks.json"), &reply.text).unwrap();

    // An allowed tool call carries a token; its claims bind tool, args, principal, session.
    let args = json!({"id": 7, "fields": ["name", "email"]});
    let decision = server.decide(&read_call("crm.read_contact", &args, "s1"));
    assert_eq!(decision["decision"], "allow");
    let token = decision["token"]
        .as_str()
        .expect("token on an allowed tool call")
        .to_owned();
    let valid = server.verify(&token, "crm.read_contact", Some(&args), false);
    assert_eq!(valid["valid"], true, "{valid}");
    assert_eq!(valid["claims"]["sub"], "alice");
    assert_eq!(valid["claims"]["sid"], "s1");
    assert_eq!(valid["claims"]["iss"], "warden");
    assert_eq!(valid["claims"]["tool"], "crm.read_contact");
    assert_eq!(valid["claims"]["policy"], decision["policy"]["digest"]);

    // Denied decisions and other kinds carry none.
    let denied = server.decide(&read_call(
        "send_email",
        &json!({"to": "x@example.com"}),
        "s1",
    ));
    assert_eq!(denied["decision"], "deny");
    assert!(denied.get("token").is_none(), "{denied}");
    let prompt = server.decide(&json!({"kind": "prompt", "text": "hello"}));
    assert!(prompt.get("token").is_none(), "{prompt}");

    // The CLI verifies with the daemon's JWKS.
    std::fs::write(site.path("args.json"), args.to_string()).unwrap();
    std::fs::write(
        site.path("other.json"),
        json!({"id": 8, "fields": ["name", "email"]}).to_string(),
    )
    .unwrap();
    let jwks_file = site.path("jwks.json").display().to_string();
    let cli = |args_file: &str, extra: &[&str]| {
        let mut a = vec!["token", "verify", "--jwks", &jwks_file, "--args", args_file];
        a.extend_from_slice(extra);
        a.push(&token);
        warden(&a)
    };
    let args_file = site.path("args.json").display().to_string();
    let other_file = site.path("other.json").display().to_string();
    let out = cli(
        &args_file,
        &["--tool", "crm.read_contact", "--issuer", "warden"],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("valid"), "{}", stdout(&out));
    let out = cli(&other_file, &["--tool", "crm.read_contact"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("arguments do not match"),
        "{}",
        stdout(&out)
    );
    let far = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600)
        .to_string();
    let out = cli(&args_file, &["--now", &far]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("expired"), "{}", stdout(&out));

    // Rejections over HTTP: 200 with valid false, a stable code and a reason.
    let reject = |reply: Value, code: &str| {
        assert_eq!(reply["valid"], false, "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
        assert!(!reply["reason"].as_str().unwrap().is_empty());
    };
    reject(
        server.verify(
            &token,
            "crm.read_contact",
            Some(&json!({"id": 8, "fields": ["name", "email"]})),
            false,
        ),
        "args_mismatch",
    );
    reject(
        server.verify(&token, "crm.read_invoice", Some(&args), false),
        "tool_mismatch",
    );
    reject(
        server.verify(
            &tamper_signature(&token),
            "crm.read_contact",
            Some(&args),
            false,
        ),
        "bad_signature",
    );
    reject(
        server.verify("not.a.token", "crm.read_contact", Some(&args), false),
        "malformed",
    );
    // Key order and spacing do not matter (RFC 8785), the values do.
    let reordered = json!({"fields": ["name", "email"], "id": 7});
    assert_eq!(
        server.verify(&token, "crm.read_contact", Some(&reordered), false)["valid"],
        true
    );

    // consume: the first use passes, the second is a replay.
    assert_eq!(
        server.verify(&token, "crm.read_contact", Some(&args), true)["valid"],
        true
    );
    reject(
        server.verify(&token, "crm.read_contact", Some(&args), true),
        "replayed",
    );

    // Missing args are hashed as {}.
    let bare = server.decide(&json!({"kind": "tool_call", "tool": "crm.read_all"}));
    let bare_token = bare["token"].as_str().unwrap();
    assert_eq!(
        server.verify(bare_token, "crm.read_all", None, false)["valid"],
        true
    );
    assert_eq!(
        server.verify(bare_token, "crm.read_all", Some(&json!({})), false)["valid"],
        true
    );

    // Batches: each allowed tool call gets its own token.
    let reply = server.post_json(
        "/v1/decide/batch",
        None,
        &json!([
            read_call("crm.read_a", &json!({"n": 1}), "b1"),
            read_call("crm.read_b", &json!({"n": 2}), "b2")
        ]),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let batch = &reply.body;
    let t1 = batch[0]["token"].as_str().unwrap();
    let t2 = batch[1]["token"].as_str().unwrap();
    assert_ne!(t1, t2);
    assert_eq!(
        server.verify(t1, "crm.read_a", Some(&json!({"n": 1})), true)["valid"],
        true
    );
    assert_eq!(
        server.verify(t2, "crm.read_b", Some(&json!({"n": 2})), true)["valid"],
        true
    );

    // A malformed verify body is a 400.
    let reply = server.post_json("/v1/tokens/verify", None, &json!({"token": 1}));
    assert_eq!(reply.status, 400, "{}", reply.body);

    // The key never reaches the log.
    let pem = std::fs::read_to_string(site.path("signing.pem")).unwrap();
    let secret_line = pem.lines().nth(1).unwrap();
    let log = server.stop();
    assert!(log.contains(&kid), "the kid is logged at start: {log}");
    assert!(!log.contains(secret_line) && !log.contains("PRIVATE KEY"));
}

#[test]
fn expired_tokens_are_rejected_over_http() {
    let site = Site::new("signing_key: signing.pem\ntoken_ttl: 1\n");
    gen_signing(&site);
    let server = site.start();
    let args = json!({"id": 1});
    let decision = server.decide(&read_call("crm.read_contact", &args, "e1"));
    let token = decision["token"].as_str().unwrap();
    // ttl 1 s plus the verifier's 5 s leeway.
    std::thread::sleep(Duration::from_millis(6_500));
    let reply = server.verify(token, "crm.read_contact", Some(&args), true);
    assert_eq!(reply["valid"], false, "{reply}");
    assert_eq!(reply["code"], "expired", "{reply}");
}

#[test]
fn bad_signing_key_is_fatal_and_not_echoed() {
    let site = Site::new("signing_key: signing.pem\n");
    std::fs::write(
        site.path("signing.pem"),
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXNlY3JldA==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    // Private, so that it is refused for its content (a readable key file is refused anyway).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            site.path("signing.pem"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let out = warden(&[
        "serve",
        "--config",
        &site.config(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("signing_key"), "{stderr}");
    assert!(!stderr.contains("c2VjcmV0LXNlY3JldA"), "{stderr}");
}

#[test]
fn audit_log_records_every_decision_and_verifies() {
    let site = Site::new("audit: { dir: audit, key_file: audit.key, max_file_bytes: 2000 }\n");
    gen_audit(&site);
    let server = site.start();
    // Signing is off: no tokens, no JWKS.
    assert_eq!(server.get("/.well-known/jwks.json").status, 404);
    let secret = "do-not-log-me@example.com";
    let mut decisions = 0;
    for i in 0..5 {
        let d = server.decide(&read_call(
            "crm.read_contact",
            &json!({"email": secret, "i": i}),
            "a1",
        ));
        assert!(d.get("token").is_none());
        decisions += 1;
    }
    let d = server.decide(&read_call("send_email", &json!({"to": secret}), "a1"));
    assert_eq!(d["decision"], "deny");
    decisions += 1;
    let batch = server.post_json(
        "/v1/decide/batch",
        None,
        &json!([
            read_call("crm.read_a", &json!({}), "a2"),
            read_call("send_email", &json!({}), "a2")
        ]),
    );
    assert_eq!(batch.status, 200);
    decisions += 2;
    let query = server.post_json(
        "/v1/data/warden/allow",
        None,
        &json!({"input": read_call("crm.read_b", &json!({}), "a3")}),
    );
    assert_eq!(query.status, 200);
    decisions += 1;
    // Every answered decision was written (batch waits for the sync): the head is exported.
    let metrics = server.get("/metrics").text;
    let seq = metrics
        .lines()
        .find(|l| l.starts_with("warden_audit_seq "))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(seq, decisions.to_string(), "{metrics}");
    assert_eq!(server.get("/health/ready").status, 200);
    server.stop();

    let dir = site.path("audit");
    let lines = common::audit_entries(&dir);
    assert_eq!(lines.len(), decisions);
    assert!(
        std::fs::read_dir(&dir).unwrap().count() > 1,
        "max_file_bytes rotates"
    );
    let denied = lines.iter().find(|l| l["decision"] == "deny").unwrap();
    assert_eq!(denied["rule"], "no-exfil");
    assert_eq!(denied["tenant"], "anonymous");
    assert!(
        lines
            .iter()
            .all(|l| l["mac"].is_string() && l["args_hash"].is_string())
    );
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains(secret), "arguments in the audit log");
    }

    let key = site.path("audit.key").display().to_string();
    let dir_s = dir.display().to_string();
    let out = warden(&["audit", "verify", "--key", &key, &dir_s]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("verified {decisions} entries")),
        "{}",
        stdout(&out)
    );

    // A restart continues the chain.
    let server = site.start();
    server.decide(&read_call("crm.read_c", &json!({}), "a4"));
    server.stop();
    let out = warden(&["audit", "verify", "--key", &key, &dir_s]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("verified {} entries", decisions + 1)),
        "{}",
        stdout(&out)
    );
}

#[test]
fn sigkill_under_fsync_always_loses_no_answered_decision() {
    let site = Site::new("audit: { dir: audit, fsync: always }\n");
    let server = site.start();
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let addr = server.addr.clone();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (answered, stop, addr) = (answered.clone(), stop.clone(), addr.clone());
            std::thread::spawn(move || {
                let agent = common::agent();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let principal = format!("p-{t}-{i}");
                    i += 1;
                    let body = json!({"kind": "tool_call", "tool": "crm.read_x", "principal": principal, "args": {"i": i}});
                    let Ok(mut response) = agent
                        .post(&format!("http://{addr}/v1/decide"))
                        .header("content-type", "application/json")
                        .send(body.to_string().as_bytes())
                    else {
                        break; // the daemon is gone
                    };
                    let Ok(text) = response.body_mut().read_to_string() else { break };
                    if response.status().as_u16() == 200
                        && serde_json::from_str::<Value>(&text).is_ok_and(|d| d["decision"] == "allow")
                    {
                        answered.lock().unwrap().push(principal);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 20, "too little load: {}", answered.len());

    let dir = site.path("audit");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let newest = files.last().unwrap().display().to_string();
    let out = warden(&["audit", "recover", &newest]);
    assert!(out.status.success(), "{}", stdout(&out));
    let out = warden(&["audit", "verify", &dir.display().to_string()]);
    assert!(out.status.success(), "{}", stdout(&out));
    let logged: HashSet<String> = common::audit_entries(&dir)
        .iter()
        .filter_map(|l| l["principal"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = answered.iter().filter(|p| !logged.contains(*p)).collect();
    assert!(
        missing.is_empty(),
        "{} answered decisions not in the log: {missing:?}",
        missing.len()
    );
    drop(server);
}

/// The `kid` in a token's header (base64url, no padding).
fn header_kid(token: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let header = token.split('.').next().unwrap();
    let (mut bits, mut acc, mut out) = (0u32, 0u32, Vec::new());
    for c in header.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap();
        acc = (acc << 6) | u32::try_from(v).unwrap();
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap());
        }
    }
    let header: Value = serde_json::from_slice(&out).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

fn jwks_kids(server: &Server) -> Vec<String> {
    let reply = server.get("/.well-known/jwks.json");
    assert_eq!(reply.status, 200, "{}", reply.text);
    let jwks: Value = serde_json::from_str(&reply.text).unwrap();
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    kids.sort();
    kids
}

#[test]
fn signing_key_rotates_on_sighup_and_the_old_key_stays_published_until_its_tokens_expire() {
    let site = Site::new("signing_key: signing.pem\ntoken_ttl: 2\n");
    let kid_a = gen_signing(&site);
    let server = site.start();
    let args = json!({"id": 3});
    let tool = "crm.read_contact";
    let old = server.decide(&read_call(tool, &args, "r1"))["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(header_kid(&old), kid_a);

    // Replace the key file with key B and reload.
    let out = warden(&[
        "keys",
        "gen-signing",
        "--out",
        &site.path("signing.pem").display().to_string(),
        "--force",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kid_b = stdout(&out).trim().to_owned();
    assert_ne!(kid_a, kid_b);
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        let token = server.decide(&read_call(tool, &args, "r1"))["token"]
            .as_str()
            .unwrap()
            .to_owned();
        if header_kid(&token) != kid_a {
            break token;
        }
        assert!(Instant::now() < deadline, "no rotation after SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(header_kid(&new), kid_b);

    // Both keys are published; tokens of either verify.
    let mut both = vec![kid_a.clone(), kid_b.clone()];
    both.sort();
    assert_eq!(jwks_kids(&server), both);
    let reply = server.verify(&old, tool, Some(&args), false);
    assert_eq!(reply["valid"], true, "{reply}");
    let reply = server.verify(&new, tool, Some(&args), false);
    assert_eq!(reply["valid"], true, "{reply}");

    // An invalid key file keeps key B and counts as a reload error, without echoing the key.
    let errors = server.metric(r#"warden_reload_total{result="error"}"#);
    std::fs::write(
        site.path("signing.pem"),
        "-----BEGIN PRIVATE KEY-----\nbm90LWEta2V5LXNlY3JldA==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric(r#"warden_reload_total{result="error"}"#) <= errors {
        assert!(Instant::now() < deadline, "no reload error counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let token = server.decide(&read_call(tool, &args, "r1"))["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(header_kid(&token), kid_b);

    // Once the old key's last token has expired (ttl + leeway), only key B is published.
    let deadline = Instant::now() + Duration::from_secs(60);
    while jwks_kids(&server) != [kid_b.clone()] {
        assert!(Instant::now() < deadline, "old key still published");
        std::thread::sleep(Duration::from_millis(200));
    }
    let reply = server.verify(&old, tool, Some(&args), false);
    assert_eq!(reply["valid"], false, "{reply}");

    let log = server.stop();
    assert!(
        log.contains("signing key rotated") && log.contains(&kid_b),
        "{log}"
    );
    assert!(!log.contains("bm90LWEta2V5LXNlY3JldA") && !log.contains("PRIVATE KEY"));
}

/// A marker that must never reach the audit log (it is only ever part of a query's `input`).
const INPUT_SECRET: &str = "sk-live-NEVER-AUDIT-4f1c9e";

/// `sha256:` + hex SHA-256 of `canonical`, a hand-written RFC 8785 text (independent of the
/// daemon's canonicaliser).
fn hash_of(canonical: &str) -> String {
    warden_proof::sha256_prefixed(canonical.as_bytes())
}

fn assert_no_secret(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains(INPUT_SECRET), "query input in the audit log");
        assert!(!text.contains("alice"), "query input in the audit log");
    }
}

#[test]
fn rego_data_api_queries_are_audited_without_their_input_and_verify() {
    let site = Site::rego("audit: { dir: audit, fsync: always, key_file: audit.key }\n");
    gen_audit(&site);
    let server = site.start();
    let dir = site.path("audit");
    let policies: Value = serde_json::from_str(&server.get("/v1/policies").text).unwrap();
    assert_eq!(policies["policies"][0]["kind"], "rego", "{policies}");
    let digest = policies["policies"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();

    // The client's own key order and spacing: the hash is of the RFC 8785 form.
    let alice = format!(r#"{{ "input": {{ "user": "alice", "api_token": "{INPUT_SECRET}" }} }}"#);
    let alice_hash = hash_of(&format!(
        r#"{{"api_token":"{INPUT_SECRET}","user":"alice"}}"#
    ));
    let bob = format!(r#"{{"input":{{"api_token":"{INPUT_SECRET}","user":"bob"}}}}"#);
    let bob_hash = hash_of(&format!(r#"{{"api_token":"{INPUT_SECRET}","user":"bob"}}"#));
    let both = format!(r#"{{"input":{{"b":true,"a":true,"api_token":"{INPUT_SECRET}"}}}}"#);
    let both_hash = hash_of(&format!(
        r#"{{"a":true,"api_token":"{INPUT_SECRET}","b":true}}"#
    ));
    // Deeper than the Rego input limit (100): refused before evaluation, as a limit.
    let deep_input = format!("{}1{}", "[".repeat(110), "]".repeat(110));
    let deep = format!(r#"{{"input":{deep_input}}}"#);
    let profile = json!({"user": "alice", "token": INPUT_SECRET, "level": 3});

    // (path under /v1/data, body, answer (null: 500 `evaluation_error`), decision, args_hash)
    let none = json!(null);
    let cases: Vec<(&str, &str, Value, &str, Option<&str>)> = vec![
        (
            "authz/allow",
            &alice,
            json!({"result": true}),
            "allow",
            Some(&alice_hash),
        ),
        (
            "authz/allow",
            &bob,
            json!({"result": false}),
            "deny",
            Some(&bob_hash),
        ),
        ("authz/root", &alice, json!({}), "deny", Some(&alice_hash)),
        (
            "authz/nothing_here",
            &bob,
            json!({}),
            "deny",
            Some(&bob_hash),
        ),
        (
            "authz/profile",
            &alice,
            json!({"result": profile}),
            "value",
            Some(&alice_hash),
        ),
        // No input: OPA's answer, with its warning.
        (
            "authz/allow",
            "",
            json!({"result": false, "warning": {
                "code": "api_usage_warning",
                "message": "'input' key missing from the request"
            }}),
            "deny",
            None,
        ),
        ("authz/pick", &both, none, "error", Some(&both_hash)),
    ];
    for (i, (path, body, answer, _, _)) in cases.iter().enumerate() {
        let reply = server.post_raw(&format!("/v1/data/{path}"), body);
        let got = &reply.body;
        if answer.is_null() {
            assert_eq!(reply.status, 500, "{path}: {got}");
            // OPA's error body on OPA's route.
            assert_eq!(got["code"], "internal_error", "{got}");
        } else {
            assert_eq!((reply.status, got), (200, answer), "{path}");
        }
        // `fsync: always`: answered only once the entry is written (and synced).
        assert_eq!(
            common::audit_entries(&dir).len(),
            i + 1,
            "{path}: answered before audited"
        );
    }
    // A path that is not a Rego reference, or an input nested deeper than the evaluation limit,
    // is a bad request: nothing evaluated, nothing audited.
    assert_eq!(
        server.post_raw("/v1/data/authz/no-such", &alice).status,
        400
    );
    assert_eq!(server.post_raw("/v1/data/authz/allow", &deep).status, 400);
    server.stop();

    let lines = common::audit_entries(&dir);
    assert_eq!(lines.len(), cases.len());
    let mac = warden_proof::SoftwareKeyProvider::mac_only(
        warden_proof::MacKey::from_hex(&warden_proof::SecretString::from(
            std::fs::read_to_string(site.path("audit.key")).unwrap(),
        ))
        .unwrap(),
    );
    for (line, (path, _, _, decision, hash)) in lines.iter().zip(&cases) {
        let rule = format!("data.{}", path.replace('/', "."));
        assert_eq!(line["kind"], "data_query", "{line}");
        assert_eq!(line["rule"], rule.as_str(), "{line}");
        assert_eq!(line["decision"], *decision, "{path}: {line}");
        // With an audit key the log holds the keyed form of the plain hash.
        let keyed = hash.map(|h| warden_audit::keyed_args_hash(&mac, h).unwrap());
        assert_eq!(line["args_hash"], json!(keyed), "{path}: {line}");
        assert_eq!(line["tool"], Value::Null, "{line}");
        assert_eq!(line["principal"], Value::Null, "{line}");
        assert_eq!(line["session"], Value::Null, "{line}");
        assert_eq!(line["tenant"], "anonymous", "{line}");
        assert_eq!(line["policy"], digest.as_str(), "{line}");
        assert_eq!(line["findings"], json!([]), "{line}");
        assert!(
            line["mac"].is_string() && line["latency_us"].is_u64(),
            "{line}"
        );
    }
    assert_no_secret(&dir);

    let key = site.path("audit.key").display().to_string();
    let dir_s = dir.display().to_string();
    let out = warden(&["audit", "verify", "--key", &key, &dir_s]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("verified {} entries", cases.len())),
        "{}",
        stdout(&out)
    );
}

#[test]
fn rego_data_api_fails_closed_when_the_audit_log_fails() {
    // One entry per file: every append after the first creates a file, which fails once the
    // directory is gone, and stops the writer.
    let site = Site::rego("audit: { dir: audit, fsync: always, max_file_bytes: 1 }\n");
    let server = site.start();
    let alice = format!(r#"{{"input":{{"user":"alice","api_token":"{INPUT_SECRET}"}}}}"#);
    let reply = server.post_raw("/v1/data/authz/allow", &alice);
    assert_eq!((reply.status, &reply.body), (200, &json!({"result": true})));
    assert_eq!(common::audit_entries(&site.path("audit")).len(), 1);

    std::fs::remove_dir_all(site.path("audit")).unwrap();
    for _ in 0..2 {
        let reply = server.post_raw("/v1/data/authz/allow", &alice);
        let body = &reply.body;
        assert_eq!(reply.status, 500, "an unaudited query was answered: {body}");
        assert!(body.get("result").is_none(), "{body}");
        assert_eq!(body["code"], "internal_error", "{body}");
    }
    assert_eq!(server.get("/health/ready").status, 503);
}
