//! A private VictoriaMetrics: a child process on a port of the test's choosing, with
//! its data in a temporary directory, killed when dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The binary: `$VICTORIA_METRICS_BIN`, else `victoria-metrics` on the PATH or in
/// /usr/bin. `None` (after saying so) when missing outside CI; a panic under `CI=true`.
pub fn binary() -> Option<PathBuf> {
    let found = std::env::var_os("VICTORIA_METRICS_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join("victoria-metrics"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
        .chain([PathBuf::from("/usr/bin/victoria-metrics")])
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "victoria-metrics is required in CI (apt-get install victoria-metrics; scripts/services does)"
        );
        eprintln!(
            "SKIP: victoria-metrics is not installed (apt-get install victoria-metrics, or run scripts/services)"
        );
    }
    found
}

/// A port nobody listens on right now, and one no other test of this process was
/// given: a test that keeps its port idle for a while (InfluxDB "down") must not see
/// another test's server appear on it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub struct VictoriaMetrics {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

/// One exported series: its labels (`__name__` included) and samples by timestamp.
#[derive(Debug)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(i64, f64)>,
}

impl Series {
    pub fn name(&self) -> &str {
        &self.labels["__name__"]
    }
}

impl VictoriaMetrics {
    /// Starts it on `port` and waits until it answers.
    pub async fn start(binary: &PathBuf, port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(binary)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.path().display()))
            // Test data sits around the real clock; keep whatever is written.
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let vm = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        wearcast_server::tls::install_crypto_provider();
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = http.get(format!("{}/health", vm.url)).send().await
                && r.status().is_success()
            {
                return vm;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("victoria-metrics did not come up on port {port}");
    }

    /// Every series whose name matches the regex `name_re`, once `arrived` holds for
    /// them (VictoriaMetrics makes new series searchable a moment after a flush; at
    /// most 10 s), asked once more after that so late extras show up too.
    pub async fn export(&self, name_re: &str, arrived: impl Fn(&[Series]) -> bool) -> Vec<Series> {
        wearcast_server::tls::install_crypto_provider();
        let http = reqwest::Client::new();
        let ask = || async {
            http.get(format!("{}/internal/force_flush", self.url))
                .send()
                .await
                .unwrap();
            let selector = percent_encode(&format!("{{__name__=~\"{name_re}\"}}"));
            let text = http
                .get(format!("{}/api/v1/export?match[]={selector}", self.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            parse_export(&text)
        };
        for _ in 0..100 {
            if arrived(&ask().await) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        ask().await
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn parse_export(text: &str) -> Vec<Series> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let labels = v["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let samples = v["timestamps"]
                .as_array()
                .unwrap()
                .iter()
                .zip(v["values"].as_array().unwrap())
                .map(|(t, v)| (t.as_i64().unwrap(), v.as_f64().unwrap()))
                .collect();
            Series { labels, samples }
        })
        .collect()
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
