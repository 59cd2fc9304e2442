//! The `warden serve` configuration file (YAML). Every field is optional; `docs/serve.md`
//! documents each one with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateMode {
    /// In memory, persisted to a redb file by write-behind (the default).
    File,
    /// In memory only: lost on restart.
    Memory,
}

/// See [`ServeConfig::state_fail_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateFailMode {
    /// Refuse the request.
    Closed,
    /// Decide without the session; let the request through the rate limit uncounted.
    Open,
}

/// Per-key token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    /// Sustained requests per second per key (0 disables rate limiting).
    pub per_second: u32,
    /// Requests a key may send at once above the sustained rate.
    pub burst: u32,
}

/// Lockout of an address that keeps presenting bad API keys (brute-force protection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthFailureLimit {
    /// Failed authentications from one address in one window that lock it out (0 disables).
    pub max_failures: u32,
    /// The window the failures are counted in, and how long a lockout lasts, in seconds.
    pub window_secs: u64,
}

impl Default for AuthFailureLimit {
    fn default() -> Self {
        Self {
            max_failures: 20,
            window_secs: 60,
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 1000,
            burst: 2000,
        }
    }
}

/// Approvals of calls that `effect: ask` rules hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// How long an approval waits for a person, and an approved one for its call, in
    /// milliseconds (1 to [`MAX_APPROVAL_TTL_MS`]); past it, it expires (a deny).
    pub ttl_ms: u64,
    /// Approvals pending at once per tenant, at most; a held call beyond is denied.
    pub max_pending_per_tenant: usize,
    /// How long an MCP `tools/call` that needs approval waits for it, in milliseconds, before
    /// answering that it is pending; 0: answer at once. Less than `request_timeout_ms`.
    pub wait_ms: u64,
}

/// The console at `/ui` (docs/serve.md, "Console").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Whether `/ui` is served at all.
    pub enabled: bool,
    /// Decisions the live stream holds for its viewers (1 to 65536): a viewer further behind
    /// loses the oldest and is told how many.
    pub events_buffer: usize,
    /// Live streams open at once, at most (1 to 1024); one more is refused (503).
    pub max_viewers: usize,
    /// How long a console login lasts, in seconds (60 to 86400).
    pub login_ttl_secs: u64,
    /// Decisions a viewer receives whole per second, at most (10 to 100000); beyond it the
    /// stream carries counts per verdict (`skipped`), so a busy daemon does not spend its CPU
    /// on events nobody can read.
    pub live_events_per_sec: usize,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            events_buffer: 1024,
            max_viewers: 32,
            login_ttl_secs: 8 * 3600,
            live_events_per_sec: 500,
        }
    }
}

impl ConsoleConfig {
    /// Checks the bounds; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=65_536).contains(&self.events_buffer) {
            return Err(format!(
                "`console.events_buffer` must be 1 to 65536, not {}",
                self.events_buffer
            ));
        }
        if !(1..=1024).contains(&self.max_viewers) {
            return Err(format!(
                "`console.max_viewers` must be 1 to 1024, not {}",
                self.max_viewers
            ));
        }
        if !(10..=100_000).contains(&self.live_events_per_sec) {
            return Err(format!(
                "`console.live_events_per_sec` must be 10 to 100000, not {}",
                self.live_events_per_sec
            ));
        }
        if !(60..=86_400).contains(&self.login_ttl_secs) {
            return Err(format!(
                "`console.login_ttl_secs` must be 60 to 86400, not {}",
                self.login_ttl_secs
            ));
        }
        Ok(())
    }
}

/// The longest `approvals.ttl_ms`: a week.
pub const MAX_APPROVAL_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            ttl_ms: warden::state::DEFAULT_APPROVAL_TTL_MS,
            max_pending_per_tenant: warden::state::DEFAULT_MAX_PENDING_PER_TENANT,
            wait_ms: 0,
        }
    }
}

impl ApprovalConfig {
    /// Checks the limits against each other and `request_timeout_ms`; the message names the field.
    pub fn check(&self, request_timeout_ms: u64) -> Result<(), String> {
        if self.ttl_ms == 0 || self.ttl_ms > MAX_APPROVAL_TTL_MS {
            return Err(format!(
                "`approvals.ttl_ms` must be 1 to {MAX_APPROVAL_TTL_MS}, not {}",
                self.ttl_ms
            ));
        }
        if self.max_pending_per_tenant == 0 {
            return Err("`approvals.max_pending_per_tenant` must be at least 1".to_owned());
        }
        if self.wait_ms >= request_timeout_ms {
            return Err(format!(
                "`approvals.wait_ms` ({}) must be less than `request_timeout_ms` ({request_timeout_ms})",
                self.wait_ms
            ));
        }
        Ok(())
    }
}

/// The daemon's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory of policies, one per file.
    pub policies: PathBuf,
    /// The API key file (hashes only).
    pub keys_file: PathBuf,
    /// Policy for requests without a key; none: such requests get 401. `"*"`: the only policy
    /// loaded, when exactly one is.
    pub anonymous_policy: Option<String>,
    /// `file` or `memory`.
    pub state: StateMode,
    /// The session database file (with `state: file`).
    pub state_file: PathBuf,
    /// Shared state for many instances: a `redis://` URL (or `WARDEN_REDIS_URL`). When set,
    /// sessions and single-use token ids live in Redis and `state` applies to nothing else.
    pub redis_url: Option<SecretUrl>,
    /// Tenants and API keys for many instances: a `postgres://` URL (or `WARDEN_DATABASE_URL`).
    /// When set, keys live in PostgreSQL (`warden migrate` creates the schema) instead of
    /// `keys_file`, and every instance reloads them as soon as one changes.
    pub database_url: Option<SecretUrl>,
    /// A MAC key file (hex, mode 0600; `warden keys gen-mac`): every key and policy written to
    /// PostgreSQL carries an HMAC with it, and rows that do not verify are refused.
    pub database_integrity_key: Option<PathBuf>,
    /// How often (seconds) each instance checks the database for changes it was not notified
    /// of (a notification lost to a dropped connection); 0 never.
    pub database_refresh_secs: u64,
    /// Prefix of Warden's keys in Redis (several deployments may share one Redis).
    pub redis_prefix: String,
    /// Longest wait for one Redis answer in milliseconds; a slower one is a state failure.
    pub redis_timeout_ms: u64,
    /// What a request does when the state store fails: `closed` (refused, 503
    /// `state_unavailable`; the default) or `open` (decided without its session, which is left
    /// unchanged; a rate limit not counted).
    pub state_fail_mode: StateFailMode,
    /// Idle seconds after which a session is forgotten (0: never).
    pub session_ttl_secs: u64,
    /// Milliseconds between two write-behind flushes of changed sessions.
    pub flush_interval_ms: u64,
    /// Largest request body in bytes.
    pub body_limit_bytes: usize,
    /// Requests taking longer get 503 `timeout`.
    pub request_timeout_ms: u64,
    /// Requests under way at once on `/v1/*`; more get 503 `overloaded`.
    pub max_concurrency: usize,
    /// Per-key rate limit.
    pub rate_limit: RateLimit,
    /// Lockout of addresses that keep failing authentication (429 while locked out).
    pub auth_failures: AuthFailureLimit,
    /// Where the client's address is read: the connection's peer (none), or a header a proxy in
    /// front sets (`x-forwarded-for`: its last address, the one that proxy appended). Set it only
    /// behind such a proxy: a client can write any value into the header otherwise.
    pub client_address_header: Option<String>,
    /// After SIGTERM/SIGINT, how long in-flight requests may take before the process exits.
    pub shutdown_grace_ms: u64,
    /// Reload on file changes (SIGHUP always reloads).
    pub watch: bool,
    /// Quiet period before a file change is acted on.
    pub reload_debounce_ms: u64,
    /// Log one line per decision.
    pub decision_log: bool,
    /// Log filter (`RUST_LOG` syntax); `RUST_LOG` wins when set.
    pub log_level: String,
    /// Ed25519 signing key (PKCS#8 PEM) for decision tokens; none: no tokens.
    pub signing_key: Option<PathBuf>,
    /// Decision token lifetime in seconds.
    pub token_ttl: u64,
    /// The audit log; none: no audit log.
    pub audit: Option<AuditSettings>,
    /// TLS on the listener (and mutual TLS with `client_ca`); none: plain TCP.
    pub tls: Option<TlsSettings>,
    /// OpenTelemetry traces (OTLP over gRPC); off unless `otlp_endpoint` is set.
    pub telemetry: TelemetrySettings,
    /// Capture of decided requests for `warden replay`; none: off.
    pub capture: Option<CaptureSettings>,
    /// MCP Streamable HTTP upstreams, each served at `/mcp/{name}` (none by default).
    pub mcp_upstreams: Vec<warden_mcp::http::UpstreamConfig>,
    /// LLM APIs (OpenAI- or Anthropic-compatible), each served at `/llm/{name}` (none by
    /// default).
    pub llm_upstreams: Vec<LlmUpstreamConfig>,
    /// Model prices for the policies' `cost_usd` budgets, by exact model name.
    pub llm_prices: std::collections::BTreeMap<String, LlmPrice>,
    /// Threads serving requests (tokio workers), at most [`MAX_WORKERS`]; 0: one per CPU core,
    /// or `TOKIO_WORKER_THREADS` when set. Read at start only.
    pub workers: usize,
    /// Longest identifier in bytes (`session`, `principal`, `tool`, `http.method`, header,
    /// query parameter and `context` attribute names), on every decision route; longer is a
    /// 400 naming the field.
    pub max_identifier_bytes: usize,
    /// Most sessions kept (per daemon, all tenants); a new session beyond it evicts the
    /// sessions idle the longest first, counted in `warden_sessions_evicted_total`.
    pub max_sessions: usize,
    /// Most requests in one `POST /v1/decide/batch`; more is a 400.
    pub max_batch_items: usize,
    /// Open client connections at most; one beyond is closed at once (keep it below
    /// `ulimit -n`).
    pub max_connections: usize,
    /// A connection must deliver a whole request head within this many milliseconds of opening
    /// or of the first byte of a later request.
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection waiting for its next request is closed after this many
    /// milliseconds.
    pub idle_timeout_ms: u64,
    /// Envoy's external processor and authorizer (its own listener, routes and chains); none:
    /// not served.
    pub envoy: Option<warden_envoy::EnvoyConfig>,
    /// Approvals of calls that `effect: ask` rules hold.
    pub approvals: ApprovalConfig,
    /// The console at `/ui`.
    pub console: ConsoleConfig,
}

/// The most worker threads `workers` may ask for.
pub const MAX_WORKERS: usize = 1024;

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8181)),
            policies: PathBuf::from("examples"),
            keys_file: PathBuf::from(".warden/keys.json"),
            anonymous_policy: None,
            state: StateMode::File,
            state_file: PathBuf::from(".warden/sessions.redb"),
            redis_url: None,
            database_url: None,
            database_integrity_key: None,
            database_refresh_secs: 30,
            redis_prefix: "warden".to_owned(),
            redis_timeout_ms: 500,
            state_fail_mode: StateFailMode::Closed,
            session_ttl_secs: 86_400,
            flush_interval_ms: 100,
            body_limit_bytes: 2 * 1024 * 1024,
            request_timeout_ms: 5_000,
            max_concurrency: 1024,
            rate_limit: RateLimit::default(),
            auth_failures: AuthFailureLimit::default(),
            client_address_header: None,
            shutdown_grace_ms: 10_000,
            watch: true,
            reload_debounce_ms: 250,
            decision_log: true,
            log_level: "info".to_owned(),
            signing_key: None,
            token_ttl: warden_proof::DEFAULT_TTL_SECS,
            audit: None,
            tls: None,
            telemetry: TelemetrySettings::default(),
            capture: None,
            mcp_upstreams: Vec::new(),
            llm_upstreams: Vec::new(),
            llm_prices: std::collections::BTreeMap::new(),
            workers: 0,
            max_identifier_bytes: 256,
            max_sessions: 1_000_000,
            max_batch_items: 1_000,
            max_connections: 1_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            envoy: None,
            approvals: ApprovalConfig::default(),
            console: ConsoleConfig::default(),
        }
    }
}

/// The configuration file could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// What is wrong (with line and column when the YAML is invalid).
    pub message: String,
}

impl ServeConfig {
    /// Reads a YAML configuration file. Relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let error = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let mut config: ServeConfig = if text.trim().is_empty() {
            ServeConfig::default()
        } else {
            serde_saphyr::from_str(&text).map_err(|e| error(e.to_string()))?
        };
        config.rebase(path);
        Ok(config)
    }

    /// Makes the relative paths relative to the directory of the file at `path`.
    pub(crate) fn rebase(&mut self, path: &Path) {
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        for p in [
            &mut self.policies,
            &mut self.keys_file,
            &mut self.state_file,
        ]
        .into_iter()
        .chain(self.signing_key.as_mut())
        .chain(self.database_integrity_key.as_mut())
        .chain(
            self.mcp_upstreams
                .iter_mut()
                .filter_map(|upstream| upstream.ca_file.as_mut()),
        )
        .chain(
            self.llm_upstreams
                .iter_mut()
                .filter_map(|upstream| upstream.ca_file.as_mut()),
        ) {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(audit) = &mut self.audit {
            audit.rebase(base);
        }
        if let Some(capture) = &mut self.capture
            && capture.dir.is_relative()
        {
            capture.dir = base.join(&capture.dir);
        }
        if let Some(tls) = &mut self.tls {
            for p in [&mut tls.cert, &mut tls.key]
                .into_iter()
                .chain(tls.client_ca.as_mut())
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
    }

    /// Takes `WARDEN_REDIS_URL` and `WARDEN_DATABASE_URL` where the configuration names no
    /// Redis or database.
    pub fn urls_from_env(&mut self) {
        for (slot, var) in [
            (&mut self.redis_url, "WARDEN_REDIS_URL"),
            (&mut self.database_url, "WARDEN_DATABASE_URL"),
        ] {
            if slot.is_none()
                && let Ok(url) = std::env::var(var)
                && !url.is_empty()
            {
                *slot = Some(SecretUrl(url));
            }
        }
    }
}

/// A Redis or PostgreSQL URL: it may hold a password, so it is never printed (`Debug` shows the
/// scheme).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(pub String);

impl Serialize for SecretUrl {
    /// Shown as its `Debug` form (the scheme only): `warden config show` never prints it.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{self:?}"))
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.0.split_once("://").map_or("?", |(s, _)| s);
        write!(f, "{scheme}://(hidden)")
    }
}

/// The lowest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TlsVersion {
    /// TLS 1.3 only (the default).
    #[serde(rename = "1.3")]
    V1_3,
    /// TLS 1.2 and 1.3.
    #[serde(rename = "1.2")]
    V1_2,
}

/// The `tls` section of the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate chain (PEM), the server's certificate first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle (PEM) client certificates must chain to: mutual TLS, a certificate required of
    /// every client. None: no client certificates asked for.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// `"1.3"` (the default) or `"1.2"` (also accept TLS 1.2).
    #[serde(default = "TlsSettings::default_min_version")]
    pub min_version: TlsVersion,
    /// How often the files are checked for a change, in milliseconds.
    #[serde(default = "TlsSettings::default_reload_interval_ms")]
    pub reload_interval_ms: u64,
    /// What the client certificate's identity (its SPIFFE URI SAN, else its subject's common
    /// name) stands for: `principal` makes it the principal of every decision the client asks
    /// for (needs `client_ca`).
    #[serde(default)]
    pub identity: TlsIdentity,
}

/// What a verified client certificate's identity stands for (`tls.identity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsIdentity {
    /// Nothing: the certificate only admits the client.
    #[default]
    None,
    /// The principal of every decision the client asks for; a request naming another is
    /// refused.
    Principal,
    /// The tenant of the client: without an API key, its requests are that tenant's (sessions,
    /// budgets, per-tenant upstreams), decided by `anonymous_policy`; with one, the key must be
    /// that tenant's.
    Tenant,
}

impl TlsSettings {
    fn default_min_version() -> TlsVersion {
        TlsVersion::V1_3
    }

    fn default_reload_interval_ms() -> u64 {
        2_000
    }
}

/// `fsync` setting of the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditFsync {
    /// Each written group is synced before any decision in it is answered.
    Always,
    /// Synced as soon as the writer finds no other entry queued, and at most `batch_window_ms`
    /// after a write while entries keep arriving; answers wait for that sync.
    Batch,
    /// Never synced by Warden; answered once queued.
    Never,
}

/// What a decision does when the audit queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOnFull {
    /// Wait for room.
    Block,
    /// Answer 503 `audit_unavailable` (no decision).
    Deny,
}

/// The `audit` section of the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Directory of `audit-NNNNNN.jsonl` files.
    pub dir: PathBuf,
    /// `always`, `batch` or `never`.
    pub fsync: AuditFsync,
    /// With `batch`: longest wait for a sync, in milliseconds.
    pub batch_window_ms: u64,
    /// Rotate a file when it would grow beyond this many bytes.
    pub max_file_bytes: u64,
    /// Entries queued for the writer at most.
    pub queue: usize,
    /// `block` or `deny` when the queue is full.
    pub on_full: AuditOnFull,
    /// HMAC key file (hex, `warden keys gen-audit`); none: entries carry no `mac`.
    pub key_file: Option<PathBuf>,
    /// Milliseconds between two checkpoints (written when the log grew); 0: only at shutdown
    /// and on `GET /v1/audit/checkpoint`.
    pub checkpoint_interval_ms: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(".warden/audit"),
            fsync: AuditFsync::Batch,
            batch_window_ms: 10,
            max_file_bytes: 64 * 1024 * 1024,
            queue: 65_536,
            on_full: AuditOnFull::Deny,
            key_file: None,
            checkpoint_interval_ms: 60_000,
        }
    }
}

impl AuditSettings {
    /// Makes the relative paths relative to `base` (the configuration file's directory).
    pub(crate) fn rebase(&mut self, base: &Path) {
        for p in std::iter::once(&mut self.dir).chain(self.key_file.as_mut()) {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

/// One `llm_upstreams` entry: an LLM API Warden stands in front of, served at
/// `/llm/{name}/v1/chat/completions` (`api: openai`) or `/llm/{name}/v1/messages`
/// (`api: anthropic`) and forwarded to the same path under `url`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmUpstreamConfig {
    /// The mount's name: its route, and `mount` in its decisions' context.
    pub name: String,
    /// The wire format: `openai` or `anthropic`.
    pub api: warden_llm::Api,
    /// The upstream's base URL (`https://api.openai.com`, `http://127.0.0.1:4000`).
    pub url: String,
    /// The policy deciding the mount's traffic (a Warden policy); none: the caller's key's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The environment variable holding the upstream's API key, sent as the provider expects
    /// (`Authorization: Bearer` or `x-api-key`); none: no key is sent. Clients authenticate
    /// to Warden with their Warden key, never the provider's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Take the Warden session from this request header (e.g. `x-agent-session`); none: one
    /// session per tenant and mount (`llm:{name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_header: Option<String>,
    /// Characters of a streamed answer held back until the detectors have seen what follows
    /// them (findings up to this long are redacted across chunks).
    #[serde(default = "default_hold_chars")]
    pub hold_chars: usize,
    /// Milliseconds an exchange may take to its answer's headers, and a stream between two
    /// chunks.
    #[serde(default = "default_llm_timeout_ms")]
    pub timeout_ms: u64,
    /// For an `https://` url: the PEM bundle the upstream's certificate must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// A model's price in US dollars per million tokens (`llm_prices`).
pub use warden_llm::Price as LlmPrice;

fn default_hold_chars() -> usize {
    256
}

fn default_llm_timeout_ms() -> u64 {
    300_000
}

/// The `capture` section: the requests the daemon decides, written for `warden replay`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureSettings {
    /// The directory of the capture files (`capture.jsonl`, rotated to `capture.jsonl.1`, ...).
    pub dir: PathBuf,
    /// Bytes a file holds before it is rotated.
    pub max_file_bytes: u64,
    /// Rotated files kept (the oldest beyond them deleted).
    pub max_files: usize,
    /// Records waiting to be written at most; beyond it new ones are dropped (counted).
    pub max_queue: usize,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("capture"),
            max_file_bytes: 64 * 1024 * 1024,
            max_files: 8,
            max_queue: 10_000,
        }
    }
}

impl CaptureSettings {
    /// The problems of these settings, each naming its field.
    pub fn check(&self) -> Result<(), String> {
        if self.max_file_bytes < 4096 {
            return Err("capture.max_file_bytes must be at least 4096".to_owned());
        }
        if self.max_files == 0 || self.max_files > 1000 {
            return Err("capture.max_files must be between 1 and 1000".to_owned());
        }
        if self.max_queue == 0 || self.max_queue > 1_000_000 {
            return Err("capture.max_queue must be between 1 and 1000000".to_owned());
        }
        Ok(())
    }
}

/// The OTLP transport (`telemetry.otlp_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies.
    Http,
}

/// The `telemetry` section of the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// The collector's endpoint: for `grpc`, `http://127.0.0.1:4317`; for `http`, the full
    /// URL of its traces resource (`http://127.0.0.1:4318/v1/traces`). None: no traces.
    pub otlp_endpoint: Option<String>,
    /// How spans are sent: `grpc` (OTLP/gRPC) or `http` (OTLP/HTTP, binary protobuf).
    pub otlp_protocol: OtlpProtocol,
    /// Share of traces recorded, 0 to 1, when the caller's `traceparent` does not say (a
    /// sampled caller's trace is always recorded, an unsampled one never).
    pub sample_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Longest wait for the collector per export, in milliseconds.
    pub export_timeout_ms: u64,
    /// Spans waiting for export at most; beyond it new spans are dropped.
    pub max_queue: usize,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::Grpc,
            sample_ratio: 1.0,
            service_name: "warden".to_owned(),
            export_timeout_ms: 5_000,
            max_queue: 2_048,
        }
    }
}

impl TelemetrySettings {
    /// The problems of these settings, each naming its field.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(format!(
                "telemetry.sample_ratio must be between 0 and 1, not {}",
                self.sample_ratio
            ));
        }
        if self.max_queue == 0 || self.max_queue > 1_000_000 {
            return Err("telemetry.max_queue must be between 1 and 1000000".to_owned());
        }
        if self.export_timeout_ms == 0 {
            return Err("telemetry.export_timeout_ms must be at least 1".to_owned());
        }
        if self.service_name.is_empty() || self.service_name.len() > 256 {
            return Err("telemetry.service_name must be 1 to 256 bytes".to_owned());
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err("telemetry.otlp_endpoint must be an http:// or https:// URL".to_owned());
        }
        Ok(())
    }
}
