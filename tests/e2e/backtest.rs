//! `wearcast backtest --publish`: the run's summary goes to a running server with a staff
//! token and shows up in `GET /api/v1/model-quality/backtests` (the manufacturer view's
//! list); a wrong URL or token file is refused before minutes of learning, naming the flag.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use crate::common::{BIN, Platform};

/// A deterministic pseudo-random stream (SplitMix64), uniform in [0, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
    }

    fn gauss(&mut self) -> f64 {
        (0..12).map(|_| self.next()).sum::<f64>() - 6.0
    }
}

/// Run-to-failure CSV in the DESIGN.md layout: `units` units from `first`, lives of
/// 120–280 cycles, wear rising exponentially over the last 60% of the life in two
/// channels (one up, one down) under two operating regimes, and a noise channel. Each
/// unit is cut to `keep(unit, life)` rows; returns the text and the lives.
fn runs(
    units: usize,
    first: usize,
    seed: u64,
    keep: impl Fn(usize, usize) -> usize,
) -> (String, Vec<(usize, usize)>) {
    let mut rng = Rng(seed);
    let mut text = String::from("unit,cycle,op.alt,main.temp_c,main.flow,main.noise\n");
    let mut lives = Vec::new();
    for u in first..first + units {
        let life = 120 + (rng.next() * 160.0) as usize;
        let rows = keep(u, life);
        for i in 0..rows {
            let regime = if rng.next() > 0.5 { 1.0 } else { 0.0 };
            let x = ((i as f64 - 0.4 * life as f64) / (0.6 * life as f64)).max(0.0);
            let wear = (3.0 * x).exp_m1() / 3f64.exp_m1();
            let _ = writeln!(
                text,
                "u{u},{},{:.3},{:.3},{:.3},{:.3}",
                i + 1,
                10.0 * regime,
                20.0 * regime + 3.0 * wear + 0.2 * rng.gauss(),
                50.0 - 5.0 * regime - 2.0 * wear + 0.2 * rng.gauss(),
                rng.gauss()
            );
        }
        lives.push((u, life - rows));
    }
    (text, lives)
}

fn write_data(dir: &Path) {
    let (train, _) = runs(30, 0, 11, |_, life| life);
    let (test, left) = runs(10, 100, 12, |u, life| life * (3 + u % 6) / 10);
    std::fs::write(dir.join("train.csv"), train).unwrap();
    std::fs::write(dir.join("test.csv"), test).unwrap();
    let truth: String = std::iter::once("unit,rul\n".to_string())
        .chain(left.iter().map(|(u, rul)| format!("u{u},{rul}\n")))
        .collect();
    std::fs::write(dir.join("truth.csv"), truth).unwrap();
}

fn backtest(dir: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("backtest")
        .args([
            "--train",
            "train.csv",
            "--test",
            "test.csv",
            "--truth",
            "truth.csv",
        ])
        .args(extra)
        .current_dir(dir)
        .output()
        .expect("run wearcast backtest");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_backtest_is_listed_by_the_server() {
    let data = tempfile::tempdir().unwrap();
    write_data(data.path());
    let p = Platform::up(&[], &[]);
    let token = p.data_dir().join("tokens").join("admin.token");
    let token = token.to_str().unwrap();

    // Refused before learning: the flag to fix is named.
    let (ok, _, err) = backtest(
        data.path(),
        &["--publish", "ftp://server", "--token-file", token],
    );
    assert!(!ok && err.contains("--publish ftp://server"), "{err}");
    let (ok, _, err) = backtest(
        data.path(),
        &["--publish", &p.http, "--token-file", "no-such.token"],
    );
    assert!(!ok && err.contains("--token-file no-such.token"), "{err}");
    let (ok, _, err) = backtest(data.path(), &["--publish", &p.http]);
    assert!(!ok && err.contains("--token-file"), "{err}");
    assert_eq!(
        p.get("/api/v1/model-quality/backtests").await["backtests"],
        serde_json::json!([])
    );

    let (ok, out, err) = backtest(data.path(), &["--publish", &p.http, "--token-file", token]);
    assert!(ok, "{out}{err}");
    let id = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("published"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `published` line in:\n{out}"))
        .to_string();
    let listed = p.get("/api/v1/model-quality/backtests").await;
    let b = &listed["backtests"][0];
    assert_eq!(b["id"], id.as_str(), "{listed}");
    assert_eq!(
        (&b["train"], &b["test"]),
        (&"train.csv".into(), &"test.csv".into())
    );
    assert_eq!(
        (b["training_runs"].as_u64(), b["test_units"].as_u64()),
        (Some(30), Some(10))
    );
    // The RMSE the command printed is the one recorded.
    let printed: f64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("RMSE"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no RMSE line in:\n{out}"));
    assert!(
        (b["rmse"].as_f64().unwrap() - printed).abs() < 0.01,
        "{b} vs {printed}"
    );
}
