//! The catalog: which machines exist, their fields and the fields' types.
//!
//! Machines and fields are interned to small integers inside the process (`MachineIdx`,
//! `FieldIdx`); files always store names, so the numbering is free to differ between runs.
//! The catalog only grows while the database is open.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::{FieldType, WriteBatch};

pub(crate) type MachineIdx = u32;
pub(crate) type FieldIdx = u32;

/// Most fields one machine may have.
pub const FIELDS_PER_MACHINE_MAX: usize = 65_535;

#[derive(Debug, Clone)]
pub(crate) struct FieldEntry {
    pub(crate) name: Arc<str>,
    pub(crate) ty: FieldType,
    /// Registered by a write still in flight: not visible, undone if that write fails.
    pub(crate) provisional: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct MachineEntry {
    pub(crate) name: Arc<str>,
    pub(crate) fields: Vec<FieldEntry>,
    by_name: HashMap<Arc<str>, FieldIdx>,
    /// Registered by a write still in flight: not visible, undone if that write fails.
    pub(crate) provisional: bool,
}

impl MachineEntry {
    pub(crate) fn field(&self, name: &str) -> Option<FieldIdx> {
        self.by_name.get(name).copied()
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Catalog {
    /// Machine `m` is `chunks[m / CHUNK][m % CHUNK]`. A batch with a new machine copies the
    /// catalog (copy-on-write: snapshots keep the old one), so a copy must stay cheap for
    /// fleets of many thousands of machines: it copies one pointer per chunk, and a change
    /// copies one chunk of pointers.
    chunks: Vec<Arc<Vec<Arc<MachineEntry>>>>,
    len: usize,
    /// Every machine, in byte-wise order of its id (also the index by name).
    sorted: Vec<MachineIdx>,
}

/// Machines per chunk of the catalog.
const CHUNK: usize = 256;
/// What a provisional registration added, to confirm or undo it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Added {
    machines_before: usize,
    /// Existing machines that got fields: (machine, its field count before).
    fields_before: Vec<(MachineIdx, usize)>,
}

/// Where each field of each group of a batch lives in the catalog.
#[derive(Debug, Clone)]
pub(crate) struct BatchMap {
    pub(crate) groups: Vec<(MachineIdx, Vec<FieldIdx>)>,
}

impl Catalog {
    pub(crate) fn machine(&self, name: &str) -> Option<MachineIdx> {
        self.find(name).ok().map(|i| self.sorted[i])
    }

    /// Where `name` is (`Ok`) or would go (`Err`) in the name-sorted index.
    fn find(&self, name: &str) -> std::result::Result<usize, usize> {
        self.sorted.binary_search_by(|&x| self.entry(x).name.as_bytes().cmp(name.as_bytes()))
    }

    pub(crate) fn entry(&self, m: MachineIdx) -> &MachineEntry {
        let m = m as usize;
        &self.chunks[m / CHUNK][m % CHUNK]
    }

    fn entry_mut(&mut self, m: MachineIdx) -> &mut MachineEntry {
        let m = m as usize;
        Arc::make_mut(&mut Arc::make_mut(&mut self.chunks[m / CHUNK])[m % CHUNK])
    }

    /// Number of machines (indices `0..len`).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every machine, by index.
    pub(crate) fn machines(&self) -> impl Iterator<Item = &MachineEntry> {
        self.chunks.iter().flat_map(|c| c.iter().map(|e| &**e))
    }

    /// Removes the machines from index `n` on.
    fn truncate(&mut self, n: usize) {
        while self.len > n {
            let last = Arc::make_mut(self.chunks.last_mut().expect("len > 0"));
            last.pop();
            if last.is_empty() {
                self.chunks.pop();
            }
            self.len -= 1;
        }
        let n = n as MachineIdx;
        self.sorted.retain(|&m| m < n);
    }

    /// Adds a machine if it is new.
    pub(crate) fn intern_machine(&mut self, name: &str) -> MachineIdx {
        let at = match self.find(name) {
            Ok(i) => return self.sorted[i],
            Err(at) => at,
        };
        let m = self.len as MachineIdx;
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        Arc::make_mut(self.chunks.last_mut().expect("a chunk with room")).push(Arc::new(MachineEntry {
            name: Arc::from(name),
            fields: Vec::new(),
            by_name: HashMap::new(),
            provisional: false,
        }));
        self.len += 1;
        self.sorted.insert(at, m);
        m
    }

    /// Every machine, in byte-wise order of its id.
    pub(crate) fn sorted(&self) -> &[MachineIdx] {
        &self.sorted
    }

    /// Adds a field if it is new; fails when it exists with another type.
    pub(crate) fn intern_field(&mut self, m: MachineIdx, name: &str, ty: FieldType) -> Result<FieldIdx> {
        let e = self.entry_mut(m);
        if let Some(&f) = e.by_name.get(name) {
            let have = e.fields[f as usize].ty;
            if have != ty {
                return Err(Error::TypeMismatch {
                    machine: e.name.to_string(),
                    field: name.to_string(),
                    expected: have,
                    found: ty,
                });
            }
            return Ok(f);
        }
        if e.fields.len() >= FIELDS_PER_MACHINE_MAX {
            return Err(Error::invalid(format!(
                "machine {:?} already has {FIELDS_PER_MACHINE_MAX} fields",
                e.name
            )));
        }
        let name: Arc<str> = Arc::from(name);
        let f = e.fields.len() as FieldIdx;
        e.fields.push(FieldEntry { name: name.clone(), ty, provisional: false });
        e.by_name.insert(name, f);
        Ok(f)
    }

    /// Checks a batch's types against the catalog without changing anything.
    /// Returns `Ok(Some(map))` when every machine and field already exists (and is not
    /// provisional: a batch that touches a provisional entry must wait for it to settle).
    pub(crate) fn check(&self, batch: &WriteBatch) -> Result<Option<BatchMap>> {
        let mut groups = Vec::with_capacity(batch.groups.len());
        let mut complete = true;
        for g in &batch.groups {
            let Some(m) = self.machine(&g.machine).filter(|&m| !self.entry(m).provisional) else {
                complete = false;
                continue;
            };
            let e = self.entry(m);
            let mut idx = Vec::with_capacity(g.fields.len());
            for f in &g.fields {
                match e.field(&f.name).filter(|&i| !e.fields[i as usize].provisional) {
                    Some(i) => {
                        let have = e.fields[i as usize].ty;
                        if have != f.ty {
                            return Err(Error::TypeMismatch {
                                machine: g.machine.clone(),
                                field: f.name.clone(),
                                expected: have,
                                found: f.ty,
                            });
                        }
                        idx.push(i);
                    }
                    None => complete = false,
                }
            }
            groups.push((m, idx));
        }
        Ok(complete.then_some(BatchMap { groups }))
    }

    /// Registers every machine and field of a batch, all or nothing, for good (log replay).
    pub(crate) fn register(&mut self, batch: &WriteBatch) -> Result<BatchMap> {
        let (map, _) = self.register_inner(batch, false)?;
        Ok(map)
    }

    /// Registers the batch's new machines and fields provisionally: they stay invisible until
    /// [`Catalog::confirm`], and [`Catalog::undo`] removes them (a write that failed must not
    /// fix types). At most one provisional registration may be open at a time.
    pub(crate) fn register_provisional(&mut self, batch: &WriteBatch) -> Result<(BatchMap, Added)> {
        debug_assert!(!self.machines().any(|m| m.provisional || m.fields.iter().any(|f| f.provisional)));
        self.register_inner(batch, true)
    }

    /// Makes a provisional registration permanent.
    pub(crate) fn confirm(&mut self, added: &Added) {
        for m in added.machines_before..self.len {
            let m = self.entry_mut(m as MachineIdx);
            m.provisional = false;
            m.fields.iter_mut().for_each(|f| f.provisional = false);
        }
        for &(m, before) in &added.fields_before {
            self.entry_mut(m).fields[before..].iter_mut().for_each(|f| f.provisional = false);
        }
    }

    /// Removes what a provisional registration added.
    pub(crate) fn undo(&mut self, added: &Added) {
        self.truncate(added.machines_before);
        for &(m, before) in &added.fields_before {
            let e = self.entry_mut(m);
            for f in e.fields.drain(before..) {
                e.by_name.remove(&f.name);
            }
        }
    }

    fn register_inner(&mut self, batch: &WriteBatch, provisional: bool) -> Result<(BatchMap, Added)> {
        let mut added = Added { machines_before: self.len, fields_before: Vec::new() };
        if let Some(map) = self.check(batch)? {
            return Ok((map, added));
        }
        // check() found no type conflict with existing fields; the only remaining failure is
        // the per-machine field limit, checked before anything changes.
        for g in &batch.groups {
            let have = self.machine(&g.machine).map(|m| self.entry(m).fields.len()).unwrap_or(0);
            let new = g
                .fields
                .iter()
                .filter(|f| self.machine(&g.machine).and_then(|m| self.entry(m).field(&f.name)).is_none())
                .count();
            if have + new > FIELDS_PER_MACHINE_MAX {
                return Err(Error::invalid(format!(
                    "machine {:?} would have more than {FIELDS_PER_MACHINE_MAX} fields",
                    g.machine
                )));
            }
        }
        let mut groups = Vec::with_capacity(batch.groups.len());
        for g in &batch.groups {
            let m = self.intern_machine(&g.machine);
            let before = self.entry(m).fields.len();
            if (m as usize) < added.machines_before && !added.fields_before.iter().any(|&(x, _)| x == m) {
                added.fields_before.push((m, before));
            }
            let mut idx = Vec::with_capacity(g.fields.len());
            for f in &g.fields {
                match self.intern_field(m, &f.name, f.ty) {
                    Ok(i) => idx.push(i),
                    Err(e) => {
                        self.undo(&added);
                        return Err(e);
                    }
                }
            }
            groups.push((m, idx));
        }
        if provisional {
            for m in added.machines_before..self.len {
                let m = self.entry_mut(m as MachineIdx);
                m.provisional = true;
                m.fields.iter_mut().for_each(|f| f.provisional = true);
            }
            for &(m, before) in &added.fields_before {
                self.entry_mut(m).fields[before..].iter_mut().for_each(|f| f.provisional = true);
            }
        }
        Ok((BatchMap { groups }, added))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Value, WriteBatch};

    fn batch(machine: &str, field: &str, v: Value) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.row(machine, 1, [(field, v)]).unwrap();
        b
    }

    #[test]
    fn many_machines_copies_undo_and_lookups() {
        let mut c = Catalog::default();
        // Past several chunks, in an order unlike the names' order.
        let names: Vec<String> =
            (0..3 * CHUNK + 7).map(|i| format!("m-{:05}", (i * 7919) % 10_000)).collect();
        for n in &names {
            let (_, added) = c.register_provisional(&batch(n, "x", Value::F64(1.0))).unwrap();
            c.confirm(&added);
        }
        assert_eq!(c.len(), names.len());
        let before = c.clone();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(c.machine(n), Some(i as MachineIdx));
            assert_eq!(&*c.entry(i as MachineIdx).name, n.as_str());
        }
        assert!(c.sorted().windows(2).all(|w| c.entry(w[0]).name < c.entry(w[1]).name));
        // A failed write: a new machine, and a new field of an old one in the first chunk, are
        // taken back; a copy taken before never saw them.
        let mut b = batch("zz-new", "x", Value::F64(1.0));
        b.row(&names[3], 2, [("y", Value::I64(5))]).unwrap();
        let (_, added) = c.register_provisional(&b).unwrap();
        assert!(c.entry(c.machine("zz-new").unwrap()).provisional);
        assert_eq!(before.machine("zz-new"), None);
        assert_eq!(before.entry(3).fields.len(), 1);
        c.undo(&added);
        assert_eq!((c.len(), c.machine("zz-new")), (names.len(), None));
        assert_eq!(c.entry(3).fields.len(), 1);
        assert_eq!(c.sorted().len(), names.len());
        // Types stay fixed.
        assert!(matches!(
            c.register_provisional(&batch(&names[CHUNK + 1], "x", Value::I64(1))),
            Err(Error::TypeMismatch { .. })
        ));
    }
}
