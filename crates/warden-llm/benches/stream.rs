//! Streaming inspection throughput (criterion): an OpenAI and an Anthropic stream of 256 KiB of
//! answer text, in chunks of 24 characters (as models send them token by token) and of 256
//! characters (as providers batching tokens send them), rewritten by [`StreamRewriter`] under a
//! policy redacting the common PII and secret detectors; the baseline is the same stream split
//! into events and parsed as JSON without inspection (what any proxy reading the events must
//! do). Criterion's throughput counts the stream's bytes (events as sent); the answer's text
//! bytes for each case are printed first, to convert (text/s = stream/s x text / stream).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use warden_content::{Action, ContentPolicy, ContentSpec};
use warden_core::{Decision, PolicyInfo, Request, Verdict};
use warden_llm::stream::StreamRewriter;
use warden_llm::{Api, Asker, Judge};

const DETECTORS: &[&str] = &[
    "email",
    "credit_card",
    "us_ssn",
    "phone",
    "iban",
    "aws_access_key",
    "github_token",
    "private_key",
    "jwt",
];

struct Allow(Arc<ContentPolicy>);

impl Judge for Allow {
    fn decide(&self, _request: &Request) -> Result<Decision, String> {
        Ok(Decision {
            verdict: Verdict::Allow,
            rule: None,
            reasons: Vec::new(),
            warnings: Vec::new(),
            taints: Vec::new(),
            findings: Vec::new(),
            redacted: None,
            dry_run_decision: None,
            policy: PolicyInfo {
                name: Arc::from("bench"),
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
        Some(Arc::clone(&self.0))
    }
}

/// Prose with a finding every ~2 KB.
fn answer(len: usize) -> String {
    let prose = "The quarterly review covered 42 open tickets and 7 incidents; version 3.2.1 fixed the retry bug for 1,250 users, and the migration plan is on track for March. ";
    let hits = [
        "Write to jane.doe@example.com today. ",
        "Card 4111 1111 1111 1111 was declined. ",
        "Key AKIAIOSFODNN7EXAMPLE rotated. ",
    ];
    let mut text = String::new();
    let mut n = 0;
    while text.len() < len {
        text.push_str(prose);
        if text.len() / 2048 > n {
            text.push_str(hits[n % hits.len()]);
            n += 1;
        }
    }
    text
}

fn events(api: Api, text: &str, chunk: usize) -> Vec<Vec<u8>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    if api == Api::Anthropic {
        out.push(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n".to_vec());
        out.push(b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_vec());
    }
    for piece in chars.chunks(chunk) {
        let piece: String = piece.iter().collect();
        let event = match api {
            Api::Openai => format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]})
            ),
            Api::Anthropic => format!(
                "event: content_block_delta\ndata: {}\n\n",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})
            ),
        };
        out.push(event.into_bytes());
    }
    match api {
        Api::Openai => {
            out.push(format!("data: {}\n\n", json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})).into_bytes());
            out.push(b"data: [DONE]\n\n".to_vec());
        }
        Api::Anthropic => {
            out.push(b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".to_vec());
            out.push(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":100}}\n\n".to_vec());
            out.push(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_vec());
        }
    }
    out
}

fn streams(c: &mut Criterion) {
    let content = Arc::new(
        ContentPolicy::compile(&ContentSpec {
            detectors: DETECTORS.iter().map(|d| (*d).to_owned()).collect(),
            output: Some(Action::Redact),
            ..ContentSpec::default()
        })
        .unwrap(),
    );
    let judge = Allow(Arc::clone(&content));
    let text = answer(256 * 1024);
    let mut group = c.benchmark_group("llm_stream");
    group.sample_size(20);
    for (api, chunk) in [
        (Api::Openai, 24),
        (Api::Anthropic, 24),
        (Api::Openai, 256),
        (Api::Anthropic, 256),
    ] {
        let events = events(api, &text, chunk);
        let stream_bytes: usize = events.iter().map(Vec::len).sum();
        eprintln!(
            "llm_stream {}/chunk_{chunk}: {} text bytes in {stream_bytes} stream bytes ({} events)",
            api.as_str(),
            text.len(),
            events.len()
        );
        // The rewriter must really redact (a fast path that skipped the text would flatter).
        let mut rewriter = StreamRewriter::new(api, Asker::default(), 256);
        let mut sent = Vec::new();
        for event in &events {
            sent.extend(rewriter.push(event, &judge, Some(&content)).unwrap());
        }
        rewriter.finish().unwrap();
        let sent = String::from_utf8(sent).unwrap();
        assert!(!sent.contains("4111 1111 1111 1111") && !sent.contains("AKIAIOSFODNN7EXAMPLE"));
        assert!(sent.contains("[REDACTED:credit_card]") && sent.contains("[REDACTED:email]"));
        group.throughput(Throughput::Bytes(stream_bytes as u64));
        let name = |what: &str| format!("{}/chunk_{chunk}/{what}", api.as_str());
        group.bench_function(name("parse_only"), |b| {
            b.iter(|| {
                let mut splitter = warden_mcp::sse::SseSplitter::new();
                let mut n = 0usize;
                for event in &events {
                    for raw in splitter.push(event).unwrap() {
                        let data = warden_mcp::sse::event_data(&raw).unwrap();
                        if data != b"[DONE]" {
                            let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
                            n += v.as_object().map_or(0, serde_json::Map::len);
                        }
                    }
                }
                black_box(n)
            });
        });
        group.bench_function(name("inspected_hold_256"), |b| {
            b.iter(|| {
                let mut rewriter = StreamRewriter::new(api, Asker::default(), 256);
                let mut out = 0usize;
                for event in &events {
                    out += rewriter.push(event, &judge, Some(&content)).unwrap().len();
                }
                rewriter.finish().unwrap();
                black_box(out)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, streams);
criterion_main!(benches);
