//! Segment files: the log is cut into files named after the position of their first
//! record (`00000000000000123456.wal`), so whole files can be deleted once nothing in
//! them is needed any more.
//!
//! A segment starts with a fixed header — magic, format version, the spool's id and the
//! segment's base position, protected by a CRC — followed by records. The header makes
//! a file from another spool, or a file half-created when the power went, recognisable.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::record::{self, FrameError, Lsn, WalRecord};

/// Bytes of the header at the start of every segment.
pub const HEADER_LEN: u64 = 40;
const MAGIC: &[u8; 8] = b"WCSPOOL\0";
const VERSION: u32 = 1;
const EXTENSION: &str = "wal";

/// Identifies one spool, so batch ids stay unique even when a gateway starts over with
/// an empty data directory under the same gateway id.
pub type SpoolId = [u8; 16];

/// The path of the segment that starts at `base`.
pub fn segment_path(dir: &Path, base: Lsn) -> PathBuf {
    dir.join(format!("{base:020}.{EXTENSION}"))
}

pub fn encode_header(spool_id: &SpoolId, base: Lsn) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(MAGIC);
    h[8..24].copy_from_slice(spool_id);
    h[24..32].copy_from_slice(&base.to_le_bytes());
    h[32..36].copy_from_slice(&VERSION.to_le_bytes());
    let crc = crc32fast::hash(&h[0..36]);
    h[36..40].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a valid header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub spool_id: SpoolId,
    pub base: Lsn,
}

pub fn parse_header(bytes: &[u8]) -> Result<SegmentHeader, String> {
    let Some(h) = bytes.get(..HEADER_LEN as usize) else {
        return Err(format!(
            "{} bytes, shorter than a segment header",
            bytes.len()
        ));
    };
    if &h[0..8] != MAGIC {
        return Err("not a Wearcast spool segment (bad magic)".into());
    }
    let crc = u32::from_le_bytes([h[36], h[37], h[38], h[39]]);
    if crc32fast::hash(&h[0..36]) != crc {
        return Err("segment header checksum mismatch".into());
    }
    let version = u32::from_le_bytes([h[32], h[33], h[34], h[35]]);
    if version != VERSION {
        return Err(format!(
            "segment format version {version}; this gateway reads {VERSION}"
        ));
    }
    let mut spool_id = [0; 16];
    spool_id.copy_from_slice(&h[8..24]);
    let mut base = [0; 8];
    base.copy_from_slice(&h[24..32]);
    Ok(SegmentHeader {
        spool_id,
        base: u64::from_le_bytes(base),
    })
}

/// The segment files in `dir`, in log order. Other files are left alone.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(Lsn, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
            continue;
        }
        let Some(base) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<Lsn>().ok())
        else {
            continue;
        };
        out.push((base, path));
    }
    out.sort_by_key(|(base, _)| *base);
    Ok(out)
}

/// How reading one segment ended.
#[derive(Debug)]
pub struct Scan {
    pub header: SegmentHeader,
    /// Position after the last valid record.
    pub end: Lsn,
    /// File length up to the end of the last valid record.
    pub valid_len: u64,
    /// Where and why reading stopped early, if it did.
    pub stopped: Option<(u64, FrameError)>,
    /// The file's full length.
    pub file_len: u64,
}

/// Reads a whole segment, calling `apply` with the position, frame length and content of
/// every valid record in order, and stops at the first invalid one. An invalid header is
/// an `Err`.
pub fn scan(
    path: &Path,
    mut apply: impl FnMut(Lsn, u32, WalRecord),
) -> io::Result<Result<Scan, String>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let header = match parse_header(&bytes) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let mut at = HEADER_LEN as usize;
    let mut stopped = None;
    while at < bytes.len() {
        match record::decode(&bytes[at..]) {
            Ok((rec, len)) => {
                apply(header.base + (at as u64 - HEADER_LEN), len as u32, rec);
                at += len;
            }
            Err(e) => {
                stopped = Some((at as u64, e));
                break;
            }
        }
    }
    Ok(Ok(Scan {
        header,
        end: header.base + (at as u64 - HEADER_LEN),
        valid_len: at as u64,
        stopped,
        file_len: bytes.len() as u64,
    }))
}

/// Makes a directory entry change (create, rename, delete) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_a_damaged_one_says_why() {
        let id = [7u8; 16];
        let h = encode_header(&id, 4242);
        assert_eq!(
            parse_header(&h).unwrap(),
            SegmentHeader {
                spool_id: id,
                base: 4242
            }
        );
        let mut bad = h;
        bad[30] ^= 1;
        assert!(parse_header(&bad).unwrap_err().contains("checksum"));
        assert!(parse_header(&h[..10]).unwrap_err().contains("shorter"));
        assert!(parse_header(&[0; 40]).unwrap_err().contains("magic"));
    }

    #[test]
    fn segments_are_listed_in_log_order_and_other_files_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for base in [300u64, 20, 1000] {
            fs::write(segment_path(dir.path(), base), b"").unwrap();
        }
        fs::write(dir.path().join("SPOOL-ID"), b"").unwrap();
        fs::write(dir.path().join("notes.wal.bak"), b"").unwrap();
        let bases: Vec<Lsn> = list_segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        assert_eq!(bases, [20, 300, 1000]);
    }
}
