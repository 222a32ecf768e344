//! The write-ahead log: every batch is framed, checksummed and appended here before it is
//! acknowledged, and replayed on open.
//!
//! - [`format`](mod@format): file header, record framing, batch payload encoding;
//! - [`writer`]: appends with group commit and the sync policy, rotation, removal (or reuse,
//!   as the spare) of files whose records all reached segment files;
//! - [`reader`]: recovery, which tells a torn tail from corruption.

pub(crate) mod format;
pub(crate) mod reader;
pub(crate) mod writer;

pub use reader::{RecoveryReport, SkippedRange, TornTail};

/// Name of the spare: a log file whose records are all in segment files, kept (renamed) so
/// that the next log file reuses its blocks instead of allocating new ones. Not a log file:
/// recovery does not read it.
pub(crate) const SPARE_NAME: &str = "wal.spare";

/// File name of log file `number`.
pub(crate) fn file_name(number: u64) -> String {
    format!("wal-{number:016}.log")
}

/// The number in a log file's name, or `None` for other files.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
