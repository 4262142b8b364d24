//! Device identity on a real Mosquitto: `wearcast device` issues each machine its own
//! MQTT password and exports Mosquitto's password and ACL files from the registry; with
//! them a device publishes on its own topics only, cannot listen to the fleet, and a
//! wrong password is refused, while the gateway user reads everything; and a real
//! `wearcast gateway` signs in as that user and brings a device's telemetry to the
//! server, while a forged message never arrives.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::BIN;
use crate::processes::{
    GatewayProcess, GatewaySettings, OwnBroker, ServerProcess, base_time, manifest,
    mosquitto_available, payload,
};

fn wearcast(data: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("device")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run wearcast device");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "wearcast device {args:?}: {text}");
    text
}

fn secret(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

/// `mosquitto_pub` as `user`; whether the broker let it connect.
pub(crate) fn publish(port: u16, user: &str, password: &str, topic: &str, message: &str) -> bool {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-u", user, "-P", password, "-t", topic, "-m", message])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A `mosquitto_sub` as `user` on `filter` for `secs`, in debug mode, so that the test
/// can wait for the broker's SUBACK before it publishes anything the subscriber must hear.
pub(crate) struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Subscriber {
    /// Whether the broker acknowledged the subscription within `timeout`.
    pub(crate) async fn wait_subscribed(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("received SUBACK"))
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Waits for the subscriber to end; the messages it heard, as `topic payload`
    /// lines (the debug lines left out).
    pub(crate) fn heard(mut self) -> String {
        self.child.wait().unwrap();
        self.reader.join().unwrap();
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed (mid"))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

pub(crate) fn subscribe(
    port: u16,
    user: &str,
    password: &str,
    filter: &str,
    secs: u32,
) -> Subscriber {
    // Line-buffered (coreutils' stdbuf): into a pipe, mosquitto_sub's stdio would hold
    // every line, the SUBACK too, until it exits.
    let mut child = Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub"])
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-v",
            "-d",
            "-q",
            "1",
        ])
        .args([
            "-u",
            user,
            "-P",
            password,
            "-t",
            filter,
            "-W",
            &secs.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    Subscriber {
        child,
        lines,
        reader,
    }
}

#[tokio::test]
async fn each_device_speaks_only_for_itself_on_a_mosquitto_with_the_exported_acl() {
    let test = "devices::each_device_speaks_only_for_itself";
    if !mosquitto_available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let machines = ["m-1".to_string(), "m-2".to_string()];
    let mut server = ServerProcess::start(dir.path(), &manifest("acme", &machines));
    server.stop().await;
    let data = dir.path().join("server");
    let keys = dir.path().join("keys");
    let said = wearcast(
        &data,
        &["password", "--all", "--output-dir", keys.to_str().unwrap()],
    );
    assert!(said.contains("2 machines"), "{said}");
    let gw_file = keys.join("gateway.password");
    wearcast(
        &data,
        &[
            "gateway-password",
            "--name",
            "gw-1",
            "--output",
            gw_file.to_str().unwrap(),
        ],
    );
    let (passwd, acl) = (dir.path().join("passwd"), dir.path().join("acl"));
    wearcast(
        &data,
        &[
            "export-mosquitto",
            "--passwd",
            passwd.to_str().unwrap(),
            "--acl",
            acl.to_str().unwrap(),
        ],
    );
    let exported = std::fs::read_to_string(&passwd).unwrap();
    assert_eq!(exported.lines().count(), 3, "{exported}");
    let (pw1, pw2, gw) = (
        secret(&keys.join("m-1.password")),
        secret(&keys.join("m-2.password")),
        secret(&gw_file),
    );
    assert!(
        !exported.contains(&pw1),
        "the password file holds hashes only"
    );
    // Mosquitto drops to its own user before it reads them.
    for f in [&passwd, &acl] {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    let broker = OwnBroker::start_with(&format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}\n",
        passwd.display(),
        acl.display()
    ));
    let port = broker.port;

    let gateway = subscribe(port, "gw-1", &gw, "wearcast/v1/#", 8);
    let snoop = subscribe(port, "m-2", &pw2, "#", 8);
    for (who, s) in [("the gateway user", &gateway), ("m-2", &snoop)] {
        assert!(
            s.wait_subscribed(Duration::from_secs(6)).await,
            "no SUBACK for {who}"
        );
    }
    assert!(publish(
        port,
        "m-1",
        &pw1,
        "wearcast/v1/acme/m-1/telemetry",
        "own"
    ));
    // Accepted by the broker (QoS 1 is acknowledged) but never delivered.
    assert!(publish(
        port,
        "m-1",
        &pw1,
        "wearcast/v1/acme/m-2/telemetry",
        "forged"
    ));
    assert!(!publish(
        port,
        "m-1",
        "not-the-password",
        "wearcast/v1/acme/m-1/telemetry",
        "x"
    ));
    assert!(!publish(
        port,
        "m-9",
        &pw1,
        "wearcast/v1/acme/m-9/telemetry",
        "x"
    ));
    // The gateway user may read, not write.
    assert!(publish(
        port,
        "gw-1",
        &gw,
        "wearcast/v1/acme/m-1/telemetry",
        "gateway-forged"
    ));

    let heard = gateway.heard();
    let snooped = snoop.heard();
    assert_eq!(
        heard.trim(),
        "wearcast/v1/acme/m-1/telemetry own",
        "the gateway heard: {heard}"
    );
    assert_eq!(snooped, "", "a device subscribed to # heard: {snooped}");

    // The gateway signs in as its own MQTT user and the server stores what m-1 said
    // about itself, and nothing m-1 said in m-2's name.
    server.restart().await;
    let settings = GatewaySettings::new(&broker, &server, "gw-1", &dir.path().join("gw-1"));
    let gw_file = gw_file.display().to_string();
    let mut gateway = GatewayProcess::start_with_env(
        "gateway",
        &settings,
        dir.path(),
        &[
            ("WEARCAST_GATEWAY__MQTT_USERNAME", "gw-1"),
            ("WEARCAST_GATEWAY__MQTT_PASSWORD_FILE", &gw_file),
        ],
    );
    gateway.wait_subscribed(Duration::from_secs(30)).await;
    let base = base_time();
    assert!(publish(
        port,
        "m-1",
        &pw1,
        "wearcast/v1/acme/m-1/telemetry",
        &payload(base, 1, 1)
    ));
    assert!(publish(
        port,
        "m-1",
        &pw1,
        "wearcast/v1/acme/m-2/telemetry",
        &payload(base, 2, 1)
    ));
    let mut stored = Default::default();
    for _ in 0..200 {
        stored = server
            .stored_by_seq("m-1", "spindle.vibration_rms", base)
            .await;
        if !stored.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stored.into_iter().collect::<Vec<_>>(),
        vec![(1, (1, 1.0))],
        "{}",
        gateway.log_tail()
    );
    gateway.stop().await;
    let forged = server
        .stored_by_seq("m-2", "spindle.vibration_rms", base)
        .await;
    assert!(forged.is_empty(), "m-1 spoke for m-2: {forged:?}");

    // With a wrong password the gateway says so, by name of the settings to fix.
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let wrong = wrong.display().to_string();
    let refused = GatewayProcess::start_with_env(
        "gateway-wrong",
        &GatewaySettings::new(&broker, &server, "gw-2", &dir.path().join("gw-2")),
        dir.path(),
        &[
            ("WEARCAST_GATEWAY__MQTT_USERNAME", "gw-1"),
            ("WEARCAST_GATEWAY__MQTT_PASSWORD_FILE", &wrong),
        ],
    );
    let mut said = String::new();
    for _ in 0..100 {
        said = std::fs::read_to_string(&refused.log).unwrap_or_default();
        if said.contains("refused the gateway's MQTT credentials") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        said.contains("refused the gateway's MQTT credentials")
            && said.contains("mqtt_password_file"),
        "{said}"
    );
    assert!(
        !said.contains("not-the-password"),
        "the password is in the log"
    );
}
