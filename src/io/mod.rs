//! All file access goes through [`FileSystem`]: the standard implementation [`StdFs`] and, for
//! tests, the simulated [`SimFs`] that knows which bytes are durable and can crash or fail any
//! operation.
//!
//! Nothing else in gemba touches the file system. The trait is deliberately small: whole-file
//! reads and read-only maps, files written front to back (new, or an old log file reused from
//! its start), rename, remove, directory sync and a lock. Segment files are written once and
//! then only mapped.

mod sim;
mod std_fs;

use std::any::Any;
use std::io;
use std::path::Path;

pub use bytes::Bytes;
pub use sim::{CrashMode, Fault, FaultKind, SimFs};
pub use std_fs::StdFs;

/// A held lock; dropping it releases the lock.
pub type LockGuard = Box<dyn Any + Send + Sync>;

/// The file operations gemba needs. Paths are absolute or relative to the process's
/// working directory, exactly as given to [`crate::Db::open`].
pub trait FileSystem: Send + Sync + 'static {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (not sorted).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates (or truncates) a file for writing from its start.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>>;
    /// Opens an existing file for writing from its start **without truncating it**: its old
    /// bytes stay until overwritten. The log reuses old log files this way, because
    /// overwriting blocks a file already has makes each `fdatasync` cheaper than appending
    /// (no block allocation to commit).
    fn reopen(&self, path: &Path) -> io::Result<Box<dyn WriteFile>>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// A read-only view of a whole file that stays valid while any clone of it lives, even
    /// after the file is removed. [`StdFs`] memory-maps the file.
    fn map(&self, path: &Path) -> io::Result<Bytes>;
    /// Size of a file in bytes.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Cuts a file to `len` bytes and makes the new length durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Renames a file, replacing any file at `to` (atomic on POSIX file systems).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (creating it). Fails with
    /// [`io::ErrorKind::WouldBlock`] when someone, in this or another process, holds it.
    fn lock(&self, path: &Path) -> io::Result<LockGuard>;
}

/// A file open for writing at a cursor, which starts at offset 0 and moves past each write.
pub trait WriteFile: Send {
    /// Writes all of `buf` at the cursor (overwriting or extending the file).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes the data written so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts (or extends with zeros) the file to `len` bytes, moves the cursor there, and makes
    /// the file's data and its new length durable (`ftruncate` + `fsync`). Used to undo a
    /// failed write and to cut the old bytes off a reused file.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// `name.tmp` beside `path`: the temporary name files are written under before publishing.
pub(crate) fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    s.into()
}
