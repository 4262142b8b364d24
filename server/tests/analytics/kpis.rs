//! `GET /api/v1/kpis` over the churn scenario, per tenant and per customer, and the
//! refusals of every analytics entry point.

use serde_json::json;

use crate::churn::{DECLINE_REASON, churning_scenario};
use crate::support::{DAY, START, TestServer, ts};

#[tokio::test]
async fn kpis_over_a_period_count_offers_revenue_failures_and_feedback_per_customer() {
    let (s, _, done) = churning_scenario().await;
    // [START − 1 d, START + 16 d): 17 days; `to` in Unix ms, `from` in RFC 3339.
    let from = START.plus_ms(-DAY);
    let to = START.plus_ms(16 * DAY);
    let query = format!("/api/v1/kpis?from={}&to={}", from.to_rfc3339(), to.0);
    let body = s.get(&query).await;
    assert_eq!(body["period"]["from"], from.to_rfc3339());
    assert_eq!(body["period"]["to"], to.to_rfc3339());
    assert_eq!(body["currency"], "EUR");
    let k = &body["kpis"];

    let offers = &k["offers"];
    assert_eq!(
        (
            offers["proposed"].as_u64(),
            offers["accepted"].as_u64(),
            offers["declined"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(offers["acceptance_rate"], 0.5);
    assert_eq!(
        offers["decline_reasons"],
        json!([{"reason": DECLINE_REASON, "count": 1}])
    );

    // The completed offer was priced under the standard contract (50 % parts, 100 %
    // labour and travel): the customer paid half the part and nothing else.
    let offer = s
        .get(&format!(
            "/api/v1/offers/{}",
            done["offer"].as_str().unwrap()
        ))
        .await;
    let price = &offer["price"];
    let parts = price["parts_cents"].as_i64().unwrap();
    let paid = price["total_cents"].as_i64().unwrap();
    let parts_paid = parts - (parts as f64 * 0.5).round() as i64;
    let revenue = &k["revenue"];
    assert_eq!(revenue["parts_cents"].as_i64(), Some(parts_paid));
    assert_eq!(revenue["labour_cents"].as_i64(), Some(paid - parts_paid));
    assert_eq!(revenue["labour_cents"].as_i64(), Some(0));
    // Two contracts of 1 000 000 a year, 17 days each: 2 × 1 000 000 × 17 / 365 =
    // 93 150.68 → 93 151.
    assert_eq!(revenue["contracts_cents"].as_i64(), Some(93_151));
    assert_eq!(revenue["total_cents"].as_i64(), Some(parts_paid + 93_151));

    // One replacement before failure, found worn: in time. Lead time: the offer was made
    // at START and the work completed at the booked end.
    let failures = &k["failures"];
    assert_eq!(
        (
            failures["predicted_in_time"].as_u64(),
            failures["unplanned"].as_u64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(failures["in_time_rate"], 1.0);
    let completed = ts(&done["completed_at"]);
    let lead = failures["median_lead_time_h"].as_f64().unwrap();
    assert!((lead - START.hours_until(completed)).abs() < 1e-6, "{lead}");
    // P(failure before the next window) × 24 h of unplanned downtime × 40 000 an hour.
    let p = offer["p_fail_before_next_window"].as_f64().unwrap();
    assert!((failures["downtime_avoided_h"].as_f64().unwrap() - 24.0 * p).abs() < 1e-9);
    assert_eq!(
        failures["downtime_avoided_cents"].as_i64(),
        Some((24.0 * p * 40_000.0).round() as i64)
    );

    // Both contracts run throughout: retention 2 / 2.
    let retention = &k["retention"];
    assert_eq!(
        (
            retention["customers_at_start"].as_u64(),
            retention["customers_at_end"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(retention["retention_rate"], 1.0);
    assert_eq!(retention["churn_rate"], 0.0);

    // One answer, 3/10: NPS = 100 × (0 − 1) / 1 = −100; CSAT 2 is not satisfied.
    let feedback = &k["feedback"];
    assert_eq!(
        (
            feedback["surveys_sent"].as_u64(),
            feedback["answers"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(feedback["nps"], -100.0);
    assert_eq!(feedback["csat_pct"], 0.0);
    assert_eq!(feedback["csat_mean"], 2.0);
    assert_eq!(k["ltv"]["customers"].as_u64(), Some(3));

    // Per customer.
    let by = body["by_customer"].as_array().unwrap();
    let of = |c: &str| by.iter().find(|x| x["customer"] == c).unwrap()["kpis"].clone();
    assert_eq!(of("fading")["offers"]["proposed"].as_u64(), Some(2));
    assert_eq!(of("steady")["offers"]["proposed"].as_u64(), Some(0));

    // Restricted to one customer: only its own figures. 1 000 000 × 17 / 365 = 46 575.34.
    let steady = s.get(&format!("{query}&customer=steady")).await;
    assert_eq!(steady["customer"], "steady");
    assert_eq!(steady["kpis"]["offers"]["proposed"].as_u64(), Some(0));
    assert_eq!(
        steady["kpis"]["revenue"]["contracts_cents"].as_i64(),
        Some(46_575)
    );
    assert_eq!(steady["kpis"]["feedback"]["nps"], serde_json::Value::Null);
    assert_eq!(steady["by_customer"].as_array().unwrap().len(), 1);
    let accounts = s.get("/api/v1/accounts?customer=steady").await;
    assert_eq!(accounts.as_array().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn bad_parameters_get_a_clear_4xx_that_names_them() {
    let s = TestServer::start(3).await;
    for (path, code, needle) in [
        ("/api/v1/kpis?from=yesterday", 400, "query parameter `from`"),
        ("/api/v1/kpis?to=1e9", 400, "query parameter `to`"),
        (
            "/api/v1/kpis?from=2026-12-01T00:00:00Z&to=2026-11-01T00:00:00Z",
            400,
            "`to` (2026-11-01T00:00:00.000Z) must be after `from`",
        ),
        ("/api/v1/kpis?period=month", 400, "period"),
        ("/api/v1/kpis?customer=nobody", 404, "no customer `nobody`"),
        ("/api/v1/kpis?customer=", 400, "`customer` is empty"),
        (
            "/api/v1/accounts?flagged=yes",
            400,
            "`flagged` must be `true` or `false`, got `yes`",
        ),
        (
            "/api/v1/accounts?stage=old",
            400,
            "`stage` must be one of onboarding, established, mature",
        ),
        ("/api/v1/accounts.csv?flagged=maybe", 400, "`flagged`"),
        ("/api/v1/accounts.csv?format=xlsx", 400, "format"),
        ("/api/v1/accounts/nobody", 404, "no customer `nobody`"),
        (
            "/api/v1/surveys?status=done",
            400,
            "`status` must be one of open, answered, expired",
        ),
    ] {
        let (status, body) = s.send("GET", path, None).await;
        assert_eq!(status, code, "{path}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{path}: {message}");
    }
    for (path, body, code, needle) in [
        (
            "/api/v1/accounts/loner/proposals",
            json!({"kind": "gift"}),
            400,
            "unknown variant `gift`",
        ),
        (
            "/api/v1/accounts/loner/proposals",
            json!({"kind": "contract"}),
            422,
            "no contract proposal is recommended",
        ),
        (
            "/api/v1/accounts/nobody/proposals",
            json!({"kind": "contract"}),
            404,
            "no customer",
        ),
        (
            "/api/v1/exports/accounts?stage=x",
            json!({}),
            400,
            "`stage`",
        ),
    ] {
        let (status, answer) = s.send("POST", path, Some(body)).await;
        assert_eq!(status, code, "{path}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{path}: {message}");
    }
    // Nothing was sent.
    assert!(
        s.get("/api/v1/surveys")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.get("/api/v1/accounts/loner").await["contacts_last_week"].as_u64(),
        Some(0)
    );
    s.stop().await;
}
