//! The durable spool: everything the gateway has accepted and the server does not have
//! yet, kept so that it survives `kill -9` and power loss.
//!
//! # How it works
//!
//! The spool is *event-sourced* on a write-ahead log ([`crate::wal`]). Every change is
//! a record appended to the log first, then applied to the in-memory state:
//!
//! | record | state change |
//! |---|---|
//! | `Samples` | accepted samples of one message go into their windows (and the seq state) |
//! | `Event`, `Status` | join the pending list for the next batch |
//! | `Batch` | closed window groups (named in the record) and pending items leave the state; the batch joins the outbox |
//! | `Confirm` | the server has the batch; it leaves the outbox |
//! | `Checkpoint` | first record of each segment: seq state and watermarks |
//!
//! The state is therefore a function of the log, and recovery is replay: read every
//! segment in order and apply its records. A batch's content is *in* its record (the
//! exact JSON the server receives) and its id is derived from the record's position
//! (`{spool id}-{position}`), so a batch re-sent after a crash is byte for byte the one
//! sent before, under the same id, and the server's per-batch de-duplication stores it
//! once. Nothing is re-aggregated on recovery except windows that were still open.
//!
//! Messages are acknowledged to the broker only once the records they produced are
//! durable ([`DurableSpool::durable`]); batches are sent only once their record is
//! durable, so an id the server has seen can never be reused for other content.
//!
//! # Keeping the log small
//!
//! A segment can be deleted once every record in it is obsolete: below the *low
//! watermark*, the smallest of the first position of any open window group, of any
//! pending event or status, and of any unconfirmed batch. Each segment starts with a
//! checkpoint, so the seq state of deleted segments is not lost.
//!
//! # Disk budget
//!
//! The segments may hold at most `max_bytes`. Past that, the configured
//! [`OverflowPolicy`] applies: `block` stops taking messages (they stay unacknowledged
//! with the broker) until confirmations free space; `drop_oldest` deletes the oldest
//! segment — first closing any window group that started in it into a new batch, so
//! only whole batches are lost — and counts every sample, event and status it drops
//! (reason `spool_full`) in the metrics and an ERROR log.
//!
//! # Damage
//!
//! A record that fails its length or CRC check ends the log. In the newest segment that
//! is the torn tail of the last write before a crash (nothing acknowledged is in it): it
//! is cut off and counted. In an older segment it is corruption: the damaged bytes are
//! moved to `quarantine/`, counted and logged at ERROR, and recovery goes on with the
//! next segment. Recovery never panics on what it reads.

pub mod outbox;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, gauge};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};
use wearcast_protocol::event::StatusUpdate;
use wearcast_protocol::{BatchId, GatewayId, MachineEvent, Sample, UnixMs, WindowAggregate};

use crate::config::OverflowPolicy;
use crate::dedup::{Deduplicator, SeqVerdict};
use crate::stats::{DropReason, Totals, names};
use crate::wal::record::{self, BatchRecord, Checkpoint, RecordKind, WalRecord};
use crate::wal::segment::{self, SpoolId};
use crate::wal::writer::{Chunk, WalWriter, WriterState};
use crate::wal::{HEADER_LEN, Lsn, segment_path};
use crate::window::{Aggregator, ClosedGroup, MachineKey, VibrationChannels};

pub use outbox::{BatchRef, Outbox, SendOutcome, SharedOutbox};

const LOCK_FILE: &str = "LOCK";
const ID_FILE: &str = "SPOOL-ID";
const QUARANTINE_DIR: &str = "quarantine";

/// Everything the spool needs to know, checked by the gateway config.
#[derive(Clone, Debug)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub gateway: GatewayId,
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// The disk budget of all segments together.
    pub max_bytes: u64,
    pub overflow: OverflowPolicy,
    pub batch_max_windows: usize,
    pub window_ms: i64,
    pub lateness_ms: i64,
    pub vibration: VibrationChannels,
}

/// Why the spool cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the spool in {} is in use by another gateway process (two gateways must not share a data directory)",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("writing the spool failed: {0}")]
    WriteFailed(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An event or status change waiting for the next batch.
#[derive(Clone, Debug, PartialEq)]
pub enum SpoolItem {
    Event(MachineEvent),
    Status(StatusUpdate),
}

/// What accepting one message's samples did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SamplesOutcome {
    pub accepted: u64,
    pub duplicates: u64,
    pub restarts: u64,
    pub late: u64,
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    pub open_windows: usize,
    pub pending_items: usize,
    pub batches: usize,
    /// Torn tails cut off the newest segment, and the bytes they held.
    pub torn_tails: u64,
    pub torn_bytes: u64,
    /// Segments (or parts of them) that were damaged and moved to quarantine.
    pub corrupt_segments: u64,
    pub corrupt_bytes: u64,
}

/// Whether new messages may be taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Intake {
    #[default]
    Open,
    /// The disk budget is used up and no space could be freed yet.
    Full,
}

/// The durable spool. See the module doc.
#[derive(Debug)]
pub struct DurableSpool {
    settings: SpoolSettings,
    /// Hex of the spool id: the first half of every batch id.
    id_hex: String,
    dedup: Deduplicator,
    windows: Aggregator,
    pending: VecDeque<(Lsn, SpoolItem)>,
    outbox: SharedOutbox,
    /// Base → bytes (header and records) of every segment, written or not.
    segments: BTreeMap<Lsn, u64>,
    /// Base of the segment being appended to.
    active: Lsn,
    next_lsn: Lsn,
    /// Records appended but not yet handed to the writer.
    unwritten: Vec<Chunk>,
    /// End of what the writer has been given, and of what it has made durable.
    submitted: Lsn,
    durable: Lsn,
    writer: WalWriter,
    disk_bytes: u64,
    intake: Intake,
    totals: Arc<Totals>,
    /// Held for the spool's lifetime: a second gateway on the same directory fails.
    _lock: File,
}

impl DurableSpool {
    /// Opens (creating if needed) the spool in `settings.dir` and recovers its state.
    pub fn open(
        settings: SpoolSettings,
        totals: Arc<Totals>,
        now: UnixMs,
    ) -> Result<(Self, RecoveryReport), SpoolError> {
        let dir = settings.dir.clone();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked { path: dir }),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let listed = segment::list_segments(&dir).map_err(io_err(&dir))?;
        let spool_id = spool_id(&dir, &listed)?;

        let mut replay = Replay::new(&settings, hex(&spool_id), now);
        let mut report = RecoveryReport::default();
        let mut segments = BTreeMap::new();
        let mut expected: Option<Lsn> = None;
        // No position below this may be used again: a batch id the server has seen
        // could otherwise name new content, which the server would drop as a duplicate.
        let stored_floor = read_floor(&dir)?;
        let mut floor: Lsn = stored_floor;
        let count = listed.len();
        for (i, (base, path)) in listed.into_iter().enumerate() {
            let last = i + 1 == count;
            floor = floor.max(base);
            if expected.is_some_and(|e| e != base) {
                error!(segment = %path.display(), expected = expected.unwrap_or_default(), found = base,
                    "the spool log has a gap (a segment is missing or was damaged); data in the gap is lost");
                replay.restore_next_checkpoint = true;
            }
            replay.segment = base;
            replay.first_in_segment = true;
            let scanned = segment::scan(&path, |lsn, len, rec| replay.apply(lsn, len, rec))
                .map_err(io_err(&path))?;
            let scan = match scanned {
                Ok(scan) if scan.header.spool_id == spool_id && scan.header.base == base => scan,
                Ok(scan) => {
                    let why = if scan.header.spool_id != spool_id {
                        "belongs to another spool"
                    } else {
                        "its header names another position than its file name"
                    };
                    // Records were applied before we knew: this cannot be trusted at
                    // all, so stop here rather than mix two logs.
                    return Err(SpoolError::Io {
                        path,
                        source: io::Error::other(format!(
                            "segment {why}; move it out of the spool directory"
                        )),
                    });
                }
                Err(problem) => {
                    let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    if last && len <= HEADER_LEN {
                        // Created when the power went, before its header was synced;
                        // no record was ever acknowledged from it.
                        warn!(segment = %path.display(), %problem, "removing a spool segment that was being created at a crash");
                        fs::remove_file(&path).map_err(io_err(&path))?;
                        report.torn_tails += 1;
                        report.torn_bytes += len;
                    } else {
                        floor = floor.max(base + len.saturating_sub(HEADER_LEN));
                        error!(segment = %path.display(), %problem, bytes = len,
                            "damaged spool segment moved to quarantine; what it held is lost");
                        quarantine(&dir, &path, 0)?;
                        fs::remove_file(&path).map_err(io_err(&path))?;
                        report.corrupt_segments += 1;
                        report.corrupt_bytes += len;
                        replay.restore_next_checkpoint = true;
                    }
                    expected = None;
                    continue;
                }
            };
            if let Some((offset, problem)) = &scan.stopped {
                let lost = scan.file_len - scan.valid_len;
                if last {
                    warn!(segment = %path.display(), offset, bytes = lost, %problem,
                        "torn tail of the spool cut off (the last write before a crash; none of it was acknowledged)");
                    report.torn_tails += 1;
                    report.torn_bytes += lost;
                } else {
                    error!(segment = %path.display(), offset, bytes = lost, %problem,
                        "damaged records in the spool moved to quarantine; what they held is lost");
                    quarantine(&dir, &path, *offset)?;
                    report.corrupt_segments += 1;
                    report.corrupt_bytes += lost;
                }
                truncate(&path, scan.valid_len)?;
            }
            if last && scan.valid_len == HEADER_LEN {
                // Not even its opening checkpoint survived. Appending to it would leave
                // a segment without one; the previous segment's end is this one's base,
                // so writing goes on there.
                fs::remove_file(&path).map_err(io_err(&path))?;
                segment::sync_dir(&dir).map_err(io_err(&dir))?;
                replay.next_lsn = base;
                continue;
            }
            segments.insert(base, scan.valid_len);
            expected = Some(scan.end);
            replay.next_lsn = scan.end;
        }
        // The newest segment's end, where appending goes on, unless positions beyond it
        // were used by a segment that had to go.
        let last_end = replay.next_lsn;
        let next_lsn = last_end.max(floor);
        if floor > last_end && floor > stored_floor {
            // The segment that used them is gone: remember them past the next start.
            write_floor(&dir, floor)?;
        }
        report.segments = segments.len();
        report.records = replay.records;
        report.open_windows = replay.windows.open_windows();
        report.pending_items = replay.pending.len();
        report.batches = replay.outbox.len();
        Totals::add(&totals.torn_tails, report.torn_tails);
        Totals::add(&totals.corrupt_segments, report.corrupt_segments);
        counter!(names::SPOOL_TORN_TAILS).increment(report.torn_tails);
        counter!(names::SPOOL_CORRUPT_SEGMENTS).increment(report.corrupt_segments);

        let active = segments
            .keys()
            .next_back()
            .copied()
            .filter(|_| last_end == next_lsn);
        let writer =
            WalWriter::start(dir.clone(), spool_id, active, next_lsn).map_err(io_err(&dir))?;
        let mut outbox = replay.outbox;
        outbox.set_durable(next_lsn);
        let disk_bytes = segments.values().sum();
        let mut spool = Self {
            id_hex: hex(&spool_id),
            dedup: replay.dedup,
            windows: replay.windows,
            pending: replay.pending,
            outbox: outbox.shared(),
            segments,
            active: active.unwrap_or(next_lsn),
            next_lsn,
            unwritten: Vec::new(),
            submitted: next_lsn,
            durable: next_lsn,
            writer,
            disk_bytes,
            intake: Intake::Open,
            totals,
            settings,
            _lock: lock,
        };
        if active.is_none() {
            spool.rotate();
        }
        spool.publish_gauges();
        Ok((spool, report))
    }

    // ---- accepting ---------------------------------------------------------------

    /// De-duplicates one message's samples and logs and aggregates the rest.
    pub fn accept_samples(
        &mut self,
        machine: &MachineKey,
        samples: Vec<Sample>,
        now: UnixMs,
    ) -> SamplesOutcome {
        // Rotate (and checkpoint the seq state) before this message changes it: the
        // checkpoint must not claim seqs whose record could still be lost in a torn tail.
        let lsn = self.begin_record();
        let mut out = SamplesOutcome::default();
        let mut kept = Vec::with_capacity(samples.len());
        for sample in samples {
            match self.dedup.check(machine, sample.seq, sample.ts) {
                SeqVerdict::Duplicate => {
                    out.duplicates += 1;
                    continue;
                }
                SeqVerdict::Restart => out.restarts += 1,
                SeqVerdict::New | SeqVerdict::Unchecked => {}
            }
            kept.push(sample);
        }
        if kept.is_empty() {
            return out;
        }
        let len = record::encode_samples(self.buffer(), machine, &kept);
        self.advance(len);
        out.accepted = kept.len() as u64;
        for sample in kept {
            if self.windows.add(machine, sample, lsn, now).late {
                out.late += 1;
            }
        }
        out
    }

    pub fn accept_event(&mut self, event: MachineEvent) {
        let json = serde_json::to_vec(&event).unwrap_or_default();
        let lsn = self.append_json(RecordKind::Event, &json);
        self.pending.push_back((lsn, SpoolItem::Event(event)));
    }

    pub fn accept_status(&mut self, status: StatusUpdate) {
        let json = serde_json::to_vec(&status).unwrap_or_default();
        let lsn = self.append_json(RecordKind::Status, &json);
        self.pending.push_back((lsn, SpoolItem::Status(status)));
    }

    fn append_json(&mut self, kind: RecordKind, json: &[u8]) -> Lsn {
        let lsn = self.begin_record();
        let len = record::encode_json(self.buffer(), kind, json);
        self.advance(len);
        lsn
    }

    // ---- batching ----------------------------------------------------------------

    /// Closes the window groups that are due and writes them, with the pending events
    /// and statuses, as batches. Returns how many batches were written.
    pub fn sweep(&mut self, now: UnixMs) -> usize {
        let closed = self.windows.close_due(now);
        self.emit(closed, None, now)
    }

    /// Closes every open window and writes everything pending (at shutdown).
    pub fn close_all(&mut self, now: UnixMs) -> usize {
        let closed = self.windows.close_all();
        self.emit(closed, None, now)
    }

    /// Writes `groups` and the pending items up to `items_before` (all if `None`) as
    /// batches of at most `batch_max_windows` windows. A group is never split, so every
    /// sample is in exactly one batch.
    fn emit(&mut self, groups: Vec<ClosedGroup>, items_before: Option<Lsn>, now: UnixMs) -> usize {
        let max = self.max_windows_per_batch();
        let mut batches = 0;
        let mut current: Vec<ClosedGroup> = Vec::new();
        let mut windows = 0;
        for group in groups {
            let n = group.group.channels.len();
            if windows > 0 && windows + n > max {
                self.write_batch(std::mem::take(&mut current), items_before, now);
                batches += 1;
                windows = 0;
            }
            windows += n;
            current.push(group);
        }
        let items_waiting = |s: &Self| {
            s.pending
                .front()
                .is_some_and(|(lsn, _)| items_before.is_none_or(|b| *lsn < b))
        };
        if !current.is_empty() || items_waiting(self) {
            self.write_batch(current, items_before, now);
            batches += 1;
        }
        while items_waiting(self) {
            self.write_batch(Vec::new(), items_before, now);
            batches += 1;
        }
        batches
    }

    /// `batch_max_windows`, but a batch also stays well inside one segment (a window is
    /// about 250 bytes of JSON): space is freed a segment at a time, so one batch larger
    /// than the disk budget could never be dropped.
    fn max_windows_per_batch(&self) -> usize {
        let by_size = (self.settings.segment_bytes / 1024).max(16) as usize;
        self.settings.batch_max_windows.clamp(1, by_size)
    }

    fn write_batch(&mut self, groups: Vec<ClosedGroup>, items_before: Option<Lsn>, now: UnixMs) {
        let max = self.max_windows_per_batch();
        let mut items = Vec::new();
        while items.len() < max
            && let Some((lsn, _)) = self.pending.front()
            && items_before.is_none_or(|b| *lsn < b)
        {
            if let Some(item) = self.pending.pop_front() {
                items.push(item);
            }
        }
        let sources_from = groups
            .iter()
            .map(|g| g.group.first_lsn)
            .chain(items.first().map(|(lsn, _)| *lsn))
            .min();
        let lsn = self.begin_record();
        let window_ms = self.windows.window_ms();
        let items_through = items.last().map(|(lsn, _)| *lsn);
        let (mut events, mut statuses) = (Vec::new(), Vec::new());
        for (_, item) in items {
            match item {
                SpoolItem::Event(e) => events.push(e),
                SpoolItem::Status(s) => statuses.push(s),
            }
        }
        let gateway = self.settings.gateway.clone();
        let body = BatchBody {
            batch_id: self.batch_id(lsn),
            gateway: &gateway,
            created_at: now,
            windows: WindowsOf(&groups, window_ms),
            events: &events,
            statuses: &statuses,
        };
        let record = BatchRecord {
            samples: groups.iter().map(|g| g.group.samples).sum(),
            windows: groups.iter().map(|g| g.group.channels.len() as u32).sum(),
            events: events.len() as u32,
            statuses: statuses.len() as u32,
            items_through,
            groups: groups
                .iter()
                .map(|g| (g.machine.clone(), g.start))
                .collect(),
            body: Vec::new(),
        };
        let mut buffer = std::mem::take(self.buffer());
        let len = record::encode_batch_with(&mut buffer, &record, |out| {
            // Serialising plain data into a Vec cannot fail.
            let _ = serde_json::to_writer(out, &body);
        });
        *self.buffer() = buffer;
        self.advance(len);
        Totals::add(&self.totals.windows_emitted, record.windows as u64);
        counter!(names::WINDOWS_EMITTED).increment(record.windows as u64);
        outbox::lock(&self.outbox).push(BatchRef {
            lsn,
            segment: self.active,
            len: len as u32,
            samples: record.samples,
            windows: record.windows,
            events: record.events,
            statuses: record.statuses,
            sources_from: sources_from.unwrap_or(lsn),
            queued: Instant::now(),
        });
    }

    /// The id of the batch recorded at `lsn`: the same after any number of restarts,
    /// and unique across spools.
    pub fn batch_id(&self, lsn: Lsn) -> BatchId {
        batch_id(&self.id_hex, lsn)
    }

    /// Logs the confirmations the forwarder collected.
    pub fn log_confirmations(&mut self) -> usize {
        let confirmed = outbox::lock(&self.outbox).take_confirmed();
        for lsn in &confirmed {
            self.begin_record();
            let len = record::encode_confirm(self.buffer(), *lsn);
            self.advance(len);
        }
        confirmed.len()
    }

    // ---- the log -----------------------------------------------------------------

    /// Starts a record: rotates to a new segment first when the active one is full.
    /// Returns the new record's position.
    fn begin_record(&mut self) -> Lsn {
        let active_bytes = self.segments.get(&self.active).copied().unwrap_or(0);
        if active_bytes >= HEADER_LEN + self.settings.segment_bytes {
            self.rotate();
        }
        self.next_lsn
    }

    /// Starts a new segment at the current position, opening with a checkpoint.
    fn rotate(&mut self) {
        self.active = self.next_lsn;
        self.segments.insert(self.active, HEADER_LEN);
        self.disk_bytes += HEADER_LEN;
        let checkpoint = Checkpoint {
            trackers: self.dedup.snapshot(),
            watermarks: self.windows.watermarks(),
        };
        let len = record::encode_checkpoint(self.buffer(), &checkpoint);
        self.advance(len);
    }

    fn buffer(&mut self) -> &mut Vec<u8> {
        let active = self.active;
        if self.unwritten.last().is_none_or(|c| c.segment != active) {
            self.unwritten.push(Chunk {
                segment: active,
                bytes: Vec::with_capacity(64 * 1024),
            });
        }
        let last = self.unwritten.len() - 1;
        &mut self.unwritten[last].bytes
    }

    fn advance(&mut self, len: usize) {
        self.next_lsn += len as u64;
        self.disk_bytes += len as u64;
        if let Some(bytes) = self.segments.get_mut(&self.active) {
            *bytes += len as u64;
        }
    }

    /// Position after the last record appended: a message whose records all lie before
    /// it may be acknowledged once [`Self::durable`] reaches it.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    pub fn durable(&self) -> Lsn {
        self.durable
    }

    /// Hands what was appended to the writer unless it is still busy with the previous
    /// group (then it goes with the next one: group commit).
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        self.check_writer()?;
        if self.submitted == self.durable {
            self.submit();
        }
        Ok(())
    }

    /// Hands what was appended to the writer now, behind whatever it is still doing.
    fn submit(&mut self) {
        if !self.unwritten.is_empty() {
            let chunks = std::mem::take(&mut self.unwritten);
            self.writer.write(chunks, self.next_lsn);
            self.submitted = self.next_lsn;
        }
    }

    /// Takes note of the writer's progress; true if more is durable than before. Call
    /// when its watch changes.
    pub fn on_writer_progress(&mut self) -> Result<bool, SpoolError> {
        self.check_writer()
    }

    /// Every advance of `durable` reaches the outbox at once: a batch that is durable
    /// but not known to be would wait for the next write to be sent.
    fn check_writer(&mut self) -> Result<bool, SpoolError> {
        match self.writer.state() {
            WriterState::Durable(d) if d > self.durable => {
                self.durable = d;
                outbox::lock(&self.outbox).set_durable(d);
                Ok(true)
            }
            WriterState::Durable(_) => Ok(false),
            WriterState::Failed(e) => Err(SpoolError::WriteFailed(e)),
        }
    }

    /// Writes and syncs everything appended so far, blocking the calling thread.
    pub fn sync_blocking(&mut self) -> Result<(), SpoolError> {
        loop {
            self.flush()?;
            if self.durable >= self.next_lsn {
                break;
            }
            match self.writer.wait_durable_blocking(self.submitted) {
                WriterState::Durable(_) => {}
                WriterState::Failed(e) => return Err(SpoolError::WriteFailed(e)),
            }
            self.on_writer_progress()?;
        }
        Ok(())
    }

    /// Every change of the writer's state, for an async loop to wait on.
    pub fn writer_watch(&self) -> watch::Receiver<WriterState> {
        self.writer.watch()
    }

    // ---- maintenance -------------------------------------------------------------

    /// Deletes obsolete segments and applies the disk budget. Call after sweeps,
    /// confirmations and batches of messages.
    pub fn maintain(&mut self, now: UnixMs) {
        self.collect_garbage();
        self.apply_budget(now);
        self.publish_gauges();
    }

    /// Applies the disk budget if it is exceeded; cheap enough to call per message.
    pub fn check_budget(&mut self, now: UnixMs) {
        if self.disk_bytes > self.settings.max_bytes {
            self.apply_budget(now);
            self.publish_gauges();
        }
    }

    /// The low watermark: nothing before it is needed any more. A batch whose record
    /// is not durable yet does not replace its sources: a crash could take the record
    /// and leave only them.
    fn low_watermark(&self) -> Lsn {
        let outbox = outbox::lock(&self.outbox);
        let not_durable = outbox
            .batches()
            .iter()
            .rev()
            .take_while(|b| b.end() > self.durable)
            .map(|b| b.sources_from)
            .min();
        [
            self.windows.oldest_lsn(),
            self.pending.front().map(|(lsn, _)| *lsn),
            outbox.oldest_lsn(),
            not_durable,
            Some(self.active),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.active)
    }

    fn collect_garbage(&mut self) {
        let low = self.low_watermark();
        let mut doomed = Vec::new();
        let bases: Vec<Lsn> = self.segments.keys().copied().collect();
        for pair in bases.windows(2) {
            let (base, end) = (pair[0], pair[1]);
            // Only whole, written segments that hold nothing still needed.
            if end > low || end > self.durable {
                break;
            }
            doomed.push(base);
        }
        self.delete_segments(&doomed);
    }

    fn delete_segments(&mut self, bases: &[Lsn]) {
        if bases.is_empty() {
            return;
        }
        let mut paths = Vec::with_capacity(bases.len());
        for base in bases {
            if let Some(bytes) = self.segments.remove(base) {
                self.disk_bytes -= bytes;
                paths.push(segment_path(&self.settings.dir, *base));
            }
        }
        self.writer.delete(paths);
    }

    fn apply_budget(&mut self, now: UnixMs) {
        let max = self.settings.max_bytes;
        if self.settings.overflow == OverflowPolicy::DropOldest {
            while self.disk_bytes > max {
                if !self.drop_oldest_segment(now) {
                    break;
                }
            }
        }
        let was = self.intake;
        self.intake = match (self.settings.overflow, was) {
            (_, Intake::Open) if self.disk_bytes > max => Intake::Full,
            // Block resumes with a segment of room, so it does not flap on every record.
            (OverflowPolicy::Block, Intake::Full)
                if self.disk_bytes + self.settings.segment_bytes > max =>
            {
                Intake::Full
            }
            (OverflowPolicy::DropOldest, Intake::Full) if self.disk_bytes > max => Intake::Full,
            _ => Intake::Open,
        };
        if was != self.intake {
            match self.intake {
                Intake::Full => error!(
                    spool_bytes = self.disk_bytes,
                    budget = max,
                    policy = ?self.settings.overflow,
                    "spool disk budget used up: no new messages are acknowledged (the broker keeps them, up to its own queue limit) until the server takes the backlog"
                ),
                Intake::Open => info!(
                    spool_bytes = self.disk_bytes,
                    budget = max,
                    "spool below its disk budget again; taking messages"
                ),
            }
        }
    }

    /// Drops the oldest segment and what it holds. False if it cannot be dropped now.
    fn drop_oldest_segment(&mut self, now: UnixMs) -> bool {
        let mut bases = self.segments.keys().copied();
        let (Some(base), Some(end)) = (bases.next(), bases.next()) else {
            // Everything is in the segment being written: start a new one, so this one
            // can go.
            self.rotate();
            self.submit();
            return true;
        };
        // Its records must be with the writer before its file goes, or a late write
        // would recreate it.
        if end > self.submitted {
            debug!(
                segment = base,
                end,
                submitted = self.submitted,
                "oldest segment not written yet; dropping it later"
            );
            return false;
        }
        if outbox::lock(&self.outbox).in_flight_within(base, end) {
            debug!(
                segment = base,
                "oldest segment holds the batch being sent; dropping it after the attempt"
            );
            return false;
        }
        // Whatever is still open in it leaves as a batch first, so that only whole
        // batches are lost and the log keeps no half-window.
        let groups = self.windows.close_older_than(end);
        self.emit(groups, Some(end), now);
        // Queued ahead of the deletion, so the writer has made those batches durable
        // before their sources go.
        self.submit();
        let dropped = outbox::lock(&self.outbox).drop_range(base, end);
        let (mut samples, mut events, mut statuses) = (0, 0, 0);
        for b in &dropped {
            samples += b.samples;
            events += b.events as u64;
            statuses += b.statuses as u64;
        }
        self.totals.count_dropped(
            DropReason::SpoolFull,
            dropped.len() as u64,
            samples,
            events,
            statuses,
        );
        error!(
            batches = dropped.len(),
            samples,
            events,
            statuses,
            segment = base,
            "spool over its disk budget: the oldest undelivered data was dropped (policy drop_oldest)"
        );
        self.delete_segments(&[base]);
        true
    }

    pub fn intake(&self) -> Intake {
        self.intake
    }

    fn publish_gauges(&self) {
        let batches = outbox::lock(&self.outbox).len();
        let full = self.intake == Intake::Full;
        self.totals.set_spool(self.disk_bytes, batches as u64, full);
        gauge!(names::SPOOL_BYTES).set(self.disk_bytes as f64);
        gauge!(names::SPOOL_SEGMENTS).set(self.segments.len() as f64);
        gauge!(names::SPOOL_BATCHES).set(batches as f64);
        gauge!(names::SPOOL_FULL).set(if full { 1.0 } else { 0.0 });
        gauge!(names::OPEN_WINDOWS).set(self.windows.open_windows() as f64);
    }

    // ---- views -------------------------------------------------------------------

    pub fn outbox(&self) -> SharedOutbox {
        self.outbox.clone()
    }

    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn open_windows(&self) -> usize {
        self.windows.open_windows()
    }

    pub fn pending_items(&self) -> usize {
        self.pending.len()
    }

    pub fn machines_tracked(&self) -> usize {
        self.dedup.machines()
    }

    pub fn dir(&self) -> &Path {
        &self.settings.dir
    }
}

impl Drop for DurableSpool {
    fn drop(&mut self) {
        // Whatever was appended is worth writing; nothing waits for it, but the next
        // start finds it (and the broker redelivers what was not acknowledged).
        let _ = self.flush();
        self.writer.stop();
    }
}

/// The JSON of an [`IngestBatch`], written from the closed groups without building the
/// batch (a backlog batch can hold thousands of windows).
#[derive(serde::Serialize)]
struct BatchBody<'a> {
    batch_id: BatchId,
    gateway: &'a GatewayId,
    created_at: UnixMs,
    windows: WindowsOf<'a>,
    events: &'a [MachineEvent],
    statuses: &'a [StatusUpdate],
}

/// The windows of closed groups, serialised one [`WindowAggregate`] at a time.
struct WindowsOf<'a>(&'a [ClosedGroup], i64);

impl serde::Serialize for WindowsOf<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let n = self.0.iter().map(|g| g.group.channels.len()).sum();
        let mut seq = serializer.serialize_seq(Some(n))?;
        for group in self.0 {
            for window in group.windows(self.1) {
                seq.serialize_element::<WindowAggregate>(&window)?;
            }
        }
        seq.end()
    }
}

/// `{spool id}-{position}` in hex: at most 49 characters, a valid [`BatchId`].
pub fn batch_id(id_hex: &str, lsn: Lsn) -> BatchId {
    BatchId::parse(format!("{id_hex}-{lsn:x}")).unwrap_or_else(|_| {
        // Unreachable: hex digits and a dash, 49 characters at most.
        BatchId::parse(format!("b-{lsn:x}")).unwrap_or_else(|_| unreachable!())
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(s: &str) -> Option<SpoolId> {
    let s = s.trim();
    if s.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// The spool's id: from `SPOOL-ID`, else from the first readable segment header, else
/// a new random one (written atomically before any segment refers to it).
fn spool_id(dir: &Path, segments: &[(Lsn, PathBuf)]) -> Result<SpoolId, SpoolError> {
    let id_path = dir.join(ID_FILE);
    match fs::read_to_string(&id_path) {
        Ok(text) => {
            if let Some(id) = parse_hex(&text) {
                return Ok(id);
            }
            warn!(path = %id_path.display(), "unreadable spool id file; taking the id from the segments");
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&id_path)(e)),
    }
    let from_segment = segments.iter().find_map(|(_, path)| {
        let mut header = [0u8; HEADER_LEN as usize];
        let file = File::open(path).ok()?;
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut header, 0).ok()?;
        segment::parse_header(&header).ok().map(|h| h.spool_id)
    });
    let id = from_segment.unwrap_or_else(|| *uuid::Uuid::new_v4().as_bytes());
    let tmp = dir.join(format!("{ID_FILE}.tmp"));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(hex(&id).as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &id_path)?;
        segment::sync_dir(dir)
    };
    write().map_err(io_err(&id_path))?;
    Ok(id)
}

const FLOOR_FILE: &str = "FLOOR";

/// The lowest position new records may use, when a removed segment had used positions
/// beyond the newest remaining one.
fn read_floor(dir: &Path) -> Result<Lsn, SpoolError> {
    let path = dir.join(FLOOR_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().parse().unwrap_or_else(|_| {
            warn!(path = %path.display(), "unreadable position floor; ignoring it");
            0
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn write_floor(dir: &Path, floor: Lsn) -> Result<(), SpoolError> {
    let path = dir.join(FLOOR_FILE);
    let tmp = dir.join(format!("{FLOOR_FILE}.tmp"));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(floor.to_string().as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        segment::sync_dir(dir)
    };
    write().map_err(io_err(&path))
}

/// Copies the bytes of `path` from `offset` on into `quarantine/`, for an operator to
/// look at, and syncs them.
fn quarantine(dir: &Path, path: &Path, offset: u64) -> Result<(), SpoolError> {
    let qdir = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&qdir).map_err(io_err(&qdir))?;
    let bytes = fs::read(path).map_err(io_err(path))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = qdir.join(format!("{name}.{offset}"));
    let tail = bytes.get(offset as usize..).unwrap_or_default();
    let mut f = File::create(&target).map_err(io_err(&target))?;
    f.write_all(tail).map_err(io_err(&target))?;
    f.sync_all().map_err(io_err(&target))
}

fn truncate(path: &Path, len: u64) -> Result<(), SpoolError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    f.set_len(len).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// The state being rebuilt while the log is read.
struct Replay {
    dedup: Deduplicator,
    windows: Aggregator,
    pending: VecDeque<(Lsn, SpoolItem)>,
    outbox: Outbox,
    /// The segment being read.
    segment: Lsn,
    first_in_segment: bool,
    /// Load the seq state from the next checkpoint: at the start, and after a gap.
    restore_next_checkpoint: bool,
    next_lsn: Lsn,
    records: u64,
    now: UnixMs,
}

impl Replay {
    fn new(settings: &SpoolSettings, id_hex: String, now: UnixMs) -> Self {
        Self {
            dedup: Deduplicator::new(),
            windows: Aggregator::new(
                settings.window_ms,
                settings.lateness_ms,
                settings.vibration.clone(),
            ),
            pending: VecDeque::new(),
            outbox: Outbox::new(settings.dir.clone(), id_hex),
            segment: 0,
            first_in_segment: true,
            restore_next_checkpoint: true,
            next_lsn: 0,
            records: 0,
            now,
        }
    }

    fn apply(&mut self, lsn: Lsn, len: u32, record: WalRecord) {
        self.records += 1;
        let first = std::mem::replace(&mut self.first_in_segment, false);
        match record {
            WalRecord::Checkpoint(c) => {
                if self.restore_next_checkpoint && first {
                    let skipped = self.dedup.restore(&c.trackers);
                    if skipped > 0 {
                        warn!(
                            skipped,
                            "checkpoint entries not understood; their seq state starts over"
                        );
                    }
                    for (key, ts) in &c.watermarks {
                        self.windows.raise_watermark(key, *ts);
                    }
                }
                self.restore_next_checkpoint = false;
            }
            WalRecord::Samples { machine, samples } => {
                self.restore_next_checkpoint = false;
                for sample in samples {
                    // The verdict was taken when the sample was accepted; this only
                    // rebuilds the state that verdict left behind.
                    self.dedup.check(&machine, sample.seq, sample.ts);
                    self.windows.add(&machine, sample, lsn, self.now);
                }
            }
            WalRecord::Event(e) => self.pending.push_back((lsn, SpoolItem::Event(e))),
            WalRecord::Status(s) => self.pending.push_back((lsn, SpoolItem::Status(s))),
            WalRecord::Batch(b) => {
                for (machine, start) in &b.groups {
                    self.windows.remove_group(machine, *start);
                }
                if let Some(through) = b.items_through {
                    while self.pending.front().is_some_and(|(l, _)| *l <= through) {
                        self.pending.pop_front();
                    }
                }
                self.outbox.push(BatchRef {
                    lsn,
                    segment: self.segment,
                    len,
                    samples: b.samples,
                    windows: b.windows,
                    events: b.events,
                    statuses: b.statuses,
                    // Replayed, so durable: it stands for its sources.
                    sources_from: lsn,
                    queued: Instant::now(),
                });
            }
            WalRecord::Confirm { batch } => {
                self.outbox.remove(batch);
            }
        }
    }
}

#[cfg(test)]
mod tests;
