//! Notifications through a transactional outbox: a change and the notices about it are
//! written in one database transaction ([`enqueue`]), and [`Dispatcher::step`] delivers
//! what is due — signed webhooks for CRM/ERP integration, e-mail to customer contacts
//! and the service desk — retrying with capped exponential backoff until it succeeds.
//! A receiver that is down only delays its notices.
//!
//! Webhook requests carry `X-Wearcast-Event`, `X-Wearcast-Delivery` (the outbox id: the
//! same notice retried has the same id, so receivers can de-duplicate),
//! `X-Wearcast-Timestamp` and `X-Wearcast-Signature: sha256=<hex>`, the HMAC-SHA256 of
//! `<timestamp>.<body>` with the endpoint's secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Serialize;
use serde_json::json;
use sha2::Sha256;
use sqlx::{Sqlite, Transaction};
use tracing::{debug, warn};
use wearcast_protocol::UnixMs;

use crate::config::NotificationsConfig;
use crate::store::{OutboxEntry, Store, StoreError};

/// Who a notice is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// The customer's contact (and the integrations).
    Customer,
    /// The manufacturer's service desk (and the integrations).
    ServiceDesk,
    /// Both.
    Everyone,
}

/// One notice about a change.
#[derive(Clone, Debug)]
pub struct Notice {
    /// `offer.proposed`, `work_order.completed`, ...
    pub event: &'static str,
    pub audience: Audience,
    pub subject: String,
    pub body: String,
    /// The customer contact's address, if known.
    pub customer_email: Option<String>,
    /// Machine-readable details for webhooks.
    pub data: serde_json::Value,
}

/// Real (wall-clock) milliseconds: retries wait for real receivers.
pub fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes `notice` to the outbox inside `tx`, once per recipient.
pub async fn enqueue(
    tx: &mut Transaction<'_, Sqlite>,
    config: &NotificationsConfig,
    notice: &Notice,
    occurred_at: UnixMs,
) -> Result<(), StoreError> {
    let now_real = real_now();
    let webhook_payload = json!({
        "event": notice.event,
        "occurred_at": occurred_at.to_rfc3339(),
        "data": notice.data,
    })
    .to_string();
    for hook in &config.webhooks {
        if hook.events.is_empty() || hook.events.iter().any(|e| e == notice.event) {
            Store::insert_outbox(
                tx,
                "webhook",
                &hook.url,
                notice.event,
                &webhook_payload,
                occurred_at,
                now_real,
            )
            .await?;
        }
    }
    if let Some(smtp) = &config.smtp {
        let email_payload = json!({ "subject": notice.subject, "body": notice.body }).to_string();
        let mut recipients = Vec::new();
        if matches!(notice.audience, Audience::Customer | Audience::Everyone) {
            recipients.extend(notice.customer_email.clone());
        }
        if matches!(notice.audience, Audience::ServiceDesk | Audience::Everyone) {
            recipients.extend(smtp.service_desk.clone());
        }
        for to in recipients {
            Store::insert_outbox(
                tx,
                "email",
                &to,
                notice.event,
                &email_payload,
                occurred_at,
                now_real,
            )
            .await?;
        }
    }
    Ok(())
}

/// `sha256=<hex>` of HMAC-SHA256(secret, `<timestamp>.<body>`).
pub fn signature(secret: &str, timestamp: &str, body: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What one step delivered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DispatchReport {
    pub delivered: u64,
    pub failed: u64,
}

/// Delivers due outbox entries.
pub struct Dispatcher {
    store: Store,
    config: NotificationsConfig,
    http: reqwest::Client,
}

impl Dispatcher {
    pub fn new(store: Store, config: NotificationsConfig) -> Result<Self, reqwest::Error> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()?;
        Ok(Self {
            store,
            config,
            http,
        })
    }

    /// Delivers up to `limit` due entries once each; failures are rescheduled.
    pub async fn step(&self, limit: i64) -> Result<DispatchReport, StoreError> {
        let mut report = DispatchReport::default();
        for entry in self.store.due_outbox(real_now(), limit).await? {
            match self.deliver(&entry).await {
                Ok(()) => {
                    self.store.outbox_delivered(entry.id, real_now()).await?;
                    metrics::counter!("wearcast_notifications_delivered_total", "channel" => entry.channel.clone())
                        .increment(1);
                    debug!(id = entry.id, event = %entry.event, channel = %entry.channel, "notification delivered");
                    report.delivered += 1;
                }
                Err(reason) => {
                    let backoff = backoff(entry.attempts + 1, self.config.max_backoff);
                    let next = real_now() + backoff.as_millis() as i64;
                    self.store.outbox_failed(entry.id, &reason, next).await?;
                    metrics::counter!("wearcast_notification_failures_total", "channel" => entry.channel.clone())
                        .increment(1);
                    warn!(id = entry.id, event = %entry.event, channel = %entry.channel, target = %entry.target,
                        attempts = entry.attempts + 1, retry_in = ?backoff, error = %reason, "notification not delivered; will retry");
                    report.failed += 1;
                }
            }
        }
        if let Ok(pending) = self.store.outbox_pending().await {
            metrics::gauge!("wearcast_notifications_pending").set(pending as f64);
        }
        Ok(report)
    }

    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), String> {
        match entry.channel.as_str() {
            "webhook" => self.post_webhook(entry).await,
            "email" => self.send_email(entry).await,
            other => Err(format!("unknown channel `{other}`")),
        }
    }

    async fn post_webhook(&self, entry: &OutboxEntry) -> Result<(), String> {
        let hook = self
            .config
            .webhooks
            .iter()
            .find(|w| w.url == entry.target)
            .ok_or_else(|| format!("no webhook configured for {} any more", entry.target))?;
        let timestamp = (real_now() / 1000).to_string();
        let response = self
            .http
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("x-wearcast-event", &entry.event)
            .header("x-wearcast-delivery", entry.id.to_string())
            .header("x-wearcast-timestamp", &timestamp)
            .header(
                "x-wearcast-signature",
                signature(&hook.secret, &timestamp, &entry.payload),
            )
            .body(entry.payload.clone())
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("receiver answered {}", response.status()))
        }
    }

    async fn send_email(&self, entry: &OutboxEntry) -> Result<(), String> {
        let smtp = self
            .config
            .smtp
            .as_ref()
            .ok_or("e-mail is no longer configured")?;
        #[derive(serde::Deserialize)]
        struct Email {
            subject: String,
            body: String,
        }
        let email: Email = serde_json::from_str(&entry.payload).map_err(|e| e.to_string())?;
        let from: Mailbox = smtp
            .from
            .parse()
            .map_err(|e| format!("from address: {e}"))?;
        let to: Mailbox = entry
            .target
            .parse()
            .map_err(|e| format!("to address `{}`: {e}", entry.target))?;
        let message = Message::builder()
            .from(from)
            .to(to)
            .subject(email.subject)
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(email.body)
            .map_err(|e| e.to_string())?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.port)
            .timeout(Some(self.config.timeout))
            .build();
        transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}

/// 1 s, 2 s, 4 s, ... capped.
pub fn backoff(attempts: i64, max: Duration) -> Duration {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    Duration::from_secs(1u64 << exp).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Checked against: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'secret-secret-secret'
        assert_eq!(
            signature("secret-secret-secret", "1700000000", r#"{"a":1}"#),
            "sha256=fa345d5b654e6667128855e14a4938c54b5b813699e6b72c5c4f501aa493ba92"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cap = Duration::from_secs(300);
        assert_eq!(backoff(1, cap), Duration::from_secs(1));
        assert_eq!(backoff(4, cap), Duration::from_secs(8));
        assert_eq!(backoff(30, cap), cap);
    }
}
