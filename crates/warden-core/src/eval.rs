//! Evaluation: one request against one compiled policy and one session state (spec section 6).
//! Pure: the caller supplies the state and applies the returned change.

use std::cell::OnceCell;
use std::sync::Arc;

use smallvec::SmallVec;
use warden_rego::{InputField, RegoEvalError, RegoInput, RegoPolicy};

use crate::args::Judgement;
use crate::decision::{Decision, Verdict};
use crate::expr::ExprContext;
use crate::policy::{After, Classes, CompiledPolicy, Effect, Mode, Rule};
use crate::request::{Kind, Request};
use crate::session::{HistoryEntry, SessionState, StateChange};

/// A decision and the state change it implies (None: the session must not change).
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The decision to return.
    pub decision: Decision,
    /// What to apply to the session when there is one.
    pub change: Option<StateChange>,
    /// Set when the decision failed closed.
    pub failure: Option<Failure>,
}

/// Why a decision failed closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A Rego query ran past its time or depth limit.
    RegoLimitExceeded,
    /// A Rego query failed to evaluate.
    RegoError,
}

struct Cx<'a> {
    request: &'a Request,
    classes: &'a Classes,
    state: &'a SessionState,
    /// The Rego input, built on first use and shared by every Rego rule of the request.
    rego_input: OnceCell<Result<RegoInput, RegoEvalError>>,
}

/// The rule named `rego:error` in a decision that failed closed on a Rego evaluation error.
pub const REGO_ERROR_RULE: &str = "rego:error";

impl Cx<'_> {
    /// Spec section 3: the request with `kind` filled in, plus `classes` (sorted) and `state`,
    /// converted straight from the parsed request (no intermediate JSON document).
    fn rego_input(&self, rego: &RegoPolicy) -> Result<&RegoInput, RegoEvalError> {
        self.rego_input
            .get_or_init(|| {
                let r = self.request;
                let classes: SmallVec<[&str; 8]> = self.classes.iter().map(|c| &**c).collect();
                let taints: Vec<&str> = self.state.taints.iter().map(|t| &**t).collect();
                let history: Vec<&str> = self.state.history.iter().map(|h| &*h.tool).collect();
                let state = [
                    ("taints", InputField::Strs(&taints)),
                    ("history", InputField::Strs(&history)),
                ];
                let http = match &r.http {
                    Some(http) => {
                        Some(serde_json::to_value(http).map_err(|e| RegoEvalError::Eval {
                            message: format!("cannot build input: {e}"),
                        })?)
                    }
                    None => None,
                };
                let mut fields: SmallVec<[(&str, InputField<'_>); 12]> = SmallVec::new();
                fields.push(("kind", InputField::Str(r.kind.as_str())));
                fields.push(("classes", InputField::Strs(&classes)));
                fields.push(("state", InputField::Object(&state)));
                let optional = [
                    ("session", r.session.as_deref()),
                    ("principal", r.principal.as_deref()),
                    ("tool", r.tool.as_deref()),
                    ("text", r.text.as_deref()),
                ];
                for (key, value) in optional {
                    if let Some(value) = value {
                        fields.push((key, InputField::Str(value)));
                    }
                }
                if let Some(args) = &r.args {
                    fields.push(("args", InputField::Json(args)));
                }
                if let Some(result) = &r.result {
                    fields.push(("result", InputField::Json(result)));
                }
                if let Some(http) = &http {
                    fields.push(("http", InputField::Json(http)));
                }
                if let Some(context) = &r.context {
                    fields.push(("context", InputField::Map(context)));
                }
                rego.prepare_fields(&fields)
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ExprContext for Cx<'_> {
    fn has_taint(&self, name: &str) -> bool {
        self.state.taints.contains(name)
    }
    fn has_class(&self, name: &str) -> bool {
        self.classes.iter().any(|c| &**c == name)
    }
    fn tool(&self) -> Option<&str> {
        self.request.tool.as_deref()
    }
    fn principal(&self) -> Option<&str> {
        self.request.principal.as_deref()
    }
}

/// Logs a decision that failed closed (its failure, policy digest and reason; never request
/// content). Every front door calls it, through [`crate::Engine`] or directly.
pub(crate) fn log_failure(evaluation: &Evaluation) {
    if let Some(failure) = evaluation.failure {
        tracing::warn!(
            failure = ?failure,
            policy = %evaluation.decision.policy.digest,
            reason = evaluation.decision.reasons.first().map(|r| &**r).unwrap_or_default(),
            "decision failed closed"
        );
    }
}

impl Failure {
    /// The failure's name in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RegoLimitExceeded => "rego_limit_exceeded",
            Self::RegoError => "rego_error",
        }
    }
}

/// Watches an evaluation, for coverage and analysis tools. Opt-in: the decision path uses
/// [`NoObserver`], whose `ENABLED` is false, so every observing branch compiles away there.
///
/// Rules are named by their position in [`CompiledPolicy::rules`].
pub trait Observer {
    /// False for an observer that records nothing: the evaluation then takes its usual path.
    const ENABLED: bool;
    /// The rule was reached: its kinds, tools, classes and principals held, so its other
    /// conditions were evaluated (each of them, without stopping at the first that fails).
    fn reached(&mut self, _rule: usize) {}
    /// What the rule's argument condition number `condition` said.
    fn arg(&mut self, _rule: usize, _condition: usize, _judgement: Judgement) {}
    /// The values of the rule's `if` sub-expressions, in [`crate::expr::Expr::subexpressions`]
    /// order.
    fn condition(&mut self, _rule: usize, _values: &[bool]) {}
    /// The rule matched (every condition held, Rego included).
    fn matched(&mut self, _rule: usize) {}
    /// The rule decided the request: the deny rule reported, or one of the allow / warn rules
    /// behind an allow (when no deny matched and content inspection did not deny).
    fn decided(&mut self, _rule: usize) {}
    /// For analysis: the outcome to assume for the rule's argument conditions and Rego query
    /// (`Some`: they are not evaluated; `None`, the default: evaluated as usual).
    fn assume(&mut self, _rule: usize) -> Option<bool> {
        None
    }
}

/// The observer that records nothing: the decision path.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    const ENABLED: bool = false;
}

/// Evaluates `request` under `policy` with the session's current `state` (empty when the
/// request has no session).
pub(crate) fn evaluate(
    policy: &CompiledPolicy,
    request: &Request,
    state: &SessionState,
) -> Evaluation {
    evaluate_inner(policy, request, state, false, &mut NoObserver)
}

/// [`evaluate`] for a call a person approved: matching `ask` rules act as allow rules (their
/// taints apply), so the call is allowed unless a deny rule or content inspection denies it.
/// Only the pipeline calls it, after it consumed the approval that covers the call.
pub(crate) fn evaluate_granted(
    policy: &CompiledPolicy,
    request: &Request,
    state: &SessionState,
) -> Evaluation {
    evaluate_inner(policy, request, state, true, &mut NoObserver)
}

/// [`evaluate`] reporting to `observer` (coverage, analysis). Pure: the caller applies the
/// returned change to its session state. Decides exactly as the decision path does.
pub fn evaluate_observed<O: Observer>(
    policy: &CompiledPolicy,
    request: &Request,
    state: &SessionState,
    observer: &mut O,
) -> Evaluation {
    evaluate_inner(policy, request, state, false, observer)
}

/// [`evaluate_observed`] for a call a person approved (see [`evaluate_granted`]): analysis
/// considers held calls going through, since an approver may let them.
pub(crate) fn evaluate_granted_observed<O: Observer>(
    policy: &CompiledPolicy,
    request: &Request,
    state: &SessionState,
    observer: &mut O,
) -> Evaluation {
    evaluate_inner(policy, request, state, true, observer)
}

fn evaluate_inner<O: Observer>(
    policy: &CompiledPolicy,
    request: &Request,
    state: &SessionState,
    granted: bool,
    observer: &mut O,
) -> Evaluation {
    let tool = request.tool.as_deref();
    let classes = policy.registry.classes_of(tool);
    let cx = Cx {
        request,
        classes: &classes,
        state,
        rego_input: OnceCell::new(),
    };

    let mut first_deny: Option<&Rule> = None;
    let mut first_deny_at = 0usize;
    let mut passing_at: Vec<usize> = Vec::new();
    let mut reasons = Vec::new();
    let mut passing: smallvec::SmallVec<[&Rule; 8]> = smallvec::SmallVec::new();
    // Matching `ask` rules (when no approval covers the call) and their position.
    let mut asking: smallvec::SmallVec<[(usize, &Rule); 2]> = smallvec::SmallVec::new();
    let mut audited: Vec<Arc<str>> = Vec::new();
    // The priority of the rules deciding so far: a match of a higher one sets aside every
    // match below it, a match below it takes no part.
    let mut top: Option<i32> = None;
    for n in policy.index.candidates(tool, &classes) {
        let n = n as usize;
        let Some(rule) = policy.rules.get(n) else {
            continue;
        };
        match rule_matches(policy, rule, n, &cx, observer) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => return rego_failure(policy, request, state, rule, &error),
        }
        if O::ENABLED {
            observer.matched(n);
        }
        if rule.effect == Effect::Audit {
            if O::ENABLED {
                observer.decided(n);
            }
            audited.push(rule.id.clone());
            continue;
        }
        match top {
            Some(t) if rule.priority < t => continue,
            Some(t) if rule.priority == t => {}
            _ => {
                if top.is_some() {
                    first_deny = None;
                    reasons.clear();
                    passing.clear();
                    asking.clear();
                    passing_at.clear();
                }
                top = Some(rule.priority);
            }
        }
        if O::ENABLED && rule.effect != Effect::Deny {
            passing_at.push(n);
        }
        match rule.effect {
            Effect::Deny => {
                if first_deny.is_none() {
                    first_deny_at = n;
                }
                first_deny.get_or_insert(rule);
                if let Some(reason) = &rule.reason {
                    reasons.push(reason.clone());
                }
            }
            Effect::Allow | Effect::Warn => passing.push(rule),
            // An approved call: the ask rule lets it through as an allow rule would.
            Effect::Ask if granted => passing.push(rule),
            Effect::Ask => asking.push((n, rule)),
            Effect::Audit => {}
        }
    }

    let (computed, rule_id, warnings) = if let Some(rule) = first_deny {
        (Verdict::Deny, Some(rule.id.clone()), Vec::new())
    } else if let Some((_, rule)) = asking.first() {
        // Pending: the first matching ask rule names it, with the reasons of every one.
        reasons.extend(asking.iter().filter_map(|(_, r)| r.reason.clone()));
        (Verdict::Pending, Some(rule.id.clone()), Vec::new())
    } else if !passing.is_empty() {
        let warnings = passing
            .iter()
            .filter(|r| r.effect == Effect::Warn)
            .map(|r| r.id.clone())
            .collect();
        (Verdict::Allow, None, warnings)
    } else {
        (policy.default, None, Vec::new())
    };

    let (mut computed, mut rule_id, mut warnings) = (computed, rule_id, warnings);
    let mut findings = Vec::new();
    let mut redacted = None;
    if let Some(content) = &policy.content {
        let mut outcome = crate::content::scan(content, request);
        findings = crate::content::findings(&mut outcome);
        if computed != Verdict::Deny {
            if let Some(deny) = outcome.deny {
                // Content turns an allow (or a pending call: no person should approve what
                // is denied anyway) into deny; a rule's deny stands as it is.
                reasons.clear();
                computed = Verdict::Deny;
                rule_id = Some(Arc::from(deny));
                warnings.clear();
            } else {
                warnings.extend(outcome.warnings.into_iter().map(Arc::from));
            }
        }
        redacted = redacted_for(policy.mode, computed, outcome.redacted);
    }
    if O::ENABLED {
        if first_deny.is_some() {
            observer.decided(first_deny_at);
        } else if computed == Verdict::Pending {
            asking.iter().for_each(|&(n, _)| observer.decided(n));
        } else if computed == Verdict::Allow {
            passing_at.iter().for_each(|&n| observer.decided(n));
        }
    }

    let (verdict, dry_run_decision) = match policy.mode {
        Mode::Enforce => (computed, None),
        Mode::DryRun => (Verdict::Allow, Some(computed)),
    };

    // State changes only when the enforced decision is allow (in dry run: always, as if allowed).
    // In dry run the call goes through as if a person had approved it: ask rules' taints apply.
    if policy.mode == Mode::DryRun {
        passing.extend(asking.iter().map(|&(_, rule)| rule));
    }
    // A rewrite changes a request that goes through because the policy allows it: not one
    // allowed by dry run alone.
    let rewrite = (policy.mode == Mode::Enforce
        && computed == Verdict::Allow
        && request.kind == crate::request::Kind::Prompt)
        .then(|| rewrite_of(&passing))
        .flatten();
    let change = (verdict == Verdict::Allow)
        .then(|| state_change(policy, request, state, &passing, classes.clone()));
    let taints = match &change {
        Some(change) if request.session.is_some() => state.taints_after(change),
        _ if request.session.is_some() => state.taints.clone(),
        _ => Default::default(),
    };

    Evaluation {
        decision: Decision {
            verdict,
            rule: rule_id,
            reasons,
            warnings,
            taints: taints.into_iter().collect(),
            findings,
            redacted,
            dry_run_decision,
            policy: policy.info.clone(),
            token: None,
            approval: None,
            audited,
            rewrite,
        },
        change: if request.session.is_some() {
            change
        } else {
            None
        },
        failure: None,
    }
}

/// The allowing rules' rewrites combined: the model of the first that names one, the lowest
/// `max_tokens` of all.
fn rewrite_of(passing: &[&Rule]) -> Option<crate::decision::Rewrite> {
    let mut combined = crate::decision::Rewrite::default();
    for rewrite in passing.iter().filter_map(|r| r.rewrite.as_ref()) {
        if combined.model.is_none() {
            combined.model.clone_from(&rewrite.model);
        }
        combined.max_tokens = match (combined.max_tokens, rewrite.max_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    (combined != crate::decision::Rewrite::default()).then_some(combined)
}

/// Spec section 9: `redacted` is not set on deny, and is set in dry run, where the request goes
/// through whatever was computed and the caller must forward the redacted form.
fn redacted_for(
    mode: Mode,
    computed: Verdict,
    redacted: Option<serde_json::Value>,
) -> Option<serde_json::Value> {
    (computed == Verdict::Allow || mode == Mode::DryRun)
        .then_some(redacted)
        .flatten()
}

fn state_change(
    policy: &CompiledPolicy,
    request: &Request,
    state: &SessionState,
    passing: &[&Rule],
    classes: Classes,
) -> StateChange {
    let mut change = StateChange {
        history_limit: policy.history_limit,
        ..StateChange::default()
    };
    for rule in passing {
        change.remove.extend(rule.remove_taints.iter().cloned());
        change.add.extend(rule.add_taints.iter().cloned());
    }
    let entry = match (&request.kind, &request.tool) {
        (Kind::ToolCall, Some(tool)) => Some(HistoryEntry {
            tool: Arc::from(tool.as_str()),
            classes: classes.into_iter().collect(),
        }),
        _ => None,
    };
    let pushed = policy.history_limit > 0 && entry.is_some();
    // History entries this change drops from the front. An entry kept from before the marker
    // existed (an older session, a reloaded policy) sets it as it leaves; until then
    // `after_holds` finds it in history.
    let dropped = (state.history.len() + usize::from(pushed)).saturating_sub(policy.history_limit);
    for marker in &policy.markers {
        if state.seen.contains(&marker.key) {
            continue;
        }
        if entry.as_ref().is_some_and(|e| marker.matches(e))
            || state
                .history
                .iter()
                .take(dropped)
                .any(|e| marker.matches(e))
        {
            change.mark.push(marker.key.clone());
        }
    }
    if pushed {
        change.push = entry;
    }
    change
}

/// Fail closed: a Rego evaluation error denies the request and changes no state.
fn rego_failure(
    policy: &CompiledPolicy,
    request: &Request,
    state: &SessionState,
    rule: &Rule,
    error: &RegoEvalError,
) -> Evaluation {
    let reason: Arc<str> = match error {
        RegoEvalError::LimitExceeded => "rego: limit exceeded".into(),
        // The engine's message may quote input values: it stays out of the decision.
        _ => format!("rego: evaluation error in rule `{}`", rule.id).into(),
    };
    let (verdict, dry_run_decision) = match policy.mode {
        Mode::Enforce => (Verdict::Deny, None),
        Mode::DryRun => (Verdict::Allow, Some(Verdict::Deny)),
    };
    // In dry run the request goes through: its findings and redaction are still due.
    let (findings, redacted) = match (&policy.content, policy.mode) {
        (Some(content), Mode::DryRun) => {
            let mut outcome = crate::content::scan(content, request);
            let findings = crate::content::findings(&mut outcome);
            (
                findings,
                redacted_for(policy.mode, Verdict::Deny, outcome.redacted),
            )
        }
        _ => (Vec::new(), None),
    };
    Evaluation {
        decision: Decision {
            verdict,
            rule: Some(REGO_ERROR_RULE.into()),
            reasons: vec![reason],
            warnings: Vec::new(),
            taints: if request.session.is_some() {
                state.taints.iter().cloned().collect()
            } else {
                Vec::new()
            },
            findings,
            redacted,
            dry_run_decision,
            policy: policy.info.clone(),
            token: None,
            approval: None,
            audited: Vec::new(),
            rewrite: None,
        },
        change: None,
        failure: Some(match error {
            RegoEvalError::LimitExceeded => Failure::RegoLimitExceeded,
            _ => Failure::RegoError,
        }),
    }
}

fn rule_matches<O: Observer>(
    policy: &CompiledPolicy,
    rule: &Rule,
    n: usize,
    cx: &Cx<'_>,
    observer: &mut O,
) -> Result<bool, RegoEvalError> {
    let holds = if O::ENABLED {
        let assumed = observer.assume(n);
        let holds = observed_conditions_hold(rule, n, cx, observer, assumed);
        if assumed.is_some() {
            // The Rego query is assumed along with the arguments.
            return Ok(holds);
        }
        holds
    } else {
        static_conditions_hold(rule, cx)
    };
    if !holds {
        return Ok(false);
    }
    // Rego runs last: it is the most expensive condition.
    match (rule.rego, &policy.rego) {
        (None, _) => Ok(true),
        (Some(query), Some(rego)) => rego.eval_truthy_prepared(query, cx.rego_input(rego)?),
        (Some(_), None) => Err(RegoEvalError::Eval {
            message: "rule names a Rego query but the policy has no Rego".to_owned(),
        }),
    }
}

/// Every static condition of the rule evaluated and reported (none skipped once the rule is
/// reached); the same outcome as [`static_conditions_hold`].
fn observed_conditions_hold<O: Observer>(
    rule: &Rule,
    n: usize,
    cx: &Cx<'_>,
    observer: &mut O,
    assumed: Option<bool>,
) -> bool {
    if !targets_hold(rule, cx) {
        return false;
    }
    observer.reached(n);
    let args_hold = match assumed {
        Some(assumed) => assumed,
        None => {
            let mut args = Judgement::Yes;
            for (i, condition) in rule.args.iter().enumerate() {
                let judgement = condition.judge_request(cx.request);
                observer.arg(n, i, judgement);
                args = args.and(judgement);
            }
            match args {
                Judgement::Yes => true,
                Judgement::No => false,
                Judgement::Unknown => rule.effect == Effect::Deny,
            }
        }
    };
    let after = rule.after.as_ref().is_none_or(|a| after_holds(a, cx.state));
    let condition = match &rule.condition {
        Some(c) => {
            let mut values = Vec::new();
            let value = c.eval_each(cx, &mut values);
            observer.condition(n, &values);
            value
        }
        None => true,
    };
    args_hold && after && condition
}

/// The rule's kinds, tools, classes and principals hold for the request.
fn targets_hold(rule: &Rule, cx: &Cx<'_>) -> bool {
    let request = cx.request;
    if !rule.applies_to(request.kind) {
        return false;
    }
    if let Some(tools) = &rule.tools {
        let Some(tool) = request.tool.as_deref() else {
            return false;
        };
        if !tools.iter().any(|g| g.matches(tool)) {
            return false;
        }
    }
    if let Some(classes) = &rule.classes
        && !classes.iter().any(|c| cx.classes.contains(c))
    {
        return false;
    }
    if let Some(principals) = &rule.principals {
        let Some(principal) = request.principal.as_deref() else {
            return false;
        };
        if !principals.iter().any(|g| g.matches(principal)) {
            return false;
        }
    }
    rule.http
        .as_ref()
        .is_none_or(|http| http.holds(request.http.as_ref()))
}

fn static_conditions_hold(rule: &Rule, cx: &Cx<'_>) -> bool {
    if !targets_hold(rule, cx) {
        return false;
    }
    let request = cx.request;
    // A value the conditions cannot judge makes a deny rule match and an allow rule not.
    let args = Judgement::all(rule.args.iter().map(|c| c.judge_request(request)));
    let args_hold = match args {
        Judgement::Yes => true,
        Judgement::No => false,
        Judgement::Unknown => rule.effect == Effect::Deny,
    };
    if !args_hold {
        return false;
    }
    if let Some(after) = &rule.after
        && !after_holds(after, cx.state)
    {
        return false;
    }
    rule.condition.as_ref().is_none_or(|c| c.eval(cx))
}

fn after_holds(after: &After, state: &SessionState) -> bool {
    match after.within {
        Some(within) => state
            .history
            .iter()
            .rev()
            .take(within)
            .any(|e| after.matches(e)),
        // The marker covers every call since it was set; the history scan covers calls kept
        // from before (a session older than the marker, a policy reloaded to add the rule).
        None => state.seen.contains(&after.key) || state.history.iter().any(|e| after.matches(e)),
    }
}

#[cfg(test)]
#[path = "eval_tests.rs"]
mod tests;
