//! The fleet manifest: who owns which machines where, what the machines are made of,
//! what parts cost and what the service contracts promise. The firmware simulator
//! generates one for its demo fleet; a real deployment writes one (JSON) and imports it
//! with `wearcast server --registry FILE` or `POST /api/v1/registry`.
//!
//! Money is in integer cents of the tenant's currency; durations of life and lead time
//! are hours and days as named.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::ids::{
    ComponentKey, ContractId, CustomerId, MachineId, MachineModelId, PartId, SiteId, TechnicianId,
    TenantId, validate_id,
};
use crate::time::UnixMs;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetManifest {
    pub tenant: Tenant,
    pub customers: Vec<Customer>,
    pub sites: Vec<Site>,
    pub parts: Vec<Part>,
    pub machine_models: Vec<MachineModel>,
    pub machines: Vec<Machine>,
    #[serde(default)]
    pub contracts: Vec<Contract>,
}

/// The manufacturer running the service business.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// ISO 4217 code of every `*_cents` amount.
    pub currency: String,
    /// Price of one technician hour.
    pub labour_rate_cents_per_hour: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub id: CustomerId,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_email: Option<String>,
}

/// A plant. Its planned stops (maintenance windows) are where replacements go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub id: SiteId,
    pub customer: CustomerId,
    pub name: String,
    /// IANA time zone, e.g. `Europe/Berlin`; maintenance windows are in local time.
    pub timezone: String,
    pub region: String,
    /// Cost of sending a technician there once.
    pub travel_cost_cents: i64,
    pub maintenance_windows: Vec<RecurringWindow>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// Days since Monday (0..=6).
    pub fn days_from_monday(self) -> u32 {
        self as u32
    }

    pub fn from_days_from_monday(days: u32) -> Option<Self> {
        use Weekday::*;
        [Mon, Tue, Wed, Thu, Fri, Sat, Sun]
            .get(days as usize)
            .copied()
    }
}

/// A weekly planned stop, in the site's local time: e.g. every Sunday 06:00 for 8 h.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurringWindow {
    pub weekday: Weekday,
    /// Local start time `HH:MM`.
    pub start: String,
    pub duration_hours: f64,
}

impl RecurringWindow {
    /// Minutes after local midnight, or why `start` is not `HH:MM`.
    pub fn start_minute(&self) -> Result<u32, String> {
        let bad = || format!("window start `{}` is not HH:MM (00:00–23:59)", self.start);
        let (h, m) = self.start.split_once(':').ok_or_else(bad)?;
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 23 || m > 59 || self.start.len() != 5 {
            return Err(bad());
        }
        Ok(h * 60 + m)
    }
}

/// Weibull life of a part type (time to failure from installation), the fleet prior.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeibullLife {
    pub shape: f64,
    pub scale_hours: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub id: PartId,
    pub name: String,
    pub price_cents: i64,
    pub lead_time_days: f64,
    pub labour_hours: f64,
    /// Expected life before any fleet history exists.
    pub life: WeibullLife,
}

/// How one wear channel of a component maps to health: its value when the part is new
/// and at end of life (either may be the larger).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WearChannelSpec {
    pub quantity: String,
    pub unit: String,
    pub healthy: f64,
    pub failure: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    pub key: ComponentKey,
    pub name: String,
    pub part: PartId,
    pub wear_channels: Vec<WearChannelSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineModel {
    pub id: MachineModelId,
    pub name: String,
    pub components: Vec<ComponentSpec>,
    /// What an hour of unplanned standstill costs the customer (the cost of waiting).
    pub downtime_cost_cents_per_hour: i64,
    /// Hours an unplanned breakdown stops the machine (diagnosis, parts, repair).
    pub unplanned_downtime_hours: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledComponent {
    pub key: ComponentKey,
    pub installed_at: UnixMs,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub id: MachineId,
    pub customer: CustomerId,
    pub site: SiteId,
    pub model: MachineModelId,
    pub serial: String,
    pub commissioned_at: UnixMs,
    /// When each component was last installed; components not listed date from
    /// commissioning.
    #[serde(default)]
    pub components: Vec<InstalledComponent>,
}

impl Machine {
    /// When the component `key` was last installed: as listed, else at commissioning.
    pub fn installed_at(&self, key: &ComponentKey) -> UnixMs {
        self.components
            .iter()
            .find(|c| &c.key == key)
            .map_or(self.commissioned_at, |c| c.installed_at)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContractTier {
    Basic,
    Standard,
    Premium,
}

impl ContractTier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Standard => "standard",
            Self::Premium => "premium",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub id: ContractId,
    pub customer: CustomerId,
    pub tier: ContractTier,
    /// Share (0–1) of part prices the contract covers.
    pub parts_coverage: f64,
    /// Share (0–1) of labour and travel the contract covers.
    pub labour_coverage: f64,
    /// Highest acceptable probability (0–1) that the component fails before the planned
    /// replacement.
    pub risk_tolerance: f64,
    pub annual_fee_cents: i64,
    pub start: UnixMs,
    pub renewal: UnixMs,
}

/// The manufacturer's field-service organisation: who can repair what, and what is on
/// the shelf. Kept apart from the fleet (which describes the customers' machines).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOrganisation {
    #[serde(default)]
    pub technicians: Vec<Technician>,
    /// Parts in the service depot; a part in stock ships in `dispatch_days`, one not in
    /// stock takes its catalogue lead time.
    #[serde(default)]
    pub stock: Vec<PartStock>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Technician {
    pub id: TechnicianId,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Region the technician starts from; travel between regions takes longer.
    pub home_region: String,
    /// Machine models the technician is qualified to service.
    pub skills: Vec<MachineModelId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartStock {
    pub part: PartId,
    pub quantity: u32,
}

impl ServiceOrganisation {
    /// Checks ids are unique; references to models and parts are checked by the server
    /// against its registry.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        for t in &self.technicians {
            if !seen.insert(t.id.as_str()) {
                problems.push(format!("technician `{}` is defined twice", t.id));
            }
            if t.skills.is_empty() {
                problems.push(format!("technician `{}` has no skills", t.id));
            }
            if t.home_region.trim().is_empty() {
                problems.push(format!("technician `{}` has no home region", t.id));
            }
        }
        let mut parts = HashSet::new();
        for s in &self.stock {
            if !parts.insert(s.part.as_str()) {
                problems.push(format!("stock of part `{}` is given twice", s.part));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

impl FleetManifest {
    /// Checks that every reference resolves and every number is in range; returns every
    /// problem found (not just the first), each naming where it is.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut unique = |what: &str, ids: Vec<&str>| -> HashSet<String> {
            let mut seen = HashSet::new();
            for id in ids {
                if !seen.insert(id.to_owned()) {
                    problems.push(format!("{what} `{id}` is defined twice"));
                }
            }
            seen
        };
        let customers = unique(
            "customer",
            self.customers.iter().map(|c| c.id.as_str()).collect(),
        );
        unique("site", self.sites.iter().map(|s| s.id.as_str()).collect());
        let parts = unique("part", self.parts.iter().map(|p| p.id.as_str()).collect());
        let models = unique(
            "machine model",
            self.machine_models.iter().map(|m| m.id.as_str()).collect(),
        );
        unique(
            "machine",
            self.machines.iter().map(|m| m.id.as_str()).collect(),
        );
        unique(
            "contract",
            self.contracts.iter().map(|c| c.id.as_str()).collect(),
        );

        if self.tenant.labour_rate_cents_per_hour < 0 {
            problems.push("tenant: labour_rate_cents_per_hour is negative".into());
        }
        for site in &self.sites {
            let at = format!("site `{}`", site.id);
            if !customers.contains(site.customer.as_str()) {
                problems.push(format!("{at}: unknown customer `{}`", site.customer));
            }
            if site.travel_cost_cents < 0 {
                problems.push(format!("{at}: travel_cost_cents is negative"));
            }
            for (i, w) in site.maintenance_windows.iter().enumerate() {
                if let Err(e) = w.start_minute() {
                    problems.push(format!("{at}: maintenance_windows[{i}]: {e}"));
                }
                if !(w.duration_hours > 0.0 && w.duration_hours <= 24.0 * 7.0) {
                    problems.push(format!(
                        "{at}: maintenance_windows[{i}]: duration_hours {} is not in (0, 168]",
                        w.duration_hours
                    ));
                }
            }
        }
        for part in &self.parts {
            let at = format!("part `{}`", part.id);
            if part.price_cents < 0 || part.lead_time_days < 0.0 || part.labour_hours < 0.0 {
                problems.push(format!(
                    "{at}: price, lead time and labour hours must not be negative"
                ));
            }
            if !(part.life.shape > 0.0 && part.life.scale_hours > 0.0) {
                problems.push(format!("{at}: life shape and scale must be positive"));
            }
        }
        for model in &self.machine_models {
            let at = format!("machine model `{}`", model.id);
            let mut keys = HashSet::new();
            for c in &model.components {
                if !keys.insert(c.key.as_str()) {
                    problems.push(format!("{at}: component `{}` is defined twice", c.key));
                }
                if c.key.as_str() == crate::channel::OPERATING_COMPONENT {
                    problems.push(format!("{at}: `op` is reserved for operating channels"));
                }
                if !parts.contains(c.part.as_str()) {
                    problems.push(format!(
                        "{at}: component `{}`: unknown part `{}`",
                        c.key, c.part
                    ));
                }
                if c.wear_channels.is_empty() {
                    problems.push(format!("{at}: component `{}` has no wear channels", c.key));
                }
                for w in &c.wear_channels {
                    if let Err(e) = validate_id("quantity", &w.quantity) {
                        problems.push(format!("{at}: component `{}`: {e}", c.key));
                    }
                    if !(w.healthy.is_finite() && w.failure.is_finite()) || w.healthy == w.failure {
                        problems.push(format!(
                            "{at}: component `{}`: channel `{}` needs distinct finite healthy and failure levels",
                            c.key, w.quantity
                        ));
                    }
                }
            }
        }
        for m in &self.machines {
            let at = format!("machine `{}`", m.id);
            if !customers.contains(m.customer.as_str()) {
                problems.push(format!("{at}: unknown customer `{}`", m.customer));
            }
            match self.sites.iter().find(|s| s.id == m.site) {
                None => problems.push(format!("{at}: unknown site `{}`", m.site)),
                Some(s) if s.customer != m.customer => problems.push(format!(
                    "{at}: site `{}` belongs to customer `{}`, not `{}`",
                    m.site, s.customer, m.customer
                )),
                Some(_) => {}
            }
            match self.machine_models.iter().find(|mm| mm.id == m.model) {
                None if !models.contains(m.model.as_str()) => {
                    problems.push(format!("{at}: unknown machine model `{}`", m.model))
                }
                None => {}
                Some(model) => {
                    for c in &m.components {
                        if !model.components.iter().any(|s| s.key == c.key) {
                            problems.push(format!(
                                "{at}: model `{}` has no component `{}`",
                                m.model, c.key
                            ));
                        }
                    }
                }
            }
        }
        for c in &self.contracts {
            let at = format!("contract `{}`", c.id);
            if !customers.contains(c.customer.as_str()) {
                problems.push(format!("{at}: unknown customer `{}`", c.customer));
            }
            for (name, v) in [
                ("parts_coverage", c.parts_coverage),
                ("labour_coverage", c.labour_coverage),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    problems.push(format!("{at}: {name} {v} is not in [0, 1]"));
                }
            }
            if !(c.risk_tolerance > 0.0 && c.risk_tolerance < 0.5) {
                problems.push(format!(
                    "{at}: risk_tolerance {} is not in (0, 0.5)",
                    c.risk_tolerance
                ));
            }
            if c.renewal <= c.start {
                problems.push(format!("{at}: renewal is not after start"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    pub fn model(&self, id: &MachineModelId) -> Option<&MachineModel> {
        self.machine_models.iter().find(|m| &m.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().unwrap()
    }

    fn manifest() -> FleetManifest {
        FleetManifest {
            tenant: Tenant {
                id: id("acme"),
                name: "ACME".into(),
                currency: "EUR".into(),
                labour_rate_cents_per_hour: 9500,
            },
            customers: vec![Customer {
                id: id("c1"),
                name: "C1".into(),
                contact_email: None,
            }],
            sites: vec![Site {
                id: id("s1"),
                customer: id("c1"),
                name: "S1".into(),
                timezone: "Europe/Berlin".into(),
                region: "de-south".into(),
                travel_cost_cents: 25_000,
                maintenance_windows: vec![RecurringWindow {
                    weekday: Weekday::Sun,
                    start: "06:00".into(),
                    duration_hours: 8.0,
                }],
            }],
            parts: vec![Part {
                id: id("brg"),
                name: "Bearing".into(),
                price_cents: 1,
                lead_time_days: 2.0,
                labour_hours: 3.0,
                life: WeibullLife {
                    shape: 2.0,
                    scale_hours: 1000.0,
                },
            }],
            machine_models: vec![MachineModel {
                id: id("mill"),
                name: "Mill".into(),
                components: vec![ComponentSpec {
                    key: id("spindle_bearing"),
                    name: "Spindle bearing".into(),
                    part: id("brg"),
                    wear_channels: vec![WearChannelSpec {
                        quantity: "vibration_rms".into(),
                        unit: "mm/s".into(),
                        healthy: 1.0,
                        failure: 7.1,
                    }],
                }],
                downtime_cost_cents_per_hour: 100_000,
                unplanned_downtime_hours: 24.0,
            }],
            machines: vec![Machine {
                id: id("m1"),
                customer: id("c1"),
                site: id("s1"),
                model: id("mill"),
                serial: "SN1".into(),
                commissioned_at: UnixMs(0),
                components: vec![],
            }],
            contracts: vec![],
        }
    }

    #[test]
    fn a_consistent_manifest_passes() {
        manifest().check().unwrap();
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let mut m = manifest();
        m.machines[0].site = id("nowhere");
        m.sites[0].maintenance_windows[0].start = "25:00".into();
        m.parts[0].life.shape = 0.0;
        let problems = m.check().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("machine `m1`: unknown site"))
        );
        assert!(problems.iter().any(|p| p.contains("not HH:MM")));
    }

    #[test]
    fn recurring_window_start_parses() {
        let w = |s: &str| RecurringWindow {
            weekday: Weekday::Mon,
            start: s.into(),
            duration_hours: 1.0,
        };
        assert_eq!(w("06:30").start_minute(), Ok(390));
        assert!(w("6:30").start_minute().is_err());
        assert!(w("06:60").start_minute().is_err());
    }
}
