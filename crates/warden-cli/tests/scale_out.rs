//! Many `warden serve` instances sharing Redis (`redis_url`), each a real daemon: a taint set
//! through one instance applies through the other, 1,000 racing calls spread over both on one
//! session let exactly one check-and-set pass, a decision token is single-use across
//! instances, and when Redis stops the daemons fail closed (never allow) and recover once it is
//! back, without a restart. Redis is the machine's (`WARDEN_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`, each test under a key prefix of its own), or one started here for
//! the test that stops it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::serve::Server;
use common::{SUPPORT_AGENT, WARDEN};
use serde_json::{Value, json};

/// Allowed once per session: the first `claim` taints it, and a tainted session's `claim` is
/// denied.
const ONCE: &str = r#"
warden: 1
name: once
default: deny
rules:
  - { id: first, effect: allow, tools: [claim], add_taints: [claimed] }
  - { id: again, effect: deny, tools: [claim], if: "taint:claimed" }
"#;

fn redis_url() -> String {
    std::env::var("WARDEN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A site two instances share: the policies, the key file and one `warden.yaml` naming Redis
/// under a prefix of its own.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new(redis_url: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("support-agent.yaml"), SUPPORT_AGENT).unwrap();
        std::fs::write(policies.join("once.yaml"), ONCE).unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let config = format!(
            "policies: policies\nkeys_file: keys.json\nanonymous_policy: support-agent\n\
             rate_limit: {{ per_second: 0 }}\nwatch: false\nredis_url: \"{redis_url}\"\n\
             redis_prefix: \"warden-test:{}:{nanos}\"\n{extra}",
            std::process::id()
        );
        std::fs::write(dir.path().join("warden.yaml"), config).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts instance `name` (its own port and log) on the shared configuration.
    fn start(&self, name: &str) -> Server {
        let config = self.path("warden.yaml").display().to_string();
        let args = ["--config", config.as_str(), "--listen", "127.0.0.1:0"];
        Server::spawn(
            &args,
            &self.path(&format!("{name}.port")),
            &self.path(&format!("{name}.log")),
        )
    }

    /// A new API key for `policy` (tenant `acme`), in the shared key file.
    fn key(&self, policy: &str) -> String {
        let out = Command::new(WARDEN)
            .args([
                "keys", "create", "--tenant", "acme", "--policy", policy, "--config",
            ])
            .arg(self.path("warden.yaml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

fn call(tool: &str, session: &str) -> Value {
    json!({"kind": "tool_call", "tool": tool, "session": session, "args": {}})
}

fn decision(server: &Server, key: Option<&str>, body: &Value) -> String {
    let reply = server.post_json("/v1/decide", key, body);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["decision"].as_str().unwrap().to_owned()
}

#[test]
fn a_taint_set_through_one_instance_applies_through_the_other() {
    let cluster = Cluster::new(&redis_url(), "");
    let (a, b) = (cluster.start("a"), cluster.start("b"));
    assert_eq!(decision(&b, None, &call("send_email", "s1")), "allow");
    assert_eq!(
        decision(&a, None, &call("crm.read_customer", "s1")),
        "allow"
    );
    assert_eq!(decision(&b, None, &call("send_email", "s1")), "deny");
    // Another session is untouched; clearing the taint through B clears it for A.
    assert_eq!(decision(&a, None, &call("send_email", "s2")), "allow");
    assert_eq!(decision(&b, None, &call("human_approve", "s1")), "allow");
    assert_eq!(decision(&a, None, &call("send_email", "s1")), "allow");
    let ready = b.get("/health/ready");
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.body["state"], "redis");
    // The URL is never logged.
    for name in ["a.log", "b.log"] {
        let log = std::fs::read_to_string(cluster.path(name)).unwrap();
        assert!(!log.contains(&redis_url()), "{log}");
        assert!(log.contains(r#""state":"redis""#), "{log}");
    }
}

#[test]
fn racing_calls_over_two_instances_let_exactly_one_claim_pass() {
    const CALLS: usize = 1000;
    let cluster = Cluster::new(&redis_url(), "");
    let key = cluster.key("once");
    let servers = [cluster.start("a"), cluster.start("b")];
    let (allowed, denied, next) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= CALLS {
                        break;
                    }
                    let server = &servers[i % 2];
                    match decision(server, Some(&key), &call("claim", "race")).as_str() {
                        "allow" => allowed.fetch_add(1, Ordering::Relaxed),
                        _ => denied.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
    });
    assert_eq!(allowed.load(Ordering::Relaxed), 1);
    assert_eq!(denied.load(Ordering::Relaxed), CALLS - 1);
}

#[test]
fn a_decision_token_is_single_use_across_instances() {
    let site = tempfile::tempdir().unwrap();
    let pem = site.path().join("signing.pem");
    let out = Command::new(WARDEN)
        .args(["keys", "gen-signing", "--out"])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cluster = Cluster::new(
        &redis_url(),
        &format!("signing_key: \"{}\"\n", pem.display()),
    );
    let (a, b) = (cluster.start("a"), cluster.start("b"));
    let decided = a.post_json("/v1/decide", None, &call("crm.read_customer", "t1"));
    assert_eq!(decided.status, 200, "{}", decided.text);
    let token = decided.body["token"].as_str().unwrap();
    let verify = |server: &Server| {
        let body =
            json!({"token": token, "tool": "crm.read_customer", "args": {}, "consume": true});
        let reply = server.post_json("/v1/tokens/verify", None, &body);
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.body
    };
    assert_eq!(verify(&b)["valid"], true);
    let replayed = verify(&a);
    assert_eq!(replayed["valid"], false, "{replayed}");
    assert_eq!(verify(&b)["valid"], false);
}

/// The per-key rate limit counts every instance's decisions: 8 calls in one second, spread
/// over two instances with `per_second: 5`, let exactly 5 through (each instance alone would
/// have let 4 of its 4 through). A batch counts its decisions too.
#[test]
fn the_rate_limit_is_shared_by_the_instances() {
    let cluster = Cluster::new(&redis_url(), "");
    let config = cluster.path("warden.yaml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "rate_limit: { per_second: 0 }",
        "rate_limit: { per_second: 5 }",
    );
    std::fs::write(&config, text).unwrap();
    let key = cluster.key("support-agent");
    let servers = [cluster.start("a"), cluster.start("b")];
    // Start just after a second begins, so that all 8 calls fall in one second.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1050 - u64::from(now.subsec_millis())));
    let statuses: Vec<u16> = (0..8)
        .map(|i| {
            servers[i % 2]
                .post_json("/v1/decide", Some(&key), &call("crm.read_customer", "r"))
                .status
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    // A batch of 6 is more than a second allows: refused whole.
    let batch = Value::Array((0..6).map(|_| call("crm.read_customer", "r")).collect());
    let reply = servers[0].post_json("/v1/decide/batch", Some(&key), &batch);
    assert_eq!(reply.status, 429, "{}", reply.text);
}

/// A Redis server of this test's own on a free port, stopped on drop.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        let redis = Self {
            port,
            child: Some(child),
        };
        wait_for("Redis to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        redis
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One call made under load: the outage phase when it was sent and when it was answered, its
/// status and its decision.
#[derive(Debug)]
struct Call {
    sent: u8,
    answered: u8,
    status: u16,
    verdict: Option<String>,
}

/// Redis stops under load: every decision that needs a session is refused (a 503, never an
/// allow: four threads keep asking for a send in a tainted session the whole time) and the
/// daemon is not ready; decisions without a session go on. Redis comes back on the same port:
/// decisions recover within a second, under the same load, with no restart of the daemon.
#[test]
fn with_redis_gone_decisions_fail_closed_and_recover_when_it_returns() {
    use std::sync::atomic::AtomicU8;
    const BEFORE: u8 = 0;
    const GONE: u8 = 1;
    const BACK: u8 = 2;
    let port = free_port();
    let mut redis = OwnRedis::start(port);
    let cluster = Cluster::new(
        &format!("redis://127.0.0.1:{}", redis.port),
        "redis_timeout_ms: 200\n",
    );
    let a = cluster.start("a");
    assert_eq!(decision(&a, None, &call("crm.read_customer", "s")), "allow");
    let phase = AtomicU8::new(BEFORE);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::sync::Mutex::new(Vec::<Call>::new());
    let recovered = std::sync::Mutex::new(None::<Instant>);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let sent = phase.load(Ordering::SeqCst);
                    let reply = a.post_json("/v1/decide", None, &call("send_email", "s"));
                    let answered = phase.load(Ordering::SeqCst);
                    let verdict = reply.body["decision"].as_str().map(str::to_owned);
                    if answered == BACK && reply.status == 200 {
                        recovered.lock().unwrap().get_or_insert_with(Instant::now);
                    }
                    seen.lock().unwrap().push(Call {
                        sent,
                        answered,
                        status: reply.status,
                        verdict,
                    });
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        phase.store(GONE, Ordering::SeqCst);
        redis.stop();
        std::thread::sleep(Duration::from_millis(200));
        // The calls above keep failing meanwhile; these look at one answer closely.
        let reply = a.post_json("/v1/decide", None, &call("send_email", "s2"));
        assert_eq!(reply.status, 503, "{}", reply.text);
        assert_eq!(reply.code(), "state_unavailable");
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert!(reply.body.get("decision").is_none(), "{}", reply.text);
        let unready = a.get("/health/ready");
        assert_eq!(unready.status, 503);
        assert!(unready.text.contains("redis failing"), "{}", unready.text);
        let stateless = json!({"kind": "tool_call", "tool": "send_email", "args": {}});
        assert_eq!(decision(&a, None, &stateless), "allow");
        // Each call now waits out `redis_timeout_ms` (200 ms): long enough for four threads to
        // make well over ten calls.
        std::thread::sleep(Duration::from_millis(1000));
        let _back = OwnRedis::start(port);
        let back_at = Instant::now();
        phase.store(BACK, Ordering::SeqCst);
        wait_for("decisions to recover", Duration::from_secs(5), || {
            recovered.lock().unwrap().is_some()
        });
        stop.store(true, Ordering::Relaxed);
        let waited = recovered.lock().unwrap().unwrap() - back_at;
        eprintln!("recovered {waited:?} after Redis listened again, under load");
        assert!(
            waited < Duration::from_secs(1),
            "recovered only after {waited:?}"
        );
        assert_eq!(a.get("/health/ready").status, 200);
    });
    let seen = seen.into_inner().unwrap();
    let count = |f: &dyn Fn(&Call) -> bool| seen.iter().filter(|c| f(c)).count();
    let deny = Some("deny".to_owned());
    let allow = Some("allow".to_owned());
    assert!(
        count(&|c| c.sent == BEFORE && c.answered == BEFORE) > 10,
        "too little load"
    );
    assert_eq!(
        count(&|c| c.sent == BEFORE && c.answered == BEFORE && c.verdict != deny),
        0,
        "a tainted session's send was not denied before the outage"
    );
    let during = count(&|c| c.sent == GONE && c.answered == GONE);
    assert!(during > 10, "too little load during the outage: {during}");
    assert_eq!(
        count(&|c| c.sent == GONE && c.answered == GONE && c.status != 503),
        0,
        "a call during the outage was answered otherwise than 503"
    );
    assert_eq!(
        count(&|c| c.answered == GONE && c.verdict == allow),
        0,
        "a send in a tainted session was allowed while Redis was gone"
    );
    assert!(a.metric("warden_state_failures_total{mode=\"closed\"}") >= during as f64);
    let log = std::fs::read_to_string(cluster.path("a.log")).unwrap();
    assert!(!log.contains(&format!("127.0.0.1:{port}")), "{log}");
}

/// `state_fail_mode: open`: with Redis gone, decisions go on without their sessions (a taint
/// set before does not apply), counted as `open` failures and logged; the rate limit lets
/// requests through uncounted.
#[test]
fn failing_open_decides_without_the_session_while_redis_is_gone() {
    let port = free_port();
    let mut redis = OwnRedis::start(port);
    let cluster = Cluster::new(
        &format!("redis://127.0.0.1:{}", redis.port),
        "redis_timeout_ms: 200\nstate_fail_mode: open\n",
    );
    let config = cluster.path("warden.yaml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "rate_limit: { per_second: 0 }",
        "rate_limit: { per_second: 1000 }",
    );
    std::fs::write(&config, text).unwrap();
    let key = cluster.key("support-agent");
    let a = cluster.start("a");
    assert_eq!(
        decision(&a, Some(&key), &call("crm.read_customer", "s")),
        "allow"
    );
    assert_eq!(decision(&a, Some(&key), &call("send_email", "s")), "deny");
    redis.stop();
    assert_eq!(decision(&a, Some(&key), &call("send_email", "s")), "allow");
    assert!(a.metric("warden_state_failures_total{mode=\"open\"}") >= 2.0);
    // The log is written out every 20 ms.
    wait_for("the fail-open log line", Duration::from_secs(5), || {
        std::fs::read_to_string(cluster.path("a.log"))
            .unwrap()
            .contains("fail open")
    });
}

#[test]
fn failed_authentications_add_up_across_instances() {
    let cluster = Cluster::new(
        &redis_url(),
        "auth_failures: { max_failures: 4, window_secs: 60 }\n\
         client_address_header: x-forwarded-for\n",
    );
    let key = cluster.key("support-agent");
    let (a, b) = (cluster.start("a"), cluster.start("b"));
    let body = serde_json::to_vec(&call("send_email", "s")).unwrap();
    let ask = |server: &Server, key: &str| {
        let headers = [
            ("content-type", "application/json"),
            ("x-api-key", key),
            ("x-forwarded-for", "192.0.2.44"),
        ];
        server
            .request("POST", "/v1/decide", &headers, Some(&body))
            .status
    };
    // Two guesses on each instance: neither saw four, together they did.
    for server in [&a, &a, &b] {
        assert_eq!(ask(server, "wdn_guess"), 401);
    }
    assert_eq!(ask(&b, "wdn_guess"), 401);
    assert_eq!(ask(&b, &key), 429, "the fourth failure, on B, locks B");
    // A learns at the address's next failure there, whatever the count it saw itself.
    assert_eq!(ask(&a, "wdn_guess"), 401);
    assert_eq!(ask(&a, &key), 429);
}
