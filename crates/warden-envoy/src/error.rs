//! The one error of this crate's API: a configuration that does not compile.

/// The configuration is invalid: names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct EnvoyConfigError {
    /// Dotted path of the field (`envoy.routes.orders.request[1].config.per_second`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl EnvoyConfigError {
    /// An error at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
