//! A simulated file system for tests: it knows which bytes and directory entries are durable,
//! can crash (dropping what was not synced, or keeping a random prefix of it), and can fail
//! any mutating operation with an I/O error, a full disk or a short write.
//!
//! The model, close to what Linux file systems promise:
//! - a file's data is durable up to what `sync_data` covered; after a crash a file holds its
//!   durable bytes plus, depending on [`CrashMode`], some prefix of the writes made since, in
//!   order (the last one possibly in part) — a write over old bytes (a reused file) may be
//!   lost as well as an appended one;
//! - `WriteFile::set_len` is durable at once, with everything written before it;
//! - directory entries (create, rename, remove) are durable once `sync_dir` ran on their
//!   directory; after a crash a directory shows its durable entries with a prefix (in order) of
//!   the operations done since, so a rename is never half done;
//! - `truncate` (the trait's, not `WriteFile::set_len`) is durable at once, as it syncs.
//!
//! Every mutating operation is numbered from 1; [`SimFs::ops`] tells how many ran, which lets a
//! test crash "after operation k" for every k of a workload.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Bytes, FileSystem, LockGuard, WriteFile};

/// What a simulated crash keeps of the data and directory operations that were not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Keep only what was synced: the unsynced tail of every file and every unsynced
    /// directory operation is lost.
    DropUnsynced,
    /// Keep a random prefix of each file's unsynced tail and of each directory's unsynced
    /// operations (a torn last write).
    KeepPrefix,
    /// Like `KeepPrefix`, then overwrite the end of each kept unsynced tail with random bytes
    /// (a sector that was being written when power failed).
    Garbage,
    /// A process crash: everything handed to the OS survives, synced or not.
    KeepAll,
}

/// Which error an injected fault produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `EIO`.
    Io,
    /// `ENOSPC`: the disk is full.
    NoSpace,
    /// A write stores only part of its buffer, then fails with `EIO`. Other operations just fail.
    ShortWrite,
}

/// A planned failure: operation number `at` (counting mutating operations from 1) fails, and
/// with `sticky` every later one too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The operation number that fails first.
    pub at: u64,
    /// The error.
    pub kind: FaultKind,
    /// Whether every later operation fails as well.
    pub sticky: bool,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, in order: offset and bytes.
    unsynced: Vec<(usize, Vec<u8>)>,
}

impl Inode {
    /// Writes `buf` at `pos` (extending the file as needed) and remembers the write.
    fn write_at(&mut self, pos: usize, buf: &[u8]) {
        let end = pos + buf.len();
        if end > self.data.len() {
            self.data.resize(end, 0);
        }
        self.data[pos..end].copy_from_slice(buf);
        self.unsynced.push((pos, buf.to_vec()));
    }

    /// Makes the current contents durable.
    fn sync(&mut self) {
        self.durable = self.data.clone();
        self.unsynced.clear();
    }

    /// Bytes the file grows by when `len` bytes are written at `pos`.
    fn growth(&self, pos: usize, len: usize) -> u64 {
        (pos + len).saturating_sub(self.data.len()) as u64
    }
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
}

#[derive(Debug, Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// Current entries per directory.
    dirs: BTreeMap<PathBuf, BTreeMap<String, u64>>,
    /// Durable entries per directory.
    durable_dirs: BTreeMap<PathBuf, BTreeMap<String, u64>>,
    /// Directory operations since the last `sync_dir`, per directory, in order.
    journal: BTreeMap<PathBuf, Vec<DirOp>>,
    ops: u64,
    fault: Option<Fault>,
    /// After this operation number every operation fails: the "process" is dead.
    halt_after: Option<u64>,
    capacity: Option<u64>,
    locks: HashSet<PathBuf>,
    generation: u64,
    rng: u64,
    /// Artificial delay per write, to simulate a slow disk.
    write_delay: std::time::Duration,
}

/// The simulated file system. Cloning gives another handle to the same files.
#[derive(Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SimFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFs").finish_non_exhaustive()
    }
}

fn split(path: &Path) -> (PathBuf, String) {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    (dir, name)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display()))
}

impl State {
    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Counts a mutating operation and applies planned faults.
    fn op(&mut self) -> Result<(), FaultKind> {
        self.ops += 1;
        if let Some(h) = self.halt_after
            && self.ops > h
        {
            return Err(FaultKind::Io);
        }
        if let Some(f) = self.fault
            && (self.ops == f.at || (f.sticky && self.ops > f.at))
        {
            return Err(f.kind);
        }
        Ok(())
    }

    fn used_bytes(&self) -> u64 {
        self.inodes.values().map(|i| i.data.len() as u64).sum()
    }

    fn lookup(&self, path: &Path) -> Option<u64> {
        let (dir, name) = split(path);
        self.dirs.get(&dir)?.get(&name).copied()
    }

    fn link(&mut self, path: &Path, ino: u64) -> io::Result<()> {
        let (dir, name) = split(path);
        let entries = self.dirs.get_mut(&dir).ok_or_else(|| not_found(&dir))?;
        entries.insert(name.clone(), ino);
        self.journal.entry(dir).or_default().push(DirOp::Link(name, ino));
        Ok(())
    }

    fn unlink(&mut self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path);
        let entries = self.dirs.get_mut(&dir).ok_or_else(|| not_found(path))?;
        let ino = entries.remove(&name).ok_or_else(|| not_found(path))?;
        self.journal.entry(dir).or_default().push(DirOp::Unlink(name));
        Ok(ino)
    }
}

fn fault_error(kind: FaultKind) -> io::Error {
    match kind {
        FaultKind::NoSpace => io::Error::new(io::ErrorKind::StorageFull, "simulated: no space"),
        FaultKind::Io | FaultKind::ShortWrite => io::Error::other("simulated I/O error"),
    }
}

impl SimFs {
    /// A new, empty file system; `seed` drives the random choices of crashes.
    pub fn new(seed: u64) -> SimFs {
        let fs = SimFs::default();
        fs.state.lock().rng = seed | 1;
        fs
    }

    /// Number of mutating operations so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Plans a fault (replacing any earlier plan); `None` clears it.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.state.lock().fault = fault;
    }

    /// Makes every operation after operation number `k` fail, as if the process died there.
    /// `None` lifts it.
    pub fn halt_after(&self, k: Option<u64>) {
        self.state.lock().halt_after = k;
    }

    /// Limits the total bytes of all files; writes beyond fail with `ENOSPC`. `None`: no limit.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity = bytes;
    }

    /// Delays every write by `d` (a slow disk).
    pub fn set_write_delay(&self, d: std::time::Duration) {
        self.state.lock().write_delay = d;
    }

    /// Total bytes in all files.
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().used_bytes()
    }

    /// Simulates a crash: the returned file system holds what survives under `mode`. Locks are
    /// released; faults, halts and counters are reset. Handles to the old state keep working
    /// on the old state, which is no longer connected to the new one.
    pub fn crash(&self, mode: CrashMode) -> SimFs {
        let mut st = self.state.lock();
        let mut new = State { rng: st.next_rand() | 1, generation: st.generation + 1, ..State::default() };
        let dirs: Vec<PathBuf> = st.dirs.keys().cloned().collect();
        let mut keep_inodes: HashMap<u64, Inode> = HashMap::new();
        for dir in dirs {
            let mut entries = st.durable_dirs.get(&dir).cloned().unwrap_or_default();
            let journal = st.journal.get(&dir).cloned().unwrap_or_default();
            let keep = match mode {
                CrashMode::DropUnsynced => 0,
                CrashMode::KeepAll => journal.len(),
                CrashMode::KeepPrefix | CrashMode::Garbage => {
                    (st.next_rand() % (journal.len() as u64 + 1)) as usize
                }
            };
            for op in &journal[..keep] {
                match op {
                    DirOp::Link(name, ino) => {
                        entries.insert(name.clone(), *ino);
                    }
                    DirOp::Unlink(name) => {
                        entries.remove(name);
                    }
                }
            }
            for &ino in entries.values() {
                if keep_inodes.contains_key(&ino) {
                    continue;
                }
                let old = st.inodes.get(&ino).cloned().unwrap_or_default();
                let data = if mode == CrashMode::KeepAll {
                    old.data.clone()
                } else {
                    // Replay a prefix of the unsynced writes (counted in bytes) over the
                    // durable contents; the last write kept may be cut short.
                    let total: usize = old.unsynced.iter().map(|(_, b)| b.len()).sum();
                    let mut budget = match mode {
                        CrashMode::KeepPrefix | CrashMode::Garbage => {
                            (st.next_rand() % (total as u64 + 1)) as usize
                        }
                        _ => 0,
                    };
                    let mut node = Inode { data: old.durable.clone(), ..Inode::default() };
                    let mut last: Option<(usize, usize)> = None;
                    for (pos, bytes) in &old.unsynced {
                        if budget == 0 {
                            break;
                        }
                        let n = bytes.len().min(budget);
                        node.write_at(*pos, &bytes[..n]);
                        budget -= n;
                        last = Some((*pos, n));
                    }
                    if mode == CrashMode::Garbage
                        && let Some((pos, n)) = last
                        && n > 0
                    {
                        // The sector being written when power failed holds garbage.
                        let g = (st.next_rand() % 16 + 1).min(n as u64) as usize;
                        for b in &mut node.data[pos + n - g..pos + n] {
                            *b = st.next_rand() as u8;
                        }
                    }
                    node.data
                };
                keep_inodes.insert(ino, Inode { durable: data.clone(), data, unsynced: Vec::new() });
            }
            new.dirs.insert(dir.clone(), entries.clone());
            new.durable_dirs.insert(dir, entries);
        }
        new.next_inode = st.next_inode;
        new.inodes = keep_inodes;
        SimFs { state: Arc::new(Mutex::new(new)) }
    }

    /// Overwrites bytes of a file in place (durably), to simulate corruption.
    pub fn corrupt(&self, path: &Path, offset: usize, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock();
        let ino = st.lookup(path).ok_or_else(|| not_found(path))?;
        let node = st.inodes.get_mut(&ino).ok_or_else(|| not_found(path))?;
        let end = offset + bytes.len();
        if end > node.data.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "past the end"));
        }
        node.data[offset..end].copy_from_slice(bytes);
        node.sync();
        Ok(())
    }

    /// Replaces a file's whole contents (durably), creating it if needed.
    pub fn put(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock();
        let ino = match st.lookup(path) {
            Some(i) => i,
            None => {
                st.next_inode += 1;
                let ino = st.next_inode;
                st.link(path, ino)?;
                let (dir, _) = split(path);
                let cur = st.dirs.get(&dir).cloned().unwrap_or_default();
                st.durable_dirs.insert(dir.clone(), cur);
                st.journal.remove(&dir);
                ino
            }
        };
        st.inodes.insert(ino, Inode { data: data.to_vec(), durable: data.to_vec(), unsynced: Vec::new() });
        Ok(())
    }
}

struct SimFile {
    fs: SimFs,
    ino: u64,
    generation: u64,
    /// Where the next write goes.
    pos: usize,
}

impl SimFile {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> io::Result<R>) -> io::Result<R> {
        let mut st = self.fs.state.lock();
        if st.generation != self.generation {
            return Err(io::Error::other("simulated: file handle from before a crash"));
        }
        f(&mut st)
    }
}

impl WriteFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let delay = self.fs.state.lock().write_delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let (ino, pos) = (self.ino, self.pos);
        let (written, result) = self.with(|st| {
            let fault = st.op();
            let growth = st.inodes.get(&ino).map_or(buf.len() as u64, |n| n.growth(pos, buf.len()));
            let full = match st.capacity {
                Some(cap) => st.used_bytes() + growth > cap,
                None => false,
            };
            let node = st.inodes.entry(ino).or_default();
            Ok(match fault {
                Ok(()) if full => (0, Err(fault_error(FaultKind::NoSpace))),
                Ok(()) => {
                    node.write_at(pos, buf);
                    (buf.len(), Ok(()))
                }
                Err(FaultKind::ShortWrite) => {
                    node.write_at(pos, &buf[..buf.len() / 2]);
                    (buf.len() / 2, Err(fault_error(FaultKind::ShortWrite)))
                }
                Err(k) => (0, Err(fault_error(k))),
            })
        })?;
        self.pos += written;
        result
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let ino = self.ino;
        self.with(|st| {
            st.op().map_err(fault_error)?;
            st.inodes.entry(ino).or_default().sync();
            Ok(())
        })
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let ino = self.ino;
        self.with(|st| {
            st.op().map_err(fault_error)?;
            let node = st.inodes.entry(ino).or_default();
            node.data.resize(len as usize, 0);
            node.sync();
            Ok(())
        })?;
        self.pos = len as usize;
        Ok(())
    }
}

struct SimLock {
    fs: SimFs,
    path: PathBuf,
    generation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.fs.state.lock();
        if st.generation == self.generation {
            st.locks.remove(&self.path);
        }
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        let mut d = Some(dir);
        while let Some(p) = d {
            st.dirs.entry(p.to_path_buf()).or_default();
            st.durable_dirs.entry(p.to_path_buf()).or_default();
            d = p.parent().filter(|p| !p.as_os_str().is_empty());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        let entries = st.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        Ok(entries.keys().cloned().collect())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let mut st = self.state.lock();
        st.op().map_err(fault_error)?;
        st.next_inode += 1;
        let ino = st.next_inode;
        st.inodes.insert(ino, Inode::default());
        st.link(path, ino)?;
        Ok(Box::new(SimFile { fs: self.clone(), ino, generation: st.generation, pos: 0 }))
    }

    fn reopen(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let mut st = self.state.lock();
        st.op().map_err(fault_error)?;
        let ino = st.lookup(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(SimFile { fs: self.clone(), ino, generation: st.generation, pos: 0 }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.state.lock();
        let ino = st.lookup(path).ok_or_else(|| not_found(path))?;
        Ok(st.inodes.get(&ino).map(|i| i.data.clone()).unwrap_or_default())
    }

    fn map(&self, path: &Path) -> io::Result<Bytes> {
        Ok(Bytes::from(self.read(path)?))
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let st = self.state.lock();
        let ino = st.lookup(path).ok_or_else(|| not_found(path))?;
        Ok(st.inodes.get(&ino).map(|i| i.data.len() as u64).unwrap_or(0))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        st.op().map_err(fault_error)?;
        let ino = st.lookup(path).ok_or_else(|| not_found(path))?;
        let node = st.inodes.entry(ino).or_default();
        node.data.resize(len as usize, 0);
        node.sync();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.op().map_err(fault_error)?;
        let ino = st.lookup(from).ok_or_else(|| not_found(from))?;
        if split(from).0 != split(to).0 {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "rename across directories"));
        }
        st.unlink(from)?;
        st.link(to, ino)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.op().map_err(fault_error)?;
        st.unlink(path).map(|_| ())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.op().map_err(fault_error)?;
        let cur = st.dirs.get(dir).cloned().ok_or_else(|| not_found(dir))?;
        st.durable_dirs.insert(dir.to_path_buf(), cur);
        st.journal.remove(dir);
        // Drop inodes no directory refers to any more (durably or not).
        let live: HashSet<u64> =
            st.dirs.values().chain(st.durable_dirs.values()).flat_map(|e| e.values().copied()).collect();
        st.inodes.retain(|ino, _| live.contains(ino));
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let mut st = self.state.lock();
        if !st.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "locked by another handle"));
        }
        Ok(Box::new(SimLock { fs: self.clone(), path: path.to_path_buf(), generation: st.generation }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn unsynced_data_and_entries_are_lost_on_crash() {
        let fs = SimFs::new(1);
        fs.create_dir_all(&p("/d")).unwrap();
        let mut f = fs.create(&p("/d/a")).unwrap();
        f.write_all(b"hello").unwrap();
        f.sync_data().unwrap();
        f.write_all(b" world").unwrap();
        // The create was never made durable by a directory sync.
        let after = fs.crash(CrashMode::DropUnsynced);
        assert!(after.read(&p("/d/a")).is_err());
        fs.sync_dir(&p("/d")).unwrap();
        let after = fs.crash(CrashMode::DropUnsynced);
        assert_eq!(after.read(&p("/d/a")).unwrap(), b"hello");
        let after = fs.crash(CrashMode::KeepAll);
        assert_eq!(after.read(&p("/d/a")).unwrap(), b"hello world");
    }

    #[test]
    fn overwrites_of_a_reused_file_can_be_lost_or_torn() {
        let fs = SimFs::new(3);
        fs.create_dir_all(&p("/d")).unwrap();
        fs.put(&p("/d/a"), b"old-old-old").unwrap();
        let mut f = fs.reopen(&p("/d/a")).unwrap();
        f.write_all(b"NE").unwrap();
        f.write_all(b"W").unwrap();
        assert_eq!(fs.read(&p("/d/a")).unwrap(), b"NEW-old-old");
        assert_eq!(fs.crash(CrashMode::DropUnsynced).read(&p("/d/a")).unwrap(), b"old-old-old");
        assert_eq!(fs.crash(CrashMode::KeepAll).read(&p("/d/a")).unwrap(), b"NEW-old-old");
        let mut seen = HashSet::new();
        for _ in 0..64 {
            seen.insert(fs.crash(CrashMode::KeepPrefix).read(&p("/d/a")).unwrap());
        }
        let want: HashSet<Vec<u8>> = ["old-old-old", "Nld-old-old", "NEd-old-old", "NEW-old-old"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        assert_eq!(seen, want, "a prefix of the writes, in order");
        f.sync_data().unwrap();
        assert_eq!(fs.crash(CrashMode::DropUnsynced).read(&p("/d/a")).unwrap(), b"NEW-old-old");
        // `set_len` is durable at once, and later writes go to the new end.
        f.set_len(3).unwrap();
        f.write_all(b"!").unwrap();
        assert_eq!(fs.crash(CrashMode::DropUnsynced).read(&p("/d/a")).unwrap(), b"NEW");
        assert_eq!(fs.read(&p("/d/a")).unwrap(), b"NEW!");
    }

    #[test]
    fn renames_are_atomic_across_crashes() {
        for seed in 0..50 {
            let fs = SimFs::new(seed);
            fs.create_dir_all(&p("/d")).unwrap();
            fs.put(&p("/d/m"), b"old").unwrap();
            let mut f = fs.create(&p("/d/m.tmp")).unwrap();
            f.write_all(b"new").unwrap();
            f.sync_data().unwrap();
            fs.rename(&p("/d/m.tmp"), &p("/d/m")).unwrap();
            let after = fs.crash(CrashMode::KeepPrefix);
            let m = after.read(&p("/d/m")).unwrap();
            assert!(m == b"old" || m == b"new", "{m:?}");
        }
    }

    #[test]
    fn faults_fire_at_the_planned_operation() {
        let fs = SimFs::new(1);
        fs.create_dir_all(&p("/d")).unwrap();
        let mut f = fs.create(&p("/d/a")).unwrap(); // op 1
        fs.set_fault(Some(Fault { at: 3, kind: FaultKind::NoSpace, sticky: false }));
        f.write_all(b"x").unwrap(); // op 2
        let e = f.write_all(b"y").unwrap_err(); // op 3
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        f.write_all(b"z").unwrap(); // op 4
        assert_eq!(fs.read(&p("/d/a")).unwrap(), b"xz");
        assert_eq!(fs.ops(), 4);
    }

    #[test]
    fn locks_are_exclusive_until_dropped() {
        let fs = SimFs::new(1);
        fs.create_dir_all(&p("/d")).unwrap();
        let g = fs.lock(&p("/d/LOCK")).unwrap();
        assert_eq!(fs.lock(&p("/d/LOCK")).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        drop(g);
        assert!(fs.lock(&p("/d/LOCK")).is_ok());
    }
}
