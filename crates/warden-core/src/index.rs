//! Candidate selection: which rules could possibly match a request, found through indexes so
//! that the cost of a decision does not grow with rules about other tools.
//!
//! A rule is filed under exactly one bucket, the most selective condition it has:
//! its `tools` globs (exact names in a hash map, globs by their literal prefix), else its
//! `classes`, else the catch-all list. A rule found through its bucket is still checked in full.

use std::collections::HashMap;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::glob::Glob;

/// Rule numbers (positions in document order) chosen for one request.
pub type Candidates = SmallVec<[u32; 16]>;

/// The indexes over one policy's rules.
#[derive(Debug, Clone, Default)]
pub struct RuleIndex {
    by_tool: HashMap<Box<str>, Vec<u32>>,
    by_prefix: HashMap<Box<str>, Vec<u32>>,
    /// Distinct prefix lengths present in `by_prefix`, ascending.
    prefix_lens: Vec<usize>,
    by_class: HashMap<Arc<str>, Vec<u32>>,
    catch_all: Vec<u32>,
}

impl RuleIndex {
    /// Files rule `rule` by its tool globs.
    pub fn add_tools(&mut self, rule: u32, tools: &[Glob]) {
        for glob in tools {
            if glob.is_exact() {
                self.by_tool
                    .entry(glob.as_str().into())
                    .or_default()
                    .push(rule);
            } else {
                let prefix = glob.literal_prefix();
                if !self.prefix_lens.contains(&prefix.len()) {
                    self.prefix_lens.push(prefix.len());
                    self.prefix_lens.sort_unstable();
                }
                self.by_prefix.entry(prefix.into()).or_default().push(rule);
            }
        }
    }

    /// Files rule `rule` by its classes.
    pub fn add_classes(&mut self, rule: u32, classes: &[Arc<str>]) {
        for class in classes {
            self.by_class.entry(class.clone()).or_default().push(rule);
        }
    }

    /// Files rule `rule` as a candidate for every request.
    pub fn add_catch_all(&mut self, rule: u32) {
        self.catch_all.push(rule);
    }

    /// Rules that may match a request for `tool` with `classes`, in document order.
    pub fn candidates(&self, tool: Option<&str>, classes: &[Arc<str>]) -> Candidates {
        let mut out = Candidates::new();
        out.extend_from_slice(&self.catch_all);
        if let Some(tool) = tool {
            if let Some(rules) = self.by_tool.get(tool) {
                out.extend_from_slice(rules);
            }
            for &len in &self.prefix_lens {
                let Some(prefix) = tool.get(..len) else {
                    // Longer than the tool, or not on a char boundary: no prefix of this length.
                    continue;
                };
                if let Some(rules) = self.by_prefix.get(prefix) {
                    out.extend_from_slice(rules);
                }
            }
        }
        for class in classes {
            if let Some(rules) = self.by_class.get(class) {
                out.extend_from_slice(rules);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn selects_by_exact_prefix_class_and_catch_all() {
        let mut index = RuleIndex::default();
        index.add_tools(0, &[Glob::new("db.*").unwrap()]);
        index.add_tools(1, &[Glob::new("send_email").unwrap()]);
        index.add_classes(2, &["external_write".into()]);
        index.add_catch_all(3);
        index.add_tools(
            4,
            &[
                Glob::new("*_email").unwrap(),
                Glob::new("send_email").unwrap(),
            ],
        );
        let c = |tool: Option<&str>, classes: &[&str]| {
            let classes: Vec<Arc<str>> = classes.iter().map(|c| Arc::from(*c)).collect();
            index.candidates(tool, &classes).to_vec()
        };
        assert_eq!(c(Some("db.read"), &[]), vec![0, 3, 4]);
        assert_eq!(c(Some("send_email"), &["external_write"]), vec![1, 2, 3, 4]);
        assert_eq!(c(Some("other"), &[]), vec![3, 4]);
        assert_eq!(c(None, &[]), vec![3]);
        assert_eq!(c(Some("é"), &[]), vec![3, 4]);
    }
}
