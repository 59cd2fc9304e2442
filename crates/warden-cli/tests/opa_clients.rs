//! OPA's own clients, unchanged, against a real `warden serve` (both installed by scripts/test
//! from tests/peers): npm `@styra/opa` evaluates with and without input, an array element by
//! index, the default decision, a batch, reads the health endpoint, and surfaces the server's
//! error messages; PyPI `opa-python-client` checks the connection and health, reads data,
//! queries a rule and ad hoc queries.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;

use common::serve::Server;
use common::{SUPPORT_AGENT, WARDEN};
use serde_json::Value;

const AUTHZ: &str = r#"package authz

default allow := false

allow if input.user in data.admins
"#;

const SYSTEM: &str = r#"package system

main := {"allow": input.user == "alice"}
"#;

fn key(config: &str, policy: &str) -> String {
    key_with_role(config, policy, "agent")
}

fn key_with_role(config: &str, policy: &str, role: &str) -> String {
    let out = Command::new(WARDEN)
        .args([
            "keys", "create", "--tenant", policy, "--policy", policy, "--role", role, "--config",
            config,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A policy directory (Warden's `support-agent`, Rego `authz` with `admins`, Rego `system`) and
/// a `warden.yaml` (with `extra` appended).
struct Site {
    dir: tempfile::TempDir,
    config: String,
}

impl Site {
    fn new(admins: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("support-agent.yaml"), SUPPORT_AGENT).unwrap();
        std::fs::write(policies.join("authz.rego"), AUTHZ).unwrap();
        std::fs::write(
            policies.join("authz-data.json"),
            format!(r#"{{"admins": {admins}}}"#),
        )
        .unwrap();
        std::fs::write(policies.join("system.rego"), SYSTEM).unwrap();
        let config = dir.path().join("warden.yaml");
        std::fs::write(
            &config,
            format!(
                "policies: policies\nkeys_file: keys.json\nstate: memory\nwatch: false\n{extra}"
            ),
        )
        .unwrap();
        let config = config.display().to_string();
        Self { dir, config }
    }

    /// A key of tenant `policy` decided by `policy`.
    fn key(&self, policy: &str) -> String {
        key(&self.config, policy)
    }

    /// An admin key of tenant `policy`.
    fn admin_key(&self, policy: &str) -> String {
        key_with_role(&self.config, policy, "admin")
    }

    fn start(&self) -> Server {
        Server::spawn(
            &["--config", self.config.as_str(), "--listen", "127.0.0.1:0"],
            &self.dir.path().join("port"),
            &self.dir.path().join("log"),
        )
    }
}

#[test]
fn styra_opa_sdk_works_against_warden_unchanged() {
    let site = Site::new(r#"["alice", "bob"]"#, "");
    let (authz, system) = (site.key("authz"), site.key("system"));
    let server = site.start();
    let npm = common::mcp::root().join(".ci/.npm");
    assert!(
        npm.join("node_modules/@styra/opa").exists(),
        "npm @styra/opa is missing: run scripts/test (it installs tests/peers into .ci/.npm)"
    );
    let out = Command::new("node")
        .arg(common::mcp::root().join("crates/warden-cli/tests/opa/styra.cjs"))
        .arg(&npm)
        .arg(server.url(""))
        .args([&authz, &system])
        .output()
        .expect("node is required for the OPA SDK test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["withInput"], true, "{seen}");
    assert_eq!(seen["denied"], false, "{seen}");
    assert_eq!(seen["withoutInput"], false, "GET without input: {seen}");
    assert_eq!(seen["element"], "alice", "{seen}");
    assert_eq!(seen["byDefault"]["allow"], true, "{seen}");
    assert_eq!(seen["batch"]["a"], true, "{seen}");
    assert_eq!(seen["batch"]["b"], true, "{seen}");
    // Errors reach the application with the server's own message (the SDK reads the error
    // bodies of 400 and 404; a 401 it reports by status).
    assert_eq!(seen["unauthorized"]["status"], 401, "{seen}");
    assert!(
        seen["badPath"]["error"]
            .as_str()
            .is_some_and(|m| m.contains("Rego identifiers")),
        "{seen}"
    );
    assert!(
        seen["health"].is_object() && seen["health"].get("error").is_none(),
        "{seen}"
    );
}

#[test]
fn opa_query_options_input_on_get_root_documents_and_mixed_batches() {
    let site = Site::new(r#"["alice"]"#, "");
    let (authz, agent) = (site.key("authz"), site.key("support-agent"));
    let server = site.start();
    let get = |path: &str| server.request("GET", path, &[("x-api-key", authz.as_str())], None);
    // `input` as a query parameter on GET.
    let alice = get("/v1/data/authz/allow?input=%7B%22user%22%3A%22alice%22%7D");
    assert_eq!(
        alice.body,
        serde_json::json!({"result": true}),
        "{}",
        alice.text
    );
    // The root document, and the options that add to the answer.
    let root = get("/v1/data?metrics=true&provenance&pretty=true");
    assert_eq!(root.status, 200, "{}", root.text);
    assert_eq!(root.body["result"]["admins"][0], "alice", "{}", root.text);
    assert!(
        root.body["metrics"]["timer_server_handler_ns"]
            .as_u64()
            .is_some()
    );
    assert_eq!(
        root.body["provenance"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(root.text.contains("\n  "), "pretty-printed: {}", root.text);
    // What Warden cannot do is refused by name, in OPA's error body.
    for option in ["explain=full", "instrument=true", "strict-builtin-errors"] {
        let refused = get(&format!("/v1/data/authz/allow?{option}"));
        assert_eq!(refused.status, 400, "{option}: {}", refused.text);
        assert_eq!(
            refused.body["code"], "invalid_parameter",
            "{}",
            refused.text
        );
        let name = option.split('=').next().unwrap();
        assert!(refused.body["message"].as_str().unwrap().contains(name));
    }
    let bad_input = get("/v1/data/authz/allow?input=%7Bnot-json");
    assert_eq!(bad_input.status, 400, "{}", bad_input.text);
    // A batch with a failing input: 207, the failure in OPA's shape, the others answered.
    let batch = serde_json::json!({"inputs": {
        "ok": {"tool": "crm.read_customer", "session": "b"},
        "bad": {"tool": 1}
    }});
    let mixed = server.request(
        "POST",
        "/v1/batch/data/support/decision",
        &[
            ("x-api-key", agent.as_str()),
            ("content-type", "application/json"),
        ],
        Some(batch.to_string().as_bytes()),
    );
    assert_eq!(mixed.status, 207, "{}", mixed.text);
    assert_eq!(mixed.body["responses"]["ok"]["result"]["decision"], "allow");
    assert_eq!(mixed.body["responses"]["bad"]["http_status_code"], "400");
    assert_eq!(mixed.body["responses"]["bad"]["code"], "invalid_parameter");
    // The Query API: one binding per way the query succeeds.
    let all = get("/v1/query?q=x%20%3A%3D%20data.admins%5B_%5D");
    assert_eq!(
        all.body,
        serde_json::json!({"result": [{"x": "alice"}]}),
        "{}",
        all.text
    );
    let ask = |key: &str, body: serde_json::Value| {
        server.request(
            "POST",
            "/v1/query",
            &[("x-api-key", key), ("content-type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
    };
    let yes = ask(
        &authz,
        serde_json::json!({"query": "data.authz.allow == true", "input": {"user": "alice"}}),
    );
    assert_eq!(
        yes.body,
        serde_json::json!({"result": [{}]}),
        "{}",
        yes.text
    );
    let no = ask(
        &authz,
        serde_json::json!({"query": "data.authz.allow == true", "input": {"user": "mallory"}}),
    );
    assert_eq!(no.body, serde_json::json!({"result": []}), "{}", no.text);
    let broken = ask(&authz, serde_json::json!({"query": "data.authz[["}));
    assert_eq!(
        (broken.status, broken.body["code"].clone()),
        (400, "invalid_parameter".into())
    );
    let warden = ask(&agent, serde_json::json!({"query": "x := 1"}));
    assert_eq!(warden.status, 400, "{}", warden.text);
    assert!(
        warden.body["message"]
            .as_str()
            .unwrap()
            .contains("Rego policy")
    );
    // `/health` is OPA's liveness answer, without a key.
    let health = server.get("/health?bundles&plugins");
    assert_eq!(
        (health.status, health.body.clone()),
        (200, serde_json::json!({}))
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn gzip_request_bodies_are_read_within_the_body_limit() {
    let site = Site::new(r#"["alice"]"#, "body_limit_bytes: 65536\n");
    let authz = site.key("authz");
    let server = site.start();
    let post = |encoding: &str, body: &[u8]| {
        server.request(
            "POST",
            "/v1/data/authz/allow",
            &[
                ("x-api-key", authz.as_str()),
                ("content-type", "application/json"),
                ("content-encoding", encoding),
            ],
            Some(body),
        )
    };
    let alice = post("gzip", &gzip(br#"{"input": {"user": "alice"}}"#));
    assert_eq!(
        alice.body,
        serde_json::json!({"result": true}),
        "{}",
        alice.text
    );
    // 1 MiB of spaces inflates past the 64 KiB limit from a body of about 1 KiB.
    let mut bomb = b"{\"input\": {\"user\": \"alice\"}".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 1 << 20));
    bomb.push(b'}');
    let packed = gzip(&bomb);
    assert!(packed.len() < 8 * 1024, "{}", packed.len());
    let refused = post("gzip", &packed);
    assert_eq!(refused.status, 413, "{}", refused.text);
    let unknown = post("br", br#"{"input": {}}"#);
    assert_eq!(unknown.status, 415, "{}", unknown.text);
}

#[test]
fn opa_python_client_works_against_warden_unchanged() {
    let site = Site::new(r#"["alice", "bob"]"#, "");
    let authz = site.key("authz");
    let server = site.start();
    let port = server.addr.rsplit(':').next().unwrap().trim().to_owned();
    let out = Command::new("python3")
        .arg(common::mcp::root().join("crates/warden-cli/tests/opa/python_client.py"))
        .args([&port, &authz])
        .output()
        .expect("python3 is required for the OPA Python client test");
    assert!(
        out.status.success(),
        "opa-python-client missing? run scripts/test (it installs tests/peers into .ci/.pydeps): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["connection"], true, "{seen}");
    assert_eq!(seen["health"], true, "{seen}");
    assert_eq!(
        seen["config"]["result"]["default_decision"], "/system/main",
        "{seen}"
    );
    assert_eq!(
        seen["config"]["result"]["labels"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{seen}"
    );
    assert_eq!(seen["health_bundles"], true, "{seen}");
    assert_eq!(
        seen["data"]["result"],
        serde_json::json!(["alice", "bob"]),
        "{seen}"
    );
    assert_eq!(seen["element"]["result"], "alice", "{seen}");
    assert_eq!(seen["rule"]["result"], true, "{seen}");
    assert_eq!(seen["rule_metrics"]["result"], false, "{seen}");
    assert!(
        seen["rule_metrics"]["metrics"]["timer_server_handler_ns"].is_u64(),
        "{seen}"
    );
    assert_eq!(
        seen["ad_hoc"]["result"],
        serde_json::json!([{"x": "alice"}, {"x": "bob"}]),
        "{seen}"
    );
    assert_eq!(
        seen["ad_hoc_input"]["result"],
        serde_json::json!([{}]),
        "{seen}"
    );
    // Many inputs in one ad hoc query (`with input as ...` per input).
    assert_eq!(
        seen["bulk"],
        serde_json::json!([true, false, true]),
        "{seen}"
    );
    assert_eq!(
        seen["bulk_keyed"],
        serde_json::json!({"a": true, "m": false}),
        "{seen}"
    );
    // Undefined data is the client's "not found"; a bad key is an HTTP error it raises.
    assert!(
        seen["undefined"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("PolicyNotFound")),
        "{seen}"
    );
    assert!(
        seen["stranger"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("401")),
        "{seen}"
    );
}

#[test]
fn opa_status_answers_and_compile_is_refused_as_not_implemented() {
    let site = Site::new(r#"["alice"]"#, "");
    let authz = site.key("authz");
    let server = site.start();
    let status = server.request("GET", "/v1/status", &[("x-api-key", authz.as_str())], None);
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(
        status.body["result"]["labels"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    let anonymous = server.request("GET", "/v1/status", &[], None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
    // Partial evaluation: a clear 501 in OPA's error shape, never a wrong answer.
    let compile = server.request(
        "POST",
        "/v1/compile",
        &[
            ("x-api-key", authz.as_str()),
            ("content-type", "application/json"),
        ],
        Some(br#"{"query": "data.authz.allow == true", "unknowns": ["input"]}"#),
    );
    assert_eq!(compile.status, 501, "{}", compile.text);
    assert_eq!(
        compile.body["code"], "invalid_operation",
        "{}",
        compile.text
    );
    assert!(
        compile.body["message"]
            .as_str()
            .unwrap()
            .contains("partial evaluation"),
        "{}",
        compile.text
    );
}

#[test]
fn opa_python_client_manages_policies_and_data_with_an_admin_key() {
    let site = Site::new(r#"["alice", "bob"]"#, "");
    let (admin, agent) = (site.admin_key("authz"), site.key("authz"));
    let server = site.start();
    let port = server.addr.rsplit(':').next().unwrap().trim().to_owned();
    let out = Command::new("python3")
        .arg(common::mcp::root().join("crates/warden-cli/tests/opa/python_manage.py"))
        .args([&port, &admin, &agent])
        .output()
        .expect("python3 is required for the OPA Python client test");
    assert!(
        out.status.success(),
        "opa-python-client missing? run scripts/test (it installs tests/peers into .ci/.pydeps): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = server.url("/v1");
    assert_eq!(
        seen["list_before"],
        serde_json::json!(["authz.rego"]),
        "{seen}"
    );
    assert_eq!(
        seen["info_before"]["authz.rego"],
        serde_json::json!({"path": format!("{root}/data/authz"),
                           "rules": [format!("{root}/data/authz/allow")]}),
        "{seen}"
    );
    // Changes need an admin key: the agent's is refused (403), nothing changes.
    for refused in ["agent_put", "agent_data"] {
        assert!(
            seen[refused]["error"]
                .as_str()
                .is_some_and(|e| e.contains("admin")),
            "{refused}: {seen}"
        );
    }
    assert_eq!(seen["put"], true, "{seen}");
    // A module that does not compile: OPA's error body, with the location of each error.
    let broken = &seen["broken"];
    assert!(
        broken["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("RegoParseError")),
        "{seen}"
    );
    assert_eq!(broken["errors"][0]["location"]["file"], "broken", "{seen}");
    // The parser reaches the end of the module (line 4) still looking for the rule's body.
    assert_eq!(broken["errors"][0]["location"]["row"], 4, "{seen}");
    // A v0 module: refused with the message OPA gives, upgraded by the client, then served.
    assert_eq!(seen["old_style"], true, "{seen}");
    assert_eq!(seen["old_style_decides"]["result"], true, "{seen}");
    let mut listed: Vec<String> = serde_json::from_value(seen["list_after"].clone()).unwrap();
    listed.sort();
    assert_eq!(listed, ["authz.rego", "extra", "old"], "{seen}");
    assert_eq!(
        seen["info_after"]["extra"]["rules"],
        serde_json::json!([format!("{root}/data/extra/allow")]),
        "{seen}"
    );
    // The source is shown to admin keys only.
    assert!(
        seen["policy"]["result"]["raw"]
            .as_str()
            .is_some_and(|r| r.contains("package extra")),
        "{seen}"
    );
    assert_eq!(seen["agent_policy"]["result"]["id"], "extra", "{seen}");
    assert!(
        seen["agent_policy"]["result"].get("raw").is_none(),
        "{seen}"
    );
    // Data written, patched and deleted, each decided on at once.
    assert_eq!(seen["data"], true, "{seen}");
    assert!(seen["five_over_three"].get("result").is_none(), "{seen}");
    assert_eq!(seen["patch"], true, "{seen}");
    assert_eq!(seen["five_under_ten"]["result"], true, "{seen}");
    assert!(
        seen["bad_patch"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("PatchDataError")),
        "{seen}"
    );
    assert_eq!(
        seen["limits"]["result"],
        serde_json::json!({"max": 10}),
        "{seen}"
    );
    assert_eq!(seen["delete_data"], true, "{seen}");
    assert!(
        seen["limits_gone"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("PolicyNotFound")),
        "{seen}"
    );
    assert_eq!(seen["delete_policy"], true, "{seen}");
    assert!(seen["extra_gone"].get("result").is_none(), "{seen}");
    assert!(
        seen["delete_missing"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("resource_not_found")),
        "{seen}"
    );
    assert_eq!(
        seen["list_end"],
        serde_json::json!(["authz.rego", "old"]),
        "{seen}"
    );
}

/// Changes made through the API survive a reload (applied again to what the files hold then),
/// stay within the admin's tenant, are audited without their content, and are bounded.
#[test]
fn api_changes_survive_reloads_stay_in_their_tenant_and_are_audited() {
    let site = Site::new(
        r#"["alice"]"#,
        "audit: { dir: audit, fsync: always }\nbody_limit_bytes: 4096\n",
    );
    let (admin, agent, system) = (
        site.admin_key("authz"),
        site.key("authz"),
        site.key("system"),
    );
    let warden_admin = site.admin_key("support-agent");
    let server = site.start();
    let call = |method: &str, path: &str, key: &str, body: Option<&str>, extra: &[(&str, &str)]| {
        let mut headers = vec![("x-api-key", key), ("content-type", "application/json")];
        headers.extend_from_slice(extra);
        server.request(method, path, &headers, body.map(str::as_bytes))
    };
    let allowed = |user: &str| {
        call(
            "POST",
            "/v1/data/authz/allow",
            &agent,
            Some(&format!(r#"{{"input": {{"user": "{user}"}}}}"#)),
            &[],
        )
        .body["result"]
            .clone()
    };
    assert_eq!(allowed("carol"), false);
    // Carol is added through the Data API; the policy gains a module that reads a new document.
    let put = call("PUT", "/v1/data/admins/0", &admin, Some(r#""carol""#), &[]);
    assert_eq!(put.status, 204, "{}", put.text);
    assert_eq!(allowed("carol"), true);
    assert_eq!(allowed("alice"), false);
    let module = "package authz\n\nbanned contains u if some u in data.blocked\n";
    let put = call("PUT", "/v1/policies/bans.rego", &admin, Some(module), &[]);
    assert_eq!(put.status, 200, "{}", put.text);
    let put = call(
        "PUT",
        "/v1/data/blocked",
        &admin,
        Some(r#"["mallory"]"#),
        &[],
    );
    assert_eq!(put.status, 204, "{}", put.text);
    // `If-None-Match: *` writes only what is not there.
    let again = call(
        "PUT",
        "/v1/data/blocked",
        &admin,
        Some(r#"["nobody"]"#),
        &[("if-none-match", "*")],
    );
    assert_eq!(again.status, 304, "{}", again.text);
    // The files change and the daemon reloads: the API's changes are applied to the new files.
    std::fs::write(
        site.dir.path().join("policies/authz-data.json"),
        r#"{"admins": ["alice", "dave"], "other": 1}"#,
    )
    .unwrap();
    server.signal("HUP");
    server.wait_for("the reload", |s| {
        s.metric("warden_reload_total{result=\"ok\"}") >= 1.0
    });
    let root = call("GET", "/v1/data", &agent, None, &[]);
    assert_eq!(
        root.body["result"]["admins"],
        serde_json::json!(["carol", "dave"])
    );
    assert_eq!(root.body["result"]["other"], 1);
    assert_eq!(
        root.body["result"]["authz"]["banned"],
        serde_json::json!(["mallory"]),
        "{}",
        root.text
    );
    // Another tenant's policy is untouched; a Warden policy is not changed through OPA's API.
    let other = call("GET", "/v1/policies", &system, None, &[]);
    assert_eq!(
        other.body["result"].as_array().unwrap().len(),
        1,
        "{}",
        other.text
    );
    assert_eq!(other.body["result"][0]["id"], "system.rego");
    let warden = call("PUT", "/v1/data/x", &warden_admin, Some("1"), &[]);
    assert_eq!(warden.status, 400, "{}", warden.text);
    assert!(
        warden.body["message"]
            .as_str()
            .unwrap()
            .contains("Warden policy")
    );
    // Bad writes change nothing and say why.
    for (method, path, body, status) in [
        ("PUT", "/v1/data/admins/0/x", Some(r#"1"#), 400),
        // Data where a rule is would override the rule: refused, as OPA refuses it.
        ("PUT", "/v1/data/authz/allow", Some("true"), 400),
        ("PUT", "/v1/data", Some(r#"[1]"#), 400),
        ("PUT", "/v1/data/x", Some(r#"{"a": 1, "a": 2}"#), 400),
        ("PATCH", "/v1/data/nothing", Some(r#"[]"#), 404),
        ("DELETE", "/v1/data/nothing", None, 404),
        ("DELETE", "/v1/policies/nothing.rego", None, 404),
        ("PUT", "/v1/policies/big.rego", Some(&"#".repeat(5000)), 413),
    ] {
        let reply = call(method, path, &admin, body, &[]);
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text);
        assert!(
            !reply.body["message"].as_str().unwrap_or("").is_empty(),
            "{}",
            reply.text
        );
    }
    // A module that would break the policy (a call to a function nothing defines).
    let clash = call(
        "PUT",
        "/v1/policies/clash.rego",
        &admin,
        Some("package authz\n\nlimit := nope(1)\n"),
        &[],
    );
    assert_eq!(clash.status, 400, "{}", clash.text);
    assert_eq!(allowed("carol"), true);
    let root_after = call("GET", "/v1/data", &agent, None, &[]);
    assert_eq!(root_after.body, root.body);
    drop(server);
    // Every change is in the audit log: who, what, the resulting digest, never the content.
    let mut changes = Vec::new();
    for entry in std::fs::read_dir(site.dir.path().join("audit")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(!text.contains("mallory"), "data content in the audit log");
            for line in text.lines() {
                let entry: Value = serde_json::from_str(line).unwrap();
                if entry["kind"] == "policy_change" {
                    assert!(entry["principal"].as_str().unwrap().starts_with("key:"));
                    assert!(entry["policy"].as_str().unwrap().starts_with("sha256:"));
                    changes.push(format!(
                        "{} {}",
                        entry["decision"].as_str().unwrap(),
                        entry["rule"].as_str().unwrap()
                    ));
                }
            }
        }
    }
    assert_eq!(
        changes,
        [
            "put_data /admins/0",
            "put_policy bans.rego",
            "put_data /blocked"
        ]
    );
}
