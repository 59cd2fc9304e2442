//! A client's request, read strictly: an OpenAI Chat Completions body or an Anthropic Messages
//! body. Every member is known (an unknown one may carry text the model reads and Warden did
//! not), every text the model will read is found, and a content part Warden cannot inspect (an
//! image, audio, a file) is refused by name. The texts are decided as one `prompt` request and
//! redacted in place; the body forwarded is the one decided, written again.

use serde_json::{Map, Value};
use warden_content::ContentPolicy;
use warden_core::{Decision, Kind, Request, Rewrite};

use crate::api::{Api, Refusal};
use crate::texts;

/// Members of an OpenAI Chat Completions request Warden reads; the ones holding text the model
/// reads are inspected (`messages`, `tools`, `response_format`).
const OPENAI_MEMBERS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "n",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "metadata",
    "store",
    "reasoning_effort",
    "service_tier",
    "modalities",
    "verbosity",
    "safety_identifier",
    "prompt_cache_key",
];

/// Members of an Anthropic Messages request Warden reads; `system`, `messages` and `tools`
/// are inspected.
const ANTHROPIC_MEMBERS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
];

/// A request read and checked, with the pointers to its texts.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    api: Api,
    body: Value,
    texts: Vec<String>,
    /// The model asked for.
    pub model: String,
    /// Whether the answer is streamed.
    pub stream: bool,
    /// The most tokens the answer may have, when the request says.
    pub max_tokens: Option<u64>,
}

fn object<'v>(value: &'v Value, at: &str) -> Result<&'v Map<String, Value>, Refusal> {
    value
        .as_object()
        .ok_or_else(|| Refusal::bad(at, "must be an object"))
}

fn known(members: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), Refusal> {
    match members.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(Refusal::bad(
            &format!("{at}/{}", texts::token(key)),
            "is not a member Warden inspects; it is refused rather than forwarded unread",
        )),
        None => Ok(()),
    }
}

fn string_at(
    members: &Map<String, Value>,
    key: &str,
    at: &str,
    out: &mut Vec<String>,
) -> Result<(), Refusal> {
    match members.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(_)) => {
            out.push(format!("{at}/{key}"));
            Ok(())
        }
        Some(_) => Err(Refusal::bad(&format!("{at}/{key}"), "must be a string")),
    }
}

fn kind_of<'v>(part: &'v Map<String, Value>, at: &str) -> Result<&'v str, Refusal> {
    part.get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::bad(&format!("{at}/type"), "must be a string"))
}

fn uninspected(at: &str, kind: &str) -> Refusal {
    Refusal::bad(
        at,
        format!("content of type `{kind}` is not inspected by Warden and is not forwarded"),
    )
}

impl ChatRequest {
    /// Reads a request body of `api`. Duplicate member names are refused (two parsers could
    /// read different values).
    pub fn parse(api: Api, bytes: &[u8]) -> Result<Self, Refusal> {
        warden_core::unique_keys::reject_duplicate_keys(bytes)
            .map_err(|e| Refusal::bad(&e.field, warden_core::unique_keys::MESSAGE))?;
        let body: Value = serde_json::from_slice(bytes).map_err(|e| {
            Refusal::new(crate::RefusalKind::BadRequest, format!("invalid JSON: {e}"))
        })?;
        let members = object(&body, "")?;
        let model = members
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| Refusal::bad("/model", "is required: a non-empty string"))?
            .to_owned();
        let stream = match members.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Refusal::bad("/stream", "must be a boolean")),
        };
        let limit = match api {
            Api::Openai => members
                .get("max_completion_tokens")
                .or_else(|| members.get("max_tokens")),
            Api::Anthropic => members.get("max_tokens"),
        };
        let max_tokens = match limit {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| Refusal::bad("/max_tokens", "must be a non-negative integer"))?,
            ),
        };
        let mut found = Vec::new();
        match api {
            Api::Openai => openai_texts(members, &mut found)?,
            Api::Anthropic => anthropic_texts(members, &mut found)?,
        }
        Ok(Self {
            api,
            body,
            texts: found,
            model,
            stream,
            max_tokens,
        })
    }

    /// The API the request speaks.
    pub fn api(&self) -> Api {
        self.api
    }

    /// The request's attributes, as decisions' `context`: `model`, `api` and `provider` (the
    /// wire format: `openai` or `anthropic`), `stream`, and
    /// `max_tokens` when set.
    pub fn context(&self) -> Map<String, Value> {
        let mut context = Map::new();
        context.insert("model".to_owned(), Value::String(self.model.clone()));
        context.insert(
            "api".to_owned(),
            Value::String(self.api.as_str().to_owned()),
        );
        // The wire format names the provider family; a mount speaks one.
        context.insert(
            "provider".to_owned(),
            Value::String(self.api.as_str().to_owned()),
        );
        context.insert("stream".to_owned(), Value::Bool(self.stream));
        if let Some(max) = self.max_tokens {
            context.insert("max_tokens".to_owned(), Value::from(max));
        }
        context
    }

    /// The `prompt` request deciding this request: every text, joined in document order.
    pub fn prompt(&self, asker: &crate::Asker) -> Request {
        let mut request = asker.request(Kind::Prompt);
        request.text = Some(texts::join(&self.body, &self.texts));
        request
    }

    /// Applies an allowing decision: when it redacted the prompt, each text is redacted in
    /// place (see [`texts::redact`]).
    pub fn apply(
        &mut self,
        decision: &Decision,
        content: Option<&ContentPolicy>,
    ) -> Result<(), Refusal> {
        match (&decision.redacted, content) {
            (Some(_), Some(content)) => {
                texts::redact(&mut self.body, &self.texts, content, Kind::Prompt)
            }
            (Some(_), None) => Err(Refusal::unavailable()),
            (None, _) => Ok(()),
        }
    }

    /// Applies an allowing decision's rewrite: the model substituted, the answer's tokens
    /// capped. OpenAI's `max_completion_tokens` and `max_tokens` are both lowered when present
    /// (an upstream may read either); when neither is, `max_completion_tokens` is set.
    /// Anthropic's `max_tokens` is lowered.
    pub fn rewrite(&mut self, rewrite: &Rewrite) {
        let Some(members) = self.body.as_object_mut() else {
            return;
        };
        if let Some(model) = &rewrite.model {
            self.model = model.to_string();
            members.insert("model".to_owned(), Value::String(self.model.clone()));
        }
        if let Some(cap) = rewrite.max_tokens {
            let keys: &[&str] = match self.api {
                Api::Openai => &["max_completion_tokens", "max_tokens"],
                Api::Anthropic => &["max_tokens"],
            };
            let mut capped = false;
            for key in keys {
                if let Some(slot) = members.get_mut(*key)
                    && let Some(asked) = slot.as_u64()
                {
                    *slot = Value::from(asked.min(cap));
                    capped = true;
                }
            }
            if !capped && let Some(key) = keys.first() {
                members.insert((*key).to_owned(), Value::from(cap));
            }
            self.max_tokens = Some(self.max_tokens.map_or(cap, |asked| asked.min(cap)));
        }
    }

    /// Asks an OpenAI upstream to report usage at the end of a stream (what the answer cost
    /// is part of its decision), unless the client already says.
    pub fn ask_stream_usage(&mut self) {
        if self.api == Api::Openai
            && self.stream
            && let Some(members) = self.body.as_object_mut()
        {
            let options = members
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(options) = options.as_object_mut() {
                options.entry("include_usage").or_insert(Value::Bool(true));
            }
        }
    }

    /// The body to forward: the request as decided (and redacted), written again.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.body.to_string().into_bytes()
    }
}

fn openai_texts(members: &Map<String, Value>, out: &mut Vec<String>) -> Result<(), Refusal> {
    known(members, OPENAI_MEMBERS, "")?;
    // Log probabilities carry the answer's tokens beside its text, where no redaction reaches.
    if members
        .get("logprobs")
        .is_some_and(|v| v.as_bool() == Some(true))
        || members.get("top_logprobs").is_some_and(|v| !v.is_null())
    {
        return Err(Refusal::bad(
            "/logprobs",
            "log probabilities carry the answer's tokens uninspected; Warden does not forward them",
        ));
    }
    let messages = members
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Refusal::bad("/messages", "is required: an array"))?;
    for (i, message) in messages.iter().enumerate() {
        let at = format!("/messages/{i}");
        let message = object(message, &at)?;
        known(
            message,
            &[
                "role",
                "content",
                "name",
                "tool_calls",
                "tool_call_id",
                "refusal",
                "function_call",
            ],
            &at,
        )?;
        match message.get("role").and_then(Value::as_str) {
            Some("system" | "developer" | "user" | "assistant" | "tool" | "function") => {}
            _ => {
                return Err(Refusal::bad(
                    &format!("{at}/role"),
                    "must be system, developer, user, assistant, tool or function",
                ));
            }
        }
        match message.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(_)) => out.push(format!("{at}/content")),
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    let at = format!("{at}/content/{j}");
                    let part = object(part, &at)?;
                    match kind_of(part, &at)? {
                        "text" => {
                            known(part, &["type", "text"], &at)?;
                            string_at(part, "text", &at, out)?;
                        }
                        "refusal" => {
                            known(part, &["type", "refusal"], &at)?;
                            string_at(part, "refusal", &at, out)?;
                        }
                        other => return Err(uninspected(&at, other)),
                    }
                }
            }
            Some(_) => {
                return Err(Refusal::bad(
                    &format!("{at}/content"),
                    "must be a string or an array of parts",
                ));
            }
        }
        string_at(message, "refusal", &at, out)?;
        // A participant's name is text the model reads too.
        string_at(message, "name", &at, out)?;
        if let Some(calls) = message.get("tool_calls").filter(|v| !v.is_null()) {
            let calls = calls
                .as_array()
                .ok_or_else(|| Refusal::bad(&format!("{at}/tool_calls"), "must be an array"))?;
            for (j, call) in calls.iter().enumerate() {
                let at = format!("{at}/tool_calls/{j}");
                let call = object(call, &at)?;
                known(call, &["id", "type", "function"], &at)?;
                let at = format!("{at}/function");
                let function = object(call.get("function").unwrap_or(&Value::Null), &at)?;
                known(function, &["name", "arguments"], &at)?;
                string_at(function, "arguments", &at, out)?;
            }
        }
        if let Some(call) = message.get("function_call").filter(|v| !v.is_null()) {
            let at = format!("{at}/function_call");
            let call = object(call, &at)?;
            known(call, &["name", "arguments"], &at)?;
            string_at(call, "arguments", &at, out)?;
        }
    }
    for member in ["tools", "response_format"] {
        if let Some(value) = members.get(member) {
            texts::leaves(value, &format!("/{member}"), out);
        }
    }
    Ok(())
}

fn anthropic_texts(members: &Map<String, Value>, out: &mut Vec<String>) -> Result<(), Refusal> {
    known(members, ANTHROPIC_MEMBERS, "")?;
    match members.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(_)) => out.push("/system".to_owned()),
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                anthropic_block(block, &format!("/system/{i}"), out)?;
            }
        }
        Some(_) => {
            return Err(Refusal::bad(
                "/system",
                "must be a string or an array of blocks",
            ));
        }
    }
    let messages = members
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Refusal::bad("/messages", "is required: an array"))?;
    for (i, message) in messages.iter().enumerate() {
        let at = format!("/messages/{i}");
        let message = object(message, &at)?;
        known(message, &["role", "content"], &at)?;
        match message.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            _ => {
                return Err(Refusal::bad(
                    &format!("{at}/role"),
                    "must be user or assistant",
                ));
            }
        }
        match message.get("content") {
            Some(Value::String(_)) => out.push(format!("{at}/content")),
            Some(Value::Array(blocks)) => {
                for (j, block) in blocks.iter().enumerate() {
                    anthropic_block(block, &format!("{at}/content/{j}"), out)?;
                }
            }
            _ => {
                return Err(Refusal::bad(
                    &format!("{at}/content"),
                    "must be a string or an array of blocks",
                ));
            }
        }
    }
    if let Some(tools) = members.get("tools") {
        texts::leaves(tools, "/tools", out);
    }
    Ok(())
}

fn anthropic_block(block: &Value, at: &str, out: &mut Vec<String>) -> Result<(), Refusal> {
    let block = object(block, at)?;
    match kind_of(block, at)? {
        "text" => {
            known(block, &["type", "text", "cache_control", "citations"], at)?;
            string_at(block, "text", at, out)
        }
        "thinking" => {
            known(block, &["type", "thinking", "signature"], at)?;
            string_at(block, "thinking", at, out)
        }
        // The provider's own encrypted reasoning, returned to it as it was given: no text
        // anyone but the provider can read.
        "redacted_thinking" => known(block, &["type", "data"], at),
        "tool_use" => {
            known(block, &["type", "id", "name", "input", "cache_control"], at)?;
            if let Some(input) = block.get("input") {
                texts::leaves(input, &format!("{at}/input"), out);
            }
            Ok(())
        }
        "tool_result" => {
            known(
                block,
                &[
                    "type",
                    "tool_use_id",
                    "content",
                    "is_error",
                    "cache_control",
                ],
                at,
            )?;
            match block.get("content") {
                None | Some(Value::Null) => Ok(()),
                Some(Value::String(_)) => {
                    out.push(format!("{at}/content"));
                    Ok(())
                }
                Some(Value::Array(parts)) => {
                    for (k, part) in parts.iter().enumerate() {
                        let at = format!("{at}/content/{k}");
                        let part = object(part, &at)?;
                        match kind_of(part, &at)? {
                            "text" => {
                                known(part, &["type", "text", "cache_control", "citations"], &at)?;
                                string_at(part, "text", &at, out)?;
                            }
                            other => return Err(uninspected(&at, other)),
                        }
                    }
                    Ok(())
                }
                Some(_) => Err(Refusal::bad(
                    &format!("{at}/content"),
                    "must be a string or an array of blocks",
                )),
            }
        }
        other => Err(uninspected(at, other)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use warden_content::{Action, ContentSpec};
    use warden_core::{PolicyInfo, Verdict};

    use super::*;

    fn redacting() -> Decision {
        Decision {
            verdict: Verdict::Allow,
            rule: None,
            reasons: Vec::new(),
            warnings: Vec::new(),
            taints: Vec::new(),
            findings: Vec::new(),
            redacted: Some(Value::String(String::new())),
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
        }
    }

    #[test]
    fn every_text_the_model_reads_is_decided_and_redacted_in_place() {
        let body = json!({
            "model": "gpt-4o-mini",
            "max_tokens": 64,
            "messages": [
                {"role": "system", "content": "sys a@example.com"},
                {"role": "user", "name": "b@example.com", "content": [{"type": "text", "text": "part c@example.com"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "send", "arguments": "{\"to\":\"d@example.com\"}"}}]},
                {"role": "tool", "tool_call_id": "1", "content": "result e@example.com"},
            ],
            "tools": [{"type": "function", "function": {"name": "send", "description": "mail f@example.com"}}],
        });
        let mut chat = ChatRequest::parse(Api::Openai, body.to_string().as_bytes()).unwrap();
        assert_eq!(
            (chat.model.as_str(), chat.max_tokens, chat.stream),
            ("gpt-4o-mini", Some(64), false)
        );
        let text = chat.prompt(&crate::Asker::default()).text.unwrap();
        for letter in ["a", "b", "c", "d", "e", "f"] {
            assert!(
                text.contains(&format!("{letter}@example.com")),
                "{letter}: {text}"
            );
        }
        let content = ContentPolicy::compile(&ContentSpec {
            detectors: vec!["email".to_owned()],
            input: Some(Action::Redact),
            ..ContentSpec::default()
        })
        .unwrap();
        chat.apply(&redacting(), Some(&content)).unwrap();
        let forwarded = String::from_utf8(chat.to_bytes()).unwrap();
        assert!(!forwarded.contains("@example.com"), "{forwarded}");
        assert_eq!(
            forwarded.matches("[REDACTED:email]").count(),
            6,
            "{forwarded}"
        );
        let forwarded: Value = serde_json::from_str(&forwarded).unwrap();
        assert_eq!(
            forwarded["messages"][3]["content"],
            "result [REDACTED:email]"
        );
    }

    #[test]
    fn a_finding_cut_across_two_texts_is_refused_not_half_passed() {
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "the code is alpha"},
                {"role": "user", "content": "bravo, keep it"},
            ],
        });
        let mut chat = ChatRequest::parse(Api::Openai, body.to_string().as_bytes()).unwrap();
        // A detector that matches across the paragraph break joining the two texts.
        let content = ContentPolicy::compile(&ContentSpec {
            custom: vec![warden_content::CustomDetectorSpec {
                id: "codeword".to_owned(),
                pattern: r"alpha\s+bravo".to_owned(),
            }],
            input: Some(Action::Redact),
            ..ContentSpec::default()
        })
        .unwrap();
        let e = chat.apply(&redacting(), Some(&content)).unwrap_err();
        assert!(e.message.contains("spans two texts"), "{e}");
    }

    #[test]
    fn a_rewrite_substitutes_the_model_and_lowers_every_limit_field_the_api_reads() {
        let rewrite = Rewrite {
            model: Some(Arc::from("small")),
            max_tokens: Some(100),
        };
        let cases = [
            (
                Api::Openai,
                json!({"max_tokens": 500, "max_completion_tokens": 50}),
                json!({"max_tokens": 100, "max_completion_tokens": 50}),
                50,
            ),
            (
                Api::Openai,
                json!({"max_tokens": 500}),
                json!({"max_tokens": 100}),
                100,
            ),
            (
                Api::Openai,
                json!({}),
                json!({"max_completion_tokens": 100}),
                100,
            ),
            (
                Api::Anthropic,
                json!({"max_tokens": 4096}),
                json!({"max_tokens": 100}),
                100,
            ),
            (
                Api::Anthropic,
                json!({"max_tokens": 7}),
                json!({"max_tokens": 7}),
                7,
            ),
        ];
        for (api, limits, expected, read) in cases {
            let mut body = json!({"model": "big", "messages": [{"role": "user", "content": "hi"}]});
            body.as_object_mut()
                .unwrap()
                .extend(limits.as_object().unwrap().clone());
            let mut chat = ChatRequest::parse(api, body.to_string().as_bytes()).unwrap();
            chat.rewrite(&rewrite);
            let forwarded: Value = serde_json::from_slice(&chat.to_bytes()).unwrap();
            assert_eq!(forwarded["model"], "small");
            assert_eq!(chat.model, "small");
            for (key, value) in expected.as_object().unwrap() {
                assert_eq!(&forwarded[key], value, "{api:?} {limits}: {key}");
            }
            assert_eq!(chat.max_tokens, Some(read), "{api:?} {limits}");
        }
        // A rewrite without a model keeps the asked one.
        let mut chat = ChatRequest::parse(
            Api::Openai,
            br#"{"model":"big","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        chat.rewrite(&Rewrite {
            model: None,
            max_tokens: Some(9),
        });
        assert_eq!(chat.model, "big");
    }
}
