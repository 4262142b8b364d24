//! One simulated machine moving through time: its operating regime, its components'
//! lives, breakdowns and the downtime they cause, and the samples it takes. It turns
//! time into [`Emission`]s (samples, events, ground-truth records) in time order and
//! knows nothing of MQTT or files.

use std::collections::VecDeque;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal, Weibull};
use wearcast_protocol::channel::OPERATING_COMPONENT;
use wearcast_protocol::event::EventPayload;
use wearcast_protocol::{
    Channel, ComponentKey, EventKind, MachineId, PartId, Sample, TenantId, UnixMs,
};

use crate::error::SimError;
use crate::fleet::{ComponentDef, ModelDef, SiteDef};
use crate::truth::{FailureRecord, LifeRecord, TruthRecord};
use crate::wear::{FailureMode, Life, WearChannel, hours_to_ms};

/// Mean load of the three operating regimes a machine switches between, percent.
pub const REGIME_LOADS: [f64; 3] = [35.0, 65.0, 92.0];
/// Clock hours a regime lasts, drawn uniformly from this range.
pub const REGIME_HOURS: (f64, f64) = (2.0, 8.0);
/// Share of readings a sensor fails to deliver.
pub const DROPOUT_PROBABILITY: f64 = 0.005;
/// Half the day-to-night swing of the shop-floor temperature, °C; warmest at 15:00.
const AMBIENT_SWING_C: f64 = 3.0;
const LOAD_NOISE_SD: f64 = 1.5;
const AMBIENT_NOISE_SD: f64 = 0.3;

/// What a machine does, in time order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Emission {
    Sample(Sample),
    Event(EventPayload),
    Truth(TruthRecord),
}

/// One component slot of a machine and the sequence of parts that fill it.
#[derive(Clone, Debug)]
pub(crate) struct ComponentSim {
    pub key: ComponentKey,
    pub part: PartId,
    pub mode: FailureMode,
    channels: Vec<(Channel, WearChannel)>,
    life_distribution: Weibull<f64>,
    /// Draws this slot's future lives; its own stream, so lives do not depend on how
    /// many readings were drawn before.
    rng: ChaCha8Rng,
    /// The life in progress, or failed and awaiting its replacement.
    current: Life,
    /// Lives decided when the fleet was positioned (its history), in time order; each
    /// begins as its predecessor is replaced. Later lives are drawn as parts go in.
    upcoming: VecDeque<Life>,
    /// When the failed part's replacement goes in.
    replacement_due: Option<UnixMs>,
    /// A replacement a technician was booked for, before the part fails.
    planned_replacement: Option<UnixMs>,
}

impl ComponentSim {
    pub(crate) fn new(
        key: ComponentKey,
        part: PartId,
        def: &ComponentDef,
        life_distribution: Weibull<f64>,
        rng: ChaCha8Rng,
        mut lives: VecDeque<Life>,
    ) -> Result<Self, SimError> {
        let channels = def
            .channels
            .iter()
            .map(|ch| {
                Channel::new(&key, ch.quantity)
                    .map(|name| (name, *ch))
                    .map_err(|e| SimError::Manifest {
                        problems: vec![e.to_string()],
                    })
            })
            .collect::<Result<_, _>>()?;
        let Some(current) = lives.pop_front() else {
            return Err(SimError::Manifest {
                problems: vec![format!("component `{key}` has no life")],
            });
        };
        Ok(Self {
            key,
            part,
            mode: def.mode,
            channels,
            life_distribution,
            rng,
            current,
            upcoming: lives,
            replacement_due: None,
            planned_replacement: None,
        })
    }

    /// Every life known so far, in time order, starting with the current one.
    pub(crate) fn lives(&self) -> impl Iterator<Item = &Life> {
        std::iter::once(&self.current).chain(&self.upcoming)
    }

    /// The time of this slot's next change: its replacement if the part has failed,
    /// else the failure of the part in it or its planned replacement, whichever comes
    /// first.
    fn next_change(&self) -> (UnixMs, Change) {
        match (self.replacement_due, self.planned_replacement) {
            (Some(at), _) => (at, Change::Replacement),
            (None, Some(at)) if at < self.current.fails_at => (at, Change::Replacement),
            (None, _) => (self.current.fails_at, Change::Failure),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Failure,
    Replacement,
}

#[derive(Clone, Debug)]
pub(crate) struct MachineSim {
    pub id: MachineId,
    tenant: TenantId,
    pub model: &'static ModelDef,
    site: &'static SiteDef,
    pub components: Vec<ComponentSim>,
    /// Operating regimes, reading noise and dropouts.
    rng: ChaCha8Rng,
    load_channel: Channel,
    duty_channel: Channel,
    ambient_channel: Channel,
    regime: usize,
    next_regime_switch: UnixMs,
    next_sample_at: UnixMs,
    interval_ms: i64,
    /// Last telemetry `seq` used; samples count up from 1.
    seq: u64,
    /// Last event `seq` used; events count separately from telemetry.
    event_seq: u64,
    /// The machine stands still after a breakdown and takes no samples before this.
    down_until: UnixMs,
    /// From this instant on the machine publishes nothing (its customer unplugged it);
    /// it still wears, and the ground truth still records it.
    quiet_from: Option<UnixMs>,
}

impl MachineSim {
    pub(crate) fn new(
        id: MachineId,
        tenant: TenantId,
        model: &'static ModelDef,
        site: &'static SiteDef,
        components: Vec<ComponentSim>,
        rng: ChaCha8Rng,
    ) -> Result<Self, SimError> {
        let op = |quantity: &str| {
            Channel::parse(format!("{OPERATING_COMPONENT}.{quantity}")).map_err(|e| {
                SimError::Manifest {
                    problems: vec![e.to_string()],
                }
            })
        };
        Ok(Self {
            id,
            tenant,
            model,
            site,
            components,
            rng,
            load_channel: op("load_pct")?,
            duty_channel: op(model.duty.quantity())?,
            ambient_channel: op("ambient_c")?,
            regime: 0,
            next_regime_switch: UnixMs(0),
            next_sample_at: UnixMs(0),
            interval_ms: 1,
            seq: 0,
            event_seq: 0,
            down_until: UnixMs(0),
            quiet_from: None,
        })
    }

    /// Begins the simulation at `t0` (the first sample's time), sampling every
    /// `interval_ms`, and emits the ground truth of the lives in progress then.
    pub(crate) fn start(&mut self, t0: UnixMs, interval_ms: i64, out: &mut Vec<Emission>) {
        self.interval_ms = interval_ms.max(1);
        self.next_sample_at = t0;
        self.regime = self.rng.random_range(0..REGIME_LOADS.len());
        self.next_regime_switch = t0.plus_hours(self.rng.random_range(0.0..REGIME_HOURS.1));
        for i in 0..self.components.len() {
            let c = &mut self.components[i];
            // History older than `t0` is not replayed: start from the life in progress.
            while let Some(next) = c.upcoming.front()
                && next.installed_at <= t0
            {
                c.current = *next;
                c.upcoming.pop_front();
            }
            let c = &self.components[i];
            out.push(Emission::Truth(TruthRecord::Life(
                self.life_record(c, &c.current),
            )));
        }
    }

    /// Emits, in time order, everything that happens up to and including `until`.
    pub(crate) fn advance_to(&mut self, until: UnixMs, out: &mut Vec<Emission>) {
        loop {
            let tick = self.next_sample_at;
            let change = self
                .components
                .iter()
                .enumerate()
                .map(|(i, c)| (c.next_change(), i))
                .min_by_key(|((at, _), i)| (*at, *i));
            match change {
                // A breakdown at the very time of a sample comes first: no sample then.
                Some(((at, kind), i)) if at <= tick => {
                    if at > until {
                        return;
                    }
                    match kind {
                        Change::Failure => self.fail(i, at, out),
                        Change::Replacement => self.replace(i, at, out),
                    }
                }
                _ => {
                    if tick > until {
                        return;
                    }
                    self.sample(tick, out);
                    self.next_sample_at = tick.plus_ms(self.interval_ms);
                }
            }
        }
    }

    fn fail(&mut self, i: usize, at: UnixMs, out: &mut Vec<Emission>) {
        let back_at = at.plus_ms(hours_to_ms(self.model.unplanned_downtime_hours));
        self.down_until = self.down_until.max(back_at);
        let c = &mut self.components[i];
        c.replacement_due = Some(back_at);
        c.planned_replacement = None;
        let key = c.key.clone();
        if !self.is_quiet_at(at) {
            out.push(Emission::Event(self.event(EventKind::Failure, at, &key)));
        }
        out.push(Emission::Truth(TruthRecord::Failure(FailureRecord {
            machine: self.id.clone(),
            component: key,
            at,
        })));
    }

    fn replace(&mut self, i: usize, at: UnixMs, out: &mut Vec<Emission>) {
        let c = &mut self.components[i];
        c.replacement_due = None;
        c.planned_replacement = None;
        c.current = match c.upcoming.pop_front() {
            Some(next) if next.installed_at == at => next,
            // Lives decided in advance only cover the history; from here on each new
            // part's life is drawn as it goes in.
            _ => {
                c.upcoming.clear();
                Life::draw(&mut c.rng, &c.life_distribution, at)
            }
        };
        let c = &self.components[i];
        let record = self.life_record(c, &c.current);
        let key = c.key.clone();
        if !self.is_quiet_at(at) {
            out.push(Emission::Event(self.event(
                EventKind::PartReplaced,
                at,
                &key,
            )));
        }
        out.push(Emission::Truth(TruthRecord::Life(record)));
    }

    fn event(&mut self, kind: EventKind, ts: UnixMs, component: &ComponentKey) -> EventPayload {
        self.event_seq += 1;
        EventPayload {
            ts,
            seq: Some(self.event_seq),
            kind,
            component: Some(component.clone()),
            code: None,
            message: None,
        }
    }

    /// Books a technician's replacement of `key` at `at` (not before `not_before`, the
    /// simulation's present). Refused (false) for an unknown component and for one that
    /// failed and awaits its replacement anyway.
    pub(crate) fn plan_replacement(
        &mut self,
        key: &ComponentKey,
        at: UnixMs,
        not_before: UnixMs,
    ) -> bool {
        match self.components.iter_mut().find(|c| &c.key == key) {
            Some(c) if c.replacement_due.is_none() => {
                c.planned_replacement = Some(at.max(not_before));
                true
            }
            _ => false,
        }
    }

    /// The machine publishes nothing from `at` on.
    pub(crate) fn go_quiet_from(&mut self, at: UnixMs) {
        self.quiet_from = Some(at);
    }

    fn is_quiet_at(&self, t: UnixMs) -> bool {
        self.quiet_from.is_some_and(|q| t >= q)
    }

    fn sample(&mut self, t: UnixMs, out: &mut Vec<Emission>) {
        if t < self.down_until || self.is_quiet_at(t) {
            return;
        }
        let regime = self.regime_at(t);
        let load = (REGIME_LOADS[regime] + LOAD_NOISE_SD * self.normal()).clamp(0.0, 100.0);
        let duty = self.model.duty;
        let duty_value = duty.levels()[regime] + duty.noise_sd() * self.normal();
        let local_hour =
            (t.0 as f64 / UnixMs::HOUR as f64 + self.site.utc_offset_hours).rem_euclid(24.0);
        let ambient = self.site.ambient_c
            + AMBIENT_SWING_C * (std::f64::consts::TAU * (local_hour - 9.0) / 24.0).sin()
            + AMBIENT_NOISE_SD * self.normal();

        let mut readings = Vec::with_capacity(3 + 2 * self.components.len());
        let op = [
            (&self.load_channel, round_to(load, 1)),
            (&self.duty_channel, round_to(duty_value, duty.decimals())),
            (&self.ambient_channel, round_to(ambient, 2)),
        ];
        for (channel, value) in op {
            if !self.rng.random_bool(DROPOUT_PROBABILITY) {
                readings.push((channel.clone(), value));
            }
        }
        for c in &self.components {
            let wear = c.current.wear_at(t, c.mode);
            for (channel, physics) in &c.channels {
                let value = physics.read(&mut self.rng, wear, load, ambient);
                if !self.rng.random_bool(DROPOUT_PROBABILITY) {
                    readings.push((channel.clone(), round_to(value, 3)));
                }
            }
        }
        if readings.is_empty() {
            return;
        }
        self.seq += 1;
        out.push(Emission::Sample(Sample {
            ts: t,
            seq: Some(self.seq),
            readings,
        }));
    }

    fn regime_at(&mut self, t: UnixMs) -> usize {
        while t >= self.next_regime_switch {
            // Always a different regime: a "switch" to the same load is no switch.
            self.regime =
                (self.regime + self.rng.random_range(1..REGIME_LOADS.len())) % REGIME_LOADS.len();
            self.next_regime_switch = self
                .next_regime_switch
                .plus_hours(self.rng.random_range(REGIME_HOURS.0..REGIME_HOURS.1));
        }
        self.regime
    }

    fn normal(&mut self) -> f64 {
        StandardNormal.sample(&mut self.rng)
    }

    pub(crate) fn life_record(&self, c: &ComponentSim, life: &Life) -> LifeRecord {
        LifeRecord {
            tenant: self.tenant.clone(),
            machine: self.id.clone(),
            component: c.key.clone(),
            part: c.part.clone(),
            installed_at: life.installed_at,
            onset_at: life.onset_at,
            fails_at: life.fails_at,
            mode: c.mode,
        }
    }
}

/// Rounds to `decimals` places: sensors do not report 15 digits, and payloads stay small.
fn round_to(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use crate::fleet::demo_fleet;

    const NOW: UnixMs = UnixMs(1_795_352_355_524);
    const INTERVAL: i64 = 300_000;

    fn fleet() -> crate::fleet::Fleet {
        demo_fleet(&SimConfig::default(), NOW).unwrap()
    }

    fn run(sim: &mut MachineSim, from: UnixMs, until: UnixMs) -> Vec<Emission> {
        let mut out = Vec::new();
        sim.start(from, INTERVAL, &mut out);
        sim.advance_to(until, &mut out);
        out
    }

    fn emission_ts(e: &Emission) -> Option<UnixMs> {
        match e {
            Emission::Sample(s) => Some(s.ts),
            Emission::Event(ev) => Some(ev.ts),
            Emission::Truth(_) => None,
        }
    }

    #[test]
    fn samples_come_in_time_order_every_interval_with_seq_counting_up_from_one() {
        let mut sim = fleet().machines.remove(0);
        let out = run(&mut sim, NOW.plus_ms(-UnixMs::DAY), NOW);
        let samples: Vec<&Sample> = out
            .iter()
            .filter_map(|e| match e {
                Emission::Sample(s) => Some(s),
                _ => None,
            })
            .collect();
        assert!(samples.len() > 200);
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(s.seq, Some(i as u64 + 1));
            assert_eq!((s.ts.0 - samples[0].ts.0) % INTERVAL, 0);
        }
        let times: Vec<UnixMs> = out.iter().filter_map(emission_ts).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!(samples.last().unwrap().ts <= NOW);
    }

    #[test]
    fn advancing_in_steps_gives_the_same_history_as_in_one_go() {
        let f = fleet();
        let (mut a, mut b) = (f.machines[3].clone(), f.machines[3].clone());
        let from = NOW.plus_ms(-3 * UnixMs::DAY);
        let whole = run(&mut a, from, NOW);
        let mut steps = Vec::new();
        b.start(from, INTERVAL, &mut steps);
        let mut t = from;
        while t < NOW {
            t = t.plus_ms(1_234_567).min(NOW);
            b.advance_to(t, &mut steps);
        }
        assert_eq!(whole, steps);
    }

    #[test]
    fn a_breakdown_is_reported_then_the_machine_is_quiet_for_its_downtime_then_the_part_is_replaced()
     {
        let f = fleet();
        // The component closest to failure after now, wherever it is.
        let (m, life) = f
            .machines
            .iter()
            .enumerate()
            .flat_map(|(m, sim)| {
                sim.components
                    .iter()
                    .map(move |c| (m, *c.lives().last().unwrap()))
            })
            .min_by_key(|(_, l)| l.fails_at)
            .unwrap();
        let mut sim = f.machines[m].clone();
        let downtime = hours_to_ms(sim.model.unplanned_downtime_hours);
        let out = run(&mut sim, NOW, life.fails_at.plus_ms(downtime + UnixMs::DAY));
        let failure = out
            .iter()
            .position(|e| matches!(e, Emission::Event(ev) if ev.kind == EventKind::Failure))
            .unwrap();
        let Emission::Event(failure_event) = &out[failure] else {
            unreachable!()
        };
        assert_eq!(failure_event.ts, life.fails_at);
        assert!(matches!(
            &out[failure + 1],
            Emission::Truth(TruthRecord::Failure(r)) if r.at == life.fails_at
        ));
        let replaced = out
            .iter()
            .position(|e| matches!(e, Emission::Event(ev) if ev.kind == EventKind::PartReplaced))
            .unwrap();
        let Emission::Event(replaced_event) = &out[replaced] else {
            unreachable!()
        };
        assert_eq!(replaced_event.ts.0, life.fails_at.0 + downtime);
        assert_eq!(replaced_event.component, failure_event.component);
        // Nothing but truth in between: the machine stood still.
        assert!(
            out[failure + 2..replaced]
                .iter()
                .all(|e| matches!(e, Emission::Truth(_)))
        );
        // A fresh life starts with the replacement and the seq just continues.
        let Emission::Truth(TruthRecord::Life(new_life)) = &out[replaced + 1] else {
            panic!("{:?}", out[replaced + 1])
        };
        assert_eq!(new_life.installed_at, replaced_event.ts);
        assert!(new_life.fails_at.0 - new_life.installed_at.0 >= 24 * UnixMs::HOUR);
        let seqs: Vec<u64> = out
            .iter()
            .filter_map(|e| match e {
                Emission::Sample(s) => s.seq,
                _ => None,
            })
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn a_planned_replacement_ends_the_life_early_without_a_failure_and_starts_a_new_one() {
        let f = fleet();
        let mut sim = f.machines[0].clone();
        let key = sim.components[0].key.clone();
        let life = sim.components[0].current;
        let mut out = Vec::new();
        sim.start(NOW, INTERVAL, &mut out);
        // Halfway to the failure, or a day from now if it is sooner.
        let at = UnixMs(NOW.0 + ((life.fails_at.0 - NOW.0) / 2).clamp(1, UnixMs::DAY));
        assert!(!sim.plan_replacement(&"no_such_part".parse().unwrap(), at, NOW));
        assert!(sim.plan_replacement(&key, at, NOW));
        sim.advance_to(at.plus_ms(UnixMs::HOUR), &mut out);
        let events: Vec<&EventPayload> = out
            .iter()
            .filter_map(|e| match e {
                Emission::Event(ev) if ev.component.as_ref() == Some(&key) => Some(ev),
                _ => None,
            })
            .collect();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].kind, EventKind::PartReplaced);
        assert_eq!(events[0].ts, at);
        assert!(
            !out.iter().any(
                |e| matches!(e, Emission::Truth(TruthRecord::Failure(r)) if r.component == key)
            )
        );
        let new_life = out
            .iter()
            .rev()
            .find_map(|e| match e {
                Emission::Truth(TruthRecord::Life(l)) if l.component == key => Some(l),
                _ => None,
            })
            .unwrap();
        assert_eq!(new_life.installed_at, at);
        assert_eq!(sim.components[0].current.installed_at, at);
        // Samples go on around the replacement: a planned stop is not a breakdown.
        assert!(
            out.iter()
                .any(|e| matches!(e, Emission::Sample(s) if s.ts > at))
        );
    }

    #[test]
    fn a_quiet_machine_publishes_nothing_from_then_on_but_its_truth_goes_on() {
        let mut sim = fleet().machines.remove(0);
        let quiet = NOW.plus_ms(-UnixMs::DAY);
        sim.go_quiet_from(quiet);
        let out = run(&mut sim, NOW.plus_ms(-2 * UnixMs::DAY), NOW);
        let samples: Vec<UnixMs> = out
            .iter()
            .filter_map(|e| match e {
                Emission::Sample(s) => Some(s.ts),
                _ => None,
            })
            .collect();
        assert!(samples.len() > 200);
        assert!(samples.iter().all(|t| *t < quiet));
        assert!(out.iter().any(|e| matches!(e, Emission::Truth(_))));
    }

    #[test]
    fn about_half_a_percent_of_readings_drop_out() {
        let mut sim = fleet().machines.remove(0);
        let per_sample = 3 + sim
            .components
            .iter()
            .map(|c| c.channels.len())
            .sum::<usize>();
        let out = run(&mut sim, NOW.plus_ms(-20 * UnixMs::DAY), NOW);
        let (mut samples, mut readings) = (0usize, 0usize);
        for e in &out {
            if let Emission::Sample(s) = e {
                samples += 1;
                readings += s.readings.len();
            }
        }
        let dropped = 1.0 - readings as f64 / (samples * per_sample) as f64;
        assert!((0.002..0.01).contains(&dropped), "{dropped}");
    }

    #[test]
    fn the_load_regime_switches_every_few_hours_between_three_levels() {
        let mut sim = fleet().machines.remove(0);
        let out = run(&mut sim, NOW.plus_ms(-7 * UnixMs::DAY), NOW);
        let loads: Vec<f64> = out
            .iter()
            .filter_map(|e| match e {
                Emission::Sample(s) => s
                    .readings
                    .iter()
                    .find(|(c, _)| c.as_str() == "op.load_pct")
                    .map(|(_, v)| *v),
                _ => None,
            })
            .collect();
        let regime = |v: f64| REGIME_LOADS.iter().position(|l| (v - l).abs() < 10.0);
        let regimes: Vec<usize> = loads.iter().filter_map(|v| regime(*v)).collect();
        assert_eq!(regimes.len(), loads.len());
        let switches = regimes.windows(2).filter(|w| w[0] != w[1]).count();
        // One week at 2–8 h per regime: between 21 and 84 switches.
        assert!((15..=90).contains(&switches), "{switches}");
        for r in 0..3 {
            assert!(regimes.contains(&r));
        }
    }
}
