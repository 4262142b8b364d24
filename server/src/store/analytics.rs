//! Analytics storage: loading the facts the pure [`crate::analytics`] computes from,
//! NPS surveys (created with the completed work order, answered through their
//! tokenised link) and contract proposals. Every read takes an optional customer: the
//! one place where figures are restricted to a caller's own customer.

use std::collections::HashMap;

use serde_json::json;
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, Transaction};
use wearcast_protocol::UnixMs;

use super::service::WorkOrderForChange;
use super::{Store, StoreError};
use crate::analytics::config::{AnalyticsConfig, HealthConfig, ms};
use crate::analytics::recommend::Recommendation;
use crate::analytics::survey::{SurveyAnswer, SurveyContext, new_token};
use crate::analytics::{
    ContractFact, CustomerFact, Facts, LifeEnd, LifeFact, MachineFact, OfferFact, OfferPrice,
    OfferStatus, ProposalFact, ProposalKind, SurveyFact, UsageFact, WorkOrderFact, date,
    renewal_tally,
};
use crate::config::NotificationsConfig;
use crate::notify::{self, Audience, Notice};
use crate::planner::format_money;
use crate::views::{ProposalView, Rfc3339, SurveyView};

type Result<T> = std::result::Result<T, StoreError>;

fn get<'r, T>(row: &'r SqliteRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    use sqlx::Row;
    Ok(row.try_get(col)?)
}

fn ms_opt(v: Option<i64>) -> Option<UnixMs> {
    v.map(UnixMs)
}

const WEEK_MS: i64 = 7 * UnixMs::DAY;

/// What completing a work order needs to survey the customer.
#[derive(Clone, Copy, Debug)]
pub struct SurveyRequest<'a> {
    pub analytics: &'a AnalyticsConfig,
    /// Surveys count towards the same weekly cap as offers and proposals.
    pub contact_cap_per_week: u32,
}

/// What answering a survey came to.
#[derive(Clone, Debug)]
pub enum SurveyAnswered {
    Recorded(SurveyView),
    /// No survey has this token.
    Unknown,
    AlreadyAnswered(UnixMs),
    Expired(UnixMs),
}

/// A survey as its answer page needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct SurveyForPage {
    pub answered_at: Option<UnixMs>,
    pub expires_at: UnixMs,
    pub context: SurveyContext,
}

/// Offers, surveys and proposals that went to each customer (or customer `?2`) since
/// `?1`: what the weekly contact cap counts.
const CONTACTS_SQL: &str = "SELECT customer_id, COUNT(*) AS n FROM (
    SELECT o.customer_id FROM offer_history h JOIN offers o ON o.id = h.offer_id
      WHERE h.to_status = 'proposed' AND h.from_status IS NULL AND h.at >= ?1
    UNION ALL SELECT customer_id FROM surveys WHERE created_at >= ?1
    UNION ALL SELECT customer_id FROM contract_proposals WHERE sent_at >= ?1)
  WHERE ?2 IS NULL OR customer_id = ?2
  GROUP BY customer_id";

async fn contacts_in(
    tx: &mut Transaction<'_, Sqlite>,
    customer: &str,
    since: UnixMs,
) -> Result<u32> {
    let n = match sqlx::query(CONTACTS_SQL)
        .bind(since.0)
        .bind(customer)
        .fetch_optional(&mut **tx)
        .await?
    {
        Some(r) => get::<i64>(&r, "n")?,
        None => 0,
    };
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Creates the NPS survey of a just-completed work order and its notice, inside the
/// completion's transaction; none when the customer's contact cap for the week is
/// used up (the survey would be one contact too many). Returns the survey id.
pub(crate) async fn request_survey(
    tx: &mut Transaction<'_, Sqlite>,
    wo: &WorkOrderForChange,
    now: UnixMs,
    request: &SurveyRequest<'_>,
    notifications: &NotificationsConfig,
) -> Result<Option<String>> {
    let customer = &wo.site.customer;
    let contacts = contacts_in(tx, customer, now.plus_ms(-WEEK_MS)).await?;
    if contacts >= request.contact_cap_per_week {
        metrics::counter!("wearcast_surveys_held_back_total", "reason" => "contact_cap")
            .increment(1);
        tracing::info!(work_order = %wo.id, %customer, contacts, "no survey: the customer's weekly contact cap is used up");
        return Ok(None);
    }
    let id = format!("sv-{}", uuid::Uuid::now_v7().simple());
    let (token, hash) = new_token();
    let expires = now.plus_ms(request.analytics.survey_expiry_ms());
    let inserted = sqlx::query(
        "INSERT OR IGNORE INTO surveys (id, tenant_id, customer_id, work_order_id, machine_id, token_sha256,
           created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(&wo.site.tenant)
    .bind(customer)
    .bind(&wo.id)
    .bind(&wo.machine)
    .bind(&hash)
    .bind(now.0)
    .bind(expires.0)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(None);
    }
    let (name, email): (String, Option<String>) =
        sqlx::query_as("SELECT name, contact_email FROM customers WHERE id = ?")
            .bind(customer)
            .fetch_one(&mut **tx)
            .await?;
    let link = request.analytics.survey_link(&token);
    let notice = Notice {
        event: "survey.requested",
        audience: Audience::Customer,
        subject: format!("How did our visit to {} go?", wo.site.name),
        body: format!(
            "Dear {name},\n\nour technician has just finished work order {} on {} at {}. \
             One question, one minute: how likely are you to recommend us to a colleague?\n\n\
             {link}\n\nThe link works once, without signing in, until {}.",
            wo.id,
            wo.machine,
            wo.site.name,
            date(expires)
        ),
        customer_email: email,
        data: json!({
            "survey": id,
            "work_order": wo.id,
            "machine": wo.machine,
            "customer": customer,
            "link": link,
            "expires_at": expires.to_rfc3339(),
        }),
    };
    notify::enqueue(tx, notifications, &notice, now).await?;
    metrics::counter!("wearcast_surveys_sent_total").increment(1);
    Ok(Some(id))
}

fn survey_status(answered_at: Option<UnixMs>, expires_at: UnixMs, now: UnixMs) -> &'static str {
    if answered_at.is_some() {
        "answered"
    } else if now >= expires_at {
        "expired"
    } else {
        "open"
    }
}

fn survey_view(r: &SqliteRow, now: UnixMs) -> Result<SurveyView> {
    let answered_at = ms_opt(get(r, "answered_at")?);
    let expires_at = UnixMs(get(r, "expires_at")?);
    Ok(SurveyView {
        id: get(r, "id")?,
        customer: get(r, "customer_id")?,
        work_order: get(r, "work_order_id")?,
        machine: get(r, "machine_id")?,
        status: survey_status(answered_at, expires_at, now).into(),
        created_at: Rfc3339(UnixMs(get(r, "created_at")?)),
        expires_at: Rfc3339(expires_at),
        answered_at: answered_at.map(Rfc3339),
        score: get::<Option<i64>>(r, "score")?.and_then(|v| u8::try_from(v).ok()),
        csat: get::<Option<i64>>(r, "csat")?.and_then(|v| u8::try_from(v).ok()),
        reason: get(r, "reason")?,
    })
}

impl Store {
    /// Everything the analytics compute from, for the tenant or one customer, at
    /// `now`. `usage` (the health settings) adds each customer's usage over the last
    /// two usage windows, a bounded range scan of one channel per machine.
    pub async fn analytics_facts(
        &self,
        customer: Option<&str>,
        now: UnixMs,
        usage: Option<&HealthConfig>,
        renewal_grace_ms: i64,
    ) -> Result<Facts> {
        let pool = self.pool();
        let currency: String =
            sqlx::query_scalar("SELECT currency FROM tenants ORDER BY id LIMIT 1")
                .fetch_optional(pool)
                .await?
                .unwrap_or_default();
        let contacts: HashMap<String, u32> = sqlx::query(CONTACTS_SQL)
            .bind(now.plus_ms(-WEEK_MS).0)
            .bind(customer)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| Ok((get(r, "customer_id")?, get::<i64>(r, "n")? as u32)))
            .collect::<Result<_>>()?;
        let customers =
            sqlx::query("SELECT id, name FROM customers WHERE ?1 IS NULL OR id = ?1 ORDER BY id")
                .bind(customer)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    let id: String = get(r, "id")?;
                    Ok(CustomerFact {
                        contacts_last_week: contacts.get(&id).copied().unwrap_or(0),
                        name: get(r, "name")?,
                        id,
                    })
                })
                .collect::<Result<Vec<_>>>()?;

        // Every contract of the tenant, for the tenant's renewal rate (an aggregate the
        // LTV of a customer with a short history falls back on); only the scope's are
        // kept as facts.
        let all_contracts =
            sqlx::query("SELECT * FROM contracts ORDER BY customer_id, start_at, id")
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(ContractFact {
                        id: get(r, "id")?,
                        customer: get(r, "customer_id")?,
                        tier: get(r, "tier")?,
                        parts_coverage: get(r, "parts_coverage")?,
                        labour_coverage: get(r, "labour_coverage")?,
                        annual_fee_cents: get(r, "annual_fee_cents")?,
                        start: UnixMs(get(r, "start_at")?),
                        renewal: UnixMs(get(r, "renewal_at")?),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
        let tenant_renewals = renewal_tally(
            &all_contracts.iter().collect::<Vec<_>>(),
            now,
            renewal_grace_ms,
        );
        let contracts: Vec<ContractFact> = all_contracts
            .into_iter()
            .filter(|c| customer.is_none_or(|id| c.customer == id))
            .collect();

        let mut open_failures: HashMap<String, Vec<(String, UnixMs)>> = HashMap::new();
        for r in sqlx::query(
            "SELECT c.machine_id, c.key, c.failed_at FROM components c JOIN machines m ON m.id = c.machine_id
             WHERE c.failed_at IS NOT NULL AND (?1 IS NULL OR m.customer_id = ?1) ORDER BY c.failed_at",
        )
        .bind(customer)
        .fetch_all(pool)
        .await?
        {
            open_failures
                .entry(get(&r, "machine_id")?)
                .or_default()
                .push((get(&r, "key")?, UnixMs(get(&r, "failed_at")?)));
        }
        let machines = sqlx::query(
            "SELECT id, customer_id, commissioned_at, last_seen_at FROM machines
             WHERE ?1 IS NULL OR customer_id = ?1 ORDER BY id",
        )
        .bind(customer)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            let id: String = get(r, "id")?;
            Ok(MachineFact {
                customer: get(r, "customer_id")?,
                commissioned_at: UnixMs(get(r, "commissioned_at")?),
                last_seen_at: ms_opt(get(r, "last_seen_at")?),
                open_failures: open_failures.remove(&id).unwrap_or_default(),
                id,
            })
        })
        .collect::<Result<Vec<_>>>()?;

        let offers = sqlx::query(
            "SELECT o.id, o.customer_id, o.machine_id, o.status, o.created_at, o.updated_at, o.decided_at,
                    o.decline_reason, o.superseded_by, o.parts_cents, o.labour_cents, o.travel_cents,
                    o.coverage_cents, o.parts_coverage_cents, o.labour_coverage_cents, o.p_fail_before_next,
                    mm.downtime_cost_cents_per_hour, mm.unplanned_downtime_hours,
                    w.id AS wo_id, w.status AS wo_status, w.created_at AS wo_created_at,
                    w.window_start AS wo_window_start, w.window_end AS wo_window_end,
                    w.completed_at AS wo_completed_at,
                    EXISTS (SELECT 1 FROM work_order_components wc
                            WHERE wc.work_order_id = w.id AND wc.as_found = 'failed') AS wo_found_failed
             FROM offers o JOIN machines m ON m.id = o.machine_id
             JOIN machine_models mm ON mm.id = m.model_id
             LEFT JOIN work_orders w ON w.offer_id = o.id
             WHERE ?1 IS NULL OR o.customer_id = ?1 ORDER BY o.created_at, o.id",
        )
        .bind(customer)
        .fetch_all(pool)
        .await?
        .iter()
        .map(offer_fact)
        .collect::<Result<Vec<_>>>()?;

        let lives = sqlx::query(
            "SELECT l.machine_id, l.component, l.ended_at, l.end_reason, l.work_order_id, m.customer_id
             FROM component_lives l JOIN machines m ON m.id = l.machine_id
             WHERE ?1 IS NULL OR m.customer_id = ?1 ORDER BY l.ended_at",
        )
        .bind(customer)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(LifeFact {
                machine: get(r, "machine_id")?,
                customer: get(r, "customer_id")?,
                component: get(r, "component")?,
                ended_at: UnixMs(get(r, "ended_at")?),
                end: if get::<String>(r, "end_reason")? == "failure" {
                    LifeEnd::Failure
                } else {
                    LifeEnd::Replaced
                },
                work_order: get(r, "work_order_id")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;

        let surveys = sqlx::query(
            "SELECT * FROM surveys WHERE ?1 IS NULL OR customer_id = ?1 ORDER BY created_at, id",
        )
        .bind(customer)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(SurveyFact {
                id: get(r, "id")?,
                customer: get(r, "customer_id")?,
                work_order: get(r, "work_order_id")?,
                machine: get(r, "machine_id")?,
                created_at: UnixMs(get(r, "created_at")?),
                expires_at: UnixMs(get(r, "expires_at")?),
                answered_at: ms_opt(get(r, "answered_at")?),
                score: get::<Option<i64>>(r, "score")?.and_then(|v| u8::try_from(v).ok()),
                csat: get::<Option<i64>>(r, "csat")?.and_then(|v| u8::try_from(v).ok()),
                reason: get(r, "reason")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;

        let proposals = sqlx::query(
            "SELECT customer_id, kind, sent_at FROM contract_proposals
             WHERE ?1 IS NULL OR customer_id = ?1 ORDER BY sent_at",
        )
        .bind(customer)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            let kind: String = get(r, "kind")?;
            Ok(ProposalFact {
                customer: get(r, "customer_id")?,
                kind: ProposalKind::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("proposal kind `{kind}`")))?,
                sent_at: UnixMs(get(r, "sent_at")?),
            })
        })
        .collect::<Result<Vec<_>>>()?;

        let usage = match usage {
            Some(h) => self.usage(customer, now, h).await?,
            None => Vec::new(),
        };
        Ok(Facts {
            currency,
            customers,
            contracts,
            machines,
            offers,
            lives,
            surveys,
            proposals,
            usage,
            tenant_renewals,
        })
    }

    /// Each customer's usage: Σ mean × hours of the usage channel's windows over the
    /// last usage window and the one before. `CROSS JOIN` keeps SQLite driving from the
    /// machines, so each reads one primary-key range of one channel (left to itself it
    /// scans every channel's windows): about 0.5 s per million windows in range.
    async fn usage(
        &self,
        customer: Option<&str>,
        now: UnixMs,
        h: &HealthConfig,
    ) -> Result<Vec<UsageFact>> {
        let window = ms(h.usage_window);
        let mid = now.plus_ms(-window);
        let from = mid.plus_ms(-window);
        sqlx::query(
            "SELECT m.customer_id,
                    SUM(CASE WHEN w.start_ms >= ?3 THEN w.mean * (w.end_ms - w.start_ms) ELSE 0 END) / 3600000.0 AS recent,
                    SUM(CASE WHEN w.start_ms < ?3 THEN w.mean * (w.end_ms - w.start_ms) ELSE 0 END) / 3600000.0 AS previous
             FROM machines m CROSS JOIN telemetry_series w
               ON w.machine_id = m.id AND w.channel = ?2 AND w.start_ms >= ?4 AND w.start_ms < ?5
             WHERE ?1 IS NULL OR m.customer_id = ?1
             GROUP BY m.customer_id",
        )
        .bind(customer)
        .bind(&h.usage_channel)
        .bind(mid.0)
        .bind(from.0)
        .bind(now.0)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(UsageFact {
                customer: get(r, "customer_id")?,
                recent: get::<Option<f64>>(r, "recent")?.unwrap_or(0.0),
                previous: get::<Option<f64>>(r, "previous")?.unwrap_or(0.0),
            })
        })
        .collect()
    }

    /// Surveys and contract proposals sent to each customer since `since` (offers are
    /// counted by [`Store::contacts_since`]); together they make the contact cap.
    pub async fn survey_and_proposal_contacts_since(
        &self,
        since: UnixMs,
    ) -> Result<HashMap<String, u32>> {
        sqlx::query(
            "SELECT customer_id, COUNT(*) AS n FROM (
               SELECT customer_id FROM surveys WHERE created_at >= ?1
               UNION ALL SELECT customer_id FROM contract_proposals WHERE sent_at >= ?1)
             GROUP BY customer_id",
        )
        .bind(since.0)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| Ok((get(r, "customer_id")?, get::<i64>(r, "n")? as u32)))
        .collect()
    }

    pub async fn customer_exists(&self, id: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM customers WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .is_some())
    }

    // ---- surveys -------------------------------------------------------------------

    /// The survey behind a token (by its SHA-256), with what its page shows.
    pub async fn survey_for_page(&self, token_sha256: &str) -> Result<Option<SurveyForPage>> {
        let Some(r) = sqlx::query(
            "SELECT s.answered_at, s.expires_at, s.machine_id, c.name AS customer_name,
                    st.name AS site_name, w.completed_at
             FROM surveys s JOIN customers c ON c.id = s.customer_id
             JOIN work_orders w ON w.id = s.work_order_id JOIN sites st ON st.id = w.site_id
             WHERE s.token_sha256 = ?",
        )
        .bind(token_sha256)
        .fetch_optional(self.pool())
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(SurveyForPage {
            answered_at: ms_opt(get(&r, "answered_at")?),
            expires_at: UnixMs(get(&r, "expires_at")?),
            context: SurveyContext {
                customer_name: get(&r, "customer_name")?,
                machine: get(&r, "machine_id")?,
                site_name: get(&r, "site_name")?,
                visit_date: ms_opt(get(&r, "completed_at")?)
                    .map(date)
                    .unwrap_or_default(),
            },
        }))
    }

    /// Records the one answer of the survey behind a token; a detractor's score also
    /// alerts the service desk. Nothing changes unless it is recorded.
    pub async fn answer_survey(
        &self,
        token_sha256: &str,
        answer: &SurveyAnswer,
        now: UnixMs,
        notifications: &NotificationsConfig,
    ) -> Result<SurveyAnswered> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE surveys SET answered_at = ?, score = ?, reason = ?, csat = ?
             WHERE token_sha256 = ? AND answered_at IS NULL AND expires_at > ?",
        )
        .bind(now.0)
        .bind(i64::from(answer.score))
        .bind(&answer.reason)
        .bind(answer.csat.map(i64::from))
        .bind(token_sha256)
        .bind(now.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let Some(r) = sqlx::query(
            "SELECT s.*, c.name AS customer_name FROM surveys s JOIN customers c ON c.id = s.customer_id
             WHERE s.token_sha256 = ?",
        )
        .bind(token_sha256)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(SurveyAnswered::Unknown);
        };
        let view = survey_view(&r, now)?;
        if changed == 0 {
            return Ok(match view.answered_at {
                Some(at) => SurveyAnswered::AlreadyAnswered(at.0),
                None => SurveyAnswered::Expired(view.expires_at.0),
            });
        }
        let detractor = answer.score <= 6;
        let customer_name: String = get(&r, "customer_name")?;
        let notice = Notice {
            event: "survey.answered",
            audience: if detractor {
                Audience::ServiceDesk
            } else {
                // Integrations only: the customer just answered, the desk needs no mail.
                Audience::Customer
            },
            subject: format!(
                "{}{customer_name} scored {}/10 after work order {}",
                if detractor { "Detractor: " } else { "" },
                answer.score,
                view.work_order
            ),
            body: format!(
                "{customer_name} answered the survey of work order {} on {}: {}/10{}.\nReason: {}",
                view.work_order,
                view.machine,
                answer.score,
                answer.csat.map_or_else(String::new, |c| format!(
                    ", satisfaction with the visit {c}/5"
                )),
                answer.reason.as_deref().unwrap_or("(none given)")
            ),
            customer_email: None,
            data: json!({
                "survey": view.id,
                "customer": view.customer,
                "work_order": view.work_order,
                "machine": view.machine,
                "score": answer.score,
                "csat": answer.csat,
                "reason": answer.reason,
                "detractor": detractor,
            }),
        };
        notify::enqueue(&mut tx, notifications, &notice, now).await?;
        tx.commit().await?;
        Ok(SurveyAnswered::Recorded(view))
    }

    /// Surveys, newest first; `status` is open, answered or expired.
    pub async fn surveys(
        &self,
        customer: Option<&str>,
        status: Option<&str>,
        now: UnixMs,
    ) -> Result<Vec<SurveyView>> {
        let rows = sqlx::query(
            "SELECT * FROM surveys WHERE ?1 IS NULL OR customer_id = ?1 ORDER BY created_at DESC, id",
        )
        .bind(customer)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let v = survey_view(r, now)?;
            if status.is_none_or(|s| s == v.status) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// A new link for an unanswered survey (the old one stops working), valid for
    /// `expiry_ms` from `now`. `Ok(None)`: no such survey; `Err` inside: answered.
    pub async fn reissue_survey_link(
        &self,
        id: &str,
        now: UnixMs,
        expiry_ms: i64,
    ) -> Result<Option<std::result::Result<(String, UnixMs), UnixMs>>> {
        let (token, hash) = new_token();
        let expires = now.plus_ms(expiry_ms);
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE surveys SET token_sha256 = ?, expires_at = ? WHERE id = ? AND answered_at IS NULL",
        )
        .bind(&hash)
        .bind(expires.0)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let answered: Option<Option<i64>> =
            sqlx::query_scalar("SELECT answered_at FROM surveys WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(match (changed, answered) {
            (_, None) => None,
            (0, Some(Some(at))) => Some(Err(UnixMs(at))),
            _ => Some(Ok((token, expires))),
        })
    }

    // ---- proposals -----------------------------------------------------------------

    /// Sends a contract or upgrade proposal: recorded and announced to the customer
    /// through the outbox, unless the customer's weekly contact cap is used up
    /// (checked again inside the transaction): then `Err` with the contacts counted.
    pub async fn send_proposal(
        &self,
        customer: &str,
        recommendation: &Recommendation,
        now: UnixMs,
        contact_cap: u32,
        notifications: &NotificationsConfig,
    ) -> Result<std::result::Result<ProposalView, u32>> {
        // Immediate: it reads (the contacts) before it writes, and the count must still
        // hold when the proposal is recorded.
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let contacts = contacts_in(&mut tx, customer, now.plus_ms(-WEEK_MS)).await?;
        if contacts >= contact_cap {
            return Ok(Err(contacts));
        }
        let (tenant, name, email, currency): (String, String, Option<String>, String) =
            sqlx::query_as(
                "SELECT c.tenant_id, c.name, c.contact_email, t.currency FROM customers c
                 JOIN tenants t ON t.id = c.tenant_id WHERE c.id = ?",
            )
            .bind(customer)
            .fetch_one(&mut *tx)
            .await?;
        let id = format!("pr-{}", uuid::Uuid::now_v7().simple());
        let details = serde_json::to_string(recommendation)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO contract_proposals (id, tenant_id, customer_id, kind, tier, annual_fee_cents, details_json, sent_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&tenant)
        .bind(customer)
        .bind(recommendation.kind.as_str())
        .bind(&recommendation.tier)
        .bind(recommendation.annual_fee_cents)
        .bind(&details)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        let r = recommendation;
        let what = match r.kind {
            ProposalKind::Contract => format!(
                "a {} service contract for your {} machines at {} a year",
                r.tier,
                r.machines,
                format_money(r.annual_fee_cents, &currency)
            ),
            ProposalKind::Upgrade => format!(
                "moving your {} contract to {} for {} more a year",
                r.current_tier.as_deref().unwrap_or("current"),
                r.tier,
                format_money(r.price_cents, &currency)
            ),
        };
        let notice = Notice {
            event: "proposal.sent",
            audience: Audience::Everyone,
            subject: format!("A service proposal for {name}"),
            body: format!(
                "Dear {name},\n\nwe propose {what}. Over the last 12 months you paid {} for {} repairs; \
                 it would have covered {} of that. Your service contact will be in touch.",
                format_money(r.paid_last_year_cents, &currency),
                r.paid_repairs,
                format_money(r.would_have_covered_cents, &currency),
            ),
            customer_email: email,
            data: json!({ "proposal": id, "customer": customer, "recommendation": recommendation }),
        };
        notify::enqueue(&mut tx, notifications, &notice, now).await?;
        tx.commit().await?;
        metrics::counter!("wearcast_proposals_sent_total", "kind" => r.kind.as_str()).increment(1);
        Ok(Ok(ProposalView {
            id,
            customer: customer.to_string(),
            sent_at: Rfc3339(now),
            recommendation: recommendation.clone(),
        }))
    }

    /// Queues `accounts` (JSON) to every webhook as one `accounts.snapshot` event;
    /// returns the number of deliveries queued.
    pub async fn queue_accounts_snapshot(
        &self,
        accounts: serde_json::Value,
        now: UnixMs,
        notifications: &NotificationsConfig,
    ) -> Result<usize> {
        let mut tx = self.write_tx().await?;
        let notice = Notice {
            event: "accounts.snapshot",
            // No customer address: only the integrations get it.
            audience: Audience::Customer,
            subject: "Account health snapshot".into(),
            body: String::new(),
            customer_email: None,
            data: accounts,
        };
        notify::enqueue(&mut tx, notifications, &notice, now).await?;
        tx.commit().await?;
        Ok(notifications
            .webhooks
            .iter()
            .filter(|h| h.events.is_empty() || h.events.iter().any(|e| e == "accounts.snapshot"))
            .count())
    }
}

fn offer_fact(r: &SqliteRow) -> Result<OfferFact> {
    let status: String = get(r, "status")?;
    let parts: i64 = get(r, "parts_cents")?;
    let labour: i64 = get(r, "labour_cents")?;
    let travel: i64 = get(r, "travel_cents")?;
    let coverage: i64 = get(r, "coverage_cents")?;
    // Offers written by a path that does not split the coverage: split it in
    // proportion to the gross amounts.
    let parts_coverage = match get::<Option<i64>>(r, "parts_coverage_cents")? {
        Some(v) => v,
        None if parts + labour + travel > 0 => {
            (coverage as f64 * parts as f64 / (parts + labour + travel) as f64).round() as i64
        }
        None => 0,
    };
    let labour_coverage =
        get::<Option<i64>>(r, "labour_coverage_cents")?.unwrap_or(coverage - parts_coverage);
    let work_order = match get::<Option<String>>(r, "wo_id")? {
        Some(id) => Some(WorkOrderFact {
            id,
            status: get(r, "wo_status")?,
            created_at: UnixMs(get(r, "wo_created_at")?),
            window_start: UnixMs(get(r, "wo_window_start")?),
            window_end: UnixMs(get(r, "wo_window_end")?),
            completed_at: ms_opt(get(r, "wo_completed_at")?),
            found_failed: get::<i64>(r, "wo_found_failed")? != 0,
        }),
        None => None,
    };
    Ok(OfferFact {
        id: get(r, "id")?,
        customer: get(r, "customer_id")?,
        machine: get(r, "machine_id")?,
        status: OfferStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("offer status `{status}`")))?,
        created_at: UnixMs(get(r, "created_at")?),
        updated_at: UnixMs(get(r, "updated_at")?),
        decided_at: ms_opt(get(r, "decided_at")?),
        decline_reason: get(r, "decline_reason")?,
        superseded_by: get(r, "superseded_by")?,
        price: OfferPrice {
            parts,
            labour,
            travel,
            parts_coverage,
            labour_coverage,
        },
        p_fail_before_next: get(r, "p_fail_before_next")?,
        downtime_cost_cents_per_hour: get(r, "downtime_cost_cents_per_hour")?,
        unplanned_downtime_hours: get(r, "unplanned_downtime_hours")?,
        work_order,
    })
}
