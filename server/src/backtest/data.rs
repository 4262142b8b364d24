//! Reading run-to-failure histories in the CSV layout of DESIGN.md: a header
//! `unit,time,<channel>...`, one row per observation, the rows of a unit together and in
//! time order; `op.*` channels are operating conditions. Truth files are `unit,rul`.
//!
//! The first two columns are the unit and the time whatever they are called, and no
//! channel name means anything beyond the `op.` prefix, so other data of this layout
//! reads the same. Every problem names the file, the line and the column; all of them
//! are counted and the first few shown, and none panics.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::model::runs::Run;

/// Problems shown in an error message (all are counted).
const SHOWN: usize = 20;
/// Reading stops after this many problems: the file is clearly not of this layout.
const MAX_PROBLEMS: usize = 1000;

/// Where a problem is and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the file (the header is line 1).
    pub line: u64,
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(c) => write!(f, "line {}, column `{c}`: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{path}: {}", describe(.problems, *.total))]
    Malformed {
        path: PathBuf,
        problems: Vec<Problem>,
        /// All problems found (more than shown when reading stopped early or many).
        total: usize,
    },
    #[error("{0}")]
    Mismatch(String),
}

fn describe(problems: &[Problem], total: usize) -> String {
    let mut s = format!(
        "{total} problem{} found{}",
        if total == 1 { "" } else { "s" },
        if total >= MAX_PROBLEMS {
            " (reading stopped there)"
        } else {
            ""
        }
    );
    for p in problems.iter().take(SHOWN) {
        s.push_str(&format!("\n  {p}"));
    }
    if total > SHOWN {
        s.push_str(&format!("\n  … and {} more", total - SHOWN));
    }
    s
}

/// The runs of one history file.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSet {
    pub path: PathBuf,
    /// Operating-condition channel names (`op.*`), in file order.
    pub op_channels: Vec<String>,
    /// Signal channel names, in file order.
    pub signal_channels: Vec<String>,
    pub runs: Vec<Run>,
}

struct Collector {
    problems: Vec<Problem>,
    total: usize,
}

impl Collector {
    fn add(&mut self, line: u64, column: Option<&str>, message: impl Into<String>) {
        self.total += 1;
        if self.problems.len() < SHOWN {
            self.problems.push(Problem {
                line,
                column: column.map(str::to_owned),
                message: message.into(),
            });
        }
    }

    fn full(&self) -> bool {
        self.total >= MAX_PROBLEMS
    }
}

fn reader(path: &Path) -> Result<csv::Reader<std::fs::File>, DataError> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| DataError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// A cell as a number: `Ok(None)` for a missing value (empty, `NA`, `NaN`).
fn number(cell: &str) -> Result<Option<f64>, String> {
    if cell.is_empty() || cell.eq_ignore_ascii_case("na") || cell.eq_ignore_ascii_case("nan") {
        return Ok(None);
    }
    match cell.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        Ok(_) => Err(format!("`{cell}` is not a finite number")),
        Err(_) => Err(format!("`{cell}` is not a number")),
    }
}

fn read_error(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map_or(0, |p| p.line());
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. } => {
            DataError::Malformed {
                path: path.to_owned(),
                problems: vec![Problem {
                    line,
                    column: None,
                    message: e.to_string(),
                }],
                total: 1,
            }
        }
        _ => DataError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    }
}

/// Reads a run-to-failure (or test) history file.
pub fn read_runs(path: &Path) -> Result<RunSet, DataError> {
    let mut rdr = reader(path)?;
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| read_error(path, e))?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut bad = Collector {
        problems: Vec::new(),
        total: 0,
    };
    if header.len() < 3 {
        bad.add(
            1,
            None,
            format!(
                "the header has {} column{}; the layout is `unit,time,<channel>...` with at least one channel",
                header.len(),
                if header.len() == 1 { "" } else { "s" }
            ),
        );
    }
    let mut seen = HashSet::new();
    for (i, name) in header.iter().enumerate() {
        if name.is_empty() {
            bad.add(1, None, format!("column {} has no name", i + 1));
        } else if !seen.insert(name.as_str()) {
            bad.add(1, Some(name), "the column name appears twice");
        }
    }
    if bad.total > 0 {
        return Err(DataError::Malformed {
            path: path.to_owned(),
            problems: bad.problems,
            total: bad.total,
        });
    }
    let channels = &header[2..];
    let op_idx: Vec<usize> = (0..channels.len())
        .filter(|i| channels[*i].starts_with("op."))
        .collect();
    let sig_idx: Vec<usize> = (0..channels.len())
        .filter(|i| !channels[*i].starts_with("op."))
        .collect();
    if sig_idx.is_empty() {
        bad.add(
            1,
            None,
            "every channel is an operating condition (`op.*`): there is no signal to learn wear from",
        );
    }

    let mut runs: Vec<Run> = Vec::new();
    // Unit → the line where its rows ended, to catch a unit that comes back later.
    let mut finished: HashMap<String, u64> = HashMap::new();
    let mut record = csv::StringRecord::new();
    let mut values = vec![0.0; channels.len()];
    loop {
        match rdr.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                bad.add(line, None, e.to_string());
                if matches!(e.kind(), csv::ErrorKind::Io(_)) || bad.full() {
                    break;
                }
                continue;
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        if record.len() == 1 && record.get(0) == Some("") {
            continue; // a blank line
        }
        if record.len() != header.len() {
            bad.add(
                line,
                None,
                format!(
                    "the row has {} fields, the header has {}",
                    record.len(),
                    header.len()
                ),
            );
            if bad.full() {
                break;
            }
            continue;
        }
        let unit = record.get(0).unwrap_or_default();
        if unit.is_empty() {
            bad.add(line, Some(&header[0]), "the unit is empty");
            continue;
        }
        let time = match number(record.get(1).unwrap_or_default()) {
            Ok(Some(t)) => t,
            Ok(None) => {
                bad.add(line, Some(&header[1]), "the time is missing");
                continue;
            }
            Err(m) => {
                bad.add(line, Some(&header[1]), m);
                continue;
            }
        };
        let mut row_ok = true;
        for (j, v) in values.iter_mut().enumerate() {
            match number(record.get(j + 2).unwrap_or_default()) {
                Ok(x) => *v = x.unwrap_or(f64::NAN),
                Err(m) => {
                    bad.add(line, Some(&channels[j]), m);
                    row_ok = false;
                }
            }
        }
        if bad.full() {
            break;
        }
        if !row_ok {
            continue;
        }
        let same_unit = runs.last().is_some_and(|r| r.id == unit);
        if !same_unit {
            if let Some(prev) = runs.last() {
                finished.insert(prev.id.clone(), line.saturating_sub(1));
            }
            if let Some(ended) = finished.get(unit) {
                bad.add(
                    line,
                    Some(&header[0]),
                    format!(
                        "unit `{unit}` appears again after other units (its rows ended before line {}); the rows of a unit must be together",
                        ended + 1
                    ),
                );
                continue;
            }
            runs.push(Run {
                id: unit.to_owned(),
                ..Run::default()
            });
        }
        let Some(run) = runs.last_mut() else { continue };
        if let Some(prev) = run.time.last()
            && time <= *prev
        {
            bad.add(
                line,
                Some(&header[1]),
                format!("time {time} of unit `{unit}` does not follow {prev}: rows must be in time order"),
            );
            continue;
        }
        run.time.push(time);
        run.op.push(op_idx.iter().map(|i| values[*i]).collect());
        run.signals
            .push(sig_idx.iter().map(|i| values[*i]).collect());
    }
    if runs.is_empty() && bad.total == 0 {
        bad.add(1, None, "the file has a header but no rows");
    }
    if bad.total > 0 {
        return Err(DataError::Malformed {
            path: path.to_owned(),
            problems: bad.problems,
            total: bad.total,
        });
    }
    Ok(RunSet {
        path: path.to_owned(),
        op_channels: op_idx.iter().map(|i| channels[*i].clone()).collect(),
        signal_channels: sig_idx.iter().map(|i| channels[*i].clone()).collect(),
        runs,
    })
}

/// Reads a truth file: the first column names the unit, the second its remaining life
/// after its last test row.
pub fn read_truth(path: &Path) -> Result<HashMap<String, f64>, DataError> {
    let mut rdr = reader(path)?;
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| read_error(path, e))?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut bad = Collector {
        problems: Vec::new(),
        total: 0,
    };
    if header.len() < 2 {
        return Err(DataError::Malformed {
            path: path.to_owned(),
            problems: vec![Problem {
                line: 1,
                column: None,
                message: "the header needs two columns, `unit,rul`".into(),
            }],
            total: 1,
        });
    }
    let mut truth = HashMap::new();
    let mut lines: HashMap<String, u64> = HashMap::new();
    for result in rdr.records() {
        let record = match result {
            Ok(r) => r,
            Err(e) => {
                bad.add(e.position().map_or(0, |p| p.line()), None, e.to_string());
                if bad.full() {
                    break;
                }
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.len() == 1 && record.get(0) == Some("") {
            continue;
        }
        if record.len() != header.len() {
            bad.add(
                line,
                None,
                format!(
                    "the row has {} fields, the header has {}",
                    record.len(),
                    header.len()
                ),
            );
            continue;
        }
        let unit = record.get(0).unwrap_or_default().to_owned();
        if unit.is_empty() {
            bad.add(line, Some(&header[0]), "the unit is empty");
            continue;
        }
        match number(record.get(1).unwrap_or_default()) {
            Ok(Some(v)) if v >= 0.0 => {
                if let Some(first) = lines.insert(unit.clone(), line) {
                    bad.add(
                        line,
                        Some(&header[0]),
                        format!("unit `{unit}` already has a truth on line {first}"),
                    );
                }
                truth.insert(unit, v);
            }
            Ok(Some(v)) => bad.add(
                line,
                Some(&header[1]),
                format!("remaining life {v} is negative"),
            ),
            Ok(None) => bad.add(line, Some(&header[1]), "the remaining life is missing"),
            Err(m) => bad.add(line, Some(&header[1]), m),
        }
        if bad.full() {
            break;
        }
    }
    if bad.total > 0 {
        return Err(DataError::Malformed {
            path: path.to_owned(),
            problems: bad.problems,
            total: bad.total,
        });
    }
    Ok(truth)
}

/// Puts the test file's channels in the training file's order; an error names what
/// is missing or extra.
pub fn align_channels(train: &RunSet, test: &mut RunSet) -> Result<(), DataError> {
    let order = |have: &[String], want: &[String], what: &str| -> Result<Vec<usize>, String> {
        let missing: Vec<&String> = want.iter().filter(|c| !have.contains(c)).collect();
        let extra: Vec<&String> = have.iter().filter(|c| !want.contains(c)).collect();
        if missing.is_empty() && extra.is_empty() {
            Ok(want
                .iter()
                .filter_map(|c| have.iter().position(|h| h == c))
                .collect())
        } else {
            let list = |v: &[&String]| {
                v.iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut m = format!("the {what} channels of the two files differ:");
            if !missing.is_empty() {
                m.push_str(&format!(" missing from the test file: {}", list(&missing)));
            }
            if !extra.is_empty() {
                m.push_str(&format!(" not in the training file: {}", list(&extra)));
            }
            Err(m)
        }
    };
    let op = order(&test.op_channels, &train.op_channels, "operating")
        .map_err(|m| DataError::Mismatch(format!("{}: {m}", test.path.display())))?;
    let sig = order(&test.signal_channels, &train.signal_channels, "signal")
        .map_err(|m| DataError::Mismatch(format!("{}: {m}", test.path.display())))?;
    for run in &mut test.runs {
        for row in &mut run.op {
            *row = op.iter().map(|i| row[*i]).collect();
        }
        for row in &mut run.signals {
            *row = sig.iter().map(|i| row[*i]).collect();
        }
    }
    test.op_channels = train.op_channels.clone();
    test.signal_channels = train.signal_channels.clone();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn runs_are_read_with_operating_channels_apart_and_missing_values_as_nan() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(
            &dir,
            "train.csv",
            "id,cycle,op.load,a,b\n7,1,0.5,10,1\n7,2,0.5,,2\nx,1,0.9,12,NA\n",
        );
        let set = read_runs(&p).unwrap();
        assert_eq!(set.op_channels, ["op.load"]);
        assert_eq!(set.signal_channels, ["a", "b"]);
        assert_eq!(set.runs.len(), 2);
        assert_eq!(set.runs[0].id, "7");
        assert_eq!(set.runs[0].time, [1.0, 2.0]);
        assert!(set.runs[0].signals[1][0].is_nan());
        assert_eq!(set.runs[1].op[0], [0.9]);
        assert!(set.runs[1].signals[0][1].is_nan());
    }

    #[test]
    fn every_malformed_cell_is_reported_with_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(
            &dir,
            "bad.csv",
            "unit,time,op.x,s1\n1,1,0,1.5\n1,2,0,abc\n1,2,0,2\n1,2,0,3\n1,3,0\n2,1,inf,1\n2,2,0,1\n1,9,0,1\n",
        );
        let e = read_runs(&p).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("bad.csv: 5 problems found"), "{text}");
        assert!(
            text.contains("line 3, column `s1`: `abc` is not a number"),
            "{text}"
        );
        assert!(
            text.contains("line 5, column `time`: time 2 of unit `1` does not follow 2"),
            "{text}"
        );
        assert!(
            text.contains("line 6: the row has 3 fields, the header has 4"),
            "{text}"
        );
        assert!(
            text.contains("line 7, column `op.x`: `inf` is not a finite number"),
            "{text}"
        );
        assert!(
            text.contains("line 9, column `unit`: unit `1` appears again"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_header_and_a_missing_file_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_runs(&file(&dir, "h.csv", "unit,time\n1,1\n")).unwrap_err();
        assert!(
            e.to_string().contains("line 1: the header has 2 columns"),
            "{e}"
        );
        let e = read_runs(&file(&dir, "d.csv", "unit,time,a,a\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("column `a`: the column name appears twice"),
            "{e}"
        );
        let e = read_runs(&dir.path().join("nope.csv")).unwrap_err();
        assert!(e.to_string().starts_with("cannot read"), "{e}");
        assert!(e.to_string().contains("nope.csv"), "{e}");
    }

    #[test]
    fn truth_rows_must_be_non_negative_numbers_once_per_unit() {
        let dir = tempfile::tempdir().unwrap();
        let ok = read_truth(&file(&dir, "t.csv", "unit,rul\n1,112\n2,0\n")).unwrap();
        assert_eq!(ok["1"], 112.0);
        let e = read_truth(&file(&dir, "u.csv", "unit,rul\n1,-3\n2,x\n2,4\n2,5\n")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("3 problems"), "{text}");
        assert!(
            text.contains("line 2, column `rul`: remaining life -3 is negative"),
            "{text}"
        );
        assert!(
            text.contains("line 5, column `unit`: unit `2` already has a truth on line 4"),
            "{text}"
        );
    }

    #[test]
    fn test_channels_are_put_in_training_order_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let train = read_runs(&file(&dir, "a.csv", "unit,time,op.x,s1,s2\n1,1,0,1,2\n")).unwrap();
        let mut test =
            read_runs(&file(&dir, "b.csv", "unit,time,s2,op.x,s1\n1,1,20,0,10\n")).unwrap();
        align_channels(&train, &mut test).unwrap();
        assert_eq!(test.runs[0].signals[0], [10.0, 20.0]);
        let mut other =
            read_runs(&file(&dir, "c.csv", "unit,time,op.x,s1,s3\n1,1,0,1,2\n")).unwrap();
        let e = align_channels(&train, &mut other).unwrap_err().to_string();
        assert!(e.contains("missing from the test file: `s2`"), "{e}");
        assert!(e.contains("not in the training file: `s3`"), "{e}");
    }
}
