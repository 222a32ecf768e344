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
            FieldType::Bool => Values::Bool(bits.into_iter().map(|b| b != 0).collect()),
        }
    }
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
