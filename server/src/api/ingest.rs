//! `POST /api/v1/ingest`: the gateway's batches. Idempotent per batch id; an invalid
//! item is rejected and counted without losing the rest of the batch.

use axum::Json;
use axum::extract::State;
use wearcast_protocol::batch::{IngestBatch, IngestResponse, ItemKind, ItemRejection};
use wearcast_protocol::{MachineId, RejectReason, TenantId};

use super::{ApiError, ApiJson, AppState, Scope};
use crate::store::{BatchSelection, MachineRegistry};

/// A registered machine of the claimed tenant, which must be the caller's own (a
/// gateway token speaks for its tenant's machines only).
fn check_machine(
    registry: &MachineRegistry,
    caller_tenant: Option<&str>,
    tenant: &TenantId,
    machine: &MachineId,
) -> Result<(), (RejectReason, String)> {
    if caller_tenant.is_some_and(|t| t != tenant.as_str()) {
        return Err((
            RejectReason::WrongTenant,
            format!("this token cannot ingest for tenant `{tenant}`"),
        ));
    }
    match registry.get(machine.as_str()) {
        None => Err((
            RejectReason::UnknownMachine,
            format!("machine `{machine}` is not registered"),
        )),
        Some(m) if m.tenant != tenant.as_str() => Err((
            RejectReason::WrongTenant,
            format!("machine `{machine}` does not belong to tenant `{tenant}`"),
        )),
        Some(_) => Ok(()),
    }
}

fn select(
    batch: &IngestBatch,
    registry: &MachineRegistry,
    caller_tenant: Option<&str>,
    now_ms: i64,
    max_future_ms: i64,
) -> (BatchSelection, Vec<ItemRejection>) {
    let mut keep = BatchSelection::default();
    let mut rejected = Vec::new();
    let mut reject = |kind, index, (reason, detail): (RejectReason, String)| {
        rejected.push(ItemRejection {
            kind,
            index,
            reason,
            detail,
        })
    };
    for (i, w) in batch.windows.iter().enumerate() {
        let verdict = check_machine(registry, caller_tenant, &w.tenant, &w.machine)
            .and_then(|()| w.check().map_err(|d| (RejectReason::BadWindow, d)))
            .and_then(|()| {
                if w.start.0 > now_ms + max_future_ms {
                    Err((
                        RejectReason::TsFuture,
                        format!("window starts at {}, ahead of the server clock", w.start),
                    ))
                } else {
                    Ok(())
                }
            });
        match verdict {
            Ok(()) => keep.windows.push(i),
            Err(e) => reject(ItemKind::Window, i, e),
        }
    }
    for (i, e) in batch.events.iter().enumerate() {
        let verdict = check_machine(registry, caller_tenant, &e.tenant, &e.machine)
            .and_then(|()| e.event.check().map_err(|d| (RejectReason::BadEvent, d)))
            .and_then(|()| match &e.event.component {
                Some(c)
                    if !registry
                        .get(e.machine.as_str())
                        .is_some_and(|m| m.components.contains(c.as_str())) =>
                {
                    Err((
                        RejectReason::BadEvent,
                        format!("machine `{}` has no component `{c}`", e.machine),
                    ))
                }
                _ => Ok(()),
            });
        match verdict {
            Ok(()) => keep.events.push(i),
            Err(err) => reject(ItemKind::Event, i, err),
        }
    }
    for (i, s) in batch.statuses.iter().enumerate() {
        match check_machine(registry, caller_tenant, &s.tenant, &s.machine) {
            Ok(()) => keep.statuses.push(i),
            Err(err) => reject(ItemKind::Status, i, err),
        }
    }
    (keep, rejected)
}

pub(super) async fn ingest(
    State(state): State<AppState>,
    scope: Scope,
    ApiJson(batch): ApiJson<IngestBatch>,
) -> Result<Json<IngestResponse>, ApiError> {
    let caller_tenant = scope.principal().tenant.as_deref();
    let now = state.clock.now();
    let mut registry = state.registry(false).await?;
    let mut selection = select(&batch, &registry, caller_tenant, now.0, state.max_future_ms);
    let unknown = selection
        .1
        .iter()
        .any(|r| r.reason == RejectReason::UnknownMachine);
    if unknown {
        // Another replica or an import may have registered it since the cache was loaded.
        registry = state.registry(true).await?;
        selection = select(&batch, &registry, caller_tenant, now.0, state.max_future_ms);
    }
    let (keep, rejected) = selection;
    let stored = state
        .store
        .store_batch(&batch, &keep, now, state.influx.is_some())
        .await?;
    if let Some(sink) = &state.influx {
        sink.offer_windows(&registry, &stored.stored_windows);
    }
    let result = if stored.duplicate {
        "duplicate"
    } else {
        "stored"
    };
    metrics::counter!("wearcast_ingest_batches_total", "result" => result).increment(1);
    if !stored.duplicate {
        metrics::counter!("wearcast_ingest_windows_total").increment(stored.windows);
        metrics::counter!("wearcast_ingest_events_total").increment(stored.events);
        for r in &rejected {
            metrics::counter!("wearcast_ingest_rejected_total", "reason" => r.reason.label())
                .increment(1);
            tracing::warn!(batch = %batch.batch_id, reason = r.reason.label(), detail = %r.detail, "ingest item rejected");
        }
    }
    Ok(Json(IngestResponse {
        batch_id: batch.batch_id,
        duplicate: stored.duplicate,
        windows_stored: stored.windows,
        events_stored: stored.events,
        statuses_stored: stored.statuses,
        rejected: if stored.duplicate { vec![] } else { rejected },
    }))
}

/// One registered machine as a gateway needs it.
#[derive(Debug, serde::Serialize)]
pub(super) struct DirectoryEntry {
    id: String,
    tenant: String,
}

/// `GET /api/v1/ingest/machines`: the machines a gateway may forward data of (its
/// tenant's), so it can turn away unknown ones at the edge. Ids and tenants only.
pub(super) async fn machines(
    State(state): State<AppState>,
    scope: Scope,
) -> Result<Json<Vec<DirectoryEntry>>, ApiError> {
    let caller_tenant = scope.principal().tenant.as_deref();
    let registry = state.registry(true).await?;
    let mut out: Vec<DirectoryEntry> = registry
        .iter()
        .filter(|(_, m)| caller_tenant.is_none_or(|t| t == m.tenant))
        .map(|(id, m)| DirectoryEntry {
            id: id.clone(),
            tenant: m.tenant.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(out))
}
