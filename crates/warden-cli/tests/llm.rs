//! The LLM front door of `warden serve` with the real PyPI `openai` and `anthropic` SDKs (both
//! installed by scripts/test from tests/peers), through Warden to a scripted upstream speaking
//! both providers' wire formats (tests/llm/upstream.py; no provider can be reached here, so the
//! upstream is a stand-in and the clients are real). The scenarios are in tests/llm/clients.py:
//! prompts redacted before the upstream sees them, injection and model rules refusing with the
//! SDK's own exception, answers redacted whole and across stream chunks, blocking findings
//! ending a stream with the provider's error event, denied tool calls removed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::WARDEN;
use common::serve::Server;
use serde_json::json;

const AGENT: &str = r#"warden: 1
name: llm-agent
default: allow
content:
  detectors: [email, credit_card, aws_access_key]
  input: redact
  output: redact
  injection: deny
rules:
  - id: no-delete
    effect: deny
    tools: ["delete_*"]
    reason: deleting files is not allowed
  - id: no-huge-model
    effect: deny
    kinds: [prompt]
    context: { /model: { equals: gpt-huge } }
    reason: this model is not allowed
"#;

/// Findings in answers block rather than redact.
const STRICT: &str = r#"warden: 1
name: llm-strict
default: allow
content:
  detectors: [aws_access_key]
  output: deny
"#;

/// Two requests a day per model family, and 100 a day for the load test's model.
const BUDGET: &str = r#"warden: 1
name: llm-budget
default: allow
budgets:
  - { id: gpt-daily, period: day, requests: 2, models: ["gpt-4o*"] }
  - { id: claude-daily, period: day, requests: 2, models: ["claude-*"] }
  - { id: load-daily, period: day, requests: 100, models: ["load-model"] }
  - { id: load-tokens, per: principal, period: day, tokens: 100000000, models: ["load-model"] }
"#;

fn scripts() -> PathBuf {
    common::mcp::root().join("crates/warden-cli/tests/llm")
}

/// The scripted upstream, killed when dropped.
struct Upstream {
    child: Child,
    port: u16,
    record: PathBuf,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn upstream(dir: &Path) -> Upstream {
    let port_file = dir.join("upstream.port");
    let record = dir.join("upstream.jsonl");
    let child = Command::new("python3")
        .arg(scripts().join("upstream.py"))
        .arg("--port-file")
        .arg(&port_file)
        .arg("--record")
        .arg(&record)
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 is required for the LLM upstream");
    let started = Instant::now();
    let port = loop {
        if let Some(port) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            break port;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the scripted upstream did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    Upstream {
        child,
        port,
        record,
    }
}

struct Site {
    dir: tempfile::TempDir,
    config: String,
    upstream: Upstream,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("llm-agent.yaml"), AGENT).unwrap();
        std::fs::write(policies.join("llm-strict.yaml"), STRICT).unwrap();
        std::fs::write(policies.join("llm-budget.yaml"), BUDGET).unwrap();
        std::fs::write(policies.join("llm-rewrite.yaml"), REWRITE).unwrap();
        let upstream = upstream(dir.path());
        let url = format!("http://127.0.0.1:{}", upstream.port);
        let config = dir.path().join("warden.yaml");
        std::fs::write(
            &config,
            format!(
                "policies: policies\nkeys_file: keys.json\nstate: memory\nwatch: false\n\
                 audit: {{dir: audit}}\n\
                 llm_prices: {{gpt-4o-mini: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}}}\n\
                 llm_upstreams:\n\
                 \x20 - {{name: openai, api: openai, url: \"{url}\", policy: llm-agent}}\n\
                 \x20 - {{name: anthropic, api: anthropic, url: \"{url}\", policy: llm-agent}}\n\
                 \x20 - {{name: openai-strict, api: openai, url: \"{url}\", policy: llm-strict}}\n\
                 \x20 - {{name: anthropic-strict, api: anthropic, url: \"{url}\", policy: llm-strict}}\n\
                 \x20 - {{name: openai-budget, api: openai, url: \"{url}\", policy: llm-budget}}\n\
                 \x20 - {{name: anthropic-budget, api: anthropic, url: \"{url}\", policy: llm-budget}}\n\
                 \x20 - {{name: openai-rewrite, api: openai, url: \"{url}\", policy: llm-rewrite}}\n\
                 \x20 - {{name: anthropic-rewrite, api: anthropic, url: \"{url}\", policy: llm-rewrite}}\n"
            ),
        )
        .unwrap();
        Self {
            config: config.display().to_string(),
            dir,
            upstream,
        }
    }

    fn key(&self) -> String {
        let out = Command::new(WARDEN)
            .args([
                "keys",
                "create",
                "--tenant",
                "team-a",
                "--policy",
                "llm-agent",
                "--config",
            ])
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn start(&self) -> Server {
        Server::spawn(
            &["--config", self.config.as_str(), "--listen", "127.0.0.1:0"],
            &self.dir.path().join("port"),
            &self.dir.path().join("log"),
        )
    }

    /// Runs tests/llm/clients.py with `extra` arguments; panics with its output on a failure.
    fn clients(&self, server: &Server, key: &str, extra: &[&str]) -> String {
        let out = Command::new("python3")
            .arg(scripts().join("clients.py"))
            .args(["--warden", &server.url(""), "--key", key, "--record"])
            .arg(&self.upstream.record)
            .args(extra)
            .output()
            .expect("python3 is required for the LLM SDK tests");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "openai/anthropic SDK checks failed (missing SDKs? run scripts/test, which installs tests/peers into .ci/.pydeps):\n{stdout}\n{}\n--- warden log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log_text()
        );
        stdout
    }
}

/// Prompts rewritten (a smaller model, fewer answer tokens); audit rules on prompts and answers.
const REWRITE: &str = r#"warden: 1
name: llm-rewrite
default: allow
rules:
  - id: small-gpt
    effect: allow
    kinds: [prompt]
    context: { /model: { equals: gpt-4o } }
    rewrite: { model: gpt-4o-mini, max_tokens: 64 }
  - id: small-claude
    effect: allow
    kinds: [prompt]
    context: { /provider: { equals: anthropic } }
    rewrite: { model: claude-haiku-4-5, max_tokens: 32 }
  - id: too-many-tokens
    effect: deny
    kinds: [prompt]
    context: { /estimated_tokens: { gt: 20000 } }
    reason: the exchange would be too long
  - id: watch-prompts
    effect: audit
    kinds: [prompt]
    context: { /estimated_tokens: { gt: 0 } }
  - id: watch-priced-prompts
    effect: audit
    kinds: [prompt]
    context: { /estimated_cost_usd: { gt: 0 } }
  - id: watch-answers
    effect: audit
    kinds: [completion]
    context: { /output_tokens: { gt: 0 }, /model: { equals: gpt-4o-mini } }
"#;

#[test]
fn the_real_openai_and_anthropic_sdks_go_through_warden() {
    let site = Site::new();
    let key = site.key();
    let server = site.start();
    let redacting = [
        "plain",
        "email",
        "injection",
        "huge_model",
        "card",
        "tools",
        "delete_only",
    ];
    let mut args = Vec::new();
    for only in redacting {
        args.extend(["--only", only]);
    }
    let out = site.clients(&server, &key, &args);
    assert!(out.contains(" passed, 0 failed"), "{out}");
    let passed: usize = out
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(passed >= 30, "{out}");

    let strict = [
        "--openai-mount",
        "openai-strict",
        "--anthropic-mount",
        "anthropic-strict",
        "--only",
        "aws",
    ];
    let out = site.clients(&server, &key, &strict);
    assert!(out.contains(" passed, 0 failed"), "{out}");

    let budgets = [
        "--openai-mount",
        "openai-budget",
        "--anthropic-mount",
        "anthropic-budget",
        "--only",
        "budget",
    ];
    let out = site.clients(&server, &key, &budgets);
    assert!(out.contains("2 passed, 0 failed"), "{out}");

    let rewrites = [
        "--openai-mount",
        "openai-rewrite",
        "--anthropic-mount",
        "anthropic-rewrite",
        "--only",
        "rewrite",
    ];
    let out = site.clients(&server, &key, &rewrites);
    assert!(out.contains("8 passed, 0 failed"), "{out}");

    // Metrics per tenant, model and outcome; tokens and cost as the upstream reported them.
    let text = server.get("/metrics").text;
    let series = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    for outcome in [
        "forwarded",
        "policy_denied",
        "budget_exhausted",
        "content_blocked",
    ] {
        assert!(
            text.contains(&format!("outcome=\"{outcome}\"")),
            "no {outcome} exchange counted:\n{text}"
        );
    }
    assert!(text.contains("model=\"gpt-4o-mini\""), "{text}");
    assert!(text.contains("model=\"unpriced\""), "{text}");
    assert!(
        !text.contains("claude-sonnet"),
        "an unpriced model named a series"
    );
    assert!(
        series(
            "warden_llm_tokens_total{mount=\"openai\",tenant=\"team-a\",model=\"gpt-4o-mini\",direction=\"output\"}"
        ) > 0.0,
        "{text}"
    );
    assert!(
        series(
            "warden_llm_cost_micro_usd_total{mount=\"openai\",tenant=\"team-a\",model=\"gpt-4o-mini\""
        ) > 0.0,
        "{text}"
    );

    // No prompt or answer text in the daemon's log or its audit log: positions only.
    let log = server.log_text();
    let audit = std::fs::read_dir(site.dir.path().join("audit"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    for secret in [
        "alice@example.com",
        "4111 1111",
        "AKIAIOSFODNN7EXAMPLE",
        "Ignore all previous",
    ] {
        assert!(!log.contains(secret), "`{secret}` in the log");
        assert!(!audit.contains(secret), "`{secret}` in the audit log");
    }
    // Every kind of decision the door makes reached the audit log, with the exchange's model.
    for kind in [
        "\"prompt\"",
        "\"completion\"",
        "\"tool_call\"",
        "gpt-huge",
        "content:injection",
    ] {
        assert!(audit.contains(kind), "{kind} not audited");
    }
    // Audit rules are recorded; answers carry the tokens and the cost the upstream reported,
    // for the model that was forwarded.
    let entries: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        entries.iter().any(|e| e["kind"] == "prompt"
            && e["model"] == "gpt-4o"
            && e["audited"] == json!(["watch-prompts"])
            && e["decision"] == "allow"),
        "no audited prompt entry"
    );
    let answer = entries
        .iter()
        .find(|e| e["kind"] == "completion" && e["audited"] == json!(["watch-answers"]))
        .expect("no audited answer entry");
    assert_eq!(answer["model"], "gpt-4o-mini", "{answer}");
    assert!(answer["output_tokens"].as_u64().unwrap() > 0, "{answer}");
    assert!(answer["input_tokens"].as_u64().unwrap() > 0, "{answer}");
    assert!(answer["cost_micro_usd"].as_u64().unwrap() > 0, "{answer}");
    // A streamed answer's usage, reported after its text was decided, is its own entry.
    let streamed = entries
        .iter()
        .find(|e| {
            e["kind"] == "stream_usage"
                && e["decision"] == "ended"
                && e["model"] == "gpt-4o-mini"
                && e["output_tokens"].as_u64().is_some_and(|n| n > 0)
        })
        .expect("no streamed answer's usage entry");
    assert_eq!(streamed["rule"], "openai", "{streamed}");
    assert_eq!(streamed["tenant"], "team-a", "{streamed}");
    assert!(streamed["input_tokens"].as_u64().unwrap() > 0, "{streamed}");
    assert!(
        streamed["cost_micro_usd"].as_u64().unwrap() > 0,
        "{streamed}"
    );
    // A priced model's prompt carries its estimated cost.
    assert!(
        entries.iter().any(|e| e["kind"] == "prompt"
            && e["model"] == "gpt-4o-mini"
            && e["audited"] == json!(["watch-prompts", "watch-priced-prompts"])),
        "no audited priced prompt entry"
    );
}

#[test]
fn bad_requests_are_refused_in_the_providers_error_shape_and_never_forwarded() {
    let site = Site::new();
    let key = site.key();
    let server = site.start();
    let auth = format!("Bearer {key}");
    let post = |path: &str, body: &str| {
        let reply = common::agent()
            .post(&server.url(path))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(body)
            .unwrap();
        let status = reply.status().as_u16();
        let text = reply.into_body().read_to_string().unwrap();
        (
            status,
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        )
    };
    let chat = "/llm/openai/v1/chat/completions";
    let messages = "/llm/anthropic/v1/messages";
    let cases = [
        (chat, json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "prediction": {"type": "content", "content": "x"}}).to_string(), "/prediction"),
        (chat, json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]}).to_string(), "image_url"),
        (chat, json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "logprobs": true}).to_string(), "log probabilities"),
        (chat, r#"{"model": "m", "model": "n", "messages": []}"#.to_owned(), "model"),
        (chat, json!({"messages": []}).to_string(), "/model"),
        (messages, json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}).to_string(), "document"),
        (messages, json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi", "extra": 1}]}).to_string(), "/messages/0/extra"),
    ];
    let before = std::fs::read_to_string(&site.upstream.record).unwrap_or_default();
    for (path, body, names) in cases {
        let (status, reply) = post(path, &body);
        assert_eq!(status, 400, "{body}: {reply}");
        let message = if path == chat {
            assert_eq!(reply["error"]["type"], "invalid_request_error", "{reply}");
            reply["error"]["message"].as_str().unwrap().to_owned()
        } else {
            assert_eq!(reply["type"], "error", "{reply}");
            assert_eq!(reply["error"]["type"], "invalid_request_error", "{reply}");
            reply["error"]["message"].as_str().unwrap().to_owned()
        };
        assert!(message.contains(names), "{body}: {message}");
    }
    let after = std::fs::read_to_string(&site.upstream.record).unwrap_or_default();
    assert_eq!(before, after, "a refused request reached the upstream");

    // Without a key: 401, nothing forwarded.
    let reply = common::agent()
        .post(&server.url(chat))
        .header("content-type", "application/json")
        .send(json!({"model": "m", "messages": []}).to_string())
        .unwrap();
    assert_eq!(reply.status().as_u16(), 401);
}

#[test]
fn a_mount_whose_key_variable_is_missing_stops_the_daemon_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/llm-agent.yaml"), AGENT).unwrap();
    let config = dir.path().join("warden.yaml");
    std::fs::write(
        &config,
        "policies: policies\nkeys_file: keys.json\nstate: memory\nllm_upstreams:\n  - {name: openai, api: openai, url: \"http://127.0.0.1:9\", policy: llm-agent, api_key_env: WARDEN_TEST_NO_SUCH_VARIABLE}\n",
    )
    .unwrap();
    let out = Command::new(WARDEN)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("WARDEN_TEST_NO_SUCH_VARIABLE")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WARDEN_TEST_NO_SUCH_VARIABLE"), "{stderr}");
}

/// Sends `n` concurrent requests of the load model, the i-th to `urls[i % urls.len()]`;
/// answers the statuses.
fn load(urls: &[String], key: &str, n: usize) -> Vec<u16> {
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (url, auth) = (urls[i % urls.len()].clone(), format!("Bearer {key}"));
            std::thread::spawn(move || {
                let body = json!({"model": "load-model", "max_tokens": 16, "messages": [{"role": "user", "content": format!("load {i}")}]});
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(120)))
                    .build()
                    .into();
                agent
                    .post(&url)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .send(body.to_string())
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Two daemons on one Redis reserve against the same budget counters: together they admit
/// exactly the budget, and the upstream sees exactly those requests.
#[test]
fn instances_sharing_redis_share_a_budget() {
    let site = Site::new();
    let redis_url = std::env::var("WARDEN_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut config = std::fs::read_to_string(&site.config).unwrap();
    config.push_str(&format!(
        "redis_url: \"{redis_url}\"\nredis_prefix: \"warden-llm-test:{}:{nanos}\"\n",
        std::process::id()
    ));
    std::fs::write(&site.config, config).unwrap();
    let key = site.key();
    let first = site.start();
    // The second instance writes its own audit log (one writer per log).
    let second_config = site.dir.path().join("warden-2.yaml");
    std::fs::write(
        &second_config,
        std::fs::read_to_string(&site.config)
            .unwrap()
            .replace("audit: {dir: audit}", "audit: {dir: audit-2}"),
    )
    .unwrap();
    let second = Server::spawn(
        &[
            "--config",
            second_config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &site.dir.path().join("port-2"),
        &site.dir.path().join("log-2"),
    );
    let urls = [
        first.url("/llm/openai-budget/v1/chat/completions"),
        second.url("/llm/openai-budget/v1/chat/completions"),
    ];
    let statuses = load(&urls, &key, 300);
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    let exhausted = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(allowed + exhausted, 300, "{statuses:?}");
    assert_eq!(
        allowed, 100,
        "the two instances together admit the budget of 100: {statuses:?}"
    );
    let forwarded = std::fs::read_to_string(&site.upstream.record)
        .unwrap()
        .lines()
        .count();
    assert_eq!(
        forwarded, 100,
        "the upstream saw exactly the admitted requests"
    );
    for server in [&first, &second] {
        let text = server.get("/metrics").text;
        assert!(
            text.lines()
                .any(|l| l.starts_with("warden_llm_requests_total")
                    && l.contains("outcome=\"budget_exhausted\"")),
            "an instance refused nothing:\n{text}"
        );
    }
}

#[test]
fn a_thousand_concurrent_requests_never_overspend_a_budget() {
    let site = Site::new();
    let key = site.key();
    let server = site.start();
    let url = server.url("/llm/openai-budget/v1/chat/completions");
    let before = std::fs::read_to_string(&site.upstream.record)
        .unwrap_or_default()
        .lines()
        .count();
    let statuses = load(&[url], &key, 1_000);
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    let exhausted = statuses.iter().filter(|s| **s == 429).count();
    // Overload (503) may turn some away; none of them may pass the budget.
    assert!(allowed <= 100, "{allowed} answered, the budget allows 100");
    assert_eq!(
        allowed + exhausted + statuses.iter().filter(|s| **s == 503).count(),
        1_000,
        "{statuses:?}"
    );
    let forwarded = std::fs::read_to_string(&site.upstream.record)
        .unwrap()
        .lines()
        .count()
        - before;
    assert_eq!(
        forwarded, allowed,
        "the upstream saw exactly the admitted requests"
    );
    assert_eq!(allowed, 100, "the whole budget was usable: {statuses:?}");
}
