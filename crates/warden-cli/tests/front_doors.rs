//! One corpus, every front door: the project's scenario suite (`tests/scenarios/`) decided
//! through the library, through `warden eval` and through the HTTP daemon (`warden serve`:
//! `/v1/decide` and OPA's Data API) must
//! meet every expectation, and every request a `tools/call` can carry gets the library's decision
//! through the MCP proxy over stdio (`warden mcp wrap`) and over Streamable HTTP
//! (`warden mcp proxy`), in front of the official Python SDK's servers, so the front doors
//! cannot drift apart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use warden::scenario::{PolicySource, Scenario, collect_files, compare, load_scenario};
use warden::{Decision, Engine};

mod common;

use std::ffi::OsStr;

use common::WARDEN;

/// A way into Warden: decides a scenario's requests in order, from fresh sessions.
trait FrontDoor {
    fn name(&self) -> &'static str;
    fn decide_all(&self, scenario: &Scenario, dir: &Path) -> Vec<Decision>;
}

struct Library;

impl FrontDoor for Library {
    fn name(&self) -> &'static str {
        "library"
    }
    fn decide_all(&self, scenario: &Scenario, _dir: &Path) -> Vec<Decision> {
        let engine = Engine::new(scenario.policy.clone());
        requests(scenario)
            .iter()
            .map(|r| {
                engine
                    .decide(&warden::Request::from_value(r.clone()).unwrap())
                    .unwrap()
            })
            .collect()
    }
}

struct CliEval;

impl FrontDoor for CliEval {
    fn name(&self) -> &'static str {
        "warden eval"
    }
    fn decide_all(&self, scenario: &Scenario, dir: &Path) -> Vec<Decision> {
        let policy = policy_file(scenario, dir);
        let mut child = Command::new(WARDEN)
            .args(["eval", "--policy", policy.to_str().unwrap(), "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for r in requests(scenario) {
            writeln!(stdin, "{r}").unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The HTTP daemon, asked through `/v1/decide` or through OPA's Data API (the request as
/// `input`, the decision object as `result`).
enum Http {
    Decide,
    OpaDataApi,
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl FrontDoor for Http {
    fn name(&self) -> &'static str {
        match self {
            Http::Decide => "HTTP /v1/decide",
            Http::OpaDataApi => "HTTP OPA Data API",
        }
    }
    fn decide_all(&self, scenario: &Scenario, dir: &Path) -> Vec<Decision> {
        let policy = policy_file(scenario, dir);
        let policies = policy.parent().unwrap();
        let name = OsStr::new(&*scenario.policy.info.name);
        let args: Vec<&OsStr> = [
            OsStr::new("--listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--state"),
            OsStr::new("memory"),
            OsStr::new("--no-decision-log"),
            OsStr::new("--policies"),
            policies.as_os_str(),
            OsStr::new("--anonymous-policy"),
            name,
        ]
        .to_vec();
        let (child, addr) = common::spawn_serve(&args, &dir.join("port"), &dir.join("serve.log"));
        let _daemon = Daemon(child);
        let agent = common::agent();
        requests(scenario)
            .iter()
            .map(|r| {
                let (path, body) = match self {
                    Http::Decide => ("/v1/decide", r.clone()),
                    Http::OpaDataApi => {
                        ("/v1/data/warden/decision", serde_json::json!({"input": r}))
                    }
                };
                let mut response = agent
                    .post(&format!("http://{}{path}", addr.trim()))
                    .header("content-type", "application/json")
                    .send(body.to_string().as_bytes())
                    .unwrap();
                let body = response.body_mut().read_to_string().unwrap();
                assert_eq!(response.status().as_u16(), 200, "{body}");
                let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
                match self {
                    Http::Decide => serde_json::from_value(answer).unwrap(),
                    Http::OpaDataApi => serde_json::from_value(answer["result"].clone()).unwrap(),
                }
            })
            .collect()
    }
}

/// The MCP stdio proxy (`warden mcp wrap`) in front of the official Python SDK: a request is a
/// `tools/call`, forwarded (allow) or answered with Warden's JSON-RPC error (deny, with the rule
/// in its data). One proxy per session and principal, since a proxy decides for one of each;
/// a request without a session gets a proxy of its own (a fresh session, as the scenario's
/// empty state). Scenarios with requests a `tools/call` cannot carry (another kind, text, HTTP,
/// context, no tool) are left to the other doors.
struct McpStdio;

/// What a `tools/call` through the proxy came back as.
#[derive(Debug, Clone, PartialEq)]
struct Called {
    allowed: bool,
    rule: Option<String>,
}

impl Called {
    /// A `tools/call` answer: forwarded (a result, or a result Warden blocked with -32061: the
    /// call was allowed, and the tool's answer then decided as a `tool_result`), or refused
    /// with Warden's -32060 (denied) or -32064 (pending approval) and the rule in its data.
    fn from_answer(answer: &serde_json::Value) -> Self {
        if answer["result"].is_object() || answer["error"]["code"] == -32061 {
            Called {
                allowed: true,
                rule: None,
            }
        } else {
            let code = &answer["error"]["code"];
            assert!(code == -32060 || code == -32064, "{answer}");
            Called {
                allowed: false,
                rule: answer["error"]["data"]["rule"].as_str().map(str::to_owned),
            }
        }
    }
}

/// Calls one session's and principal's requests through one proxy, in order.
type CallGroup<'a> =
    dyn Fn(&Path, Option<&str>, Option<&str>, &[&serde_json::Value]) -> Vec<Called> + Sync + 'a;

/// The scenario's requests that `tools/call` can carry, each group of one session and principal
/// through its own proxy (`call`), four groups at a time.
fn call_all(scenario: &Scenario, dir: &Path, call: &CallGroup<'_>) -> Vec<Called> {
    let policy = policy_file(scenario, dir);
    let requests = requests(scenario);
    // Each request's proxy: its session and principal; a request without a session alone.
    let mut groups: Vec<(Option<String>, Option<String>, Vec<usize>)> = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let session = r["session"].as_str().map(str::to_owned);
        let principal = r["principal"].as_str().map(str::to_owned);
        let found = groups
            .iter_mut()
            .find(|(s, p, _)| session.is_some() && *s == session && *p == principal);
        match found {
            Some((_, _, members)) => members.push(i),
            None => groups.push((session, principal, vec![i])),
        }
    }
    // The groups are independent (their own proxy and session): run four at a time, most of a
    // proxy's life is its Python server starting.
    let called = std::sync::Mutex::new(vec![None; requests.len()]);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                loop {
                    let g = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((session, principal, members)) = groups.get(g) else {
                        break;
                    };
                    let batch: Vec<&serde_json::Value> =
                        members.iter().map(|&i| &requests[i]).collect();
                    let answers = call(&policy, session.as_deref(), principal.as_deref(), &batch);
                    let mut called = called.lock().unwrap();
                    for (&i, answer) in members.iter().zip(answers) {
                        called[i] = Some(answer);
                    }
                }
            });
        }
    });
    called
        .into_inner()
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

/// The Python SDK's packages, installed by `scripts/test`.
fn python_deps() -> PathBuf {
    let deps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/.pydeps");
    assert!(
        deps.join("mcp").is_dir(),
        "the MCP Python SDK is not installed: run scripts/test"
    );
    deps
}

impl McpStdio {
    fn carries(scenario: &Scenario) -> bool {
        requests(scenario).iter().all(|r| {
            r.get("tool").is_some_and(serde_json::Value::is_string)
                && r.as_object().unwrap().iter().all(|(k, v)| {
                    matches!(k.as_str(), "tool" | "args" | "session" | "principal")
                        || (k == "kind" && v == "tool_call")
                })
        })
    }

    /// Calls each request of one session and principal through one proxy, in order.
    fn call(
        policy: &Path,
        session: Option<&str>,
        principal: Option<&str>,
        requests: &[&serde_json::Value],
    ) -> Vec<Called> {
        Self::call_with(policy, session, principal, requests, &[]).0
    }

    /// [`Self::call`] with more `warden mcp wrap` flags; also what the proxy wrote on stderr.
    fn call_with(
        policy: &Path,
        session: Option<&str>,
        principal: Option<&str>,
        requests: &[&serde_json::Value],
        flags: &[&str],
    ) -> (Vec<Called>, String) {
        use std::io::{BufRead as _, Read as _};
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let deps = python_deps();
        let mut command = Command::new(WARDEN);
        command
            .args([
                "mcp",
                "wrap",
                "--memory-pins",
                "--memory-sessions",
                "--policy",
            ])
            .arg(policy);
        if let Some(session) = session {
            command.args(["--session", session]);
        }
        if let Some(principal) = principal {
            command.args(["--principal", principal]);
        }
        let mut child = command
            .args(flags)
            .arg("--")
            .arg("python3")
            .arg(root.join("crates/warden-cli/tests/mcp/any_tool_server.py"))
            .env("PYTHONPATH", deps)
            // Many short-lived servers: let Python cache the SDK's bytecode after the first.
            .env_remove("PYTHONDONTWRITEBYTECODE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut next = |id: u64| -> serde_json::Value {
            loop {
                let mut line = String::new();
                assert!(stdout.read_line(&mut line).unwrap() > 0, "the proxy closed");
                let message: serde_json::Value = serde_json::from_str(&line).unwrap();
                if message["id"] == id {
                    return message;
                }
            }
        };
        let initialize = serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "front-doors", "version": "1"}}});
        writeln!(stdin, "{initialize}").unwrap();
        assert!(next(0)["result"].is_object());
        writeln!(
            stdin,
            r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
        )
        .unwrap();
        let mut called = Vec::new();
        for (i, request) in requests.iter().enumerate() {
            let id = i as u64 + 1;
            let call = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": request["tool"],
                           "arguments": request.get("args").cloned().unwrap_or(serde_json::json!({}))}});
            writeln!(stdin, "{call}").unwrap();
            called.push(Called::from_answer(&next(id)));
        }
        drop(stdin);
        let _ = child.kill();
        let _ = child.wait();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (called, stderr)
    }
}

/// The Streamable HTTP proxy (`warden mcp proxy`) in front of the official Python SDK's HTTP
/// server: the same calls as over stdio, as JSON-RPC POSTs to `/mcp` on one MCP session per
/// group, each group through its own proxy (its Warden session and principal).
struct McpHttp {
    /// The upstream's endpoint, `http://127.0.0.1:PORT/mcp`.
    upstream: String,
}

impl McpHttp {
    fn call(
        &self,
        policy: &Path,
        session: Option<&str>,
        principal: Option<&str>,
        requests: &[&serde_json::Value],
    ) -> Vec<Called> {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let mut command = Command::new(WARDEN);
        command
            .args([
                "mcp",
                "proxy",
                "--memory-pins",
                "--memory-sessions",
                "--policy",
            ])
            .arg(policy)
            .args(["--listen", "127.0.0.1:0", "--upstream", &self.upstream])
            .arg("--port-file")
            .arg(&port_file);
        if let Some(session) = session {
            command.args(["--session", session]);
        }
        if let Some(principal) = principal {
            command.args(["--principal", principal]);
        }
        let proxy = Daemon(
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let address = wait_for_file(&port_file);
        let url = format!("http://{address}/mcp");
        let agent = common::agent();
        let mut mcp_session: Option<String> = None;
        let mut post = |body: serde_json::Value| -> Option<serde_json::Value> {
            let mut request = agent
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-06-18");
            if let Some(id) = &mcp_session {
                request = request.header("mcp-session-id", id);
            }
            let mut response = request.send(body.to_string()).unwrap();
            if let Some(id) = response.headers().get("mcp-session-id") {
                mcp_session = Some(id.to_str().unwrap().to_owned());
            }
            let status = response.status().as_u16();
            let text = response.body_mut().read_to_string().unwrap();
            assert!(status == 200 || status == 202, "{status}: {text}");
            if text.trim().is_empty() {
                return None;
            }
            // A JSON answer, or an event stream whose last `data:` line is the answer.
            let json = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .next_back()
                .unwrap_or(&text);
            Some(serde_json::from_str(json.trim()).unwrap())
        };
        let initialize = post(serde_json::json!({"jsonrpc": "2.0", "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "front-doors", "version": "1"}}}))
        .unwrap();
        assert!(initialize["result"].is_object(), "{initialize}");
        post(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        let called = requests
            .iter()
            .enumerate()
            .map(|(i, request)| {
                let call = serde_json::json!({"jsonrpc": "2.0", "id": i + 1,
                    "method": "tools/call",
                    "params": {"name": request["tool"],
                               "arguments": request.get("args").cloned()
                                   .unwrap_or(serde_json::json!({}))}});
                Called::from_answer(&post(call).unwrap())
            })
            .collect();
        drop(proxy);
        called
    }
}

/// The upstream MCP server over Streamable HTTP, killed on drop.
fn spawn_http_upstream() -> (Daemon, String) {
    use std::io::BufRead as _;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut child = Command::new("python3")
        .arg(root.join("crates/warden-cli/tests/mcp/any_tool_http_server.py"))
        .env("PYTHONPATH", python_deps())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the upstream printed its port");
    (Daemon(child), format!("http://127.0.0.1:{port}/mcp"))
}

/// The content of a file another process writes once ready (a port file), waiting up to 20 s.
fn wait_for_file(path: &Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return text.trim().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The scenario's requests as JSON, as a client would send them.
fn requests(scenario: &Scenario) -> Vec<serde_json::Value> {
    scenario
        .steps
        .iter()
        .map(|s| serde_json::to_value(s.request.as_ref().unwrap()).unwrap())
        .collect()
}

/// Writes the scenario's policy into `dir` (a copy of the scenario's folder, so Rego module
/// paths resolve as they do for the scenario) and returns its path.
fn policy_file(scenario: &Scenario, dir: &Path) -> PathBuf {
    let target = dir.join("policy").join("policy.yaml");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    match &scenario.source {
        PolicySource::Inline(text) => {
            copy_dir(scenario.path.parent().unwrap(), &dir.join("policy"));
            std::fs::write(&target, text).unwrap();
        }
        PolicySource::File(path) => {
            std::fs::copy(path, &target).unwrap();
        }
    }
    target
}

/// Copies the folders below `from` (not its files: a policy directory holds only the policy).
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let dest = to.join(path.file_name().unwrap());
            std::fs::create_dir_all(&dest).unwrap();
            for file in std::fs::read_dir(&path).unwrap() {
                let file = file.unwrap().path();
                if file.is_file() {
                    std::fs::copy(&file, dest.join(file.file_name().unwrap())).unwrap();
                }
            }
        }
    }
}

#[test]
fn every_front_door_meets_every_scenario_expectation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/scenarios");
    let files = collect_files(&[root]).unwrap();
    assert!(files.len() >= 10, "{files:?}");
    let doors: [&dyn FrontDoor; 4] = [&Library, &CliEval, &Http::Decide, &Http::OpaDataApi];
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in &files {
        let scenario = load_scenario(file).unwrap();
        for door in doors {
            let dir = tempfile::tempdir().unwrap();
            let decisions = door.decide_all(&scenario, dir.path());
            assert_eq!(
                decisions.len(),
                scenario.steps.len(),
                "{} via {}",
                file.display(),
                door.name()
            );
            for (i, (step, decision)) in scenario.steps.iter().zip(&decisions).enumerate() {
                checked += 1;
                let mismatches = compare(&step.expect, decision);
                if !mismatches.is_empty() {
                    failures.push(format!(
                        "{} step {} via {}: {mismatches:?}",
                        file.display(),
                        i + 1,
                        door.name()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 4 * 90, "only {checked} checks ran");
}

/// The same corpus as `tools/call`s through the MCP stdio proxy: every request a `tools/call`
/// can carry gets the library's decision (allowed and forwarded, or denied by the same rule).
#[test]
fn the_mcp_proxy_decides_the_corpus_as_the_library_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/scenarios");
    let files = collect_files(&[root]).unwrap();
    let (_upstream, upstream_url) = spawn_http_upstream();
    let http = McpHttp {
        upstream: upstream_url,
    };
    let stdio_call: &CallGroup<'_> = &McpStdio::call;
    let http_call: &CallGroup<'_> =
        &|policy, session, principal, batch| http.call(policy, session, principal, batch);
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut scenarios = 0;
    for file in &files {
        let scenario = load_scenario(file).unwrap();
        if !McpStdio::carries(&scenario) {
            continue;
        }
        scenarios += 1;
        let dir = tempfile::tempdir().unwrap();
        let library = Library.decide_all(&scenario, dir.path());
        for (transport, call) in [("stdio", stdio_call), ("Streamable HTTP", http_call)] {
            let called = call_all(&scenario, dir.path(), call);
            for (i, (decision, called)) in library.iter().zip(&called).enumerate() {
                checked += 1;
                let expected = Called {
                    allowed: decision.verdict == warden::Verdict::Allow,
                    // Denied or pending: refused, naming the rule.
                    rule: (!decision.verdict.is_allow())
                        .then(|| decision.rule.as_deref().map(str::to_owned))
                        .flatten(),
                };
                if *called != expected {
                    failures.push(format!(
                        "{} step {} over {transport}: library {expected:?}, MCP {called:?}",
                        file.display(),
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!(
        "{scenarios} scenarios, {checked} tools/call requests through the MCP proxy (stdio and Streamable HTTP)"
    );
    assert!(
        scenarios >= 5 && checked >= 80,
        "only {scenarios} scenarios, {checked} requests"
    );
}

/// `warden mcp wrap --decision-log` writes one line per decision, as `warden serve` does: the
/// policy, its digest, the verdict and rule, the tool; never an argument's value.
#[test]
fn the_mcp_proxy_logs_each_decision_without_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.yaml");
    std::fs::write(
        &policy,
        "warden: 1\nname: logged\ndefault: allow\nrules:\n  - { id: no-send, effect: deny, tools: [send] }\n",
    )
    .unwrap();
    let read = serde_json::json!({"tool": "read", "args": {"q": "secret-argument-value"}});
    let send = serde_json::json!({"tool": "send", "args": {"to": "secret-argument-value"}});
    let (called, stderr) = McpStdio::call_with(
        &policy,
        Some("s1"),
        None,
        &[&read, &send],
        &["--decision-log"],
    );
    assert_eq!(
        called.iter().map(|c| c.allowed).collect::<Vec<_>>(),
        [true, false]
    );
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "decision")
        .collect();
    // The call, then the answer of the allowed call (a `tool_result`), then the denied call.
    let verdicts: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l["tool"].as_str(),
                l["decision"].as_str(),
                l["rule"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            (Some("read"), Some("allow"), None),
            (Some("read"), Some("allow"), None),
            (Some("send"), Some("deny"), Some("no-send")),
        ],
        "{stderr}"
    );
    for line in &lines {
        assert_eq!(line["policy"], "logged");
        assert!(line["digest"].as_str().is_some_and(|d| !d.is_empty()));
        assert!(line["latency_us"].is_u64());
    }
    assert!(!stderr.contains("secret-argument-value"), "{stderr}");
    // Without the flag, no decision is logged.
    let (_, quiet) = McpStdio::call_with(&policy, Some("s1"), None, &[&read], &[]);
    assert!(!quiet.contains("\"decision\""), "{quiet}");
}
