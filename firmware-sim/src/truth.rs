//! Ground truth: the true life of every component instance and every failure, as JSON
//! lines, so predictions can be scored against what really happened. Lines are
//! appended and each is written out whole before the next, so a reader tailing the file
//! never sees half a record.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use wearcast_protocol::{ComponentKey, MachineId, PartId, TenantId, UnixMs};

use crate::error::SimError;
use crate::wear::FailureMode;

/// One line of the ground-truth file, tagged by `record`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum TruthRecord {
    /// A component instance's life, written when it begins (or, for lives already in
    /// progress when the simulator starts, at start).
    Life(LifeRecord),
    /// A component broke down.
    Failure(FailureRecord),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LifeRecord {
    pub tenant: TenantId,
    pub machine: MachineId,
    pub component: ComponentKey,
    pub part: PartId,
    pub installed_at: UnixMs,
    pub onset_at: UnixMs,
    pub fails_at: UnixMs,
    pub mode: FailureMode,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub machine: MachineId,
    pub component: ComponentKey,
    pub at: UnixMs,
}

/// The open ground-truth file, shared by every machine task.
#[derive(Debug)]
pub(crate) struct TruthLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl TruthLog {
    /// Opens `path` for appending, creating it and its directory if needed.
    pub(crate) fn open(path: &Path) -> Result<Self, SimError> {
        let io_err = |source| SimError::Truth {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err)?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// Appends one record as one line. The file is unbuffered, so the line is with the
    /// operating system when this returns.
    pub(crate) fn write(&self, record: &TruthRecord) -> Result<(), SimError> {
        let mut line = serde_json::to_vec(record).map_err(|e| SimError::Truth {
            path: self.path.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        // A panic elsewhere while holding the lock cannot leave a half-written line
        // behind (each line is one write), so a poisoned lock is still usable.
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&line).map_err(|source| SimError::Truth {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life() -> TruthRecord {
        TruthRecord::Life(LifeRecord {
            tenant: "acme".parse().unwrap(),
            machine: "m-001".parse().unwrap(),
            component: "spindle_bearing".parse().unwrap(),
            part: "brg-spindle-7014".parse().unwrap(),
            installed_at: UnixMs(1),
            onset_at: UnixMs(2),
            fails_at: UnixMs(3),
            mode: FailureMode::BearingSpall,
        })
    }

    #[test]
    fn records_are_appended_as_one_tagged_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/truth.jsonl");
        let failure = TruthRecord::Failure(FailureRecord {
            machine: "m-001".parse().unwrap(),
            component: "spindle_bearing".parse().unwrap(),
            at: UnixMs(3),
        });
        TruthLog::open(&path).unwrap().write(&life()).unwrap();
        // A second run appends instead of truncating.
        TruthLog::open(&path).unwrap().write(&failure).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"record":"life","tenant":"acme","machine":"m-001","component":"spindle_bearing","part":"brg-spindle-7014","installed_at":1,"onset_at":2,"fails_at":3,"mode":"bearing_spall"}"#
        );
        assert_eq!(
            lines[1],
            r#"{"record":"failure","machine":"m-001","component":"spindle_bearing","at":3}"#
        );
        let back: Vec<TruthRecord> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, [life(), failure]);
    }

    #[test]
    fn an_unwritable_path_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let e = TruthLog::open(&blocker.join("truth.jsonl")).unwrap_err();
        assert!(e.to_string().contains("file/truth.jsonl"), "{e}");
    }
}
