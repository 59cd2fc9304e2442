//! The plain-event reading ([`crate::fast`]) against the general reader: on random streams
//! (random text, findings, chunkings, framings and ill-formed events), both produce the same
//! events (same names, same JSON) and the same refusals.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};
use warden_content::{Action, ContentPolicy, ContentSpec};
use warden_core::{Decision, PolicyInfo, Request, Verdict};
use warden_mcp::sse::{Event, SseSplitter};

use super::StreamRewriter;
use crate::api::{Api, RefusalKind};
use crate::{Asker, Judge};

/// Allows every decision (the answer, tool calls but `delete_*`).
struct Allow;

impl Judge for Allow {
    fn decide(&self, request: &Request) -> Result<Decision, String> {
        let deny = request
            .tool
            .as_deref()
            .is_some_and(|t| t.starts_with("delete_"));
        Ok(Decision {
            verdict: if deny { Verdict::Deny } else { Verdict::Allow },
            rule: deny.then(|| Arc::from("no-delete")),
            reasons: Vec::new(),
            warnings: Vec::new(),
            taints: Vec::new(),
            findings: Vec::new(),
            redacted: None,
            dry_run_decision: None,
            policy: PolicyInfo {
                name: Arc::from("p"),
                version: None,
                digest: Arc::from("sha256:0"),
            },
            token: None,
            approval: None,
            audited: Vec::new(),
            rewrite: None,
        })
    }

    fn content(&self) -> Option<Arc<ContentPolicy>> {
        None
    }
}

fn policy(output: Action) -> ContentPolicy {
    ContentPolicy::compile(&ContentSpec {
        detectors: vec![
            "email".to_owned(),
            "credit_card".to_owned(),
            "aws_access_key".to_owned(),
        ],
        output: Some(output),
        ..ContentSpec::default()
    })
    .unwrap()
}

/// A small deterministic generator (the property's input is its seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap()
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "the",
    "review",
    "covered",
    "42",
    "tickets;",
    "4111 1111 1111 1111",
    "jane.doe@example.com",
    "AKIAIOSFODNN7EXAMPLE",
    "naïve",
    "日本語",
    "😀",
    "\n",
    "\"quoted\"",
    "back\\slash",
    "tab\there",
    "\u{1}",
    "</script>",
];

fn text(rng: &mut Rng) -> String {
    let mut out = String::new();
    for _ in 0..rng.below(60) {
        out.push_str(rng.pick(WORDS));
        out.push(' ');
    }
    out
}

/// `text` cut into pieces of 1 to 40 characters.
fn pieces(rng: &mut Rng, text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let n = 1 + rng.below(40);
        let end = (at + n).min(chars.len());
        out.push(chars[at..end].iter().collect());
        at = end;
    }
    out
}

/// One event with data `data`, framed in one of the ways providers (and odd upstreams) do.
fn frame(rng: &mut Rng, name: Option<&str>, data: &str) -> String {
    let mut event = String::new();
    if rng.chance(5) {
        event.push_str(": keep-alive\n");
    }
    if let Some(name) = name {
        event.push_str("event: ");
        event.push_str(name);
        event.push('\n');
    }
    if rng.chance(5) {
        event.push_str("id: 7\n");
    }
    match rng.below(20) {
        0 => {
            event.push_str("data:");
            event.push_str(data);
            event.push('\n');
        }
        _ => {
            event.push_str("data: ");
            event.push_str(data);
            event.push('\n');
        }
    }
    event.push('\n');
    if rng.chance(5) {
        event = event.replace('\n', "\r\n");
    }
    event
}

/// A JSON text spelled differently but meaning the same (escapes, spaces), now and then.
fn respell(rng: &mut Rng, json: String) -> String {
    match rng.below(10) {
        0 => json.replacen("e", "\\u0065", 1),
        1 => json.replace(",\"", ", \""),
        2 => json.replace(':', " : "),
        _ => json,
    }
}

/// Events that must be refused or read in full (each replaces a plain event now and then).
fn odd_openai(rng: &mut Rng) -> String {
    let odd = [
        "{\"id\":\"c\",\"id\":\"d\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}",
        "{\"id\":\"c\",\"choices\":[{\"index\":0,\"index\":1,\"delta\":{\"content\":\"x\"}}]}",
        "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\",\"content\":\"4111 1111 1111 1111\"}}]}",
        "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}],\"note\":\"y\"}",
        "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\ud800\"}}]}",
        "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":7}}]}",
        "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":null}]}",
        "{\"id\":null,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}",
        "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"logprobs\":{\"content\":[]}}]}",
        "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\",\"tool_calls\":null}}]}",
        "{\"id\":\"c\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2},\"choices\":[]}",
        "{\"id\":\"c\",\"created\":1e400,\"choices\":[]}",
        "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]} trailing",
        "[{\"id\":\"c\"}]",
        "{\"error\":{\"message\":\"card 4111 1111 1111 1111\"}}",
    ];
    odd[rng.below(odd.len())].to_owned()
}

fn odd_anthropic(rng: &mut Rng) -> (String, String) {
    let odd = [
        (
            "content_block_delta",
            "{\"type\":\"content_block_delta\",\"index\":0,\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}",
        ),
        (
            "content_block_delta",
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\",\"text\":\"y\"}}",
        ),
        (
            "content_block_delta",
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"},\"note\":\"4111 1111 1111 1111\"}",
        ),
        (
            "content_block_delta",
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"x\"}}",
        ),
        (
            "content_block_delta",
            "{\"type\":\"content_block_delta\",\"index\":5,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}",
        ),
        (
            "ping",
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}",
        ),
        (
            "content_block_delta",
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\\udc00\"}}",
        ),
        (
            "content_block_delta",
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":null}}",
        ),
        (
            "content_block_delta",
            "{\"type\":\"content_block_delta\",\"index\":\"0\",\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}",
        ),
        ("ping", "{\"type\":\"ping\"}"),
    ];
    let (name, data) = odd[rng.below(odd.len())];
    (name.to_owned(), data.to_owned())
}

fn openai_stream(rng: &mut Rng) -> Vec<u8> {
    let mut events = String::new();
    let head =
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"});
    let chunk = |choices: Value| {
        let mut c = head.clone();
        c["choices"] = choices;
        c.to_string()
    };
    if rng.chance(80) {
        let data = chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        );
        events.push_str(&frame(rng, None, &data));
    }
    let choices = 1 + rng.below(2);
    let mut parts: Vec<(usize, &str, String)> = Vec::new();
    for index in 0..choices {
        let member = if rng.chance(15) { "refusal" } else { "content" };
        let said = text(rng);
        for piece in pieces(rng, &said) {
            parts.push((index, member, piece));
        }
    }
    for (index, member, piece) in parts {
        let data = if rng.chance(3) {
            odd_openai(rng)
        } else {
            respell(
                rng,
                chunk(json!([{"index": index, "delta": {member: piece}, "finish_reason": null}])),
            )
        };
        events.push_str(&frame(rng, None, &data));
    }
    for index in 0..choices {
        if rng.chance(80) {
            let data = chunk(json!([{"index": index, "delta": {}, "finish_reason": "stop"}]));
            events.push_str(&frame(rng, None, &data));
        }
    }
    if rng.chance(50) {
        let mut c = head.clone();
        c["choices"] = json!([]);
        c["usage"] = json!({"prompt_tokens": 5, "completion_tokens": 9});
        events.push_str(&frame(rng, None, &c.to_string()));
    }
    events.push_str("data: [DONE]\n\n");
    events.into_bytes()
}

fn anthropic_stream(rng: &mut Rng) -> Vec<u8> {
    let mut events = String::new();
    let start = "{\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}";
    events.push_str(&frame(rng, Some("message_start"), start));
    let blocks = if rng.chance(30) {
        vec![(0, "thinking"), (1, "text")]
    } else {
        vec![(0, "text")]
    };
    for (index, kind) in blocks {
        let block = json!({"type": "content_block_start", "index": index, "content_block": {"type": kind, kind: ""}});
        events.push_str(&frame(rng, Some("content_block_start"), &block.to_string()));
        let said = text(rng);
        for piece in pieces(rng, &said) {
            let (name, data) = if rng.chance(3) {
                odd_anthropic(rng)
            } else {
                let delta_kind = format!("{kind}_delta");
                let body = json!({"type": "content_block_delta", "index": index, "delta": {"type": delta_kind, kind: piece}});
                (
                    "content_block_delta".to_owned(),
                    respell(rng, body.to_string()),
                )
            };
            let name = if rng.chance(5) {
                None
            } else {
                Some(name.as_str())
            };
            events.push_str(&frame(rng, name, &data));
        }
        let stop = json!({"type": "content_block_stop", "index": index});
        events.push_str(&frame(rng, Some("content_block_stop"), &stop.to_string()));
    }
    let delta = "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}";
    events.push_str(&frame(rng, Some("message_delta"), delta));
    events.push_str(&frame(
        rng,
        Some("message_stop"),
        "{\"type\":\"message_stop\"}",
    ));
    events.into_bytes()
}

/// What a client reads of `out`: each event's name and data (JSON compared as JSON, so two
/// spellings of one document are equal).
fn read(out: &[u8]) -> Vec<(Option<String>, Value)> {
    let mut splitter = SseSplitter::new();
    let mut events = Vec::new();
    for raw in splitter.push(out).unwrap() {
        let event = Event::parse(&raw).unwrap();
        let data = event.data.unwrap_or_default();
        let value = serde_json::from_slice(&data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&data).into_owned()));
        events.push((event.event, value));
    }
    assert!(splitter.finish().is_empty());
    events
}

/// The client's events, how the stream ended (`None`: complete) and the usage read.
type Outcome = (
    Vec<(Option<String>, Value)>,
    Option<(RefusalKind, String)>,
    Option<crate::Usage>,
);

fn rewrite(
    api: Api,
    full: bool,
    hold: usize,
    stream: &[u8],
    cuts: &[usize],
    content: &ContentPolicy,
) -> Outcome {
    let mut rewriter = StreamRewriter::new(api, Asker::default(), hold);
    if full {
        rewriter = rewriter.full_reads_only();
    }
    let mut out = Vec::new();
    let mut last = 0;
    let mut error = None;
    for &cut in cuts.iter().chain([stream.len()].iter()) {
        let cut = cut.clamp(last, stream.len());
        match rewriter.push(&stream[last..cut], &Allow, Some(content)) {
            Ok(bytes) => out.extend(bytes),
            Err(e) => {
                error = Some((e.kind, e.message));
                break;
            }
        }
        last = cut;
        if rewriter.ended() {
            break;
        }
    }
    if error.is_none()
        && let Err(e) = rewriter.finish()
    {
        error = Some((e.kind, e.message));
    }
    (read(&out), error, rewriter.usage())
}

fn same_as_full_reads(seed: u64) {
    let mut rng = Rng(seed | 1);
    let api = if rng.chance(50) {
        Api::Openai
    } else {
        Api::Anthropic
    };
    let stream = match api {
        Api::Openai => openai_stream(&mut rng),
        Api::Anthropic => anthropic_stream(&mut rng),
    };
    // Cut anywhere, even inside a UTF-8 sequence or a line ending.
    let mut cuts: Vec<usize> = (0..rng.below(30))
        .map(|_| rng.below(stream.len()))
        .collect();
    cuts.sort_unstable();
    let hold = [1, 8, 16, 64, 256][rng.below(5)];
    let content = policy(if rng.chance(20) {
        Action::Deny
    } else {
        Action::Redact
    });
    let fast = rewrite(api, false, hold, &stream, &cuts, &content);
    let full = rewrite(api, true, hold, &stream, &cuts, &content);
    assert_eq!(
        fast,
        full,
        "seed {seed}: {}",
        String::from_utf8_lossy(&stream)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plain_events_read_in_place_rewrite_as_the_full_reader_does(seed in any::<u64>()) {
        same_as_full_reads(seed);
    }
}

/// One OpenAI text chunk, pushed alone after a role chunk; the rewriter's output or refusal.
fn openai_once(data: &[u8], full: bool) -> Result<Vec<u8>, (RefusalKind, String)> {
    let mut rewriter = StreamRewriter::new(Api::Openai, Asker::default(), 16);
    if full {
        rewriter = rewriter.full_reads_only();
    }
    let mut event = b"data: ".to_vec();
    event.extend_from_slice(data);
    event.extend_from_slice(b"\n\n");
    rewriter
        .push(&event, &Allow, None)
        .map_err(|e| (e.kind, e.message))
}

fn anthropic_once(data: &[u8], full: bool) -> Result<Vec<u8>, (RefusalKind, String)> {
    let mut rewriter = StreamRewriter::new(Api::Anthropic, Asker::default(), 16);
    if full {
        rewriter = rewriter.full_reads_only();
    }
    let start = b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
    rewriter.push(start, &Allow, None).unwrap();
    let mut event = b"event: content_block_delta\ndata: ".to_vec();
    event.extend_from_slice(data);
    event.extend_from_slice(b"\n\n");
    rewriter
        .push(&event, &Allow, None)
        .map_err(|e| (e.kind, e.message))
}

#[test]
fn repeated_members_and_ill_formed_text_are_refused_as_before() {
    let openai: &[&[u8]] = &[
        br#"{"id":"c","id":"d","choices":[{"index":0,"delta":{"content":"x"}}]}"#,
        br#"{"id":"c","choices":[{"index":0,"index":1,"delta":{"content":"x"}}]}"#,
        br#"{"id":"c","choices":[{"index":0,"delta":{"content":"x","content":"y"}}]}"#,
        br#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","role":"user"}}]}"#,
        br#"{"id":"c","choices":[{"index":0,"delta":{"content":"\ud800"}}]}"#,
        b"{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xff\xfe\"}}]}",
        b"{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\x01b\"}}]}",
        br#"{"id":"c","choices":[{"index":0,"delta":{"content":"x"}}]}{}"#,
        br#"{"id":"c","choices":[{"index":0,"delta":{"content":"x"}}],"note":"y"}"#,
    ];
    for data in openai {
        let fast = openai_once(data, false).unwrap_err();
        assert_eq!(
            fast.0,
            RefusalKind::Blocked,
            "{}",
            String::from_utf8_lossy(data)
        );
        assert_eq!(Err(fast), openai_once(data, true));
    }
    let anthropic: &[&[u8]] = &[
        br#"{"type":"content_block_delta","index":0,"index":0,"delta":{"type":"text_delta","text":"x"}}"#,
        br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x","text":"y"}}"#,
        br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","type":"text_delta","text":"x"}}"#,
        br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\udc00"}}"#,
        b"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\xc3\"}}",
        br#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"x"}}"#,
    ];
    for data in anthropic {
        let fast = anthropic_once(data, false).unwrap_err();
        assert_eq!(
            fast.0,
            RefusalKind::Blocked,
            "{}",
            String::from_utf8_lossy(data)
        );
        assert_eq!(Err(fast), anthropic_once(data, true));
    }
}

#[test]
fn a_plain_event_is_forwarded_as_received_but_for_its_text() {
    // No inspection: the text is released as it comes, so the event leaves byte for byte.
    let data = br#"{"id":"c", "object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"caf\u00e9 \"ok\""},"finish_reason":null}]}"#;
    let mut expected = b"data: ".to_vec();
    expected.extend_from_slice(data);
    expected.extend_from_slice(b"\n\n");
    assert_eq!(openai_once(data, false).unwrap(), expected);
    // Held: only the text member changes (to what is released now, nothing yet).
    let mut rewriter = StreamRewriter::new(Api::Openai, Asker::default(), 16);
    let content = policy(Action::Redact);
    let mut event = b"data: ".to_vec();
    event.extend_from_slice(data);
    event.extend_from_slice(b"\n\n");
    let out = rewriter.push(&event, &Allow, Some(&content)).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"data: {"id":"c", "object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":""},"finish_reason":null}]}

"#
    );
}
