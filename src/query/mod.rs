//! Queries: what callers ask (`scan`, later `downsample`, `latest`, the catalog) and the
//! columnar results they get.
//!
//! Every query runs on a [`crate::db::Snapshot`]: the memtables and segments live when it
//! started, at a fixed sequence number. Queries never write and never block writers.

pub(crate) mod downsample;
pub(crate) mod latest;
pub(crate) mod scan;
pub(crate) mod tails;

use std::sync::Arc;

use crate::model::{Bitmap, FieldType, Timestamp, Value};
use crate::rows::ColData;

pub use downsample::{
    Agg, AggColumn, BucketSeries, DOWNSAMPLE_BUCKETS_MAX, Downsample, Downsampled, QueryCounters,
};
pub use latest::{FieldInfo, Latest, LatestValue, MachineInfo};
pub use scan::{SCAN_BATCH_ROWS, Scan, ScanIter};

/// Which machines a query covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Machines {
    /// Every machine in the database.
    All,
    /// These machines (duplicates are ignored; machines that do not exist contribute nothing).
    List(Vec<String>),
}

impl From<&str> for Machines {
    fn from(m: &str) -> Machines {
        Machines::List(vec![m.to_string()])
    }
}
impl From<String> for Machines {
    fn from(m: String) -> Machines {
        Machines::List(vec![m])
    }
}
impl From<&String> for Machines {
    fn from(m: &String) -> Machines {
        Machines::List(vec![m.clone()])
    }
}
impl From<Vec<String>> for Machines {
    fn from(m: Vec<String>) -> Machines {
        Machines::List(m)
    }
}
impl From<&[&str]> for Machines {
    fn from(m: &[&str]) -> Machines {
        Machines::List(m.iter().map(|s| s.to_string()).collect())
    }
}
impl<const N: usize> From<[&str; N]> for Machines {
    fn from(m: [&str; N]) -> Machines {
        Machines::List(m.iter().map(|s| s.to_string()).collect())
    }
}

/// The values of one column of a result, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Floats.
    F64(Vec<f64>),
    /// Integers.
    I64(Vec<i64>),
    /// Booleans.
    Bool(Vec<bool>),
}

impl Values {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::F64(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::Bool(v) => v.len(),
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The type of the values.
    pub fn field_type(&self) -> FieldType {
        match self {
            Values::F64(_) => FieldType::F64,
            Values::I64(_) => FieldType::I64,
            Values::Bool(_) => FieldType::Bool,
        }
    }

    /// Value `i` as a [`Value`].
    pub fn get(&self, i: usize) -> Option<Value> {
        match self {
            Values::F64(v) => v.get(i).map(|&x| Value::F64(x)),
            Values::I64(v) => v.get(i).map(|&x| Value::I64(x)),
            Values::Bool(v) => v.get(i).map(|&x| Value::Bool(x)),
        }
    }

    pub(crate) fn from_bits(ty: FieldType, bits: Vec<u64>) -> Values {
        match ty {
            FieldType::F64 => Values::F64(bits.into_iter().map(f64::from_bits).collect()),
            FieldType::I64 => Values::I64(bits.into_iter().map(|b| b as i64).collect()),
            FieldType::Bool => Values::Bool(words_to_bools(&bits)),
        }
    }
}

cpu_dispatch! {
/// `bits[i] != 0` for each word, compiled for AVX2 where the CPU has it. Collected from the
/// words' own iterator, the conversion went one value at a time: 5 % of a fleet scan's
/// instructions with one field in eight boolean.
fn words_to_bools(bits: &[u64]) -> Vec<bool> =
    words_to_bools_wide, "avx2" if crate::codec::has_avx2, else words_to_bools_halves
}

#[inline(always)]
fn words_to_bools_wide(bits: &[u64]) -> Vec<bool> {
    bits.iter().map(|&b| b != 0).collect()
}

/// As [`words_to_bools_wide`], comparing 32-bit halves, which the baseline's vector
/// instructions can (they have no 64-bit compare).
fn words_to_bools_halves(bits: &[u64]) -> Vec<bool> {
    bits.iter().map(|&b| (b as u32 | (b >> 32) as u32) != 0).collect()
}

/// One column of a [`Batch`]: a field's values, one per row, and which are present.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The field name.
    pub name: Arc<str>,
    /// One value per row; a missing value holds a zero of the type.
    pub values: Values,
    /// `None` when every value is present; else `validity[i]` tells whether row `i` has one.
    pub validity: Option<Vec<bool>>,
}

impl Column {
    /// True when row `i` has a value.
    pub fn is_valid(&self, i: usize) -> bool {
        self.validity.as_ref().is_none_or(|v| v[i])
    }

    /// Row `i`'s value, if present.
    pub fn value(&self, i: usize) -> Option<Value> {
        if self.is_valid(i) { self.values.get(i) } else { None }
    }

    pub(crate) fn from_col(name: Arc<str>, ty: FieldType, col: Option<ColData>, rows: usize) -> Column {
        let col = col.unwrap_or_else(|| ColData::missing(rows));
        let validity = if col.valid.all() { None } else { Some(bitmap_to_vec(&col.valid)) };
        Column { name, values: Values::from_bits(ty, col.vals), validity }
    }
}

fn bitmap_to_vec(b: &Bitmap) -> Vec<bool> {
    (0..b.len()).map(|i| b.get(i)).collect()
}

/// A piece of a scan result: rows of one machine, sorted by time, in columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The machine.
    pub machine: Arc<str>,
    /// One timestamp per row, strictly increasing.
    pub ts: Vec<Timestamp>,
    /// The selected fields of the machine, in the order asked (or the machine's field order).
    pub columns: Vec<Column>,
}

impl Batch {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.ts.len()
    }

    /// The column of a field, by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| &*c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_booleans_by_any_bit() {
        let mut words = vec![0u64, 1, 2, 1 << 31, 1 << 32, 1 << 63, u64::MAX, 0x1_0000_0001];
        // long enough for the vector loops and their tails
        words.extend((0..1000u64).map(|i| if i % 3 == 0 { 0 } else { i << (i % 64) }));
        let want: Vec<bool> = words.iter().map(|&b| b != 0).collect();
        assert_eq!(words_to_bools(&words), want);
        assert_eq!(words_to_bools_halves(&words), want);
        assert_eq!(words_to_bools_wide(&words), want);
        assert_eq!(Values::from_bits(FieldType::Bool, words), Values::Bool(want));
    }
}
