//! Flow proofs: no session can make a forbidden sequence of allowed tool calls.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use crate::glob::Glob;
use crate::policy::CompiledPolicy;
use crate::request::Kind;
use crate::session::SessionState;

use super::explore::{Explorer, StateKey, key};
use super::{AnalysisError, registry_globs};

/// One step of a forbidden sequence.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// `class:NAME`: a call of a tool with that class.
    Class(Arc<str>),
    /// `tool:GLOB` or a bare glob: a call of a matching tool.
    Tool(Glob),
}

/// A forbidden sequence: `STEP -> STEP [-> ...] [within N]`.
#[derive(Debug, Clone)]
pub struct Forbid {
    /// As written.
    pub text: String,
    /// The steps, in order.
    pub steps: Vec<Pattern>,
    /// The last step must come at most this many allowed calls after the first.
    pub within: Option<u32>,
}

impl Forbid {
    /// Parses `class:sensitive_read -> class:external_write within 5`.
    pub fn parse(text: &str) -> Result<Self, AnalysisError> {
        let bad = |message: String| AnalysisError::Forbid {
            pattern: text.to_owned(),
            message,
        };
        let mut body = text.trim();
        let mut within = None;
        let words: Vec<&str> = body.split_whitespace().collect();
        if let [.., w, n] = words.as_slice()
            && *w == "within"
        {
            let n: u32 = n
                .parse()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| bad(format!("`within {n}`: expected a whole number from 1")))?;
            within = Some(n);
            if let Some(cut) = body.rfind("within") {
                body = body.get(..cut).unwrap_or_default().trim_end();
            }
        }
        let mut steps = Vec::new();
        for part in body.split("->") {
            let part = part.trim();
            if part.is_empty() || part.contains(char::is_whitespace) {
                return Err(bad(format!(
                    "`{part}` is not a step (expected class:NAME, tool:GLOB or a tool glob, separated by `->`)"
                )));
            }
            steps.push(if let Some(class) = part.strip_prefix("class:") {
                if class.is_empty() {
                    return Err(bad("`class:` needs a name".to_owned()));
                }
                Pattern::Class(class.into())
            } else {
                let glob = part.strip_prefix("tool:").unwrap_or(part);
                Pattern::Tool(Glob::new(glob).map_err(|e| bad(format!("`{part}`: {e}")))?)
            });
        }
        Ok(Self {
            text: text.trim().to_owned(),
            steps,
            within,
        })
    }

    fn matches(&self, step: usize, tool: &str, policy: &CompiledPolicy) -> bool {
        match self.steps.get(step) {
            Some(Pattern::Class(class)) => policy
                .registry
                .classes_of(Some(tool))
                .iter()
                .any(|c| c == class),
            Some(Pattern::Tool(glob)) => glob.matches(tool),
            None => false,
        }
    }

    /// Progress after one allowed call of `tool`: `None` when the sequence is complete.
    /// `progress[i]`: the fewest calls since the first step of a partial match that has made
    /// steps `0..=i` (0 when there is no `within`).
    fn advance(
        &self,
        progress: &[Option<u32>],
        tool: &str,
        policy: &CompiledPolicy,
    ) -> Option<Vec<Option<u32>>> {
        let last = self.steps.len().saturating_sub(1);
        let aged: Vec<Option<u32>> = progress
            .iter()
            .map(|p| match (p, self.within) {
                (Some(age), Some(within)) => Some(age + 1).filter(|&a| a <= within),
                (Some(_), None) => Some(0),
                (None, _) => None,
            })
            .collect();
        if self.matches(last, tool, policy)
            && (last == 0 || aged.get(last - 1).is_some_and(Option::is_some))
        {
            return None;
        }
        let mut next = aged.clone();
        for i in (1..last).rev() {
            if self.matches(i, tool, policy)
                && let Some(Some(age)) = aged.get(i - 1)
                && let Some(slot) = next.get_mut(i)
            {
                *slot = Some(slot.map_or(*age, |s| s.min(*age)));
            }
        }
        if last > 0
            && self.matches(0, tool, policy)
            && let Some(slot) = next.get_mut(0)
        {
            *slot = Some(0);
        }
        Some(next)
    }
}

/// One request of a counterexample.
#[derive(Debug, Clone, Serialize)]
pub struct CounterStep {
    /// The request (JSON, as `warden eval` reads it).
    pub request: serde_json::Value,
    /// Rules whose argument conditions or Rego were assumed to hold (`true`) or not for this
    /// step to be allowed as shown.
    pub assumed: Vec<(Arc<str>, bool)>,
    /// Whether the engine, deciding this request (without arguments) after the steps before,
    /// allows it: when false, the step needs arguments that meet the assumptions.
    pub reproduced: bool,
}

/// The outcome of a flow proof.
#[derive(Debug, Clone, Serialize)]
pub struct FlowResult {
    /// The forbidden sequence.
    pub forbid: String,
    /// True when no session can make it.
    pub proved: bool,
    /// Session states explored.
    pub states: usize,
    /// Representative requests tried in each state.
    pub requests: usize,
    /// Rules whose argument conditions or Rego queries were over-approximated (assumed both
    /// ways).
    pub over_approximated: Vec<Arc<str>>,
    /// The shortest counterexample, when not proved.
    pub counterexample: Vec<CounterStep>,
}

type Node = (StateKey, Vec<Option<u32>>);
/// (parent node, representative, assumptions) of a node other than the start.
type Parent = Option<(usize, usize, Vec<(usize, bool)>)>;
/// A node's state, progress and how it was reached.
type NodeEntry = (SessionState, Vec<Option<u32>>, Parent);

/// Explores every session state reachable through allowed calls, breadth first, looking for
/// the forbidden sequence; at most `max_states` states.
pub fn prove(
    policy: &CompiledPolicy,
    text: &str,
    forbid: &Forbid,
    max_states: usize,
) -> Result<FlowResult, AnalysisError> {
    let doc_tools = registry_globs(text);
    let extra: Vec<&Glob> = forbid
        .steps
        .iter()
        .filter_map(|s| match s {
            Pattern::Tool(g) => Some(g),
            Pattern::Class(_) => None,
        })
        .collect();
    let mut explorer = Explorer::new(policy, &doc_tools, &extra);
    let start_progress = vec![None; forbid.steps.len().saturating_sub(1)];
    let start = SessionState::default();
    // Per node: its state, progress, parent and the step taken from it.
    let mut nodes: Vec<NodeEntry> = vec![(start.clone(), start_progress.clone(), None)];
    let mut index: HashMap<Node, usize> = HashMap::new();
    index.insert((key(&start), start_progress), 0);
    let mut queue = VecDeque::from([0usize]);
    while let Some(at) = queue.pop_front() {
        let Some((state, progress, _)) = nodes.get(at).cloned() else {
            continue;
        };
        for rep in 0..explorer.reps.len() {
            let steps = explorer.allowed(rep, &state)?;
            let Some(r) = explorer.reps.get(rep).cloned() else {
                continue;
            };
            for step in steps {
                let next_progress = match (&r.kind, &r.tool) {
                    (Kind::ToolCall, Some(tool)) => forbid.advance(&progress, tool, policy),
                    _ => Some(progress.clone()),
                };
                let Some(next_progress) = next_progress else {
                    nodes.push((step.state, Vec::new(), Some((at, rep, step.assumed))));
                    let path = path(&nodes, nodes.len() - 1);
                    return Ok(FlowResult {
                        forbid: forbid.text.clone(),
                        proved: false,
                        states: index.len(),
                        requests: explorer.reps.len(),
                        over_approximated: rule_ids(policy, &explorer),
                        counterexample: counterexample(policy, &explorer, &path),
                    });
                };
                let node = (key(&step.state), next_progress.clone());
                if index.contains_key(&node) {
                    continue;
                }
                if index.len() >= max_states {
                    return Err(AnalysisError::TooManyStates { limit: max_states });
                }
                index.insert(node, nodes.len());
                nodes.push((step.state, next_progress, Some((at, rep, step.assumed))));
                queue.push_back(nodes.len() - 1);
            }
        }
    }
    Ok(FlowResult {
        forbid: forbid.text.clone(),
        proved: true,
        states: index.len(),
        requests: explorer.reps.len(),
        over_approximated: rule_ids(policy, &explorer),
        counterexample: Vec::new(),
    })
}

/// The (representative, assumptions) steps from the start to node `at`.
fn path(nodes: &[NodeEntry], mut at: usize) -> Vec<(usize, Vec<(usize, bool)>)> {
    let mut out = Vec::new();
    while let Some((_, _, Some((parent, rep, assumed)))) = nodes.get(at) {
        out.push((*rep, assumed.clone()));
        at = *parent;
    }
    out.reverse();
    out
}

fn rule_ids(policy: &CompiledPolicy, explorer: &Explorer<'_>) -> Vec<Arc<str>> {
    explorer
        .assumed_rules
        .iter()
        .filter_map(|&n| policy.rules.get(n).map(|r| Arc::clone(&r.id)))
        .collect()
}

/// The counterexample's requests, each checked against the engine's own evaluation.
fn counterexample(
    policy: &CompiledPolicy,
    explorer: &Explorer<'_>,
    path: &[(usize, Vec<(usize, bool)>)],
) -> Vec<CounterStep> {
    let mut state = SessionState::default();
    let mut out = Vec::new();
    for (rep, assumed) in path {
        let Some(r) = explorer.reps.get(*rep) else {
            continue;
        };
        let request = r.request("proof");
        let mut evaluation = crate::eval::evaluate(policy, &request, &state);
        if evaluation.decision.verdict == crate::decision::Verdict::Pending {
            // Held for approval: the counterexample has a person approve it.
            evaluation = crate::eval::evaluate_granted(policy, &request, &state);
        }
        let reproduced = evaluation.decision.verdict == crate::decision::Verdict::Allow;
        if let Some(change) = &evaluation.change {
            state.apply(change);
        }
        out.push(CounterStep {
            request: serde_json::to_value(&request).unwrap_or_default(),
            assumed: assumed
                .iter()
                .filter_map(|&(n, v)| policy.rules.get(n).map(|rule| (Arc::clone(&rule.id), v)))
                .collect(),
            reproduced,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::policy::CompileOptions;

    fn policy() -> CompiledPolicy {
        CompiledPolicy::compile(
            "t",
            "warden: 1\nname: t\ntools: { a: [x], b: [y], c: [y] }\n",
            CompileOptions::default(),
        )
        .unwrap()
    }

    /// Feeds `calls` to the automaton: the call at which the sequence completes, if any.
    fn completes(forbid: &str, calls: &[&str]) -> Option<usize> {
        let p = policy();
        let f = Forbid::parse(forbid).unwrap();
        let mut progress = vec![None; f.steps.len() - 1];
        for (i, call) in calls.iter().enumerate() {
            match f.advance(&progress, call, &p) {
                None => return Some(i),
                Some(next) => progress = next,
            }
        }
        None
    }

    #[test]
    fn sequences_complete_in_order_with_calls_between_and_within_bounds() {
        assert_eq!(completes("a -> b", &["b", "a", "c", "b"]), Some(3));
        assert_eq!(completes("class:x -> class:y", &["c", "a"]), None);
        assert_eq!(completes("tool:a", &["b", "a"]), Some(1));
        assert_eq!(completes("a -> b within 1", &["a", "c", "b"]), None);
        assert_eq!(completes("a -> b within 2", &["a", "c", "b"]), Some(2));
        // A later start gives a fresh window.
        assert_eq!(completes("a -> b within 1", &["a", "c", "a", "b"]), Some(3));
        assert_eq!(
            completes("a -> c -> b within 2", &["a", "c", "c", "b"]),
            None
        );
        assert_eq!(completes("a -> c -> b", &["a", "c", "c", "b"]), Some(3));
        // One call is never two steps.
        assert_eq!(completes("a -> a", &["a"]), None);
        assert_eq!(completes("a -> a", &["a", "a"]), Some(1));
    }

    #[test]
    fn bad_sequences_are_named() {
        for bad in [
            "",
            "a ->",
            "-> b",
            "a b -> c",
            "class: -> a",
            "a -> b within 0",
            "a -> b within x",
        ] {
            assert!(
                matches!(Forbid::parse(bad), Err(AnalysisError::Forbid { .. })),
                "{bad:?}"
            );
        }
        let f = Forbid::parse(" class:x -> tool:b* within 3 ").unwrap();
        assert_eq!((f.steps.len(), f.within), (2, Some(3)));
    }
}
