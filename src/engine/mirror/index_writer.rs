//! The index as the engine thread holds it: [`IndexWriter`] reports a failing index
//! once and goes on without it; opening it for a mirror that writes (rebuilt when
//! damaged) or one that only reads (`--dry-run`, an unwritable DST).

use crate::engine::exec::Executor;
use crate::index::{self, Index};
use crate::model::{MirrorState, Record};
use crate::output::names::io_message;
use crate::store::Store;
use crate::store::layout;
use std::path::Path;
use std::time::Duration;

/// How often the index is committed while work goes on.
const COMMIT_EVERY: Duration = Duration::from_secs(2);

/// The index for a mirror that writes: opened, and on any damage thrown away and started
/// afresh. Returns the index and whether it can be trusted to describe DST.
pub(super) fn open_index(state_dir: &Path, store: &dyn Store) -> (Option<Index>, bool) {
    match Index::open(state_dir) {
        Ok((index, existed)) => return (Some(index), existed),
        Err(e) => log::warn!("{e}; rebuilding the index from the destination"),
    }
    discard_index(store);
    match Index::open(state_dir) {
        Ok((index, _)) => (Some(index), false),
        Err(e) => {
            log::error!("{e}; continuing without an index (the next run compares DST again)");
            (None, false)
        }
    }
}

/// Removes a damaged index (with SQLite's companion files) through the store.
fn discard_index(store: &dyn Store) {
    for name in layout::index_files() {
        let _ = store.remove_file(&name);
    }
}

/// The index for a mirror that does not write (`--dry-run`, unwritable DST).
pub(super) fn read_index(state_dir: Option<&Path>) -> (Option<Index>, bool) {
    // DST cannot be reached: there is no index to read.
    let Some(state_dir) = state_dir else {
        return (None, false);
    };
    match Index::open_untouched(state_dir) {
        Ok(index) => {
            let trusted = index.is_some();
            (index, trusted)
        }
        Err(e) => {
            log::warn!("{e}; comparing with the destination instead");
            (None, false)
        }
    }
}

/// The index, owned by the engine thread; a failing index is reported once and then
/// left alone (the data in DST is what matters; the next run rebuilds the index).
pub(super) struct IndexWriter(pub(super) Option<Index>);

impl IndexWriter {
    pub(super) fn get(&mut self, name: &Path) -> Option<Record> {
        let result = self.0.as_ref()?.get(name);
        self.check(result).flatten()
    }

    /// Every name recorded as the source file `key` (see `Index::linked`); none
    /// without a usable index.
    pub(super) fn linked(
        &mut self,
        key: crate::model::LinkKey,
    ) -> Vec<(std::path::PathBuf, Record)> {
        let result = self.0.as_ref().map(|index| index.linked(key));
        result.and_then(|r| self.check(r)).unwrap_or_default()
    }

    /// Files recorded with `meta` and no link key (see `Index::unlinked_like`).
    pub(super) fn unlinked_like(
        &mut self,
        meta: crate::model::Meta,
    ) -> Vec<(std::path::PathBuf, Record)> {
        let result = self.0.as_ref().map(|index| index.unlinked_like(meta));
        result.and_then(|r| self.check(r)).unwrap_or_default()
    }

    /// Records at and below `scope`; `None` if there is no usable index.
    pub(super) fn load_under(&mut self, scope: &Path) -> Option<MirrorState> {
        let result = self.0.as_ref()?.load_under(scope);
        self.check(result)
    }

    pub(super) fn put(&mut self, name: &Path, record: &Record) {
        if let Some(index) = self.0.as_mut() {
            let result = index.put(name, record);
            self.check(result);
        }
    }

    pub(super) fn remove(&mut self, name: &Path) {
        if let Some(index) = self.0.as_mut() {
            let result = index.remove(name);
            self.check(result);
        }
    }

    pub(super) fn remove_tree(&mut self, name: &Path) {
        if let Some(index) = self.0.as_mut() {
            let result = index.remove_tree(name);
            self.check(result);
        }
    }

    pub(super) fn intend_rename(&mut self, from: &Path, to: &Path) {
        if let Some(index) = self.0.as_mut() {
            let result = index.intend_rename(from, to);
            self.check(result);
        }
    }

    pub(super) fn drop_rename(&mut self, from: &Path) {
        if let Some(index) = self.0.as_mut() {
            let result = index.drop_rename(from);
            self.check(result);
        }
    }

    pub(super) fn move_tree(&mut self, from: &Path, to: &Path) {
        if let Some(index) = self.0.as_mut() {
            let result = index.move_tree(from, to);
            self.check(result);
        }
    }

    pub(super) fn due(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|i| i.pending_for() >= COMMIT_EVERY)
    }

    /// Makes DST's writes durable, then commits the index and tells the store.
    pub(super) fn commit(&mut self, exec: Option<&Executor>) {
        if self.0.as_ref().is_none_or(|i| !i.is_dirty()) {
            return;
        }
        if let Some(exec) = exec
            && let Err(e) = exec.barrier()
        {
            log::warn!("flushing the destination to disk: {}", io_message(&e));
        }
        if let Some(index) = self.0.as_mut() {
            let result = index.commit();
            if self.check(result).is_some()
                && let Some(exec) = exec
                && let Err(e) = exec.index_committed()
            {
                log::warn!("saving the index into the mirror: {}", io_message(&e));
            }
        }
    }

    /// Passes a result through; on error reports it and drops the index.
    pub(super) fn check<T>(&mut self, result: Result<T, index::IndexError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                log::error!("{e}; the index will be rebuilt next run");
                self.0 = None;
                None
            }
        }
    }
}
