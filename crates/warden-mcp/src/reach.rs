//! Which tools a principal can never call under a policy, for `tools/list` filtering.
//!
//! A tool is never callable when a `deny` rule for `tool_call` matches it and the principal
//! with no condition that depends on the session or the arguments (`after`, `args`, `rego`, or
//! an `if` that mentions a taint), or when the default is `deny` and no `allow` / `warn` rule
//! could ever match it. Anything that depends on state keeps the tool listed: the call itself is
//! still decided when it is made.

use warden_core::expr::Expr;
use warden_core::policy::{Effect, Mode, Rule};
use warden_core::request::Kind;
use warden_core::{CompiledPolicy, Verdict};

/// Three-valued evaluation of an `if` expression without a session: `None` when it depends on
/// taints.
fn static_eval(
    expr: &Expr,
    tool: &str,
    classes: &[std::sync::Arc<str>],
    principal: Option<&str>,
) -> Option<bool> {
    match expr {
        Expr::Taint(_) => None,
        Expr::Class(name) => Some(classes.iter().any(|c| c == name)),
        Expr::Tool(glob) => Some(glob.matches(tool)),
        Expr::Principal(glob) => Some(principal.is_some_and(|p| glob.matches(p))),
        Expr::Not(inner) => static_eval(inner, tool, classes, principal).map(|b| !b),
        Expr::And(items) => {
            let mut all = Some(true);
            for item in items {
                match static_eval(item, tool, classes, principal) {
                    Some(false) => return Some(false),
                    None => all = None,
                    Some(true) => {}
                }
            }
            all
        }
        Expr::Or(items) => {
            let mut any = Some(false);
            for item in items {
                match static_eval(item, tool, classes, principal) {
                    Some(true) => return Some(true),
                    None => any = None,
                    Some(false) => {}
                }
            }
            any
        }
    }
}

/// Whether the rule's static conditions (kind, tool, classes, principal, a static `if`) hold:
/// `Some(true)` always, `Some(false)` never, `None` depending on the session or arguments.
fn rule_matches(
    rule: &Rule,
    tool: &str,
    classes: &[std::sync::Arc<str>],
    principal: Option<&str>,
) -> Option<bool> {
    // A tool call carries no `http` member, so `http` conditions never hold for one.
    if !rule.applies_to(Kind::ToolCall) || rule.http.is_some() {
        return Some(false);
    }
    if let Some(globs) = &rule.tools
        && !globs.iter().any(|g| g.matches(tool))
    {
        return Some(false);
    }
    if let Some(wanted) = &rule.classes
        && !wanted.iter().any(|w| classes.contains(w))
    {
        return Some(false);
    }
    if let Some(globs) = &rule.principals
        && !principal.is_some_and(|p| globs.iter().any(|g| g.matches(p)))
    {
        return Some(false);
    }
    let condition = match &rule.condition {
        Some(expr) => static_eval(expr, tool, classes, principal),
        None => Some(true),
    };
    if condition == Some(false) {
        return Some(false);
    }
    let dynamic = rule.after.is_some() || !rule.args.is_empty() || rule.rego.is_some();
    if dynamic { None } else { condition }
}

/// True when `principal` can never call `tool` under `policy` (see the module docs).
pub fn never_callable(policy: &CompiledPolicy, tool: &str, principal: Option<&str>) -> bool {
    if policy.mode == Mode::DryRun {
        return false;
    }
    let classes = policy.registry.classes_of(Some(tool));
    // The highest priority of a deny that always matches, and of a rule that may let it through:
    // only rules of the highest priority matching decide.
    let mut denied_at: Option<i32> = None;
    let mut allowed_at: Option<i32> = None;
    for rule in &policy.rules {
        let matches = rule_matches(rule, tool, &classes, principal);
        match rule.effect {
            Effect::Deny if matches == Some(true) => {
                denied_at = denied_at.max(Some(rule.priority));
            }
            Effect::Allow | Effect::Warn | Effect::Ask if matches != Some(false) => {
                allowed_at = allowed_at.max(Some(rule.priority));
            }
            _ => {}
        }
    }
    match (denied_at, allowed_at) {
        (Some(deny), Some(allow)) => deny >= allow,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => policy.default == Verdict::Deny,
    }
}
