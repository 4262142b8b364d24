//! `wearcast up --demo`, as a new user runs it.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use wearcast_protocol::UnixMs;

use crate::common::{Platform, eventually, metric, mosquitto_pub};

fn ts(v: &Value) -> UnixMs {
    UnixMs::parse_rfc3339(v.as_str().unwrap_or_default()).expect("RFC 3339 instant")
}

/// One demo process serves several checks, so the suite starts it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_streams_predicts_offers_and_survives_bad_input() {
    // Not alongside the fault tests' swarm of processes: the timings below are real.
    let _serial = crate::processes::exclusive().await;
    // The demo's customers would answer the offers this test answers itself.
    let mut p = Platform::up(
        &["--demo", "--demo-seed", "7"],
        &[("WEARCAST_DEMO__ACTORS", "false")],
    );

    // 1. Within 60 s of start, an offer in one of the customer's maintenance windows
    //    that starts before the component's RUL P50.
    let offers: Vec<Value> = eventually(
        "an offer in a maintenance window",
        Duration::from_secs(90),
        || async {
            let offers = p.get("/api/v1/offers?status=proposed").await;
            let offers = offers.as_array().cloned().unwrap_or_default();
            offers
                .iter()
                .any(|o| o["urgent"] == false)
                .then_some(offers)
        },
    )
    .await;
    let elapsed = p.started.elapsed();
    eprintln!("first offer after {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(60),
        "first offer only after {elapsed:?}"
    );

    let sites = p.get("/api/v1/sites").await;
    let windows: HashMap<String, Vec<(UnixMs, UnixMs)>> = sites
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let w = s["upcoming_windows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| (ts(&w["start"]), ts(&w["end"])))
                .collect();
            (s["id"].as_str().unwrap().to_string(), w)
        })
        .collect();
    let mut in_window = 0;
    for offer in &offers {
        let start = ts(&offer["window_start"]);
        let end = ts(&offer["window_end"]);
        assert!(offer["price"]["total_cents"].as_i64().is_some());
        assert!(!offer["explanation"].as_str().unwrap().is_empty());
        assert!(!offer["components"].as_array().unwrap().is_empty());
        let site_windows = &windows[offer["site"].as_str().unwrap()];
        if offer["urgent"].as_bool() == Some(true) {
            // No window was safe: the earliest visit the part's lead time allows.
            continue;
        }
        let created = ts(&offer["created_at"]);
        let p50 = offer["rul_p50_h"].as_f64().expect("offer has a RUL P50");
        assert!(
            start < created.plus_hours(p50),
            "offer {} starts {start} after its P50 {}",
            offer["id"],
            created.plus_hours(p50)
        );
        assert!(
            offer["p_fail_before_window"].as_f64().unwrap()
                <= offer["risk_tolerance"].as_f64().unwrap() + 1e-9
        );
        // The site's upcoming windows are computed from now; the offer's may have
        // started since it was planned, so match on the recurring schedule.
        assert!(
            site_windows.contains(&(start, end))
                || site_windows.iter().any(|(s, e)| {
                    (s.0 - start.0) % (7 * UnixMs::DAY) == 0 && (e.0 - s.0) == (end.0 - start.0)
                }),
            "offer {} window {start}..{end} is not one of site {}'s windows",
            offer["id"],
            offer["site"]
        );
        in_window += 1;
    }
    assert!(in_window > 0, "every offer was urgent: {offers:#?}");

    // No component has two open offers.
    let mut open_components = std::collections::HashSet::new();
    for offer in &offers {
        for c in offer["components"].as_array().unwrap() {
            let key = (offer["machine"].to_string(), c["component"].to_string());
            assert!(
                open_components.insert(key.clone()),
                "two open offers for {key:?}"
            );
        }
    }

    // Window offers start after the parts can be there (at best the 1-day dispatch of
    // a part on the shelf).
    let parts: HashMap<String, f64> = p
        .get("/api/v1/parts")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["id"].as_str().unwrap().to_string(),
                x["lead_time_days"].as_f64().unwrap(),
            )
        })
        .collect();
    for offer in offers.iter().filter(|o| o["urgent"] == false) {
        let lead = offer["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| parts[c["part"].as_str().unwrap()].min(1.0))
            .fold(0.0, f64::max);
        assert!(
            ts(&offer["window_start"]) >= ts(&offer["created_at"]).plus_hours(24.0 * lead),
            "offer {} starts before its parts can arrive",
            offer["id"]
        );
    }

    // Accepting an offer books a qualified technician inside the window, with no
    // overlap in that technician's calendar. At 1800x the planner runs every two real
    // seconds and may supersede or expire the offer picked a moment ago (409); then the
    // test takes the current earliest one.
    let mut offers = offers;
    let mut accepted = None;
    for _ in 0..5 {
        let Some(pick) = offers
            .iter()
            .filter(|o| o["urgent"] == false)
            .min_by_key(|o| ts(&o["window_start"]))
        else {
            break;
        };
        let path = format!("/api/v1/offers/{}/accept", pick["id"].as_str().unwrap());
        let (status, body) = p.post_status(&path, "").await;
        match status {
            200 => {
                accepted = Some(serde_json::from_str::<Value>(&body).unwrap());
                break;
            }
            409 => eprintln!("{path}: 409 ({body}); taking the current offers"),
            _ => panic!("{path}: {status}: {body}"),
        }
        offers = p
            .get("/api/v1/offers?status=proposed")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default();
    }
    let accepted = accepted.expect("no offer could be accepted in five tries");
    let wo = &accepted["work_order"];
    assert_eq!(wo["status"], "scheduled", "{accepted:#}");
    let tech = wo["technician"].as_str().unwrap();
    let (b0, b1) = (ts(&wo["booked_start"]), ts(&wo["booked_end"]));
    assert!(
        ts(&wo["window_start"]) <= b0 && b1 <= ts(&wo["window_end"]),
        "{wo:#}"
    );
    let techs = p.get("/api/v1/technicians").await;
    let skills = techs
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == tech)
        .unwrap()["skills"]
        .clone();
    assert!(
        skills.as_array().unwrap().contains(&wo["machine_model"]),
        "{skills} lacks {}",
        wo["machine_model"]
    );
    let calendar = p
        .get(&format!(
            "/api/v1/work-orders?technician={tech}&status=scheduled"
        ))
        .await;
    let mut slots: Vec<(UnixMs, UnixMs)> = calendar
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (ts(&w["booked_start"]), ts(&w["booked_end"])))
        .collect();
    slots.sort();
    assert!(
        slots.windows(2).all(|w| w[0].1 <= w[1].0),
        "overlapping bookings: {slots:?}"
    );

    // 2. Machines with health, and the dashboard page.
    let machines = p.get("/api/v1/machines").await;
    let machines = machines.as_array().unwrap();
    assert!(machines.len() >= 30);
    assert!(
        machines
            .iter()
            .any(|m| m["health"]["status"] == "degrading" || m["health"]["status"] == "critical")
    );
    let (status, html) = p.get_status("/").await;
    assert_eq!(status, 200);
    assert!(html.contains("Wearcast") && html.contains("href=\"/operator\""));
    let (status, html) = p.get_status("/operator").await;
    assert_eq!(status, 200);
    assert!(html.contains("/assets/operator.js"));

    // 3. A reading from an external client (mosquitto_pub) is stored within 30 s.
    let machine = machines[0]["id"].as_str().unwrap().to_string();
    let tenant = machines[0]["tenant"].as_str().unwrap().to_string();
    let topic = format!("wearcast/v1/{tenant}/{machine}/telemetry");
    let now = ts(&p.get("/api/v1/info").await["now"]);
    let payload = format!(
        r#"{{"ts": {}, "readings": {{"probe.external_c": 42.5}}}}"#,
        now.0
    );
    if mosquitto_pub(&p.mqtt_host, p.mqtt_port, &topic, &payload) {
        let sent = std::time::Instant::now();
        let windows = eventually("the external reading", Duration::from_secs(30), || async {
            let (status, body) = p
                .get_status(&format!(
                    "/api/v1/machines/{machine}/telemetry?channel=probe.external_c"
                ))
                .await;
            (status == 200).then(|| serde_json::from_str::<Value>(&body).unwrap())
        })
        .await;
        eprintln!("external reading stored after {:?}", sent.elapsed());
        let w = &windows["windows"][0];
        assert_eq!(w["count"], 1);
        assert_eq!(w["mean"], 42.5);
    }

    // 4. Bad input is rejected, counted, and the platform keeps going.
    let before = p.metrics().await;
    let bad = [
        (topic.clone(), "{not json".to_string()),
        (
            format!("wearcast/v1/{tenant}/no-such-machine/telemetry"),
            format!(r#"{{"ts": {}, "readings": {{"a.b": 1}}}}"#, now.0),
        ),
        (
            topic.clone(),
            format!(
                r#"{{"ts": {}, "readings": {{"a.b": 1}}}}"#,
                now.plus_ms(365 * UnixMs::DAY).0
            ),
        ),
    ];
    let mut published = false;
    for (t, payload) in &bad {
        published = mosquitto_pub(&p.mqtt_host, p.mqtt_port, t, payload);
    }
    if published {
        let reasons = [
            ("malformed", "message"),
            ("unknown_machine", "message"),
            ("ts_future", "sample"),
        ];
        let after = eventually(
            "rejections in /metrics",
            Duration::from_secs(20),
            || async {
                let m = p.metrics().await;
                reasons
                    .iter()
                    .all(|(r, u)| {
                        metric(
                            &m,
                            "wearcast_gateway_rejected_total",
                            &[("reason", r), ("unit", u)],
                        ) > metric(
                            &before,
                            "wearcast_gateway_rejected_total",
                            &[("reason", r), ("unit", u)],
                        )
                    })
                    .then_some(m)
            },
        )
        .await;
        assert!(metric(&after, "wearcast_gateway_samples_accepted_total", &[]) > 0.0);
        assert_eq!(p.get("/healthz").await["status"], "ok");
    }

    // 5. New data keeps flowing (the live phase), then a clean shutdown.
    let windows_before = metric(&p.metrics().await, "wearcast_ingest_windows_total", &[]);
    eventually("more windows ingested", Duration::from_secs(20), || async {
        (metric(&p.metrics().await, "wearcast_ingest_windows_total", &[]) > windows_before)
            .then_some(())
    })
    .await;
    let status = p
        .terminate(Duration::from_secs(40))
        .expect("exits after SIGTERM");
    let log = p.log_text();
    assert!(status.success(), "exit {status}; log tail:\n{}", tail(&log));
    assert!(log.contains("stopped cleanly"), "log tail:\n{}", tail(&log));
    // The scorecard against the ground truth, with the failures that came due.
    assert!(
        log.contains("demo scorecard") && log.contains("due_with_offer_in_time"),
        "no scorecard in the log tail:\n{}",
        tail(&log)
    );
    let truth = std::fs::read_to_string(p.data_dir().join("ground-truth.jsonl")).unwrap();
    assert!(
        truth.lines().count() >= 90,
        "ground truth has {} lines",
        truth.lines().count()
    );
}

/// With its people at work (src/demo.rs), the demo closes the loop: customers accept
/// and decline offers, technicians complete the work and put new parts into the
/// simulated machines, customers answer surveys; and the quietly churning customer is
/// flagged for going quiet, declining and scoring low, while the others are not.
/// Four times the default speed and a 2-day `quiet_after` keep it to one to four minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_people_close_the_loop_and_the_churning_customer_is_flagged_with_its_reasons() {
    let _serial = crate::processes::exclusive().await;
    let mut p = Platform::up(
        &["--demo", "--demo-seed", "7"],
        &[
            ("WEARCAST_DEMO__SPEED", "7200"),
            ("WEARCAST_SERVER__ANALYTICS__HEALTH__QUIET_AFTER", "2days"),
        ],
    );
    let wanted = ["quiet", "offers_declined", "nps_detractor"];
    let seen = std::sync::Mutex::new(String::new());
    let accounts = eventually(
        "the churning customer flagged for going quiet, declining and a detractor score",
        // Quiet comes at five platform days (60 s); the detractor score after the one
        // visit Globex accepted, in a planned stop that may be two weeks out (170 s),
        // later still on a loaded machine or when that visit was cancelled.
        Duration::from_secs(480),
        || async {
            let accounts = p.get("/api/v1/accounts").await;
            let accounts = accounts.as_array()?.clone();
            let globex = accounts.iter().find(|a| a["customer"] == "globex")?;
            let kinds: Vec<&str> = globex["signals"]
                .as_array()?
                .iter()
                .filter_map(|s| s["kind"].as_str())
                .collect();
            let now = format!("{kinds:?}");
            let mut last = seen.lock().unwrap();
            if *last != now {
                eprintln!("after {:?}: globex signals {now}", p.started.elapsed());
                *last = now;
            }
            (globex["flagged"] == true && wanted.iter().all(|w| kinds.contains(w)))
                .then_some(accounts)
        },
    )
    .await;
    eprintln!("churning customer flagged after {:?}", p.started.elapsed());
    let globex = accounts.iter().find(|a| a["customer"] == "globex").unwrap();
    for signal in globex["signals"].as_array().unwrap() {
        assert!(
            !signal["reason"].as_str().unwrap_or_default().is_empty(),
            "{signal}"
        );
    }
    assert!(
        accounts
            .iter()
            .any(|a| a["customer"] != "globex" && a["flagged"] == false),
        "every customer is flagged: {accounts:#?}"
    );

    // Customers decided, technicians completed, surveys came back.
    let mut accepted = 0;
    for status in ["accepted", "scheduled", "completed"] {
        accepted += p
            .get(&format!("/api/v1/offers?status={status}"))
            .await
            .as_array()
            .unwrap()
            .len();
    }
    assert!(accepted > 0, "no offer was accepted");
    let declined = p.get("/api/v1/offers?status=declined").await;
    assert!(
        declined
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["customer"] == "globex")
    );
    let completed = p.get("/api/v1/work-orders?status=completed").await;
    let completed = completed.as_array().unwrap().clone();
    assert!(!completed.is_empty());
    let answered = p.get("/api/v1/surveys?status=answered").await;
    let answered = answered.as_array().unwrap();
    assert!(
        answered
            .iter()
            .any(|s| s["customer"] == "globex" && s["score"] == 3)
    );
    // The others' visits may end later than Globex's first one.
    eventually(
        "a survey answered by a customer other than Globex",
        Duration::from_secs(120),
        || async {
            let answered = p.get("/api/v1/surveys?status=answered").await;
            answered
                .as_array()?
                .iter()
                .any(|s| s["customer"] != "globex" && s["score"].as_u64().is_some())
                .then_some(())
        },
    )
    .await;

    // The lives those visits ended are scored against what the model predicted in them.
    let quality = eventually(
        "the model-quality report scoring predictions of ended lives",
        Duration::from_secs(90),
        || async {
            let q = p.get("/api/v1/model-quality").await;
            let ended =
                q["warnings"]["failures"].as_u64()? + q["warnings"]["replacements"].as_u64()?;
            let predictions =
                q["overall"]["scored"].as_u64()? + q["overall"]["censored"].as_u64()?;
            (ended > 0 && predictions > 0).then_some(q)
        },
    )
    .await;
    eprintln!(
        "model quality: warnings {}, overall {}",
        quality["warnings"], quality["overall"]
    );

    // Each completed replacement went into the simulated machine: a new life of that
    // component began at the booked end (or the machine's next step after it). The
    // demo technician tells the simulator after the API took the completion, and the
    // simulator applies it at the machine's next step, so wait for it before stopping.
    let truth_file = p.data_dir().join("ground-truth.jsonl");
    let gaps = |truth: &str| replacement_gaps(truth, &completed);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let truth = std::fs::read_to_string(&truth_file).unwrap_or_default();
        let missing = gaps(&truth);
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after 90 s, completed replacements missing from the simulated machines:\n{}",
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let status = p
        .terminate(Duration::from_secs(40))
        .expect("exits after SIGTERM");
    assert!(
        status.success(),
        "exit {status}; log tail:\n{}",
        tail(&p.log_text())
    );
    // Stopping took none of them back.
    let truth = std::fs::read_to_string(&truth_file).unwrap();
    let missing = gaps(&truth);
    assert!(missing.is_empty(), "{missing:#?}");

    // No secret in the log: every token the demo wrote, and that its people, its
    // gateway and this test used all along, is absent from it.
    let log = p.log_text();
    let dir = p.data_dir().join("tokens");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let secret = std::fs::read_to_string(&path).unwrap();
        let secret = secret.trim();
        assert!(
            secret.starts_with("wc_"),
            "{}: {secret:.6}…",
            path.display()
        );
        assert!(
            !log.contains(secret) && !log.contains(&secret[3..]),
            "the secret of {} is in the log",
            path.display()
        );
        files += 1;
    }
    assert!(files >= 6, "{files} token files in {}", dir.display());
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The components of `completed` work orders that should have begun a new life at
/// the visit but have none in the ground truth `truth` (JSON lines).
fn replacement_gaps(truth: &str, completed: &[Value]) -> Vec<String> {
    let records: Vec<Value> = truth
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let lives: Vec<&Value> = records.iter().filter(|r| r["record"] == "life").collect();
    let failures: Vec<&Value> = records
        .iter()
        .filter(|r| r["record"] == "failure")
        .collect();
    let mut gaps = Vec::new();
    for wo in completed {
        let end = ts(&wo["booked_end"]);
        // The demo technician tells the simulator once the API took the completion
        // (at `completed_at`, on or after the booked end when the actors run late on a
        // loaded machine); the machine fits the part at its next step.
        let told = wo["completed_at"]
            .as_str()
            .and_then(|t| UnixMs::parse_rfc3339(t).ok())
            .unwrap_or(end)
            .max(end);
        // A part that had broken down and was not repaired by the visit is replaced
        // by its repair, not at the visit: the technician found it failed, or (when
        // the breakdown had not reached the platform yet) the simulator refused the
        // visit's replacement of a part awaiting its repair.
        let broke_before = |c: &Value| {
            let same =
                |r: &Value| r["machine"] == wo["machine"] && r["component"] == c["component"];
            failures.iter().filter(|f| same(f)).any(|f| {
                let at = f["at"].as_i64().unwrap_or(i64::MAX);
                at <= end.0
                    && !lives
                        .iter()
                        .filter(|l| same(l))
                        .any(|l| (at..end.0).contains(&l["installed_at"].as_i64().unwrap_or(0)))
            })
        };
        for c in wo["components"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["as_found"] != "failed" && !broke_before(c))
        {
            let renewed = lives.iter().any(|l| {
                l["machine"] == wo["machine"]
                    && l["component"] == c["component"]
                    && (end.0..=told.0 + UnixMs::DAY)
                        .contains(&l["installed_at"].as_i64().unwrap_or(0))
            });
            if !renewed {
                let near: Vec<String> = lives
                    .iter()
                    .filter(|l| l["machine"] == wo["machine"] && l["component"] == c["component"])
                    .filter_map(|l| l["installed_at"].as_i64())
                    .filter(|t| (end.0 - 3 * UnixMs::DAY..end.0 + 3 * UnixMs::DAY).contains(t))
                    .map(|t| UnixMs(t).to_string())
                    .collect();
                gaps.push(format!(
                    "no new life of {}/{} after work order {} ended at {end} (completed at {told}); lives installed near then: {near:?}",
                    wo["machine"], c["component"], wo["id"]
                ));
            }
        }
    }
    gaps
}
