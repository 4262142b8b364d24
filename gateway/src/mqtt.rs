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

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet,
    Publish, QoS, Request, StateError, SubscribeReasonCode,
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

    /// Acknowledges `messages` (in order); returns how many acks were queued. Messages
    /// of an earlier connection are skipped: the broker redelivers them.
    pub fn ack<'a>(&self, messages: impl IntoIterator<Item = &'a Incoming>) -> u64 {
        let epoch = self.lock();
        let mut sent = 0;
        for m in messages {
            if m.epoch != *epoch || m.publish.qos == QoS::AtMostOnce {
                continue;
            }
            match self.client.try_ack(&m.publish) {
                Ok(()) => sent += 1,
                Err(ClientError::TryRequest(_)) | Err(ClientError::Request(_)) => {
                    // Only when the event loop is gone (shutdown) or the queue is
                    // somehow full: the broker redelivers the message, the seq
                    // de-duplication drops the copy.
                    debug!(
                        pkid = m.publish.pkid,
                        "ack not queued; the broker will redeliver"
                    );
                }
            }
        }
        sent
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
