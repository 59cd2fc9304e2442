//! The session states reachable through allowed calls, explored breadth first.
//!
//! Requests are drawn from a finite set of representatives: each kind the policy's rules name
//! (and `tool_call`), each tool the policy names exactly plus one instance of each tool glob plus
//! one tool it names nowhere (and no tool), each principal likewise. They carry no arguments:
//! a rule's argument conditions and Rego query are *assumed* both ways (every combination over
//! the rules that could apply), so the allowed calls explored include every call some
//! arguments could get allowed. Evaluation is the decision path's own
//! ([`evaluate_observed`]), so the explored semantics are the engine's.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::decision::Verdict;
use crate::eval::{Observer, evaluate_observed};
use crate::expr::Expr;
use crate::glob::Glob;
use crate::policy::CompiledPolicy;
use crate::request::{Kind, Request};
use crate::session::SessionState;

use super::AnalysisError;

/// Most argument-dependent rules one request may have (2^N combinations are explored).
pub const MAX_ASSUMED_RULES: usize = 10;

/// One representative request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rep {
    /// Its kind.
    pub kind: Kind,
    /// Its tool.
    pub tool: Option<String>,
    /// Its principal.
    pub principal: Option<String>,
}

impl Rep {
    /// The request, in session `session`, without arguments.
    pub fn request(&self, session: &str) -> Request {
        Request {
            session: Some(session.to_owned()),
            principal: self.principal.clone(),
            kind: self.kind,
            tool: self.tool.clone(),
            ..Request::default()
        }
    }
}

/// One allowed outcome of a request in a state.
#[derive(Debug, Clone)]
pub struct Step {
    /// The state after it.
    pub state: SessionState,
    /// The argument / Rego outcomes assumed, by rule position; empty when none was needed.
    pub assumed: Vec<(usize, bool)>,
}

/// The representatives and the evaluation of one request in one state.
#[derive(Debug)]
pub struct Explorer<'p> {
    /// The policy.
    pub policy: &'p CompiledPolicy,
    /// The representative requests.
    pub reps: Vec<Rep>,
    /// History entries that matter (the longest `after.within`).
    keep: usize,
    /// Rules whose argument conditions or Rego were assumed at least once.
    pub assumed_rules: BTreeSet<usize>,
}

/// Answers `assume` from a bit mask over the listed rules.
struct Assume<'a> {
    rules: &'a [usize],
    mask: u32,
}

impl Observer for Assume<'_> {
    const ENABLED: bool = true;
    fn assume(&mut self, rule: usize) -> Option<bool> {
        let at = self.rules.iter().position(|&r| r == rule)?;
        Some(self.mask & (1 << at) != 0)
    }
}

/// A name the glob matches: `*` as nothing, `?` as `x`.
fn instance(glob: &Glob) -> String {
    glob.as_str()
        .chars()
        .filter(|&c| c != '*')
        .map(|c| if c == '?' { 'x' } else { c })
        .collect()
}

fn expr_globs<'e>(expr: &'e Expr, tools: &mut Vec<&'e Glob>, principals: &mut Vec<&'e Glob>) {
    for (atom, _) in expr.atoms() {
        match atom {
            Expr::Tool(g) => tools.push(g),
            Expr::Principal(g) => principals.push(g),
            _ => {}
        }
    }
}

/// No name, exact names, one instance per glob, and one name none of them uses.
fn names(globs: &[&Glob], extra: &[&str], fresh: &str) -> Vec<Option<String>> {
    let mut out: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    for g in globs {
        out.push(if g.is_exact() {
            g.as_str().to_owned()
        } else {
            instance(g)
        });
    }
    out.push(fresh.to_owned());
    let mut seen = BTreeSet::new();
    let mut result: Vec<Option<String>> = vec![None];
    result.extend(out.into_iter().filter(|n| seen.insert(n.clone())).map(Some));
    result
}

/// A state's identity for the explored set.
pub type StateKey = (Vec<Arc<str>>, Vec<Arc<str>>, Vec<Arc<str>>);

/// The identity of a session state: taints, markers, kept history (tools).
pub fn key(state: &SessionState) -> StateKey {
    (
        state.taints.iter().cloned().collect(),
        state.seen.iter().cloned().collect(),
        state.history.iter().map(|h| Arc::clone(&h.tool)).collect(),
    )
}

impl<'p> Explorer<'p> {
    /// Representatives for `policy`, plus the tools named by `extra_tools` (a forbidden
    /// pattern's steps).
    pub fn new(policy: &'p CompiledPolicy, doc_tools: &[Glob], extra_tools: &[&Glob]) -> Self {
        let mut tools: Vec<&Glob> = doc_tools.iter().collect();
        tools.extend(extra_tools);
        let mut principals: Vec<&Glob> = Vec::new();
        let mut kinds = vec![Kind::ToolCall];
        let mut keep = 0;
        for rule in &policy.rules {
            tools.extend(rule.tools.iter().flatten());
            principals.extend(rule.principals.iter().flatten());
            if let Some(after) = &rule.after {
                tools.extend(&after.tools);
                keep = keep.max(after.within.unwrap_or(0));
            }
            if let Some(c) = &rule.condition {
                expr_globs(c, &mut tools, &mut principals);
            }
            for kind in [Kind::ToolResult, Kind::Prompt, Kind::Completion, Kind::Http] {
                if rule.kinds.is_some() && rule.applies_to(kind) && !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
        }
        let tool_names = names(&tools, &[], "warden.unnamed_tool");
        let principal_names = names(&principals, &[], "warden:unnamed_principal");
        let mut reps = Vec::new();
        for &kind in &kinds {
            for tool in &tool_names {
                for principal in &principal_names {
                    reps.push(Rep {
                        kind,
                        tool: tool.clone(),
                        principal: principal.clone(),
                    });
                }
            }
        }
        Self {
            policy,
            reps,
            keep,
            assumed_rules: BTreeSet::new(),
        }
    }

    /// The distinct allowed outcomes of representative `rep` in `state` (none: always denied).
    pub fn allowed(
        &mut self,
        rep: usize,
        state: &SessionState,
    ) -> Result<Vec<Step>, AnalysisError> {
        let Some(r) = self.reps.get(rep) else {
            return Ok(Vec::new());
        };
        let request = r.request("analysis");
        let classes = self.policy.registry.classes_of(r.tool.as_deref());
        let assumable: Vec<usize> = self
            .policy
            .index
            .candidates(r.tool.as_deref(), &classes)
            .iter()
            .map(|&n| n as usize)
            .filter(|&n| {
                self.policy
                    .rules
                    .get(n)
                    .is_some_and(|rule| !rule.args.is_empty() || rule.rego.is_some())
            })
            .collect();
        if assumable.len() > MAX_ASSUMED_RULES {
            return Err(AnalysisError::TooManyAssumptions {
                tool: r.tool.clone().unwrap_or_default(),
                rules: assumable.len(),
            });
        }
        let mut out: Vec<Step> = Vec::new();
        let mut seen: HashMap<StateKey, ()> = HashMap::new();
        for mask in 0..(1u32 << assumable.len()) {
            let mut observer = Assume {
                rules: &assumable,
                mask,
            };
            let mut evaluation = evaluate_observed(self.policy, &request, state, &mut observer);
            if evaluation.decision.verdict == Verdict::Pending {
                // A person may approve a held call: the proof follows it going through.
                let mut observer = Assume {
                    rules: &assumable,
                    mask,
                };
                evaluation = crate::eval::evaluate_granted_observed(
                    self.policy,
                    &request,
                    state,
                    &mut observer,
                );
            }
            if evaluation.decision.verdict != Verdict::Allow {
                continue;
            }
            let mut next = state.clone();
            if let Some(change) = &evaluation.change {
                next.apply(change);
            }
            while next.history.len() > self.keep {
                next.history.pop_front();
            }
            if seen.insert(key(&next), ()).is_some() {
                continue;
            }
            let assumed: Vec<(usize, bool)> = assumable
                .iter()
                .enumerate()
                .map(|(i, &n)| (n, mask & (1 << i) != 0))
                .collect();
            self.assumed_rules.extend(assumable.iter().copied());
            out.push(Step {
                state: next,
                assumed,
            });
        }
        Ok(out)
    }
}
