use super::*;
use wearcast_protocol::UnixMs;

const NOW: UnixMs = UnixMs(1_800_000_000_000);
const PRIOR: WeibullLife = WeibullLife {
    shape: 3.0,
    scale_hours: 1500.0,
};

/// Deterministic pseudo-noise in [-1, 1] (no RNG dependency needed for these tests).
fn noise(i: usize, seed: u64) -> f64 {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x % 20_001) as f64 / 10_000.0 - 1.0
}

/// Hourly HI of a component that fails `rul_h` hours after NOW, with exponential wear
/// after an onset, as (history, true failure time).
fn exponential_history(hours: usize, rul_h: f64, k: f64, noise_sd: f64, seed: u64) -> Vec<HiPoint> {
    let life = hours as f64 + rul_h;
    let onset = 0.4 * life;
    (0..hours)
        .map(|i| {
            let t = i as f64;
            let w = if t < onset {
                0.0
            } else {
                let x = (t - onset) / (life - onset);
                (k * x).exp_m1() / k.exp_m1()
            };
            HiPoint {
                t: NOW.plus_hours(t - hours as f64),
                hi: w + noise_sd * noise(i, seed),
            }
        })
        .collect()
}

fn history(points: &[HiPoint]) -> ComponentHistory<'_> {
    ComponentHistory {
        points,
        installed_at: points.first().map_or(NOW, |p| p.t),
        failed_at: None,
        prior: PRIOR,
    }
}

#[test]
fn a_component_without_data_is_unknown_and_falls_back_to_the_fleet_prior() {
    let e = estimate(&history(&[]), NOW);
    assert_eq!(e.status, HealthStatus::Unknown);
    assert!(matches!(e.distribution, RulDistribution::FleetPrior { .. }));
    assert!(e.rul_p50_h.unwrap() > 0.0);
}

#[test]
fn a_flat_signal_is_healthy_with_prior_life() {
    let pts: Vec<_> = (0..200)
        .map(|i| HiPoint {
            t: NOW.plus_hours(i as f64 - 200.0),
            hi: 0.02 + 0.02 * noise(i, 1),
        })
        .collect();
    let e = estimate(&history(&pts), NOW);
    assert_eq!(e.status, HealthStatus::Healthy);
    let RulDistribution::FleetPrior { age_h, .. } = e.distribution else {
        panic!("expected prior, got {:?}", e.distribution)
    };
    assert!((age_h - 200.0).abs() < 1.0);
}

#[test]
fn an_exponential_wear_curve_yields_a_rul_near_the_truth() {
    // Histories long enough that wear is well under way (HI 0.3–0.6 now): extrapolating
    // from the first hours after onset is the fleet prior's job, not the trend's.
    for (hours, rul_true, seed) in [(900, 120.0, 1), (900, 240.0, 2), (2000, 400.0, 3)] {
        let pts = exponential_history(hours, rul_true, 3.5, 0.02, seed);
        let e = estimate(&history(&pts), NOW);
        assert!(matches!(e.distribution, RulDistribution::Trend(_)), "{e:?}");
        let p50 = e.rul_p50_h.unwrap();
        assert!(
            (p50 - rul_true).abs() < 0.35 * rul_true,
            "true {rul_true} h, P50 {p50} h"
        );
        let (p10, p90) = (e.rul_p10_h.unwrap(), e.rul_p90_h.unwrap_or(f64::INFINITY));
        assert!(p10 < p50 && p50 < p90, "{p10} {p50} {p90}");
    }
}

#[test]
fn the_80_percent_interval_covers_the_truth_most_of_the_time() {
    let mut covered = 0;
    let trials = 60;
    for seed in 0..trials {
        let rul_true = 80.0 + 10.0 * seed as f64;
        let pts = exponential_history(700, rul_true, 3.0, 0.03, seed as u64 + 100);
        let e = estimate(&history(&pts), NOW);
        let (p10, p90) = (
            e.rul_p10_h.unwrap_or(0.0),
            e.rul_p90_h.unwrap_or(f64::INFINITY),
        );
        if p10 <= rul_true && rul_true <= p90 {
            covered += 1;
        }
    }
    let coverage = covered as f64 / trials as f64;
    assert!(coverage >= 0.6, "coverage {coverage}");
}

#[test]
fn probability_of_failure_grows_with_time_and_matches_the_quantiles() {
    let pts = exponential_history(600, 200.0, 3.5, 0.02, 9);
    let e = estimate(&history(&pts), NOW);
    let p = |h: f64| e.p_fail_before(NOW.plus_hours(h));
    assert!(p(10.0) <= p(100.0) && p(100.0) <= p(1000.0));
    assert!(
        p(10.0) < 0.01 && p(1000.0) > 0.9,
        "{} {}",
        p(10.0),
        p(1000.0)
    );
    let p50 = e.rul_p50_h.unwrap();
    assert!((p(p50) - 0.5).abs() < 1e-6, "{}", p(p50));
    let p10 = e.rul_p10_h.unwrap();
    assert!((p(p10) - 0.1).abs() < 1e-6, "{}", p(p10));
}

#[test]
fn a_failed_component_has_no_life_left() {
    let pts = exponential_history(100, 5.0, 3.0, 0.0, 1);
    let h = ComponentHistory {
        failed_at: Some(NOW),
        ..history(&pts)
    };
    let e = estimate(&h, NOW);
    assert_eq!(e.status, HealthStatus::Failed);
    assert_eq!(e.rul_p50_h, Some(0.0));
    assert_eq!(e.p_fail_before(NOW.plus_hours(1.0)), 1.0);
}

#[test]
fn a_component_near_the_end_is_critical() {
    let pts = exponential_history(800, 40.0, 3.5, 0.01, 4);
    let e = estimate(&history(&pts), NOW);
    assert_eq!(e.status, HealthStatus::Critical, "{e:?}");
}

#[test]
fn a_linear_wear_curve_is_fitted_as_linear() {
    // Filter clogging: HI rises linearly from 0.2 to 0.7 over 300 h; crossing at +180 h.
    let pts: Vec<_> = (0..300)
        .map(|i| HiPoint {
            t: NOW.plus_hours(i as f64 - 300.0),
            hi: 0.2 + 0.5 * i as f64 / 300.0 + 0.01 * noise(i, 5),
        })
        .collect();
    let e = estimate(&history(&pts), NOW);
    let RulDistribution::Trend(fit) = &e.distribution else {
        panic!("{e:?}")
    };
    assert_eq!(fit.shape, TrendShape::Linear);
    let p50 = e.rul_p50_h.unwrap();
    assert!((p50 - 180.0).abs() < 20.0, "{p50}");
}

#[test]
fn channel_health_index_handles_falling_channels() {
    let spec = WearChannelSpec {
        quantity: "flow_lpm".into(),
        unit: "l/min".into(),
        healthy: 40.0,
        failure: 24.0,
    };
    assert_eq!(channel_health_index(40.0, &spec), 0.0);
    assert_eq!(channel_health_index(24.0, &spec), 1.0);
    assert!((channel_health_index(32.0, &spec) - 0.5).abs() < 1e-12);
}

#[test]
fn an_estimate_round_trips_through_json_with_rfc3339_instants() {
    let pts = exponential_history(600, 200.0, 3.5, 0.02, 9);
    let e = estimate(&history(&pts), NOW);
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["computed_at"], "2027-01-15T08:00:00.000Z");
    assert!(json["evidence"]["onset_at"].is_string());
    let back: RulEstimate = serde_json::from_value(json).unwrap();
    assert_eq!(back, e);
}
