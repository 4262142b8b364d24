//! Offer → work order → completion, and every way a decision can be refused.

use serde_json::json;
use wearcast_protocol::UnixMs;
use wearcast_server::config::NotificationsConfig;

use crate::support::{START, TestServer, ts};

/// A server where press-1's main bearing fails about 6 days from now, with its offer.
async fn with_offer() -> (TestServer, serde_json::Value) {
    let s = TestServer::start(NotificationsConfig::default()).await;
    s.feed_wear("press-1", "main_bearing.vibration_rms", 1.0, 8.0, 144.0)
        .await;
    s.cycle().await;
    let offers = s.proposed("press-1").await;
    assert_eq!(offers.len(), 1, "{offers:#?}");
    let offer = offers[0].clone();
    (s, offer)
}

#[tokio::test]
async fn an_accepted_offer_becomes_a_work_order_for_a_qualified_free_technician_inside_the_window()
{
    let (s, offer) = with_offer().await;
    assert_eq!(offer["urgent"], false);
    let (start, end) = (ts(&offer["window_start"]), ts(&offer["window_end"]));
    // A daily 02:00–10:00 stop, after the bearing's 2-day lead time.
    assert_eq!(start.0 % UnixMs::DAY, 2 * UnixMs::HOUR);
    assert!(start >= START.plus_hours(48.0));

    let id = offer["id"].as_str().unwrap();
    let (status, body) = s
        .send("POST", &format!("/api/v1/offers/{id}/accept"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offer"]["status"], "scheduled");
    let wo = &body["work_order"];
    assert_eq!(wo["status"], "scheduled");
    assert_eq!(wo["technician"], "ana", "Bob cannot service presses");
    let (b0, b1) = (ts(&wo["booked_start"]), ts(&wo["booked_end"]));
    assert!(
        start <= b0 && b1 <= end,
        "booking {b0}..{b1} outside {start}..{end}"
    );
    assert_eq!(
        b1.0 - b0.0,
        3 * UnixMs::HOUR,
        "the bearing takes 3 h of labour"
    );
    assert_eq!(wo["components"][0]["part"], "brg");

    // It is on Ana's calendar.
    let ics = s
        .http
        .get(format!("{}/api/v1/technicians/ana/schedule.ics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        ics.contains("BEGIN:VEVENT") && ics.contains(wo["id"].as_str().unwrap()),
        "{ics}"
    );
    s.stop().await;
}

#[tokio::test]
async fn two_jobs_in_the_same_stop_never_double_book_the_technician() {
    let s = TestServer::start(NotificationsConfig::default()).await;
    for m in ["press-1", "press-2"] {
        s.feed_wear(m, "main_bearing.vibration_rms", 1.0, 8.0, 144.0)
            .await;
    }
    s.cycle().await;
    let mut bookings = Vec::new();
    for m in ["press-1", "press-2"] {
        let offer = &s.proposed(m).await[0];
        let id = offer["id"].as_str().unwrap();
        let (status, body) = s
            .send("POST", &format!("/api/v1/offers/{id}/accept"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        let wo = &body["work_order"];
        assert_eq!(wo["technician"], "ana");
        bookings.push((ts(&wo["booked_start"]), ts(&wo["booked_end"])));
    }
    let ((a0, a1), (b0, b1)) = (bookings[0], bookings[1]);
    assert!(a1 <= b0 || b1 <= a0, "overlap: {a0}..{a1} and {b0}..{b1}");
    s.stop().await;
}

#[tokio::test]
async fn the_customer_can_pick_another_safe_window_but_not_an_unsafe_one() {
    let (s, offer) = with_offer().await;
    let id = offer["id"].as_str().unwrap();
    let windows = s.get(&format!("/api/v1/offers/{id}/windows")).await;
    let windows = windows.as_array().unwrap();
    let selectable: Vec<_> = windows.iter().filter(|w| w["selectable"] == true).collect();
    let unsafe_one = windows
        .iter()
        .find(|w| w["within_tolerance"] == false)
        .expect("a later window is unsafe");
    let too_soon = windows
        .iter()
        .find(|w| w["after_lead_time"] == false)
        .expect("tomorrow is before the lead time");
    assert!(selectable.len() >= 2, "{windows:#?}");

    let (status, body) = s
        .send(
            "POST",
            &format!("/api/v1/offers/{id}/accept"),
            Some(json!({"window_start": unsafe_one["start"]})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not safe"),
        "{body}"
    );
    let (status, body) = s
        .send(
            "POST",
            &format!("/api/v1/offers/{id}/accept"),
            Some(json!({"window_start": too_soon["start"]})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("lead time"),
        "{body}"
    );
    assert_eq!(
        s.get(&format!("/api/v1/offers/{id}")).await["status"],
        "proposed"
    );

    let earlier = selectable[0]["start"].clone();
    let (status, body) = s
        .send(
            "POST",
            &format!("/api/v1/offers/{id}/accept"),
            Some(json!({"window_start": earlier})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["work_order"]["window_start"], earlier);
    s.stop().await;
}

#[tokio::test]
async fn wrong_decisions_get_a_clear_4xx_and_change_nothing() {
    let (s, offer) = with_offer().await;
    let id = offer["id"].as_str().unwrap();
    let work_orders = || async { s.get("/api/v1/work-orders").await.as_array().unwrap().len() };

    // A window in the past, and something that is not a planned stop.
    let past = START.plus_hours(-30.0).to_rfc3339();
    let (status, body) = s
        .send(
            "POST",
            &format!("/api/v1/offers/{id}/accept"),
            Some(json!({"window_start": past})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("past"), "{body}");
    let odd = START.plus_hours(77.5).to_rfc3339();
    let (status, body) = s
        .send(
            "POST",
            &format!("/api/v1/offers/{id}/accept"),
            Some(json!({"window_start": odd})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("planned stops"),
        "{body}"
    );
    let (status, _) = s
        .send(
            "POST",
            &format!("/api/v1/offers/{id}/accept"),
            Some(json!({"window_starts": odd})),
        )
        .await;
    assert_eq!(status, 400, "unknown fields are refused");

    // Declining needs a reason; then the offer cannot be accepted any more.
    let (status, _) = s
        .send(
            "POST",
            &format!("/api/v1/offers/{id}/decline"),
            Some(json!({"reason": "  "})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, body) = s
        .send(
            "POST",
            &format!("/api/v1/offers/{id}/decline"),
            Some(json!({"reason": "budget frozen until Q1"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "declined");
    let (status, body) = s
        .send("POST", &format!("/api/v1/offers/{id}/accept"), None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("declined"),
        "{body}"
    );
    assert_eq!(work_orders().await, 0);

    // A declined component is not offered again during the cooldown.
    s.clock.advance(UnixMs::HOUR);
    s.cycle().await;
    assert!(s.proposed("press-1").await.is_empty());

    // Unknown offer.
    let (status, _) = s.send("POST", "/api/v1/offers/of-nope/accept", None).await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test]
async fn rising_risk_supersedes_the_offer_and_old_or_expired_offers_cannot_be_accepted() {
    let s = TestServer::start(NotificationsConfig::default()).await;
    let bearing = "main_bearing.vibration_rms";
    // Wear that points to a failure about 9 days out: the offer sits days ahead.
    let (onset, slow_failure) = (START.plus_hours(-240.0), START.plus_hours(216.0));
    s.feed_range(
        "press-1",
        bearing,
        (1.0, 8.0),
        (onset, slow_failure),
        (START.plus_hours(-336.0), START),
    )
    .await;
    s.cycle().await;
    let first = s.proposed("press-1").await[0].clone();
    let first_id = first["id"].as_str().unwrap().to_string();

    // A day later the bearing has worn much faster than that trend said.
    s.clock.set(START.plus_hours(24.0));
    let fast_failure = START.plus_hours(80.0);
    s.feed_range(
        "press-1",
        bearing,
        (1.0, 8.0),
        (onset, fast_failure),
        (START, START.plus_hours(24.0)),
    )
    .await;
    s.cycle().await;
    let old = s.get(&format!("/api/v1/offers/{first_id}")).await;
    assert_eq!(old["status"], "superseded", "{old:#}");
    let new_id = old["superseded_by"].as_str().unwrap().to_string();
    let new = s.get(&format!("/api/v1/offers/{new_id}")).await;
    assert!(
        ts(&new["window_start"]) < ts(&first["window_start"]),
        "moved earlier"
    );
    let (status, body) = s
        .send("POST", &format!("/api/v1/offers/{first_id}/accept"), None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains(&new_id),
        "points to the new offer: {body}"
    );
    assert_eq!(
        s.proposed("press-1").await.len(),
        1,
        "never two open offers for a component"
    );

    // Let the new offer's window pass: it expires, and cannot be accepted either.
    s.clock.set(ts(&new["window_end"]).plus_ms(60_000));
    s.cycle().await;
    let (status, body) = s
        .send("POST", &format!("/api/v1/offers/{new_id}/accept"), None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_unqualified_technician_cannot_take_a_work_order() {
    let (s, offer) = with_offer().await;
    let id = offer["id"].as_str().unwrap();
    let (_, body) = s
        .send("POST", &format!("/api/v1/offers/{id}/accept"), None)
        .await;
    let wo = body["work_order"]["id"].as_str().unwrap().to_string();
    let (status, body) = s
        .send(
            "POST",
            &format!("/api/v1/work-orders/{wo}/assign"),
            Some(json!({"technician": "bob"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not qualified"),
        "{body}"
    );
    assert_eq!(
        s.get(&format!("/api/v1/work-orders/{wo}")).await["technician"],
        "ana"
    );
    let (status, _) = s
        .send(
            "POST",
            &format!("/api/v1/work-orders/{wo}/assign"),
            Some(json!({"technician": "zoe"})),
        )
        .await;
    assert_eq!(status, 404);
    s.stop().await;
}

/// Accepts `offer`; its work order.
async fn accept(s: &TestServer, offer: &serde_json::Value) -> serde_json::Value {
    let id = offer["id"].as_str().unwrap();
    let (status, body) = s
        .send("POST", &format!("/api/v1/offers/{id}/accept"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["work_order"].clone()
}

#[tokio::test]
async fn a_visit_done_before_its_stop_is_completed_when_the_technician_says_so() {
    let (s, offer) = with_offer().await;
    let order = accept(&s, &offer).await;
    let wo = order["id"].as_str().unwrap();
    let window_start = ts(&order["window_start"]);
    assert!(
        wearcast_protocol::Clock::now(&*s.clock) < window_start,
        "the stop is ahead"
    );
    let (status, body) = s
        .send(
            "POST",
            &format!("/api/v1/work-orders/{wo}/complete"),
            Some(
                json!({"components": [{"component": "main_bearing", "as_found": "worn"}],
                        "early": true}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    assert!(ts(&body["completed_at"]) < window_start, "{body}");
    s.stop().await;
}

#[tokio::test]
async fn completing_a_work_order_resets_the_component_and_records_its_life() {
    let (s, offer) = with_offer().await;
    let order = accept(&s, &offer).await;
    let wo = order["id"].as_str().unwrap().to_string();
    let booked_end = ts(&order["booked_end"]);
    // Before its planned stop begins, a visit is not completed unless the technician
    // says the work was done early: most often it is the wrong card.
    let finding = json!({"components": [{"component": "main_bearing", "as_found": "worn"}]});
    let (status, refused) = s
        .send(
            "POST",
            &format!("/api/v1/work-orders/{wo}/complete"),
            Some(finding.clone()),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    let message = refused["error"].as_str().unwrap();
    assert!(
        message.contains("has not begun") && message.contains("\"early\": true"),
        "{message}"
    );
    assert_eq!(
        s.get(&format!("/api/v1/work-orders/{wo}")).await["status"],
        "scheduled"
    );
    s.clock.set(booked_end);

    // The findings must cover exactly the work order's components.
    let (status, body) = s
        .send(
            "POST",
            &format!("/api/v1/work-orders/{wo}/complete"),
            Some(json!({"components": []})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = s
        .send(
            "POST",
            &format!("/api/v1/work-orders/{wo}/complete"),
            Some(json!({"components": [{"component": "main_bearing", "as_found": "shiny"}]})),
        )
        .await;
    assert_eq!(status, 400, "unknown as-found condition");

    let (status, body) = s
        .send("POST", &format!("/api/v1/work-orders/{wo}/complete"),
            Some(json!({"components": [{"component": "main_bearing", "as_found": "worn", "notes": "spalling on the outer race"}],
                        "notes": "replaced, run-in ok"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    let life = body["components"][0]["life_hours"].as_f64().unwrap();
    assert!(
        life > 24.0 * 700.0,
        "installed at commissioning, 700+ days ago: {life}"
    );
    assert_eq!(body["components"][0]["as_found"], "worn");
    assert_eq!(
        s.get(&format!("/api/v1/offers/{}", offer["id"].as_str().unwrap()))
            .await["status"],
        "completed"
    );

    let machine = s.get("/api/v1/machines/press-1").await;
    let bearing = machine["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "main_bearing")
        .unwrap()
        .clone();
    assert_eq!(ts(&bearing["installed_at"]), s.clock_now());
    assert!(
        bearing["estimate"].is_null(),
        "the old part's estimate is gone"
    );

    // The machine then reports the replacement itself: the same replacement, not a
    // second one.
    s.post_event(
        "press-1",
        "part_replaced",
        "main_bearing",
        s.clock_now().plus_ms(10 * 60_000),
    )
    .await;
    let lives = s.get("/api/v1/machines/press-1/lives").await;
    assert_eq!(lives.as_array().unwrap().len(), 1, "{lives:#}");
    assert_eq!(lives[0]["end_reason"], "replaced");
    assert_eq!(lives[0]["as_found"], "worn");
    assert_eq!(lives[0]["work_order"], wo.as_str());
    let machine = s.get("/api/v1/machines/press-1").await;
    let installed = machine["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "main_bearing")
        .unwrap()["installed_at"]
        .clone();
    assert_eq!(
        ts(&installed),
        s.clock_now(),
        "the install time is the technician's"
    );

    // Completing twice is refused.
    let (status, _) = s
        .send(
            "POST",
            &format!("/api/v1/work-orders/{wo}/complete"),
            Some(json!({"components": [{"component": "main_bearing", "as_found": "worn"}]})),
        )
        .await;
    assert_eq!(status, 409);
    s.stop().await;
}

#[tokio::test]
async fn one_off_stops_are_offered_and_exported_as_icalendar() {
    let s = TestServer::start(NotificationsConfig::default()).await;
    // A stop in the past, and one with its end first, are refused.
    let (status, _) = s
        .send(
            "POST",
            "/api/v1/sites/plant-1/stops",
            Some(json!({"start": START.plus_hours(-5.0).to_rfc3339(), "end": START.to_rfc3339()})),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = s
        .send("POST", "/api/v1/sites/plant-1/stops",
            Some(json!({"start": START.plus_hours(80.0).to_rfc3339(), "end": START.plus_hours(79.0).to_rfc3339()})))
        .await;
    assert_eq!(status, 400);
    // Only the one-off stop on day 3, 20:00–23:00, and nothing weekly.
    let (status, _) = s
        .send(
            "PUT",
            "/api/v1/sites/plant-1/maintenance-windows",
            Some(json!([])),
        )
        .await;
    assert_eq!(status, 200);
    let (status, stop) = s
        .send("POST", "/api/v1/sites/plant-1/stops",
            Some(json!({"start": START.plus_hours(68.0).to_rfc3339(), "end": START.plus_hours(71.0).to_rfc3339(), "note": "holiday shutdown"})))
        .await;
    assert_eq!(status, 201, "{stop}");
    s.feed_wear("press-1", "main_bearing.vibration_rms", 1.0, 8.0, 144.0)
        .await;
    s.cycle().await;
    let offer = &s.proposed("press-1").await[0];
    assert_eq!(ts(&offer["window_start"]), START.plus_hours(68.0));
    let ics = s
        .http
        .get(format!("{}/api/v1/sites/plant-1/calendar.ics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ics.contains("DTSTART:20261125T200000Z"), "{ics}");
    assert!(ics.contains("one-off"), "{ics}");
    s.stop().await;
}

impl TestServer {
    fn clock_now(&self) -> UnixMs {
        wearcast_protocol::Clock::now(&*self.clock)
    }
}

#[tokio::test]
async fn a_breakdown_and_its_repair_end_the_life_in_a_failure() {
    let s = TestServer::start(NotificationsConfig::default()).await;
    let failed_at = START.plus_hours(-5.0);
    s.post_event("press-2", "failure", "belt", failed_at).await;
    let machine = s.get("/api/v1/machines/press-2").await;
    let belt = machine["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "belt")
        .unwrap()
        .clone();
    assert_eq!(ts(&belt["failed_at"]), failed_at);
    s.post_event("press-2", "part_replaced", "belt", START.plus_hours(-2.0))
        .await;
    let lives = s.get("/api/v1/machines/press-2/lives").await;
    assert_eq!(lives.as_array().unwrap().len(), 1, "{lives:#}");
    assert_eq!(lives[0]["end_reason"], "failure");
    assert_eq!(ts(&lives[0]["ended_at"]), failed_at);
    let machine = s.get("/api/v1/machines/press-2").await;
    let belt = machine["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "belt")
        .unwrap()
        .clone();
    assert!(belt["failed_at"].is_null());
    assert_eq!(ts(&belt["installed_at"]), START.plus_hours(-2.0));
    // The same event delivered twice changes nothing.
    s.post_event("press-2", "part_replaced", "belt", START.plus_hours(-2.0))
        .await;
    assert_eq!(
        s.get("/api/v1/machines/press-2/lives")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_planning_steps_at_once_propose_a_component_only_once() {
    use wearcast_server::analysis::{AnalysisSettings, run_cycle};
    use wearcast_server::planning::plan_all;
    let s = TestServer::start(NotificationsConfig::default()).await;
    s.feed_wear("press-1", "main_bearing.vibration_rms", 1.0, 8.0, 144.0)
        .await;
    let now = s.clock_now();
    run_cycle(&s.store, now, &AnalysisSettings::default())
        .await
        .unwrap();
    let settings = wearcast_server::planning_settings(&s.config);
    let (a, b) = tokio::join!(
        plan_all(&s.store, now, &settings),
        plan_all(&s.store, now, &settings)
    );
    let proposed = a.unwrap().proposed + b.unwrap().proposed;
    assert_eq!(proposed, 1, "both planners proposed");
    assert_eq!(s.proposed("press-1").await.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_part_replaced_before_the_visit_cancels_the_work_order_and_frees_everything() {
    // A webhook for cancellations only, to a receiver that is down: the notice waits
    // in the outbox, where the test sees it.
    let s = TestServer::start(NotificationsConfig {
        webhooks: vec![wearcast_server::config::WebhookConfig {
            url: "http://127.0.0.1:9/hooks".into(),
            secret: "a-long-shared-secret-for-tests".into(),
            events: vec!["work_order.cancelled".into()],
        }],
        ..NotificationsConfig::default()
    })
    .await;
    let (status, body) = s
        .send(
            "PUT",
            "/api/v1/parts/brg/stock",
            Some(json!({"quantity": 2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.feed_wear("press-1", "main_bearing.vibration_rms", 1.0, 8.0, 144.0)
        .await;
    s.cycle().await;
    let offer = s.proposed("press-1").await[0].clone();
    let id = offer["id"].as_str().unwrap();
    let (status, body) = s
        .send("POST", &format!("/api/v1/offers/{id}/accept"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let wo = body["work_order"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["work_order"]["status"], "scheduled");
    let reserved = |parts: &serde_json::Value| {
        parts
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "brg")
            .map(|p| p["reserved"].as_i64().unwrap())
            .unwrap()
    };
    assert_eq!(reserved(&s.get("/api/v1/parts").await), 1);

    // A cycle with nothing replaced keeps the order.
    s.cycle().await;
    assert_eq!(
        s.get(&format!("/api/v1/work-orders/{wo}")).await["status"],
        "scheduled"
    );
    assert_eq!(s.store.outbox_pending().await.unwrap(), 0);

    // The bearing breaks down and the plant replaces it before the visit.
    s.clock.advance(6 * UnixMs::HOUR);
    s.post_event("press-1", "failure", "main_bearing", START.plus_hours(2.0))
        .await;
    s.post_event(
        "press-1",
        "part_replaced",
        "main_bearing",
        START.plus_hours(5.0),
    )
    .await;
    s.cycle().await;

    let order = s.get(&format!("/api/v1/work-orders/{wo}")).await;
    assert_eq!(order["status"], "cancelled", "{order:#}");
    assert!(
        order["notes"].as_str().unwrap().contains("main_bearing"),
        "{order:#}"
    );
    let offer = s.get(&format!("/api/v1/offers/{id}")).await;
    assert_eq!(offer["status"], "cancelled", "{offer:#}");
    assert_eq!(reserved(&s.get("/api/v1/parts").await), 0, "part released");
    // Ana's booking is gone from her calendar, and the visit cannot be completed.
    let ics = s
        .http
        .get(format!("{}/api/v1/technicians/ana/schedule.ics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!ics.contains(&wo), "{ics}");
    let (status, _) = s
        .send(
            "POST",
            &format!("/api/v1/work-orders/{wo}/complete"),
            Some(json!({"components": [{"component": "main_bearing", "as_found": "good"}]})),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        s.store.outbox_pending().await.unwrap(),
        1,
        "one work_order.cancelled notice"
    );
    // Cancelled once: another cycle changes nothing.
    s.cycle().await;
    assert_eq!(s.store.outbox_pending().await.unwrap(), 1);
    s.stop().await;
}
