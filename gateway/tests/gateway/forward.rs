//! The forwarder against a real HTTP receiver, reading batches from a real spool.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wearcast_gateway::OverflowPolicy;
use wearcast_gateway::deadletter::{DeadLetter, DeadLetterFile};
use wearcast_gateway::forward::{ForwardStep, Forwarder, http_client};
use wearcast_gateway::spool::{DurableSpool, SpoolSettings, outbox};
use wearcast_gateway::stats::{Totals, names};
use wearcast_gateway::window::{MachineKey, VibrationChannels};
use wearcast_protocol::clock::ManualClock;
use wearcast_protocol::{Channel, GatewayId, MachineId, Sample, TenantId, UnixMs};

use crate::support::FakeServer;

const T0: UnixMs = UnixMs(1_800_000_000_000);

struct Setup {
    server: FakeServer,
    spool: DurableSpool,
    forwarder: Forwarder,
    totals: Arc<Totals>,
    dir: tempfile::TempDir,
}

async fn setup(max_windows: usize) -> Setup {
    let server = FakeServer::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let totals = Arc::new(Totals::default());
    let settings = SpoolSettings {
        dir: dir.path().join("spool"),
        gateway: GatewayId::parse("gw-test").unwrap(),
        segment_bytes: 1 << 20,
        max_bytes: 8 << 20,
        overflow: OverflowPolicy::Block,
        batch_max_windows: max_windows,
        window_ms: 60_000,
        lateness_ms: 0,
        vibration: VibrationChannels::default(),
    };
    let (spool, _) = DurableSpool::open(settings, totals.clone(), T0).unwrap();
    let forwarder = Forwarder::new(
        http_client(Duration::from_secs(5), None, None).unwrap(),
        &server.url,
        DeadLetterFile::new(dir.path()),
        clock,
        totals.clone(),
        Arc::new(Notify::new()),
    );
    Setup {
        server,
        spool,
        forwarder,
        totals,
        dir,
    }
}

/// One closed window per minute `i` in `range`, written as batches and made durable.
fn spool_windows(spool: &mut DurableSpool, range: std::ops::Range<i64>) {
    let key = MachineKey {
        tenant: TenantId::parse("acme").unwrap(),
        machine: MachineId::parse("m1").unwrap(),
    };
    for i in range {
        let sample = Sample {
            ts: T0.plus_ms(i * 60_000),
            seq: None,
            readings: vec![(Channel::parse("spindle.vibration_rms").unwrap(), 1.5)],
        };
        spool.accept_samples(&key, vec![sample], T0);
    }
    spool.close_all(T0);
    spool.sync_blocking().unwrap();
}

fn starts(windows: &[wearcast_protocol::WindowAggregate]) -> Vec<i64> {
    windows
        .iter()
        .map(|w| (w.start.0 - T0.0) / 60_000)
        .collect()
}

#[tokio::test]
async fn a_batch_is_retried_under_the_same_id_until_the_server_takes_it_and_is_stored_once() {
    let mut s = setup(100).await;
    spool_windows(&mut s.spool, 0..3);
    s.server.answer_next(&[503, 503, 503]);
    let outbox = s.spool.outbox();

    let mut failed_ids = Vec::new();
    for _ in 0..3 {
        match s.forwarder.forward_once(&outbox).await {
            ForwardStep::Failed { batch_id, reason } => {
                assert!(reason.contains("503"), "{reason}");
                failed_ids.push(batch_id);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
    // Windows spooled during the outage wait for the next batch.
    spool_windows(&mut s.spool, 3..4);
    let ForwardStep::Delivered {
        batch_id, windows, ..
    } = s.forwarder.forward_once(&outbox).await
    else {
        panic!("expected delivery");
    };
    assert_eq!(windows, 3);
    assert!(failed_ids.iter().all(|id| *id == batch_id));
    s.server.with(|r| {
        assert_eq!(r.attempts, vec![batch_id.clone(); 4]);
        assert_eq!(r.stored.len(), 1);
        assert_eq!(starts(&r.stored[0].windows), [0, 1, 2]);
    });

    let ForwardStep::Delivered { batch_id: next, .. } = s.forwarder.forward_once(&outbox).await
    else {
        panic!("expected the second batch");
    };
    assert_ne!(next, batch_id);
    assert_eq!(s.forwarder.forward_once(&outbox).await, ForwardStep::Idle);
    assert_eq!(Totals::get(&s.totals.windows_forwarded), 4);
    assert!(outbox::lock(&outbox).is_empty());
    // The confirmations are waiting to be logged.
    assert_eq!(s.spool.log_confirmations(), 2);
}

#[tokio::test]
async fn a_refused_batch_is_dead_lettered_and_the_next_one_goes_through() {
    let recorder = wearcast_gateway::stats::MemoryRecorder::default();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let mut s = setup(2).await;
    spool_windows(&mut s.spool, 0..4);
    s.server.answer_next(&[400]);
    let outbox = s.spool.outbox();

    let step = s.forwarder.forward_once(&outbox).await;
    let ForwardStep::DeadLettered { batch_id, status } = step else {
        panic!("expected a dead letter, got {step:?}");
    };
    assert_eq!(status, 400);
    let text = std::fs::read_to_string(s.dir.path().join("dead-letter.jsonl")).unwrap();
    let lines: Vec<DeadLetter> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].batch.batch_id, batch_id);
    assert_eq!(starts(&lines[0].batch.windows), [0, 1]);
    assert_eq!(lines[0].response, "scripted 400");
    // Counted, by the server's answer.
    let dead: Vec<(String, f64)> = recorder
        .snapshot()
        .into_iter()
        .filter(|(k, _)| k.starts_with(names::BATCHES_DEAD_LETTERED))
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].0.contains("status=\"400\""), "{dead:?}");
    assert_eq!(dead[0].1, 1.0);

    assert!(matches!(
        s.forwarder.forward_once(&outbox).await,
        ForwardStep::Delivered { windows: 2, .. }
    ));
    s.server.with(|r| {
        assert_eq!(r.stored.len(), 1);
        assert_eq!(starts(&r.stored[0].windows), [2, 3]);
    });
    assert_eq!(Totals::get(&s.totals.windows_forwarded), 2);
}

#[tokio::test]
async fn too_many_requests_is_retried_not_dead_lettered() {
    let mut s = setup(10).await;
    spool_windows(&mut s.spool, 0..1);
    s.server.answer_next(&[429, 408]);
    let outbox = s.spool.outbox();
    for _ in 0..2 {
        assert!(matches!(
            s.forwarder.forward_once(&outbox).await,
            ForwardStep::Failed { .. }
        ));
    }
    assert!(matches!(
        s.forwarder.forward_once(&outbox).await,
        ForwardStep::Delivered { .. }
    ));
    assert!(!s.dir.path().join("dead-letter.jsonl").exists());
}

#[tokio::test]
async fn an_unreachable_server_keeps_the_batch_for_later() {
    let mut s = setup(10).await;
    // A port nobody listens on: bind, note it, close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut offline = Forwarder::new(
        http_client(Duration::from_secs(2), None, None).unwrap(),
        &dead_url,
        DeadLetterFile::new(s.dir.path()),
        Arc::new(ManualClock::new(T0)),
        s.totals.clone(),
        Arc::new(Notify::new()),
    );
    spool_windows(&mut s.spool, 0..2);
    let outbox = s.spool.outbox();
    let ForwardStep::Failed { batch_id, .. } = offline.forward_once(&outbox).await else {
        panic!("expected a failure");
    };
    assert_eq!(outbox::lock(&outbox).len(), 1);
    let ForwardStep::Delivered { batch_id: sent, .. } = s.forwarder.forward_once(&outbox).await
    else {
        panic!("expected delivery once the server is back");
    };
    assert_eq!(sent, batch_id);
}

#[tokio::test]
async fn a_damaged_batch_is_dropped_and_counted_and_the_next_one_goes_through() {
    let mut s = setup(1).await;
    spool_windows(&mut s.spool, 0..2);
    let outbox = s.spool.outbox();
    let first = outbox::lock(&outbox).batches()[0].clone();
    let path = wearcast_gateway::wal::segment_path(&s.dir.path().join("spool"), first.segment);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = (wearcast_gateway::wal::HEADER_LEN + first.lsn - first.segment) as usize + 20;
    bytes[at] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();

    assert_eq!(
        s.forwarder.forward_once(&outbox).await,
        ForwardStep::Unreadable { lsn: first.lsn }
    );
    assert_eq!(Totals::get(&s.totals.dropped_samples), 1);
    assert!(matches!(
        s.forwarder.forward_once(&outbox).await,
        ForwardStep::Delivered { windows: 1, .. }
    ));
}

#[tokio::test]
async fn the_forward_loop_backs_off_and_delivers_once_the_server_recovers() {
    let mut s = setup(10).await;
    spool_windows(&mut s.spool, 0..2);
    s.server.answer_next(&[503, 503]);
    let wake = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let outbox = s.spool.outbox();
    let task = {
        let (outbox, wake, stop) = (outbox.clone(), wake.clone(), stop.clone());
        let mut forwarder = s.forwarder;
        tokio::spawn(async move {
            forwarder
                .run(&outbox, &wake, Duration::from_millis(50), &stop)
                .await;
        })
    };
    assert!(
        s.server
            .wait_until(Duration::from_secs(10), |r| r.stored.len() == 1)
            .await
    );
    // Woken by new work, the loop sends the next batch without waiting for a poll.
    spool_windows(&mut s.spool, 2..3);
    wake.notify_one();
    assert!(
        s.server
            .wait_until(Duration::from_secs(5), |r| r.stored.len() == 2)
            .await
    );
    stop.cancel();
    task.await.unwrap();
    assert_eq!(Totals::get(&s.totals.windows_forwarded), 3);
    s.server.with(|r| assert_eq!(r.attempts.len(), 4));
}
