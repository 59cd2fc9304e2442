#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The AuthZEN Authorization API 1.0 on `warden serve` (`/access/v1/evaluation`,
//! `/access/v1/evaluations`, `/.well-known/authzen-configuration`): the real binary over HTTP,
//! with the requests and responses of the specification's own examples (api/
//! authorization-api-1_0.md of github.com/openid/authzen) and of its certification scenario
//! (certification/authorization-api-1_0-scenario.md), decided by a Warden policy written for
//! them, and an agent's tool calls through it sharing session state with `/v1/decide`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

mod common;

use common::WARDEN;
use common::serve::{Reply, Server};

const EVALUATION: &str = "/access/v1/evaluation";
const EVALUATIONS: &str = "/access/v1/evaluations";
const CONFIGURATION: &str = "/.well-known/authzen-configuration";

/// The policy behind every test: an agent's tools (scenario 02), the resources of the
/// specification's examples (documents, accounts, todos) and the certification fixture
/// (records). A non-tool resource is the tool `TYPE:ACTION` with the entities as arguments.
const POLICY: &str = r#"
warden: 1
name: authzen
version: "1.0.0"
default: deny
tools: { "crm.read_*": [sensitive_read], send_email: [external_write], human_approve: [review] }
rules:
  - { id: reads, effect: allow, classes: [sensitive_read], add_taints: [pii] }
  - { id: writes, effect: allow, classes: [external_write] }
  - { id: no-exfil, effect: deny, classes: [external_write], if: "taint:pii", reason: "external write after PII access" }
  - { id: review, effect: allow, tools: [human_approve], remove_taints: [pii] }
  - { id: read-documents, effect: allow, tools: ["document:read", "document:can_read"] }
  - id: document-2
    effect: deny
    tools: ["document:read"]
    args: { /resource/id: { equals: "2" } }
    reason: "document 2 is restricted"
  - { id: alice-reads, effect: allow, tools: ["account:can_read", "todo:can_read"], principals: ["user:alice@example.com"] }
  - { id: record-read, effect: allow, tools: ["record:read"] }
  - id: record-write
    effect: allow
    tools: ["record:write"]
    principals: ["user:alice"]
    args: { /resource/properties/status: { exists: false } }
  - id: record-write-active
    effect: allow
    tools: ["record:write"]
    principals: ["user:alice"]
    args: { /resource/properties/status: { equals: active } }
  - id: record-write-admin
    effect: allow
    tools: ["record:write"]
    args: { /subject/properties/role: { equals: admin } }
  - id: archived
    effect: deny
    tools: ["record:write"]
    args: { /resource/properties/status: { equals: archived }, /subject/properties/role: { exists: false } }
    reason: "archived records are read-only"
  - id: soft-delete
    effect: allow
    tools: ["record:delete"]
    args: { /action/properties/soft: { equals: true } }
"#;

/// A directory with the policy, a key file and `warden.yaml` (`config` appended).
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("authzen.yaml"), POLICY).unwrap();
        let base = "policies: policies\nkeys_file: keys.json\nstate_file: state/sessions.redb\n\
                    rate_limit: { per_second: 0 }\n";
        std::fs::write(dir.path().join("warden.yaml"), format!("{base}{config}")).unwrap();
        Self { dir }
    }

    /// A site whose requests without a key are decided by the policy.
    fn anonymous(config: &str) -> Self {
        Self::new(&format!("anonymous_policy: authzen\n{config}"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn warden(&self, args: &[&str]) -> String {
        let out = Command::new(WARDEN)
            .args(args)
            .args(["--config", &self.path("warden.yaml").display().to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn start(&self) -> Server {
        let config = self.path("warden.yaml").display().to_string();
        let log = self.path("log.txt");
        Server::spawn(
            &["--config", config.as_str(), "--listen", "127.0.0.1:0"],
            &self.path("port"),
            &log,
        )
    }
}

/// POSTs `body` to `path` without a key and expects 200; returns the answer.
fn ok(server: &Server, path: &str, body: &Value) -> Value {
    let reply = server.post_json(path, None, body);
    assert_eq!(reply.status, 200, "{path} {body}: {}", reply.text);
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{path}"
    );
    reply.body
}

/// The `decision` of each evaluation of a batch answer.
fn decisions(answer: &Value) -> Vec<bool> {
    assert!(answer.get("decision").is_none(), "{answer}");
    answer["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["decision"].as_bool().unwrap())
        .collect()
}

/// A 400 whose message names `field` (backquoted).
fn assert_bad(reply: &Reply, field: &str) {
    assert_eq!(reply.status, 400, "{field}: {}", reply.text);
    assert_eq!(reply.code(), "invalid_request", "{field}");
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("`{field}`")),
        "{field}: {message}"
    );
}

/// The sum of every `warden_decisions_total` series.
fn decisions_total(server: &Server) -> f64 {
    server
        .get("/metrics")
        .text
        .lines()
        .filter(|l| l.starts_with("warden_decisions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn specification_examples() {
    let site = Site::anonymous("");
    let server = site.start();

    // Access Evaluation API request example (section "The Access Evaluation API Request").
    let answer = ok(
        &server,
        EVALUATION,
        &json!({
          "subject": {"type": "user", "id": "alice@example.com"},
          "resource": {"type": "account", "id": "123"},
          "action": {"name": "can_read", "properties": {"method": "GET"}},
          "context": {"time": "1985-10-26T01:22-07:00"}
        }),
    );
    assert_eq!(answer["decision"], true, "{answer}");
    assert_eq!(answer["context"]["policy"]["name"], "authzen");
    // Another subject of the information model's examples: not allowed, with no reason (the
    // policy's default), still a 200.
    let answer = ok(
        &server,
        EVALUATION,
        &json!({
          "subject": {"type": "user", "id": "alice@example.com",
                      "properties": {"ip_address": "172.217.22.14", "device_id": "8:65:ee:17:7e:0b"}},
          "resource": {"type": "book", "id": "123",
                       "properties": {"library_record": {"title": "AuthZEN in Action", "isbn": "978-0593383322"}}},
          "action": {"name": "extend-loan", "properties": {"period": "2W"}}
        }),
    );
    assert_eq!(answer["decision"], false, "{answer}");

    // The HTTPS binding's example, with its request id echoed.
    let request_id = "bfe9eb29-ab87-4ca3-be83-a1d5d8305716";
    let body = json!({
      "subject": {"type": "user", "id": "alice@example.com"},
      "resource": {"type": "todo", "id": "1"},
      "action": {"name": "can_read"},
      "context": {"time": "1985-10-26T01:22-07:00"}
    })
    .to_string();
    let reply = server.request(
        "POST",
        EVALUATION,
        &[
            ("content-type", "application/json"),
            ("x-request-id", request_id),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["decision"], true);
    assert_eq!(reply.header("x-request-id"), Some(request_id));

    // Three requests with no default values.
    let three = |id: &str| {
        json!({
          "subject": {"type": "user", "id": "alice@example.com"},
          "action": {"name": "can_read"},
          "resource": {"type": "document", "id": id},
          "context": {"time": "2024-05-31T15:22-07:00"}
        })
    };
    let answer = ok(
        &server,
        EVALUATIONS,
        &json!({"evaluations": [three("boxcarring.md"), three("subject-search.md"), three("resource-search.md")]}),
    );
    assert_eq!(decisions(&answer), [true, true, true]);

    // Default values: one subject and context for three evaluations.
    let answer = ok(
        &server,
        EVALUATIONS,
        &json!({
          "subject": {"type": "user", "id": "alice@example.com"},
          "context": {"time": "2024-05-31T15:22-07:00"},
          "evaluations": [
            {"action": {"name": "can_read"}, "resource": {"type": "document", "id": "boxcarring.md"}},
            {"action": {"name": "can_read"}, "resource": {"type": "document", "id": "subject-search.md"}},
            {"action": {"name": "can_read"}, "resource": {"type": "document", "id": "resource-search.md"}}
          ]
        }),
    );
    assert_eq!(decisions(&answer), [true, true, true]);
    // A default `action` that the third evaluation overrides (`can_edit` is not allowed); the
    // same request is the HTTPS binding's Access Evaluations example.
    let answer = ok(
        &server,
        EVALUATIONS,
        &json!({
          "subject": {"type": "user", "id": "alice@example.com"},
          "context": {"time": "2024-05-31T15:22-07:00"},
          "action": {"name": "can_read"},
          "evaluations": [
            {"resource": {"type": "document", "id": "boxcarring.md"}},
            {"resource": {"type": "document", "id": "subject-search.md"}},
            {"action": {"name": "can_edit"}, "resource": {"type": "document", "id": "resource-search.md"}}
          ]
        }),
    );
    assert_eq!(decisions(&answer), [true, true, false]);

    // "Evaluate `read` action for three documents using all three semantics", with the
    // responses the specification gives: document 2 is denied (here with the policy's reason).
    let semantic = |name: Option<&str>| {
        let mut body = json!({
          "subject": {"type": "user", "id": "alice@example.com"},
          "action": {"name": "read"},
          "evaluations": [
            {"resource": {"type": "document", "id": "1"}},
            {"resource": {"type": "document", "id": "2"}},
            {"resource": {"type": "document", "id": "3"}}
          ]
        });
        if let Some(name) = name {
            body["options"] = json!({"evaluations_semantic": name});
        }
        ok(&server, EVALUATIONS, &body)
    };
    let all = semantic(Some("execute_all"));
    assert_eq!(decisions(&all), [true, false, true]);
    assert_eq!(
        all["evaluations"][1]["context"]["reason"],
        "document 2 is restricted"
    );
    assert_eq!(all["evaluations"][1]["context"]["rule"], "document-2");
    assert_eq!(
        decisions(&semantic(None)),
        [true, false, true],
        "the default"
    );
    assert_eq!(
        decisions(&semantic(Some("deny_on_first_deny"))),
        [true, false]
    );
    assert_eq!(decisions(&semantic(Some("permit_on_first_permit"))), [true]);

    // The options example: an unknown option is ignored; its one evaluation has no action,
    // so it is denied with the error in its context (the request as a whole is fine).
    let answer = ok(
        &server,
        EVALUATIONS,
        &json!({
          "evaluations": [{"resource": {"type": "doc", "id": "1"}, "subject": {"type": "doc", "id": "2"}}],
          "options": {"evaluations_semantic": "execute_all", "another_option": "value"}
        }),
    );
    assert_eq!(decisions(&answer), [false]);
    let error = &answer["evaluations"][0]["context"]["error"];
    assert_eq!(error["status"], 400, "{answer}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("`evaluations[0].action`"),
        "{error}"
    );

    // Without `evaluations` (or with an empty one) the batch endpoint is the single one.
    let single = json!({
      "subject": {"type": "user", "id": "alice@example.com"},
      "resource": {"type": "account", "id": "123"},
      "action": {"name": "can_read"}
    });
    assert_eq!(ok(&server, EVALUATIONS, &single)["decision"], true);
    let mut empty = single.clone();
    empty["evaluations"] = json!([]);
    assert_eq!(ok(&server, EVALUATIONS, &empty)["decision"], true);
}

/// The certification scenario's fixture decisions (its rules 1-8) and batch cases.
#[test]
fn certification_scenario() {
    let site = Site::anonymous("");
    let server = site.start();
    let user = |id: &str| json!({"type": "user", "id": id});
    let record = |id: &str| json!({"type": "record", "id": id});
    let evaluate = |subject: Value, action: Value, resource: Value| {
        ok(
            &server,
            EVALUATION,
            &json!({"subject": subject, "action": action, "resource": resource}),
        )
    };
    let cases = [
        (
            user("alice"),
            json!({"name": "read"}),
            record("record-1"),
            true,
        ),
        (
            user("alice"),
            json!({"name": "write"}),
            record("record-1"),
            true,
        ),
        (
            user("bob"),
            json!({"name": "read"}),
            record("record-1"),
            true,
        ),
        (
            user("bob"),
            json!({"name": "write"}),
            record("record-1"),
            false,
        ),
        (
            user("alice"),
            json!({"name": "write"}),
            json!({"type": "record", "id": "record-2", "properties": {"status": "archived"}}),
            false,
        ),
        (
            json!({"type": "user", "id": "bob", "properties": {"role": "admin"}}),
            json!({"name": "write"}),
            json!({"type": "record", "id": "record-2", "properties": {"status": "archived"}}),
            true,
        ),
        (
            user("alice"),
            json!({"name": "delete", "properties": {"soft": true}}),
            record("record-1"),
            true,
        ),
        (
            user("alice"),
            json!({"name": "delete", "properties": {"soft": false}}),
            record("record-1"),
            false,
        ),
    ];
    for (n, (subject, action, resource, expected)) in cases.into_iter().enumerate() {
        let answer = evaluate(subject, action, resource);
        assert_eq!(answer["decision"], expected, "rule {}: {answer}", n + 1);
        assert!(answer["context"].is_object(), "{answer}");
    }
    // Rule 5's denial says why.
    let answer = evaluate(
        user("alice"),
        json!({"name": "write"}),
        json!({"type": "record", "id": "record-2", "properties": {"status": "archived"}}),
    );
    assert_eq!(
        answer["context"]["reason"],
        "archived records are read-only"
    );
    assert_eq!(
        answer["context"]["reasons"],
        json!(["archived records are read-only"])
    );

    // Optional context, additional properties and unknown fields change nothing; repeated,
    // the same answer.
    for body in [
        json!({"subject": user("alice"), "action": {"name": "read"}, "resource": record("record-1"),
               "context": {"time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"}}),
        json!({"subject": {"type": "user", "id": "alice", "properties": {"department": "Sales", "role": "manager"}},
               "action": {"name": "read", "properties": {"method": "GET"}},
               "resource": {"type": "record", "id": "record-1", "properties": {"status": "active", "owner": "bob"}}}),
        json!({"subject": user("alice"), "action": {"name": "read"}, "resource": record("record-1"),
               "foo": "bar", "futureField": {"nested": true}}),
    ] {
        for _ in 0..3 {
            assert_eq!(ok(&server, EVALUATION, &body)["decision"], true, "{body}");
        }
    }

    // Batches: defaults per entity, replaced whole by an evaluation's own.
    let batches = [
        (
            json!({"subject": user("bob"), "resource": record("record-1"),
                   "evaluations": [{"action": {"name": "read"}}, {"action": {"name": "write"}}]}),
            vec![true, false],
        ),
        (
            json!({"subject": user("alice"), "action": {"name": "write"},
                   "evaluations": [
                     {"resource": {"type": "record", "id": "record-1", "properties": {"status": "active"}}},
                     {"resource": {"type": "record", "id": "record-2", "properties": {"status": "archived"}}}]}),
            vec![true, false],
        ),
        (
            json!({"action": {"name": "write"},
                   "resource": {"type": "record", "id": "record-2", "properties": {"status": "archived"}},
                   "evaluations": [
                     {"subject": user("alice")},
                     {"subject": {"type": "user", "id": "bob", "properties": {"role": "admin"}}}]}),
            vec![false, true],
        ),
        (
            json!({"evaluations": [
                     {"subject": user("alice"), "action": {"name": "read"}, "resource": record("record-1")},
                     {"subject": user("bob"), "action": {"name": "write"}, "resource": record("record-1")}]}),
            vec![true, false],
        ),
        (
            json!({"subject": user("alice"), "action": {"name": "read"},
                   "context": {"time": "2025-06-27T18:03-07:00"},
                   "evaluations": [
                     {"resource": record("record-1")},
                     {"resource": record("record-2"),
                      "context": {"time": "2025-06-27T19:00-07:00", "source": "batch-override"}}]}),
            vec![true, true],
        ),
        (
            json!({"subject": user("alice"), "action": {"name": "write"},
                   "resource": {"type": "record", "id": "record-1", "properties": {"status": "active"}},
                   "evaluations": [
                     {},
                     {"resource": {"type": "record", "id": "record-2", "properties": {"status": "archived"}}}]}),
            vec![true, false],
        ),
    ];
    for (body, expected) in batches {
        assert_eq!(
            decisions(&ok(&server, EVALUATIONS, &body)),
            expected,
            "{body}"
        );
    }

    // An evaluation missing its resource under execute_all: 200, that one denied with its error.
    let answer = ok(
        &server,
        EVALUATIONS,
        &json!({"subject": user("alice"), "action": {"name": "read"},
                "options": {"evaluations_semantic": "execute_all"},
                "evaluations": [{"resource": record("record-1")}, {}]}),
    );
    assert_eq!(decisions(&answer), [true, false]);
    assert_eq!(answer["evaluations"][1]["context"]["error"]["status"], 400);
    // Under deny_on_first_deny an invalid evaluation is a denial: nothing after it is decided.
    let answer = ok(
        &server,
        EVALUATIONS,
        &json!({"subject": user("alice"), "action": {"name": "read"},
                "options": {"evaluations_semantic": "deny_on_first_deny"},
                "evaluations": [{"resource": "record-1"}, {"resource": record("record-1")}]}),
    );
    assert_eq!(decisions(&answer), [false]);
    assert!(
        answer["evaluations"][0]["context"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`evaluations[0].resource`")
    );
}

#[test]
fn bad_requests_are_400_naming_the_field() {
    let site = Site::anonymous("max_batch_items: 3\nmax_identifier_bytes: 64\n");
    let server = site.start();
    let subject = json!({"type": "user", "id": "alice"});
    let action = json!({"name": "read"});
    let resource = json!({"type": "record", "id": "record-1"});
    let cases = [
        (json!({"action": action, "resource": resource}), "subject"),
        (json!({"subject": subject, "resource": resource}), "action"),
        (json!({"subject": subject, "action": action}), "resource"),
        (
            json!({"subject": {"id": "alice"}, "action": action, "resource": resource}),
            "subject.type",
        ),
        (
            json!({"subject": {"type": "user"}, "action": action, "resource": resource}),
            "subject.id",
        ),
        (
            json!({"subject": subject, "action": {}, "resource": resource}),
            "action.name",
        ),
        (
            json!({"subject": subject, "action": action, "resource": {"id": "record-1"}}),
            "resource.type",
        ),
        (
            json!({"subject": subject, "action": action, "resource": {"type": "record"}}),
            "resource.id",
        ),
        (
            json!({"subject": "alice", "action": action, "resource": resource}),
            "subject",
        ),
        (
            json!({"subject": subject, "action": {"name": 123}, "resource": resource}),
            "action.name",
        ),
        (
            json!({"subject": subject, "action": action, "resource": resource, "context": "now"}),
            "context",
        ),
        (
            json!({"subject": {"type": "user", "id": "a", "properties": []}, "action": action, "resource": resource}),
            "subject.properties",
        ),
        (
            json!({"subject": {"type": "user", "id": "x".repeat(65)}, "action": action, "resource": resource}),
            "subject.id",
        ),
        (
            json!({"subject": {"type": "user", "id": "x".repeat(60)}, "action": action, "resource": resource}),
            "subject",
        ),
        (
            json!({"subject": subject, "action": {"name": "read"}, "resource": {"type": "tool", "id": "crm.read_x"}}),
            "action.name",
        ),
        (
            json!({"subject": subject, "action": {"name": "call"},
                   "resource": {"type": "tool", "id": "crm.read_x", "properties": {"arguments": "id=7"}}}),
            "resource.properties.arguments",
        ),
        (
            json!({"subject": {"type": "agent", "id": "bot", "properties": {"session": 7}},
                   "action": action, "resource": resource}),
            "subject.properties.session",
        ),
    ];
    for (body, field) in &cases {
        assert_bad(&server.post_json(EVALUATION, None, body), field);
        // The batch endpoint without `evaluations` is the single one.
        assert_bad(&server.post_json(EVALUATIONS, None, body), field);
    }

    // Batches: the whole request's faults.
    let one = json!([{"subject": subject, "action": action, "resource": resource}]);
    let batch_cases = [
        (json!({"evaluations": "all"}), "evaluations"),
        (
            json!({"evaluations": [{}, {}, {}, {}], "subject": subject, "action": action, "resource": resource}),
            "evaluations",
        ),
        (
            json!({"evaluations": one, "options": {"evaluations_semantic": "first_wins"}}),
            "options.evaluations_semantic",
        ),
        (json!({"evaluations": one, "options": "fast"}), "options"),
        (
            json!({"evaluations": one, "subject": {"type": "user"}}),
            "subject.id",
        ),
        (json!({"evaluations": one, "context": 5}), "context"),
    ];
    for (body, field) in &batch_cases {
        assert_bad(&server.post_json(EVALUATIONS, None, body), field);
    }

    // Not JSON, an empty body, not an object, a repeated key, another content type.
    let json_headers = [("content-type", "application/json")];
    for (path, body) in [
        (EVALUATION, "{"),
        (EVALUATION, ""),
        (EVALUATION, "[1]"),
        (EVALUATIONS, "{"),
        (EVALUATIONS, ""),
    ] {
        let reply = server.request("POST", path, &json_headers, Some(body.as_bytes()));
        assert_eq!(reply.status, 400, "{path} {body:?}: {}", reply.text);
        assert_eq!(reply.code(), "invalid_request");
    }
    let repeated = r#"{"subject":{"type":"user","id":"alice","id":"bob"},"action":{"name":"read"},"resource":{"type":"record","id":"r"}}"#;
    assert_bad(
        &server.request("POST", EVALUATION, &json_headers, Some(repeated.as_bytes())),
        "subject.id",
    );
    let body = json!({"subject": subject, "action": action, "resource": resource}).to_string();
    let reply = server.request(
        "POST",
        EVALUATION,
        &[("content-type", "text/plain")],
        Some(body.as_bytes()),
    );
    assert_bad(&reply, "Content-Type");
    assert_eq!(server.get(EVALUATION).status, 405);

    // Nothing refused was decided.
    assert_eq!(decisions_total(&server), 0.0);
}

/// An agent calling tools through AuthZEN: a read taints its session and a later email is
/// denied, across calls, across the two endpoints and across `/v1/decide`: one session store.
#[test]
fn session_taints_apply_across_authzen_calls() {
    let site = Site::anonymous("");
    let server = site.start();
    let agent = |session: &str| json!({"type": "agent", "id": "support-bot", "properties": {"session": session}});
    let call = |tool: &str, args: Value| json!({"type": "tool", "id": tool, "properties": {"arguments": args}});
    let evaluate = |session: &str, tool: &str, args: Value| {
        ok(
            &server,
            EVALUATION,
            &json!({"subject": agent(session), "action": {"name": "call"}, "resource": call(tool, args)}),
        )
    };

    let email = json!({"to": "bob@customer.test"});
    assert_eq!(
        evaluate("s1", "send_email", email.clone())["decision"],
        true
    );
    let read = evaluate("s1", "crm.read_customer", json!({"id": 42}));
    assert_eq!(read["decision"], true);
    assert_eq!(read["context"]["taints"], json!(["pii"]));
    let send = evaluate("s1", "send_email", email.clone());
    assert_eq!(send["decision"], false, "{send}");
    assert_eq!(send["context"]["reason"], "external write after PII access");
    assert_eq!(send["context"]["rule"], "no-exfil");
    assert_eq!(send["context"]["taints"], json!(["pii"]));
    // Another session of the same agent is clean.
    assert_eq!(
        evaluate("s2", "send_email", email.clone())["decision"],
        true
    );
    // Without a session nothing is kept.
    let stateless = ok(
        &server,
        EVALUATION,
        &json!({"subject": {"type": "agent", "id": "support-bot"}, "action": {"name": "tool_call"},
                "resource": call("crm.read_customer", json!({}))}),
    );
    assert_eq!(stateless["decision"], true);
    // `/v1/decide` sees the taint AuthZEN left in `s1` (same tenant: anonymous).
    let decided = server.post_json(
        "/v1/decide",
        None,
        &json!({"session": "s1", "tool": "send_email", "args": email}),
    );
    assert_eq!(decided.body["decision"], "deny", "{}", decided.text);

    // A batch carries the state from one evaluation to the next, in order.
    let batch = ok(
        &server,
        EVALUATIONS,
        &json!({
          "subject": agent("s3"),
          "action": {"name": "call"},
          "evaluations": [
            {"resource": call("send_email", email.clone())},
            {"resource": call("crm.read_customer", json!({"id": 1}))},
            {"resource": call("send_email", email.clone())},
            {"resource": call("human_approve", json!({}))},
            {"resource": call("send_email", email.clone())}
          ]
        }),
    );
    assert_eq!(decisions(&batch), [true, true, false, true, true]);
    // deny_on_first_deny stops at the denial: the approval after it is not decided, so the
    // session stays tainted.
    let stopped = ok(
        &server,
        EVALUATIONS,
        &json!({
          "subject": agent("s1"),
          "action": {"name": "call"},
          "options": {"evaluations_semantic": "deny_on_first_deny"},
          "evaluations": [
            {"resource": call("send_email", email.clone())},
            {"resource": call("human_approve", json!({}))}
          ]
        }),
    );
    assert_eq!(decisions(&stopped), [false]);
    assert_eq!(
        evaluate("s1", "send_email", email.clone())["decision"],
        false
    );
    // permit_on_first_permit stops at the first allow: the approval clears the taint, and
    // the read after it is not decided.
    let stopped = ok(
        &server,
        EVALUATIONS,
        &json!({
          "subject": agent("s1"),
          "action": {"name": "call"},
          "options": {"evaluations_semantic": "permit_on_first_permit"},
          "evaluations": [
            {"resource": call("send_email", email.clone())},
            {"resource": call("human_approve", json!({}))},
            {"resource": call("crm.read_customer", json!({"id": 2}))}
          ]
        }),
    );
    assert_eq!(decisions(&stopped), [false, true]);
    let cleared = evaluate("s1", "send_email", email);
    assert_eq!(cleared["decision"], true, "{cleared}");
    assert!(cleared["context"].get("taints").is_none(), "{cleared}");

    // A tool's result (`result`): decided as a `tool_result`.
    let result = ok(
        &server,
        EVALUATION,
        &json!({"subject": agent("s4"), "action": {"name": "result"},
                "resource": {"type": "tool", "id": "crm.read_customer",
                             "properties": {"result": {"name": "Bob"}}}}),
    );
    assert_eq!(result["decision"], true, "{result}");
    assert_eq!(result["context"]["taints"], json!(["pii"]));
}

#[test]
fn a_key_is_required_and_tenants_are_apart() {
    let site = Site::new("");
    let acme = site.warden(&["keys", "create", "--tenant", "acme", "--policy", "authzen"]);
    let globex = site.warden(&[
        "keys", "create", "--tenant", "globex", "--policy", "authzen",
    ]);
    let server = site.start();
    let body = |tool: &str| {
        json!({"subject": {"type": "agent", "id": "bot", "properties": {"session": "s1"}},
               "action": {"name": "call"},
               "resource": {"type": "tool", "id": tool}})
    };
    for path in [EVALUATION, EVALUATIONS] {
        let reply = server.post_json(path, None, &body("crm.read_x"));
        assert_eq!(reply.status, 401, "{path}: {}", reply.text);
        assert_eq!(reply.code(), "unauthorized");
        let reply = server.post_json(path, Some("wdn_not-a-key"), &body("crm.read_x"));
        assert_eq!(reply.status, 401, "{path}");
    }
    // The discovery document needs no key.
    assert_eq!(server.get(CONFIGURATION).status, 200);

    let read = server.post_json(EVALUATION, Some(&acme), &body("crm.read_x"));
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.body["decision"], true);
    // As a Bearer token too.
    let send = server.request(
        "POST",
        EVALUATION,
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {acme}")),
        ],
        Some(body("send_email").to_string().as_bytes()),
    );
    assert_eq!(send.status, 200);
    assert_eq!(send.body["decision"], false);
    // globex's `s1` is another session.
    let other = server.post_json(EVALUATION, Some(&globex), &body("send_email"));
    assert_eq!(other.body["decision"], true, "{}", other.text);
}

/// The discovery document names the endpoints at the URL the client used, and they work.
#[test]
fn discovery_document() {
    let site = Site::anonymous("");
    let server = site.start();
    let reply = server.get(CONFIGURATION);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let base = format!("http://{}", server.addr);
    assert_eq!(
        reply.body,
        json!({
          "policy_decision_point": base,
          "access_evaluation_endpoint": format!("{base}{EVALUATION}"),
          "access_evaluations_endpoint": format!("{base}{EVALUATIONS}"),
        })
    );
    // Calling the advertised endpoint.
    let endpoint = reply.body["access_evaluation_endpoint"].as_str().unwrap();
    let path = endpoint.strip_prefix(&base).unwrap();
    let answer = ok(
        &server,
        path,
        &json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"},
                "resource": {"type": "record", "id": "record-1"}}),
    );
    assert_eq!(answer["decision"], true);

    // Behind a proxy terminating TLS, and under another host name.
    let reply = server.request(
        "GET",
        CONFIGURATION,
        &[("x-forwarded-proto", "https")],
        None,
    );
    assert_eq!(
        reply.body["policy_decision_point"],
        format!("https://{}", server.addr)
    );
    let head = |host: &str| {
        format!("GET {CONFIGURATION} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    let answer = raw(&server.addr, &head("pdp.example.com"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(
            r#""access_evaluations_endpoint":"http://pdp.example.com/access/v1/evaluations""#
        ),
        "{answer}"
    );
    let answer = raw(&server.addr, &head("evil.test/x?"));
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // A tenant path is not served (one document for the daemon).
    assert_eq!(server.get(&format!("{CONFIGURATION}/tenant1")).status, 404);
}

/// Every AuthZEN decision goes through the daemon's pipeline: counted, logged, audited, and an
/// allowed tool call carries a decision token bound to its arguments.
#[test]
fn decisions_are_counted_logged_audited_and_signed() {
    let site = Site::anonymous("signing_key: signing.pem\naudit: { dir: audit, fsync: always }\n");
    let signing = site.path("signing.pem").display().to_string();
    Command::new(WARDEN)
        .args(["keys", "gen-signing", "--out", &signing])
        .output()
        .unwrap();
    let server = site.start();
    let agent = json!({"type": "agent", "id": "support-bot", "properties": {"session": "s1"}});
    let args = json!({"id": 42, "fields": ["name"]});
    let body = json!({"subject": agent, "action": {"name": "call"},
                      "resource": {"type": "tool", "id": "crm.read_customer", "properties": {"arguments": args}}})
    .to_string();
    let reply = server.request(
        "POST",
        EVALUATION,
        &[
            ("content-type", "application/json"),
            ("x-request-id", "authzen-req-1"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let token = reply.body["context"]["token"].as_str().unwrap().to_owned();
    let verified = server.post_json(
        "/v1/tokens/verify",
        None,
        &json!({"token": token, "tool": "crm.read_customer", "args": args}),
    );
    assert_eq!(verified.body["valid"], true, "{}", verified.text);
    assert_eq!(verified.body["claims"]["sub"], "agent:support-bot");
    assert_eq!(verified.body["claims"]["sid"], "s1");

    let batch = ok(
        &server,
        EVALUATIONS,
        &json!({"subject": agent, "action": {"name": "call"},
                "evaluations": [{"resource": {"type": "tool", "id": "send_email"}},
                                {"resource": {"type": "tool", "id": "human_approve"}}]}),
    );
    assert_eq!(decisions(&batch), [false, true]);
    assert!(batch["evaluations"][0]["context"].get("token").is_none());
    assert_eq!(decisions_total(&server), 3.0);
    let log = server.stop();
    let logged: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "warden::decision")
        .collect();
    assert_eq!(logged.len(), 3, "{log}");
    let first = logged
        .iter()
        .find(|l| l["request_id"] == "authzen-req-1")
        .unwrap_or_else(|| panic!("no decision line for the request id in\n{log}"));
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["policy"], "authzen");
    assert!(
        !log.contains("\"fields\":[\"name\"]"),
        "arguments were logged"
    );

    let entries = common::audit_entries(&site.path("audit"));
    assert_eq!(entries.len(), 3, "{entries:?}");
    let tools: Vec<&str> = entries
        .iter()
        .map(|e| e["tool"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["crm.read_customer", "send_email", "human_approve"]);
    for entry in &entries {
        assert_eq!(entry["principal"], "agent:support-bot");
        assert_eq!(entry["session"], "s1");
        assert_eq!(entry["tenant"], "anonymous");
    }
    assert_eq!(entries[1]["decision"], "deny");
    assert_eq!(entries[1]["rule"], "no-exfil");
}

/// One raw HTTP/1.1 exchange (to send a `Host` of the test's choosing).
fn raw(addr: &str, head: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}
