//! OpenTelemetry traces from the real `warden serve`, received by an OTLP/gRPC collector built
//! on PyPI `opentelemetry-proto` (tests/telemetry/collector.py): a span per decision and per
//! proxied MCP request, children of the caller's W3C `traceparent`, the upstream given Warden's
//! span as its parent, and no planted secret or PII anywhere in what was exported. A collector
//! that is not there costs decisions nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine as _;
use common::mcp::Proc;
use common::serve::Server;
use common::{SUPPORT_AGENT, WARDEN};
use serde_json::{Value, json};

/// The caller's trace: its trace id and the id of its span that called Warden.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Values that must never reach the collector, whatever route carried them.
const PLANTED: &[&str] = &[
    "alice@example.com",
    "AKIAQYLPMN5HFIQR7XYZ",
    "4111111111111111",
    "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
    "session-of-bob",
];

struct Collector {
    _proc: Proc,
    out: std::path::PathBuf,
    otlp: u16,
    mcp: u16,
    otlp_http: u16,
}

fn pythonpath() -> String {
    let deps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/.pydeps");
    match std::env::var("PYTHONPATH") {
        Ok(p) if !p.is_empty() => format!("{}:{p}", deps.display()),
        _ => deps.display().to_string(),
    }
}

impl Collector {
    fn start(dir: &Path) -> Self {
        let out = dir.join("collector.jsonl");
        let mut child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/telemetry/collector.py"))
            .arg(&out)
            .env("PYTHONPATH", pythonpath())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ports: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("collector did not start (PyPI opentelemetry-proto installed by scripts/test?): {line:?}"));
        Self {
            _proc: Proc(child),
            out,
            otlp: u16::try_from(ports["otlp"].as_u64().unwrap()).unwrap(),
            mcp: u16::try_from(ports["mcp"].as_u64().unwrap()).unwrap(),
            otlp_http: u16::try_from(ports["otlp_http"].as_u64().unwrap()).unwrap(),
        }
    }

    fn entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every exported span, with the resource's attributes beside it.
    fn spans(&self) -> Vec<(Value, Value)> {
        let mut spans = Vec::new();
        for entry in self.entries() {
            let Some(export) = entry.get("export") else {
                continue;
            };
            for rs in export["resourceSpans"].as_array().unwrap() {
                for ss in rs["scopeSpans"].as_array().unwrap() {
                    for span in ss["spans"].as_array().unwrap() {
                        spans.push((span.clone(), rs["resource"].clone()));
                    }
                }
            }
        }
        spans
    }
}

/// A span attribute's value as a string (OTLP JSON: `{"stringValue": ...}` or `intValue`).
fn attribute(span: &Value, key: &str) -> Option<String> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| {
            let v = &a["value"];
            v.get("stringValue")
                .or_else(|| v.get("intValue"))
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .unwrap_or_default()
        })
}

/// OTLP JSON carries ids as base64: the hex form.
fn hex_id(b64: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().unwrap())
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn site(dir: &Path, telemetry: &str, mcp_port: Option<u16>) {
    std::fs::create_dir_all(dir.join("pol")).unwrap();
    std::fs::write(dir.join("pol/support-agent.yaml"), SUPPORT_AGENT).unwrap();
    let mcp = mcp_port.map_or_else(String::new, |port| {
        format!(
            "mcp_upstreams:\n  - {{ name: stub, url: \"http://127.0.0.1:{port}/mcp\", policy: support-agent }}\n"
        )
    });
    std::fs::write(
        dir.join("warden.yaml"),
        format!(
            "listen: 127.0.0.1:0\npolicies: pol\nkeys_file: keys.json\nstate: memory\nwatch: false\n\
             anonymous_policy: support-agent\n{telemetry}{mcp}"
        ),
    )
    .unwrap();
}

fn create_key(dir: &Path, tenant: &str) -> String {
    let out = Command::new(WARDEN)
        .args([
            "keys",
            "create",
            "--tenant",
            tenant,
            "--policy",
            "support-agent",
        ])
        .arg("--config")
        .arg(dir.join("warden.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn serve(dir: &Path) -> Server {
    Server::spawn(
        &["--config".as_ref(), dir.join("warden.yaml").as_os_str()],
        &dir.join("port"),
        &dir.join("serve.log"),
    )
}

#[test]
fn decisions_and_proxied_calls_are_traced_under_the_callers_trace_with_nothing_secret() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path());
    site(
        dir.path(),
        &format!(
            "telemetry:\n  otlp_endpoint: http://127.0.0.1:{}\n  sample_ratio: 0.0\n  \
             service_name: warden-under-test\n",
            collector.otlp
        ),
        Some(collector.mcp),
    );
    let key = create_key(dir.path(), "acme");
    let server = serve(dir.path());
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");

    // A decision under the caller's (sampled) trace, with secrets in arguments, session and
    // request id.
    let body = json!({
        "tool": "crm.read_customer", "session": "session-of-bob",
        "args": {"email": "alice@example.com", "card": "4111111111111111",
                 "note": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"}
    })
    .to_string();
    let reply = server.request(
        "POST",
        "/v1/decide",
        &[
            ("content-type", "application/json"),
            ("x-api-key", &key),
            ("traceparent", &traceparent),
            ("x-request-id", "AKIAQYLPMN5HFIQR7XYZ"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    // The deny that follows, in a batch, same trace.
    let batch = json!([
        {"tool": "send_email", "session": "session-of-bob", "args": {"to": "alice@example.com"}}
    ])
    .to_string();
    let reply = server.request(
        "POST",
        "/v1/decide/batch",
        &[
            ("content-type", "application/json"),
            ("x-api-key", &key),
            ("traceparent", &traceparent),
        ],
        Some(batch.as_bytes()),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body[0]["decision"], "deny", "{}", reply.text);
    // Without a traceparent and with sample_ratio 0, nothing is recorded.
    let reply = server.post_json(
        "/v1/decide",
        Some(&key),
        &json!({"tool": "crm.read_customer", "session": "unsampled"}),
    );
    assert_eq!(reply.status, 200);
    // An MCP request through the mount, under the caller's trace.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}})
    .to_string();
    let reply = server.request(
        "POST",
        "/mcp/stub",
        &[
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("x-api-key", &key),
            ("traceparent", &traceparent),
        ],
        Some(init.as_bytes()),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    // Stopping flushes the queue.
    server.stop();

    let spans = collector.spans();
    let decisions: Vec<&Value> = spans
        .iter()
        .map(|(s, _)| s)
        .filter(|s| s["name"] == "warden.decision")
        .collect();
    assert_eq!(decisions.len(), 2, "the sampled decisions only: {spans:#?}");
    for span in &decisions {
        assert_eq!(hex_id(&span["traceId"]), TRACE_ID);
        assert_eq!(hex_id(&span["parentSpanId"]), CALLER_SPAN);
        assert_eq!(attribute(span, "warden.tenant").as_deref(), Some("acme"));
        assert_eq!(
            attribute(span, "warden.policy").as_deref(),
            Some("support-agent")
        );
        assert!(
            attribute(span, "warden.policy.digest")
                .unwrap()
                .starts_with("sha256:")
        );
        assert!(attribute(span, "warden.latency_us").is_some());
    }
    let verdicts: Vec<_> = decisions
        .iter()
        .map(|s| (attribute(s, "warden.verdict"), attribute(s, "warden.rule")))
        .collect();
    assert!(
        verdicts.contains(&(Some("allow".into()), None)),
        "{verdicts:?}"
    );
    assert!(
        verdicts.contains(&(Some("deny".into()), Some("no-exfil".into()))),
        "{verdicts:?}"
    );
    // The client's request id was a secret: masked, not dropped.
    assert!(
        decisions
            .iter()
            .any(|s| attribute(s, "warden.request_id").as_deref() == Some("[REDACTED]")),
        "{decisions:#?}"
    );
    // The proxied call: a child of the caller's span, and the upstream's parent.
    let proxy: Vec<&Value> = spans
        .iter()
        .map(|(s, _)| s)
        .filter(|s| s["name"] == "warden.mcp.proxy")
        .collect();
    assert_eq!(proxy.len(), 1, "{spans:#?}");
    assert_eq!(hex_id(&proxy[0]["traceId"]), TRACE_ID);
    assert_eq!(hex_id(&proxy[0]["parentSpanId"]), CALLER_SPAN);
    assert_eq!(
        attribute(proxy[0], "warden.mcp.upstream").as_deref(),
        Some("stub")
    );
    assert_eq!(
        attribute(proxy[0], "http.response.status_code").as_deref(),
        Some("200")
    );
    let proxy_span = hex_id(&proxy[0]["spanId"]);
    let upstream: Vec<Value> = collector
        .entries()
        .into_iter()
        .filter_map(|e| e.get("upstream").cloned())
        .collect();
    assert_eq!(
        upstream[0]["traceparent"],
        format!("00-{TRACE_ID}-{proxy_span}-01"),
        "the upstream's parent is Warden's span: {upstream:?}"
    );
    for (_, resource) in &spans {
        assert!(
            resource.to_string().contains("warden-under-test"),
            "{resource}"
        );
    }
    // Nothing planted reached the collector, in any byte of any export.
    let mut exported = Vec::new();
    for entry in collector.entries() {
        if let Some(raw) = entry.get("raw") {
            exported.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(raw.as_str().unwrap())
                    .unwrap(),
            );
        }
    }
    assert!(!exported.is_empty());
    for secret in PLANTED {
        assert!(
            !exported
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "{secret} was exported"
        );
    }
}

#[test]
fn an_absent_collector_costs_decisions_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on.
    let port = common::mcp::free_port();
    site(
        dir.path(),
        &format!(
            "telemetry:\n  otlp_endpoint: http://127.0.0.1:{port}\n  export_timeout_ms: 200\n  \
             max_queue: 16\n"
        ),
        None,
    );
    let server = serve(dir.path());
    for i in 0..200 {
        let reply = server.post_json(
            "/v1/decide",
            None,
            &json!({"tool": "crm.read_customer", "session": format!("s{i}")}),
        );
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.body["decision"], "allow");
    }
    // And the daemon still stops cleanly, the unsent spans given up.
    server.stop();
}

#[test]
fn bad_telemetry_settings_stop_the_start_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    site(
        dir.path(),
        "telemetry:\n  otlp_endpoint: http://127.0.0.1:4317\n  sample_ratio: 2\n",
        None,
    );
    let out = Command::new(WARDEN)
        .args(["serve", "--config"])
        .arg(dir.path().join("warden.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("telemetry.sample_ratio"), "{stderr}");
}

/// OTLP over HTTP (binary protobuf) reaches an OTLP/HTTP receiver, and a gRPC caller's trace
/// context (`traceparent` in its metadata) parents the decision's span, as an HTTP caller's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_otlp_http_and_grpc_callers_pass_their_trace_context() {
    use warden_server::grpc_proto::DecisionRequest;
    use warden_server::grpc_proto::decision_service_client::DecisionServiceClient;

    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path());
    site(
        dir.path(),
        &format!(
            "telemetry:\n  otlp_endpoint: \"http://127.0.0.1:{}/v1/traces\"\n  otlp_protocol: http\n",
            collector.otlp_http
        ),
        None,
    );
    let server = serve(dir.path());
    let http_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let reply = server.request(
        "POST",
        "/v1/decide",
        &[
            ("content-type", "application/json"),
            (
                "traceparent",
                &format!("00-{http_trace}-00f067aa0ba902b7-01"),
            ),
        ],
        Some(br#"{"tool": "crm.read_customer", "session": "h"}"#),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);

    let grpc_trace = "0af7651916cd43dd8448eb211c80319c";
    let channel = tonic::transport::Channel::from_shared(server.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = DecisionServiceClient::new(channel);
    let mut request = tonic::Request::new(DecisionRequest {
        tool: Some("crm.read_customer".into()),
        session: Some("g".into()),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{grpc_trace}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    let answer = client.decide(request).await.unwrap().into_inner();
    assert_eq!(answer.decision, 1);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let traces: Vec<String> = collector
            .spans()
            .iter()
            .filter(|(span, _)| span["name"] == "warden.decision")
            .map(|(span, _)| hex_id(&span["traceId"]))
            .collect();
        if traces.iter().any(|t| t == http_trace) && traces.iter().any(|t| t == grpc_trace) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "decision spans of both callers not exported over OTLP/HTTP: {traces:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        collector
            .entries()
            .iter()
            .filter(|e| e.get("export").is_some())
            .all(|e| e["content_type"] == "application/x-protobuf"),
        "every export over HTTP, as protobuf"
    );
}
