//! `RowSet`: one machine's rows in columnar form, the unit every read path produces and merges.

use crate::model::{Bitmap, Timestamp};

/// One column of a [`RowSet`]: a value per row (raw 64 bits; missing values are 0) and a
/// validity bit per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColData {
    pub(crate) vals: Vec<u64>,
    pub(crate) valid: Bitmap,
}

impl ColData {
    pub(crate) fn missing(rows: usize) -> ColData {
        ColData { vals: vec![0; rows], valid: Bitmap::with_len(rows, false) }
    }
}

/// Rows of one machine, sorted by timestamp with no timestamp twice; `cols[i]` belongs to the
/// i-th requested field and is `None` when that field has no value in these rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RowSet {
    pub(crate) ts: Vec<Timestamp>,
    pub(crate) cols: Vec<Option<ColData>>,
}

impl RowSet {
    pub(crate) fn empty(n_cols: usize) -> RowSet {
        RowSet { ts: Vec::new(), cols: vec![None; n_cols] }
    }

    pub(crate) fn len(&self) -> usize {
        self.ts.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Drops rows in which no column holds a value, and columns that hold none.
    pub(crate) fn drop_empty_rows(&mut self) {
        let n = self.ts.len();
        // One count per column: columns without values go; usually some column has a value
        // in every row, and then no row is empty.
        let mut full = false;
        for c in self.cols.iter_mut() {
            let ones = c.as_ref().map_or(0, |c| c.valid.count_ones());
            if ones == 0 {
                *c = None;
            }
            full |= ones == n && c.is_some();
        }
        if !full {
            self.drop_rows_without_values();
        }
    }

    fn drop_rows_without_values(&mut self) {
        let n = self.ts.len();
        let mut any = Bitmap::with_len(n, false);
        for c in self.cols.iter().flatten() {
            any.or_assign(&c.valid);
        }
        if any.count_ones() != n {
            let keep: Vec<usize> = any.ones().collect();
            self.ts = keep.iter().map(|&i| self.ts[i]).collect();
            for c in self.cols.iter_mut().flatten() {
                let mut valid = Bitmap::new();
                let mut vals = Vec::with_capacity(keep.len());
                for &i in &keep {
                    vals.push(c.vals[i]);
                    valid.push(c.valid.get(i));
                }
                *c = ColData { vals, valid };
            }
        }
    }

    /// Merges `newer` over `self`: the union of timestamps; per column, a value of `newer`
    /// wins over a value of `self` at the same timestamp, and a missing value in `newer`
    /// leaves `self`'s.
    pub(crate) fn merge_newer(self, newer: RowSet) -> RowSet {
        if newer.is_empty() {
            return self;
        }
        if self.is_empty() {
            return newer;
        }
        debug_assert_eq!(self.cols.len(), newer.cols.len());
        let (a, b) = (&self.ts, &newer.ts);
        // Fast path: disjoint time ranges simply concatenate.
        if a.last() < b.first() || b.last() < a.first() {
            let (first, second) = if a.last() < b.first() { (self, newer) } else { (newer, self) };
            return concat(first, second);
        }
        let mut ts = Vec::with_capacity(a.len() + b.len());
        // Per output row: index into a and into b (usize::MAX when absent).
        let mut from_a = Vec::with_capacity(a.len() + b.len());
        let mut from_b = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let take_a = j >= b.len() || (i < a.len() && a[i] <= b[j]);
            let take_b = i >= a.len() || (j < b.len() && b[j] <= a[i]);
            ts.push(if take_a { a[i] } else { b[j] });
            from_a.push(if take_a { i } else { usize::MAX });
            from_b.push(if take_b { j } else { usize::MAX });
            i += take_a as usize;
            j += take_b as usize;
        }
        let n = ts.len();
        let cols = self
            .cols
            .into_iter()
            .zip(newer.cols)
            .map(|(ca, cb)| {
                if ca.is_none() && cb.is_none() {
                    return None;
                }
                let mut vals = Vec::with_capacity(n);
                let mut valid = Bitmap::new();
                for r in 0..n {
                    let vb = cb
                        .as_ref()
                        .filter(|_| from_b[r] != usize::MAX)
                        .and_then(|c| c.valid.get(from_b[r]).then(|| c.vals[from_b[r]]));
                    let v = vb.or_else(|| {
                        ca.as_ref()
                            .filter(|_| from_a[r] != usize::MAX)
                            .and_then(|c| c.valid.get(from_a[r]).then(|| c.vals[from_a[r]]))
                    });
                    vals.push(v.unwrap_or(0));
                    valid.push(v.is_some());
                }
                Some(ColData { vals, valid })
            })
            .collect();
        RowSet { ts, cols }
    }
}

/// Rows `lo..hi` of a row set.
pub(crate) fn slice(r: &RowSet, lo: usize, hi: usize) -> RowSet {
    RowSet {
        ts: r.ts[lo..hi].to_vec(),
        cols: r
            .cols
            .iter()
            .map(|c| {
                c.as_ref().map(|c| ColData { vals: c.vals[lo..hi].to_vec(), valid: c.valid.slice(lo, hi) })
            })
            .collect(),
    }
}

/// `first` then `second`, whose timestamps all lie after `first`'s.
fn concat(first: RowSet, second: RowSet) -> RowSet {
    let (n1, n2) = (first.len(), second.len());
    let mut ts = first.ts;
    ts.extend_from_slice(&second.ts);
    let cols = first
        .cols
        .into_iter()
        .zip(second.cols)
        .map(|(c1, c2)| match (c1, c2) {
            (None, None) => None,
            (c1, c2) => {
                let mut c = c1.unwrap_or_else(|| ColData::missing(n1));
                let c2 = c2.unwrap_or_else(|| ColData::missing(n2));
                c.vals.extend_from_slice(&c2.vals);
                c.valid.extend_from(&c2.valid);
                Some(c)
            }
        })
        .collect();
    RowSet { ts, cols }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(ts: &[i64], col: &[Option<u64>]) -> RowSet {
        let mut valid = Bitmap::new();
        let mut vals = Vec::new();
        for v in col {
            valid.push(v.is_some());
            vals.push(v.unwrap_or(0));
        }
        RowSet { ts: ts.to_vec(), cols: vec![Some(ColData { vals, valid })] }
    }

    fn values(r: &RowSet) -> Vec<(i64, Option<u64>)> {
        let c = r.cols[0].as_ref().unwrap();
        r.ts.iter().enumerate().map(|(i, &t)| (t, c.valid.get(i).then(|| c.vals[i]))).collect()
    }

    #[test]
    fn newer_wins_and_missing_does_not_erase() {
        let old = rs(&[1, 2, 3], &[Some(10), Some(20), Some(30)]);
        let new = rs(&[2, 3, 4], &[Some(21), None, Some(41)]);
        let m = old.merge_newer(new);
        assert_eq!(values(&m), vec![(1, Some(10)), (2, Some(21)), (3, Some(30)), (4, Some(41))]);
    }

    #[test]
    fn disjoint_ranges_concatenate_in_time_order() {
        let late = rs(&[5, 6], &[Some(5), None]);
        let early = rs(&[1, 2], &[None, Some(2)]);
        let m = late.merge_newer(early);
        assert_eq!(values(&m), vec![(1, None), (2, Some(2)), (5, Some(5)), (6, None)]);
    }

    #[test]
    fn empty_rows_are_dropped() {
        let mut r = rs(&[1, 2, 3], &[None, Some(2), None]);
        r.drop_empty_rows();
        assert_eq!(values(&r), vec![(2, Some(2))]);
        let mut r = rs(&[1], &[None]);
        r.drop_empty_rows();
        assert!(r.is_empty());
        assert!(r.cols[0].is_none());
    }
}
