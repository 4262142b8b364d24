//! The two files where the gateway puts what it could not use, so nothing disappears
//! without a trace and an operator can see why:
//!
//! - `dead-letter.jsonl`: whole batches the server refused (4xx). They are data, so each
//!   entry is synced to disk before the batch leaves the spool.
//! - `rejected.jsonl`: rejected input (topic, reason, detail, start of the payload). It is
//!   diagnostics and can be flooded by a misbehaving device, so it is buffered and
//!   bounded: past [`REJECT_LOG_MAX_BYTES`] it is rotated to `rejected.jsonl.1`,
//!   replacing the previous one.
//!
//! Writing to either file never stops the gateway; a failure is logged.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tracing::{error, warn};
use wearcast_protocol::reject::Rejection;
use wearcast_protocol::{IngestBatch, UnixMs};

pub const DEAD_LETTER_FILE: &str = "dead-letter.jsonl";
pub const REJECT_LOG_FILE: &str = "rejected.jsonl";
/// Size at which `rejected.jsonl` is rotated.
pub const REJECT_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// How much of a rejected payload is kept: enough to recognise it, not to store it.
pub const PAYLOAD_EXCERPT_BYTES: usize = 512;

/// One line of `dead-letter.jsonl`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// Clock time when the batch was given up.
    pub at: UnixMs,
    /// The HTTP status the server answered.
    pub status: u16,
    /// The server's explanation (the response body, truncated).
    pub response: String,
    pub batch: IngestBatch,
}

/// Appends refused batches to `dead-letter.jsonl`.
#[derive(Clone, Debug)]
pub struct DeadLetterFile {
    path: PathBuf,
}

impl DeadLetterFile {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(DEAD_LETTER_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and syncs it, so a confirmed (removed) batch is on disk here.
    pub async fn append(&self, entry: &DeadLetter) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        file.write_all(&line).await?;
        file.sync_data().await
    }
}

#[derive(Serialize)]
struct RejectRecord<'a> {
    at: UnixMs,
    topic: &'a str,
    reason: &'static str,
    unit: &'static str,
    detail: &'a str,
    payload: String,
}

/// Appends rejections to `rejected.jsonl`, rotating it at a size limit.
#[derive(Debug)]
pub struct RejectLog {
    path: PathBuf,
    max_bytes: u64,
    file: Option<BufWriter<File>>,
    /// Bytes in the current file, so rotation needs no `stat` per line.
    written: u64,
    /// A write failure is logged once, not once per rejection.
    failing: bool,
}

impl RejectLog {
    pub fn open(data_dir: &Path, max_bytes: u64) -> io::Result<Self> {
        let path = data_dir.join(REJECT_LOG_FILE);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path,
            max_bytes,
            file: Some(BufWriter::new(file)),
            written,
            failing: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records one rejection with the start of the payload it came from.
    pub fn record(&mut self, at: UnixMs, topic: &str, rejection: &Rejection, payload: &[u8]) {
        let excerpt = &payload[..payload.len().min(PAYLOAD_EXCERPT_BYTES)];
        let record = RejectRecord {
            at,
            topic,
            reason: rejection.reason.label(),
            unit: rejection.unit.label(),
            detail: &rejection.detail,
            payload: String::from_utf8_lossy(excerpt).into_owned(),
        };
        let mut line = match serde_json::to_vec(&record) {
            Ok(line) => line,
            Err(e) => return self.failed(&io::Error::other(e)),
        };
        line.push(b'\n');
        if let Err(e) = self.write(&line) {
            self.failed(&e);
        } else {
            self.failing = false;
        }
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        if self.written > 0 && self.written + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(BufWriter::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            )),
        };
        file.write_all(line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut file) = self.file.take() {
            file.flush()?;
        }
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        fs::rename(&self.path, rotated)?;
        self.written = 0;
        Ok(())
    }

    fn failed(&mut self, e: &io::Error) {
        if !self.failing {
            warn!(path = %self.path.display(), error = %e, "cannot write the rejection log; rejections are still counted");
            self.failing = true;
        }
    }

    /// Pushes buffered lines to the file (called on every sweep and at shutdown).
    pub fn flush(&mut self) {
        let result = match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        };
        if let Err(e) = result {
            self.failed(&e);
        }
    }
}

impl Drop for RejectLog {
    fn drop(&mut self) {
        if let Some(file) = &mut self.file
            && let Err(e) = file.flush()
        {
            error!(path = %self.path.display(), error = %e, "rejection log lost its last lines");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wearcast_protocol::RejectReason;
    use wearcast_protocol::reject::RejectUnit;

    fn rejection() -> Rejection {
        Rejection::new(RejectReason::Malformed, RejectUnit::Message, "not json")
    }

    #[test]
    fn a_rejection_is_logged_with_topic_reason_and_a_payload_excerpt() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RejectLog::open(dir.path(), REJECT_LOG_MAX_BYTES).unwrap();
        let payload = vec![b'x'; 2000];
        log.record(
            UnixMs(7),
            "wearcast/v1/a/m/telemetry",
            &rejection(),
            &payload,
        );
        log.flush();
        let text = fs::read_to_string(log.path()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["reason"], "malformed");
        assert_eq!(v["unit"], "message");
        assert_eq!(v["topic"], "wearcast/v1/a/m/telemetry");
        assert_eq!(v["payload"].as_str().unwrap().len(), PAYLOAD_EXCERPT_BYTES);
    }

    #[test]
    fn the_rejection_log_rotates_instead_of_growing_without_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RejectLog::open(dir.path(), 2_000).unwrap();
        for _ in 0..100 {
            log.record(UnixMs(7), "t", &rejection(), &[b'y'; 100]);
        }
        log.flush();
        let current = fs::metadata(log.path()).unwrap().len();
        let rotated = fs::metadata(dir.path().join("rejected.jsonl.1"))
            .unwrap()
            .len();
        assert!(current <= 2_000 && rotated <= 2_000, "{current} {rotated}");
        assert!(current > 0);
    }
}
