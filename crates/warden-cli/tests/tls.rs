//! TLS and mutual TLS on `warden serve`, with certificates from `warden certs dev`, through
//! `curl`, PyPI `requests` and `grpcio`: TLS 1.3 only unless 1.2 is configured, plain TCP
//! refused, client certificates required and checked with `client_ca`, and the certificate and
//! the CA bundle rotated without a restart (no failed request under load while it happens).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::serve::Server;
use common::{SUPPORT_AGENT, WARDEN};
use serde_json::Value;

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// Policies, two independent sets of development certificates (`a/`, `b/`) and a
    /// `warden.yaml` with `tls` (`extra` appended to its section).
    fn new(tls_extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pol")).unwrap();
        std::fs::write(dir.path().join("pol/support-agent.yaml"), SUPPORT_AGENT).unwrap();
        for set in ["a", "b"] {
            let out = Command::new(WARDEN)
                .args(["certs", "dev", "--out"])
                .arg(dir.path().join(set))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The files the daemon reads, copied from set `a`.
        for name in ["server.pem", "server.key", "ca.pem"] {
            std::fs::copy(dir.path().join("a").join(name), dir.path().join(name)).unwrap();
        }
        std::fs::write(
            dir.path().join("warden.yaml"),
            format!(
                "policies: pol\nstate: memory\nanonymous_policy: support-agent\nwatch: false\n\
                 tls:\n  cert: server.pem\n  key: server.key\n  reload_interval_ms: 100\n{tls_extra}"
            ),
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start(&self) -> Server {
        let config = self.path("warden.yaml").display().to_string();
        Server::spawn(
            &["--config", config.as_str(), "--listen", "127.0.0.1:0"],
            &self.path("port"),
            &self.path("log"),
        )
    }

    /// Replaces the daemon's files with set `set`'s, each by a rename (as a secret mount does).
    fn rotate(&self, set: &str, names: &[&str]) {
        for name in names {
            let tmp = self.path(&format!("{name}.new"));
            std::fs::copy(self.path(set).join(name), &tmp).unwrap();
            std::fs::rename(&tmp, self.path(name)).unwrap();
        }
    }
}

fn port(server: &Server) -> String {
    server.addr.rsplit(':').next().unwrap().to_owned()
}

/// `curl` to `https://localhost:PORT/health/live` with `args`: the exit code (0 on success).
fn curl(server: &Server, args: &[&str]) -> i32 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "5"])
        .args(args)
        .arg(format!("https://localhost:{}/health/live", port(server)))
        .output()
        .expect("curl is required");
    out.status.code().unwrap_or(-1)
}

fn python(args: &[&str]) -> Value {
    let out: Output = Command::new("python3")
        .arg(common::mcp::root().join("crates/warden-cli/tests/tls/clients.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "requests/grpcio missing? run scripts/test: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The MCP upstream over TLS (tests/tls/mcp_upstream.py) with set `a`'s server certificate;
/// answers it and its port.
fn tls_mcp_upstream(site: &Site) -> (common::mcp::Proc, String) {
    let mut upstream = Command::new("python3")
        .arg(common::mcp::root().join("crates/warden-cli/tests/tls/mcp_upstream.py"))
        .arg(site.path("a/server.pem"))
        .arg(site.path("a/server.key"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(upstream.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    (common::mcp::Proc(upstream), line.trim().to_owned())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn tls_serves_1_3_only_by_default_and_refuses_plain_connections() {
    let site = Site::new("");
    let server = site.start();
    let ca = site.path("a/ca.pem");
    assert_eq!(curl(&server, &["--cacert", s(&ca)]), 0);
    assert_eq!(curl(&server, &["--cacert", s(&ca), "--http2"]), 0);
    assert_ne!(
        curl(&server, &["--cacert", s(&ca), "--tls-max", "1.2"]),
        0,
        "TLS 1.2 refused"
    );
    assert_ne!(
        curl(&server, &[]),
        0,
        "a certificate from no trusted CA is refused by curl"
    );
    // Plain HTTP on the TLS port gets no answer.
    let plain = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{}/health/live", port(&server)),
        ])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    // requests (HTTP/1.1) and grpcio (HTTP/2, ALPN) over TLS.
    let seen = python(&[&format!("127.0.0.1:{}", port(&server)), s(&ca)]);
    assert_eq!(seen["requests"], "allow", "{seen}");
    assert_eq!(seen["grpc_health"], "SERVING", "{seen}");
    drop(server);

    let site = Site::new("  min_version: \"1.2\"\n");
    let server = site.start();
    let ca = site.path("a/ca.pem");
    assert_eq!(
        curl(&server, &["--cacert", s(&ca), "--tls-max", "1.2"]),
        0,
        "TLS 1.2 allowed"
    );
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_bundle_and_its_ca_rotates() {
    let site = Site::new("  client_ca: ca.pem\n");
    let server = site.start();
    let (ca, a, b) = (site.path("a/ca.pem"), site.path("a"), site.path("b"));
    let with = |set: &Path| {
        curl(
            &server,
            &[
                "--cacert",
                s(&ca),
                "--cert",
                s(&set.join("client.pem")),
                "--key",
                s(&set.join("client.key")),
            ],
        )
    };
    assert_eq!(with(&a), 0, "a client certificate from the bundle");
    assert_ne!(
        curl(&server, &["--cacert", s(&ca)]),
        0,
        "no client certificate"
    );
    assert_ne!(with(&b), 0, "a client certificate from another CA");
    let seen = python(&[
        &format!("127.0.0.1:{}", port(&server)),
        s(&ca),
        s(&a.join("client.pem")),
        s(&a.join("client.key")),
    ]);
    assert_eq!(seen["requests"], "allow", "{seen}");
    assert_eq!(seen["grpc_health"], "SERVING", "{seen}");
    let refused = python(&[&format!("127.0.0.1:{}", port(&server)), s(&ca)]);
    assert!(refused["requests"]["error"].is_string(), "{refused}");

    // The CA bundle rotated to set b's: b's clients get in, a's no longer, without a restart.
    site.rotate("b", &["ca.pem"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while with(&b) != 0 {
        assert!(
            Instant::now() < deadline,
            "the new CA bundle was not picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(with(&a), 0);
}

#[test]
fn the_certificate_rotates_under_load_without_a_failed_request() {
    let site = Site::new("");
    let server = site.start();
    // Clients trust both CAs: the rotation itself must cost no request.
    let both = site.path("both.pem");
    let bundle = [
        std::fs::read_to_string(site.path("a/ca.pem")).unwrap(),
        std::fs::read_to_string(site.path("b/ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(&both, bundle).unwrap();
    let address = format!("localhost:{}", port(&server));
    let load = {
        let (address, both) = (address.clone(), both.clone());
        std::thread::spawn(move || python(&["--load", "4", &address, s(&both)]))
    };
    std::thread::sleep(Duration::from_millis(1500));
    site.rotate("b", &["server.key", "server.pem"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let b_ca = site.path("b/ca.pem");
    while curl(&server, &["--cacert", s(&b_ca)]) != 0 {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let a_ca = site.path("a/ca.pem");
    assert_ne!(
        curl(&server, &["--cacert", s(&a_ca)]),
        0,
        "new connections get the new one"
    );
    let seen = load.join().unwrap();
    assert_eq!(seen["failed"], 0, "{seen}");
    assert!(seen["ok"].as_u64().unwrap() > 20, "{seen}");
    // A half-written certificate (a key that does not match) is refused and the current one kept.
    std::fs::copy(site.path("a/server.key"), site.path("server.key")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        curl(&server, &["--cacert", s(&b_ca)]),
        0,
        "the loaded certificate is kept"
    );
    assert!(
        server.log_text().contains("do not load"),
        "{}",
        server.log_text()
    );
}

#[test]
fn a_certificate_that_does_not_load_stops_the_start_naming_the_file() {
    let site = Site::new("");
    std::fs::write(site.path("server.pem"), "not a certificate").unwrap();
    let out = Command::new(WARDEN)
        .args(["serve", "--config"])
        .arg(site.path("warden.yaml"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.pem"));
}

/// An `https://` MCP upstream: verified against the upstream's `ca_file` (its private CA), and
/// refused (502, nothing forwarded) when the certificate chains to nothing trusted: not the
/// system's roots without `ca_file`, not another CA's bundle.
#[test]
fn https_mcp_upstreams_are_verified_against_their_bundle_or_the_system_roots() {
    let site = Site::new("");
    let (_upstream, upstream_port) = tls_mcp_upstream(&site);
    let url = format!("https://localhost:{upstream_port}/mcp");
    std::fs::write(
        site.path("plain.yaml"),
        format!(
            "policies: pol\nstate: memory\nkeys_file: keys.json\nwatch: false\nmcp_upstreams:\n\
             - {{ name: trusted, url: \"{url}\", policy: support-agent, ca_file: a/ca.pem }}\n\
             - {{ name: system, url: \"{url}\", policy: support-agent }}\n\
             - {{ name: other-ca, url: \"{url}\", policy: support-agent, ca_file: b/ca.pem }}\n"
        ),
    )
    .unwrap();
    let config = site.path("plain.yaml").display().to_string();
    let out = Command::new(WARDEN)
        .args([
            "keys",
            "create",
            "--tenant",
            "acme",
            "--policy",
            "support-agent",
        ])
        .args(["--config", config.as_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let server = Server::spawn(
        &["--config", config.as_str(), "--listen", "127.0.0.1:0"],
        &site.path("port"),
        &site.path("log"),
    );
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}})
    .to_string();
    let call = |name: &str| {
        server.request(
            "POST",
            &format!("/mcp/{name}"),
            &[
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("x-api-key", &key),
            ],
            Some(init.as_bytes()),
        )
    };
    let reply = call("trusted");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["result"]["serverInfo"]["name"], "tls-stub");
    for name in ["system", "other-ca"] {
        let reply = call(name);
        assert_eq!(reply.status, 502, "{name}: {}", reply.text);
        assert!(reply.body["result"].is_null(), "{name}: {}", reply.text);
    }
    drop(server);

    // A bundle that does not load stops the start, naming the upstream.
    std::fs::write(
        site.path("bad.yaml"),
        format!(
            "policies: pol\nstate: memory\nkeys_file: keys.json\nmcp_upstreams:\n\
             - {{ name: trusted, url: \"{url}\", policy: support-agent, ca_file: missing.pem }}\n"
        ),
    )
    .unwrap();
    let out = Command::new(WARDEN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(site.path("bad.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("trusted") && stderr.contains("missing.pem"),
        "{stderr}"
    );
}

/// A second development CA and client (`spiffe://warden.local/agent/other`) under `c/`, and
/// `clients.pem` trusting both development CAs for clients; answers `c/`.
fn other_client(site: &Site) -> PathBuf {
    let other = site.path("c");
    let out = Command::new(WARDEN)
        .args([
            "certs",
            "dev",
            "--client-id",
            "spiffe://warden.local/agent/other",
            "--out",
        ])
        .arg(&other)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both development CAs are trusted for clients.
    let bundle = [site.path("a/ca.pem"), other.join("ca.pem")]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    std::fs::write(site.path("clients.pem"), bundle).unwrap();
    other
}

const BY_PRINCIPAL: &str = r#"warden: 1
name: by-principal
default: deny
rules:
  - { id: dev-agents-read, effect: allow, tools: [read], principals: ["spiffe://warden.local/agent/dev"] }
"#;

/// With `tls.identity: principal`, the client certificate's SPIFFE id is the principal of every
/// decision its client asks for: filled in when the request names none, refused when it names
/// another; a client with another certificate is decided as itself.
#[test]
fn the_client_certificate_identity_is_the_principal_when_configured() {
    let site = Site::new("");
    let other = other_client(&site);
    std::fs::write(site.path("pol/by-principal.yaml"), BY_PRINCIPAL).unwrap();
    std::fs::write(
        site.path("warden.yaml"),
        "policies: pol\nstate: memory\nanonymous_policy: by-principal\nwatch: false\n\
         tls:\n  cert: server.pem\n  key: server.key\n  client_ca: clients.pem\n  identity: principal\n",
    )
    .unwrap();
    let server = site.start();
    let ca = site.path("a/ca.pem");
    let decide = |client: &Path, body: &str| -> (u16, Value) {
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "5",
                "-w",
                "\n%{http_code}",
                "--cacert",
                s(&ca),
            ])
            .args(["--cert", s(&client.join("client.pem"))])
            .args(["--key", s(&client.join("client.key"))])
            .args(["-H", "content-type: application/json", "--data", body])
            .arg(format!("https://localhost:{}/v1/decide", port(&server)))
            .output()
            .expect("curl is required");
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (
            status.parse().unwrap(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    };
    let dev = site.path("a");
    let (status, decision) = decide(&dev, r#"{"tool": "read"}"#);
    assert_eq!(
        (status, &decision["decision"]),
        (200, &"allow".into()),
        "{decision}"
    );
    let (status, decision) = decide(
        &dev,
        r#"{"tool": "read", "principal": "spiffe://warden.local/agent/dev"}"#,
    );
    assert_eq!(
        (status, &decision["decision"]),
        (200, &"allow".into()),
        "{decision}"
    );
    // Claiming another principal is refused, naming the field.
    let (status, refused) = decide(&dev, r#"{"tool": "read", "principal": "admin"}"#);
    assert_eq!(status, 400, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("`principal`"), "{message}");
    // The other client is decided as itself, whatever it claims.
    let (status, decision) = decide(&other, r#"{"tool": "read"}"#);
    assert_eq!(
        (status, &decision["decision"]),
        (200, &"deny".into()),
        "{decision}"
    );
    let (status, _) = decide(
        &other,
        r#"{"tool": "read", "principal": "spiffe://warden.local/agent/dev"}"#,
    );
    assert_eq!(status, 400);
    // A batch and OPA's Data API bind each request the same way.
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "--cacert", s(&ca)])
        .args([
            "--cert",
            s(&other.join("client.pem")),
            "--key",
            s(&other.join("client.key")),
        ])
        .args(["-H", "content-type: application/json"])
        .args([
            "--data",
            r#"{"input": {"tool": "read", "principal": "spiffe://warden.local/agent/dev"}}"#,
        ])
        .arg(format!(
            "https://localhost:{}/v1/data/by/allow",
            port(&server)
        ))
        .output()
        .unwrap();
    let refused: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("input.principal"),
        "{refused}"
    );
}

/// With `tls.identity: tenant`, a client without a key is the tenant its certificate names:
/// sessions are that tenant's (a taint set by one client never reaches another), and a key
/// works only from its own tenant's certificate.
#[test]
fn the_client_certificate_identity_is_the_tenant_when_configured() {
    let site = Site::new("");
    let other = other_client(&site);
    std::fs::write(
        site.path("warden.yaml"),
        "policies: pol\nstate: memory\nkeys_file: keys.json\nanonymous_policy: support-agent\n\
         watch: false\ntls:\n  cert: server.pem\n  key: server.key\n  client_ca: clients.pem\n  \
         identity: tenant\n",
    )
    .unwrap();
    let config = site.path("warden.yaml");
    let key_of = |tenant: &str| {
        let out = Command::new(WARDEN)
            .args(["keys", "create", "--tenant", tenant])
            .args(["--policy", "support-agent", "--config", s(&config)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let dev_key = key_of("spiffe://warden.local/agent/dev");
    let acme_key = key_of("acme");
    let server = site.start();
    let ca = site.path("a/ca.pem");
    let decide = |client: &Path, key: Option<&str>, body: &str| -> (u16, Value) {
        let mut curl = Command::new("curl");
        // HTTP/1.1: a refusal answers before reading the body, and over HTTP/2 the server then
        // resets the stream with NO_ERROR (RFC 9113 8.1), which Debian's curl 7.88 sometimes
        // reports as a failed transfer (exit 92) instead of the complete 401 it received.
        curl.args(["-s", "--http1.1", "--max-time", "5", "-w", "\n%{http_code}"])
            .args(["--cacert", s(&ca)])
            .args(["--cert", s(&client.join("client.pem"))])
            .args(["--key", s(&client.join("client.key"))])
            .args(["-H", "content-type: application/json", "--data", body]);
        if let Some(key) = key {
            curl.args(["-H", &format!("x-api-key: {key}")]);
        }
        let out = curl
            .arg(format!("https://localhost:{}/v1/decide", port(&server)))
            .output()
            .expect("curl is required");
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (
            status.parse().unwrap(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    };
    let read = r#"{"session": "s1", "tool": "crm.read_customer", "args": {"id": 7}}"#;
    let send = r#"{"session": "s1", "tool": "send_email", "args": {"to": "a@customer.test"}}"#;
    let dev = site.path("a");
    let (status, decision) = decide(&dev, None, read);
    assert_eq!(
        (status, &decision["decision"]),
        (200, &"allow".into()),
        "{decision}"
    );
    let (status, decision) = decide(&dev, None, send);
    assert_eq!(
        (status, &decision["decision"]),
        (200, &"deny".into()),
        "{decision}"
    );
    // Another certificate is another tenant: same session id, a fresh session.
    let (status, decision) = decide(&other, None, send);
    assert_eq!(
        (status, &decision["decision"]),
        (200, &"allow".into()),
        "{decision}"
    );
    // The key of the dev certificate's tenant works from it, on the same sessions.
    let (status, decision) = decide(&dev, Some(&dev_key), send);
    assert_eq!(
        (status, &decision["decision"]),
        (200, &"deny".into()),
        "{decision}"
    );
    // Another tenant's key, or the dev key from the other certificate: 401.
    assert_eq!(decide(&dev, Some(&acme_key), send).0, 401);
    assert_eq!(decide(&other, Some(&dev_key), send).0, 401);
}

#[test]
fn identity_as_principal_or_tenant_needs_client_certificates() {
    for identity in ["principal", "tenant"] {
        let site = Site::new(&format!("  identity: {identity}\n"));
        let out = Command::new(WARDEN)
            .args([
                "serve",
                "--config",
                s(&site.path("warden.yaml")),
                "--listen",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("tls.identity: `{identity}` needs tls.client_ca")),
            "{stderr}"
        );
    }
}

/// `warden mcp proxy` in front of an `https://` upstream: verified against `--upstream-ca`
/// (502 against another CA's bundle or the system's roots, which do not hold the development
/// CA); `--upstream-ca` with an `http://` upstream is a usage error.
#[test]
fn the_standalone_mcp_proxy_verifies_an_https_upstream_against_its_bundle() {
    let site = Site::new("");
    let (_upstream, upstream_port) = tls_mcp_upstream(&site);
    let url = format!("https://localhost:{upstream_port}/mcp");
    let start = |name: &str, extra: &[&str]| {
        let port_file = site.path(&format!("{name}.port"));
        let child = Command::new(WARDEN)
            .args([
                "mcp",
                "proxy",
                "--memory-pins",
                "--memory-sessions",
                "--policy",
            ])
            .arg(site.path("pol/support-agent.yaml"))
            .args(["--listen", "127.0.0.1:0", "--upstream", &url, "--port-file"])
            .arg(&port_file)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let proc = common::mcp::Proc(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            let addr = std::fs::read_to_string(&port_file).unwrap_or_default();
            if !addr.is_empty() {
                break addr;
            }
            assert!(Instant::now() < deadline, "the proxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        (proc, format!("http://{addr}/mcp"))
    };
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}})
    .to_string();
    let initialize = |proxy: &str| {
        let mut response = common::agent()
            .post(proxy)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .send(init.as_bytes())
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    let ca = site.path("a/ca.pem");
    let (_trusted, trusted) = start("trusted", &["--upstream-ca", s(&ca)]);
    let (status, body) = initialize(&trusted);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("tls-stub"), "{body}");
    let other_ca = site.path("b/ca.pem");
    let (_other, other) = start("other", &["--upstream-ca", s(&other_ca)]);
    assert_eq!(initialize(&other).0, 502);
    let (_system, system) = start("system", &[]);
    assert_eq!(initialize(&system).0, 502);

    let out = Command::new(WARDEN)
        .args([
            "mcp",
            "proxy",
            "--memory-pins",
            "--memory-sessions",
            "--policy",
        ])
        .arg(site.path("pol/support-agent.yaml"))
        .args([
            "--upstream",
            "http://127.0.0.1:1/mcp",
            "--upstream-ca",
            s(&ca),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream-ca"));
}

/// The MCP Python SDK through `warden serve` over mutual TLS to an `https://` MCP upstream:
/// with the client certificate it initializes (the upstream's answer comes back); without one
/// the handshake fails.
#[test]
fn an_mcp_sdk_client_reaches_an_https_upstream_through_mutual_tls() {
    let site = Site::new("  client_ca: ca.pem\n");
    let (_upstream, upstream_port) = tls_mcp_upstream(&site);
    let mut config = std::fs::read_to_string(site.path("warden.yaml")).unwrap();
    config.push_str(&format!(
        "mcp_upstreams:\n  - {{ name: tools, url: \"https://localhost:{upstream_port}/mcp\", policy: support-agent, ca_file: a/ca.pem }}\n"
    ));
    std::fs::write(site.path("warden.yaml"), config).unwrap();
    let server = site.start();
    let url = format!("https://localhost:{}/mcp/tools", port(&server));
    let sdk = |extra: &[&Path]| -> Value {
        let mut command = Command::new("python3");
        command
            .arg(common::mcp::root().join("crates/warden-cli/tests/tls/mcp_sdk.py"))
            .arg(&url)
            .arg(site.path("a/ca.pem"))
            .args(extra);
        let out = command.output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "mcp SDK missing? run scripts/test: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let a = site.path("a");
    let seen = sdk(&[&a.join("client.pem"), &a.join("client.key")]);
    assert_eq!(seen, serde_json::json!({"server": "tls-stub"}));
    let refused = sdk(&[]);
    assert!(refused["error"].is_string(), "{refused}");
}

/// With `tls.identity: principal`, the client certificate's identity is also the principal of
/// the MCP mounts' decisions: the MCP Python SDK over mutual TLS may call the tool only with
/// the certificate the policy names.
#[test]
fn the_client_certificate_identity_is_the_principal_on_mcp_mounts() {
    let site = Site::new("");
    let (_upstream, upstream_port) = tls_mcp_upstream(&site);
    let other = other_client(&site);
    std::fs::write(site.path("pol/by-principal.yaml"), BY_PRINCIPAL).unwrap();
    std::fs::write(
        site.path("warden.yaml"),
        format!(
            "policies: pol\nstate: memory\nanonymous_policy: by-principal\nwatch: false\n\
             tls:\n  cert: server.pem\n  key: server.key\n  client_ca: clients.pem\n  identity: principal\n\
             mcp_upstreams:\n  - {{ name: tools, url: \"https://localhost:{upstream_port}/mcp\", policy: by-principal, ca_file: a/ca.pem }}\n"
        ),
    )
    .unwrap();
    let server = site.start();
    let url = format!("https://localhost:{}/mcp/tools", port(&server));
    let call = |client: &Path| -> Value {
        let out = Command::new("python3")
            .arg(common::mcp::root().join("crates/warden-cli/tests/tls/mcp_sdk.py"))
            .arg(&url)
            .arg(site.path("a/ca.pem"))
            .arg(client.join("client.pem"))
            .arg(client.join("client.key"))
            .arg("read")
            .output()
            .unwrap();
        let seen: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "mcp SDK missing? run scripts/test: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert!(
            seen["error"].is_null(),
            "{seen}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        seen
    };
    let allowed = call(&site.path("a"));
    assert_eq!(allowed["call"], "read ok", "{allowed}");
    let denied = call(&other);
    let text = denied["call"].as_str().unwrap_or_default();
    assert!(text.starts_with("denied"), "{denied}");
    assert!(!text.contains("read ok"), "{denied}");
}
