//! Static analysis of a compiled policy (`warden analyze`): rules that never decide or never
//! match, conflicts, taints written and never read (and read and never written), tools a
//! principal can never call; and flow proofs ([`flow::prove`]). Pure: the caller hands in the
//! policy's text (for locations) and its compiled form.

mod explore;
pub mod flow;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;
use serde_saphyr::Spanned;

use crate::expr::Expr;
use crate::glob::Glob;
use crate::policy::doc;
use crate::policy::{CompiledPolicy, Effect, Rule, ToolRegistry};

pub use explore::MAX_ASSUMED_RULES;
pub use flow::{CounterStep, FlowResult, Forbid, prove};

/// Default bound on the session states a flow proof explores.
pub const DEFAULT_MAX_STATES: usize = 100_000;

/// Why an analysis could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    /// A `--forbid` pattern is not valid.
    #[error("forbidden sequence `{pattern}`: {message}")]
    Forbid {
        /// The pattern as given.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// The explored states exceeded the bound: nothing was proved.
    #[error("more than {limit} session states reachable: no proof (raise --max-states)")]
    TooManyStates {
        /// The bound.
        limit: usize,
    },
    /// Too many rules with argument conditions or Rego could apply to one tool.
    #[error(
        "{rules} rules with argument conditions or Rego apply to tool `{tool}`: more than the {MAX_ASSUMED_RULES} whose combinations a proof explores"
    )]
    TooManyAssumptions {
        /// The tool.
        tool: String,
        /// How many rules.
        rules: usize,
    },
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The policy certainly does not do what it says (exit 1).
    Error,
    /// Probably a mistake.
    Warning,
    /// Worth knowing.
    Info,
}

/// One finding, located in the policy source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// A stable name: `shadowed`, `conflict`, `redundant`, `never-matches`, `unknown-tool`,
    /// `taint-never-read`, `taint-never-added`, `never-allowed`.
    pub code: &'static str,
    /// 1-based line (0: unknown).
    pub line: u64,
    /// 1-based column (0: unknown).
    pub column: u64,
    /// The rule concerned, if one.
    pub rule: Option<Arc<str>>,
    /// What was found.
    pub message: String,
}

fn at<T>(node: &Spanned<T>) -> (u64, u64) {
    (node.referenced.line(), node.referenced.column())
}

/// The tool registry's globs as written (the compiled registry does not list them).
pub(crate) fn registry_globs(text: &str) -> Vec<Glob> {
    doc::parse(text)
        .ok()
        .and_then(|d| d.tools)
        .map(|t| {
            t.0.iter()
                .filter_map(|(k, _)| Glob::new(&k.value).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Locations of one rule's parts.
#[derive(Default, Clone, Copy)]
struct RuleAt {
    id: (u64, u64),
    condition: Option<(u64, u64)>,
    add_taints: Option<(u64, u64)>,
    remove_taints: Option<(u64, u64)>,
    classes: Option<(u64, u64)>,
}

/// Whether glob `outer` matches every name `inner` matches (conservatively: false when unsure).
fn glob_covers(outer: &Glob, inner: &Glob) -> bool {
    outer.as_str() == inner.as_str()
        || outer.as_str() == "*"
        || (inner.is_exact() && outer.matches(inner.as_str()))
}

fn globs_cover(outer: &Option<Vec<Glob>>, inner: &Option<Vec<Glob>>) -> bool {
    match (outer, inner) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(o), Some(i)) => i.iter().all(|g| o.iter().any(|h| glob_covers(h, g))),
    }
}

/// Whether `d` matches every request `a` matches (conservatively: false when unsure).
fn covers(d: &Rule, a: &Rule, registry: &ToolRegistry) -> bool {
    let kinds = match (d.kinds, a.kinds) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(dk), Some(ak)) => ak & !dk == 0,
    };
    let classes = match (&d.classes, &a.classes) {
        (None, _) => true,
        (Some(dc), Some(ac)) if ac.iter().all(|c| dc.contains(c)) => true,
        // `a` names exact tools, each of which has one of `d`'s classes.
        (Some(dc), _) => a.tools.as_ref().is_some_and(|tools| {
            tools.iter().all(|g| {
                g.is_exact()
                    && registry
                        .classes_of(Some(g.as_str()))
                        .iter()
                        .any(|c| dc.contains(c))
            })
        }),
    };
    let after = match (&d.after, &a.after) {
        (None, _) => true,
        (Some(x), Some(y)) => x.key == y.key && x.within == y.within,
        _ => false,
    };
    let condition = match (&d.condition, &a.condition) {
        (None, _) => true,
        (Some(x), Some(y)) if x == y => true,
        (Some(x), Some(Expr::And(items))) => items.contains(x),
        _ => false,
    };
    kinds
        && globs_cover(&d.tools, &a.tools)
        && classes
        && globs_cover(&d.principals, &a.principals)
        && d.args.is_empty()
        && d.http.is_none()
        && d.rego.is_none()
        && after
        && condition
}

fn same_taints(a: &Rule, b: &Rule) -> bool {
    let set = |v: &[Arc<str>]| v.iter().cloned().collect::<BTreeSet<_>>();
    set(&a.add_taints) == set(&b.add_taints) && set(&a.remove_taints) == set(&b.remove_taints)
}

fn effect_name(e: Effect) -> &'static str {
    match e {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
        Effect::Warn => "warn",
        Effect::Ask => "ask",
        Effect::Audit => "audit",
    }
}

/// Whether `expr` can hold when every atom in `forced_false` is false.
fn satisfiable(expr: &Expr, forced_false: &dyn Fn(&Expr) -> bool) -> bool {
    let mut atoms: Vec<&Expr> = Vec::new();
    for (atom, _) in expr.atoms() {
        if !forced_false(atom) && !atoms.contains(&atom) {
            atoms.push(atom);
        }
    }
    if atoms.len() > 16 {
        return true; // too many to enumerate: assume it can.
    }
    (0u32..(1 << atoms.len())).any(|mask| eval_assigned(expr, &atoms, mask))
}

fn eval_assigned(expr: &Expr, atoms: &[&Expr], mask: u32) -> bool {
    match expr {
        Expr::Or(items) => items.iter().any(|e| eval_assigned(e, atoms, mask)),
        Expr::And(items) => items.iter().all(|e| eval_assigned(e, atoms, mask)),
        Expr::Not(inner) => !eval_assigned(inner, atoms, mask),
        atom => atoms
            .iter()
            .position(|a| *a == atom)
            .is_some_and(|i| mask & (1 << i) != 0),
    }
}

/// Analyses `policy`, compiled from `text`. Findings sorted by location.
pub fn analyze(policy: &CompiledPolicy, text: &str) -> Result<Vec<Finding>, AnalysisError> {
    let document = doc::parse(text).ok();
    let mut spans: Vec<RuleAt> = Vec::new();
    let mut registry_at: Vec<(Glob, (u64, u64))> = Vec::new();
    let mut granted: BTreeSet<Arc<str>> = BTreeSet::new();
    if let Some(d) = &document {
        for r in &d.rules {
            spans.push(RuleAt {
                id: at(&r.id),
                condition: r.condition.as_ref().map(at),
                add_taints: r.add_taints.as_ref().map(at),
                remove_taints: r.remove_taints.as_ref().map(at),
                classes: None,
            });
        }
        if let Some(tools) = &d.tools {
            for (k, classes) in &tools.0 {
                if let Ok(g) = Glob::new(&k.value) {
                    registry_at.push((g, at(k)));
                }
                granted.extend(classes.iter().map(|c| Arc::from(c.value.as_str())));
            }
        }
    }
    let span = |n: usize| spans.get(n).copied().unwrap_or_default();
    let mut out = Vec::new();
    let mut push = |severity, code, (line, column): (u64, u64), rule: &Rule, message: String| {
        out.push(Finding {
            severity,
            code,
            line,
            column,
            rule: Some(Arc::clone(&rule.id)),
            message,
        });
    };
    let rules = &policy.rules;

    // Shadowed allows and conflicts: a deny that matches whenever the allow does.
    // An audit rule decides nothing to shadow; a deny of a lower priority never wins over it.
    for (i, a) in rules.iter().enumerate() {
        if matches!(a.effect, Effect::Deny | Effect::Audit) {
            continue;
        }
        let Some((j, d)) = rules.iter().enumerate().find(|(_, d)| {
            d.effect == Effect::Deny && d.priority >= a.priority && covers(d, a, &policy.registry)
        }) else {
            continue;
        };
        let line = span(j).id.0;
        if a.args.is_empty() && covers(a, d, &policy.registry) {
            push(
                Severity::Error,
                "conflict",
                span(i).id,
                a,
                format!(
                    "rule `{}` ({}) and deny rule `{}` (line {line}) have the same scope: the deny always wins, so `{}` never applies",
                    a.id,
                    effect_name(a.effect),
                    d.id,
                    a.id
                ),
            );
        } else {
            push(
                Severity::Warning,
                "shadowed",
                span(i).id,
                a,
                format!(
                    "rule `{}` ({}) never decides: deny rule `{}` (line {line}) matches whenever it does",
                    a.id,
                    effect_name(a.effect),
                    d.id
                ),
            );
        }
    }
    // Redundant: subsumed by an earlier rule with the same effect and the same taints.
    // An audit rule names itself in the decision: another one covering it does not make it
    // redundant.
    for (j, b) in rules.iter().enumerate() {
        if matches!(b.effect, Effect::Warn | Effect::Audit) {
            continue;
        }
        if let Some((i, a)) = rules.iter().enumerate().take(j).find(|(_, a)| {
            a.effect == b.effect
                && a.priority == b.priority
                && a.rewrite == b.rewrite
                && same_taints(a, b)
                && covers(a, b, &policy.registry)
        }) {
            let what = match b.effect {
                Effect::Deny => "it never decides a request",
                Effect::Ask => "it holds nothing for approval",
                Effect::Allow | Effect::Warn | Effect::Audit => "it allows nothing",
            };
            push(
                Severity::Warning,
                "redundant",
                span(j).id,
                b,
                format!(
                    "rule `{}` is subsumed by earlier rule `{}` (line {}) with the same effect and taints: {what} the other does not",
                    b.id,
                    a.id,
                    span(i).id.0
                ),
            );
        }
    }

    // Taints added, removed and read.
    let mut added: BTreeMap<Arc<str>, usize> = BTreeMap::new();
    let mut removed: BTreeMap<Arc<str>, usize> = BTreeMap::new();
    let mut read: BTreeMap<Arc<str>, usize> = BTreeMap::new();
    for (n, rule) in rules.iter().enumerate() {
        for t in &rule.add_taints {
            added.entry(Arc::clone(t)).or_insert(n);
        }
        for t in &rule.remove_taints {
            removed.entry(Arc::clone(t)).or_insert(n);
        }
        if let Some(c) = &rule.condition {
            for (atom, _) in c.atoms() {
                if let Expr::Taint(t) = atom {
                    read.entry(Arc::clone(t)).or_insert(n);
                }
            }
        }
    }
    let rego = policy.rego.is_some();
    for (taint, &n) in &added {
        if !read.contains_key(taint)
            && let Some(rule) = rules.get(n)
        {
            let (severity, tail) = if rego {
                (
                    Severity::Info,
                    "; the policy's Rego may read it in `input.state.taints`",
                )
            } else {
                (Severity::Warning, "")
            };
            push(
                severity,
                "taint-never-read",
                span(n).add_taints.unwrap_or(span(n).id),
                rule,
                format!(
                    "taint `{taint}` is added (rule `{}`) but no `if` reads it{tail}",
                    rule.id
                ),
            );
        }
    }
    for (taint, &n) in read.iter().chain(removed.iter()) {
        if !added.contains_key(taint)
            && let Some(rule) = rules.get(n)
        {
            let where_ = if read.get(taint) == Some(&n) {
                span(n).condition
            } else {
                span(n).remove_taints
            };
            push(
                Severity::Warning,
                "taint-never-added",
                where_.unwrap_or(span(n).id),
                rule,
                format!(
                    "taint `{taint}` is used by rule `{}` but no rule adds it (it is never set)",
                    rule.id
                ),
            );
        }
    }

    // Rules that can never match.
    for (n, rule) in rules.iter().enumerate() {
        if let Some(classes) = &rule.classes
            && !classes.iter().any(|c| granted.contains(c))
        {
            let names: Vec<&str> = classes.iter().map(|c| &**c).collect();
            push(
                Severity::Error,
                "never-matches",
                span(n).classes.unwrap_or(span(n).id),
                rule,
                format!(
                    "rule `{}` never matches: no tool of the registry has class {}",
                    rule.id,
                    names.join(", ")
                ),
            );
            continue;
        }
        if let Some(after) = &rule.after
            && after.tools.is_empty()
            && !after.classes.iter().any(|c| granted.contains(c))
        {
            push(
                Severity::Error,
                "never-matches",
                span(n).id,
                rule,
                format!(
                    "rule `{}` never matches: its `after` names classes no tool of the registry has",
                    rule.id
                ),
            );
            continue;
        }
        if let Some(c) = &rule.condition {
            let never = |atom: &Expr| match atom {
                Expr::Taint(t) => !added.contains_key(t),
                Expr::Class(c) => !granted.contains(c),
                _ => false,
            };
            if !satisfiable(c, &never) {
                push(
                    Severity::Error,
                    "never-matches",
                    span(n).condition.unwrap_or(span(n).id),
                    rule,
                    format!(
                        "rule `{}` never matches: its `if` can never hold (taints no rule adds and classes no tool has are always false)",
                        rule.id
                    ),
                );
                continue;
            }
        }
        if let Some(tools) = &rule.tools
            && !registry_at.is_empty()
        {
            for g in tools {
                let known = registry_at.iter().any(|(k, _)| {
                    glob_covers(k, g) || glob_covers(g, k) || (!k.is_exact() && !g.is_exact())
                });
                if !known {
                    push(
                        Severity::Info,
                        "unknown-tool",
                        span(n).id,
                        rule,
                        format!(
                            "rule `{}`: tool `{}` is not in the tool registry (it has no classes)",
                            rule.id,
                            g.as_str()
                        ),
                    );
                }
            }
        }
    }

    // Tools a principal can never call, over every reachable session state.
    let doc_tools: Vec<Glob> = registry_at.iter().map(|(g, _)| g.clone()).collect();
    never_allowed(policy, &doc_tools, &registry_at, &mut out)?;

    out.sort_by_key(|f| (f.line, f.column, f.severity));
    Ok(out)
}

/// Adds an `info` finding per registry tool (exact name) that no principal, or some principal
/// the policy names, can ever get allowed.
fn never_allowed(
    policy: &CompiledPolicy,
    doc_tools: &[Glob],
    registry_at: &[(Glob, (u64, u64))],
    out: &mut Vec<Finding>,
) -> Result<(), AnalysisError> {
    let mut explorer = explore::Explorer::new(policy, doc_tools, &[]);
    let mut allowed: BTreeSet<usize> = BTreeSet::new();
    let mut seen = std::collections::HashSet::new();
    let start = crate::session::SessionState::default();
    seen.insert(explore::key(&start));
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(state) = queue.pop_front() {
        for rep in 0..explorer.reps.len() {
            let steps = explorer.allowed(rep, &state)?;
            if !steps.is_empty() {
                allowed.insert(rep);
            }
            for step in steps {
                if seen.len() >= DEFAULT_MAX_STATES {
                    return Ok(()); // too many states to say anything certain
                }
                if seen.insert(explore::key(&step.state)) {
                    queue.push_back(step.state);
                }
            }
        }
    }
    for (glob, (line, column)) in registry_at {
        if !glob.is_exact() {
            continue;
        }
        let tool = Some(glob.as_str().to_owned());
        let reps: Vec<(usize, &explore::Rep)> = explorer
            .reps
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == crate::request::Kind::ToolCall && r.tool == tool)
            .collect();
        let denied: Vec<&explore::Rep> = reps
            .iter()
            .filter(|(n, _)| !allowed.contains(n))
            .map(|(_, r)| *r)
            .collect();
        let message = if denied.len() == reps.len() {
            format!(
                "tool `{}` can never be called: no session state lets any principal call it",
                glob.as_str()
            )
        } else if denied.is_empty() {
            continue;
        } else {
            let names: Vec<String> = denied
                .iter()
                .map(|r| match &r.principal {
                    Some(p) if p.starts_with("warden:") => {
                        "any principal the policy does not name".to_owned()
                    }
                    Some(p) => format!("`{p}`"),
                    None => "requests without a principal".to_owned(),
                })
                .collect();
            format!(
                "tool `{}` can never be called by {}",
                glob.as_str(),
                names.join(", ")
            )
        };
        out.push(Finding {
            severity: Severity::Info,
            code: "never-allowed",
            line: *line,
            column: *column,
            rule: None,
            message,
        });
    }
    Ok(())
}
