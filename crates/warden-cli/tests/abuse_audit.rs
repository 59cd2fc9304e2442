#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Abuse suite for the audit log, signed decisions and keys (issue 22, items 4, 5, 8 and 10):
//! each test replays what an attacker or an unlucky operator did against the real `warden`
//! binary (`warden serve`, `warden audit verify`, `warden keys`, `warden token`) and checks
//! that it no longer works.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::serve::Server;
use common::{SUPPORT_AGENT, WARDEN};

/// A directory with a policy folder and a config file (anonymous access to `support-agent`,
/// sessions in memory, no rate limit, no file watching) plus `extra` configuration.
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

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> String {
        self.path("warden.yaml").display().to_string()
    }

    fn start(&self) -> Server {
        let config = self.config();
        let base = ["--config", config.as_str(), "--listen", "127.0.0.1:0"];
        Server::spawn(&base, &self.path("port"), &self.path("serve.log"))
    }

    /// Starts `warden serve` expecting it to refuse: waits for it to exit (failing if it starts
    /// listening instead) and returns its exit code and log.
    fn refused_start(&self, name: &str) -> (i32, String) {
        let port = self.path(&format!("{name}.port"));
        let log = self.path(&format!("{name}.log"));
        let mut child = Command::new(WARDEN)
            .args([
                "serve",
                "--config",
                &self.config(),
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--port-file")
            .arg(&port)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (
                    status.code().unwrap_or(-1),
                    std::fs::read_to_string(&log).unwrap(),
                );
            }
            if port.exists() || Instant::now() >= deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!(
                    "`warden serve` started where it must refuse: {}",
                    std::fs::read_to_string(&log).unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn gen_key(&self, kind: &str, name: &str) {
        let out = warden(&[
            "keys",
            kind,
            "--out",
            &self.path(name).display().to_string(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }
}

fn warden(args: &[&str]) -> Output {
    Command::new(WARDEN).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn call(tool: &str, args: &Value, session: &str) -> Value {
    json!({"kind": "tool_call", "tool": tool, "args": args, "session": session, "principal": "alice"})
}

fn decide(server: &Server, body: &Value) -> Value {
    let reply = server.post_json("/v1/decide", None, body);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

fn newest(dir: &Path) -> PathBuf {
    common::audit_files(dir).pop().expect("no audit file")
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `PYTHONPATH` as `scripts/test` exports it, plus the workspace's `.ci/.pydeps` when present.
fn pythonpath() -> String {
    let mut parts: Vec<String> = std::env::var("PYTHONPATH")
        .ok()
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/.pydeps");
    if local.is_dir() {
        parts.push(local.to_string_lossy().into_owned());
    }
    parts.join(":")
}

// ---------------------------------------------------------------------------------------------
// Item 4: two writers on one audit log.

#[test]
fn item4_a_second_writer_on_one_audit_directory_refuses_to_start() {
    let site = Site::new("audit: { dir: audit }\n");
    let first = site.start();
    decide(&first, &call("crm.read_a", &json!({"n": 1}), "s1"));

    let (code, log) = site.refused_start("second");
    assert_ne!(code, 0, "{log}");
    let dir = s(&site.path("audit"));
    assert!(
        log.contains(&dir) && log.contains("in use by another writer"),
        "the refusal must name the directory: {log}"
    );

    // Nor may `warden audit recover` cut the running writer's newest file.
    let newest_file = s(&newest(&site.path("audit")));
    let out = warden(&["audit", "recover", &newest_file]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("in use by another writer"),
        "{}",
        text(&out)
    );

    // The first writer is undisturbed, and once it has stopped the directory is free.
    decide(&first, &call("crm.read_b", &json!({"n": 2}), "s1"));
    first.stop();
    let again = site.start();
    decide(&again, &call("crm.read_c", &json!({"n": 3}), "s1"));
    again.stop();
    let out = warden(&["audit", "recover", &newest_file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = warden(&["audit", "verify", &dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("verified 3 entries"), "{}", text(&out));
}

// ---------------------------------------------------------------------------------------------
// Item 5 (and item 10, "deleting audit entries survives even the HMAC key"): checkpoints.

/// Removes the last `n` lines of `file`.
fn cut_lines(file: &Path, n: usize) {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let keep = lines.len() - n;
    let mut out = lines[..keep].join("\n");
    out.push('\n');
    std::fs::write(file, out).unwrap();
}

#[test]
fn item5_checkpoints_expose_and_refuse_a_truncated_log() {
    let site = Site::new(
        "signing_key: signing.pem\n\
         audit: { dir: audit, key_file: audit.key, checkpoint_interval_ms: 100 }\n",
    );
    site.gen_key("gen-signing", "signing.pem");
    site.gen_key("gen-audit", "audit.key");
    let server = site.start();
    for i in 0..6 {
        decide(&server, &call("crm.read_x", &json!({ "i": i }), "s1"));
    }

    // The endpoint answers a fresh checkpoint, MACed and signed.
    let reply = server.get("/v1/audit/checkpoint");
    assert_eq!(reply.status, 200, "{}", reply.text);
    let cp = reply.body.clone();
    assert_eq!(cp["seq"], 6, "{cp}");
    let head = cp["head"].as_str().unwrap().to_owned();
    assert!(head.starts_with("sha256:"), "{cp}");
    assert!(cp["mac"].is_string() && cp["sig"].is_string(), "{cp}");
    std::fs::write(site.path("cp.json"), &reply.text).unwrap();
    std::fs::write(
        site.path("jwks.json"),
        server.get("/.well-known/jwks.json").text,
    )
    .unwrap();

    // The metrics carry the head hash, not only the sequence number.
    let metrics = server.get("/metrics").text;
    assert!(
        metrics.contains(&format!("warden_audit_head{{hash=\"{head}\"}} 6")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("warden_audit_checkpoint{{hash=\"{head}\"}} 6")),
        "{metrics}"
    );

    // The scheduled checkpoint reaches the file in the audit directory.
    decide(&server, &call("crm.read_x", &json!({"i": 6}), "s1"));
    let cp_file = site.path("audit").join("checkpoint.json");
    server.wait_for("a scheduled checkpoint of entry 7", |_| {
        std::fs::read(&cp_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["seq"] == 7)
    });

    // verify against the daemon's URL, with the MAC and the signature checked.
    let dir = s(&site.path("audit"));
    let key = s(&site.path("audit.key"));
    let jwks = s(&site.path("jwks.json"));
    let url = server.url("/v1/audit/checkpoint");
    let out = warden(&[
        "audit",
        "verify",
        "--key",
        &key,
        "--jwks",
        &jwks,
        "--checkpoint",
        &url,
        &dir,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("MAC and signature verified"),
        "{}",
        text(&out)
    );

    // The shutdown line carries the head hash.
    let log = server.stop();
    let stopped = log
        .lines()
        .find(|l| l.contains("\"stopped\""))
        .unwrap_or_else(|| panic!("no shutdown line: {log}"));
    let stopped: Value = serde_json::from_str(stopped).unwrap();
    assert_eq!(stopped["audit_seq"], 7, "{stopped}");
    assert!(
        stopped["audit_hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("sha256:")),
        "{stopped}"
    );

    // An attacker deletes the newest two entries: the directory's own checkpoint reveals it,
    let cp = s(&site.path("cp.json"));
    let out = warden(&["audit", "verify", "--key", &key, "--checkpoint", &cp, &dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    cut_lines(&newest(&site.path("audit")), 2);
    let out = warden(&["audit", "verify", "--key", &key, &dir]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("truncated"), "{}", text(&out));
    // and so does a checkpoint kept elsewhere (which survives the local one being deleted),
    let out = warden(&["audit", "verify", "--key", &key, "--checkpoint", &cp, &dir]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("truncated"), "{}", text(&out));
    // and the daemon refuses to continue the shortened chain.
    let (code, log) = site.refused_start("cut");
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("shorter than its checkpoint"), "{log}");

    // A checkpoint rolled back by hand does not verify with the audit key.
    let cp_path = site.path("audit").join("checkpoint.json");
    let mut forged: Value = serde_json::from_slice(&std::fs::read(&cp_path).unwrap()).unwrap();
    forged["seq"] = json!(5);
    std::fs::write(&cp_path, forged.to_string()).unwrap();
    let (code, log) = site.refused_start("forged");
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("does not verify"), "{log}");

    // An emptied directory does not start a new chain either.
    std::fs::write(&cp_path, std::fs::read(site.path("cp.json")).unwrap()).unwrap();
    for f in common::audit_files(&site.path("audit")) {
        std::fs::remove_file(f).unwrap();
    }
    let (code, log) = site.refused_start("emptied");
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("shorter than its checkpoint"), "{log}");

    // verify on an empty or missing log fails unless that is expected.
    let empty = site.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = warden(&["audit", "verify", &s(&empty)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--allow-empty"), "{}", text(&out));
    let out = warden(&["audit", "verify", "--allow-empty", &s(&empty)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let missing = s(&site.path("missing"));
    let out = warden(&["audit", "verify", &missing]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let out = warden(&["audit", "verify", "--allow-empty", &missing]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Against a checkpoint, an empty log is truncated whatever --allow-empty says.
    let out = warden(&[
        "audit",
        "verify",
        "--allow-empty",
        "--checkpoint",
        &cp,
        &dir,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

// ---------------------------------------------------------------------------------------------
// Item 8: private audit files, keyed args_hash, PKCS#8 v1 signing keys.

/// A PKCS#8 v2 (RFC 5958, public key included) Ed25519 key, as earlier versions of
/// `warden keys gen-signing` wrote it, and its key id.
const V2_PEM: &str = "-----BEGIN PRIVATE KEY-----
MFECAQEwBQYDK2VwBCIEIIbPuVfbY1N993VdjtFErTKyXUam8pVtKxIOSguBSlRT
gSEA0aPBpPNCBAM+KR9YBG3/EzK29QTjUSXtLrJj/O+JCCc=
-----END PRIVATE KEY-----
";
const V2_KID: &str = "NWostNOhitq7yBx2KfQNexdCxoGuZs0epKsl1-5oCuo";

#[test]
fn item8_audit_files_are_private_and_args_hash_is_keyed() {
    let site = Site::new("signing_key: signing.pem\naudit: { dir: audit, key_file: audit.key }\n");
    site.gen_key("gen-signing", "signing.pem");
    site.gen_key("gen-audit", "audit.key");
    let server = site.start();
    // A low-entropy argument: a plain hash of it is reversed by trying all 10,000 PINs.
    let args = json!({"pin": "1234"});
    let decision = decide(&server, &call("crm.read_pin", &args, "s1"));
    let token = decision["token"].as_str().unwrap().to_owned();
    let claims = server.post_json(
        "/v1/tokens/verify",
        None,
        &json!({"token": token, "tool": "crm.read_pin", "args": args}),
    );
    assert_eq!(claims.body["valid"], true, "{}", claims.text);
    let plain = claims.body["claims"]["args_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        plain,
        warden_proof::args_hash(&args).unwrap(),
        "tokens keep the plain hash their verifiers need"
    );
    server.stop();

    let dir = site.path("audit");
    assert_eq!(mode(&dir), 0o700, "audit directory");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{} is readable by others", p.display());
    }
    let log = std::fs::read_to_string(newest(&dir)).unwrap();
    assert!(!log.contains(&plain), "plain args_hash in the audit log");
    let entry: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    let keyed = entry["args_hash"].as_str().unwrap();
    assert!(keyed.starts_with("hmac-sha256:"), "{entry}");
    // Whoever holds the audit key links the token to its entry.
    let key = warden_proof::MacKey::from_hex(&warden_proof::SecretString::from(
        std::fs::read_to_string(site.path("audit.key")).unwrap(),
    ))
    .unwrap();
    let provider = warden_proof::SoftwareKeyProvider::mac_only(key);
    assert_eq!(
        warden_audit::keyed_args_hash(&provider, &plain).unwrap(),
        keyed
    );
    let out = warden(&[
        "audit",
        "verify",
        "--key",
        &s(&site.path("audit.key")),
        &s(&dir),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn item8_signing_keys_are_pkcs8_v1_for_openssl_and_python_and_v2_still_reads() {
    let site = Site::new("");
    site.gen_key("gen-signing", "signing.pem");
    let pem = site.path("signing.pem");
    let out = warden(&["keys", "jwks", &s(&pem)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let jwks: Value = serde_json::from_slice(&out.stdout).unwrap();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();

    // OpenSSL 3 reads it.
    let out = Command::new("openssl")
        .args(["pkey", "-in", &s(&pem), "-pubout", "-outform", "DER"])
        .output()
        .unwrap_or_else(|e| panic!("openssl is required for this test: {e}"));
    assert!(out.status.success(), "openssl: {}", text(&out));
    // SubjectPublicKeyInfo of an Ed25519 key: 12 bytes of header, then the 32-byte key.
    let openssl_hex: String = out.stdout[out.stdout.len() - 32..]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    // Python `cryptography` reads it too, and all three agree on the public key.
    let script = "import sys, base64\n\
        try:\n    from cryptography.hazmat.primitives import serialization\n\
        except ImportError as e:\n    print(f'MISSING: {e}'); sys.exit(3)\n\
        k = serialization.load_pem_private_key(open(sys.argv[1], 'rb').read(), password=None)\n\
        raw = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)\n\
        print(base64.urlsafe_b64encode(raw).decode().rstrip('='), raw.hex())\n";
    let out = Command::new("python3")
        .args(["-c", script, &s(&pem)])
        .env("PYTHONPATH", pythonpath())
        .output()
        .unwrap_or_else(|e| panic!("python3 is required for this test: {e}"));
    assert_ne!(
        out.status.code(),
        Some(3),
        "Python `cryptography` not installed: run `python3 -m pip install --target .ci/.pydeps \
         pyjwt cryptography` (as scripts/test does) or set PYTHONPATH: {}",
        text(&out)
    );
    assert!(out.status.success(), "python: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{x} {openssl_hex}")
    );

    // A v2 key written by an earlier version still loads, in the CLI and in the daemon.
    let v2 = site.path("v2.pem");
    std::fs::write(&v2, V2_PEM).unwrap();
    chmod(&v2, 0o600);
    let out = warden(&["keys", "jwks", &s(&v2)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let jwks: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], V2_KID);
    let site = Site::new("signing_key: v2.pem\n");
    std::fs::write(site.path("v2.pem"), V2_PEM).unwrap();
    chmod(&site.path("v2.pem"), 0o600);
    let server = site.start();
    let jwks = server.get("/.well-known/jwks.json");
    assert_eq!(jwks.body["keys"][0]["kid"], V2_KID, "{}", jwks.text);
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// Item 10: signed decisions and the audit log.

#[test]
fn item10_integers_beyond_2_pow_53_get_no_token_and_no_decision() {
    let site = Site::new("signing_key: signing.pem\n");
    site.gen_key("gen-signing", "signing.pem");
    let server = site.start();

    // 2^53 + 1 reads as 2^53 in RFC 8785: a token for one would verify for the other.
    for big in [
        "9007199254740993",
        "9007199254740992",
        "-9007199254740993",
        "1e300",
    ] {
        let body = format!(
            r#"{{"kind":"tool_call","tool":"crm.read_account","session":"big","args":{{"n":[1,{{"account":{big}}}]}}}}"#
        );
        let reply = server.post_raw("/v1/decide", &body);
        assert_eq!(reply.status, 400, "{big}: {}", reply.text);
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("2^53") && message.contains("/n/1/account"),
            "{big}: {message}"
        );
    }
    // The refused read changed nothing: the session has no `pii` taint, so email is allowed.
    let email = decide(
        &server,
        &call("send_email", &json!({"to": "a@b.test"}), "big"),
    );
    assert_eq!(email["decision"], "allow", "{email}");

    // The largest exact integer still works; a verifier refuses the inexact one next to it.
    let safe = json!({"account": 9_007_199_254_740_991_u64});
    let decision = decide(&server, &call("crm.read_account", &safe, "ok"));
    let token = decision["token"].as_str().unwrap().to_owned();
    let reply = server.post_json(
        "/v1/tokens/verify",
        None,
        &json!({"token": token, "tool": "crm.read_account", "args": safe}),
    );
    assert_eq!(reply.body["valid"], true, "{}", reply.text);
    let reply = server.post_raw(
        "/v1/tokens/verify",
        &format!(
            r#"{{"token":"{token}","tool":"crm.read_account","args":{{"account":9007199254740993}}}}"#
        ),
    );
    assert_eq!(reply.body["valid"], false, "{}", reply.text);
    assert_eq!(reply.body["code"], "unsafe_number", "{}", reply.text);

    // `warden token verify` refuses it the same way.
    std::fs::write(
        site.path("jwks.json"),
        server.get("/.well-known/jwks.json").text,
    )
    .unwrap();
    std::fs::write(site.path("big.json"), r#"{"account":9007199254740993}"#).unwrap();
    let out = warden(&[
        "token",
        "verify",
        "--jwks",
        &s(&site.path("jwks.json")),
        "--args",
        &s(&site.path("big.json")),
        &token,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("2^53"), "{}", text(&out));
    server.stop();
}

/// `warden keys create`; returns the key.
fn create_key(site: &Site, tenant: &str) -> String {
    let out = warden(&[
        "keys",
        "create",
        "--tenant",
        tenant,
        "--policy",
        "support-agent",
        "--config",
        &site.config(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn item10_tokens_are_bound_to_tenant_and_policy_with_replay_state_per_tenant() {
    let site = Site::new("signing_key: signing.pem\n");
    site.gen_key("gen-signing", "signing.pem");
    let acme = create_key(&site, "acme");
    let globex = create_key(&site, "globex");
    let server = site.start();

    let args = json!({"id": 1});
    let reply = server.post_json(
        "/v1/decide",
        Some(&acme),
        &call("crm.read_contact", &args, "s1"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let token = reply.body["token"].as_str().unwrap().to_owned();
    let body = |consume: bool| json!({"token": token, "tool": "crm.read_contact", "args": args, "consume": consume});

    // Tenant B (and an anonymous caller) cannot verify, let alone consume, tenant A's token.
    for (who, key) in [("globex", Some(globex.as_str())), ("anonymous", None)] {
        let reply = server.post_json("/v1/tokens/verify", key, &body(true));
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.body["valid"], false, "{who}: {}", reply.text);
        assert_eq!(reply.body["code"], "audience", "{who}: {}", reply.text);
    }
    // Tenant A's own verifier accepts it once: B's attempts did not burn it.
    let reply = server.post_json("/v1/tokens/verify", Some(&acme), &body(true));
    assert_eq!(reply.body["valid"], true, "{}", reply.text);
    assert_eq!(reply.body["claims"]["aud"], "acme/support-agent");
    let reply = server.post_json("/v1/tokens/verify", Some(&acme), &body(true));
    assert_eq!(reply.body["code"], "replayed", "{}", reply.text);

    // The CLI checks the audience when asked to.
    std::fs::write(
        site.path("jwks.json"),
        server.get("/.well-known/jwks.json").text,
    )
    .unwrap();
    std::fs::write(site.path("args.json"), args.to_string()).unwrap();
    let verify = |aud: &str| {
        warden(&[
            "token",
            "verify",
            "--jwks",
            &s(&site.path("jwks.json")),
            "--args",
            &s(&site.path("args.json")),
            "--audience",
            aud,
            &token,
        ])
    };
    assert_eq!(verify("acme/support-agent").status.code(), Some(0));
    let out = verify("globex/support-agent");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("audience"), "{}", text(&out));
    server.stop();
}

#[test]
fn item10_tail_recovery_never_drops_a_complete_entry_and_logs_what_it_removes() {
    let site = Site::new("audit: { dir: audit, key_file: audit.key, fsync: always }\n");
    site.gen_key("gen-audit", "audit.key");
    let key = s(&site.path("audit.key"));
    let dir = site.path("audit");
    let server = site.start();
    for i in 0..3 {
        decide(&server, &call("crm.read_x", &json!({ "i": i }), "s1"));
    }
    server.stop();

    // The last entry loses only its final newline: recovery completes it, never drops it.
    let file = newest(&dir);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 1]).unwrap();
    let server = site.start();
    decide(&server, &call("crm.read_x", &json!({"i": 3}), "s1"));
    let log = server.stop();
    assert!(log.contains("lacked its final newline"), "{log}");
    let out = warden(&["audit", "verify", "--key", &key, &s(&dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("verified 4 entries"), "{}", text(&out));

    // A torn partial line is removed, and the log says what was removed.
    let mut bytes = std::fs::read(&file).unwrap();
    let len = bytes.len();
    bytes.extend_from_slice(br#"{"args_hash":null,"decision":"al"#);
    std::fs::write(&file, &bytes).unwrap();
    let server = site.start();
    let log = server.stop();
    let line = log
        .lines()
        .find(|l| l.contains("removed a partial last line"))
        .unwrap_or_else(|| panic!("recovery not logged: {log}"));
    let line: Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["removed_bytes"], 32, "{line}");
    assert_eq!(line["offset"], len, "{line}");
    assert!(
        line["removed_sha256"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let out = warden(&["audit", "verify", "--key", &key, &s(&dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("verified 4 entries"), "{}", text(&out));
}

#[test]
fn item10_key_files_are_written_0600_and_readable_key_files_are_refused() {
    let site = Site::new("signing_key: signing.pem\naudit: { dir: audit, key_file: audit.key }\n");
    // --force over an existing world-readable file still leaves 0600.
    for (kind, name) in [("gen-signing", "signing.pem"), ("gen-audit", "audit.key")] {
        let path = site.path(name);
        std::fs::write(&path, "old").unwrap();
        chmod(&path, 0o644);
        let out = warden(&["keys", kind, "--force", "--out", &s(&path)]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert_eq!(mode(&path), 0o600, "{name} after --force");
        assert_ne!(std::fs::read_to_string(&path).unwrap(), "old");
    }
    let server = site.start();
    server.stop();

    // The daemon refuses key files the group or others can read, naming the file.
    for (name, mode) in [("signing.pem", 0o640), ("audit.key", 0o604)] {
        let path = site.path(name);
        chmod(&path, mode);
        let (code, log) = site.refused_start(name);
        assert_ne!(code, 0, "{log}");
        assert!(
            log.contains(&s(&path)) && log.contains("group or others"),
            "{name}: {log}"
        );
        chmod(&path, 0o600);
    }
}

#[test]
fn item10_every_token_minted_verifies_whatever_the_session_length() {
    // Identifiers this long are refused by default (256 bytes): raised here so that the token
    // limits themselves are what is tested.
    let site = Site::new("signing_key: signing.pem\nmax_identifier_bytes: 20000\n");
    site.gen_key("gen-signing", "signing.pem");
    let server = site.start();
    for len in [6_000, 13_000] {
        let session = "s".repeat(len);
        let args = json!({"id": 1});
        let reply = server.post_json("/v1/decide", None, &call("crm.read_a", &args, &session));
        match reply.status {
            // Minted: Warden's own verifier must accept it.
            200 => {
                let token = reply.body["token"].as_str().unwrap();
                let verdict = server.post_json(
                    "/v1/tokens/verify",
                    None,
                    &json!({"token": token, "tool": "crm.read_a", "args": args}),
                );
                assert_eq!(verdict.body["valid"], true, "{len}: {}", verdict.text);
            }
            // Refused before deciding, naming the limit.
            400 => {
                let message = reply.body["error"]["message"].as_str().unwrap();
                assert!(message.contains("limit"), "{len}: {message}");
            }
            other => panic!("{len}: {other} {}", reply.text),
        }
    }
    server.stop();
}

/// Rewrites the last line of the newest audit file with `f`, then recomputes its `hash` the way
/// anybody can (no key needed), so that only the form is wrong.
fn rewrite_last_line(dir: &Path, f: impl Fn(&str) -> String) {
    let file = newest(dir);
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let changed = f(&lines.pop().unwrap());
    let entry: Value = serde_json::from_str(&changed).unwrap();
    let hash = entry["hash"].as_str().unwrap();
    let without = changed.replacen(&format!(",\"hash\":\"{hash}\""), "", 1);
    let new_hash = warden_proof::sha256_prefixed(without.as_bytes());
    lines.push(changed.replacen(hash, &new_hash, 1));
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(&file, out).unwrap();
}

#[test]
fn item10_verify_accepts_only_the_canonical_form() {
    let site = Site::new("audit: { dir: audit, key_file: audit.key }\n");
    site.gen_key("gen-audit", "audit.key");
    let server = site.start();
    for i in 0..3 {
        decide(&server, &call("crm.read_x", &json!({ "i": i }), "s1"));
    }
    server.stop();
    let dir = site.path("audit");
    let key = s(&site.path("audit.key"));
    let original = std::fs::read(newest(&dir)).unwrap();
    let verify = || warden(&["audit", "verify", "--key", &key, &s(&dir)]);
    assert_eq!(verify().status.code(), Some(0));

    // The `hash` member moved to the end: the hash over the rest is unchanged.
    rewrite_last_line(&dir, |line| {
        let entry: Value = serde_json::from_str(line).unwrap();
        let member = format!(",\"hash\":\"{}\"", entry["hash"].as_str().unwrap());
        let moved = line.replacen(&member, "", 1);
        format!("{}{member}}}", &moved[..moved.len() - 1])
    });
    let out = verify();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("canonical"), "{}", text(&out));

    // An upper-case MAC decodes to the same tag; the hash is recomputed to match it.
    std::fs::write(newest(&dir), &original).unwrap();
    rewrite_last_line(&dir, |line| {
        let entry: Value = serde_json::from_str(line).unwrap();
        let mac = entry["mac"].as_str().unwrap();
        line.replacen(mac, &mac.to_uppercase(), 1)
    });
    let out = verify();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("lowercase"), "{}", text(&out));
}
