//! The tail cache: the last value of every (machine, field) in a version's segments, so that
//! `latest` over a fleet reads one flat table instead of every segment's index.
//!
//! The table is keyed by catalog indices (machine, field) and holds, per cell, the timestamp
//! and bits of the value at the largest timestamp in the segments (ties go to the newer
//! segment, as everywhere). It ignores deletes: a machine with live tombstones is answered
//! the exact way, from the segments' block statistics (see `latest.rs`).
//!
//! Each [`crate::db::Version`] carries an `Arc<TailCache>`, built on first use:
//! - a version whose segments are unchanged shares the cache of the one before;
//! - a flush (segments only added, each the newest of its partition) starts from the built
//!   cache before it and folds in the new segments;
//! - anything that removes segments (compaction, retention) starts a fresh cache, built from
//!   all segments when a query first needs it.

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::catalog::{Catalog, FieldIdx, MachineIdx};
use crate::model::Timestamp;
use crate::segment::reader::Segment;

/// One cell: the last (timestamp, value bits), if the segments hold any value.
pub(crate) type Tail = Option<(Timestamp, u64)>;

/// The built table: `cells[rows[m]..rows[m + 1]]` are machine `m`'s fields by field index.
#[derive(Debug, Default)]
pub(crate) struct Tails {
    rows: Vec<u32>,
    cells: Vec<Tail>,
}

impl Tails {
    /// The last value of (machine, field) in the segments; `None` when they hold none.
    pub(crate) fn get(&self, m: MachineIdx, f: FieldIdx) -> Tail {
        let m = m as usize;
        if m + 1 >= self.rows.len() {
            return None;
        }
        let (lo, hi) = (self.rows[m] as usize, self.rows[m + 1] as usize);
        if (f as usize) < hi - lo { self.cells[lo + f as usize] } else { None }
    }

    /// A table laid out for `catalog`, holding the cells of `from` (if any).
    fn layout(catalog: &Catalog, from: Option<&Tails>) -> Tails {
        let mut rows = Vec::with_capacity(catalog.len() + 1);
        let mut n = 0u32;
        rows.push(0);
        for e in catalog.machines() {
            n += e.fields.len() as u32;
            rows.push(n);
        }
        let mut t = Tails { rows, cells: vec![None; n as usize] };
        if let Some(old) = from {
            for m in 0..old.rows.len().saturating_sub(1).min(t.rows.len() - 1) {
                let (olo, ohi) = (old.rows[m] as usize, old.rows[m + 1] as usize);
                let (lo, hi) = (t.rows[m] as usize, t.rows[m + 1] as usize);
                let k = (ohi - olo).min(hi - lo);
                t.cells[lo..lo + k].copy_from_slice(&old.cells[olo..olo + k]);
            }
        }
        t
    }

    /// Folds one segment in; it is newer than every segment folded before it in its partition.
    /// Returns false when the segment names a machine or field the catalog does not know.
    fn fold(&mut self, seg: &Segment, catalog: &Catalog) -> bool {
        for mi in &seg.index.machines {
            let Some(m) = catalog.machine(&mi.name) else {
                return false;
            };
            let e = catalog.entry(m);
            let m = m as usize;
            if m + 1 >= self.rows.len() {
                return false;
            }
            let (lo, hi) = (self.rows[m] as usize, self.rows[m + 1] as usize);
            for (k, (name, _)) in mi.fields.iter().enumerate() {
                let Some(f) = e.field(name).map(|f| f as usize).filter(|&f| f < hi - lo) else {
                    return false;
                };
                let (g, pos) = mi.loc[k];
                let last = mi.groups[g as usize]
                    .blocks
                    .iter()
                    .rev()
                    .map(|b| b.fields[pos as usize].stats)
                    .find(|s| s.count > 0)
                    .map(|s| (s.last_ts, s.last));
                if let Some((ts, bits)) = last {
                    let cell = &mut self.cells[lo + f];
                    if cell.is_none_or(|(t, _)| ts >= t) {
                        *cell = Some((ts, bits));
                    }
                }
            }
        }
        true
    }
}

/// A built cache to start from and the segments to fold into it.
type Base = (Arc<TailCache>, Vec<Arc<Segment>>);

/// The lazily built tail table of one version's segments; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct TailCache {
    /// `None` inside: the table could not be built (a name the catalog lacks), so queries
    /// take the exact path.
    table: OnceLock<Option<Tails>>,
    /// The built cache of the version before and the segments this version added.
    base: Mutex<Option<Base>>,
}

impl TailCache {
    /// The cache of a version that changed the live segments of `prev`'s version: added
    /// `added`, and removed some when `removed_any`.
    pub(crate) fn after(prev: &Arc<TailCache>, removed_any: bool, added: &[Arc<Segment>]) -> Arc<TailCache> {
        if !removed_any && added.is_empty() {
            return prev.clone();
        }
        if removed_any || !matches!(prev.table.get(), Some(Some(_))) {
            // Only a built cache is kept as a base: chains never grow.
            return Arc::new(TailCache::default());
        }
        let mut added = added.to_vec();
        crate::db::sort_segments(&mut added);
        Arc::new(TailCache { table: OnceLock::new(), base: Mutex::new(Some((prev.clone(), added))) })
    }

    /// The table for a version with these `segments` (sorted as the version keeps them),
    /// built on first use with `catalog` (any catalog at least as new as the version).
    pub(crate) fn get(&self, segments: &[Arc<Segment>], catalog: &Catalog) -> Option<&Tails> {
        self.table
            .get_or_init(|| {
                let base = self.base.lock().take();
                let (mut t, fold): (Tails, &[Arc<Segment>]) = match &base {
                    Some((prev, added)) => match prev.table.get() {
                        Some(Some(p)) => (Tails::layout(catalog, Some(p)), added),
                        _ => (Tails::layout(catalog, None), segments),
                    },
                    None => (Tails::layout(catalog, None), segments),
                };
                fold.iter().all(|s| t.fold(s, catalog)).then_some(t)
            })
            .as_ref()
    }
}
