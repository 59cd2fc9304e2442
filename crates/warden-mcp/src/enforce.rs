//! The enforcement core shared by every transport: client messages in, server messages back,
//! each mapped to forward unchanged / forward rewritten / answer directly.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use warden_core::{Decision, Engine, Kind, Request, Verdict};

use crate::message::{self, Message, MessageKind};
use crate::pins::{PinStatus, PinStore, definition_hash};
use crate::reach::never_callable;

/// Who is calling: the Warden session and principal of the messages of one MCP session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The Warden session: the MCP session id, or a configured client identity.
    pub session: Option<String>,
    /// The principal: the authenticated key or token subject, or a configured one.
    pub principal: Option<String>,
}

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Forward the original bytes unchanged.
    Forward,
    /// Forward these bytes instead (arguments or result redacted, tool list filtered, or a
    /// tool result replaced by an error).
    Rewrite(Vec<u8>),
    /// Do not forward; answer the sender with these bytes (a JSON-RPC error response).
    Reply(Vec<u8>),
    /// Do not forward and do not answer (a `tools/call` notification, which has no id).
    Drop,
}

#[derive(Debug, Clone)]
enum Pending {
    /// A `tools/call` (or the `tasks/result` of a task-augmented one): its answer is the result.
    Call(String),
    /// A task-augmented `tools/call`: its answer creates the task whose result comes later.
    Task(String),
    List,
}

/// Requests in flight on one MCP session (or one HTTP request when stateless): which response
/// ids are tool results and tool lists. Responses to other ids pass through.
#[derive(Debug, Default)]
pub struct Exchange {
    pending: Mutex<HashMap<String, Pending>>,
    /// Tasks created by task-augmented calls: task id -> tool.
    tasks: Mutex<HashMap<String, String>>,
    /// Whether the exchange outlives one request (an MCP session or a stdio child), so a task's
    /// result fetched later with `tasks/result` is seen here too.
    persistent: bool,
}

/// Most tasks remembered per exchange.
pub const MAX_TASKS: usize = 10_000;

impl Exchange {
    /// An exchange for one request (stateless HTTP): task-augmented calls are refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// An exchange for a whole MCP session or stdio child.
    pub fn for_session() -> Self {
        Self {
            persistent: true,
            ..Self::default()
        }
    }

    /// Requests waiting for their response.
    pub fn in_flight(&self) -> usize {
        self.pending.lock().len()
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// `tools/call` requests forwarded.
    pub calls_allowed: AtomicU64,
    /// `tools/call` requests denied by policy.
    pub calls_denied: AtomicU64,
    /// `tools/call` requests denied because the tool's definition changed.
    pub calls_held: AtomicU64,
    /// Tool calls whose arguments were redacted.
    pub args_redacted: AtomicU64,
    /// Tool results blocked by policy.
    pub results_blocked: AtomicU64,
    /// Tool results redacted.
    pub results_redacted: AtomicU64,
    /// Tools dropped from `tools/list` results (policy or pin).
    pub tools_hidden: AtomicU64,
    /// Changed tool definitions seen (each distinct change once).
    pub pin_changes: AtomicU64,
    /// Decisions or pin look-ups that failed (failed closed).
    pub failures: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Sees every decision the enforcer makes (`tool_call` and `tool_result`), with the time the
/// decision took, before its outcome is acted on: an audit log, for one. An `Err` (its text is
/// logged, never sent) fails closed: the call is answered with a JSON-RPC error and not
/// forwarded, the result is withheld.
pub type DecisionObserver =
    Arc<dyn Fn(&Request, &Decision, Duration) -> Result<(), String> + Send + Sync>;

/// Enforces a policy on the MCP traffic of one upstream server.
pub struct Enforcer {
    engine: Arc<Engine>,
    pins: Arc<dyn PinStore>,
    upstream: String,
    counters: Counters,
    observer: Option<DecisionObserver>,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

fn duplicate_id(id: Option<&RawValue>) -> Vec<u8> {
    message::error_response(
        id,
        message::INVALID_REQUEST,
        "this request id is still awaiting its response; use a new id",
        None,
    )
}

/// The human-readable reason of a deny decision.
fn deny_message(decision: &Decision) -> String {
    if !decision.reasons.is_empty() {
        let reasons: Vec<&str> = decision.reasons.iter().map(|r| &**r).collect();
        format!("denied by policy: {}", reasons.join("; "))
    } else if let Some(rule) = &decision.rule {
        format!("denied by policy rule `{rule}`")
    } else {
        "denied by policy (no rule allows it)".to_owned()
    }
}

fn deny_data(decision: &Decision) -> Value {
    json!({"rule": decision.rule, "reasons": decision.reasons, "policy": decision.policy.name})
}

/// Whether the decision's redaction is to be applied (not in dry run).
fn enforced_redaction(decision: &Decision) -> Option<&Value> {
    if decision.dry_run_decision.is_some() {
        return None;
    }
    decision.redacted.as_ref()
}

/// Replaces `path` (a chain of object keys) inside the message with `value`.
fn rewrite(bytes: &[u8], path: &[&str], value: Value) -> Option<Vec<u8>> {
    let mut message: Value = serde_json::from_slice(bytes).ok()?;
    let (last, parents) = path.split_last()?;
    let mut cursor = &mut message;
    for key in parents {
        cursor = cursor.get_mut(*key)?;
    }
    cursor.as_object_mut()?.insert((*last).to_owned(), value);
    serde_json::to_vec(&message).ok()
}

/// Checks the 2026-07-28 routing headers against the body: `Mcp-Method` must equal the
/// method, and on `tools/call` `Mcp-Name` must equal the tool name. Returns the mismatch.
pub fn routing_header_mismatch(
    bytes: &[u8],
    method_header: Option<&str>,
    name_header: Option<&str>,
) -> Option<String> {
    if method_header.is_none() && name_header.is_none() {
        return None;
    }
    let message = Message::classify(bytes);
    let method = message.method();
    if let Some(header) = method_header
        && method != Some(header)
    {
        return Some(format!(
            "the `Mcp-Method` header `{header}` does not match the body's method"
        ));
    }
    if let (Some(header), Some("tools/call")) = (name_header, method) {
        let name = message
            .envelope
            .as_ref()
            .and_then(|e| e.params)
            .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
            .and_then(|p| p.get("name").and_then(Value::as_str).map(str::to_owned));
        if name.as_deref() != Some(header) {
            return Some(format!(
                "the `Mcp-Name` header `{header}` does not match the body's tool name"
            ));
        }
    }
    None
}

impl Enforcer {
    /// An enforcer for `upstream` (the name pins are kept under).
    pub fn new(engine: Arc<Engine>, pins: Arc<dyn PinStore>, upstream: impl Into<String>) -> Self {
        Self {
            engine,
            pins,
            upstream: upstream.into(),
            counters: Counters::default(),
            observer: None,
        }
    }

    /// Calls `observer` with every decision (see [`DecisionObserver`]); none by default.
    #[must_use]
    pub fn with_observer(mut self, observer: DecisionObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Decides `request` and hands the decision to the observer. Either failing is an `Err`
    /// (already logged and counted): the caller fails closed.
    fn decide(&self, request: &Request) -> Result<Decision, ()> {
        let started = Instant::now();
        let tool = request.tool.as_deref().unwrap_or_default();
        let decision = self.engine.decide(request).map_err(|e| {
            bump(&self.counters.failures);
            tracing::error!(error = %e, tool = %tool, "decision failed; failing closed");
        })?;
        if let Some(observer) = &self.observer {
            observer(request, &decision, started.elapsed()).map_err(|e| {
                bump(&self.counters.failures);
                tracing::error!(error = %e, tool = %tool, "decision observer failed; failing closed");
            })?;
        }
        Ok(decision)
    }

    /// The upstream's name.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The pin store.
    pub fn pins(&self) -> &Arc<dyn PinStore> {
        &self.pins
    }

    /// Counters for metrics.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Handles one message from the client on its way to the server.
    pub fn client_message(&self, caller: &Caller, exchange: &Exchange, bytes: &[u8]) -> Outcome {
        let message = Message::classify(bytes);
        // An id still awaiting its answer cannot be reused: the other request's answer could
        // be taken for the tool result, and the real result would pass uninspected.
        if message.kind == MessageKind::Request
            && exchange.in_flight() > 0
            && let Some(key) = message.id().and_then(message::id_key)
            && exchange.pending.lock().contains_key(&key)
        {
            return Outcome::Reply(duplicate_id(message.id()));
        }
        match (message.kind, message.method()) {
            (MessageKind::Request, Some("tools/call")) => {
                self.tool_call(caller, exchange, &message, bytes)
            }
            (MessageKind::Request, Some("tasks/result")) => self.task_result(exchange, &message),
            (MessageKind::Request, Some("tools/list")) => {
                match message.id().and_then(message::id_key) {
                    Some(key) => match exchange.pending.lock().entry(key) {
                        Entry::Occupied(_) => Outcome::Reply(duplicate_id(message.id())),
                        Entry::Vacant(slot) => {
                            slot.insert(Pending::List);
                            Outcome::Forward
                        }
                    },
                    None => Outcome::Reply(message::error_response(
                        message.id(),
                        message::INVALID_REQUEST,
                        "a request id must be a string or a number",
                        None,
                    )),
                }
            }
            // A `tools/call` without an id cannot be answered: it is not forwarded either.
            (MessageKind::Notification, Some("tools/call")) => Outcome::Drop,
            (MessageKind::Batch, _) => Self::batch(bytes),
            // What Warden cannot read is not forwarded: the server might read it differently
            // (duplicate keys, a result next to an error) and run an uninspected call.
            (MessageKind::Invalid, _) => Outcome::Reply(message::error_response(
                None,
                message::INVALID_REQUEST,
                "not a JSON-RPC 2.0 message warden can read (invalid JSON, duplicate keys, or both result and error)",
                None,
            )),
            _ => Outcome::Forward,
        }
    }

    /// JSON-RPC batches were removed from MCP in 2025-06-18. A batch that holds an inspected
    /// method, or anything Warden cannot read, is refused rather than inspected element by
    /// element; others pass through.
    fn batch(bytes: &[u8]) -> Outcome {
        let inspected = serde_json::from_slice::<Vec<&RawValue>>(bytes).map_or(true, |items| {
            items.iter().any(|item| {
                let element = Message::classify(item.get().as_bytes());
                matches!(element.kind, MessageKind::Invalid | MessageKind::Batch)
                    || matches!(
                        element.method(),
                        Some("tools/call" | "tools/list" | "tasks/result")
                    )
            })
        });
        if inspected {
            Outcome::Reply(message::error_response(
                None,
                message::INVALID_REQUEST,
                "batches holding tools/call, tools/list, tasks/result or unreadable messages are not supported through warden",
                None,
            ))
        } else {
            Outcome::Forward
        }
    }

    fn tool_call(
        &self,
        caller: &Caller,
        exchange: &Exchange,
        message: &Message<'_>,
        bytes: &[u8],
    ) -> Outcome {
        let id = message.id();
        let Some(key) = id.and_then(message::id_key) else {
            return Outcome::Reply(message::error_response(
                id,
                message::INVALID_REQUEST,
                "a request id must be a string or a number",
                None,
            ));
        };
        let params = message
            .envelope
            .as_ref()
            .and_then(|e| e.params)
            .and_then(|p| serde_json::from_str::<Map<String, Value>>(p.get()).ok());
        let invalid = |what: &str| {
            Outcome::Reply(message::error_response(
                id,
                message::INVALID_PARAMS,
                what,
                None,
            ))
        };
        let Some(mut params) = params else {
            return invalid("tools/call needs params with a tool `name`");
        };
        let Some(Value::String(tool)) = params.remove("name") else {
            return invalid("tools/call needs a string tool `name`");
        };
        let args = match params.remove("arguments") {
            None | Some(Value::Null) => None,
            Some(args @ Value::Object(_)) => Some(args),
            Some(_) => return invalid("tools/call `arguments` must be an object"),
        };
        // A task-augmented call (2025-11-25 `params.task`) delivers its result later through
        // `tasks/result`: only an exchange that lasts (a session) can see it, so stateless
        // requests get a refusal rather than an uninspected result.
        let task = params.get("task").is_some_and(|t| !t.is_null());
        if task && !exchange.persistent {
            bump(&self.counters.calls_denied);
            return Outcome::Reply(message::error_response(
                id,
                message::DENIED,
                "task-augmented tool calls need an MCP session through warden; call the tool without `task`",
                None,
            ));
        }
        match self.pins.is_held(&self.upstream, &tool) {
            Ok(false) => {}
            Ok(true) => {
                bump(&self.counters.calls_held);
                let text = format!(
                    "tool `{tool}` changed since it was pinned; approve it with `warden mcp approve {} {tool}`",
                    self.upstream
                );
                return Outcome::Reply(message::error_response(
                    id,
                    message::TOOL_CHANGED,
                    &text,
                    None,
                ));
            }
            Err(e) => {
                bump(&self.counters.failures);
                tracing::error!(error = %e, "pin look-up failed; call denied");
                return Outcome::Reply(message::error_response(
                    id,
                    message::DECISION_FAILED,
                    "policy decision failed; the call was not forwarded",
                    None,
                ));
            }
        }
        let request = Request {
            session: caller.session.clone(),
            principal: caller.principal.clone(),
            kind: Kind::ToolCall,
            tool: Some(tool.clone()),
            args,
            ..Request::default()
        };
        let decision = match self.decide(&request) {
            Ok(decision) => decision,
            Err(()) => {
                return Outcome::Reply(message::error_response(
                    id,
                    message::DECISION_FAILED,
                    "policy decision failed; the call was not forwarded",
                    None,
                ));
            }
        };
        if decision.verdict == Verdict::Deny {
            bump(&self.counters.calls_denied);
            tracing::info!(tool = %tool, rule = ?decision.rule, "tool call denied");
            return Outcome::Reply(message::error_response(
                id,
                message::DENIED,
                &deny_message(&decision),
                Some(deny_data(&decision)),
            ));
        }
        bump(&self.counters.calls_allowed);
        if let Entry::Vacant(slot) = exchange.pending.lock().entry(key) {
            slot.insert(if task {
                Pending::Task(tool)
            } else {
                Pending::Call(tool)
            });
        } else {
            return Outcome::Reply(duplicate_id(id));
        }
        match enforced_redaction(&decision) {
            Some(redacted) => match rewrite(bytes, &["params", "arguments"], redacted.clone()) {
                Some(rewritten) => {
                    bump(&self.counters.args_redacted);
                    Outcome::Rewrite(rewritten)
                }
                None => Outcome::Reply(message::error_response(
                    id,
                    message::DECISION_FAILED,
                    "cannot rewrite the redacted arguments; the call was not forwarded",
                    None,
                )),
            },
            None => Outcome::Forward,
        }
    }

    /// Handles one message from the server on its way to the client. Never answers the server.
    pub fn server_message(&self, caller: &Caller, exchange: &Exchange, bytes: &[u8]) -> Outcome {
        // Nothing to read (an SSE priming event has empty data): nothing to inspect.
        if exchange.in_flight() == 0 || bytes.iter().all(u8::is_ascii_whitespace) {
            return Outcome::Forward;
        }
        let message = Message::classify(bytes);
        match message.kind {
            MessageKind::Response | MessageKind::ErrorResponse => {}
            MessageKind::Batch => return self.server_batch(caller, exchange, bytes),
            // While a result is awaited, what Warden cannot read is not forwarded: the client
            // might read it as that result, uninspected.
            MessageKind::Invalid => {
                bump(&self.counters.failures);
                tracing::warn!(
                    "dropped an unreadable message from the server while a result was awaited"
                );
                return Outcome::Drop;
            }
            MessageKind::Request | MessageKind::Notification => return Outcome::Forward,
        }
        let Some(id) = message.id() else {
            return Outcome::Forward;
        };
        let Some(key) = message::id_key(id) else {
            return Outcome::Forward;
        };
        let Some(pending) = exchange.pending.lock().remove(&key) else {
            return Outcome::Forward;
        };
        let Some(result) = message.envelope.as_ref().and_then(|e| e.result) else {
            return Outcome::Forward;
        };
        match pending {
            Pending::Call(tool) => self.tool_result(caller, id, &tool, result, bytes),
            Pending::Task(tool) => Self::task_created(exchange, id, &tool, result),
            Pending::List => self.tool_list(caller, result, bytes),
        }
    }

    /// A batch from the server (not sent since 2025-06-18) is inspected element by element.
    fn server_batch(&self, caller: &Caller, exchange: &Exchange, bytes: &[u8]) -> Outcome {
        let Ok(items) = serde_json::from_slice::<Vec<&RawValue>>(bytes) else {
            return Outcome::Drop;
        };
        let mut changed = false;
        let mut kept: Vec<Vec<u8>> = Vec::with_capacity(items.len());
        for item in items {
            let raw = item.get().as_bytes();
            if Message::classify(raw).kind == MessageKind::Batch {
                changed = true;
                continue;
            }
            match self.server_message(caller, exchange, raw) {
                Outcome::Forward => kept.push(raw.to_vec()),
                Outcome::Rewrite(bytes) => {
                    changed = true;
                    kept.push(bytes);
                }
                Outcome::Reply(_) | Outcome::Drop => changed = true,
            }
        }
        if !changed {
            return Outcome::Forward;
        }
        if kept.is_empty() {
            return Outcome::Drop;
        }
        let mut out = b"[".to_vec();
        out.extend_from_slice(&kept.join(&b","[..]));
        out.push(b']');
        Outcome::Rewrite(out)
    }

    /// The answer to a task-augmented call: remember which tool the task runs. Anything but a
    /// task is inspected as the tool's result.
    fn task_created(exchange: &Exchange, id: &RawValue, tool: &str, result: &RawValue) -> Outcome {
        let task_id = serde_json::from_str::<Value>(result.get())
            .ok()
            .and_then(|r| {
                r.pointer("/task/taskId")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        let Some(task_id) = task_id else {
            return Outcome::Rewrite(message::error_response(
                Some(id),
                message::RESULT_BLOCKED,
                "the server answered a task-augmented call without a task",
                None,
            ));
        };
        let mut tasks = exchange.tasks.lock();
        if tasks.len() >= MAX_TASKS {
            tasks.clear();
        }
        tasks.insert(task_id, tool.to_owned());
        Outcome::Forward
    }

    /// `tasks/result` for a task Warden saw created: its answer is the tool's result. Unknown
    /// tasks are refused (their result could not be inspected).
    fn task_result(&self, exchange: &Exchange, message: &Message<'_>) -> Outcome {
        let id = message.id();
        let task_id = message
            .envelope
            .as_ref()
            .and_then(|e| e.params)
            .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
            .and_then(|p| p.get("taskId").and_then(Value::as_str).map(str::to_owned));
        let tool = task_id.and_then(|t| exchange.tasks.lock().get(&t).cloned());
        let (Some(tool), Some(key)) = (tool, id.and_then(message::id_key)) else {
            bump(&self.counters.calls_denied);
            return Outcome::Reply(message::error_response(
                id,
                message::DENIED,
                "unknown task: warden only returns results of tasks it saw created",
                None,
            ));
        };
        match exchange.pending.lock().entry(key) {
            Entry::Occupied(_) => Outcome::Reply(duplicate_id(id)),
            Entry::Vacant(slot) => {
                slot.insert(Pending::Call(tool));
                Outcome::Forward
            }
        }
    }

    fn tool_result(
        &self,
        caller: &Caller,
        id: &RawValue,
        tool: &str,
        result: &RawValue,
        bytes: &[u8],
    ) -> Outcome {
        let blocked = |code, text: &str, data| {
            Outcome::Rewrite(message::error_response(Some(id), code, text, data))
        };
        let Ok(result) = serde_json::from_str::<Value>(result.get()) else {
            return blocked(
                message::RESULT_BLOCKED,
                "the tool result is not valid JSON",
                None,
            );
        };
        let request = Request {
            session: caller.session.clone(),
            principal: caller.principal.clone(),
            kind: Kind::ToolResult,
            tool: Some(tool.to_owned()),
            result: Some(result),
            ..Request::default()
        };
        let decision = match self.decide(&request) {
            Ok(decision) => decision,
            Err(()) => {
                return blocked(
                    message::DECISION_FAILED,
                    "policy decision failed; the tool result was withheld",
                    None,
                );
            }
        };
        if decision.verdict == Verdict::Deny {
            bump(&self.counters.results_blocked);
            tracing::info!(tool = %tool, rule = ?decision.rule, "tool result blocked");
            let text = format!("tool result blocked: {}", deny_message(&decision));
            return blocked(message::RESULT_BLOCKED, &text, Some(deny_data(&decision)));
        }
        match enforced_redaction(&decision) {
            Some(redacted) => match rewrite(bytes, &["result"], redacted.clone()) {
                Some(rewritten) => {
                    bump(&self.counters.results_redacted);
                    Outcome::Rewrite(rewritten)
                }
                None => blocked(
                    message::RESULT_BLOCKED,
                    "cannot rewrite the redacted result",
                    None,
                ),
            },
            None => Outcome::Forward,
        }
    }

    fn tool_list(&self, caller: &Caller, result: &RawValue, bytes: &[u8]) -> Outcome {
        let Ok(mut result) = serde_json::from_str::<Map<String, Value>>(result.get()) else {
            return Outcome::Forward;
        };
        let Some(Value::Array(tools)) = result.get_mut("tools") else {
            return Outcome::Forward;
        };
        let policy = self.engine.policy();
        let before = tools.len();
        tools.retain(|tool| {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                return false;
            };
            match self.pins.observe(&self.upstream, name, &definition_hash(tool)) {
                Ok(PinStatus::New | PinStatus::Same) => {}
                Ok(PinStatus::Changed { first }) => {
                    if first {
                        bump(&self.counters.pin_changes);
                        tracing::warn!(upstream = %self.upstream, tool = %name, "tool definition changed since it was pinned; hidden until approved");
                    }
                    return false;
                }
                Err(e) => {
                    bump(&self.counters.failures);
                    tracing::error!(error = %e, tool = %name, "pin store failed; tool hidden");
                    return false;
                }
            }
            !never_callable(&policy, name, caller.principal.as_deref())
        });
        let hidden = before - tools.len();
        if hidden == 0 {
            return Outcome::Forward;
        }
        self.counters
            .tools_hidden
            .fetch_add(hidden as u64, Ordering::Relaxed);
        match rewrite(bytes, &["result"], Value::Object(result)) {
            Some(rewritten) => Outcome::Rewrite(rewritten),
            None => Outcome::Forward,
        }
    }
}
