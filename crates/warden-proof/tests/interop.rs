//! Interoperability: Warden's tokens verified by independent JOSE libraries, PyJWT (PyPI) and
//! `jose` (npm). `scripts/test` installs them (into `.ci/.pydeps` and `.ci/.npm`); a missing library
//! fails the test with the command that installs it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use warden_proof::{Ed25519Key, Grant, KeyProvider, SoftwareKeyProvider, TokenIssuer};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `PYTHONPATH` as `scripts/test` exports it, else the workspace's `.ci/.pydeps` when present.
fn pythonpath() -> String {
    let mut parts: Vec<String> = std::env::var("PYTHONPATH")
        .ok()
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let local = workspace().join(".ci/.pydeps");
    if local.is_dir() {
        parts.push(local.to_string_lossy().into_owned());
    }
    parts.join(":")
}

fn node_path() -> String {
    let mut parts: Vec<String> = std::env::var("NODE_PATH")
        .ok()
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let local = workspace().join(".ci/.npm/node_modules");
    if local.is_dir() {
        parts.push(local.to_string_lossy().into_owned());
    }
    parts.join(":")
}

struct Case {
    dir: tempfile::TempDir,
    audience: Option<String>,
}

impl Case {
    fn new(jwks: &Value, token: &str, args: &Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
        std::fs::write(dir.path().join("token"), token).unwrap();
        std::fs::write(dir.path().join("args.json"), args.to_string()).unwrap();
        Self {
            dir,
            audience: None,
        }
    }

    /// Both verifiers require this audience.
    fn with_audience(mut self, audience: &str) -> Self {
        self.audience = Some(audience.to_owned());
        self
    }

    fn args(&self, tool: &str, at: u64) -> Vec<String> {
        let p = |n: &str| self.dir.path().join(n).to_string_lossy().into_owned();
        let mut args = vec![
            p("jwks.json"),
            p("token"),
            p("args.json"),
            tool.into(),
            at.to_string(),
        ];
        args.extend(self.audience.clone());
        args
    }

    fn pyjwt(&self, tool: &str, at: u64) -> (i32, String) {
        let out = Command::new("python3")
            .arg(script("verify_pyjwt.py"))
            .args(self.args(tool, at))
            .env("PYTHONPATH", pythonpath())
            .output()
            .unwrap_or_else(|e| panic!("python3 is required for the PyJWT interop test: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let code = out.status.code().unwrap();
        assert_ne!(
            code, 3,
            "PyJWT/cryptography not installed: run `python3 -m pip install --target .ci/.pydeps \
             pyjwt cryptography` (as scripts/test does) or set PYTHONPATH: {text}"
        );
        (code, text)
    }

    fn jose(&self, tool: &str, at: u64) -> (i32, String) {
        let out = Command::new("node")
            .arg(script("verify_jose.mjs"))
            .args(self.args(tool, at))
            .env("NODE_PATH", node_path())
            .output()
            .unwrap_or_else(|e| panic!("node is required for the jose interop test: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let code = out.status.code().unwrap();
        assert_ne!(
            code, 3,
            "npm `jose` not installed: run `npm install --prefix .ci/.npm jose` (as scripts/test \
             does) or set NODE_PATH: {text}"
        );
        (code, text)
    }

    /// Both libraries agree: valid (0) or rejected (1).
    fn expect(&self, tool: &str, at: u64, valid: bool) -> String {
        let (py, py_text) = self.pyjwt(tool, at);
        let (js, js_text) = self.jose(tool, at);
        let want = if valid { 0 } else { 1 };
        assert_eq!(py, want, "PyJWT: {py_text}");
        assert_eq!(js, want, "jose: {js_text}");
        format!("{py_text}\n{js_text}")
    }
}

fn args() -> Value {
    json!({"to": "alice@corp.test", "subject": "Grüße", "attachments": [1, 2, {"b": true, "a": null}]})
}

fn setup() -> (Arc<SoftwareKeyProvider>, TokenIssuer) {
    let p = Arc::new(SoftwareKeyProvider::new(Ed25519Key::generate().unwrap()));
    (p.clone(), TokenIssuer::new(p, "warden-interop"))
}

fn mint(issuer: &TokenIssuer, at: u64) -> String {
    issuer
        .mint(
            &Grant {
                principal: Some("agent-7"),
                session: Some("s-1"),
                tool: "send_email",
                args: &args(),
                policy_digest: "sha256:abcd",
            },
            at,
        )
        .unwrap()
}

#[test]
fn independent_libraries_accept_valid_tokens() {
    let (provider, issuer) = setup();
    let t = now();
    let token = mint(&issuer, t);
    let jwks = serde_json::to_value(provider.jwks(t)).unwrap();
    let out = Case::new(&jwks, &token, &args()).expect("send_email", t, true);
    assert!(
        out.contains("\"sub\": \"agent-7\"") || out.contains("\"sub\":\"agent-7\""),
        "{out}"
    );
}

#[test]
fn independent_libraries_reject_bad_tokens() {
    let (provider, issuer) = setup();
    let t = now();
    let token = mint(&issuer, t);
    let jwks = serde_json::to_value(provider.jwks(t)).unwrap();

    // Other arguments, other tool.
    Case::new(&jwks, &token, &json!({"to": "mallory@evil.test"})).expect("send_email", t, false);
    Case::new(&jwks, &token, &args()).expect("http_post", t, false);

    // A flipped signature byte.
    let (head, sig) = token.rsplit_once('.').unwrap();
    let mut chars: Vec<char> = sig.chars().collect();
    chars[5] = if chars[5] == 'A' { 'B' } else { 'A' };
    let bad = format!("{head}.{}", chars.into_iter().collect::<String>());
    Case::new(&jwks, &bad, &args()).expect("send_email", t, false);

    // Expired (minted 100 s ago, 30 s lifetime).
    let old = mint(&issuer, t - 100);
    Case::new(&jwks, &old, &args()).expect("send_email", t, false);

    // A key set without the signing key (another key under the same kid).
    let (other, _) = setup();
    let mut forged = serde_json::to_value(other.jwks(t)).unwrap();
    forged["keys"][0]["kid"] = jwks["keys"][0]["kid"].clone();
    Case::new(&forged, &token, &args()).expect("send_email", t, false);
}

#[test]
fn independent_libraries_follow_rotation() {
    let (provider, issuer) = setup();
    let t = now();
    let old_token = mint(&issuer, t);
    issuer.rotate(&provider, Ed25519Key::generate().unwrap(), t);
    let new_token = mint(&issuer, t);
    let jwks = serde_json::to_value(provider.jwks(t)).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    Case::new(&jwks, &old_token, &args()).expect("send_email", t, true);
    Case::new(&jwks, &new_token, &args()).expect("send_email", t, true);
}

#[test]
fn independent_libraries_check_the_audience() {
    let (provider, issuer) = setup();
    let t = now();
    let aud = warden_proof::audience("acme", "support-agent");
    let token = issuer
        .mint_for(
            &Grant {
                principal: Some("agent-7"),
                session: Some("s-1"),
                tool: "send_email",
                args: &args(),
                policy_digest: "sha256:abcd",
            },
            Some(&aud),
            t,
        )
        .unwrap();
    let jwks = serde_json::to_value(provider.jwks(t)).unwrap();
    Case::new(&jwks, &token, &args())
        .with_audience(&aud)
        .expect("send_email", t, true);
    Case::new(&jwks, &token, &args())
        .with_audience("globex/support-agent")
        .expect("send_email", t, false);
}
