//! Account health: churn signals, each with the moment it started and a reason a
//! service manager can act on, a score, and the customer's lifecycle stage.
//!
//! | signal | active when (defaults in `[server.analytics.health]`) | since |
//! |---|---|---|
//! | `quiet` | none of the customer's machines sent telemetry for `quiet_after` (14 d); customers whose machines never reported are not "gone quiet" | the last telemetry |
//! | `usage_down` | the time integral of `usage_channel` (op.load_pct × hours) over the last `usage_window` (30 d) is at least `usage_drop` (50 %) below the window before, which had usage | the start of the last window |
//! | `offers_declined` | the customer's latest `declined_in_a_row` (1) offer decisions within `lookback` (180 d) are declines | the first of those declines |
//! | `work_order_overdue` | a work order is open `overdue_business_days` (5, Mon–Fri UTC) after it was created without a technician, or after its planned stop ended | when it became overdue |
//! | `unplanned_failure` | a failure without a work order within `lookback`, or a failed part still not replaced | the first such failure |
//! | `nps_detractor` | the customer's latest survey answer within `lookback` scored 0–6 | the answer |
//! | `renewal_due` | the contract in force renews within `renewal_notice` (90 d) and no next contract is signed | renewal − notice |
//!
//! Score = max(0, 100 − Σ weights of the active signals); an account is **flagged**
//! when its score is below `flag_below` (70). Defaults: quiet 35, usage down 20,
//! offers declined 15, work order overdue 10, unplanned failure 15, NPS detractor 25,
//! renewal due 10 — so going quiet alone flags an account, and so do any two of the
//! behavioural signals, while a coming renewal alone does not.
//!
//! Lifecycle stage, from the customer's first contract or machine: `onboarding` for
//! `onboarding` (90 d), then `established`, and `mature` from `mature_after` (730 d).

use chrono::{Datelike, Weekday};
use serde::Serialize;
use wearcast_protocol::UnixMs;

use super::config::{HealthConfig, ms};
use super::{CustomerView, LifeEnd, OfferStatus, date};
use crate::planner::format_money;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    Quiet,
    UsageDown,
    OffersDeclined,
    WorkOrderOverdue,
    UnplannedFailure,
    NpsDetractor,
    RenewalDue,
}

impl SignalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quiet => "quiet",
            Self::UsageDown => "usage_down",
            Self::OffersDeclined => "offers_declined",
            Self::WorkOrderOverdue => "work_order_overdue",
            Self::UnplannedFailure => "unplanned_failure",
            Self::NpsDetractor => "nps_detractor",
            Self::RenewalDue => "renewal_due",
        }
    }
}

/// One active churn signal.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Signal {
    pub kind: SignalKind,
    #[serde(with = "crate::views::rfc3339")]
    pub since: UnixMs,
    pub reason: String,
    /// Points it takes off the score.
    pub weight: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleStage {
    Onboarding,
    Established,
    Mature,
}

impl LifecycleStage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Onboarding => "onboarding",
            Self::Established => "established",
            Self::Mature => "mature",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "onboarding" => Some(Self::Onboarding),
            "established" => Some(Self::Established),
            "mature" => Some(Self::Mature),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Health {
    /// 0–100; 100 = no signal.
    pub score: f64,
    /// Below `flag_below`.
    pub flagged: bool,
    /// Strongest first.
    pub signals: Vec<Signal>,
}

/// `t` moved on by `n` business days (Monday to Friday, UTC), keeping the time of day.
pub fn add_business_days(t: UnixMs, n: u32) -> UnixMs {
    let mut at = t;
    let mut left = n;
    while left > 0 {
        at = at.plus_ms(UnixMs::DAY);
        if !matches!(at.to_datetime().weekday(), Weekday::Sat | Weekday::Sun) {
            left -= 1;
        }
    }
    at
}

fn whole_days(from: UnixMs, to: UnixMs) -> i64 {
    (to.0 - from.0).div_euclid(UnixMs::DAY)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Every active signal of the customer at `now`, strongest first.
pub fn signals(
    v: &CustomerView<'_>,
    now: UnixMs,
    cfg: &HealthConfig,
    currency: &str,
) -> Vec<Signal> {
    let w = &cfg.weights;
    let lookback = cfg.lookback_start(now);
    let mut out = Vec::new();

    // Telemetry gone quiet.
    let latest = v
        .machines
        .iter()
        .filter_map(|m| m.last_seen_at.map(|t| (t, m.id.as_str())))
        .max();
    if let Some((last, machine)) = latest
        && now.0 - last.0 >= ms(cfg.quiet_after)
    {
        out.push(Signal {
            kind: SignalKind::Quiet,
            since: last,
            reason: format!(
                "no telemetry from any of its {} for {} days (last: {machine} on {})",
                plural(v.machines.len(), "machine", "machines"),
                whole_days(last, now),
                date(last)
            ),
            weight: w.quiet,
        });
    }

    // Usage down.
    if let Some(u) = v.usage
        && u.previous > 0.0
        && u.recent <= u.previous * (1.0 - cfg.usage_drop)
    {
        let window_days = ms(cfg.usage_window) / UnixMs::DAY;
        out.push(Signal {
            kind: SignalKind::UsageDown,
            since: now.plus_ms(-ms(cfg.usage_window)),
            reason: format!(
                "usage ({} × hours) fell {:.0}% over the last {window_days} days: {:.0} → {:.0}",
                cfg.usage_channel,
                100.0 * (1.0 - u.recent / u.previous),
                u.previous,
                u.recent
            ),
            weight: w.usage_down,
        });
    }

    // Offers declined in a row.
    let mut decisions: Vec<_> = v
        .offers
        .iter()
        .filter(|o| o.status.is_accepted() || o.status == OfferStatus::Declined)
        .filter_map(|o| o.decided_at.filter(|t| *t >= lookback).map(|t| (t, *o)))
        .collect();
    decisions.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.id.cmp(&a.1.id)));
    let streak: Vec<_> = decisions
        .iter()
        .take_while(|(_, o)| o.status == OfferStatus::Declined)
        .collect();
    if !streak.is_empty() && streak.len() >= cfg.declined_in_a_row as usize {
        let first = streak.last().map_or(now, |(t, _)| *t);
        let reasons: Vec<String> = streak
            .iter()
            .map(|(_, o)| {
                format!(
                    "“{}”",
                    o.decline_reason.as_deref().unwrap_or("no reason given")
                )
            })
            .collect();
        out.push(Signal {
            kind: SignalKind::OffersDeclined,
            since: first,
            reason: format!(
                "declined {} in a row since {}: {}",
                plural(streak.len(), "offer", "offers"),
                date(first),
                reasons.join("; ")
            ),
            weight: w.offers_declined,
        });
    }

    // Work orders left open.
    let mut overdue: Vec<(UnixMs, String)> = v
        .offers
        .iter()
        .filter_map(|o| o.work_order.as_ref())
        .filter(|wo| wo.is_open())
        .filter_map(|wo| {
            let (from, what) = if wo.status == "unassigned" {
                (wo.created_at, "without a technician since")
            } else {
                (wo.window_end, "not completed after its planned stop ended")
            };
            let due = add_business_days(from, cfg.overdue_business_days);
            (now >= due).then(|| (due, format!("{} {what} {}", wo.id, date(from))))
        })
        .collect();
    overdue.sort();
    if let Some((since, _)) = overdue.first() {
        out.push(Signal {
            kind: SignalKind::WorkOrderOverdue,
            since: *since,
            reason: format!(
                "{} open for more than {} business days: {}",
                plural(overdue.len(), "work order", "work orders"),
                cfg.overdue_business_days,
                overdue
                    .iter()
                    .map(|(_, d)| d.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            weight: w.work_order_overdue,
        });
    }

    // Unplanned failures: recent ones, and any still not repaired.
    let mut failures: Vec<(UnixMs, String, String)> = v
        .lives
        .iter()
        .filter(|l| l.end == LifeEnd::Failure && l.work_order.is_none() && l.ended_at >= lookback)
        .map(|l| (l.ended_at, l.machine.clone(), l.component.clone()))
        .collect();
    let open: Vec<(UnixMs, String, String)> = v
        .machines
        .iter()
        .flat_map(|m| {
            m.open_failures
                .iter()
                .map(|(c, t)| (*t, m.id.clone(), c.clone()))
        })
        .collect();
    for f in &open {
        if !failures.contains(f) {
            failures.push(f.clone());
        }
    }
    failures.sort();
    if let Some((since, _, _)) = failures.first() {
        let listed: Vec<String> = failures
            .iter()
            .map(|(t, m, c)| {
                let still = if open.iter().any(|(_, om, oc)| om == m && oc == c) {
                    ", not repaired yet"
                } else {
                    ""
                };
                format!("{m} {c} on {}{still}", date(*t))
            })
            .collect();
        out.push(Signal {
            kind: SignalKind::UnplannedFailure,
            since: *since,
            reason: format!(
                "{} without a planned visit: {}",
                plural(failures.len(), "unplanned failure", "unplanned failures"),
                listed.join("; ")
            ),
            weight: w.unplanned_failure,
        });
    }

    // The latest survey answer is a detractor's.
    if let Some((answered, score, survey)) = v
        .surveys
        .iter()
        .filter_map(|s| Some((s.answered_at?, s.score?, *s)))
        .filter(|(t, _, _)| *t >= lookback)
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.id.cmp(&b.2.id)))
        && score <= 6
    {
        let why = survey
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map_or_else(String::new, |r| format!(": “{r}”"));
        out.push(Signal {
            kind: SignalKind::NpsDetractor,
            since: answered,
            reason: format!(
                "scored {score}/10 on {} after the visit of work order {}{why}",
                date(answered),
                survey.work_order
            ),
            weight: w.nps_detractor,
        });
    }

    // Renewal coming without a signed successor.
    if let Some(k) = v.active_contract(now) {
        let notice = ms(cfg.renewal_notice);
        let successor = v
            .contracts
            .iter()
            .any(|c| c.id != k.id && c.start > k.start);
        if !successor && k.renewal.0 - now.0 <= notice {
            out.push(Signal {
                kind: SignalKind::RenewalDue,
                since: k.renewal.plus_ms(-notice),
                reason: format!(
                    "contract {} ({}, {}/year) renews on {}, in {} days; no renewal signed yet",
                    k.id,
                    k.tier,
                    format_money(k.annual_fee_cents, currency),
                    date(k.renewal),
                    whole_days(now, k.renewal)
                ),
                weight: w.renewal_due,
            });
        }
    }

    out.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.kind.cmp(&b.kind)));
    out
}

/// The health of the account at `now`.
pub fn health(v: &CustomerView<'_>, now: UnixMs, cfg: &HealthConfig, currency: &str) -> Health {
    let signals = signals(v, now, cfg, currency);
    let score = score(&signals);
    Health {
        score,
        flagged: score < cfg.flag_below,
        signals,
    }
}

/// 100 − Σ weights, at least 0.
pub fn score(signals: &[Signal]) -> f64 {
    (100.0 - signals.iter().map(|s| s.weight).sum::<f64>()).max(0.0)
}

/// The customer's lifecycle stage at `now`, and since when it has been a customer.
pub fn lifecycle(
    v: &CustomerView<'_>,
    now: UnixMs,
    cfg: &HealthConfig,
) -> (LifecycleStage, Option<UnixMs>) {
    let Some(since) = v.customer_since() else {
        return (LifecycleStage::Onboarding, None);
    };
    let age = now.0 - since.0;
    let stage = if age < ms(cfg.onboarding) {
        LifecycleStage::Onboarding
    } else if age < ms(cfg.mature_after) {
        LifecycleStage::Established
    } else {
        LifecycleStage::Mature
    };
    (stage, Some(since))
}
