//! Windows and estimates in through the real server, points out of a real
//! VictoriaMetrics; an outage of it; a shutdown that flushes.
//!
//! VictoriaMetrics stores each field of a line-protocol point as its own series named
//! `<measurement>_<field>`, with the tags as labels (the bucket is not a label).

use std::collections::BTreeMap;
use std::time::Duration;

use wearcast_protocol::UnixMs;
use wearcast_server::model::HealthStatus;
use wearcast_server::sink::influx::schema::{self, field, tag};
use wearcast_server::sink::influx::{InfluxSink, SinkPoint};

use crate::support::*;
use crate::victoria::{self, Series, VictoriaMetrics, free_port};

fn close(a: f64, b: f64) -> bool {
    // VictoriaMetrics keeps 12 significant digits.
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

/// The samples of `<measurement>_<field>` by (machine, component or channel, time).
fn by_key(
    series: &[Series],
    measurement: &str,
    field: &str,
    key_tag: &str,
) -> BTreeMap<(String, String, i64), Vec<f64>> {
    let name = format!("{measurement}_{field}");
    let mut out: BTreeMap<_, Vec<f64>> = BTreeMap::new();
    for s in series.iter().filter(|s| s.name() == name) {
        for &(t, v) in &s.samples {
            out.entry((s.labels[tag::MACHINE].clone(), s.labels[key_tag].clone(), t))
                .or_default()
                .push(v);
        }
    }
    out
}

fn total_samples(series: &[Series], name: &str) -> usize {
    series
        .iter()
        .filter(|s| s.name() == name)
        .map(|s| s.samples.len())
        .sum()
}

#[tokio::test]
async fn every_stored_window_and_estimate_arrives_once_with_the_documented_names() {
    let Some(bin) = victoria::binary() else {
        return;
    };
    let vm = VictoriaMetrics::start(&bin, free_port()).await;
    let mut config = influx_config(&vm.url);
    // Nothing is written before the shutdown (the batch never fills, the interval never
    // ends), so the final flush is what delivers every point.
    config.flush_interval = Duration::from_secs(3600);
    let s = TestServer::start(config, Duration::from_millis(100)).await;

    let first = this_hour().plus_ms(-UnixMs::HOUR);
    let mut sent = Vec::new();
    for i in 0..5 {
        for (k, (machine, _, channel)) in CHANNELS.iter().enumerate() {
            let seed = (i * 10 + k) as f64;
            sent.push(window(
                machine,
                channel,
                first.plus_ms(i as i64 * 60_000),
                seed,
            ));
        }
    }
    s.ingest(sent.clone()).await;
    let windows = sent.len() as u64;
    // One refresh of each component follows the batch.
    s.wait_for("the estimates after the first batch", |st| {
        st.produced == windows + COMPONENTS as u64
    })
    .await;

    // A late part of the first bearing window: stored merged, and copied merged.
    let late = window("press-1", CHANNELS[0].2, first, 90.0);
    let early = sent[0].clone();
    s.ingest(vec![late.clone()]).await;
    // press-1's two components are refreshed again.
    s.wait_for("the estimates after the late window", |st| {
        st.produced == windows + 1 + COMPONENTS as u64 + 2
    })
    .await;
    let mut estimates = BTreeMap::new();
    for machine in ["press-1", "lathe-1"] {
        let detail = s.get(&format!("/api/v1/machines/{machine}")).await;
        for c in detail["components"].as_array().unwrap() {
            estimates.insert(
                (machine.to_string(), c["key"].as_str().unwrap().to_string()),
                c["estimate"].clone(),
            );
        }
    }
    assert_eq!(estimates.len(), COMPONENTS);

    let stats = s.stop().await;
    assert_eq!(stats.produced, windows + 1 + COMPONENTS as u64 + 2);
    assert_eq!(stats.written, stats.produced, "{stats:?}");
    assert_eq!(stats.dropped(), 0, "{stats:?}");
    assert_eq!(stats.write_errors, 0, "{stats:?}");

    let health_points = COMPONENTS + 2;
    let series = vm
        .export("wearcast_.*", |series| {
            let n = |f: &str| total_samples(series, f);
            n("wearcast_window_count") > sent.len()
                && n("wearcast_window_last") > sent.len()
                && n("wearcast_health_status_code") >= health_points
                && n("wearcast_health_health_index") >= health_points
        })
        .await;
    let names: std::collections::BTreeSet<&str> = series.iter().map(|s| s.name()).collect();
    let expected_names: std::collections::BTreeSet<String> = schema::MEASUREMENTS
        .iter()
        .flat_map(|m| m.fields.iter().map(move |f| format!("{}_{f}", m.name)))
        .collect();
    assert_eq!(
        names,
        expected_names.iter().map(String::as_str).collect(),
        "every documented field arrives, and nothing else"
    );

    // Windows: one point per stored window (the late part once more), each field there.
    for f in schema::MEASUREMENTS[0].fields {
        assert_eq!(
            total_samples(&series, &format!("{}_{f}", schema::WINDOW)),
            sent.len() + 1,
            "{f}"
        );
    }
    for s in series
        .iter()
        .filter(|s| s.name().starts_with(schema::WINDOW))
    {
        let keys: Vec<&str> = s
            .labels
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "__name__")
            .collect();
        let mut documented = schema::MEASUREMENTS[0].tags.to_vec();
        documented.sort();
        assert_eq!(keys, documented, "{:?}", s.labels);
        let (_, customer, _) = CHANNELS
            .iter()
            .find(|(m, _, c)| s.labels[tag::MACHINE] == *m && s.labels[tag::CHANNEL] == *c)
            .unwrap();
        assert_eq!(s.labels[tag::CUSTOMER], *customer);
        assert_eq!(s.labels[tag::TENANT], "acme");
        assert!(s.labels[tag::CHANNEL].starts_with(&format!("{}.", s.labels[tag::COMPONENT])));
    }
    let value = |w: &wearcast_protocol::WindowAggregate, f: &str| match f {
        field::COUNT => w.count as f64,
        field::MEAN => w.mean,
        field::MIN => w.min,
        field::MAX => w.max,
        field::STD => w.std,
        field::LAST => w.last,
        other => panic!("{other}"),
    };
    for f in schema::MEASUREMENTS[0].fields {
        let got = by_key(&series, schema::WINDOW, f, tag::CHANNEL);
        for w in &sent[1..] {
            let key = (w.machine.to_string(), w.channel.to_string(), w.start.0);
            let v = got
                .get(&key)
                .unwrap_or_else(|| panic!("{key:?} missing for {f}"));
            assert_eq!(v.len(), 1, "{key:?} {f}");
            assert!(
                close(v[0], value(w, f)),
                "{key:?} {f}: {} != {}",
                v[0],
                value(w, f)
            );
        }
    }
    // The window sent in two parts: first as it was, then merged (InfluxDB keeps the
    // second write of a timestamp; VictoriaMetrics keeps both samples).
    let n = (early.count + late.count) as f64;
    let merged_mean = (early.mean * early.count as f64 + late.mean * late.count as f64) / n;
    let key = (
        early.machine.to_string(),
        early.channel.to_string(),
        early.start.0,
    );
    let mut counts = by_key(&series, schema::WINDOW, field::COUNT, tag::CHANNEL)[&key].clone();
    counts.sort_by(f64::total_cmp);
    assert_eq!(counts, [early.count as f64, n]);
    let means = &by_key(&series, schema::WINDOW, field::MEAN, tag::CHANNEL)[&key];
    assert!(
        means.iter().any(|m| close(*m, merged_mean)),
        "{means:?} vs {merged_mean}"
    );
    let maxes = &by_key(&series, schema::WINDOW, field::MAX, tag::CHANNEL)[&key];
    assert!(maxes.iter().any(|m| close(*m, late.max)), "{maxes:?}");

    // Health: one point per refresh; the newest equals what the API shows.
    assert_eq!(
        total_samples(
            &series,
            &format!("{}_{}", schema::HEALTH, field::STATUS_CODE)
        ),
        COMPONENTS + 2
    );
    for s in series
        .iter()
        .filter(|s| s.name().starts_with(schema::HEALTH))
    {
        let keys: Vec<&str> = s
            .labels
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "__name__")
            .collect();
        let mut documented = schema::MEASUREMENTS[1].tags.to_vec();
        documented.sort();
        assert_eq!(keys, documented, "{:?}", s.labels);
    }
    for ((machine, component), e) in &estimates {
        let newest = |f: &str| {
            by_key(&series, schema::HEALTH, f, tag::COMPONENT)
                .into_iter()
                .filter(|((m, c, _), _)| m == machine && c == component)
                .max_by_key(|((_, _, t), _)| *t)
                .map(|(_, v)| v[0])
        };
        let at = newest(field::HEALTH_INDEX).unwrap();
        assert!(
            close(at, e["health_index"].as_f64().unwrap()),
            "{machine}/{component}"
        );
        let status = HealthStatus::parse(e["status"].as_str().unwrap());
        assert_eq!(
            newest(field::STATUS_CODE),
            Some(schema::status_code(status) as f64)
        );
        for f in [field::RUL_P10_H, field::RUL_P50_H, field::RUL_P90_H] {
            match e[f].as_f64() {
                Some(v) => assert!(close(newest(f).unwrap(), v), "{machine}/{component} {f}"),
                None => assert_eq!(newest(f), None, "{machine}/{component} {f}"),
            }
        }
    }
}

#[tokio::test]
async fn while_influxdb_is_down_ingestion_goes_on_and_the_sink_catches_up_or_counts_its_losses() {
    let Some(bin) = victoria::binary() else {
        return;
    };
    let port = free_port();
    let mut config = influx_config(&format!("http://127.0.0.1:{port}"));
    config.batch_size = 10;
    config.queue_capacity = 40;
    config.flush_interval = Duration::from_millis(20);
    config.max_backoff = Duration::from_millis(200);
    // At most one analysis cycle sees the data (the first, if it runs after the
    // ingest): one health point, which may come at any moment, so the counts below
    // allow for it.
    let s = TestServer::start(config, Duration::from_secs(3600)).await;

    let first = this_hour().plus_ms(-3 * UnixMs::HOUR);
    let batch = |from: i64| {
        (from..from + 10)
            .map(|i| {
                window(
                    "lathe-1",
                    "spindle.vibration_rms",
                    first.plus_ms(i * 60_000),
                    i as f64,
                )
            })
            .collect::<Vec<_>>()
    };
    // Nobody listens on the port yet.
    for b in 0..10 {
        s.ingest(batch(b * 10)).await;
    }
    let down = s.wait_for("a failed write", |st| st.write_errors > 0).await;
    assert_eq!(down.written, 0, "{down:?}");
    assert!((100..=101).contains(&down.produced), "{down:?}");
    // The queue holds 40 and the writer one batch of 10: the rest was dropped.
    assert!(down.dropped_queue_full >= 50, "{down:?}");
    assert_eq!(down.dropped_rejected + down.dropped_shutdown, 0, "{down:?}");
    // The platform kept everything.
    let stored = s
        .get("/api/v1/machines/lathe-1/telemetry?channel=spindle.vibration_rms&limit=1000")
        .await;
    assert_eq!(stored["windows"].as_array().unwrap().len(), 100);

    let vm = VictoriaMetrics::start(&bin, port).await;
    let caught_up = s
        .wait_for("the sink to catch up", |st| st.pending() == 0)
        .await;
    assert!(caught_up.written > 0, "{caught_up:?}");
    assert_eq!(
        caught_up.written + caught_up.dropped(),
        caught_up.produced,
        "{caught_up:?}"
    );

    // Back up: new windows flow straight through, nothing more is lost.
    s.ingest(batch(100)).await;
    let after = s
        .wait_for("the new batch", |st| {
            st.pending() == 0 && st.produced >= caught_up.produced + 10
        })
        .await;
    assert!(after.written >= caught_up.written + 10, "{after:?}");
    assert_eq!(after.dropped(), caught_up.dropped(), "{after:?}");
    let stats = s.stop().await;
    assert_eq!(stats.written + stats.dropped(), stats.produced, "{stats:?}");

    // Every window point has a mean, every health point a status code.
    let name = format!("{}_{}", schema::WINDOW, field::MEAN);
    let health = format!("{}_{}", schema::HEALTH, field::STATUS_CODE);
    let series = vm
        .export(&format!("{name}|{health}"), |series| {
            total_samples(series, &name) + total_samples(series, &health) >= stats.written as usize
        })
        .await;
    assert_eq!(
        total_samples(&series, &name) + total_samples(&series, &health),
        stats.written as usize,
        "exactly what was counted as written arrived"
    );
    let series: Vec<_> = series.into_iter().filter(|s| s.name() == name).collect();
    let mut times: Vec<i64> = series
        .iter()
        .flat_map(|s| s.samples.iter().map(|p| p.0))
        .collect();
    let n = times.len();
    times.sort();
    times.dedup();
    assert_eq!(times.len(), n, "no window was written twice");
}

#[tokio::test]
async fn a_shutdown_with_influxdb_unreachable_ends_and_counts_every_point_it_could_not_write() {
    // No server on the port, and none needed: the writer must give up on its own.
    let mut config = influx_config(&format!("http://127.0.0.1:{}", free_port()));
    config.batch_size = 10;
    config.queue_capacity = 20;
    config.shutdown_timeout = Duration::from_millis(300);
    let (sink, writer) = InfluxSink::new(&config).unwrap();
    let now = this_hour();
    for i in 0..25 {
        sink.offer(SinkPoint::Window {
            customer: "plant-co".into(),
            window: window("press-1", "belt.slip_pct", now.plus_ms(i * 60_000), 1.0),
        });
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    shutdown.cancel();
    let stats = writer.run(shutdown).await;
    assert_eq!(stats.produced, 25);
    assert_eq!(stats.written, 0);
    assert_eq!(stats.dropped_queue_full, 5, "{stats:?}");
    assert_eq!(stats.dropped_shutdown, 20, "{stats:?}");
    assert!(stats.write_errors >= 1, "{stats:?}");
    assert_eq!(stats.pending(), 0);
    // Offers after the writer stopped are counted, not queued forever.
    sink.offer(SinkPoint::Window {
        customer: String::new(),
        window: window("press-1", "belt.slip_pct", now, 1.0),
    });
    assert_eq!(sink.stats().dropped_shutdown, 21);
}

#[tokio::test]
async fn a_shutdown_with_influxdb_hanging_ends_at_the_flush_deadline() {
    // A server that accepts connections and never answers; each write would wait for
    // the (hour-long) request timeout if the flush deadline did not cut it short.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = influx_config(&format!("http://{}", hung.local_addr().unwrap()));
    config.timeout = Duration::from_secs(3600);
    config.shutdown_timeout = Duration::from_millis(300);
    let (sink, writer) = InfluxSink::new(&config).unwrap();
    for i in 0..7 {
        sink.offer(SinkPoint::Window {
            customer: "plant-co".into(),
            window: window(
                "press-1",
                "belt.slip_pct",
                this_hour().plus_ms(i * 60_000),
                1.0,
            ),
        });
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    shutdown.cancel();
    let stats = writer.run(shutdown).await;
    assert_eq!(stats.produced, 7);
    assert_eq!(stats.written, 0);
    assert_eq!(stats.dropped_shutdown, 7, "{stats:?}");
    assert_eq!(
        stats.write_errors, 1,
        "one attempt, cut at the deadline: {stats:?}"
    );
    drop(hung);
}
