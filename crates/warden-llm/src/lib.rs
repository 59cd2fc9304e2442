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

/// Who asks and in which session: copied into every request decided for one exchange.
#[derive(Debug, Clone, Default)]
pub struct Asker {
    /// The principal (the API key's tenant), none for an anonymous caller.
    pub principal: Option<String>,
    /// The Warden session the exchange's decisions read and extend.
    pub session: Option<String>,
    /// The request's attributes (model, api, mount, stream, max_tokens), as `context`.
    pub context: serde_json::Map<String, serde_json::Value>,
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
