//! Keeping old copies: before a file in DST is replaced or deleted, it moves into
//! `DST/.datasafe/versions` under a timestamped name (see [`crate::store::versions`]), and
//! retention later prunes what is too old. Nothing is ever copied: where the store has
//! hard links ([`crate::store::Caps::hard_links`]) a replaced file is linked into the
//! versions folder before the new copy is installed over it (so the final name never
//! goes missing), a deleted one is linked and then removed; without them (or where a
//! link fails), a move does the same job.
//!
//! Everything here is a store primitive on names, so a symlink planted in the versions
//! folder never leads a write outside DST.
//!
//! Pruning: by retention after a full pass ([`Executor::prune_versions`]), by the size
//! budget after it ([`Executor::prune_to_budget`]), and when DST is full while a live
//! file is written ([`Executor::make_room`]): live files win over old copies. Each
//! pruned version is logged (`Pruned version: …`); oldest go first.

use super::ops::Reach;
use super::{Executor, OpError};
use crate::model::Kind;
use crate::output::names::{esc, io_message};
use crate::store::layout;
use crate::store::versions::{self, Retention};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Past this many versions of one name in one second something is wrong.
const MAX_SEQ: u32 = 10_000;

/// What an attempt to put old content at a version slot found.
enum Slot {
    /// The slot was taken: try the next one.
    Taken,
    /// The old content is there now.
    Placed,
    /// The original is gone: nothing to keep.
    Gone,
}

impl Executor {
    /// Keeps the regular file stored as `name` as a version before it is replaced
    /// (`keep_original`) or deleted. Does nothing if versions are off or `name` is not a
    /// regular file.
    pub(super) fn preserve(&self, name: &Path, keep_original: bool) -> Result<(), OpError> {
        if !self.keeping() || !self.is_file(name) {
            return Ok(());
        }
        let path = self.shown(name);
        let store = self.store();
        let placed = self.place_version(name, |target| {
            let linked = if self.caps.hard_links {
                store.link(name, target)
            } else {
                Err(io::Error::from(io::ErrorKind::Unsupported))
            };
            match linked {
                Ok(()) => {
                    if !keep_original {
                        match store.remove_file(name) {
                            // Another worker deleted it (or a folder around it) meanwhile.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            other => other.map_err(OpError::io("deleting", &path))?,
                        }
                    }
                    Ok(Slot::Placed)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Slot::Taken),
                // Gone since the check above (another worker deleted a folder around it):
                // nothing to keep, and nothing left to delete.
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.is_gone(name) => {
                    Ok(Slot::Gone)
                }
                Err(_) => {
                    // No hard links here (some network and FAT file systems): move it. Then
                    // a replaced name is missing until the new copy lands.
                    if !matches!(store.stat(target), Ok(None)) {
                        return Ok(Slot::Taken);
                    }
                    store
                        .rename(name, target)
                        .map_err(OpError::io("keeping a version of", &path))?;
                    Ok(Slot::Placed)
                }
            }
        })?;
        if let Some(rel) = placed {
            log::info!(
                "Kept version: {} as {}",
                esc(name),
                esc(layout::versions().join(&rel).as_path())
            );
            self.versions_kept
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Keeps, instead of a copy, a prefix marker (see [`versions::Prefix`]) for the file
    /// stored as `name`, about to be replaced by content whose first `size` bytes are
    /// the old content (SHA-256 `sha`): no bytes are kept, and `restore` can still give
    /// the old content back from the new one.
    pub(super) fn preserve_prefix(
        &self,
        name: &Path,
        (size, sha): (u64, crate::hash::Digest),
    ) -> Result<(), OpError> {
        if !self.keeping() {
            return Ok(());
        }
        let Some(old) = self
            .store()
            .stat(name)
            .ok()
            .flatten()
            .filter(|m| m.kind == Kind::File)
        else {
            return Ok(());
        };
        let mtime = old.mtime;
        let marker = versions::Prefix {
            size,
            mtime: (mtime.unix_seconds(), mtime.nanoseconds()),
            mode: old.mode,
            sha,
        }
        .to_target();
        let path = self.shown(name);
        let placed = self.place_version(name, |target| {
            match self.store().symlink(Path::new(&marker), target) {
                Ok(()) => Ok(Slot::Placed),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Slot::Taken),
                Err(e) => Err(OpError::io("keeping a version of", &path)(e)),
            }
        })?;
        if let Some(rel) = placed {
            // No version was kept (the new copy holds the old content): only a debug
            // line, and nothing counted.
            log::debug!(
                "{} only grew: its first {} are in the new copy (marker {})",
                esc(name),
                crate::output::names::human_bytes(size),
                esc(layout::versions().join(&rel).as_path())
            );
        }
        Ok(())
    }

    /// Finds the first free version slot for `name` at this moment and has `place` put
    /// the old content there (its argument: the slot's name in DST), trying later slots
    /// while `place` finds one taken. Returns the version's path under the versions
    /// folder, or `None` if `place` found the original gone.
    fn place_version(
        &self,
        name: &Path,
        mut place: impl FnMut(&Path) -> Result<Slot, OpError>,
    ) -> Result<Option<PathBuf>, OpError> {
        let at = chrono::Local::now().naive_local();
        self.dest_dir(&versions_rel(name, at, 0), Reach::Parents)?;
        for seq in 0..MAX_SEQ {
            let (rel, sidecar) = versions::version_and_sidecar(name, at, seq);
            if let Some(sidecar) = sidecar {
                self.write_sidecar(&layout::versions().join(sidecar), name)?;
            }
            let target = layout::versions().join(&rel);
            if self.later_seq_taken(name, at, seq) {
                continue;
            }
            match place(&target)? {
                Slot::Taken => continue,
                Slot::Placed => return Ok(Some(rel)),
                Slot::Gone => return Ok(None),
            }
        }
        Err(OpError::Io {
            doing: "keeping a version of",
            path: self.shown(name),
            err: io::Error::other("too many versions within one second"),
        })
    }

    /// True if a later version of `name` in the same second exists (looking 1, 2, 4…
    /// 64 slots on): then `seq` is a slot that pruning freed, and taking it would order
    /// this newer version before older ones. Pruning goes oldest first, so freed slots
    /// come first and the taken ones after them.
    fn later_seq_taken(&self, name: &Path, at: chrono::NaiveDateTime, seq: u32) -> bool {
        (0..7).map(|k| seq + (1 << k)).any(|later| {
            let next = versions_rel(name, at, later);
            matches!(self.store().stat(&next), Ok(Some(_)))
        })
    }

    /// Keeps every regular file of `below` (a folder's content, as
    /// [`Executor::below`] lists it) as a version before the folder is deleted.
    /// Symlinks inside are not followed.
    pub(super) fn preserve_all(&self, below: &[(PathBuf, Kind)]) -> Result<(), OpError> {
        for (name, kind) in below {
            if *kind == Kind::File {
                self.preserve(name, false)?;
            }
        }
        Ok(())
    }

    /// Deletes the versions retention `keep` no longer wants (with `Retention::Off`,
    /// none: turning versions off keeps what was kept so far) and the folders left
    /// empty. Returns how many went; errors are logged, never fatal.
    pub fn prune_versions(&self, keep: Retention) -> u64 {
        if !keep.keeps() {
            return 0;
        }
        let all = versions::list_in(self.store());
        if all.is_empty() {
            return 0;
        }
        let now = chrono::Local::now().naive_local();
        let mut pruned = 0;
        for rel in versions::to_prune(&all, now, keep) {
            let name = layout::versions().join(&rel);
            match self.store().remove_file(&name) {
                Ok(()) => {
                    pruned += 1;
                    log::info!("Pruned version: {}", esc(&name));
                }
                // Gone, or a folder on the way is not a real folder (nothing of ours).
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) => {}
                Err(e) => log::warn!("pruning {}: {}", esc(&self.shown(&name)), io_message(&e)),
            }
        }
        if pruned > 0 {
            self.tidy_versions();
        }
        pruned
    }

    /// Deletes the oldest versions until all of them together take at most `max` bytes
    /// (`--versions-max-size`). Returns how many went.
    pub fn prune_to_budget(&self, max: u64) -> u64 {
        let sized = self.sized_versions();
        let mut total: u64 = sized.iter().map(|(_, size, _)| size).sum();
        if total <= max {
            return 0;
        }
        let before = total;
        let mut pruned = 0;
        for (version, size, _) in &sized {
            if total <= max {
                break;
            }
            if self.remove_version(version) {
                pruned += 1;
                total = total.saturating_sub(*size);
            }
        }
        if pruned > 0 {
            log::info!(
                "versions took {} of a budget of {}: pruned the oldest {}",
                crate::output::names::human_bytes(before),
                crate::output::names::human_bytes(max),
                crate::output::names::count_of(pruned, "version")
            );
            self.tidy_versions();
        }
        pruned
    }

    /// DST is full while a live file is written: deletes the oldest versions until about
    /// `need` bytes are free again (only versions that are the last link to their data
    /// free anything). Returns false if nothing could be pruned, so the caller stops
    /// retrying. One worker at a time: the others wait, then retry into the room made.
    /// Prunes nothing when even every version gone would leave less free than `least`
    /// bytes (a file bigger than the disk): that would lose the history for nothing.
    pub(super) fn make_room(&self, need: u64, least: u64) -> bool {
        let _one = self
            .making_room
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if least > 0 {
            let freeable: u64 = self
                .sized_versions()
                .iter()
                .filter(|(_, _, links)| *links <= 1)
                .map(|(_, size, _)| size)
                .sum();
            let free = self.store().free_bytes().unwrap_or(0);
            if free.saturating_add(freeable) < least {
                log::warn!(
                    "{} is full, and pruning every version would free {} of the {} needed: \
                     versions kept",
                    esc(&self.shown(Path::new(""))),
                    crate::output::names::human_bytes(freeable),
                    crate::output::names::human_bytes(least.saturating_sub(free))
                );
                return false;
            }
        }
        let mut freed = 0u64;
        let mut pruned = 0u64;
        for (version, size, links) in self.sized_versions() {
            if freed >= need {
                break;
            }
            if links > 1 {
                continue;
            }
            if self.remove_version(&version) {
                freed += size;
                pruned += 1;
            }
        }
        if pruned > 0 {
            log::warn!(
                "{} is full: pruned the oldest {} ({}) so live files can be written",
                esc(&self.shown(Path::new(""))),
                crate::output::names::count_of(pruned, "version"),
                crate::output::names::human_bytes(freed)
            );
            self.pruned_for_room
                .fetch_add(pruned, std::sync::atomic::Ordering::Relaxed);
            self.tidy_versions();
        }
        pruned > 0
    }

    /// Every version, oldest first, with its size on disk and its link count.
    fn sized_versions(&self) -> Vec<(versions::Version, u64, u64)> {
        let root = layout::versions();
        versions::list_in(self.store())
            .into_iter()
            .filter_map(|v| {
                let meta = self.store().stat(&root.join(&v.path)).ok()??;
                Some((v, meta.size, meta.links))
            })
            .collect()
    }

    /// Deletes one version and logs it; true if it went.
    fn remove_version(&self, version: &versions::Version) -> bool {
        let name = layout::versions().join(&version.path);
        match self.store().remove_file(&name) {
            Ok(()) => {
                log::info!("Pruned version: {}", esc(&name));
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                false
            }
            Err(e) => {
                log::warn!("pruning {}: {}", esc(&self.shown(&name)), io_message(&e));
                false
            }
        }
    }

    /// After pruning: sidecars no version needs, then empty folders.
    fn tidy_versions(&self) {
        let root = layout::versions();
        let found = versions::walk(self.store(), &root);
        let files: Vec<PathBuf> = found
            .iter()
            .filter(|(_, kind)| *kind == Kind::File)
            .map(|(rel, _)| rel.clone())
            .collect();
        for sidecar in versions::orphan_sidecars(&files) {
            let _ = self.store().remove_file(&root.join(sidecar));
        }
        // Deepest first; removing fails, as it should, on a folder that still holds
        // something.
        let mut dirs: Vec<&PathBuf> = found
            .iter()
            .filter(|(_, kind)| *kind == Kind::Dir)
            .map(|(rel, _)| rel)
            .collect();
        dirs.sort_by_key(|rel| std::cmp::Reverse(rel.components().count()));
        for dir in dirs {
            let _ = self.store().remove_dir(&root.join(dir));
        }
    }

    /// Writes the sidecar of a shortened version name (the stored file name's bytes) at
    /// `sidecar` (its name in DST), unless it is there: through a temp file and an
    /// install, so it is never seen half written.
    fn write_sidecar(&self, sidecar: &Path, name: &Path) -> Result<(), OpError> {
        if self.is_file(sidecar) {
            return Ok(());
        }
        let whole = name.file_name().unwrap_or(name.as_os_str());
        let mut temp = self.temp_file(&self.shown(sidecar))?;
        temp.write_all(whole.as_encoded_bytes())
            .map_err(OpError::io("keeping a version of", name))?;
        temp.install(sidecar)
            .map_err(OpError::io("keeping a version of", name))?;
        Ok(())
    }

    /// True if nothing is at `name` any more (a folder on the way gone included).
    fn is_gone(&self, name: &Path) -> bool {
        matches!(self.store().stat(name), Ok(None))
    }
}

/// `versions/<name's folder>/<versioned name>` relative to DST.
fn versions_rel(name: &Path, at: chrono::NaiveDateTime, seq: u32) -> PathBuf {
    layout::versions().join(versions::version_name(name, at, seq))
}
