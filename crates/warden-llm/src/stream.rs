//! A streamed answer, rewritten event by event as it arrives (never buffered whole).
//!
//! Every event is read and written again by Warden (an event it cannot read ends the stream):
//! - text (OpenAI `delta.content` and `delta.refusal`; Anthropic `text_delta` and
//!   `thinking_delta`) goes through a [`HeldText`] per choice or block, so what is released
//!   has been scanned with what follows it and is redacted across chunk boundaries;
//! - tool calls are gathered until complete (OpenAI: the choice's `finish_reason`; Anthropic:
//!   the block's `content_block_stop`), then decided; an allowed call is sent whole in one
//!   delta, a denied one is replaced by its explanation as text;
//! - before the end of the stream (OpenAI `[DONE]`, Anthropic `message_stop`) the whole
//!   answer is decided as one `completion` request (history, audit); a deny there, or a
//!   finding the policy blocks on the way, ends the stream with the provider's error event.
//!
//! Nearly every event of a stream is plain: provider framing (`data: ...`), text only (an
//! OpenAI chunk whose choices carry `content` or `refusal`, an Anthropic `text_delta` or
//! `thinking_delta`). Those are read in place into borrowed, typed structs (`fast.rs`) and
//! written back as received but for the text member, which carries what is released (left
//! byte for byte when that is the text received). Every other event, and every shape the plain
//! reading does not accept (a repeated or unknown member, an escape it cannot borrow...), is
//! read in full as a `Value` and decided as it always was.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use warden_content::ContentPolicy;
use warden_core::Kind;
use warden_mcp::sse::{Event, SseSplitter};

use crate::api::{Api, Refusal, RefusalKind};
use crate::fast;
use crate::held::HeldText;
use crate::reply::{ToolOutcome, decide_tool};
use crate::{Asker, Judge};

/// The longest answer Warden keeps to decide at the end of a stream; a longer one is cut.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Members of an OpenAI stream chunk Warden reads (the text is in `choices`).
const OPENAI_CHUNK_MEMBERS: &[&str] = &[
    "id",
    "object",
    "created",
    "model",
    "choices",
    "usage",
    "system_fingerprint",
    "service_tier",
    "obfuscation",
];
/// Members of one choice of a stream chunk.
const OPENAI_CHOICE_MEMBERS: &[&str] = &["index", "delta", "finish_reason", "logprobs"];

fn cut(message: impl Into<String>) -> Refusal {
    Refusal::new(RefusalKind::Blocked, message)
}

fn unreadable(what: &str) -> Refusal {
    cut(format!(
        "Warden cut the answer: the upstream sent {what}, which Warden does not inspect"
    ))
}

/// A tool call being streamed.
#[derive(Debug, Default, Clone)]
struct PendingTool {
    id: Value,
    name: String,
    arguments: String,
    /// Anthropic: the block as `content_block_start` gave it.
    block: Option<Value>,
}

/// One OpenAI choice's state.
#[derive(Debug)]
struct Choice {
    content: HeldText,
    refusal: HeldText,
    tools: BTreeMap<u64, PendingTool>,
    finished: bool,
}

/// One Anthropic content block's state.
#[derive(Debug)]
enum Block {
    Text(HeldText),
    Thinking(HeldText),
    Tool(PendingTool),
    Opaque,
}

/// Rewrites one streamed answer.
#[derive(Debug)]
pub struct StreamRewriter {
    api: Api,
    asker: Asker,
    hold: usize,
    splitter: SseSplitter,
    choices: BTreeMap<u64, Choice>,
    blocks: BTreeMap<u64, Block>,
    tools_kept: usize,
    tools_denied: usize,
    /// The answer's text as the model wrote it, decided at the end.
    answer: String,
    /// The last OpenAI chunk's `id`, `object`, `created` and `model`, for chunks Warden adds.
    /// (Kept by member, in this order: no map to look up in for every chunk.)
    meta: [(&'static str, Option<Value>); 4],
    ended: bool,
    /// The usage the stream reported so far.
    usage: Option<crate::Usage>,
    /// Whether plain text events are read by [`fast`] (off only in tests comparing the two).
    fast: bool,
}

impl StreamRewriter {
    /// A rewriter for an answer of `api` to `asker`, holding back `hold` characters of text.
    pub fn new(api: Api, asker: Asker, hold: usize) -> Self {
        Self {
            api,
            asker,
            hold,
            splitter: SseSplitter::new(),
            choices: BTreeMap::new(),
            blocks: BTreeMap::new(),
            tools_kept: 0,
            tools_denied: 0,
            answer: String::new(),
            meta: [
                ("id", None),
                ("object", None),
                ("created", None),
                ("model", None),
            ],
            ended: false,
            usage: None,
            fast: true,
        }
    }

    /// The same rewriter reading every event in full (the reference the plain case is
    /// compared with).
    #[cfg(test)]
    fn full_reads_only(mut self) -> Self {
        self.fast = false;
        self
    }

    /// The usage the upstream reported in the stream (OpenAI's last chunk; Anthropic's
    /// `message_start` and `message_delta`), if it did.
    pub fn usage(&self) -> Option<crate::Usage> {
        self.usage
    }

    /// Whether the answer's end (or the upstream's error) has been sent: nothing more is read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Reads `chunk` of the upstream's body; returns the bytes to send the client now.
    pub fn push(
        &mut self,
        chunk: &[u8],
        judge: &dyn Judge,
        content: Option<&ContentPolicy>,
    ) -> Result<Vec<u8>, Refusal> {
        let events = self
            .splitter
            .push(chunk)
            .map_err(|_| unreadable("an event larger than the limit"))?;
        let mut out = Vec::with_capacity(chunk.len());
        for raw in events {
            if self.ended {
                break;
            }
            // The plain framings are read in place; any other is read by `Event::parse`.
            let parsed;
            let (name, data) = match fast::framing(&raw).filter(|_| self.fast) {
                Some((name, data)) => (name, Some(data)),
                None => {
                    parsed = Event::parse(&raw).map_err(|_| unreadable("an unreadable event"))?;
                    (parsed.event.as_deref(), parsed.data.as_deref())
                }
            };
            match self.api {
                Api::Openai => self.openai(data, judge, content, &mut out)?,
                Api::Anthropic => self.anthropic(name, data, judge, content, &mut out)?,
            }
        }
        Ok(out)
    }

    /// The upstream's body ended. A stream that did not reach its end is cut (the client must
    /// not take half an answer for a whole one).
    pub fn finish(&mut self) -> Result<(), Refusal> {
        let rest = std::mem::take(&mut self.splitter).finish();
        if !self.ended || rest.iter().any(|b| !b.is_ascii_whitespace()) {
            return Err(Refusal::new(
                RefusalKind::Upstream,
                "the upstream's stream ended before the answer did",
            ));
        }
        Ok(())
    }

    fn keep(&mut self, text: &str) -> Result<(), Refusal> {
        if self.answer.len() + text.len() > MAX_ANSWER_BYTES {
            return Err(cut(format!(
                "Warden cut the answer: it is longer than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        self.answer.push_str(text);
        Ok(())
    }

    fn push_text(
        held: &mut HeldText,
        text: &str,
        content: Option<&ContentPolicy>,
    ) -> Result<String, Refusal> {
        match content {
            Some(content) => held.push(text, content),
            None => Ok(text.to_owned()),
        }
    }

    fn flush(held: &mut HeldText, content: Option<&ContentPolicy>) -> Result<String, Refusal> {
        match content {
            Some(content) => held.finish(content),
            None => Ok(String::new()),
        }
    }

    /// Decides the whole answer (before the stream's end is sent).
    fn decide_answer(&mut self, judge: &dyn Judge) -> Result<(), Refusal> {
        let mut request = self.asker.request(Kind::Completion);
        request.text = Some(std::mem::take(&mut self.answer));
        let decision = judge.decide(&request).map_err(|_| Refusal::unavailable())?;
        if !decision.verdict.is_allow() {
            let mut refusal = Refusal::denied("the answer", &decision);
            refusal.kind = RefusalKind::Blocked;
            return Err(refusal);
        }
        Ok(())
    }

    fn tool(&mut self, judge: &dyn Judge, tool: &PendingTool) -> Result<ToolOutcome, Refusal> {
        let outcome = decide_tool(
            judge,
            &self.asker,
            &tool.name,
            &Value::String(tool.arguments.clone()),
        )?;
        match outcome {
            ToolOutcome::Allowed(_) => self.tools_kept += 1,
            ToolOutcome::Denied(_) => self.tools_denied += 1,
        }
        Ok(outcome)
    }

    fn openai(
        &mut self,
        data: Option<&[u8]>,
        judge: &dyn Judge,
        content: Option<&ContentPolicy>,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let Some(data) = data else {
            return Ok(());
        };
        if data.trim_ascii() == b"[DONE]" {
            self.openai_unfinished(judge, content, out)?;
            self.decide_answer(judge)?;
            self.ended = true;
            out.extend_from_slice(b"data: [DONE]\n\n");
            return Ok(());
        }
        if self.fast
            && let Some(chunk) = fast::openai_chunk(data)
        {
            return self.openai_plain(data, &chunk, content, out);
        }
        warden_core::unique_keys::reject_duplicate_keys(data)
            .map_err(|_| unreadable("a chunk repeating a member name"))?;
        let mut chunk: Value =
            serde_json::from_slice(data).map_err(|_| unreadable("a chunk that is not JSON"))?;
        if chunk.get("error").is_some() {
            // The upstream's own error ends the stream; sent as Warden wrote it again,
            // redacted as an answer is.
            self.ended = true;
            crate::texts::redact_error(&mut chunk, content);
            out.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
            return Ok(());
        }
        let Some(members) = chunk.as_object_mut() else {
            return Err(unreadable("a chunk that is not an object"));
        };
        if let Some(key) = members
            .keys()
            .find(|k| !OPENAI_CHUNK_MEMBERS.contains(&k.as_str()))
        {
            return Err(unreadable(&format!("a chunk member `{key}`")));
        }
        if let Some(usage) = members
            .get("usage")
            .and_then(|u| crate::Usage::of(Api::Openai, u))
        {
            self.usage = Some(usage);
        }
        for (key, slot) in &mut self.meta {
            if let Some(v) = members.get(*key) {
                *slot = Some(v.clone());
            }
        }
        match members.get_mut("choices") {
            Some(Value::Array(choices)) => {
                for choice in choices {
                    self.openai_choice(choice, judge, content)?;
                }
            }
            None | Some(Value::Null) => {}
            // Forwarded as it is, it would carry whatever it holds past inspection.
            Some(_) => return Err(unreadable("`choices` that are not an array")),
        }
        out.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
        Ok(())
    }

    /// A chunk carrying only text, read by [`fast::openai_chunk`]: the same effects as the
    /// general reader (kept metadata, held and kept text), written back as received with each
    /// text member replaced by the text released.
    fn openai_plain(
        &mut self,
        data: &[u8],
        chunk: &fast::PlainChunk<'_>,
        content: Option<&ContentPolicy>,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        for ((_, slot), (_, value)) in self.meta.iter_mut().zip(&chunk.meta) {
            // Compared first: the metadata rarely changes, and a clone per event would cost.
            if let Some(value) = value
                && !value.is(slot.as_ref())
            {
                *slot = Some(value.value());
            }
        }
        let hold = self.hold;
        let mut released = Vec::new();
        for choice in &chunk.choices {
            let state = self.choices.entry(choice.index).or_insert_with(|| Choice {
                content: HeldText::batched(hold),
                refusal: HeldText::batched(hold),
                tools: BTreeMap::new(),
                finished: false,
            });
            let mut kept = String::new();
            for (text, held) in [
                (&choice.content, &mut state.content),
                (&choice.refusal, &mut state.refusal),
            ] {
                if let Some(text) = text {
                    kept.push_str(&text.text);
                    let now = Self::push_text(held, &text.text, content)?;
                    released.push((text, now));
                }
            }
            self.keep(&kept)?;
        }
        released.sort_by_key(|(text, _)| text.span.start);
        let edits: Vec<_> = released
            .iter()
            .map(|(text, now)| (*text, now.as_str()))
            .collect();
        out.extend_from_slice(b"data: ");
        fast::splice(out, data, &edits).ok_or_else(|| unreadable("a chunk Warden misread"))?;
        out.extend_from_slice(b"\n\n");
        Ok(())
    }

    fn openai_choice(
        &mut self,
        choice: &mut Value,
        judge: &dyn Judge,
        content: Option<&ContentPolicy>,
    ) -> Result<(), Refusal> {
        let hold = self.hold;
        let Some(choice) = choice.as_object_mut() else {
            return Err(unreadable("a choice that is not an object"));
        };
        if choice.get("logprobs").is_some_and(|v| !v.is_null()) {
            return Err(unreadable("log probabilities"));
        }
        if let Some(key) = choice
            .keys()
            .find(|k| !OPENAI_CHOICE_MEMBERS.contains(&k.as_str()))
        {
            return Err(unreadable(&format!("a choice member `{key}`")));
        }
        let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
        let state = self.choices.entry(index).or_insert_with(|| Choice {
            content: HeldText::batched(hold),
            refusal: HeldText::batched(hold),
            tools: BTreeMap::new(),
            finished: false,
        });
        let finish = choice
            .get("finish_reason")
            .filter(|v| !v.is_null())
            .cloned();
        let mut delta = match choice.remove("delta") {
            Some(Value::Object(delta)) => delta,
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(unreadable("a delta that is not an object")),
        };
        if let Some(key) = delta
            .keys()
            .find(|k| !["role", "content", "refusal", "tool_calls"].contains(&k.as_str()))
        {
            return Err(unreadable(&format!("a delta member `{key}`")));
        }
        let mut kept = String::new();
        for (member, held) in [
            ("content", &mut state.content),
            ("refusal", &mut state.refusal),
        ] {
            match delta.get(member) {
                Some(Value::String(text)) => {
                    kept.push_str(text);
                    let released = Self::push_text(held, text, content)?;
                    delta.insert(member.to_owned(), Value::String(released));
                }
                None | Some(Value::Null) => {}
                Some(_) => return Err(unreadable(&format!("a `{member}` that is not a string"))),
            }
        }
        if let Some(calls) = delta.remove("tool_calls").filter(|v| !v.is_null()) {
            let Value::Array(calls) = calls else {
                return Err(unreadable("`tool_calls` that are not an array"));
            };
            for call in calls {
                let at = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let tool = state.tools.entry(at).or_default();
                if let Some(id) = call.get("id").filter(|v| !v.is_null()) {
                    tool.id = id.clone();
                }
                if let Some(function) = call.get("function") {
                    if let Some(name) = function.get("name").and_then(Value::as_str) {
                        tool.name.push_str(name);
                    }
                    if let Some(args) = function.get("arguments").and_then(Value::as_str) {
                        tool.arguments.push_str(args);
                    }
                }
            }
        }
        self.keep(&kept)?;
        if finish.is_some() {
            let Some(state) = self.choices.get_mut(&index) else {
                return Ok(());
            };
            state.finished = true;
            let tools = std::mem::take(&mut state.tools);
            let mut rest_content = Self::flush(&mut state.content, content)?;
            let rest_refusal = Self::flush(&mut state.refusal, content)?;
            let mut allowed = Vec::new();
            for tool in tools.into_values() {
                match self.tool(judge, &tool)? {
                    ToolOutcome::Allowed(args) => {
                        let arguments = args.map_or(tool.arguments.clone(), |a| a.to_string());
                        allowed.push(json!({
                            "index": allowed.len(),
                            "id": tool.id,
                            "type": "function",
                            "function": {"name": tool.name, "arguments": arguments},
                        }));
                    }
                    ToolOutcome::Denied(why) => {
                        if !rest_content.is_empty() {
                            rest_content.push_str("\n\n");
                        }
                        rest_content.push_str(&why);
                    }
                }
            }
            append(&mut delta, "content", &rest_content);
            append(&mut delta, "refusal", &rest_refusal);
            let none_left = allowed.is_empty();
            if !allowed.is_empty() {
                delta.insert("tool_calls".to_owned(), Value::Array(allowed));
            }
            if none_left && finish.as_ref().and_then(Value::as_str) == Some("tool_calls") {
                choice.insert("finish_reason".to_owned(), Value::String("stop".to_owned()));
            }
        }
        choice.insert("delta".to_owned(), Value::Object(delta));
        Ok(())
    }

    /// At `[DONE]`: a choice that never finished still releases its held text (in a chunk
    /// Warden adds); its unfinished tool calls are dropped, undecided.
    fn openai_unfinished(
        &mut self,
        _judge: &dyn Judge,
        content: Option<&ContentPolicy>,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        for (index, state) in &mut self.choices {
            if state.finished {
                continue;
            }
            let rest = Self::flush(&mut state.content, content)?;
            if rest.is_empty() {
                continue;
            }
            let mut chunk: Map<String, Value> = self
                .meta
                .iter()
                .filter_map(|(key, value)| Some(((*key).to_owned(), value.clone()?)))
                .collect();
            chunk.insert(
                "choices".to_owned(),
                json!([{"index": index, "delta": {"content": rest}, "finish_reason": null}]),
            );
            out.extend_from_slice(format!("data: {}\n\n", Value::Object(chunk)).as_bytes());
        }
        Ok(())
    }

    fn anthropic(
        &mut self,
        name: Option<&str>,
        data: Option<&[u8]>,
        judge: &dyn Judge,
        content: Option<&ContentPolicy>,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let Some(data) = data else {
            return Ok(());
        };
        if self.fast
            && name.is_none_or(|e| e == "content_block_delta")
            && let Some(delta) = fast::anthropic_delta(data)
            && let Some(block) = self.blocks.get_mut(&delta.index)
        {
            let held = match (block, delta.is_text) {
                (Block::Text(held), true) | (Block::Thinking(held), false) => Some(held),
                _ => None,
            };
            if let Some(held) = held {
                // The same effects as the general reader's `content_block_delta` below.
                let released = Self::push_text(held, &delta.text.text, content)?;
                if delta.is_text {
                    self.keep(&delta.text.text)?;
                }
                if !released.is_empty() {
                    out.extend_from_slice(b"event: content_block_delta\ndata: ");
                    fast::splice(out, data, &[(&delta.text, released.as_str())])
                        .ok_or_else(|| unreadable("an event Warden misread"))?;
                    out.extend_from_slice(b"\n\n");
                }
                return Ok(());
            }
        }
        warden_core::unique_keys::reject_duplicate_keys(data)
            .map_err(|_| unreadable("an event repeating a member name"))?;
        let mut body: Value =
            serde_json::from_slice(data).map_err(|_| unreadable("an event that is not JSON"))?;
        let kind = body
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if name.is_some_and(|e| e != kind) {
            return Err(unreadable("an event whose name and type differ"));
        }
        let index = body.get("index").and_then(Value::as_u64).unwrap_or(0);
        let hold = self.hold;
        // The model's text travels in the block events: each is written back as read, so a
        // member Warden does not inspect is refused rather than forwarded.
        match kind.as_str() {
            "content_block_start" => only_members(&body, &["type", "index", "content_block"])?,
            "content_block_delta" => only_members(&body, &["type", "index", "delta"])?,
            "content_block_stop" => only_members(&body, &["type", "index"])?,
            _ => {}
        }
        match kind.as_str() {
            "ping" => {}
            "error" => {
                self.ended = true;
                crate::texts::redact_error(&mut body, content);
            }
            "message_start" => {
                let empty = body
                    .pointer("/message/content")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
                if !empty {
                    return Err(unreadable("a message_start holding content"));
                }
                if let Some(input) = body
                    .pointer("/message/usage/input_tokens")
                    .and_then(Value::as_u64)
                {
                    self.usage = Some(crate::Usage { input, output: 0 });
                }
            }
            "content_block_start" => {
                let block = body.get("content_block").cloned().unwrap_or(Value::Null);
                let block_kind = block
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                only_members(
                    &block,
                    match block_kind {
                        "text" => &["type", "text", "citations"],
                        "thinking" => &["type", "thinking", "signature"],
                        "tool_use" => &["type", "id", "name", "input"],
                        "redacted_thinking" => &["type", "data"],
                        _ => &["type"],
                    },
                )?;
                // Citations quote documents: text Warden would forward without reading.
                if block
                    .get("citations")
                    .is_some_and(|c| !c.is_null() && c.as_array().is_none_or(|c| !c.is_empty()))
                {
                    return Err(unreadable("a block starting with citations"));
                }
                let state = match block_kind {
                    "text" | "thinking" => {
                        let member = if block_kind == "text" {
                            "text"
                        } else {
                            "thinking"
                        };
                        if block
                            .get(member)
                            .and_then(Value::as_str)
                            .is_some_and(|t| !t.is_empty())
                        {
                            return Err(unreadable("a block starting with text"));
                        }
                        if block_kind == "text" {
                            Block::Text(HeldText::batched(hold))
                        } else {
                            Block::Thinking(HeldText::batched(hold))
                        }
                    }
                    "redacted_thinking" => Block::Opaque,
                    "tool_use" => {
                        let name = block
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        self.blocks.insert(
                            index,
                            Block::Tool(PendingTool {
                                id: block.get("id").cloned().unwrap_or(Value::Null),
                                name: name.to_owned(),
                                arguments: String::new(),
                                block: Some(block.clone()),
                            }),
                        );
                        // Sent once decided, at the block's end.
                        return Ok(());
                    }
                    other => return Err(unreadable(&format!("a content block of type `{other}`"))),
                };
                self.blocks.insert(index, state);
            }
            "content_block_delta" => {
                let delta_kind = body
                    .pointer("/delta/type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                only_members(
                    body.get("delta").unwrap_or(&Value::Null),
                    match delta_kind.as_str() {
                        "text_delta" => &["type", "text"],
                        "thinking_delta" => &["type", "thinking"],
                        "signature_delta" => &["type", "signature"],
                        "input_json_delta" => &["type", "partial_json"],
                        _ => &["type"],
                    },
                )?;
                let Some(block) = self.blocks.get_mut(&index) else {
                    return Err(unreadable("a delta for a block that did not start"));
                };
                match (block, delta_kind.as_str()) {
                    (Block::Text(held), "text_delta")
                    | (Block::Thinking(held), "thinking_delta") => {
                        let member = if delta_kind == "text_delta" {
                            "text"
                        } else {
                            "thinking"
                        };
                        let text = body
                            .pointer(&format!("/delta/{member}"))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        let released = Self::push_text(held, &text, content)?;
                        if delta_kind == "text_delta" {
                            self.keep(&text)?;
                        }
                        if released.is_empty() {
                            return Ok(());
                        }
                        if let Some(slot) = body.pointer_mut(&format!("/delta/{member}")) {
                            *slot = Value::String(released);
                        }
                    }
                    (Block::Thinking(_), "signature_delta") => {}
                    (Block::Tool(tool), "input_json_delta") => {
                        if let Some(part) =
                            body.pointer("/delta/partial_json").and_then(Value::as_str)
                        {
                            tool.arguments.push_str(part);
                        }
                        return Ok(());
                    }
                    (_, other) => return Err(unreadable(&format!("a delta of type `{other}`"))),
                }
            }
            "content_block_stop" => match self.blocks.remove(&index) {
                Some(Block::Text(mut held)) => {
                    let rest = Self::flush(&mut held, content)?;
                    write_text_delta(out, index, "text_delta", "text", &rest);
                }
                Some(Block::Thinking(mut held)) => {
                    let rest = Self::flush(&mut held, content)?;
                    write_text_delta(out, index, "thinking_delta", "thinking", &rest);
                }
                Some(Block::Tool(tool)) => {
                    let arguments = if tool.arguments.trim().is_empty() {
                        "{}".to_owned()
                    } else {
                        tool.arguments.clone()
                    };
                    let decided = PendingTool { arguments, ..tool };
                    match self.tool(judge, &decided)? {
                        ToolOutcome::Allowed(args) => {
                            let mut start = decided.block.clone().unwrap_or(Value::Null);
                            if let Some(input) = start.get_mut("input") {
                                *input = json!({});
                            }
                            let json = args.map_or(decided.arguments.clone(), |a| a.to_string());
                            write_event(
                                out,
                                "content_block_start",
                                &json!({"type": "content_block_start", "index": index, "content_block": start}),
                            );
                            write_event(
                                out,
                                "content_block_delta",
                                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": json}}),
                            );
                        }
                        ToolOutcome::Denied(why) => {
                            write_event(
                                out,
                                "content_block_start",
                                &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                            );
                            write_text_delta(out, index, "text_delta", "text", &why);
                        }
                    }
                }
                Some(Block::Opaque) => {}
                None => return Err(unreadable("the end of a block that did not start")),
            },
            "message_delta" => {
                if let Some(output) = body.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    let input = body
                        .pointer("/usage/input_tokens")
                        .and_then(Value::as_u64)
                        .or(self.usage.map(|u| u.input))
                        .unwrap_or(0);
                    self.usage = Some(crate::Usage { input, output });
                }
                // Every call the model proposed was denied: the turn ends with text.
                if self.tools_kept == 0
                    && self.tools_denied > 0
                    && body.pointer("/delta/stop_reason").and_then(Value::as_str)
                        == Some("tool_use")
                    && let Some(slot) = body.pointer_mut("/delta/stop_reason")
                {
                    *slot = Value::String("end_turn".to_owned());
                }
            }
            "message_stop" => {
                self.decide_answer(judge)?;
                self.ended = true;
            }
            other => return Err(unreadable(&format!("an event of type `{other}`"))),
        }
        write_event(out, &kind, &body);
        Ok(())
    }
}

/// Refuses `value` unless it is an object whose members are all in `allowed`.
fn only_members(value: &Value, allowed: &[&str]) -> Result<(), Refusal> {
    let Some(members) = value.as_object() else {
        return Err(unreadable("an event part that is not an object"));
    };
    match members.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(unreadable(&format!("a member `{key}`"))),
        None => Ok(()),
    }
}

fn append(delta: &mut Map<String, Value>, member: &str, rest: &str) {
    if rest.is_empty() {
        return;
    }
    let joined = match delta.get(member).and_then(Value::as_str) {
        Some(existing) => format!("{existing}{rest}"),
        None => rest.to_owned(),
    };
    delta.insert(member.to_owned(), Value::String(joined));
}

fn write_event(out: &mut Vec<u8>, name: &str, body: &Value) {
    out.extend_from_slice(format!("event: {name}\ndata: {body}\n\n").as_bytes());
}

fn write_text_delta(out: &mut Vec<u8>, index: u64, kind: &str, member: &str, text: &str) {
    if text.is_empty() {
        return;
    }
    let mut delta = Map::new();
    delta.insert("type".to_owned(), Value::String(kind.to_owned()));
    delta.insert(member.to_owned(), Value::String(text.to_owned()));
    write_event(
        out,
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": index, "delta": delta}),
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use warden_core::{Decision, PolicyInfo, Request, Verdict};

    use super::*;

    /// Allows everything but tools named `delete_*`; no content inspection.
    struct AllowAll;

    impl Judge for AllowAll {
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

    fn run(api: Api, events: &[&str]) -> Result<String, Refusal> {
        let mut rewriter = StreamRewriter::new(api, Asker::default(), 16);
        let mut out = Vec::new();
        for event in events {
            out.extend(rewriter.push(event.as_bytes(), &AllowAll, None)?);
        }
        rewriter.finish()?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn text_outside_the_members_warden_reads_cuts_the_stream() {
        let smuggled = [
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"message\":{\"content\":\"4111 1111 1111 1111\"}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[],\"note\":\"4111 1111 1111 1111\"}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"audio\":{\"transcript\":\"x\"}}}]}\n\n",
            "data: {\"id\":\"c\",\"id\":\"d\",\"choices\":[]}\n\n",
        ];
        for event in smuggled {
            let e = run(Api::Openai, &[event, "data: [DONE]\n\n"]).unwrap_err();
            assert_eq!(e.kind, RefusalKind::Blocked, "{event}");
        }
        let e = run(
            Api::Anthropic,
            &["event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"web_search_tool_result\",\"content\":[]}}\n\n"],
        )
        .unwrap_err();
        assert_eq!(e.kind, RefusalKind::Blocked);
        // Members beside the ones Warden reads, in every event that carries the model's text,
        // and `choices` that are not an array: cut, never forwarded unread.
        let e = run(
            Api::Openai,
            &["data: {\"id\":\"c\",\"choices\":{\"0\":{\"delta\":{\"content\":\"4111 1111 1111 1111\"}}}}\n\n", "data: [DONE]\n\n"],
        )
        .unwrap_err();
        assert_eq!(e.kind, RefusalKind::Blocked);
        let start = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
        for event in [
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"},\"note\":\"4111 1111 1111 1111\"}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\",\"note\":\"4111 1111 1111 1111\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0,\"note\":\"4111 1111 1111 1111\"}\n\n",
        ] {
            let e = run(Api::Anthropic, &[start, event]).unwrap_err();
            assert_eq!(e.kind, RefusalKind::Blocked, "{event}");
        }
        for event in [
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\",\"note\":\"4111 1111 1111 1111\"}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\",\"citations\":[{\"cited_text\":\"4111 1111 1111 1111\"}]}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"},\"note\":\"4111 1111 1111 1111\"}\n\n",
        ] {
            let e = run(Api::Anthropic, &[event]).unwrap_err();
            assert_eq!(e.kind, RefusalKind::Blocked, "{event}");
        }
        // An event named one thing and typed another is read by no two clients alike.
        let e = run(
            Api::Anthropic,
            &["event: ping\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"],
        )
        .unwrap_err();
        assert_eq!(e.kind, RefusalKind::Blocked);
    }

    #[test]
    fn a_stream_without_its_end_is_an_error_not_a_short_answer() {
        let e = run(
            Api::Openai,
            &["data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial\"}}]}\n\n"],
        )
        .unwrap_err();
        assert_eq!(e.kind, RefusalKind::Upstream);
    }

    #[test]
    fn a_denied_streamed_tool_call_becomes_text_and_the_turn_ends() {
        let out = run(
            Api::Openai,
            &[
                "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"delete_file\",\"arguments\":\"{\\\"path\\\"\"}}]}}]}\n\n",
                "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":\\\"/etc\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
                "data: [DONE]\n\n",
            ],
        )
        .unwrap();
        assert!(!out.contains("call_1"), "{out}");
        assert!(
            out.contains("Warden denied the tool call delete_file: no-delete"),
            "{out}"
        );
        assert!(out.contains("\"finish_reason\":\"stop\""), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
    }

    #[test]
    fn an_upstream_error_is_passed_on_redacted() {
        let content = ContentPolicy::compile(&warden_content::ContentSpec {
            detectors: vec!["credit_card".to_owned()],
            output: Some(warden_content::Action::Redact),
            ..warden_content::ContentSpec::default()
        })
        .unwrap();
        for (api, event) in [
            (
                Api::Openai,
                "data: {\"error\":{\"message\":\"bad card 4111 1111 1111 1111\",\"type\":\"server_error\"}}\n\n",
            ),
            (
                Api::Anthropic,
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"bad card 4111 1111 1111 1111\"}}\n\n",
            ),
        ] {
            let mut rewriter = StreamRewriter::new(api, Asker::default(), 16);
            let out = rewriter
                .push(event.as_bytes(), &AllowAll, Some(&content))
                .unwrap();
            let out = String::from_utf8(out).unwrap();
            assert!(out.contains("bad card [REDACTED:credit_card]"), "{out}");
            assert!(rewriter.ended());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[path = "stream_fast_tests.rs"]
mod fast_tests;
