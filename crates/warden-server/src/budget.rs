//! The ledger of the policies' LLM budgets ([`warden_core::budget`]) in this daemon: usage per
//! budget, scope (tenant or principal) and window, reserved before a request is forwarded and
//! settled on the usage the upstream reports.
//!
//! A reservation is checked and taken in one step under the ledger's lock, so concurrent
//! requests never together reserve more than the limit; an answer that uses more than its
//! estimate (an estimate counts the prompt at four characters a token and the answer at its
//! `max_tokens`) can pass the limit by that difference only. The ledger is in process: each
//! instance keeps its own (shared budgets across instances are the shared state's to carry).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use warden_core::budget::{Budget, BudgetLimit, BudgetScope};

/// Answer tokens assumed when a request sets no `max_tokens`.
pub const DEFAULT_ANSWER_TOKENS: u64 = 4096;
/// Counters kept at most (budgets x scopes x windows); a reservation that would need another
/// is refused (fail closed) until old windows are dropped.
pub const MAX_COUNTERS: usize = 100_000;

/// A model's price (the configuration's `llm_prices`).
pub use crate::config::LlmPrice as Price;

/// Tokens of one exchange: estimated before, reported after.
pub use warden_llm::Usage;

/// Who and what a reservation is for.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The policy declaring the budgets (budgets of two policies never share counters).
    pub policy: &'a str,
    /// The caller's tenant.
    pub tenant: &'a str,
    /// The request's principal.
    pub principal: Option<&'a str>,
    /// The model asked for.
    pub model: &'a str,
    /// Its price, if the daemon's table has one.
    pub price: Option<Price>,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The budget has not enough left.
    #[error("Warden budget `{id}` is exhausted ({unit} per {period})")]
    Exhausted {
        /// The budget's id.
        id: Arc<str>,
        /// Its unit (`tokens`, `cost_usd`, `requests`).
        unit: &'static str,
        /// Its period.
        period: &'static str,
    },
    /// A cost budget covers a model without a price.
    #[error("Warden budget `{id}` counts cost, and model `{model}` has no price in `llm_prices`")]
    NoPrice {
        /// The budget's id.
        id: Arc<str>,
        /// The model.
        model: String,
    },
    /// The ledger is full.
    #[error("Warden's budget ledger is full")]
    Full,
}

/// A budget's counter: the budget and scope's key, and the window.
type CounterKey = (Arc<str>, u64);

/// One budget's share of a reservation.
#[derive(Debug, Clone)]
struct Held {
    key: CounterKey,
    ends: u64,
    limit: BudgetLimit,
    amount: u64,
}

/// What one exchange reserved; settle it (or release it) once.
#[derive(Debug, Default)]
pub struct Reservation {
    held: Vec<Held>,
    price: Option<Price>,
}

/// The daemon's budget ledger.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Usage by (budget key, window), with the window's end (unix seconds).
    used: Mutex<HashMap<CounterKey, (u64, u64)>>,
}

fn amount(limit: BudgetLimit, usage: Usage, price: Option<Price>) -> Option<u64> {
    match limit {
        BudgetLimit::Tokens(_) => Some(usage.input + usage.output),
        BudgetLimit::CostMicroUsd(_) => price.map(|p| p.micro_usd(usage.input, usage.output)),
        BudgetLimit::Requests(_) => Some(1),
    }
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reserves `estimate` against every budget covering the subject's model, all or none.
    pub fn reserve(
        &self,
        budgets: &[Budget],
        subject: &Subject<'_>,
        estimate: Usage,
        now_secs: u64,
    ) -> Result<Reservation, Refused> {
        let mut wanted = Vec::new();
        for budget in budgets.iter().filter(|b| b.covers(subject.model)) {
            let amount =
                amount(budget.limit, estimate, subject.price).ok_or_else(|| Refused::NoPrice {
                    id: Arc::clone(&budget.id),
                    model: subject.model.to_owned(),
                })?;
            let scope = match (budget.scope, subject.principal) {
                (BudgetScope::Principal, Some(principal)) => {
                    format!("{}\u{1f}{principal}", subject.tenant)
                }
                _ => subject.tenant.to_owned(),
            };
            let key: Arc<str> = Arc::from(format!(
                "{}\u{1f}{}\u{1f}{scope}",
                subject.policy, budget.id
            ));
            let (window, ends) = budget.period.window(now_secs);
            wanted.push((
                budget,
                Held {
                    key: (key, window),
                    ends,
                    limit: budget.limit,
                    amount,
                },
            ));
        }
        let mut used = self.used.lock();
        for (budget, held) in &wanted {
            let now = used.get(&held.key).map_or(0, |(n, _)| *n);
            if now.saturating_add(held.amount) > held.limit.amount() {
                return Err(Refused::Exhausted {
                    id: Arc::clone(&budget.id),
                    unit: budget.limit.unit(),
                    period: budget.period.as_str(),
                });
            }
        }
        if used.len() + wanted.len() > MAX_COUNTERS {
            // Windows that ended are dropped first: nothing can be reserved in them again.
            used.retain(|_, (_, ends)| *ends > now_secs);
            if used.len() + wanted.len() > MAX_COUNTERS {
                return Err(Refused::Full);
            }
        }
        for (_, held) in &wanted {
            let entry = used.entry(held.key.clone()).or_insert((0, held.ends));
            entry.0 = entry.0.saturating_add(held.amount);
        }
        Ok(Reservation {
            held: wanted.into_iter().map(|(_, h)| h).collect(),
            price: subject.price,
        })
    }

    /// Replaces the reservation's estimate by the usage the upstream reported (none: the
    /// estimate stands).
    pub fn settle(&self, reservation: Reservation, actual: Option<Usage>) {
        let Some(actual) = actual else { return };
        let mut used = self.used.lock();
        for held in reservation.held {
            let Some(spent) = amount(held.limit, actual, reservation.price) else {
                continue;
            };
            if let Some((total, _)) = used.get_mut(&held.key) {
                *total = total.saturating_sub(held.amount).saturating_add(spent);
            }
        }
    }

    /// Gives the reservation back: nothing was spent (the upstream refused or failed).
    pub fn release(&self, reservation: Reservation) {
        let mut used = self.used.lock();
        for held in reservation.held {
            if let Some((total, _)) = used.get_mut(&held.key) {
                *total = total.saturating_sub(held.amount);
            }
        }
    }

    /// What a budget's counter holds now for `tenant` (tests and the console).
    pub fn used(&self, policy: &str, budget: &Budget, tenant: &str, now_secs: u64) -> u64 {
        let key: Arc<str> = Arc::from(format!("{policy}\u{1f}{}\u{1f}{tenant}", budget.id));
        let (window, _) = budget.period.window(now_secs);
        self.used.lock().get(&(key, window)).map_or(0, |(n, _)| *n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use warden_core::budget::BudgetPeriod;

    fn budget(limit: BudgetLimit) -> Budget {
        Budget {
            id: Arc::from("daily"),
            scope: BudgetScope::Tenant,
            period: BudgetPeriod::Day,
            limit,
            models: Vec::new(),
        }
    }

    fn subject(price: Option<Price>) -> Subject<'static> {
        Subject {
            policy: "p",
            tenant: "t",
            principal: None,
            model: "m",
            price,
        }
    }

    #[test]
    fn a_thousand_concurrent_reservations_never_pass_the_limit() {
        let ledger = Arc::new(Ledger::new());
        let budgets = Arc::new(vec![budget(BudgetLimit::Tokens(100_000))]);
        let estimate = Usage {
            input: 100,
            output: 1_000,
        };
        let threads: Vec<_> = (0..1_000)
            .map(|_| {
                let (ledger, budgets) = (Arc::clone(&ledger), Arc::clone(&budgets));
                std::thread::spawn(move || {
                    ledger
                        .reserve(&budgets, &subject(None), estimate, 1_000)
                        .is_ok()
                })
            })
            .collect();
        let admitted = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(admitted, 90, "100,000 tokens hold 90 reservations of 1,100");
        let used = ledger.used("p", &budgets[0], "t", 1_000);
        assert!(used <= 100_000, "{used}");
        assert_eq!(used, 90 * 1_100, "as many as fit were admitted");
    }

    #[test]
    fn settling_replaces_the_estimate_and_releasing_gives_it_back() {
        let ledger = Ledger::new();
        let price = Price {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
        };
        let budgets = vec![budget(BudgetLimit::CostMicroUsd(10_000))];
        let r = ledger
            .reserve(
                &budgets,
                &subject(Some(price)),
                Usage {
                    input: 1_000,
                    output: 4_000,
                },
                0,
            )
            .unwrap();
        assert_eq!(ledger.used("p", &budgets[0], "t", 0), 9_000);
        let e = ledger
            .reserve(
                &budgets,
                &subject(Some(price)),
                Usage {
                    input: 1_000,
                    output: 4_000,
                },
                0,
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("`daily` is exhausted (cost_usd per day)"),
            "{e}"
        );
        ledger.settle(
            r,
            Some(Usage {
                input: 1_000,
                output: 500,
            }),
        );
        assert_eq!(ledger.used("p", &budgets[0], "t", 0), 2_000);
        let r = ledger
            .reserve(
                &budgets,
                &subject(Some(price)),
                Usage {
                    input: 1_000,
                    output: 3_000,
                },
                0,
            )
            .unwrap();
        assert_eq!(ledger.used("p", &budgets[0], "t", 0), 9_000);
        ledger.release(r);
        assert_eq!(ledger.used("p", &budgets[0], "t", 0), 2_000);
        let e = ledger
            .reserve(&budgets, &subject(None), Usage::default(), 0)
            .unwrap_err();
        assert!(matches!(e, Refused::NoPrice { .. }), "{e}");
    }
}
