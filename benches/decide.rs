//! Decision benchmarks (issue 2): latency for scenario 02's policy, the same logic in Rego on raw
//! regorus in the same run, scaling with rules about other tools, and all-core throughput.
//!
//! `cargo bench --bench decide`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use warden::{Engine, Request, Verdict, load_policy_str};

/// Scenario 02's policy (taint check + class lookup).
const EXFIL: &str = r#"
warden: 1
name: exfil
tools:
  "crm.read_*": [sensitive_read]
  send_email: [external_write]
  http_post: [external_write]
  human_approve: [review]
rules:
  - { id: reads, effect: allow, classes: [sensitive_read], add_taints: [pii] }
  - { id: writes, effect: allow, classes: [external_write] }
  - { id: no-exfil, effect: deny, classes: [external_write], if: "taint:pii", reason: "external write after PII access" }
  - { id: review, effect: allow, tools: [human_approve], remove_taints: [pii] }
"#;

/// The same decision logic in Rego, as an OPA user would write it (session taints in the input).
const EXFIL_REGO: &str = r#"
package exfil
import rego.v1

registry := {
  "crm.read_*": ["sensitive_read"],
  "send_email": ["external_write"],
  "http_post": ["external_write"],
  "human_approve": ["review"],
}

classes contains c if {
  some pattern, cs in registry
  glob.match(pattern, [], input.tool)
  some c in cs
}

deny contains "no-exfil" if {
  "external_write" in classes
  "pii" in input.taints
}

allow contains "reads" if "sensitive_read" in classes
allow contains "writes" if "external_write" in classes
allow contains "review" if input.tool == "human_approve"

decision := "deny" if count(deny) > 0
decision := "allow" if {
  count(deny) == 0
  count(allow) > 0
}
"#;

/// A hand-optimised Rego variant: exact names by object lookup, the one glob as `startswith`.
/// Gives raw regorus its best case, so the ratio is not flattered by `glob.match`.
const EXFIL_REGO_FAST: &str = r#"
package exfil
import rego.v1

exact := {"send_email": "external_write", "http_post": "external_write", "human_approve": "review"}

classes contains exact[input.tool]
classes contains "sensitive_read" if startswith(input.tool, "crm.read_")

decision := "deny" if {
  "external_write" in classes
  "pii" in input.taints
} else := "allow" if {
  count(classes) > 0
} else := "deny"
"#;

fn request(json: &str) -> Request {
    Request::from_json(json.as_bytes()).unwrap()
}

/// An engine whose session `s1` already holds the `pii` taint.
fn tainted_engine(text: &str) -> Engine {
    let engine = Engine::new(load_policy_str("bench.yaml", text).unwrap());
    let read = request(r#"{"session":"s1","tool":"crm.read_customer","args":{"id":7}}"#);
    assert_eq!(engine.decide(&read).unwrap().verdict, Verdict::Allow);
    engine
}

fn latency(c: &mut Criterion) {
    let engine = tainted_engine(EXFIL);
    let deny = request(r#"{"session":"s1","tool":"http_post","args":{"url":"https://x.test"}}"#);
    let allow = request(r#"{"session":"s2","tool":"send_email","args":{"to":"a@b.test"}}"#);
    assert_eq!(engine.decide(&deny).unwrap().verdict, Verdict::Deny);
    assert_eq!(engine.decide(&allow).unwrap().verdict, Verdict::Allow);

    let mut group = c.benchmark_group("scenario02");
    group.bench_function("warden/deny_after_taint", |b| {
        b.iter(|| engine.decide(black_box(&deny)).unwrap())
    });
    group.bench_function("warden/allow_clean_session", |b| {
        b.iter(|| engine.decide(black_box(&allow)).unwrap())
    });

    // Raw regorus, prepared once; per decision: set the input and evaluate the rule.
    let mut rego = regorus::Engine::new();
    rego.add_policy("exfil.rego".into(), EXFIL_REGO.into())
        .unwrap();
    let input = regorus::Value::from_json_str(
        r#"{"tool":"http_post","args":{"url":"https://x.test"},"taints":["pii"]}"#,
    )
    .unwrap();
    rego.set_input(input.clone());
    let answer = rego.eval_rule("data.exfil.decision".into()).unwrap();
    assert_eq!(answer, regorus::Value::from("deny"));
    group.bench_function("regorus/deny_after_taint", |b| {
        b.iter(|| {
            rego.set_input(black_box(input.clone()));
            rego.eval_rule("data.exfil.decision".into()).unwrap()
        })
    });
    let mut fast = regorus::Engine::new();
    fast.add_policy("exfil.rego".into(), EXFIL_REGO_FAST.into())
        .unwrap();
    fast.set_input(input.clone());
    assert_eq!(
        fast.eval_rule("data.exfil.decision".into()).unwrap(),
        regorus::Value::from("deny")
    );
    group.bench_function("regorus_hand_optimised/deny_after_taint", |b| {
        b.iter(|| {
            fast.set_input(black_box(input.clone()));
            fast.eval_rule("data.exfil.decision".into()).unwrap()
        })
    });

    // The same decision with content inspection enabled (every built-in detector, injection on)
    // and arguments that hold no finding: the cost content inspection adds.
    let with_content = format!(
        "{EXFIL}content:\n  detectors: [email, phone, credit_card, us_ssn, iban, ipv4, aws_access_key, github_token, jwt, private_key, openai_key]\n  input: redact\n  output: redact\n  injection: deny\n"
    );
    let content_engine = tainted_engine(&with_content);
    let clean = request(
        r#"{"session":"s2","tool":"send_email","args":{"to":"support team","subject":"Weekly report","body":"The weekly report is attached; numbers look fine."}}"#,
    );
    let plain_engine = tainted_engine(EXFIL);
    let d = content_engine.decide(&clean).unwrap();
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(d.findings.is_empty());
    group.bench_function("warden/allow_no_content", |b| {
        b.iter(|| plain_engine.decide(black_box(&clean)).unwrap())
    });
    group.bench_function("warden/allow_content_enabled_no_finding", |b| {
        b.iter(|| content_engine.decide(black_box(&clean)).unwrap())
    });
    group.finish();
}

/// A policy with `n` extra rules about other tools (half exact names, half prefix globs).
fn policy_with_rules(n: usize) -> String {
    let mut text = EXFIL.to_owned();
    for i in 0..n {
        if i % 2 == 0 {
            text.push_str(&format!(
                "  - {{ id: other-{i}, effect: deny, tools: [other_tool_{i}] }}\n"
            ));
        } else {
            text.push_str(&format!(
                "  - {{ id: other-{i}, effect: allow, tools: [\"svc{i}.*\"], add_taints: [t{i}] }}\n"
            ));
        }
    }
    text
}

fn scaling(c: &mut Criterion) {
    let deny = request(r#"{"session":"s1","tool":"http_post","args":{"url":"https://x.test"}}"#);
    let mut group = c.benchmark_group("scaling");
    for n in [10usize, 1_000, 10_000] {
        let engine = tainted_engine(&policy_with_rules(n));
        assert_eq!(engine.policy().rules.len(), n + 4);
        assert_eq!(engine.decide(&deny).unwrap().verdict, Verdict::Deny);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| engine.decide(black_box(&deny)).unwrap())
        });
    }
    group.finish();
}

/// Measures `batch` decisions on each of all cores' threads, thread `t` deciding
/// `requests[t][i % len]`; criterion reports decisions per second.
fn bench_all_cores(
    c: &mut Criterion,
    group: &str,
    engine: &Arc<Engine>,
    requests: &[Vec<Request>],
    batch: u64,
) {
    let threads = requests.len();
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(batch * threads as u64));
    group.bench_function(format!("all_cores_{threads}_threads"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                std::thread::scope(|scope| {
                    for mine in requests {
                        let engine = Arc::clone(engine);
                        scope.spawn(move || {
                            for i in 0..batch as usize {
                                black_box(engine.decide(&mine[i % mine.len()]).unwrap());
                            }
                        });
                    }
                });
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn throughput(c: &mut Criterion) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let engine = Arc::new(tainted_engine(EXFIL));
    // Each thread decides on its own sessions (64 per thread, round robin).
    let per_thread: Vec<Vec<Request>> = (0..threads)
        .map(|t| {
            (0..64)
                .map(|s| request(&format!(r#"{{"session":"t{t}-s{s}","tool":"send_email","args":{{"to":"a@b.test"}}}}"#)))
                .collect()
        })
        .collect();
    bench_all_cores(c, "throughput", &engine, &per_thread, 10_000);
}

/// Scenario 09's payment rule, as a Warden policy whose only rule is Rego.
const REGO_ONLY: &str = r#"
warden: 1
name: rego-only
default: allow
tools: { transfer_funds: [payment] }
rego:
  modules:
    payments.rego: |
      package payments
      import rego.v1
      too_large if {
        "payment" in input.classes
        input.args.amount > input.context.limit
      }
rules:
  - { id: limit, effect: deny, rego: data.payments.too_large }
"#;

const PAYMENTS_REGO: &str = "package payments\nimport rego.v1\ntoo_large if {\n  \"payment\" in input.classes\n  input.args.amount > input.context.limit\n}\n";

fn rego_decisions(c: &mut Criterion) {
    let engine = Arc::new(Engine::new(
        load_policy_str("rego.yaml", REGO_ONLY).unwrap(),
    ));
    let deny = request(
        r#"{"session":"s","tool":"transfer_funds","args":{"amount":500},"context":{"limit":100}}"#,
    );
    assert_eq!(engine.decide(&deny).unwrap().verdict, Verdict::Deny);

    let mut group = c.benchmark_group("rego_only");
    let deny_json =
        r#"{"session":"s","tool":"transfer_funds","args":{"amount":500},"context":{"limit":100}}"#;
    group.bench_function("warden/decide_prepared_request", |b| {
        b.iter(|| engine.decide(black_box(&deny)).unwrap())
    });
    // From the same JSON text as the raw regorus bench below: parse the request, then decide.
    group.bench_function("warden/decide_from_json", |b| {
        b.iter(|| {
            let request = Request::from_json(black_box(deny_json.as_bytes())).unwrap();
            engine.decide(&request).unwrap()
        })
    });
    // Raw regorus doing the same work from the same JSON request: build the input (request +
    // classes + state, as Warden does), set it, evaluate the rule.
    let mut rego = regorus::Engine::new();
    rego.add_policy("payments.rego".into(), PAYMENTS_REGO.into())
        .unwrap();
    let request_json = r#"{"session":"s","kind":"tool_call","tool":"transfer_funds","args":{"amount":500},"context":{"limit":100}}"#;
    group.bench_function("regorus/from_json", |b| {
        b.iter(|| {
            let mut input: serde_json::Value =
                serde_json::from_str(black_box(request_json)).unwrap();
            input["classes"] = serde_json::json!(["payment"]);
            input["state"] = serde_json::json!({"taints": [], "history": []});
            rego.set_input(regorus::Value::from(input));
            rego.eval_rule("data.payments.too_large".into()).unwrap()
        })
    });
    group.finish();

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_thread = vec![vec![deny]; threads];
    bench_all_cores(c, "rego_throughput", &engine, &per_thread, 2_000);
}

fn parse(c: &mut Criterion) {
    let json =
        br#"{"session":"s","tool":"transfer_funds","args":{"amount":500},"context":{"limit":100}}"#;
    let mut group = c.benchmark_group("parse");
    group.bench_function("request_from_json", |b| {
        b.iter(|| Request::from_json(black_box(json)).unwrap())
    });
    group.bench_function("serde_json_value_baseline", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(json)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, latency, scaling, throughput, rego_decisions, parse);
criterion_main!(benches);
