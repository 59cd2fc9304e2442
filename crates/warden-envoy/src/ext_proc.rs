//! Envoy's external processor (`envoy.service.ext_proc.v3.ExternalProcessor/Process`): one
//! gRPC stream per HTTP request, one answer per message, in the order Envoy sends them
//! (request headers, request body, request trailers, response headers, response body, response
//! trailers). See README.md for the decisions taken on the protocol.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::ProcessingMode;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpBody,
    HttpHeaders, ImmediateResponse, ProcessingRequest, ProcessingResponse, TrailersResponse,
    body_mutation, processing_request, processing_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use futures_util::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::chain::{self, Phase, Verdict};
use crate::exchange::{Exchange, Headers, Mutations, Reply};
use crate::route::{Route, RouteSource};
use crate::{Shared, StreamGuard};

/// `BodySendMode::Buffered`: the whole body in one message (the only mode a chain that reads
/// the body accepts).
const BUFFERED: i32 = 2;
/// `HeaderValueOption.append_action`: `OVERWRITE_IF_EXISTS_OR_ADD`.
const OVERWRITE: i32 = 2;

/// The ext_proc service.
#[derive(Clone)]
pub struct Processor {
    pub(crate) shared: Arc<Shared>,
}

type Answers = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for Processor {
    type ProcessStream = Answers;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let guard = StreamGuard::enter(&self.shared)
            .ok_or_else(|| Status::resource_exhausted("too many streams"))?;
        let state = StreamState {
            shared: Arc::clone(&self.shared),
            inbound: request.into_inner(),
            stage: Stage::Start,
            exchange: None,
            route: None,
            override_modes: false,
            _guard: guard,
        };
        let answers = futures_util::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            match state.inbound.message().await {
                Ok(Some(message)) => match state.handle(message).await {
                    Ok((answer, more)) => Some((Ok(answer), more.then_some(state))),
                    Err(status) => {
                        state.count("error");
                        Some((Err(status), None))
                    }
                },
                // Envoy closed its side: the exchange is over.
                Ok(None) => None,
                // A message that does not decode (or a broken stream) ends the stream with an
                // error, never cleanly: Envoy goes on without the processor after a clean end.
                Err(status) => {
                    tracing::warn!(code = ?status.code(), "ext_proc stream failed");
                    state.count("error");
                    Some((Err(Status::invalid_argument("malformed message")), None))
                }
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

/// Where a stream is in the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing yet: request headers must come first.
    Start,
    /// The request chain waits for the request body.
    RequestBody,
    /// The request went on; the response has not begun.
    Upstream,
    /// The response chain waits for the response body.
    ResponseBody,
    /// The response went on.
    Done,
    /// No route applies: everything passes unchanged.
    Passthrough,
}

struct StreamState {
    shared: Arc<Shared>,
    inbound: Streaming<ProcessingRequest>,
    stage: Stage,
    exchange: Option<Exchange>,
    /// The route of the exchange, once known.
    route: Option<Arc<Route>>,
    /// The response body mode Envoy announced (`protocol_config`), when it did.
    /// Ask Envoy for buffered bodies in the next answer.
    override_modes: bool,
    _guard: StreamGuard,
}

use processing_request::Request as In;
use processing_response::Response as Out;

impl StreamState {
    fn count(&self, outcome: &str) {
        let route = self.exchange.as_ref().map_or("unknown", |e| &*e.route);
        self.shared.metrics.request(route, "ext_proc", outcome);
    }

    /// Answers one message; `false`: the stream is over (an immediate response was sent).
    async fn handle(
        &mut self,
        message: ProcessingRequest,
    ) -> Result<(ProcessingResponse, bool), Status> {
        let Some(request) = message.request else {
            return Err(Status::invalid_argument(
                "a message without a request phase",
            ));
        };
        if self.stage == Stage::Passthrough {
            return Ok((continue_for(&request), true));
        }
        let answer = match (self.stage, request) {
            (Stage::Start, In::RequestHeaders(h)) => {
                self.request_headers(
                    &message_attributes(&message.attributes, &message.metadata_context),
                    message
                        .protocol_config
                        .as_ref()
                        .map(|c| (c.request_body_mode, c.response_body_mode)),
                    h,
                )
                .await
            }
            (Stage::RequestBody, In::RequestBody(b)) => self.body(Phase::Request, b).await,
            (Stage::Upstream | Stage::RequestBody | Stage::Done, In::RequestTrailers(_)) => {
                Ok(Out::RequestTrailers(TrailersResponse::default()))
            }
            // A body the chain does not read (Envoy configured to send it anyway).
            (Stage::Upstream, In::RequestBody(_)) => Ok(Out::RequestBody(BodyResponse::default())),
            (Stage::Upstream, In::ResponseHeaders(h)) => self.response_headers(h).await,
            (Stage::ResponseBody, In::ResponseBody(b)) => self.body(Phase::Response, b).await,
            (Stage::Done, In::ResponseBody(_)) => Ok(Out::ResponseBody(BodyResponse::default())),
            (Stage::Done | Stage::ResponseBody, In::ResponseTrailers(_)) => {
                Ok(Out::ResponseTrailers(TrailersResponse::default()))
            }
            (stage, request) => {
                tracing::warn!(stage = ?stage, phase = phase_name(&request), "ext_proc message out of order");
                Err(Status::failed_precondition(format!(
                    "`{}` is out of order here",
                    phase_name(&request)
                )))
            }
        }?;
        let more = !matches!(answer, Out::ImmediateResponse(_));
        if !more {
            self.count("replied");
        } else if matches!(answer, Out::ResponseHeaders(_) | Out::ResponseBody(_))
            && self.stage == Stage::Done
        {
            self.count("forwarded");
        }
        let mode_override = std::mem::take(&mut self.override_modes).then(|| ProcessingMode {
            request_body_mode: BUFFERED,
            response_body_mode: BUFFERED,
            ..ProcessingMode::default()
        });
        Ok((
            ProcessingResponse {
                response: Some(answer),
                mode_override,
                ..ProcessingResponse::default()
            },
            more,
        ))
    }

    async fn request_headers(
        &mut self,
        attributes: &Attributes,
        modes: Option<(i32, i32)>,
        h: HttpHeaders,
    ) -> Result<Out, Status> {
        let shared = Arc::clone(&self.shared);
        let chains = shared.chains.load();
        let (pseudo, headers) = split_headers(h.headers.as_ref())?;
        let route_name = match &chains.route_from {
            RouteSource::Header(name) => crate::exchange::first(&headers, name).map(str::to_owned),
            RouteSource::Attribute(name) => attributes.get(name),
            RouteSource::Metadata(ns, key) => attributes.metadata(ns, key),
        };
        let route = match chains.route(route_name.as_deref()) {
            Ok(Some(route)) => route,
            Ok(None) => {
                self.stage = Stage::Passthrough;
                shared.metrics.request("unknown", "ext_proc", "forwarded");
                return Ok(Out::RequestHeaders(HeadersResponse::default()));
            }
            Err(()) => {
                shared.metrics.request("unknown", "ext_proc", "replied");
                return Ok(immediate(Reply::error(
                    404,
                    "unknown_route",
                    "no route is configured for this request",
                )));
            }
        };
        let method = pseudo_value(&pseudo, ":method");
        let path = pseudo_value(&pseudo, ":path");
        let mut ex = Exchange::new(Arc::clone(&route.name), method, path, headers);
        self.route = Some(Arc::clone(&route));
        ex.client = attributes.source_address();
        let limits = chains.limits;
        if ex.state_bytes() > limits.max_state_bytes {
            self.exchange = Some(ex);
            return Ok(immediate(Reply::error(
                431,
                "headers_too_large",
                "the request's headers are over the processor's state limit",
            )));
        }
        if let Some((req_mode, resp_mode)) = modes
            && ((route.request_needs_body() && req_mode != BUFFERED)
                || (route.response_needs_body() && resp_mode != BUFFERED))
        {
            tracing::error!(route = %route.name, request_body_mode = req_mode, response_body_mode = resp_mode,
                "a chain of this route reads a body, but Envoy does not send it buffered (processing_mode)");
            self.exchange = Some(ex);
            return Ok(immediate(chain::internal()));
        }
        if route.request_needs_body() && !h.end_of_stream {
            self.exchange = Some(ex);
            self.stage = Stage::RequestBody;
            // Envoy did not say how it sends bodies: ask for them buffered (honoured when the
            // filter sets `allow_mode_override`; if it does not, the response comes next and
            // is refused as out of order).
            self.override_modes = modes.is_none();
            return Ok(Out::RequestHeaders(HeadersResponse::default()));
        }
        if h.end_of_stream {
            ex.body = Some(Vec::new());
        }
        let verdict = self.run(&mut ex, Phase::Request).await;
        self.exchange = Some(ex);
        self.stage = Stage::Upstream;
        Ok(match verdict {
            Verdict::Reply(reply) => immediate(reply),
            Verdict::Forward(m) => Out::RequestHeaders(HeadersResponse {
                response: common(&m, false),
            }),
        })
    }

    async fn response_headers(&mut self, h: HttpHeaders) -> Result<Out, Status> {
        let (pseudo, headers) = split_headers(h.headers.as_ref())?;
        let Some(mut ex) = self.exchange.take() else {
            return Err(Status::internal("no exchange"));
        };
        ex.status = pseudo_value(&pseudo, ":status").parse().ok();
        ex.response_headers = headers;
        let Some(route) = self.route.clone() else {
            return Err(Status::internal("no route"));
        };
        if ex.state_bytes() > self.shared.chains.load().limits.max_state_bytes {
            self.exchange = Some(ex);
            return Ok(immediate(Reply::error(
                502,
                "headers_too_large",
                "the response's headers are over the processor's state limit",
            )));
        }
        if route.response_needs_body() && !h.end_of_stream {
            self.exchange = Some(ex);
            self.stage = Stage::ResponseBody;
            return Ok(Out::ResponseHeaders(HeadersResponse::default()));
        }
        if h.end_of_stream {
            ex.response_body = Some(Vec::new());
        }
        let verdict = self.run(&mut ex, Phase::Response).await;
        self.exchange = Some(ex);
        self.stage = Stage::Done;
        Ok(match verdict {
            Verdict::Reply(reply) => immediate(reply),
            Verdict::Forward(m) => Out::ResponseHeaders(HeadersResponse {
                response: common(&m, false),
            }),
        })
    }

    async fn body(&mut self, phase: Phase, b: HttpBody) -> Result<Out, Status> {
        let Some(mut ex) = self.exchange.take() else {
            return Err(Status::internal("no exchange"));
        };
        let limit = self.shared.chains.load().limits.max_body_bytes;
        if !b.end_of_stream {
            // A streamed chunk: the chain would run on part of the body while the rest went on.
            tracing::error!(route = %ex.route, phase = phase.as_str(),
                "a body arrived in chunks, but the chain reads whole bodies: set the body mode to BUFFERED");
            self.exchange = Some(ex);
            return Ok(immediate(chain::internal()));
        }
        if b.body.len() > limit {
            let reply = match phase {
                Phase::Request => Reply::error(
                    413,
                    "body_too_large",
                    "the request body is over the processor's limit",
                ),
                Phase::Response => Reply::error(
                    502,
                    "body_too_large",
                    "the response body is over the processor's limit",
                ),
            };
            self.exchange = Some(ex);
            return Ok(immediate(reply));
        }
        match phase {
            Phase::Request => ex.body = Some(b.body),
            Phase::Response => ex.response_body = Some(b.body),
        }
        let verdict = self.run(&mut ex, phase).await;
        self.exchange = Some(ex);
        self.stage = match phase {
            Phase::Request => Stage::Upstream,
            Phase::Response => Stage::Done,
        };
        Ok(match verdict {
            Verdict::Reply(reply) => immediate(reply),
            Verdict::Forward(m) => {
                let answer = BodyResponse {
                    response: common(&m, true),
                };
                match phase {
                    Phase::Request => Out::RequestBody(answer),
                    Phase::Response => Out::ResponseBody(answer),
                }
            }
        })
    }

    async fn run(&self, ex: &mut Exchange, phase: Phase) -> Verdict {
        let timeout = Duration::from_millis(self.shared.chains.load().limits.step_timeout_ms);
        let Some(route) = &self.route else {
            // INVARIANT: the route is set with the exchange; were it not, refuse.
            return Verdict::Reply(chain::internal());
        };
        chain::run(
            &*self.shared.host,
            &self.shared.metrics,
            route,
            ex,
            phase,
            timeout,
        )
        .await
    }
}

/// The answer that lets a message through unchanged.
fn continue_for(request: &In) -> ProcessingResponse {
    let response = match request {
        In::RequestHeaders(_) => Out::RequestHeaders(HeadersResponse::default()),
        In::ResponseHeaders(_) => Out::ResponseHeaders(HeadersResponse::default()),
        In::RequestBody(_) => Out::RequestBody(BodyResponse::default()),
        In::ResponseBody(_) => Out::ResponseBody(BodyResponse::default()),
        In::RequestTrailers(_) => Out::RequestTrailers(TrailersResponse::default()),
        In::ResponseTrailers(_) => Out::ResponseTrailers(TrailersResponse::default()),
    };
    ProcessingResponse {
        response: Some(response),
        ..ProcessingResponse::default()
    }
}

fn phase_name(request: &In) -> &'static str {
    match request {
        In::RequestHeaders(_) => "request_headers",
        In::ResponseHeaders(_) => "response_headers",
        In::RequestBody(_) => "request_body",
        In::ResponseBody(_) => "response_body",
        In::RequestTrailers(_) => "request_trailers",
        In::ResponseTrailers(_) => "response_trailers",
    }
}

/// Largest header value accepted from Envoy, in bytes (Envoy's own default header limit is
/// 60 KiB for all of them).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Pseudo-headers and headers, names lowercased. A header's value is read from `raw_value`
/// (what Envoy sends) or `value`; one that is not UTF-8 is refused.
pub(crate) fn split_headers(map: Option<&HeaderMap>) -> Result<(Headers, Headers), Status> {
    let mut pseudo = Vec::new();
    let mut headers = Vec::new();
    for h in map.map(|m| m.headers.as_slice()).unwrap_or_default() {
        let value = header_text(h)?;
        let name = h.key.to_ascii_lowercase();
        if name.starts_with(':') {
            pseudo.push((name, value));
        } else {
            headers.push((name, value));
        }
    }
    Ok((pseudo, headers))
}

fn header_text(h: &HeaderValue) -> Result<String, Status> {
    if h.key.len() + h.value.len() + h.raw_value.len() > MAX_HEADER_BYTES {
        return Err(Status::invalid_argument("a header is over the size limit"));
    }
    if !h.raw_value.is_empty() {
        return String::from_utf8(h.raw_value.clone())
            .map_err(|_| Status::invalid_argument("a header value is not UTF-8"));
    }
    Ok(h.value.clone())
}

fn pseudo_value(pseudo: &Headers, name: &str) -> String {
    crate::exchange::first(pseudo, name)
        .unwrap_or_default()
        .to_owned()
}

fn header_option(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value: String::new(),
            raw_value: value.as_bytes().to_vec(),
        }),
        append_action: OVERWRITE,
        ..HeaderValueOption::default()
    }
}

/// The changes `m` as Envoy's `CommonResponse` (none when nothing changes). `body_phase`: the
/// answer is to a body message, where a replaced body applies.
fn common(m: &Mutations, body_phase: bool) -> Option<CommonResponse> {
    if m.is_empty() {
        return None;
    }
    let mut set: Vec<HeaderValueOption> = m.set.iter().map(|(k, v)| header_option(k, v)).collect();
    let mut remove = m.remove.clone();
    let body_mutation = match (&m.body, body_phase) {
        (Some(body), true) => {
            // The length changed with the body; Envoy forwards what it is told.
            remove.retain(|k| k != "content-length");
            set.retain(|h| h.header.as_ref().is_none_or(|h| h.key != "content-length"));
            set.push(header_option("content-length", &body.len().to_string()));
            Some(BodyMutation {
                mutation: Some(body_mutation::Mutation::Body(body.clone())),
            })
        }
        _ => None,
    };
    Some(CommonResponse {
        header_mutation: Some(HeaderMutation {
            set_headers: set,
            remove_headers: remove,
        }),
        body_mutation,
        ..CommonResponse::default()
    })
}

/// `reply` as an immediate response.
pub(crate) fn immediate(reply: Reply) -> Out {
    Out::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus {
            code: i32::from(reply.status),
        }),
        headers: Some(HeaderMutation {
            set_headers: reply
                .headers
                .iter()
                .map(|(k, v)| header_option(k, v))
                .collect(),
            remove_headers: Vec::new(),
        }),
        body: reply.body,
        details: "warden".to_owned(),
        ..ImmediateResponse::default()
    })
}

/// The attributes and filter metadata of the first message.
pub(crate) struct Attributes {
    values: Vec<(String, String)>,
    metadata: Vec<(String, String, String)>,
}

fn message_attributes(
    attributes: &std::collections::HashMap<String, envoy_types::pb::google::protobuf::Struct>,
    metadata: &Option<envoy_types::pb::envoy::config::core::v3::Metadata>,
) -> Attributes {
    use envoy_types::pb::google::protobuf::value::Kind;
    let text = |v: &envoy_types::pb::google::protobuf::Value| match &v.kind {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        Some(Kind::NumberValue(n)) => Some(n.to_string()),
        Some(Kind::BoolValue(b)) => Some(b.to_string()),
        _ => None,
    };
    let values = attributes
        .values()
        .flat_map(|s| s.fields.iter())
        .filter_map(|(k, v)| Some((k.clone(), text(v)?)))
        .collect();
    let metadata = metadata
        .iter()
        .flat_map(|m| m.filter_metadata.iter())
        .flat_map(|(ns, s)| {
            s.fields
                .iter()
                .filter_map(|(k, v)| Some((ns.clone(), k.clone(), text(v)?)))
        })
        .collect();
    Attributes { values, metadata }
}

impl Attributes {
    fn get(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn metadata(&self, ns: &str, key: &str) -> Option<String> {
        self.metadata
            .iter()
            .find(|(n, k, _)| n == ns && k == key)
            .map(|(_, _, v)| v.clone())
    }

    /// `source.address` (`ip:port`) as an address.
    fn source_address(&self) -> Option<std::net::IpAddr> {
        let text = self.get("source.address")?;
        text.parse::<std::net::SocketAddr>()
            .map(|a| a.ip())
            .or_else(|_| text.parse())
            .ok()
    }
}
