//! Backtests published to the server (`wearcast backtest --publish`, `POST
//! /api/v1/model-quality/backtests`): the models' offline accuracy, kept per tenant.

use serde::Serialize;
use wearcast_protocol::UnixMs;

use super::StoreError;
use super::db::{Pool, q};
use crate::backtest::BacktestSummary;
use crate::views::Rfc3339;

type Result<T> = std::result::Result<T, StoreError>;

/// One published backtest, as `GET /api/v1/model-quality/backtests` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordedBacktest {
    pub id: String,
    /// The platform clock when it was published.
    pub recorded_at: Rfc3339,
    /// `None`: published by a deployment admin, shown to every tenant.
    pub tenant: Option<String>,
    #[serde(flatten)]
    pub summary: BacktestSummary,
}

impl Pool {
    /// Records a backtest `token` published for `tenant` at `at`.
    pub async fn record_backtest(
        &self,
        tenant: Option<&str>,
        token: &str,
        at: UnixMs,
        summary: &BacktestSummary,
    ) -> Result<RecordedBacktest> {
        let id = format!("bt-{}", uuid::Uuid::now_v7().simple());
        let json = serde_json::to_string(summary)
            .map_err(|e| StoreError::Corrupt(format!("backtest summary: {e}")))?;
        q(
            "INSERT INTO backtests (id, tenant_id, recorded_at, token_id, summary_json)
           VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(tenant)
        .bind(at.0)
        .bind(token)
        .bind(json)
        .execute(self)
        .await?;
        Ok(RecordedBacktest {
            id,
            recorded_at: Rfc3339(at),
            tenant: tenant.map(str::to_string),
            summary: summary.clone(),
        })
    }

    /// The newest `limit` backtests `tenant` may see: its own and the deployment-wide
    /// ones (`tenant` `None`: every one).
    pub async fn backtests(
        &self,
        tenant: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RecordedBacktest>> {
        let rows = q(
            "SELECT id, tenant_id, recorded_at, summary_json FROM backtests
                      WHERE $1 IS NULL OR tenant_id = $1 OR tenant_id IS NULL
                      ORDER BY recorded_at DESC, id DESC LIMIT $2",
        )
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(self)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.get("id")?;
                let json: String = r.get("summary_json")?;
                let summary = serde_json::from_str(&json).map_err(|e| {
                    StoreError::Corrupt(format!("backtest `{id}`: summary_json: {e}"))
                })?;
                Ok(RecordedBacktest {
                    recorded_at: Rfc3339(UnixMs(r.get("recorded_at")?)),
                    tenant: r.get("tenant_id")?,
                    id,
                    summary,
                })
            })
            .collect()
    }
}
