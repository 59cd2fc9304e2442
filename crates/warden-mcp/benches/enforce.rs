#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]
//! The enforcement core per message, in process (no transport): what Warden adds to each
//! `tools/call` round trip before any network hop.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use warden_core::{CompileOptions, CompiledPolicy, Engine};
use warden_mcp::{Caller, Enforcer, Exchange, MemoryPinStore, Outcome};

const POLICY: &str = r#"
warden: 1
name: mcp-bench
default: deny
tools:
  echo: [internal]
  get-sum: [web]
  "crm.*": [sensitive_read]
  send_email: [external_write]
rules:
  - { id: internal, effect: allow, classes: [internal] }
  - { id: web, effect: allow, classes: [web], add_taints: [untrusted] }
  - { id: reads, effect: allow, classes: [sensitive_read], add_taints: [pii] }
  - { id: results, effect: allow, kinds: [tool_result] }
  - { id: no-exfil, effect: deny, classes: [external_write], if: "taint:pii", reason: "external write after PII access" }
  - { id: no-shell, effect: deny, tools: ["shell*"], reason: "no shell" }
"#;

fn enforcer(content: bool) -> Enforcer {
    let text = if content {
        format!(
            "{POLICY}content:\n  detectors: [email, credit_card, aws_access_key]\n  input: redact\n  output: redact\n"
        )
    } else {
        POLICY.to_owned()
    };
    let policy = CompiledPolicy::compile("bench", &text, CompileOptions::default()).unwrap();
    Enforcer::new(
        Arc::new(Engine::new(policy)),
        Arc::new(MemoryPinStore::new()),
        "bench",
    )
}

fn bench(c: &mut Criterion) {
    let caller = Caller {
        session: Some("s1".to_owned()),
        principal: Some("agent:bench".to_owned()),
    };
    let call = br#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello there, nothing secret here"}}}"#;
    let result = br#"{"result":{"content":[{"type":"text","text":"Echo: hello there, nothing secret here"}]},"jsonrpc":"2.0","id":42}"#;
    let denied = br#"{"jsonrpc":"2.0","id":43,"method":"tools/call","params":{"name":"shell_exec","arguments":{"cmd":"ls"}}}"#;
    let notification = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1,"total":5}}"#;

    for (name, content) in [("plain", false), ("content_redact", true)] {
        let e = enforcer(content);
        let ex = Exchange::new();
        c.bench_function(&format!("tools_call_round_trip/{name}"), |b| {
            b.iter(|| {
                let out = e.client_message(&caller, &ex, black_box(call));
                assert!(matches!(out, Outcome::Forward(_)));
                black_box(e.server_message(&caller, &ex, black_box(result)))
            });
        });
    }
    let e = enforcer(false);
    let ex = Exchange::new();
    c.bench_function("tools_call_denied", |b| {
        b.iter(|| black_box(e.client_message(&caller, &ex, black_box(denied))));
    });
    c.bench_function("pass_through_notification", |b| {
        b.iter(|| black_box(e.client_message(&caller, &ex, black_box(notification))));
    });
    let tools: Vec<_> = (0..20)
        .map(|i| json!({"name": format!("tool{i}"), "description": "A tool that does things", "inputSchema": {"type": "object", "properties": {"x": {"type": "string"}}}}))
        .chain([json!({"name": "echo", "description": "Echo", "inputSchema": {"type": "object"}})])
        .collect();
    let list = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 7, "result": {"tools": tools}}))
        .unwrap();
    let request = br#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;
    c.bench_function("tools_list_21_tools_filter_and_pin", |b| {
        b.iter(|| {
            e.client_message(&caller, &ex, request);
            black_box(e.server_message(&caller, &ex, black_box(&list)))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
