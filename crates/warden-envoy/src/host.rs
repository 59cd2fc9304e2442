//! What the chains need from the daemon that runs them: its API keys, its decision pipeline,
//! its counters. The daemon (`warden-server`) implements [`Host`]; this crate never reaches
//! into a store or the evaluator itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use warden_core::{CounterStore, Decision, Request};

use crate::exchange::{ExchangeRecord, Identity};

/// A boxed future (the trait is object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The daemon's services, as the chains use them.
pub trait Host: Send + Sync + 'static {
    /// The caller holding API key `key`, checked in constant time against the daemon's key
    /// store (the key is never logged); None for an unknown or revoked key.
    fn verify_key(&self, key: &str) -> Option<Identity>;

    /// Decides `request` with the policy named `policy` for `tenant`, through the daemon's one
    /// pipeline (audit, decision log and metrics included). An error is a failure to decide,
    /// never an allow.
    fn decide<'a>(
        &'a self,
        tenant: &'a str,
        policy: &'a str,
        request: Request,
    ) -> BoxFuture<'a, Result<Decision, String>>;

    /// Appends `record` (an `auditLog` step) to the daemon's audit log and waits until it is
    /// written (durable per the log's `fsync`). An error fails the step.
    fn audit(&self, record: ExchangeRecord) -> BoxFuture<'_, Result<(), String>>;

    /// The counters rate limits count in (shared by every instance when the daemon has shared
    /// state).
    fn counters(&self) -> Arc<dyn CounterStore>;
}
