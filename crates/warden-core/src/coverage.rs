//! Policy coverage: which rules matched and decided over a set of requests, which `if`
//! sub-expressions were never true or never false, and which argument conditions never held.
//!
//! Collected through the opt-in [`Observer`] path of evaluation ([`evaluate_observed`]), so
//! decisions made anywhere else pay nothing for it. Pure: the caller keeps the sessions and
//! applies each evaluation's change.
//!
//! The coverage percentage counts *points*: one per rule (matched at least once), two per `if`
//! sub-expression (seen true, seen false) and one per argument condition (held at least once).

use std::sync::Arc;

use serde::Serialize;

use crate::args::Judgement;
use crate::eval::{Evaluation, Observer, evaluate_observed};
use crate::policy::{CompiledPolicy, Effect};
use crate::request::Request;
use crate::session::SessionState;

/// Coverage of one policy over the requests decided through [`Coverage::evaluate`].
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// Requests evaluated.
    pub requests: u64,
    /// One entry per rule, in document order.
    pub rules: Vec<RuleCoverage>,
}

/// One rule's counts.
#[derive(Debug, Clone, Serialize)]
pub struct RuleCoverage {
    /// The rule id.
    pub id: Arc<str>,
    /// `allow`, `deny` or `warn`.
    pub effect: &'static str,
    /// Requests whose kind, tool, class and principal the rule targets (its other conditions
    /// were then evaluated).
    pub reached: u64,
    /// Requests the rule matched.
    pub matched: u64,
    /// Requests the rule decided (the deny reported, or an allow / warn behind an allow).
    pub decided: u64,
    /// The `if` sub-expressions, the whole expression first.
    pub conditions: Vec<ConditionCoverage>,
    /// The argument conditions, in document order.
    pub args: Vec<ArgCoverage>,
}

/// How often one `if` sub-expression was true and false (counted when its rule was reached).
#[derive(Debug, Clone, Serialize)]
pub struct ConditionCoverage {
    /// The sub-expression, written back in the `if` syntax.
    pub expr: String,
    /// Times it was true.
    pub when_true: u64,
    /// Times it was false.
    pub when_false: u64,
}

/// What one argument condition said (counted when its rule was reached).
#[derive(Debug, Clone, Serialize)]
pub struct ArgCoverage {
    /// What the pointer points into: `args` or `context`.
    pub on: &'static str,
    /// The JSON Pointer.
    pub pointer: String,
    /// Times it held.
    pub held: u64,
    /// Times it certainly did not hold.
    pub failed: u64,
    /// Times it could not judge the value.
    pub unknown: u64,
}

/// Covered points out of all points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Score {
    /// Points covered.
    pub covered: u64,
    /// All points.
    pub points: u64,
}

impl Score {
    /// Covered points in percent (100 when there are no points).
    pub fn percent(self) -> f64 {
        if self.points == 0 {
            100.0
        } else {
            self.covered as f64 * 100.0 / self.points as f64
        }
    }

    /// The sum of two scores.
    pub fn plus(self, other: Score) -> Score {
        Score {
            covered: self.covered + other.covered,
            points: self.points + other.points,
        }
    }
}

/// Why two coverages cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoverageError {
    /// They were collected for different policies.
    #[error("coverage of different policies cannot be merged")]
    DifferentPolicies,
}

fn effect_name(effect: Effect) -> &'static str {
    match effect {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
        Effect::Warn => "warn",
        Effect::Ask => "ask",
        Effect::Audit => "audit",
    }
}

impl Coverage {
    /// Empty coverage of `policy`'s rules.
    pub fn new(policy: &CompiledPolicy) -> Self {
        let rules = policy
            .rules
            .iter()
            .map(|rule| RuleCoverage {
                id: Arc::clone(&rule.id),
                effect: effect_name(rule.effect),
                reached: 0,
                matched: 0,
                decided: 0,
                conditions: rule
                    .condition
                    .as_ref()
                    .map(|c| c.subexpressions())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|expr| ConditionCoverage {
                        expr,
                        when_true: 0,
                        when_false: 0,
                    })
                    .collect(),
                args: rule
                    .args
                    .iter()
                    .map(|a| ArgCoverage {
                        on: a.subject.field(),
                        pointer: a.pointer.clone(),
                        held: 0,
                        failed: 0,
                        unknown: 0,
                    })
                    .collect(),
            })
            .collect();
        Self { requests: 0, rules }
    }

    /// Evaluates `request` as the decision path does, recording coverage. `policy` must be
    /// the one the coverage was made for.
    pub fn evaluate(
        &mut self,
        policy: &CompiledPolicy,
        request: &Request,
        state: &SessionState,
    ) -> Evaluation {
        self.requests += 1;
        evaluate_observed(policy, request, state, self)
    }

    /// Adds `other`'s counts (collected for the same policy) to these.
    pub fn merge(&mut self, other: &Coverage) -> Result<(), CoverageError> {
        let same_shape = self.rules.len() == other.rules.len()
            && self.rules.iter().zip(&other.rules).all(|(a, b)| {
                a.id == b.id
                    && a.conditions.len() == b.conditions.len()
                    && a.args.len() == b.args.len()
            });
        if !same_shape {
            return Err(CoverageError::DifferentPolicies);
        }
        self.requests += other.requests;
        for (a, b) in self.rules.iter_mut().zip(&other.rules) {
            a.reached += b.reached;
            a.matched += b.matched;
            a.decided += b.decided;
            for (x, y) in a.conditions.iter_mut().zip(&b.conditions) {
                x.when_true += y.when_true;
                x.when_false += y.when_false;
            }
            for (x, y) in a.args.iter_mut().zip(&b.args) {
                x.held += y.held;
                x.failed += y.failed;
                x.unknown += y.unknown;
            }
        }
        Ok(())
    }

    /// The score: a point per rule matched, per `if` sub-expression seen true and seen false,
    /// and per argument condition that held.
    pub fn score(&self) -> Score {
        let mut score = Score {
            covered: 0,
            points: 0,
        };
        let mut count = |hit: bool| {
            score.points += 1;
            score.covered += u64::from(hit);
        };
        for rule in &self.rules {
            count(rule.matched > 0);
            for c in &rule.conditions {
                count(c.when_true > 0);
                count(c.when_false > 0);
            }
            for a in &rule.args {
                count(a.held > 0);
            }
        }
        score
    }

    /// The ids of the rules that never matched.
    pub fn never_matched(&self) -> impl Iterator<Item = &RuleCoverage> {
        self.rules.iter().filter(|r| r.matched == 0)
    }
}

impl Observer for Coverage {
    const ENABLED: bool = true;

    fn reached(&mut self, rule: usize) {
        if let Some(r) = self.rules.get_mut(rule) {
            r.reached += 1;
        }
    }

    fn arg(&mut self, rule: usize, condition: usize, judgement: Judgement) {
        if let Some(a) = self
            .rules
            .get_mut(rule)
            .and_then(|r| r.args.get_mut(condition))
        {
            match judgement {
                Judgement::Yes => a.held += 1,
                Judgement::No => a.failed += 1,
                Judgement::Unknown => a.unknown += 1,
            }
        }
    }

    fn condition(&mut self, rule: usize, values: &[bool]) {
        if let Some(r) = self.rules.get_mut(rule) {
            for (c, &value) in r.conditions.iter_mut().zip(values) {
                if value {
                    c.when_true += 1;
                } else {
                    c.when_false += 1;
                }
            }
        }
    }

    fn matched(&mut self, rule: usize) {
        if let Some(r) = self.rules.get_mut(rule) {
            r.matched += 1;
        }
    }

    fn decided(&mut self, rule: usize) {
        if let Some(r) = self.rules.get_mut(rule) {
            r.decided += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::policy::CompileOptions;

    fn policy(text: &str) -> CompiledPolicy {
        CompiledPolicy::compile("test", text, CompileOptions::default()).unwrap()
    }

    fn request(json: &str) -> Request {
        Request::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn counts_matches_decisions_subexpressions_and_args() {
        let p = policy(
            r#"
warden: 1
name: t
tools: { send_email: [external_write], "crm.*": [sensitive_read] }
rules:
  - { id: reads, effect: allow, classes: [sensitive_read], add_taints: [pii] }
  - { id: writes, effect: allow, classes: [external_write] }
  - id: no-exfil
    effect: deny
    classes: [external_write]
    if: "taint:pii and not principal:admin"
  - { id: big, effect: deny, tools: [send_email], args: { /to: { matches: "@evil" } } }
  - { id: never, effect: deny, tools: [nothing] }
"#,
        );
        let mut cov = Coverage::new(&p);
        let mut state = SessionState::default();
        for r in [
            r#"{"session":"s","tool":"send_email","args":{"to":"a@corp"}}"#,
            r#"{"session":"s","tool":"crm.read"}"#,
            r#"{"session":"s","tool":"send_email","args":{"to":"a@corp"}}"#,
        ] {
            let e = cov.evaluate(&p, &request(r), &state);
            if let Some(change) = e.change {
                state.apply(&change);
            }
        }
        let by_id = |id: &str| cov.rules.iter().find(|r| &*r.id == id).unwrap();
        assert_eq!(cov.requests, 3);
        assert_eq!((by_id("writes").matched, by_id("writes").decided), (2, 1));
        assert_eq!(
            (by_id("no-exfil").matched, by_id("no-exfil").decided),
            (1, 1)
        );
        let exprs: Vec<_> = by_id("no-exfil")
            .conditions
            .iter()
            .map(|c| (c.expr.as_str(), c.when_true, c.when_false))
            .collect();
        assert_eq!(
            exprs,
            [
                ("taint:pii and not principal:admin", 1, 1),
                ("taint:pii", 1, 1),
                ("not principal:admin", 2, 0),
                ("principal:admin", 0, 2),
            ]
        );
        let big = &by_id("big").args[0];
        assert_eq!((big.held, big.failed, big.unknown), (0, 2, 0));
        assert_eq!(
            cov.never_matched().map(|r| &*r.id).collect::<Vec<_>>(),
            ["big", "never"]
        );
        // 5 rules (3 matched) + 4 subexpressions x2 (6 covered) + 1 arg (0 covered).
        assert_eq!(
            cov.score(),
            Score {
                covered: 9,
                points: 14
            }
        );
        let mut twice = cov.clone();
        twice.merge(&cov).unwrap();
        assert_eq!(twice.requests, 6);
        assert!(
            twice
                .merge(&Coverage::new(&policy("warden: 1\nname: other\n")))
                .is_err()
        );
    }

    #[test]
    fn observed_evaluation_decides_as_the_decision_path() {
        let p = policy(
            "warden: 1\nname: t\nrules:\n  - { id: a, effect: allow, if: \"tool:x or taint:t\" }\n",
        );
        for r in [r#"{"tool":"x"}"#, r#"{"tool":"y"}"#] {
            let plain = crate::eval::evaluate(&p, &request(r), &SessionState::default());
            let observed = Coverage::new(&p).evaluate(&p, &request(r), &SessionState::default());
            assert_eq!(plain.decision.verdict, observed.decision.verdict);
        }
    }
}
