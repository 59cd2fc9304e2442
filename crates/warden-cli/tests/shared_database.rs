//! Many `warden serve` instances sharing their API keys and policies in PostgreSQL
//! (`database_url`), each a real daemon: `warden migrate` creates the schema once, a daemon
//! refuses an unmigrated database, a key created with `warden keys create --database-url`
//! authenticates on every instance, its revocation and a policy pushed with `warden policy push`
//! reach every instance within a second, a row changed behind Warden's back is refused, and when
//! the database drops the daemons' connections or stops (a server of the test's own) the keys
//! they hold keep authenticating and later changes still arrive. PostgreSQL is the machine's (`WARDEN_TEST_DATABASE_URL`, default
//! `postgres://root@127.0.0.1:5432/test`), each test in a schema of its own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::serve::Server;
use common::{SUPPORT_AGENT, WARDEN};
use serde_json::json;

/// A password the URL carries; trust authentication ignores it, so it only shows whether the
/// URL leaks into a log or an error.
const PASSWORD: &str = "pg-secret-7f3a";

fn base_url() -> String {
    std::env::var("WARDEN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

/// Runs `sql` on the machine's database.
fn admin(sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let base = base_url();
        let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {base}: {e} (scripts/test starts one)"));
        let driver = tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        driver.await.unwrap().unwrap();
    });
}

/// A site whose instances share a fresh schema: the policies, one `warden.yaml` naming the
/// database (with a password and an `application_name` of its own), and no key file. The
/// tests poll with keys not yet known or just revoked, which the brute-force lockout would
/// (rightly) stop: it is off here and tested in `abuse_daemon.rs` and `scale_out.rs`.
struct Site {
    dir: tempfile::TempDir,
    url: String,
    name: String,
}

impl Site {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "warden_keys_{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        admin(&format!("CREATE SCHEMA \"{name}\""));
        let base = base_url().replacen("://root@", &format!("://root:{PASSWORD}@"), 1);
        let join = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{join}options=-csearch_path%3D{name}&application_name={name}");
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("support-agent.yaml"), SUPPORT_AGENT).unwrap();
        let config = format!(
            "policies: policies\nrate_limit: {{ per_second: 0 }}\nwatch: false\n\
             state: memory\ndatabase_url: \"{url}\"\n\
             auth_failures: {{ max_failures: 0 }}\n"
        );
        std::fs::write(dir.path().join("warden.yaml"), config).unwrap();
        Self { dir, url, name }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn warden(&self, args: &[&str]) -> Output {
        Command::new(WARDEN).args(args).output().unwrap()
    }

    fn migrate(&self) -> Output {
        self.warden(&["migrate", "--database-url", &self.url])
    }

    fn start(&self, name: &str) -> Server {
        let config = self.path("warden.yaml").display().to_string();
        let args = ["--config", config.as_str(), "--listen", "127.0.0.1:0"];
        Server::spawn(
            &args,
            &self.path(&format!("{name}.port")),
            &self.path(&format!("{name}.log")),
        )
    }

    /// A new key for tenant `acme` on `support-agent`, created in the database through the
    /// configuration file.
    fn create_key(&self) -> String {
        let config = self.path("warden.yaml").display().to_string();
        let out = self.warden(&[
            "keys",
            "create",
            "--tenant",
            "acme",
            "--policy",
            "support-agent",
            "--config",
            &config,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("in the database"), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Drops every connection the daemons hold to this site's schema, as a database restart
    /// or a network cut would.
    fn drop_connections(&self) {
        admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = '{}'",
            self.name
        ));
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        admin(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn status(server: &Server, key: &str) -> u16 {
    let body =
        json!({"kind": "tool_call", "tool": "crm.read_customer", "session": "s", "args": {}});
    server.post_json("/v1/decide", Some(key), &body).status
}

/// Waits at most `limit` for `server` to answer `want` for `key`.
fn answers_within(server: &Server, key: &str, want: u16, limit: Duration) -> bool {
    within(limit, || status(server, key) == want)
}

/// Whether `done` holds within `limit` (asked every 10 ms).
fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn migrate_creates_the_schema_once_and_daemons_refuse_an_unmigrated_database() {
    let site = Site::new();
    let config = site.path("warden.yaml").display().to_string();
    let refused = Command::new(WARDEN)
        .args(["serve", "--config", &config, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("run `warden migrate`"),
        "{}",
        stderr(&refused)
    );
    assert!(!stderr(&refused).contains(PASSWORD), "{}", stderr(&refused));

    let first = site.migrate();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("applied migrations [1, 2, 3, 4, 5]"),
        "{}",
        stderr(&first)
    );
    let again = site.migrate();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("up to date"), "{}", stderr(&again));

    // No database named: a clear error, exit 2.
    let none = Command::new(WARDEN)
        .arg("migrate")
        .env_remove("WARDEN_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));
    assert!(
        stderr(&none).contains("--database-url"),
        "{}",
        stderr(&none)
    );
}

#[test]
fn a_key_works_on_every_instance_and_its_revocation_reaches_them_within_a_second() {
    let site = Site::new();
    assert!(site.migrate().status.success());
    let (a, b) = (site.start("a"), site.start("b"));
    let key = site.create_key();
    // Created after both started: each learns it from the database's notification.
    assert!(answers_within(&a, &key, 200, Duration::from_secs(1)));
    assert!(answers_within(&b, &key, 200, Duration::from_secs(1)));
    assert_eq!(status(&a, "wdn_not_a_key"), 401);
    let ready = a.get("/health/ready");
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.body["keys"], "database");
    assert_eq!(ready.body["stores"]["database"], "ok", "{}", ready.text);

    let listed = site.warden(&["keys", "list", "--database-url", &site.url]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains("\tacme\tsupport-agent"), "{listed}");
    assert!(
        !listed.contains(&key),
        "the key itself is never stored: {listed}"
    );
    let id = listed.split('\t').next().unwrap().to_owned();

    let revoked = site.warden(&["keys", "revoke", &id, "--database-url", &site.url]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(answers_within(&a, &key, 401, Duration::from_secs(1)));
    assert!(answers_within(&b, &key, 401, Duration::from_secs(1)));
    let twice = site.warden(&["keys", "revoke", &id, "--database-url", &site.url]);
    assert_eq!(twice.status.code(), Some(2), "{}", stderr(&twice));

    for server in [&a, &b] {
        let log = server.log_text();
        assert!(!log.contains(PASSWORD), "{log}");
        assert!(!log.contains(&key), "{log}");
    }
}

#[test]
fn keys_held_keep_working_while_the_database_is_gone_and_changes_arrive_after() {
    let site = Site::new();
    assert!(site.migrate().status.success());
    let old = site.create_key();
    let server = site.start("a");
    assert_eq!(status(&server, &old), 200);

    site.drop_connections();
    // The keys loaded stay in force: a dropped database is not a reason to lock users out.
    for _ in 0..20 {
        assert_eq!(status(&server, &old), 200);
    }
    // The listener reconnects and a key created afterwards still reaches the daemon.
    let new = site.create_key();
    assert!(
        answers_within(&server, &new, 200, Duration::from_secs(10)),
        "{}",
        server.log_text()
    );
    assert_eq!(status(&server, &old), 200);
    assert!(!server.log_text().contains(PASSWORD));
}

/// The file policy `support-agent` with every tool denied: what a push changes.
fn deny_all(version: &str) -> String {
    format!("warden: 1\nname: support-agent\nversion: \"{version}\"\ndefault: deny\nrules: []\n")
}

#[test]
fn a_pushed_policy_reaches_every_instance_within_a_second_and_rolls_back() {
    let site = Site::new();
    assert!(site.migrate().status.success());
    let key = site.create_key();
    let (a, b) = (site.start("a"), site.start("b"));
    assert_eq!(status(&a, &key), 200);
    let decide = |server: &Server| {
        let body =
            json!({"kind": "tool_call", "tool": "crm.read_customer", "session": "s", "args": {}});
        let reply = server.post_json("/v1/decide", Some(&key), &body);
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.body["decision"].as_str().unwrap().to_owned()
    };
    assert_eq!(decide(&a), "allow");

    let file = site.path("deny.yaml");
    std::fs::write(&file, deny_all("2")).unwrap();
    let file = file.display().to_string();
    let pushed = site.warden(&["policy", "push", &file, "--database-url", &site.url]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    assert!(stderr(&pushed).contains("version 1"), "{}", stderr(&pushed));
    for server in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(1);
        while decide(server) != "deny" {
            assert!(Instant::now() < deadline, "{}", server.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // A policy that does not compile is never pushed.
    let broken = site.path("broken.yaml");
    std::fs::write(
        &broken,
        "warden: 1\nname: support-agent\nrules: [{ id: x }]\n",
    )
    .unwrap();
    let refused = site.warden(&[
        "policy",
        "push",
        &broken.display().to_string(),
        "--database-url",
        &site.url,
    ]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));

    // Version 2 is the file's policy again; rolling back to 1 denies once more.
    std::fs::write(site.path("allow.yaml"), SUPPORT_AGENT).unwrap();
    let allow = site.path("allow.yaml").display().to_string();
    assert!(
        site.warden(&["policy", "push", &allow, "--database-url", &site.url])
            .status
            .success()
    );
    assert!(answers(&b, &decide, "allow"));
    let back = site.warden(&[
        "policy",
        "activate",
        "support-agent",
        "1",
        "--database-url",
        &site.url,
    ]);
    assert!(back.status.success(), "{}", stderr(&back));
    assert!(answers(&a, &decide, "deny"));
    assert!(answers(&b, &decide, "deny"));
    let history = site.warden(&[
        "policy",
        "history",
        "support-agent",
        "--database-url",
        &site.url,
    ]);
    let history = String::from_utf8(history.stdout).unwrap();
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert!(
        lines[0].starts_with("support-agent\tv1\twarden\tsha256:") && lines[0].ends_with("\t*")
    );
    assert!(!lines[1].ends_with('*'), "{history}");
}

/// Waits at most a second for `decide(server)` to answer `want`.
fn answers(server: &Server, decide: &dyn Fn(&Server) -> String, want: &str) -> bool {
    within(Duration::from_secs(1), || decide(server) == want)
}

#[test]
fn a_policy_row_changed_behind_wardens_back_is_refused_and_the_last_one_kept() {
    let site = Site::new();
    assert!(site.migrate().status.success());
    let key = site.create_key();
    let file = site.path("deny.yaml");
    std::fs::write(&file, deny_all("1")).unwrap();
    let pushed = site.warden(&[
        "policy",
        "push",
        &file.display().to_string(),
        "--database-url",
        &site.url,
    ]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let server = site.start("a");
    assert_eq!(status(&server, &key), 200);
    let body =
        json!({"kind": "tool_call", "tool": "crm.read_customer", "session": "s", "args": {}});
    assert_eq!(
        server.post_json("/v1/decide", Some(&key), &body).body["decision"],
        "deny"
    );

    // Someone with write access to the table turns the deny into an allow, without the hash.
    let tampered = deny_all("1").replace("default: deny", "default: allow");
    admin(&format!(
        "UPDATE \"{}\".warden_policies SET source = '{}'; SELECT pg_notify('warden_policies', '{0}:x')",
        site.name,
        tampered.replace('\'', "''")
    ));
    // A reload reads the row whether or not the NOTIFY arrives (one sent while the LISTEN
    // connection reconnects is lost, and a row changed behind Warden's back moves no marker the
    // periodic check compares).
    server.signal("HUP");
    server.wait_for("the refused reload", |s| {
        s.log_text().contains("does not match its SHA-256")
    });
    assert_eq!(
        server.post_json("/v1/decide", Some(&key), &body).body["decision"],
        "deny"
    );
    // A fresh daemon refuses to start on it.
    let config = site.path("warden.yaml").display().to_string();
    let refused = Command::new(WARDEN)
        .args(["serve", "--config", &config, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("does not match its SHA-256"),
        "{}",
        stderr(&refused)
    );
}

/// One stored authentication event: `(outcome, key_id, remote_addr, user_agent)`.
type AuthEventRow = (String, Option<String>, Option<String>, Option<String>);

/// The site's authentication events, oldest first.
fn auth_events(site: &Site) -> Vec<AuthEventRow> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&base_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        let rows = client
            .query(
                &format!(
                    "SELECT outcome, key_id, remote_addr, user_agent FROM \"{}\".warden_auth_events ORDER BY seq",
                    site.name
                ),
                &[],
            )
            .await
            .unwrap();
        drop(client);
        driver.await.unwrap().unwrap();
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    })
}

#[test]
fn authentication_events_are_stored_without_the_key_presented() {
    let site = Site::new();
    assert!(site.migrate().status.success());
    let key = site.create_key();
    let server = site.start("a");
    let body = serde_json::to_vec(
        &json!({"kind": "tool_call", "tool": "crm.read_customer", "session": "s", "args": {}}),
    )
    .unwrap();
    let ask = |key: &str| {
        let headers = [
            ("content-type", "application/json"),
            ("x-api-key", key),
            ("user-agent", "agent-sdk/2.1"),
        ];
        server
            .request("POST", "/v1/decide", &headers, Some(&body))
            .status
    };
    // Three successes in a minute are one event; each failure is one.
    for _ in 0..3 {
        assert_eq!(ask(&key), 200);
    }
    let guess = "wdn_0123456789abcdef0123456789abcdef";
    assert_eq!(ask(guess), 401);
    assert_eq!(ask(guess), 401);
    let deadline = Instant::now() + Duration::from_secs(5);
    let events = loop {
        let events = auth_events(&site);
        if events.len() >= 3 || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let listed = site.warden(&["keys", "list", "--database-url", &site.url]);
    let id = String::from_utf8(listed.stdout).unwrap();
    let id = id.split('\t').next().unwrap().to_owned();
    let ua = Some("agent-sdk/2.1".to_owned());
    let local = Some("127.0.0.1".to_owned());
    assert_eq!(
        events,
        [
            ("success".to_owned(), Some(id), local.clone(), ua.clone()),
            ("failure".to_owned(), None, local.clone(), ua.clone()),
            ("failure".to_owned(), None, local, ua),
        ]
    );
    let dump = format!("{events:?}");
    assert!(!dump.contains(guess) && !dump.contains(&key));
    // The tenant's last use is recorded.
    admin(&format!(
        "DO $$ BEGIN IF (SELECT last_used_at FROM \"{}\".warden_tenants WHERE name = 'acme') IS NULL \
         THEN RAISE EXCEPTION 'last_used_at not set'; END IF; END $$",
        site.name
    ));
}

#[test]
fn with_an_integrity_key_rows_written_around_warden_are_refused() {
    let site = Site::new();
    let mac_key = site.path("database.key");
    let made = site.warden(&["keys", "gen-mac", "--out", &mac_key.display().to_string()]);
    assert!(made.status.success(), "{}", stderr(&made));
    let config = site.path("warden.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "database_integrity_key: \"{}\"\n",
        mac_key.display()
    ));
    std::fs::write(&config, text).unwrap();
    assert!(site.migrate().status.success());
    let key = site.create_key(); // through --config: sealed with the key
    let file = site.path("deny.yaml");
    std::fs::write(&file, deny_all("1")).unwrap();
    let config = config.display().to_string();
    let pushed = site.warden(&[
        "policy",
        "push",
        &file.display().to_string(),
        "--config",
        &config,
    ]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let server = site.start("a");
    assert_eq!(status(&server, &key), 200);

    // Someone with write access to the database adds a key of their own, hashed correctly.
    let forged = format!("wdn_{}", "ab".repeat(32));
    admin(&format!(
        "SET search_path = \"{0}\";
         INSERT INTO warden_api_keys (id, sha256, prefix, tenant, policy, created_at)
         SELECT left(h, 12), h, left(h, 8), 'acme', 'support-agent', now()
         FROM (SELECT encode(sha256('{forged}'::bytea), 'hex') AS h) k;
         SELECT pg_notify('warden_keys', '{0}:forged')",
        site.name
    ));
    server.wait_for("the forged row refused", |s| {
        s.log_text()
            .contains("without a valid integrity MAC is refused")
    });
    assert_eq!(status(&server, &forged), 401);
    assert_eq!(status(&server, &key), 200, "the sealed key still works");

    // And a policy version activated around `warden policy push`.
    admin(&format!(
        "SET search_path = \"{0}\";
         INSERT INTO warden_policies (name, version, format, source, sha256)
         SELECT name, 2, format, replace(source, 'default: deny', 'default: allow'),
                encode(sha256(convert_to(replace(source, 'default: deny', 'default: allow'), 'UTF8')), 'hex')
         FROM warden_policies WHERE version = 1;
         UPDATE warden_active_policies SET version = 2;
         SELECT pg_notify('warden_policies', '{0}:forged')",
        site.name
    ));
    server.wait_for("the forged policy refused", |s| {
        s.log_text()
            .contains("does not carry a valid integrity MAC")
    });
    let body =
        json!({"kind": "tool_call", "tool": "crm.read_customer", "session": "s", "args": {}});
    assert_eq!(
        server.post_json("/v1/decide", Some(&key), &body).body["decision"],
        "deny",
        "the last good policy stays in force"
    );
    let log = server.log_text();
    assert!(!log.contains(&forged) && !log.contains(&key));
}

#[test]
fn a_change_whose_notification_was_lost_is_picked_up_by_the_periodic_check() {
    let site = Site::new();
    let config = site.path("warden.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("database_refresh_secs: 1\n");
    std::fs::write(&config, text).unwrap();
    assert!(site.migrate().status.success());
    let server = site.start("a");
    // A key added, with its event, but no NOTIFY: as if the notification never arrived.
    let key = format!("wdn_{}", "cd".repeat(32));
    admin(&format!(
        "SET search_path = \"{0}\";
         INSERT INTO warden_tenants (name) VALUES ('acme');
         INSERT INTO warden_api_keys (id, sha256, prefix, tenant, policy, created_at)
         SELECT left(h, 12), h, left(h, 8), 'acme', 'support-agent', now()
         FROM (SELECT encode(sha256('{key}'::bytea), 'hex') AS h) k;
         INSERT INTO warden_key_events (key_id, event) VALUES ('x', 'created')",
        site.name
    ));
    assert!(
        answers_within(&server, &key, 200, Duration::from_secs(5)),
        "{}",
        server.log_text()
    );
    server.wait_for("the periodic check's reload logged", |s| {
        s.log_text()
            .contains("database changed without a notification")
    });
}

/// A minimal MCP server over HTTP on loopback: answers every POST with one `tools/call` result
/// (HTTP/1.1, one request per connection) and counts them.
struct FakeMcp {
    url: String,
    hits: std::sync::Arc<AtomicUsize>,
}

impl FakeMcp {
    fn start() -> Self {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&hits);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let reply = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}"#;
                // A client that hung up misses its answer; the fake counts the request anyway.
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        Self { url, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A `tools/call` through the tenant route `/mcp` of `server`; answers the HTTP status.
fn mcp_call(server: &Server, key: &str) -> u16 {
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"crm.read_customer","arguments":{}}}"#;
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("x-api-key", key),
    ];
    server.request("POST", "/mcp", &headers, Some(body)).status
}

#[test]
fn a_tenants_mcp_upstream_is_set_and_changed_for_every_instance_within_a_second() {
    let site = Site::new();
    assert!(site.migrate().status.success());
    let key = site.create_key();
    let (one, two) = (FakeMcp::start(), FakeMcp::start());
    let (a, b) = (site.start("a"), site.start("b"));
    // No upstream set yet: a JSON-RPC error, nothing forwarded.
    assert_eq!(mcp_call(&a, &key), 404);
    let set = |url: &str| {
        let out = site.warden(&[
            "tenants",
            "set",
            "acme",
            "--owner",
            "platform-team",
            "--mcp-upstream",
            url,
            "--database-url",
            &site.url,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    set(&one.url);
    for server in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(1);
        while mcp_call(server, &key) != 200 {
            assert!(Instant::now() < deadline, "{}", server.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let (before_one, before_two) = (one.hits(), two.hits());
    assert!(before_one >= 2 && before_two == 0);

    set(&two.url);
    for server in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let hits = two.hits();
            assert_eq!(mcp_call(server, &key), 200);
            if two.hits() > hits {
                break;
            }
            assert!(Instant::now() < deadline, "{}", server.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let listed = site.warden(&["tenants", "list", "--database-url", &site.url]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.starts_with(&format!("acme\tplatform-team\t{}\t", two.url)),
        "{listed}"
    );
    // A bad URL is refused before it reaches the database.
    let bad = site.warden(&[
        "tenants",
        "set",
        "acme",
        "--mcp-upstream",
        "ftp://x",
        "--database-url",
        &site.url,
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

/// A PostgreSQL server of the test's own (initdb'd in a temporary directory, on a free port),
/// for the test that stops it: the machine's serves every other test.
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl OwnPostgres {
    /// Runs `command` as the user PostgreSQL runs as (it refuses root).
    fn run(command: &str) {
        assert!(Self::try_run(command), "{command}");
    }

    fn try_run(command: &str) -> bool {
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        let status = if root {
            Command::new("su")
                .args(["postgres", "-s", "/bin/sh", "-c", command])
                .status()
        } else {
            Command::new("sh").args(["-c", command]).status()
        };
        status.is_ok_and(|s| s.success())
    }

    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server programs (scripts/test installs them)")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").is_file())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        Command::new("chmod")
            .arg("777")
            .arg(dir.path())
            .status()
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let this = Self { dir, port, bin };
        Self::run(&format!(
            "{}/initdb -D {}/data -A trust -U root >/dev/null",
            this.bin.display(),
            this.dir.path().display()
        ));
        this.resume();
        this
    }

    fn url(&self) -> String {
        format!("postgres://root@127.0.0.1:{}/postgres", self.port)
    }

    fn resume(&self) {
        let dir = self.dir.path().display();
        Self::run(&format!(
            "{}/pg_ctl -D {dir}/data -w -l {dir}/log -o '-p {} -k {dir} -c listen_addresses=127.0.0.1' start >/dev/null",
            self.bin.display(),
            self.port
        ));
    }

    fn stop(&self) {
        Self::run(&format!(
            "{}/pg_ctl -D {}/data -w -m fast stop >/dev/null",
            self.bin.display(),
            self.dir.path().display()
        ));
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        // Already stopped is fine: only a server left running would matter.
        Self::try_run(&format!(
            "{}/pg_ctl -D {}/data -m immediate stop >/dev/null 2>&1",
            self.bin.display(),
            self.dir.path().display()
        ));
    }
}

#[test]
fn with_postgresql_stopped_keys_held_authenticate_and_changes_arrive_once_it_is_back() {
    let postgres = OwnPostgres::start();
    let url = postgres.url();
    let site = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(site.path().join("policies")).unwrap();
    std::fs::write(
        site.path().join("policies/support-agent.yaml"),
        SUPPORT_AGENT,
    )
    .unwrap();
    let config = site.path().join("warden.yaml");
    std::fs::write(
        &config,
        format!(
            "policies: policies\nrate_limit: {{ per_second: 0 }}\nwatch: false\nstate: memory\n\
             database_url: \"{url}\"\nauth_failures: {{ max_failures: 0 }}\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let warden = |args: &[&str]| Command::new(WARDEN).args(args).output().unwrap();
    assert!(
        warden(&["migrate", "--database-url", &url])
            .status
            .success()
    );
    let create = || {
        warden(&[
            "keys",
            "create",
            "--tenant",
            "acme",
            "--policy",
            "support-agent",
            "--config",
            &config,
        ])
    };
    let key = String::from_utf8(create().stdout)
        .unwrap()
        .trim()
        .to_owned();
    let server = Server::spawn(
        &["--config", config.as_str(), "--listen", "127.0.0.1:0"],
        &site.path().join("port"),
        &site.path().join("log"),
    );
    assert_eq!(status(&server, &key), 200);

    postgres.stop();
    for _ in 0..20 {
        assert_eq!(status(&server, &key), 200, "{}", server.log_text());
    }
    let ready = server.get("/health/ready");
    assert_eq!(
        ready.status, 200,
        "decisions do not need the database: {}",
        ready.text
    );
    assert_eq!(
        ready.body["stores"]["database"], "failing",
        "{}",
        ready.text
    );
    let refused = create();
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));

    postgres.resume();
    let out = create();
    assert!(out.status.success(), "{}", stderr(&out));
    let new = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        answers_within(&server, &new, 200, Duration::from_secs(10)),
        "{}",
        server.log_text()
    );
    assert_eq!(status(&server, &key), 200);
    assert_eq!(server.get("/health/ready").body["stores"]["database"], "ok");
}
