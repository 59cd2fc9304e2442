//! The two public error enums: load-time ([`RegoError`]) and evaluation-time ([`RegoEvalError`]).

/// A Rego policy could not be loaded: a module, the base document or a query is wrong.
///
/// Every variant is a load error; a policy that fails with one of these must not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegoError {
    /// A module has a syntax or compile error.
    #[error("rego module `{module}` line {line} column {column}: {message}")]
    Module {
        /// The module's name as given in [`crate::RegoModule::name`] (empty when regorus did
        /// not attribute the error to one module).
        module: String,
        /// 1-based line of the error, 0 when unknown.
        line: u32,
        /// 1-based column of the error, 0 when unknown.
        column: u32,
        /// What is wrong, without the source excerpt.
        message: String,
    },
    /// The base `data` document is not an object or conflicts with itself.
    #[error("rego data: {message}")]
    Data {
        /// What is wrong.
        message: String,
    },
    /// A query is well formed but names nothing the modules or the base document define.
    #[error("rego query `{query}` names no rule, package or data defined by the policy")]
    UndefinedQuery {
        /// The query as written.
        query: String,
    },
    /// A query is not a reference such as `data.pkg.rule`.
    #[error("rego query `{query}` is invalid: {message}")]
    InvalidQuery {
        /// The query as written.
        query: String,
        /// What is wrong.
        message: String,
    },
}

/// One evaluation failed. Callers fail closed on either variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegoEvalError {
    /// The evaluation ran over its time budget, or the input is nested deeper than allowed
    /// (see [`crate::RegoLimits`]).
    #[error("rego: limit exceeded")]
    LimitExceeded,
    /// Evaluation raised an error (a built-in error in strict mode, a conflict between rule
    /// values, a query that does not parse, ...).
    #[error("rego: {message}")]
    Eval {
        /// regorus' message.
        message: String,
    },
}
