//! The gRPC decision service (`proto/warden/v1/decision.proto`), `grpc.health.v1` and server
//! reflection, served on the HTTP listener: a request whose content type is `application/grpc`
//! (over HTTP/2, prior knowledge or not) comes here instead of the HTTP router.
//!
//! Every call goes through what an HTTP request does: lockout, API key (metadata
//! `authorization: Bearer` or `x-api-key`), rate limit, concurrency limit and request timeout
//! ([`middleware::admit`], [`middleware::limited`]), then the handlers' own validation and the
//! one decision pipeline. Errors carry the HTTP API's code in `warden-error-code`
//! ([`ErrorCode::grpc_code`](crate::error::ErrorCode::grpc_code) maps them). Health and
//! reflection need no key, like `/health/live`.

mod convert;
mod health;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{FutureExt as _, Stream};
use tonic::{Status, Streaming};

use crate::auth::{Caller, Client};
use crate::error::ApiError;
use crate::handlers::{check_batch_size, check_decidable, decide_one, decide_requests};
use crate::middleware::{admit, limited, request_id};
use crate::{AppState, auth};

/// The code generated from the proto (checked in; `tests/grpc_codegen.rs` keeps it current).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub mod proto {
    include!("generated/warden.v1.rs");
}

/// The encoded descriptors of the proto and its imports, served by reflection.
const DESCRIPTORS: &[u8] = include_bytes!("generated/warden.v1.bin");

/// Longest `id` of a stream request echoed back.
const MAX_STREAM_ID_BYTES: usize = 64;

use proto::decision_service_server::{DecisionService, DecisionServiceServer};

/// Whether `req` is a gRPC call (`application/grpc`, `application/grpc+proto`, ...).
pub(crate) fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
        })
}

/// The gRPC services, as one tower service.
#[derive(Clone, Debug)]
pub(crate) struct Grpc {
    routes: tonic::service::Routes,
}

impl Grpc {
    /// The services of `state`'s daemon.
    pub(crate) fn new(state: &AppState) -> Self {
        let limit = state.config().body_limit_bytes;
        let decisions = DecisionServiceServer::new(Decisions {
            state: state.clone(),
        })
        .max_decoding_message_size(limit);
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(DESCRIPTORS)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let mut routes = tonic::service::Routes::new(decisions)
            .add_service(health::service(state.clone()))
            .prepare();
        // Both reflection versions: grpcurl and grpcio's tools speak v1, older clients v1alpha.
        // The descriptors are checked in and tested, so neither build can fail at run time;
        // if one did, the daemon would serve without reflection rather than not at all.
        match reflection().build_v1() {
            Ok(v1) => routes = routes.add_service(v1),
            Err(e) => tracing::error!(error = %e, "gRPC reflection (v1) unavailable"),
        }
        match reflection().build_v1alpha() {
            Ok(v1alpha) => routes = routes.add_service(v1alpha),
            Err(e) => tracing::error!(error = %e, "gRPC reflection (v1alpha) unavailable"),
        }
        Self { routes }
    }

    /// Serves one gRPC call; a panic is answered `INTERNAL`, like HTTP's 500.
    pub(crate) fn call(
        &mut self,
        req: Request,
    ) -> Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>> {
        let call = tower::Service::call(&mut self.routes, req);
        Box::pin(async move {
            let response = AssertUnwindSafe(call).catch_unwind().await;
            Ok(match response {
                Ok(Ok(response)) => response.map(axum::body::Body::new),
                Ok(Err(never)) => match never {},
                Err(panic) => {
                    drop(crate::middleware::panic_response(panic));
                    Status::internal("internal error")
                        .into_http::<axum::body::Body>()
                        .map(axum::body::Body::new)
                }
            })
        })
    }

    /// Always ready, as the HTTP router is.
    pub(crate) fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
}

/// The caller of a gRPC call, admitted like an HTTP request.
struct Admitted {
    caller: Caller,
    id: Arc<str>,
    /// The call's metadata as headers, kept to re-check the key after a reload.
    headers: HeaderMap,
    peer: Option<std::net::IpAddr>,
    certificate: Option<crate::tls::ClientIdentity>,
}

async fn admitted<T>(state: &AppState, request: &tonic::Request<T>) -> Result<Admitted, Status> {
    let headers = request.metadata().clone().into_headers();
    let id = request_id(&headers);
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let certificate = request
        .extensions()
        .get::<crate::tls::ClientIdentity>()
        .cloned();
    let caller = admit(state, &headers, peer, certificate.as_ref(), &id).await?;
    Ok(Admitted {
        caller,
        id,
        headers,
        peer,
        certificate,
    })
}

impl Admitted {
    /// The caller again when the policy set changed since it was resolved (a stream outlives
    /// reloads): a revoked key is refused from then on.
    fn current(&mut self, state: &AppState) -> Result<(), ApiError> {
        if Arc::ptr_eq(&self.caller.snapshot, &state.snapshot()) {
            return Ok(());
        }
        let client = Client::of(state, &self.headers, self.peer, self.certificate.as_ref());
        self.caller = auth::reauthenticate(state, &self.headers, &self.id, client)?;
        Ok(())
    }
}

/// The `warden.v1.DecisionService` implementation.
#[derive(Clone, Debug)]
struct Decisions {
    state: AppState,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl DecisionService for Decisions {
    async fn decide(
        &self,
        request: tonic::Request<proto::DecisionRequest>,
    ) -> Result<tonic::Response<proto::Decision>, Status> {
        let state = &self.state;
        let Admitted { caller, id, .. } = admitted(state, &request).await?;
        let message = request.into_inner();
        let decision = limited(state, async {
            check_decidable(&caller)?;
            let request = convert::request(message, "")?;
            decide_one(state, &caller, &id, &request).await
        })
        .await
        .and_then(|r| r)?;
        Ok(tonic::Response::new(convert::decision(&decision)))
    }

    async fn decide_batch(
        &self,
        request: tonic::Request<proto::DecideBatchRequest>,
    ) -> Result<tonic::Response<proto::DecideBatchResponse>, Status> {
        let state = &self.state;
        let Admitted { caller, id, .. } = admitted(state, &request).await?;
        let messages = request.into_inner().requests;
        let decisions = limited(state, async {
            check_decidable(&caller)?;
            check_batch_size(state, messages.len())?;
            let requests = messages
                .into_iter()
                .enumerate()
                .map(|(i, m)| convert::request(m, &format!("[{i}].")))
                .collect::<Result<Vec<_>, _>>()?;
            decide_requests(state, &caller, &id, requests).await
        })
        .await
        .and_then(|r| r)?;
        Ok(tonic::Response::new(proto::DecideBatchResponse {
            decisions: decisions.iter().map(convert::decision).collect(),
        }))
    }

    type DecideStreamStream = BoxStream<proto::DecideStreamResponse>;

    async fn decide_stream(
        &self,
        request: tonic::Request<Streaming<proto::DecideStreamRequest>>,
    ) -> Result<tonic::Response<Self::DecideStreamStream>, Status> {
        let state = self.state.clone();
        let admitted = admitted(&state, &request).await?;
        let inbound = request.into_inner();
        let idle = Duration::from_millis(state.config().idle_timeout_ms.max(1));
        let answers = futures_util::stream::unfold(
            Some((state, admitted, inbound, true)),
            move |open| async move {
                let (state, mut admitted, mut inbound, first) = open?;
                let message = match tokio::time::timeout(idle, inbound.message()).await {
                    Err(_) => {
                        let status = Status::deadline_exceeded(format!(
                            "no request on this stream for {} ms (idle_timeout_ms)",
                            idle.as_millis()
                        ));
                        return Some((Err(status), None));
                    }
                    Ok(Err(status)) => return Some((Err(status), None)),
                    Ok(Ok(None)) => return None,
                    Ok(Ok(Some(message))) => message,
                };
                let answer = stream_answer(&state, &mut admitted, message, first).await;
                Some((answer, Some((state, admitted, inbound, false))))
            },
        );
        Ok(tonic::Response::new(Box::pin(answers)))
    }

    type WatchPolicyStream = BoxStream<proto::PolicyVersion>;

    async fn watch_policy(
        &self,
        request: tonic::Request<proto::WatchPolicyRequest>,
    ) -> Result<tonic::Response<Self::WatchPolicyStream>, Status> {
        let state = self.state.clone();
        let admitted = admitted(&state, &request).await?;
        let changes = state.policy_generation();
        let versions = futures_util::stream::unfold(
            Some((state, admitted, changes, None::<proto::PolicyInfo>)),
            |open| async move {
                let (state, mut admitted, mut changes, last) = open?;
                loop {
                    if last.is_some() {
                        // Ends with the daemon (the sender is dropped).
                        changes.changed().await.ok()?;
                    }
                    let generation = *changes.borrow_and_update();
                    if let Err(e) = admitted.current(&state) {
                        return Some((Err(Status::from(e)), None));
                    }
                    let caller = &admitted.caller;
                    let info = caller.snapshot.policies.get(&caller.policy).map_or_else(
                        || convert::policy_info(&caller.policy, None, ""),
                        |p| convert::policy_info(&p.name, p.version.as_deref(), &p.digest),
                    );
                    // A reload that left this caller's policy as it was is not news to it.
                    if last.as_ref() == Some(&info) {
                        continue;
                    }
                    let version = proto::PolicyVersion {
                        policy: Some(info.clone()),
                        generation,
                    };
                    return Some((Ok(version), Some((state, admitted, changes, Some(info)))));
                }
            },
        );
        Ok(tonic::Response::new(Box::pin(versions)))
    }
}

/// The answer to one message of a `DecideStream`: a decision, or the error that kept it from
/// being decided (the stream goes on either way). The stream's opening took the first message's
/// rate limit token; every later message takes its own.
async fn stream_answer(
    state: &AppState,
    admitted: &mut Admitted,
    message: proto::DecideStreamRequest,
    first: bool,
) -> Result<proto::DecideStreamResponse, Status> {
    let long_id = message.id.len() > MAX_STREAM_ID_BYTES;
    let id = if long_id { String::new() } else { message.id };
    let outcome = async {
        if long_id {
            return Err(ApiError::bad_request(format!(
                "field `id`: longer than {MAX_STREAM_ID_BYTES} bytes"
            )));
        }
        admitted.current(state)?;
        let caller = &admitted.caller;
        if !first {
            auth::charge_decisions(state, caller, 1).await?;
        }
        limited(state, async {
            check_decidable(caller)?;
            let Some(request) = message.request else {
                return Err(ApiError::bad_request("field `request`: missing"));
            };
            let request = convert::request(request, "request.")?;
            decide_one(state, caller, &admitted.id, &request).await
        })
        .await
        .and_then(|r| r)
    }
    .await;
    let outcome = match outcome {
        Ok(decision) => {
            proto::decide_stream_response::Outcome::Decision(convert::decision(&decision))
        }
        Err(e) => proto::decide_stream_response::Outcome::Error(proto::Error {
            code: e.code.as_str().to_owned(),
            message: e.message,
        }),
    };
    Ok(proto::DecideStreamResponse {
        id,
        outcome: Some(outcome),
    })
}
