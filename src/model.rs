//! The data model: machines, fields, values, timestamps, rows and write batches.
//!
//! A **machine** is a string id chosen by the user (`press-07`, `line3/robot-2`): 1 to 255
//! bytes of UTF-8 without control characters. A **field** (a sensor channel) is a name with
//! the same rules and a type ([`FieldType`]) fixed at its first write. A **timestamp** is an
//! `i64`, by convention microseconds since the Unix epoch. A **point** is one value of one
//! field of one machine at one timestamp; writing the same point twice keeps the later write.

use std::collections::HashMap;
use std::fmt;
use std::ops::{Bound, RangeBounds};

use crate::error::{Error, Result};

/// Timestamps are `i64`; by convention microseconds since the Unix epoch.
pub type Timestamp = i64;

/// Longest machine id or field name, in bytes.
pub const NAME_BYTES_MAX: usize = 255;

/// The type of a field, fixed at its first write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldType {
    /// 64-bit floating point; every bit pattern (NaN payloads, -0.0, infinities) is kept.
    F64,
    /// 64-bit signed integer.
    I64,
    /// Boolean.
    Bool,
}

impl FieldType {
    /// The type's code in files (see FORMAT.md).
    pub(crate) fn code(self) -> u8 {
        match self {
            FieldType::F64 => 1,
            FieldType::I64 => 2,
            FieldType::Bool => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<FieldType> {
        match code {
            1 => Some(FieldType::F64),
            2 => Some(FieldType::I64),
            3 => Some(FieldType::Bool),
            _ => None,
        }
    }

    /// The lowercase name, as printed by tools (`f64`, `i64`, `bool`).
    pub fn name(self) -> &'static str {
        match self {
            FieldType::F64 => "f64",
            FieldType::I64 => "i64",
            FieldType::Bool => "bool",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One value of a field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A float.
    F64(f64),
    /// An integer.
    I64(i64),
    /// A boolean.
    Bool(bool),
}

impl Value {
    /// The value's type.
    pub fn field_type(&self) -> FieldType {
        match self {
            Value::F64(_) => FieldType::F64,
            Value::I64(_) => FieldType::I64,
            Value::Bool(_) => FieldType::Bool,
        }
    }

    /// The value as 64 raw bits: `f64::to_bits`, the `i64` as `u64`, a bool as 0 or 1.
    pub(crate) fn to_bits(self) -> u64 {
        match self {
            Value::F64(v) => v.to_bits(),
            Value::I64(v) => v as u64,
            Value::Bool(v) => v as u64,
        }
    }

    pub(crate) fn from_bits(ty: FieldType, bits: u64) -> Value {
        match ty {
            FieldType::F64 => Value::F64(f64::from_bits(bits)),
            FieldType::I64 => Value::I64(bits as i64),
            FieldType::Bool => Value::Bool(bits != 0),
        }
    }

    /// The value as an `f64` (integers converted, booleans as 0 or 1).
    pub fn as_f64(&self) -> f64 {
        match *self {
            Value::F64(v) => v,
            Value::I64(v) => v as f64,
            Value::Bool(v) => v as u8 as f64,
        }
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::F64(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Value {
        Value::F64(v as f64)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::I64(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::I64(v as i64)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::I64(v as i64)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

/// A half-open time range `start..end` (start included, end excluded).
///
/// Built from any Rust range over `i64`: `t0..t1`, `t0..=t1`, `t0..`, `..t1`, `..`.
///
/// ```
/// use gemba::TimeRange;
/// assert_eq!(TimeRange::from_bounds(10..20), TimeRange { start: 10, end: 20 });
/// assert_eq!(TimeRange::from_bounds(10..=20), TimeRange { start: 10, end: 21 });
/// assert_eq!(TimeRange::from_bounds(..), TimeRange::ALL);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeRange {
    /// First timestamp included.
    pub start: Timestamp,
    /// First timestamp excluded. `i64::MAX` is itself never included (the only
    /// timestamp that no range can reach; writes of it are rejected).
    pub end: Timestamp,
}

impl TimeRange {
    /// Every timestamp that can be written.
    pub const ALL: TimeRange = TimeRange { start: i64::MIN, end: i64::MAX };

    /// A range from Rust range bounds. An inclusive end of `i64::MAX` is clamped to `i64::MAX`.
    pub fn from_bounds(r: impl RangeBounds<i64>) -> TimeRange {
        let start = match r.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => i64::MIN,
        };
        let end = match r.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => i64::MAX,
        };
        TimeRange { start, end }
    }

    /// True when `ts` lies in the range.
    #[inline]
    pub fn contains(&self, ts: Timestamp) -> bool {
        self.start <= ts && ts < self.end
    }

    /// True when the range holds no timestamp.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// True when the range and `[min, max]` (both included) share a timestamp.
    #[inline]
    pub fn overlaps(&self, min: Timestamp, max: Timestamp) -> bool {
        min < self.end && max >= self.start
    }

    /// Rejects a range whose start lies after its end.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.start > self.end {
            return Err(Error::invalid(format!(
                "time range start {} lies after its end {}",
                self.start, self.end
            )));
        }
        Ok(())
    }
}

impl<R: RangeBounds<i64>> From<R> for TimeRange {
    fn from(r: R) -> TimeRange {
        TimeRange::from_bounds(r)
    }
}

/// Checks a machine id: 1 to 255 bytes of UTF-8 without control characters.
pub fn validate_machine_id(id: &str) -> Result<()> {
    validate_name("machine id", id)
}

/// Checks a field name: 1 to 255 bytes of UTF-8 without control characters.
pub fn validate_field_name(name: &str) -> Result<()> {
    validate_name("field name", name)
}

fn validate_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("{kind} is empty")));
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(Error::invalid(format!(
            "{kind} is {} bytes long; at most {NAME_BYTES_MAX} are allowed",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(format!("{kind} {name:?} contains the control character {c:?}")));
    }
    Ok(())
}

fn validate_ts(ts: Timestamp) -> Result<()> {
    if ts == i64::MAX {
        return Err(Error::invalid("timestamp i64::MAX is reserved (ranges are half-open)"));
    }
    Ok(())
}

/// A column of values for [`WriteBatch::columns`]: a slice of one type, optionally with a
/// validity slice (`false` = the value is missing and is not written).
///
/// ```
/// use gemba::Col;
/// let speed = [1480.5, 1481.0];
/// let ok = [true, false];
/// let col = Col::f64(&speed).with_validity(&ok);
/// # let _ = col;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Col<'a> {
    values: ColValues<'a>,
    valid: Option<&'a [bool]>,
}

#[derive(Debug, Clone, Copy)]
enum ColValues<'a> {
    F64(&'a [f64]),
    I64(&'a [i64]),
    Bool(&'a [bool]),
}

impl<'a> Col<'a> {
    /// A float column.
    pub fn f64(values: &'a [f64]) -> Col<'a> {
        Col { values: ColValues::F64(values), valid: None }
    }
    /// An integer column.
    pub fn i64(values: &'a [i64]) -> Col<'a> {
        Col { values: ColValues::I64(values), valid: None }
    }
    /// A boolean column.
    pub fn bool(values: &'a [bool]) -> Col<'a> {
        Col { values: ColValues::Bool(values), valid: None }
    }
    /// Marks values as missing where `valid` is `false`.
    pub fn with_validity(mut self, valid: &'a [bool]) -> Col<'a> {
        self.valid = Some(valid);
        self
    }

    fn len(&self) -> usize {
        match self.values {
            ColValues::F64(v) => v.len(),
            ColValues::I64(v) => v.len(),
            ColValues::Bool(v) => v.len(),
        }
    }

    fn field_type(&self) -> FieldType {
        match self.values {
            ColValues::F64(_) => FieldType::F64,
            ColValues::I64(_) => FieldType::I64,
            ColValues::Bool(_) => FieldType::Bool,
        }
    }
}

/// A growable bitmap, one bit per row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Bitmap {
    words: Vec<u64>,
    len: usize,
}

impl Bitmap {
    pub(crate) fn new() -> Bitmap {
        Bitmap::default()
    }

    /// An empty bitmap with room for `bits` bits.
    pub(crate) fn with_capacity(bits: usize) -> Bitmap {
        Bitmap { words: Vec::with_capacity(bits.div_ceil(64)), len: 0 }
    }

    pub(crate) fn with_len(len: usize, value: bool) -> Bitmap {
        let fill = if value { u64::MAX } else { 0 };
        let mut b = Bitmap { words: vec![fill; len.div_ceil(64)], len };
        b.clear_tail();
        b
    }

    fn clear_tail(&mut self) {
        let r = self.len % 64;
        if r != 0
            && let Some(w) = self.words.last_mut()
        {
            *w &= (1u64 << r) - 1;
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> bool {
        debug_assert!(i < self.len);
        (self.words[i / 64] >> (i % 64)) & 1 == 1
    }

    #[inline]
    pub(crate) fn set(&mut self, i: usize, v: bool) {
        let (w, b) = (i / 64, i % 64);
        if v {
            self.words[w] |= 1 << b;
        } else {
            self.words[w] &= !(1 << b);
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, v: bool) {
        if self.len.is_multiple_of(64) {
            self.words.push(0);
        }
        if v {
            self.words[self.len / 64] |= 1 << (self.len % 64);
        }
        self.len += 1;
    }

    /// Appends the low `take` (at most 8) bits of `bits`, lowest first.
    #[inline]
    pub(crate) fn push_bits(&mut self, bits: u8, take: usize) {
        debug_assert!(take <= 8);
        if take == 0 {
            return;
        }
        let bits = u64::from(bits) & ((1u64 << take) - 1);
        let off = self.len % 64;
        if off == 0 {
            self.words.push(0);
        }
        let w = self.len / 64;
        self.words[w] |= bits << off;
        if off + take > 64 {
            self.words.push(bits >> (64 - off));
        }
        self.len += take;
    }

    /// Appends `n` copies of `v`: the rest of the current word under a mask, then whole words
    /// (the bits past the end are kept zero).
    pub(crate) fn extend_const(&mut self, n: usize, v: bool) {
        let off = self.len % 64;
        let mut left = n;
        if off != 0 && left > 0 {
            let take = left.min(64 - off); // at most 63
            if v {
                let last = self.words.last_mut().expect("a partial word exists");
                *last |= ((1u64 << take) - 1) << off;
            }
            self.len += take;
            left -= take;
        }
        if left > 0 {
            let fill = if v { u64::MAX } else { 0 };
            self.words.extend(std::iter::repeat_n(fill, left.div_ceil(64)));
            self.len += left;
            self.clear_tail();
        }
    }

    pub(crate) fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub(crate) fn all(&self) -> bool {
        self.count_ones() == self.len
    }

    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    pub(crate) fn from_words(words: Vec<u64>, len: usize) -> Option<Bitmap> {
        if words.len() != len.div_ceil(64) {
            return None;
        }
        let mut b = Bitmap { words, len };
        b.clear_tail();
        Some(b)
    }

    /// Appends every bit of `other`.
    pub(crate) fn extend_from(&mut self, other: &Bitmap) {
        self.extend_from_range(other, 0, other.len);
    }

    /// Appends bits `lo..hi` of `other`.
    pub(crate) fn extend_from_range(&mut self, other: &Bitmap, lo: usize, hi: usize) {
        debug_assert!(lo <= hi && hi <= other.len);
        let n = hi - lo;
        if n == 0 {
            return;
        }
        // Read 64 bits of `other` starting at bit `at` (bits past `hi` are masked by the caller).
        let read = |at: usize| -> u64 {
            let (w, sh) = (at / 64, at % 64);
            let lo_part = other.words[w] >> sh;
            if sh == 0 || w + 1 >= other.words.len() {
                lo_part
            } else {
                lo_part | (other.words[w + 1] << (64 - sh))
            }
        };
        let mut done = 0;
        while done < n {
            let take = (n - done).min(64 - self.len % 64);
            let mut bits = read(lo + done);
            if take < 64 {
                bits &= (1u64 << take) - 1;
            }
            let sh = self.len % 64;
            if sh == 0 {
                self.words.push(bits);
            } else {
                let last = self.words.len() - 1;
                self.words[last] |= bits << sh;
            }
            self.len += take;
            done += take;
        }
    }

    /// Bits `lo..hi` as a new bitmap.
    pub(crate) fn slice(&self, lo: usize, hi: usize) -> Bitmap {
        let mut b = Bitmap::new();
        b.extend_from_range(self, lo, hi);
        b
    }

    /// Bitwise OR with `other` over the common length.
    pub(crate) fn or_assign(&mut self, other: &Bitmap) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= *b;
        }
        self.clear_tail();
    }

    /// The first index in `from..end` whose bit is `value`, or `end`.
    #[inline]
    pub(crate) fn next(&self, value: bool, from: usize, end: usize) -> usize {
        let mut i = from;
        while i < end {
            let w = self.words[i / 64];
            let w = if value { w } else { !w } >> (i % 64);
            if w != 0 {
                return (i + w.trailing_zeros() as usize).min(end);
            }
            i = (i / 64 + 1) * 64;
        }
        end
    }

    /// A bitmap from booleans, packed eight at a time: a `bool` is the byte 0 or 1, so eight
    /// of them read as a little-endian `u64` times `0x0102_0408_1020_4080` gather their low
    /// bits into the top byte.
    pub(crate) fn from_bools(b: &[bool]) -> Bitmap {
        let mut words = Vec::with_capacity(b.len().div_ceil(64));
        for c in b.chunks(64) {
            let mut w = 0u64;
            let eights = c.chunks_exact(8);
            let rest = eights.remainder();
            for (k, e) in eights.enumerate() {
                let x = u64::from_le_bytes(std::array::from_fn(|i| e[i] as u8));
                w |= (x.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * k);
            }
            let base = c.len() - rest.len();
            for (i, &v) in rest.iter().enumerate() {
                w |= (v as u64) << (base + i);
            }
            words.push(w);
        }
        Bitmap { words, len: b.len() }
    }

    /// Iterates the indices of set bits.
    pub(crate) fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

/// One machine's rows inside a [`WriteBatch`], columnar.
#[derive(Debug, Clone)]
pub(crate) struct BatchGroup {
    pub(crate) machine: String,
    pub(crate) ts: Vec<Timestamp>,
    pub(crate) fields: Vec<BatchField>,
    /// Field positions by name, kept once the group has more than [`FIELDS_SCANNED`] fields
    /// (below that a scan of the names is cheaper than hashing, and a batch of a few rows
    /// does not pay for building a map).
    field_index: HashMap<String, usize>,
}

/// Most fields of a batch group found by scanning their names (see `BatchGroup::field_index`).
const FIELDS_SCANNED: usize = 16;

/// Rows a batch group makes room for at its first row: twice what a vector's first
/// allocation holds. 10-row batches of 8 fields built and written, instructions per batch
/// (callgrind): 51 K at 4, 47 K at 8, 44 K at 16; but a batch of many machines with a row
/// each holds this many slots per field and machine, so the gain stops at 8.
const ROWS_RESERVED: usize = 8;

/// One field of a [`BatchGroup`]: a value per row (raw bits) and a validity bit per row.
#[derive(Debug, Clone)]
pub(crate) struct BatchField {
    pub(crate) name: String,
    pub(crate) ty: FieldType,
    pub(crate) values: Vec<u64>,
    pub(crate) valid: Bitmap,
}

impl BatchGroup {
    pub(crate) fn new(machine: String) -> BatchGroup {
        BatchGroup { machine, ts: Vec::new(), fields: Vec::new(), field_index: HashMap::new() }
    }

    pub(crate) fn rows(&self) -> usize {
        self.ts.len()
    }

    /// The position of field `name`, if the group has it.
    #[inline]
    fn find(&self, name: &str) -> Option<usize> {
        if self.fields.len() <= FIELDS_SCANNED {
            self.fields.iter().position(|f| f.name == name)
        } else {
            self.field_index.get(name).copied()
        }
    }

    /// Appends a field that the group does not have yet.
    fn add(&mut self, f: BatchField) {
        self.fields.push(f);
        let n = self.fields.len();
        if n == FIELDS_SCANNED + 1 {
            self.field_index = self.fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        } else if n > FIELDS_SCANNED + 1 {
            self.field_index.insert(self.fields[n - 1].name.clone(), n - 1);
        }
    }

    /// The index of `name`, adding the field (missing in every earlier row) if it is new.
    pub(crate) fn field_slot(&mut self, name: &str, ty: FieldType) -> Result<usize> {
        if let Some(i) = self.find(name) {
            let f = &self.fields[i];
            if f.ty != ty {
                return Err(Error::TypeMismatch {
                    machine: self.machine.clone(),
                    field: name.to_string(),
                    expected: f.ty,
                    found: ty,
                });
            }
            return Ok(i);
        }
        validate_field_name(name)?;
        Ok(self.add_new(name.to_string(), ty))
    }

    /// Adds field `name` (valid, and not in the group), missing in every row so far; room for
    /// as many rows as the timestamps have, so a batch built row by row grows its columns
    /// together instead of each from one value up.
    fn add_new(&mut self, name: String, ty: FieldType) -> usize {
        let rows = self.rows();
        let mut values = Vec::with_capacity(self.ts.capacity().max(rows));
        values.resize(rows, 0);
        self.add(BatchField { name, ty, values, valid: Bitmap::with_len(rows, false) });
        self.fields.len() - 1
    }

    pub(crate) fn points(&self) -> usize {
        self.fields.iter().map(|f| f.valid.count_ones()).sum()
    }
}

/// A set of rows, possibly of many machines, written together by [`crate::Db::write`].
///
/// A batch is applied all or nothing: after a crash either every row of an acknowledged
/// batch is there or (for a batch whose `write` did not return `Ok`) possibly none.
/// Within a batch, a later row for the same machine and timestamp wins, field by field.
///
/// ```
/// use gemba::{Col, Value, WriteBatch};
/// let mut batch = WriteBatch::new();
/// batch.row("press-07", 1_000, [("speed_rpm", Value::F64(1480.5)), ("status", Value::I64(3))])?;
/// let ts = [2_000, 3_000];
/// batch.columns("press-07", &ts, [("speed_rpm", Col::f64(&[1481.0, 1479.5]))])?;
/// assert_eq!(batch.rows(), 3);
/// assert_eq!(batch.points(), 4);
/// # Ok::<(), gemba::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub(crate) groups: Vec<BatchGroup>,
    group_index: HashMap<String, usize>,
    /// Scratch of [`WriteBatch::row`]: (field slot, value bits) of the row being added.
    slots: Vec<(usize, u64)>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Number of rows in the batch.
    pub fn rows(&self) -> usize {
        self.groups.iter().map(|g| g.rows()).sum()
    }

    /// Number of values (points) in the batch.
    pub fn points(&self) -> usize {
        self.groups.iter().map(|g| g.points()).sum()
    }

    /// True when the batch holds no row.
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|g| g.ts.is_empty())
    }

    /// Removes every row, keeping allocations for reuse.
    pub fn clear(&mut self) {
        self.groups.clear();
        self.group_index.clear();
    }

    fn group(&mut self, machine: &str) -> Result<&mut BatchGroup> {
        let i = self.group_at(machine)?;
        Ok(&mut self.groups[i])
    }

    fn group_at(&mut self, machine: &str) -> Result<usize> {
        // Rows usually come machine after machine: try the last one before hashing.
        let i = match self.groups.last() {
            Some(g) if g.machine == machine => self.groups.len() - 1,
            _ => match self.group_index.get(machine) {
                Some(&i) => i,
                None => {
                    validate_machine_id(machine)?;
                    self.groups.push(BatchGroup::new(machine.to_string()));
                    self.group_index.insert(machine.to_string(), self.groups.len() - 1);
                    self.groups.len() - 1
                }
            },
        };
        Ok(i)
    }

    /// Adds one row: a machine, a timestamp and some fields with their values.
    ///
    /// Fails with [`Error::InvalidArgument`] for a bad machine id or field name, a field named
    /// twice in the row, or the timestamp `i64::MAX`; with [`Error::TypeMismatch`] when a
    /// field has another type than earlier in this batch. On error the batch is unchanged.
    pub fn row<N, V>(
        &mut self,
        machine: &str,
        ts: Timestamp,
        fields: impl IntoIterator<Item = (N, V)>,
    ) -> Result<&mut Self>
    where
        N: AsRef<str>,
        V: Into<Value>,
    {
        validate_ts(ts)?;
        let gi = self.group_at(machine)?;
        let g = &mut self.groups[gi];
        // Resolve and check every field before changing anything, so an error leaves the batch
        // as it was; names are validated when they are new to the batch. Rows of one machine
        // usually name the same fields in the same order: the k-th field is tried first.
        let mut slots = std::mem::take(&mut self.slots);
        slots.clear();
        let mut new: Vec<(String, Value)> = Vec::new();
        let mut failed = None;
        for (k, (n, v)) in fields.into_iter().enumerate() {
            let (n, v) = (n.as_ref(), v.into());
            let known = match g.fields.get(k) {
                Some(f) if f.name == n => Some(k),
                _ => g.find(n),
            };
            let dup = match known {
                Some(i) => slots.iter().any(|&(j, _)| j == i),
                None => new.iter().any(|(m, _)| m == n),
            };
            if dup {
                failed = Some(Error::invalid(format!("field {n:?} given twice in one row")));
                break;
            }
            match known {
                Some(i) if g.fields[i].ty != v.field_type() => {
                    failed = Some(Error::TypeMismatch {
                        machine: machine.to_string(),
                        field: n.to_string(),
                        expected: g.fields[i].ty,
                        found: v.field_type(),
                    });
                    break;
                }
                Some(i) => slots.push((i, v.to_bits())),
                None => match validate_field_name(n) {
                    Ok(()) => new.push((n.to_string(), v)),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                },
            }
        }
        if let Some(e) = failed {
            self.slots = slots;
            return Err(e);
        }
        let row = g.rows();
        if g.ts.is_empty() {
            // Room for a few rows at once (the columns follow the timestamps' capacity).
            g.ts.reserve(ROWS_RESERVED);
        }
        g.ts.push(ts);
        let cap = g.ts.capacity();
        for f in &mut g.fields {
            if f.values.len() == f.values.capacity() {
                f.values.reserve_exact(cap - f.values.len());
            }
            f.values.push(0);
            f.valid.push(false);
        }
        for &(i, bits) in &slots {
            let f = &mut g.fields[i];
            f.values[row] = bits;
            f.valid.set(row, true);
        }
        for (n, v) in new {
            // A field new in this row (its name checked above) is created sized to every row
            // so far, this one included.
            let i = g.add_new(n, v.field_type());
            let f = &mut g.fields[i];
            f.values[row] = v.to_bits();
            f.valid.set(row, true);
        }
        self.slots = slots;
        Ok(self)
    }

    /// Adds many rows of one machine at once: a timestamp slice and, per field, a column of
    /// the same length. The fast path for bulk loads and gateways that deliver columns.
    ///
    /// Fails with [`Error::InvalidArgument`] when a column's length (or its validity's) differs
    /// from the timestamps', a name is invalid or repeated, or a timestamp is `i64::MAX`.
    /// On error the batch is unchanged.
    pub fn columns<'a, N>(
        &mut self,
        machine: &str,
        ts: &[Timestamp],
        columns: impl IntoIterator<Item = (N, Col<'a>)>,
    ) -> Result<&mut Self>
    where
        N: AsRef<str>,
    {
        let columns: Vec<(N, Col<'a>)> = columns.into_iter().collect();
        if ts.contains(&i64::MAX) {
            validate_ts(i64::MAX)?;
        }
        for (i, (n, c)) in columns.iter().enumerate() {
            let n = n.as_ref();
            validate_field_name(n)?;
            if columns[..i].iter().any(|(m, _)| m.as_ref() == n) {
                return Err(Error::invalid(format!("field {n:?} given twice")));
            }
            if c.len() != ts.len() {
                return Err(Error::invalid(format!(
                    "column {n:?} has {} values for {} timestamps",
                    c.len(),
                    ts.len()
                )));
            }
            if let Some(v) = c.valid
                && v.len() != ts.len()
            {
                return Err(Error::invalid(format!(
                    "column {n:?} has {} validity flags for {} timestamps",
                    v.len(),
                    ts.len()
                )));
            }
        }
        let g = self.group(machine)?;
        for (n, c) in &columns {
            if let Some(i) = g.find(n.as_ref())
                && g.fields[i].ty != c.field_type()
            {
                return Err(Error::TypeMismatch {
                    machine: machine.to_string(),
                    field: n.as_ref().to_string(),
                    expected: g.fields[i].ty,
                    found: c.field_type(),
                });
            }
        }
        let start = g.rows();
        let n_rows = ts.len();
        // New fields are created sized to the rows before this call.
        let mut slots = Vec::with_capacity(columns.len());
        for (n, c) in &columns {
            slots.push(g.field_slot(n.as_ref(), c.field_type())?);
        }
        g.ts.extend_from_slice(ts);
        let mut touched = vec![false; g.fields.len()];
        for ((_, c), &i) in columns.iter().zip(&slots) {
            touched[i] = true;
            let f = &mut g.fields[i];
            match c.values {
                ColValues::F64(v) => f.values.extend(v.iter().map(|x| x.to_bits())),
                ColValues::I64(v) => f.values.extend(v.iter().map(|&x| x as u64)),
                ColValues::Bool(v) => f.values.extend(v.iter().map(|&x| x as u64)),
            }
            match c.valid {
                None => f.valid.extend_const(n_rows, true),
                Some(valid) => {
                    f.valid.extend_from(&Bitmap::from_bools(valid));
                    // Missing values are 0 (branch-free: the loop vectorises).
                    for (x, &ok) in f.values[start..].iter_mut().zip(valid) {
                        *x &= u64::from(ok).wrapping_neg();
                    }
                }
            }
        }
        for (i, f) in g.fields.iter_mut().enumerate() {
            if !touched[i] {
                f.values.resize(start + n_rows, 0);
                f.valid.extend_const(n_rows, false);
            }
        }
        Ok(self)
    }

    /// Internal: adds a decoded group (from the write-ahead log).
    pub(crate) fn push_group(&mut self, g: BatchGroup) {
        self.group_index.insert(g.machine.clone(), self.groups.len());
        self.groups.push(g);
    }
}

impl BatchGroup {
    /// Internal: a field decoded from the log, already sized to the group's rows.
    pub(crate) fn push_field(&mut self, f: BatchField) -> Result<()> {
        if self.find(&f.name).is_some() {
            return Err(Error::invalid(format!("field {:?} repeated", f.name)));
        }
        self.add(f);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_are_validated() {
        assert!(validate_machine_id("press-07").is_ok());
        assert!(validate_machine_id("line3/robot-2").is_ok());
        assert!(validate_machine_id("Presse-Überlauf").is_ok());
        assert!(matches!(validate_machine_id(""), Err(Error::InvalidArgument(_))));
        assert!(matches!(validate_machine_id(&"a".repeat(256)), Err(Error::InvalidArgument(_))));
        assert!(validate_machine_id(&"a".repeat(255)).is_ok());
        assert!(matches!(validate_machine_id("a\nb"), Err(Error::InvalidArgument(_))));
        assert!(matches!(validate_machine_id("a\u{7f}"), Err(Error::InvalidArgument(_))));
        assert!(matches!(validate_machine_id("\0"), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn rows_backfill_missing_fields() {
        let mut b = WriteBatch::new();
        b.row("m", 1, [("a", 1.0)]).unwrap();
        b.row("m", 2, [("b", 2i64)]).unwrap();
        b.row("m", 3, [("a", Value::F64(3.0)), ("b", Value::I64(4))]).unwrap();
        let g = &b.groups[0];
        assert_eq!(g.ts, vec![1, 2, 3]);
        let a = &g.fields[0];
        assert_eq!((a.valid.get(0), a.valid.get(1), a.valid.get(2)), (true, false, true));
        assert_eq!(f64::from_bits(a.values[2]), 3.0);
        let bf = &g.fields[1];
        assert_eq!(bf.values.len(), 3);
        assert_eq!((bf.valid.get(0), bf.valid.get(1), bf.valid.get(2)), (false, true, true));
        assert_eq!(b.points(), 4);
    }

    #[test]
    fn type_change_inside_a_batch_is_rejected_and_leaves_it_unchanged() {
        let mut b = WriteBatch::new();
        b.row("m", 1, [("a", 1.0)]).unwrap();
        let e = b.row("m", 2, [("a", 1i64)]).unwrap_err();
        assert!(matches!(e, Error::TypeMismatch { .. }));
        assert_eq!(b.rows(), 1);
        let e = b.columns("m", &[5], [("a", Col::bool(&[true]))]).unwrap_err();
        assert!(matches!(e, Error::TypeMismatch { .. }));
        assert_eq!(b.rows(), 1);
    }

    #[test]
    fn bad_rows_are_rejected() {
        let mut b = WriteBatch::new();
        assert!(matches!(b.row("", 1, [("a", 1.0)]), Err(Error::InvalidArgument(_))));
        assert!(matches!(b.row("m", 1, [("", 1.0)]), Err(Error::InvalidArgument(_))));
        assert!(matches!(b.row("m", 1, [("a", 1.0), ("a", 2.0)]), Err(Error::InvalidArgument(_))));
        assert!(matches!(b.row("m", i64::MAX, [("a", 1.0)]), Err(Error::InvalidArgument(_))));
        assert!(matches!(b.columns("m", &[1, 2], [("a", Col::f64(&[1.0]))]), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            b.columns("m", &[1, 2], [("a", Col::f64(&[1.0, 2.0]).with_validity(&[true]))]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(b.is_empty());
    }

    #[test]
    fn rows_in_any_field_order_and_repeated_names() {
        let mut b = WriteBatch::new();
        b.row("m", 1, [("a", 1.0), ("b", 2.0)]).unwrap();
        // Another order, a new field between known ones.
        b.row("m", 2, [("b", 3.0), ("c", 4.0), ("a", 5.0)]).unwrap();
        let g = &b.groups[0];
        let col = |n: &str| g.fields.iter().find(|f| f.name == n).unwrap();
        assert_eq!(f64::from_bits(col("a").values[1]), 5.0);
        assert_eq!(f64::from_bits(col("b").values[1]), 3.0);
        assert_eq!(f64::from_bits(col("c").values[1]), 4.0);
        assert!(!col("c").valid.get(0));
        // A known field twice (in and out of its usual place), a new one twice: rejected,
        // the batch unchanged.
        for bad in [
            vec![("a", 1.0), ("a", 2.0)],
            vec![("b", 1.0), ("a", 2.0), ("b", 3.0)],
            vec![("d", 1.0), ("a", 2.0), ("d", 3.0)],
        ] {
            let e = b.row("m", 3, bad.clone()).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(ref m) if m.contains("twice")), "{bad:?}: {e}");
        }
        assert!(matches!(
            b.row("m", 3, [("a", Value::F64(1.0)), ("b", Value::I64(1))]),
            Err(Error::TypeMismatch { .. })
        ));
        assert_eq!((b.rows(), b.points(), b.groups[0].fields.len()), (2, 5, 3));
    }

    #[test]
    fn groups_of_many_fields_find_them_by_name() {
        // Past FIELDS_SCANNED fields a group looks names up in a map: the same answers.
        let names: Vec<String> = (0..40).map(|i| format!("f{i:02}")).collect();
        let mut b = WriteBatch::new();
        for (r, shift) in [0usize, 7, 23].into_iter().enumerate() {
            // Each row names the fields rotated, the later ones only a prefix (new fields
            // appear row by row).
            let k = 12 + 14 * r;
            let row: Vec<(&str, f64)> = (0..k)
                .map(|j| (names[(j + shift) % k].as_str(), (r * 100 + (j + shift) % k) as f64))
                .collect();
            b.row("m", r as i64, row).unwrap();
        }
        let g = &b.groups[0];
        assert_eq!(g.fields.len(), 40);
        for (r, k) in [(0usize, 12usize), (1, 26), (2, 40)] {
            for (i, name) in names.iter().enumerate() {
                let f = &g.fields[g.find(name).unwrap()];
                assert_eq!(&f.name, name);
                assert_eq!(f.valid.get(r), i < k, "row {r} field {i}");
                if i < k {
                    assert_eq!(f64::from_bits(f.values[r]), (r * 100 + i) as f64);
                }
            }
        }
        assert!(g.find("f40").is_none());
        // Duplicates and type changes are still caught among many fields.
        let dup: Vec<(&str, f64)> =
            vec![(names[30].as_str(), 1.0), (names[2].as_str(), 1.0), (names[30].as_str(), 2.0)];
        assert!(matches!(b.row("m", 9, dup), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            b.row("m", 9, [(names[35].as_str(), Value::I64(1))]),
            Err(Error::TypeMismatch { .. })
        ));
        assert!(matches!(
            b.columns("m", &[10], [(names[33].as_str(), Col::bool(&[true]))]),
            Err(Error::TypeMismatch { .. })
        ));
        assert_eq!(b.rows(), 3);
    }

    #[test]
    fn columns_mix_with_rows() {
        let mut b = WriteBatch::new();
        b.row("m", 1, [("a", 1.0)]).unwrap();
        b.columns(
            "m",
            &[2, 3],
            [("b", Col::i64(&[7, 8]).with_validity(&[false, true])), ("a", Col::f64(&[2.0, 3.0]))],
        )
        .unwrap();
        b.row("m", 4, [("c", true)]).unwrap();
        let g = &b.groups[0];
        assert_eq!(g.rows(), 4);
        for f in &g.fields {
            assert_eq!(f.values.len(), 4, "{}", f.name);
            assert_eq!(f.valid.len(), 4, "{}", f.name);
        }
        assert_eq!(b.points(), 1 + 2 + 1 + 1);
        let bf = &g.fields[1];
        assert_eq!(bf.values[1], 0, "a missing value is stored as zero bits");
        assert_eq!(bf.values[2] as i64, 8);
    }

    #[test]
    fn bitmap_ranges() {
        let mut src = Bitmap::new();
        for i in 0..300 {
            src.push(i % 3 == 0 || i % 7 == 0);
        }
        for lo in [0, 1, 63, 64, 65, 100] {
            for hi in [lo, lo + 1, lo + 63, lo + 64, lo + 130, 300] {
                if hi > 300 {
                    continue;
                }
                let mut dst = Bitmap::new();
                dst.push(true);
                dst.push(false);
                dst.push(true);
                dst.extend_from_range(&src, lo, hi);
                assert_eq!(dst.len(), 3 + hi - lo);
                for i in lo..hi {
                    assert_eq!(dst.get(3 + i - lo), src.get(i), "lo {lo} hi {hi} i {i}");
                }
                let s = src.slice(lo, hi);
                assert_eq!(s.count_ones(), (lo..hi).filter(|&i| src.get(i)).count());
            }
        }
        let ones: Vec<usize> = src.ones().collect();
        assert_eq!(ones, (0..300).filter(|&i| src.get(i)).collect::<Vec<_>>());
    }

    #[test]
    fn extend_const_matches_pushing_bit_by_bit() {
        for start in 0..70usize {
            for n in [0usize, 1, 2, 5, 63, 64, 65, 127, 128, 130, 200] {
                for v in [false, true] {
                    let mut a = Bitmap::new();
                    let mut b = Bitmap::new();
                    for i in 0..start {
                        a.push(i % 2 == 0);
                        b.push(i % 2 == 0);
                    }
                    a.extend_const(n, v);
                    (0..n).for_each(|_| b.push(v));
                    a.push(true);
                    b.push(true);
                    assert_eq!(a, b, "start {start} n {n} v {v}");
                }
            }
        }
    }

    #[test]
    fn push_bits_matches_pushing_bit_by_bit() {
        // Every start offset within a word and every width, so that pieces straddle words.
        for start in 0..70usize {
            for take in 0..=8usize {
                let mut a = Bitmap::new();
                let mut b = Bitmap::new();
                for i in 0..start {
                    a.push(i % 3 == 0);
                    b.push(i % 3 == 0);
                }
                let bits = 0b1011_0110u8 ^ (start as u8);
                a.push_bits(bits, take);
                for k in 0..take {
                    b.push((bits >> k) & 1 == 1);
                }
                a.push(true);
                b.push(true);
                assert_eq!(a, b, "start {start} take {take}");
            }
        }
    }

    #[test]
    fn bitmap_next_and_from_bools() {
        let bools: Vec<bool> = (0..200).map(|i| i % 7 == 3 || (100..130).contains(&i)).collect();
        let b = Bitmap::from_bools(&bools);
        for (i, &v) in bools.iter().enumerate() {
            assert_eq!(b.get(i), v);
        }
        for from in 0..200 {
            for end in [from, from + 1, 150, 200] {
                if end < from || end > 200 {
                    continue;
                }
                for v in [true, false] {
                    let want = (from..end).find(|&i| bools[i] == v).unwrap_or(end);
                    assert_eq!(b.next(v, from, end), want, "v {v} from {from} end {end}");
                }
            }
        }
    }

    #[test]
    fn bitmap_extend_const() {
        let mut b = Bitmap::new();
        b.push(true);
        b.extend_const(130, false);
        b.extend_const(70, true);
        assert_eq!(b.len(), 201);
        assert_eq!(b.count_ones(), 71);
        assert!(b.get(0) && !b.get(1) && !b.get(130) && b.get(131) && b.get(200));
    }

    #[test]
    fn time_ranges() {
        let r = TimeRange::from_bounds(5..=i64::MAX);
        assert_eq!(r, TimeRange { start: 5, end: i64::MAX });
        assert!(TimeRange::from(3..3).is_empty());
        assert!(TimeRange { start: 4, end: 3 }.validate().is_err());
        assert!(TimeRange::ALL.contains(i64::MIN));
        assert!(!TimeRange::ALL.contains(i64::MAX));
    }
}
