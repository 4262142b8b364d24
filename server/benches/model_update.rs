//! The live wear model's cost: one bucket folded into a component's state (the per-
//! window work of the analysis cycle), an estimate from a state, the state's trip
//! through its stored JSON, and a refresh of 100,000 components' remaining life.
//!
//! `cargo bench -p wearcast-server --bench model_update`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use wearcast_protocol::UnixMs;
use wearcast_protocol::registry::WeibullLife;
use wearcast_server::model::online::{BucketReading, ChannelScale};
use wearcast_server::model::{ComponentState, FleetKnowledge};

const T0: UnixMs = UnixMs(1_800_000_000_000);

fn scales() -> Vec<ChannelScale> {
    vec![
        ChannelScale {
            quantity: "vibration_rms".into(),
            healthy: 1.2,
            failure: 7.1,
            weight: 1.0,
        },
        ChannelScale {
            quantity: "temperature_c".into(),
            healthy: 45.0,
            failure: 85.0,
            weight: 1.0,
        },
    ]
}

/// Hour `i` of a bearing that starts wearing at hour 400 and fails at 1000, under
/// three load regimes and a daily ambient swing.
fn reading(i: usize) -> BucketReading {
    let x = ((i as f64 - 400.0) / 600.0).clamp(0.0, 1.0);
    let wear = (3.0 * x).exp_m1() / 3f64.exp_m1();
    let load = [35.0, 65.0, 92.0][(i / 5 + i / 7) % 3];
    let ambient = 20.0 + 3.0 * (i as f64 * std::f64::consts::TAU / 24.0).sin();
    let wiggle = ((i as f64) * 1.7).sin() * 0.02;
    BucketReading {
        t: T0.plus_hours(i as f64),
        wear: vec![
            (1.2 + 5.9 * wear) * (1.0 + 0.002 * (load - 60.0)) + wiggle,
            45.0 + 40.0 * wear + 0.06 * (load - 60.0) + 0.25 * (ambient - 20.0) + wiggle,
        ],
        op: vec![
            ("op.ambient_c".into(), ambient),
            ("op.load_pct".into(), load),
            ("op.speed_rpm".into(), 6000.0 + 100.0 * (load - 35.0)),
        ],
    }
}

/// A state that has seen `hours` buckets.
fn state_after(hours: usize) -> ComponentState {
    let scales = scales();
    let mut s = ComponentState::new(T0);
    for i in 0..hours {
        s.update(&reading(i), &scales, UnixMs::HOUR);
    }
    s
}

fn fleet() -> FleetKnowledge {
    FleetKnowledge::from_prior(WeibullLife {
        shape: 3.0,
        scale_hours: 4000.0,
    })
}

fn per_window(c: &mut Criterion) {
    let scales = scales();
    let next = reading(850);
    let degrading = state_after(850);
    c.bench_function(
        "update: one bucket into a degrading component's state",
        |b| {
            b.iter_batched_ref(
                || degrading.clone(),
                |s| s.update(black_box(&next), &scales, UnixMs::HOUR),
                BatchSize::SmallInput,
            )
        },
    );
    let healthy = state_after(300);
    let next = reading(300);
    c.bench_function("update: one bucket into a healthy component's state", |b| {
        b.iter_batched_ref(
            || healthy.clone(),
            |s| s.update(black_box(&next), &scales, UnixMs::HOUR),
            BatchSize::SmallInput,
        )
    });
    let fleet = fleet();
    let now = T0.plus_hours(851.0);
    c.bench_function("estimate: a degrading component", |b| {
        b.iter(|| black_box(degrading.estimate(black_box(now), &fleet, None)))
    });
    c.bench_function(
        "state: JSON encode and decode (stored between cycles)",
        |b| {
            b.iter(|| {
                let json = serde_json::to_string(black_box(&degrading)).unwrap_or_default();
                black_box(serde_json::from_str::<ComponentState>(&json).ok())
            })
        },
    );
}

fn fleet_refresh(c: &mut Criterion) {
    let scales = scales();
    // 100,000 components at various stages of wear (a few hundred distinct states,
    // cloned: the work per component does not depend on which).
    let templates: Vec<ComponentState> = (0..200).map(|k| state_after(300 + 3 * k)).collect();
    let states: Vec<ComponentState> = (0..100_000)
        .map(|i| templates[i % templates.len()].clone())
        .collect();
    let fleet = fleet();
    let mut group = c.benchmark_group("refresh 100,000 components");
    group.sample_size(10);
    group.bench_function("fold one new bucket into each and estimate", |b| {
        b.iter_batched(
            || states.clone(),
            |mut states| {
                let mut degrading = 0usize;
                for s in &mut states {
                    let next = s
                        .last_bucket
                        .map_or(0, |t| (T0.hours_until(t) as usize) + 1);
                    s.update(&reading(next), &scales, UnixMs::HOUR);
                    let e = s.estimate(T0.plus_hours(next as f64 + 1.0), &fleet, None);
                    degrading += usize::from(e.evidence.onset_at.is_some());
                }
                black_box(degrading)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, per_window, fleet_refresh);
criterion_main!(benches);
