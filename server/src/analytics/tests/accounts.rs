//! The CSV export of accounts.

use crate::analytics::accounts::{CSV_HEADER, to_csv};
use crate::analytics::health::{LifecycleStage, Signal, SignalKind};
use crate::analytics::ltv::{Ltv, RetentionSource};
use crate::views::{AccountView, ContractSummaryView, Rfc3339};

use super::*;

fn account_view() -> AccountView {
    AccountView {
        customer: "q".into(),
        name: "Quiet, \"Ltd\"".into(),
        currency: "EUR".into(),
        health_score: 40.0,
        flagged: true,
        signals: vec![
            Signal {
                kind: SignalKind::Quiet,
                since: day(15.0),
                reason: "no telemetry; for 15 days".into(),
                weight: 35.0,
            },
            Signal {
                kind: SignalKind::NpsDetractor,
                since: day(22.0),
                reason: "scored 3/10".into(),
                weight: 25.0,
            },
        ],
        lifecycle_stage: LifecycleStage::Mature,
        customer_since: Some(Rfc3339(day(-1000.0))),
        machines: 3,
        last_telemetry: Some(Rfc3339(day(15.0))),
        ltv: Ltv {
            ltv_cents: 326_857,
            margin_to_date_cents: 149_000,
            expected_future_margin_cents: 177_857,
            annual_margin_cents: 83_000,
            retention: 0.75,
            retention_source: RetentionSource::Tenant,
            discount_rate: 0.1,
        },
        contract: Some(ContractSummaryView {
            id: "k".into(),
            tier: "standard".into(),
            annual_fee_cents: 600_000,
            start: Rfc3339(day(-300.0)),
            renewal: Rfc3339(day(60.0)),
        }),
        renewal_date: Some(Rfc3339(day(60.0))),
        recommendations: vec![],
        contacts_last_week: 1,
        contact_cap: 3,
    }
}

#[test]
fn the_csv_has_a_header_and_one_quoted_row_per_account() {
    let csv = to_csv(&[account_view()]).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), CSV_HEADER.join(","));
    assert_eq!(
        lines.next().unwrap(),
        "q,\"Quiet, \"\"Ltd\"\"\",40,true,mature,quiet; nps_detractor,\
         no telemetry; for 15 days | scored 3/10,\
         2026-01-20T00:00:00.000Z; 2026-01-27T00:00:00.000Z,\
         326857,149000,177857,0.7500,standard,600000,2026-03-06T00:00:00.000Z,,EUR"
    );
    assert_eq!(lines.next(), None);
    // A spreadsheet reads it back into the same cells.
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let row = reader.records().next().unwrap().unwrap();
    assert_eq!(&row[1], "Quiet, \"Ltd\"");
    assert_eq!(row.len(), CSV_HEADER.len());
}
