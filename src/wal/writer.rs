//! Appending to the log with group commit.
//!
//! A writer appends its framed record to a shared in-memory buffer under a short lock and
//! receives a sequence number. It then waits until its record is written (and, under
//! [`SyncPolicy::Always`](crate::SyncPolicy::Always), synced). The first waiter that finds
//! no I/O in progress becomes the **leader**: it takes the whole buffer, releases the lock,
//! issues one `write` and (if anyone needs it) one `fdatasync`, and wakes everyone. Writers
//! that arrived meanwhile have filled the next buffer, which the next leader writes in one
//! go. So N concurrent writers cost about one `write` + `fdatasync` per round instead of N.
//! A durable round after a round of several writers first waits briefly for them to come
//! back ([`WalWriter::gather`]). Waiters yield the CPU in a loop before parking
//! ([`SPIN`]): a parked writer's wake-up is on the round's critical path.
//!
//! Reuse: of the log files whose records all reached segment files, one is kept as the
//! **spare** (`wal.spare`, the largest seen) instead of being removed, and the next new log
//! file is that spare renamed, its header rewritten, its records written over the old ones
//! from the start. Overwriting blocks a file already has spares each `fdatasync` the block
//! allocation it would otherwise commit (a third to half of the cost of a small sync on ext4).
//! The old bytes past the last record are records with sequence numbers at or below the
//! flushed one, which recovery never mistakes for data (FORMAT.md, "Reused log files"); they
//! are cut off when the file is closed by rotation or by [`WalWriter::close`].
//!
//! Failure rules:
//! - a failed `write` (e.g. a full disk) is rolled back by cutting the file to its previous
//!   length; the records of that round fail with the I/O error and the log keeps working;
//! - a failed `fdatasync`, or a failed roll-back, **poisons** the log: durability of what was
//!   written is unknown, so every later call fails with [`Error::Poisoned`] until reopen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::format::{self, HEADER_LEN};
use super::reader::LogFile;
use crate::error::{Error, Result};
use crate::io::{FileSystem, WriteFile};

/// How long a waiter yields the CPU in a loop, watching for the end of the round it waits
/// for, before it parks (and a gathering leader before it blocks): about one sync of a small
/// round on an SSD. The yields give the CPU to runnable threads (the writers coming back with
/// their next records, flushes); a parked thread instead costs a wake-up on the round's
/// critical path.
const SPIN: Duration = Duration::from_micros(100);

/// The open log file.
struct Active {
    file: Box<dyn WriteFile>,
    number: u64,
    len: u64,
    max_seq: u64,
    /// A reused file whose old bytes past `len` are not cut off yet.
    stale_tail: bool,
}

/// A round whose `write` failed: the waiters of seqs `first..=last` each receive the error.
/// Kept until each of them is done with it (`uncollected` counts those that are not; see
/// [`WalWriter::release`]).
struct Failure {
    first: u64,
    last: u64,
    uncollected: u64,
    kind: std::io::ErrorKind,
    message: String,
}

/// A writer asleep until round `round` ends (or until it is picked to lead that round, when
/// it is the one after the round in flight).
struct Sleeper {
    round: u64,
    thread: Thread,
}

struct State {
    next_seq: u64,
    pending: Vec<u8>,
    spare: Vec<u8>,
    /// Sequence numbers of the first and last record in `pending` (0: empty).
    pending_first: u64,
    pending_last: u64,
    /// Every record with a seq up to this was written to the OS or failed.
    written: u64,
    /// Every record with a seq up to this is durable (or failed).
    synced: u64,
    leader: bool,
    /// Number of the round in flight (while `leader`) or of the last one.
    round: u64,
    /// Last sequence number the round in flight writes (records appended after it are
    /// pending for the next round).
    round_last: u64,
    /// Writers (thread ids) of the records in `pending`, and of the last round.
    pending_writers: Vec<u64>,
    last_writers: Vec<u64>,
    /// A leader is waiting for `gather_target` writers to have records pending.
    gathering: bool,
    gather_target: usize,
    /// How long the last `fdatasync` took.
    last_sync: Duration,
    /// Rounds to start without gathering (after a gathering that waited in vain).
    gather_skip: u32,
    failures: Vec<Failure>,
    poisoned: Option<String>,
    sleepers: Vec<Sleeper>,
    /// `None` only while a leader is doing I/O with it.
    active: Option<Active>,
    /// Log files no longer written to, oldest first.
    closed: Vec<LogFile>,
    rotate: bool,
    next_number: u64,
}

/// The log writer. See the module documentation.
pub(crate) struct WalWriter {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    file_bytes_max: u64,
    st: Mutex<State>,
    /// `State::written` and `State::synced`, readable without the lock: a writer woken at the
    /// end of its round sees that its record is done without queueing for `st` behind the
    /// round's other writers (each of which would wake the next on unlock, a chain of
    /// wake-ups costing more than the sync on two cores).
    written: AtomicU64,
    synced: AtomicU64,
    /// Set while there are failures or the log is poisoned: the marks alone do not tell, and
    /// waiters must look under the lock.
    trouble: AtomicBool,
    /// Wakes a leader gathering a round.
    gather_cv: Condvar,
    /// Number of the last round that ended (`State::round` once its leader is done), for
    /// waiters watching for it without the lock.
    ended: AtomicU64,
    /// Bytes of the spare file, if there is one. Held while renaming a file to or from it.
    spare: Mutex<Option<u64>>,
}

impl WalWriter {
    /// Starts a new log file after the `existing` ones; the next record gets `last_seq + 1`.
    pub(crate) fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        file_bytes_max: u64,
        existing: Vec<LogFile>,
        last_seq: u64,
    ) -> Result<WalWriter> {
        let number = existing.iter().map(|f| f.number).max().unwrap_or(0) + 1;
        let spare = Mutex::new(fs.file_len(&dir.join(super::SPARE_NAME)).ok());
        let active = create_file(fs.as_ref(), dir, number, &spare)?;
        let st = State {
            next_seq: last_seq + 1,
            pending: Vec::new(),
            spare: Vec::new(),
            pending_first: 0,
            pending_last: 0,
            written: last_seq,
            synced: last_seq,
            leader: false,
            round: 0,
            round_last: last_seq,
            pending_writers: Vec::new(),
            last_writers: Vec::new(),
            gathering: false,
            gather_target: 0,
            last_sync: Duration::ZERO,
            gather_skip: 0,
            failures: Vec::new(),
            poisoned: None,
            sleepers: Vec::new(),
            active: Some(active),
            closed: existing,
            rotate: false,
            next_number: number + 1,
        };
        Ok(WalWriter {
            fs,
            dir: dir.to_path_buf(),
            file_bytes_max,
            st: Mutex::new(st),
            written: AtomicU64::new(last_seq),
            synced: AtomicU64::new(last_seq),
            trouble: AtomicBool::new(false),
            gather_cv: Condvar::new(),
            ended: AtomicU64::new(0),
            spare,
        })
    }

    /// Appends a record whose body (kind byte first) is `body`, already hashed into `body_crc`.
    /// Returns its sequence number; the record is not written until someone waits for it.
    pub(crate) fn append(&self, body: &[u8], body_crc: &crc32fast::Hasher) -> Result<u64> {
        let mut st = self.st.lock();
        if let Some(cause) = &st.poisoned {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        format::frame(&mut st.pending, seq, body, body_crc);
        if st.pending_first == 0 {
            st.pending_first = seq;
        }
        st.pending_last = seq;
        st.pending_writers.push(writer_id());
        if st.gathering {
            st.round_last = seq;
            if st.pending_writers.len() >= st.gather_target {
                self.gather_cv.notify_one();
            }
        }
        Ok(seq)
    }

    /// Waits until record `seq` is written to the OS, and with `durable` also synced.
    /// Fails when its round failed or the log is poisoned. A writer whose record failed, or
    /// who gives up on it without waiting, calls [`WalWriter::release`] once done with it.
    pub(crate) fn wait(&self, seq: u64, durable: bool) -> Result<()> {
        loop {
            if self.done(seq, durable) {
                return Ok(());
            }
            let mut st = self.st.lock();
            if let Some(f) = st.failures.iter().find(|f| f.first <= seq && seq <= f.last) {
                let e = std::io::Error::new(f.kind, f.message.clone());
                return Err(Error::io("write log", self.dir.clone(), e));
            }
            let done = if durable { st.synced >= seq } else { st.written >= seq };
            if done {
                return Ok(());
            }
            if let Some(cause) = &st.poisoned {
                return Err(Error::Poisoned { cause: cause.clone() });
            }
            if st.leader {
                self.sleep(st, seq);
                continue;
            }
            let wake = self.lead(&mut st, durable, false, durable);
            drop(st);
            wake_all(wake);
        }
    }

    /// True when record `seq` is known, without the lock, to be written (synced, with
    /// `durable`) and not failed.
    fn done(&self, seq: u64, durable: bool) -> bool {
        let mark = if durable { &self.synced } else { &self.written };
        // The mark first: `trouble` is set before a mark moves over a failed record.
        mark.load(Ordering::Acquire) >= seq && !self.trouble.load(Ordering::Acquire)
    }

    /// Says that the writer of record `seq` is done with it after [`WalWriter::wait`] failed,
    /// or without waiting (it is unwinding), once it has made sure the record's effect will
    /// never be applied. A failed round is forgotten when all its writers have said so:
    /// forgotten earlier, a writer that wakes late would find its record "written" and report
    /// success for a batch that is neither in the log nor applied, or its effect could be
    /// applied by someone passing over the records in order.
    ///
    /// (A writer unwinding before its record's round has run releases nothing; should that
    /// round then fail, its failure is kept for good and waiters take the locked path from
    /// then on: slower, never wrong. Only a panic between `append` and `wait` does that.)
    pub(crate) fn release(&self, seq: u64) {
        let mut st = self.st.lock();
        if let Some(i) = st.failures.iter().position(|f| f.first <= seq && seq <= f.last) {
            let f = &mut st.failures[i];
            f.uncollected -= 1;
            if f.uncollected == 0 {
                st.failures.swap_remove(i);
                self.publish(&st);
            }
        }
    }

    /// Publishes the marks and the trouble flag of `st` for [`WalWriter::done`].
    fn publish(&self, st: &State) {
        let trouble = st.poisoned.is_some() || !st.failures.is_empty();
        if trouble {
            self.trouble.store(true, Ordering::Release);
        }
        self.written.store(st.written, Ordering::Release);
        self.synced.store(st.synced, Ordering::Release);
        if !trouble {
            self.trouble.store(false, Ordering::Release);
        }
    }

    /// Sleeps until the round in flight ends (when it covers `seq`) or until this waiter may
    /// lead the next one (when `seq` is pending). Called with a leader active; the caller
    /// locks again and looks again (a wake-up may be spurious).
    ///
    /// It first yields the CPU in a loop for up to [`SPIN`], watching for the round's end,
    /// and parks only past that: a parked writer's wake-up, on the round's critical path
    /// and one per writer, cost about as much as the sync on two cores.
    fn sleep(&self, st: MutexGuard<'_, State>, seq: u64) {
        let in_flight = st.round;
        drop(st);
        let start = Instant::now();
        while start.elapsed() < SPIN {
            if self.ended.load(Ordering::Acquire) >= in_flight {
                return;
            }
            std::thread::yield_now();
        }
        let mut st = self.st.lock();
        if !st.leader || st.round != in_flight {
            return;
        }
        let round = if seq <= st.round_last { st.round } else { st.round + 1 };
        st.sleepers.push(Sleeper { round, thread: std::thread::current() });
        drop(st);
        std::thread::park();
    }

    /// What is settled: every record up to the returned mark is written (synced, with
    /// `durable`) or failed, and the failed ones lie in the returned ranges (those whose
    /// writers have not all collected the failure yet; records of a collected failure are
    /// passed over by their writers).
    pub(crate) fn settled(&self, durable: bool) -> (u64, Vec<(u64, u64)>) {
        if !self.trouble.load(Ordering::Acquire) {
            let mark = if durable { &self.synced } else { &self.written };
            let mark = mark.load(Ordering::Acquire);
            if !self.trouble.load(Ordering::Acquire) {
                return (mark, Vec::new());
            }
        }
        let st = self.st.lock();
        let mark = if durable { st.synced } else { st.written };
        (mark, st.failures.iter().map(|f| (f.first, f.last)).collect())
    }

    /// Makes every record appended so far durable.
    pub(crate) fn sync(&self) -> Result<()> {
        let target = self.st.lock().next_seq - 1;
        loop {
            let mut st = self.st.lock();
            if st.synced >= target {
                return Ok(());
            }
            if let Some(cause) = &st.poisoned {
                return Err(Error::Poisoned { cause: cause.clone() });
            }
            if st.leader {
                self.sleep(st, target);
                continue;
            }
            let wake = self.lead(&mut st, true, false, false);
            drop(st);
            wake_all(wake);
        }
    }

    /// Writes and syncs everything appended so far, then starts a new log file, so that the
    /// old ones can be removed once their records are in segment files.
    pub(crate) fn rotate(&self) -> Result<()> {
        loop {
            let mut st = self.st.lock();
            if let Some(cause) = &st.poisoned {
                return Err(Error::Poisoned { cause: cause.clone() });
            }
            if st.leader {
                let target = st.next_seq - 1;
                self.sleep(st, target);
                continue;
            }
            let wake = self.lead(&mut st, true, true, false);
            let poisoned = st.poisoned.clone();
            drop(st);
            wake_all(wake);
            if let Some(cause) = poisoned {
                return Err(Error::Poisoned { cause });
            }
            // A rotation that could not create its new file is retried by a later round.
            return Ok(());
        }
    }

    /// Asks the next round of I/O to start a new log file after writing.
    pub(crate) fn request_rotate(&self) {
        self.st.lock().rotate = true;
    }

    /// Removes closed log files whose records all have sequence numbers up to `flushed_seq`
    /// (they are all in segment files). Removal need not be durable: a file that comes back
    /// after a crash only holds records that recovery skips as already flushed.
    pub(crate) fn remove_flushed(&self, flushed_seq: u64) -> Result<()> {
        self.remove_files(self.take_flushed(flushed_seq))
    }

    /// Takes the closed log files whose records are all flushed out of the log's list, for
    /// [`WalWriter::remove_files`].
    pub(crate) fn take_flushed(&self, flushed_seq: u64) -> Vec<LogFile> {
        let mut st = self.st.lock();
        let (gone, keep) = st.closed.iter().partition(|f| f.max_seq <= flushed_seq);
        st.closed = keep;
        gone
    }

    /// Removes log files taken by [`WalWriter::take_flushed`], keeping the largest as the
    /// spare when it is larger than the spare there is (renamed over it). On failure the
    /// files not removed go back to the list, so that a later call retries them.
    pub(crate) fn remove_files(&self, mut victims: Vec<LogFile>) -> Result<()> {
        if let Some(i) = (0..victims.len()).max_by_key(|&i| victims[i].bytes) {
            let mut spare = self.spare.lock();
            if spare.is_none_or(|b| b < victims[i].bytes) {
                let v = victims[i];
                // Not made durable, like a removal: after a crash the file may be back under
                // its own name, holding records that recovery skips as already flushed.
                if self.fs.rename(&self.dir.join(super::file_name(v.number)), &self.spare_path()).is_ok() {
                    *spare = Some(v.bytes);
                    victims.swap_remove(i);
                }
            }
        }
        for (k, v) in victims.iter().enumerate() {
            let path = self.dir.join(super::file_name(v.number));
            if let Err(e) = self.fs.remove(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                let mut st = self.st.lock();
                st.closed.splice(0..0, victims[k..].iter().copied());
                st.closed.sort_by_key(|f| f.number);
                return Err(Error::io("remove log", path, e));
            }
        }
        Ok(())
    }

    fn spare_path(&self) -> PathBuf {
        self.dir.join(super::SPARE_NAME)
    }

    /// Cuts the old bytes off the end of the log file when it is a reused one, so that a
    /// clean shutdown leaves no stale tail for recovery to report, and removes the spare: a
    /// closed database does not keep a log file's worth of disk for its next session (which
    /// makes a new spare at its first flush). Call after the last write; a failure only
    /// leaves the tail, which recovery cuts as a torn tail, or the spare, which the next
    /// session reuses.
    pub(crate) fn close(&self) {
        if self.spare.lock().take().is_some() {
            let _ = self.fs.remove(&self.spare_path());
        }
        let mut st = self.st.lock();
        while st.leader {
            let round_last = st.round_last;
            self.sleep(st, round_last);
            st = self.st.lock();
        }
        if st.poisoned.is_some() {
            return;
        }
        if let Some(active) = st.active.as_mut()
            && active.stale_tail
            && active.file.set_len(active.len).is_ok()
        {
            active.stale_tail = false;
        }
    }

    /// Why the log is poisoned, if it is.
    pub(crate) fn poisoned(&self) -> Option<String> {
        if !self.trouble.load(Ordering::Acquire) {
            return None;
        }
        self.st.lock().poisoned.clone()
    }

    /// Before a durable round that follows a round of several writers: when the writers of
    /// the last round and those pending are more than those pending, waits for the missing
    /// ones to append (they come back with their next batch while this round would already
    /// be syncing), for at most the last sync's duration (and 1 ms): yielding the CPU in a
    /// loop for the first [`SPIN`] of it, blocked after that. Without it, writers
    /// that keep writing settle into two halves syncing in turn, each sync serving half of
    /// them. A wait that ends without them turns gathering off for the next 8 rounds, so that
    /// writers who do not come back soon cost little; a lone writer never waits.
    fn gather(&self, st: &mut MutexGuard<'_, State>) {
        if st.last_writers.len() < 2 {
            return;
        }
        if st.gather_skip > 0 {
            st.gather_skip -= 1;
            return;
        }
        let mut expected: Vec<u64> = st.pending_writers.iter().chain(&st.last_writers).copied().collect();
        expected.sort_unstable();
        expected.dedup();
        let target = expected.len();
        if target <= st.pending_writers.len() {
            return;
        }
        let deadline = Instant::now() + st.last_sync.min(Duration::from_millis(1));
        st.gathering = true;
        st.gather_target = target;
        let spin_until = deadline.min(Instant::now() + SPIN);
        while st.pending_writers.len() < target && st.poisoned.is_none() {
            if Instant::now() < spin_until {
                MutexGuard::unlocked(st, std::thread::yield_now);
            } else if self.gather_cv.wait_until(st, deadline).timed_out() {
                if st.pending_writers.len() < target {
                    st.gather_skip = 8;
                }
                break;
            }
        }
        st.gathering = false;
    }

    /// One round of I/O as leader. Called with the lock held; releases it during I/O.
    /// With `gather` (a durable write's round), the leader may first wait for more writers
    /// ([`WalWriter::gather`]). Returns the writers to wake once the caller has let go of the
    /// lock ([`wake_all`]): all of the round's, and of the next round's (records that arrived
    /// meanwhile) one, to lead it, so that the next round starts without waiting for the
    /// finished round's writers to be scheduled.
    #[must_use]
    fn lead(
        &self,
        st: &mut MutexGuard<'_, State>,
        need_sync: bool,
        force_rotate: bool,
        gather: bool,
    ) -> Vec<Thread> {
        st.leader = true;
        st.round += 1;
        st.round_last = st.pending_last.max(st.round_last);
        if gather {
            self.gather(st);
        }
        let writers = std::mem::take(&mut st.pending_writers);
        st.last_writers = writers;
        let spare = std::mem::take(&mut st.spare);
        let mut buf = std::mem::replace(&mut st.pending, spare);
        let (first, last) = (st.pending_first, st.pending_last);
        st.pending_first = 0;
        st.pending_last = 0;
        let mut active = st.active.take().expect("the log file is held by the leader only");
        let rotate_wanted = force_rotate || st.rotate;
        let next_number = st.next_number;

        let mut write_err: Option<std::io::Error> = None;
        let mut poison: Option<String> = None;
        let mut synced = false;
        let mut rotated: Option<LogFile> = None;
        let mut sync_time = Duration::ZERO;
        MutexGuard::unlocked(st, || {
            if !buf.is_empty() {
                match active.file.write_all(&buf) {
                    Ok(()) => {
                        active.len += buf.len() as u64;
                        active.max_seq = last;
                    }
                    Err(e) => match active.file.set_len(active.len) {
                        Ok(()) => {
                            write_err = Some(e);
                            active.stale_tail = false;
                        }
                        Err(e2) => {
                            poison = Some(format!("log write failed ({e}) and could not be undone ({e2})"))
                        }
                    },
                }
            }
            let rotate = rotate_wanted || active.len >= self.file_bytes_max;
            if poison.is_none() && write_err.is_none() && rotate && active.stale_tail {
                // A closed log file ends at its last record: recovery must not meet a reused
                // file's old bytes before the records of the files after it.
                match active.file.set_len(active.len) {
                    Ok(()) => active.stale_tail = false,
                    Err(e) => poison = Some(format!("log cut before rotation failed: {e}")),
                }
            }
            if poison.is_none() && write_err.is_none() && (need_sync || rotate) {
                let t = Instant::now();
                match active.file.sync_data() {
                    Ok(()) => {
                        synced = true;
                        sync_time = t.elapsed();
                    }
                    Err(e) => poison = Some(format!("log sync failed: {e}")),
                }
            }
            if synced && rotate {
                match create_file(self.fs.as_ref(), &self.dir, next_number, &self.spare) {
                    Ok(new) => {
                        let old = std::mem::replace(&mut active, new);
                        rotated = Some(LogFile { number: old.number, max_seq: old.max_seq, bytes: old.len });
                    }
                    Err(_) => {
                        // Keep writing to the old file; a later round retries.
                    }
                }
            }
        });
        if let Some(old) = rotated {
            st.closed.push(old);
            st.next_number = next_number + 1;
            st.rotate = false;
        } else if rotate_wanted {
            st.rotate = true;
        }
        st.active = Some(active);
        st.leader = false;
        if synced {
            st.last_sync = sync_time;
        }
        if let Some(p) = poison {
            st.poisoned = Some(p);
        } else if let Some(e) = write_err {
            if first != 0 {
                let uncollected = last - first + 1;
                st.failures.push(Failure {
                    first,
                    last,
                    uncollected,
                    kind: e.kind(),
                    message: e.to_string(),
                });
                st.written = st.written.max(last);
            }
        } else {
            if last != 0 {
                st.written = last;
            }
            if synced {
                st.synced = st.written;
            }
        }
        buf.clear();
        st.spare = buf;
        self.publish(st);
        self.ended.store(st.round, Ordering::Release);
        let (round, poisoned) = (st.round, st.poisoned.is_some());
        let mut wake = Vec::with_capacity(st.sleepers.len());
        if !poisoned
            && st.pending_first != 0
            && let Some(i) = st.sleepers.iter().position(|s| s.round > round)
        {
            wake.push(st.sleepers.swap_remove(i).thread);
        }
        let mut i = 0;
        while i < st.sleepers.len() {
            if poisoned || st.sleepers[i].round <= round {
                wake.push(st.sleepers.swap_remove(i).thread);
            } else {
                i += 1;
            }
        }
        wake
    }
}

/// Wakes the writers [`WalWriter::lead`] returned.
fn wake_all(threads: Vec<Thread>) {
    for t in threads {
        t.unpark();
    }
}

/// A small number naming the calling thread (writers are told apart by it).
fn writer_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static ID: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    ID.with(|id| *id)
}

/// Creates log file `number` with its header, durably (file synced, directory synced): the
/// spare renamed and reused when there is one, else a new file.
fn create_file(fs: &dyn FileSystem, dir: &Path, number: u64, spare: &Mutex<Option<u64>>) -> Result<Active> {
    let path = dir.join(super::file_name(number));
    let mut spare = spare.lock();
    if spare.take().is_some() {
        // The rename is durable before the new header is written: were it the other way
        // round, a crash could leave the file under its old log name with a header naming
        // the new number. A crash after the rename leaves a newest log file with the old
        // header (another number), which recovery removes as a torn creation (it holds no
        // record above the flushed sequence number).
        let reused: Result<Active> = (|| {
            fs.rename(&dir.join(super::SPARE_NAME), &path).map_err(|e| Error::io("rename log", &path, e))?;
            fs.sync_dir(dir).map_err(|e| Error::io("sync directory", dir, e))?;
            let mut file = fs.reopen(&path).map_err(|e| Error::io("open log", &path, e))?;
            write_header(file.as_mut(), &path, number)?;
            Ok(Active { file, number, len: HEADER_LEN as u64, max_seq: 0, stale_tail: true })
        })();
        match reused {
            Ok(active) => return Ok(active),
            Err(_) => {
                let _ = fs.remove(&path);
                let _ = fs.remove(&dir.join(super::SPARE_NAME));
            }
        }
    }
    drop(spare);
    let result: Result<Active> = (|| {
        let mut file = fs.create(&path).map_err(|e| Error::io("create log", &path, e))?;
        write_header(file.as_mut(), &path, number)?;
        fs.sync_dir(dir).map_err(|e| Error::io("sync directory", dir, e))?;
        Ok(Active { file, number, len: HEADER_LEN as u64, max_seq: 0, stale_tail: false })
    })();
    if result.is_err() {
        let _ = fs.remove(&path);
    }
    result
}

/// Writes and syncs the header of log file `number`.
fn write_header(file: &mut dyn WriteFile, path: &Path, number: u64) -> Result<()> {
    file.write_all(&format::header(number)).map_err(|e| Error::io("write log", path, e))?;
    file.sync_data().map_err(|e| Error::io("sync log", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Fault, FaultKind, SimFs};

    fn append(w: &WalWriter, body: &[u8]) -> u64 {
        let mut crc = crc32fast::Hasher::new();
        crc.update(body);
        w.append(body, &crc).unwrap()
    }

    /// A failed round's error reaches each of its writers however late they wake: other
    /// writers' later rounds, and the records applied meanwhile, do not make it forgotten.
    #[test]
    fn a_failed_round_is_reported_to_every_writer_of_it() {
        let fs = SimFs::new(1);
        fs.create_dir_all(Path::new("/db")).unwrap();
        let w = WalWriter::open(Arc::new(fs.clone()), Path::new("/db"), 1 << 20, Vec::new(), 0).unwrap();
        let (a, b) = (append(&w, b"\x01first"), append(&w, b"\x01second"));
        fs.set_fault(Some(Fault { at: fs.ops() + 1, kind: FaultKind::NoSpace, sticky: false }));
        // Writer a leads the round holding a and b; its write fails.
        assert!(matches!(w.wait(a, true), Err(Error::Io { .. })));
        w.release(a);
        // Another writer's record goes through in the next round.
        let c = append(&w, b"\x01third");
        w.wait(c, true).unwrap();
        // Whoever applies records in order now passes over b as failed...
        assert_eq!(w.settled(true), (c, vec![(a, b)]));
        assert!(w.poisoned().is_none());
        // ...and b's writer, waking only now, is told its record failed.
        assert!(matches!(w.wait(b, true), Err(Error::Io { .. })));
        assert_eq!(w.settled(true), (c, vec![(a, b)]));
        w.release(b);
        // Both writers are done with it: the failure is forgotten.
        assert_eq!(w.settled(true), (c, vec![]));
        let d = append(&w, b"\x01fourth");
        w.wait(d, false).unwrap();
        assert_eq!(w.settled(false), (d, vec![]));
    }
}
