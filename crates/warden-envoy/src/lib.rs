//! Warden behind Envoy: the external processor (ext_proc) and external authorizer (ext_authz)
//! gRPC services, running per-route chains of built-in policies on requests and responses.
//!
//! A front door: it maps Envoy's protocol onto the daemon's services ([`Host`]: API keys, the
//! decision pipeline, counters) and back. The configuration ([`EnvoyConfig`]) is compiled at
//! load and swapped whole on reload ([`EnvoyServer::reload`]); a stream in flight keeps the
//! route it started with. See README.md for the protocol decisions.
#![forbid(unsafe_code)]

pub mod agent;
pub mod chain;
pub mod config;
mod error;
pub mod exchange;
mod ext_authz;
mod ext_proc;
pub mod host;
pub mod jwt;
pub mod metrics;
pub mod route;
pub mod steps;
pub mod target;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;

pub use config::{AgentConfig, EnvoyConfig, Limits, OnFailure, RouteConfig, StepConfig};
pub use error::EnvoyConfigError;
pub use exchange::{ExchangeRecord, Identity};
pub use host::{BoxFuture, Host};
pub use metrics::Metrics;
pub use route::Chains;

/// What every stream shares: the daemon, the compiled chains, the metrics.
pub(crate) struct Shared {
    host: Arc<dyn Host>,
    chains: ArcSwap<Chains>,
    metrics: Arc<Metrics>,
    streams: AtomicUsize,
}

/// One open ext_proc stream, counted against `max_streams` until dropped.
pub(crate) struct StreamGuard(Arc<Shared>);

impl StreamGuard {
    /// Counts a stream in; None when `max_streams` are open.
    fn enter(shared: &Arc<Shared>) -> Option<Self> {
        let max = shared.chains.load().limits.max_streams;
        let before = shared.streams.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            shared.streams.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(Arc::clone(shared)))
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The ext_proc and ext_authz services over one set of chains.
#[derive(Clone)]
pub struct EnvoyServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EnvoyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvoyServer").finish_non_exhaustive()
    }
}

/// Largest gRPC message accepted: the largest body limit and room for the headers, so that an
/// oversized body gets its 413 from the chain's limit rather than a decoding error.
const MAX_MESSAGE_BYTES: usize = config::MAX_BODY_LIMIT + 1024 * 1024;

impl EnvoyServer {
    /// Compiles `config` (an error names the field) over the daemon's `host`.
    pub fn new(
        config: &EnvoyConfig,
        host: Arc<dyn Host>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, EnvoyConfigError> {
        Ok(Self::with_chains(config.compile()?, host, metrics))
    }

    /// Serves `chains` (compiled by [`EnvoyConfig::compile`], which may block asking policy
    /// agents what they offer, so a caller on a runtime compiles off it) over `host`. Must be
    /// called on a Tokio runtime for the agents' health checks to run.
    pub fn with_chains(chains: Chains, host: Arc<dyn Host>, metrics: Arc<Metrics>) -> Self {
        watch_agents(&chains, &metrics);
        Self {
            shared: Arc::new(Shared {
                host,
                chains: ArcSwap::from_pointee(chains),
                metrics,
                streams: AtomicUsize::new(0),
            }),
        }
    }

    /// Validates `config` and, only when it compiles, swaps it in: requests that start after
    /// see the new routes and chains; an invalid one changes nothing.
    pub fn reload(&self, config: &EnvoyConfig) -> Result<(), EnvoyConfigError> {
        self.install(config.compile()?);
        Ok(())
    }

    /// Swaps in `chains`, already compiled: requests that start after see them.
    pub fn install(&self, chains: Chains) {
        watch_agents(&chains, &self.shared.metrics);
        self.shared.chains.store(Arc::new(chains));
    }

    /// Serves ext_proc and ext_authz on `listener` (plaintext HTTP/2) until `shutdown`.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), String> {
        let processor = ExternalProcessorServer::new(ext_proc::Processor {
            shared: Arc::clone(&self.shared),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let authorizer = AuthorizationServer::new(ext_authz::Authorizer {
            shared: Arc::clone(&self.shared),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .add_service(processor)
            .add_service(authorizer)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Starts the health checks of the agents `chains` use (each stops once its chains are gone).
fn watch_agents(chains: &Chains, metrics: &Arc<Metrics>) {
    for agent in &chains.agents {
        agent.watch(Arc::clone(metrics));
    }
}

#[cfg(test)]
mod agent_tests;
#[cfg(test)]
mod chain_tests;
