//! Queries the wear models need beyond the core store: the live model's state per
//! component, the lives it watched end, what the fleet knows per part type, and
//! anomaly alerts. Kept apart from `sqlite.rs` so model work and offer work do not
//! collide.

use std::collections::HashMap;

use sqlx::Row;
use wearcast_protocol::UnixMs;
use wearcast_protocol::registry::WeibullLife;

use super::{Store, StoreError};
use crate::auth::Visibility;
use crate::model::quality::{EndedLifeSummary, ScoredPrediction};
use crate::model::weibull::{ObservedLife, update_life_prior};
use crate::model::{Anomaly, ComponentState, FleetKnowledge, WarningInterval};

type Result<T> = std::result::Result<T, StoreError>;

/// A life the live model saw end.
#[derive(Clone, Debug, PartialEq)]
pub struct EndedLife {
    pub machine: String,
    pub component: String,
    pub part: String,
    pub installed_at: UnixMs,
    pub ended_at: UnixMs,
    /// When the platform first saw it.
    pub observed_from: UnixMs,
    pub failed: bool,
    pub onset_at: Option<UnixMs>,
    pub alarm_at: Option<UnixMs>,
}

/// An anomaly alert of one component.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ComponentAnomaly {
    pub machine: String,
    pub component: String,
    #[serde(flatten)]
    pub anomaly: Anomaly,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl Store {
    /// The live-model states of a machine's components (a state that no longer parses,
    /// e.g. after a format change, is left out: the component starts afresh).
    pub async fn model_states(&self, machine: &str) -> Result<HashMap<String, ComponentState>> {
        let rows = sqlx::query(
            "SELECT component, state_json FROM model_component_state WHERE machine_id = ?",
        )
        .bind(machine)
        .fetch_all(self.pool())
        .await?;
        let mut out = HashMap::new();
        for r in rows {
            let component: String = r.try_get("component")?;
            let json: String = r.try_get("state_json")?;
            match serde_json::from_str::<ComponentState>(&json) {
                Ok(state) => {
                    out.insert(component, state);
                }
                Err(e) => {
                    tracing::warn!(%machine, %component, error = %e, "model state unreadable; starting afresh");
                }
            }
        }
        Ok(out)
    }

    /// Saves a machine's live-model states in one transaction.
    pub async fn save_model_states(
        &self,
        machine: &str,
        states: &[(String, ComponentState)],
        now: UnixMs,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        for (component, state) in states {
            sqlx::query(
                "INSERT INTO model_component_state (machine_id, component, installed_at, first_bucket,
                   last_bucket, state_json, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (machine_id, component) DO UPDATE SET installed_at = excluded.installed_at,
                   first_bucket = excluded.first_bucket, last_bucket = excluded.last_bucket,
                   state_json = excluded.state_json, updated_at = excluded.updated_at",
            )
            .bind(machine)
            .bind(component)
            .bind(state.installed_at.0)
            .bind(state.first_bucket.map(|t| t.0))
            .bind(state.last_bucket.map(|t| t.0))
            .bind(serde_json::to_string(state).map_err(corrupt)?)
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// When the component failed between `from` and `to`, if a failure event says so.
    pub async fn failure_between(
        &self,
        machine: &str,
        component: &str,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<Option<UnixMs>> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(ts) FROM machine_events
             WHERE machine_id = ? AND component = ? AND kind = 'failure' AND ts >= ? AND ts <= ?",
        )
        .bind(machine)
        .bind(component)
        .bind(from.0)
        .bind(to.0)
        .fetch_one(self.pool())
        .await?;
        Ok(at.map(UnixMs))
    }

    /// Records a life the live model saw end (once; a repeat is ignored).
    pub async fn record_ended_life(&self, life: &EndedLife) -> Result<()> {
        sqlx::query(
            "INSERT OR IGNORE INTO model_lives (machine_id, component, part_id, installed_at, ended_at,
               observed_from, failed, onset_at, alarm_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&life.machine)
        .bind(&life.component)
        .bind(&life.part)
        .bind(life.installed_at.0)
        .bind(life.ended_at.0)
        .bind(life.observed_from.0)
        .bind(life.failed)
        .bind(life.onset_at.map(|t| t.0))
        .bind(life.alarm_at.map(|t| t.0))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records an anomaly alert (once per instant).
    pub async fn record_anomaly(
        &self,
        machine: &str,
        component: &str,
        anomaly: &Anomaly,
    ) -> Result<()> {
        sqlx::query(
            "INSERT OR IGNORE INTO model_anomalies (machine_id, component, at, channel, score, description)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(machine)
        .bind(component)
        .bind(anomaly.at.0)
        .bind(&anomaly.channel)
        .bind(anomaly.score)
        .bind(&anomaly.description)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Anomaly alerts since `since`, newest first (optionally of one machine).
    pub async fn anomalies_since(
        &self,
        since: UnixMs,
        machine: Option<&str>,
    ) -> Result<Vec<ComponentAnomaly>> {
        let rows = sqlx::query(
            "SELECT machine_id, component, at, channel, score, description FROM model_anomalies
             WHERE at >= ?1 AND (?2 IS NULL OR machine_id = ?2) ORDER BY at DESC",
        )
        .bind(since.0)
        .bind(machine)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ComponentAnomaly {
                    machine: r.try_get("machine_id")?,
                    component: r.try_get("component")?,
                    anomaly: Anomaly {
                        at: UnixMs(r.try_get("at")?),
                        channel: r.try_get("channel")?,
                        score: r.try_get("score")?,
                        description: r.try_get("description")?,
                    },
                })
            })
            .collect()
    }

    /// The sampled predictions and the ended lives of the lives that ended in
    /// `[from, to)`, on machines `vis` may see (the model-quality report's input). A
    /// technician's "found failed" counts as a failure, as in the refit.
    pub async fn prediction_outcomes(
        &self,
        from: UnixMs,
        to: UnixMs,
        vis: &Visibility,
    ) -> Result<(Vec<ScoredPrediction>, Vec<EndedLifeSummary>)> {
        // One row per kept prediction, or one for a life without any (LEFT JOIN).
        let rows = sqlx::query(
            "SELECT ml.machine_id, ml.component, ml.installed_at, ml.part_id, ml.ended_at,
                    MAX(ml.failed, COALESCE(cl.as_found = 'failed', 0)) AS failed, ml.alarm_at,
                    p.status, p.at, p.p10_h, p.p50_h, p.p90_h
             FROM model_lives ml
             JOIN machines m ON m.id = ml.machine_id
             LEFT JOIN component_lives cl ON cl.machine_id = ml.machine_id
              AND cl.component = ml.component AND cl.installed_at = ml.installed_at
             LEFT JOIN model_predictions p ON p.machine_id = ml.machine_id
              AND p.component = ml.component AND p.installed_at = ml.installed_at
              AND p.at < ml.ended_at
             WHERE ml.ended_at >= ?1 AND ml.ended_at < ?2
               AND (?3 IS NULL OR m.tenant_id = ?3) AND (?4 IS NULL OR m.customer_id = ?4)
             ORDER BY ml.machine_id, ml.component, ml.installed_at, p.at",
        )
        .bind(from.0)
        .bind(to.0)
        .bind(&vis.tenant)
        .bind(&vis.customer)
        .fetch_all(self.pool())
        .await?;
        let (mut predictions, mut lives) = (Vec::new(), Vec::<EndedLifeSummary>::new());
        let mut last_life: Option<(String, String, i64)> = None;
        for r in &rows {
            let life = (
                r.try_get::<String, _>("machine_id")?,
                r.try_get::<String, _>("component")?,
                r.try_get::<i64, _>("installed_at")?,
            );
            let (part, ended_at): (String, UnixMs) =
                (r.try_get("part_id")?, UnixMs(r.try_get("ended_at")?));
            let failed = r.try_get::<i64, _>("failed")? != 0;
            if last_life.as_ref() != Some(&life) {
                lives.push(EndedLifeSummary {
                    part: part.clone(),
                    ended_at,
                    failed,
                    alarm_at: r.try_get::<Option<i64>, _>("alarm_at")?.map(UnixMs),
                });
                last_life = Some(life);
            }
            if let Some(at) = r.try_get::<Option<i64>, _>("at")? {
                predictions.push(ScoredPrediction {
                    status: r.try_get("status")?,
                    part,
                    at: UnixMs(at),
                    p10_h: r.try_get("p10_h")?,
                    p50_h: r.try_get("p50_h")?,
                    p90_h: r.try_get("p90_h")?,
                    ended_at,
                    failed,
                });
            }
        }
        Ok((predictions, lives))
    }

    /// What the fleet has learned per part type so far.
    pub async fn part_knowledge(&self) -> Result<HashMap<String, FleetKnowledge>> {
        let rows = sqlx::query(
            "SELECT part_id, life_shape, life_scale_hours, warning_median_h, warning_log_sd
             FROM model_part_knowledge",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("part_id")?,
                    FleetKnowledge {
                        life: WeibullLife {
                            shape: r.try_get("life_shape")?,
                            scale_hours: r.try_get("life_scale_hours")?,
                        },
                        warning: WarningInterval {
                            median_h: r.try_get("warning_median_h")?,
                            log_sd: r.try_get("warning_log_sd")?,
                        },
                    },
                ))
            })
            .collect()
    }

    /// Re-learns what the fleet knows about `part` from every life of it the platform
    /// watched: ended lives (failures; replacements are right-censored, unless the
    /// technician found the part failed) and parts still running (censored at their
    /// age now), each left-truncated where the platform first saw it. The manifest's
    /// life is the prior. O(lives of this part): run when a life ends, not every cycle.
    pub async fn refit_part_knowledge(&self, part: &str, now: UnixMs) -> Result<FleetKnowledge> {
        let prior: Option<(f64, f64)> =
            sqlx::query_as("SELECT life_shape, life_scale_hours FROM parts WHERE id = ?")
                .bind(part)
                .fetch_optional(self.pool())
                .await?;
        let Some((shape, scale_hours)) = prior else {
            return Err(corrupt(format!("unknown part `{part}`")));
        };
        let prior = WeibullLife { shape, scale_hours };
        let ended = sqlx::query(
            "SELECT ml.installed_at, ml.ended_at, ml.observed_from, ml.alarm_at,
                    MAX(ml.failed, COALESCE(cl.as_found = 'failed', 0)) AS failed
             FROM model_lives ml LEFT JOIN component_lives cl
               ON cl.machine_id = ml.machine_id AND cl.component = ml.component
              AND cl.installed_at = ml.installed_at
             WHERE ml.part_id = ?",
        )
        .bind(part)
        .fetch_all(self.pool())
        .await?;
        let mut lives = Vec::new();
        let mut warnings = Vec::new();
        for r in &ended {
            let installed = UnixMs(r.try_get(0)?);
            let ended_at = UnixMs(r.try_get(1)?);
            let observed_from = UnixMs(r.try_get(2)?);
            let alarm: Option<i64> = r.try_get(3)?;
            let failed = r.try_get::<i64, _>(4)? != 0;
            lives.push(ObservedLife {
                hours: installed.hours_until(ended_at),
                failed,
                entered_h: installed.hours_until(observed_from).max(0.0),
            });
            if let (true, Some(alarm)) = (failed, alarm) {
                warnings.push(UnixMs(alarm).hours_until(ended_at));
            }
        }
        // Parts running now, as far as the live model has watched them.
        let running = sqlx::query(
            "SELECT c.installed_at, c.failed_at, s.first_bucket
             FROM components c JOIN model_component_state s
               ON s.machine_id = c.machine_id AND s.component = c.key AND s.installed_at = c.installed_at
             WHERE c.part_id = ? AND s.first_bucket IS NOT NULL",
        )
        .bind(part)
        .fetch_all(self.pool())
        .await?;
        for r in &running {
            let installed = UnixMs(r.try_get(0)?);
            let failed_at: Option<i64> = r.try_get(1)?;
            let first = UnixMs(r.try_get(2)?);
            lives.push(ObservedLife {
                hours: installed.hours_until(failed_at.map_or(now, UnixMs)),
                failed: failed_at.is_some(),
                entered_h: installed.hours_until(first).max(0.0),
            });
        }
        let life = update_life_prior(prior, &lives);
        let warning = WarningInterval::default_for(life).updated(&warnings);
        sqlx::query(
            "INSERT INTO model_part_knowledge (part_id, life_shape, life_scale_hours, warning_median_h,
               warning_log_sd, lives, failures, warnings, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (part_id) DO UPDATE SET life_shape = excluded.life_shape,
               life_scale_hours = excluded.life_scale_hours, warning_median_h = excluded.warning_median_h,
               warning_log_sd = excluded.warning_log_sd, lives = excluded.lives,
               failures = excluded.failures, warnings = excluded.warnings, updated_at = excluded.updated_at",
        )
        .bind(part)
        .bind(life.shape)
        .bind(life.scale_hours)
        .bind(warning.median_h)
        .bind(warning.log_sd)
        .bind(lives.len() as i64)
        .bind(lives.iter().filter(|l| l.failed).count() as i64)
        .bind(warnings.len() as i64)
        .bind(now.0)
        .execute(self.pool())
        .await?;
        Ok(FleetKnowledge { life, warning })
    }
}
