//! The gateway (`wearcast gateway`) under the faults it must survive, between a
//! Mosquitto of the test's own and the real server (`wearcast server` on SQLite):
//! `kill -9` at random moments, a long server outage, a broker restart, a full disk
//! budget under each policy, and one of two gateways sharing a subscription dying.
//!
//! Every test publishes numbered samples, each in its own one-second window with its
//! seq as the value, and asks the server's telemetry API what it stored: each sample
//! the broker acknowledged must be there once (a window holding two samples, or a
//! mean other than its seq, is a duplicate or a mix-up).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wearcast_protocol::UnixMs;

use crate::processes::{
    GatewayProcess, GatewaySettings, OwnBroker, Publisher, ServerProcess, exactly_once, exclusive,
    manifest, mosquitto_available,
};

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

/// Ids that do not collide between runs (client ids name broker sessions).
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}{}x{}", std::process::id(), nanos % 1_000_000_000)
}

/// One test's world: its broker, the real server knowing `machines`, a temp dir.
struct Rig {
    broker: OwnBroker,
    server: ServerProcess,
    tenant: String,
    machines: Vec<String>,
    dir: tempfile::TempDir,
}

impl Rig {
    fn start(machines: usize) -> Self {
        let broker = OwnBroker::start();
        let tenant = "faults".to_owned();
        let machines: Vec<String> = (1..=machines).map(|i| format!("m{i}")).collect();
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(dir.path(), &manifest(&tenant, &machines));
        Self {
            broker,
            server,
            tenant,
            machines,
            dir,
        }
    }

    fn settings(&self, name: &str) -> GatewaySettings {
        GatewaySettings::new(
            &self.broker,
            &self.server,
            &unique(name),
            &self.dir.path().join(name),
        )
    }

    fn topic(&self, machine: &str) -> String {
        format!("wearcast/v1/{}/{machine}/telemetry", self.tenant)
    }

    async fn stored(&self, machine: &str, base: UnixMs) -> BTreeMap<u64, (u64, f64)> {
        self.server.stored_by_seq(machine, VIB, base).await
    }

    /// Waits until the server holds every seq `1..=n` of `machine`, then checks each
    /// is there exactly once.
    async fn assert_all_stored_once(
        &self,
        machine: &str,
        base: UnixMs,
        n: u64,
        gateways: &[&GatewayProcess],
    ) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut stored = self.stored(machine, base).await;
        while (stored.len() as u64) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            stored = self.stored(machine, base).await;
        }
        let problems = exactly_once(&stored, n);
        if (stored.len() as u64) < n || !problems.is_empty() {
            for g in gateways {
                eprintln!("---- {} log tail ----\n{}", g.name, g.log_tail());
            }
            eprintln!("---- server log tail ----\n{}", self.server.log_tail());
        }
        assert!(
            stored.len() as u64 >= n,
            "only {} of {n} seqs stored",
            stored.len()
        );
        assert!(problems.is_empty(), "{problems:#?}");
    }
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
    let rig = Rig::start(1);
    let machine = &rig.machines[0];
    let settings = rig.settings("gw");
    let mut gateway = GatewayProcess::start("gateway", &settings, rig.dir.path());
    gateway.wait_subscribed(Duration::from_secs(30)).await;

    let mut publisher =
        Publisher::connect(&rig.broker, &unique("pub"), rig.topic(machine), 3).await;
    let kills = 22;
    for _ in 0..kills {
        // A steady stream, and the gateway dies somewhere in the middle of it: while
        // starting, handling, syncing, acknowledging or forwarding.
        let life = Duration::from_millis(150 + rng.below(450));
        publisher.stream(400, life).await;
        gateway.kill9();
        // Sometimes the broker's queue grows before the restart.
        publisher
            .stream(400, Duration::from_millis(rng.below(150)))
            .await;
        gateway = GatewayProcess::start("gateway", &settings, rig.dir.path());
    }
    publisher.stream(400, Duration::from_millis(300)).await;
    publisher.wait_acked(Duration::from_secs(30)).await;
    let n = publisher.published();
    eprintln!("{n} samples published across {kills} kills");

    rig.assert_all_stored_once(machine, publisher.base(), n, &[&gateway])
        .await;
    let stats = gateway.stats().await.expect("metrics of the last gateway");
    // A kill leaves at most a torn tail behind, which recovery cuts; never a damaged
    // segment, and nothing acknowledged is dropped.
    assert_eq!(stats.corrupt_segments, 0, "{stats:?}");
    assert_eq!(stats.samples_dropped, 0, "{stats:?}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_server_outage_is_spooled_on_disk_and_drained_exactly_once_when_it_returns() {
    let test = "a_long_server_outage_is_spooled_on_disk_and_drained_exactly_once_when_it_returns";
    if !mosquitto_available(test) {
        return;
    }
    let _one_at_a_time = exclusive().await;
    let mut rig = Rig::start(1);
    let machine = rig.machines[0].clone();
    let settings = rig.settings("gw");
    // glibc keeps up to 8 malloc arenas per core, each holding on to what its threads
    // once used; two keep that noise out of a measurement about the backlog.
    let mut gateway = GatewayProcess::start_with_env(
        "gateway",
        &settings,
        rig.dir.path(),
        &[("MALLOC_ARENA_MAX", "2")],
    );
    gateway.wait_subscribed(Duration::from_secs(30)).await;
    // Twenty readings a sample: every sample adds kilobytes to the spool.
    let mut publisher =
        Publisher::connect(&rig.broker, &unique("pub"), rig.topic(&machine), 20).await;

    publisher.publish(500).await;
    publisher.wait_acked(Duration::from_secs(30)).await;
    rig.assert_all_stored_once(&machine, publisher.base(), 500, &[&gateway])
        .await;

    rig.server.stop().await;
    // Four equal quarters of the outage: the first three warm up buffers and the
    // allocator (resident memory climbs to its working set at its own pace), the last
    // must not cost memory in proportion to what it adds to the spool.
    let mut points = Vec::new();
    for _ in 0..4 {
        publisher.publish(6_000).await;
        publisher.wait_acked(Duration::from_secs(60)).await;
        let n = publisher.published();
        let spooled = gateway
            .wait_stats(Duration::from_secs(120), |s| s.messages_acked >= n)
            .await;
        assert!(
            spooled,
            "{:?}\n{}",
            gateway.stats().await,
            gateway.log_tail()
        );
        let spool = gateway.stats().await.map_or(0, |s| s.spool_bytes);
        points.push((gateway.rss_bytes(), spool));
    }
    let n = publisher.published();
    let [(rss0, _), (rss_a, _), (rss_b, spool1), (rss2, spool2)] = points[..] else {
        unreachable!()
    };
    // Against the high-water mark of the warm-up quarters: resident memory dips and
    // climbs back as the allocator returns and reuses pages, which is not growth.
    let rss1 = rss0.max(rss_a).max(rss_b);
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
    // A backlog held in memory costs at least what it adds to the spool (payloads are
    // bigger decoded than on disk); the allocator's working set, which at full speed
    // still creeps up by about a third of that in some runs, stays below half.
    assert!(
        rss2.saturating_sub(rss1) < added / 2,
        "memory grew {} bytes while the spool grew {added}: the backlog is in memory",
        rss2.saturating_sub(rss1)
    );

    rig.server.restart().await;
    rig.assert_all_stored_once(&machine, publisher.base(), n, &[&gateway])
        .await;
    let drained = gateway
        .wait_stats(Duration::from_secs(30), |s| s.spool_batches == 0)
        .await;
    assert!(drained, "{:?}", gateway.stats().await);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_restart_the_gateway_reconnects_and_nothing_acknowledged_is_lost() {
    let test = "after_a_broker_restart_the_gateway_reconnects_and_nothing_acknowledged_is_lost";
    if !mosquitto_available(test) {
        return;
    }
    let _one_at_a_time = exclusive().await;
    let mut rig = Rig::start(1);
    let machine = rig.machines[0].clone();
    let settings = rig.settings("gw");
    let mut gateway = GatewayProcess::start("gateway", &settings, rig.dir.path());
    gateway.wait_subscribed(Duration::from_secs(30)).await;
    let mut publisher =
        Publisher::connect(&rig.broker, &unique("pub"), rig.topic(&machine), 3).await;

    publisher.stream(400, Duration::from_millis(1500)).await;
    rig.broker.restart();
    publisher.stream(400, Duration::from_millis(1500)).await;
    rig.broker.restart();
    publisher.stream(400, Duration::from_millis(1000)).await;
    publisher.wait_acked(Duration::from_secs(60)).await;
    let n = publisher.published();

    rig.assert_all_stored_once(&machine, publisher.base(), n, &[&gateway])
        .await;
    let stats = gateway.stats().await.expect("metrics");
    assert_eq!(stats.samples_dropped, 0, "{stats:?}");
    assert!(
        stats.subscribed,
        "resubscribed after the restarts: {stats:?}"
    );
    gateway.stop().await;
}

/// `/readyz` says whether the gateway can take messages: ready while subscribed on a
/// connected broker, 503 (with why) while the broker is down, ready again once it has
/// reconnected; `/healthz` (the process answers) stays 200 throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_is_ready_only_while_subscribed_and_alive_throughout() {
    let test = "the_gateway_is_ready_only_while_subscribed_and_alive_throughout";
    if !mosquitto_available(test) {
        return;
    }
    let _one_at_a_time = exclusive().await;
    let mut rig = Rig::start(1);
    let settings = rig.settings("gw");
    let mut gateway = GatewayProcess::start("gateway", &settings, rig.dir.path());
    gateway.wait_subscribed(Duration::from_secs(30)).await;
    let ready = |want: u16| {
        let gateway = &gateway;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some((status, body)) = gateway.ops_get("/readyz").await
                    && status == want
                {
                    return body;
                }
                assert!(
                    Instant::now() < deadline,
                    "/readyz never answered {want}:\n{}",
                    gateway.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let up = ready(200).await;
    assert_eq!(
        (&up["broker_connected"], &up["spool_full"]),
        (&true.into(), &false.into()),
        "{up}"
    );

    rig.broker.stop();
    let down = ready(503).await;
    assert_eq!(
        (&down["healthy"], &down["broker_connected"]),
        (&false.into(), &false.into()),
        "{down}"
    );
    let (status, live) = gateway.ops_get("/healthz").await.expect("/healthz answers");
    assert_eq!((status, &live["status"]), (200, &"ok".into()));

    rig.broker.start_again();
    let back = ready(200).await;
    assert_eq!(back["broker_connected"], true, "{back}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_under_drop_oldest_drops_exactly_what_it_counts_and_recovers_by_itself() {
    let test = "a_full_spool_under_drop_oldest_drops_exactly_what_it_counts_and_recovers_by_itself";
    if !mosquitto_available(test) {
        return;
    }
    let _one_at_a_time = exclusive().await;
    let mut rig = Rig::start(1);
    let machine = rig.machines[0].clone();
    let mut settings = rig.settings("gw");
    settings.spool_max_bytes = Some(512 * 1024);
    settings.spool_segment_bytes = Some(64 * 1024);
    settings.spool_overflow = Some("drop_oldest");
    let mut gateway = GatewayProcess::start("gateway", &settings, rig.dir.path());
    gateway.wait_subscribed(Duration::from_secs(30)).await;
    let mut publisher =
        Publisher::connect(&rig.broker, &unique("pub"), rig.topic(&machine), 3).await;

    rig.server.stop().await;
    publisher.publish(3000).await;
    publisher.wait_acked(Duration::from_secs(30)).await;
    let n = publisher.published();
    let taken = gateway
        .wait_stats(Duration::from_secs(60), |s| s.messages_acked >= n)
        .await;
    assert!(taken, "{:?}\n{}", gateway.stats().await, gateway.log_tail());
    let during = gateway.stats().await.expect("metrics");
    assert!(during.samples_dropped > 0, "{during:?}");
    assert!(
        during.spool_bytes <= 512 * 1024 + 2 * 64 * 1024,
        "{during:?}"
    );

    // Space returns: the server takes the backlog, and new samples flow again.
    rig.server.restart().await;
    publisher.publish(200).await;
    publisher.wait_acked(Duration::from_secs(30)).await;
    let total = publisher.published();
    let base = publisher.base();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stored = rig.stored(&machine, base).await;
    while (stored.range(n + 1..).count() as u64) < total - n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        stored = rig.stored(&machine, base).await;
    }
    assert_eq!(
        stored.range(n + 1..).count() as u64,
        total - n,
        "the samples after the outage: {}",
        gateway.log_tail()
    );
    let drained = gateway
        .wait_stats(Duration::from_secs(30), |s| s.spool_batches == 0)
        .await;
    let after = gateway.stats().await.expect("metrics");
    assert!(drained, "{after:?}");
    let stored = rig.stored(&machine, base).await;
    assert!(
        stored
            .iter()
            .all(|(seq, (count, mean))| *count == 1 && *mean == *seq as f64),
        "a sample stored twice or mixed up"
    );
    assert_eq!(
        stored.len() as u64 + after.samples_dropped,
        total,
        "stored + dropped must be every sample: {after:?}"
    );
    assert!(after.batches_dropped > 0, "{after:?}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_under_block_stops_acknowledging_and_loses_nothing() {
    let test = "a_full_spool_under_block_stops_acknowledging_and_loses_nothing";
    if !mosquitto_available(test) {
        return;
    }
    let _one_at_a_time = exclusive().await;
    let mut rig = Rig::start(1);
    let machine = rig.machines[0].clone();
    let mut settings = rig.settings("gw");
    settings.spool_max_bytes = Some(512 * 1024);
    settings.spool_segment_bytes = Some(64 * 1024);
    settings.spool_overflow = Some("block");
    let mut gateway = GatewayProcess::start("gateway", &settings, rig.dir.path());
    gateway.wait_subscribed(Duration::from_secs(30)).await;
    let mut publisher =
        Publisher::connect(&rig.broker, &unique("pub"), rig.topic(&machine), 3).await;

    rig.server.stop().await;
    publisher.publish(3000).await;
    publisher.wait_acked(Duration::from_secs(30)).await;
    let n = publisher.published();
    let full = gateway
        .wait_stats(Duration::from_secs(60), |s| s.spool_full)
        .await;
    assert!(full, "{:?}", gateway.stats().await);
    let during = gateway.stats().await.expect("metrics");
    // The broker holds the rest.
    assert!(during.messages_acked < n, "{during:?}");

    rig.server.restart().await;
    rig.assert_all_stored_once(&machine, publisher.base(), n, &[&gateway])
        .await;
    let after = gateway.stats().await.expect("metrics");
    assert_eq!(after.samples_dropped, 0, "{after:?}");
    assert!(!after.spool_full, "{after:?}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_a_subscription_and_when_one_is_killed_every_sample_is_still_stored_once()
 {
    let test = "two_gateways_share_a_subscription_and_when_one_is_killed_every_sample_is_still_stored_once";
    if !mosquitto_available(test) {
        return;
    }
    let _one_at_a_time = exclusive().await;
    let rig = Rig::start(4);
    let group = unique("g");
    let settings = |name: &str| {
        let mut s = rig.settings(name);
        s.share_group = Some(group.clone());
        s
    };
    let (settings_a, settings_b) = (settings("a"), settings("b"));
    let mut a = GatewayProcess::start("a", &settings_a, rig.dir.path());
    let mut b = GatewayProcess::start("b", &settings_b, rig.dir.path());
    a.wait_subscribed(Duration::from_secs(30)).await;
    b.wait_subscribed(Duration::from_secs(30)).await;

    let mut publishers = Vec::new();
    for m in &rig.machines {
        publishers.push(Publisher::connect(&rig.broker, &unique("pub"), rig.topic(m), 3).await);
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
    let before_b = b.stats().await.map_or(0, |s| s.samples_accepted);
    publishers = stream(&mut publishers, 1500).await;
    // The survivor carries on alone meanwhile.
    let carried = b
        .wait_stats(Duration::from_secs(30), |s| {
            s.samples_accepted > before_b + 100
        })
        .await;
    assert!(carried, "{:?}", b.stats().await);
    // A supervisor restarts the dead one: what it acknowledged is in its spool.
    let mut a = GatewayProcess::start("a", &settings_a, rig.dir.path());
    a.wait_subscribed(Duration::from_secs(30)).await;
    publishers = stream(&mut publishers, 1000).await;
    for p in &publishers {
        p.wait_acked(Duration::from_secs(30)).await;
    }
    for (m, p) in rig.machines.iter().zip(&publishers) {
        rig.assert_all_stored_once(m, p.base(), p.published(), &[&a, &b])
            .await;
    }
    let (sa, sb) = (a.stats().await, b.stats().await);
    assert!(
        sa.as_ref().is_some_and(|s| s.samples_accepted > 0)
            && sb.as_ref().is_some_and(|s| s.samples_accepted > 0),
        "both gateways took a share after the restart: {sa:?} {sb:?}"
    );
    a.stop().await;
    b.stop().await;
}
