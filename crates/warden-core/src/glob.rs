//! Anchored, case-sensitive wildcard globs (`*` any run of characters, `?` exactly one).
//!
//! The spec's globs have no escapes and no character classes, so a purpose-built matcher is
//! smaller and faster than a general glob crate (which would give `/`, `[` and `{` meanings the
//! spec does not). Patterns are analysed once at load so that the common shapes (exact name,
//! `prefix*`, `*suffix`) match without the general algorithm.

use std::fmt;

/// A compiled glob pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Box<str>,
    shape: Shape,
}

#[derive(Clone, PartialEq, Eq)]
enum Shape {
    /// No wildcard at all.
    Exact,
    /// `literal*` with no other wildcard.
    Prefix(Box<str>),
    /// `*literal` with no other wildcard.
    Suffix(Box<str>),
    /// `*` alone.
    Any,
    /// Anything else: the general matcher over chars.
    General(Box<[char]>),
}

/// Why a glob pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// The pattern is the empty string, which could only match an empty name.
    #[error("empty glob")]
    Empty,
}

impl Glob {
    /// Compiles a pattern. The only invalid pattern is the empty one.
    pub fn new(pattern: &str) -> Result<Self, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        let wildcards = pattern.chars().filter(|c| *c == '*' || *c == '?').count();
        let shape = if wildcards == 0 {
            Shape::Exact
        } else if pattern == "*" {
            Shape::Any
        } else if wildcards == 1 && pattern.ends_with('*') {
            Shape::Prefix(pattern.trim_end_matches('*').into())
        } else if wildcards == 1 && pattern.starts_with('*') {
            Shape::Suffix(pattern.trim_start_matches('*').into())
        } else {
            Shape::General(pattern.chars().collect())
        };
        Ok(Self {
            pattern: pattern.into(),
            shape,
        })
    }

    /// The source pattern.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// True when the pattern has no wildcard, so it names exactly one string.
    pub fn is_exact(&self) -> bool {
        matches!(self.shape, Shape::Exact)
    }

    /// The literal text before the first wildcard (the whole pattern when exact).
    pub fn literal_prefix(&self) -> &str {
        let end = self.pattern.find(['*', '?']).unwrap_or(self.pattern.len());
        self.pattern.get(..end).unwrap_or("")
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        match &self.shape {
            Shape::Exact => &*self.pattern == text,
            Shape::Any => true,
            Shape::Prefix(p) => text.starts_with(&**p),
            Shape::Suffix(s) => text.ends_with(&**s),
            Shape::General(pattern) => wildcard_match(pattern, text),
        }
    }
}

/// Iterative wildcard match with single-star backtracking: linear in practice, `O(p * t)` worst case.
fn wildcard_match(pattern: &[char], text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0usize, 0usize);
    // Position of the last `*` seen in the pattern and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match (pattern.get(p), text.get(t)) {
            (Some('?'), Some(_)) => {
                p += 1;
                t += 1;
            }
            (Some('*'), _) => {
                star = Some((p, t));
                p += 1;
            }
            (Some(pc), Some(tc)) if pc == tc => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last star swallow one more character and retry.
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.pattern)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

#[cfg(test)]
#[path = "glob_tests.rs"]
mod tests;
