//! The common streamed events, read without a `serde_json::Value` tree: an OpenAI chunk that
//! only carries text (`delta.content`, `delta.refusal`) and an Anthropic `text_delta` or
//! `thinking_delta`. Nearly every event of a streamed answer is one of these, so reading them
//! into borrowed, typed structs (and writing them back as received, with only the text member
//! replaced) is where a stream's time goes.
//!
//! A reader here answers "this is the plain case" or "not mine": every shape it does not
//! accept (an unknown or repeated member, a `null` where the general reader would keep it, a
//! string with an escape it cannot borrow, a finish, a tool call, usage, an error...) goes to
//! the general reader in `stream.rs`, which decides it exactly as before. So the plain case
//! must accept only documents the general reader accepts, with the same meaning:
//! - every struct denies unknown members, and serde refuses a member given twice, at every
//!   level read; no value is skipped unread except the text members, which are decoded as
//!   strings (their escapes and surrogates checked) before anything is sent;
//! - data holding a line break is not read here (written back as received, it would end the
//!   SSE line early).
//!
//! The bytes forwarded are the bytes read: the event's data as received, with each text member
//! (found by its position in the data) replaced by the text Warden releases.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

/// An event framed as providers frame them, `data: X\n\n` or `event: NAME\ndata: X\n\n`
/// (no carriage return anywhere, NAME UTF-8): its name and data, borrowed. The same fields
/// `warden_mcp::sse::Event::parse` reads from such an event, without copying the data; any
/// other framing (comments, `id`, several `data` lines, `\r\n`) is `None` and read by it.
pub(crate) fn framing(raw: &[u8]) -> Option<(Option<&str>, &[u8])> {
    let body = raw.strip_suffix(b"\n\n")?;
    if body.contains(&b'\r') {
        return None;
    }
    let (name, line) = match body.strip_prefix(b"event: ") {
        Some(rest) => {
            let at = rest.iter().position(|b| *b == b'\n')?;
            let name = std::str::from_utf8(rest.get(..at)?).ok()?;
            (Some(name), rest.get(at + 1..)?)
        }
        None => (None, body),
    };
    let data = line.strip_prefix(b"data: ")?;
    if data.contains(&b'\n') {
        return None;
    }
    Some((name, data))
}

/// A scalar member Warden keeps for the chunks it adds (`id`, `object`, `created`, `model`):
/// a string without escapes or an unsigned integer; anything else (`null` included, which the
/// general reader keeps as `null`) is not the plain case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scalar<'a> {
    Str(&'a str),
    Int(u64),
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an unsigned integer")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Scalar::Str(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Scalar<'_> {
    /// Whether `value` (the one kept) is this scalar already.
    pub(crate) fn is(&self, value: Option<&serde_json::Value>) -> bool {
        match (self, value) {
            (Scalar::Str(s), Some(serde_json::Value::String(v))) => v == s,
            (Scalar::Int(n), Some(v)) => v.as_u64() == Some(*n),
            _ => false,
        }
    }

    /// The scalar as a JSON value.
    pub(crate) fn value(&self) -> serde_json::Value {
        match self {
            Scalar::Str(s) => serde_json::Value::String((*s).to_owned()),
            Scalar::Int(n) => serde_json::Value::from(*n),
        }
    }
}

/// A present member, `null` refused (absent is `None` through `default`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// An OpenAI stream chunk, as the plain case reads it (members as `OPENAI_CHUNK_MEMBERS`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkDe<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<Scalar<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    object: Option<Scalar<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    created: Option<Scalar<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    model: Option<Scalar<'a>>,
    #[serde(borrow)]
    choices: Option<Vec<ChoiceDe<'a>>>,
    /// Only `null` or absent here: usage is read by the general reader.
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    // Read to check they are strings (forwarded as received), not used.
    #[serde(borrow)]
    #[allow(dead_code)]
    system_fingerprint: Option<&'a str>,
    #[serde(borrow)]
    #[allow(dead_code)]
    service_tier: Option<&'a str>,
    #[serde(borrow)]
    #[allow(dead_code)]
    obfuscation: Option<&'a str>,
}

/// One choice (members as `OPENAI_CHOICE_MEMBERS`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChoiceDe<'a> {
    index: Option<u64>,
    /// Present and an object here (the general reader writes `{}` for a missing one).
    #[serde(borrow, default, deserialize_with = "present")]
    delta: Option<DeltaDe<'a>>,
    /// Only `null` or absent here: a finish releases held text and decides tool calls.
    #[serde(borrow)]
    finish_reason: Option<&'a RawValue>,
    /// Only `null` or absent (the general reader refuses log probabilities).
    #[serde(borrow)]
    logprobs: Option<&'a RawValue>,
}

/// One choice's delta: no `tool_calls` here (gathered by the general reader).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeltaDe<'a> {
    // Read to check it is a string (forwarded as received), not used.
    #[serde(borrow)]
    #[allow(dead_code)]
    role: Option<&'a str>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    refusal: Option<&'a RawValue>,
}

/// A text member: its decoded text and where its JSON string lies in the event's data.
#[derive(Debug)]
pub(crate) struct Text<'a> {
    pub(crate) text: Cow<'a, str>,
    pub(crate) span: Range<usize>,
}

/// Where `raw` (borrowed from `data`) lies in `data`; checked, not assumed.
fn span(data: &[u8], raw: &str) -> Option<Range<usize>> {
    let start = raw.as_ptr().addr().checked_sub(data.as_ptr().addr())?;
    let end = start.checked_add(raw.len())?;
    (data.get(start..end)? == raw.as_bytes()).then_some(start..end)
}

/// A text member read: a JSON string (decoded strictly), else not the plain case.
fn text<'a>(data: &[u8], raw: &'a RawValue) -> Option<Text<'a>> {
    let json = raw.get();
    let text = match json.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        // A string the parser has checked (UTF-8, no control character) and holding no
        // escape: its text is what lies between its quotes (no need to read it again).
        Some(inner) if !inner.contains('\\') => Cow::Borrowed(inner),
        _ => serde_json::from_str::<Cow<'a, str>>(json).ok()?,
    };
    Some(Text {
        text,
        span: span(data, json)?,
    })
}

/// One plain choice: its index and its text members.
#[derive(Debug)]
pub(crate) struct PlainChoice<'a> {
    pub(crate) index: u64,
    pub(crate) content: Option<Text<'a>>,
    pub(crate) refusal: Option<Text<'a>>,
}

/// An OpenAI chunk carrying only text (or nothing) in its choices.
#[derive(Debug)]
pub(crate) struct PlainChunk<'a> {
    /// `id`, `object`, `created`, `model` as present.
    pub(crate) meta: [(&'static str, Option<Scalar<'a>>); 4],
    pub(crate) choices: Vec<PlainChoice<'a>>,
}

/// Reads `data` as a plain OpenAI chunk; `None`: not the plain case (read it in full).
pub(crate) fn openai_chunk(data: &[u8]) -> Option<PlainChunk<'_>> {
    if data.contains(&b'\n') {
        return None;
    }
    let chunk: ChunkDe<'_> = serde_json::from_slice(data).ok()?;
    if chunk.usage.is_some() {
        return None;
    }
    let mut choices = Vec::new();
    for choice in chunk.choices.unwrap_or_default() {
        if choice.finish_reason.is_some() || choice.logprobs.is_some() {
            return None;
        }
        let delta = choice.delta?;
        choices.push(PlainChoice {
            index: choice.index.unwrap_or(0),
            content: match delta.content {
                Some(raw) => Some(text(data, raw)?),
                None => None,
            },
            refusal: match delta.refusal {
                Some(raw) => Some(text(data, raw)?),
                None => None,
            },
        });
    }
    Some(PlainChunk {
        meta: [
            ("id", chunk.id),
            ("object", chunk.object),
            ("created", chunk.created),
            ("model", chunk.model),
        ],
        choices,
    })
}

/// An Anthropic `content_block_delta`, as the plain case reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockDeltaDe<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    index: Option<u64>,
    #[serde(borrow)]
    delta: TextDeltaDe<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextDeltaDe<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    thinking: Option<&'a RawValue>,
}

/// A plain Anthropic text or thinking delta.
#[derive(Debug)]
pub(crate) struct PlainDelta<'a> {
    pub(crate) index: u64,
    /// `text_delta` (else `thinking_delta`).
    pub(crate) is_text: bool,
    pub(crate) text: Text<'a>,
}

/// Reads `data` as a plain Anthropic text or thinking delta; `None`: not the plain case.
pub(crate) fn anthropic_delta(data: &[u8]) -> Option<PlainDelta<'_>> {
    if data.contains(&b'\n') {
        return None;
    }
    let event: BlockDeltaDe<'_> = serde_json::from_slice(data).ok()?;
    if event.kind != "content_block_delta" {
        return None;
    }
    let (is_text, raw) = match (event.delta.kind, event.delta.text, event.delta.thinking) {
        ("text_delta", Some(raw), None) => (true, raw),
        ("thinking_delta", None, Some(raw)) => (false, raw),
        _ => return None,
    };
    Some(PlainDelta {
        index: event.index.unwrap_or(0),
        is_text,
        text: text(data, raw)?,
    })
}

/// Writes `data` with each text member replaced by the text released for it, as a JSON
/// string; a member whose text is released unchanged (nothing held, nothing redacted) is left
/// as received, byte for byte. Members in order, not overlapping; `None` when they are not.
pub(crate) fn splice(out: &mut Vec<u8>, data: &[u8], edits: &[(&Text<'_>, &str)]) -> Option<()> {
    let mut last = 0;
    for (member, released) in edits {
        if member.text == *released {
            continue;
        }
        out.extend_from_slice(data.get(last..member.span.start)?);
        serde_json::to_writer(&mut *out, released).ok()?;
        last = member.span.end;
    }
    out.extend_from_slice(data.get(last..)?);
    Some(())
}
