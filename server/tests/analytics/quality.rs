//! The model-quality report: the live model's predictions, sampled once a day, scored
//! against a bearing's life that ended in a failure.

use serde_json::{Value, json};
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

/// A backtest's summary as `wearcast backtest --publish` sends it.
pub fn backtest_summary() -> Value {
    json!({"train": "train_FD001.txt", "test": "test_FD001.txt", "training_runs": 100,
           "test_units": 100, "rmse": 14.85, "mae": 10.9, "cap": 125.0, "level": 0.8,
           "coverage": 0.88, "below_p10": 0.05, "above_p90": 0.07,
           "live_engine_rmse": 21.5, "live_engine_coverage": null})
}

const BACKTESTS: &str = "/api/v1/model-quality/backtests";

#[tokio::test]
async fn published_backtests_are_listed_newest_first_and_impossible_figures_refused() {
    let s = TestServer::start(10).await;
    assert_eq!(s.get(BACKTESTS).await["backtests"], json!([]));
    let (status, first) = s.send("POST", BACKTESTS, Some(backtest_summary())).await;
    assert_eq!(status, 201, "{first}");
    assert!(first["id"].as_str().unwrap().starts_with("bt-"), "{first}");
    assert_eq!(first["rmse"], 14.85);
    assert_eq!(first["recorded_at"], s.now().to_rfc3339());

    s.clock.set(s.now().plus_hours(1.0));
    let mut second = backtest_summary();
    second["test"] = json!("test_FD002.txt");
    second["rmse"] = json!(12.28);
    let (status, body) = s.send("POST", BACKTESTS, Some(second)).await;
    assert_eq!(status, 201, "{body}");
    let list = s.get(BACKTESTS).await["backtests"].clone();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(
        (&list[0]["test"], &list[0]["rmse"]),
        (&json!("test_FD002.txt"), &json!(12.28))
    );
    assert_eq!(list[1], first);

    // Figures no backtest can have are refused, naming the field, and nothing is kept.
    for (field, value, says) in [
        ("coverage", json!(1.5), "`coverage`"),
        ("coverage", json!(0.5), "add up to 1"),
        ("level", json!(1.0), "`level`"),
        ("rmse", json!(-1.0), "`rmse`"),
        ("test_units", json!(0), "`test_units`"),
        ("train", json!(" "), "`train`"),
        ("train", json!("a\u{7}b"), "control character"),
    ] {
        let mut bad = backtest_summary();
        bad[field] = value.clone();
        let (status, body) = s.send("POST", BACKTESTS, Some(bad)).await;
        assert_eq!(status, 422, "{field} = {value}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{field}: {body}"
        );
    }
    let mut typo = backtest_summary();
    typo["rmse_capped"] = json!(1.0);
    let (status, body) = s.send("POST", BACKTESTS, Some(typo)).await;
    assert!((400..500).contains(&status), "{body}");
    assert!(body.to_string().contains("rmse_capped"), "{body}");
    assert_eq!(
        s.get(BACKTESTS).await["backtests"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    s.stop().await;
}
