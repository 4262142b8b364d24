//! MQTT in: the broker connection, and the gate every acknowledgement goes through.
//!
//! The **poll task** drives rumqttc's event loop (which also sends pings and the acks the
//! ingest task queues), subscribes when the broker has no session for us, and
//! reconnects forever with [`Backoff::reconnect`]. It hands publishes on through an
//! unbounded channel, each tagged with the connection it arrived on: the broker's
//! in-flight window for unacknowledged QoS 1 messages (we ack only once they are
//! durable) is what bounds that queue. It never waits for processing, so pings go out
//! even while the spool is full and nothing is being taken.
//!
//! The session is persistent (`clean_session = false`, fixed client id) and acks are
//! manual, so a message the gateway did not make durable is redelivered by the broker
//! after a reconnect or restart instead of being lost.
//!
//! # Acknowledgements and reconnects
//!
//! A PUBACK names a packet id, and after a reconnect the broker reuses packet ids. An ack
//! for a message of the previous connection that went out on the new one could
//! acknowledge a *different* message that is not durable yet. So acks go through the
//! [`AckGate`]: the poll task bumps the connection epoch, under the gate's lock, when a
//! connection breaks, and purges acks still queued in the client; an ack is sent only
//! for a message of the current epoch. The old connection's messages are redelivered
//! and acknowledged again, which the `seq` de-duplication makes harmless.
//!
//! # When the client's request queue is full
//!
//! rumqttc's event loop takes one request (an ack) per turn, and only when it has no
//! received packets left to hand out; under a burst (a broker emptying a queue of
//! messages stored while the gateway was away) acks pile up faster than it sends them,
//! and `try_ack` finds the queue full. An ack that is not queued is *not* resent by the
//! broker until the next reconnect, and the broker stops delivering once its in-flight
//! window is full of such messages, so an ack is never dropped: [`AckGate::ack`] stops
//! at the first ack that does not fit, and the ingest task keeps that message and the
//! ones after it and hands them over again a moment later.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ClientError, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions,
    Outgoing, Packet, Publish, QoS, Request, StateError, SubscribeReasonCode, TlsConfiguration,
    Transport,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::config::Settings;
use crate::stats::{Totals, names};

/// Room for the topic and MQTT headers on top of the largest accepted payload.
const PACKET_OVERHEAD: usize = 64 * 1024;
/// Requests (mostly acks) queued for the event loop: more than the 65 535 packet ids
/// that can be unacknowledged at once, so an ack never finds the queue full.
const REQUEST_CAPACITY: usize = 70_000;
/// How long a clean disconnect may take at shutdown.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connection options from the checked settings.
pub(crate) fn options(settings: &Settings) -> MqttOptions {
    let mut options = MqttOptions::new(
        settings.client_id.clone(),
        settings.broker.host.clone(),
        settings.broker.port,
    );
    // Payloads between `max_payload_bytes` and the transport limit are received and
    // rejected as `too_large` (and acked). Only beyond the transport limit does rumqttc
    // drop the connection, and the broker would redeliver the message forever, so the
    // transport limit is generous: the broker's own size limit should sit below it.
    let transport_limit = settings
        .limits
        .max_payload_bytes
        .saturating_mul(4)
        .saturating_add(PACKET_OVERHEAD);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(transport_limit, PACKET_OVERHEAD)
        .set_request_channel_capacity(REQUEST_CAPACITY);
    if let Some(tls) = &settings.mqtt_tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    if let Some((user, password)) = &settings.credentials {
        options.set_credentials(user.clone(), password.expose().to_owned());
    }
    options
}

/// Creates the client and its event loop.
pub(crate) fn connect(settings: &Settings) -> (AsyncClient, EventLoop) {
    AsyncClient::new(options(settings), REQUEST_CAPACITY)
}

/// A message and the connection it arrived on.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub publish: Publish,
    pub epoch: u64,
}

/// Sends acknowledgements for messages of the current connection only (module doc).
#[derive(Debug)]
pub(crate) struct AckGate {
    client: AsyncClient,
    epoch: Mutex<u64>,
}

impl AckGate {
    pub fn new(client: AsyncClient) -> Arc<Self> {
        Arc::new(Self {
            client,
            epoch: Mutex::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        self.epoch.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn epoch(&self) -> u64 {
        *self.lock()
    }

    /// Acknowledges `messages` in order until the client's request queue is full.
    /// Returns how many messages are done with (acked, or skipped because they belong
    /// to an earlier connection, whose broker redelivers them, or need no ack) and how
    /// many acks were queued.
    pub fn ack<'a>(&self, messages: impl IntoIterator<Item = &'a Incoming>) -> (usize, u64) {
        let epoch = self.lock();
        let (mut done, mut sent) = (0, 0);
        for m in messages {
            if m.epoch != *epoch || m.publish.qos == QoS::AtMostOnce {
                done += 1;
                continue;
            }
            match self.client.try_ack(&m.publish) {
                Ok(()) => {
                    done += 1;
                    sent += 1;
                }
                Err(ClientError::TryRequest(_)) | Err(ClientError::Request(_)) => {
                    // The queue is full (or the event loop gone, at shutdown): the
                    // caller tries again later.
                    break;
                }
            }
        }
        (done, sent)
    }

    /// Called by the poll task when the connection broke: later acks for messages of
    /// the old connection are not sent, and those still queued are dropped.
    fn connection_lost(&self, eventloop: &mut EventLoop) {
        let mut epoch = self.lock();
        *epoch += 1;
        // rumqttc already dropped the acks queued before the error; this catches any
        // queued between that and taking the lock.
        eventloop.clean();
        eventloop
            .pending
            .retain(|r| !matches!(r, Request::PubAck(_)));
    }
}

/// Drives the connection until `disconnect`; forwards publishes to the ingest task
/// until `intake_closed` (messages after that stay unacknowledged, so the broker keeps
/// them for the next session).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    gate: Arc<AckGate>,
    subscription: String,
    to_pipeline: mpsc::UnboundedSender<Incoming>,
    intake_closed: CancellationToken,
    disconnect: CancellationToken,
    subscribed: Arc<watch::Sender<bool>>,
    totals: Arc<Totals>,
) {
    let mut backoff = Backoff::reconnect();
    let mut had_session = false;
    let mut epoch = gate.epoch();
    let set_subscribed = |on: bool| {
        subscribed.send_replace(on);
        Totals::set(&totals.subscribed, u64::from(on));
        metrics::gauge!(names::BROKER_CONNECTED).set(if on { 1.0 } else { 0.0 });
    };
    let broker = format!(
        "{}:{}",
        eventloop.mqtt_options.broker_address().0,
        eventloop.mqtt_options.broker_address().1
    );
    loop {
        let event = tokio::select! {
            _ = disconnect.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if !intake_closed.is_cancelled()
                    && to_pipeline.send(Incoming { publish, epoch }).is_err()
                {
                    debug!("ingest task gone; message left for redelivery");
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                info!(%broker, session_present = ack.session_present, "connected to the MQTT broker");
                if had_session && !ack.session_present {
                    // Operator action: messages queued for the gateway while it was
                    // away are gone (a broker restarted without persistence, or a
                    // session expiry shorter than the outage).
                    error!(%broker, "the broker no longer had the gateway's session; messages it held for the gateway are lost (enable broker persistence, keep sessions longer)");
                }
                had_session = true;
                // A resumed session still holds the subscription.
                set_subscribed(ack.session_present);
                if !ack.session_present {
                    // Not awaited here: the request channel is drained by this very
                    // loop, so waiting on it could deadlock.
                    let (client, filter) = (client.clone(), subscription.clone());
                    tokio::spawn(async move {
                        if let Err(e) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
                            error!(%filter, error = %e, "cannot subscribe; no messages will arrive");
                        }
                    });
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                    error!(filter = %subscription, "the broker refused the subscription; no messages will arrive");
                } else {
                    info!(filter = %subscription, "subscribed");
                    set_subscribed(true);
                }
            }
            Ok(_) => {}
            Err(e) => {
                set_subscribed(false);
                gate.connection_lost(&mut eventloop);
                epoch = gate.epoch();
                let delay = backoff.next_delay();
                log_connection_error(&broker, &e, delay);
                tokio::select! {
                    _ = disconnect.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    set_subscribed(false);
    disconnect_cleanly(&mut eventloop, &client).await;
}

fn log_connection_error(broker: &str, e: &ConnectionError, retry_in: Duration) {
    let retry_in = format!("{retry_in:?}");
    if let ConnectionError::MqttState(StateError::Deserialization(
        rumqttc::Error::PayloadSizeLimitExceeded(size),
    )) = e
    {
        // The broker will redeliver the same message on reconnect: operator action.
        error!(%broker, size, %retry_in,
            "the broker sent a message larger than the gateway's transport limit; lower the broker's message size limit (e.g. Mosquitto message_size_limit) or raise max_payload_bytes");
    } else if let ConnectionError::ConnectionRefused(
        code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
    ) = e
    {
        error!(%broker, ?code, %retry_in,
            "the broker refused the gateway's MQTT credentials; set gateway.mqtt_username and gateway.mqtt_password_file to a gateway user (wearcast device gateway-password)");
    } else {
        warn!(%broker, error = %e, %retry_in, "MQTT connection lost; reconnecting");
    }
}

/// Sends DISCONNECT after the acks already queued (the request channel is FIFO), so the
/// broker keeps the session and redelivers only what was never acknowledged.
async fn disconnect_cleanly(eventloop: &mut EventLoop, client: &AsyncClient) {
    if eventloop.network.is_none() {
        return;
    }
    if let Err(e) = client.try_disconnect() {
        warn!(error = %e, "cannot queue the MQTT disconnect");
        return;
    }
    let flushed = tokio::time::timeout(DISCONNECT_TIMEOUT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    })
    .await;
    match flushed {
        Ok(()) => info!("disconnected from the MQTT broker"),
        Err(_) => warn!("MQTT disconnect timed out"),
    }
}

#[cfg(test)]
mod tests {
    //! The ack path against the Mosquitto broker on 127.0.0.1:1883 (skipped with a
    //! message without one, unless `CI=true`).
    #![allow(clippy::unwrap_used)]

    use super::*;

    const BROKER: (&str, u16) = ("127.0.0.1", 1883);

    async fn broker_available(test: &str) -> bool {
        let reachable = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(BROKER),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !reachable {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: no MQTT broker at {}:{} and CI=true",
                BROKER.0,
                BROKER.1
            );
            eprintln!("SKIPPED {test}: no MQTT broker at {BROKER:?} (start Mosquitto)");
        }
        reachable
    }

    fn subscriber(client_id: &str, capacity: usize) -> (AsyncClient, EventLoop) {
        let mut options = MqttOptions::new(client_id, BROKER.0, BROKER.1);
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_request_channel_capacity(capacity);
        AsyncClient::new(options, capacity)
    }

    /// Polls `eventloop` until `idle` passes without an event or the connection ends
    /// (as after a DISCONNECT); returns the publishes seen.
    async fn poll_for(eventloop: &mut EventLoop, idle: Duration) -> Vec<Publish> {
        let mut got = Vec::new();
        while let Ok(Ok(event)) = tokio::time::timeout(idle, eventloop.poll()).await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                got.push(p);
            }
        }
        got
    }

    /// The bug this guards against: under a burst the client's request queue filled up,
    /// acks that did not fit were dropped, the broker never resent those messages on the
    /// live connection and, its in-flight window full of them, stopped delivering.
    #[tokio::test]
    async fn acks_that_do_not_fit_the_client_queue_wait_and_none_is_lost() {
        let test = "acks_that_do_not_fit_the_client_queue_wait_and_none_is_lost";
        if !broker_available(test).await {
            return;
        }
        let id = format!("ackq-{}-{}", std::process::id(), rand_suffix());
        let topic = format!("wearcast-test/{id}");
        const CAPACITY: usize = 4;
        const N: usize = 200;

        let (client, mut eventloop) = subscriber(&id, CAPACITY);
        client.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
        poll_for(&mut eventloop, Duration::from_millis(300)).await;

        let (publisher, mut pub_loop) = AsyncClient::new(
            MqttOptions::new(format!("{id}-pub"), BROKER.0, BROKER.1),
            N + 10,
        );
        for i in 0..N {
            publisher
                .publish(&topic, QoS::AtLeastOnce, false, i.to_string())
                .await
                .unwrap();
        }
        let publishing = tokio::spawn(async move {
            let mut acked = 0;
            while acked < N {
                if let Event::Incoming(Packet::PubAck(_)) = pub_loop.poll().await.unwrap() {
                    acked += 1;
                }
            }
        });

        let gate = AckGate::new(client.clone());
        // What the ingest task does: ack from the front, keep what did not fit.
        let mut queue: std::collections::VecDeque<Incoming> = Default::default();
        let send = |queue: &mut std::collections::VecDeque<Incoming>| {
            let (done, sent) = gate.ack(queue.iter());
            queue.drain(..done);
            sent
        };
        // The broker sends up to its in-flight window (Mosquitto: 20) before it needs
        // acks; none are sent while the event loop is not polled, so the queue fills.
        let first = poll_for(&mut eventloop, Duration::from_millis(500)).await;
        assert!(
            first.len() > 2 * CAPACITY,
            "the broker sent only {} messages before acks; the test needs more",
            first.len()
        );
        let mut received: Vec<String> = Vec::new();
        for publish in first {
            received.push(String::from_utf8(publish.payload.to_vec()).unwrap());
            queue.push_back(Incoming { publish, epoch: 0 });
        }
        let before = queue.len();
        let sent = send(&mut queue);
        assert_eq!(sent, CAPACITY as u64, "the client queue takes {CAPACITY}");
        assert_eq!(queue.len(), before - CAPACITY, "what did not fit waits");

        // Polling drains the client queue; retrying hands over the rest, and the broker
        // goes on delivering.
        let mut total_sent = sent;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while received.len() < N || !queue.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "stalled: {} of {N} received, {} acks waiting",
                received.len(),
                queue.len()
            );
            for publish in poll_for(&mut eventloop, Duration::from_millis(20)).await {
                received.push(String::from_utf8(publish.payload.to_vec()).unwrap());
                queue.push_back(Incoming { publish, epoch: 0 });
            }
            total_sent += send(&mut queue);
        }
        // Let the last acks leave, then disconnect cleanly.
        poll_for(&mut eventloop, Duration::from_millis(200)).await;
        client.try_disconnect().unwrap();
        poll_for(&mut eventloop, Duration::from_millis(200)).await;
        publishing.await.unwrap();

        let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        assert_eq!(received, expected, "every message once, in order");
        assert_eq!(total_sent, N as u64);

        // The broker holds nothing unacknowledged for the session: a reconnect gets no
        // redelivery.
        let (again, mut eventloop) = subscriber(&id, CAPACITY);
        let redelivered = poll_for(&mut eventloop, Duration::from_millis(700)).await;
        assert!(
            redelivered.is_empty(),
            "{} messages redelivered: their acks were lost",
            redelivered.len()
        );
        // Leave no session behind.
        drop((again, eventloop));
        let mut options = MqttOptions::new(&id, BROKER.0, BROKER.1);
        options.set_clean_session(true);
        let (cleaner, mut eventloop) = AsyncClient::new(options, 10);
        poll_for(&mut eventloop, Duration::from_millis(200)).await;
        let _ = cleaner.try_disconnect();
        poll_for(&mut eventloop, Duration::from_millis(100)).await;
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    }
}
