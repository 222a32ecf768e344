//! # gemba — an embeddable time-series storage engine for industrial machine data
//!
//! *Gemba* is the shop floor, where the work happens. gemba stores the sensor channels of
//! machines (speed, torque, current, temperature, vibration, status codes) sampled down to the
//! microsecond, inside your own program:
//!
//! - writes go to a **write-ahead log** (checksummed records, group commit, a sync policy) and
//!   an in-memory columnar **memtable**; nothing acknowledged is lost, whatever crashes;
//! - the memtable is flushed to compressed, columnar, immutable **segment files** indexed by
//!   machine and time;
//! - **scans**, **downsampling** and **latest values** read a consistent snapshot of both.
//!
//! ```
//! use gemba::{Db, Options, Value, WriteBatch};
//! # let dir = tempfile::tempdir().unwrap();
//! let db = Db::open(dir.path(), Options::default())?;
//! let mut batch = WriteBatch::new();
//! batch.row("press-07", 1_000_000, [("speed_rpm", Value::F64(1480.5)), ("status", Value::I64(3))])?;
//! batch.row("press-07", 2_000_000, [("speed_rpm", 1481.0)])?;
//! db.write(&batch)?; // durable when it returns (default sync policy)
//!
//! let rows = db.scan("press-07", 0..10_000_000).fields(["speed_rpm"]).collect()?;
//! assert_eq!(rows[0].ts, vec![1_000_000, 2_000_000]);
//! db.close()?;
//! # Ok::<(), gemba::Error>(())
//! ```
//!
//! See `ARCHITECTURE.md` for how the pieces fit and `FORMAT.md` for the bytes on disk.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

/// Defines `fn $name(args) -> ret`, which runs `$fast` (an `#[inline(always)]` function of
/// safe code) compiled for the CPU features `$features` when `$check()` finds them at run
/// time, and otherwise `$base` (by default `$fast` too) as compiled for the baseline. The
/// run-time dispatch's one `unsafe` lives here, so every hot loop with an AVX2 copy shares
/// one safety argument.
macro_rules! cpu_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? =
        $fast:path, $features:literal if $check:path, else $base:path) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = $features)]
                fn fast($($arg: $ty),*) $(-> $ret)? {
                    $fast($($arg),*)
                }
                if $check() {
                    // SAFETY: `fast` needs only the features `$check` just found on this
                    // CPU; its body is safe code.
                    return unsafe { fast($($arg),*) };
                }
            }
            $base($($arg),*)
        }
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? =
        $fast:path, $features:literal if $check:path) => {
        cpu_dispatch! {
            $(#[$m])* $vis fn $name($($arg: $ty),*) $(-> $ret)? = $fast, $features if $check, else $fast
        }
    };
}

mod catalog;
pub mod codec;
mod db;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod inspect;
pub mod io;
mod manifest;
mod memtable;
mod model;
mod options;
mod query;
mod rows;
mod segment;
mod stats;
mod tombstone;
mod wal;

pub use catalog::FIELDS_PER_MACHINE_MAX;
pub use db::{Db, DbStats};
pub use error::{Error, Result};
pub use inspect::{FieldStorage, Inspection, Problem, SegmentInfo, VerifyReport, verify_dir};
pub use model::{
    Col, FieldType, NAME_BYTES_MAX, TimeRange, Timestamp, Value, WriteBatch, validate_field_name,
    validate_machine_id,
};
pub use options::{DAY_MICROS, Options, SyncPolicy, WEEK_MICROS};
pub use query::{
    Agg, AggColumn, Batch, BucketSeries, Column, DOWNSAMPLE_BUCKETS_MAX, Downsample, Downsampled, FieldInfo,
    Latest, LatestValue, MachineInfo, Machines, QueryCounters, SCAN_BATCH_ROWS, Scan, ScanIter, Values,
};
pub use wal::{RecoveryReport, SkippedRange, TornTail};

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Most rows in one encoded block of a segment file.
pub const BLOCK_ROWS_MAX: usize = 65_536;

/// The number of cores gemba spreads work over, asked once per process: the standard
/// library's answer reads the cgroup files on Linux (a dozen system calls), which cost 5 % of
/// a flush of many small partitions when asked per partition.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs `f` over `items` on up to `threads` threads, the calling one included; results come
/// back in item order. Items are interleaved over the threads (expensive neighbours spread
/// out) and each thread stops at its first error; the error returned is that of the first
/// thread, in thread order, that had one.
pub(crate) fn try_map_interleaved<I: Sync, T: Send, E: Send>(
    items: &[I],
    threads: usize,
    f: impl Fn(&I) -> std::result::Result<T, E> + Sync,
) -> std::result::Result<Vec<T>, E> {
    let threads = threads.min(items.len()).max(1);
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let share = |t: usize| -> std::result::Result<Vec<(usize, T)>, E> {
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate().skip(t).step_by(threads) {
            out.push((i, f(item)?));
        }
        Ok(out)
    };
    let results: Vec<std::result::Result<Vec<(usize, T)>, E>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|t| s.spawn(move || share(t))).collect();
        let mut results = vec![share(0)];
        results.extend(handles.into_iter().map(|h| h.join().expect("worker thread panicked")));
        results
    });
    let mut all: Vec<(usize, T)> = Vec::with_capacity(items.len());
    for r in results {
        all.extend(r?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}
