//! The one error type of gemba.

use std::fmt;
use std::path::PathBuf;

use crate::model::FieldType;

/// Result alias used throughout gemba.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in gemba.
///
/// Every variant says what went wrong in terms a caller can act on:
/// bad input is [`Error::InvalidArgument`] or [`Error::TypeMismatch`], damaged files are
/// [`Error::Corrupt`] with the file and byte offset, and a failed `fsync` makes the
/// database [`Error::Poisoned`] until it is reopened.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error, with the operation and the path it concerned.
    /// A full disk shows up here (see [`Error::is_disk_full`]).
    Io {
        /// What gemba was doing, e.g. `"write log"`.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file's bytes are not what gemba wrote: a checksum mismatch, an impossible length,
    /// a truncated structure.
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset in the file where the damage was detected.
        offset: u64,
        /// What was wrong there.
        what: String,
    },
    /// A file was written by a newer (or unknown) format version of gemba.
    FormatVersion {
        /// The file.
        file: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The caller passed something gemba does not accept (an empty machine id, a time range
    /// with `start > end`, a zero bucket width, ...).
    InvalidArgument(String),
    /// A field was written with another type than the one fixed at its first write.
    TypeMismatch {
        /// The machine.
        machine: String,
        /// The field.
        field: String,
        /// The type fixed at the first write.
        expected: FieldType,
        /// The type of this write.
        found: FieldType,
    },
    /// Another `Db` (in this or another process) holds the database directory.
    Locked {
        /// The database directory.
        dir: PathBuf,
    },
    /// A write to durable storage failed in a way that leaves its durability unknown
    /// (a failed `fsync`). gemba never retries such an operation; every call fails with
    /// this error until the database is reopened, which recovers from what is durable.
    Poisoned {
        /// The failure that poisoned the database.
        cause: String,
    },
    /// The database was closed.
    Closed,
}

impl Error {
    /// True when the error is an I/O error caused by a full disk (or a quota).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io { source, .. } if is_disk_full(source))
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { op, path: path.into(), source }
    }

    pub(crate) fn corrupt(file: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Error {
        Error::Corrupt { file: file.into(), offset, what: what.into() }
    }

    pub(crate) fn invalid(what: impl Into<String>) -> Error {
        Error::InvalidArgument(what.into())
    }
}

pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            Error::Corrupt { file, offset, what } => {
                write!(f, "corrupt file {} at offset {offset}: {what}", file.display())
            }
            Error::FormatVersion { file, found, supported } => write!(
                f,
                "{} has format version {found}; this build reads versions up to {supported}",
                file.display()
            ),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::TypeMismatch { machine, field, expected, found } => {
                write!(f, "type mismatch: {machine}/{field} holds {expected} values, this write has {found}")
            }
            Error::Locked { dir } => {
                write!(f, "database {} is in use by another Db (locked)", dir.display())
            }
            Error::Poisoned { cause } => {
                write!(f, "database poisoned by an earlier failure ({cause}); reopen it")
            }
            Error::Closed => write!(f, "database is closed"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
