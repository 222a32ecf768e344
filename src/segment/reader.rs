//! Reading a segment file: validate, then decode blocks on demand.
//!
//! Opening checks the header, the trailer, the index checksum, and then every entry of the
//! index against the file: chunk offsets and lengths inside the data region, row counts within
//! `BLOCK_ROWS_MAX`, counts within rows, time bounds ordered and inside the partition, names
//! valid, machines sorted. Nothing read from the file is used before it is checked, and no
//! allocation is larger than what the bytes already read can justify. Decoding a block checks
//! its chunks' checksums first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::codec;
use crate::error::{Error, Result};
use crate::io::{Bytes, FileSystem};
use crate::model::{Bitmap, FieldType, TimeRange, validate_field_name, validate_machine_id};
use crate::rows::{ColData, RowSet};
use crate::tombstone::{Tombstone, any_overlap, mask, ranges_for};

/// An open segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) id: u64,
    pub(crate) path: PathBuf,
    data: Bytes,
    pub(crate) index: SegmentIndex,
}

/// A bounds-checked reader over the index bytes; errors name the file and offset.
struct Dec<'a> {
    bytes: &'a [u8],
    pos: usize,
    file: &'a Path,
    /// File offset of `bytes[0]` when the index is stored raw; `None` when compressed.
    base: Option<u64>,
    footer_offset: u64,
}

impl<'a> Dec<'a> {
    fn err(&self, what: impl Into<String>) -> Error {
        match self.base {
            Some(b) => Error::corrupt(self.file, b + self.pos as u64, what),
            None => Error::corrupt(
                self.file,
                self.footer_offset,
                format!("{} (at byte {} of the compressed index)", what.into(), self.pos),
            ),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        match self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()) {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err("index ends early")),
        }
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(self.u64()? as i64)
    }
    fn name(&mut self) -> Result<&'a str> {
        let n = self.u8()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| self.err("name is not UTF-8"))
    }
    /// Rejects a count of entries that the remaining bytes cannot hold at `min_bytes` each.
    fn check_count(&self, count: usize, min_bytes: usize) -> Result<()> {
        if count.saturating_mul(min_bytes) > self.bytes.len() - self.pos {
            return Err(self.err(format!("count {count} exceeds the index")));
        }
        Ok(())
    }
    fn chunk(&mut self) -> Result<ChunkRef> {
        let offset = self.u64()?;
        let len = self.u32()?;
        let crc = self.u32()?;
        let end = offset.checked_add(len as u64);
        if offset < HEADER_LEN as u64 || end.is_none_or(|e| e > self.footer_offset) {
            return Err(self.err(format!("chunk {offset}+{len} lies outside the data region")));
        }
        if len == 0 {
            return Err(self.err("empty chunk"));
        }
        Ok(ChunkRef { offset, len, crc })
    }
}

const BLOCK_ENTRY_MIN: usize = 4 + 8 + 8 + 16;
const FIELD_ENTRY_MIN: usize = 16 + 4 + 7 * 8;

impl Segment {
    /// Maps and validates segment file `id` at `path`.
    pub(crate) fn open(fs: &dyn FileSystem, path: &Path, id: u64) -> Result<Segment> {
        let data = fs.map(path).map_err(|e| Error::io("open segment", path, e))?;
        Segment::from_bytes(path.to_path_buf(), id, data)
    }

    /// Validates a segment held in memory.
    pub(crate) fn from_bytes(path: PathBuf, id: u64, data: Bytes) -> Result<Segment> {
        let index = parse(&path, &data)?;
        Ok(Segment { id, path, data, index })
    }

    /// Bytes of the file.
    pub(crate) fn file_len(&self) -> u64 {
        self.data.len() as u64
    }

    /// The machine's entry, by name.
    pub(crate) fn machine(&self, name: &str) -> Option<&MachineIndex> {
        let ms = &self.index.machines;
        ms.binary_search_by(|m| m.name.as_bytes().cmp(name.as_bytes())).ok().map(|i| &ms[i])
    }

    /// A chunk's bytes, unchecked (offsets were validated at open).
    pub(crate) fn bytes(&self, c: &ChunkRef) -> Option<&[u8]> {
        self.data.get(c.offset as usize..(c.offset + c.len as u64) as usize)
    }

    fn chunk_bytes(&self, c: &ChunkRef) -> Result<&[u8]> {
        // Offsets were checked against the file at open.
        let b = &self.data[c.offset as usize..(c.offset + c.len as u64) as usize];
        if crc32fast::hash(b) != c.crc {
            return Err(Error::corrupt(&self.path, c.offset, "block checksum mismatch"));
        }
        Ok(b)
    }

    fn codec_err(&self, c: &ChunkRef, e: codec::DecodeError) -> Error {
        Error::corrupt(&self.path, c.offset + e.offset as u64, format!("bad block: {}", e.what))
    }

    /// Decodes a block's timestamps (checking they ascend within the block's bounds).
    pub(crate) fn block_ts(&self, b: &BlockIndex, out: &mut Vec<Timestamp>) -> Result<()> {
        out.clear();
        self.block_ts_append(b, out)
    }

    /// [`Segment::block_ts`], appending to `out` (unchanged on error).
    pub(crate) fn block_ts_append(&self, b: &BlockIndex, out: &mut Vec<Timestamp>) -> Result<()> {
        let bytes = self.chunk_bytes(&b.ts_chunk)?;
        let at = out.len();
        let known_ascending = codec::ts::decode_timestamps_append(bytes, b.rows as usize, out)
            .map_err(|e| self.codec_err(&b.ts_chunk, e))?;
        let new = &out[at..];
        let ok = new.len() == b.rows as usize
            && new.first() == Some(&b.ts_min)
            && new.last() == Some(&b.ts_max)
            && (known_ascending || ascending(new));
        if !ok {
            out.truncate(at);
            return Err(Error::corrupt(
                &self.path,
                b.ts_chunk.offset,
                "block timestamps disagree with the index",
            ));
        }
        Ok(())
    }

    /// Decodes one field of a block into a column over the block's rows.
    pub(crate) fn block_field(&self, ty: FieldType, rows: usize, fc: &FieldChunk) -> Result<ColData> {
        let (vals, valid) = self.block_field_compact(ty, rows, fc)?;
        Ok(spread(&vals, valid, rows))
    }

    /// Decodes one field of a block as its present values, in row order, and the validity
    /// (`None`: every row has a value).
    pub(crate) fn block_field_compact(
        &self,
        ty: FieldType,
        rows: usize,
        fc: &FieldChunk,
    ) -> Result<(Vec<u64>, Option<Bitmap>)> {
        let mut vals = Vec::new();
        let valid = self.block_field_append(ty, rows, fc, &mut vals)?;
        Ok((vals, valid))
    }

    /// Like [`Segment::block_field_compact`], appending the present values to `out`.
    pub(crate) fn block_field_append(
        &self,
        ty: FieldType,
        rows: usize,
        fc: &FieldChunk,
        out: &mut Vec<u64>,
    ) -> Result<Option<Bitmap>> {
        let c = &fc.chunk;
        let bytes = self.chunk_bytes(c)?;
        let count = fc.stats.count as usize;
        let bad = |what: &'static str| Error::corrupt(&self.path, c.offset, what);
        let (valid, values) = match bytes[0] {
            CHUNK_ALL_VALID => {
                if count != rows {
                    return Err(bad("value count disagrees with the index"));
                }
                (None, &bytes[1..])
            }
            CHUNK_WITH_VALIDITY => {
                let Some(len) = bytes.get(1..5) else {
                    return Err(bad("chunk ends early"));
                };
                let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
                let Some(vbytes) = bytes.get(5..5 + len) else {
                    return Err(bad("chunk ends early"));
                };
                let bm = codec::decode_bool_bitmap(vbytes, rows).map_err(|e| {
                    let c5 = ChunkRef { offset: c.offset + 5, ..*c };
                    self.codec_err(&c5, e)
                })?;
                if bm.count_ones() != count {
                    return Err(bad("validity disagrees with the index's count"));
                }
                (Some(bm), &bytes[5 + len..])
            }
            _ => return Err(bad("unknown chunk mode")),
        };
        let voff = (bytes.len() - values.len()) as u64;
        decode_values_append(ty, values, count, out).map_err(|e| {
            let cv = ChunkRef { offset: c.offset + voff, ..*c };
            self.codec_err(&cv, e)
        })?;
        Ok(valid)
    }

    /// A machine's rows in `range` for the requested fields (by name; fields this segment
    /// lacks give `None` columns), with values hidden by `tombs` masked. Blocks outside the
    /// range are skipped.
    pub(crate) fn read(
        &self,
        m: &MachineIndex,
        range: TimeRange,
        fields: &[&str],
        tombs: &[Arc<Tombstone>],
    ) -> Result<RowSet> {
        let mut out = RowSet::empty(fields.len());
        if !range.overlaps(m.ts_min, m.ts_max) {
            return Ok(out);
        }
        // Requested fields per group: (position in group, output column).
        let mut per_group: Vec<Vec<(usize, usize)>> = vec![Vec::new(); m.groups.len()];
        for (col, name) in fields.iter().enumerate() {
            if let Some((g, p)) = m.locate(name) {
                per_group[g].push((p, col));
            }
        }
        // Blocks of a group are disjoint and ascending in time: each one's rows in `range`
        // are appended to the group's columns, decoded straight into them.
        self.read_groups(m, range, fields, tombs, &per_group, &mut out)?;
        out.drop_empty_rows();
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn read_groups(
        &self,
        m: &MachineIndex,
        range: TimeRange,
        fields: &[&str],
        tombs: &[Arc<Tombstone>],
        per_group: &[Vec<(usize, usize)>],
        out: &mut RowSet,
    ) -> Result<()> {
        for (g, wanted) in per_group.iter().enumerate() {
            if wanted.is_empty() {
                continue;
            }
            let grp = &m.groups[g];
            // a scan cut into windows reads a group once per window: no pass over all blocks
            let blocks = grp.blocks_in(range);
            // Rows to expect: whole blocks inside the range, a time-proportional share of those
            // at its edges.
            let total: usize = blocks
                .iter()
                .map(|b| {
                    let rows = b.rows as usize;
                    if range.start <= b.ts_min && b.ts_max < range.end {
                        return rows;
                    }
                    let span = (b.ts_max as i128 - b.ts_min as i128 + 1) as f64;
                    let inside = (range.end.min(b.ts_max.saturating_add(1)) as i128
                        - range.start.max(b.ts_min) as i128)
                        .max(0) as f64;
                    ((rows as f64 * inside / span) as usize + 1).min(rows)
                })
                .sum();
            let mut part = RowSet { ts: Vec::with_capacity(total), cols: vec![None; fields.len()] };
            let dels: Vec<Vec<TimeRange>> = wanted
                .iter()
                .map(|&(_, col)| ranges_for(tombs, &m.name, fields[col], self.index.applied_seq))
                .collect();
            for &(_, col) in wanted {
                part.cols[col] =
                    Some(ColData { vals: Vec::with_capacity(total), valid: Bitmap::with_capacity(total) });
            }
            for b in blocks {
                // The block's timestamps go straight into the result, cut to the range below.
                let at_ts = part.ts.len();
                self.block_ts_append(b, &mut part.ts)?;
                let ts = &part.ts[at_ts..];
                let rows = ts.len();
                let lo = ts.partition_point(|&t| t < range.start);
                let hi = ts.partition_point(|&t| t < range.end);
                for (&(p, col), dels) in wanted.iter().zip(&dels) {
                    let ty = m.fields[grp.fields[p] as usize].1;
                    let c = part.cols[col].as_mut().expect("column set up above");
                    let at = c.vals.len();
                    let valid = self.block_field_append(ty, rows, &b.fields[p], &mut c.vals)?;
                    if valid.is_none() && !any_overlap(dels, b.ts_min, b.ts_max) {
                        // Every row has a value and no delete touches the block: the decoded
                        // values stay where they are, cut to the range.
                        c.vals.truncate(at + hi);
                        c.vals.drain(at..at + lo);
                        c.valid.extend_const(hi - lo, true);
                    } else {
                        let mut full = spread(&c.vals[at..], valid, rows);
                        mask(ts, &mut full.valid, dels);
                        c.vals.truncate(at);
                        c.vals.extend_from_slice(&full.vals[lo..hi]);
                        c.valid.extend_from_range(&full.valid, lo, hi);
                    }
                    debug_assert_eq!(c.vals.len(), at + hi - lo);
                }
                part.ts.truncate(at_ts + hi);
                part.ts.drain(at_ts..at_ts + lo);
            }
            *out = std::mem::take(out).merge_newer(part);
        }
        Ok(())
    }

    /// Like [`Segment::verify`], but goes on after a damaged block: every problem found.
    pub(crate) fn verify_all(&self) -> (u64, Vec<Error>) {
        let mut points = 0;
        let mut problems = Vec::new();
        let mut ts = Vec::new();
        for m in &self.index.machines {
            for g in &m.groups {
                for b in &g.blocks {
                    if let Err(e) = self.block_ts(b, &mut ts) {
                        problems.push(e);
                    }
                    for (p, fc) in b.fields.iter().enumerate() {
                        let ty = m.fields[g.fields[p] as usize].1;
                        match self.block_field(ty, b.rows as usize, fc) {
                            Ok(_) => points += fc.stats.count as u64,
                            Err(e) => problems.push(e),
                        }
                    }
                }
            }
        }
        (points, problems)
    }

    /// Reads every block of every machine, checking every checksum and decoding everything.
    pub(crate) fn verify(&self) -> Result<u64> {
        let mut points = 0;
        let mut ts = Vec::new();
        for m in &self.index.machines {
            for g in &m.groups {
                for b in &g.blocks {
                    self.block_ts(b, &mut ts)?;
                    for (p, fc) in b.fields.iter().enumerate() {
                        let ty = m.fields[g.fields[p] as usize].1;
                        self.block_field(ty, b.rows as usize, fc)?;
                        points += fc.stats.count as u64;
                    }
                }
            }
        }
        Ok(points)
    }
}

/// A block's present values (`vals`, in row order) spread over its `rows` rows per `valid`
/// (`None`: all present); missing rows hold 0.
fn spread(vals: &[u64], valid: Option<Bitmap>, rows: usize) -> ColData {
    match valid {
        None => ColData { vals: vals.to_vec(), valid: Bitmap::with_len(rows, true) },
        Some(bm) => {
            // A run of present rows at a time.
            let mut out = vec![0u64; rows];
            let mut k = 0;
            let mut a = bm.next(true, 0, rows);
            while a < rows {
                let b = bm.next(false, a, rows);
                out[a..b].copy_from_slice(&vals[k..k + (b - a)]);
                k += b - a;
                a = bm.next(true, b, rows);
            }
            ColData { vals: out, valid: bm }
        }
    }
}

/// Decodes `n` values of type `ty` and appends their bits to `out` (unchanged on error).
pub(crate) fn decode_values_append(
    ty: FieldType,
    bytes: &[u8],
    n: usize,
    out: &mut Vec<u64>,
) -> Result<(), codec::DecodeError> {
    match ty {
        FieldType::F64 => codec::decode_f64_bits_append(bytes, n, out),
        FieldType::I64 => codec::decode_i64_bits_append(bytes, n, out),
        FieldType::Bool => codec::decode_bool_bits_append(bytes, n, out),
    }
}

cpu_dispatch! {
/// True when `ts` is strictly ascending. Branch-free, so it vectorises: `windows(2).all`
/// stops at the first failure and compiles to a scalar loop, a few percent of a full scan.
/// Compiled for AVX2 where the CPU has it, which compares 64-bit integers four at a time
/// (the baseline x86-64 has no 64-bit vector compare, and the check ran a value at a time).
fn ascending(ts: &[Timestamp]) -> bool = ascending_any, "avx2" if codec::has_avx2
}

#[inline(always)]
fn ascending_any(ts: &[Timestamp]) -> bool {
    ts.iter().zip(ts.iter().skip(1)).fold(true, |ok, (a, b)| ok & (a < b))
}

/// Validates the header and trailer and parses the index.
fn parse(path: &Path, data: &[u8]) -> Result<SegmentIndex> {
    let len = data.len();
    if len < HEADER_LEN + TRAILER_LEN {
        return Err(Error::corrupt(path, 0, format!("file of {len} bytes is shorter than a segment")));
    }
    if &data[0..8] != MAGIC {
        return Err(Error::corrupt(path, 0, "bad magic"));
    }
    let version = u16::from_le_bytes(data[8..10].try_into().unwrap());
    if version != VERSION {
        return Err(Error::FormatVersion {
            file: path.to_path_buf(),
            found: version as u32,
            supported: VERSION as u32,
        });
    }
    let t = &data[len - TRAILER_LEN..];
    let t_off = (len - TRAILER_LEN) as u64;
    if &t[24..32] != END_MAGIC {
        return Err(Error::corrupt(path, t_off + 24, "bad trailer magic (truncated file?)"));
    }
    let tversion = u16::from_le_bytes(t[22..24].try_into().unwrap());
    if tversion != version {
        return Err(Error::corrupt(path, t_off + 22, "trailer version disagrees with the header"));
    }
    let footer_offset = u64::from_le_bytes(t[0..8].try_into().unwrap());
    let stored_len = u32::from_le_bytes(t[8..12].try_into().unwrap()) as u64;
    let raw_len = u32::from_le_bytes(t[12..16].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(t[16..20].try_into().unwrap());
    let codec_id = t[20];
    if footer_offset < HEADER_LEN as u64 || footer_offset.checked_add(stored_len) != Some(t_off) {
        return Err(Error::corrupt(path, t_off, "index position disagrees with the file size"));
    }
    let stored = &data[footer_offset as usize..t_off as usize];
    if crc32fast::hash(stored) != crc {
        return Err(Error::corrupt(path, footer_offset, "index checksum mismatch"));
    }
    let decompressed;
    let (bytes, base) = match codec_id {
        FOOTER_RAW => {
            if raw_len != stored.len() {
                return Err(Error::corrupt(path, t_off + 12, "raw index length disagrees"));
            }
            (stored, Some(footer_offset))
        }
        FOOTER_ZSTD => {
            if raw_len > INDEX_BYTES_MAX {
                return Err(Error::corrupt(path, t_off + 12, "index too large"));
            }
            decompressed = crate::codec::zstd_decompress(stored, raw_len).map_err(|e| {
                Error::corrupt(path, footer_offset, format!("index does not decompress: {e}"))
            })?;
            if decompressed.len() != raw_len {
                return Err(Error::corrupt(path, footer_offset, "index length disagrees"));
            }
            (&decompressed[..], None)
        }
        _ => return Err(Error::corrupt(path, t_off + 20, "unknown index codec")),
    };
    let mut d = Dec { bytes, pos: 0, file: path, base, footer_offset };
    let partition_start = d.i64()?;
    let partition_width = d.i64()?;
    let min_seq = d.u64()?;
    let max_seq = d.u64()?;
    let applied_seq = d.u64()?;
    if partition_width <= 0 || min_seq > max_seq || applied_seq < max_seq {
        return Err(d.err("bad partition or sequence bounds"));
    }
    let partition_end = partition_start.checked_add(partition_width);
    let n_machines = d.u32()? as usize;
    d.check_count(n_machines, 6)?;
    let mut machines: Vec<MachineIndex> = Vec::with_capacity(n_machines);
    for _ in 0..n_machines {
        let name = d.name()?;
        validate_machine_id(name).map_err(|e| d.err(e.to_string()))?;
        if machines.last().is_some_and(|p| p.name.as_bytes() >= name.as_bytes()) {
            return Err(d.err("machines not sorted"));
        }
        let name: Arc<str> = Arc::from(name);
        let n_fields = d.u16()? as usize;
        d.check_count(n_fields, 3)?;
        let mut fields: Vec<(Arc<str>, FieldType)> = Vec::with_capacity(n_fields);
        for _ in 0..n_fields {
            let f = d.name()?;
            validate_field_name(f).map_err(|e| d.err(e.to_string()))?;
            let ty = FieldType::from_code(d.u8()?).ok_or_else(|| d.err("unknown field type"))?;
            if fields.iter().any(|(n, _)| &**n == f) {
                return Err(d.err("field repeated"));
            }
            fields.push((Arc::from(f), ty));
        }
        let n_groups = d.u16()? as usize;
        d.check_count(n_groups, 6)?;
        let mut groups = Vec::with_capacity(n_groups);
        let mut seen = vec![false; n_fields];
        let (mut m_min, mut m_max) = (i64::MAX, i64::MIN);
        for _ in 0..n_groups {
            let n_gf = d.u16()? as usize;
            d.check_count(n_gf, 2)?;
            if n_gf == 0 {
                return Err(d.err("empty field group"));
            }
            let mut gf = Vec::with_capacity(n_gf);
            for _ in 0..n_gf {
                let f = d.u16()?;
                if f as usize >= n_fields || seen[f as usize] {
                    return Err(d.err("bad or repeated field index in a group"));
                }
                seen[f as usize] = true;
                gf.push(f);
            }
            let n_blocks = d.u32()? as usize;
            d.check_count(n_blocks, BLOCK_ENTRY_MIN + n_gf * FIELD_ENTRY_MIN)?;
            if n_blocks == 0 {
                return Err(d.err("group without blocks"));
            }
            let mut blocks = Vec::with_capacity(n_blocks);
            let mut prev_max: Option<i64> = None;
            for _ in 0..n_blocks {
                let rows = d.u32()?;
                let ts_min = d.i64()?;
                let ts_max = d.i64()?;
                if rows == 0 || rows as usize > crate::BLOCK_ROWS_MAX {
                    return Err(d.err(format!("block of {rows} rows")));
                }
                let span_ok = ts_min <= ts_max && (ts_max as i128 - ts_min as i128) >= rows as i128 - 1;
                let in_partition = ts_min >= partition_start && partition_end.is_none_or(|e| ts_max < e);
                if !span_ok || !in_partition || prev_max.is_some_and(|p| ts_min <= p) {
                    return Err(d.err("block time bounds are impossible"));
                }
                prev_max = Some(ts_max);
                m_min = m_min.min(ts_min);
                m_max = m_max.max(ts_max);
                let ts_chunk = d.chunk()?;
                let mut fcs = Vec::with_capacity(n_gf);
                for _ in 0..n_gf {
                    let chunk = d.chunk()?;
                    let count = d.u32()?;
                    let min = d.u64()?;
                    let max = d.u64()?;
                    let sum = f64::from_bits(d.u64()?);
                    let first = d.u64()?;
                    let last = d.u64()?;
                    let first_ts = d.i64()?;
                    let last_ts = d.i64()?;
                    if count > rows
                        || (count > 0 && (first_ts < ts_min || last_ts > ts_max || first_ts > last_ts))
                    {
                        return Err(d.err("field statistics are impossible"));
                    }
                    fcs.push(FieldChunk {
                        chunk,
                        stats: Stats { count, min, max, sum, first, last, first_ts, last_ts },
                    });
                }
                blocks.push(BlockIndex { rows, ts_min, ts_max, ts_chunk, fields: fcs });
            }
            groups.push(GroupIndex { fields: gf, blocks });
        }
        if seen.iter().any(|s| !s) {
            return Err(d.err("a field belongs to no group"));
        }
        if groups.is_empty() {
            return Err(d.err("machine without data"));
        }
        let mut loc = vec![(0u32, 0u32); fields.len()];
        for (g, grp) in groups.iter().enumerate() {
            for (p, &f) in grp.fields.iter().enumerate() {
                loc[f as usize] = (g as u32, p as u32);
            }
        }
        machines.push(MachineIndex { name, fields, groups, loc, ts_min: m_min, ts_max: m_max });
    }
    if d.pos != bytes.len() {
        return Err(d.err("unexpected bytes after the index"));
    }
    Ok(SegmentIndex { partition_start, partition_width, min_seq, max_seq, applied_seq, machines })
}

#[cfg(test)]
mod tests {
    use super::ascending;

    #[test]
    fn ascending_is_strict() {
        assert!(ascending(&[]));
        assert!(ascending(&[5]));
        assert!(ascending(&[1, 2, 3, i64::MAX]));
        assert!(!ascending(&[1, 1]));
        assert!(!ascending(&[3, 2]));
        let mut long: Vec<i64> = (0..1000).collect();
        assert!(ascending(&long));
        long[999] = 998; // the last pair only
        assert!(!ascending(&long));
        long[999] = 999;
        long[0] = 1; // the first pair only
        assert!(!ascending(&long));
    }
}
