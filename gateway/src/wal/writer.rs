//! The log's writer thread: appends what the spool hands it, syncs it to disk
//! (`fdatasync`), then announces the position up to which everything is durable. While
//! it syncs one group of records the spool collects the next, so one sync covers every
//! message that arrived meanwhile (group commit) and the message pipeline never waits
//! on the disk.
//!
//! It also creates segment files (syncing the old segment first, and the directory after
//! the new file exists, so a torn tail can only ever be in the newest segment) and
//! deletes the ones the spool no longer needs. It runs on its own OS thread because
//! every one of these calls blocks.
//!
//! After a failed write or sync nothing more is written: what the disk holds is no
//! longer known, so the spool must be recovered from the files again.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use metrics::histogram;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::record::Lsn;
use super::segment::{self, SpoolId};
use crate::stats::names;

/// Records for one segment, in order.
#[derive(Debug)]
pub struct Chunk {
    pub segment: Lsn,
    pub bytes: Vec<u8>,
}

/// What the writer has achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriterState {
    /// Everything before this position is on disk.
    Durable(Lsn),
    /// A write or sync failed; nothing is written any more.
    Failed(String),
}

enum Job {
    Write { chunks: Vec<Chunk>, end: Lsn },
    Delete(Vec<PathBuf>),
}

/// The spool's handle on its writer thread.
#[derive(Debug)]
pub struct WalWriter {
    jobs: Option<mpsc::Sender<Job>>,
    state: watch::Receiver<WriterState>,
    /// The same state for threads that block (recovery, tests, shutdown).
    blocking: Arc<(Mutex<WriterState>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

struct Thread {
    dir: PathBuf,
    spool_id: SpoolId,
    /// The segment being appended to.
    current: Option<(Lsn, File)>,
    state: watch::Sender<WriterState>,
    blocking: Arc<(Mutex<WriterState>, Condvar)>,
}

impl WalWriter {
    /// Starts the thread. `active` is the existing segment to append to (recovery has
    /// truncated any torn tail) and `durable` the position its end stands for.
    pub fn start(
        dir: PathBuf,
        spool_id: SpoolId,
        active: Option<Lsn>,
        durable: Lsn,
    ) -> io::Result<Self> {
        let current = match active {
            Some(base) => Some((
                base,
                OpenOptions::new()
                    .append(true)
                    .open(segment::segment_path(&dir, base))?,
            )),
            None => None,
        };
        let (state_tx, state) = watch::channel(WriterState::Durable(durable));
        let blocking = Arc::new((Mutex::new(WriterState::Durable(durable)), Condvar::new()));
        let (jobs, rx) = mpsc::channel();
        let mut thread = Thread {
            dir,
            spool_id,
            current,
            state: state_tx,
            blocking: blocking.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || thread.run(rx))?;
        Ok(Self {
            jobs: Some(jobs),
            state,
            blocking,
            thread: Some(handle),
        })
    }

    /// Queues records for writing; `end` is the position after the last of them.
    pub fn write(&self, chunks: Vec<Chunk>, end: Lsn) {
        self.send(Job::Write { chunks, end });
    }

    /// Queues segment files for deletion, after every write queued before.
    pub fn delete(&self, paths: Vec<PathBuf>) {
        self.send(Job::Delete(paths));
    }

    fn send(&self, job: Job) {
        // The thread only goes away with `self`, or after a failure it has announced.
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
    }

    pub fn state(&self) -> WriterState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of the state.
    pub fn watch(&self) -> watch::Receiver<WriterState> {
        self.state.clone()
    }

    /// Waits (blocking the calling thread) until `lsn` is durable or writing failed.
    pub fn wait_durable_blocking(&self, lsn: Lsn) -> WriterState {
        let (state, cond) = &*self.blocking;
        let guard = state.lock().unwrap_or_else(|p| p.into_inner());
        let guard = cond
            .wait_while(guard, |s| matches!(s, WriterState::Durable(d) if *d < lsn))
            .unwrap_or_else(|p| p.into_inner());
        guard.clone()
    }

    /// Finishes queued work and stops the thread.
    pub fn stop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("the spool writer thread panicked");
        }
    }
}

impl Drop for WalWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        // A panic must not leave anyone waiting for a durability that never comes.
        if std::thread::panicking() {
            self.announce(WriterState::Failed("the spool writer panicked".into()));
        }
    }
}

impl Thread {
    fn run(&mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            match job {
                Job::Write { chunks, end } => {
                    let started = Instant::now();
                    match self.write(chunks) {
                        Ok(()) => {
                            histogram!(names::WAL_SYNC_SECONDS)
                                .record(started.elapsed().as_secs_f64());
                            self.announce(WriterState::Durable(end));
                        }
                        Err(e) => {
                            self.announce(WriterState::Failed(e.to_string()));
                            // Whatever follows would land after bytes of unknown state.
                            return;
                        }
                    }
                }
                Job::Delete(paths) => self.delete(paths),
            }
        }
    }

    fn announce(&self, new: WriterState) {
        let (state, cond) = &*self.blocking;
        *state.lock().unwrap_or_else(|p| p.into_inner()) = new.clone();
        cond.notify_all();
        self.state.send_replace(new);
    }

    fn write(&mut self, chunks: Vec<Chunk>) -> io::Result<()> {
        let mut dirty = false;
        for chunk in chunks {
            if self.current.as_ref().map(|(b, _)| *b) != Some(chunk.segment) {
                if dirty && let Some((_, file)) = &self.current {
                    file.sync_data()?;
                }
                self.current = Some((chunk.segment, self.create(chunk.segment)?));
            }
            if let Some((_, file)) = &mut self.current {
                file.write_all(&chunk.bytes)?;
                dirty = true;
            }
        }
        if dirty && let Some((_, file)) = &self.current {
            file.sync_data()?;
        }
        Ok(())
    }

    fn create(&self, base: Lsn) -> io::Result<File> {
        let path = segment::segment_path(&self.dir, base);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        file.write_all(&segment::encode_header(&self.spool_id, base))?;
        file.sync_all()?;
        segment::sync_dir(&self.dir)?;
        debug!(path = %path.display(), "new spool segment");
        Ok(file)
    }

    /// Deletes oldest first and stops at the first failure: a log with a hole would
    /// replay samples whose closing batch record went missing as still open windows.
    fn delete(&self, paths: Vec<PathBuf>) {
        for path in &paths {
            match std::fs::remove_file(path) {
                Ok(()) => debug!(path = %path.display(), "spool segment deleted"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot delete a spool segment; it and the ones after it are left for the next start-up");
                    break;
                }
            }
        }
        if let Err(e) = segment::sync_dir(&self.dir) {
            debug!(error = %e, "cannot sync the spool directory after deleting segments");
        }
    }
}
