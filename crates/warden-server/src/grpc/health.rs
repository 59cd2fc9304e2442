//! `grpc.health.v1.Health`: the daemon's readiness (as `/health/ready` without the stores'
//! report) for the whole server (`""`) and for `warden.v1.DecisionService`; `NOT_SERVING` from
//! the moment a shutdown begins, so a load balancer stops sending before the listener closes.

use std::pin::Pin;

use futures_util::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::proto::decision_service_server::SERVICE_NAME;
use crate::AppState;

/// The health service of `state`'s daemon.
pub(super) fn service(state: AppState) -> HealthServer<Readiness> {
    HealthServer::new(Readiness { state })
}

/// Answers from the daemon's readiness.
#[derive(Clone, Debug)]
pub(super) struct Readiness {
    state: AppState,
}

fn known(service: &str) -> bool {
    service.is_empty() || service == SERVICE_NAME
}

fn status(ready: bool) -> HealthCheckResponse {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    HealthCheckResponse {
        status: status.into(),
    }
}

#[tonic::async_trait]
impl Health for Readiness {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if !known(&request.get_ref().service) {
            return Err(Status::not_found("unknown service"));
        }
        Ok(Response::new(status(self.state.is_ready())))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        if !known(&request.get_ref().service) {
            // The protocol: an unknown service is reported, and the call stays open.
            let unknown = HealthCheckResponse {
                status: ServingStatus::ServiceUnknown.into(),
            };
            let stream = futures_util::stream::once(async move { Ok(unknown) })
                .chain(futures_util::stream::pending());
            return Ok(Response::new(Box::pin(stream)));
        }
        let readiness = self.state.readiness();
        let stream = futures_util::stream::unfold(
            (readiness, None::<bool>),
            |(mut readiness, last)| async move {
                loop {
                    if last.is_some() {
                        readiness.changed().await.ok()?;
                    }
                    let ready = *readiness.borrow_and_update();
                    if last != Some(ready) {
                        return Some((Ok(status(ready)), (readiness, Some(ready))));
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}
