//! The forwarder against a real HTTP receiver.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wearcast_gateway::deadletter::{DeadLetter, DeadLetterFile};
use wearcast_gateway::forward::{ForwardStep, Forwarder, http_client};
use wearcast_gateway::spool::{self, MemorySpool, SharedSpool, SpoolItem};
use wearcast_protocol::clock::ManualClock;
use wearcast_protocol::{Channel, GatewayId, MachineId, TenantId, UnixMs, WindowAggregate};

use crate::support::FakeServer;

fn window(i: i64) -> WindowAggregate {
    WindowAggregate {
        tenant: TenantId::parse("acme").unwrap(),
        machine: MachineId::parse("m1").unwrap(),
        channel: Channel::parse("spindle.vibration_rms").unwrap(),
        start: UnixMs(i * 60_000),
        end: UnixMs((i + 1) * 60_000),
        count: 2,
        mean: 1.5,
        min: 1.0,
        max: 2.0,
        std: 0.5f64.sqrt(),
        last: 2.0,
        last_ts: UnixMs(i * 60_000 + 1),
    }
}

struct Setup {
    server: FakeServer,
    spool: SharedSpool,
    forwarder: Forwarder,
    dir: tempfile::TempDir,
}

async fn setup(max_windows: usize) -> Setup {
    let server = FakeServer::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(UnixMs(1_800_000_000_000)));
    let spool = MemorySpool::new(GatewayId::parse("gw-test").unwrap(), clock.clone()).shared();
    let forwarder = Forwarder::new(
        http_client(Duration::from_secs(5)).unwrap(),
        &server.url,
        DeadLetterFile::new(dir.path()),
        clock,
        max_windows,
    );
    Setup {
        server,
        spool,
        forwarder,
        dir,
    }
}

fn push_windows(spool: &SharedSpool, range: std::ops::Range<i64>) {
    spool::lock(spool)
        .push_all(range.map(|i| SpoolItem::Window(window(i))).collect())
        .unwrap();
}

#[tokio::test]
async fn a_batch_is_retried_under_the_same_id_until_the_server_takes_it_and_is_stored_once() {
    let mut s = setup(100).await;
    push_windows(&s.spool, 0..3);
    s.server.answer_next(&[503, 503, 503]);

    let mut failed_ids = Vec::new();
    for _ in 0..3 {
        match s.forwarder.forward_once(&s.spool).await {
            ForwardStep::Failed { batch_id, reason } => {
                assert!(reason.contains("503"), "{reason}");
                failed_ids.push(batch_id);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
    // Windows spooled during the outage wait for the next batch.
    push_windows(&s.spool, 3..4);
    let ForwardStep::Delivered {
        batch_id, windows, ..
    } = s.forwarder.forward_once(&s.spool).await
    else {
        panic!("expected delivery");
    };
    assert_eq!(windows, 3);
    assert!(failed_ids.iter().all(|id| *id == batch_id));
    s.server.with(|r| {
        assert_eq!(r.attempts, vec![batch_id.clone(); 4]);
        assert_eq!(r.stored.len(), 1);
        assert_eq!(r.stored[0].windows, (0..3).map(window).collect::<Vec<_>>());
    });

    let ForwardStep::Delivered { batch_id: next, .. } = s.forwarder.forward_once(&s.spool).await
    else {
        panic!("expected the second batch");
    };
    assert_ne!(next, batch_id);
    assert_eq!(s.forwarder.forward_once(&s.spool).await, ForwardStep::Idle);
    assert_eq!(s.forwarder.windows_forwarded(), 4);
    assert!(spool::lock(&s.spool).depth().is_empty());
}

#[tokio::test]
async fn a_refused_batch_is_dead_lettered_and_the_next_one_goes_through() {
    let mut s = setup(2).await;
    push_windows(&s.spool, 0..4);
    s.server.answer_next(&[400]);

    let step = s.forwarder.forward_once(&s.spool).await;
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
    assert_eq!(lines[0].batch.windows, vec![window(0), window(1)]);
    assert_eq!(lines[0].response, "scripted 400");

    assert!(matches!(
        s.forwarder.forward_once(&s.spool).await,
        ForwardStep::Delivered { windows: 2, .. }
    ));
    s.server.with(|r| {
        assert_eq!(r.stored.len(), 1);
        assert_eq!(r.stored[0].windows, vec![window(2), window(3)]);
    });
    assert_eq!(s.forwarder.windows_forwarded(), 2);
}

#[tokio::test]
async fn too_many_requests_is_retried_not_dead_lettered() {
    let mut s = setup(10).await;
    push_windows(&s.spool, 0..1);
    s.server.answer_next(&[429, 408]);
    for _ in 0..2 {
        assert!(matches!(
            s.forwarder.forward_once(&s.spool).await,
            ForwardStep::Failed { .. }
        ));
    }
    assert!(matches!(
        s.forwarder.forward_once(&s.spool).await,
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
    let clock = Arc::new(ManualClock::new(UnixMs(0)));
    let mut offline = Forwarder::new(
        http_client(Duration::from_secs(2)).unwrap(),
        &dead_url,
        DeadLetterFile::new(s.dir.path()),
        clock,
        10,
    );
    push_windows(&s.spool, 0..2);
    let ForwardStep::Failed { batch_id, .. } = offline.forward_once(&s.spool).await else {
        panic!("expected a failure");
    };
    assert_eq!(spool::lock(&s.spool).depth().windows, 2);
    let ForwardStep::Delivered { batch_id: sent, .. } = s.forwarder.forward_once(&s.spool).await
    else {
        panic!("expected delivery once the server is back");
    };
    assert_eq!(sent, batch_id);
}

#[tokio::test]
async fn the_forward_loop_backs_off_and_delivers_once_the_server_recovers() {
    let mut s = setup(10).await;
    push_windows(&s.spool, 0..2);
    s.server.answer_next(&[503, 503]);
    let wake = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let task = {
        let (spool, wake, stop) = (s.spool.clone(), wake.clone(), stop.clone());
        tokio::spawn(async move {
            s.forwarder
                .run(&spool, &wake, Duration::from_millis(50), &stop)
                .await;
            s.forwarder
        })
    };
    assert!(
        s.server
            .wait_until(Duration::from_secs(10), |r| r.stored.len() == 1)
            .await
    );
    // Two failures: 0.5 s + 1 s of backoff before the third attempt.
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // Woken by a push, the loop sends the next batch without waiting for a poll.
    push_windows(&s.spool, 2..3);
    wake.notify_one();
    assert!(
        s.server
            .wait_until(Duration::from_secs(5), |r| r.stored.len() == 2)
            .await
    );
    stop.cancel();
    let forwarder = task.await.unwrap();
    assert_eq!(forwarder.windows_forwarded(), 3);
    s.server.with(|r| assert_eq!(r.attempts.len(), 4));
}
