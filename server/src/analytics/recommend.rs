//! Upsell and cross-sell recommendations, with the numbers behind them.
//!
//! - **Contract** (cross-sell): a customer without a contract in force with at least
//!   `min_paid_repairs` (2) paid repairs completed in the last 365 days (up to and
//!   including now). For each tier
//!   on sale (`recommendations.tiers`, fee per machine × the customer's machines), what
//!   it would have covered of those repairs = Σ parts × parts coverage + (labour +
//!   travel) × labour coverage. Tiers that would have covered at least
//!   `min_cover_share` (0.5) of their fee qualify; the one with the largest covered −
//!   fee (the customer's saving; ties: the cheaper) is proposed. Its *return* is
//!   covered ÷ fee.
//! - **Upgrade** (upsell): a customer with a contract in force whose paid extras (what it
//!   paid for repairs completed in the last 365 days) reach `upgrade_share` (0.5) of the
//!   upgrade price (the next tier's fee − the current fee). The next tier is the
//!   cheapest one on sale that costs more and covers at least as much. Its return is
//!   the extra it would have covered ÷ the upgrade price.
//!
//! A recommendation is **held back** (listed, not sendable) when the customer has an
//! open unplanned failure (a failed part not replaced yet: fix first, sell later), when
//! the same kind of proposal went out within `cooldown` (90 d), or when the customer's
//! contact cap for the week is used up.

use serde::Serialize;
use wearcast_protocol::UnixMs;

use super::config::{RecommendationConfig, TierOffer, ms};
use super::{CustomerView, OfferFact, ProposalKind, YEAR_MS, date};
use crate::planner::format_money;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    pub kind: ProposalKind,
    /// The tier proposed.
    pub tier: String,
    pub parts_coverage: f64,
    pub labour_coverage: f64,
    pub risk_tolerance: f64,
    /// Its yearly fee for the customer's machines.
    pub annual_fee_cents: i64,
    pub machines: u32,
    pub current_tier: Option<String>,
    pub current_fee_cents: Option<i64>,
    /// Paid repairs completed in the last 365 days and what they cost the customer.
    pub paid_repairs: u32,
    pub paid_last_year_cents: i64,
    /// What the proposal would have covered of them (an upgrade: beyond the current
    /// contract).
    pub would_have_covered_cents: i64,
    /// The fee (contract) or the fee difference (upgrade).
    pub price_cents: i64,
    /// would have covered ÷ price.
    pub return_ratio: f64,
    /// would have covered − price: the customer's saving on last year's repairs
    /// (negative: it pays that much for predictability).
    pub customer_net_cents: i64,
    pub reason: String,
    /// Not held back.
    pub sendable: bool,
    pub held_back: Option<String>,
}

/// Repairs the customer paid for, completed in `(now − 365 d, now]`.
fn paid_repairs<'a>(v: &CustomerView<'a>, now: UnixMs) -> Vec<&'a OfferFact> {
    let from = now.plus_ms(-YEAR_MS);
    v.offers
        .iter()
        .filter(|o| o.completed_at().is_some_and(|t| from < t && t <= now) && o.price.paid() > 0)
        .copied()
        .collect()
}

fn fee_for(tier: &TierOffer, machines: u32) -> i64 {
    tier.annual_fee_cents_per_machine * i64::from(machines)
}

/// The recommendations for the customer at `now`, held back where they must be.
pub fn recommend(
    v: &CustomerView<'_>,
    now: UnixMs,
    cfg: &RecommendationConfig,
    contact_cap: u32,
    currency: &str,
) -> Vec<Recommendation> {
    let machines = u32::try_from(v.machines.len()).unwrap_or(u32::MAX);
    if machines == 0 {
        return Vec::new();
    }
    let repairs = paid_repairs(v, now);
    let paid: i64 = repairs.iter().map(|o| o.price.paid()).sum();
    let money = |c: i64| format_money(c, currency);
    let mut out = Vec::new();
    match v.active_contract(now) {
        None if repairs.len() >= cfg.min_paid_repairs as usize => {
            let best = cfg
                .tiers
                .iter()
                .map(|t| {
                    let covered: f64 = repairs
                        .iter()
                        .map(|o| o.price.covered_by(t.parts_coverage, t.labour_coverage))
                        .sum();
                    (t, covered.round() as i64, fee_for(t, machines))
                })
                .filter(|(_, covered, fee)| *covered as f64 >= cfg.min_cover_share * *fee as f64)
                .max_by(|a, b| (a.1 - a.2).cmp(&(b.1 - b.2)).then(b.2.cmp(&a.2)));
            if let Some((tier, covered, fee)) = best {
                let ratio = covered as f64 / fee as f64;
                out.push(Recommendation {
                    kind: ProposalKind::Contract,
                    tier: tier.tier.clone(),
                    parts_coverage: tier.parts_coverage,
                    labour_coverage: tier.labour_coverage,
                    risk_tolerance: tier.risk_tolerance,
                    annual_fee_cents: fee,
                    machines,
                    current_tier: None,
                    current_fee_cents: None,
                    paid_repairs: repairs.len() as u32,
                    paid_last_year_cents: paid,
                    would_have_covered_cents: covered,
                    price_cents: fee,
                    return_ratio: ratio,
                    customer_net_cents: covered - fee,
                    reason: format!(
                        "{} paid repairs in the last 12 months cost {}; the {} contract ({}/year for {}) would have covered {} of them, {ratio:.2}× its fee",
                        repairs.len(),
                        money(paid),
                        tier.tier,
                        money(fee),
                        if machines == 1 { "1 machine".to_string() } else { format!("{machines} machines") },
                        money(covered),
                    ),
                    sendable: true,
                    held_back: None,
                });
            }
        }
        None => {}
        Some(k) => {
            let next = cfg
                .tiers
                .iter()
                .filter(|t| {
                    t.parts_coverage >= k.parts_coverage
                        && t.labour_coverage >= k.labour_coverage
                        && (t.parts_coverage > k.parts_coverage
                            || t.labour_coverage > k.labour_coverage)
                        && fee_for(t, machines) > k.annual_fee_cents
                })
                .min_by_key(|t| (fee_for(t, machines), t.tier.as_str()));
            if let Some(t) = next {
                let fee = fee_for(t, machines);
                let price = fee - k.annual_fee_cents;
                if paid > 0 && paid as f64 >= cfg.upgrade_share * price as f64 {
                    let extra: f64 = repairs
                        .iter()
                        .map(|o| {
                            o.price.covered_by(t.parts_coverage, t.labour_coverage)
                                - o.price.covered_by(k.parts_coverage, k.labour_coverage)
                        })
                        .sum();
                    let extra = extra.round() as i64;
                    let ratio = extra as f64 / price as f64;
                    out.push(Recommendation {
                        kind: ProposalKind::Upgrade,
                        tier: t.tier.clone(),
                        parts_coverage: t.parts_coverage,
                        labour_coverage: t.labour_coverage,
                        risk_tolerance: t.risk_tolerance,
                        annual_fee_cents: fee,
                        machines,
                        current_tier: Some(k.tier.clone()),
                        current_fee_cents: Some(k.annual_fee_cents),
                        paid_repairs: repairs.len() as u32,
                        paid_last_year_cents: paid,
                        would_have_covered_cents: extra,
                        price_cents: price,
                        return_ratio: ratio,
                        customer_net_cents: extra - price,
                        reason: format!(
                            "{} paid in extras over the last 12 months under the {} contract: {:.0}% of the {}/year upgrade to {}, which would have covered {} of them",
                            money(paid),
                            k.tier,
                            100.0 * paid as f64 / price as f64,
                            money(price),
                            t.tier,
                            money(extra),
                        ),
                        sendable: true,
                        held_back: None,
                    });
                }
            }
        }
    }
    for r in &mut out {
        r.held_back = held_back(v, r.kind, now, cfg, contact_cap);
        r.sendable = r.held_back.is_none();
    }
    out
}

/// Why a proposal of `kind` must not go out now, if it must not.
pub fn held_back(
    v: &CustomerView<'_>,
    kind: ProposalKind,
    now: UnixMs,
    cfg: &RecommendationConfig,
    contact_cap: u32,
) -> Option<String> {
    if let Some((machine, component, at)) = v
        .machines
        .iter()
        .flat_map(|m| {
            m.open_failures
                .iter()
                .map(|(c, t)| (m.id.as_str(), c.as_str(), *t))
        })
        .min_by_key(|f| f.2)
    {
        return Some(format!(
            "an unplanned failure is open ({machine} {component} since {}): repair first, propose later",
            date(at)
        ));
    }
    let cooldown = ms(cfg.cooldown);
    if let Some(last) = v
        .proposals
        .iter()
        .filter(|p| p.kind == kind)
        .map(|p| p.sent_at)
        .max()
        .filter(|t| now.0 - t.0 < cooldown)
    {
        return Some(format!(
            "a {} proposal went out on {}; not again before {}",
            kind.as_str(),
            date(last),
            date(last.plus_ms(cooldown))
        ));
    }
    if v.customer.contacts_last_week >= contact_cap {
        return Some(format!(
            "contact cap reached: {} contacts in the last 7 days (cap {contact_cap})",
            v.customer.contacts_last_week
        ));
    }
    None
}
