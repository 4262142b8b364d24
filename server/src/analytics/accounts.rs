//! Accounts: each customer's health, lifecycle stage, LTV, renewal and
//! recommendations in one view, and the CSV export of them for a CRM.

use wearcast_protocol::UnixMs;

use super::config::AnalyticsConfig;
use super::health::{health, lifecycle};
use super::ltv::customer_ltv;
use super::recommend::recommend;
use super::{CustomerView, RenewalTally};
use crate::views::{AccountView, ContractSummaryView, Rfc3339};

/// The account of one customer at `now`.
pub fn account(
    v: &CustomerView<'_>,
    now: UnixMs,
    cfg: &AnalyticsConfig,
    tenant_renewals: &RenewalTally,
    contact_cap: u32,
    currency: &str,
) -> AccountView {
    let h = health(v, now, &cfg.health, currency);
    let (stage, since) = lifecycle(v, now, &cfg.health);
    let contract = v.active_contract(now);
    AccountView {
        customer: v.customer.id.clone(),
        name: v.customer.name.clone(),
        currency: currency.to_string(),
        health_score: h.score,
        flagged: h.flagged,
        signals: h.signals,
        lifecycle_stage: stage,
        customer_since: since.map(Rfc3339),
        machines: u32::try_from(v.machines.len()).unwrap_or(u32::MAX),
        last_telemetry: v
            .machines
            .iter()
            .filter_map(|m| m.last_seen_at)
            .max()
            .map(Rfc3339),
        ltv: customer_ltv(v, now, tenant_renewals, &cfg.ltv),
        contract: contract.map(|k| ContractSummaryView {
            id: k.id.clone(),
            tier: k.tier.clone(),
            annual_fee_cents: k.annual_fee_cents,
            start: Rfc3339(k.start),
            renewal: Rfc3339(k.renewal),
        }),
        renewal_date: contract.map(|k| Rfc3339(k.renewal)),
        recommendations: recommend(v, now, &cfg.recommendations, contact_cap, currency),
        contacts_last_week: v.customer.contacts_last_week,
        contact_cap,
    }
}

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 17] = [
    "customer",
    "name",
    "health_score",
    "flagged",
    "lifecycle_stage",
    "signals",
    "signal_reasons",
    "signals_since",
    "ltv_cents",
    "margin_to_date_cents",
    "expected_future_margin_cents",
    "retention",
    "contract_tier",
    "annual_fee_cents",
    "renewal_date",
    "recommendations",
    "currency",
];

/// Accounts as CSV (RFC 4180, header row). Lists inside a cell are joined with `; `
/// (signals and their first instants) or ` | ` (reasons, which may contain `;`).
pub fn to_csv(accounts: &[AccountView]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    for a in accounts {
        let signals: Vec<&str> = a.signals.iter().map(|s| s.kind.as_str()).collect();
        let reasons: Vec<&str> = a.signals.iter().map(|s| s.reason.as_str()).collect();
        let since: Vec<String> = a.signals.iter().map(|s| s.since.to_rfc3339()).collect();
        let recommendations: Vec<String> = a
            .recommendations
            .iter()
            .map(|r| format!("{} {}", r.kind.as_str(), r.tier))
            .collect();
        w.write_record([
            a.customer.clone(),
            a.name.clone(),
            format!("{}", a.health_score),
            a.flagged.to_string(),
            a.lifecycle_stage.as_str().to_string(),
            signals.join("; "),
            reasons.join(" | "),
            since.join("; "),
            a.ltv.ltv_cents.to_string(),
            a.ltv.margin_to_date_cents.to_string(),
            a.ltv.expected_future_margin_cents.to_string(),
            format!("{:.4}", a.ltv.retention),
            a.contract
                .as_ref()
                .map(|c| c.tier.clone())
                .unwrap_or_default(),
            a.contract
                .as_ref()
                .map(|c| c.annual_fee_cents.to_string())
                .unwrap_or_default(),
            a.renewal_date.map(|d| d.0.to_rfc3339()).unwrap_or_default(),
            recommendations.join("; "),
            a.currency.clone(),
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
