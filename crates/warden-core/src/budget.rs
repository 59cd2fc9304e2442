//! Budgets: how much LLM traffic a tenant or a principal may use in a period (tokens, cost,
//! requests), optionally only for some models. The policy declares them (`budgets:`); the
//! front door that sees the traffic (the LLM proxy) reserves an estimate before forwarding and
//! settles on the usage the upstream reports, against a shared [`crate::state::CounterStore`].
//! This module holds what is pure: the compiled budget, which requests it covers, and the
//! period's window.

use std::sync::Arc;

use crate::glob::Glob;

/// Whose usage a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetScope {
    /// The caller's tenant (all its principals together).
    Tenant,
    /// Each principal apart.
    Principal,
}

/// A budget's period: usage counts from the period's start (UTC) and resets at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    /// A clock minute.
    Minute,
    /// A clock hour.
    Hour,
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
}

/// What a budget limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetLimit {
    /// Prompt and answer tokens together.
    Tokens(u64),
    /// Cost in millionths of a US dollar (from the daemon's price table).
    CostMicroUsd(u64),
    /// Requests.
    Requests(u64),
}

impl BudgetLimit {
    /// The unit's name in messages (`tokens`, `cost_usd`, `requests`).
    pub fn unit(self) -> &'static str {
        match self {
            BudgetLimit::Tokens(_) => "tokens",
            BudgetLimit::CostMicroUsd(_) => "cost_usd",
            BudgetLimit::Requests(_) => "requests",
        }
    }

    /// The limit, in the unit's counting (micro-dollars for cost).
    pub fn amount(self) -> u64 {
        match self {
            BudgetLimit::Tokens(n) | BudgetLimit::CostMicroUsd(n) | BudgetLimit::Requests(n) => n,
        }
    }
}

/// One compiled budget.
#[derive(Debug, Clone)]
pub struct Budget {
    /// The budget's id, named in refusals.
    pub id: Arc<str>,
    /// Whose usage it counts.
    pub scope: BudgetScope,
    /// Its period.
    pub period: BudgetPeriod,
    /// What it limits, and how much.
    pub limit: BudgetLimit,
    /// The models it covers (globs); empty: every model.
    pub models: Vec<Glob>,
}

impl Budget {
    /// Whether the budget covers requests for `model`.
    pub fn covers(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|g| g.matches(model))
    }
}

impl BudgetPeriod {
    /// The period's name (`minute`, `hour`, `day`, `month`).
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Minute => "minute",
            BudgetPeriod::Hour => "hour",
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
        }
    }

    /// The window holding `now` (unix seconds): its number (distinct per period, increasing)
    /// and when it ends (unix seconds).
    pub fn window(self, now: u64) -> (u64, u64) {
        let fixed = |len: u64| (now / len, (now / len + 1) * len);
        match self {
            BudgetPeriod::Minute => fixed(60),
            BudgetPeriod::Hour => fixed(3600),
            BudgetPeriod::Day => fixed(86_400),
            BudgetPeriod::Month => {
                let (year, month) = civil_month(now / 86_400);
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                let end = days_from_civil(next_year, next_month) * 86_400;
                (year * 12 + (month - 1), end)
            }
        }
    }
}

/// Year and month (1 to 12) of the day `days` after 1970-01-01 (H. Hinnant's civil calendar
/// algorithm, for non-negative days).
fn civil_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month)
}

/// Days from 1970-01-01 to the first of `month` in `year` (year at least 1970).
fn days_from_civil(year: u64, month: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_utc_clock_and_calendar() {
        // 2026-12-03T21:30:15Z
        let now = 1_796_333_415;
        assert_eq!(BudgetPeriod::Minute.window(now).1, 1_796_333_460);
        assert_eq!(BudgetPeriod::Hour.window(now).1, 1_796_335_200);
        assert_eq!(BudgetPeriod::Day.window(now).1, 1_796_342_400);
        // The month ends on 2027-01-01T00:00:00Z.
        assert_eq!(BudgetPeriod::Month.window(now).1, 1_798_761_600);
        let (december, _) = BudgetPeriod::Month.window(now);
        let (january, _) = BudgetPeriod::Month.window(1_798_761_600);
        assert_eq!(january, december + 1);
        // February of a leap year.
        assert_eq!(civil_month(days_from_civil(2028, 2) + 28), (2028, 2));
        assert_eq!(civil_month(days_from_civil(2028, 2) + 29), (2028, 3));
    }
}
