//! The demo fleet: a fixed catalogue (tenant, customers, sites, parts, machine models)
//! plus machines and component lives drawn from the seed, positioned so that a given
//! instant is "now", and the [`FleetManifest`] that describes it to the server.
//!
//! The catalogue is the single source of both the manifest and the physics: a
//! component's wear channels in the manifest are the ones [`crate::wear`] simulates.
//! Everything random comes from ChaCha8 streams keyed by (seed, purpose, index), so a
//! machine's lives do not change when another machine is added or when readings are
//! drawn at another rate.

use std::collections::{HashMap, VecDeque};

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::Weibull;
use tokio::sync::watch;
use wearcast_protocol::registry::{
    ComponentSpec, Contract, ContractTier, Customer, FleetManifest, InstalledComponent, Machine,
    MachineModel, Part, RecurringWindow, Site, Tenant, WearChannelSpec, Weekday, WeibullLife,
};
use wearcast_protocol::{ComponentKey, MachineId, PartId, TenantId, UnixMs};

use crate::config::SimConfig;
use crate::control::SimControl;
use crate::error::SimError;
use crate::machine::{ComponentSim, MachineSim};
use crate::truth::LifeRecord;
use crate::wear::{
    FailureMode, Life, LoadEffect, MIN_LIFE_HOURS, ONSET_FRACTION, WearChannel, draw_life_hours,
    draw_onset_fraction, hours_to_ms,
};

// ---- catalogue ---------------------------------------------------------------------

#[derive(Debug)]
pub(crate) struct PartDef {
    pub id: &'static str,
    pub name: &'static str,
    pub price_cents: i64,
    pub lead_time_days: f64,
    pub labour_hours: f64,
    pub shape: f64,
    pub scale_hours: f64,
}

const PARTS: &[PartDef] = &[
    PartDef {
        id: "brg-spindle-7014",
        name: "Spindle bearing set 7014 P4",
        price_cents: 184_000,
        lead_time_days: 5.0,
        labour_hours: 6.0,
        shape: 3.0,
        scale_hours: 4000.0,
    },
    PartDef {
        id: "belt-spindle-htd8",
        name: "Spindle drive belt HTD-8M",
        price_cents: 12_500,
        lead_time_days: 2.0,
        labour_hours: 1.5,
        shape: 2.5,
        scale_hours: 2800.0,
    },
    PartDef {
        id: "pump-coolant-cp40",
        name: "Coolant pump CP-40",
        price_cents: 68_000,
        lead_time_days: 7.0,
        labour_hours: 3.0,
        shape: 2.8,
        scale_hours: 4800.0,
    },
    PartDef {
        id: "filter-coolant-f25",
        name: "Coolant filter cartridge F25",
        price_cents: 4_500,
        lead_time_days: 1.0,
        labour_hours: 0.5,
        shape: 3.5,
        scale_hours: 1800.0,
    },
    PartDef {
        id: "brg-main-c300",
        name: "Main rotor bearing C300",
        price_cents: 236_000,
        lead_time_days: 10.0,
        labour_hours: 10.0,
        shape: 3.2,
        scale_hours: 5000.0,
    },
    PartDef {
        id: "filter-air-c300",
        name: "Intake air filter C300",
        price_cents: 6_800,
        lead_time_days: 2.0,
        labour_hours: 0.5,
        shape: 3.0,
        scale_hours: 2000.0,
    },
    PartDef {
        id: "valve-inlet-c300",
        name: "Inlet valve kit C300",
        price_cents: 52_000,
        lead_time_days: 6.0,
        labour_hours: 4.0,
        shape: 2.4,
        scale_hours: 3800.0,
    },
];

/// The operating channel besides load and ambient that says what the machine is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Duty {
    SpindleSpeed,
    DischargePressure,
}

impl Duty {
    pub fn quantity(self) -> &'static str {
        match self {
            Self::SpindleSpeed => "speed_rpm",
            Self::DischargePressure => "pressure_bar",
        }
    }

    /// Level in each load regime (see [`crate::machine::REGIME_LOADS`]).
    pub fn levels(self) -> [f64; 3] {
        match self {
            Self::SpindleSpeed => [6000.0, 9000.0, 12000.0],
            Self::DischargePressure => [6.5, 7.2, 7.9],
        }
    }

    pub fn noise_sd(self) -> f64 {
        match self {
            Self::SpindleSpeed => 40.0,
            Self::DischargePressure => 0.04,
        }
    }

    pub fn decimals(self) -> i32 {
        match self {
            Self::SpindleSpeed => 0,
            Self::DischargePressure => 3,
        }
    }
}

#[derive(Debug)]
pub(crate) struct ComponentDef {
    pub key: &'static str,
    pub name: &'static str,
    pub part: &'static str,
    pub mode: FailureMode,
    pub channels: &'static [WearChannel],
}

#[derive(Debug)]
pub(crate) struct ModelDef {
    pub id: &'static str,
    pub name: &'static str,
    pub serial_prefix: &'static str,
    pub duty: Duty,
    pub downtime_cost_cents_per_hour: i64,
    pub unplanned_downtime_hours: f64,
    pub components: &'static [ComponentDef],
}

const VIBRATION_LOAD: LoadEffect = LoadEffect::Scale { per_pct: 0.002 };

const MILL: ModelDef = ModelDef {
    id: "mill-m500",
    name: "M500 5-axis machining centre",
    serial_prefix: "M500",
    duty: Duty::SpindleSpeed,
    downtime_cost_cents_per_hour: 180_000,
    unplanned_downtime_hours: 36.0,
    components: &[
        ComponentDef {
            key: "spindle_bearing",
            name: "Spindle bearing",
            part: "brg-spindle-7014",
            mode: FailureMode::BearingSpall,
            channels: &[
                WearChannel {
                    quantity: "vibration_rms",
                    unit: "mm/s",
                    healthy: 1.2,
                    failure: 7.1,
                    load: VIBRATION_LOAD,
                    ambient_per_c: 0.0,
                },
                WearChannel {
                    quantity: "temperature_c",
                    unit: "°C",
                    healthy: 45.0,
                    failure: 85.0,
                    load: LoadEffect::Offset { per_pct: 0.06 },
                    ambient_per_c: 0.25,
                },
            ],
        },
        ComponentDef {
            key: "spindle_belt",
            name: "Spindle drive belt",
            part: "belt-spindle-htd8",
            mode: FailureMode::BeltWear,
            channels: &[WearChannel {
                quantity: "slip_pct",
                unit: "%",
                healthy: 0.5,
                failure: 4.0,
                load: LoadEffect::Offset { per_pct: 0.004 },
                ambient_per_c: 0.0,
            }],
        },
        ComponentDef {
            key: "coolant_pump",
            name: "Coolant pump",
            part: "pump-coolant-cp40",
            mode: FailureMode::ImpellerWear,
            channels: &[
                WearChannel {
                    quantity: "flow_lpm",
                    unit: "l/min",
                    healthy: 40.0,
                    failure: 24.0,
                    load: LoadEffect::Offset { per_pct: -0.02 },
                    ambient_per_c: 0.0,
                },
                WearChannel {
                    quantity: "current_a",
                    unit: "A",
                    healthy: 6.0,
                    failure: 9.5,
                    load: LoadEffect::Offset { per_pct: 0.005 },
                    ambient_per_c: 0.0,
                },
            ],
        },
        ComponentDef {
            key: "coolant_filter",
            name: "Coolant filter",
            part: "filter-coolant-f25",
            mode: FailureMode::FilterClogging,
            channels: &[WearChannel {
                quantity: "dp_mbar",
                unit: "mbar",
                healthy: 60.0,
                failure: 320.0,
                load: LoadEffect::Offset { per_pct: 0.3 },
                ambient_per_c: 0.0,
            }],
        },
    ],
};

const COMPRESSOR: ModelDef = ModelDef {
    id: "compressor-c300",
    name: "C300 rotary screw compressor",
    serial_prefix: "C300",
    duty: Duty::DischargePressure,
    downtime_cost_cents_per_hour: 90_000,
    unplanned_downtime_hours: 24.0,
    components: &[
        ComponentDef {
            key: "main_bearing",
            name: "Main rotor bearing",
            part: "brg-main-c300",
            mode: FailureMode::BearingSpall,
            channels: &[
                WearChannel {
                    quantity: "vibration_rms",
                    unit: "mm/s",
                    healthy: 1.5,
                    failure: 8.0,
                    load: VIBRATION_LOAD,
                    ambient_per_c: 0.0,
                },
                WearChannel {
                    quantity: "temperature_c",
                    unit: "°C",
                    healthy: 60.0,
                    failure: 95.0,
                    load: LoadEffect::Offset { per_pct: 0.05 },
                    ambient_per_c: 0.3,
                },
            ],
        },
        ComponentDef {
            key: "air_filter",
            name: "Intake air filter",
            part: "filter-air-c300",
            mode: FailureMode::FilterClogging,
            channels: &[WearChannel {
                quantity: "dp_mbar",
                unit: "mbar",
                healthy: 25.0,
                failure: 95.0,
                load: LoadEffect::Offset { per_pct: 0.08 },
                ambient_per_c: 0.0,
            }],
        },
        ComponentDef {
            key: "inlet_valve",
            name: "Inlet valve",
            part: "valve-inlet-c300",
            mode: FailureMode::ValveLeak,
            channels: &[WearChannel {
                quantity: "leak_pct",
                unit: "%",
                healthy: 1.0,
                failure: 12.0,
                load: LoadEffect::Offset { per_pct: 0.008 },
                ambient_per_c: 0.0,
            }],
        },
    ],
};

const MODELS: [&ModelDef; 2] = [&MILL, &COMPRESSOR];

#[derive(Debug)]
pub(crate) struct SiteDef {
    pub id: &'static str,
    pub name: &'static str,
    pub timezone: &'static str,
    /// Standard-time offset of `timezone`; only phases the simulated day's ambient
    /// temperature, so daylight saving time is not worth a time-zone database here.
    pub utc_offset_hours: f64,
    pub region: &'static str,
    pub travel_cost_cents: i64,
    /// Daily mean of the shop-floor temperature.
    pub ambient_c: f64,
    pub windows: &'static [(Weekday, &'static str, f64)],
}

struct CustomerDef {
    id: &'static str,
    name: &'static str,
    email: &'static str,
    tier: ContractTier,
    sites: &'static [SiteDef],
}

const CUSTOMERS: &[CustomerDef] = &[
    CustomerDef {
        id: "northwind",
        name: "Northwind Precision GmbH",
        email: "maintenance@northwind.example",
        tier: ContractTier::Premium,
        sites: &[
            SiteDef {
                id: "nw-stuttgart",
                name: "Northwind Stuttgart plant",
                timezone: "Europe/Berlin",
                utc_offset_hours: 1.0,
                region: "eu-central",
                travel_cost_cents: 28_000,
                ambient_c: 21.0,
                windows: &[(Weekday::Sun, "06:00", 8.0), (Weekday::Wed, "22:00", 6.0)],
            },
            SiteDef {
                id: "nw-brno",
                name: "Northwind Brno plant",
                timezone: "Europe/Prague",
                utc_offset_hours: 1.0,
                region: "eu-central",
                travel_cost_cents: 46_000,
                ambient_c: 20.0,
                windows: &[(Weekday::Sat, "14:00", 10.0)],
            },
        ],
    },
    CustomerDef {
        id: "contoso",
        name: "Contoso Fabrication Inc.",
        email: "plant-ops@contoso.example",
        tier: ContractTier::Standard,
        sites: &[
            SiteDef {
                id: "ct-chicago",
                name: "Contoso Chicago works",
                timezone: "America/Chicago",
                utc_offset_hours: -6.0,
                region: "us-central",
                travel_cost_cents: 62_000,
                ambient_c: 23.0,
                windows: &[(Weekday::Sun, "00:00", 12.0)],
            },
            SiteDef {
                id: "ct-monterrey",
                name: "Contoso Monterrey works",
                timezone: "America/Monterrey",
                utc_offset_hours: -6.0,
                region: "mx-north",
                travel_cost_cents: 84_000,
                ambient_c: 26.0,
                windows: &[(Weekday::Sun, "04:00", 8.0), (Weekday::Thu, "23:00", 5.0)],
            },
        ],
    },
    CustomerDef {
        id: "globex",
        name: "Globex Industrial Co., Ltd.",
        email: "service@globex.example",
        tier: ContractTier::Basic,
        sites: &[SiteDef {
            id: "gx-suzhou",
            name: "Globex Suzhou factory",
            timezone: "Asia/Shanghai",
            utc_offset_hours: 8.0,
            region: "cn-east",
            travel_cost_cents: 120_000,
            ambient_c: 25.0,
            windows: &[(Weekday::Sun, "08:00", 8.0), (Weekday::Tue, "21:00", 4.0)],
        }],
    },
];

/// Coverage, risk tolerance and annual fee of each contract tier.
fn tier_terms(tier: ContractTier) -> (f64, f64, f64, i64) {
    match tier {
        ContractTier::Premium => (1.0, 1.0, 0.05, 4_800_000),
        ContractTier::Standard => (0.5, 1.0, 0.10, 2_400_000),
        ContractTier::Basic => (0.0, 0.5, 0.15, 900_000),
    }
}

/// Every (component key, failure mode, wear channel) of the catalogue; for tests of
/// the physics against the real parameters.
#[cfg(test)]
pub(crate) fn catalogue_channels() -> Vec<(&'static str, FailureMode, WearChannel)> {
    MODELS
        .iter()
        .flat_map(|m| m.components.iter())
        .flat_map(|c| c.channels.iter().map(move |ch| (c.key, c.mode, *ch)))
        .collect()
}

// ---- random streams ----------------------------------------------------------------

/// What a random stream is used for; part of its key, so streams never overlap.
#[derive(Clone, Copy)]
enum Purpose {
    Manifest = 1,
    Machine = 2,
    Component = 3,
    Positioning = 4,
}

fn stream(seed: u64, purpose: Purpose, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(purpose as u64).to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

// ---- the fleet ---------------------------------------------------------------------

/// How many components the fleet guarantees to be close to failure at `now` (or all of
/// them, in a fleet with fewer), so predictions and offers exist right after backfill.
pub const NEAR_FAILURE_COMPONENTS: usize = 3;
/// "Close to failure": remaining life at `now` within this range (days), past onset.
pub const NEAR_FAILURE_DAYS: (f64, f64) = (5.0, 14.0);

const YEAR_MS: i64 = 365 * UnixMs::DAY;

/// A simulated fleet: the manifest the server imports, and each machine's simulation
/// state (component lives, operating regime, random streams). [`crate::run`] consumes it.
#[derive(Debug)]
pub struct Fleet {
    pub manifest: FleetManifest,
    /// The instant the fleet was positioned for: lives in progress then are the ones
    /// the manifest's `installed_at` describe.
    now: UnixMs,
    pub(crate) machines: Vec<MachineSim>,
    /// Set to `true` by [`crate::run`] once the broker has acknowledged every machine's
    /// backfill.
    pub(crate) backfill_done: watch::Sender<bool>,
    pub(crate) control: SimControl,
    /// Each machine's MQTT password (its user name is its id), for a broker that
    /// wants devices to sign in; machines without one connect anonymously.
    pub(crate) passwords: Passwords,
}

/// How machines sign in to the broker; `Debug` shows no secret.
#[derive(Clone, Default)]
pub(crate) struct Passwords {
    /// Each machine's own password (user name: the machine id).
    pub per_machine: HashMap<MachineId, String>,
    /// One user and password for all, when set.
    pub shared: Option<(String, String)>,
}

impl Passwords {
    /// The user name and password `machine` signs in with, if any.
    pub fn login(&self, machine: &MachineId) -> Option<(String, String)> {
        self.shared.clone().or_else(|| {
            self.per_machine
                .get(machine)
                .map(|p| (machine.as_str().to_owned(), p.clone()))
        })
    }
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{} passwords, shared login: {}; redacted]",
            self.per_machine.len(),
            self.shared.is_some()
        )
    }
}

/// Resolves when the simulator has published its backfill; see [`Fleet::backfill_done`].
#[derive(Debug, Clone)]
pub struct BackfillDone(watch::Receiver<bool>);

impl BackfillDone {
    /// Waits until the broker has acknowledged the whole backfill of every machine.
    /// Returns `false` if the simulator stopped before that.
    pub async fn wait(&mut self) -> bool {
        self.0.wait_for(|done| *done).await.is_ok()
    }

    pub fn is_done(&self) -> bool {
        *self.0.borrow()
    }
}

impl Fleet {
    /// The MQTT passwords the machines sign in with (user name: the machine id).
    pub fn set_passwords(&mut self, passwords: HashMap<MachineId, String>) {
        self.passwords = Passwords {
            per_machine: passwords,
            shared: None,
        };
    }

    /// One MQTT login for every machine (a broker's private port), instead of their
    /// own.
    pub fn set_login(&mut self, user: &str, password: &str) {
        self.passwords = Passwords {
            per_machine: HashMap::new(),
            shared: Some((user.to_owned(), password.to_owned())),
        };
    }

    pub fn now(&self) -> UnixMs {
        self.now
    }

    pub fn tenant(&self) -> &TenantId {
        &self.manifest.tenant.id
    }

    /// The fleet's machines as the manifest lists them (id, customer, site, model).
    pub fn machines(&self) -> impl Iterator<Item = &Machine> {
        self.manifest.machines.iter()
    }

    /// A handle to steer the running simulation (replace parts); take it before
    /// handing the fleet to [`crate::run`].
    pub fn control(&self) -> SimControl {
        self.control.clone()
    }

    /// A handle that resolves once [`crate::run`] has published the backfill of this
    /// fleet. Take it before handing the fleet to `run`.
    pub fn backfill_done(&self) -> BackfillDone {
        BackfillDone(self.backfill_done.subscribe())
    }

    /// The true lives in progress at `at`, one per installed, not yet failed component
    /// (a component that failed and awaits its replacement has none). Valid for
    /// instants up to `now`; later lives are only drawn as the simulation runs.
    pub fn lives_at(&self, at: UnixMs) -> Vec<LifeRecord> {
        self.machines
            .iter()
            .flat_map(|m| {
                m.components.iter().filter_map(move |c| {
                    c.lives()
                        .find(|l| l.in_progress_at(at))
                        .map(|l| m.life_record(c, l))
                })
            })
            .collect()
    }
}

/// Builds the deterministic demo fleet for `config.seed`, positioned so that `now` is
/// the present: every component was installed in the past at a spread-out age, at
/// least [`NEAR_FAILURE_COMPONENTS`] are a few days from failure, and each component's
/// history reaches back `config.backfill` (earlier lives ended in breakdowns).
pub fn demo_fleet(config: &SimConfig, now: UnixMs) -> Result<Fleet, SimError> {
    config.validate()?;
    let tenant_id = config.tenant_id()?;
    let seed = config.seed;
    let mut rng = stream(seed, Purpose::Manifest, 0);

    let tenant = Tenant {
        id: tenant_id.clone(),
        name: "ACME Machine Works".into(),
        currency: "EUR".into(),
        labour_rate_cents_per_hour: 9_500,
    };
    let customers = CUSTOMERS
        .iter()
        .map(|c| {
            Ok(Customer {
                id: parse_id(c.id)?,
                name: c.name.into(),
                contact_email: Some(c.email.into()),
            })
        })
        .collect::<Result<Vec<_>, SimError>>()?;
    let mut sites = Vec::new();
    let mut site_defs: Vec<(&CustomerDef, &'static SiteDef)> = Vec::new();
    for c in CUSTOMERS {
        for s in c.sites {
            site_defs.push((c, s));
            sites.push(Site {
                id: parse_id(s.id)?,
                customer: parse_id(c.id)?,
                name: s.name.into(),
                timezone: s.timezone.into(),
                region: s.region.into(),
                travel_cost_cents: s.travel_cost_cents,
                maintenance_windows: s
                    .windows
                    .iter()
                    .map(|(weekday, start, hours)| RecurringWindow {
                        weekday: *weekday,
                        start: (*start).into(),
                        duration_hours: *hours,
                    })
                    .collect(),
            });
        }
    }
    let parts = PARTS
        .iter()
        .map(|p| {
            Ok(Part {
                id: parse_id(p.id)?,
                name: p.name.into(),
                price_cents: p.price_cents,
                lead_time_days: p.lead_time_days,
                labour_hours: p.labour_hours,
                life: WeibullLife {
                    shape: p.shape,
                    scale_hours: p.scale_hours,
                },
            })
        })
        .collect::<Result<Vec<_>, SimError>>()?;
    let machine_models = MODELS
        .iter()
        .map(|m| model_spec(m))
        .collect::<Result<Vec<_>, SimError>>()?;
    let contracts = CUSTOMERS
        .iter()
        .map(|c| {
            let (parts_coverage, labour_coverage, risk_tolerance, annual_fee_cents) =
                tier_terms(c.tier);
            let start = now
                .plus_ms(-rng.random_range(60..700) * UnixMs::DAY)
                .window_start(UnixMs::DAY);
            let years_running = (now.0 - start.0) / YEAR_MS + 1;
            Ok(Contract {
                id: parse_id(&format!("ctr-{}", c.id))?,
                customer: parse_id(c.id)?,
                tier: c.tier,
                parts_coverage,
                labour_coverage,
                risk_tolerance,
                annual_fee_cents,
                start,
                renewal: start.plus_ms(years_running * YEAR_MS),
            })
        })
        .collect::<Result<Vec<_>, SimError>>()?;

    // Machines and the lives of their components, in progress at `now`.
    let mut machines = Vec::with_capacity(config.machines);
    let mut drafts: Vec<Vec<ComponentDraft>> = Vec::with_capacity(config.machines);
    let mut placements = Vec::with_capacity(config.machines);
    for i in 0..config.machines {
        let (customer, site) = site_defs[i % site_defs.len()];
        // The first two machines cover both models, so even a tiny fleet shows both.
        let model: &'static ModelDef = match i {
            0 => &MILL,
            1 => &COMPRESSOR,
            _ if rng.random_bool(0.4) => &COMPRESSOR,
            _ => &MILL,
        };
        let commissioned_at = now.plus_ms(-(rng.random_range(1.5..6.5) * YEAR_MS as f64) as i64);
        let year = commissioned_at
            .to_rfc3339()
            .chars()
            .take(4)
            .collect::<String>();
        let serial = format!(
            "{}-{year}-{:05}",
            model.serial_prefix,
            rng.random_range(10_000..100_000)
        );
        let id: MachineId = parse_id(&format!("m-{:03}", i + 1))?;
        let components = model
            .components
            .iter()
            .enumerate()
            .map(|(c, def)| {
                let mut rng = stream(seed, Purpose::Component, ((i as u64) << 8) | c as u64);
                let part = part_def(def.part)?;
                let life_distribution =
                    Weibull::new(part.scale_hours, part.shape).map_err(|e| SimError::Manifest {
                        problems: vec![format!("part `{}`: {e}", part.id)],
                    })?;
                let hours = draw_life_hours(&mut rng, &life_distribution);
                let age = rng.random_range(0.05..0.97) * hours;
                let onset = draw_onset_fraction(&mut rng);
                let life =
                    Life::from_length(now.plus_ms(-hours_to_ms(age)), hours_to_ms(hours), onset);
                Ok(ComponentDraft {
                    def,
                    rng,
                    life_distribution,
                    life,
                })
            })
            .collect::<Result<Vec<_>, SimError>>()?;
        drafts.push(components);
        placements.push((id, customer, site, model, serial, commissioned_at));
    }

    ensure_near_failure(&mut drafts, seed, now);

    let history_start = now.plus_ms(-config.backfill_ms());
    for ((id, customer, site, model, serial, commissioned_at), components) in
        placements.into_iter().zip(drafts)
    {
        let downtime_ms = hours_to_ms(model.unplanned_downtime_hours);
        let mut installed = Vec::with_capacity(components.len());
        let mut sims = Vec::with_capacity(components.len());
        for mut draft in components {
            installed.push(InstalledComponent {
                key: parse_id(draft.def.key)?,
                installed_at: draft.life.installed_at,
            });
            let lives = history(&mut draft, history_start, downtime_ms);
            sims.push(ComponentSim::new(
                parse_id::<ComponentKey>(draft.def.key)?,
                parse_id::<PartId>(draft.def.part)?,
                draft.def,
                draft.life_distribution,
                draft.rng,
                lives,
            )?);
        }
        let index = machines.len() as u64;
        machines.push((
            Machine {
                id: id.clone(),
                customer: parse_id(customer.id)?,
                site: parse_id(site.id)?,
                model: parse_id(model.id)?,
                serial,
                commissioned_at,
                components: installed,
            },
            MachineSim::new(
                id,
                tenant_id.clone(),
                model,
                site,
                sims,
                stream(seed, Purpose::Machine, index),
            )?,
        ));
    }
    let (manifest_machines, sims): (Vec<_>, Vec<_>) = machines.into_iter().unzip();

    let manifest = FleetManifest {
        tenant,
        customers,
        sites,
        parts,
        machine_models,
        machines: manifest_machines,
        contracts,
    };
    manifest
        .check()
        .map_err(|problems| SimError::Manifest { problems })?;
    let mut sims = sims;
    if let Some(quiet) = &config.quiet_customer {
        let Some(customer) = CUSTOMERS.iter().find(|c| c.id == quiet) else {
            return Err(SimError::config(
                "quiet_customer",
                format!(
                    "`{quiet}` is not a demo customer (one of: {})",
                    CUSTOMERS
                        .iter()
                        .map(|c| c.id)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let from = now.plus_ms(config.goes_quiet_after_ms());
        for (machine, sim) in manifest.machines.iter().zip(&mut sims) {
            if machine.customer.as_str() == customer.id {
                sim.go_quiet_from(from);
            }
        }
    }
    let (backfill_done, _) = watch::channel(false);
    Ok(Fleet {
        manifest,
        now,
        machines: sims,
        backfill_done,
        control: SimControl::default(),
        passwords: Passwords::default(),
    })
}

/// A component's life in progress at `now`, before the fleet is assembled.
struct ComponentDraft {
    def: &'static ComponentDef,
    rng: ChaCha8Rng,
    life_distribution: Weibull<f64>,
    life: Life,
}

fn near_failure(life: &Life, now: UnixMs) -> bool {
    let remaining_days = (life.fails_at.0 - now.0) as f64 / UnixMs::DAY as f64;
    life.onset_at <= now && (NEAR_FAILURE_DAYS.0..=NEAR_FAILURE_DAYS.1).contains(&remaining_days)
}

/// Re-positions randomly chosen components until at least [`NEAR_FAILURE_COMPONENTS`]
/// are near failure and past onset. With 30 machines chance alone usually gives many
/// more; this makes the demo's first offers a guarantee for every seed and fleet size.
fn ensure_near_failure(drafts: &mut [Vec<ComponentDraft>], seed: u64, now: UnixMs) {
    let total: usize = drafts.iter().map(Vec::len).sum();
    let need = NEAR_FAILURE_COMPONENTS.min(total);
    let have = drafts
        .iter()
        .flatten()
        .filter(|d| near_failure(&d.life, now))
        .count();
    if have >= need {
        return;
    }
    let mut rng = stream(seed, Purpose::Positioning, 0);
    let mut candidates: Vec<(usize, usize)> = drafts
        .iter()
        .enumerate()
        .flat_map(|(m, cs)| {
            cs.iter()
                .enumerate()
                .filter(|(_, d)| !near_failure(&d.life, now))
                .map(move |(c, _)| (m, c))
        })
        .collect();
    candidates.shuffle(&mut rng);
    for (m, c) in candidates.into_iter().take(need - have) {
        let draft = &mut drafts[m][c];
        let remaining_hours =
            24.0 * rng.random_range(NEAR_FAILURE_DAYS.0 + 1.0..NEAR_FAILURE_DAYS.1 - 2.0);
        // The life must be long enough for its onset (ONSET_FRACTION.0 into it) to lie
        // before now; a typical draw of the part's own distribution usually is.
        let min_hours = (remaining_hours / (1.0 - ONSET_FRACTION.0) * 1.05).max(MIN_LIFE_HOURS);
        let hours = (0..64)
            .map(|_| draw_life_hours(&mut draft.rng, &draft.life_distribution))
            .find(|h| *h >= min_hours)
            .unwrap_or(min_hours);
        let latest_onset = (1.0 - remaining_hours / hours).min(ONSET_FRACTION.1);
        let onset = draft.rng.random_range(ONSET_FRACTION.0..=latest_onset);
        let length = hours_to_ms(hours);
        let fails_at = now.plus_ms(hours_to_ms(remaining_hours));
        draft.life = Life::from_length(fails_at.plus_ms(-length), length, onset);
    }
}

/// The lives of a component from before `history_start` up to the one in progress at
/// `now`: each earlier life ended in a breakdown, and its successor was installed once
/// the machine's unplanned downtime was over.
fn history(draft: &mut ComponentDraft, history_start: UnixMs, downtime_ms: i64) -> VecDeque<Life> {
    let mut lives = VecDeque::from([draft.life]);
    while let Some(first) = lives.front()
        && first.installed_at > history_start
    {
        let fails_at = first.installed_at.plus_ms(-downtime_ms);
        let length = hours_to_ms(draw_life_hours(&mut draft.rng, &draft.life_distribution));
        let onset = draw_onset_fraction(&mut draft.rng);
        lives.push_front(Life::from_length(fails_at.plus_ms(-length), length, onset));
    }
    lives
}

fn model_spec(m: &ModelDef) -> Result<MachineModel, SimError> {
    Ok(MachineModel {
        id: parse_id(m.id)?,
        name: m.name.into(),
        components: m
            .components
            .iter()
            .map(|c| {
                Ok(ComponentSpec {
                    key: parse_id(c.key)?,
                    name: c.name.into(),
                    part: parse_id(c.part)?,
                    wear_channels: c
                        .channels
                        .iter()
                        .map(|ch| WearChannelSpec {
                            quantity: ch.quantity.into(),
                            unit: ch.unit.into(),
                            healthy: ch.healthy,
                            failure: ch.failure,
                        })
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>, SimError>>()?,
        downtime_cost_cents_per_hour: m.downtime_cost_cents_per_hour,
        unplanned_downtime_hours: m.unplanned_downtime_hours,
    })
}

fn part_def(id: &str) -> Result<&'static PartDef, SimError> {
    PARTS
        .iter()
        .find(|p| p.id == id)
        .ok_or_else(|| SimError::Manifest {
            problems: vec![format!("the catalogue has no part `{id}`")],
        })
}

/// Parses a catalogue identifier; a failure is a bug in the catalogue.
fn parse_id<T>(value: &str) -> Result<T, SimError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| SimError::Manifest {
        problems: vec![format!("catalogue id `{value}`: {e}")],
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::machine::Emission;

    const NOW: UnixMs = UnixMs(1_795_352_355_524);

    fn fleet(seed: u64, machines: usize) -> Fleet {
        let config = SimConfig {
            seed,
            machines,
            ..SimConfig::default()
        };
        demo_fleet(&config, NOW).unwrap()
    }

    fn first_samples(fleet: &Fleet) -> Vec<wearcast_protocol::Sample> {
        let mut sims = fleet.machines.clone();
        let mut out = Vec::new();
        for sim in &mut sims {
            let mut emissions = Vec::new();
            let start = NOW.plus_ms(-UnixMs::DAY);
            sim.start(start, 300_000, &mut emissions);
            sim.advance_to(start.plus_ms(UnixMs::HOUR), &mut emissions);
            out.extend(emissions.into_iter().filter_map(|e| match e {
                Emission::Sample(s) => Some(s),
                _ => None,
            }));
        }
        out
    }

    #[test]
    fn the_same_seed_builds_the_same_fleet_with_the_same_first_samples() {
        let (a, b) = (fleet(7, 30), fleet(7, 30));
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.lives_at(NOW), b.lives_at(NOW));
        let samples = first_samples(&a);
        assert!(samples.len() > 30 * 10);
        assert_eq!(samples, first_samples(&b));
    }

    #[test]
    fn the_quiet_customers_machines_publish_nothing_since_they_went_quiet_and_the_others_do() {
        let config = SimConfig {
            quiet_customer: Some("globex".into()),
            goes_quiet_after: std::time::Duration::from_secs(24 * 3600),
            ..SimConfig::default()
        };
        let f = demo_fleet(&config, NOW).unwrap();
        let quiet_from = NOW.plus_ms(UnixMs::DAY);
        let mut quiet_machines = 0;
        for (machine, sim) in f.manifest.machines.iter().zip(&f.machines) {
            let mut sim = sim.clone();
            let mut out = Vec::new();
            sim.start(NOW, 300_000, &mut out);
            sim.advance_to(NOW.plus_ms(2 * UnixMs::DAY), &mut out);
            let last = out
                .iter()
                .filter_map(|e| match e {
                    Emission::Sample(s) => Some(s.ts),
                    _ => None,
                })
                .max()
                .unwrap();
            if machine.customer.as_str() == "globex" {
                quiet_machines += 1;
                assert!(last < quiet_from, "{} published at {last}", machine.id);
            } else {
                assert!(
                    last >= NOW.plus_ms(-UnixMs::HOUR),
                    "{} went quiet",
                    machine.id
                );
            }
        }
        assert!(quiet_machines > 0);
        let unknown = SimConfig {
            quiet_customer: Some("initech".into()),
            ..SimConfig::default()
        };
        let e = demo_fleet(&unknown, NOW).unwrap_err().to_string();
        assert!(e.contains("quiet_customer") && e.contains("initech"), "{e}");
    }

    #[test]
    fn a_different_seed_builds_a_different_fleet() {
        let (a, b) = (fleet(7, 30), fleet(8, 30));
        assert_ne!(a.manifest, b.manifest);
        assert_ne!(a.lives_at(NOW), b.lives_at(NOW));
        assert_ne!(first_samples(&a), first_samples(&b));
    }

    #[test]
    fn the_default_fleet_has_three_customers_two_models_and_thirty_machines_that_pass_the_check() {
        let f = demo_fleet(&SimConfig::default(), NOW).unwrap();
        let m = &f.manifest;
        m.check().unwrap();
        assert_eq!(m.tenant.id.as_str(), "acme");
        assert!(m.customers.len() >= 3);
        let emails: HashSet<_> = m.customers.iter().map(|c| &c.contact_email).collect();
        assert_eq!(emails.len(), m.customers.len());
        assert_eq!(m.machine_models.len(), 2);
        assert!(m.machine_models.iter().all(|mm| mm.components.len() >= 3));
        assert!(m.machines.len() >= 30);
        let models_used: HashSet<_> = m.machines.iter().map(|x| &x.model).collect();
        assert_eq!(models_used.len(), 2);
        let customers_used: HashSet<_> = m.machines.iter().map(|x| &x.customer).collect();
        assert_eq!(customers_used.len(), m.customers.len());
        assert_eq!(m.contracts.len(), m.customers.len());
        let tiers: HashSet<_> = m.contracts.iter().map(|c| c.tier).collect();
        assert_eq!(tiers.len(), 3);
        for c in &m.contracts {
            assert!(c.start < NOW && c.renewal > NOW, "{c:?}");
            assert!(c.renewal.0 - NOW.0 <= YEAR_MS, "{c:?}");
        }
        for p in &m.parts {
            assert!((1.0..=10.0).contains(&p.lead_time_days), "{p:?}");
            assert!((2.0..=4.0).contains(&p.life.shape), "{p:?}");
        }
    }

    #[test]
    fn every_site_has_weekly_windows_and_the_sites_span_several_time_zones() {
        let m = fleet(7, 30).manifest;
        for s in &m.sites {
            assert!(!s.maintenance_windows.is_empty(), "{}", s.id);
        }
        assert!(m.sites.iter().any(|s| s.maintenance_windows.len() >= 2));
        let zones: HashSet<_> = m.sites.iter().map(|s| s.timezone.as_str()).collect();
        assert!(zones.len() >= 3, "{zones:?}");
        for c in &m.customers {
            let n = m.sites.iter().filter(|s| s.customer == c.id).count();
            assert!((1..=2).contains(&n), "{}: {n} sites", c.id);
        }
    }

    #[test]
    fn at_least_three_components_are_three_to_twelve_days_from_failure_and_past_onset() {
        for machines in [1, 2, 30] {
            for seed in 0..25 {
                let f = fleet(seed, machines);
                let near = f
                    .lives_at(NOW)
                    .iter()
                    .filter(|l| {
                        let days = (l.fails_at.0 - NOW.0) as f64 / UnixMs::DAY as f64;
                        l.onset_at <= NOW
                            && (NEAR_FAILURE_DAYS.0..=NEAR_FAILURE_DAYS.1).contains(&days)
                    })
                    .count();
                assert!(near >= 3, "seed {seed}, {machines} machines: {near}");
            }
        }
    }

    #[test]
    fn remaining_lives_at_now_are_spread_out() {
        let f = fleet(7, 30);
        let remaining: Vec<f64> = f
            .lives_at(NOW)
            .iter()
            .map(|l| (l.fails_at.0 - NOW.0) as f64 / l.fails_at.0.abs_diff(l.installed_at.0) as f64)
            .collect();
        assert!(remaining.len() >= 90);
        for (lo, hi) in [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)] {
            let n = remaining.iter().filter(|r| (lo..hi).contains(*r)).count();
            assert!(n >= remaining.len() / 10, "{n} in [{lo}, {hi})");
        }
    }

    #[test]
    fn each_component_history_reaches_back_to_the_backfill_start_without_gaps() {
        let f = fleet(11, 30);
        let history_start = NOW.plus_ms(-SimConfig::default().backfill_ms());
        for (machine, sim) in f.manifest.machines.iter().zip(&f.machines) {
            let downtime = hours_to_ms(sim.model.unplanned_downtime_hours);
            for (c, installed) in sim.components.iter().zip(&machine.components) {
                let lives: Vec<_> = c.lives().collect();
                assert!(lives[0].installed_at <= history_start);
                for pair in lives.windows(2) {
                    assert_eq!(pair[1].installed_at.0, pair[0].fails_at.0 + downtime);
                }
                let current = lives.last().unwrap();
                assert!(current.in_progress_at(NOW));
                assert_eq!(installed.installed_at, current.installed_at);
                assert!(installed.installed_at > machine.commissioned_at);
            }
        }
    }
}
