//! Envoy's external authorization (`envoy.service.auth.v3.Authorization/Check`) on the same
//! chains: the route's request chain decides; its header changes go upstream in the OK
//! answer. ext_authz cannot replace a body, so a chain that would (a redaction) is refused
//! rather than let the unredacted body through.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use crate::Shared;
use crate::chain::{self, Phase, Verdict};
use crate::exchange::{Exchange, Reply};
use crate::route::RouteSource;

/// gRPC `OK` and `PERMISSION_DENIED` codes in `CheckResponse.status`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
/// `HeaderValueOption.append_action`: `OVERWRITE_IF_EXISTS_OR_ADD`.
const OVERWRITE: i32 = 2;

/// The ext_authz service.
#[derive(Clone)]
pub struct Authorizer {
    pub(crate) shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Authorization for Authorizer {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let attributes = request
            .into_inner()
            .attributes
            .ok_or_else(|| Status::invalid_argument("`attributes` is required"))?;
        let http = attributes
            .request
            .as_ref()
            .and_then(|r| r.http.as_ref())
            .ok_or_else(|| Status::invalid_argument("`attributes.request.http` is required"))?;
        let shared = &self.shared;
        let chains = shared.chains.load();
        // Headers: the map (lowercase keys) or, with `encode_raw_headers`, the header map.
        let mut headers: Vec<(String, String)> = match &http.header_map {
            Some(map) => crate::ext_proc::split_headers(Some(map))?.1,
            None => http
                .headers
                .iter()
                .filter(|(k, _)| !k.starts_with(':'))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        };
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        let route_name = match &chains.route_from {
            RouteSource::Header(name) => crate::exchange::first(&headers, name).map(str::to_owned),
            RouteSource::Attribute(name) => attributes.context_extensions.get(name).cloned(),
            RouteSource::Metadata(ns, key) => attributes
                .metadata_context
                .as_ref()
                .and_then(|m| m.filter_metadata.get(ns))
                .and_then(|s| s.fields.get(key))
                .and_then(|v| match &v.kind {
                    Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => {
                        Some(s.clone())
                    }
                    _ => None,
                }),
        };
        let route = match chains.route(route_name.as_deref()) {
            Ok(Some(route)) => route,
            Ok(None) => {
                shared.metrics.request("unknown", "ext_authz", "forwarded");
                return Ok(Response::new(ok(Vec::new(), Vec::new())));
            }
            Err(()) => {
                shared.metrics.request("unknown", "ext_authz", "replied");
                return Ok(Response::new(denied(Reply::error(
                    404,
                    "unknown_route",
                    "no route is configured for this request",
                ))));
            }
        };
        let path = http.path.clone();
        let mut ex = Exchange::new(Arc::clone(&route.name), http.method.clone(), path, headers);
        ex.client = attributes
            .source
            .as_ref()
            .and_then(|s| s.address.as_ref())
            .and_then(|a| match &a.address {
                Some(Address::SocketAddress(s)) => s.address.parse().ok(),
                _ => None,
            });
        let limits = chains.limits;
        let reply = |ex: &Exchange, outcome, reply| {
            shared.metrics.request(&ex.route, "ext_authz", outcome);
            Ok(Response::new(denied(reply)))
        };
        if ex.state_bytes() > limits.max_state_bytes {
            return reply(
                &ex,
                "replied",
                Reply::error(
                    431,
                    "headers_too_large",
                    "the request's headers are over the processor's state limit",
                ),
            );
        }
        if route.request_needs_body() {
            let body = if http.raw_body.is_empty() {
                http.body.clone().into_bytes()
            } else {
                http.raw_body.clone()
            };
            let declared = ex
                .header("content-length")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let partial = ex.header("x-envoy-auth-partial-body") == Some("true");
            if body.len() > limits.max_body_bytes || partial {
                return reply(
                    &ex,
                    "replied",
                    Reply::error(
                        413,
                        "body_too_large",
                        "the request body is over the processor's limit",
                    ),
                );
            }
            let chunked = ex.header("transfer-encoding").is_some();
            if (declared > 0 || chunked) && body.is_empty() {
                tracing::error!(route = %route.name,
                    "a chain of this route reads the body, but Envoy sent none (set with_request_body)");
                return reply(&ex, "error", chain::internal());
            }
            ex.body = Some(body);
        }
        let timeout = Duration::from_millis(limits.step_timeout_ms);
        let verdict = chain::run(
            &*shared.host,
            &shared.metrics,
            &route,
            &mut ex,
            Phase::Request,
            timeout,
        )
        .await;
        match verdict {
            Verdict::Reply(r) => reply(&ex, "replied", r),
            Verdict::Forward(m) if m.body.is_some() => {
                tracing::error!(route = %route.name, "the chain changed the body, which ext_authz cannot forward; refused");
                reply(&ex, "error", chain::internal())
            }
            Verdict::Forward(m) => {
                shared
                    .metrics
                    .request(&route.name, "ext_authz", "forwarded");
                Ok(Response::new(ok(m.set, m.remove)))
            }
        }
    }
}

fn option(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append_action: OVERWRITE,
        ..HeaderValueOption::default()
    }
}

fn ok(set: Vec<(String, String)>, remove: Vec<String>) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: OK,
            ..rpc::Status::default()
        }),
        http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
            headers: set.iter().map(|(k, v)| option(k, v)).collect(),
            headers_to_remove: remove,
            ..OkHttpResponse::default()
        })),
        ..CheckResponse::default()
    }
}

fn denied(reply: Reply) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: PERMISSION_DENIED,
            ..rpc::Status::default()
        }),
        http_response: Some(check_response::HttpResponse::DeniedResponse(
            DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: i32::from(reply.status),
                }),
                headers: reply.headers.iter().map(|(k, v)| option(k, v)).collect(),
                body: String::from_utf8_lossy(&reply.body).into_owned(),
            },
        )),
        ..CheckResponse::default()
    }
}
