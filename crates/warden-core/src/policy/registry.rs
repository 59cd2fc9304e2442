//! The tool registry: tool-name globs mapped to security classes.

use std::collections::HashMap;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::glob::Glob;

/// A tool's classes, sorted and without duplicates.
pub type Classes = SmallVec<[Arc<str>; 4]>;

/// Compiled registry: exact names in a hash map, globs in a list.
#[derive(Debug, Clone, Default)]
pub struct ToolRegistry {
    exact: HashMap<Box<str>, Vec<Arc<str>>>,
    globs: Vec<(Glob, Vec<Arc<str>>)>,
}

impl ToolRegistry {
    /// Adds one registry entry.
    pub fn insert(&mut self, glob: Glob, classes: Vec<Arc<str>>) {
        if glob.is_exact() {
            self.exact
                .entry(glob.as_str().into())
                .or_default()
                .extend(classes);
        } else {
            self.globs.push((glob, classes));
        }
    }

    /// The union of the classes of every entry matching `tool`, sorted.
    pub fn classes_of(&self, tool: Option<&str>) -> Classes {
        let mut out = Classes::new();
        let Some(tool) = tool else { return out };
        if let Some(classes) = self.exact.get(tool) {
            out.extend(classes.iter().cloned());
        }
        for (glob, classes) in &self.globs {
            if glob.matches(tool) {
                out.extend(classes.iter().cloned());
            }
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        out
    }
}
