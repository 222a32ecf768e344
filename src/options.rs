//! Options for opening a database.

use std::sync::Arc;
use std::time::Duration;

use crate::io::{FileSystem, StdFs};

/// When a write becomes durable.
///
/// Every policy hands each batch to the operating system (one `write(2)` per group of
/// concurrent batches) before [`crate::Db::write`] returns, so **a process crash**
/// (panic, `SIGKILL`, OOM kill) **never loses an acknowledged batch** under any policy.
/// The policies differ in what survives **a power loss or kernel crash**:
///
/// | policy | `write` returns after | lost on power loss |
/// |---|---|---|
/// | [`SyncPolicy::Always`] (default) | the batch is on stable storage (`fdatasync`) | nothing acknowledged |
/// | [`SyncPolicy::Periodic`] | the batch is in the OS page cache | batches acknowledged in the last interval (a background thread syncs every interval) |
/// | [`SyncPolicy::Os`] | the batch is in the OS page cache | whatever the OS had not written back (typically up to ~30 s on Linux) |
///
/// Under `Always`, concurrent writers share one `write` and one `fdatasync` (group commit),
/// so many threads writing small batches get far more throughput than one.
/// Log rotation, flushes and [`crate::Db::close`] sync under every policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Durable on stable storage before `write` returns (default).
    Always,
    /// Synced by a background thread at this interval.
    Periodic(Duration),
    /// Never synced by gemba except at log rotation, flush and close.
    Os,
}

/// Options for [`crate::Db::open`]. Start from `Options::default()` and change what you need.
///
/// ```
/// use std::time::Duration;
/// let opts = gemba::Options {
///     sync: gemba::SyncPolicy::Periodic(Duration::from_millis(100)),
///     ..gemba::Options::default()
/// };
/// # let _ = opts;
/// ```
#[derive(Clone)]
pub struct Options {
    /// When writes become durable; see [`SyncPolicy`].
    pub sync: SyncPolicy,
    /// A log file is closed and a new one started once it holds this many bytes.
    pub wal_file_bytes_max: u64,
    /// Memory budget of the in-memory tables: once the active memtable reaches it, it is frozen
    /// and flushed to segment files in the background; writers wait when frozen tables
    /// pile up beyond twice the budget (backpressure).
    pub memtable_bytes_max: usize,
    /// Width of a time partition in timestamp units (default: one week in microseconds).
    /// Each segment file holds one partition; retention drops whole partitions. Wider
    /// partitions mean fewer, larger files and blocks (better compression for slowly sampled
    /// channels); narrower ones let retention free space in finer steps. Fixed by the first
    /// segment files a database writes: opening a database that has segments keeps their
    /// width, whatever this says.
    pub partition_width: i64,
    /// Most rows in one encoded block of a segment file written by a flush.
    pub block_rows: usize,
    /// Most rows in one encoded block of a segment file written by compaction (larger blocks
    /// compress better; flushed data keeps smaller ones).
    pub compaction_block_rows: usize,
    /// The newest partition merges this many consecutive segments of similar size (within 2x)
    /// into one (tiers: each point is rewritten about log(flushes) times under sustained
    /// ingest). Partitions older than the newest one are merged whole as soon as they hold
    /// two segments, and any partition whose data deletes have hidden is rewritten without it. A compaction
    /// decodes one machine's rows of the partition at a time; a partition where one machine
    /// would need more than four times `memtable_bytes_max` for that is left as it is (its
    /// segments keep answering queries), which bounds compaction's memory.
    pub compaction_trigger: usize,
    /// Keep data for this long (timestamp units), counted back from the newest timestamp
    /// written to the database (not the wall clock: a backlog written today of a machine's
    /// last year is kept as long as nothing newer was written). Older data disappears from
    /// queries at once; whole partitions past it are deleted in the background. Beware: one
    /// write with a timestamp far in the future moves the cut-off with it. `None`: keep
    /// everything (default).
    pub retention: Option<i64>,
    /// On open, skip log records that fail their checksum in the middle of the log (and report
    /// them) instead of failing with [`crate::Error::Corrupt`]. Off by default: skipping loses
    /// the data in those records.
    pub skip_corrupt_wal_records: bool,
    /// Create the database directory when it does not exist (default true).
    pub create_if_missing: bool,
    /// The file system gemba uses; tests substitute a simulated one.
    pub fs: Arc<dyn FileSystem>,
}

/// One day in microseconds, the default partition width.
pub const DAY_MICROS: i64 = 86_400_000_000;

/// One week in microseconds, the default partition width.
pub const WEEK_MICROS: i64 = 7 * DAY_MICROS;

impl Default for Options {
    fn default() -> Options {
        Options {
            sync: SyncPolicy::Always,
            wal_file_bytes_max: 64 << 20,
            memtable_bytes_max: 64 << 20,
            partition_width: WEEK_MICROS,
            block_rows: 4096,
            compaction_block_rows: 16_384,
            compaction_trigger: 4,
            retention: None,
            skip_corrupt_wal_records: false,
            create_if_missing: true,
            fs: Arc::new(StdFs),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("sync", &self.sync)
            .field("wal_file_bytes_max", &self.wal_file_bytes_max)
            .field("memtable_bytes_max", &self.memtable_bytes_max)
            .field("partition_width", &self.partition_width)
            .field("block_rows", &self.block_rows)
            .field("compaction_block_rows", &self.compaction_block_rows)
            .field("compaction_trigger", &self.compaction_trigger)
            .field("retention", &self.retention)
            .field("skip_corrupt_wal_records", &self.skip_corrupt_wal_records)
            .field("create_if_missing", &self.create_if_missing)
            .finish_non_exhaustive()
    }
}

impl Options {
    pub(crate) fn validate(&self) -> crate::Result<()> {
        use crate::Error;
        if self.partition_width <= 0 {
            return Err(Error::invalid("partition_width must be positive"));
        }
        for rows in [self.block_rows, self.compaction_block_rows] {
            if rows == 0 || rows > crate::BLOCK_ROWS_MAX {
                return Err(Error::invalid(format!("block sizes must lie in 1..={}", crate::BLOCK_ROWS_MAX)));
            }
        }
        if self.compaction_trigger < 2 {
            return Err(Error::invalid("compaction_trigger must be at least 2"));
        }
        if self.retention.is_some_and(|r| r <= 0) {
            return Err(Error::invalid("retention must be positive"));
        }
        if self.wal_file_bytes_max < 4096 {
            return Err(Error::invalid("wal_file_bytes_max must be at least 4096"));
        }
        if self.memtable_bytes_max < 4096 {
            return Err(Error::invalid("memtable_bytes_max must be at least 4096"));
        }
        if let SyncPolicy::Periodic(d) = self.sync
            && d.is_zero()
        {
            return Err(Error::invalid("a periodic sync interval must be positive"));
        }
        Ok(())
    }
}
