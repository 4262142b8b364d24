//! The offer planner: pure, clock passed in, one step per machine that a test can drive.
//!
//! For each component whose failure risk within the planning horizon (beyond the part's
//! lead time) is material (at or above the contract's risk tolerance), the planner picks the **latest** maintenance
//! window of the site that is feasible (starts after the part's lead time) and still
//! safe (P(failure before the window) ≤ tolerance), so parts are not replaced with life
//! left in them. If no window is safe it proposes an urgent visit. Other components of
//! the machine that could not safely wait for the following window join the same visit.
//!
//! Re-planning: an open offer stays as long as its window is still safe; when risk rises
//! past the tolerance before its window, it is superseded by an offer in an earlier
//! window (never duplicated). An offer whose window passed, or whose component failed or
//! was replaced, expires. At most one open offer per component; no offer for a
//! component without material risk.
//!
//! Offers need evidence of wear: a component whose signal says it is healthy gets no
//! offer however old it is (the fleet prior alone would have the customer replace parts
//! on the calendar, with life left in them). Components without a usable signal are
//! left to the fleet-prior plan of the wear-models issue.
//!
//! Technician availability, contact caps and declines belong to the offers issue; the
//! decision structure here is where they plug in.

pub mod calendar;

use chrono_tz::Tz;
use serde::Serialize;
use wearcast_protocol::UnixMs;
use wearcast_protocol::ids::{ComponentKey, MachineId, PartId};

use crate::model::{HealthStatus, RulEstimate};
use calendar::Occurrence;

/// Risk tolerance for a customer without a contract.
pub const DEFAULT_RISK_TOLERANCE: f64 = 0.10;
/// Default planning horizon beyond the part's lead time: two weeks, one for the
/// customer's decision (or a second offer after a decline) and one for the weekly stop.
pub const DEFAULT_HORIZON_H: f64 = 14.0 * 24.0;

#[derive(Clone, Debug)]
pub struct PlannerSettings {
    /// Risk is material when P(failure within the part's lead time plus this many hours)
    /// reaches the tolerance. Counted from when the part can be there, so a part that
    /// takes long to come is offered that much earlier, and one that comes overnight is
    /// not booked weeks ahead on an estimate that the next days of wear will sharpen
    /// (an accepted window is not re-planned).
    pub horizon_h: f64,
    pub default_risk_tolerance: f64,
}

impl Default for PlannerSettings {
    fn default() -> Self {
        Self {
            horizon_h: DEFAULT_HORIZON_H,
            default_risk_tolerance: DEFAULT_RISK_TOLERANCE,
        }
    }
}

/// The commercial terms of one machine's customer.
#[derive(Clone, Debug)]
pub struct Terms {
    pub currency: String,
    pub labour_rate_cents_per_hour: i64,
    pub travel_cost_cents: i64,
    pub contract_tier: Option<String>,
    pub parts_coverage: f64,
    pub labour_coverage: f64,
    pub risk_tolerance: Option<f64>,
    pub downtime_cost_cents_per_hour: i64,
    pub unplanned_downtime_hours: f64,
}

#[derive(Clone, Debug)]
pub struct PartTerms {
    pub id: PartId,
    pub name: String,
    pub price_cents: i64,
    pub lead_time_days: f64,
    pub labour_hours: f64,
}

#[derive(Clone, Debug)]
pub struct ComponentInput {
    pub key: ComponentKey,
    pub name: String,
    pub part: PartTerms,
    pub installed_at: UnixMs,
    pub estimate: RulEstimate,
}

/// An offer of this machine that is still `proposed`.
#[derive(Clone, Debug)]
pub struct OpenOffer {
    pub id: String,
    pub components: Vec<ComponentKey>,
    pub window: Occurrence,
    pub urgent: bool,
    pub created_at: UnixMs,
}

/// Everything the planner needs about one machine.
#[derive(Clone, Debug)]
pub struct MachineInput {
    pub machine: MachineId,
    pub machine_label: String,
    pub timezone: Tz,
    pub terms: Terms,
    pub components: Vec<ComponentInput>,
    /// Components with an accepted or scheduled offer: already being taken care of.
    pub committed: Vec<ComponentKey>,
    pub open_offers: Vec<OpenOffer>,
    /// The site's upcoming maintenance windows, sorted by start.
    pub windows: Vec<Occurrence>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Price {
    pub parts_cents: i64,
    pub labour_cents: i64,
    pub travel_cents: i64,
    pub coverage_cents: i64,
    pub total_cents: i64,
    /// Expected downtime cost of a breakdown if the customer waits for the next window.
    pub cost_of_waiting_cents: i64,
    pub currency: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DraftComponent {
    pub key: ComponentKey,
    pub part: PartId,
    pub estimate: RulEstimate,
    pub p_fail_before_window: f64,
}

/// An offer the planner wants to exist.
#[derive(Clone, Debug, PartialEq)]
pub struct OfferDraft {
    pub machine: MachineId,
    pub components: Vec<DraftComponent>,
    pub window: Occurrence,
    pub urgent: bool,
    pub p_fail_before_window: f64,
    pub p_fail_before_next: f64,
    pub risk_tolerance: f64,
    pub price: Price,
    pub explanation: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Propose(OfferDraft),
    /// Replace open offer `old` (its window is no longer safe, or it was re-planned).
    Supersede {
        old: String,
        draft: OfferDraft,
    },
    Expire {
        offer: String,
        reason: String,
    },
}

/// What a component needs this planning step.
struct Need {
    idx: usize,
    target: Occurrence,
    urgent: bool,
}

/// Plans one machine at `now`.
pub fn plan_machine(
    input: &MachineInput,
    now: UnixMs,
    settings: &PlannerSettings,
) -> Vec<Decision> {
    let mut decisions = Vec::new();
    let tolerance = input
        .terms
        .risk_tolerance
        .unwrap_or(settings.default_risk_tolerance);
    let component = |key: &ComponentKey| input.components.iter().find(|c| &c.key == key);

    // 1. Expire what can no longer happen; find open offers whose window is unsafe.
    let mut kept: Vec<&OpenOffer> = Vec::new();
    let mut to_supersede: Vec<&OpenOffer> = Vec::new();
    for offer in &input.open_offers {
        let comps: Vec<_> = offer.components.iter().filter_map(component).collect();
        let expire = if offer.window.end <= now {
            Some("the maintenance window passed without a decision".to_string())
        } else if let Some(c) = comps
            .iter()
            .find(|c| c.estimate.status == HealthStatus::Failed)
        {
            Some(format!("the {} failed before the window", c.name))
        } else if let Some(c) = comps.iter().find(|c| c.installed_at > offer.created_at) {
            Some(format!("the {} was replaced in the meantime", c.name))
        } else if comps.is_empty() {
            Some("the machine no longer has these components".to_string())
        } else {
            None
        };
        if let Some(reason) = expire {
            decisions.push(Decision::Expire {
                offer: offer.id.clone(),
                reason,
            });
        } else if !offer.urgent
            && comps
                .iter()
                .any(|c| c.estimate.p_fail_before(offer.window.start) > tolerance)
        {
            to_supersede.push(offer);
        } else {
            kept.push(offer);
        }
    }

    // 2. Which components need a (new) offer, and in which window.
    let covered = |key: &ComponentKey| {
        input.committed.contains(key) || kept.iter().any(|o| o.components.contains(key))
    };
    let in_superseded =
        |key: &ComponentKey| to_supersede.iter().any(|o| o.components.contains(key));
    let mut needs: Vec<Need> = Vec::new();
    for (idx, c) in input.components.iter().enumerate() {
        if !shows_wear(c) || covered(&c.key) {
            continue;
        }
        let earliest = now.plus_hours(c.part.lead_time_days * 24.0);
        let material = c
            .estimate
            .p_fail_before(earliest.plus_hours(settings.horizon_h))
            >= tolerance;
        if !material && !in_superseded(&c.key) {
            continue;
        }
        let safe = input
            .windows
            .iter()
            .filter(|w| w.start >= earliest)
            .take_while(|w| c.estimate.p_fail_before(w.start) <= tolerance)
            .last();
        let need = match safe {
            Some(w) => Need {
                idx,
                target: *w,
                urgent: false,
            },
            None => Need {
                idx,
                target: urgent_slot(earliest, c.part.labour_hours),
                urgent: true,
            },
        };
        if material || need.urgent || in_superseded(&c.key) {
            needs.push(need);
        }
    }
    needs.sort_by_key(|n| n.target.start);

    // 3. One visit per earliest target; bundle what cannot wait for the next window.
    let mut drafts: Vec<OfferDraft> = Vec::new();
    while let Some(first) = needs.first() {
        let (window, urgent) = (first.target, first.urgent);
        let next = input
            .windows
            .iter()
            .find(|w| w.start >= window.end)
            .copied();
        let cannot_wait = |c: &ComponentInput| match next {
            Some(n) => c.estimate.p_fail_before(n.start) > tolerance,
            None => true,
        };
        let fits =
            |c: &ComponentInput| window.start >= now.plus_hours(c.part.lead_time_days * 24.0);
        let mut bundle: Vec<usize> = vec![first.idx];
        let mut remaining = Vec::new();
        for n in needs.drain(..).skip(1) {
            let c = &input.components[n.idx];
            if cannot_wait(c) && fits(c) {
                bundle.push(n.idx);
            } else {
                remaining.push(n);
            }
        }
        needs = remaining;
        // Components nobody planned yet that would need replacing before the next window.
        for (idx, c) in input.components.iter().enumerate() {
            if bundle.contains(&idx)
                || needs.iter().any(|n| n.idx == idx)
                || covered(&c.key)
                || !shows_wear(c)
                || drafts
                    .iter()
                    .any(|d| d.components.iter().any(|dc| dc.key == c.key))
            {
                continue;
            }
            if cannot_wait(c) && fits(c) && next.is_some() {
                bundle.push(idx);
            }
        }
        let parts: Vec<&ComponentInput> = bundle.iter().map(|i| &input.components[*i]).collect();
        drafts.push(draft_offer(input, &parts, window, next, urgent, tolerance));
    }

    // 4. Each superseded offer is replaced by the first draft that takes over one of its
    //    components; one that nothing takes over has no material risk left and expires.
    let mut superseding: Vec<Option<String>> = vec![None; drafts.len()];
    for old in to_supersede {
        match drafts.iter().position(|d| {
            d.components
                .iter()
                .any(|dc| old.components.contains(&dc.key))
        }) {
            Some(i) if superseding[i].is_none() => superseding[i] = Some(old.id.clone()),
            _ => decisions.push(Decision::Expire {
                offer: old.id.clone(),
                reason: "re-planned: the risk no longer warrants this visit".into(),
            }),
        }
    }
    for (draft, old) in drafts.into_iter().zip(superseding) {
        decisions.push(match old {
            Some(old) => Decision::Supersede { old, draft },
            None => Decision::Propose(draft),
        });
    }
    decisions
}

/// Whether the component's own signal shows wear (and it has not already failed).
fn shows_wear(c: &ComponentInput) -> bool {
    matches!(
        c.estimate.status,
        HealthStatus::Degrading | HealthStatus::Critical
    )
}

/// The earliest slot a technician could do an unplanned visit: on the next full hour
/// after the parts can be there.
fn urgent_slot(earliest: UnixMs, labour_hours: f64) -> Occurrence {
    let start =
        UnixMs(earliest.0 + (UnixMs::HOUR - earliest.0.rem_euclid(UnixMs::HOUR)) % UnixMs::HOUR);
    Occurrence {
        start,
        end: start.plus_hours(labour_hours.max(2.0)),
    }
}

/// P(at least one of the components fails before `t`), assuming independence.
fn p_any_before(components: &[&ComponentInput], t: UnixMs) -> f64 {
    1.0 - components
        .iter()
        .map(|c| 1.0 - c.estimate.p_fail_before(t))
        .product::<f64>()
}

fn draft_offer(
    input: &MachineInput,
    components: &[&ComponentInput],
    window: Occurrence,
    next: Option<Occurrence>,
    urgent: bool,
    tolerance: f64,
) -> OfferDraft {
    let terms = &input.terms;
    let p_window = p_any_before(components, window.start);
    let p_next = next.map_or(1.0, |n| p_any_before(components, n.start));
    let parts_cents: i64 = components.iter().map(|c| c.part.price_cents).sum();
    let labour_hours: f64 = components.iter().map(|c| c.part.labour_hours).sum();
    let labour_cents = (labour_hours * terms.labour_rate_cents_per_hour as f64).round() as i64;
    let travel_cents = terms.travel_cost_cents;
    let coverage_cents = (parts_cents as f64 * terms.parts_coverage
        + (labour_cents + travel_cents) as f64 * terms.labour_coverage)
        .round() as i64;
    let downtime_cost = terms.downtime_cost_cents_per_hour as f64 * terms.unplanned_downtime_hours;
    let price = Price {
        parts_cents,
        labour_cents,
        travel_cents,
        coverage_cents,
        total_cents: parts_cents + labour_cents + travel_cents - coverage_cents,
        cost_of_waiting_cents: (p_next * downtime_cost).round() as i64,
        currency: terms.currency.clone(),
    };
    let explanation = explain(
        input,
        components,
        &window,
        next.as_ref(),
        urgent,
        p_window,
        p_next,
        tolerance,
        &price,
    );
    OfferDraft {
        machine: input.machine.clone(),
        components: components
            .iter()
            .map(|c| DraftComponent {
                key: c.key.clone(),
                part: c.part.id.clone(),
                estimate: c.estimate.clone(),
                p_fail_before_window: c.estimate.p_fail_before(window.start),
            })
            .collect(),
        window,
        urgent,
        p_fail_before_window: p_window,
        p_fail_before_next: p_next,
        risk_tolerance: tolerance,
        price,
        explanation,
    }
}

/// `about 3 weeks`, `about 9 days`, `about 20 hours`, `about 1 hour`.
pub fn describe_hours(h: f64) -> String {
    if h >= 24.0 * 14.0 {
        format!("about {} weeks", (h / (24.0 * 7.0)).round())
    } else if h >= 48.0 {
        format!("about {} days", (h / 24.0).round())
    } else {
        let n = h.round().max(1.0);
        if n == 1.0 {
            "about 1 hour".to_string()
        } else {
            format!("about {n} hours")
        }
    }
}

/// `EUR 1,234.50`: amounts in offers are exact to the cent.
pub fn format_money(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let mut digits = (abs / 100).to_string();
    let mut grouped = String::new();
    while digits.len() > 3 {
        let tail = digits.split_off(digits.len() - 3);
        grouped = format!(",{tail}{grouped}");
    }
    format!("{sign}{currency} {digits}{grouped}.{:02}", abs % 100)
}

#[allow(clippy::too_many_arguments)]
fn explain(
    input: &MachineInput,
    components: &[&ComponentInput],
    window: &Occurrence,
    next: Option<&Occurrence>,
    urgent: bool,
    p_window: f64,
    p_next: f64,
    tolerance: f64,
    price: &Price,
) -> String {
    let lead = components[0];
    let e = &lead.estimate;
    let life = match (e.rul_p50_h, e.rul_p10_h, e.rul_p90_h) {
        (Some(p50), Some(p10), Some(p90)) => format!(
            "reaches end of life in {} (80% interval {} to {})",
            describe_hours(p50),
            describe_hours(p10).trim_start_matches("about "),
            describe_hours(p90).trim_start_matches("about ")
        ),
        (Some(p50), Some(p10), None) => format!(
            "reaches end of life in {} (at the earliest in {})",
            describe_hours(p50),
            describe_hours(p10).trim_start_matches("about ")
        ),
        _ => "is wearing out".to_string(),
    };
    let mut text = format!(
        "At this rate the {} of {} {life}.",
        lead.name.to_lowercase(),
        input.machine_label
    );
    if components.len() > 1 {
        let others: Vec<String> = components[1..]
            .iter()
            .map(|c| c.name.to_lowercase())
            .collect();
        text.push_str(&format!(
            " The {} would not last until the following stop either, so it is replaced in the same visit.",
            others.join(" and the ")
        ));
    }
    let when = calendar::describe(input.timezone, window);
    if urgent {
        text.push_str(&format!(
            " No planned stop is safe (the risk of a breakdown before the next one is {:.0}%, above the {:.0}% tolerance), so we propose an urgent visit on {when}.",
            100.0 * p_next,
            100.0 * tolerance
        ));
    } else {
        text.push_str(&format!(
            " Shall we replace it during the planned stop on {when}? The risk of a breakdown before then is {:.0}% (tolerance {:.0}%)",
            100.0 * p_window,
            100.0 * tolerance
        ));
        match next {
            Some(_) => text.push_str(&format!(
                "; waiting for the following stop would raise it to {:.0}%.",
                100.0 * p_next
            )),
            None => text.push('.'),
        }
    }
    let covered = match (&input.terms.contract_tier, price.coverage_cents) {
        (Some(tier), c) if c > 0 => format!(
            " after your {tier} contract covers {}",
            format_money(c, &price.currency)
        ),
        _ => String::new(),
    };
    text.push_str(&format!(
        " Price {}{covered}; an unplanned breakdown would cost an expected {} in downtime.",
        format_money(price.total_cents, &price.currency),
        format_money(price.cost_of_waiting_cents, &price.currency)
    ));
    text
}

#[cfg(test)]
mod tests;
