//! The standard file system.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

use super::{Bytes, FileSystem, LockGuard, WriteFile};

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

/// A file written at the OS file cursor (not in append mode, so a reused file is overwritten
/// in place from its start).
struct StdFile(File);

impl WriteFile for StdFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        self.0.seek(SeekFrom::Start(len))?;
        // `fsync`, not `fdatasync`: the new length must be durable whichever way it moved.
        self.0.sync_all()
    }
}

impl FileSystem for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            if let Ok(name) = e.file_name().into_string() {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let file = OpenOptions::new().create(true).truncate(true).write(true).open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn reopen(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn map(&self, path: &Path) -> io::Result<Bytes> {
        let f = File::open(path)?;
        if f.metadata()?.len() == 0 {
            return Ok(Bytes::new());
        }
        // SAFETY: gemba maps only segment files, which are immutable once published: gemba
        // never writes, truncates or renames over a live segment (it writes a new file and
        // removes the old one, which leaves existing mappings intact). Another process
        // modifying the files breaks gemba's contract (documented in ARCHITECTURE.md) and could
        // make reads fault; every read is still bounds- and checksum-checked.
        let map = unsafe { memmap2::Mmap::map(&f)? };
        Ok(Bytes::from_owner(map))
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let f = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        match f.try_lock() {
            Ok(()) => Ok(Box::new(f)),
            Err(fs::TryLockError::WouldBlock) => {
                Err(io::Error::new(io::ErrorKind::WouldBlock, "locked by another handle"))
            }
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}
