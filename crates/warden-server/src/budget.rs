//! The ledger of the policies' LLM budgets ([`warden_core::budget`]) in this daemon: usage per
//! budget, scope (tenant or principal) and window, reserved before a request is forwarded and
//! settled on the usage the upstream reports.
//!
//! A reservation is checked and taken in one atomic step of the counter store (under a lock in
//! process; one server-side script in Redis, so instances sharing state share budgets), so
//! concurrent requests never together reserve more than the limit; an answer that uses more
//! than its estimate (an estimate counts the prompt at four characters a token and the answer
//! at its `max_tokens`) can pass the limit by that difference only.

use std::sync::Arc;

use warden::state::{CounterId, CounterStore, Reserve};
use warden_core::budget::{Budget, BudgetLimit, BudgetScope};

/// Answer tokens assumed when a request sets no `max_tokens`.
pub const DEFAULT_ANSWER_TOKENS: u64 = 4096;

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
    /// The counter store failed or is full (the request is refused: fail closed).
    #[error("Warden's budget ledger is unavailable")]
    Store,
}

/// One budget's share of a reservation.
#[derive(Debug, Clone)]
struct Held {
    id: CounterId,
    limit: BudgetLimit,
    amount: u64,
}

/// What one exchange reserved; settle it (or release it) once.
#[derive(Debug, Default)]
pub struct Reservation {
    held: Vec<Held>,
    price: Option<Price>,
}

/// The daemon's budget ledger: counters in the daemon's counter store (in process, or Redis
/// when state is shared, so every instance reserves against the same totals).
pub struct Ledger {
    counters: Arc<dyn CounterStore>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

fn amount(limit: BudgetLimit, usage: Usage, price: Option<Price>) -> Option<u64> {
    match limit {
        BudgetLimit::Tokens(_) => Some(usage.input + usage.output),
        BudgetLimit::CostMicroUsd(_) => price.map(|p| p.micro_usd(usage.input, usage.output)),
        BudgetLimit::Requests(_) => Some(1),
    }
}

/// A budget's counter: grouped by policy and tenant (one reservation touches one group), keyed
/// by budget and scope.
fn counter(policy: &str, tenant: &str, budget: &Budget, scope: &str, window: u64) -> CounterId {
    CounterId {
        group: format!("{policy}\u{1f}{tenant}"),
        key: format!("{}\u{1f}{scope}", budget.id),
        window,
    }
}

impl Ledger {
    /// A ledger counting in `counters`.
    pub fn new(counters: Arc<dyn CounterStore>) -> Self {
        Self { counters }
    }

    /// Reserves `estimate` against every budget covering the subject's model, all or none.
    pub async fn reserve(
        &self,
        budgets: &[Budget],
        subject: &Subject<'_>,
        estimate: Usage,
        now_secs: u64,
    ) -> Result<Reservation, Refused> {
        let mut wanted = Vec::new();
        let mut covering = Vec::new();
        for budget in budgets.iter().filter(|b| b.covers(subject.model)) {
            let amount =
                amount(budget.limit, estimate, subject.price).ok_or_else(|| Refused::NoPrice {
                    id: Arc::clone(&budget.id),
                    model: subject.model.to_owned(),
                })?;
            let scope = match (budget.scope, subject.principal) {
                (BudgetScope::Principal, Some(principal)) => principal,
                _ => "",
            };
            let (window, ends) = budget.period.window(now_secs);
            wanted.push(Reserve {
                id: counter(subject.policy, subject.tenant, budget, scope, window),
                amount,
                limit: budget.limit.amount(),
                expires: ends,
            });
            covering.push(budget);
        }
        if wanted.is_empty() {
            return Ok(Reservation::default());
        }
        match self.counters.reserve(&wanted).await {
            Ok(None) => {}
            Ok(Some(at)) => {
                let budget = covering.get(at).ok_or(Refused::Store)?;
                return Err(Refused::Exhausted {
                    id: Arc::clone(&budget.id),
                    unit: budget.limit.unit(),
                    period: budget.period.as_str(),
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "budget reservation failed; refusing");
                return Err(Refused::Store);
            }
        }
        Ok(Reservation {
            held: wanted
                .into_iter()
                .zip(covering)
                .map(|(r, budget)| Held {
                    id: r.id,
                    limit: budget.limit,
                    amount: r.amount,
                })
                .collect(),
            price: subject.price,
        })
    }

    /// Replaces the reservation's estimate by the usage the upstream reported (none: the
    /// estimate stands).
    pub async fn settle(&self, reservation: Reservation, actual: Option<Usage>) {
        let Some(actual) = actual else { return };
        let changes: Vec<(CounterId, i64)> = reservation
            .held
            .into_iter()
            .filter_map(|held| {
                let spent = amount(held.limit, actual, reservation.price)?;
                let delta = i128::from(spent) - i128::from(held.amount);
                let delta =
                    i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX });
                (delta != 0).then_some((held.id, delta))
            })
            .collect();
        self.apply(&changes).await;
    }

    /// Gives the reservation back: nothing was spent (the upstream refused or failed).
    pub async fn release(&self, reservation: Reservation) {
        let changes: Vec<(CounterId, i64)> = reservation
            .held
            .into_iter()
            .map(|held| (held.id, i64::try_from(held.amount).map_or(i64::MIN, |a| -a)))
            .collect();
        self.apply(&changes).await;
    }

    async fn apply(&self, changes: &[(CounterId, i64)]) {
        if changes.is_empty() {
            return;
        }
        // The exchange already happened: a store that cannot take the change leaves the
        // estimate counted (the safe side of a budget), and says so.
        if let Err(e) = self.counters.adjust(changes).await {
            tracing::warn!(error = %e, "budget settlement not recorded; the estimate stands");
        }
    }

    /// What a budget's counter holds now for `tenant` (tests and the console).
    pub async fn used(
        &self,
        policy: &str,
        budget: &Budget,
        tenant: &str,
        now_secs: u64,
    ) -> Result<u64, warden::StoreError> {
        let (window, _) = budget.period.window(now_secs);
        self.counters
            .reserved(&counter(policy, tenant, budget, "", window))
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use warden::state::{MemoryCounterStore, wait};
    use warden_core::budget::BudgetPeriod;

    fn ledger() -> Ledger {
        Ledger::new(Arc::new(MemoryCounterStore::new(1_000)))
    }

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
        let ledger = Arc::new(ledger());
        let budgets = Arc::new(vec![budget(BudgetLimit::Tokens(100_000))]);
        let estimate = Usage {
            input: 100,
            output: 1_000,
        };
        let threads: Vec<_> = (0..1_000)
            .map(|_| {
                let (ledger, budgets) = (Arc::clone(&ledger), Arc::clone(&budgets));
                std::thread::spawn(move || {
                    wait(ledger.reserve(&budgets, &subject(None), estimate, 1_000)).is_ok()
                })
            })
            .collect();
        let admitted = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(admitted, 90, "100,000 tokens hold 90 reservations of 1,100");
        let used = wait(ledger.used("p", &budgets[0], "t", 1_000)).unwrap();
        assert!(used <= 100_000, "{used}");
        assert_eq!(used, 90 * 1_100, "as many as fit were admitted");
    }

    #[test]
    fn settling_replaces_the_estimate_and_releasing_gives_it_back() {
        let ledger = ledger();
        let price = Price {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
        };
        let budgets = vec![budget(BudgetLimit::CostMicroUsd(10_000))];
        let r = wait(ledger.reserve(
            &budgets,
            &subject(Some(price)),
            Usage {
                input: 1_000,
                output: 4_000,
            },
            0,
        ))
        .unwrap();
        assert_eq!(wait(ledger.used("p", &budgets[0], "t", 0)).unwrap(), 9_000);
        let e = wait(ledger.reserve(
            &budgets,
            &subject(Some(price)),
            Usage {
                input: 1_000,
                output: 4_000,
            },
            0,
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("`daily` is exhausted (cost_usd per day)"),
            "{e}"
        );
        wait(ledger.settle(
            r,
            Some(Usage {
                input: 1_000,
                output: 500,
            }),
        ));
        assert_eq!(wait(ledger.used("p", &budgets[0], "t", 0)).unwrap(), 2_000);
        let r = wait(ledger.reserve(
            &budgets,
            &subject(Some(price)),
            Usage {
                input: 1_000,
                output: 3_000,
            },
            0,
        ))
        .unwrap();
        assert_eq!(wait(ledger.used("p", &budgets[0], "t", 0)).unwrap(), 9_000);
        wait(ledger.release(r));
        assert_eq!(wait(ledger.used("p", &budgets[0], "t", 0)).unwrap(), 2_000);
        let e = wait(ledger.reserve(&budgets, &subject(None), Usage::default(), 0)).unwrap_err();
        assert!(matches!(e, Refused::NoPrice { .. }), "{e}");
    }
}
