//! After-sales analytics, pure: the facts of the service business in, figures out.
//! Nothing here touches the database or the clock; [`crate::store`] loads [`Facts`]
//! (optionally for one customer: the scope the authorization work restricts) and the
//! API passes `now`.
//!
//! - [`kpis`]: the service business over a period, per tenant and per customer.
//! - [`accounts`]: one view per customer (health, stage, LTV, renewal, proposals), CSV.
//! - [`ltv`]: customer lifetime value.
//! - [`health`]: churn signals, each explained, the health score and the lifecycle stage.
//! - [`recommend`]: contract and upgrade proposals with the numbers behind them.
//! - [`survey`]: NPS survey tokens, answers and the answer page.
//!
//! # Definitions
//!
//! A **period** is half-open, `[from, to)`, instants in RFC 3339 or Unix ms. Money is
//! integer cents of the tenant's currency; a year is 365 days.
//!
//! **Offers.** *Proposed*: offers created in the period, except re-plans (an offer that
//! replaces a superseded one is the same proposal). *Accepted* / *declined*: offers
//! whose customer decision (`decided_at`) falls in the period; declines are grouped by
//! their reason. *Acceptance rate* = accepted ÷ (accepted + declined): the customer's
//! explicit decisions (offers that expired undecided are counted apart, `expired`).
//!
//! **Service revenue** is what the customer pays, recognised when the work order is
//! completed (in the period). An offer's price is parts + labour + travel − coverage;
//! the coverage is stored split at offer time (migration 0003):
//! `parts_coverage = round(parts × contract parts coverage)`, the rest of the coverage
//! is labour coverage. *Parts revenue* = parts − parts coverage; *labour revenue* =
//! labour + travel − labour coverage. *Contract revenue* = Σ annual fee × (days of the
//! contract term `[start, renewal)` inside the period) ÷ 365.
//!
//! **Contracts over time.** A customer may have many contracts; one that starts no
//! later than `ltv.renewal_grace` (30 days) after the customer's previous contract
//! ended *continues* it: a *renewal* (same or lower fee) or an *upgrade* (higher fee).
//! Any other contract is a *new sale*; to a customer that already had machines or an
//! earlier contract it is a *cross-sell*. *Upsell revenue* = Σ over upgrades of (fee −
//! previous fee) pro-rated over the period like contract revenue (the upgrade's first
//! term); *cross-sell revenue* = Σ over cross-sells of the fee, pro-rated the same way.
//! *Bookings*: upgrades and cross-sells that start in the period, at their yearly value
//! (the fee uplift; the fee).
//! An upgrade mid-term is recorded by ending the old contract (its renewal date) when
//! the new one starts.
//!
//! **Retention.** A customer is *under contract* at `t` when one of its contracts has
//! `start ≤ t < renewal`. S = customers under contract at `from`, E = at `to`, N =
//! customers under contract at `to` but not at `from` (new or won back). *Retention* =
//! (E − N) ÷ S, which is exactly the share of S still under contract at `to`; *churn
//! rate* = 1 − retention; none when S is empty. *Renewal rate* = renewed ÷ decided, over
//! contracts whose renewal date falls in the period: *renewed* when a continuing
//! contract exists (see above), *lapsed* when none exists `renewal_grace` after the
//! renewal date; contracts still inside the grace are *pending*.
//!
//! **Failures** (component lives that ended in the period). *Predicted in time*: the
//! part was replaced by a completed work order and not found failed. *Failed before
//! the visit*: replaced by a work order but found failed. *Unplanned*: a failure with
//! no work order. *In-time rate* = in time ÷ all three.
//!
//! **Median lead time**: over offers completed in the period, hours from the first
//! offer of its re-plan chain (the prediction) to the completed replacement.
//!
//! **Downtime avoided** = Σ over work orders completed in the period with no part found
//! failed of P(failure before the next window) × the machine model's unplanned
//! downtime hours (and × its downtime cost per hour, for the money).
//!
//! **NPS** over survey answers given in the period: 100 × (promoters (9–10) −
//! detractors (0–6)) ÷ answers. **CSAT** = 100 × answers of 4 or 5 ÷ CSAT answers
//! (1–5), with the mean. The *response rate* is answered ÷ sent among surveys sent in
//! the period.
//!
//! **LTV** of a customer at `t` (see [`ltv`]): margin to date + m·r / (1 + d − r), where
//! margin to date = Σ revenue up to `t` × its margin (`ltv.parts_margin`,
//! `labour_margin`, `contract_margin`); m = the active contract's fee × contract margin
//! plus the margin of the paid service of the 365 days up to `t`; r = the customer's
//! own renewal rate once it has `min_own_renewals` decided renewals, else the tenant's
//! once it has `min_tenant_renewals`, else `default_retention`; d = `discount_rate`.

pub mod accounts;
pub mod config;
pub mod health;
pub mod kpis;
pub mod ltv;
pub mod recommend;
pub mod survey;

use std::collections::HashMap;

use serde::Serialize;
use wearcast_protocol::UnixMs;

pub use config::AnalyticsConfig;

/// A year of contract fees.
pub const YEAR_MS: i64 = 365 * UnixMs::DAY;

/// The half-open interval `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub from: UnixMs,
    pub to: UnixMs,
}

impl Period {
    pub fn new(from: UnixMs, to: UnixMs) -> Self {
        Self { from, to }
    }

    pub fn contains(&self, t: UnixMs) -> bool {
        self.from <= t && t < self.to
    }

    /// Milliseconds of `[start, end)` inside the period.
    pub fn overlap_ms(&self, start: UnixMs, end: UnixMs) -> i64 {
        (end.0.min(self.to.0) - start.0.max(self.from.0)).max(0)
    }
}

/// Everything the analytics read, for one tenant or one customer.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub currency: String,
    pub customers: Vec<CustomerFact>,
    pub contracts: Vec<ContractFact>,
    pub machines: Vec<MachineFact>,
    pub offers: Vec<OfferFact>,
    pub lives: Vec<LifeFact>,
    pub surveys: Vec<SurveyFact>,
    pub proposals: Vec<ProposalFact>,
    /// Usage per customer (loaded for account health only).
    pub usage: Vec<UsageFact>,
    /// Renewals of the whole tenant, whatever the scope: the fallback retention of
    /// customers with too short a history of their own.
    pub tenant_renewals: RenewalTally,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CustomerFact {
    pub id: String,
    pub name: String,
    /// Offers, surveys and proposals sent in the last 7 days (the contact cap).
    pub contacts_last_week: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContractFact {
    pub id: String,
    pub customer: String,
    pub tier: String,
    pub parts_coverage: f64,
    pub labour_coverage: f64,
    pub annual_fee_cents: i64,
    pub start: UnixMs,
    pub renewal: UnixMs,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MachineFact {
    pub id: String,
    pub customer: String,
    pub commissioned_at: UnixMs,
    pub last_seen_at: Option<UnixMs>,
    /// Components that failed and are not replaced yet, with when.
    pub open_failures: Vec<(String, UnixMs)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferStatus {
    Proposed,
    Accepted,
    Scheduled,
    Completed,
    Declined,
    Expired,
    Superseded,
    /// Accepted, then cancelled because the part was replaced before the visit.
    Cancelled,
}

impl OfferStatus {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "proposed" => Self::Proposed,
            "accepted" => Self::Accepted,
            "scheduled" => Self::Scheduled,
            "completed" => Self::Completed,
            "declined" => Self::Declined,
            "expired" => Self::Expired,
            "superseded" => Self::Superseded,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// The customer said yes (also when the visit was cancelled later because the part
    /// had been replaced before it; revenue counts only completed visits).
    pub fn is_accepted(self) -> bool {
        matches!(
            self,
            Self::Accepted | Self::Scheduled | Self::Completed | Self::Cancelled
        )
    }
}

/// An offer's price as stored (cents).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OfferPrice {
    pub parts: i64,
    pub labour: i64,
    pub travel: i64,
    pub parts_coverage: i64,
    pub labour_coverage: i64,
}

impl OfferPrice {
    /// What the customer pays for the parts.
    pub fn parts_revenue(&self) -> i64 {
        self.parts - self.parts_coverage
    }

    /// What the customer pays for labour and travel.
    pub fn labour_revenue(&self) -> i64 {
        self.labour + self.travel - self.labour_coverage
    }

    /// The offer's total.
    pub fn paid(&self) -> i64 {
        self.parts_revenue() + self.labour_revenue()
    }

    /// What a contract with these coverages would have paid of it.
    pub fn covered_by(&self, parts_coverage: f64, labour_coverage: f64) -> f64 {
        self.parts as f64 * parts_coverage + (self.labour + self.travel) as f64 * labour_coverage
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkOrderFact {
    pub id: String,
    /// unassigned | scheduled | completed | cancelled
    pub status: String,
    pub created_at: UnixMs,
    pub window_start: UnixMs,
    pub window_end: UnixMs,
    pub completed_at: Option<UnixMs>,
    /// A removed part was found failed.
    pub found_failed: bool,
}

impl WorkOrderFact {
    pub fn is_open(&self) -> bool {
        matches!(self.status.as_str(), "unassigned" | "scheduled")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct OfferFact {
    pub id: String,
    pub customer: String,
    pub machine: String,
    pub status: OfferStatus,
    pub created_at: UnixMs,
    /// When it last changed (for an expired offer: when it expired).
    pub updated_at: UnixMs,
    pub decided_at: Option<UnixMs>,
    pub decline_reason: Option<String>,
    pub superseded_by: Option<String>,
    pub price: OfferPrice,
    pub p_fail_before_next: f64,
    pub downtime_cost_cents_per_hour: i64,
    pub unplanned_downtime_hours: f64,
    pub work_order: Option<WorkOrderFact>,
}

impl OfferFact {
    /// When the replacement was done, if it was.
    pub fn completed_at(&self) -> Option<UnixMs> {
        self.work_order
            .as_ref()
            .filter(|w| w.status == "completed")
            .and_then(|w| w.completed_at)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifeEnd {
    Failure,
    Replaced,
}

/// One ended life of a component.
#[derive(Clone, Debug, PartialEq)]
pub struct LifeFact {
    pub machine: String,
    pub customer: String,
    pub component: String,
    pub ended_at: UnixMs,
    pub end: LifeEnd,
    pub work_order: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SurveyFact {
    pub id: String,
    pub customer: String,
    pub work_order: String,
    pub machine: String,
    pub created_at: UnixMs,
    pub expires_at: UnixMs,
    pub answered_at: Option<UnixMs>,
    pub score: Option<u8>,
    pub csat: Option<u8>,
    pub reason: Option<String>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProposalKind {
    /// A service contract for a customer without one.
    Contract,
    /// A higher tier for a customer with a contract.
    Upgrade,
}

impl ProposalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contract => "contract",
            Self::Upgrade => "upgrade",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "contract" => Some(Self::Contract),
            "upgrade" => Some(Self::Upgrade),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProposalFact {
    pub customer: String,
    pub kind: ProposalKind,
    pub sent_at: UnixMs,
}

/// A customer's usage: the time integral of the usage channel (value × hours) over the
/// last usage window and the one before.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageFact {
    pub customer: String,
    pub recent: f64,
    pub previous: f64,
}

/// Contract renewals that were decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RenewalTally {
    pub renewed: u32,
    pub lapsed: u32,
}

impl RenewalTally {
    pub fn decided(&self) -> u32 {
        self.renewed + self.lapsed
    }

    pub fn rate(&self) -> Option<f64> {
        (self.decided() > 0).then(|| f64::from(self.renewed) / f64::from(self.decided()))
    }
}

/// One customer's share of the facts.
#[derive(Clone, Debug)]
pub struct CustomerView<'a> {
    pub customer: &'a CustomerFact,
    pub contracts: Vec<&'a ContractFact>,
    pub machines: Vec<&'a MachineFact>,
    pub offers: Vec<&'a OfferFact>,
    pub lives: Vec<&'a LifeFact>,
    pub surveys: Vec<&'a SurveyFact>,
    pub proposals: Vec<&'a ProposalFact>,
    pub usage: Option<&'a UsageFact>,
    /// Every offer of the tenant in scope by id (re-plan chains).
    pub offer_index: &'a HashMap<&'a str, &'a OfferFact>,
}

impl Facts {
    /// Offers by id.
    pub fn offer_index(&self) -> HashMap<&str, &OfferFact> {
        self.offers.iter().map(|o| (o.id.as_str(), o)).collect()
    }

    /// The facts of `customer`.
    pub fn view<'a>(
        &'a self,
        customer: &'a CustomerFact,
        offer_index: &'a HashMap<&'a str, &'a OfferFact>,
    ) -> CustomerView<'a> {
        let id = customer.id.as_str();
        CustomerView {
            customer,
            contracts: self.contracts.iter().filter(|c| c.customer == id).collect(),
            machines: self.machines.iter().filter(|m| m.customer == id).collect(),
            offers: self.offers.iter().filter(|o| o.customer == id).collect(),
            lives: self.lives.iter().filter(|l| l.customer == id).collect(),
            surveys: self.surveys.iter().filter(|s| s.customer == id).collect(),
            proposals: self.proposals.iter().filter(|p| p.customer == id).collect(),
            usage: self.usage.iter().find(|u| u.customer == id),
            offer_index,
        }
    }
}

impl CustomerView<'_> {
    /// The contract in force at `t`: the latest started whose term covers `t` (the one
    /// the planner prices with).
    pub fn active_contract(&self, t: UnixMs) -> Option<&ContractFact> {
        active_contract(&self.contracts, t)
    }

    /// When the customer became one: its first contract or first machine.
    pub fn customer_since(&self) -> Option<UnixMs> {
        self.contracts
            .iter()
            .map(|c| c.start)
            .chain(self.machines.iter().map(|m| m.commissioned_at))
            .min()
    }
}

pub fn active_contract<'a>(contracts: &[&'a ContractFact], t: UnixMs) -> Option<&'a ContractFact> {
    contracts
        .iter()
        .filter(|c| c.start <= t && t < c.renewal)
        .max_by_key(|c| (c.start, c.id.as_str()))
        .copied()
}

/// What a contract is, given the customer's other contracts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ContractKind {
    /// The customer's first relationship with the manufacturer.
    NewCustomer,
    /// A new contract for a customer that already had machines or an earlier contract.
    CrossSell,
    /// Continues the previous contract at the same or a lower fee.
    Renewal,
    /// Continues the previous contract at a higher fee: the difference is upsell.
    Upgrade { uplift_cents: i64 },
}

/// The customer's contract `k` continues from (started earlier, ended no more than
/// `grace_ms` before `k` started).
pub fn predecessor<'a>(
    k: &ContractFact,
    contracts: &[&'a ContractFact],
    grace_ms: i64,
) -> Option<&'a ContractFact> {
    contracts
        .iter()
        .filter(|c| c.customer == k.customer && c.id != k.id && c.start < k.start)
        .max_by_key(|c| (c.start, c.id.as_str()))
        .copied()
        .filter(|prev| k.start.0 <= prev.renewal.0 + grace_ms)
}

/// Classifies contract `k` among the customer's `contracts` and `machines`.
pub fn contract_kind(
    k: &ContractFact,
    contracts: &[&ContractFact],
    machines: &[&MachineFact],
    grace_ms: i64,
) -> ContractKind {
    if let Some(prev) = predecessor(k, contracts, grace_ms) {
        return if k.annual_fee_cents > prev.annual_fee_cents {
            ContractKind::Upgrade {
                uplift_cents: k.annual_fee_cents - prev.annual_fee_cents,
            }
        } else {
            ContractKind::Renewal
        };
    }
    let existing = machines
        .iter()
        .any(|m| m.customer == k.customer && m.commissioned_at < k.start)
        || contracts
            .iter()
            .any(|c| c.customer == k.customer && c.id != k.id && c.start < k.start);
    if existing {
        ContractKind::CrossSell
    } else {
        ContractKind::NewCustomer
    }
}

/// How a contract's renewal turned out, seen at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewalOutcome {
    Renewed,
    Lapsed,
    /// Not decided yet: before the renewal date or inside the grace after it.
    Pending,
}

pub fn renewal_outcome(
    k: &ContractFact,
    contracts: &[&ContractFact],
    now: UnixMs,
    grace_ms: i64,
) -> RenewalOutcome {
    let successor = contracts.iter().any(|c| {
        c.customer == k.customer
            && c.id != k.id
            && c.start > k.start
            && c.start.0 <= k.renewal.0 + grace_ms
    });
    if successor {
        RenewalOutcome::Renewed
    } else if now.0 >= k.renewal.0 + grace_ms {
        RenewalOutcome::Lapsed
    } else {
        RenewalOutcome::Pending
    }
}

/// Decided renewals among `contracts` at `now`.
pub fn renewal_tally(contracts: &[&ContractFact], now: UnixMs, grace_ms: i64) -> RenewalTally {
    let mut t = RenewalTally::default();
    for k in contracts {
        match renewal_outcome(k, contracts, now, grace_ms) {
            RenewalOutcome::Renewed => t.renewed += 1,
            RenewalOutcome::Lapsed => t.lapsed += 1,
            RenewalOutcome::Pending => {}
        }
    }
    t
}

/// A contract's fee earned inside `period` (pro-rated over its term's overlap).
pub fn prorated_fee(fee_cents: i64, start: UnixMs, end: UnixMs, period: &Period) -> f64 {
    fee_cents as f64 * period.overlap_ms(start, end) as f64 / YEAR_MS as f64
}

/// The first offer of `offer`'s re-plan chain (following `superseded_by` backwards).
pub fn chain_start<'a>(
    offer: &'a OfferFact,
    index: &HashMap<&str, &'a OfferFact>,
    replaced_by: &HashMap<&str, &'a str>,
) -> &'a OfferFact {
    let mut current = offer;
    // Bounded: a corrupt cycle cannot loop forever.
    for _ in 0..index.len() {
        match replaced_by
            .get(current.id.as_str())
            .and_then(|prev| index.get(prev))
        {
            Some(prev) => current = prev,
            None => break,
        }
    }
    current
}

/// For each offer that replaced another, the one it replaced.
pub fn replaced_by_index<'a>(offers: &[&'a OfferFact]) -> HashMap<&'a str, &'a str> {
    offers
        .iter()
        .filter_map(|o| o.superseded_by.as_deref().map(|next| (next, o.id.as_str())))
        .collect()
}

/// The median, none of nothing.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// `YYYY-MM-DD` of an instant (UTC), for explanations.
pub fn date(t: UnixMs) -> String {
    t.to_rfc3339().chars().take(10).collect()
}

#[cfg(test)]
mod tests;
