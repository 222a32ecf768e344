//! Log file header, record framing and the encoding of record payloads (FORMAT.md, "Log").

use crate::error::{Error, Result};
use crate::model::{BatchField, BatchGroup, Bitmap, FieldType, WriteBatch};
use crate::model::{validate_field_name, validate_machine_id};

/// First bytes of every log file.
pub(crate) const MAGIC: &[u8; 8] = b"GEMBAWAL";
/// The log format version this build writes; it reads every version from 1 up to it.
/// Version 2 files may be reused log files with old records past their end (FORMAT.md),
/// which a version 1 reader could take for corruption.
pub(crate) const VERSION: u32 = 2;
/// Bytes of the file header.
pub(crate) const HEADER_LEN: usize = 32;
/// Bytes of a record's frame before its body: length u32, crc u32, seq u64, kind u8.
pub(crate) const FRAME_LEN: usize = 8;
/// Smallest value of a record's length field: seq (8) + kind (1).
pub(crate) const RECORD_LEN_MIN: u32 = 9;
/// Largest value of a record's length field (a batch is split by the caller above it).
pub(crate) const RECORD_LEN_MAX: u32 = 1 << 28;

/// Kinds of record.
pub(crate) const KIND_BATCH: u8 = 1;
/// A delete: the body is an encoded tombstone (its own `seq` field is ignored; the record's
/// sequence number is the delete's).
pub(crate) const KIND_DELETE: u8 = 2;

/// The 32-byte header of log file number `number`.
pub(crate) fn header(number: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    // 12..16: flags, zero.
    h[16..24].copy_from_slice(&number.to_le_bytes());
    let crc = crc32fast::hash(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    // 28..32: reserved, zero.
    h
}

/// What a header says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    Ok,
    /// Shorter than a header, or not a gemba log header.
    Bad(&'static str),
    /// A valid header of a newer format version.
    FutureVersion(u32),
}

pub(crate) fn check_header(bytes: &[u8], number: u64) -> HeaderCheck {
    if bytes.len() < HEADER_LEN {
        return HeaderCheck::Bad("file shorter than the log header");
    }
    let h = &bytes[..HEADER_LEN];
    if &h[0..8] != MAGIC {
        return HeaderCheck::Bad("bad magic");
    }
    let crc = u32::from_le_bytes(h[24..28].try_into().unwrap());
    if crc != crc32fast::hash(&h[0..24]) {
        return HeaderCheck::Bad("header checksum mismatch");
    }
    let version = u32::from_le_bytes(h[8..12].try_into().unwrap());
    if version > VERSION || version == 0 {
        return HeaderCheck::FutureVersion(version);
    }
    if u64::from_le_bytes(h[16..24].try_into().unwrap()) != number {
        return HeaderCheck::Bad("header names another file number");
    }
    HeaderCheck::Ok
}

/// Appends a framed record: `len u32 | crc u32 | seq u64 | body`, where `body` starts with the
/// kind byte, `len` counts `seq` and `body`, and `crc` covers `len`, `seq` and `body`.
/// `body_crc` is a hasher that has already seen `body`.
pub(crate) fn frame(out: &mut Vec<u8>, seq: u64, body: &[u8], body_crc: &crc32fast::Hasher) {
    let len = (8 + body.len()) as u32;
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.combine(body_crc);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(body);
}

/// A record read back: its sequence number, kind and body (after the kind byte).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) seq: u64,
    pub(crate) kind: u8,
    pub(crate) body: &'a [u8],
    /// Total bytes of the framed record.
    pub(crate) framed_len: usize,
}

/// Why the bytes at some offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The record would extend past the end of the file.
    Incomplete,
    /// The length field is impossible.
    BadLength,
    /// The checksum does not match.
    BadCrc,
    /// Valid checksum, but the sequence number does not follow the previous record's.
    BadSeq,
}

impl FrameError {
    pub(crate) fn what(self) -> &'static str {
        match self {
            FrameError::Incomplete => "record extends past the end of the file",
            FrameError::BadLength => "impossible record length",
            FrameError::BadCrc => "record checksum mismatch",
            FrameError::BadSeq => "record sequence number out of order",
        }
    }
}

/// Parses the record at `pos`; `prev_seq` is the sequence number of the record before it (0 at
/// the start of the log). Never panics.
pub(crate) fn read_record(bytes: &[u8], pos: usize, prev_seq: u64) -> Result<Record<'_>, FrameError> {
    let rest = bytes.get(pos..).unwrap_or(&[]);
    if rest.len() < FRAME_LEN {
        return Err(FrameError::Incomplete);
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().unwrap());
    if !(RECORD_LEN_MIN..=RECORD_LEN_MAX).contains(&len) {
        return Err(FrameError::BadLength);
    }
    let end = FRAME_LEN + len as usize;
    if rest.len() < end {
        return Err(FrameError::Incomplete);
    }
    let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap());
    let mut h = crc32fast::Hasher::new();
    h.update(&rest[0..4]);
    h.update(&rest[8..end]);
    if h.finalize() != crc {
        return Err(FrameError::BadCrc);
    }
    let seq = u64::from_le_bytes(rest[8..16].try_into().unwrap());
    if seq <= prev_seq {
        return Err(FrameError::BadSeq);
    }
    Ok(Record { seq, kind: rest[16], body: &rest[17..end], framed_len: end })
}

/// Offset of the first valid record at or after `from` whose sequence number follows
/// `prev_seq` (cheap checks first, so garbage is skipped in linear time).
pub(crate) fn find_valid_record(bytes: &[u8], from: usize, prev_seq: u64) -> Option<usize> {
    let last = bytes.len().checked_sub(FRAME_LEN + RECORD_LEN_MIN as usize)?;
    let mut pos = from;
    while pos <= last {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap());
        if (RECORD_LEN_MIN..=RECORD_LEN_MAX).contains(&len) && pos + FRAME_LEN + len as usize <= bytes.len() {
            let seq = u64::from_le_bytes(bytes[pos + 8..pos + 16].try_into().unwrap());
            // A plausible successor: garbage almost never passes this before the crc.
            if seq > prev_seq && seq - prev_seq < (1 << 40) && read_record(bytes, pos, prev_seq).is_ok() {
                return Some(pos);
            }
        }
        pos += 1;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Batch bodies.
//
// body := KIND_BATCH u8 | groups u32 | group*
// group := machine_len u8 | machine | rows u32 | fields u16 | ts i64 × rows | field*
// field := name_len u8 | name | type u8 | validity u8 (0: all valid, 1: bitmap) |
//          [bitmap u64 × ceil(rows/64)] | value u64 × rows (missing values are 0)

/// Appends the body of a batch record to `out`.
pub(crate) fn encode_batch(batch: &WriteBatch, out: &mut Vec<u8>) {
    out.push(KIND_BATCH);
    let groups: Vec<&BatchGroup> = batch.groups.iter().filter(|g| g.rows() > 0).collect();
    out.extend_from_slice(&(groups.len() as u32).to_le_bytes());
    for g in groups {
        out.push(g.machine.len() as u8);
        out.extend_from_slice(g.machine.as_bytes());
        out.extend_from_slice(&(g.rows() as u32).to_le_bytes());
        out.extend_from_slice(&(g.fields.len() as u16).to_le_bytes());
        out.reserve(g.rows() * 8 * (1 + g.fields.len()));
        for &t in &g.ts {
            out.extend_from_slice(&t.to_le_bytes());
        }
        for f in &g.fields {
            out.push(f.name.len() as u8);
            out.extend_from_slice(f.name.as_bytes());
            out.push(f.ty.code());
            if f.valid.all() {
                out.push(0);
            } else {
                out.push(1);
                for w in f.valid.words() {
                    out.extend_from_slice(&w.to_le_bytes());
                }
            }
            for &v in &f.values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// Bytes the encoded body of `batch` takes, to check it against [`RECORD_LEN_MAX`] up front.
pub(crate) fn encoded_batch_len(batch: &WriteBatch) -> usize {
    let mut n = 1 + 4;
    for g in &batch.groups {
        n += 1 + g.machine.len() + 4 + 2 + g.rows() * 8;
        for f in &g.fields {
            n += 1 + f.name.len() + 2 + g.rows() * 8;
            if !f.valid.all() {
                n += g.rows().div_ceil(64) * 8;
            }
        }
    }
    n
}

/// A cursor over a record body that fails with a description instead of panicking.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!("record body ends early at byte {}", self.pos)),
        }
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn str(&mut self) -> Result<&'a str, String> {
        let n = self.u8()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| "name is not UTF-8".to_string())
    }
    fn u64s(&mut self, n: usize) -> Result<Vec<u64>, String> {
        let bytes = self.take(n.checked_mul(8).ok_or("count overflows")?)?;
        Ok(bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect())
    }
}

/// Decodes a batch body (after the kind byte). Lengths are checked against the body before
/// anything is allocated; any inconsistency is an error string (the caller adds file and
/// offset).
pub(crate) fn decode_batch(body: &[u8]) -> Result<WriteBatch, String> {
    let mut c = Cursor { bytes: body, pos: 0 };
    let n_groups = c.u32()?;
    let mut batch = WriteBatch::new();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n_groups {
        let machine = c.str()?;
        validate_machine_id(machine).map_err(|e| e.to_string())?;
        if !seen.insert(machine.to_string()) {
            return Err(format!("machine {machine:?} repeated in one record"));
        }
        let rows = c.u32()? as usize;
        let n_fields = c.u16()? as usize;
        // Every row costs at least 8 bytes of timestamp: reject counts the body cannot hold.
        if rows > (body.len() - c.pos) / 8 {
            return Err(format!("row count {rows} exceeds the record"));
        }
        let ts: Vec<i64> = c.u64s(rows)?.into_iter().map(|t| t as i64).collect();
        let mut g = BatchGroup::new(machine.to_string());
        g.ts = ts;
        for _ in 0..n_fields {
            let name = c.str()?;
            validate_field_name(name).map_err(|e| e.to_string())?;
            let ty = FieldType::from_code(c.u8()?).ok_or("unknown field type")?;
            let valid = match c.u8()? {
                0 => Bitmap::with_len(rows, true),
                1 => Bitmap::from_words(c.u64s(rows.div_ceil(64))?, rows).ok_or("bad validity bitmap")?,
                _ => return Err("unknown validity mode".to_string()),
            };
            let values = c.u64s(rows)?;
            g.push_field(BatchField { name: name.to_string(), ty, values, valid })
                .map_err(|e| e.to_string())?;
        }
        batch.push_group(g);
    }
    if c.pos != body.len() {
        return Err(format!("{} unexpected bytes after the batch", body.len() - c.pos));
    }
    Ok(batch)
}

/// Turns a body decoding failure into `Error::Corrupt` at the record's offset.
pub(crate) fn corrupt_record(file: &std::path::Path, offset: u64, what: String) -> Error {
    Error::corrupt(file, offset, format!("bad log record: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Col, Value};

    fn sample() -> WriteBatch {
        let mut b = WriteBatch::new();
        b.row("press-07", 10, [("speed", Value::F64(1.5)), ("status", Value::I64(3))]).unwrap();
        b.row("press-07", 5, [("speed", Value::F64(f64::NAN))]).unwrap();
        b.columns("pump", &[1, 2, 3], [("on", Col::bool(&[true, false, true]))]).unwrap();
        b
    }

    #[test]
    fn batch_round_trip() {
        let b = sample();
        let mut body = Vec::new();
        encode_batch(&b, &mut body);
        assert_eq!(body.len(), encoded_batch_len(&b));
        assert_eq!(body[0], KIND_BATCH);
        let d = decode_batch(&body[1..]).unwrap();
        assert_eq!(d.groups.len(), 2);
        for (x, y) in b.groups.iter().zip(&d.groups) {
            assert_eq!(x.machine, y.machine);
            assert_eq!(x.ts, y.ts);
            assert_eq!(x.fields.len(), y.fields.len());
            for (f, g) in x.fields.iter().zip(&y.fields) {
                assert_eq!((&f.name, f.ty, &f.values, &f.valid), (&g.name, g.ty, &g.values, &g.valid));
            }
        }
    }

    #[test]
    fn framing_round_trip_and_damage() {
        let mut body = Vec::new();
        encode_batch(&sample(), &mut body);
        let mut h = crc32fast::Hasher::new();
        h.update(&body);
        let mut file = header(7).to_vec();
        frame(&mut file, 42, &body, &h);
        assert_eq!(check_header(&file, 7), HeaderCheck::Ok);
        assert!(matches!(check_header(&file, 8), HeaderCheck::Bad(_)));
        let r = read_record(&file, HEADER_LEN, 0).unwrap();
        assert_eq!((r.seq, r.kind, r.body), (42, KIND_BATCH, &body[1..]));
        assert_eq!(read_record(&file, HEADER_LEN, 42).unwrap_err(), FrameError::BadSeq);
        for cut in HEADER_LEN..file.len() {
            assert_eq!(read_record(&file[..cut], HEADER_LEN, 0).unwrap_err(), FrameError::Incomplete);
        }
        for bit in (HEADER_LEN * 8)..(file.len() * 8) {
            let mut f = file.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            assert!(read_record(&f, HEADER_LEN, 0).is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn decoding_garbage_never_panics() {
        let mut body = Vec::new();
        encode_batch(&sample(), &mut body);
        for cut in 0..body.len() {
            let _ = decode_batch(&body[1..cut.max(1)]);
        }
        for i in 1..body.len() {
            for v in [0u8, 0xff, 0x7f, 0x80] {
                let mut b = body.clone();
                b[i] = v;
                let _ = decode_batch(&b[1..]);
            }
        }
    }

    #[test]
    fn future_version_is_recognised() {
        let with_version = |v: u32| {
            let mut h = header(1);
            h[8..12].copy_from_slice(&v.to_le_bytes());
            let crc = crc32fast::hash(&h[0..24]);
            h[24..28].copy_from_slice(&crc.to_le_bytes());
            h
        };
        assert_eq!(check_header(&with_version(VERSION + 1), 1), HeaderCheck::FutureVersion(VERSION + 1));
        // Every older version stays readable.
        for v in 1..=VERSION {
            assert_eq!(check_header(&with_version(v), 1), HeaderCheck::Ok, "version {v}");
        }
    }
}
