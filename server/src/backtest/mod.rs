//! Backtesting the wear models on run-to-failure history (`wearcast backtest`): learn
//! from the training runs, predict each test unit's remaining life at its last row,
//! score the predictions against the truth.
//!
//! The method's settings are chosen, and its interval width calibrated, by
//! cross-validation on the training runs alone ([`crate::model::calibration`]); the
//! test truth is read only to score. The same grid of settings, expressed in shares of
//! the fleet's median life, serves every data set, so lives in cycles or in hours need
//! no tuning by hand.

pub mod data;
pub mod fleet_score;
pub mod live_engine;
pub mod metrics;

use std::path::PathBuf;
use std::time::Instant;

pub use indicatif::ProgressBar;
use serde::Serialize;

use crate::model::calibration::{
    CrossValidation, HeldOut, Prepared, calibrate_bandwidth, coverage, cross_validate, rmse,
};
use crate::model::learner::{FleetWearModel, LearnError, LearnSettings};
use crate::model::relevance::ChannelScore;
use data::{DataError, align_channels, read_runs, read_truth};
use metrics::{Scores, score};

#[derive(Clone, Debug)]
pub struct BacktestConfig {
    pub train: PathBuf,
    pub test: PathBuf,
    pub truth: PathBuf,
    /// Remaining life beyond this counts as this in the RMSE (published work uses 125
    /// cycles on C-MAPSS).
    pub cap: f64,
    /// Central interval whose coverage is calibrated and reported.
    pub level: f64,
    pub cv: CrossValidation,
    /// The settings cross-validation chooses from.
    pub grid: Vec<LearnSettings>,
}

impl BacktestConfig {
    pub fn new(train: PathBuf, test: PathBuf, truth: PathBuf) -> Self {
        Self {
            train,
            test,
            truth,
            cap: 125.0,
            level: 0.8,
            cv: CrossValidation::default(),
            grid: settings_grid(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("cannot learn from {path}: {source}")]
    Learn {
        path: String,
        #[source]
        source: LearnError,
    },
    #[error("the truth file {truth} has no remaining life for test unit{} {}", if .units.len() == 1 { "" } else { "s" }, .units.join(", "))]
    MissingTruth { truth: String, units: Vec<String> },
    #[error("the truth file {truth} names unit{} not in the test file: {}", if .units.len() == 1 { "" } else { "s" }, .units.join(", "))]
    ExtraTruth { truth: String, units: Vec<String> },
}

/// The settings tried by cross-validation (all shares of the median life).
pub fn settings_grid() -> Vec<LearnSettings> {
    let mut grid = Vec::new();
    for window_share in [0.25, 0.4, 0.55] {
        for neighbour_share in [0.05, 0.1] {
            for min_relevance in [0.0, 0.3] {
                grid.push(LearnSettings {
                    window_share,
                    neighbour_share,
                    min_relevance,
                    ..LearnSettings::default()
                });
            }
        }
    }
    grid
}

#[derive(Clone, Debug, Serialize)]
pub struct UnitPrediction {
    pub unit: String,
    pub rul_p10: f64,
    pub rul_p50: f64,
    pub rul_p90: f64,
    pub truth: f64,
    pub health_index: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChannelReport {
    pub channel: String,
    pub fused: bool,
    pub weight: f64,
    #[serde(flatten)]
    pub score: ChannelScore,
}

#[derive(Clone, Debug, Serialize)]
pub struct CvReport {
    pub settings: LearnSettings,
    /// RMSE of the held-back medians (capped like the test RMSE).
    pub rmse: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    pub read_s: f64,
    /// Cross-validation over the grid, calibration and the final fit.
    pub learn_s: f64,
    pub predict_s: f64,
    pub predict_ms_per_unit: f64,
    pub total_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BacktestReport {
    pub train: String,
    pub test: String,
    pub training_runs: usize,
    pub test_units: usize,
    pub regimes: usize,
    pub channels: Vec<ChannelReport>,
    /// Every setting tried, with its cross-validated RMSE.
    pub cross_validation: Vec<CvReport>,
    pub chosen: LearnSettings,
    /// Held-back coverage of the calibrated interval (≈ `level` by construction).
    pub cv_coverage: f64,
    pub cv_rmse: f64,
    pub cap: f64,
    pub level: f64,
    #[serde(flatten)]
    pub scores: Scores,
    /// The live platform's incremental engine (CUSUM onset, Bayesian trend) on the same
    /// health index, for comparison; `None` if the training lives give no Weibull.
    pub live_engine: Option<Scores>,
    pub timing: Timing,
    pub predictions: Vec<UnitPrediction>,
}

/// What `wearcast backtest --publish` records on the server (`POST
/// /api/v1/model-quality/backtests`) and the manufacturer view shows as the models'
/// offline accuracy: which data, and how the P50 and the interval scored on it.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestSummary {
    /// File names (not paths) of the training and the test histories.
    pub train: String,
    pub test: String,
    pub training_runs: u32,
    pub test_units: u32,
    /// RMSE of the P50 against the truth, both capped at `cap`, in the data's time unit.
    pub rmse: f64,
    pub mae: f64,
    pub cap: f64,
    /// The central interval's level (0.8: P10–P90) and the shares of test units whose
    /// truth fell inside it, below P10 (predicted too late) and above P90.
    pub level: f64,
    pub coverage: f64,
    pub below_p10: f64,
    pub above_p90: f64,
    /// The live platform's incremental engine on the same data, when it could run.
    pub live_engine_rmse: Option<f64>,
    pub live_engine_coverage: Option<f64>,
}

/// Longest file name a summary may carry.
const MAX_NAME_CHARS: usize = 200;

impl BacktestSummary {
    /// Whether the figures can be a backtest's; the first problem, naming the field.
    pub fn check(&self) -> Result<(), String> {
        for (field, name) in [("train", &self.train), ("test", &self.test)] {
            if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
                return Err(format!(
                    "`{field}` must be a file name of 1 to {MAX_NAME_CHARS} characters"
                ));
            }
            if name.chars().any(char::is_control) {
                return Err(format!("`{field}` holds a control character"));
            }
        }
        for (field, n) in [
            ("training_runs", self.training_runs),
            ("test_units", self.test_units),
        ] {
            if n == 0 {
                return Err(format!("`{field}` must be at least 1"));
            }
        }
        let non_negative = [
            ("rmse", Some(self.rmse)),
            ("mae", Some(self.mae)),
            ("live_engine_rmse", self.live_engine_rmse),
        ];
        for (field, v) in non_negative {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(format!(
                    "`{field}` must be a finite number of at least 0, not {v}"
                ));
            }
        }
        if !(self.cap.is_finite() && self.cap > 0.0) {
            return Err(format!(
                "`cap` must be a finite number above 0, not {}",
                self.cap
            ));
        }
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(format!(
                "`level` must be between 0 and 1, not {}",
                self.level
            ));
        }
        let shares = [
            ("coverage", Some(self.coverage)),
            ("below_p10", Some(self.below_p10)),
            ("above_p90", Some(self.above_p90)),
            ("live_engine_coverage", self.live_engine_coverage),
        ];
        for (field, v) in shares {
            if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
                return Err(format!(
                    "`{field}` must be a share between 0 and 1, not {v}"
                ));
            }
        }
        let total = self.coverage + self.below_p10 + self.above_p90;
        if (total - 1.0).abs() > 1e-3 {
            return Err(format!(
                "`coverage`, `below_p10` and `above_p90` must add up to 1 (every test unit is inside, below or above), not {total}"
            ));
        }
        Ok(())
    }
}

impl BacktestReport {
    /// The figures `--publish` sends: file names only, never the paths.
    pub fn summary(&self) -> BacktestSummary {
        let file_name = |p: &str| {
            std::path::Path::new(p)
                .file_name()
                .map_or_else(|| p.to_string(), |n| n.to_string_lossy().into_owned())
        };
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        BacktestSummary {
            train: file_name(&self.train),
            test: file_name(&self.test),
            training_runs: count(self.training_runs),
            test_units: count(self.test_units),
            rmse: self.scores.rmse,
            mae: self.scores.mae,
            cap: self.cap,
            level: self.level,
            coverage: self.scores.coverage,
            below_p10: self.scores.below_p10,
            above_p90: self.scores.above_p90,
            live_engine_rmse: self.live_engine.as_ref().map(|s| s.rmse),
            live_engine_coverage: self.live_engine.as_ref().map(|s| s.coverage),
        }
    }
}

/// Runs the whole backtest, ticking `bar` as it goes.
pub fn run(config: &BacktestConfig, bar: &ProgressBar) -> Result<BacktestReport, BacktestError> {
    let started = Instant::now();
    bar.set_message("reading");
    let train = read_runs(&config.train)?;
    let mut test = read_runs(&config.test)?;
    align_channels(&train, &mut test)?;
    let truth = read_truth(&config.truth)?;
    let truth_path = config.truth.display().to_string();
    let missing: Vec<String> = test
        .runs
        .iter()
        .filter(|r| !truth.contains_key(&r.id))
        .map(|r| r.id.clone())
        .collect();
    if !missing.is_empty() {
        return Err(BacktestError::MissingTruth {
            truth: truth_path,
            units: missing,
        });
    }
    let mut extra: Vec<String> = truth
        .keys()
        .filter(|u| !test.runs.iter().any(|r| &r.id == *u))
        .cloned()
        .collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(BacktestError::ExtraTruth {
            truth: truth_path,
            units: extra,
        });
    }
    let read_s = started.elapsed().as_secs_f64();
    let learn_error = |source| BacktestError::Learn {
        path: config.train.display().to_string(),
        source,
    };

    // 1. Choose the settings by cross-validation on the training runs.
    let learn_started = Instant::now();
    let grid = config.grid.clone();
    let folds = config.cv.folds.clamp(2, train.runs.len().max(2));
    bar.set_length((grid.len() * folds + test.runs.len()) as u64);
    bar.set_message("cross-validating");
    let prepared = Prepared::new(&train.runs, &LearnSettings::default());
    let mut tried = Vec::new();
    let mut best: Option<(f64, LearnSettings, Vec<HeldOut>)> = None;
    for settings in grid {
        let held = cross_validate(&prepared, &settings, &config.cv, &mut || bar.inc(1))
            .map_err(learn_error)?;
        let e = rmse(&held, 1.0, Some(config.cap));
        tried.push(CvReport {
            settings: settings.clone(),
            rmse: e,
        });
        if best.as_ref().is_none_or(|b| e < b.0) {
            best = Some((e, settings, held));
        }
    }
    let Some((_, mut chosen, held)) = best else {
        return Err(learn_error(LearnError::NoSignal));
    };
    chosen.bandwidth_factor = calibrate_bandwidth(&held, config.level);
    let cv_coverage = coverage(&held, chosen.bandwidth_factor, config.level);
    let cv_rmse = rmse(&held, chosen.bandwidth_factor, Some(config.cap));

    // 2. Learn from every training run with those settings.
    bar.set_message("learning");
    let model = FleetWearModel::learn_normalised(
        &train.runs,
        &prepared.z,
        prepared.baseline.clone(),
        &chosen,
    )
    .map_err(learn_error)?;
    let learn_s = learn_started.elapsed().as_secs_f64();

    // 3. Predict every test unit at its last row.
    bar.set_message("predicting");
    let predict_started = Instant::now();
    let mut predictions = Vec::with_capacity(test.runs.len());
    let lo_q = 0.5 - config.level / 2.0;
    let hi_q = 0.5 + config.level / 2.0;
    for run in &test.runs {
        let p = model.predict(run);
        let (p10, p50, p90, hi) = match &p {
            Some(p) => (
                p.distribution.quantile(lo_q),
                p.distribution.quantile(0.5),
                p.distribution.quantile(hi_q),
                p.health_index,
            ),
            // No vote (no past run as long as the window): the fleet's median life
            // left, the most honest guess without a signal.
            None => (0.0, model.median_life, f64::INFINITY, f64::NAN),
        };
        predictions.push(UnitPrediction {
            unit: run.id.clone(),
            rul_p10: p10,
            rul_p50: p50,
            rul_p90: p90,
            truth: truth[&run.id],
            health_index: hi,
        });
        bar.inc(1);
    }
    let predict_s = predict_started.elapsed().as_secs_f64();
    bar.set_message("live engine");
    let live_engine = live_engine::fleet_knowledge(&model, &train.runs).map(|fleet| {
        let live: Vec<UnitPrediction> =
            live_engine::predict(&model, &fleet, &test.runs, config.level)
                .into_iter()
                .zip(&predictions)
                .map(|((p10, p50, p90), p)| UnitPrediction {
                    rul_p10: p10,
                    rul_p50: p50,
                    rul_p90: p90,
                    ..p.clone()
                })
                .collect();
        score(&live, config.cap)
    });
    bar.finish_and_clear();

    let channels = train
        .signal_channels
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let pos = model.fusion.channels.iter().position(|f| *f == c);
            ChannelReport {
                channel: name.clone(),
                fused: pos.is_some(),
                weight: pos.map_or(0.0, |p| model.fusion.weights[p]),
                score: model.scores[c].clone(),
            }
        })
        .collect();
    Ok(BacktestReport {
        train: config.train.display().to_string(),
        test: config.test.display().to_string(),
        training_runs: train.runs.len(),
        test_units: test.runs.len(),
        regimes: model.baseline.regimes.count(),
        channels,
        cross_validation: tried,
        chosen,
        cv_coverage,
        cv_rmse,
        cap: config.cap,
        level: config.level,
        scores: score(&predictions, config.cap),
        live_engine,
        timing: Timing {
            read_s,
            learn_s,
            predict_s,
            predict_ms_per_unit: 1000.0 * predict_s / test.runs.len().max(1) as f64,
            total_s: started.elapsed().as_secs_f64(),
        },
        predictions,
    })
}

/// The predictions as `unit,rul_p10,rul_p50,rul_p90` CSV.
pub fn predictions_csv(report: &BacktestReport) -> String {
    let mut out = String::from("unit,rul_p10,rul_p50,rul_p90\n");
    for p in &report.predictions {
        out.push_str(&format!(
            "{},{:.2},{:.2},{}\n",
            p.unit,
            p.rul_p10,
            p.rul_p50,
            if p.rul_p90.is_finite() {
                format!("{:.2}", p.rul_p90)
            } else {
                String::new()
            }
        ));
    }
    out
}

/// The progress bar the command line shows while a backtest runs (on stderr; hidden
/// when stderr is not a terminal).
pub fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {msg:16} [{bar:32}] {pos}/{len} steps, {elapsed} elapsed, ~{eta} left",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::runs::Run;
    use crate::model::runs::synthetic::fleet;

    fn write_runs(path: &std::path::Path, runs: &[Run]) {
        let mut text = String::from("engine,cycle,op.alt,op.fixed,a,b,c,d\n");
        for r in runs {
            for i in 0..r.len() {
                let row: Vec<String> = r.op[i]
                    .iter()
                    .chain(&r.signals[i])
                    .map(|v| v.to_string())
                    .collect();
                text.push_str(&format!("{},{},{}\n", r.id, r.time[i], row.join(",")));
            }
        }
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_backtest_learns_predicts_and_scores_data_it_has_never_seen_named() {
        let dir = tempfile::tempdir().unwrap();
        let (train, test, truth) = (
            dir.path().join("train.csv"),
            dir.path().join("test.csv"),
            dir.path().join("truth.csv"),
        );
        write_runs(&train, &fleet(30, 11));
        let full = fleet(12, 12);
        let cut: Vec<Run> = full
            .iter()
            .enumerate()
            .map(|(i, r)| r.prefix(r.len() * (3 + i % 6) / 10))
            .collect();
        write_runs(&test, &cut);
        let truth_text: String = std::iter::once("unit,rul\n".to_string())
            .chain(cut.iter().zip(&full).map(|(c, f)| {
                format!(
                    "{},{}\n",
                    c.id,
                    f.time.last().unwrap() - c.time.last().unwrap()
                )
            }))
            .collect();
        std::fs::write(&truth, truth_text).unwrap();

        let mut config = BacktestConfig::new(train, test, truth);
        config.cap = 100.0;
        config.cv.folds = 3;
        config.cv.cuts = 3;
        config.grid = vec![LearnSettings::default()];
        let r = run(&config, &ProgressBar::hidden()).unwrap();
        assert_eq!((r.training_runs, r.test_units, r.regimes), (30, 12, 2));
        assert_eq!(r.channels.len(), 4);
        assert!(!r.channels[0].fused, "the constant channel is not fused");
        assert!(r.scores.rmse < 20.0, "{:?}", r.scores);
        assert!((r.cv_coverage - 0.8).abs() < 0.05);
        let csv = predictions_csv(&r);
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("unit,rul_p10,rul_p50,rul_p90"));
        let first: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(first[0], "u0");
        let q: Vec<f64> = first[1..].iter().map(|v| v.parse().unwrap()).collect();
        assert!(q[0] <= q[1] && q[1] <= q[2], "{q:?}");
    }

    #[test]
    fn a_truth_file_that_misses_a_test_unit_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (train, test, truth) = (
            dir.path().join("train.csv"),
            dir.path().join("test.csv"),
            dir.path().join("truth.csv"),
        );
        write_runs(&train, &fleet(5, 1));
        write_runs(&test, &fleet(2, 2));
        std::fs::write(&truth, "unit,rul\nu0,10\n").unwrap();
        let e = run(
            &BacktestConfig::new(train, test, truth),
            &ProgressBar::hidden(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("has no remaining life for test unit u1"), "{e}");
    }
}
