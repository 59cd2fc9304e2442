//! One HTTP exchange as the chains see it: the request (and later the response) read from
//! Envoy's messages, who the caller turned out to be, and what the chains changed. Pure data:
//! no protocol types, so ext_proc and ext_authz share it.

use std::net::IpAddr;
use std::sync::Arc;

/// The caller a step authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Public id (an API key's id, a token's subject): never the credential.
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The policy the tenant's requests are decided by.
    pub policy: String,
    /// Roles, for `roleCheck`.
    pub roles: Vec<String>,
}

/// A header list: lowercase names, in arrival order (a name may repeat).
pub type Headers = Vec<(String, String)>;

/// The request and response of one exchange.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The name of the route it belongs to.
    pub route: Arc<str>,
    /// `:method`.
    pub method: String,
    /// `:path`, query included.
    pub path: String,
    /// Request headers (pseudo-headers removed).
    pub headers: Headers,
    /// The request body, once read (None: not read, or none).
    pub body: Option<Vec<u8>>,
    /// The client's address, when Envoy sent it.
    pub client: Option<IpAddr>,
    /// The caller, once a step authenticated one.
    pub caller: Option<Identity>,
    /// The response status, once the response phase began.
    pub status: Option<u16>,
    /// Response headers.
    pub response_headers: Headers,
    /// The response body, once read.
    pub response_body: Option<Vec<u8>>,
}

impl Exchange {
    /// A request on `route`.
    pub fn new(route: Arc<str>, method: String, path: String, headers: Headers) -> Self {
        Self {
            route,
            method,
            path,
            headers,
            body: None,
            client: None,
            caller: None,
            status: None,
            response_headers: Vec::new(),
            response_body: None,
        }
    }

    /// The first request header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }

    /// Bytes this exchange holds between phases, for the `max_state_bytes` limit.
    pub fn state_bytes(&self) -> usize {
        let h = |hs: &Headers| hs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        self.method.len() + self.path.len() + h(&self.headers) + h(&self.response_headers)
    }
}

/// The first header `name` of `headers`.
pub fn first<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// An answer sent to the client instead of forwarding (a denial, a 429, a local error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers to send.
    pub headers: Headers,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON error answer `{"error": code, "message": message}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        let body = serde_json::json!({"error": code, "message": message});
        Self {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: body.to_string().into_bytes(),
        }
    }

    /// With one more header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// What the chains changed, applied by the front door to what is forwarded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mutations {
    /// Headers set (replacing any of that name).
    pub set: Headers,
    /// Headers removed.
    pub remove: Vec<String>,
    /// A replacement body.
    pub body: Option<Vec<u8>>,
}

impl Mutations {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty() && self.body.is_none()
    }

    /// Sets `name` to `value` here and in `headers`, so later steps see it.
    pub fn set_header(&mut self, headers: &mut Headers, name: &str, value: String) {
        headers.retain(|(k, _)| k != name);
        headers.push((name.to_owned(), value.clone()));
        self.remove.retain(|k| k != name);
        self.set.retain(|(k, _)| k != name);
        self.set.push((name.to_owned(), value));
    }

    /// Removes `name` here and from `headers`.
    pub fn remove_header(&mut self, headers: &mut Headers, name: &str) {
        headers.retain(|(k, _)| k != name);
        self.set.retain(|(k, _)| k != name);
        if !self.remove.iter().any(|k| k == name) {
            self.remove.push(name.to_owned());
        }
    }
}

/// What one `auditLog` step records of an exchange: the route, the method, the caller and (in
/// the response chain) the status; the daemon records the path and query as a hash only, since
/// they may carry personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRecord {
    /// The route's name.
    pub route: String,
    /// The chain the step runs in.
    pub phase: Phase,
    /// `:method`.
    pub method: String,
    /// `:path`, query included (hashed by the daemon, never written as is).
    pub target: String,
    /// The response status (response chain only).
    pub status: Option<u16>,
    /// The caller's id, once a step before authenticated one.
    pub principal: Option<String>,
    /// The caller's tenant.
    pub tenant: Option<String>,
}

impl ExchangeRecord {
    /// What an `auditLog` step in the request (or, with `response`, the response) chain
    /// records of `ex`.
    pub fn of(ex: &Exchange, response: bool) -> Self {
        Self {
            route: ex.route.to_string(),
            phase: if response {
                Phase::Response
            } else {
                Phase::Request
            },
            method: ex.method.clone(),
            target: ex.path.clone(),
            status: if response { ex.status } else { None },
            principal: ex.caller.as_ref().map(|c| c.id.clone()),
            tenant: ex.caller.as_ref().map(|c| c.tenant.clone()),
        }
    }
}

/// The phase a chain runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The request, before the upstream.
    Request,
    /// The response, before the client.
    Response,
}

impl Phase {
    /// `request` or `response`, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Request => "request",
            Phase::Response => "response",
        }
    }
}

/// A configured header name (letters, digits, `-`, `_`), lowercased; `field` names it in the
/// error.
pub(crate) fn header_name(
    name: &str,
    field: &str,
) -> Result<String, crate::error::EnvoyConfigError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(crate::error::EnvoyConfigError::new(
            field,
            format!("`{name}` is not a header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}
