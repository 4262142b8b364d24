//! The model-quality report: the live model's predictions, sampled once a day, scored
//! against a bearing's life that ended in a failure.

use serde_json::Value;
use wearcast_protocol::UnixMs;

use crate::support::TestServer;

/// The main bearing's current (P10, P50, P90) on `machine`.
async fn quantiles(s: &TestServer, machine: &str) -> [f64; 3] {
    let detail = s.get(&format!("/api/v1/machines/{machine}")).await;
    let e = detail["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "main_bearing")
        .unwrap()["estimate"]
        .clone();
    ["rul_p10_h", "rul_p50_h", "rul_p90_h"].map(|q| e[q].as_f64().unwrap_or(f64::INFINITY))
}

/// Wear readings of the bearing over `[from, to)` at a failing level.
async fn more_wear(s: &TestServer, machine: &str, from: UnixMs, to: UnixMs) {
    s.feed(machine, "main_bearing.vibration_rms", (from, to), |_| 8.5)
        .await;
}

#[tokio::test]
async fn predictions_are_sampled_daily_and_scored_when_the_part_fails() {
    let s = TestServer::start(10).await;
    let m = "f-2";
    s.feed_wear(m).await;
    s.cycle().await;
    let t0 = s.now();
    let mut samples = vec![(t0, quantiles(&s, m).await)];

    // Two hours later: the same day, no second sample.
    s.clock.set(t0.plus_hours(2.0));
    more_wear(&s, m, t0, t0.plus_hours(2.0)).await;
    s.cycle().await;
    // A day after the first: the second sample.
    let t1 = t0.plus_hours(25.0);
    s.clock.set(t1);
    more_wear(&s, m, t0.plus_hours(2.0), t1).await;
    s.cycle().await;
    samples.push((t1, quantiles(&s, m).await));

    // The bearing fails 40 h after the first sample and is replaced 3 h later; the
    // model sees the life end once telemetry of the new part arrives.
    let failed_at = t0.plus_hours(40.0);
    let replaced_at = failed_at.plus_hours(3.0);
    s.clock.set(failed_at);
    s.event(m, "failure", "main_bearing", failed_at).await;
    s.clock.set(replaced_at.plus_hours(4.0));
    s.event(m, "part_replaced", "main_bearing", replaced_at)
        .await;
    s.feed(
        m,
        "main_bearing.vibration_rms",
        (replaced_at, replaced_at.plus_hours(4.0)),
        |_| 1.0,
    )
    .await;
    s.cycle().await;

    let q: Value = s.get("/api/v1/model-quality").await;
    assert_eq!(q["warnings"]["failures"], 1, "{q:#}");
    assert_eq!(q["warnings"]["replacements"], 0, "{q:#}");
    let overall = &q["overall"];
    assert_eq!(overall["scored"], 2, "one sample per day: {q:#}");
    // What the test saw the model predict, scored by hand.
    let (mut inside, mut before, mut after) = (0, 0, 0);
    let mut errors = Vec::new();
    for (at, [p10, p50, p90]) in &samples {
        let truth = at.hours_until(failed_at);
        if truth < *p10 {
            before += 1;
        } else if truth > *p90 {
            after += 1;
        } else {
            inside += 1;
        }
        errors.push((p50 - truth).abs());
    }
    let share = |k: i32| f64::from(k) / 2.0;
    assert_eq!(
        overall["inside"].as_f64(),
        Some(share(inside)),
        "{samples:?} {q:#}"
    );
    assert_eq!(overall["before_p10"].as_f64(), Some(share(before)), "{q:#}");
    assert_eq!(overall["after_p90"].as_f64(), Some(share(after)), "{q:#}");
    let median = (errors[0] + errors[1]) / 2.0;
    let got = overall["p50_abs_error_h"].as_f64().unwrap();
    assert!(
        (got - median).abs() < 1e-6,
        "median |P50 error| {got} vs {median}"
    );
    let bearing = q["by_part"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["part"] == "brg")
        .unwrap_or_else(|| panic!("{q:#}"));
    assert_eq!(bearing["warnings"]["failures"], 1);

    // Another customer's view has none of it; a period before the failure neither.
    let other = s.get("/api/v1/model-quality?customer=steady").await;
    assert_eq!(other["overall"]["scored"], 0, "{other:#}");
    let before_failure = s
        .get(&format!(
            "/api/v1/model-quality?to={}",
            failed_at.plus_ms(-1).to_rfc3339()
        ))
        .await;
    assert_eq!(before_failure["warnings"]["failures"], 0);
    let (status, body) = s
        .send("GET", "/api/v1/model-quality?from=2026-13-01", None)
        .await;
    assert_eq!(status, 400, "{body}");
    s.stop().await;
}
