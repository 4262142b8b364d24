//! Throughput of the InfluxDB sink against a reference on the same server, in the same
//! run. `scripts/bench` runs it after the gateway's benchmark.
//!
//! Both send the same N window points to a private VictoriaMetrics (Debian's
//! `victoria-metrics`, a real server of the InfluxDB v2 write API) in batches of B:
//!
//! - **reference**: the line protocol built beforehand, POSTed batch after batch with
//!   reqwest, uncompressed: only the HTTP round trips and the server's own work count.
//! - **sink**: N points offered to `InfluxSink` (the ingest path's call), timed until
//!   the writer has had all N acknowledged: queueing, encoding with influxdb2 and the
//!   writes, uncompressed (the default). Then once more with `gzip = true`.
//!
//! ```text
//! cargo bench -p wearcast-server --bench influx_sink -- [--points N] [--batch B] [--rounds K]
//! ```

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use influxdb2::models::WriteDataPoint;
use tokio_util::sync::CancellationToken;
use wearcast_protocol::{Clock, SystemClock, UnixMs, WindowAggregate};
use wearcast_server::sink::influx::{InfluxConfig, InfluxSink, InfluxToken, SinkPoint};

struct Options {
    points: u64,
    batch: usize,
    rounds: usize,
}

fn options() -> Options {
    let mut o = Options {
        points: 200_000,
        batch: 5_000,
        rounds: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--points" => o.points = value("--points").max(1),
            "--batch" => o.batch = value("--batch").max(1) as usize,
            "--rounds" => o.rounds = value("--rounds").max(1) as usize,
            // `cargo bench` passes `--bench`; anything else is ignored too.
            _ => {}
        }
    }
    o
}

/// A private VictoriaMetrics on a free port; killed (by its pid) when dropped.
struct Victoria {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Victoria {
    async fn start() -> Option<Self> {
        let bin = [
            "/usr/bin/victoria-metrics",
            "/usr/local/bin/victoria-metrics",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())?;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.path().display()))
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let v = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = {
            wearcast_server::tls::install_crypto_provider();
            reqwest::Client::new()
        };
        for _ in 0..300 {
            if http
                .get(format!("{}/health", v.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Some(v);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("victoria-metrics did not come up");
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// N window points over 50 machines × 10 channels, one second apart per series, each
/// round in its own stretch of the past so no point repeats another.
fn points(n: u64, round: usize) -> Vec<SinkPoint> {
    let series = 500;
    let end = SystemClock.now().0 - (round as i64 + 1) * (n / series + 1) as i64 * 1_000;
    (0..n)
        .map(|i| {
            let (s, k) = (i % series, (i / series) as i64);
            let start = UnixMs(end + k * 1_000);
            let v = (i % 1000) as f64 / 10.0;
            SinkPoint::Window {
                customer: format!("customer-{}", s % 5),
                window: WindowAggregate {
                    tenant: "bench".parse().unwrap(),
                    machine: format!("m-{:03}", s / 10).parse().unwrap(),
                    channel: format!("part_{}.signal", s % 10).parse().unwrap(),
                    start,
                    end: start.plus_ms(1_000),
                    count: 10,
                    mean: v,
                    min: v - 1.0,
                    max: v + 1.0,
                    std: 0.5,
                    last: v,
                    last_ts: start.plus_ms(900),
                },
            }
        })
        .collect()
}

async fn reference(url: &str, o: &Options, round: usize) -> f64 {
    let bodies: Vec<Vec<u8>> = points(o.points, round * 3)
        .chunks(o.batch)
        .map(|chunk| {
            let mut body = Vec::new();
            for p in chunk {
                p.to_data_point()
                    .unwrap()
                    .write_data_point_to(&mut body)
                    .unwrap();
            }
            body
        })
        .collect();
    let http = {
        wearcast_server::tls::install_crypto_provider();
        reqwest::Client::new()
    };
    let write = format!("{url}/api/v2/write?org=bench&bucket=bench&precision=ms");
    let started = Instant::now();
    for body in bodies {
        let r = http.post(&write).body(body).send().await.unwrap();
        assert_eq!(r.status(), 204);
    }
    o.points as f64 / started.elapsed().as_secs_f64()
}

async fn sink(url: &str, o: &Options, round: usize, gzip: bool) -> f64 {
    let config = InfluxConfig {
        url: Some(url.into()),
        org: "bench".into(),
        bucket: "bench".into(),
        token: Some(InfluxToken::new("bench")),
        batch_size: o.batch,
        queue_capacity: o.points as usize,
        flush_interval: Duration::from_millis(100),
        gzip,
        ..InfluxConfig::default()
    };
    let (handle, writer) = InfluxSink::new(&config).unwrap();
    let points = points(o.points, round * 3 + if gzip { 1 } else { 2 });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(writer.run(shutdown.clone()));
    let started = Instant::now();
    for p in points {
        handle.offer(p);
    }
    while handle.stats().written < o.points {
        let s = handle.stats();
        assert_eq!(s.dropped() + s.write_errors, 0, "{s:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = o.points as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    task.await.unwrap();
    rate
}

#[tokio::main]
async fn main() {
    let o = options();
    let Some(vm) = Victoria::start().await else {
        println!(
            "SKIP InfluxDB sink benchmark: victoria-metrics is not installed (scripts/services installs it)"
        );
        return;
    };
    println!(
        "InfluxDB sink: {} window points in batches of {} to a private VictoriaMetrics, {} round(s)",
        o.points, o.batch, o.rounds
    );
    for round in 0..o.rounds {
        let reference = reference(&vm.url, &o, round).await;
        let plain = sink(&vm.url, &o, round, false).await;
        let gzip = sink(&vm.url, &o, round, true).await;
        println!(
            "round {}: reference (pre-built line protocol, reqwest) {:>7.0} points/s | sink {:>7.0} points/s, ratio {:.2} | sink with gzip {:>7.0} points/s, ratio {:.2}",
            round + 1,
            reference,
            plain,
            plain / reference,
            gzip,
            gzip / reference
        );
    }
}
