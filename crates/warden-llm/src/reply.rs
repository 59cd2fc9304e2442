//! A whole (not streamed) answer: its texts decided as one `completion` request and redacted
//! in place, the tool calls the model proposes decided one by one as `tool_call` requests. A
//! denied call is taken out and its explanation put where the client's SDK reads text, so the
//! agent never sees a call it may not make; an allowed call whose arguments the policy
//! redacts carries the redacted arguments.

use serde_json::{Map, Value};
use warden_content::ContentPolicy;
use warden_core::{Decision, Kind};

use crate::api::{Api, Refusal, RefusalKind};
use crate::{Asker, Judge, texts};

/// What became of one proposed tool call.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolOutcome {
    /// It goes to the client; with `Some(args)`, with these (redacted) arguments.
    Allowed(Option<Value>),
    /// It is taken out; the text explains why.
    Denied(String),
}

fn explanation(name: &str, decision: &Decision) -> String {
    let why = if decision.reasons.is_empty() {
        decision
            .rule
            .as_deref()
            .unwrap_or("the policy's default")
            .to_owned()
    } else {
        decision
            .reasons
            .iter()
            .map(|r| r.as_ref())
            .collect::<Vec<_>>()
            .join("; ")
    };
    format!("Warden denied the tool call {name}: {why}")
}

/// Decides one tool call the model proposes (`arguments` as the model wrote them: a JSON
/// object, or for OpenAI a string holding one).
pub fn decide_tool(
    judge: &dyn Judge,
    asker: &Asker,
    name: &str,
    arguments: &Value,
) -> Result<ToolOutcome, Refusal> {
    let args = match arguments {
        Value::Object(_) => arguments.clone(),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(parsed @ Value::Object(_)) => parsed,
            _ => {
                return Ok(ToolOutcome::Denied(format!(
                    "Warden denied the tool call {name}: its arguments are not a JSON object"
                )));
            }
        },
        _ => {
            return Ok(ToolOutcome::Denied(format!(
                "Warden denied the tool call {name}: its arguments are not a JSON object"
            )));
        }
    };
    let mut request = asker.request(Kind::ToolCall);
    request.tool = Some(name.to_owned());
    request.args = Some(args);
    let decision = judge.decide(&request).map_err(|_| Refusal::unavailable())?;
    if !decision.verdict.is_allow() {
        return Ok(ToolOutcome::Denied(explanation(name, &decision)));
    }
    Ok(ToolOutcome::Allowed(decision.redacted))
}

/// The proposed tool calls of a body: where each is, its name and arguments.
struct Proposed {
    /// Pointer to the call (OpenAI: the `tool_calls` element; Anthropic: the content block).
    at: String,
    name: String,
    arguments: Value,
}

fn upstream(message: impl Into<String>) -> Refusal {
    Refusal::new(RefusalKind::Upstream, message)
}

fn known(members: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), Refusal> {
    match members.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(upstream(format!(
            "the upstream's answer holds `{at}/{key}`, which Warden does not inspect"
        ))),
        None => Ok(()),
    }
}

fn openai_parts(
    body: &Value,
    texts: &mut Vec<String>,
    tools: &mut Vec<Proposed>,
) -> Result<(), Refusal> {
    let choices = body
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| upstream("the upstream's answer has no `choices`"))?;
    for (i, choice) in choices.iter().enumerate() {
        let at = format!("/choices/{i}/message");
        if let Some(choice) = choice.as_object() {
            known(
                choice,
                &["index", "message", "finish_reason", "logprobs"],
                &format!("/choices/{i}"),
            )?;
        }
        if choice.get("logprobs").is_some_and(|v| !v.is_null()) {
            return Err(upstream(
                "the upstream's answer holds log probabilities, which Warden does not inspect",
            ));
        }
        let Some(message) = choice.get("message").and_then(Value::as_object) else {
            return Err(upstream(format!("the upstream's answer has no `{at}`")));
        };
        known(
            message,
            &[
                "role",
                "content",
                "tool_calls",
                "refusal",
                "annotations",
                "function_call",
            ],
            &at,
        )?;
        for member in ["content", "refusal"] {
            if let Some(Value::String(_)) = message.get(member) {
                texts.push(format!("{at}/{member}"));
            }
        }
        if let Some(annotations) = message.get("annotations") {
            texts::leaves(annotations, &format!("{at}/annotations"), texts);
        }
        if message.get("function_call").is_some_and(|v| !v.is_null()) {
            return Err(upstream(
                "the upstream's answer holds a legacy `function_call`, which Warden does not decide",
            ));
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            for (j, call) in calls.iter().enumerate() {
                let function = call.get("function");
                let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
                let arguments = function.and_then(|f| f.get("arguments"));
                let (Some(name), Some(arguments)) = (name, arguments) else {
                    return Err(upstream(format!(
                        "the upstream's answer holds a tool call without a name or arguments at `{at}/tool_calls/{j}`"
                    )));
                };
                tools.push(Proposed {
                    at: format!("{at}/tool_calls/{j}"),
                    name: name.to_owned(),
                    arguments: arguments.clone(),
                });
            }
        }
    }
    Ok(())
}

fn anthropic_parts(
    body: &Value,
    texts: &mut Vec<String>,
    tools: &mut Vec<Proposed>,
) -> Result<(), Refusal> {
    let blocks = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| upstream("the upstream's answer has no `content`"))?;
    for (i, block) in blocks.iter().enumerate() {
        let at = format!("/content/{i}");
        let kind = block
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match kind {
            "text" => {
                texts.push(format!("{at}/text"));
                if let Some(citations) = block.get("citations") {
                    texts::leaves(citations, &format!("{at}/citations"), texts);
                }
            }
            "thinking" => texts.push(format!("{at}/thinking")),
            "redacted_thinking" => {}
            "tool_use" => {
                let name = block.get("name").and_then(Value::as_str);
                let (Some(name), Some(input)) = (name, block.get("input")) else {
                    return Err(upstream(format!(
                        "the upstream's answer holds a tool_use block without a name or input at `{at}`"
                    )));
                };
                tools.push(Proposed {
                    at,
                    name: name.to_owned(),
                    arguments: input.clone(),
                });
            }
            other => {
                return Err(upstream(format!(
                    "the upstream's answer holds a content block of type `{other}`, which Warden does not inspect"
                )));
            }
        }
    }
    Ok(())
}

/// Decides and rewrites a whole answer; returns the body to send the client and the usage
/// the answer reports.
pub fn review(
    api: Api,
    bytes: &[u8],
    asker: &Asker,
    judge: &dyn Judge,
    content: Option<&ContentPolicy>,
) -> Result<(Vec<u8>, Option<crate::Usage>), Refusal> {
    warden_core::unique_keys::reject_duplicate_keys(bytes)
        .map_err(|_| upstream("the upstream's answer repeats a member name"))?;
    let mut body: Value =
        serde_json::from_slice(bytes).map_err(|_| upstream("the upstream's answer is not JSON"))?;
    let mut found = Vec::new();
    let mut tools = Vec::new();
    match api {
        Api::Openai => openai_parts(&body, &mut found, &mut tools)?,
        Api::Anthropic => anthropic_parts(&body, &mut found, &mut tools)?,
    }
    let usage = body.get("usage").and_then(|u| crate::Usage::of(api, u));
    let mut request = asker.request(Kind::Completion);
    request.text = Some(texts::join(&body, &found));
    if let (Some(usage), Some(context)) = (usage, request.context.as_mut()) {
        context.insert("input_tokens".to_owned(), usage.input.into());
        context.insert("output_tokens".to_owned(), usage.output.into());
        if let Some(price) = &asker.price {
            context.insert("cost_usd".to_owned(), price.usd(usage).into());
        }
    }
    let decision = judge.decide(&request).map_err(|_| Refusal::unavailable())?;
    if !decision.verdict.is_allow() {
        return Err(Refusal::denied("the answer", &decision));
    }
    if decision.redacted.is_some() {
        let content = content.ok_or_else(Refusal::unavailable)?;
        texts::redact(&mut body, &found, content, Kind::Completion)?;
    }
    let mut denied = Vec::new();
    for proposed in &tools {
        match decide_tool(judge, asker, &proposed.name, &proposed.arguments)? {
            ToolOutcome::Allowed(None) => {}
            ToolOutcome::Allowed(Some(args)) => set_arguments(api, &mut body, &proposed.at, args),
            ToolOutcome::Denied(why) => denied.push((proposed.at.clone(), why)),
        }
    }
    if !denied.is_empty() {
        match api {
            Api::Openai => openai_remove(&mut body, &denied),
            Api::Anthropic => anthropic_replace(&mut body, &denied),
        }
    }
    Ok((body.to_string().into_bytes(), usage))
}

fn set_arguments(api: Api, body: &mut Value, at: &str, args: Value) {
    match api {
        Api::Openai => {
            if let Some(slot) = body.pointer_mut(&format!("{at}/function/arguments")) {
                *slot = Value::String(args.to_string());
            }
        }
        Api::Anthropic => {
            if let Some(slot) = body.pointer_mut(&format!("{at}/input")) {
                *slot = args;
            }
        }
    }
}

/// Appends `text` to an OpenAI message's `content` (a paragraph after what it holds).
pub(crate) fn append_content(message: &mut Map<String, Value>, text: &str) {
    let joined = match message.get("content").and_then(Value::as_str) {
        Some(existing) if !existing.is_empty() => format!("{existing}\n\n{text}"),
        _ => text.to_owned(),
    };
    message.insert("content".to_owned(), Value::String(joined));
}

fn openai_remove(body: &mut Value, denied: &[(String, String)]) {
    let Some(choices) = body.get_mut("choices").and_then(Value::as_array_mut) else {
        return;
    };
    for (i, choice) in choices.iter_mut().enumerate() {
        let prefix = format!("/choices/{i}/message/tool_calls/");
        let here: Vec<(usize, &String)> = denied
            .iter()
            .filter_map(|(at, why)| at.strip_prefix(&prefix)?.parse().ok().map(|j| (j, why)))
            .collect();
        if here.is_empty() {
            continue;
        }
        let Some(choice) = choice.as_object_mut() else {
            continue;
        };
        let Some(message) = choice.get_mut("message").and_then(Value::as_object_mut) else {
            continue;
        };
        let remaining = match message.get_mut("tool_calls").and_then(Value::as_array_mut) {
            Some(calls) => {
                let kept: Vec<Value> = std::mem::take(calls)
                    .into_iter()
                    .enumerate()
                    .filter(|(j, _)| !here.iter().any(|(d, _)| d == j))
                    .map(|(_, call)| call)
                    .collect();
                *calls = kept;
                calls.len()
            }
            None => 0,
        };
        for (_, why) in &here {
            append_content(message, why);
        }
        if remaining == 0 {
            message.remove("tool_calls");
            if choice.get("finish_reason").and_then(Value::as_str) == Some("tool_calls") {
                choice.insert("finish_reason".to_owned(), Value::String("stop".to_owned()));
            }
        }
    }
}

fn anthropic_replace(body: &mut Value, denied: &[(String, String)]) {
    for (at, why) in denied {
        if let Some(block) = body.pointer_mut(at) {
            *block = serde_json::json!({"type": "text", "text": why});
        }
    }
    let tool_use_left = body
        .get("content")
        .and_then(Value::as_array)
        .is_some_and(|blocks| {
            blocks
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
        });
    if !tool_use_left
        && body.get("stop_reason").and_then(Value::as_str) == Some("tool_use")
        && let Some(members) = body.as_object_mut()
    {
        members.insert(
            "stop_reason".to_owned(),
            Value::String("end_turn".to_owned()),
        );
    }
}
