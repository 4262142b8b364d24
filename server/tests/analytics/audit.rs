//! The audit log: every change made through the API, who made it, what it was before
//! and after; reads and ingest are not in it, and no secret ever is.

use serde_json::{Value, json};
use wearcast_server::auth::{TokenRequest, bearer_client};

use crate::support::TestServer;

#[tokio::test]
async fn every_change_is_logged_with_who_before_and_after_and_never_a_secret() {
    let s = TestServer::start(10).await;
    s.feed_wear("f-2").await;
    s.cycle().await;
    let offer = s.offer_of("f-2").await;
    let offer_id = offer["id"].as_str().unwrap();
    let customer = s
        .store
        .issue_token_now(&TokenRequest::for_customer("fading"))
        .await
        .unwrap();
    let resp = bearer_client(&customer.secret)
        .post(format!("{}/api/v1/offers/{offer_id}/accept", s.url))
        .json(&json!({"note": "ok for us"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    let (status, issued) = s
        .send(
            "POST",
            "/api/v1/tokens",
            Some(json!({"role": "customer", "customer": "steady", "expires_in": "1h"})),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let secret = issued["secret"].as_str().unwrap().to_string();
    // A refused change is logged with what the caller was told.
    let (status, _) = s
        .send("POST", &format!("/api/v1/offers/{offer_id}/accept"), None)
        .await;
    assert_eq!(status, 409, "the offer is no longer open");

    let log: Value = s.get("/api/v1/audit").await;
    let entries = log.as_array().unwrap();
    assert_eq!(
        entries.len(),
        3,
        "reads and ingest are not logged, each change once: {log:#}"
    );
    let (refused, token, accept) = (&entries[0], &entries[1], &entries[2]);
    assert_eq!(accept["role"], "customer");
    assert_eq!(accept["customer"], "fading");
    assert_eq!(accept["token"], customer.token.id);
    assert_eq!(accept["method"], "POST");
    assert_eq!(accept["route"], "/api/v1/offers/{id}/accept");
    assert_eq!(accept["path"], format!("/api/v1/offers/{offer_id}/accept"));
    assert_eq!(
        (&accept["object_kind"], &accept["object_id"]),
        (&json!("offer"), &json!(offer_id))
    );
    assert_eq!(accept["status"], 200);
    assert_eq!(accept["request"]["note"], "ok for us");
    assert_eq!(accept["before"]["status"], "proposed", "{accept:#}");
    assert_eq!(accept["after"]["status"], "scheduled", "{accept:#}");
    assert!(accept["at"].as_str().is_some() && accept["platform_at"].as_str().is_some());

    assert_eq!(token["route"], "/api/v1/tokens");
    assert_eq!(token["role"], "admin");
    assert_eq!(token["request"]["customer"], "steady");
    assert_eq!(token["after"]["secret"], "[redacted]", "{token:#}");
    assert_eq!(refused["status"], 409);
    assert_eq!(refused["before"]["status"], "scheduled");
    assert!(refused["after"]["error"].as_str().is_some(), "{refused:#}");
    assert!(
        !log.to_string().contains(&secret[3..]) && !log.to_string().contains(&customer.secret[3..]),
        "a secret is in the audit log"
    );

    // Paging back, and only admins read it.
    let older = s
        .get(&format!("/api/v1/audit?before_id={}&limit=1", token["id"]))
        .await;
    assert_eq!(older.as_array().unwrap().len(), 1);
    assert_eq!(older[0]["id"], accept["id"]);
    let resp = bearer_client(&customer.secret)
        .get(format!("{}/api/v1/audit", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let (status, _) = s.send("GET", "/api/v1/audit?limit=0", None).await;
    assert_eq!(status, 400);
    s.stop().await;
}
