//! OpenTelemetry traces: a span per decision and per proxied MCP request, exported over OTLP
//! (gRPC) in the background, with W3C trace context taken from the caller and passed upstream.
//!
//! What a span may carry is decided twice before anything leaves the process: only the
//! attributes named in [`EXPORTED_ATTRIBUTES`] are kept (never an argument value, a prompt or a
//! header), and every string that is kept is scanned with all of Warden's secret and PII
//! detectors and replaced when one matches (a tenant, rule or request id a user chose could
//! itself be a secret). Spans are queued and sent by the SDK's batch processor on its own
//! thread: a slow or absent collector costs dropped spans, never a slower or failed decision.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use crate::config::OtlpProtocol;
pub use crate::config::TelemetrySettings;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter,
};
use warden::content::{Action, ContentPolicy, ContentSpec, KNOWN_DETECTORS, Part, ScanRequest};

/// The only span attributes that are exported; any other is dropped before export.
pub const EXPORTED_ATTRIBUTES: &[&str] = &[
    "warden.tenant",
    "warden.policy",
    "warden.policy.version",
    "warden.policy.digest",
    "warden.rule",
    "warden.verdict",
    "warden.latency_us",
    "warden.request_id",
    "warden.mcp.upstream",
    "http.request.method",
    "http.response.status_code",
];

type OtlpHyperClient = opentelemetry_http::hyper::HyperClient<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
>;

/// The OTLP/HTTP client, run on the daemon's runtime: the batch processor exports from a
/// thread of its own, where hyper and its timer would find no runtime.
#[derive(Debug)]
struct OnRuntime {
    client: OtlpHyperClient,
    runtime: tokio::runtime::Handle,
}

impl opentelemetry_http::HttpClient for OnRuntime {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<
                        opentelemetry_http::Response<opentelemetry_http::Bytes>,
                        opentelemetry_http::HttpError,
                    >,
                > + Send
                + 'b,
        >,
    >
    where
        'a: 'b,
        Self: 'b,
    {
        let client = self.client.clone();
        let task = self
            .runtime
            .spawn(async move { client.send_bytes(request).await });
        Box::pin(async move {
            match task.await {
                Ok(answer) => answer,
                Err(e) => Err(Box::new(e) as opentelemetry_http::HttpError),
            }
        })
    }
}

/// The OTLP/HTTP client: `http://`, or `https://` verified against the system's roots.
fn http_client(timeout: Duration) -> Result<OnRuntime, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("telemetry: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(OnRuntime {
        client: opentelemetry_http::hyper::HyperClient::new(connector, timeout, None),
        runtime: tokio::runtime::Handle::current(),
    })
}

/// Traces, when `telemetry.otlp_endpoint` is set.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Telemetry {
    /// Starts the exporter for `settings` (none without an endpoint). Needs a tokio runtime:
    /// the gRPC channel's worker runs on it.
    pub fn start(settings: &TelemetrySettings) -> Result<Option<Self>, String> {
        settings.check()?;
        let Some(endpoint) = &settings.otlp_endpoint else {
            return Ok(None);
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("telemetry.otlp_endpoint needs the daemon's runtime".to_owned());
        }
        let timeout = Duration::from_millis(settings.export_timeout_ms);
        let exporter = match settings.otlp_protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(timeout)
                .build(),
            OtlpProtocol::Http => {
                use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_http_client(http_client(timeout)?)
                    .with_endpoint(endpoint.clone())
                    .with_timeout(timeout)
                    .build()
            }
        }
        .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
        let processor = BatchSpanProcessor::builder(MaskingExporter::new(exporter)?)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(settings.max_queue)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("warden");
        Ok(Some(Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        }))
    }

    /// The trace context the caller sent (`traceparent`, `tracestate`), or an empty one.
    pub fn extract(&self, headers: &HeaderMap) -> Context {
        self.propagator.extract(&HeaderReader(headers))
    }

    /// Records a finished decision as a span, a child of the current context's span.
    pub fn decision(&self, attributes: DecisionAttributes<'_>, latency: Duration) {
        let end = SystemTime::now();
        let start = end.checked_sub(latency).unwrap_or(end);
        // The sampler needs no attributes: they are built only for a span that is recorded.
        let mut span = self
            .tracer
            .span_builder("warden.decision")
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .start_with_context(&self.tracer, &Context::current());
        if !span.is_recording() {
            return;
        }
        let mut fields = vec![
            KeyValue::new("warden.tenant", attributes.tenant.to_owned()),
            KeyValue::new("warden.policy", attributes.policy.to_owned()),
            KeyValue::new("warden.policy.digest", attributes.digest.to_owned()),
            KeyValue::new("warden.verdict", attributes.verdict),
            KeyValue::new(
                "warden.latency_us",
                i64::try_from(latency.as_micros()).unwrap_or(i64::MAX),
            ),
        ];
        if let Some(version) = attributes.version {
            fields.push(KeyValue::new("warden.policy.version", version.to_owned()));
        }
        if let Some(rule) = attributes.rule {
            fields.push(KeyValue::new("warden.rule", rule.to_owned()));
        }
        if let Some(id) = attributes.request_id {
            fields.push(KeyValue::new("warden.request_id", id.to_owned()));
        }
        span.set_attributes(fields);
        span.end_with_timestamp(end);
    }

    /// Starts the span of a request proxied to the MCP upstream `upstream` (a child of
    /// `parent`), and writes its context into `headers` (`traceparent` replaces the caller's:
    /// the upstream's parent is Warden's span). The returned context makes it current for the
    /// decisions taken while proxying; [`Self::end_proxy`] ends it.
    pub fn start_proxy(
        &self,
        parent: &Context,
        upstream: &str,
        headers: &mut HeaderMap,
    ) -> Context {
        let span = self
            .tracer
            .span_builder("warden.mcp.proxy")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("warden.mcp.upstream", upstream.to_owned()),
                KeyValue::new("http.request.method", "POST"),
            ])
            .start_with_context(&self.tracer, parent);
        let cx = parent.with_span(span);
        self.propagator
            .inject_context(&cx, &mut HeaderWriter(headers));
        cx
    }

    /// Ends the proxy span `cx` holds with the status code answered.
    pub fn end_proxy(cx: &Context, status: u16) {
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        span.end();
    }

    /// Sends the spans still queued (at shutdown; blocks up to the export timeout).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "telemetry: spans not all exported at shutdown");
        }
    }
}

/// What a decision span says: names, ids and the outcome, never arguments or text.
#[derive(Debug, Clone, Copy)]
pub struct DecisionAttributes<'a> {
    /// The caller's tenant.
    pub tenant: &'a str,
    /// The deciding policy's name.
    pub policy: &'a str,
    /// Its version, when it has one.
    pub version: Option<&'a str>,
    /// Its digest.
    pub digest: &'a str,
    /// `allow`, `deny` or `pending`.
    pub verdict: &'static str,
    /// The deciding rule, when one decided.
    pub rule: Option<&'a str>,
    /// The request id, on HTTP routes.
    pub request_id: Option<&'a str>,
}

struct HeaderReader<'a>(&'a HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderWriter<'a>(&'a mut HeaderMap);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The exporter's filter: drops attributes not in [`EXPORTED_ATTRIBUTES`], events and links,
/// and replaces every kept string holding a secret or PII, before the spans reach `inner`.
#[derive(Debug)]
struct MaskingExporter<E> {
    inner: E,
    detectors: ContentPolicy,
}

/// What a masked attribute value becomes.
const MASKED: &str = "[REDACTED]";

impl<E: SpanExporter> MaskingExporter<E> {
    fn new(inner: E) -> Result<Self, String> {
        let spec = ContentSpec {
            detectors: KNOWN_DETECTORS.iter().map(|d| (*d).to_owned()).collect(),
            input: Some(Action::Redact),
            ..ContentSpec::default()
        };
        let detectors = ContentPolicy::compile(&spec).map_err(|e| e.to_string())?;
        Ok(Self { inner, detectors })
    }

    fn mask(&self, mut span: SpanData) -> SpanData {
        span.attributes
            .retain(|kv| EXPORTED_ATTRIBUTES.contains(&kv.key.as_str()));
        for kv in &mut span.attributes {
            if let Value::String(s) = &kv.value
                && self.holds_secret(s.as_str())
            {
                kv.value = Value::from(MASKED);
            }
        }
        span.events = Default::default();
        span.links = Default::default();
        if let opentelemetry::trace::Status::Error { description } = &span.status
            && self.holds_secret(description)
        {
            span.status = opentelemetry::trace::Status::error(Cow::Borrowed(MASKED));
        }
        span
    }

    fn holds_secret(&self, text: &str) -> bool {
        let value = serde_json::Value::String(text.to_owned());
        let outcome = self.detectors.scan(&ScanRequest {
            input: vec![("/v", Part::Value(&value))],
            ..ScanRequest::default()
        });
        !outcome.findings.is_empty()
    }
}

impl<E: SpanExporter> SpanExporter for MaskingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let masked = batch.into_iter().map(|span| self.mask(span)).collect();
        self.inner.export(masked).await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, Status};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collect {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().map(|mut v| v.extend(batch)).ok();
            Ok(())
        }
    }

    fn span(attributes: Vec<KeyValue>) -> SpanData {
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "warden.decision".into(),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn only_listed_attributes_leave_and_secrets_in_them_are_replaced() {
        let masking = MaskingExporter::new(Collect::default()).unwrap();
        let out = masking.mask(span(vec![
            KeyValue::new("warden.tenant", "acme"),
            KeyValue::new("warden.request_id", "AKIAIOSFODNN7EXAMPLE"),
            KeyValue::new("warden.rule", "mail alice@example.com"),
            KeyValue::new("warden.args", "anything"),
            KeyValue::new("warden.latency_us", 12_i64),
        ]));
        let kept: Vec<(String, String)> = out
            .attributes
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        assert_eq!(
            kept,
            vec![
                ("warden.tenant".to_owned(), "acme".to_owned()),
                ("warden.request_id".to_owned(), MASKED.to_owned()),
                ("warden.rule".to_owned(), MASKED.to_owned()),
                ("warden.latency_us".to_owned(), "12".to_owned()),
            ]
        );
    }

    #[test]
    fn settings_out_of_range_are_refused_naming_the_field() {
        let bad = TelemetrySettings {
            sample_ratio: 1.5,
            ..TelemetrySettings::default()
        };
        assert!(bad.check().unwrap_err().contains("telemetry.sample_ratio"));
        let bad = TelemetrySettings {
            otlp_endpoint: Some("127.0.0.1:4317".to_owned()),
            ..TelemetrySettings::default()
        };
        assert!(bad.check().unwrap_err().contains("telemetry.otlp_endpoint"));
        assert!(TelemetrySettings::default().check().is_ok());
    }
}
