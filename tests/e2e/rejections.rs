//! Every way a device can get a message rejected, injected by the simulator's
//! `[sim.faults]` into `wearcast up --demo`, is counted by the gateway under its reason
//! in `/metrics`: no more (a good message is never rejected) and, once the gateway
//! caught up, no less (a bad one is never silently dropped). The faults of a device
//! that does nothing wrong run at the same time — duplicated, reordered and burst
//! messages, and dropped connections — and add no rejection at all.

use std::time::Duration;

use wearcast_firmware_sim::faults::MalformedKind;

use crate::common::{Platform, eventually, metric};

const INJECTED: &str = "wearcast_sim_faults_injected_total";
const REJECTED: &str = "wearcast_gateway_rejected_total";

/// (injected, rejected) per reason, from one scrape.
fn counts(metrics: &str) -> Vec<(&'static str, f64, f64)> {
    MalformedKind::ALL
        .iter()
        .map(|kind| {
            let reason = kind.reason().label();
            (
                reason,
                metric(
                    metrics,
                    INJECTED,
                    &[("fault", "malformed"), ("reason", reason)],
                ),
                // Summed over the unit (message, sample, reading) it was counted in.
                metric(metrics, REJECTED, &[("reason", reason)]),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_reason_the_simulator_injects_is_counted_by_the_gateway() {
    let _serial = crate::processes::exclusive().await;
    let mut p = Platform::up(
        &["--demo", "--demo-seed", "11"],
        &[
            ("WEARCAST_DEMO__ACTORS", "false"),
            ("WEARCAST_SIM__FAULTS__MALFORMED", "0.05"),
            ("WEARCAST_SIM__FAULTS__DUPLICATE", "0.01"),
            ("WEARCAST_SIM__FAULTS__REORDER", "0.02"),
            ("WEARCAST_SIM__FAULTS__BURST", "0.02"),
            ("WEARCAST_SIM__FAULTS__DISCONNECT", "0.002"),
        ],
    );

    // Every reason injected at least twice; never more rejected than injected.
    let injected = eventually(
        "every kind of bad message injected",
        Duration::from_secs(90),
        || async {
            let m = p.metrics().await;
            let counts = counts(&m);
            for (reason, injected, rejected) in &counts {
                assert!(
                    rejected <= injected,
                    "{rejected} rejected as {reason} but only {injected} injected: a good message was rejected"
                );
            }
            counts
                .iter()
                .all(|(_, injected, _)| *injected >= 2.0)
                .then_some(counts)
        },
    )
    .await;

    // The gateway catches up with what was injected by then, reason by reason.
    eventually(
        "the gateway counted every injected rejection",
        Duration::from_secs(30),
        || async {
            let m = p.metrics().await;
            let now = counts(&m);
            let behind: Vec<String> = injected
                .iter()
                .zip(&now)
                .filter(|((_, then, _), (_, _, rejected))| rejected < then)
                .map(|((reason, then, _), (_, _, rejected))| {
                    format!("{reason}: {rejected} of {then}")
                })
                .collect();
            for (reason, injected, rejected) in &now {
                assert!(rejected <= injected, "{reason}: {rejected} > {injected}");
            }
            behind.is_empty().then_some(())
        },
    )
    .await;

    // Duplicated deliveries are dropped by `seq`, counted, and the platform goes on.
    let m = p.metrics().await;
    let duplicated = metric(&m, INJECTED, &[("fault", "duplicate")]);
    assert!(duplicated > 0.0, "no duplicates injected");
    assert!(
        metric(&m, "wearcast_gateway_duplicates_total", &[]) > 0.0,
        "{duplicated} duplicates injected, none counted"
    );
    assert!(metric(&m, "wearcast_gateway_samples_accepted_total", &[]) > 0.0);
    // The other faults happened too (and, above, caused no rejection of their own).
    for fault in ["reorder", "burst", "disconnect"] {
        assert!(
            metric(&m, INJECTED, &[("fault", fault)]) > 0.0,
            "no {fault} injected"
        );
    }
    let status = p
        .terminate(Duration::from_secs(40))
        .expect("exits on SIGTERM");
    assert!(status.success(), "exit {status}");
}
