use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;

use proptest::prelude::*;
use wearcast_protocol::{Channel, IngestBatch, MachineId, TenantId};

use super::*;

const T0: UnixMs = UnixMs(1_800_000_000_000);
const W: i64 = 1_000;

fn settings(
    dir: &Path,
    segment_bytes: u64,
    max_bytes: u64,
    overflow: OverflowPolicy,
) -> SpoolSettings {
    SpoolSettings {
        dir: dir.to_owned(),
        gateway: GatewayId::parse("gw-test").unwrap(),
        segment_bytes,
        max_bytes,
        overflow,
        batch_max_windows: 50,
        window_ms: W,
        lateness_ms: 0,
        vibration: VibrationChannels::new(["vibration"]),
    }
}

fn open(s: &SpoolSettings) -> (DurableSpool, RecoveryReport, Arc<Totals>) {
    let totals = Arc::new(Totals::default());
    let (spool, report) = DurableSpool::open(s.clone(), totals.clone(), T0).unwrap();
    (spool, report, totals)
}

fn key(m: u32) -> MachineKey {
    MachineKey {
        tenant: TenantId::parse("acme").unwrap(),
        machine: MachineId::parse(format!("m{m}")).unwrap(),
    }
}

/// Sample `seq` of a machine: its own one-second window, its seq as the value.
fn sample(seq: u64, channels: &[&str]) -> Sample {
    Sample {
        ts: T0.plus_ms(seq as i64 * W),
        seq: Some(seq),
        readings: channels
            .iter()
            .map(|c| (Channel::parse(*c).unwrap(), seq as f64))
            .collect(),
    }
}

impl DurableSpool {
    /// A crash: what was not handed to the writer is gone, the rest is written as far
    /// as it got. Nothing is synced on the way out.
    fn crash(mut self) {
        self.unwritten.clear();
        self.writer.stop();
    }
}

/// A server that stores each batch id once, like the real one.
#[derive(Default)]
struct Server {
    batches: BTreeMap<String, IngestBatch>,
    attempts: usize,
}

impl Server {
    /// Takes every durable batch the spool offers; returns how many.
    fn take_all(&mut self, spool: &mut DurableSpool) -> usize {
        let outbox = spool.outbox();
        let mut n = 0;
        loop {
            let (next, reader) = {
                let mut o = outbox::lock(&outbox);
                (o.start_sending(), o.reader())
            };
            let Some(batch) = next else { break };
            let body = reader.read(&batch).unwrap().unwrap();
            let parsed: IngestBatch = serde_json::from_slice(&body).unwrap();
            self.attempts += 1;
            self.batches
                .entry(parsed.batch_id.to_string())
                .or_insert(parsed);
            outbox::lock(&outbox).finish_sending(batch.lsn, SendOutcome::Done);
            n += 1;
        }
        spool.log_confirmations();
        n
    }

    /// Stored windows merged per (machine, channel, start): (count, sum of values).
    fn merged(&self) -> BTreeMap<(String, String, i64), (u64, f64)> {
        let mut out: BTreeMap<_, (u64, f64)> = BTreeMap::new();
        for w in self.batches.values().flat_map(|b| &b.windows) {
            let e = out
                .entry((w.machine.to_string(), w.channel.to_string(), w.start.0))
                .or_default();
            e.0 += w.count;
            e.1 += w.mean * w.count as f64;
        }
        out
    }
}

#[test]
fn a_fresh_spool_starts_with_one_segment_and_an_id_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, 8 << 20, OverflowPolicy::Block);
    let (mut spool, report, _) = open(&s);
    spool.sync_blocking().unwrap();
    assert_eq!(report, RecoveryReport::default());
    assert_eq!(spool.segment_count(), 1);
    assert!(dir.path().join("SPOOL-ID").exists());
    assert!(segment_path(dir.path(), 0).exists());
}

#[test]
fn a_second_gateway_on_the_same_spool_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, 8 << 20, OverflowPolicy::Block);
    let (_first, _, _) = open(&s);
    let err = DurableSpool::open(s.clone(), Arc::new(Totals::default()), T0).unwrap_err();
    assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("another gateway"), "{err}");
}

#[test]
fn batches_come_back_byte_for_byte_under_the_same_id_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, 8 << 20, OverflowPolicy::Block);
    let (mut spool, _, _) = open(&s);
    for seq in 1..=5 {
        spool.accept_samples(&key(1), vec![sample(seq, &["a.x", "a.vibration"])], T0);
    }
    assert!(spool.sweep(T0) >= 1);
    spool.sync_blocking().unwrap();
    let before: Vec<(BatchRef, Vec<u8>)> = {
        let shared = spool.outbox();
        let o = outbox::lock(&shared);
        let reader = o.reader();
        o.batches()
            .iter()
            .map(|b| (b.clone(), reader.read(b).unwrap().unwrap()))
            .collect()
    };
    assert!(!before.is_empty());
    spool.crash();

    let (spool, report, _) = open(&s);
    assert_eq!(report.batches, before.len());
    let shared = spool.outbox();
    let o = outbox::lock(&shared);
    let reader = o.reader();
    for ((b, body), again) in before.iter().zip(o.batches()) {
        assert_eq!(b.lsn, again.lsn);
        assert_eq!(&reader.read(again).unwrap().unwrap(), body);
        let parsed: IngestBatch = serde_json::from_slice(body).unwrap();
        assert_eq!(parsed.batch_id, spool.batch_id(b.lsn));
    }
}

#[test]
fn open_windows_are_rebuilt_from_the_log_and_emitted_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, 8 << 20, OverflowPolicy::Block);
    let (mut spool, _, _) = open(&s);
    // Four samples in one window (lateness 0, window 1 s): nothing closes yet.
    for (seq, ms) in [(1, 100), (2, 200), (3, 300), (4, 400)] {
        let mut smp = sample(seq, &["a.x"]);
        smp.ts = T0.plus_ms(ms);
        spool.accept_samples(&key(1), vec![smp], T0);
    }
    assert_eq!(spool.sweep(T0), 0);
    spool.sync_blocking().unwrap();
    spool.crash();

    let (mut spool, report, _) = open(&s);
    assert_eq!(report.open_windows, 1);
    // The seq state came back too: a redelivery is still a duplicate.
    let mut redelivered = sample(2, &["a.x"]);
    redelivered.ts = T0.plus_ms(200);
    let again = spool.accept_samples(&key(1), vec![redelivered], T0);
    assert_eq!(again.duplicates, 1);
    spool.close_all(T0);
    spool.sync_blocking().unwrap();
    let mut server = Server::default();
    server.take_all(&mut spool);
    let merged = server.merged();
    assert_eq!(merged.len(), 1);
    let (count, sum) = merged.values().next().copied().unwrap();
    assert_eq!((count, sum), (4, 10.0));
}

#[test]
fn vibration_windows_carry_their_moments_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, 8 << 20, OverflowPolicy::Block);
    let (mut spool, _, _) = open(&s);
    for (seq, v) in [(1u64, 1.0), (2, 2.0), (3, 6.0)] {
        let smp = Sample {
            ts: T0.plus_ms(seq as i64),
            seq: Some(seq),
            readings: vec![(Channel::parse("bearing.vibration_rms").unwrap(), v)],
        };
        spool.accept_samples(&key(1), vec![smp], T0);
    }
    spool.close_all(T0);
    spool.sync_blocking().unwrap();
    let mut server = Server::default();
    server.take_all(&mut spool);
    let w = &server.batches.values().next().unwrap().windows[0];
    assert_eq!((w.count, w.mean, w.max), (3, 3.0, 6.0));
}

#[test]
fn a_torn_tail_is_cut_off_counted_and_writing_goes_on_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, 8 << 20, OverflowPolicy::Block);
    let (mut spool, _, _) = open(&s);
    spool.accept_samples(&key(1), vec![sample(1, &["a.x"])], T0);
    spool.sync_blocking().unwrap();
    let durable_len = fs::metadata(segment_path(dir.path(), 0)).unwrap().len();
    spool.crash();
    // Half a record and some garbage: what a power cut leaves behind.
    let mut f = OpenOptions::new()
        .append(true)
        .open(segment_path(dir.path(), 0))
        .unwrap();
    f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 2, 9, 9]).unwrap();
    drop(f);

    let (mut spool, report, totals) = open(&s);
    assert_eq!((report.torn_tails, report.torn_bytes), (1, 11));
    assert_eq!(Totals::get(&totals.torn_tails), 1);
    assert_eq!(
        fs::metadata(segment_path(dir.path(), 0)).unwrap().len(),
        durable_len
    );
    spool.accept_samples(&key(1), vec![sample(2, &["a.x"])], T0);
    spool.close_all(T0);
    spool.sync_blocking().unwrap();
    spool.crash();
    let (mut spool, report, _) = open(&s);
    assert_eq!(report.torn_tails, 0);
    let mut server = Server::default();
    server.take_all(&mut spool);
    assert_eq!(server.merged().len(), 2);
}

#[test]
fn damage_in_an_older_segment_is_quarantined_and_the_newer_segments_still_replay() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 4096, 1 << 20, OverflowPolicy::Block);
    let (mut spool, _, _) = open(&s);
    for seq in 1..=200 {
        spool.accept_samples(&key(1), vec![sample(seq, &["a.x", "a.y"])], T0);
    }
    spool.sync_blocking().unwrap();
    assert!(spool.segment_count() >= 3);
    spool.crash();
    let listed = segment::list_segments(dir.path()).unwrap();
    let (_, first) = &listed[0];
    let mut bytes = fs::read(first).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(first, &bytes).unwrap();

    let (mut spool, report, totals) = open(&s);
    assert_eq!(report.corrupt_segments, 1);
    assert!(report.corrupt_bytes > 0);
    assert_eq!(Totals::get(&totals.corrupt_segments), 1);
    assert_eq!(
        fs::read_dir(dir.path().join("quarantine")).unwrap().count(),
        1
    );
    spool.close_all(T0);
    spool.sync_blocking().unwrap();
    let mut server = Server::default();
    server.take_all(&mut spool);
    // The later samples all made it; only some of the first segment's are gone.
    let stored: u64 = server
        .merged()
        .iter()
        .filter(|((_, c, _), _)| c == "a.x")
        .map(|(_, (n, _))| n)
        .sum();
    assert!((100..200).contains(&stored), "{stored}");
}

#[test]
fn a_segment_cut_short_while_being_created_is_removed_and_its_positions_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, 8 << 20, OverflowPolicy::Block);
    let (mut spool, _, _) = open(&s);
    spool.accept_samples(&key(1), vec![sample(1, &["a.x"])], T0);
    spool.close_all(T0);
    spool.sync_blocking().unwrap();
    let mut server = Server::default();
    server.take_all(&mut spool);
    let end = spool.next_lsn();
    spool.crash();
    // The power went while the next segment was being created.
    fs::write(segment_path(dir.path(), end + 5000), b"WCSPO").unwrap();

    let (mut spool, report, _) = open(&s);
    assert_eq!(report.torn_tails, 1);
    assert!(spool.next_lsn() >= end + 5000);
    spool.accept_samples(&key(1), vec![sample(2, &["a.x"])], T0);
    spool.close_all(T0);
    spool.sync_blocking().unwrap();
    server.take_all(&mut spool);
    assert_eq!(server.merged().len(), 2, "no batch id was reused");
}

#[test]
fn segments_are_deleted_once_nothing_in_them_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 4096, 1 << 20, OverflowPolicy::Block);
    let (mut spool, _, _) = open(&s);
    let mut server = Server::default();
    for seq in 1..=300 {
        spool.accept_samples(&key(1), vec![sample(seq, &["a.x"])], T0);
        if seq % 20 == 0 {
            spool.sweep(T0);
            spool.sync_blocking().unwrap();
            server.take_all(&mut spool);
            spool.maintain(T0);
        }
    }
    spool.sync_blocking().unwrap();
    let files = segment::list_segments(dir.path()).unwrap().len();
    assert!(files <= 3, "{files} segments left");
    assert!(spool.disk_bytes() < 3 * (4096 + 2048));
    // Windows up to 298 closed (lateness 0: a window closes once a later one starts).
    assert_eq!(server.merged().len(), 298, "all closed windows delivered");
}

#[test]
fn drop_oldest_drops_whole_batches_and_counts_every_sample_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 4096, 4 * 4096, OverflowPolicy::DropOldest);
    let (mut spool, _, totals) = open(&s);
    let n = 600;
    for seq in 1..=n {
        spool.accept_samples(&key(1), vec![sample(seq, &["a.x", "a.y"])], T0);
        if seq % 10 == 0 {
            spool.sweep(T0);
            spool.sync_blocking().unwrap();
            spool.maintain(T0);
        }
        assert!(spool.intake() == Intake::Open || spool.disk_bytes() > s.max_bytes);
    }
    assert!(spool.disk_bytes() <= s.max_bytes + 2 * 4096 + 4096);
    spool.close_all(T0);
    spool.sync_blocking().unwrap();
    let mut server = Server::default();
    server.take_all(&mut spool);
    let stored = server
        .merged()
        .iter()
        .filter(|((_, c, _), _)| c == "a.x")
        .count() as u64;
    let dropped = Totals::get(&totals.dropped_samples);
    assert!(dropped > 0);
    assert_eq!(stored + dropped, n, "stored {stored} + dropped {dropped}");
    // What survived is the newest.
    assert!(
        server
            .merged()
            .keys()
            .any(|(_, _, start)| *start == T0.0 + n as i64 * W)
    );
}

#[test]
fn block_stops_taking_messages_when_full_and_resumes_once_the_server_took_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 4096, 4 * 4096, OverflowPolicy::Block);
    let (mut spool, _, totals) = open(&s);
    let mut seq = 0;
    while spool.intake() == Intake::Open {
        seq += 1;
        spool.accept_samples(&key(1), vec![sample(seq, &["a.x", "a.y"])], T0);
        spool.check_budget(T0);
        if seq % 10 == 0 {
            spool.sweep(T0);
            spool.sync_blocking().unwrap();
            spool.maintain(T0);
        }
        assert!(seq < 10_000, "never blocked");
    }
    assert!(Totals::get(&totals.spool_full) == 1);
    spool.sweep(T0);
    spool.sync_blocking().unwrap();
    let mut server = Server::default();
    server.take_all(&mut spool);
    spool.sync_blocking().unwrap();
    spool.maintain(T0);
    assert_eq!(spool.intake(), Intake::Open);
    assert_eq!(Totals::get(&totals.dropped_samples), 0);
    spool.close_all(T0);
    spool.sync_blocking().unwrap();
    server.take_all(&mut spool);
    let stored = server
        .merged()
        .iter()
        .filter(|((_, c, _), _)| c == "a.x")
        .count();
    assert_eq!(stored as u64, seq, "nothing accepted was lost");
}

#[test]
fn batch_ids_are_unique_per_spool() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (sa, _, _) = open(&settings(a.path(), 4096, 1 << 20, OverflowPolicy::Block));
    let (sb, _, _) = open(&settings(b.path(), 4096, 1 << 20, OverflowPolicy::Block));
    assert_ne!(sa.batch_id(100), sb.batch_id(100));
    assert!(sa.batch_id(u64::MAX).as_str().len() <= 64);
}

// ---- crashes at random moments ------------------------------------------------------

/// One step of a gateway's life, as the crash test drives it.
#[derive(Clone, Debug)]
enum Step {
    /// The next message from the broker: `n` samples of one machine, possibly
    /// delivered twice.
    Message { machine: u32, n: u8, twice: bool },
    /// A sweep at the clock's current time, then the clock moves on.
    Sweep,
    /// The server takes what the spool offers.
    Deliver,
    /// Group commit: everything so far is durable and acknowledged.
    Commit,
    /// `kill -9`: what was not synced is cut at `cut` (anywhere after what was synced)
    /// and followed by `garbage` bytes of a torn write.
    Crash {
        cut: prop::sample::Index,
        garbage: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u32..3, 1u8..4, prop::bool::weighted(0.1))
            .prop_map(|(machine, n, twice)| Step::Message { machine, n, twice }),
        2 => Just(Step::Sweep),
        2 => Just(Step::Deliver),
        3 => Just(Step::Commit),
        1 => (any::<prop::sample::Index>(), 0u8..40)
            .prop_map(|(cut, garbage)| Step::Crash { cut, garbage }),
    ]
}

/// The broker's view: messages in publish order, and how many were acknowledged.
struct Broker {
    messages: Vec<(u32, Vec<Sample>)>,
    acked: usize,
    delivered: usize,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The heart of the spool: whatever the moment of the crash, every sample the
    /// broker published ends up in the server exactly once.
    #[test]
    fn after_crashes_at_any_moment_every_published_sample_is_stored_exactly_once(
        steps in proptest::collection::vec(step(), 20..120),
        small_segments in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let segment_bytes = if small_segments { 4096 } else { 1 << 20 };
        let s = settings(dir.path(), segment_bytes, 64 << 20, OverflowPolicy::Block);
        let (mut spool, _, _) = open(&s);
        let mut server = Server::default();
        let mut broker = Broker { messages: Vec::new(), acked: 0, delivered: 0 };
        let mut seqs: HashMap<u32, u64> = HashMap::new();
        let mut now = T0;
        // What the broker has handed over since the last ack: redelivered after a crash.
        for step in steps {
            match step {
                Step::Message { machine, n, twice } => {
                    let samples: Vec<Sample> = (0..n)
                        .map(|_| {
                            let seq = seqs.entry(machine).or_default();
                            *seq += 1;
                            sample(*seq, &["a.x", "a.vibration"])
                        })
                        .collect();
                    broker.messages.push((machine, samples));
                    // Deliver everything published and not yet delivered.
                    while broker.delivered < broker.messages.len() {
                        let (m, smp) = broker.messages[broker.delivered].clone();
                        spool.accept_samples(&key(m), smp.clone(), now);
                        if twice {
                            spool.accept_samples(&key(m), smp, now);
                        }
                        broker.delivered += 1;
                    }
                    spool.flush().unwrap();
                }
                Step::Sweep => {
                    spool.sweep(now);
                    now = now.plus_ms(700);
                    spool.flush().unwrap();
                }
                Step::Deliver => {
                    spool.on_writer_progress().unwrap();
                    server.take_all(&mut spool);
                    spool.maintain(now);
                }
                Step::Commit => {
                    spool.sync_blocking().unwrap();
                    broker.acked = broker.delivered;
                    spool.maintain(now);
                }
                Step::Crash { cut, garbage } => {
                    let durable = spool.durable();
                    spool.crash();
                    let Some((base, last)) = segment::list_segments(dir.path()).unwrap().pop() else {
                        // Nothing was ever written.
                        let (reopened, _, _) = open(&s);
                        spool = reopened;
                        broker.delivered = broker.acked;
                        continue;
                    };
                    let len = fs::metadata(&last).unwrap().len();
                    // Only the newest segment can hold unsynced bytes (the writer syncs a
                    // segment before it creates the next one).
                    let synced = if durable >= base { HEADER_LEN + durable - base } else { 0 };
                    let keep = synced + cut.index((len - synced.min(len)) as usize + 1) as u64;
                    let f = OpenOptions::new().write(true).open(&last).unwrap();
                    f.set_len(keep.min(len)).unwrap();
                    drop(f);
                    if garbage > 0 {
                        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
                        f.write_all(&vec![garbage; garbage as usize]).unwrap();
                    }
                    let (reopened, _, _) = open(&s);
                    spool = reopened;
                    prop_assert!(spool.next_lsn() >= durable);
                    // Unacknowledged messages come again.
                    broker.delivered = broker.acked;
                }
            }
        }
        // The end: the broker delivers what is left, everything closes and is taken.
        while broker.delivered < broker.messages.len() {
            let (m, smp) = broker.messages[broker.delivered].clone();
            spool.accept_samples(&key(m), smp, now);
            broker.delivered += 1;
        }
        spool.close_all(now);
        spool.sync_blocking().unwrap();
        server.take_all(&mut spool);

        let merged = server.merged();
        let mut expected = 0;
        for (machine, last) in &seqs {
            for seq in 1..=*last {
                expected += 1;
                let k = (format!("m{machine}"), "a.x".to_string(), T0.0 + seq as i64 * W);
                let got = merged.get(&k).copied();
                prop_assert_eq!(got, Some((1, seq as f64)), "machine {} seq {}", machine, seq);
            }
        }
        let xs = merged.keys().filter(|(_, c, _)| c == "a.x").count();
        prop_assert_eq!(xs, expected);
    }

    /// Whatever happens to the files, opening the spool does not panic.
    #[test]
    fn arbitrary_damage_to_the_files_never_panics_recovery(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 4096, 1 << 20, OverflowPolicy::Block);
        let (mut spool, _, _) = open(&s);
        for seq in 1..=60 {
            spool.accept_samples(&key(1), vec![sample(seq, &["a.x"])], T0);
            if seq % 7 == 0 {
                spool.sweep(T0);
            }
        }
        spool.sync_blocking().unwrap();
        spool.crash();
        let files: Vec<PathBuf> = segment::list_segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        for (at, byte) in flips {
            let path = at.get(&files);
            let mut bytes = fs::read(path).unwrap();
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] ^= byte | 1;
                fs::write(path, &bytes).unwrap();
            }
        }
        if let Some(cut) = cut {
            let path = cut.get(&files);
            let len = fs::metadata(path).unwrap().len() as usize;
            let f = OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(cut.index(len + 1) as u64).unwrap();
        }
        // Recovery may refuse (a header naming another spool), but never panics, and
        // when it opens, the spool works.
        if let Ok((mut spool, _)) = DurableSpool::open(s.clone(), Arc::new(Totals::default()), T0) {
            spool.accept_samples(&key(2), vec![sample(1, &["a.x"])], T0);
            spool.close_all(T0);
            spool.sync_blocking().unwrap();
            let mut server = Server::default();
            server.take_all(&mut spool);
        }
    }
}
