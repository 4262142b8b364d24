//! The planning step: for every machine with material risk or open offers, build the
//! planner's input from storage, run the pure planner, hold back contacts over the
//! customer's weekly cap, and apply the decisions with their notifications.
//! [`plan_all`] is one step (tests drive it directly); the server calls it after each
//! model cycle.

use std::collections::HashMap;
use std::time::Instant;

use wearcast_protocol::UnixMs;

use crate::config::{NotificationsConfig, ServiceConfig};
use crate::planner::{PlannerSettings, plan_machine};
use crate::service::{TravelModel, cap_contacts};
use crate::store::{PlanningContext, Store, StoreError};

#[derive(Clone, Debug)]
pub struct PlanningSettings {
    pub planner: PlannerSettings,
    /// How far ahead maintenance windows are considered.
    pub lookahead_h: f64,
    pub service: ServiceConfig,
    pub notifications: NotificationsConfig,
}

impl Default for PlanningSettings {
    fn default() -> Self {
        Self {
            planner: PlannerSettings::default(),
            lookahead_h: 10.0 * 7.0 * 24.0,
            service: ServiceConfig::default(),
            notifications: NotificationsConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanReport {
    pub machines_planned: u64,
    pub proposed: u64,
    pub superseded: u64,
    pub expired: u64,
    /// Work orders cancelled because their parts were replaced in the meantime.
    pub work_orders_cancelled: u64,
    /// Contacts held back by the customers' weekly caps.
    pub held_back: u64,
}

/// One planning step at `now`.
pub async fn plan_all(
    store: &Store,
    now: UnixMs,
    settings: &PlanningSettings,
) -> Result<PlanReport, StoreError> {
    let started = Instant::now();
    // First, so the components these orders held are free to be planned again.
    let mut report = PlanReport {
        work_orders_cancelled: store
            .cancel_overtaken_work_orders(now, &settings.notifications)
            .await?,
        ..PlanReport::default()
    };
    let week_ago = now.plus_ms(-7 * UnixMs::DAY);
    let ctx = PlanningContext {
        technicians: store.technician_profiles().await?,
        busy: store
            .busy(now, now.plus_hours(settings.lookahead_h))
            .await?,
        travel: TravelModel {
            same_region_h: settings.service.travel_same_region_hours,
            other_region_h: settings.service.travel_other_region_hours,
        },
        dispatch_days: settings.service.dispatch_days,
        declined_since: now.plus_ms(-(settings.service.decline_cooldown.as_millis() as i64)),
    };
    let mut contacts_left: HashMap<String, u32> = HashMap::new();
    let mut contacts = store.contacts_since(week_ago).await?;
    // Surveys and contract proposals count towards the same cap as offers.
    for (customer, n) in store.survey_and_proposal_contacts_since(week_ago).await? {
        *contacts.entry(customer).or_insert(0) += n;
    }
    for machine in store.machines_to_plan().await? {
        let Some((input, customer)) = store
            .planner_input(&machine, now, settings.lookahead_h, &ctx)
            .await?
        else {
            continue;
        };
        let decisions = plan_machine(&input, now, &settings.planner);
        let remaining = contacts_left.entry(customer.clone()).or_insert_with(|| {
            settings
                .service
                .contact_cap_per_week
                .saturating_sub(contacts.get(&customer).copied().unwrap_or(0))
        });
        let (kept, held) = cap_contacts(decisions, remaining);
        let applied = store
            .apply_decisions(&input, &kept, now, &settings.notifications)
            .await?;
        report.machines_planned += 1;
        report.proposed += applied.proposed;
        report.superseded += applied.superseded;
        report.expired += applied.expired;
        report.held_back += u64::from(held);
    }

    metrics::histogram!("wearcast_planning_cycle_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("wearcast_offers_total", "transition" => "proposed")
        .increment(report.proposed);
    metrics::counter!("wearcast_offers_total", "transition" => "superseded")
        .increment(report.superseded);
    metrics::counter!("wearcast_offers_total", "transition" => "expired").increment(report.expired);
    metrics::counter!("wearcast_work_orders_cancelled_total")
        .increment(report.work_orders_cancelled);
    metrics::counter!("wearcast_offers_held_back_total").increment(report.held_back);
    for (status, n) in store.offer_counts().await? {
        metrics::gauge!("wearcast_offers", "status" => status).set(n as f64);
    }
    Ok(report)
}
