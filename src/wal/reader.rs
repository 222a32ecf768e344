//! Log recovery: replays every log file in order, telling a torn tail from corruption.
//!
//! A record that fails to parse is a **torn tail** when no valid record follows it, in its
//! file or any later one: the write that made it never completed, so it was never
//! acknowledged. The file is cut back to the last good record and the cut is reported.
//! A bad record **followed by valid ones** is corruption of acknowledged data: the open fails
//! with [`Error::Corrupt`], unless [`crate::Options::skip_corrupt_wal_records`] is set, in which
//! case the bad bytes are skipped up to the next valid record and reported.

use std::path::{Path, PathBuf};

use super::format::{self, HEADER_LEN, HeaderCheck, Record};
use crate::error::{Error, Result};
use crate::io::FileSystem;

/// What recovery found and did. Returned by [`crate::Db::recovery_report`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Log files read.
    pub wal_files: usize,
    /// Records replayed into memory (records already flushed to segments are not counted).
    pub records_replayed: u64,
    /// Records skipped because segment files already held them.
    pub records_already_flushed: u64,
    /// Torn tails cut off: each is a file, the offset it was cut at, and the bytes removed.
    pub torn_tails: Vec<TornTail>,
    /// Corrupt ranges skipped (only with `skip_corrupt_wal_records`).
    pub skipped: Vec<SkippedRange>,
}

/// A torn tail cut off a log file during recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The log file.
    pub file: PathBuf,
    /// Where the file was cut (its new length); 0 with `removed` when the file was deleted.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// Whether the whole file was removed (its header itself was incomplete).
    pub removed: bool,
}

/// A corrupt byte range skipped during recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRange {
    /// The log file.
    pub file: PathBuf,
    /// First bad byte.
    pub offset: u64,
    /// Bytes skipped.
    pub bytes: u64,
    /// Why the bytes were rejected.
    pub what: String,
}

/// A log file found on disk: its number and the largest sequence number it holds (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogFile {
    pub(crate) number: u64,
    pub(crate) max_seq: u64,
    /// Its length in bytes (when last seen).
    pub(crate) bytes: u64,
}

/// The log files in `dir`, sorted by number.
pub(crate) fn list_logs(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<u64>> {
    let mut numbers: Vec<u64> = fs
        .list(dir)
        .map_err(|e| Error::io("list", dir, e))?
        .iter()
        .filter_map(|n| super::parse_name(n))
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// Replays the log in `dir`. `apply` receives every valid record with a sequence number above
/// `flushed_seq`, in order. Returns the files left on disk and what was found.
pub(crate) fn recover(
    fs: &dyn FileSystem,
    dir: &Path,
    flushed_seq: u64,
    skip_corrupt: bool,
    mut apply: impl FnMut(&Path, u64, Record<'_>) -> Result<()>,
) -> Result<(Vec<LogFile>, RecoveryReport, u64)> {
    let numbers = list_logs(fs, dir)?;
    let mut report = RecoveryReport { wal_files: numbers.len(), ..RecoveryReport::default() };
    let mut files = Vec::new();
    let mut prev_seq = 0u64;
    let contents: Vec<(u64, PathBuf)> = numbers.iter().map(|&n| (n, dir.join(super::file_name(n)))).collect();

    let mut i = 0;
    while i < contents.len() {
        let (number, path) = &contents[i];
        let bytes = fs.read(path).map_err(|e| Error::io("read log", path, e))?;
        let mut file = LogFile { number: *number, max_seq: 0, bytes: bytes.len() as u64 };
        match format::check_header(&bytes, *number) {
            HeaderCheck::Ok => {}
            HeaderCheck::FutureVersion(v) => {
                return Err(Error::FormatVersion {
                    file: path.clone(),
                    found: v,
                    supported: format::VERSION,
                });
            }
            HeaderCheck::Bad(what) => {
                // A log file is created with its header synced before any record goes in, so a
                // bad header is a torn creation only when nothing valid follows.
                if later_has_valid(fs, &contents[i + 1..], prev_seq.max(flushed_seq))? {
                    if skip_corrupt {
                        report.skipped.push(SkippedRange {
                            file: path.clone(),
                            offset: 0,
                            bytes: bytes.len() as u64,
                            what: what.to_string(),
                        });
                        i += 1;
                        continue;
                    }
                    return Err(Error::corrupt(path, 0, format!("bad log header: {what}")));
                }
                fs.remove(path).map_err(|e| Error::io("remove torn log", path, e))?;
                fs.sync_dir(dir).map_err(|e| Error::io("sync directory", dir, e))?;
                report.torn_tails.push(TornTail {
                    file: path.clone(),
                    offset: 0,
                    bytes: bytes.len() as u64,
                    removed: true,
                });
                i += 1;
                continue;
            }
        }
        let mut pos = HEADER_LEN;
        while pos < bytes.len() {
            match format::read_record(&bytes, pos, prev_seq) {
                Ok(rec) => {
                    if rec.seq > flushed_seq {
                        apply(path, pos as u64, rec)?;
                        report.records_replayed += 1;
                    } else {
                        report.records_already_flushed += 1;
                    }
                    prev_seq = rec.seq;
                    file.max_seq = rec.seq;
                    pos += rec.framed_len;
                }
                Err(err) => {
                    // Only a record that is not yet in segment files makes the bad bytes
                    // corruption: one at or below the flushed sequence number is either data
                    // already safe or an old record of a reused file (FORMAT.md).
                    let floor = prev_seq.max(flushed_seq);
                    let next_here = format::find_valid_record(&bytes, pos + 1, floor);
                    let valid_after = next_here.is_some() || later_has_valid(fs, &contents[i + 1..], floor)?;
                    if !valid_after {
                        let cut = bytes.len() - pos;
                        fs.truncate(path, pos as u64).map_err(|e| Error::io("truncate torn log", path, e))?;
                        report.torn_tails.push(TornTail {
                            file: path.clone(),
                            offset: pos as u64,
                            bytes: cut as u64,
                            removed: false,
                        });
                        break;
                    }
                    if !skip_corrupt {
                        return Err(Error::corrupt(path, pos as u64, err.what()));
                    }
                    let next = next_here.unwrap_or(bytes.len());
                    report.skipped.push(SkippedRange {
                        file: path.clone(),
                        offset: pos as u64,
                        bytes: (next - pos) as u64,
                        what: err.what().to_string(),
                    });
                    pos = next;
                }
            }
        }
        files.push(file);
        i += 1;
    }
    Ok((files, report, prev_seq))
}

/// True when any of `files` holds a valid record with a sequence number above `floor`.
fn later_has_valid(fs: &dyn FileSystem, files: &[(u64, PathBuf)], floor: u64) -> Result<bool> {
    for (_, path) in files {
        let bytes = fs.read(path).map_err(|e| Error::io("read log", path, e))?;
        let from = if bytes.len() >= HEADER_LEN { HEADER_LEN } else { 0 };
        if format::find_valid_record(&bytes, from, floor).is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The error a bad record body becomes (checksum fine, contents impossible).
pub(crate) fn bad_body(file: &Path, offset: u64, what: String) -> Error {
    format::corrupt_record(file, offset, what)
}

/// Checks one log file without changing it: the header, every record's frame and checksum, and
/// every record body. Returns the records checked, the problems (offset, what) and notes (a
/// torn tail of the last file is a note: recovery cuts it off, nothing acknowledged is lost).
pub(crate) fn verify_file(
    path: &Path,
    number: u64,
    bytes: &[u8],
    prev_seq: &mut u64,
    is_last: bool,
    flushed_seq: u64,
) -> (u64, Vec<(u64, String)>, Vec<String>) {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut records = 0;
    match format::check_header(bytes, number) {
        HeaderCheck::Ok => {}
        HeaderCheck::FutureVersion(v) => {
            problems.push((8, format!("log format version {v} is newer than {}", format::VERSION)));
            return (0, problems, notes);
        }
        HeaderCheck::Bad(what) => {
            if is_last && format::find_valid_record(bytes, 0, (*prev_seq).max(flushed_seq)).is_none() {
                notes
                    .push(format!("{}: torn log header ({what}); recovery removes the file", path.display()));
            } else {
                problems.push((0, format!("bad log header: {what}")));
            }
            return (0, problems, notes);
        }
    }
    let mut pos = HEADER_LEN;
    while pos < bytes.len() {
        match format::read_record(bytes, pos, *prev_seq) {
            Ok(rec) => {
                records += 1;
                let body_ok = match rec.kind {
                    format::KIND_BATCH => format::decode_batch(rec.body).map(|_| ()),
                    format::KIND_DELETE => {
                        crate::tombstone::Tombstone::decode(rec.body).and_then(|(_, used)| {
                            if used == rec.body.len() {
                                Ok(())
                            } else {
                                Err("bytes after the delete".to_string())
                            }
                        })
                    }
                    k => Err(format!("unknown record kind {k}")),
                };
                if let Err(w) = body_ok {
                    problems.push((pos as u64, format!("bad log record: {w}")));
                }
                *prev_seq = rec.seq;
                pos += rec.framed_len;
            }
            Err(err) => match format::find_valid_record(bytes, pos + 1, (*prev_seq).max(flushed_seq)) {
                Some(next) => {
                    problems.push((pos as u64, err.what().to_string()));
                    pos = next;
                }
                None if is_last => {
                    notes.push(format!(
                        "{}: torn tail of {} bytes at offset {pos} ({}); recovery cuts it off",
                        path.display(),
                        bytes.len() - pos,
                        err.what()
                    ));
                    break;
                }
                None => {
                    problems.push((pos as u64, err.what().to_string()));
                    break;
                }
            },
        }
    }
    (records, problems, notes)
}
