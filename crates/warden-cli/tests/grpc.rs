//! The gRPC decision service through an independent client: PyPI `grpcio-tools` generates it
//! from the repository's proto at run time, and grpcio's own health and reflection clients
//! check the rest (installed by scripts/test from tests/peers). The decisions must be the HTTP
//! API's: the same policy, the same sessions, the same refusals.
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
use serde_json::{Value, json};

struct Site {
    dir: tempfile::TempDir,
    config: String,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        // With an audit rule, whose matches the decision lists in `audited`.
        let policy = format!(
            "{}  - {{ id: watch-reads, effect: audit, classes: [sensitive_read] }}\n",
            SUPPORT_AGENT.trim_start()
        );
        std::fs::write(policies.join("support-agent.yaml"), policy).unwrap();
        let config = dir.path().join("warden.yaml");
        std::fs::write(
            &config,
            "policies: policies\nkeys_file: keys.json\nstate: memory\nwatch: true\n\
             reload_debounce_ms: 50\nbody_limit_bytes: 65536\n",
        )
        .unwrap();
        Self {
            config: config.display().to_string(),
            dir,
        }
    }

    /// A new key of tenant `acme` (decided by `support-agent`) and its id.
    fn key(&self) -> (String, String) {
        let out = Command::new(WARDEN)
            .args([
                "keys",
                "create",
                "--tenant",
                "acme",
                "--policy",
                "support-agent",
            ])
            .args(["--config", &self.config])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let id = String::from_utf8(out.stderr)
            .unwrap()
            .split('`')
            .nth(1)
            .unwrap()
            .to_owned();
        (key, id)
    }

    fn start(&self) -> Server {
        Server::spawn(
            &["--config", self.config.as_str(), "--listen", "127.0.0.1:0"],
            &self.dir.path().join("port"),
            &self.dir.path().join("log"),
        )
    }
}

fn error_of(seen: &Value, name: &str) -> (String, String, String) {
    let e = &seen[name]["error"];
    assert!(e.is_object(), "{name}: expected an error: {seen}");
    (
        e["code"].as_str().unwrap().to_owned(),
        e["warden_code"].as_str().unwrap_or("").to_owned(),
        e["details"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn grpcio_client_generated_from_the_proto_decides_like_the_http_api() {
    let site = Site::new();
    let (key, _) = site.key();
    let server = site.start();
    let root = common::mcp::root();
    let out = Command::new("python3")
        .arg(root.join("crates/warden-cli/tests/grpc/client.py"))
        .arg(root.join("crates/warden-server/proto"))
        .arg(&server.addr)
        .arg(&key)
        .arg(site.dir.path().join("policies/support-agent.yaml"))
        .output()
        .expect("python3 is required for the gRPC client test");
    assert!(
        out.status.success(),
        "grpcio missing? run scripts/test (it installs tests/peers into .ci/.pydeps): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();

    // Health and reflection, without a key.
    assert_eq!(
        seen["health"],
        json!({"server": "SERVING", "warden.v1.DecisionService": "SERVING",
               "no.such.Service": {"error": {"code": "NOT_FOUND", "details": "unknown service",
                                             "warden_code": null}}}),
        "{seen}"
    );
    let services = seen["reflection"]["services"].as_array().unwrap();
    for service in ["warden.v1.DecisionService", "grpc.health.v1.Health"] {
        assert!(services.iter().any(|s| s == service), "{seen}");
    }
    assert_eq!(
        seen["reflection"]["methods"],
        json!(["Decide", "DecideBatch", "DecideStream", "WatchPolicy"])
    );

    // Authentication as on HTTP.
    for name in ["no_key", "bad_key", "stream_no_key"] {
        let (code, warden, _) = error_of(&seen, name);
        assert_eq!(
            (code.as_str(), warden.as_str()),
            ("UNAUTHENTICATED", "unauthorized")
        );
    }

    // The same decisions as the HTTP API would make: the read taints the session, the e-mail
    // after it is denied by the rule, with its reason.
    assert_eq!(seen["read"]["decision"], "VERDICT_ALLOW", "{seen}");
    assert_eq!(seen["read"]["taints"], json!(["pii"]), "{seen}");
    assert_eq!(seen["read"]["audited"], json!(["watch-reads"]), "{seen}");
    assert_eq!(seen["read"]["policy"]["name"], "support-agent");
    assert_eq!(seen["send"]["decision"], "VERDICT_DENY", "{seen}");
    assert_eq!(seen["send"]["rule"], "no-exfil", "{seen}");
    assert_eq!(
        seen["send"]["reasons"],
        json!(["external write after PII access"])
    );
    let http = server.post_json(
        "/v1/decide",
        Some(&key),
        &json!({"tool": "send_email", "session": "g1"}),
    );
    assert_eq!(
        http.body["decision"], "deny",
        "the session gRPC tainted: {}",
        http.text
    );
    // (The client changed the policy file at its end: the daemon now decides with the new
    // version, the one WatchPolicy announced last.)
    assert_eq!(
        http.body["policy"]["digest"],
        seen["watch"][1]["policy"]["digest"]
    );
    assert_eq!(
        seen["send"]["policy"]["digest"],
        seen["watch"][0]["policy"]["digest"]
    );

    // Refusals name the problem, with the HTTP API's codes.
    let (code, warden, details) = error_of(&seen, "bad_kind");
    assert_eq!(
        (code.as_str(), warden.as_str()),
        ("INVALID_ARGUMENT", "invalid_request")
    );
    assert!(details.contains("kind"), "{details}");
    // Over `body_limit_bytes`: refused by the decoder (tonic answers OUT_OF_RANGE), naming the
    // limit.
    let (code, _, details) = error_of(&seen, "too_large");
    assert_eq!(code, "OUT_OF_RANGE", "{details}");
    assert!(details.contains("65536"), "{details}");

    // A batch is all or nothing: a bad item refuses it whole, naming the item, and its other
    // requests change no session.
    let batch = &seen["batch"]["decisions"];
    assert_eq!(batch[0]["decision"], "VERDICT_ALLOW", "{seen}");
    assert_eq!(batch[1]["decision"], "VERDICT_DENY", "{seen}");
    let (code, _, details) = error_of(&seen, "batch_bad");
    assert_eq!(code, "INVALID_ARGUMENT");
    assert!(details.contains("[1].kind"), "{details}");
    assert_eq!(
        seen["batch_bad_session_untouched"]["decision"], "VERDICT_ALLOW",
        "the refused batch's read must not have tainted b2: {seen}"
    );

    // A stream answers in order, with each answer's id; a bad request is answered in place and
    // the stream goes on; the session carries across its messages.
    let stream = seen["stream"].as_array().unwrap();
    let ids: Vec<&str> = stream.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e"], "{seen}");
    assert_eq!(stream[0]["decision"]["decision"], "VERDICT_ALLOW");
    assert_eq!(stream[1]["error"]["code"], "invalid_request", "{seen}");
    assert_eq!(stream[2]["decision"]["rule"], "no-exfil", "{seen}");
    // (protobuf's JSON form leaves an empty list out: the approval cleared the taint)
    assert_eq!(stream[3]["decision"]["taints"], Value::Null, "{seen}");
    assert_eq!(stream[3]["decision"]["decision"], "VERDICT_ALLOW", "{seen}");
    assert_eq!(stream[4]["decision"]["decision"], "VERDICT_ALLOW", "{seen}");

    // WatchPolicy: the version in force, then the new one once the file changed.
    let watch = seen["watch"].as_array().unwrap();
    assert_eq!(watch[0]["policy"]["version"], "1.0.0", "{seen}");
    assert_eq!(watch[1]["policy"]["version"], "1.1.0", "{seen}");
    assert_ne!(watch[0]["policy"]["digest"], watch[1]["policy"]["digest"]);
    assert!(
        watch[1]["generation"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1,
        "{seen}"
    );
}

/// An mpsc receiver as a request stream.
fn outbound<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_rate_limited_per_message_and_refused_once_its_key_is_revoked() {
    use warden_server::grpc_proto::decide_stream_response::Outcome;
    use warden_server::grpc_proto::decision_service_client::DecisionServiceClient;
    use warden_server::grpc_proto::{DecideStreamRequest, DecisionRequest};

    let site = Site::new();
    let config = std::fs::read_to_string(&site.config).unwrap();
    std::fs::write(
        &site.config,
        format!("{config}rate_limit: {{ per_second: 1, burst: 3 }}\n"),
    )
    .unwrap();
    let (key, key_id) = site.key();
    let server = site.start();

    let channel = tonic::transport::Channel::from_shared(server.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = DecisionServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut request = tonic::Request::new(outbound(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let mut answers = client.decide_stream(request).await.unwrap().into_inner();
    let mut ask = async |id: &str| {
        let message = DecideStreamRequest {
            id: id.to_owned(),
            request: Some(DecisionRequest {
                tool: Some("crm.read_customer".into()),
                session: Some("r1".into()),
                ..Default::default()
            }),
        };
        tx.send(message).await.unwrap();
        let answer = answers.message().await.unwrap().unwrap();
        assert_eq!(answer.id, id);
        match answer.outcome.unwrap() {
            Outcome::Decision(d) => Ok(d.decision),
            Outcome::Error(e) => Err(e.code),
        }
    };
    // The opening took the first message's token; a burst of 3 leaves two more.
    for id in ["1", "2", "3"] {
        assert_eq!(ask(id).await, Ok(1), "message {id}");
    }
    assert_eq!(ask("4").await, Err("rate_limited".to_owned()));

    // The key revoked and the daemon reloaded: the open stream is refused from then on.
    let out = Command::new(WARDEN)
        .args(["keys", "revoke", &key_id, "--config", &site.config])
        .output()
        .unwrap();
    assert!(out.status.success());
    server.signal("HUP");
    server.wait_for("the revoked key to be refused", |s| {
        s.post_json("/v1/decide", Some(&key), &json!({"tool": "x"}))
            .status
            == 401
    });
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(ask("5").await, Err("unauthorized".to_owned()));
}
