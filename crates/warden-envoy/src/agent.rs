//! Policy agents: processes on this host that offer policies to the chains over a Unix socket
//! (README.md, "Policy agents", is the protocol). At load each agent is asked what it offers
//! (`describe`) and every step naming one of its policies is checked against that: the policy
//! exists, runs in the step's phase, and its `config` passes the policy's JSON Schema. While
//! serving, a step asks the agent (`run`) within the agent's timeout, retrying a call that could
//! not connect or timed out; a background health check (`health`) marks an agent down, and the
//! steps of an agent that is down fail at once as internal errors (the route's fail mode).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::config::AgentConfig;
use crate::error::EnvoyConfigError;
use crate::exchange::{Exchange, Mutations, Reply};
use crate::metrics::Metrics;

/// Longest line read from an agent (one answer), in bytes: a longer one is refused.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Headers an agent may neither set nor remove: the identity headers only Warden's own
/// authentication steps write (the upstream trusts them), and the request's `host`.
const RESERVED_HEADERS: &[&str] = &["x-warden-caller", "x-warden-tenant", "host"];

/// Headers never sent to an agent: credentials (as `decide` keeps them from policies).
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "x-api-key",
    "proxy-authorization",
];

/// One configured agent, shared by the steps that use its policies (and by its health check).
#[derive(Debug)]
pub struct Agent {
    /// Its name in the configuration.
    pub name: Arc<str>,
    socket: PathBuf,
    timeout: Duration,
    retries: u32,
    health_interval: Duration,
    up: AtomicBool,
    metrics: OnceLock<Arc<Metrics>>,
}

/// Why one attempt at a call failed.
enum CallError {
    /// It could not connect, the connection broke or the agent took too long: worth a retry.
    Transport(String),
    /// The agent answered something unusable: asking again would not help.
    Answer(String),
}

impl Agent {
    fn new(name: &str, config: &AgentConfig) -> Self {
        Self {
            name: Arc::from(name),
            socket: config.socket.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
            retries: config.retries,
            health_interval: Duration::from_millis(config.health_interval_ms),
            up: AtomicBool::new(true),
            metrics: OnceLock::new(),
        }
    }

    /// Whether the last health check was answered (true until one fails).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Starts the background health check (once; on a Tokio runtime), reporting in `metrics`.
    /// It stops by itself once the agent is no longer used (its chains replaced by a reload).
    pub fn watch(self: &Arc<Self>, metrics: Arc<Metrics>) {
        if self.metrics.set(Arc::clone(&metrics)).is_err() {
            return;
        }
        metrics.agent_up(&self.name, self.is_up());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(agent = %self.name, "no runtime: the agent's health is not checked");
            return;
        };
        let agent = Arc::downgrade(self);
        let interval = self.health_interval;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(agent) = agent.upgrade() else {
                    return;
                };
                let healthy = agent.health().await;
                agent.set_up(healthy);
            }
        });
    }

    fn set_up(&self, healthy: bool) {
        let was = self.up.swap(healthy, Ordering::AcqRel);
        if was != healthy {
            if healthy {
                tracing::info!(agent = %self.name, "policy agent is healthy again");
            } else {
                tracing::warn!(agent = %self.name, "policy agent is down: its steps fail at once");
            }
        }
        if let Some(metrics) = self.metrics.get() {
            metrics.agent_up(&self.name, healthy);
        }
    }

    fn count(&self, outcome: &str) {
        if let Some(metrics) = self.metrics.get() {
            metrics.agent_call(&self.name, outcome);
        }
    }

    /// One `health` call, no retry: true when the agent answers `{"ok": true}`.
    async fn health(&self) -> bool {
        let line = json!({"op": "health"}).to_string();
        match tokio::time::timeout(self.timeout, self.once(&line)).await {
            Ok(Ok(answer)) => answer.get("ok") == Some(&Value::Bool(true)),
            Ok(Err(CallError::Transport(e) | CallError::Answer(e))) => {
                tracing::debug!(agent = %self.name, error = %e, "health check failed");
                false
            }
            Err(_) => false,
        }
    }

    /// A call: `request` sent, its answer read, within the timeout, retried at most `retries`
    /// times when it could not connect or timed out.
    async fn call(&self, request: &Value) -> Result<Value, String> {
        let line = request.to_string();
        let mut last = String::new();
        for _attempt in 0..=self.retries {
            match tokio::time::timeout(self.timeout, self.once(&line)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(CallError::Answer(e))) => return Err(e),
                Ok(Err(CallError::Transport(e))) => last = e,
                Err(_) => last = format!("no answer within {:?}", self.timeout),
            }
        }
        Err(format!(
            "policy agent `{}`: {last} (after {} attempts)",
            self.name,
            self.retries + 1
        ))
    }

    /// One attempt: connect, send `line`, read one line back (bounded).
    async fn once(&self, line: &str) -> Result<Value, CallError> {
        check_socket(&self.socket).map_err(CallError::Transport)?;
        let transport = |e: std::io::Error| CallError::Transport(e.to_string());
        let mut stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(transport)?;
        stream.write_all(line.as_bytes()).await.map_err(transport)?;
        stream.write_all(b"\n").await.map_err(transport)?;
        stream.flush().await.map_err(transport)?;
        let mut reader = tokio::io::BufReader::new(stream).take(MAX_LINE_BYTES as u64 + 1);
        let mut answer = Vec::new();
        reader
            .read_until(b'\n', &mut answer)
            .await
            .map_err(transport)?;
        parse_line(&answer)
    }

    /// One blocking attempt (at load, which may run outside any runtime), within the timeout.
    fn once_blocking(&self, line: &str) -> Result<Value, CallError> {
        check_socket(&self.socket).map_err(CallError::Transport)?;
        let deadline = Instant::now() + self.timeout;
        let transport = |e: std::io::Error| CallError::Transport(e.to_string());
        let mut stream =
            std::os::unix::net::UnixStream::connect(&self.socket).map_err(transport)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(transport)?;
        stream.write_all(line.as_bytes()).map_err(transport)?;
        stream.write_all(b"\n").map_err(transport)?;
        let mut answer = Vec::new();
        let mut chunk = [0_u8; 8192];
        // Reads until the newline, each read bounded by what is left of the one deadline (a
        // per-read timeout alone would let a trickling agent hold the load forever).
        while !answer.contains(&b'\n') && answer.len() <= MAX_LINE_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError::Transport(format!(
                    "no answer within {:?}",
                    self.timeout
                )));
            }
            stream.set_read_timeout(Some(left)).map_err(transport)?;
            let n = match stream.read(&mut chunk) {
                Ok(n) => n,
                // A read timeout reads as `WouldBlock` on Unix.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(CallError::Transport(format!(
                        "no answer within {:?}",
                        self.timeout
                    )));
                }
                Err(e) => return Err(transport(e)),
            };
            if n == 0 {
                break;
            }
            answer.extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
        parse_line(&answer)
    }

    /// One blocking attempt on a thread of its own, waited for at most the timeout: a blocking
    /// connect has no timeout of its own (it waits while the agent's backlog is full).
    fn once_bounded(self: &Arc<Self>, line: &str) -> Result<Value, CallError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (agent, line) = (Arc::clone(self), line.to_owned());
        std::thread::Builder::new()
            .name("warden-agent-describe".to_owned())
            .spawn(move || {
                if tx.send(agent.once_blocking(&line)).is_err() {
                    tracing::debug!(agent = %agent.name, "an answer came after the load gave up");
                }
            })
            .map_err(|e| CallError::Transport(format!("cannot start the call: {e}")))?;
        rx.recv_timeout(self.timeout + Duration::from_millis(50))
            .unwrap_or_else(|_| {
                Err(CallError::Transport(format!(
                    "no answer within {:?}",
                    self.timeout
                )))
            })
    }

    fn describe(self: &Arc<Self>) -> Result<Offer, String> {
        let line = json!({"op": "describe"}).to_string();
        let mut last = String::new();
        for _attempt in 0..=self.retries {
            match self.once_bounded(&line) {
                Ok(answer) => {
                    return serde_json::from_value(answer)
                        .map_err(|e| format!("its `describe` answer is not understood: {e}"));
                }
                Err(CallError::Answer(e)) => return Err(e),
                Err(CallError::Transport(e)) => last = e,
            }
        }
        Err(format!("cannot ask it what it offers: {last}"))
    }
}

/// One answer line: JSON, newline-terminated, at most [`MAX_LINE_BYTES`].
fn parse_line(line: &[u8]) -> Result<Value, CallError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(CallError::Answer(format!(
            "an answer over {MAX_LINE_BYTES} bytes"
        )));
    }
    let Some(line) = line.strip_suffix(b"\n") else {
        return Err(CallError::Transport(
            "the connection closed before a whole answer".to_owned(),
        ));
    };
    serde_json::from_slice(line)
        .map_err(|e| CallError::Answer(format!("an answer that is not JSON: {e}")))
}

/// Checks that `path` is a socket the daemon's user owns that no one else may use (mode 0600 or
/// stricter): whoever can connect to it, or replace it, answers for the policies.
pub fn check_socket(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.file_type().is_socket() {
        return Err(format!("{shown} is not a socket"));
    }
    // The process's own uid without libc: /proc/self belongs to it.
    let me = std::fs::metadata("/proc/self")
        .map_err(|e| format!("cannot tell the daemon's uid (/proc/self): {e}"))?
        .uid();
    if meta.uid() != me {
        return Err(format!(
            "{shown} is owned by uid {}, not the daemon's (uid {me})",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} has mode {mode:04o}: group or others may use it (make it 0600)"
        ));
    }
    Ok(())
}

/// An agent's answer to `describe`. Members it does not know are ignored (a newer agent).
#[derive(Debug, Deserialize)]
struct Offer {
    policies: Vec<OfferedPolicy>,
}

#[derive(Debug, Deserialize)]
struct OfferedPolicy {
    name: String,
    phases: Vec<String>,
    #[serde(default)]
    config_schema: Option<Value>,
}

/// A policy an agent offers, ready to check steps against.
struct Offered {
    request: bool,
    response: bool,
    schema: Option<jsonschema::Validator>,
}

/// The configured agents and what each offers, found at load.
#[derive(Default)]
pub struct Agents {
    agents: BTreeMap<String, (Arc<Agent>, BTreeMap<String, Offered>)>,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.agents.keys()).finish()
    }
}

impl Agents {
    /// Checks every agent's settings and socket and asks each what it offers (blocking, within
    /// each agent's timeout). The error names the field (`envoy.agents.NAME.socket`).
    pub fn discover(config: &BTreeMap<String, AgentConfig>) -> Result<Self, EnvoyConfigError> {
        let mut agents = BTreeMap::new();
        for (name, c) in config {
            let at = format!("envoy.agents.{name}");
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(EnvoyConfigError::new(
                    "envoy.agents",
                    format!("`{name}`: an agent name is 1 to 64 letters, digits, `-` or `_`"),
                ));
            }
            if !(1..=60_000).contains(&c.timeout_ms) {
                return Err(EnvoyConfigError::new(
                    format!("{at}.timeout_ms"),
                    "1 to 60000 milliseconds",
                ));
            }
            if c.retries > 10 {
                return Err(EnvoyConfigError::new(format!("{at}.retries"), "at most 10"));
            }
            if !(10..=3_600_000).contains(&c.health_interval_ms) {
                return Err(EnvoyConfigError::new(
                    format!("{at}.health_interval_ms"),
                    "10 to 3600000 milliseconds",
                ));
            }
            check_socket(&c.socket)
                .map_err(|e| EnvoyConfigError::new(format!("{at}.socket"), e))?;
            let agent = Arc::new(Agent::new(name, c));
            let offer = agent
                .describe()
                .map_err(|e| EnvoyConfigError::new(format!("{at}.socket"), e))?;
            let mut offered = BTreeMap::new();
            for p in offer.policies {
                let (mut request, mut response) = (false, false);
                for phase in &p.phases {
                    match phase.as_str() {
                        "request" => request = true,
                        "response" => response = true,
                        other => {
                            return Err(EnvoyConfigError::new(
                                at,
                                format!("its policy `{}` names an unknown phase `{other}`", p.name),
                            ));
                        }
                    }
                }
                let schema = match &p.config_schema {
                    Some(schema) => Some(jsonschema::validator_for(schema).map_err(|e| {
                        EnvoyConfigError::new(
                            at.clone(),
                            format!("its policy `{}` has an invalid config_schema: {e}", p.name),
                        )
                    })?),
                    None => None,
                };
                offered.insert(
                    p.name,
                    Offered {
                        request,
                        response,
                        schema,
                    },
                );
            }
            agents.insert(name.clone(), (agent, offered));
        }
        Ok(Self { agents })
    }

    /// Every configured agent (for their health checks).
    pub fn all(&self) -> Vec<Arc<Agent>> {
        self.agents.values().map(|(a, _)| Arc::clone(a)).collect()
    }

    /// Compiles a step naming `AGENT/POLICY` with `config`; `field` names the step in errors,
    /// `response` says which chain it is in.
    pub fn step(
        &self,
        policy: &str,
        config: &Value,
        field: &str,
        response: bool,
    ) -> Result<AgentStep, EnvoyConfigError> {
        let at_policy = || format!("{field}.policy");
        let Some((agent_name, name)) = policy.split_once('/') else {
            return Err(EnvoyConfigError::new(at_policy(), "write `AGENT/POLICY`"));
        };
        let Some((agent, offered)) = self.agents.get(agent_name) else {
            return Err(EnvoyConfigError::new(
                at_policy(),
                format!("no agent `{agent_name}` is configured (envoy.agents)"),
            ));
        };
        let Some(offer) = offered.get(name) else {
            let known: Vec<&str> = offered.keys().map(String::as_str).collect();
            return Err(EnvoyConfigError::new(
                at_policy(),
                format!(
                    "agent `{agent_name}` offers no policy `{name}` (it offers: {})",
                    known.join(", ")
                ),
            ));
        };
        let phase = if response { "response" } else { "request" };
        if !(if response {
            offer.response
        } else {
            offer.request
        }) {
            return Err(EnvoyConfigError::new(
                at_policy(),
                format!("`{policy}` does not run in the {phase} chain"),
            ));
        }
        // No config is an empty one: the schema says whether that will do.
        let config = if config.is_null() {
            Value::Object(Map::new())
        } else {
            config.clone()
        };
        if let Some(schema) = &offer.schema
            && let Some(e) = schema.iter_errors(&config).next()
        {
            let pointer = e.instance_path().to_string();
            let dotted: String = pointer
                .split('/')
                .skip(1)
                .map(|s| format!(".{}", s.replace("~1", "/").replace("~0", "~")))
                .collect();
            return Err(EnvoyConfigError::new(
                format!("{field}.config{dotted}"),
                e.to_string(),
            ));
        }
        Ok(AgentStep {
            agent: Arc::clone(agent),
            name: policy.to_owned(),
            policy: name.to_owned(),
            config,
        })
    }
}

/// A step running a policy of an agent.
#[derive(Debug, Clone)]
pub struct AgentStep {
    /// The agent.
    pub agent: Arc<Agent>,
    /// `AGENT/POLICY`, as written (logs and metrics).
    pub name: String,
    /// The policy's name at the agent.
    pub policy: String,
    /// The step's config (checked against the policy's schema at load).
    pub config: Value,
}

impl PartialEq for AgentStep {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.agent, &other.agent)
            && self.name == other.name
            && self.config == other.config
    }
}

/// An agent's answer to `run`.
#[derive(Debug, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum RunAnswer {
    Pass {
        #[serde(default)]
        set_headers: BTreeMap<String, String>,
        #[serde(default)]
        remove_headers: Vec<String>,
    },
    Fail {
        status: u16,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: String,
    },
}

impl AgentStep {
    /// Asks the agent to run the policy on `ex` (request phase unless `response`): `Ok(None)`
    /// it passes (its header changes applied to `m` and `ex`), `Ok(Some(reply))` it fails with
    /// that answer. An error (the agent down, unreachable, slow, or answering something
    /// unusable) is an internal error.
    pub async fn run(
        &self,
        ex: &mut Exchange,
        m: &mut Mutations,
        response: bool,
    ) -> Result<Option<Reply>, String> {
        let agent = &self.agent;
        if !agent.is_up() {
            agent.count("down");
            return Err(format!("policy agent `{}` is down", agent.name));
        }
        let request = self.request(ex, response);
        let answer = match agent.call(&request).await {
            Ok(answer) => answer,
            Err(e) => {
                agent.count("error");
                return Err(e);
            }
        };
        let outcome = apply(answer, ex, m, response);
        match &outcome {
            Ok(None) => agent.count("pass"),
            Ok(Some(_)) => agent.count("fail"),
            Err(_) => agent.count("error"),
        }
        outcome.map_err(|e| format!("policy agent `{}`: {e}", agent.name))
    }

    fn request(&self, ex: &Exchange, response: bool) -> Value {
        let headers = if response {
            &ex.response_headers
        } else {
            &ex.headers
        };
        let mut sent = Map::new();
        for (k, v) in headers {
            if CREDENTIAL_HEADERS.contains(&k.as_str()) {
                continue;
            }
            match sent.get_mut(k) {
                Some(Value::String(joined)) => {
                    joined.push_str(", ");
                    joined.push_str(v);
                }
                _ => {
                    sent.insert(k.clone(), Value::String(v.clone()));
                }
            }
        }
        let mut exchange = Map::new();
        exchange.insert("route".to_owned(), Value::from(&*ex.route));
        exchange.insert("method".to_owned(), Value::from(ex.method.as_str()));
        exchange.insert("path".to_owned(), Value::from(ex.path.as_str()));
        exchange.insert("headers".to_owned(), Value::Object(sent));
        if response && let Some(status) = ex.status {
            exchange.insert("status".to_owned(), Value::from(status));
        }
        if let Some(caller) = &ex.caller {
            exchange.insert(
                "caller".to_owned(),
                json!({"id": caller.id, "tenant": caller.tenant}),
            );
        }
        json!({
            "op": "run",
            "policy": self.policy,
            "phase": if response { "response" } else { "request" },
            "config": self.config,
            "exchange": exchange,
        })
    }
}

/// Checks an agent's `run` answer whole, then applies it: nothing changes unless all of it is
/// valid.
fn apply(
    answer: Value,
    ex: &mut Exchange,
    m: &mut Mutations,
    response: bool,
) -> Result<Option<Reply>, String> {
    let answer: RunAnswer =
        serde_json::from_value(answer).map_err(|e| format!("an answer not understood: {e}"))?;
    match answer {
        RunAnswer::Pass {
            set_headers,
            remove_headers,
        } => {
            let set = set_headers
                .into_iter()
                .map(|(k, v)| Ok((agent_header(&k)?, agent_value(&k, v)?)))
                .collect::<Result<Vec<_>, String>>()?;
            let remove = remove_headers
                .iter()
                .map(|k| agent_header(k))
                .collect::<Result<Vec<_>, String>>()?;
            let headers = if response {
                &mut ex.response_headers
            } else {
                &mut ex.headers
            };
            for name in &remove {
                m.remove_header(headers, name);
            }
            for (name, value) in set {
                m.set_header(headers, &name, value);
            }
            Ok(None)
        }
        RunAnswer::Fail {
            status,
            headers,
            body,
        } => {
            // A 5xx would read as an internal error, which `fail_open` forwards: an agent's
            // refusal is a refusal.
            if !(400..=499).contains(&status) {
                return Err(format!("a fail status {status} (400 to 499)"));
            }
            let headers = headers
                .into_iter()
                .map(|(k, v)| Ok((agent_header(&k)?, agent_value(&k, v)?)))
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Some(Reply {
                status,
                headers,
                body: body.into_bytes(),
            }))
        }
    }
}

/// A header name an agent gave: an HTTP token (no pseudo-header), not a reserved one;
/// lowercased.
fn agent_header(name: &str) -> Result<String, String> {
    let token = !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!("`{name}` is not a header name"));
    }
    let name = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(format!("an agent may not change `{name}`"));
    }
    Ok(name)
}

/// A header value an agent gave: no control characters but tab, at most 8 KiB.
fn agent_value(name: &str, value: String) -> Result<String, String> {
    if value.len() > 8192 || value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(format!("the value of `{name}` is not a valid header value"));
    }
    Ok(value)
}
