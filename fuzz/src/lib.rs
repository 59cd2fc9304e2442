//! The fuzzed functions, one per target: each feeds arbitrary bytes to one of Warden's parsers
//! and checks what must hold for any input (no panic, and the invariants named inline). The
//! libFuzzer targets in `fuzz_targets/` and the corpus replay in `tests/corpus.rs` both call
//! these, so a crash found by fuzzing is replayed by `cargo test` once its input is in the corpus.
#![forbid(unsafe_code)]

use serde_json::Value;
use warden_content::{ContentPolicy, ContentSpec, Part, ScanRequest};
use warden_core::{CompileOptions, CompiledPolicy, Engine, Request};
use warden_mcp::message::Message;
use warden_mcp::sse::{Event, SseSplitter};

/// Every fuzzed function by target name (the corpus directory's name).
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("policy_loader", policy_loader),
    ("request_parser", request_parser),
    ("if_expr", if_expr),
    ("content_scan", content_scan),
    ("jcs", jcs),
    ("mcp_message", mcp_message),
    ("sse", sse),
];

/// The policy loader: YAML or JSON text to a compiled policy, or located errors. A policy that
/// compiles decides an empty tool call without panicking.
pub fn policy_loader(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match CompiledPolicy::compile("fuzz.yaml", text, CompileOptions::default()) {
        Ok(policy) => {
            if let Ok(request) = Request::from_json(br#"{"session":"s","tool":"t","args":{}}"#) {
                let _ = Engine::new(policy).decide(&request);
            }
        }
        Err(e) => assert!(!e.diagnostics.is_empty(), "an error names a problem"),
    }
}

/// A fixed policy that exercises every argument condition, a sequence and content inspection.
const DECIDING_POLICY: &str = r#"
warden: 1
name: fuzz
default: allow
tools: { "crm.*": [sensitive_read] }
content: { detectors: [email, credit_card, iban, us_ssn, jwt], input: redact, output: redact }
rules:
  - { id: r, effect: allow, classes: [sensitive_read], add_taints: [pii] }
  - { id: s, effect: deny, tools: [send], after: { classes: [sensitive_read] } }
  - { id: a, effect: deny, args: { /to: { any: { matches: "(?i)@evil" } }, /n: { one_of: [1, 9007199254740993] } } }
  - { id: b, effect: allow, args: { /x: { all: { max_len: 3, contains: "a" } }, /y: { equals: { k: [1.5] } } } }
"#;

/// The request parser: bytes to a request or a 4xx-style error. A parsed request is decided.
pub fn request_parser(data: &[u8]) {
    let Ok(request) = Request::from_json(data) else {
        return;
    };
    if let Ok(policy) =
        CompiledPolicy::compile("fuzz.yaml", DECIDING_POLICY, CompileOptions::default())
    {
        if let Ok(decision) = Engine::new(policy).decide(&request) {
            assert!(decision.findings.iter().all(|f| f.start <= f.end));
        }
    }
}

/// `if` expressions: parse, and the parsed expression renders without panicking.
pub fn if_expr(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(expr) = warden_core::expr::parse(text) {
        let _ = format!("{expr:?}");
    }
}

/// Content scanners: every detector and the injection heuristics over a text and, when the
/// bytes are JSON, over the value. Offsets stay inside the scanned string.
pub fn content_scan(data: &[u8]) {
    let spec = ContentSpec {
        detectors: warden_content::KNOWN_DETECTORS
            .iter()
            .map(|d| (*d).to_owned())
            .collect(),
        input: Some(warden_content::Action::Redact),
        injection: Some(warden_content::InjectionAction::Warn),
        ..ContentSpec::default()
    };
    let Ok(policy) = ContentPolicy::compile(&spec) else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let mut scan = ScanRequest::default();
    scan.input.push(("/text", Part::Text(&text)));
    scan.injection.push(("/text", Part::Text(&text)));
    scan.redact_target = Some("/text");
    let out = policy.scan(&scan);
    let chars = text.chars().count();
    for f in &out.findings {
        assert!(
            f.start <= f.end && f.end <= chars,
            "finding outside the text"
        );
    }
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let mut scan = ScanRequest::default();
        scan.input.push(("/args", Part::Value(&value)));
        scan.redact_target = Some("/args");
        let _ = policy.scan(&scan);
    }
}

/// JCS (RFC 8785): canonical bytes are valid JSON, equal to the input as a value, and a fixed
/// point.
pub fn jcs(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(canonical) = warden_proof::canonicalize(&value) else {
        return;
    };
    let back: Value = match serde_json::from_slice(&canonical) {
        Ok(back) => back,
        Err(e) => panic!("canonical form is not JSON: {e}"),
    };
    let again = warden_proof::canonicalize(&back);
    assert!(
        again.as_ref().is_ok_and(|again| *again == canonical),
        "canonical form is not a fixed point"
    );
}

/// MCP message framing: a message read strictly is written again as one line holding no line
/// break of any kind, which reads back as the same message.
pub fn mcp_message(data: &[u8]) {
    let Ok(message) = Message::parse(data) else {
        return;
    };
    let bytes = message.to_bytes();
    let text = std::str::from_utf8(&bytes).expect("written JSON is UTF-8");
    assert!(
        !text.contains(['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}']),
        "a line break in a forwarded message"
    );
    let again = Message::parse_line(&bytes).expect("a written message reads back");
    assert_eq!(again, message, "writing changed the message");
}

/// SSE parsing: split a stream fed in two chunks; the events and the rest are the stream (less
/// a leading byte-order mark); each readable event written again with new data reads back with
/// the same fields and that data, and holds no carriage return.
pub fn sse(data: &[u8]) {
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (a, b) = data.split_at(cut);
    let mut splitter = SseSplitter::new();
    let mut events = Vec::new();
    for chunk in [a, b] {
        match splitter.push(chunk) {
            Ok(mut done) => events.append(&mut done),
            Err(_) => return,
        }
    }
    let rest = splitter.finish();
    let joined: Vec<u8> = events
        .iter()
        .flatten()
        .chain(rest.iter())
        .copied()
        .collect();
    let expected = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    // A stream shorter than a byte-order mark that is a prefix of one is held back.
    if !(expected.len() < 3 && b"\xEF\xBB\xBF".starts_with(expected) && joined.is_empty()) {
        assert_eq!(joined, expected, "the splitter loses or adds bytes");
    }
    for raw in &events {
        let Ok(event) = Event::parse(raw) else {
            continue;
        };
        let written = event.write(Some(br#"{"x":1}"#));
        assert!(!written.contains(&b'\r'), "a carriage return written");
        let back = Event::parse(&written).expect("a written event reads back");
        assert_eq!(back.data.as_deref(), Some(&br#"{"x":1}"#[..]));
        assert_eq!(
            (back.id, back.event, back.retry),
            (event.id, event.event, event.retry)
        );
    }
}
