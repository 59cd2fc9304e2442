//! Policy agents without Envoy: discovery and validation at load, the socket's ownership and
//! mode, `run` answers applied or refused, retries, and an agent down (fail closed, `fail_open`,
//! recovery). The agent is a Rust thread on a std Unix socket; through a real Envoy with a Python
//! agent: crates/warden-cli/tests/envoy.rs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::chain::{Phase, Verdict};
use crate::chain_tests::{fake, status};
use crate::config::EnvoyConfig;
use crate::exchange::Exchange;
use crate::metrics::Metrics;

/// A test agent: answers `describe`, `health` and `run` for `requireHeader` (request: fails 403
/// without the configured header) and `tag` (request and response: sets `x-tag`, or, with
/// `evil: true`, tries to set `x-warden-caller`). While `silent` it closes connections without
/// answering; it drops the first `drop_first` connections.
struct TestAgent {
    dir: tempfile::TempDir,
    silent: Arc<AtomicBool>,
    drop_first: Arc<AtomicUsize>,
    runs: Arc<AtomicUsize>,
}

impl TestAgent {
    fn start(mode: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(mode)).unwrap();
        let silent = Arc::new(AtomicBool::new(false));
        let drop_first = Arc::new(AtomicUsize::new(0));
        let runs = Arc::new(AtomicUsize::new(0));
        let (s, d, r) = (
            Arc::clone(&silent),
            Arc::clone(&drop_first),
            Arc::clone(&runs),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                if s.load(Ordering::SeqCst) {
                    continue;
                }
                if d.load(Ordering::SeqCst) > 0 {
                    d.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let mut line = String::new();
                if BufReader::new(&stream).read_line(&mut line).is_err() {
                    continue;
                }
                let request: Value = serde_json::from_str(&line).unwrap();
                let answer = answer(&request, &r);
                stream.write_all(answer.as_bytes()).unwrap();
                stream.write_all(b"\n").unwrap();
            }
        });
        Self {
            dir,
            silent,
            drop_first,
            runs,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }
}

fn answer(request: &Value, runs: &AtomicUsize) -> String {
    match request["op"].as_str().unwrap() {
        "describe" => json!({"policies": [
            {"name": "requireHeader", "phases": ["request"], "config_schema": {
                "type": "object", "required": ["header"], "additionalProperties": false,
                "properties": {"header": {"type": "string", "minLength": 1}}}},
            {"name": "tag", "phases": ["request", "response"], "config_schema": {
                "type": "object", "properties": {"evil": {"type": "boolean"}, "junk": {"type": "boolean"}}}},
        ]})
        .to_string(),
        "health" => json!({"ok": true}).to_string(),
        "run" => {
            runs.fetch_add(1, Ordering::SeqCst);
            let config = &request["config"];
            let ex = &request["exchange"];
            match request["policy"].as_str().unwrap() {
                "requireHeader" => {
                    let header = config["header"].as_str().unwrap();
                    if ex["headers"].get(header).is_some() {
                        json!({"outcome": "pass"}).to_string()
                    } else {
                        json!({"outcome": "fail", "status": 403,
                            "headers": {"content-type": "text/plain"},
                            "body": format!("missing {header}")})
                        .to_string()
                    }
                }
                _ if config["junk"] == true => "not json".to_owned(),
                _ if config["evil"] == true => {
                    json!({"outcome": "pass", "set_headers": {"x-warden-caller": "admin"}})
                        .to_string()
                }
                _ => json!({"outcome": "pass",
                    "set_headers": {"x-tag": format!("{} {}", request["phase"].as_str().unwrap(),
                        ex["method"].as_str().unwrap())},
                    "remove_headers": ["x-drop"]})
                .to_string(),
            }
        }
        other => panic!("unknown op {other}"),
    }
}

fn config(socket: &Path, routes: &str, health_ms: u64) -> EnvoyConfig {
    let routes: Value = serde_saphyr::from_str(routes).unwrap();
    serde_json::from_value(json!({
        "agents": {"ext": {"socket": socket, "timeout_ms": 300, "retries": 1,
            "health_interval_ms": health_ms}},
        "routes": routes,
    }))
    .unwrap()
}

fn exchange(name: &str, headers: &[(&str, &str)]) -> Exchange {
    Exchange::new(
        Arc::from(name),
        "GET".to_owned(),
        "/x".to_owned(),
        headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

async fn run(chains: &crate::route::Chains, route: &str, ex: &mut Exchange) -> Verdict {
    crate::chain::run(
        &fake(),
        &Metrics::default(),
        &chains.routes[route],
        ex,
        Phase::Request,
        Duration::from_secs(2),
    )
    .await
}

#[test]
fn steps_are_checked_against_what_the_agent_offers() {
    let agent = TestAgent::start(0o600);
    let error = |routes: &str| {
        let e = config(&agent.socket(), routes, 1000).compile().unwrap_err();
        (e.field, e.message)
    };
    let ok = config(
        &agent.socket(),
        "a: {request: [{policy: ext/requireHeader, config: {header: x-id}}], response: [{policy: ext/tag}]}",
        1000,
    );
    assert_eq!(ok.compile().unwrap().agents.len(), 1);
    assert_eq!(
        error("a: {request: [{policy: allowAll}, {policy: nope/tag}]}").0,
        "envoy.routes.a.request[1].policy"
    );
    let (field, message) = error("a: {request: [{policy: ext/nothing}]}");
    assert_eq!(field, "envoy.routes.a.request[0].policy");
    assert!(message.contains("requireHeader, tag"), "{message}");
    assert_eq!(
        error("a: {response: [{policy: ext/requireHeader, config: {header: x}}]}").0,
        "envoy.routes.a.response[0].policy"
    );
    // The policy's schema rejects the config: the field named is the config (or inside it).
    assert_eq!(
        error("a: {request: [{policy: allowAll}, {policy: ext/requireHeader}]}").0,
        "envoy.routes.a.request[1].config"
    );
    assert_eq!(
        error("a: {request: [{policy: ext/requireHeader, config: {header: 7}}]}").0,
        "envoy.routes.a.request[0].config.header"
    );
}

#[test]
fn a_socket_others_may_use_or_no_agent_is_refused_at_load() {
    let agent = TestAgent::start(0o644);
    let e = config(&agent.socket(), "{}", 1000).compile().unwrap_err();
    assert_eq!(e.field, "envoy.agents.ext.socket");
    assert!(e.message.contains("0644"), "{}", e.message);
    let e = config(&agent.dir.path().join("none.sock"), "{}", 1000)
        .compile()
        .unwrap_err();
    assert_eq!(e.field, "envoy.agents.ext.socket");
    // An agent that never answers: the load gives up within the timeout (twice: one retry).
    let mute = agent.dir.path().join("mute.sock");
    let _listener = UnixListener::bind(&mute).unwrap();
    std::fs::set_permissions(&mute, std::fs::Permissions::from_mode(0o600)).unwrap();
    let started = std::time::Instant::now();
    let e = config(&mute, "{}", 1000).compile().unwrap_err();
    assert_eq!(e.field, "envoy.agents.ext.socket");
    assert!(e.message.contains("no answer"), "{}", e.message);
    assert!(started.elapsed() < Duration::from_secs(2));
    let mut bad = config(&agent.socket(), "{}", 1000);
    bad.agents.get_mut("ext").unwrap().timeout_ms = 0;
    assert_eq!(
        bad.compile().unwrap_err().field,
        "envoy.agents.ext.timeout_ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_applied_or_refused() {
    let agent = TestAgent::start(0o600);
    let chains = config(
        &agent.socket(),
        "{need: {request: [{policy: ext/requireHeader, config: {header: x-id}}]},
          tag: {request: [{policy: ext/tag}]},
          evil: {request: [{policy: ext/tag, config: {evil: true}}]},
          junk: {request: [{policy: ext/tag, config: {junk: true}}], fail_open: true}}",
        1000,
    )
    .compile()
    .unwrap();
    let v = run(&chains, "need", &mut exchange("need", &[])).await;
    let Verdict::Reply(reply) = &v else {
        panic!("{v:?}")
    };
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, b"missing x-id");
    assert_eq!(
        status(&run(&chains, "need", &mut exchange("need", &[("x-id", "1")])).await),
        0
    );

    let mut ex = exchange("tag", &[("x-drop", "1")]);
    let Verdict::Forward(m) = run(&chains, "tag", &mut ex).await else {
        panic!("not forwarded")
    };
    assert_eq!(m.set, vec![("x-tag".to_owned(), "request GET".to_owned())]);
    assert_eq!(m.remove, vec!["x-drop".to_owned()]);
    assert_eq!(ex.header("x-tag"), Some("request GET"));

    // An agent may not set the identity headers; an answer that is not JSON is an internal
    // error (forwarded only on a fail_open route).
    assert_eq!(
        status(&run(&chains, "evil", &mut exchange("evil", &[])).await),
        500
    );
    assert_eq!(
        status(&run(&chains, "junk", &mut exchange("junk", &[])).await),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_is_retried_and_an_agent_down_fails_at_once_until_it_recovers() {
    let agent = TestAgent::start(0o600);
    let chains = config(
        &agent.socket(),
        "{closed: {request: [{policy: ext/tag}]}, open: {request: [{policy: ext/tag}], fail_open: true}}",
        50,
    )
    .compile()
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    for a in &chains.agents {
        a.watch(Arc::clone(&metrics));
    }
    // One retry: a first connection dropped without an answer is asked again.
    agent.drop_first.store(1, Ordering::SeqCst);
    assert_eq!(
        status(&run(&chains, "closed", &mut exchange("closed", &[])).await),
        0
    );

    agent.silent.store(true, Ordering::SeqCst);
    assert_eq!(
        status(&run(&chains, "closed", &mut exchange("closed", &[])).await),
        500
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while chains.agents[0].is_up() {
        assert!(std::time::Instant::now() < deadline, "never marked down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Down: the step fails without asking; fail closed, or forwarded on a fail_open route.
    let before = agent.runs.load(Ordering::SeqCst);
    assert_eq!(
        status(&run(&chains, "closed", &mut exchange("closed", &[])).await),
        500
    );
    assert_eq!(
        status(&run(&chains, "open", &mut exchange("open", &[])).await),
        0
    );
    assert_eq!(agent.runs.load(Ordering::SeqCst), before);

    agent.silent.store(false, Ordering::SeqCst);
    while !chains.agents[0].is_up() {
        assert!(std::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status(&run(&chains, "closed", &mut exchange("closed", &[])).await),
        0
    );
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"warden_envoy_agent_calls_total{agent="ext",outcome="down"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"warden_envoy_agent_up{agent="ext"} 1"#),
        "{text}"
    );
}
