//! Warden's LLM front door, without I/O: what an OpenAI-compatible Chat Completions request or
//! an Anthropic-compatible Messages request asks, what the model answered (whole or streamed),
//! and how both are decided and rewritten before the other side sees them.
//!
//! - [`chat`]: a request read strictly (unknown members and content parts Warden cannot
//!   inspect are refused), every text in it found, decided as one `prompt` request, and the
//!   texts redacted in place before the body is written again for the upstream.
//! - [`reply`]: a whole answer: its texts decided as one `completion` request and redacted; the
//!   tool calls the model proposes decided as `tool_call` requests, a denied one removed and
//!   replaced by an explanation the client's SDK reads as text.
//! - [`stream`]: a streamed answer, event by event: text is released only once the content
//!   detectors have seen what follows it ([`held::HeldText`]), so a finding cut across chunks
//!   is still redacted; tool calls are held until complete, then decided; a finding that must
//!   block ends the stream with the provider's error event.
//!
//! The host (the daemon) reads and writes the bytes and decides through its pipeline, behind
//! [`Judge`].

#![forbid(unsafe_code)]

pub mod api;
pub mod chat;
mod fast;
pub mod held;
pub mod reply;
pub mod stream;
mod texts;

pub use texts::redact_error;

pub use api::{Api, Refusal, RefusalKind};
pub use chat::ChatRequest;

use std::sync::Arc;

use warden_core::{Decision, Request};

/// Decides requests for the front door: the host's pipeline, with every effect (audit, log,
/// metrics, session history).
pub trait Judge {
    /// Decides one request. An error means the decision failed (the caller fails closed).
    fn decide(&self, request: &Request) -> Result<Decision, String>;

    /// The deciding policy's content inspection, for scans of streamed text that are not
    /// decisions of their own (none: the policy inspects no content).
    fn content(&self) -> Option<Arc<warden_content::ContentPolicy>>;
}

/// Tokens of one exchange, as the upstream reports them (or as estimated before).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input: u64,
    /// Answer tokens.
    pub output: u64,
}

impl Usage {
    /// The usage an answer (or a stream's usage object) reports: OpenAI's `prompt_tokens` and
    /// `completion_tokens`, Anthropic's `input_tokens` and `output_tokens`.
    pub fn of(api: Api, usage: &serde_json::Value) -> Option<Self> {
        let n = |key: &str| usage.get(key).and_then(serde_json::Value::as_u64);
        match api {
            Api::Openai => Some(Self {
                input: n("prompt_tokens")?,
                output: n("completion_tokens")?,
            }),
            Api::Anthropic => Some(Self {
                input: n("input_tokens").unwrap_or(0),
                output: n("output_tokens")?,
            }),
        }
    }
}

/// A model's price in US dollars per million tokens (the daemon's `llm_prices`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens.
    pub input_per_mtok: f64,
    /// Answer tokens.
    pub output_per_mtok: f64,
}

impl Price {
    /// The cost of `usage` in US dollars.
    pub fn usd(&self, usage: Usage) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let cost =
            usage.input as f64 * self.input_per_mtok + usage.output as f64 * self.output_per_mtok;
        cost / 1_000_000.0
    }

    /// The cost of `input` and `output` tokens in micro-dollars, rounded up.
    pub fn micro_usd(&self, input: u64, output: u64) -> u64 {
        #[allow(clippy::cast_precision_loss)]
        let cost = input as f64 * self.input_per_mtok + output as f64 * self.output_per_mtok;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let micro = cost.max(0.0).ceil().min(9.0e15) as u64;
        micro
    }
}

/// Who asks and in which session: copied into every request decided for one exchange.
#[derive(Debug, Clone, Default)]
pub struct Asker {
    /// The principal (the API key's tenant), none for an anonymous caller.
    pub principal: Option<String>,
    /// The Warden session the exchange's decisions read and extend.
    pub session: Option<String>,
    /// The request's attributes (model, api, mount, stream, max_tokens), as `context`.
    pub context: serde_json::Map<String, serde_json::Value>,
    /// The asked model's price, when the daemon has one: completion decisions then carry the
    /// answer's `cost_usd`.
    pub price: Option<Price>,
}

impl Asker {
    /// A request of `kind` carrying this asker's principal, session and context.
    pub fn request(&self, kind: warden_core::Kind) -> Request {
        Request {
            session: self.session.clone(),
            principal: self.principal.clone(),
            kind,
            context: Some(self.context.clone()),
            ..Request::default()
        }
    }
}
