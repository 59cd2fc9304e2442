//! Streamed text held back until the content detectors have seen what follows it.
//!
//! A model streams its answer a few characters at a time, so a card number or a key arrives
//! cut across chunks, and no chunk alone holds the finding. [`HeldText`] releases text only
//! when `hold` more characters have arrived after it: a finding at most `hold` characters long
//! that starts in the released part ends inside what has been seen, so it is found whole and
//! redacted before any of it is sent (the release point moves back to a finding's start when
//! it would cut one). Each scan covers the last `hold` characters already released (as
//! released, for the detectors' left context) and the text held; scans run once `step` new
//! characters have gathered beyond the `hold`, so each character is scanned about
//! `(2 * hold + step) / step` times: 5 at the default `step` of `hold / 2`, 2 at the `step` of
//! `2 * hold` a stream uses ([`HeldText::batched`]), which releases text in larger batches.
//!
//! A finding that starts in text already sent (one longer than `hold`, or one the detectors
//! only recognise by what follows it) cannot be redacted any more: the stream is cut, as a
//! finding the policy blocks is. Fail closed, never half a secret.

use warden_content::ContentPolicy;
use warden_core::{Kind, Request};

use crate::api::{Refusal, RefusalKind};

/// Characters held back by default: longer than every built-in detector's usual match (cards,
/// keys, tokens, addresses), short enough for a stream to stay a stream.
pub const DEFAULT_HOLD_CHARS: usize = 256;

/// Text of one streamed block, held until it is safe to release.
#[derive(Debug, Clone)]
pub struct HeldText {
    hold: usize,
    step: usize,
    /// The last `hold` characters released, as released.
    context: String,
    context_chars: usize,
    /// Received and not released.
    pending: String,
    pending_chars: usize,
}

/// The byte offset of char `n` in `s` (of `chars` chars; its length when `n` is past the end).
fn byte_at(s: &str, chars: usize, n: usize) -> usize {
    if chars == s.len() {
        // ASCII (as many chars as bytes): no need to walk the text.
        return n.min(s.len());
    }
    s.char_indices().nth(n).map_or(s.len(), |(b, _)| b)
}

fn blocked(message: String) -> Refusal {
    Refusal::new(RefusalKind::Blocked, message)
}

impl HeldText {
    /// Holds back `hold` characters (at least 1), scanning every `hold / 2` new ones.
    pub fn new(hold: usize) -> Self {
        let hold = hold.max(1);
        Self::with_step(hold, hold / 2)
    }

    /// Holds back `hold` characters (at least 1), scanning every `2 * hold` new ones: each
    /// character is scanned about twice (not five times), the text leaves in batches of
    /// `2 * hold` characters (at most `3 * hold` held). What a stream uses.
    pub fn batched(hold: usize) -> Self {
        let hold = hold.max(1);
        Self::with_step(hold, hold.saturating_mul(2))
    }

    fn with_step(hold: usize, step: usize) -> Self {
        Self {
            hold,
            step: step.max(1),
            context: String::new(),
            context_chars: 0,
            pending: String::new(),
            pending_chars: 0,
        }
    }

    /// Adds received text; returns what may be released now (often nothing).
    pub fn push(&mut self, delta: &str, content: &ContentPolicy) -> Result<String, Refusal> {
        self.pending.push_str(delta);
        self.pending_chars += delta.chars().count();
        if self.pending_chars < self.hold.saturating_add(self.step) {
            return Ok(String::new());
        }
        self.release(false, content)
    }

    /// The block ended: releases the rest.
    pub fn finish(&mut self, content: &ContentPolicy) -> Result<String, Refusal> {
        if self.pending.is_empty() {
            return Ok(String::new());
        }
        self.release(true, content)
    }

    fn release(&mut self, all: bool, content: &ContentPolicy) -> Result<String, Refusal> {
        let context_chars = self.context_chars;
        let mut text = String::with_capacity(self.context.len() + self.pending.len());
        text.push_str(&self.context);
        text.push_str(&self.pending);
        let request = Request {
            kind: Kind::Completion,
            text: Some(text),
            ..Request::default()
        };
        let outcome = warden_core::content::scan(content, &request);
        if let Some(rule) = outcome.deny {
            return Err(blocked(format!("Warden cut the answer: {rule}")));
        }
        let mut upto = if all {
            self.pending_chars
        } else {
            self.pending_chars - self.hold
        };
        let mut spans = Vec::new();
        if outcome.redacted.is_some() {
            let mut found: Vec<_> = outcome
                .findings
                .iter()
                .filter(|f| !f.key && f.path == "/text" && f.end > context_chars)
                .collect();
            found.sort_by_key(|f| f.start);
            for f in found {
                if f.start < context_chars {
                    return Err(blocked(format!(
                        "Warden cut the answer: content:{} found in text already sent",
                        f.detector
                    )));
                }
                let (start, end) = (f.start - context_chars, f.end - context_chars);
                if start < upto && end > upto {
                    upto = start;
                }
                spans.push((start, end, f.detector.as_str()));
            }
        }
        let chars = self.pending_chars;
        let cut = byte_at(&self.pending, chars, upto);
        let mut released = String::new();
        let mut last = 0;
        for (start, end, detector) in spans.into_iter().filter(|(_, end, _)| *end <= upto) {
            let (a, z) = (
                byte_at(&self.pending, chars, start),
                byte_at(&self.pending, chars, end),
            );
            if a < last {
                continue;
            }
            released.push_str(self.pending.get(last..a).unwrap_or_default());
            released.push_str("[REDACTED:");
            released.push_str(detector);
            released.push(']');
            last = z;
        }
        released.push_str(self.pending.get(last..cut).unwrap_or_default());
        self.pending.drain(..cut);
        self.pending_chars -= upto;
        self.context.push_str(&released);
        self.context_chars += released.chars().count();
        let excess = self.context_chars.saturating_sub(self.hold);
        if excess > 0 {
            let from = byte_at(&self.context, self.context_chars, excess);
            self.context.drain(..from);
            self.context_chars -= excess;
        }
        Ok(released)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use warden_content::{Action, ContentSpec};

    fn content(output: Action) -> ContentPolicy {
        let spec = ContentSpec {
            detectors: vec!["credit_card".to_owned(), "aws_access_key".to_owned()],
            output: Some(output),
            ..ContentSpec::default()
        };
        ContentPolicy::compile(&spec).unwrap()
    }

    fn stream(
        held: &mut HeldText,
        chunks: &[&str],
        content: &ContentPolicy,
    ) -> Result<String, Refusal> {
        let mut out = String::new();
        for chunk in chunks {
            out.push_str(&held.push(chunk, content)?);
        }
        out.push_str(&held.finish(content)?);
        Ok(out)
    }

    #[test]
    fn a_card_cut_across_chunks_is_redacted_at_every_cut() {
        let content = content(Action::Redact);
        let text = format!(
            "{}Your card is 4111 1111 1111 1111, keep it safe.{}",
            "a".repeat(300),
            " b".repeat(200)
        );
        for hold in [24, 64, 256] {
            for size in [1, 3, 7, 50] {
                let chars: Vec<char> = text.chars().collect();
                let chunks: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
                let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
                let out = stream(&mut HeldText::new(hold), &refs, &content).unwrap();
                assert!(
                    out.contains("Your card is [REDACTED:credit_card], keep"),
                    "hold {hold} size {size}: {out}"
                );
                assert!(!out.contains("4111"), "hold {hold} size {size}");
                assert_eq!(out.len(), text.len() - 19 + "[REDACTED:credit_card]".len());
            }
        }
    }

    #[test]
    fn text_is_held_back_until_hold_more_characters_arrived() {
        let content = content(Action::Redact);
        let mut held = HeldText::new(10);
        assert_eq!(held.push("0123456789abcd", &content).unwrap(), "");
        assert_eq!(held.push("e", &content).unwrap(), "01234");
        assert_eq!(held.finish(&content).unwrap(), "56789abcde");
    }

    #[test]
    fn a_blocking_finding_cuts_the_stream_naming_the_detector() {
        let content = content(Action::Deny);
        let e = stream(
            &mut HeldText::new(32),
            &["Here is the key: AKIAIOSF", "ODNN7EXAMPLE and more"],
            &content,
        )
        .unwrap_err();
        assert_eq!(e.kind, RefusalKind::Blocked);
        assert!(
            e.message.contains("content:aws_access_key"),
            "{}",
            e.message
        );
    }

    /// The text as a whole answer is redacted (what streaming must give, for findings shorter
    /// than the hold).
    fn redacted_whole(text: &str, content: &ContentPolicy) -> String {
        let request = Request {
            kind: Kind::Completion,
            text: Some(text.to_owned()),
            ..Request::default()
        };
        match warden_core::content::scan(content, &request).redacted {
            Some(serde_json::Value::String(redacted)) => redacted,
            _ => text.to_owned(),
        }
    }

    const WORDS: &[&str] = &[
        "the",
        "plan",
        "42",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "AKIAIOSFODNN7EXAMPLE",
        "naïve",
        "日本語",
        "😀",
        "\n",
        "1,250",
        "x",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Batched or not, at any chunking, the text released is the text redacted whole.
        #[test]
        fn released_text_is_the_whole_text_redacted_at_any_chunking(
            words in proptest::collection::vec(0..WORDS.len(), 0..200),
            sizes in proptest::collection::vec(1usize..300, 1..50),
            hold in proptest::sample::select(vec![24usize, 64, 256]),
        ) {
            let content = content(Action::Redact);
            // Words apart (a dash breaks a run of digits: two numbers side by side would read
            // as one longer than the hold).
            let text: String = words.iter().map(|w| format!("{} — ", WORDS[*w])).collect();
            let chars: Vec<char> = text.chars().collect();
            let mut chunks = Vec::new();
            let mut at = 0;
            for size in sizes.iter().cycle() {
                if at >= chars.len() {
                    break;
                }
                let end = (at + size).min(chars.len());
                chunks.push(chars[at..end].iter().collect::<String>());
                at = end;
            }
            let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
            let whole = redacted_whole(&text, &content);
            let batched = stream(&mut HeldText::batched(hold), &refs, &content).unwrap();
            proptest::prop_assert_eq!(&batched, &whole);
            let stepped = stream(&mut HeldText::new(hold), &refs, &content).unwrap();
            proptest::prop_assert_eq!(&stepped, &whole);
        }
    }

    #[test]
    fn a_finding_longer_than_the_hold_whose_start_was_sent_cuts_the_stream() {
        let content = content(Action::Redact);
        // 8 characters held: the first chunk releases `4111 `, which is no finding yet.
        let mut held = HeldText::new(8);
        let chunks = ["x x x x x x x x 4111 1111 1111 ", "1111 y y y y y y y y"];
        let e = stream(&mut held, &chunks, &content).unwrap_err();
        assert_eq!(e.kind, RefusalKind::Blocked);
        assert!(e.message.contains("already sent"), "{}", e.message);
    }
}
