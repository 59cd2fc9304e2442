//! `budgets:` in a policy: compiled with their scope, period, limit and models; load errors
//! name the budget and the field.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use warden_core::budget::{BudgetLimit, BudgetPeriod, BudgetScope};
use warden_core::policy::{CompileOptions, CompiledPolicy};

fn load(budgets: &str) -> Result<CompiledPolicy, String> {
    let text = format!("warden: 1\nname: b\nbudgets:\n{budgets}");
    CompiledPolicy::compile("b.yaml", &text, CompileOptions::default()).map_err(|e| e.to_string())
}

#[test]
fn budgets_compile_with_their_scope_period_limit_and_models() {
    let policy = load(
        "  - { id: team, period: month, cost_usd: 50.25 }\n  - { id: interns, per: principal, period: minute, tokens: 1000, models: [\"gpt-4o*\"] }\n",
    )
    .unwrap();
    let [team, interns] = &policy.budgets[..] else {
        panic!()
    };
    assert_eq!(team.limit, BudgetLimit::CostMicroUsd(50_250_000));
    assert_eq!(
        (team.scope, team.period),
        (BudgetScope::Tenant, BudgetPeriod::Month)
    );
    assert!(team.covers("anything"));
    assert_eq!(interns.scope, BudgetScope::Principal);
    assert!(interns.covers("gpt-4o-mini") && !interns.covers("claude-x"));
}

#[test]
fn a_budget_needs_exactly_one_limit_and_a_unique_id() {
    for (budgets, says) in [
        ("  - { id: a, period: day }\n", "exactly one of"),
        (
            "  - { id: a, period: day, tokens: 1, requests: 2 }\n",
            "exactly one of",
        ),
        (
            "  - { id: a, period: day, tokens: 1 }\n  - { id: a, period: day, tokens: 2 }\n",
            "duplicate budget id",
        ),
        ("  - { id: a, period: week, tokens: 1 }\n", "week"),
        ("  - { id: a, period: day, cost_usd: -1 }\n", "cost_usd"),
        (
            "  - { id: a, period: day, tokens: 1, models: [\"\"] }\n",
            "models",
        ),
    ] {
        let e = load(budgets).unwrap_err();
        assert!(e.contains(says), "{budgets}: {e}");
    }
}
