//! What the dashboards read: the machine chart's health history and the pages
//! themselves.

use crate::support::{TestServer, ts};
use wearcast_protocol::Clock;
use wearcast_server::config::NotificationsConfig;

#[tokio::test]
async fn the_health_history_has_the_index_the_trend_to_the_threshold_and_the_rul_band() {
    let s = TestServer::start(NotificationsConfig::default()).await;
    s.feed_wear("press-1", "main_bearing.vibration_rms", 1.0, 8.0, 144.0)
        .await;
    s.cycle().await;
    let now = s.clock.now();

    let h = s.get("/api/v1/machines/press-1/health-history").await;
    assert_eq!(h["machine"], "press-1");
    assert_eq!(h["timezone"], "UTC");
    assert_eq!(h["bucket_hours"], 1.0);
    let comps = h["components"].as_array().unwrap();
    let bearing = comps
        .iter()
        .find(|c| c["component"] == "main_bearing")
        .unwrap();
    assert_eq!(bearing["name"], "Main bearing");
    assert_eq!(bearing["failure_level"], 1.0);

    // Hourly points over the 14 days fed (the newest bucket waits until it is complete),
    // oldest first, rising towards the failure level.
    let history = bearing["history"].as_array().unwrap();
    assert!(
        (300..=14 * 24).contains(&history.len()),
        "{} points",
        history.len()
    );
    let t: Vec<_> = history.iter().map(|p| ts(&p["t"])).collect();
    assert!(t.windows(2).all(|w| w[0] < w[1]) && *t.last().unwrap() < now);
    let hi = |p: &serde_json::Value| p["hi"].as_f64().unwrap();
    let (first, last) = (hi(&history[0]), hi(history.last().unwrap()));
    assert!(first < 0.1 && last > 0.2 && last < 1.0, "{first} → {last}");

    // The fitted trend starts at the onset, runs through now and crosses the threshold.
    assert!(bearing["trend_shape"].is_string(), "{bearing}");
    let trend = bearing["trend"].as_array().unwrap();
    assert!(trend.len() > 10);
    assert!(ts(&trend[0]["t"]) <= now && ts(&trend.last().unwrap()["t"]) > now);
    assert_eq!(ts(&trend[0]["t"]), ts(&bearing["onset_at"]));
    assert!(hi(trend.last().unwrap()) >= 1.0, "{trend:?}");

    // The RUL band as instants, in order, ahead of the estimate.
    let at = |k: &str| ts(&bearing[k]);
    let estimate_at = at("estimate_at");
    assert!(estimate_at <= now);
    assert!(estimate_at < at("rul_p10_at"));
    assert!(at("rul_p10_at") <= at("rul_p50_at") && at("rul_p50_at") <= at("rul_p90_at"));
    // The trend meets the threshold at the median crossing.
    let near_p50 = trend
        .iter()
        .min_by_key(|p| (ts(&p["t"]).0 - at("rul_p50_at").0).abs())
        .unwrap();
    assert!((hi(near_p50) - 1.0).abs() < 0.15, "{near_p50}");

    // A component without telemetry has no history and no trend.
    let belt = comps.iter().find(|c| c["component"] == "belt").unwrap();
    assert!(belt["history"].as_array().unwrap().is_empty());
    assert!(belt["trend"].as_array().unwrap().is_empty());

    let (status, body) = s
        .send("GET", "/api/v1/machines/nope/health-history", None)
        .await;
    assert_eq!(status, 404, "{body}");
    s.stop().await;
}

#[tokio::test]
async fn each_audience_has_its_page_and_every_page_loads_its_assets() {
    let s = TestServer::start(NotificationsConfig::default()).await;
    for (path, needle) in [
        ("/", "href=\"/operator\""),
        ("/operator", "/assets/operator.js"),
        ("/service", "/assets/service.js"),
        ("/manufacturer", "/assets/manufacturer.js"),
    ] {
        let resp = s.http.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let body = resp.text().await.unwrap();
        assert!(body.contains(needle), "{path} lacks {needle}");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} must not load anything from elsewhere"
        );
    }
    for asset in [
        "common.js",
        "operator.js",
        "service.js",
        "manufacturer.js",
        "style.css",
    ] {
        let resp = s
            .http
            .get(format!("{}/assets/{asset}", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{asset}");
    }
    s.stop().await;
}
