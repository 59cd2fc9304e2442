//! PostgreSQL, for many instances: tenants and API keys (hashes only, revoked by a timestamp,
//! every change an event), behind the same [`KeyStore`] trait as the key file; and policies,
//! every pushed version kept with one active per name.
//!
//! The schema is in `migrations/`, embedded in the binary: [`Database::migrate`] applies what is
//! missing (`warden migrate`), under an advisory lock so two instances never apply one twice,
//! and [`Database::check_schema`] refuses a database that is behind. Every change to the keys
//! sends a `NOTIFY warden_keys`, every policy push or activation a `NOTIFY warden_policies`,
//! which [`Database::listen`] turns into a callback: each daemon reloads at once, so a
//! revocation or a pushed policy reaches every instance well within a second.
//!
//! Each call runs as a task on the runtime the database was connected on (as with Redis), so a
//! caller may await it from any thread or park on it.

use std::sync::Arc;

use tokio_postgres::{AsyncMessage, Client, NoTls};
use warden_core::state::{KeyRecord, KeyRole, KeyStore, StoreCall, StoreError};
use warden_proof::MacKey;

/// The migrations, in order: (version, SQL).
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_tenants_and_keys.sql")),
    (2, include_str!("../migrations/0002_policies.sql")),
    (3, include_str!("../migrations/0003_auth_events.sql")),
    (4, include_str!("../migrations/0004_integrity.sql")),
    (5, include_str!("../migrations/0005_key_roles.sql")),
];

/// The channel every key change is announced on.
pub const KEYS_CHANNEL: &str = "warden_keys";

/// The channel every change to a tenant (owner, MCP upstream) is announced on.
pub const TENANTS_CHANNEL: &str = "warden_tenants";

/// A tenant as the database keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// Its name (what keys name).
    pub name: String,
    /// Who answers for it (free text: a team, an address).
    pub owner: Option<String>,
    /// The MCP server its agents reach through the daemon's `/mcp` route.
    pub mcp_upstream: Option<String>,
    /// When it was created (Unix seconds).
    pub created_at: i64,
    /// When one of its keys last authenticated (Unix seconds), as far as recorded.
    pub last_used_at: Option<i64>,
}

/// The channel every policy push or activation is announced on.
pub const POLICIES_CHANNEL: &str = "warden_policies";

/// How a stored policy is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyFormat {
    /// A Warden policy (YAML or JSON).
    Warden,
    /// A Rego module (served through the OPA Data API).
    Rego,
}

impl PolicyFormat {
    fn as_str(self) -> &'static str {
        match self {
            Self::Warden => "warden",
            Self::Rego => "rego",
        }
    }
}

/// One version of a policy kept in the database.
#[derive(Clone, Debug)]
pub struct StoredPolicy {
    /// The policy's name (what keys name).
    pub name: String,
    /// Its version number, from 1, one more per push.
    pub version: i32,
    /// How `source` is written.
    pub format: PolicyFormat,
    /// The policy as pushed.
    pub source: String,
    /// Hex SHA-256 of `source`, written at push: a mismatch on load means the row was changed
    /// behind Warden's back, and the load fails.
    pub sha256: String,
    /// Whether it is the version in force.
    pub active: bool,
    /// When it was pushed (Unix seconds).
    pub pushed_at: i64,
}

impl StoredPolicy {
    /// Whether `source` still hashes to `sha256`.
    pub fn intact(&self) -> bool {
        sha256_hex(&self.source) == self.sha256
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn stored_policy(row: &tokio_postgres::Row) -> StoredPolicy {
    StoredPolicy {
        name: row.get(0),
        version: row.get(1),
        format: if row.get::<_, &str>(2) == "rego" {
            PolicyFormat::Rego
        } else {
            PolicyFormat::Warden
        },
        source: row.get(3),
        sha256: row.get(4),
        active: row.get(5),
        pushed_at: row.get(6),
    }
}

const POLICY_COLUMNS: &str = "p.name, p.version, p.format, p.source, p.sha256,
     coalesce(a.version = p.version, false), extract(epoch FROM p.pushed_at)::bigint, p.mac
     FROM warden_policies p LEFT JOIN warden_active_policies a ON a.name = p.name";

/// Any number that names Warden's migration lock among the database's advisory locks.
const MIGRATION_LOCK: i64 = 0x5741_5244_454e; // "WARDEN"

/// A PostgreSQL failure as a store error: what failed and the server's message class, never a
/// parameter (a key hash) or the URL.
fn store_error(what: &str, e: &tokio_postgres::Error) -> StoreError {
    let detail = match e.code() {
        Some(code) => format!("SQLSTATE {}", code.code()),
        None if e.is_closed() => "connection closed".to_owned(),
        None => "unreachable".to_owned(),
    };
    StoreError::new(format!("postgres {what}: {detail}"))
}

/// Tenants and API keys in PostgreSQL (see the module documentation).
pub struct Database {
    client: Arc<tokio::sync::Mutex<Client>>,
    runtime: tokio::runtime::Handle,
    url: String,
    /// The key of the rows' HMACs, when integrity is on (see [`Database::with_integrity_key`]).
    integrity: Option<Arc<MacKey>>,
}

/// What a key row's HMAC covers: every field that grants access.
fn key_mac_message(record: &KeyRecord) -> Vec<u8> {
    let mut message = format!(
        "warden-key\x1f{}\x1f{}\x1f{}\x1f{}",
        record.id,
        record.sha256,
        record.tenant,
        record.policy.as_deref().unwrap_or("")
    );
    // The role grants access too; an agent key's message is as it was before roles, so rows
    // sealed then still verify, and an agent row changed to admin around Warden does not.
    if record.role != KeyRole::Agent {
        message.push('\x1f');
        message.push_str(record.role.as_str());
    }
    message.into_bytes()
}

/// What a policy row's HMAC covers.
fn policy_mac_message(name: &str, version: i32, format: PolicyFormat, sha256: &str) -> Vec<u8> {
    format!(
        "warden-policy\x1f{name}\x1f{version}\x1f{}\x1f{sha256}",
        format.as_str()
    )
    .into_bytes()
}

fn tag(key: Option<&MacKey>, message: &[u8]) -> Result<Option<String>, StoreError> {
    key.map(|key| {
        key.tag(message)
            .map(hex::encode)
            .map_err(|e| StoreError::new(format!("integrity key: {e}")))
    })
    .transpose()
}

/// Whether `mac` (hex) is `key`'s tag of `message`; a missing or malformed one is not.
fn verifies(key: &MacKey, message: &[u8], mac: Option<&str>) -> bool {
    mac.and_then(|m| hex::decode(m).ok())
        .is_some_and(|tag| key.check(message, &tag).unwrap_or(false))
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
}

async fn open(
    url: &str,
) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<String>), StoreError> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| store_error("connect", &e))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        // Nobody listens on this connection: notifications are not needed.
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %store_error("connection", &e), "database connection ended");
                    break;
                }
                None => break,
            }
        }
    });
    Ok((client, rx))
}

/// Replaces a connection the server closed (a restart, a failover, a terminated backend) with
/// a new one, so that a call after an outage works without restarting the daemon.
async fn reopen_if_closed(
    client: &tokio::sync::Mutex<Client>,
    url: &str,
) -> Result<(), StoreError> {
    let mut client = client.lock().await;
    if client.is_closed() {
        let (fresh, _) = open(url).await?;
        *client = fresh;
        tracing::info!("database connection reopened");
    }
    Ok(())
}

impl Database {
    /// Connects to `url` (`postgres://user[:password]@host:port/db`; TLS is not built in). Must
    /// be called on a Tokio runtime, which then runs every call.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (client, _) = open(url).await?;
        Ok(Self {
            client: Arc::new(tokio::sync::Mutex::new(client)),
            runtime: tokio::runtime::Handle::current(),
            url: url.to_owned(),
            integrity: None,
        })
    }

    /// Turns integrity on: every key and policy written carries an HMAC-SHA256 with `key`,
    /// and a row read back whose HMAC does not verify (written around Warden, or before
    /// integrity was on) is refused: a key row is left out (it authenticates nothing, and is
    /// logged), a policy row fails the load. Someone who can write to the database but does not
    /// hold `key` can then neither add a key nor change a policy.
    pub fn with_integrity_key(mut self, key: MacKey) -> Self {
        self.integrity = Some(Arc::new(key));
        self
    }

    /// Runs `work` with the client on the database's runtime.
    fn run<'a, T, F, Fut>(&'a self, what: &'static str, work: F) -> StoreCall<'a, T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<tokio::sync::Mutex<Client>>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        let client = Arc::clone(&self.client);
        let url = self.url.clone();
        let task = self.runtime.spawn(async move {
            reopen_if_closed(&client, &url).await?;
            work(client).await.map_err(|e| store_error(what, &e))
        });
        StoreCall::pending(async move {
            match task.await {
                Ok(answer) => answer,
                Err(_) => Err(StoreError::new(format!(
                    "postgres {what}: the task was stopped"
                ))),
            }
        })
    }

    /// [`Self::run`] for work whose failures are already store errors.
    fn run_checked<'a, T, F, Fut>(&'a self, what: &'static str, work: F) -> StoreCall<'a, T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<tokio::sync::Mutex<Client>>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let client = Arc::clone(&self.client);
        let url = self.url.clone();
        let task = self.runtime.spawn(async move {
            reopen_if_closed(&client, &url).await?;
            work(client).await
        });
        StoreCall::pending(async move {
            match task.await {
                Ok(answer) => answer,
                Err(_) => Err(StoreError::new(format!(
                    "postgres {what}: the task was stopped"
                ))),
            }
        })
    }

    /// Applies the migrations the database lacks; answers the versions applied now.
    pub fn migrate(&self) -> StoreCall<'_, Vec<i32>> {
        self.run("migrate", |client| async move {
            let mut client = client.lock().await;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS warden_migrations (
                     version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await?;
            let mut applied = Vec::new();
            for (version, sql) in MIGRATIONS {
                let done = tx
                    .query_opt(
                        "SELECT 1 FROM warden_migrations WHERE version = $1",
                        &[version],
                    )
                    .await?
                    .is_some();
                if !done {
                    tx.batch_execute(sql).await?;
                    tx.execute(
                        "INSERT INTO warden_migrations (version) VALUES ($1)",
                        &[version],
                    )
                    .await?;
                    applied.push(*version);
                }
            }
            tx.commit().await?;
            Ok(applied)
        })
    }

    /// Creates tenant `name` or changes it: `owner` and `mcp_upstream` are set when given
    /// (`Some(None)` clears one), and the change is announced.
    pub fn set_tenant(
        &self,
        name: &str,
        owner: Option<Option<String>>,
        mcp_upstream: Option<Option<String>>,
    ) -> StoreCall<'_, ()> {
        let name = name.to_owned();
        self.run("set tenant", move |client| async move {
            let mut client = client.lock().await;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO warden_tenants (name) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&name],
            )
            .await?;
            if let Some(owner) = owner {
                tx.execute(
                    "UPDATE warden_tenants SET owner = $2 WHERE name = $1",
                    &[&name, &owner],
                )
                .await?;
            }
            if let Some(upstream) = mcp_upstream {
                tx.execute(
                    "UPDATE warden_tenants SET mcp_upstream = $2 WHERE name = $1",
                    &[&name, &upstream],
                )
                .await?;
            }
            tx.execute(
                "SELECT pg_notify($1, current_schema() || ':' || $2)",
                &[&TENANTS_CHANNEL, &name],
            )
            .await?;
            tx.commit().await
        })
    }

    /// Every tenant, by name.
    pub fn tenants(&self) -> StoreCall<'_, Vec<Tenant>> {
        self.run("list tenants", |client| async move {
            let rows = client
                .lock()
                .await
                .query(
                    "SELECT name, owner, mcp_upstream, extract(epoch FROM created_at)::bigint,
                            extract(epoch FROM last_used_at)::bigint
                     FROM warden_tenants ORDER BY name",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| Tenant {
                    name: row.get(0),
                    owner: row.get(1),
                    mcp_upstream: row.get(2),
                    created_at: row.get(3),
                    last_used_at: row.get(4),
                })
                .collect())
        })
    }

    /// A value that changes whenever the keys, the active policies or the tenants change: the
    /// last key event, the last activation and a digest of the tenants. A daemon compares it now and then, in case a
    /// notification was lost.
    pub fn change_marker(&self) -> StoreCall<'_, String> {
        self.run("change marker", |client| async move {
            let row = client
                .lock()
                .await
                .query_one(
                    "SELECT (SELECT coalesce(max(seq), 0) FROM warden_key_events)::text || '/' ||
                            (SELECT coalesce(max(activated_at)::text, '') FROM warden_active_policies)
                            || '/' ||
                            (SELECT coalesce(md5(string_agg(name || '|' || coalesce(owner, '')
                                 || '|' || coalesce(mcp_upstream, ''), ',' ORDER BY name)), '')
                             FROM warden_tenants)",
                    &[],
                )
                .await?;
            Ok(row.get(0))
        })
    }

    /// One trivial query: whether the database answers.
    pub fn ping(&self) -> StoreCall<'_, ()> {
        self.run("ping", |client| async move {
            client
                .lock()
                .await
                .simple_query("SELECT 1")
                .await
                .map(|_| ())
        })
    }

    /// Refuses a database whose schema is behind this binary's (run `warden migrate`).
    pub fn check_schema(&self) -> StoreCall<'_, ()> {
        let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
        let call = self.run("schema check", |client| async move {
            let client = client.lock().await;
            let exists = client
                .query_one("SELECT to_regclass('warden_migrations') IS NOT NULL", &[])
                .await?
                .get::<_, bool>(0);
            if !exists {
                return Ok(0);
            }
            client
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM warden_migrations",
                    &[],
                )
                .await
                .map(|row| row.get::<_, i32>(0))
        });
        StoreCall::pending(async move {
            let version = call.await?;
            if version < latest {
                return Err(StoreError::new(format!(
                    "the database schema is at version {version}, this warden needs {latest}: run `warden migrate`"
                )));
            }
            Ok(())
        })
    }

    /// Stores `source` as the next version of policy `name` and makes it the active one, in one
    /// transaction, and announces it; answers the new version. The caller validates `source`
    /// first (a daemon refuses a load with a policy that does not compile, and keeps its last).
    pub fn push_policy(
        &self,
        name: &str,
        format: PolicyFormat,
        source: &str,
    ) -> StoreCall<'_, i32> {
        let (name, source) = (name.to_owned(), source.to_owned());
        let sha256 = sha256_hex(&source);
        let integrity = self.integrity.clone();
        self.run_checked("push policy", move |client| async move {
            let pg = |e: tokio_postgres::Error| store_error("push policy", &e);
            let mut client = client.lock().await;
            let tx = client.transaction().await.map_err(pg)?;
            // One pusher per name at a time: the next version number is taken under the lock.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('warden_policies'), hashtext($1))",
                &[&name],
            )
            .await
            .map_err(pg)?;
            let version: i32 = tx
                .query_one(
                    "SELECT coalesce(max(version), 0) + 1 FROM warden_policies WHERE name = $1",
                    &[&name],
                )
                .await
                .map_err(pg)?
                .get(0);
            let mac = tag(
                integrity.as_deref(),
                &policy_mac_message(&name, version, format, &sha256),
            )?;
            tx.execute(
                "INSERT INTO warden_policies (name, version, format, source, sha256, mac)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&name, &version, &format.as_str(), &source, &sha256, &mac],
            )
            .await
            .map_err(pg)?;
            activate(&tx, &name, version).await.map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(version)
        })
    }

    /// Makes `version` of policy `name` the active one (a rollback or a roll forward) and
    /// announces it; answers false when there is no such version.
    pub fn activate_policy(&self, name: &str, version: i32) -> StoreCall<'_, bool> {
        let name = name.to_owned();
        self.run("activate policy", move |client| async move {
            let mut client = client.lock().await;
            let tx = client.transaction().await?;
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM warden_policies WHERE name = $1 AND version = $2",
                    &[&name, &version],
                )
                .await?
                .is_some();
            if exists {
                activate(&tx, &name, version).await?;
            }
            tx.commit().await?;
            Ok(exists)
        })
    }

    /// The active version of every policy, by name. With integrity on, an active version
    /// whose HMAC does not verify is an error: the caller keeps the policies it has.
    pub fn active_policies(&self) -> StoreCall<'_, Vec<StoredPolicy>> {
        let integrity = self.integrity.clone();
        let call = self.run("load policies", |client| async move {
            let client = client.lock().await;
            let rows = client
                .query(
                    &format!("SELECT {POLICY_COLUMNS} WHERE a.version = p.version ORDER BY p.name"),
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| (stored_policy(row), row.get::<_, Option<String>>(7)))
                .collect::<Vec<_>>())
        });
        StoreCall::pending(async move {
            let rows = call.await?;
            let mut policies = Vec::with_capacity(rows.len());
            for (policy, mac) in rows {
                if let Some(key) = integrity.as_deref() {
                    let message = policy_mac_message(
                        &policy.name,
                        policy.version,
                        policy.format,
                        &policy.sha256,
                    );
                    if !verifies(key, &message, mac.as_deref()) {
                        return Err(StoreError::new(format!(
                            "policy `{}` version {} in the database does not carry a valid \
                             integrity MAC (written around warden, or before \
                             database_integrity_key was set); refusing it",
                            policy.name, policy.version
                        )));
                    }
                }
                policies.push(policy);
            }
            Ok(policies)
        })
    }

    /// Every version of policy `name`, oldest first.
    pub fn policy_history(&self, name: &str) -> StoreCall<'_, Vec<StoredPolicy>> {
        let name = name.to_owned();
        self.run("policy history", move |client| async move {
            let client = client.lock().await;
            let rows = client
                .query(
                    &format!("SELECT {POLICY_COLUMNS} WHERE p.name = $1 ORDER BY p.version"),
                    &[&name],
                )
                .await?;
            Ok(rows.iter().map(stored_policy).collect())
        })
    }

    /// Calls `on_change` whenever the keys, the active policies or a tenant change (from any
    /// instance), on a connection of its
    /// own (reconnected when it drops, then `on_change` once, for what was missed meanwhile).
    /// Runs until the runtime stops.
    pub fn listen(&self, on_change: Arc<dyn Fn() + Send + Sync>) {
        let url = self.url.clone();
        self.runtime.spawn(async move {
            let mut first = true;
            loop {
                match open(&url).await {
                    Ok((client, mut notes)) => {
                        // Notifications are per database; the payload starts with the schema
                        // of the change, so deployments in other schemas are not heard.
                        let schema = client
                            .query_one("SELECT current_schema()", &[])
                            .await
                            .map(|row| format!("{}:", row.get::<_, &str>(0)));
                        let listening = client
                            .batch_execute(&format!(
                                "LISTEN {KEYS_CHANNEL}; LISTEN {POLICIES_CHANNEL}; \
                                 LISTEN {TENANTS_CHANNEL}"
                            ))
                            .await;
                        if let (Ok(schema), Ok(())) = (schema, listening) {
                            if !first {
                                on_change();
                            }
                            first = false;
                            while let Some(payload) = notes.recv().await {
                                if payload.starts_with(&schema) {
                                    on_change();
                                }
                            }
                        }
                        tracing::warn!("database notifications stopped; reconnecting");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot listen for key changes; retrying"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        });
    }
}

/// One authentication attempt on a daemon (never the key that was presented).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthEvent {
    /// When (Unix milliseconds).
    pub at_ms: i64,
    /// `success`, `failure` or `locked_out`.
    pub outcome: &'static str,
    /// The key's id, on a success.
    pub key_id: Option<String>,
    /// The key's tenant, on a success.
    pub tenant: Option<String>,
    /// The client's address.
    pub remote_addr: Option<String>,
    /// The client's `User-Agent` (truncated by the caller).
    pub user_agent: Option<String>,
}

impl Database {
    /// Stores `events` in one statement, and a success's time as its tenant's `last_used_at`.
    pub fn record_auth_events(&self, events: Vec<AuthEvent>) -> StoreCall<'_, ()> {
        self.run("record auth events", move |client| async move {
            let client = client.lock().await;
            let at: Vec<f64> = events.iter().map(|e| e.at_ms as f64 / 1000.0).collect();
            let outcome: Vec<&str> = events.iter().map(|e| e.outcome).collect();
            let key_id: Vec<Option<&str>> = events.iter().map(|e| e.key_id.as_deref()).collect();
            let tenant: Vec<Option<&str>> = events.iter().map(|e| e.tenant.as_deref()).collect();
            let addr: Vec<Option<&str>> = events.iter().map(|e| e.remote_addr.as_deref()).collect();
            let agent: Vec<Option<&str>> = events.iter().map(|e| e.user_agent.as_deref()).collect();
            client
                .execute(
                    "INSERT INTO warden_auth_events
                         (at, outcome, key_id, tenant, remote_addr, user_agent)
                     SELECT to_timestamp(a), o, k, t, r, u
                     FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::text[]) AS e(a, o, k, t, r, u)",
                    &[&at, &outcome, &key_id, &tenant, &addr, &agent],
                )
                .await?;
            client
                .execute(
                    "UPDATE warden_tenants w SET last_used_at = to_timestamp(l.at)
                     FROM (SELECT t, max(a) AS at
                           FROM unnest($1::float8[], $2::text[]) AS e(a, t)
                           WHERE t IS NOT NULL GROUP BY t) l
                     WHERE w.name = l.t",
                    &[&at, &tenant],
                )
                .await?;
            Ok(())
        })
    }

    /// The authentication events of the last `within_secs` seconds, newest first, at most
    /// `limit` (for operators and tests).
    pub fn recent_auth_events(
        &self,
        within_secs: i64,
        limit: i64,
    ) -> StoreCall<'_, Vec<AuthEvent>> {
        self.run("read auth events", move |client| async move {
            let client = client.lock().await;
            let rows = client
                .query(
                    "SELECT (extract(epoch FROM at) * 1000)::bigint, outcome, key_id, tenant,
                            remote_addr, user_agent
                     FROM warden_auth_events
                     WHERE at > now() - make_interval(secs => $1::float8)
                     ORDER BY seq DESC LIMIT $2",
                    &[&(within_secs as f64), &limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| AuthEvent {
                    at_ms: row.get(0),
                    outcome: match row.get::<_, &str>(1) {
                        "success" => "success",
                        "locked_out" => "locked_out",
                        _ => "failure",
                    },
                    key_id: row.get(2),
                    tenant: row.get(3),
                    remote_addr: row.get(4),
                    user_agent: row.get(5),
                })
                .collect())
        })
    }
}

/// Makes `version` the active one of `name` and announces it, inside `tx`.
async fn activate(
    tx: &tokio_postgres::Transaction<'_>,
    name: &str,
    version: i32,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO warden_active_policies (name, version) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET version = $2, activated_at = now()",
        &[&name, &version],
    )
    .await?;
    tx.execute(
        "SELECT pg_notify($1, current_schema() || ':' || $2)",
        &[&POLICIES_CHANNEL, &name],
    )
    .await?;
    Ok(())
}

impl KeyStore for Database {
    /// The keys not revoked. With integrity on, a row whose HMAC does not verify is left out
    /// and logged (by id only): it authenticates nothing, and one forged row cannot stop the
    /// others (a revocation) from loading.
    fn list(&self) -> StoreCall<'_, Vec<KeyRecord>> {
        let integrity = self.integrity.clone();
        self.run("list keys", |client| async move {
            let client = client.lock().await;
            let rows = client
                .query(
                    "SELECT id, tenant, policy, sha256, extract(epoch FROM created_at)::bigint,
                            mac, role
                     FROM warden_api_keys WHERE revoked_at IS NULL ORDER BY seq",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .filter_map(|row| {
                    let role: String = row.get(6);
                    let Some(role) = KeyRole::parse(&role) else {
                        // The column's CHECK keeps other values out; a row that has one anyway
                        // grants nothing.
                        tracing::error!(key_id = %row.get::<_, String>(0), "an API key row with an unknown role is refused");
                        return None;
                    };
                    let record = KeyRecord {
                        id: row.get(0),
                        tenant: row.get(1),
                        policy: row.get(2),
                        sha256: row.get(3),
                        created: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
                        role,
                    };
                    let mac: Option<String> = row.get(5);
                    match integrity.as_deref() {
                        Some(key) if !verifies(key, &key_mac_message(&record), mac.as_deref()) => {
                            tracing::error!(
                                key_id = %record.id,
                                "an API key row without a valid integrity MAC is refused"
                            );
                            None
                        }
                        _ => Some(record),
                    }
                })
                .collect())
        })
    }

    fn insert<'a>(&'a self, record: &'a KeyRecord) -> StoreCall<'a, bool> {
        let record = record.clone();
        let mac = match tag(self.integrity.as_deref(), &key_mac_message(&record)) {
            Ok(mac) => mac,
            Err(e) => return StoreCall::ready(Err(e)),
        };
        self.run("insert key", move |client| async move {
            let mut client = client.lock().await;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO warden_tenants (name) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&record.tenant],
            )
            .await?;
            let created = i64::try_from(record.created).unwrap_or(i64::MAX) as f64;
            let prefix = record.id.get(..8).unwrap_or(&record.id);
            let added = tx
                .execute(
                    "INSERT INTO warden_api_keys
                         (id, sha256, prefix, tenant, policy, created_at, mac, role)
                     VALUES ($1, $2, $3, $4, $5, to_timestamp($6), $7, $8)
                     ON CONFLICT DO NOTHING",
                    &[
                        &record.id,
                        &record.sha256,
                        &prefix,
                        &record.tenant,
                        &record.policy,
                        &created,
                        &mac,
                        &record.role.as_str(),
                    ],
                )
                .await?
                == 1;
            if added {
                tx.execute(
                    "INSERT INTO warden_key_events (key_id, event) VALUES ($1, 'created')",
                    &[&record.id],
                )
                .await?;
                tx.execute(
                    "SELECT pg_notify($1, current_schema() || ':' || $2)",
                    &[&KEYS_CHANNEL, &record.id],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(added)
        })
    }

    fn revoke<'a>(&'a self, id: &'a str) -> StoreCall<'a, bool> {
        let id = id.to_owned();
        self.run("revoke key", move |client| async move {
            let mut client = client.lock().await;
            let tx = client.transaction().await?;
            let revoked = tx
                .execute(
                    "UPDATE warden_api_keys SET revoked_at = now()
                     WHERE id = $1 AND revoked_at IS NULL",
                    &[&id],
                )
                .await?
                == 1;
            if revoked {
                tx.execute(
                    "INSERT INTO warden_key_events (key_id, event) VALUES ($1, 'revoked')",
                    &[&id],
                )
                .await?;
                tx.execute(
                    "SELECT pg_notify($1, current_schema() || ':' || $2)",
                    &[&KEYS_CHANNEL, &id],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(revoked)
        })
    }
}
