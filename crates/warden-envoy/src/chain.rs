//! Running one chain: each step in order, its failure handled per `on_failure`, an internal
//! error (a store down, a timeout) failing closed unless the route is `fail_open`.

use std::time::Duration;

use crate::config::OnFailure;
pub use crate::exchange::Phase;
use crate::exchange::{Exchange, Mutations, Reply};
use crate::host::Host;
use crate::metrics::Metrics;
use crate::route::Route;
use crate::steps::StepOutcome;

/// What the chain decided for the phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward, with these changes.
    Forward(Mutations),
    /// Answer the client with this instead.
    Reply(Reply),
}

/// Runs the route's chain of `phase` on `ex`, each step within `timeout`.
pub async fn run(
    host: &dyn Host,
    metrics: &Metrics,
    route: &Route,
    ex: &mut Exchange,
    phase: Phase,
    timeout: Duration,
) -> Verdict {
    let steps = match phase {
        Phase::Request => &route.request,
        Phase::Response => &route.response,
    };
    let response = phase == Phase::Response;
    let mut m = Mutations::default();
    for (step, on_failure) in steps {
        let outcome = tokio::time::timeout(timeout, step.run(host, ex, &mut m, response)).await;
        let outcome = match outcome {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                tracing::error!(route = %route.name, phase = phase.as_str(), step = step.name(), error = %e, "chain step failed");
                StepOutcome::Fail(internal())
            }
            Err(_) => {
                tracing::error!(route = %route.name, phase = phase.as_str(), step = step.name(), "chain step timed out");
                StepOutcome::Fail(internal())
            }
        };
        match outcome {
            StepOutcome::Pass => metrics.step(&route.name, phase, step.name(), "pass"),
            StepOutcome::Fail(reply) if reply.status >= 500 => {
                metrics.step(&route.name, phase, step.name(), "error");
                if route.fail_open {
                    tracing::warn!(route = %route.name, step = step.name(), "internal error on a fail_open route; forwarding");
                    return Verdict::Forward(m);
                }
                return Verdict::Reply(reply);
            }
            StepOutcome::Fail(reply) => {
                metrics.step(&route.name, phase, step.name(), "fail");
                match on_failure {
                    OnFailure::Deny => return Verdict::Reply(reply),
                    OnFailure::Continue => {}
                    OnFailure::SkipRemaining => return Verdict::Forward(m),
                }
            }
        }
    }
    Verdict::Forward(m)
}

/// The answer to an internal error: no detail (it goes to the log).
pub fn internal() -> Reply {
    Reply::error(500, "internal", "internal error")
}
