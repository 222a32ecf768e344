//! Looking inside a database: how each field is stored (`Db::inspect`), and a check of every
//! byte of every file that reports each problem with its file and offset (`verify_dir`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec;
use crate::db::{Db, LOCK_FILE};
use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::manifest::{self, Manifest};
use crate::model::{FieldType, Timestamp};
use crate::segment::{self, Segment};
use crate::wal;

/// One live segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment's id (its file is `seg-<id>.gseg`).
    pub id: u64,
    /// The file.
    pub file: PathBuf,
    /// Start of its time partition.
    pub partition_start: Timestamp,
    /// Width of its time partition.
    pub partition_width: i64,
    /// Smallest and largest timestamp in it.
    pub time_bounds: (Timestamp, Timestamp),
    /// File size.
    pub bytes: u64,
    /// Machines in it.
    pub machines: usize,
    /// Values in it.
    pub points: u64,
}

/// How one field of one machine is stored, over every live segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldStorage {
    /// The machine.
    pub machine: Arc<str>,
    /// The field.
    pub field: Arc<str>,
    /// Its type.
    pub field_type: FieldType,
    /// Values stored (in segments; memtables not counted).
    pub points: u64,
    /// Bytes of its value chunks (validity included).
    pub value_bytes: u64,
    /// Its share of the timestamp chunks of the groups it belongs to (a group's timestamp
    /// bytes are split evenly among the group's fields).
    pub ts_bytes: u64,
    /// Blocks stored, per codec chain (as `codec::describe` names it), most used first.
    pub codecs: Vec<(String, u64)>,
}

impl FieldStorage {
    /// Bits per value, timestamps' share included.
    pub fn bits_per_value(&self) -> f64 {
        if self.points == 0 {
            0.0
        } else {
            8.0 * (self.value_bytes + self.ts_bytes) as f64 / self.points as f64
        }
    }
}

/// What [`Db::inspect`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Live segment files, by partition then age.
    pub segments: Vec<SegmentInfo>,
    /// Per machine and field: storage figures, machines in byte-wise order.
    pub fields: Vec<FieldStorage>,
}

impl Db {
    /// How the data is stored: the live segment files and, per machine and field, values,
    /// bytes (timestamps' share included) and the codecs the blocks use. Reads only the
    /// index and the first bytes of each chunk (the codec tag), not whole blocks.
    pub fn inspect(&self) -> Result<Inspection> {
        let snap = self.snapshot()?;
        let mut segments = Vec::new();
        let mut fields: BTreeMap<(Vec<u8>, Arc<str>), FieldStorage> = BTreeMap::new();
        for seg in &snap.version.segments {
            let ix = &seg.index;
            let points = ix
                .machines
                .iter()
                .flat_map(|m| m.groups.iter().flat_map(|g| g.blocks.iter().flat_map(|b| b.fields.iter())))
                .map(|f| f.stats.count as u64)
                .sum();
            let (lo, hi) =
                ix.machines.iter().fold((i64::MAX, i64::MIN), |(a, b), m| (a.min(m.ts_min), b.max(m.ts_max)));
            segments.push(SegmentInfo {
                id: seg.id,
                file: seg.path.clone(),
                partition_start: ix.partition_start,
                partition_width: ix.partition_width,
                time_bounds: (lo, hi),
                bytes: seg.file_len(),
                machines: ix.machines.len(),
                points,
            });
            for m in &ix.machines {
                for g in &m.groups {
                    for b in &g.blocks {
                        let ts_share = b.ts_chunk.len as u64 / g.fields.len() as u64;
                        for (pos, &fi) in g.fields.iter().enumerate() {
                            let (name, ty) = &m.fields[fi as usize];
                            let fc = &b.fields[pos];
                            let e = fields.entry((m.name.as_bytes().to_vec(), name.clone())).or_insert_with(
                                || FieldStorage {
                                    machine: m.name.clone(),
                                    field: name.clone(),
                                    field_type: *ty,
                                    points: 0,
                                    value_bytes: 0,
                                    ts_bytes: 0,
                                    codecs: Vec::new(),
                                },
                            );
                            e.points += fc.stats.count as u64;
                            e.value_bytes += fc.chunk.len as u64;
                            e.ts_bytes += ts_share;
                            let name = seg.chunk_codec(&fc.chunk);
                            match e.codecs.iter_mut().find(|(n, _)| *n == name) {
                                Some((_, k)) => *k += 1,
                                None => e.codecs.push((name, 1)),
                            }
                        }
                    }
                }
            }
        }
        let mut fields: Vec<FieldStorage> = fields.into_values().collect();
        for f in &mut fields {
            f.codecs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        Ok(Inspection { segments, fields })
    }
}

impl Segment {
    /// The codec chain of a field chunk's values, by name.
    pub(crate) fn chunk_codec(&self, c: &segment::ChunkRef) -> String {
        let Some(bytes) = self.bytes(c) else { return "invalid".into() };
        match bytes.first() {
            Some(&segment::CHUNK_ALL_VALID) => codec::describe(&bytes[1..]),
            Some(&segment::CHUNK_WITH_VALIDITY) => {
                let len = bytes.get(1..5).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
                match len.and_then(|l| bytes.get(5 + l..)) {
                    Some(v) => format!("{} (with validity)", codec::describe(v)),
                    None => "invalid".into(),
                }
            }
            _ => "invalid".into(),
        }
    }
}

/// One problem found by [`verify_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The damaged file.
    pub file: PathBuf,
    /// Byte offset of the damage.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

/// What [`verify_dir`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files read whole.
    pub files_checked: usize,
    /// Values decoded from segment files.
    pub points_checked: u64,
    /// Log records checked.
    pub log_records: u64,
    /// Every problem found (empty: healthy).
    pub problems: Vec<Problem>,
    /// Notes that are not damage (e.g. a torn last log record that recovery will cut off).
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, e: Error) {
        match e {
            Error::Corrupt { file, offset, what } => self.problems.push(Problem { file, offset, what }),
            Error::FormatVersion { file, found, supported } => self.problems.push(Problem {
                file,
                offset: 0,
                what: format!("format version {found}, newer than {supported}"),
            }),
            Error::Io { path, source, op } => {
                self.problems.push(Problem { file: path, offset: 0, what: format!("{op}: {source}") })
            }
            other => self.problems.push(Problem { file: PathBuf::new(), offset: 0, what: other.to_string() }),
        }
    }
}

/// Checks every file of the database in `dir` without opening it for writing and without
/// changing anything: the manifest, every segment file the manifest lists (each block's
/// checksum, then every block decoded), and every log record's checksum and body. Reports
/// every problem with its file and offset rather than stopping at the first. Fails only when
/// the directory cannot be read or another `Db` holds it ([`Error::Locked`]).
pub fn verify_dir(fs: &dyn FileSystem, dir: &Path) -> Result<VerifyReport> {
    let lock_path = dir.join(LOCK_FILE);
    let _lock = fs.lock(&lock_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked { dir: dir.to_path_buf() }
        } else {
            Error::io("lock", &lock_path, e)
        }
    })?;
    let names = fs.list(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut r = VerifyReport::default();
    let mpath = dir.join(manifest::FILE);
    let mut flushed_seq = 0;
    let mut live = Vec::new();
    if names.iter().any(|n| n == manifest::FILE) {
        r.files_checked += 1;
        match fs
            .read(&mpath)
            .map_err(|e| Error::io("read", &mpath, e))
            .and_then(|b| Manifest::decode(&mpath, &b))
        {
            Ok(m) => {
                flushed_seq = m.flushed_seq;
                live = m.segments.iter().map(|s| s.id).collect();
            }
            Err(e) => {
                r.problem(e);
                // Without a manifest, check every segment file present.
                live = names.iter().filter_map(|n| segment::parse_name(n)).collect();
            }
        }
    }
    for id in live {
        let path = dir.join(segment::file_name(id));
        if !names.iter().any(|n| *n == segment::file_name(id)) {
            r.problems.push(Problem {
                file: mpath.clone(),
                offset: 0,
                what: format!("live segment {} is missing", path.display()),
            });
            continue;
        }
        r.files_checked += 1;
        match Segment::open(fs, &path, id) {
            Ok(seg) => {
                let (points, problems) = seg.verify_all();
                r.points_checked += points;
                for e in problems {
                    r.problem(e);
                }
            }
            Err(e) => r.problem(e),
        }
    }
    let mut logs: Vec<u64> = names.iter().filter_map(|n| wal::parse_name(n)).collect();
    logs.sort_unstable();
    let mut prev = 0u64;
    let last = logs.last().copied();
    for n in logs {
        let path = dir.join(wal::file_name(n));
        r.files_checked += 1;
        let bytes = match fs.read(&path) {
            Ok(b) => b,
            Err(e) => {
                r.problem(Error::io("read", &path, e));
                continue;
            }
        };
        let (records, problems, notes) =
            wal::reader::verify_file(&path, n, &bytes, &mut prev, Some(n) == last, flushed_seq);
        r.log_records += records;
        r.problems.extend(problems.into_iter().map(|(offset, what)| Problem {
            file: path.clone(),
            offset,
            what,
        }));
        r.notes.extend(notes);
    }
    Ok(r)
}
