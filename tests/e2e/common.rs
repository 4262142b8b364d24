//! Helpers for the end-to-end tests: run the real `wearcast` binary on free ports with
//! a temporary data directory, talk to it over HTTP and MQTT, and stop it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_wearcast");

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A running `wearcast up`.
pub struct Platform {
    pub child: Child,
    pub http: String,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    pub started: Instant,
}

impl Platform {
    /// Starts `wearcast up <args>` on free ports; waits for its banner.
    pub fn up(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::up_in(dir, args, env)
    }

    pub fn up_in(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> Self {
        let data = dir.path().join("data");
        let log = dir.path().join("wearcast.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let started = Instant::now();
        let mut cmd = Command::new(BIN);
        cmd.arg("up").args(["--http-listen", "127.0.0.1:0"]);
        match std::env::var("E2E_MQTT_URL") {
            Ok(url) => cmd.args(["--mqtt-url", &url]),
            Err(_) => cmd.args(["--mqtt-listen", "127.0.0.1:0"]),
        };
        cmd.arg("--data-dir")
            .arg(&data)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("E2E_RUST_LOG")
                    .unwrap_or_else(|_| "info,rumqttd=warn,rumqttd::router=error".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn wearcast");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep reading after the banner: a closed pipe would be an error for the
            // platform's next line of output.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut http, mut mqtt) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while http.is_none() || mqtt.is_none() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(remaining) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("Dashboard:") {
                        http = Some(rest.trim().trim_end_matches('/').to_string());
                    }
                    if let Some(rest) = line.trim().strip_prefix("MQTT broker:") {
                        let url = rest.split_whitespace().next().unwrap_or_default();
                        let url = url.trim_start_matches("mqtts://");
                        mqtt = Some(url.trim_start_matches("mqtt://").to_string());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "wearcast up did not print its banner within 60 s; log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        let mqtt = mqtt.unwrap_or_default();
        let (host, port) = mqtt.rsplit_once(':').expect("mqtt host:port");
        Self {
            child,
            http: http.unwrap_or_default(),
            mqtt_host: host.to_string(),
            mqtt_port: port.parse().expect("mqtt port"),
            dir,
            log,
            started,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The admin API token `up` wrote to `<data dir>/tokens/admin.token`.
    pub fn admin_token(&self) -> String {
        self.token("admin")
    }

    /// The secret of `<data dir>/tokens/<name>.token`.
    pub fn token(&self, name: &str) -> String {
        let path = self.data_dir().join("tokens").join(format!("{name}.token"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    }

    /// A client that calls the API as the admin.
    pub fn client(&self) -> reqwest::Client {
        bearer(&self.admin_token())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.http);
        let resp = self
            .client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {url}: {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
    }

    /// POSTs `body` (JSON text, or empty) and expects a success.
    pub async fn post(&self, path: &str, body: &str) -> Value {
        let (status, text) = self.post_status(path, body).await;
        assert!(
            (200..300).contains(&status),
            "POST {}{path}: {status}: {text}",
            self.http
        );
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("POST {}{path}: not JSON ({e}): {text}", self.http))
    }

    /// `POST path` as the admin; the status and the body, whatever the status.
    pub async fn post_status(&self, path: &str, body: &str) -> (u16, String) {
        let url = format!("{}{path}", self.http);
        let resp = self
            .client()
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    pub async fn get_status(&self, path: &str) -> (u16, String) {
        let resp = self
            .client()
            .get(format!("{}{path}", self.http))
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    pub async fn metrics(&self) -> String {
        wearcast_server::tls::install_crypto_provider();
        reqwest::get(format!("{}/metrics", self.http))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let keep =
                std::env::temp_dir().join(format!("wearcast-e2e-failed-{}.log", self.child.id()));
            let _ = std::fs::write(&keep, &log);
            eprintln!("full log kept at {}", keep.display());
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- last lines of the wearcast log ---\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A client that sends `token` as `Authorization: Bearer` on every request.
pub fn bearer(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("token header"),
    );
    wearcast_server::tls::install_crypto_provider();
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// Polls `probe` every 250 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The value of a Prometheus counter/gauge with exactly these labels (0 if absent).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Publishes with the real `mosquitto_pub` client, or returns false if it is not
/// installed (a failure under CI).
pub fn mosquitto_pub(host: &str, port: u16, topic: &str, payload: &str) -> bool {
    match Command::new("mosquitto_pub")
        .args([
            "-h",
            host,
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ])
        .status()
    {
        Ok(status) => {
            assert!(status.success(), "mosquitto_pub failed: {status}");
            true
        }
        Err(e) => {
            assert!(!in_ci(), "mosquitto_pub is required in CI: {e}");
            eprintln!("SKIP: mosquitto_pub not installed ({e}); install mosquitto-clients");
            false
        }
    }
}

pub fn write_json(path: &Path, value: &impl serde::Serialize) {
    std::fs::write(path, serde_json::to_string_pretty(value).expect("json")).expect("write");
}
