//! Recommendations and the proposals sent from them: the numbers behind a contract
//! proposal, never to a customer with an open unplanned failure, within the contact
//! cap, once per cooldown, through the signed outbox.

use serde_json::json;
use wearcast_server::analytics::AnalyticsConfig;
use wearcast_server::analytics::config::{RecommendationConfig, TierOffer};

use crate::support::{DAY, TestServer};

fn tiers() -> AnalyticsConfig {
    let tier = |name: &str, parts, labour, fee| TierOffer {
        tier: name.into(),
        parts_coverage: parts,
        labour_coverage: labour,
        risk_tolerance: 0.1,
        annual_fee_cents_per_machine: fee,
    };
    AnalyticsConfig {
        recommendations: RecommendationConfig {
            tiers: vec![
                tier("basic", 0.0, 0.5, 20_000),
                tier("standard", 0.5, 1.0, 50_000),
                tier("premium", 1.0, 1.0, 150_000),
            ],
            ..RecommendationConfig::default()
        },
        ..AnalyticsConfig::default()
    }
}

#[tokio::test]
async fn a_customer_paying_for_repairs_is_proposed_a_contract_once_never_during_a_breakdown() {
    let s = TestServer::with(3, tiers()).await;
    // `loner` has no contract: two bearings replaced at full price.
    s.repair("l-1").await;
    s.repair("l-2").await;

    let account = s.get("/api/v1/accounts/loner").await;
    let recs = account["recommendations"].as_array().unwrap();
    assert_eq!(recs.len(), 1, "{account:#}");
    let r = &recs[0];
    // Each repair: part 50 000 + 3 h × 10 000 labour + 20 000 travel = 100 000.
    // Would have covered, fee for 2 machines:
    //   basic    0.5 × 100 000 (labour+travel)            =  50 000 vs  40 000 → +10 000
    //   standard 0.5 × 100 000 + 100 000                   = 150 000 vs 100 000 → +50 000
    //   premium  200 000                                   vs 300 000            → −100 000
    assert_eq!(r["kind"], "contract");
    assert_eq!(r["tier"], "standard");
    assert_eq!(
        (
            r["paid_repairs"].as_u64(),
            r["paid_last_year_cents"].as_i64()
        ),
        (Some(2), Some(200_000))
    );
    assert_eq!(r["annual_fee_cents"].as_i64(), Some(100_000));
    assert_eq!(r["would_have_covered_cents"].as_i64(), Some(150_000));
    assert_eq!(r["return_ratio"], 1.5);
    // Two offers and one survey (the second survey waited for the cap): cap reached.
    assert_eq!(account["contacts_last_week"].as_u64(), Some(3));
    assert_eq!(r["sendable"], false);
    let (status, body) = s
        .send(
            "POST",
            "/api/v1/accounts/loner/proposals",
            Some(json!({"kind": "contract"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("contact cap reached: 3 contacts"),
        "{body}"
    );
    let (status, body) = s
        .send(
            "POST",
            "/api/v1/accounts/loner/proposals",
            Some(json!({"kind": "upgrade"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");

    // A week on, the cap is free, but a press breaks down: repair first.
    s.clock.advance(8 * DAY);
    s.event("l-1", "failure", "main_bearing", s.now()).await;
    let account = s.get("/api/v1/accounts/loner").await;
    let held = account["recommendations"][0]["held_back"].as_str().unwrap();
    assert!(
        held.starts_with("an unplanned failure is open (l-1 main_bearing"),
        "{held}"
    );
    assert!(
        account["signals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["kind"] == "unplanned_failure"),
        "{account:#}"
    );
    let (status, body) = s
        .send(
            "POST",
            "/api/v1/accounts/loner/proposals",
            Some(json!({"kind": "contract"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("repair first"),
        "{body}"
    );

    // Repaired (the machine reports the new part): the proposal goes out, once.
    s.clock.advance(DAY);
    s.event("l-1", "part_replaced", "main_bearing", s.now())
        .await;
    let (status, sent) = s
        .send(
            "POST",
            "/api/v1/accounts/loner/proposals",
            Some(json!({"kind": "contract"})),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["recommendation"]["tier"], "standard");
    let (_, webhook, valid) = s.wait_for("proposal.sent", 1).await.remove(0);
    assert!(valid);
    assert_eq!(webhook["data"]["customer"], "loner");
    assert_eq!(
        webhook["data"]["recommendation"]["would_have_covered_cents"],
        150_000
    );

    let (status, body) = s
        .send(
            "POST",
            "/api/v1/accounts/loner/proposals",
            Some(json!({"kind": "contract"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not again before"),
        "{body}"
    );
    let account = s.get("/api/v1/accounts/loner").await;
    assert_eq!(
        account["contacts_last_week"].as_u64(),
        Some(1),
        "the proposal counts"
    );
    s.stop().await;
}
