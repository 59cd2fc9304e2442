//! The daemon as the Envoy processor's [`Host`]: its API keys (checked in constant time by the
//! key index), its one decision pipeline (audit, decision log and metrics included) and its
//! counters (Redis when state is shared).

use std::sync::Arc;

use warden::state::CounterStore;
use warden_core::pipeline::Caller;
use warden_envoy::{BoxFuture, EnvoyServer, ExchangeRecord, Host, Identity};

use crate::AppState;

/// The daemon's services, lent to the Envoy chains.
struct DaemonHost {
    state: AppState,
}

impl Host for DaemonHost {
    fn verify_key(&self, key: &str) -> Option<Identity> {
        let snapshot = self.state.snapshot();
        let verified = snapshot.keys.verify(key);
        if verified.is_none() {
            self.state.metrics().auth_failures.inc();
        }
        verified.map(|k| Identity {
            id: k.record.id.clone(),
            tenant: k.tenant.to_string(),
            policy: k.policy.to_string(),
            roles: Vec::new(),
        })
    }

    fn decide<'a>(
        &'a self,
        tenant: &'a str,
        policy: &'a str,
        request: warden_core::Request,
    ) -> BoxFuture<'a, Result<warden_core::Decision, String>> {
        Box::pin(async move {
            if !self.state.is_ready() {
                return Err("not ready".to_owned());
            }
            let caller = Caller {
                tenant: Some(tenant),
                policy: Some(policy),
                request_id: None,
                tokens: false,
            };
            self.state
                .pipeline()
                .decide(&caller, &request)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn counters(&self) -> Arc<dyn CounterStore> {
        Arc::clone(&self.state.0.counters)
    }

    fn audit(&self, record: ExchangeRecord) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            crate::audit::audit_exchange(self.state.effects().audit.as_ref(), record)
                .await
                // The cause is logged where the log refused the entry.
                .map_err(|_refused| "the audit log cannot take the entry".to_owned())
        })
    }
}

/// Checks `config` whole and answers it compiled: it compiles (its policy agents asked what
/// they offer, which blocks: call it off the runtime), every policy a `decide` step names is
/// loaded in `snapshot`, and `auditLog` steps have an audit log to write to (`audit_log`). The
/// error names the field.
pub fn check(
    config: &warden_envoy::EnvoyConfig,
    snapshot: &crate::Snapshot,
    audit_log: bool,
) -> Result<warden_envoy::Chains, String> {
    let chains = config
        .compile()
        .map_err(|e| format!("configuration: {e}"))?;
    if !audit_log && let Some(field) = config.steps_of("auditLog").first() {
        return Err(format!(
            "configuration: `{field}`: `auditLog` writes to the audit log, and no `audit` is configured"
        ));
    }
    for (field, policy) in config.decide_policies() {
        if !snapshot.policies.contains_key(policy.as_str()) {
            return Err(format!(
                "configuration: `{field}`: no policy `{policy}` is loaded"
            ));
        }
    }
    Ok(chains)
}

/// Why the Envoy listener did not start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The `envoy` section is invalid (exit code 2).
    Config(String),
    /// The address could not be bound.
    Bind(String),
}

/// Starts the Envoy listener when the configuration has an `envoy` section: binds it, and
/// serves until `shutdown`. Answers the bound address.
pub(crate) async fn start(
    state: &AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<std::net::SocketAddr>, StartError> {
    let Some(config) = &state.config().envoy else {
        return Ok(None);
    };
    // Off the runtime: compiling asks the policy agents what they offer (blocking I/O).
    let (envoy, snapshot, audit) = (
        config.clone(),
        state.snapshot(),
        state.effects().audit.is_some(),
    );
    let chains = tokio::task::spawn_blocking(move || check(&envoy, &snapshot, audit))
        .await
        .map_err(|e| StartError::Config(format!("the Envoy check failed to run: {e}")))?
        .map_err(StartError::Config)?;
    let host = Arc::new(DaemonHost {
        state: state.clone(),
    });
    let server = EnvoyServer::with_chains(chains, host, Arc::clone(&state.metrics().envoy));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            StartError::Bind(format!("cannot listen on {} (envoy): {e}", config.listen))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Bind(e.to_string()))?;
    let _ = state.0.envoy.set(server.clone());
    tokio::spawn(async move {
        if let Err(e) = server.serve(listener, shutdown).await {
            tracing::error!(error = %e, "the Envoy listener stopped");
        }
    });
    Ok(Some(addr))
}
