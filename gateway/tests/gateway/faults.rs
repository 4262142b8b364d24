//! The gateway as a process, against its own Mosquitto and a server that de-duplicates
//! batches by id like the real one, under the faults it must survive: `kill -9` at
//! random moments, a long server outage, a broker restart, a full disk budget, and one
//! of two gateways sharing a subscription dying. Every test publishes numbered samples,
//! each in its own one-second window with its seq as the value, and checks that every
//! sample the broker acknowledged is stored exactly once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wearcast_gateway::OverflowPolicy;

use crate::processes::{
    GatewayProcess, OwnBroker, Publisher, exactly_once, exclusive, gateway_config,
    mosquitto_available, stored_by_seq,
};
use crate::support::FakeServer;

const VIB: &str = "spindle.vibration_rms";

/// A small deterministic generator; the seed is printed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let seed = std::env::var("FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("fault schedule seed: FAULT_SEED={seed}");
        Self(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}{}x{}", std::process::id(), nanos % 1_000_000_000)
}

/// Waits until the server holds every seq `1..=n` of `machine`, then checks each is
/// there exactly once.
async fn assert_all_stored_once(
    server: &FakeServer,
    machine: &str,
    base: wearcast_protocol::UnixMs,
    n: u64,
    logs: &[&GatewayProcess],
) {
    let complete = server
        .wait_until(Duration::from_secs(90), |r| {
            stored_by_seq(&r.stored, machine, VIB, base).len() as u64 >= n
        })
        .await;
    let stored = server.with(|r| stored_by_seq(&r.stored, machine, VIB, base));
    let problems = exactly_once(&stored, n);
    if !complete || !problems.is_empty() {
        for g in logs {
            eprintln!("---- {} log tail ----\n{}", g.name, g.log_tail());
        }
    }
    assert!(complete, "only {} of {n} seqs stored", stored.len());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_twenty_kill_9s_at_random_moments_every_published_sample_is_stored_exactly_once() {
    let test =
        "after_twenty_kill_9s_at_random_moments_every_published_sample_is_stored_exactly_once";
    if !mosquitto_available(test) {
        return;
    }
    let _one_at_a_time = exclusive().await;
    let mut rng = Rng::seeded();
    let broker = OwnBroker::start();
    let tenant = unique("t");
    let machine = format!("{tenant}-m1");
    let server = FakeServer::start(&[(&tenant, &machine)]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(&broker, &server.url, &unique("gw"), &dir.path().join("gw"));
    let mut gateway = GatewayProcess::start("gateway", &config, dir.path());
    gateway.wait_subscribed(Duration::from_secs(30)).await;

    let topic = format!("wearcast/v1/{tenant}/{machine}/telemetry");
    let mut publisher = Publisher::connect(&broker, &unique("pub"), topic, 3).await;
    let kills = 22;
    for _ in 0..kills {
        // A steady stream, and the gateway dies somewhere in the middle of it: while
        // handling, syncing, acknowledging or forwarding.
        let life = Duration::from_millis(60 + rng.below(400));
        publisher.stream(400, life).await;
        gateway.kill9();
        // Sometimes the broker's queue grows before the restart.
        publisher
            .stream(400, Duration::from_millis(rng.below(150)))
            .await;
        gateway = GatewayProcess::start("gateway", &config, dir.path());
    }
    publisher.stream(400, Duration::from_millis(300)).await;
    publisher.wait_acked(Duration::from_secs(30)).await;
    let n = publisher.published();
    eprintln!("{n} samples published across {kills} kills");

    assert_all_stored_once(&server, &machine, publisher.base(), n, &[&gateway]).await;
    let report = gateway.stop().await;
    // Each kill leaves at most a torn tail behind; recovery cut and counted them.
    assert_eq!(report.corrupt_segments, 0, "{report:?}");
    assert_eq!(report.samples_dropped, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_server_outage_is_spooled_on_disk_and_drained_exactly_once_when_it_returns() {
    let test = "a_long_server_outage_is_spooled_on_disk_and_drained_exactly_once_when_it_returns";
    if !mosquitto_available(test) {
        return;
    }
    let _one_at_a_time = exclusive().await;
    let broker = OwnBroker::start();
    let tenant = unique("t");
    let machine = format!("{tenant}-m1");
    let server = FakeServer::start(&[(&tenant, &machine)]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(&broker, &server.url, &unique("gw"), &dir.path().join("gw"));
    // glibc keeps up to 8 malloc arenas per core, each holding on to what its threads
    // once used; two keep that noise out of a measurement about the backlog.
    let mut gateway = GatewayProcess::start_with_env(
        "gateway",
        &config,
        dir.path(),
        &[("MALLOC_ARENA_MAX", "2")],
    );
    gateway.wait_subscribed(Duration::from_secs(30)).await;
    let topic = format!("wearcast/v1/{tenant}/{machine}/telemetry");
    // Twenty readings a sample: every sample adds kilobytes to the spool.
    let mut publisher = Publisher::connect(&broker, &unique("pub"), topic, 20).await;

    publisher.publish(500).await;
    publisher.wait_acked(Duration::from_secs(30)).await;
    let warm = server
        .wait_until(Duration::from_secs(30), |r| {
            stored_by_seq(&r.stored, &machine, VIB, publisher.base()).len() == 500
        })
        .await;
    assert!(warm, "{}", gateway.log_tail());

    server.go_down();
    // Three equal thirds of the outage: the first two warm up buffers and the
    // allocator, the last must not cost memory in proportion to what it adds to the
    // spool.
    let mut points = Vec::new();
    for _ in 0..3 {
        publisher.publish(6_000).await;
        publisher.wait_acked(Duration::from_secs(60)).await;
        let n = publisher.published();
        let spooled = gateway
            .wait_stats(Duration::from_secs(120), |s| s.messages_acked >= n)
            .await;
        assert!(spooled, "{:?}\n{}", gateway.stats(), gateway.log_tail());
        let spool = gateway.stats().map_or(0, |s| s.spool_bytes);
        points.push((gateway.rss_bytes(), spool));
    }
    let n = publisher.published();
    let [_, (rss1, spool1), (rss2, spool2)] = points[..] else {
        unreachable!()
    };
    eprintln!(
        "outage: spool {} MB → {} MB, resident memory {} MB → {} MB",
        spool1 >> 20,
        spool2 >> 20,
        rss1 >> 20,
        rss2 >> 20
    );
    let added = spool2.saturating_sub(spool1);
    assert!(
        added > 20 << 20,
        "the backlog grew on disk by {added} bytes"
    );
    assert!(
        rss2.saturating_sub(rss1) < added / 4,
        "memory grew {} bytes while the spool grew {added}: the backlog is in memory",
        rss2.saturating_sub(rss1)
    );

    server.come_back().await;
    assert_all_stored_once(&server, &machine, publisher.base(), n, &[&gateway]).await;
    let report = gateway.stop().await;
    assert_eq!(report.spool_batches, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_restart_the_gateway_reconnects_and_nothing_acknowledged_is_lost() {
    let test = "after_a_broker_restart_the_gateway_reconnects_and_nothing_acknowledged_is_lost";
    if !mosquitto_available(test) {
        return;
    }
    let _one_at_a_time = exclusive().await;
    let mut broker = OwnBroker::start();
    let tenant = unique("t");
    let machine = format!("{tenant}-m1");
    let server = FakeServer::start(&[(&tenant, &machine)]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(&broker, &server.url, &unique("gw"), &dir.path().join("gw"));
    let mut gateway = GatewayProcess::start("gateway", &config, dir.path());
    gateway.wait_subscribed(Duration::from_secs(30)).await;
    let topic = format!("wearcast/v1/{tenant}/{machine}/telemetry");
    let mut publisher = Publisher::connect(&broker, &unique("pub"), topic, 3).await;

    publisher.stream(400, Duration::from_millis(1500)).await;
    broker.restart();
    publisher.stream(400, Duration::from_millis(1500)).await;
    broker.restart();
    publisher.stream(400, Duration::from_millis(1000)).await;
    publisher.wait_acked(Duration::from_secs(60)).await;
    let n = publisher.published();

    assert_all_stored_once(&server, &machine, publisher.base(), n, &[&gateway]).await;
    let report = gateway.stop().await;
    assert_eq!(report.samples_dropped, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_under_drop_oldest_drops_exactly_what_it_counts_and_recovers_by_itself() {
    let test = "a_full_spool_under_drop_oldest_drops_exactly_what_it_counts_and_recovers_by_itself";
    if !mosquitto_available(test) {
        return;
    }
    let _one_at_a_time = exclusive().await;
    let broker = OwnBroker::start();
    let tenant = unique("t");
    let machine = format!("{tenant}-m1");
    let server = FakeServer::start(&[(&tenant, &machine)]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = gateway_config(&broker, &server.url, &unique("gw"), &dir.path().join("gw"));
    config.spool_max_bytes = 512 * 1024;
    config.spool_segment_bytes = 64 * 1024;
    config.spool_overflow = OverflowPolicy::DropOldest;
    let mut gateway = GatewayProcess::start("gateway", &config, dir.path());
    gateway.wait_subscribed(Duration::from_secs(30)).await;
    let topic = format!("wearcast/v1/{tenant}/{machine}/telemetry");
    let mut publisher = Publisher::connect(&broker, &unique("pub"), topic, 3).await;

    server.go_down();
    publisher.publish(3000).await;
    publisher.wait_acked(Duration::from_secs(30)).await;
    let n = publisher.published();
    let taken = gateway
        .wait_stats(Duration::from_secs(60), |s| s.messages_acked >= n)
        .await;
    assert!(taken, "{:?}\n{}", gateway.stats(), gateway.log_tail());
    let during = gateway.stats().expect("stats");
    assert!(during.samples_dropped > 0, "{during:?}");
    assert!(
        during.spool_bytes <= config.spool_max_bytes + 2 * config.spool_segment_bytes,
        "{during:?}"
    );

    // Space returns: the server takes the backlog, and new samples flow again.
    server.come_back().await;
    publisher.publish(200).await;
    publisher.wait_acked(Duration::from_secs(30)).await;
    let total = publisher.published();
    let base = publisher.base();
    let settled = server
        .wait_until(Duration::from_secs(60), |r| {
            stored_by_seq(&r.stored, &machine, VIB, base)
                .range(n + 1..)
                .count() as u64
                == total - n
        })
        .await;
    assert!(settled, "{}", gateway.log_tail());
    let report = gateway.stop().await;
    let stored = server.with(|r| stored_by_seq(&r.stored, &machine, VIB, base));
    assert!(
        stored.values().all(|(count, _)| *count == 1),
        "a sample stored twice"
    );
    assert_eq!(
        stored.len() as u64 + report.samples_dropped,
        total,
        "stored + dropped must be every sample: {report:?}"
    );
    assert!(report.batches_dropped > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_under_block_stops_acknowledging_and_loses_nothing() {
    let test = "a_full_spool_under_block_stops_acknowledging_and_loses_nothing";
    if !mosquitto_available(test) {
        return;
    }
    let _one_at_a_time = exclusive().await;
    let broker = OwnBroker::start();
    let tenant = unique("t");
    let machine = format!("{tenant}-m1");
    let server = FakeServer::start(&[(&tenant, &machine)]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = gateway_config(&broker, &server.url, &unique("gw"), &dir.path().join("gw"));
    config.spool_max_bytes = 512 * 1024;
    config.spool_segment_bytes = 64 * 1024;
    config.spool_overflow = OverflowPolicy::Block;
    let mut gateway = GatewayProcess::start("gateway", &config, dir.path());
    gateway.wait_subscribed(Duration::from_secs(30)).await;
    let topic = format!("wearcast/v1/{tenant}/{machine}/telemetry");
    let mut publisher = Publisher::connect(&broker, &unique("pub"), topic, 3).await;

    server.go_down();
    publisher.publish(3000).await;
    publisher.wait_acked(Duration::from_secs(30)).await;
    let n = publisher.published();
    let full = gateway
        .wait_stats(Duration::from_secs(60), |s| s.spool_full)
        .await;
    assert!(full, "{:?}", gateway.stats());
    let during = gateway.stats().expect("stats");
    // The broker holds the rest.
    assert!(during.messages_acked < n, "{during:?}");

    server.come_back().await;
    assert_all_stored_once(&server, &machine, publisher.base(), n, &[&gateway]).await;
    let report = gateway.stop().await;
    assert_eq!(report.samples_dropped, 0, "{report:?}");
    assert!(!report.spool_full, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_a_subscription_and_when_one_is_killed_every_sample_is_still_stored_once()
 {
    let test = "two_gateways_share_a_subscription_and_when_one_is_killed_every_sample_is_still_stored_once";
    if !mosquitto_available(test) {
        return;
    }
    let _one_at_a_time = exclusive().await;
    let broker = OwnBroker::start();
    let tenant = unique("t");
    let machines: Vec<String> = (1..=4).map(|i| format!("{tenant}-m{i}")).collect();
    let pairs: Vec<(&str, &str)> = machines
        .iter()
        .map(|m| (tenant.as_str(), m.as_str()))
        .collect();
    let server = FakeServer::start(&pairs).await;
    let dir = tempfile::tempdir().unwrap();
    let group = unique("g");
    let config = |name: &str| {
        let mut c = gateway_config(&broker, &server.url, &unique(name), &dir.path().join(name));
        c.share_group = Some(group.clone());
        c
    };
    let (config_a, config_b) = (config("a"), config("b"));
    let mut a = GatewayProcess::start("a", &config_a, dir.path());
    let mut b = GatewayProcess::start("b", &config_b, dir.path());
    a.wait_subscribed(Duration::from_secs(30)).await;
    b.wait_subscribed(Duration::from_secs(30)).await;

    let mut publishers = Vec::new();
    for m in &machines {
        let topic = format!("wearcast/v1/{tenant}/{m}/telemetry");
        publishers.push(Publisher::connect(&broker, &unique("pub"), topic, 3).await);
    }
    let stream = |publishers: &mut Vec<Publisher>, ms: u64| {
        let publishers = std::mem::take(publishers);
        async move {
            let mut handles = Vec::new();
            for mut p in publishers {
                handles.push(tokio::spawn(async move {
                    p.stream(100, Duration::from_millis(ms)).await;
                    p
                }));
            }
            let mut back = Vec::new();
            for h in handles {
                back.push(h.await.unwrap());
            }
            back
        }
    };
    publishers = stream(&mut publishers, 1500).await;
    a.kill9();
    let before_b = b.stats().map_or(0, |s| s.samples_accepted);
    publishers = stream(&mut publishers, 1500).await;
    // The survivor carries on alone meanwhile.
    let carried = b
        .wait_stats(Duration::from_secs(30), |s| {
            s.samples_accepted > before_b + 100
        })
        .await;
    assert!(carried, "{:?}", b.stats());
    // A supervisor restarts the dead one: what it acknowledged is in its spool.
    let a = GatewayProcess::start("a", &config_a, dir.path());
    publishers = stream(&mut publishers, 1000).await;
    for p in &publishers {
        p.wait_acked(Duration::from_secs(30)).await;
    }
    for (m, p) in machines.iter().zip(&publishers) {
        assert_all_stored_once(&server, m, p.base(), p.published(), &[&a, &b]).await;
    }
    let (ra, rb) = (a.stop().await, b.stop().await);
    assert!(
        ra.samples_accepted > 0 && rb.samples_accepted > 0,
        "{ra:?} {rb:?}"
    );
}
