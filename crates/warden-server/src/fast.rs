//! `POST /v1/decide` dispatched before axum's router.
//!
//! The decision route is most of the daemon's traffic, and axum's per-request routing and
//! `from_fn` middleware (a boxed future and a cloned boxed service per layer, the matched path
//! stored as an extension) cost more than the decision itself: serving this one route directly
//! took the daemon from about 55% to about 65% of the no-op server's throughput
//! (BENCHMARKS.md, "serve"). The fast path does exactly the router's work for this route, with
//! the same functions: request id and `warden_http_requests_total`
//! ([`middleware::tag`]/[`middleware::answered`]), readiness, API key, rate limit, concurrency
//! limit and timeout ([`middleware::guarded`]), the handler ([`handlers::decide_request`]) and
//! panic isolation. Every other request, including other methods on `/v1/decide`, goes to the
//! router unchanged.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;

use crate::middleware;
use crate::{AppState, handlers};

/// The route served by the fast path, as the router names it in metrics.
const DECIDE: &str = "/v1/decide";

/// The daemon's HTTP service: [`crate::router`] with `POST /v1/decide` served directly, and
/// gRPC calls (`application/grpc`) sent to the gRPC services ([`crate::grpc`]).
#[derive(Clone, Debug)]
pub struct App {
    state: AppState,
    router: Router,
    grpc: crate::grpc::Grpc,
}

impl App {
    /// The service for `state`.
    pub fn new(state: AppState) -> Self {
        Self {
            router: crate::router(state.clone()),
            grpc: crate::grpc::Grpc::new(&state),
            state,
        }
    }
}

impl tower::Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready, and so is the fast path.
        self.grpc.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // With traces on, the caller's trace context is current while the request is served, so
        // that the spans of its decisions are children of the caller's span.
        match self.state.telemetry().map(|t| t.extract(req.headers())) {
            Some(cx) => Box::pin(opentelemetry::context::FutureExt::with_context(
                self.route(req),
                cx,
            )),
            None => self.route(req),
        }
    }
}

impl App {
    /// The service answering `req`: the fast path, gRPC or the router.
    fn route(
        &mut self,
        req: Request,
    ) -> Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>> {
        if req.method() == Method::POST && req.uri().path() == DECIDE {
            let state = self.state.clone();
            Box::pin(async move {
                Ok(AssertUnwindSafe(decide(state, req))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(middleware::panic_response))
            })
        } else if crate::grpc::is_grpc(&req) {
            self.grpc.call(req)
        } else {
            Box::pin(tower::Service::call(&mut self.router, req))
        }
    }
}

async fn decide(state: AppState, req: Request) -> Response {
    // No request extensions here: the id and the caller are passed along, not stored.
    let id = middleware::request_id(req.headers());
    let response = middleware::guarded(&state, req, &id, |req, caller| {
        let (state, id) = (&state, &id);
        async move {
            handlers::decide_request(state, &caller, id, req)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
    })
    .await;
    middleware::answered(&state, Cow::Borrowed(DECIDE), &id, response)
}
