//! MQTT in: the broker connection and the task that turns messages into pipeline work.
//!
//! Two tasks, so the connection never waits for processing:
//!
//! - the **poll task** drives rumqttc's event loop (which also sends pings and the acks
//!   the other task queues), subscribes when the broker has no session for us, and
//!   reconnects forever with [`Backoff::reconnect`]. It hands publishes on through an
//!   unbounded channel: the broker's in-flight window for unacknowledged QoS 1
//!   messages (we ack only after processing) is what bounds that queue.
//! - the **processing task** runs each message through the [`Pipeline`], then acks it,
//!   and every `flush_interval` sweeps closed windows into the spool.
//!
//! The session is persistent (`clean_session = false`, fixed client id) and acks are
//! manual, so a message the gateway never finished is redelivered by the broker after a
//! reconnect or restart instead of being lost.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS,
    StateError, SubscribeReasonCode,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use wearcast_protocol::clock::SharedClock;

use crate::backoff::Backoff;
use crate::config::Settings;
use crate::spool::{self, SharedSpool, SpoolItem};
use crate::validate::Pipeline;

/// Room for the topic and MQTT headers on top of the largest accepted payload.
const PACKET_OVERHEAD: usize = 64 * 1024;
/// Requests (mostly acks) queued for the event loop.
const REQUEST_CAPACITY: usize = 1024;
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

/// Drives the connection until `disconnect`; forwards publishes to the processing task
/// until `intake_closed` (messages after that stay unacknowledged, so the broker keeps
/// them for the next session).
pub(crate) async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    subscription: String,
    to_pipeline: mpsc::UnboundedSender<Publish>,
    intake_closed: CancellationToken,
    disconnect: CancellationToken,
    subscribed: watch::Sender<bool>,
) {
    let mut backoff = Backoff::reconnect();
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
                if !intake_closed.is_cancelled() && to_pipeline.send(publish).is_err() {
                    debug!("processing task gone; message left for redelivery");
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                info!(%broker, session_present = ack.session_present, "connected to the MQTT broker");
                // A resumed session still holds the subscription.
                subscribed.send_replace(ack.session_present);
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
                    subscribed.send_replace(true);
                }
            }
            Ok(_) => {}
            Err(e) => {
                subscribed.send_replace(false);
                let delay = backoff.next_delay();
                log_connection_error(&broker, &e, delay);
                tokio::select! {
                    _ = disconnect.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    subscribed.send_replace(false);
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

/// Everything the processing task needs besides its input.
pub(crate) struct Processing {
    pub client: AsyncClient,
    pub spool: SharedSpool,
    pub forwarder_wake: Arc<Notify>,
    pub clock: SharedClock,
    pub flush_interval: Duration,
}

impl Processing {
    fn spool_items(&self, items: Vec<SpoolItem>) {
        if items.is_empty() {
            return;
        }
        let n = items.len();
        if let Err(e) = spool::lock(&self.spool).push_all(items) {
            error!(items = n, error = %e, "cannot spool closed windows; they are lost");
            return;
        }
        self.forwarder_wake.notify_one();
    }

    /// Handles and acks messages until `shutdown`, then closes every open window into
    /// the spool. Returns the pipeline for the final numbers.
    pub async fn run(
        self,
        mut pipeline: Pipeline,
        mut messages: mpsc::UnboundedReceiver<Publish>,
        shutdown: CancellationToken,
    ) -> Pipeline {
        let mut sweep = tokio::time::interval(self.flush_interval);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                // Before messages, so a flood cannot hold windows back.
                _ = sweep.tick() => {
                    let items = pipeline.sweep(self.clock.now());
                    self.spool_items(items);
                }
                message = messages.recv() => {
                    let Some(publish) = message else { break };
                    pipeline.handle(&publish.topic, &publish.payload, self.clock.now());
                    if let Err(e) = self.client.ack(&publish).await {
                        warn!(error = %e, topic = %publish.topic, "cannot queue the ack; the broker will redeliver the message");
                    }
                }
            }
        }
        let open = pipeline.open_windows();
        let items = pipeline.close_all();
        debug!(
            open_windows = open,
            items = items.len(),
            "closed every window for shutdown"
        );
        self.spool_items(items);
        pipeline
    }
}
