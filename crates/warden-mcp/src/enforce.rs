//! The enforcement core shared by every transport: client messages in, server messages back,
//! each mapped to forward (the bytes Warden writes from what it read and decided) / answer
//! the sender / drop.
//!
//! The principle: the server receives exactly what Warden decided on, and the client receives
//! only what Warden inspected. Every message is read strictly ([`Message::parse`]) and written
//! again; every answer is matched to a request Warden saw, by canonical id, and an answer that
//! matches none is dropped.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use warden_core::state::ApprovalStatus;
use warden_core::{CompiledPolicy, Decision, Engine, Kind, Request, Verdict};

use crate::message::{self, Id, Message, MessageKind, Refusal, check_members};
use crate::pins::{PinStatus, PinStore, definition_subset, subset_hash};
use crate::reach::never_callable;

/// Who is calling: the Warden session and principal of the messages of one MCP session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The Warden session (whose taints and history apply): a configured identity or the
    /// authenticated key's, never one the client picks.
    pub session: Option<String>,
    /// The principal: the authenticated key or token subject, or a configured one.
    pub principal: Option<String>,
}

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes on to the other side: the message as Warden read it (and, where the
    /// policy says so, redacted, filtered or replaced by an error), written again.
    Forward(Vec<u8>),
    /// Do not forward; answer the sender with these bytes (a JSON-RPC error response).
    Reply(Vec<u8>),
    /// Do not forward and do not answer.
    Drop,
}

/// What a client request in flight is, for inspecting its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    /// A `tools/call` (or the `tasks/result` of a task-augmented one): its answer is the result.
    Call(String),
    /// A task-augmented `tools/call`: its answer creates the task whose result comes later.
    Task(String),
    /// A `tools/list`: its answer is filtered.
    List,
    /// Any other request: its answer is forwarded (written again).
    Other,
}

/// Server requests whose content is decided: the server asks the client's model
/// (`sampling/createMessage`) or user (`elicitation/create`), and the answer goes back to it.
const DECIDED_SERVER_REQUESTS: [&str; 2] = ["sampling/createMessage", "elicitation/create"];

/// Most client requests in flight per exchange; beyond it requests are refused.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Most answered requests remembered per exchange, so that an answer the server sends again
/// (a resumed stream replays events) is inspected again instead of passing as unknown.
pub const MAX_ANSWERED: usize = 1024;
/// Most server requests awaiting the client's answer per exchange.
pub const MAX_SERVER_REQUESTS: usize = 1024;
/// Longest tool name decided, in bytes (the daemon's default identifier limit): a longer one
/// is refused before it reaches the policy or the session history.
pub const MAX_TOOL_NAME_BYTES: usize = 256;
/// Most tasks remembered per exchange.
pub const MAX_TASKS: usize = 10_000;

#[derive(Debug, Default)]
struct Tracked {
    /// Client requests awaiting the server's answer.
    pending: HashMap<Id, Pending>,
    /// Client requests answered recently (oldest first in `answered_order`).
    answered: HashMap<Id, Pending>,
    answered_order: VecDeque<Id>,
    /// Server requests awaiting the client's answer: id -> method.
    server_pending: HashMap<Id, String>,
    /// Tasks created by task-augmented calls: task id -> tool.
    tasks: HashMap<String, String>,
}

impl Tracked {
    fn answer(&mut self, id: &Id) -> Option<Pending> {
        if let Some(pending) = self.pending.remove(id) {
            if self.answered_order.len() >= MAX_ANSWERED
                && let Some(oldest) = self.answered_order.pop_front()
            {
                self.answered.remove(&oldest);
            }
            if self.answered.insert(id.clone(), pending.clone()).is_none() {
                self.answered_order.push_back(id.clone());
            }
            return Some(pending);
        }
        // Sent again (a replayed event): inspected as the first time.
        self.answered.get(id).cloned()
    }
}

/// The requests in flight on one MCP session (a stdio child, an `Mcp-Session-Id`, or one HTTP
/// request when stateless), both ways, and the tasks created on it.
#[derive(Debug, Default)]
pub struct Exchange {
    tracked: Mutex<Tracked>,
    /// Whether the exchange outlives one request (an MCP session or a stdio child), so a task's
    /// result fetched later with `tasks/result` is seen here too.
    persistent: bool,
}

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

    /// Client requests waiting for their response.
    pub fn in_flight(&self) -> usize {
        self.tracked.lock().pending.len()
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// `tools/call` requests forwarded.
    pub calls_allowed: AtomicU64,
    /// `tools/call` requests (and client answers to decided server requests) denied by policy.
    pub calls_denied: AtomicU64,
    /// `tools/call` requests denied because the tool's definition changed.
    pub calls_held: AtomicU64,
    /// `tools/call` requests answered as pending a person's approval.
    pub calls_pending: AtomicU64,
    /// Tool calls whose arguments were redacted.
    pub args_redacted: AtomicU64,
    /// Tool results (and decided server requests) blocked by policy.
    pub results_blocked: AtomicU64,
    /// Tool results redacted.
    pub results_redacted: AtomicU64,
    /// Tools dropped from `tools/list` results (policy or pin).
    pub tools_hidden: AtomicU64,
    /// Changed tool definitions seen (each distinct change once).
    pub pin_changes: AtomicU64,
    /// Decisions or pin look-ups that failed (failed closed).
    pub failures: AtomicU64,
    /// Messages refused as unreadable or ambiguous (see [`Refusal`]).
    pub refused: AtomicU64,
    /// Answers dropped because they match no request in flight.
    pub unmatched: AtomicU64,
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

/// What decides the proxy's requests: the library's [`Engine`] (the `warden mcp` commands), or
/// a host's decision pipeline (the daemon's `/mcp/{name}` mounts). The proxy is synchronous:
/// a host whose effects are asynchronous waits for them here.
pub trait Decider: Send + Sync {
    /// Decides `request` with every effect of the host done; an `Err` (already logged by the
    /// host, or not) makes the proxy fail closed.
    fn decide(&self, request: &Request) -> Result<Decision, String>;
    /// The policy that decides, for `tools/list` (tools it can never allow are hidden); `None`
    /// when the host has none loaded (the list is then withheld and calls fail closed).
    fn policy(&self) -> Option<Arc<CompiledPolicy>>;
    /// Where the approval `id` stands, for a call that waits for it. `Ok(None)`: the host
    /// cannot tell (no approver can reach its approvals), so a held call is answered at once.
    fn approval_status(&self, _id: &str) -> Result<Option<ApprovalStatus>, String> {
        Ok(None)
    }
    /// Waits `pause` on this thread while a held call waits for its approval. A host on an
    /// asynchronous runtime hands the thread's other work away first (the default only sleeps).
    fn pause(&self, pause: Duration) {
        std::thread::sleep(pause);
    }
}

/// How often a held call looks at its approval while it waits, at most.
const APPROVAL_POLL: Duration = Duration::from_millis(100);

impl Decider for Engine {
    fn decide(&self, request: &Request) -> Result<Decision, String> {
        Engine::decide(self, request).map_err(|e| e.to_string())
    }

    fn policy(&self) -> Option<Arc<CompiledPolicy>> {
        Some(Engine::policy(self))
    }
}

/// Enforces a policy on the MCP traffic of one upstream server.
pub struct Enforcer {
    engine: Arc<dyn Decider>,
    pins: Arc<dyn PinStore>,
    upstream: String,
    counters: Counters,
    observer: Option<DecisionObserver>,
    approval_wait: Duration,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

fn duplicate_id(id: &Id) -> Outcome {
    Outcome::Reply(message::error_response(
        Some(id),
        message::INVALID_REQUEST,
        "this request id is still awaiting its response; use a new id",
        None,
    ))
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
    let mut data =
        json!({"rule": decision.rule, "reasons": decision.reasons, "policy": decision.policy.name});
    // A denied or expired approval: name it, so the agent's operator can look it up.
    if let (Some(approval), Some(data)) = (&decision.approval, data.as_object_mut()) {
        data.insert("approval".to_owned(), json!(approval));
    }
    data
}

fn pending_message(decision: &Decision) -> String {
    let why = if decision.reasons.is_empty() {
        format!("rule `{}`", decision.rule.as_deref().unwrap_or_default())
    } else {
        let reasons: Vec<&str> = decision.reasons.iter().map(|r| &**r).collect();
        reasons.join("; ")
    };
    match &decision.approval {
        Some(approval) => format!(
            "pending approval: {why}; approval `{}` waits for a person (`warden approvals approve {}`); call again with the same arguments once it is approved",
            approval.id, approval.id
        ),
        None => format!("pending approval: {why}; no approval could be asked for here"),
    }
}

fn pending_data(decision: &Decision) -> Value {
    json!({
        "rule": decision.rule,
        "reasons": decision.reasons,
        "policy": decision.policy.name,
        "approval": decision.approval,
        "retry": "the same tools/call with the same arguments, once the approval is approved",
    })
}

/// The request deciding `tool` of `kind` for `caller` (its args or result set by the caller).
fn decision_request(caller: &Caller, kind: Kind, tool: &str) -> Request {
    Request {
        session: caller.session.clone(),
        principal: caller.principal.clone(),
        kind,
        tool: Some(tool.to_owned()),
        ..Request::default()
    }
}

/// Whether the decision's redaction is to be applied (not in dry run).
fn enforced_redaction(decision: &Decision) -> Option<&Value> {
    if decision.dry_run_decision.is_some() {
        return None;
    }
    decision.redacted.as_ref()
}

/// The `params` members of the methods Warden reads: a key that folds to one of them without
/// being it would be that member to a case-insensitive server.
fn params_members(method: &str) -> &'static [&'static str] {
    match method {
        "tools/call" => &["name", "arguments", "task", "_meta", "requestState"],
        "tasks/result" => &["taskId", "_meta"],
        "tools/list" => &["cursor", "_meta"],
        "notifications/cancelled" => &["requestId", "reason", "_meta"],
        _ => &["_meta"],
    }
}

/// Checks the 2026-07-28 routing headers against the body: `Mcp-Method` must equal the
/// method, and on `tools/call` `Mcp-Name` must equal the tool name. Returns the mismatch.
pub fn routing_header_mismatch(
    message: &Message,
    method_header: Option<&str>,
    name_header: Option<&str>,
) -> Option<String> {
    if method_header.is_none() && name_header.is_none() {
        return None;
    }
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
            .params_object()
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str);
        if name != Some(header) {
            return Some(format!(
                "the `Mcp-Name` header `{header}` does not match the body's tool name"
            ));
        }
    }
    None
}

impl Enforcer {
    /// An enforcer for `upstream` (the name pins are kept under).
    pub fn new(
        engine: Arc<dyn Decider>,
        pins: Arc<dyn PinStore>,
        upstream: impl Into<String>,
    ) -> Self {
        Self {
            engine,
            pins,
            upstream: upstream.into(),
            counters: Counters::default(),
            observer: None,
            approval_wait: Duration::ZERO,
        }
    }

    /// A `tools/call` held for approval waits up to `wait` for it (checking every
    /// [`APPROVAL_POLL`]) and is decided again once it is answered; zero (the default): it is
    /// answered at once with [`message::APPROVAL_PENDING`]. The wait holds the transport's
    /// thread: keep it well below the client's and the host's request timeouts.
    #[must_use]
    pub fn with_approval_wait(mut self, wait: Duration) -> Self {
        self.approval_wait = wait;
        self
    }

    /// A held call's decision once its approval is answered or the wait is over: decided again
    /// when a person answered (an approved call goes through, consuming the approval; a denied
    /// one is denied), else as it was (pending). A failure to look is a failure (fail closed).
    fn await_approval(&self, request: &Request, decision: Decision) -> Result<Decision, ()> {
        let Some(id) = decision.approval.as_ref().map(|a| a.id.clone()) else {
            return Ok(decision);
        };
        if self.approval_wait.is_zero() {
            return Ok(decision);
        }
        let deadline = Instant::now() + self.approval_wait;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(decision);
            }
            self.engine.pause(APPROVAL_POLL.min(deadline - now));
            match self.engine.approval_status(&id) {
                Ok(Some(ApprovalStatus::Pending)) => {}
                Ok(Some(_)) => return self.decide(request),
                Ok(None) => return Ok(decision),
                Err(e) => {
                    bump(&self.counters.failures);
                    tracing::error!(error = %e, "approval look-up failed; failing closed");
                    return Err(());
                }
            }
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

    /// What decides.
    pub fn decider(&self) -> &Arc<dyn Decider> {
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

    /// Handles one message (an HTTP body) from the client on its way to the server.
    pub fn client_message(&self, caller: &Caller, exchange: &Exchange, bytes: &[u8]) -> Outcome {
        self.client(caller, exchange, Message::parse(bytes))
    }

    /// Handles one message from the server on its way to the client. [`Outcome::Reply`]
    /// answers the server.
    pub fn server_message(&self, caller: &Caller, exchange: &Exchange, bytes: &[u8]) -> Outcome {
        self.server(caller, exchange, Message::parse(bytes))
    }

    /// Handles one client message, read by the transport (`Message::parse` for an HTTP body,
    /// `Message::parse_line` for a stdio line).
    pub fn client(
        &self,
        caller: &Caller,
        exchange: &Exchange,
        parsed: Result<Message, Refusal>,
    ) -> Outcome {
        let mut message = match parsed {
            Ok(message) => message,
            Err(refusal) => {
                // What Warden cannot read is not forwarded: the server might read it differently
                // and run a call Warden never saw.
                bump(&self.counters.refused);
                tracing::warn!(reason = %refusal, "refused a client message");
                return Outcome::Reply(message::refusal_response(&refusal));
            }
        };
        if let (Some(method), Some(params)) = (message.method(), message.params_object())
            && let Err(refusal) = check_members(params, params_members(method))
        {
            bump(&self.counters.refused);
            tracing::warn!(reason = %refusal, "refused a client message");
            return Outcome::Reply(message::error_response(
                message.id.as_ref(),
                refusal.code(),
                &format!("refused by warden: {refusal}"),
                None,
            ));
        }
        match message.kind {
            MessageKind::Request => self.client_request(caller, exchange, &mut message),
            MessageKind::Notification => {
                match message.method() {
                    // A `tools/call` without an id cannot be answered: not forwarded either.
                    Some("tools/call") => return Outcome::Drop,
                    // The server may never answer a cancelled request: stop waiting for it (an
                    // answer that still comes is dropped as unmatched).
                    Some("notifications/cancelled") => {
                        let cancelled = message
                            .params_object()
                            .and_then(|p| p.get("requestId"))
                            .and_then(Id::from_value);
                        if let Some(id) = cancelled {
                            exchange.tracked.lock().pending.remove(&id);
                        }
                    }
                    _ => {}
                }
                Outcome::Forward(message.to_bytes())
            }
            MessageKind::Response | MessageKind::ErrorResponse => {
                self.client_answer(caller, exchange, message)
            }
        }
    }

    fn client_request(
        &self,
        caller: &Caller,
        exchange: &Exchange,
        message: &mut Message,
    ) -> Outcome {
        let Some(id) = message.id.clone() else {
            return Outcome::Drop;
        };
        {
            let tracked = exchange.tracked.lock();
            // An id still awaiting its answer cannot be reused: the other request's answer
            // could be taken for the tool result, and the real result pass uninspected.
            if tracked.pending.contains_key(&id) {
                return duplicate_id(&id);
            }
            if tracked.pending.len() >= MAX_IN_FLIGHT {
                return Outcome::Reply(message::error_response(
                    Some(&id),
                    message::INVALID_REQUEST,
                    &format!("more than {MAX_IN_FLIGHT} requests in flight"),
                    None,
                ));
            }
        }
        let pending = match message.method() {
            Some("tools/call") => match self.tool_call(caller, exchange, &id, message) {
                Ok(pending) => pending,
                Err(outcome) => return outcome,
            },
            Some("tasks/result") => match self.task_result(exchange, &id, message) {
                Ok(pending) => pending,
                Err(outcome) => return outcome,
            },
            Some("tools/list") => Pending::List,
            _ => Pending::Other,
        };
        let mut tracked = exchange.tracked.lock();
        match tracked.pending.entry(id.clone()) {
            Entry::Occupied(_) => return duplicate_id(&id),
            Entry::Vacant(slot) => {
                slot.insert(pending);
            }
        }
        // A new request under an id answered before: its answer is this request's.
        tracked.answered.remove(&id);
        Outcome::Forward(message.to_bytes())
    }

    /// Decides a `tools/call`: Ok with what its answer is (the message's arguments redacted
    /// where the policy says so), or the outcome refusing it.
    fn tool_call(
        &self,
        caller: &Caller,
        exchange: &Exchange,
        id: &Id,
        message: &mut Message,
    ) -> Result<Pending, Outcome> {
        let invalid = |what: &str| {
            Outcome::Reply(message::error_response(
                Some(id),
                message::INVALID_PARAMS,
                what,
                None,
            ))
        };
        let Some(params) = message.params.as_mut().and_then(Value::as_object_mut) else {
            return Err(invalid("tools/call needs params with a tool `name`"));
        };
        let Some(Value::String(tool)) = params.get("name") else {
            return Err(invalid("tools/call needs a string tool `name`"));
        };
        if tool.len() > MAX_TOOL_NAME_BYTES {
            return Err(invalid(&format!(
                "the tool `name` is longer than {MAX_TOOL_NAME_BYTES} bytes"
            )));
        }
        let tool = tool.clone();
        let args = match params.get("arguments") {
            None | Some(Value::Null) => None,
            Some(args @ Value::Object(_)) => Some(args.clone()),
            Some(_) => return Err(invalid("tools/call `arguments` must be an object")),
        };
        // A task-augmented call (2025-11-25 `params.task`) delivers its result later through
        // `tasks/result`: only an exchange that lasts (a session) can see it, so stateless
        // requests get a refusal rather than an uninspected result.
        let task = params.get("task").is_some_and(|t| !t.is_null());
        if task && !exchange.persistent {
            bump(&self.counters.calls_denied);
            return Err(Outcome::Reply(message::error_response(
                Some(id),
                message::DENIED,
                "task-augmented tool calls need an MCP session through warden; call the tool without `task`",
                None,
            )));
        }
        match self.pins.is_held(&self.upstream, &tool).wait() {
            Ok(false) => {}
            Ok(true) => {
                bump(&self.counters.calls_held);
                let text = format!(
                    "tool `{tool}` changed since it was pinned; approve it with `warden mcp approve {} {tool}`",
                    self.upstream
                );
                return Err(Outcome::Reply(message::error_response(
                    Some(id),
                    message::TOOL_CHANGED,
                    &text,
                    None,
                )));
            }
            Err(e) => {
                bump(&self.counters.failures);
                tracing::error!(error = %e, "pin look-up failed; call denied");
                return Err(self.decision_failed(id));
            }
        }
        let request = Request {
            args,
            ..decision_request(caller, Kind::ToolCall, &tool)
        };
        let mut decision = match self.decide(&request) {
            Ok(decision) => decision,
            Err(()) => return Err(self.decision_failed(id)),
        };
        if decision.verdict == Verdict::Pending {
            decision = match self.await_approval(&request, decision) {
                Ok(decision) => decision,
                Err(()) => return Err(self.decision_failed(id)),
            };
        }
        if decision.verdict == Verdict::Pending {
            bump(&self.counters.calls_pending);
            tracing::info!(tool = %tool, rule = ?decision.rule, "tool call pending approval");
            return Err(Outcome::Reply(message::error_response(
                Some(id),
                message::APPROVAL_PENDING,
                &pending_message(&decision),
                Some(pending_data(&decision)),
            )));
        }
        if !decision.verdict.is_allow() {
            bump(&self.counters.calls_denied);
            tracing::info!(tool = %tool, rule = ?decision.rule, "tool call denied");
            return Err(Outcome::Reply(message::error_response(
                Some(id),
                message::DENIED,
                &deny_message(&decision),
                Some(deny_data(&decision)),
            )));
        }
        bump(&self.counters.calls_allowed);
        if let Some(redacted) = enforced_redaction(&decision) {
            bump(&self.counters.args_redacted);
            params.insert("arguments".to_owned(), redacted.clone());
        }
        Ok(if task {
            Pending::Task(tool)
        } else {
            Pending::Call(tool)
        })
    }

    fn decision_failed(&self, id: &Id) -> Outcome {
        Outcome::Reply(message::error_response(
            Some(id),
            message::DECISION_FAILED,
            "policy decision failed; the call was not forwarded",
            None,
        ))
    }

    /// `tasks/result` for a task Warden saw created: its answer is the tool's result. Unknown
    /// tasks are refused (their result could not be inspected).
    fn task_result(
        &self,
        exchange: &Exchange,
        id: &Id,
        message: &Message,
    ) -> Result<Pending, Outcome> {
        let task_id = message
            .params_object()
            .and_then(|p| p.get("taskId"))
            .and_then(Value::as_str);
        let tool = task_id.and_then(|t| exchange.tracked.lock().tasks.get(t).cloned());
        match tool {
            Some(tool) => Ok(Pending::Call(tool)),
            None => {
                bump(&self.counters.calls_denied);
                Err(Outcome::Reply(message::error_response(
                    Some(id),
                    message::DENIED,
                    "unknown task: warden only returns results of tasks it saw created",
                    None,
                )))
            }
        }
    }

    /// The client's answer to a server request. An answer to a request Warden did not see is
    /// dropped; the answers to `sampling/createMessage` and `elicitation/create` (what the
    /// client's model or user gives the server) are decided as a `tool_call` of a tool named
    /// after the method, with the answer's `result` as its arguments.
    fn client_answer(&self, caller: &Caller, exchange: &Exchange, mut message: Message) -> Outcome {
        let method = message
            .id
            .as_ref()
            .and_then(|id| exchange.tracked.lock().server_pending.remove(id));
        let (Some(method), Some(id)) = (method, message.id.clone()) else {
            bump(&self.counters.unmatched);
            tracing::warn!("dropped a client answer that matches no server request");
            return Outcome::Drop;
        };
        if message.kind == MessageKind::ErrorResponse
            || !DECIDED_SERVER_REQUESTS.contains(&method.as_str())
        {
            return Outcome::Forward(message.to_bytes());
        }
        let request = Request {
            args: message.result.clone(),
            ..decision_request(caller, Kind::ToolCall, &method)
        };
        // The server waits for an answer: a refusal is sent to it as an error.
        let refuse = |code, text: &str, data| {
            Outcome::Forward(message::error_response(Some(&id), code, text, data))
        };
        let Ok(decision) = self.decide(&request) else {
            return refuse(
                message::DECISION_FAILED,
                "policy decision failed; the answer was withheld",
                None,
            );
        };
        // Only an allow lets it through (an ask rule naming the method holds it: not allowed).
        if !decision.verdict.is_allow() {
            bump(&self.counters.calls_denied);
            tracing::info!(method = %method, rule = ?decision.rule, "client answer denied");
            return refuse(
                message::DENIED,
                &deny_message(&decision),
                Some(deny_data(&decision)),
            );
        }
        if let Some(redacted) = enforced_redaction(&decision) {
            bump(&self.counters.args_redacted);
            message.result = Some(redacted.clone());
        }
        Outcome::Forward(message.to_bytes())
    }

    /// Handles one server message, read by the transport.
    pub fn server(
        &self,
        caller: &Caller,
        exchange: &Exchange,
        parsed: Result<Message, Refusal>,
    ) -> Outcome {
        let mut message = match parsed {
            Ok(message) => message,
            Err(refusal) => {
                // The client might read it as a result (or a request) Warden never inspected.
                bump(&self.counters.refused);
                tracing::warn!(reason = %refusal, "dropped an unreadable message from the server");
                return Outcome::Drop;
            }
        };
        match message.kind {
            MessageKind::Request => self.server_request(caller, exchange, message),
            MessageKind::Notification => {
                if message.method() == Some("notifications/cancelled")
                    && let Some(id) = message
                        .params_object()
                        .and_then(|p| p.get("requestId"))
                        .and_then(Id::from_value)
                {
                    exchange.tracked.lock().server_pending.remove(&id);
                }
                Outcome::Forward(message.to_bytes())
            }
            MessageKind::Response | MessageKind::ErrorResponse => {
                let Some(id) = message.id.clone() else {
                    // An error answering an unreadable request carries no result.
                    return Outcome::Forward(message.to_bytes());
                };
                let Some(pending) = exchange.tracked.lock().answer(&id) else {
                    bump(&self.counters.unmatched);
                    tracing::warn!("dropped a server answer that matches no request in flight");
                    return Outcome::Drop;
                };
                if message.kind == MessageKind::ErrorResponse {
                    return Outcome::Forward(message.to_bytes());
                }
                match pending {
                    Pending::Call(tool) => self.tool_result(caller, &id, &tool, message),
                    Pending::Task(tool) => Self::task_created(exchange, &id, &tool, &message),
                    Pending::List => self.tool_list(caller, &mut message),
                    Pending::Other => Outcome::Forward(message.to_bytes()),
                }
            }
        }
    }

    /// A request from the server to the client. `sampling/createMessage` and
    /// `elicitation/create` carry content from the server to the client's model or user: they
    /// are decided as a `tool_result` of a tool named after the method, with the params as the
    /// result (deny answers the server with an error, redact rewrites the params).
    fn server_request(
        &self,
        caller: &Caller,
        exchange: &Exchange,
        mut message: Message,
    ) -> Outcome {
        let (Some(id), Some(method)) = (message.id.clone(), message.method.clone()) else {
            return Outcome::Drop;
        };
        if exchange.tracked.lock().server_pending.len() >= MAX_SERVER_REQUESTS {
            return Outcome::Reply(message::error_response(
                Some(&id),
                message::INVALID_REQUEST,
                &format!("more than {MAX_SERVER_REQUESTS} server requests in flight"),
                None,
            ));
        }
        if DECIDED_SERVER_REQUESTS.contains(&method.as_str()) {
            let request = Request {
                result: message.params.clone(),
                ..decision_request(caller, Kind::ToolResult, &method)
            };
            let Ok(decision) = self.decide(&request) else {
                return Outcome::Reply(message::error_response(
                    Some(&id),
                    message::DECISION_FAILED,
                    "policy decision failed; the request was not forwarded",
                    None,
                ));
            };
            if !decision.verdict.is_allow() {
                bump(&self.counters.results_blocked);
                tracing::info!(method = %method, rule = ?decision.rule, "server request blocked");
                return Outcome::Reply(message::error_response(
                    Some(&id),
                    message::RESULT_BLOCKED,
                    &deny_message(&decision),
                    Some(deny_data(&decision)),
                ));
            }
            if let Some(redacted) = enforced_redaction(&decision) {
                bump(&self.counters.results_redacted);
                message.params = Some(redacted.clone());
            }
        }
        exchange.tracked.lock().server_pending.insert(id, method);
        Outcome::Forward(message.to_bytes())
    }

    /// The answer to a task-augmented call: remember which tool the task runs. Anything but a
    /// task is withheld.
    fn task_created(exchange: &Exchange, id: &Id, tool: &str, message: &Message) -> Outcome {
        let task_id = message
            .result
            .as_ref()
            .and_then(|r| r.pointer("/task/taskId"))
            .and_then(Value::as_str);
        let Some(task_id) = task_id else {
            return Outcome::Forward(message::error_response(
                Some(id),
                message::RESULT_BLOCKED,
                "the server answered a task-augmented call without a task",
                None,
            ));
        };
        let mut tracked = exchange.tracked.lock();
        if tracked.tasks.len() >= MAX_TASKS {
            tracked.tasks.clear();
        }
        tracked.tasks.insert(task_id.to_owned(), tool.to_owned());
        Outcome::Forward(message.to_bytes())
    }

    fn tool_result(&self, caller: &Caller, id: &Id, tool: &str, mut message: Message) -> Outcome {
        let blocked = |code, text: &str, data| {
            Outcome::Forward(message::error_response(Some(id), code, text, data))
        };
        let request = Request {
            result: message.result.clone(),
            ..decision_request(caller, Kind::ToolResult, tool)
        };
        let Ok(decision) = self.decide(&request) else {
            return blocked(
                message::DECISION_FAILED,
                "policy decision failed; the tool result was withheld",
                None,
            );
        };
        if !decision.verdict.is_allow() {
            bump(&self.counters.results_blocked);
            tracing::info!(tool = %tool, rule = ?decision.rule, "tool result blocked");
            let text = format!("tool result blocked: {}", deny_message(&decision));
            return blocked(message::RESULT_BLOCKED, &text, Some(deny_data(&decision)));
        }
        if let Some(redacted) = enforced_redaction(&decision) {
            bump(&self.counters.results_redacted);
            message.result = Some(redacted.clone());
        }
        Outcome::Forward(message.to_bytes())
    }

    fn tool_list(&self, caller: &Caller, message: &mut Message) -> Outcome {
        let Some(Value::Array(tools)) = message
            .result
            .as_mut()
            .and_then(Value::as_object_mut)
            .and_then(|result| result.get_mut("tools"))
        else {
            return Outcome::Forward(message.to_bytes());
        };
        let Some(policy) = self.engine.policy() else {
            // Without the policy the list cannot be checked: withheld, as a failed decision.
            bump(&self.counters.failures);
            return Outcome::Forward(message::error_response(
                message.id.as_ref(),
                message::DECISION_FAILED,
                "no policy is loaded for this upstream; the tool list was withheld",
                None,
            ));
        };
        let before = tools.len();
        tools.retain(|tool| {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                return false;
            };
            // The definition is kept with its hash, so that a change can be shown to the person
            // asked to approve it.
            let definition = definition_subset(tool);
            let observed = subset_hash(&definition).and_then(|hash| {
                self.pins
                    .observe_definition(&self.upstream, name, &hash, &definition)
                    .wait()
            });
            match observed {
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
        self.counters
            .tools_hidden
            .fetch_add(hidden as u64, Ordering::Relaxed);
        Outcome::Forward(message.to_bytes())
    }
}
