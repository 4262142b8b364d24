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
