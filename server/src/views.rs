//! Shapes of the JSON API's answers. Instants are RFC 3339 strings (UTC), durations
//! hours, money integer cents with its currency.

use serde::{Serialize, Serializer};
use wearcast_protocol::UnixMs;

use crate::model::RulEstimate;

/// An instant that serialises as RFC 3339.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rfc3339(pub UnixMs);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_rfc3339())
    }
}

impl From<UnixMs> for Rfc3339 {
    fn from(t: UnixMs) -> Self {
        Self(t)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct WorstComponent {
    pub component: String,
    pub status: String,
    pub health_pct: f64,
    pub rul_p50_h: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MachineSummary {
    pub id: String,
    pub tenant: String,
    pub customer: String,
    pub customer_name: String,
    pub site: String,
    pub site_name: String,
    pub model: String,
    pub model_name: String,
    pub serial: String,
    /// Connection state from the machine's status topic: online, offline or unknown.
    pub status: String,
    pub last_seen: Option<Rfc3339>,
    /// The component in the worst state, which drives the machine's health.
    pub health: Option<WorstComponent>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WearChannelView {
    pub channel: String,
    pub unit: String,
    pub healthy: f64,
    pub failure: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ComponentView {
    pub key: String,
    pub name: String,
    pub part: String,
    pub installed_at: Rfc3339,
    pub failed_at: Option<Rfc3339>,
    pub wear_channels: Vec<WearChannelView>,
    pub status: String,
    pub health_pct: Option<f64>,
    pub estimate: Option<RulEstimate>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MachineDetail {
    #[serde(flatten)]
    pub summary: MachineSummary,
    pub timezone: String,
    pub components: Vec<ComponentView>,
    pub channels: Vec<String>,
}

/// What the machine page charts per component: the health-index history, the fitted
/// trend drawn forward, the failure threshold and the remaining-life band as instants.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentHealthHistoryView {
    pub component: String,
    pub name: String,
    pub status: String,
    pub installed_at: Rfc3339,
    /// The health index at which the component counts as failed (0 is as new).
    pub failure_level: f64,
    /// One point per model bucket of the current install, oldest first.
    pub history: Vec<crate::model::HiPoint>,
    /// The fitted trend from the onset to past the P90 crossing; empty without one.
    pub trend: Vec<crate::model::HiPoint>,
    pub trend_shape: Option<crate::model::TrendShape>,
    /// What the estimate rests on (`trend`, `healthy_signal`, `fleet_prior`, ...).
    pub basis: Option<String>,
    pub estimate_at: Option<Rfc3339>,
    pub onset_at: Option<Rfc3339>,
    /// The estimate's RUL quantiles as instants; `None` when not in sight.
    pub rul_p10_at: Option<Rfc3339>,
    pub rul_p50_at: Option<Rfc3339>,
    pub rul_p90_at: Option<Rfc3339>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MachineHealthHistoryView {
    pub machine: String,
    pub site: String,
    /// The site's IANA time zone, for the chart's dates.
    pub timezone: String,
    pub bucket_hours: f64,
    pub components: Vec<ComponentHealthHistoryView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TelemetryWindowView {
    pub start: Rfc3339,
    pub end: Rfc3339,
    pub count: i64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub std: f64,
    pub last: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TelemetryView {
    pub machine: String,
    pub channel: String,
    pub from: Rfc3339,
    pub to: Rfc3339,
    pub windows: Vec<TelemetryWindowView>,
    /// True when `limit` cut the answer short (the oldest windows are returned first).
    pub truncated: bool,
}

/// An offer's price as the planner computed it.
pub type PriceView = crate::planner::Price;

#[derive(Clone, Debug, Serialize)]
pub struct OfferComponentView {
    pub component: String,
    pub part: String,
    pub health_index: f64,
    pub rul_p10_h: Option<f64>,
    pub rul_p50_h: Option<f64>,
    pub rul_p90_h: Option<f64>,
    pub p_fail_before_window: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct OfferHistoryView {
    pub at: Rfc3339,
    pub from: Option<String>,
    pub to: String,
    pub note: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct OfferView {
    pub id: String,
    pub tenant: String,
    pub customer: String,
    pub site: String,
    pub machine: String,
    pub status: String,
    pub urgent: bool,
    pub window_start: Rfc3339,
    pub window_end: Rfc3339,
    pub components: Vec<OfferComponentView>,
    /// The RUL of the component that drives the offer (the first one), in hours.
    pub rul_p10_h: Option<f64>,
    pub rul_p50_h: Option<f64>,
    pub rul_p90_h: Option<f64>,
    /// P(any offered component fails before the window starts).
    pub p_fail_before_window: f64,
    /// P(any fails before the following window), the risk of waiting.
    pub p_fail_before_next_window: f64,
    pub risk_tolerance: f64,
    pub price: PriceView,
    pub explanation: String,
    pub superseded_by: Option<String>,
    pub created_at: Rfc3339,
    pub updated_at: Rfc3339,
    pub history: Vec<OfferHistoryView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WindowView {
    pub start: Rfc3339,
    pub end: Rfc3339,
}

#[derive(Clone, Debug, Serialize)]
pub struct RecurringWindowView {
    pub weekday: String,
    pub start: String,
    pub duration_hours: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SiteView {
    pub id: String,
    pub customer: String,
    pub name: String,
    pub timezone: String,
    pub region: String,
    pub maintenance_windows: Vec<RecurringWindowView>,
    /// The planned stops of the coming weeks, in UTC.
    pub upcoming_windows: Vec<WindowView>,
}

/// Serde helpers for `UnixMs` fields of API types: written as RFC 3339, read as either
/// form (so estimates stored before keep loading).
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use wearcast_protocol::UnixMs;

    pub fn serialize<S: Serializer>(t: &UnixMs, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UnixMs, D::Error> {
        UnixMs::deserialize(d)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(t: &Option<UnixMs>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&t.to_rfc3339()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<UnixMs>, D::Error> {
            Option::<UnixMs>::deserialize(d)
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkOrderComponentView {
    pub component: String,
    pub part: String,
    pub part_name: String,
    /// Recorded at completion: good | worn | failed.
    pub as_found: Option<String>,
    /// Hours the removed part was installed.
    pub life_hours: Option<f64>,
    pub notes: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkOrderView {
    pub id: String,
    pub offer: String,
    pub customer: String,
    pub site: String,
    pub site_name: String,
    pub timezone: String,
    pub machine: String,
    pub machine_model: String,
    /// unassigned | scheduled | completed | cancelled
    pub status: String,
    pub technician: Option<String>,
    pub technician_name: Option<String>,
    pub window_start: Rfc3339,
    pub window_end: Rfc3339,
    pub booked_start: Option<Rfc3339>,
    pub booked_end: Option<Rfc3339>,
    pub travel_minutes: Option<i64>,
    pub components: Vec<WorkOrderComponentView>,
    /// Why: the offer's explanation.
    pub reason: String,
    pub notes: String,
    pub created_at: Rfc3339,
    pub completed_at: Option<Rfc3339>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TechnicianView {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub home_region: String,
    pub skills: Vec<String>,
    pub active: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct PartView {
    pub id: String,
    pub name: String,
    pub price_cents: i64,
    pub lead_time_days: f64,
    pub labour_hours: f64,
    pub stock: i64,
    /// Units promised to open work orders.
    pub reserved: i64,
    pub life_shape: f64,
    pub life_scale_hours: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ContractView {
    pub id: String,
    pub customer: String,
    pub tier: String,
    pub parts_coverage: f64,
    pub labour_coverage: f64,
    pub risk_tolerance: f64,
    pub annual_fee_cents: i64,
    pub start: Rfc3339,
    pub renewal: Rfc3339,
}

#[derive(Clone, Debug, Serialize)]
pub struct StopView {
    pub id: String,
    pub site: String,
    pub start: Rfc3339,
    pub end: Rfc3339,
    pub note: String,
}

/// A planned stop an offer could move to, and whether it may.
#[derive(Clone, Debug, Serialize)]
pub struct CandidateWindowView {
    pub start: Rfc3339,
    pub end: Rfc3339,
    /// weekly | one_off
    pub kind: String,
    /// P(any offered component fails before the window starts).
    pub p_fail_before: f64,
    pub within_tolerance: bool,
    pub after_lead_time: bool,
    pub technician_free: bool,
    /// All three: the customer may pick it.
    pub selectable: bool,
}

/// One ended life of a component: how long it lasted and how it ended.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentLifeView {
    pub component: String,
    pub part: String,
    pub installed_at: Rfc3339,
    pub ended_at: Rfc3339,
    pub life_hours: f64,
    /// failure | replaced
    pub end_reason: String,
    pub as_found: Option<String>,
    pub work_order: Option<String>,
}

// ---- after-sales analytics (KPIs, accounts, surveys, proposals) --------------------

/// A half-open period `[from, to)`.
#[derive(Clone, Debug, Serialize)]
pub struct PeriodView {
    pub from: Rfc3339,
    pub to: Rfc3339,
}

#[derive(Clone, Debug, Serialize)]
pub struct KpisView {
    pub period: PeriodView,
    /// The one customer the figures are restricted to, if any.
    pub customer: Option<String>,
    pub currency: String,
    /// LTV is taken here: the end of the period, or now if that is earlier.
    pub ltv_as_of: Rfc3339,
    pub kpis: crate::analytics::kpis::Kpis,
    pub by_customer: Vec<CustomerKpisView>,
}

/// `GET /api/v1/model-quality`.
#[derive(Clone, Debug, Serialize)]
pub struct ModelQualityView {
    pub period: PeriodView,
    /// The one customer the figures are restricted to, if any.
    pub customer: Option<String>,
    /// How often each component's prediction is sampled (hours of platform time).
    pub sampled_every_h: f64,
    /// The share of failures an honest P10–P90 interval contains: [low, high].
    pub target_inside: [f64; 2],
    #[serde(flatten)]
    pub quality: crate::model::quality::ModelQuality,
}

#[derive(Clone, Debug, Serialize)]
pub struct CustomerKpisView {
    pub customer: String,
    pub name: String,
    pub kpis: crate::analytics::kpis::Kpis,
}

#[derive(Clone, Debug, Serialize)]
pub struct ContractSummaryView {
    pub id: String,
    pub tier: String,
    pub annual_fee_cents: i64,
    pub start: Rfc3339,
    pub renewal: Rfc3339,
}

/// A customer account: health with its reasons, lifecycle, value, renewal and what to
/// propose next.
#[derive(Clone, Debug, Serialize)]
pub struct AccountView {
    pub customer: String,
    pub name: String,
    pub currency: String,
    /// 0–100; 100 = no churn signal.
    pub health_score: f64,
    /// The score is below `analytics.health.flag_below`.
    pub flagged: bool,
    /// Active churn signals, strongest first, each with since when and why.
    pub signals: Vec<crate::analytics::health::Signal>,
    pub lifecycle_stage: crate::analytics::health::LifecycleStage,
    pub customer_since: Option<Rfc3339>,
    pub machines: u32,
    pub last_telemetry: Option<Rfc3339>,
    pub ltv: crate::analytics::ltv::Ltv,
    /// The contract in force.
    pub contract: Option<ContractSummaryView>,
    pub renewal_date: Option<Rfc3339>,
    pub recommendations: Vec<crate::analytics::recommend::Recommendation>,
    /// Offers, surveys and proposals sent in the last 7 days, against the weekly cap.
    pub contacts_last_week: u32,
    pub contact_cap: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct SurveyView {
    pub id: String,
    pub customer: String,
    pub work_order: String,
    pub machine: String,
    /// open | answered | expired
    pub status: String,
    pub created_at: Rfc3339,
    pub expires_at: Rfc3339,
    pub answered_at: Option<Rfc3339>,
    pub score: Option<u8>,
    pub csat: Option<u8>,
    pub reason: Option<String>,
}

/// A survey link handed out again (the previous one no longer works).
#[derive(Clone, Debug, Serialize)]
pub struct SurveyLinkView {
    pub survey: String,
    pub link: String,
    pub expires_at: Rfc3339,
}

/// A contract or upgrade proposal that went out.
#[derive(Clone, Debug, Serialize)]
pub struct ProposalView {
    pub id: String,
    pub customer: String,
    pub sent_at: Rfc3339,
    pub recommendation: crate::analytics::recommend::Recommendation,
}
