//! The path through every part with data the test controls: a registered machine, a
//! wear trajectory published over MQTT, stored windows, a health estimate, an offer.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::Value;
use wearcast_protocol::registry::*;
use wearcast_protocol::telemetry::{Sample, encode_samples};
use wearcast_protocol::{Channel, Clock, SystemClock, UnixMs};

use crate::common::{Platform, eventually, write_json};

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

fn manifest(now: UnixMs) -> FleetManifest {
    FleetManifest {
        tenant: Tenant {
            id: id("e2e"),
            name: "E2E Machines".into(),
            currency: "EUR".into(),
            labour_rate_cents_per_hour: 9_000,
        },
        customers: vec![Customer {
            id: id("plant-co"),
            name: "Plant Co".into(),
            contact_email: None,
        }],
        sites: vec![Site {
            id: id("plant-1"),
            customer: id("plant-co"),
            name: "Plant 1".into(),
            timezone: "UTC".into(),
            region: "eu".into(),
            travel_cost_cents: 20_000,
            maintenance_windows: [
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Sat,
                Weekday::Sun,
            ]
            .into_iter()
            .map(|weekday| RecurringWindow {
                weekday,
                start: "02:00".into(),
                duration_hours: 4.0,
            })
            .collect(),
        }],
        parts: vec![Part {
            id: id("brg-6205"),
            name: "Bearing 6205".into(),
            price_cents: 45_000,
            lead_time_days: 1.0,
            labour_hours: 2.0,
            life: WeibullLife {
                shape: 3.0,
                scale_hours: 4_000.0,
            },
        }],
        machine_models: vec![MachineModel {
            id: id("press-p1"),
            name: "Press P1".into(),
            components: vec![ComponentSpec {
                key: id("main_bearing"),
                name: "Main bearing".into(),
                part: id("brg-6205"),
                wear_channels: vec![WearChannelSpec {
                    quantity: "vibration_rms".into(),
                    unit: "mm/s".into(),
                    healthy: 1.0,
                    failure: 8.0,
                }],
            }],
            downtime_cost_cents_per_hour: 50_000,
            unplanned_downtime_hours: 16.0,
        }],
        machines: vec![Machine {
            id: id("press-7"),
            customer: id("plant-co"),
            site: id("plant-1"),
            model: id("press-p1"),
            serial: "P1-0007".into(),
            commissioned_at: now.plus_hours(-24.0 * 400.0),
            components: vec![InstalledComponent {
                key: id("main_bearing"),
                installed_at: now.plus_hours(-24.0 * 30.0),
            }],
        }],
        contracts: vec![],
    }
}

/// Vibration of a bearing that started wearing 10 days ago and fails 6 days from now,
/// sampled every 5 minutes over the last 14 days, in hourly messages.
fn trajectory(now: UnixMs) -> Vec<Vec<Sample>> {
    let channel = Channel::parse("main_bearing.vibration_rms").unwrap();
    let load = Channel::parse("op.load_pct").unwrap();
    let onset = now.plus_hours(-240.0);
    let failure = now.plus_hours(144.0);
    let k: f64 = 3.0;
    let mut seq = 0;
    let start = now.plus_hours(-14.0 * 24.0).window_start(UnixMs::HOUR);
    let mut messages = Vec::new();
    let mut t = start;
    while t < now {
        let mut batch = Vec::new();
        for _ in 0..12 {
            let x = (t.0 - onset.0) as f64 / (failure.0 - onset.0) as f64;
            let wear = if x <= 0.0 {
                0.0
            } else {
                (k * x).exp_m1() / k.exp_m1()
            };
            let wiggle = ((seq as f64) * 1.7).sin() * 0.08;
            seq += 1;
            batch.push(Sample {
                ts: t,
                seq: Some(seq),
                readings: vec![
                    (channel.clone(), 1.0 + 7.0 * wear + wiggle),
                    (load.clone(), 70.0),
                ],
            });
            t = t.plus_ms(5 * 60_000);
            if t >= now {
                break;
            }
        }
        messages.push(batch);
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_telemetry_becomes_windows_then_health_then_an_offer() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemClock.now();
    let registry = dir.path().join("fleet.json");
    write_json(&registry, &manifest(now));
    let registry_arg = registry.display().to_string();
    let p = Platform::up_in(
        dir,
        &["--registry", &registry_arg],
        &[("WEARCAST_SERVER__ANALYSIS_INTERVAL", "1s")],
    );

    // Publish the trajectory as a device would: QoS 1 over MQTT.
    let mut opts = MqttOptions::new("e2e-press-7", p.mqtt_host.clone(), p.mqtt_port);
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(opts, 64);
    let messages = trajectory(now);
    // As a careful device does: a message counts as delivered once its PUBACK is in.
    // (rumqttc only talks to the broker while its event loop is polled.)
    for (i, batch) in messages.iter().enumerate() {
        client
            .publish(
                "wearcast/v1/e2e/press-7/telemetry",
                QoS::AtLeastOnce,
                false,
                encode_samples(batch),
            )
            .await
            .unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("MQTT error at message {i}: {e}"),
                Err(_) => panic!("message {i} was not acknowledged"),
            }
        }
    }
    client.disconnect().await.unwrap();
    while !matches!(
        tokio::time::timeout(Duration::from_secs(5), events.poll()).await,
        Ok(Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_))
    ) {}

    // Stored windows: the gateway's 60 s windows hold one 5-minute sample each.
    let windows = eventually("stored windows", Duration::from_secs(120), || async {
        let (status, body) = p
            .get_status("/api/v1/machines/press-7/telemetry?channel=main_bearing.vibration_rms&limit=100000")
            .await;
        let v: Value = serde_json::from_str(&body).ok()?;
        let n = v["windows"].as_array().map_or(0, Vec::len);
        if n > 3000 && n < 4030 {
            for l in p.metrics().await.lines() {
                if (l.starts_with("wearcast_gateway") || l.starts_with("wearcast_ingest")) && !l.contains("_bucket") && !l.ends_with(" 0") {
                    eprintln!("  {l}");
                }
            }
        }
        // Every 5-minute sample of 14 days, less the last window still open.
        (status == 200 && n >= 14 * 288 - 2).then_some(v)
    })
    .await;
    let w = windows["windows"].as_array().unwrap();
    let last = w.last().unwrap();
    assert!(last["mean"].as_f64().unwrap() > 2.0, "wear visible: {last}");

    // Health: degrading or critical, with a RUL band around the truth (6 days).
    // An estimate made from the whole trajectory (an earlier one may have seen only part).
    let machine = eventually(
        "an estimate of all the data",
        Duration::from_secs(120),
        || async {
            let m = p.get("/api/v1/machines/press-7").await;
            let status = m["components"][0]["status"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let last_data = m["components"][0]["estimate"]["evidence"]["last_data_at"]
                .as_str()
                .and_then(|t| UnixMs::parse_rfc3339(t).ok())?;
            ((status == "degrading" || status == "critical") && last_data >= now.plus_hours(-2.0))
                .then_some(m)
        },
    )
    .await;
    let e = &machine["components"][0]["estimate"];
    let p50 = e["rul_p50_h"].as_f64().unwrap();
    assert!(
        (72.0..=288.0).contains(&p50),
        "P50 {p50} h, truth 144 h: {e}"
    );
    assert_eq!(machine["health"]["component"], "main_bearing");

    // An offer in one of the site's daily 02:00–06:00 UTC windows, before the P50.
    let offer = eventually("an offer", Duration::from_secs(120), || async {
        let offers = p.get("/api/v1/offers?machine=press-7").await;
        offers.as_array()?.first().cloned()
    })
    .await;
    assert_eq!(offer["status"], "proposed");
    let start = UnixMs::parse_rfc3339(offer["window_start"].as_str().unwrap()).unwrap();
    let end = UnixMs::parse_rfc3339(offer["window_end"].as_str().unwrap()).unwrap();
    assert_eq!(
        start.0 % UnixMs::DAY,
        2 * UnixMs::HOUR,
        "window starts at 02:00 UTC"
    );
    assert_eq!(end.0 - start.0, 4 * UnixMs::HOUR);
    assert!(
        start > now.plus_hours(24.0),
        "after the part's 1-day lead time"
    );
    assert!(start < now.plus_hours(p50));
    assert!(offer["p_fail_before_window"].as_f64().unwrap() <= 0.10 + 1e-9);
    assert_eq!(offer["components"][0]["component"], "main_bearing");
    assert_eq!(offer["price"]["parts_cents"], 45_000);
    assert_eq!(offer["price"]["total_cents"], 45_000 + 18_000 + 20_000);
    let text = offer["explanation"].as_str().unwrap();
    assert!(text.contains("main bearing"), "{text}");
}
