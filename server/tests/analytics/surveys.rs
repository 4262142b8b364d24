//! The NPS survey after a completed work order: sent through the outbox, answered once
//! through its link (JSON or the page's form), refused clearly otherwise, and counted
//! towards the customer's contact cap.

use serde_json::json;

use crate::support::{DAY, TestServer, ts};

/// Two completed work orders of `fading` (f-1, f-2), with their surveys' tokens.
async fn two_surveys(s: &TestServer) -> (String, String) {
    s.feed_wear("f-1").await;
    s.feed_wear("f-2").await;
    s.cycle().await;
    let wo1 = s.accept(&s.offer_of("f-1").await).await;
    let wo2 = s.accept(&s.offer_of("f-2").await).await;
    let end = ts(&wo1["booked_end"]).max(ts(&wo2["booked_end"]));
    s.clock.set(end);
    let wo1 = s.complete(&wo1).await;
    let wo2 = s.complete(&wo2).await;
    (s.survey_token(&wo1).await, s.survey_token(&wo2).await)
}

#[tokio::test]
async fn a_survey_link_records_the_score_and_the_reason_once_and_refuses_bad_answers() {
    let s = TestServer::start(10).await;
    let (token, other) = two_surveys(&s).await;
    let survey = format!("/api/v1/surveys/{token}");

    // The e-mailed link opens a plain form.
    let (status, content_type, page) = s.get_text(&format!("/survey/{token}")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(
        page.contains("How likely are you to recommend us"),
        "{page}"
    );
    assert!(
        page.contains("f-1") && page.contains("Site fading-1"),
        "{page}"
    );

    // Wrong answers are refused with what and where, and record nothing.
    let (status, answer) = s.send("POST", &survey, Some(json!({"score": 11}))).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (422, Some("`score` must be an integer from 0 to 10, got 11"))
    );
    let (status, answer) = s
        .send("POST", &survey, Some(json!({"score": 5, "csat": 9})))
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (422, Some("`csat` must be an integer from 1 to 5, got 9"))
    );
    let (status, answer) = s
        .send("POST", &survey, Some(json!({"score": 5, "comment": "x"})))
        .await;
    assert_eq!(status, 400, "unknown field: {answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("comment"),
        "{answer}"
    );
    let open = s.get("/api/v1/surveys?customer=fading&status=open").await;
    assert_eq!(
        open.as_array().unwrap().len(),
        2,
        "nothing was recorded: {open:#}"
    );

    // The answer.
    let (status, answer) = s
        .send(
            "POST",
            &survey,
            Some(json!({"score": 3, "reason": "Parts arrived late", "csat": 2})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "answered");
    assert_eq!(
        (answer["score"].as_u64(), answer["csat"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(answer["reason"], "Parts arrived late");
    assert_eq!(answer["answered_at"], s.now().to_rfc3339());

    // A second answer through the same link is refused, and changes nothing.
    let (status, again) = s.send("POST", &survey, Some(json!({"score": 10}))).await;
    assert_eq!(status, 409, "{again}");
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .contains("already answered"),
        "{again}"
    );
    let (status, _, page) = s.get_text(&format!("/survey/{token}")).await;
    assert_eq!(status, 409);
    assert!(page.contains("Already answered"), "{page}");

    // Links that are not ours.
    let unknown = "0".repeat(64);
    let (status, body) = s
        .send(
            "POST",
            &format!("/api/v1/surveys/{unknown}"),
            Some(json!({"score": 5})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = s
        .send(
            "POST",
            "/api/v1/surveys/not-a-token",
            Some(json!({"score": 5})),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(s.get_text(&format!("/survey/{unknown}")).await.0, 404);
    let resp = s
        .http
        .post(format!("{}{survey}", s.url))
        .header("content-type", "text/plain")
        .body("score=5")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);

    // The page's form works without JavaScript, and also only once.
    let form = format!("/api/v1/surveys/{other}");
    let (status, html) = s.post_form(&form, "score=12&reason=").await;
    assert_eq!(status, 422, "{html}");
    assert!(
        html.contains("`score` must be an integer from 0 to 10, got 12"),
        "{html}"
    );
    let (status, html) = s
        .post_form(&form, "score=9&reason=Quick+and+clean%21&csat=5")
        .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Thank you"), "{html}");
    let (status, _) = s.post_form(&form, "score=9").await;
    assert_eq!(status, 409);

    let answered = s
        .get("/api/v1/surveys?customer=fading&status=answered")
        .await;
    let mut scores: Vec<(u64, String)> = answered
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["score"].as_u64().unwrap(),
                a["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    scores.sort();
    assert_eq!(
        scores,
        [
            (3, "Parts arrived late".to_string()),
            (9, "Quick and clean!".to_string())
        ]
    );

    // The CRM hears about both answers; the detractor is marked.
    let answers = s.wait_for("survey.answered", 2).await;
    assert!(answers.iter().all(|(_, _, valid)| *valid));
    assert!(
        answers
            .iter()
            .any(|(_, b, _)| b["data"]["detractor"] == true && b["data"]["score"] == 3)
    );
    s.stop().await;
}

#[tokio::test]
async fn an_expired_link_is_gone_and_a_reissued_link_replaces_the_old_one() {
    let s = TestServer::start(10).await;
    let (token, _) = two_surveys(&s).await;
    let surveys = s.get("/api/v1/surveys?customer=fading").await;
    let id = surveys
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["machine"] == "f-1")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // 31 days later the 30-day link has expired.
    s.clock.advance(31 * DAY);
    let (status, body) = s
        .send(
            "POST",
            &format!("/api/v1/surveys/{token}"),
            Some(json!({"score": 8})),
        )
        .await;
    assert_eq!(status, 410, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    assert_eq!(s.get_text(&format!("/survey/{token}")).await.0, 410);
    assert_eq!(
        s.get("/api/v1/surveys?status=expired")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The service desk hands out a new link; the old one stops working.
    let (status, link) = s
        .send("POST", &format!("/api/v1/surveys/{id}/link"), None)
        .await;
    assert_eq!(status, 200, "{link}");
    let fresh = link["link"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(fresh, token);
    assert_eq!(ts(&link["expires_at"]), s.now().plus_ms(30 * DAY));
    let (status, _) = s
        .send(
            "POST",
            &format!("/api/v1/surveys/{token}"),
            Some(json!({"score": 8})),
        )
        .await;
    assert_eq!(status, 404, "the old link is dead");
    let (status, body) = s
        .send(
            "POST",
            &format!("/api/v1/surveys/{fresh}"),
            Some(json!({"score": 8})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = s
        .send("POST", &format!("/api/v1/surveys/{id}/link"), None)
        .await;
    assert_eq!(status, 409, "an answered survey needs no link");
    let (status, _) = s.send("POST", "/api/v1/surveys/sv-nope/link", None).await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test]
async fn surveys_and_offers_share_the_weekly_contact_cap() {
    // Cap 3: two offers, then one survey; the second survey and the next offer wait.
    let s = TestServer::start(3).await;
    s.feed_wear("f-1").await;
    s.feed_wear("f-2").await;
    s.cycle().await;
    let wo1 = s.accept(&s.offer_of("f-1").await).await;
    let wo2 = s.accept(&s.offer_of("f-2").await).await;
    s.clock
        .set(ts(&wo1["booked_end"]).max(ts(&wo2["booked_end"])));
    let done1 = s.complete(&wo1).await;
    s.complete(&wo2).await;
    s.survey_token(&done1).await;
    let surveys = s.get("/api/v1/surveys?customer=fading").await;
    assert_eq!(surveys.as_array().unwrap().len(), 1, "{surveys:#}");
    assert_eq!(surveys[0]["work_order"], done1["id"]);
    let account = s.get("/api/v1/accounts/fading").await;
    assert_eq!(
        (
            account["contacts_last_week"].as_u64(),
            account["contact_cap"].as_u64()
        ),
        (Some(3), Some(3))
    );

    // A third press starts wearing: its offer is held back by the cap the survey used.
    s.feed_wear("f-3").await;
    let report = s.cycle().await;
    assert_eq!((report.proposed, report.held_back), (0, 1), "{report:?}");
    let offers = s.get("/api/v1/offers?status=proposed&machine=f-3").await;
    assert_eq!(offers.as_array().unwrap().len(), 0);

    // A week later those contacts no longer count.
    s.clock.advance(7 * DAY + 1);
    let account = s.get("/api/v1/accounts/fading").await;
    assert_eq!(account["contacts_last_week"].as_u64(), Some(0));
    s.stop().await;
}
