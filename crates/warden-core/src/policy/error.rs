//! Load-time errors: every problem found in a policy, each with its source location.

use std::fmt;

/// One problem in a policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line (0 when the location is unknown).
    pub line: u64,
    /// 1-based column in characters (0 when unknown).
    pub column: u64,
    /// What is wrong, naming the field.
    pub message: String,
}

/// A policy that failed to load: where it came from and everything wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// The file path, or a name the caller gave the source.
    pub origin: String,
    /// The problems, in document order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for PolicyError {
    /// One `origin:line:col: message` line per problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.origin, d.line, d.column, d.message)?;
        }
        Ok(())
    }
}
