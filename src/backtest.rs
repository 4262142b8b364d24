//! `wearcast backtest`: learn the wear model from run-to-failure history, predict the
//! remaining life of test units at their last row, and score it against the truth.
//! A thin layer over `wearcast_server::backtest`, which does the work.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use wearcast_server::backtest::{self, BacktestConfig, BacktestReport};

use crate::ops::say;

#[derive(Args, Debug)]
pub struct BacktestArgs {
    /// Training histories, every unit run to failure (CSV: `unit,time,<channel>...`).
    #[arg(long, value_name = "FILE")]
    train: PathBuf,
    /// Test histories, cut short before failure (same layout).
    #[arg(long, value_name = "FILE")]
    test: PathBuf,
    /// True remaining life after each test unit's last row (CSV: `unit,rul`).
    #[arg(long, value_name = "FILE")]
    truth: PathBuf,
    /// Write `unit,rul_p10,rul_p50,rul_p90` here.
    #[arg(long, value_name = "OUT")]
    predictions: Option<PathBuf>,
    /// Print the full report as JSON instead of a summary.
    #[arg(long)]
    json: bool,
    /// Remaining life beyond this counts as this in the RMSE (as published work does).
    #[arg(long, value_name = "N", default_value_t = 125.0)]
    cap: f64,
    /// Record the run's summary on the Wearcast server at this URL (e.g.
    /// `http://127.0.0.1:8080`), where the manufacturer view shows it under model
    /// quality. Needs `--token-file`.
    #[arg(long, value_name = "URL", requires = "token_file")]
    publish: Option<String>,
    /// An admin or service API token for `--publish` (e.g. `<data dir>/tokens/admin.token`).
    #[arg(long, value_name = "FILE", requires = "publish")]
    token_file: Option<PathBuf>,
}

/// Where and as whom `--publish` records the summary, checked before the backtest runs
/// (which can take minutes).
struct Publish {
    endpoint: reqwest::Url,
    token: String,
}

impl Publish {
    fn from_args(args: &BacktestArgs) -> anyhow::Result<Option<Self>> {
        let (Some(url), Some(token_file)) = (&args.publish, &args.token_file) else {
            return Ok(None);
        };
        let base = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .with_context(|| format!("--publish {url}: not an http:// or https:// URL"))?;
        let endpoint = base
            .join("api/v1/model-quality/backtests")
            .with_context(|| format!("--publish {url}: not a base URL"))?;
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("--token-file {}: cannot read it", token_file.display()))?
            .trim()
            .to_string();
        anyhow::ensure!(
            !token.is_empty(),
            "--token-file {}: it is empty",
            token_file.display()
        );
        Ok(Some(Self { endpoint, token }))
    }

    /// Posts `summary`; the id the server recorded it under.
    async fn send(&self, summary: &backtest::BacktestSummary) -> anyhow::Result<String> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let endpoint = &self.endpoint;
        let resp = client
            .post(endpoint.clone())
            .bearer_auth(&self.token)
            .json(summary)
            .send()
            .await
            .with_context(|| format!("cannot publish the backtest to {endpoint}"))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        anyhow::ensure!(
            status.is_success(),
            "the server at {endpoint} did not record the backtest: {status}: {body}"
        );
        let recorded: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("{endpoint} answered {status} with no JSON: {body}"))?;
        Ok(recorded["id"].as_str().unwrap_or_default().to_string())
    }
}

pub async fn run(args: &BacktestArgs) -> anyhow::Result<()> {
    let publish = Publish::from_args(args)?;
    let mut config = BacktestConfig::new(args.train.clone(), args.test.clone(), args.truth.clone());
    config.cap = args.cap;
    let bar = backtest::progress_bar();
    let report = backtest::run(&config, &bar)?;
    if let Some(path) = &args.predictions {
        std::fs::write(path, backtest::predictions_csv(&report))
            .with_context(|| format!("cannot write the predictions to {}", path.display()))?;
    }
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        summary(&report, args.predictions.as_ref());
    }
    if let Some(publish) = publish {
        let id = publish.send(&report.summary()).await?;
        if args.json {
            eprintln!("published as {id} to {}", publish.endpoint);
        } else {
            say!("  published     {id} at {}", publish.endpoint);
        }
    }
    Ok(())
}

fn summary(r: &BacktestReport, predictions: Option<&PathBuf>) {
    let s = &r.scores;
    let pct = |v: f64| 100.0 * v;
    say!(
        "Learned from {} runs to failure ({} operating regime{}; {} of {} channels fused), predicted {} test units.",
        r.training_runs,
        r.regimes,
        if r.regimes == 1 { "" } else { "s" },
        r.channels.iter().filter(|c| c.fused).count(),
        r.channels.len(),
        r.test_units
    );
    say!(
        "  RMSE          {:.2}   (P50 and truth capped at {}; uncapped {:.2}; MAE {:.2})",
        s.rmse,
        r.cap,
        s.rmse_uncapped,
        s.mae
    );
    say!(
        "  PHM08 score   {:.1}   (capped like the RMSE; against the true remaining life {:.1})",
        s.phm08,
        s.phm08_true_rul
    );
    say!(
        "  {:.0}% interval  covers {:.1}% of the truths ({:.1}% below P10, {:.1}% above P90; median width {:.1}); held-back calibration {:.1}%",
        pct(r.level),
        pct(s.coverage),
        pct(s.below_p10),
        pct(s.above_p90),
        s.median_interval_width,
        pct(r.cv_coverage)
    );
    say!(
        "  chosen by cross-validation on the training runs: window {:.2}, neighbours {:.2}, min relevance {:.1}, bandwidth ×{:.2} (CV RMSE {:.2})",
        r.chosen.window_share,
        r.chosen.neighbour_share,
        r.chosen.min_relevance,
        r.chosen.bandwidth_factor,
        r.cv_rmse
    );
    say!(
        "  timing        read {:.2} s, learn {:.2} s, predict {:.2} s ({:.2} ms per unit), total {:.2} s",
        r.timing.read_s,
        r.timing.learn_s,
        r.timing.predict_s,
        r.timing.predict_ms_per_unit,
        r.timing.total_s
    );
    if let Some(p) = predictions {
        say!("  predictions   {}", p.display());
    }
}
