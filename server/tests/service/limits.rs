//! The per-tenant request budget: over it a caller gets 429 with `Retry-After`, another
//! tenant's caller does not notice, and the budget comes back with time.

use std::time::Duration;

use wearcast_server::api::limits::RateLimitConfig;
use wearcast_server::auth::{Role, TokenRequest, bearer_client};
use wearcast_server::config::NotificationsConfig;

use crate::support::TestServer;

#[tokio::test]
async fn a_tenant_over_its_request_budget_gets_429_and_other_tenants_do_not() {
    let s = TestServer::start_with(NotificationsConfig::default(), |c| {
        c.rate_limit = RateLimitConfig {
            requests_per_second: 2,
            burst: 5,
        };
    })
    .await;
    let service = s
        .store
        .issue_token_now(&TokenRequest::new(Role::Service))
        .await
        .unwrap();
    let acme = bearer_client(&service.secret);
    let url = format!("{}/api/v1/machines", s.url);
    let mut answered = Vec::new();
    for _ in 0..8 {
        let resp = acme.get(&url).send().await.unwrap();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        answered.push((resp.status().as_u16(), retry, resp.text().await.unwrap()));
    }
    let ok = answered.iter().filter(|(s, ..)| *s == 200).count();
    assert!(
        (5..=6).contains(&ok),
        "the burst is 5 (plus what refilled): {answered:?}"
    );
    let (status, retry, body) = answered.last().unwrap();
    assert_eq!(*status, 429, "{answered:?}");
    assert!(
        retry
            .as_deref()
            .is_some_and(|r| r.parse::<u64>().unwrap() >= 1),
        "{retry:?}"
    );
    assert!(body.contains("server.rate_limit"), "{body}");

    // The deployment admin (another budget) is not slowed down by acme's script.
    let (status, _) = s.send("GET", "/api/v1/machines", None).await;
    assert_eq!(status, 200);
    // Half a second refills one request.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(acme.get(&url).send().await.unwrap().status().as_u16(), 200);
    s.stop().await;
}
