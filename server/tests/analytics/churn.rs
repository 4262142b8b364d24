//! The quietly churning customer: its machines go quiet, it declines an offer and
//! answers the survey as a detractor — the accounts view flags it with exactly those
//! reasons, while the customer that keeps reporting is not flagged.

use serde_json::{Value, json};
use wearcast_protocol::UnixMs;

use crate::support::{DAY, START, TestServer};

pub const DECLINE_REASON: &str = "Too expensive, we will run it until it breaks";
pub const SURVEY_REASON: &str = "Second breakdown this quarter and nobody called back";

/// Both customers report 50 days of load; `fading` gets two offers at START, accepts
/// one, then declines the other (with a reason), has the first done and scores the
/// visit 3; then 16 days pass in
/// which only `steady` reports. Returns the server, the declined offer and the
/// completed work order.
pub async fn churning_scenario() -> (TestServer, Value, Value) {
    let s = TestServer::start(3).await;
    for m in ["s-1", "f-1", "f-2"] {
        s.feed_load(m, START.plus_ms(-50 * DAY), START).await;
    }
    s.feed_wear("f-1").await;
    s.feed_wear("f-2").await;
    s.cycle().await;
    // Accepted first: the decline is the customer's latest decision.
    let offer = s.offer_of("f-2").await;
    let wo = s.accept(&offer).await;
    s.clock.advance(UnixMs::HOUR);
    let declined = s.offer_of("f-1").await;
    s.decline(&declined, DECLINE_REASON).await;
    s.clock.set(crate::support::ts(&wo["booked_end"]));
    let done = s.complete(&wo).await;
    let token = s.survey_token(&done).await;
    let (status, body) = s
        .send(
            "POST",
            &format!("/api/v1/surveys/{token}"),
            Some(json!({"score": 3, "reason": SURVEY_REASON, "csat": 2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // 16 days later; only the steady customer kept reporting.
    let later = START.plus_ms(16 * DAY);
    s.clock.set(later);
    s.feed_load("s-1", START, later).await;
    (s, declined, done)
}

fn kinds(account: &Value) -> Vec<&str> {
    account["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect()
}

fn reason<'a>(account: &'a Value, kind: &str) -> &'a str {
    account["signals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} signal: {account:#}"))["reason"]
        .as_str()
        .unwrap()
}

#[tokio::test]
async fn the_accounts_view_flags_the_quietly_churning_customer_with_its_reasons_and_not_the_healthy_one()
 {
    let (s, declined, done) = churning_scenario().await;
    let accounts = s.get("/api/v1/accounts").await;
    let accounts = accounts.as_array().unwrap();
    // Worst first.
    assert_eq!(accounts[0]["customer"], "fading", "{accounts:#?}");
    let fading = &accounts[0];
    let steady = accounts.iter().find(|a| a["customer"] == "steady").unwrap();

    // Strongest first: quiet 35, detractor 25, usage 20, declined 15 → 100 − 95 = 5.
    assert_eq!(
        kinds(fading),
        ["quiet", "nps_detractor", "usage_down", "offers_declined"],
        "{fading:#}"
    );
    assert_eq!(fading["health_score"], 5.0);
    assert_eq!(fading["flagged"], true);
    let quiet = reason(fading, "quiet");
    assert!(
        quiet.starts_with("no telemetry from any of its 3 machines for 16 days"),
        "{quiet}"
    );
    assert!(
        reason(fading, "offers_declined").contains(DECLINE_REASON),
        "{fading:#}"
    );
    let detractor = reason(fading, "nps_detractor");
    assert!(
        detractor.starts_with("scored 3/10") && detractor.contains(SURVEY_REASON),
        "{detractor}"
    );
    assert!(
        detractor.contains(done["id"].as_str().unwrap()),
        "names the visit: {detractor}"
    );
    // Each signal says since when: the decline when it was made, the detractor when it
    // answered, quiet since the last telemetry (just before START).
    let signal = |kind: &str| {
        fading["signals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["kind"] == kind)
            .unwrap()
            .clone()
    };
    assert_eq!(
        signal("offers_declined")["since"],
        s.get(&format!(
            "/api/v1/offers/{}",
            declined["id"].as_str().unwrap()
        ))
        .await["history"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["at"]
    );
    assert!(crate::support::ts(&signal("quiet")["since"]) < START);
    // Machines commissioned 700 days ago: past onboarding, not yet 730 days.
    assert_eq!(fading["lifecycle_stage"], "established");
    assert_eq!(fading["contract"]["id"], "k-fading");
    assert_eq!(fading["renewal_date"], fading["contract"]["renewal"]);
    assert!(
        fading["ltv"]["ltv_cents"].as_i64().unwrap() > 0,
        "{fading:#}"
    );

    assert_eq!(kinds(steady), Vec::<&str>::new(), "{steady:#}");
    assert_eq!(steady["health_score"], 100.0);
    assert_eq!(steady["flagged"], false);

    // The flagged filter and one account by id agree.
    let flagged = s.get("/api/v1/accounts?flagged=true").await;
    let flagged: Vec<&str> = flagged
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["customer"].as_str().unwrap())
        .collect();
    assert_eq!(flagged, ["fading"]);
    assert_eq!(s.get("/api/v1/accounts/fading").await, *fading);
    s.stop().await;
}

#[tokio::test]
async fn accounts_export_as_csv_and_as_a_signed_webhook_snapshot_for_the_crm() {
    let (s, _, _) = churning_scenario().await;
    let (status, content_type, csv) = s.get_text("/api/v1/accounts.csv").await;
    assert_eq!(status, 200, "{csv}");
    assert_eq!(content_type, "text/csv; charset=utf-8");
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    for column in [
        "customer",
        "health_score",
        "flagged",
        "signals",
        "signal_reasons",
        "ltv_cents",
        "renewal_date",
    ] {
        assert!(header.iter().any(|h| h == column), "{column} in {header:?}");
    }
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let fading = rows
        .iter()
        .find(|r| &r[col("customer")] == "fading")
        .unwrap();
    assert_eq!(&fading[col("flagged")], "true");
    assert!(fading[col("signals")].contains("quiet"), "{csv}");
    assert!(
        fading[col("signal_reasons")].contains(DECLINE_REASON),
        "{csv}"
    );
    assert!(!fading[col("renewal_date")].is_empty());
    let (_, _, only_flagged) = s.get_text("/api/v1/accounts.csv?flagged=true").await;
    assert_eq!(only_flagged.lines().count(), 2, "{only_flagged}");

    // The same through the signed webhook.
    let (status, body) = s.send("POST", "/api/v1/exports/accounts", None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (body["accounts"].as_u64(), body["deliveries"].as_u64()),
        (Some(3), Some(1))
    );
    let (event, payload, valid) = s.wait_for("accounts.snapshot", 1).await.remove(0);
    assert_eq!(event, "accounts.snapshot");
    assert!(valid, "signed");
    let accounts = payload["data"]["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 3);
    assert_eq!(accounts[0]["customer"], "fading");
    assert_eq!(accounts[0]["flagged"], true);
    s.stop().await;
}
