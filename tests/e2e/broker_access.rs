//! The embedded broker's access guard (src/broker.rs), with anonymous clients off: the
//! demo's simulated devices sign in with the passwords the demo issued them and their
//! telemetry flows; a device with a password from `wearcast device password` publishes
//! on its own topic; anonymous clients and wrong passwords are refused; a device that
//! publishes in another machine's name or subscribes to `#` is disconnected, counted,
//! and nothing it forged is stored.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use wearcast_protocol::UnixMs;

use crate::common::{BIN, Platform, eventually, metric};
use crate::devices::{publish, subscribe};
use crate::processes::mosquitto_available;

fn refused(metrics: &str, reason: &str) -> f64 {
    metric(
        metrics,
        "wearcast_mqtt_refused_total",
        &[("reason", reason)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_lets_each_device_speak_only_for_itself() {
    let test = "broker_access::the_embedded_broker_lets_each_device_speak_only_for_itself";
    if !mosquitto_available(test) {
        return;
    }
    let _serial = crate::processes::exclusive().await;
    let p = Platform::up(
        &["--demo", "--demo-seed", "5"],
        &[("WEARCAST_BROKER__ALLOW_ANONYMOUS", "false")],
    );
    let machines = p.get("/api/v1/machines").await;
    let machines = machines.as_array().unwrap().clone();
    assert!(machines.len() >= 2);
    // Every simulated device signed in as itself.
    eventually(
        "every simulated device connected through the guard, and telemetry stored",
        Duration::from_secs(60),
        || async {
            let m = p.metrics().await;
            let devices = metric(&m, "wearcast_mqtt_connections_total", &[("user", "device")]);
            let windows = metric(&m, "wearcast_ingest_windows_total", &[]);
            (devices >= machines.len() as f64 && windows > 0.0).then_some(())
        },
    )
    .await;

    let (a, b) = (&machines[0], &machines[1]);
    let tenant = a["tenant"].as_str().unwrap();
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let out = Command::new(BIN)
        .args(["device", "password", "--machine", a, "--data-dir"])
        .arg(p.data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let password = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(password.len(), 32, "{password}");

    let port = p.mqtt_port;
    let now = UnixMs::parse_rfc3339(p.get("/api/v1/info").await["now"].as_str().unwrap()).unwrap();
    let reading = |channel: &str, value: f64| {
        format!(
            r#"{{"ts": {}, "readings": {{"{channel}": {value}}}}}"#,
            now.0
        )
    };
    let own = format!("wearcast/v1/{tenant}/{a}/telemetry");
    let other = format!("wearcast/v1/{tenant}/{b}/telemetry");
    let before = p.metrics().await;

    // Refused at CONNECT: no credentials, a wrong password, an unknown user.
    let anonymous = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", &own, "-m", &reading("probe.anonymous_c", 1.0)])
        .status()
        .unwrap();
    assert!(!anonymous.success(), "an anonymous client was let in");
    assert!(!publish(
        port,
        a,
        "not-the-password",
        &own,
        &reading("probe.wrong_c", 1.0)
    ));
    assert!(!publish(
        port,
        "m-999",
        &password,
        &own,
        &reading("probe.wrong_c", 1.0)
    ));

    // Its own topic: stored.
    assert!(publish(
        port,
        a,
        &password,
        &own,
        &reading("probe.guard_c", 7.5)
    ));
    let windows = eventually(
        "the device's own reading",
        Duration::from_secs(30),
        || async {
            let (status, body) = p
                .get_status(&format!(
                    "/api/v1/machines/{a}/telemetry?channel=probe.guard_c"
                ))
                .await;
            (status == 200).then(|| serde_json::from_str::<Value>(&body).unwrap())
        },
    )
    .await;
    assert_eq!(windows["windows"][0]["mean"], 7.5);

    // Another machine's topic, and `#`: disconnected and counted.
    publish(
        port,
        a,
        &password,
        &other,
        &reading("probe.forged_c", 666.0),
    );
    let snoop = subscribe(port, a, &password, "#", 2);
    let heard = snoop.heard();
    assert_eq!(heard, "", "a device subscribed to # heard: {heard}");
    let after = eventually("the refusals counted", Duration::from_secs(10), || async {
        let m = p.metrics().await;
        (refused(&m, "publish_denied") > refused(&before, "publish_denied")
            && refused(&m, "subscribe_denied") > refused(&before, "subscribe_denied"))
        .then_some(m)
    })
    .await;
    assert_eq!(
        refused(&after, "anonymous") - refused(&before, "anonymous"),
        1.0
    );
    assert_eq!(
        refused(&after, "bad_credentials") - refused(&before, "bad_credentials"),
        2.0
    );
    // The forged reading never reached the platform: a reading the device sent on its
    // own topic after it is stored, the forged one is not.
    assert!(publish(
        port,
        a,
        &password,
        &own,
        &reading("probe.after_c", 1.5)
    ));
    eventually(
        "the reading sent after the forgery",
        Duration::from_secs(30),
        || async {
            let (status, _) = p
                .get_status(&format!(
                    "/api/v1/machines/{a}/telemetry?channel=probe.after_c"
                ))
                .await;
            (status == 200).then_some(())
        },
    )
    .await;
    let (status, _) = p
        .get_status(&format!(
            "/api/v1/machines/{b}/telemetry?channel=probe.forged_c"
        ))
        .await;
    assert_eq!(status, 404, "a forged reading was stored for {b}");
    // A device that reuses a simulated machine's client id does not take over its
    // session (the guard files each session under its user): the simulated machine,
    // which would reconnect within a second if kicked (and be counted), stays on.
    let devices = |m: &str| metric(m, "wearcast_mqtt_connections_total", &[("user", "device")]);
    let connected = devices(&p.metrics().await);
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-i", &format!("wearcast-sim-{b}"), "-u", a, "-P", &password])
        .args(["-t", &own, "-m", &reading("probe.takeover_c", 2.0)])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        devices(&p.metrics().await) - connected,
        1.0,
        "a device connection besides the one reusing {b}'s client id: {b} was kicked off and reconnected"
    );
    let windows_then = metric(&after, "wearcast_ingest_windows_total", &[]);
    eventually(
        "telemetry still flowing",
        Duration::from_secs(30),
        || async {
            (metric(&p.metrics().await, "wearcast_ingest_windows_total", &[]) > windows_then)
                .then_some(())
        },
    )
    .await;
    let log = p.log_text();
    assert!(
        log.contains("broke its access rules") && log.contains(&other),
        "the refusal is not logged with its topic"
    );
    assert!(
        !log.contains(&password),
        "the device password is in the log"
    );
}
