//! The command line's errors: what a user sees when something is in the way.

use std::process::Command;

use crate::common::BIN;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().expect("run wearcast");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_taken_http_port_says_which_flag_to_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = run(&[
        "up",
        "--http-listen",
        &addr,
        "--mqtt-listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains(&addr) && err.contains("--http-listen"),
        "{err}"
    );
}

#[test]
fn a_taken_mqtt_port_says_which_flags_to_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = run(&[
        "up",
        "--http-listen",
        "127.0.0.1:0",
        "--mqtt-listen",
        &addr,
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains(&addr) && err.contains("--mqtt-listen") && err.contains("--mqtt-url"),
        "{err}"
    );
}

#[test]
fn an_unknown_config_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[gateway]\nwindoww = \"1m\"\n").unwrap();
    let (ok, err) = run(&["--config", path.to_str().unwrap(), "config"]);
    assert!(!ok);
    assert!(err.contains("windoww"), "{err}");
}

#[test]
fn an_invalid_registry_file_is_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.json");
    std::fs::write(&path, "{\"tenant\": 5}").unwrap();
    let (ok, err) = run(&[
        "server",
        "--http-listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--registry",
        path.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("fleet.json") && err.contains("at `tenant`") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn the_demo_refuses_a_data_dir_that_holds_real_data() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wearcast.db"), b"").unwrap();
    let (ok, err) = run(&[
        "up",
        "--demo",
        "--http-listen",
        "127.0.0.1:0",
        "--mqtt-listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("not the demo's"), "{err}");
    assert!(
        dir.path().join("wearcast.db").exists(),
        "must not delete it"
    );
}

#[test]
fn bad_influx_settings_are_refused_naming_each_and_the_token_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (ok, err) = run(&[
        "server",
        "--data-dir",
        data,
        "--http-listen",
        "127.0.0.1:0",
        "--influx-url",
        "influx:8086",
        "--influx-org",
        "acme",
        "--influx-bucket",
        "telemetry",
        "--influx-token",
        "s3cr3t-token",
    ]);
    assert!(!ok);
    assert!(
        err.contains("server.influx.url") && err.contains("influx:8086"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");

    let (ok, err) = run(&[
        "server",
        "--data-dir",
        data,
        "--http-listen",
        "127.0.0.1:0",
        "--influx-url",
        "http://127.0.0.1:8086",
    ]);
    assert!(!ok);
    for setting in [
        "server.influx.org",
        "server.influx.bucket",
        "server.influx.token",
    ] {
        assert!(err.contains(setting), "{err}");
    }

    let out = Command::new(BIN)
        .args(["config"])
        .env("WEARCAST_SERVER__INFLUX__URL", "http://127.0.0.1:8086")
        .env("WEARCAST_SERVER__INFLUX__ORG", "acme")
        .env("WEARCAST_SERVER__INFLUX__BUCKET", "telemetry")
        .env("WEARCAST_SERVER__INFLUX__TOKEN", "s3cr3t-token")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("http://127.0.0.1:8086"), "{printed}");
    assert!(!printed.contains("s3cr3t"), "{printed}");
}

#[test]
fn gateway_tls_and_sign_in_flags_reach_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("gw");
    let gateway = |extra: &[&str]| {
        let mut args = vec![
            "gateway",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    // Each flag reaches the configuration: the error names its setting and file.
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &[
                "--mqtt-url",
                "mqtts://127.0.0.1:1",
                "--mqtt-ca-file",
                "/nonexistent/ca.pem",
            ],
            &["mqtt_ca_file", "/nonexistent/ca.pem"],
        ),
        (
            &[
                "--mqtt-url",
                "mqtt://127.0.0.1:1",
                "--mqtt-ca-file",
                "/nonexistent/ca.pem",
            ],
            &["only used with an mqtts://"],
        ),
        (
            &[
                "--server-url",
                "https://127.0.0.1:1",
                "--server-ca-file",
                "/nonexistent/s.pem",
            ],
            &["server_ca_file", "/nonexistent/s.pem"],
        ),
        (
            &["--mqtt-password-file", "/nonexistent/gw.password"],
            &["mqtt_password_file", "/nonexistent/gw.password"],
        ),
    ];
    for (flags, said) in cases {
        let (ok, err) = gateway(flags);
        assert!(!ok, "{flags:?}");
        assert!(said.iter().all(|s| err.contains(s)), "{flags:?}: {err}");
    }
}
