//! Field-service storage: technicians, stock, planned stops, offer decisions, work
//! orders, component lives and the notification outbox. Every change that customers or
//! integrations hear about writes its notices in the same transaction.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use chrono_tz::Tz;
use serde_json::json;
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, Transaction};
use wearcast_protocol::UnixMs;
use wearcast_protocol::registry::{ServiceOrganisation, Technician};

use super::{Store, StoreError, Visibility};
use crate::config::NotificationsConfig;
use crate::model::RulEstimate;
use crate::notify::{self, Audience, Notice};
use crate::planner::calendar::{Occurrence, WeeklyWindow, occurrences};
use crate::planner::format_money;
use crate::service::{Assignment, Busy, TechnicianProfile};
use crate::views::*;

type Result<T> = std::result::Result<T, StoreError>;

fn get<'r, T>(row: &'r SqliteRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    use sqlx::Row;
    Ok(row.try_get(col)?)
}

fn ms(v: i64) -> UnixMs {
    UnixMs(v)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// A site's identity, place and clock.
#[derive(Clone, Debug)]
pub struct SiteInfo {
    pub id: String,
    pub tenant: String,
    pub customer: String,
    pub name: String,
    pub region: String,
    pub timezone: Tz,
}

/// One component of an offer, with what deciding on it needs.
#[derive(Clone, Debug)]
pub struct OfferPart {
    pub component: String,
    pub part: String,
    pub labour_hours: f64,
    pub lead_time_days: f64,
    pub stock: i64,
    pub reserved: i64,
    /// The component's latest estimate, if any.
    pub estimate: Option<RulEstimate>,
}

/// An offer with what accepting, declining or moving it needs.
#[derive(Clone, Debug)]
pub struct OfferForDecision {
    pub id: String,
    pub status: String,
    pub urgent: bool,
    pub window: Occurrence,
    pub risk_tolerance: f64,
    pub machine: String,
    pub machine_model: String,
    pub site: SiteInfo,
    pub parts: Vec<OfferPart>,
    pub superseded_by: Option<String>,
    pub work_order: Option<String>,
}

impl OfferForDecision {
    pub fn work_hours(&self) -> f64 {
        self.parts
            .iter()
            .map(|p| p.labour_hours)
            .sum::<f64>()
            .max(1.0)
    }
}

/// A work order with what changing it needs.
#[derive(Clone, Debug)]
pub struct WorkOrderForChange {
    pub id: String,
    pub offer: String,
    pub status: String,
    pub machine: String,
    pub machine_model: String,
    pub site: SiteInfo,
    pub window: Occurrence,
    pub technician: Option<String>,
    pub components: Vec<(String, String)>,
    pub work_hours: f64,
}

/// As-found condition of a removed part.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AsFound {
    Good,
    Worn,
    Failed,
}

impl AsFound {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Worn => "worn",
            Self::Failed => "failed",
        }
    }
}

/// What the technician recorded for one component.
#[derive(Clone, Debug)]
pub struct ComponentFinding {
    pub component: String,
    pub as_found: AsFound,
    pub notes: String,
}

/// A notification waiting for delivery.
#[derive(Clone, Debug)]
pub struct OutboxEntry {
    pub id: i64,
    pub channel: String,
    pub target: String,
    pub event: String,
    pub payload: String,
    pub attempts: i64,
}

/// Filters for listing work orders.
#[derive(Clone, Debug, Default)]
pub struct WorkOrderFilter {
    pub technician: Option<String>,
    pub status: Option<String>,
    pub machine: Option<String>,
    pub site: Option<String>,
    pub from: Option<UnixMs>,
    pub to: Option<UnixMs>,
}

/// Why a change was refused by the database state (checked inside the transaction).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeRefused {
    /// The offer or work order is no longer in the state the change needs.
    State(String),
    /// The technician got booked meanwhile.
    TechnicianBusy(String),
    /// No part left on the shelf or on order for this work.
    Other(String),
}

impl Store {
    // ---- service organisation ------------------------------------------------------

    /// Upserts technicians and sets stock levels.
    pub async fn import_service(
        &self,
        tenant: &str,
        org: &ServiceOrganisation,
    ) -> Result<(usize, usize)> {
        let mut tx = self.write_tx().await?;
        for t in &org.technicians {
            upsert_technician(&mut tx, tenant, t).await?;
        }
        for s in &org.stock {
            sqlx::query("UPDATE parts SET stock = ? WHERE id = ?")
                .bind(i64::from(s.quantity))
                .bind(s.part.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((org.technicians.len(), org.stock.len()))
    }

    pub async fn upsert_technician(&self, tenant: &str, t: &Technician) -> Result<()> {
        let mut tx = self.write_tx().await?;
        upsert_technician(&mut tx, tenant, t).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The one tenant of this deployment (multi-tenant hosting is the security issue).
    pub async fn tenant_id(&self) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM tenants ORDER BY id LIMIT 1")
                .fetch_optional(self.pool())
                .await?,
        )
    }

    pub async fn machine_models(&self) -> Result<HashSet<String>> {
        Ok(
            sqlx::query_scalar::<_, String>("SELECT id FROM machine_models")
                .fetch_all(self.pool())
                .await?
                .into_iter()
                .collect(),
        )
    }

    /// The technicians of `tenant` (`None`: every tenant's).
    pub async fn technicians_of(&self, tenant: Option<&str>) -> Result<Vec<TechnicianView>> {
        let rows =
            sqlx::query("SELECT * FROM technicians WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY id")
                .bind(tenant)
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|r| {
                Ok(TechnicianView {
                    id: get(r, "id")?,
                    name: get(r, "name")?,
                    email: get(r, "email")?,
                    home_region: get(r, "home_region")?,
                    skills: serde_json::from_str(&get::<String>(r, "skills_json")?)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    active: get::<i64>(r, "active")? != 0,
                })
            })
            .collect()
    }

    /// The tenant technician `id` belongs to, if it exists.
    pub async fn technician_tenant(&self, id: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT tenant_id FROM technicians WHERE id = ?")
                .bind(id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Every tenant's technicians.
    pub async fn technicians(&self) -> Result<Vec<TechnicianView>> {
        self.technicians_of(None).await
    }

    /// The part ids of `tenant`.
    pub async fn part_ids_of(&self, tenant: &str) -> Result<HashSet<String>> {
        Ok(
            sqlx::query_scalar::<_, String>("SELECT id FROM parts WHERE tenant_id = ?")
                .bind(tenant)
                .fetch_all(self.pool())
                .await?
                .into_iter()
                .collect(),
        )
    }

    /// The machine models of `tenant`.
    pub async fn machine_models_of(&self, tenant: &str) -> Result<HashSet<String>> {
        Ok(
            sqlx::query_scalar::<_, String>("SELECT id FROM machine_models WHERE tenant_id = ?")
                .bind(tenant)
                .fetch_all(self.pool())
                .await?
                .into_iter()
                .collect(),
        )
    }

    pub async fn technician_profiles(&self) -> Result<Vec<TechnicianProfile>> {
        Ok(self
            .technicians()
            .await?
            .into_iter()
            .filter(|t| t.active)
            .map(|t| TechnicianProfile {
                id: t.id,
                home_region: t.home_region,
                skills: t.skills.into_iter().collect(),
            })
            .collect())
    }

    pub async fn add_absence(
        &self,
        technician: &str,
        start: UnixMs,
        end: UnixMs,
        reason: &str,
    ) -> Result<String> {
        let id = new_id("ab");
        sqlx::query(
            "INSERT INTO technician_absences (id, technician_id, start_ms, end_ms, reason) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(technician)
        .bind(start.0)
        .bind(end.0)
        .bind(reason)
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    /// Every technician commitment overlapping `[from, to)`: booked work orders (with
    /// their site's region) and absences.
    pub async fn busy(&self, from: UnixMs, to: UnixMs) -> Result<Vec<Busy>> {
        let mut out = Vec::new();
        let rows = sqlx::query(
            "SELECT w.technician_id, w.booked_start, w.booked_end, s.region
             FROM work_orders w JOIN sites s ON s.id = w.site_id
             WHERE w.status = 'scheduled' AND w.booked_end > ? AND w.booked_start < ?",
        )
        .bind(from.0)
        .bind(to.0)
        .fetch_all(self.pool())
        .await?;
        for r in rows {
            out.push(Busy {
                technician: get(&r, "technician_id")?,
                start: ms(get(&r, "booked_start")?),
                end: ms(get(&r, "booked_end")?),
                region: Some(get(&r, "region")?),
            });
        }
        let rows = sqlx::query(
            "SELECT technician_id, start_ms, end_ms FROM technician_absences WHERE end_ms > ? AND start_ms < ?",
        )
        .bind(from.0)
        .bind(to.0)
        .fetch_all(self.pool())
        .await?;
        for r in rows {
            out.push(Busy {
                technician: get(&r, "technician_id")?,
                start: ms(get(&r, "start_ms")?),
                end: ms(get(&r, "end_ms")?),
                region: None,
            });
        }
        Ok(out)
    }

    // ---- catalogue -----------------------------------------------------------------

    pub async fn parts(&self) -> Result<Vec<PartView>> {
        let rows = sqlx::query("SELECT * FROM parts ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PartView {
                    id: get(r, "id")?,
                    name: get(r, "name")?,
                    price_cents: get(r, "price_cents")?,
                    lead_time_days: get(r, "lead_time_days")?,
                    labour_hours: get(r, "labour_hours")?,
                    stock: get(r, "stock")?,
                    reserved: get(r, "reserved")?,
                    life_shape: get(r, "life_shape")?,
                    life_scale_hours: get(r, "life_scale_hours")?,
                })
            })
            .collect()
    }

    /// Sets the stock of a part; false if there is no such part.
    pub async fn set_stock(&self, part: &str, quantity: u32) -> Result<bool> {
        Ok(sqlx::query("UPDATE parts SET stock = ? WHERE id = ?")
            .bind(i64::from(quantity))
            .bind(part)
            .execute(self.pool())
            .await?
            .rows_affected()
            > 0)
    }

    pub async fn contracts(&self) -> Result<Vec<ContractView>> {
        let rows = sqlx::query("SELECT * FROM contracts ORDER BY customer_id, start_at")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ContractView {
                    id: get(r, "id")?,
                    customer: get(r, "customer_id")?,
                    tier: get(r, "tier")?,
                    parts_coverage: get(r, "parts_coverage")?,
                    labour_coverage: get(r, "labour_coverage")?,
                    risk_tolerance: get(r, "risk_tolerance")?,
                    annual_fee_cents: get(r, "annual_fee_cents")?,
                    start: Rfc3339(ms(get(r, "start_at")?)),
                    renewal: Rfc3339(ms(get(r, "renewal_at")?)),
                })
            })
            .collect()
    }

    // ---- planned stops -------------------------------------------------------------

    pub async fn site_info(&self, site: &str) -> Result<Option<SiteInfo>> {
        let Some(r) = sqlx::query("SELECT * FROM sites WHERE id = ?")
            .bind(site)
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(None);
        };
        site_info(&r).map(Some)
    }

    pub async fn weekly_windows(&self, site: &str) -> Result<Vec<WeeklyWindow>> {
        let rows = sqlx::query(
            "SELECT weekday, start_minute, duration_minutes FROM maintenance_windows
             WHERE site_id = ? ORDER BY weekday, start_minute",
        )
        .bind(site)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WeeklyWindow {
                    weekday: get::<i64>(r, "weekday")? as u32,
                    start_minute: get::<i64>(r, "start_minute")? as u32,
                    duration_minutes: get::<i64>(r, "duration_minutes")? as u32,
                })
            })
            .collect()
    }

    /// Replaces a site's weekly schedule.
    pub async fn set_weekly_windows(&self, site: &str, windows: &[WeeklyWindow]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM maintenance_windows WHERE site_id = ?")
            .bind(site)
            .execute(&mut *tx)
            .await?;
        for w in windows {
            sqlx::query(
                "INSERT OR REPLACE INTO maintenance_windows (site_id, weekday, start_minute, duration_minutes)
                 VALUES (?, ?, ?, ?)",
            )
            .bind(site)
            .bind(i64::from(w.weekday))
            .bind(i64::from(w.start_minute))
            .bind(i64::from(w.duration_minutes))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn stops(&self, site: &str, from: UnixMs, to: UnixMs) -> Result<Vec<StopView>> {
        let rows = sqlx::query(
            "SELECT * FROM maintenance_stops WHERE site_id = ? AND end_ms > ? AND start_ms < ? ORDER BY start_ms",
        )
        .bind(site)
        .bind(from.0)
        .bind(to.0)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StopView {
                    id: get(r, "id")?,
                    site: get(r, "site_id")?,
                    start: Rfc3339(ms(get(r, "start_ms")?)),
                    end: Rfc3339(ms(get(r, "end_ms")?)),
                    note: get(r, "note")?,
                })
            })
            .collect()
    }

    pub async fn add_stop(
        &self,
        site: &str,
        start: UnixMs,
        end: UnixMs,
        note: &str,
        now: UnixMs,
    ) -> Result<String> {
        let id = new_id("st");
        sqlx::query(
            "INSERT INTO maintenance_stops (id, site_id, start_ms, end_ms, note, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(site)
        .bind(start.0)
        .bind(end.0)
        .bind(note)
        .bind(now.0)
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    pub async fn delete_stop(&self, site: &str, id: &str) -> Result<bool> {
        Ok(
            sqlx::query("DELETE FROM maintenance_stops WHERE site_id = ? AND id = ?")
                .bind(site)
                .bind(id)
                .execute(self.pool())
                .await?
                .rows_affected()
                > 0,
        )
    }

    /// Every planned stop of a site starting in `[from, to)`, weekly and one-off, by
    /// start; the flag says whether it is one-off.
    pub async fn site_occurrences(
        &self,
        site: &SiteInfo,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<Vec<(Occurrence, bool)>> {
        let weekly = self.weekly_windows(&site.id).await?;
        let mut out: Vec<(Occurrence, bool)> = occurrences(site.timezone, &weekly, from, to)
            .into_iter()
            .map(|o| (o, false))
            .collect();
        for s in self.stops(&site.id, from, to).await? {
            if s.start.0 >= from {
                out.push((
                    Occurrence {
                        start: s.start.0,
                        end: s.end.0,
                    },
                    true,
                ));
            }
        }
        out.sort_by_key(|(o, _)| (o.start, o.end));
        out.dedup_by_key(|(o, _)| (o.start, o.end));
        Ok(out)
    }

    // ---- offers --------------------------------------------------------------------

    pub async fn offer_for_decision(&self, id: &str) -> Result<Option<OfferForDecision>> {
        let Some(o) = sqlx::query(
            "SELECT o.*, m.model_id FROM offers o JOIN machines m ON m.id = o.machine_id WHERE o.id = ?",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        else {
            return Ok(None);
        };
        let site_id: String = get(&o, "site_id")?;
        let site = self.site_info(&site_id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("offer {id} names unknown site {site_id}"))
        })?;
        let machine: String = get(&o, "machine_id")?;
        let rows = sqlx::query(
            "SELECT oc.component, oc.part_id, p.labour_hours, p.lead_time_days, p.stock, p.reserved,
                    h.estimate_json
             FROM offer_components oc JOIN parts p ON p.id = oc.part_id
             LEFT JOIN component_health h ON h.machine_id = oc.machine_id AND h.component = oc.component
             WHERE oc.offer_id = ? ORDER BY oc.rowid",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        let mut parts = Vec::new();
        for r in rows {
            let estimate = match get::<Option<String>>(&r, "estimate_json")? {
                Some(j) => {
                    Some(serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(e.to_string()))?)
                }
                None => None,
            };
            parts.push(OfferPart {
                component: get(&r, "component")?,
                part: get(&r, "part_id")?,
                labour_hours: get(&r, "labour_hours")?,
                lead_time_days: get(&r, "lead_time_days")?,
                stock: get(&r, "stock")?,
                reserved: get(&r, "reserved")?,
                estimate,
            });
        }
        Ok(Some(OfferForDecision {
            id: id.to_string(),
            status: get(&o, "status")?,
            urgent: get::<i64>(&o, "urgent")? != 0,
            window: Occurrence {
                start: ms(get(&o, "window_start")?),
                end: ms(get(&o, "window_end")?),
            },
            risk_tolerance: get(&o, "risk_tolerance")?,
            machine,
            machine_model: get(&o, "model_id")?,
            site,
            parts,
            superseded_by: get(&o, "superseded_by")?,
            work_order: get(&o, "work_order_id")?,
        }))
    }

    /// Accepts a proposed offer in `window`: creates its work order (scheduled with
    /// `assignment`, or unassigned), reserves parts on the shelf and writes the notices.
    pub async fn accept_offer(
        &self,
        offer: &OfferForDecision,
        window: Occurrence,
        assignment: Option<&Assignment>,
        note: &str,
        now: UnixMs,
        notifications: &NotificationsConfig,
    ) -> Result<std::result::Result<String, ChangeRefused>> {
        let mut tx = self.write_tx().await?;
        let status = if assignment.is_some() {
            "scheduled"
        } else {
            "accepted"
        };
        let changed = sqlx::query(
            "UPDATE offers SET status = ?, window_start = ?, window_end = ?, decided_at = ?, updated_at = ?
             WHERE id = ? AND status = 'proposed'",
        )
        .bind(status)
        .bind(window.start.0)
        .bind(window.end.0)
        .bind(now.0)
        .bind(now.0)
        .bind(&offer.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(Err(ChangeRefused::State(
                "the offer is no longer proposed".into(),
            )));
        }
        if let Some(a) = assignment
            && let Some(clash) = booking_clash(&mut tx, &a.technician, a.start, a.end, None).await?
        {
            return Ok(Err(ChangeRefused::TechnicianBusy(clash)));
        }
        let wo = new_id("wo");
        let wo_status = if assignment.is_some() {
            "scheduled"
        } else {
            "unassigned"
        };
        sqlx::query(
            "INSERT INTO work_orders (id, tenant_id, offer_id, machine_id, site_id, status, technician_id,
               window_start, window_end, booked_start, booked_end, travel_minutes, notes, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&wo)
        .bind(&offer.site.tenant)
        .bind(&offer.id)
        .bind(&offer.machine)
        .bind(&offer.site.id)
        .bind(wo_status)
        .bind(assignment.map(|a| a.technician.clone()))
        .bind(window.start.0)
        .bind(window.end.0)
        .bind(assignment.map(|a| a.start.0))
        .bind(assignment.map(|a| a.end.0))
        .bind(assignment.map(|a| a.travel_minutes))
        .bind(note)
        .bind(now.0)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        for p in &offer.parts {
            sqlx::query(
                "INSERT INTO work_order_components (work_order_id, component, part_id) VALUES (?, ?, ?)",
            )
            .bind(&wo)
            .bind(&p.component)
            .bind(&p.part)
            .execute(&mut *tx)
            .await?;
            // A part on the shelf is promised to this job; otherwise it is ordered.
            sqlx::query(
                "UPDATE parts SET reserved = reserved + 1 WHERE id = ? AND stock > reserved",
            )
            .bind(&p.part)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE offers SET work_order_id = ? WHERE id = ?")
            .bind(&wo)
            .bind(&offer.id)
            .execute(&mut *tx)
            .await?;
        let when = crate::planner::calendar::describe(offer.site.timezone, &window);
        let history_note = match assignment {
            Some(a) => format!(
                "accepted for {when}; work order {wo} with technician {}",
                a.technician
            ),
            None => format!("accepted for {when}; work order {wo} waits for a technician"),
        };
        record_history(
            &mut tx,
            &offer.id,
            Some("proposed"),
            "accepted",
            now,
            &history_note,
        )
        .await?;
        if assignment.is_some() {
            record_history(
                &mut tx,
                &offer.id,
                Some("accepted"),
                "scheduled",
                now,
                &history_note,
            )
            .await?;
        }
        let mut notice = offer_notice(&mut tx, &offer.id).await?;
        notice.event = "offer.accepted";
        notice.audience = Audience::Everyone;
        notice.subject = format!("Replacement on {} booked for {when}", offer.machine);
        notice.body = format!("{history_note}.\n\n{}", notice.body);
        notify::enqueue(&mut tx, notifications, &notice, now).await?;
        if assignment.is_none() {
            let alert = Notice {
                event: "work_order.unassigned",
                audience: Audience::ServiceDesk,
                subject: format!("No technician free for work order {wo}"),
                body: format!(
                    "Work order {wo} ({} at {}) in {when} has no qualified technician free. Assign one with POST /api/v1/work-orders/{wo}/assign.",
                    offer.machine, offer.site.name
                ),
                customer_email: None,
                data: json!({ "work_order": wo, "offer": offer.id, "machine": offer.machine }),
            };
            notify::enqueue(&mut tx, notifications, &alert, now).await?;
        }
        tx.commit().await?;
        Ok(Ok(wo))
    }

    pub async fn decline_offer(
        &self,
        offer: &OfferForDecision,
        reason: &str,
        now: UnixMs,
        notifications: &NotificationsConfig,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE offers SET status = 'declined', decline_reason = ?, decided_at = ?, updated_at = ?
             WHERE id = ? AND status = 'proposed'",
        )
        .bind(reason)
        .bind(now.0)
        .bind(now.0)
        .bind(&offer.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        release_open_offer(&mut tx, &offer.id).await?;
        record_history(
            &mut tx,
            &offer.id,
            Some("proposed"),
            "declined",
            now,
            &format!("declined by the customer: {reason}"),
        )
        .await?;
        let mut notice = offer_notice(&mut tx, &offer.id).await?;
        notice.event = "offer.declined";
        notice.audience = Audience::ServiceDesk;
        notice.subject = format!("Offer for {} declined", offer.machine);
        notice.body = format!("The customer declined: {reason}\n\n{}", notice.body);
        notify::enqueue(&mut tx, notifications, &notice, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Moves a proposed offer to another window (the customer picked it; still to be
    /// accepted).
    pub async fn move_proposal(
        &self,
        offer: &OfferForDecision,
        window: Occurrence,
        now: UnixMs,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE offers SET window_start = ?, window_end = ?, updated_at = ? WHERE id = ? AND status = 'proposed'",
        )
        .bind(window.start.0)
        .bind(window.end.0)
        .bind(now.0)
        .bind(&offer.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        let when = crate::planner::calendar::describe(offer.site.timezone, &window);
        record_history(
            &mut tx,
            &offer.id,
            Some("proposed"),
            "proposed",
            now,
            &format!("customer picked {when}"),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Components of this machine whose offer was declined since `since`.
    pub async fn recently_declined(&self, machine: &str, since: UnixMs) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT oc.component FROM offers o JOIN offer_components oc ON oc.offer_id = o.id
             WHERE o.machine_id = ? AND o.status = 'declined' AND o.decided_at >= ?",
        )
        .bind(machine)
        .bind(since.0)
        .fetch_all(self.pool())
        .await?)
    }

    /// Offers proposed (new or moved earlier) to each customer since `since`.
    pub async fn contacts_since(&self, since: UnixMs) -> Result<HashMap<String, u32>> {
        let rows = sqlx::query(
            "SELECT o.customer_id, COUNT(*) AS n FROM offer_history h JOIN offers o ON o.id = h.offer_id
             WHERE h.to_status = 'proposed' AND h.from_status IS NULL AND h.at >= ?
             GROUP BY o.customer_id",
        )
        .bind(since.0)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "customer_id")?, get::<i64>(r, "n")? as u32)))
            .collect()
    }

    // ---- work orders ---------------------------------------------------------------

    /// The work orders matching `f` that `vis` may see: a customer's are those on its
    /// machines, a technician's those booked with them.
    pub async fn work_orders(
        &self,
        f: &WorkOrderFilter,
        vis: &Visibility,
    ) -> Result<Vec<WorkOrderView>> {
        let rows = sqlx::query(format!(
            "{WORK_ORDER_SQL} WHERE (?1 IS NULL OR w.technician_id = ?1) AND (?2 IS NULL OR w.status = ?2)
               AND (?3 IS NULL OR w.machine_id = ?3) AND (?4 IS NULL OR w.site_id = ?4)
               AND (?5 IS NULL OR w.window_end > ?5) AND (?6 IS NULL OR w.window_start < ?6)
               AND (?7 IS NULL OR w.tenant_id = ?7) AND (?8 IS NULL OR m.customer_id = ?8)
               AND (?9 IS NULL OR w.technician_id = ?9)
             ORDER BY w.window_start, w.id"
        ).into_sql())
        .bind(&f.technician)
        .bind(&f.status)
        .bind(&f.machine)
        .bind(&f.site)
        .bind(f.from.map(|t| t.0))
        .bind(f.to.map(|t| t.0))
        .bind(&vis.tenant)
        .bind(&vis.customer)
        .bind(&vis.technician)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.work_order_view(r).await?);
        }
        Ok(out)
    }

    pub async fn work_order(&self, id: &str) -> Result<Option<WorkOrderView>> {
        let row = sqlx::query(format!("{WORK_ORDER_SQL} WHERE w.id = ?").into_sql())
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(r) => Ok(Some(self.work_order_view(&r).await?)),
            None => Ok(None),
        }
    }

    async fn work_order_view(&self, r: &SqliteRow) -> Result<WorkOrderView> {
        let id: String = get(r, "id")?;
        let comps = sqlx::query(
            "SELECT c.*, p.name AS part_name FROM work_order_components c JOIN parts p ON p.id = c.part_id
             WHERE c.work_order_id = ? ORDER BY c.rowid",
        )
        .bind(&id)
        .fetch_all(self.pool())
        .await?;
        let components = comps
            .iter()
            .map(|c| {
                Ok(WorkOrderComponentView {
                    component: get(c, "component")?,
                    part: get(c, "part_id")?,
                    part_name: get(c, "part_name")?,
                    as_found: get(c, "as_found")?,
                    life_hours: get(c, "life_hours")?,
                    notes: get(c, "notes")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(WorkOrderView {
            offer: get(r, "offer_id")?,
            customer: get(r, "customer_id")?,
            site: get(r, "site_id")?,
            site_name: get(r, "site_name")?,
            timezone: get(r, "timezone")?,
            machine: get(r, "machine_id")?,
            machine_model: get(r, "model_id")?,
            status: get(r, "status")?,
            technician: get(r, "technician_id")?,
            technician_name: get(r, "technician_name")?,
            window_start: Rfc3339(ms(get(r, "window_start")?)),
            window_end: Rfc3339(ms(get(r, "window_end")?)),
            booked_start: get::<Option<i64>>(r, "booked_start")?.map(|v| Rfc3339(ms(v))),
            booked_end: get::<Option<i64>>(r, "booked_end")?.map(|v| Rfc3339(ms(v))),
            travel_minutes: get(r, "travel_minutes")?,
            components,
            reason: get(r, "explanation")?,
            notes: get(r, "notes")?,
            created_at: Rfc3339(ms(get(r, "created_at")?)),
            completed_at: get::<Option<i64>>(r, "completed_at")?.map(|v| Rfc3339(ms(v))),
            id,
        })
    }

    pub async fn work_order_for_change(&self, id: &str) -> Result<Option<WorkOrderForChange>> {
        let Some(r) = sqlx::query(
            "SELECT w.*, m.model_id FROM work_orders w JOIN machines m ON m.id = w.machine_id WHERE w.id = ?",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        else {
            return Ok(None);
        };
        let site_id: String = get(&r, "site_id")?;
        let site = self
            .site_info(&site_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("work order {id}: unknown site")))?;
        let comps = sqlx::query(
            "SELECT c.component, c.part_id, p.labour_hours FROM work_order_components c
             JOIN parts p ON p.id = c.part_id WHERE c.work_order_id = ? ORDER BY c.rowid",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        let mut components = Vec::new();
        let mut work_hours = 0.0;
        for c in &comps {
            components.push((get(c, "component")?, get(c, "part_id")?));
            work_hours += get::<f64>(c, "labour_hours")?;
        }
        Ok(Some(WorkOrderForChange {
            id: id.to_string(),
            offer: get(&r, "offer_id")?,
            status: get(&r, "status")?,
            machine: get(&r, "machine_id")?,
            machine_model: get(&r, "model_id")?,
            site,
            window: Occurrence {
                start: ms(get(&r, "window_start")?),
                end: ms(get(&r, "window_end")?),
            },
            technician: get(&r, "technician_id")?,
            components,
            work_hours: work_hours.max(1.0),
        }))
    }

    /// Books (or re-books) a work order with `assignment`, optionally in a new window.
    pub async fn schedule_work_order(
        &self,
        wo: &WorkOrderForChange,
        window: Occurrence,
        assignment: &Assignment,
        now: UnixMs,
        notifications: &NotificationsConfig,
    ) -> Result<std::result::Result<(), ChangeRefused>> {
        let mut tx = self.write_tx().await?;
        if let Some(clash) = booking_clash(
            &mut tx,
            &assignment.technician,
            assignment.start,
            assignment.end,
            Some(&wo.id),
        )
        .await?
        {
            return Ok(Err(ChangeRefused::TechnicianBusy(clash)));
        }
        let changed = sqlx::query(
            "UPDATE work_orders SET status = 'scheduled', technician_id = ?, window_start = ?, window_end = ?,
               booked_start = ?, booked_end = ?, travel_minutes = ?, updated_at = ?
             WHERE id = ? AND status IN ('unassigned', 'scheduled')",
        )
        .bind(&assignment.technician)
        .bind(window.start.0)
        .bind(window.end.0)
        .bind(assignment.start.0)
        .bind(assignment.end.0)
        .bind(assignment.travel_minutes)
        .bind(now.0)
        .bind(&wo.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(Err(ChangeRefused::State(
                "the work order is no longer open".into(),
            )));
        }
        sqlx::query(
            "UPDATE offers SET status = 'scheduled', window_start = ?, window_end = ?, updated_at = ?
             WHERE id = ? AND status IN ('accepted', 'scheduled')",
        )
        .bind(window.start.0)
        .bind(window.end.0)
        .bind(now.0)
        .bind(&wo.offer)
        .execute(&mut *tx)
        .await?;
        let when = crate::planner::calendar::describe(wo.site.timezone, &window);
        let note = format!(
            "work order {} booked with technician {} for {when}",
            wo.id, assignment.technician
        );
        record_history(&mut tx, &wo.offer, None, "scheduled", now, &note).await?;
        let notice = Notice {
            event: "work_order.scheduled",
            audience: Audience::Everyone,
            subject: format!("Service visit for {} on {when}", wo.machine),
            body: format!("{note}.\nSite: {}", wo.site.name),
            customer_email: customer_email(&mut tx, &wo.site.customer).await?,
            data: json!({ "work_order": wo.id, "offer": wo.offer, "machine": wo.machine,
                          "technician": assignment.technician, "start": assignment.start.to_rfc3339(),
                          "end": assignment.end.to_rfc3339() }),
        };
        notify::enqueue(&mut tx, notifications, &notice, now).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Records a completed job: the removed parts' as-found condition and life, the
    /// components' reset (new install, baseline re-learnt), stock and the notices, and
    /// the customer's NPS survey of the visit (within the contact cap).
    pub async fn complete_work_order(
        &self,
        wo: &WorkOrderForChange,
        findings: &[ComponentFinding],
        notes: &str,
        now: UnixMs,
        notifications: &NotificationsConfig,
        survey: &super::SurveyRequest<'_>,
    ) -> Result<std::result::Result<(), ChangeRefused>> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE work_orders SET status = 'completed', completed_at = ?, updated_at = ?,
               notes = CASE WHEN ? = '' THEN notes ELSE ? END
             WHERE id = ? AND status = 'scheduled'",
        )
        .bind(now.0)
        .bind(now.0)
        .bind(notes)
        .bind(notes)
        .bind(&wo.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(Err(ChangeRefused::State(
                "only a scheduled work order can be completed".into(),
            )));
        }
        for f in findings {
            let part = wo
                .components
                .iter()
                .find(|(c, _)| *c == f.component)
                .map(|(_, p)| p.clone())
                .unwrap_or_default();
            let installed: Option<i64> = sqlx::query_scalar(
                "SELECT installed_at FROM components WHERE machine_id = ? AND key = ?",
            )
            .bind(&wo.machine)
            .bind(&f.component)
            .fetch_optional(&mut *tx)
            .await?;
            let life_hours = installed.map(|i| ms(i).hours_until(now));
            sqlx::query(
                "UPDATE work_order_components SET as_found = ?, life_hours = ?, notes = ?
                 WHERE work_order_id = ? AND component = ?",
            )
            .bind(f.as_found.as_str())
            .bind(life_hours)
            .bind(&f.notes)
            .bind(&wo.id)
            .bind(&f.component)
            .execute(&mut *tx)
            .await?;
            if let Some(installed) = installed {
                // A part found failed ends its life in a failure; otherwise the life is
                // censored by the replacement (the fleet prior learns from both).
                let reason = if f.as_found == AsFound::Failed {
                    "failure"
                } else {
                    "replaced"
                };
                sqlx::query(
                    "INSERT OR IGNORE INTO component_lives (machine_id, component, part_id, installed_at,
                       ended_at, end_reason, as_found, work_order_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&wo.machine)
                .bind(&f.component)
                .bind(&part)
                .bind(installed)
                .bind(now.0)
                .bind(reason)
                .bind(f.as_found.as_str())
                .bind(&wo.id)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE components SET installed_at = ?, failed_at = NULL WHERE machine_id = ? AND key = ?",
            )
            .bind(now.0)
            .bind(&wo.machine)
            .bind(&f.component)
            .execute(&mut *tx)
            .await?;
            // The old part's estimate no longer applies; the next cycle starts afresh.
            sqlx::query("DELETE FROM component_health WHERE machine_id = ? AND component = ?")
                .bind(&wo.machine)
                .bind(&f.component)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE parts SET stock = MAX(stock - 1, 0), reserved = MAX(reserved - 1, 0) WHERE id = ? AND reserved > 0",
            )
            .bind(&part)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE machines SET data_version = data_version + 1 WHERE id = ?")
            .bind(&wo.machine)
            .execute(&mut *tx)
            .await?;
        let changed_offer = sqlx::query(
            "UPDATE offers SET status = 'completed', updated_at = ? WHERE id = ? AND status = 'scheduled'",
        )
        .bind(now.0)
        .bind(&wo.offer)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed_offer > 0 {
            release_open_offer(&mut tx, &wo.offer).await?;
            record_history(
                &mut tx,
                &wo.offer,
                Some("scheduled"),
                "completed",
                now,
                &format!("work order {} completed", wo.id),
            )
            .await?;
        }
        let summary: Vec<String> = findings
            .iter()
            .map(|f| format!("{}: {}", f.component, f.as_found.as_str()))
            .collect();
        let notice = Notice {
            event: "work_order.completed",
            audience: Audience::Everyone,
            subject: format!("Service visit on {} completed", wo.machine),
            body: format!(
                "Work order {} at {} is complete. Replaced: {}.{}",
                wo.id,
                wo.site.name,
                summary.join(", "),
                if notes.is_empty() {
                    String::new()
                } else {
                    format!("\nNotes: {notes}")
                }
            ),
            customer_email: customer_email(&mut tx, &wo.site.customer).await?,
            data: json!({ "work_order": wo.id, "offer": wo.offer, "machine": wo.machine,
                          "findings": findings.iter().map(|f| json!({"component": f.component, "as_found": f.as_found.as_str()})).collect::<Vec<_>>() }),
        };
        notify::enqueue(&mut tx, notifications, &notice, now).await?;
        super::analytics::request_survey(&mut tx, wo, now, survey, notifications).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Cancels the open part of work orders overtaken by events: a component of an
    /// unassigned or scheduled work order that was replaced after the order was made
    /// (a breakdown repair, or a replacement the plant did itself) no longer needs the
    /// visit, and replacing the new part would waste most of its life. Such a component
    /// leaves the order and its reserved part is released; an order with nothing left
    /// is cancelled, with its offer, its technician's booking freed and everyone told.
    /// Returns how many work orders were cancelled.
    pub async fn cancel_overtaken_work_orders(
        &self,
        now: UnixMs,
        notifications: &NotificationsConfig,
    ) -> Result<u64> {
        let overtaken = sqlx::query(
            "SELECT w.id, w.offer_id, w.machine_id, w.status, wc.component, wc.part_id,
                    c.installed_at, s.name AS site_name, s.customer_id
             FROM work_orders w
             JOIN work_order_components wc ON wc.work_order_id = w.id
             JOIN components c ON c.machine_id = w.machine_id AND c.key = wc.component
             JOIN sites s ON s.id = w.site_id
             WHERE w.status IN ('unassigned', 'scheduled') AND c.installed_at > w.created_at
             ORDER BY w.id, wc.component",
        )
        .fetch_all(self.pool())
        .await?;
        if overtaken.is_empty() {
            return Ok(0);
        }
        let mut tx = self.write_tx().await?;
        let mut cancelled = 0;
        let mut orders: Vec<(String, Vec<&SqliteRow>)> = Vec::new();
        for r in &overtaken {
            let id: String = get(r, "id")?;
            match orders.last_mut() {
                Some((last, rows)) if *last == id => rows.push(r),
                _ => orders.push((id, vec![r])),
            }
        }
        for (id, rows) in orders {
            let first = rows[0];
            let (offer, machine, status): (String, String, String) = (
                get(first, "offer_id")?,
                get(first, "machine_id")?,
                get(first, "status")?,
            );
            let mut replaced = Vec::new();
            for r in &rows {
                let component: String = get(r, "component")?;
                let part: String = get(r, "part_id")?;
                let gone = sqlx::query(
                    "DELETE FROM work_order_components WHERE work_order_id = ? AND component = ?
                       AND EXISTS (SELECT 1 FROM work_orders WHERE id = ? AND status IN ('unassigned', 'scheduled'))",
                )
                .bind(&id)
                .bind(&component)
                .bind(&id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if gone == 0 {
                    continue;
                }
                sqlx::query("UPDATE parts SET reserved = MAX(reserved - 1, 0) WHERE id = ?")
                    .bind(&part)
                    .execute(&mut *tx)
                    .await?;
                replaced.push((component, ms(get(r, "installed_at")?)));
            }
            if replaced.is_empty() {
                continue;
            }
            let what: Vec<String> = replaced
                .iter()
                .map(|(c, at)| format!("{c} on {}", at.to_rfc3339()))
                .collect();
            let note = format!("replaced after the order was made: {}", what.join(", "));
            let left: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM work_order_components WHERE work_order_id = ?",
            )
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
            // The note goes on the order either way; with nothing left it is cancelled.
            sqlx::query(
                "UPDATE work_orders SET updated_at = ?,
                   status = CASE WHEN ? THEN status ELSE 'cancelled' END,
                   notes = CASE WHEN notes = '' THEN ? ELSE notes || char(10) || ? END
                 WHERE id = ?",
            )
            .bind(now.0)
            .bind(left > 0)
            .bind(&note)
            .bind(&note)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            if left > 0 {
                record_history(&mut tx, &offer, None, &status, now, &note).await?;
                continue;
            }
            let offer_status: Option<String> = sqlx::query_scalar(
                "UPDATE offers SET status = 'cancelled', updated_at = ?
                 WHERE id = ? AND status IN ('accepted', 'scheduled') RETURNING 'cancelled'",
            )
            .bind(now.0)
            .bind(&offer)
            .fetch_optional(&mut *tx)
            .await?;
            if offer_status.is_some() {
                release_open_offer(&mut tx, &offer).await?;
                record_history(
                    &mut tx,
                    &offer,
                    Some(&status),
                    "cancelled",
                    now,
                    &format!("work order {id} cancelled: {note}"),
                )
                .await?;
            }
            let site: String = get(first, "site_name")?;
            let customer: String = get(first, "customer_id")?;
            let notice = Notice {
                event: "work_order.cancelled",
                audience: Audience::Everyone,
                subject: format!("Service visit on {machine} cancelled"),
                body: format!(
                    "Work order {id} at {site} is cancelled: its part was {note}. No visit is \
                     needed; the new part is monitored from now on."
                ),
                customer_email: customer_email(&mut tx, &customer).await?,
                data: json!({ "work_order": id, "offer": offer, "machine": machine,
                              "components": replaced.iter().map(|(c, _)| c).collect::<Vec<_>>() }),
            };
            notify::enqueue(&mut tx, notifications, &notice, now).await?;
            cancelled += 1;
        }
        tx.commit().await?;
        Ok(cancelled)
    }

    /// Every ended life of the machine's components, newest first.
    pub async fn component_lives(&self, machine: &str) -> Result<Vec<ComponentLifeView>> {
        let rows = sqlx::query(
            "SELECT * FROM component_lives WHERE machine_id = ? ORDER BY ended_at DESC, component",
        )
        .bind(machine)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let installed: i64 = get(r, "installed_at")?;
                let ended: i64 = get(r, "ended_at")?;
                Ok(ComponentLifeView {
                    component: get(r, "component")?,
                    part: get(r, "part_id")?,
                    installed_at: Rfc3339(ms(installed)),
                    ended_at: Rfc3339(ms(ended)),
                    life_hours: ms(installed).hours_until(ms(ended)),
                    end_reason: get(r, "end_reason")?,
                    as_found: get(r, "as_found")?,
                    work_order: get(r, "work_order_id")?,
                })
            })
            .collect()
    }

    // ---- outbox --------------------------------------------------------------------

    pub(crate) async fn insert_outbox(
        tx: &mut Transaction<'_, Sqlite>,
        channel: &str,
        target: &str,
        event: &str,
        payload: &str,
        created_at: UnixMs,
        now_real: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO outbox (channel, target, event, payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(channel)
        .bind(target)
        .bind(event)
        .bind(payload)
        .bind(created_at.0)
        .bind(now_real)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn due_outbox(&self, now_real: i64, limit: i64) -> Result<Vec<OutboxEntry>> {
        let rows = sqlx::query(
            "SELECT id, channel, target, event, payload, attempts FROM outbox
             WHERE delivered_at IS NULL AND next_attempt_at <= ? ORDER BY id LIMIT ?",
        )
        .bind(now_real)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxEntry {
                    id: get(r, "id")?,
                    channel: get(r, "channel")?,
                    target: get(r, "target")?,
                    event: get(r, "event")?,
                    payload: get(r, "payload")?,
                    attempts: get(r, "attempts")?,
                })
            })
            .collect()
    }

    pub async fn outbox_delivered(&self, id: i64, now_real: i64) -> Result<()> {
        sqlx::query("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?")
            .bind(now_real)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn outbox_failed(&self, id: i64, error: &str, next_real: i64) -> Result<()> {
        sqlx::query("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?")
            .bind(next_real)
            .bind(error)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn outbox_pending(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
                .fetch_one(self.pool())
                .await?,
        )
    }
}

const WORK_ORDER_SQL: &str =
    "SELECT w.*, s.name AS site_name, s.timezone, s.customer_id, m.model_id,
        t.name AS technician_name, o.explanation
 FROM work_orders w JOIN sites s ON s.id = w.site_id JOIN machines m ON m.id = w.machine_id
 JOIN offers o ON o.id = w.offer_id LEFT JOIN technicians t ON t.id = w.technician_id";

trait IntoSql {
    fn into_sql(self) -> sqlx::AssertSqlSafe<String>;
}

impl IntoSql for String {
    // Only ever built from constants in this file.
    fn into_sql(self) -> sqlx::AssertSqlSafe<String> {
        sqlx::AssertSqlSafe(self)
    }
}

fn site_info(r: &SqliteRow) -> Result<SiteInfo> {
    let tz: String = get(r, "timezone")?;
    Ok(SiteInfo {
        id: get(r, "id")?,
        tenant: get(r, "tenant_id")?,
        customer: get(r, "customer_id")?,
        name: get(r, "name")?,
        region: get(r, "region")?,
        timezone: Tz::from_str(&tz)
            .map_err(|_| StoreError::Corrupt(format!("time zone `{tz}`")))?,
    })
}

async fn upsert_technician(
    tx: &mut Transaction<'_, Sqlite>,
    tenant: &str,
    t: &Technician,
) -> Result<()> {
    let skills: Vec<&str> = t.skills.iter().map(|s| s.as_str()).collect();
    sqlx::query(
        "INSERT INTO technicians (id, tenant_id, name, email, home_region, skills_json, active)
         VALUES (?, ?, ?, ?, ?, ?, 1)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,
           home_region = excluded.home_region, skills_json = excluded.skills_json, active = 1",
    )
    .bind(t.id.as_str())
    .bind(tenant)
    .bind(&t.name)
    .bind(&t.email)
    .bind(&t.home_region)
    .bind(serde_json::to_string(&skills).unwrap_or_else(|_| "[]".into()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Another booking of `technician` that overlaps `[start, end)`, checked inside the
/// transaction that books, so two concurrent bookings cannot both pass.
async fn booking_clash(
    tx: &mut Transaction<'_, Sqlite>,
    technician: &str,
    start: UnixMs,
    end: UnixMs,
    except: Option<&str>,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM work_orders WHERE technician_id = ? AND status = 'scheduled'
           AND booked_start < ? AND booked_end > ? AND (? IS NULL OR id <> ?) LIMIT 1",
    )
    .bind(technician)
    .bind(end.0)
    .bind(start.0)
    .bind(except)
    .bind(except)
    .fetch_optional(&mut **tx)
    .await?)
}

/// The offer is no longer open: its components may get a new offer.
pub(crate) async fn release_open_offer(
    tx: &mut Transaction<'_, Sqlite>,
    offer: &str,
) -> Result<()> {
    sqlx::query("DELETE FROM open_offer_components WHERE offer_id = ?")
        .bind(offer)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(crate) async fn record_history(
    tx: &mut Transaction<'_, Sqlite>,
    offer: &str,
    from: Option<&str>,
    to: &str,
    now: UnixMs,
    note: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO offer_history (offer_id, at, from_status, to_status, note) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(offer)
    .bind(now.0)
    .bind(from)
    .bind(to)
    .bind(note)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn customer_email(
    tx: &mut Transaction<'_, Sqlite>,
    customer: &str,
) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar::<_, Option<String>>("SELECT contact_email FROM customers WHERE id = ?")
            .bind(customer)
            .fetch_optional(&mut **tx)
            .await?
            .flatten(),
    )
}

/// The customer-facing notice of an offer as it stands in `tx` (callers adjust event,
/// audience and subject).
pub(crate) async fn offer_notice(tx: &mut Transaction<'_, Sqlite>, offer: &str) -> Result<Notice> {
    let r = sqlx::query(
        "SELECT o.*, c.contact_email, c.name AS customer_name FROM offers o
         JOIN customers c ON c.id = o.customer_id WHERE o.id = ?",
    )
    .bind(offer)
    .fetch_one(&mut **tx)
    .await?;
    let machine: String = get(&r, "machine_id")?;
    let explanation: String = get(&r, "explanation")?;
    let currency: String = get(&r, "currency")?;
    let total: i64 = get(&r, "total_cents")?;
    let components: Vec<String> = sqlx::query_scalar(
        "SELECT component FROM offer_components WHERE offer_id = ? ORDER BY rowid",
    )
    .bind(offer)
    .fetch_all(&mut **tx)
    .await?;
    Ok(Notice {
        event: "offer.proposed",
        audience: Audience::Customer,
        subject: format!("Planned replacement proposed for {machine}"),
        body: format!(
            "Dear {},\n\n{explanation}\n\nOffer {offer}: {} in total. Accept, decline or pick another planned stop in Wearcast.",
            get::<String>(&r, "customer_name")?,
            format_money(total, &currency)
        ),
        customer_email: get(&r, "contact_email")?,
        data: json!({
            "offer": offer,
            "machine": machine,
            "customer": get::<String>(&r, "customer_id")?,
            "site": get::<String>(&r, "site_id")?,
            "status": get::<String>(&r, "status")?,
            "urgent": get::<i64>(&r, "urgent")? != 0,
            "components": components,
            "window_start": ms(get(&r, "window_start")?).to_rfc3339(),
            "window_end": ms(get(&r, "window_end")?).to_rfc3339(),
            "p_fail_before_window": get::<f64>(&r, "p_fail_before_window")?,
            "total_cents": total,
            "currency": currency,
        }),
    })
}
