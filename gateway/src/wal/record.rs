//! The records of the write-ahead log and their byte format.
//!
//! Every record is framed as
//!
//! ```text
//! len: u32 LE | crc: u32 LE | kind: u8 | payload
//! ```
//!
//! where `len` counts `kind` and `payload`, and `crc` is the CRC-32 (IEEE) of the same
//! bytes. A frame whose length is zero, implausibly large, runs past the end of the file
//! or whose CRC does not match is where a log ends: after a crash that is the torn tail
//! of the last write, anywhere else it is corruption. Integers are little-endian; strings
//! carry a one-byte length (every identifier and channel name fits).
//!
//! Live appends encode straight into the write buffer from borrowed data (the hot path
//! allocates nothing per record); recovery decodes into [`WalRecord`].

use wearcast_protocol::event::StatusUpdate;
use wearcast_protocol::{Channel, MachineEvent, MachineId, Sample, TenantId, UnixMs};

use crate::dedup::SeqSnapshot;
use crate::window::MachineKey;

/// Bytes before a record's kind: its length and its CRC.
pub const FRAME_HEADER: usize = 8;
/// Largest record accepted when reading. Batches are bounded by `batch_max_windows` and
/// checkpoints by the number of machines; anything larger is a corrupt length.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// A position in the log: the byte offset of a record among all record bytes ever
/// written by this spool. Never reused, so it names a record (and a batch) for good.
pub type Lsn = u64;

/// The kinds of record, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    Checkpoint = 1,
    Samples = 2,
    Event = 3,
    Status = 4,
    Batch = 5,
    Confirm = 6,
}

impl RecordKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Checkpoint,
            2 => Self::Samples,
            3 => Self::Event,
            4 => Self::Status,
            5 => Self::Batch,
            6 => Self::Confirm,
            _ => return None,
        })
    }
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq)]
pub enum WalRecord {
    /// First record of every segment: the de-duplication state and each machine's
    /// event-time watermark at that point, so a log whose older segments were deleted
    /// still replays into the right state.
    Checkpoint(Checkpoint),
    /// Accepted (validated, de-duplicated) samples of one message.
    Samples {
        machine: MachineKey,
        samples: Vec<Sample>,
    },
    Event(MachineEvent),
    Status(StatusUpdate),
    /// A batch for the server, as sent, and the window groups it closed.
    Batch(BatchRecord),
    /// The server has the batch recorded at `batch` (or it was dead-lettered).
    Confirm {
        batch: Lsn,
    },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    pub trackers: Vec<(MachineKey, SeqSnapshot)>,
    pub watermarks: Vec<(MachineKey, UnixMs)>,
}

/// What a batch record carries besides the body the server receives.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchRecord {
    /// Samples whose readings are in this batch's windows (each sample is in exactly
    /// one batch), for loss accounting should the batch be dropped.
    pub samples: u64,
    pub windows: u32,
    pub events: u32,
    pub statuses: u32,
    /// Pending events and statuses up to and including this position went into the
    /// batch.
    pub items_through: Option<Lsn>,
    /// The `(machine, window start)` groups closed into this batch.
    pub groups: Vec<(MachineKey, UnixMs)>,
    /// The JSON of the `IngestBatch`, exactly as it is posted.
    pub body: Vec<u8>,
}

/// Why bytes are not a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the log ends inside a record header")]
    TruncatedHeader,
    #[error("record length {0} is not plausible")]
    BadLength(usize),
    #[error("the log ends inside a record of {0} bytes")]
    TruncatedRecord(usize),
    #[error("record checksum mismatch")]
    Checksum,
    #[error("record does not decode: {0}")]
    Decode(String),
}

// ---- encoding ----------------------------------------------------------------------

/// Appends records to a buffer. Each `begin` must be followed by the payload writes and
/// one `finish`.
pub struct Encoder<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> Encoder<'a> {
    pub fn begin(buf: &'a mut Vec<u8>, kind: RecordKind) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&[0; FRAME_HEADER]);
        buf.push(kind as u8);
        Self { buf, start }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A string of at most 255 bytes (identifiers and channels always are).
    pub fn str8(&mut self, s: &str) -> &mut Self {
        let bytes = &s.as_bytes()[..s.len().min(255)];
        self.buf.push(bytes.len() as u8);
        self.buf.extend_from_slice(bytes);
        self
    }
    pub fn bytes32(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.buf.extend_from_slice(b);
        self
    }
    pub fn machine(&mut self, key: &MachineKey) -> &mut Self {
        self.str8(key.tenant.as_str()).str8(key.machine.as_str())
    }

    /// Writes the frame header; returns the frame's length in bytes.
    pub fn finish(self) -> usize {
        let body = &self.buf[self.start + FRAME_HEADER..];
        let len = body.len() as u32;
        let crc = crc32fast::hash(body);
        self.buf[self.start..self.start + 4].copy_from_slice(&len.to_le_bytes());
        self.buf[self.start + 4..self.start + 8].copy_from_slice(&crc.to_le_bytes());
        self.buf.len() - self.start
    }
}

pub fn encode_samples(buf: &mut Vec<u8>, machine: &MachineKey, samples: &[Sample]) -> usize {
    let mut e = Encoder::begin(buf, RecordKind::Samples);
    e.machine(machine).u32(samples.len() as u32);
    for s in samples {
        e.i64(s.ts.0);
        match s.seq {
            Some(seq) => e.u8(1).u64(seq),
            None => e.u8(0),
        };
        e.u32(s.readings.len() as u32);
        for (channel, value) in &s.readings {
            e.str8(channel.as_str()).f64(*value);
        }
    }
    e.finish()
}

pub fn encode_json(buf: &mut Vec<u8>, kind: RecordKind, json: &[u8]) -> usize {
    let mut e = Encoder::begin(buf, kind);
    e.bytes32(json);
    e.finish()
}

pub fn encode_batch(buf: &mut Vec<u8>, batch: &BatchRecord) -> usize {
    encode_batch_with(buf, batch, |out| out.extend_from_slice(&batch.body))
}

/// Encodes a batch record whose body `write_body` appends straight into the buffer
/// (`batch.body` is ignored), so a large batch is never held twice in memory.
pub fn encode_batch_with(
    buf: &mut Vec<u8>,
    batch: &BatchRecord,
    write_body: impl FnOnce(&mut Vec<u8>),
) -> usize {
    let mut e = Encoder::begin(buf, RecordKind::Batch);
    e.u64(batch.samples)
        .u32(batch.windows)
        .u32(batch.events)
        .u32(batch.statuses);
    match batch.items_through {
        Some(lsn) => e.u8(1).u64(lsn),
        None => e.u8(0),
    };
    e.u32(batch.groups.len() as u32);
    for (machine, start) in &batch.groups {
        e.machine(machine).i64(start.0);
    }
    let at = e.buf.len();
    e.u32(0);
    write_body(e.buf);
    let body_len = (e.buf.len() - at - 4) as u32;
    e.buf[at..at + 4].copy_from_slice(&body_len.to_le_bytes());
    e.finish()
}

pub fn encode_confirm(buf: &mut Vec<u8>, batch: Lsn) -> usize {
    let mut e = Encoder::begin(buf, RecordKind::Confirm);
    e.u64(batch);
    e.finish()
}

pub fn encode_checkpoint(buf: &mut Vec<u8>, checkpoint: &Checkpoint) -> usize {
    let mut e = Encoder::begin(buf, RecordKind::Checkpoint);
    e.u32(checkpoint.trackers.len() as u32);
    for (machine, snap) in &checkpoint.trackers {
        e.machine(machine).u64(snap.highest).i64(snap.newest_ts.0);
        e.u32(snap.seen.len() as u32);
        for word in &snap.seen {
            e.u64(*word);
        }
    }
    e.u32(checkpoint.watermarks.len() as u32);
    for (machine, ts) in &checkpoint.watermarks {
        e.machine(machine).i64(ts.0);
    }
    e.finish()
}

// ---- decoding ----------------------------------------------------------------------

/// Reads the frame at the start of `bytes`: its kind, its payload and its total length.
pub fn read_frame(bytes: &[u8]) -> Result<(RecordKind, &[u8], usize), FrameError> {
    if bytes.len() < FRAME_HEADER {
        return Err(FrameError::TruncatedHeader);
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len == 0 || len > MAX_RECORD_BYTES {
        return Err(FrameError::BadLength(len));
    }
    let Some(body) = bytes.get(FRAME_HEADER..FRAME_HEADER + len) else {
        return Err(FrameError::TruncatedRecord(len));
    };
    if crc32fast::hash(body) != crc {
        return Err(FrameError::Checksum);
    }
    let kind = RecordKind::from_u8(body[0])
        .ok_or_else(|| FrameError::Decode(format!("unknown record kind {}", body[0])))?;
    Ok((kind, &body[1..], FRAME_HEADER + len))
}

/// Decodes the record at the start of `bytes`; returns it and its length.
pub fn decode(bytes: &[u8]) -> Result<(WalRecord, usize), FrameError> {
    let (kind, payload, len) = read_frame(bytes)?;
    let mut d = Decoder { buf: payload };
    let record = d.record(kind).map_err(FrameError::Decode)?;
    if !d.buf.is_empty() {
        return Err(FrameError::Decode(format!(
            "{} bytes left over after a {kind:?} record",
            d.buf.len()
        )));
    }
    Ok((record, len))
}

struct Decoder<'a> {
    buf: &'a [u8],
}

type DecodeResult<T> = Result<T, String>;

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> DecodeResult<&[u8]> {
        if self.buf.len() < n {
            return Err(format!("needs {n} more bytes, has {}", self.buf.len()));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> DecodeResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> DecodeResult<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    fn str8(&mut self) -> DecodeResult<&str> {
        let n = self.u8()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|e| e.to_string())
    }
    fn bytes32(&mut self) -> DecodeResult<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    /// A count of items each at least `min_item_bytes` long, checked against what is
    /// left so a corrupt count cannot make us allocate wildly.
    fn count(&mut self, min_item_bytes: usize) -> DecodeResult<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_bytes) > self.buf.len() {
            return Err(format!(
                "count {n} does not fit in {} bytes",
                self.buf.len()
            ));
        }
        Ok(n)
    }
    fn machine(&mut self) -> DecodeResult<MachineKey> {
        let tenant = TenantId::parse(self.str8()?).map_err(|e| e.to_string())?;
        let machine = MachineId::parse(self.str8()?).map_err(|e| e.to_string())?;
        Ok(MachineKey { tenant, machine })
    }

    fn record(&mut self, kind: RecordKind) -> DecodeResult<WalRecord> {
        Ok(match kind {
            RecordKind::Checkpoint => {
                let n = self.count(2 + 8 + 8 + 4)?;
                let mut trackers = Vec::with_capacity(n);
                for _ in 0..n {
                    let machine = self.machine()?;
                    let highest = self.u64()?;
                    let newest_ts = UnixMs(self.i64()?);
                    let words = self.count(8)?;
                    let mut seen = Vec::with_capacity(words);
                    for _ in 0..words {
                        seen.push(self.u64()?);
                    }
                    trackers.push((
                        machine,
                        SeqSnapshot {
                            highest,
                            newest_ts,
                            seen,
                        },
                    ));
                }
                let n = self.count(2 + 8)?;
                let mut watermarks = Vec::with_capacity(n);
                for _ in 0..n {
                    watermarks.push((self.machine()?, UnixMs(self.i64()?)));
                }
                WalRecord::Checkpoint(Checkpoint {
                    trackers,
                    watermarks,
                })
            }
            RecordKind::Samples => {
                let machine = self.machine()?;
                let n = self.count(8 + 1 + 4)?;
                let mut samples = Vec::with_capacity(n);
                for _ in 0..n {
                    let ts = UnixMs(self.i64()?);
                    let seq = match self.u8()? {
                        0 => None,
                        1 => Some(self.u64()?),
                        other => return Err(format!("seq flag {other}")),
                    };
                    let readings_n = self.count(1 + 8)?;
                    let mut readings = Vec::with_capacity(readings_n);
                    for _ in 0..readings_n {
                        let channel = Channel::parse(self.str8()?).map_err(|e| e.to_string())?;
                        readings.push((channel, self.f64()?));
                    }
                    samples.push(Sample { ts, seq, readings });
                }
                WalRecord::Samples { machine, samples }
            }
            RecordKind::Event => {
                let json = self.bytes32()?;
                WalRecord::Event(serde_json::from_slice(&json).map_err(|e| e.to_string())?)
            }
            RecordKind::Status => {
                let json = self.bytes32()?;
                WalRecord::Status(serde_json::from_slice(&json).map_err(|e| e.to_string())?)
            }
            RecordKind::Batch => {
                let samples = self.u64()?;
                let windows = self.u32()?;
                let events = self.u32()?;
                let statuses = self.u32()?;
                let items_through = match self.u8()? {
                    0 => None,
                    1 => Some(self.u64()?),
                    other => return Err(format!("items flag {other}")),
                };
                let n = self.count(2 + 8)?;
                let mut groups = Vec::with_capacity(n);
                for _ in 0..n {
                    groups.push((self.machine()?, UnixMs(self.i64()?)));
                }
                let body = self.bytes32()?;
                WalRecord::Batch(BatchRecord {
                    samples,
                    windows,
                    events,
                    statuses,
                    items_through,
                    groups,
                    body,
                })
            }
            RecordKind::Confirm => WalRecord::Confirm { batch: self.u64()? },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wearcast_protocol::event::{EventKind, EventPayload, MachineState};

    fn key(m: &str) -> MachineKey {
        MachineKey {
            tenant: TenantId::parse("acme").unwrap(),
            machine: MachineId::parse(m).unwrap(),
        }
    }

    fn sample(ts: i64, seq: Option<u64>, readings: &[(&str, f64)]) -> Sample {
        Sample {
            ts: UnixMs(ts),
            seq,
            readings: readings
                .iter()
                .map(|(c, v)| (Channel::parse(*c).unwrap(), *v))
                .collect(),
        }
    }

    fn roundtrip(buf: &[u8]) -> Vec<WalRecord> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let (record, len) = decode(&buf[at..]).unwrap();
            out.push(record);
            at += len;
        }
        out
    }

    #[test]
    fn every_kind_of_record_decodes_to_what_was_encoded() {
        let mut buf = Vec::new();
        let samples = vec![
            sample(5, Some(7), &[("a.x", 1.5), ("op.load_pct", -2.0)]),
            sample(6, None, &[("a.x", f64::MAX)]),
        ];
        encode_samples(&mut buf, &key("m1"), &samples);
        let event = MachineEvent {
            tenant: TenantId::parse("acme").unwrap(),
            machine: MachineId::parse("m1").unwrap(),
            event: EventPayload {
                ts: UnixMs(9),
                seq: Some(1),
                kind: EventKind::Fault,
                component: None,
                code: Some("E1".into()),
                message: None,
            },
        };
        encode_json(
            &mut buf,
            RecordKind::Event,
            &serde_json::to_vec(&event).unwrap(),
        );
        let status = StatusUpdate {
            tenant: TenantId::parse("acme").unwrap(),
            machine: MachineId::parse("m1").unwrap(),
            state: MachineState::Online,
            at: UnixMs(3),
        };
        encode_json(
            &mut buf,
            RecordKind::Status,
            &serde_json::to_vec(&status).unwrap(),
        );
        let batch = BatchRecord {
            samples: 2,
            windows: 3,
            events: 1,
            statuses: 1,
            items_through: Some(77),
            groups: vec![(key("m1"), UnixMs(0)), (key("m2"), UnixMs(60_000))],
            body: b"{\"batch_id\":\"x\"}".to_vec(),
        };
        encode_batch(&mut buf, &batch);
        encode_confirm(&mut buf, 12345);
        let checkpoint = Checkpoint {
            trackers: vec![(
                key("m1"),
                SeqSnapshot {
                    highest: 9,
                    newest_ts: UnixMs(4),
                    seen: vec![1, 2, 3],
                },
            )],
            watermarks: vec![(key("m1"), UnixMs(44))],
        };
        encode_checkpoint(&mut buf, &checkpoint);

        assert_eq!(
            roundtrip(&buf),
            vec![
                WalRecord::Samples {
                    machine: key("m1"),
                    samples
                },
                WalRecord::Event(event),
                WalRecord::Status(status),
                WalRecord::Batch(batch),
                WalRecord::Confirm { batch: 12345 },
                WalRecord::Checkpoint(checkpoint),
            ]
        );
    }

    #[test]
    fn a_flipped_bit_a_cut_record_and_zeroes_are_each_detected() {
        let mut buf = Vec::new();
        encode_confirm(&mut buf, 1);
        let mut flipped = buf.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&flipped).unwrap_err(), FrameError::Checksum);
        assert_eq!(
            decode(&buf[..buf.len() - 1]).unwrap_err(),
            FrameError::TruncatedRecord(9)
        );
        assert_eq!(decode(&buf[..3]).unwrap_err(), FrameError::TruncatedHeader);
        assert_eq!(decode(&[0; 32]).unwrap_err(), FrameError::BadLength(0));
    }

    proptest! {
        #[test]
        fn samples_records_round_trip(
            ts in proptest::collection::vec(any::<i64>(), 0..20),
            value in any::<f64>(),
            seq in proptest::option::of(any::<u64>()),
        ) {
            let samples: Vec<Sample> = ts
                .iter()
                .map(|t| sample(*t, seq, &[("bearing.vibration_rms", value), ("op.x", 1.0)]))
                .collect();
            let mut buf = Vec::new();
            let len = encode_samples(&mut buf, &key("m-7"), &samples);
            prop_assert_eq!(len, buf.len());
            let (record, read) = decode(&buf).unwrap();
            prop_assert_eq!(read, len);
            let WalRecord::Samples { samples: back, .. } = record else {
                panic!("not a samples record");
            };
            prop_assert_eq!(back.len(), samples.len());
            for (a, b) in back.iter().zip(&samples) {
                prop_assert_eq!((a.ts, a.seq), (b.ts, b.seq));
                prop_assert_eq!(a.readings[0].1.to_bits(), b.readings[0].1.to_bits());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn a_valid_frame_with_a_garbage_payload_is_a_decode_error_not_a_panic(
            kind in 1u8..=6,
            payload in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let mut body = vec![kind];
            body.extend_from_slice(&payload);
            let mut frame = Vec::new();
            frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
            frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            frame.extend_from_slice(&body);
            let _ = decode(&frame);
        }
    }
}
